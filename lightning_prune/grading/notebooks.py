"""nbgrader's notebook conventions: cell kinds, source → release, and a submission merged with its source.

Cell kinds, from the cell's ``metadata["nbgrader"]`` (nbgrader's schema version 3):

========== ===================================== ==========================================================
kind       metadata                              meaning
========== ===================================== ==========================================================
answer     ``solution: true, grade: false``      autograded answer: the student's code, checked by tests
tests      ``grade: true, solution: false``      autograder tests worth ``points``; always taken from source
manual     ``solution: true, grade: true``       manually graded answer worth ``points`` (free text/code)
task       ``task: true``                        manually graded task worth ``points``
readonly   ``locked: true`` (none of the above)  instructions or setup; always taken from the source
plain      no ``nbgrader`` metadata              anything else; a student's own cells are plain
========== ===================================== ==========================================================

Releasing (nbgrader's ``generate_assignment``): in answer and manual cells the region between
``### BEGIN SOLUTION`` and ``### END SOLUTION`` becomes ``# YOUR CODE HERE`` + ``raise
NotImplementedError()`` (code, at the indentation of the BEGIN line) or ``YOUR ANSWER HERE``
(Markdown); a solution cell without the markers is replaced whole. In test cells the lines from
``### BEGIN HIDDEN TESTS`` to ``### END HIDDEN TESTS`` are removed. Outputs and execution counts
are cleared. The ``lightning_prune`` cell metadata (grading keywords) stays in the source only.
"""

from __future__ import annotations

import copy
import re
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

import nbformat
from nbformat import NotebookNode

BEGIN_SOLUTION = "### BEGIN SOLUTION"
END_SOLUTION = "### END SOLUTION"
BEGIN_HIDDEN = "### BEGIN HIDDEN TESTS"
END_HIDDEN = "### END HIDDEN TESTS"
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
TEXT_STUB = "YOUR ANSWER HERE"
EXTENSION_KEY = "lightning_prune"
"""Cell metadata only the source carries (e.g. ``{"keywords": [[...], ...]}`` of a manual answer)."""

KINDS = ("answer", "tests", "manual", "task", "readonly", "plain")
GRADE_ID = re.compile(r"^[a-zA-Z0-9_\-]+$")
IGNORED_FILES = {".ipynb_checkpoints", "__pycache__", ".DS_Store"}
KEPT_NOTEBOOK_METADATA = ("kernelspec", "language_info")


class NotebookFormatError(ValueError):
    """A source notebook breaks nbgrader's conventions (the message names the cell)."""


def read_notebook(path: str | Path) -> NotebookNode:
    """Read a notebook as nbformat 4."""
    return nbformat.read(str(path), as_version=4)


def dumps(nb: NotebookNode) -> str:
    """The notebook as JSON text, exactly as :func:`write_notebook` writes it (deterministic)."""
    return nbformat.writes(nb, version=4).rstrip("\n") + "\n"


def write_notebook(nb: NotebookNode, path: str | Path) -> None:
    """Write ``nb`` to ``path`` (parents created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(nb), encoding="utf-8")


def nbgrader_metadata(cell: NotebookNode) -> dict:
    """The cell's ``nbgrader`` metadata, or ``{}``."""
    return dict(cell.get("metadata", {}).get("nbgrader", {}) or {})


def grade_id(cell: NotebookNode) -> str | None:
    """The cell's ``grade_id``, or ``None`` for a cell without nbgrader metadata."""
    return nbgrader_metadata(cell).get("grade_id")


def cell_kind(cell: NotebookNode) -> str:
    """One of :data:`KINDS` (see the module docstring)."""
    meta = nbgrader_metadata(cell)
    if not meta:
        return "plain"
    if meta.get("task"):
        return "task"
    if meta.get("solution") and meta.get("grade"):
        return "manual"
    if meta.get("solution"):
        return "answer"
    if meta.get("grade"):
        return "tests"
    if meta.get("locked"):
        return "readonly"
    return "plain"


def points(cell: NotebookNode) -> float:
    """Points of a graded cell (0 for the others)."""
    value = nbgrader_metadata(cell).get("points", 0) or 0
    return float(value)


def _replace_region(source: str, begin: str, end: str, stub: Sequence[str] | None, where: str) -> tuple[str, bool]:
    """Replace every ``begin``..``end`` region (marker lines included) by ``stub`` lines, indented like ``begin``.

    Returns:
        The new source and whether a region was found.

    Raises:
        NotebookFormatError: On a nested ``begin`` or a missing ``end``.
    """
    lines, inside, found = [], False, False
    for line in source.splitlines():
        if begin in line:
            if inside:
                raise NotebookFormatError(f"{where}: nested {begin!r}")
            inside = found = True
            indent = re.match(r"\s*", line).group(0)
            lines.extend(indent + stub_line for stub_line in (stub or ()))
        elif inside and end in line:
            inside = False
        elif end in line:
            raise NotebookFormatError(f"{where}: {end!r} without {begin!r}")
        elif not inside:
            lines.append(line)
    if inside:
        raise NotebookFormatError(f"{where}: {begin!r} without {end!r}")
    return "\n".join(lines), found


def strip_solution(cell: NotebookNode, where: str = "cell") -> str:
    """The student's version of an answer/manual cell's source."""
    stub = CODE_STUB if cell.cell_type == "code" else (TEXT_STUB,)
    source, found = _replace_region(cell.source, BEGIN_SOLUTION, END_SOLUTION, stub, where)
    return source if found else "\n".join(stub)


def strip_hidden_tests(source: str, where: str = "cell") -> str:
    """A test cell's source without its hidden tests."""
    return _replace_region(source, BEGIN_HIDDEN, END_HIDDEN, None, where)[0]


def validate_source(nb: NotebookNode, name: str = "notebook") -> None:
    """Check a source notebook against nbgrader's conventions.

    Raises:
        NotebookFormatError: Naming the first problem: a graded/answer/locked cell without a valid
            ``grade_id``, a duplicate ``grade_id``, a test or manual cell without positive points, a
            test cell that is not code, solution markers outside answer cells, hidden tests outside
            test cells, or unbalanced markers.
    """
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells):
        kind = cell_kind(cell)
        meta = nbgrader_metadata(cell)
        where = f"{name}, cell {index} ({meta.get('grade_id', 'no grade_id')})"
        if meta:
            gid = meta.get("grade_id")
            if not isinstance(gid, str) or not GRADE_ID.match(gid):
                raise NotebookFormatError(f"{where}: grade_id must match {GRADE_ID.pattern}, got {gid!r}")
            if gid in seen:
                raise NotebookFormatError(f"{where}: duplicate grade_id {gid!r}")
            seen.add(gid)
            if meta.get("schema_version") != 3:
                raise NotebookFormatError(f"{where}: schema_version must be 3, got {meta.get('schema_version')!r}")
        if kind in ("tests", "manual", "task") and not points(cell) > 0:
            raise NotebookFormatError(f"{where}: a {kind} cell needs points > 0")
        if kind == "tests" and cell.cell_type != "code":
            raise NotebookFormatError(f"{where}: test cells must be code cells")
        has_solution = BEGIN_SOLUTION in cell.source or END_SOLUTION in cell.source
        if has_solution and kind not in ("answer", "manual"):
            raise NotebookFormatError(f"{where}: solution markers in a {kind} cell")
        has_hidden = BEGIN_HIDDEN in cell.source or END_HIDDEN in cell.source
        if has_hidden and kind != "tests":
            raise NotebookFormatError(f"{where}: hidden tests in a {kind} cell")
        if kind in ("answer", "manual"):
            strip_solution(cell, where)
        if kind == "tests":
            strip_hidden_tests(cell.source, where)


def _clean_metadata(cell: NotebookNode) -> None:
    for key in ("execution", "ExecuteTime", "collapsed", "scrolled", EXTENSION_KEY):
        cell.metadata.pop(key, None)


def release_notebook(source: NotebookNode, name: str = "notebook") -> NotebookNode:
    """The student version of a source notebook (see the module docstring)."""
    validate_source(source, name)
    nb = copy.deepcopy(source)
    nb.metadata = NotebookNode({key: copy.deepcopy(source.metadata[key]) for key in KEPT_NOTEBOOK_METADATA
                                if key in source.metadata})
    for index, cell in enumerate(nb.cells):
        where = f"{name}, cell {index}"
        kind = cell_kind(cell)
        if kind in ("answer", "manual"):
            cell.source = strip_solution(cell, where)
        elif kind == "tests":
            cell.source = strip_hidden_tests(cell.source, where)
        _clean_metadata(cell)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    for marker in (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN):
        assert all(marker not in cell.source for cell in nb.cells), marker
    return nb


def clear_outputs(nb: NotebookNode) -> NotebookNode:
    """A copy of ``nb`` without outputs, execution counts or execution metadata."""
    nb = copy.deepcopy(nb)
    for cell in nb.cells:
        for key in ("execution", "ExecuteTime"):
            cell.metadata.pop(key, None)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return nb


# --------------------------------------------------------------------------------------------------
# Assignment folders: source/<name>/ → release/<name>/


def assignment_names(root: str | Path) -> list[str]:
    """Names of the assignments in ``root/source`` (folders holding ``<name>.ipynb``), sorted."""
    source = Path(root) / "source"
    if not source.is_dir():
        return []
    return sorted(path.name for path in source.iterdir() if (path / f"{path.name}.ipynb").is_file())


def source_notebook(root: str | Path, name: str) -> Path:
    """Path of the teacher's notebook of assignment ``name``."""
    return Path(root) / "source" / name / f"{name}.ipynb"


def _files(folder: Path) -> list[Path]:
    """Files under ``folder`` (relative), skipping checkpoints and caches, sorted."""
    result = []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part in IGNORED_FILES for part in relative.parts) or not path.is_file():
            continue
        result.append(relative)
    return result


def expected_release(root: str | Path, name: str) -> dict[Path, bytes]:
    """What ``generate`` writes to ``release/<name>/``: relative path to content.

    Every notebook of the source folder is released; other files are copied unchanged.
    """
    folder = Path(root) / "source" / name
    result: dict[Path, bytes] = {}
    for relative in _files(folder):
        path = folder / relative
        if path.suffix == ".ipynb":
            result[relative] = dumps(release_notebook(read_notebook(path), f"{name}/{relative}")).encode("utf-8")
        else:
            result[relative] = path.read_bytes()
    return result


def _selected(root: str | Path, names: Iterable[str] | None) -> list[str]:
    available = assignment_names(root)
    chosen = list(names) if names else available
    unknown = [name for name in chosen if name not in available]
    if unknown:
        raise ValueError(f"unknown assignment(s) {unknown}; {Path(root) / 'source'} holds {available}")
    return chosen


def generate(root: str | Path, names: Iterable[str] | None = None) -> list[Path]:
    """Write ``release/<name>/`` from ``source/<name>/`` for every (or every named) assignment.

    Files in ``release/<name>/`` that the source does not produce are removed.

    Returns:
        The files written.
    """
    root = Path(root)
    written = []
    for name in _selected(root, names):
        target = root / "release" / name
        expected = expected_release(root, name)
        if target.is_dir():
            for relative in _files(target):
                if relative not in expected:
                    (target / relative).unlink()
        for relative, content in expected.items():
            path = target / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.is_file() or path.read_bytes() != content:
                path.write_bytes(content)
            written.append(path)
    return written


def check_sync(root: str | Path, names: Iterable[str] | None = None) -> list[str]:
    """Differences between ``release/`` and what :func:`generate` would write (empty when in sync)."""
    root = Path(root)
    problems = []
    for name in _selected(root, names):
        target = root / "release" / name
        expected = expected_release(root, name)
        actual = set(_files(target)) if target.is_dir() else set()
        for relative in sorted(set(expected) | actual):
            path = target / relative
            if relative not in actual:
                problems.append(f"{path}: missing (run generate)")
            elif relative not in expected:
                problems.append(f"{path}: not produced by the source (run generate)")
            elif path.read_bytes() != expected[relative]:
                problems.append(f"{path}: differs from the release of {root / 'source' / name / relative}")
    return problems


def copy_assignment_folder(src: Path, dst: Path) -> None:
    """Copy a submission folder, skipping checkpoints and caches."""
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns(*IGNORED_FILES), symlinks=True)


# --------------------------------------------------------------------------------------------------
# Submission + source → the notebook the autograder runs


def merge_submission(source: NotebookNode, submission: NotebookNode, name: str = "notebook") -> tuple[NotebookNode, list[str]]:
    """The notebook to grade: the submission's answers with the source's locked and test cells.

    Never trusts the submission's test or locked cells: every source cell of kind ``tests``,
    ``readonly`` or ``task`` is taken from the source (test cells with their hidden tests), matched by
    ``grade_id``. Answer and manual cells come from the submission (with the source's metadata, so
    points cannot be edited); a missing one is replaced by its unanswered release version. The
    student's own cells (no known ``grade_id``) stay where they were, before the next known cell.
    Cells follow the source's order.

    Returns:
        The merged notebook (outputs cleared, fresh cell ids) and notes for the report: cells that
        were missing, modified, or duplicated in the submission.
    """
    validate_source(source, name)
    notes: list[str] = []
    source_ids = {grade_id(cell) for cell in source.cells if grade_id(cell)}
    blocks: dict[str, list[NotebookNode]] = {}
    submitted: dict[str, NotebookNode] = {}
    pending: list[NotebookNode] = []
    for cell in submission.cells:
        gid = grade_id(cell)
        if gid in source_ids and gid not in submitted:
            submitted[gid] = cell
            blocks[gid] = pending
            pending = []
        else:
            if gid in source_ids:
                notes.append(f"cell {gid!r} appears more than once in the submission; only the first counts")
                continue
            pending.append(cell)

    cells: list[NotebookNode] = []
    for index, original in enumerate(source.cells):
        gid = grade_id(original)
        if gid is None:
            continue
        cells.extend(copy.deepcopy(cell) for cell in blocks.get(gid, []))
        kind = cell_kind(original)
        where = f"{name}, cell {index}"
        if kind in ("answer", "manual"):
            if gid in submitted:
                cell = copy.deepcopy(original)
                cell.source = submitted[gid].source
            else:
                cell = copy.deepcopy(original)
                cell.source = strip_solution(original, where)
                notes.append(f"answer cell {gid!r} is missing from the submission; graded as unanswered")
        else:
            cell = copy.deepcopy(original)
            if gid not in submitted:
                notes.append(f"{kind} cell {gid!r} is missing from the submission; restored from the source")
            else:
                released = strip_hidden_tests(original.source, where) if kind == "tests" else original.source
                if submitted[gid].source.strip() != released.strip() and submitted[gid].source.strip() != original.source.strip():
                    notes.append(f"{kind} cell {gid!r} was modified in the submission; the original was used")
        cells.append(cell)
    cells.extend(copy.deepcopy(cell) for cell in pending)

    merged = copy.deepcopy(source)
    merged.cells = cells
    for number, cell in enumerate(merged.cells):
        cell["id"] = f"cell-{number}"
        cell.metadata.pop(EXTENSION_KEY, None)
    return clear_outputs(merged), notes
