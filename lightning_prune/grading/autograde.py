"""Grade submitted notebooks against their source: run, score every test cell, explain every lost point.

For each submission:

1. The source notebook is found by name (``<assignments>/source/<name>/<name>.ipynb``) and merged
   with the submission (:func:`~lightning_prune.grading.notebooks.merge_submission`): the student's
   answer cells, the source's locked and test cells, hidden tests included.
2. The submission's folder is copied to a temporary folder and the merged notebook runs there in a
   separate process (:func:`~lightning_prune.grading.runner.run_notebook`), with a per-cell and a
   total time limit, ``HOME`` and ``TMPDIR`` in the temporary tree, and the best-effort checks of
   :mod:`~lightning_prune.grading.sandbox` for writes outside the folder.
3. Every test cell that ran without an error earns its points; one that failed earns none, with
   the reason (the assertion message or exception). Manually graded answers with ``keywords`` in
   their source metadata get a provisional keyword score; the others are left to a teacher.
4. ``report.json``, ``report.md`` and the executed notebook are written to the output folder.
"""

from __future__ import annotations

import csv
import itertools
import json
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from nbformat import NotebookNode

from lightning_prune.grading import checks, notebooks, sandbox
from lightning_prune.grading.runner import TIMING, Execution, run_notebook

DEFAULT_CELL_TIMEOUT = 120.0
DEFAULT_TOTAL_TIMEOUT = 600.0
MAX_COPY_FILES = 500
MAX_COPY_BYTES = 200 * 2**20
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


@dataclass
class CellResult:
    """The score of one graded cell.

    Attributes:
        grade_id: The cell's ``grade_id``.
        kind: ``"tests"``, ``"manual"`` or ``"task"``.
        task: The task the cell belongs to: its ``grade_id`` up to ``"__"`` (tiers share a task), without a
            ``_tests`` suffix.
        label: What the cell checks (its first comment line, or its ``grade_id``).
        points: Points the cell is worth.
        score: Points earned (0 for manual cells waiting for a teacher).
        status: ``"passed"``, ``"failed"``, ``"timeout"``, ``"not run"``, ``"keywords"``,
            ``"unanswered"`` or ``"manual"``.
        reason: Why points were lost (empty when none were).
        details: The traceback or the answer text, for the JSON report.
    """

    grade_id: str
    kind: str
    task: str
    label: str
    points: float
    score: float
    status: str
    reason: str = ""
    details: str = ""


@dataclass
class Report:
    """The grade of one submission."""

    assignment: str
    student: str
    submission: str
    score: float = 0.0
    max_score: float = 0.0
    pending_manual: float = 0.0
    results: list[CellResult] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    answer_errors: dict[str, str] = field(default_factory=dict)
    seconds: float = 0.0
    graded_at: str = ""

    def task_scores(self) -> dict[str, tuple[float, float]]:
        """Task name to ``(score, points)``."""
        totals: dict[str, list[float]] = {}
        for result in self.results:
            entry = totals.setdefault(result.task, [0.0, 0.0])
            entry[0] += result.score
            entry[1] += result.points
        return {task: (round(score, 2), round(points, 2)) for task, (score, points) in totals.items()}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["tasks"] = {task: {"score": score, "points": points} for task, (score, points) in self.task_scores().items()}
        return data

    def markdown(self) -> str:
        """The report as Markdown: the total, the problems, one row per graded cell."""
        lines = [f"# {self.assignment}: {self.student}", "",
                 f"**Score: {_number(self.score)} / {_number(self.max_score)}**"
                 + (f" ({_number(self.pending_manual)} points wait for manual grading)" if self.pending_manual else ""),
                 "", f"Submission: `{self.submission}`; graded {self.graded_at} in {self.seconds:.1f} s.", ""]
        if self.problems:
            lines += ["## Problems", ""] + [f"- {problem}" for problem in self.problems] + [""]
        lines += ["## Tasks", "", "| task | cell | what is checked | points | score | result | reason |",
                  "|---|---|---|---:|---:|---|---|"]
        for result in self.results:
            reason = result.reason.replace("|", "\\|").replace("\n", " ")
            label = result.label.replace("|", "\\|")
            lines.append(f"| {result.task} | `{result.grade_id}` | {label} | {_number(result.points)} | "
                         f"{_number(result.score)} | {result.status} | {reason} |")
        lines += ["", "| task | score |", "|---|---:|"]
        lines += [f"| {task} | {_number(score)} / {_number(points)} |" for task, (score, points) in self.task_scores().items()]
        if self.answer_errors:
            lines += ["", "## Errors in answer cells", ""]
            lines += [f"- `{gid}`: {error}" for gid, error in self.answer_errors.items()]
        if self.notes:
            lines += ["", "## Notes", ""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"


def _number(value: float) -> str:
    return f"{value:g}"


def _label(cell: NotebookNode) -> str:
    """The first comment (code) or heading (Markdown) line of a cell, skipping nbgrader's markers."""
    markers = (notebooks.BEGIN_SOLUTION, notebooks.END_SOLUTION, notebooks.BEGIN_HIDDEN, notebooks.END_HIDDEN)
    for line in cell.source.splitlines():
        stripped = line.strip()
        if not stripped or any(marker in stripped for marker in markers):
            continue
        if stripped.startswith("#"):
            return stripped.lstrip("#").strip()
        break
    return notebooks.grade_id(cell) or "cell"


def _error(cell: NotebookNode) -> tuple[str, str, str] | None:
    """``(ename, evalue, traceback)`` of the cell's first error output, ANSI codes removed."""
    for output in cell.get("outputs", []):
        if output.get("output_type") == "error":
            traceback = ANSI.sub("", "\n".join(output.get("traceback", [])))
            return output.get("ename", "Error"), ANSI.sub("", output.get("evalue", "")), traceback
    return None


def _failing_line(traceback: str) -> str:
    """The source line IPython marks with ``---->`` last in a traceback."""
    marked = [line for line in traceback.splitlines() if line.lstrip().startswith("---->") or line.lstrip().startswith("->")]
    if not marked:
        return ""
    return re.sub(r"^\s*-*>\s*\d*\s*", "", marked[-1]).strip()


def _reason(ename: str, evalue: str, traceback: str, answer_errors: dict[str, str]) -> str:
    if ename == "NotImplementedError" and not evalue:
        return "NotImplementedError: a function this test calls is not implemented yet (it still raises NotImplementedError)"
    reason = f"{ename}: {evalue}" if evalue else ename
    if ename == "AssertionError" and not evalue:
        line = _failing_line(traceback)
        reason = f"AssertionError in `{line}`" if line else "AssertionError (an assertion without a message failed)"
    if ename == "NameError" and answer_errors:
        reason += f" (probably because an answer cell failed: {', '.join(answer_errors)})"
    return reason[:600]


def _cell_name(nb: NotebookNode, index: int | None) -> str:
    if index is None or nb is None or not 0 <= index < len(nb.cells):
        return "an unknown cell"
    cell = nb.cells[index]
    gid = notebooks.grade_id(cell)
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")[:60]
    return f"cell {index} ({gid})" if gid else f"cell {index} (your cell: `{first}`)"


def _keyword_score(cell: NotebookNode, answer: str, unanswered: str) -> tuple[float, str, str]:
    """``(score, status, reason)`` of a manual answer with ``keywords`` metadata."""
    groups = cell.metadata.get(notebooks.EXTENSION_KEY, {}).get("keywords", [])
    total = notebooks.points(cell)
    if answer.strip() == unanswered.strip() or not answer.strip():
        return 0.0, "unanswered", "not answered (still 'YOUR ANSWER HERE')"
    text = answer.lower()
    missing = [group for group in groups if not any(word.lower() in text for word in group)]
    score = round(total * (len(groups) - len(missing)) / len(groups), 2)
    reason = "provisional keyword check, to be confirmed by a teacher"
    if missing:
        reason += f"; does not mention: {'; '.join(' / '.join(group) for group in missing)}"
    return score, "keywords", reason


def score_notebook(source: NotebookNode, executed: NotebookNode | None, merged: NotebookNode, execution: Execution | None,
                   answer_errors: dict[str, str]) -> list[CellResult]:
    """Score every graded cell of ``source`` from the executed merged notebook."""
    ran = executed if executed is not None else merged
    by_id = {notebooks.grade_id(cell): (index, cell) for index, cell in enumerate(ran.cells) if notebooks.grade_id(cell)}
    executed_indices = set(execution.executed) if execution else set()
    results = []
    for index, original in enumerate(source.cells):
        kind = notebooks.cell_kind(original)
        if kind not in ("tests", "manual", "task"):
            continue
        gid = notebooks.grade_id(original)
        task = gid.split("__")[0]
        task = task.removesuffix("_tests")
        label = _label(original)
        if kind != "tests" and index > 0 and source.cells[index - 1].cell_type == "markdown":
            label = _label(source.cells[index - 1])  # a written answer: the heading of the question above it
        result = CellResult(grade_id=gid, kind=kind, task=task, label=label,
                            points=notebooks.points(original), score=0.0, status="failed")
        position, cell = by_id.get(gid, (None, original))
        if kind == "tests":
            timing = cell.metadata.get(TIMING, {})
            error = _error(cell)
            if execution is None or position not in executed_indices:
                result.status = "not run"
                if execution is not None and execution.stopped_at is not None:
                    cause = "the kernel died" if execution.kernel_died else "the total time limit ran out"
                    where = "while this cell was running" if execution.stopped_at == position else \
                        f"in {_cell_name(ran, execution.stopped_at)}"
                    result.reason = f"not run: {cause} {where}"
                else:
                    result.reason = "not run: the notebook could not be executed"
            elif timing.get("timed_out"):
                result.status = "timeout"
                result.reason = f"the cell exceeded the per-cell time limit ({timing.get('seconds')} s) and was interrupted"
            elif error:
                ename, evalue, traceback = error
                result.reason = _reason(ename, evalue, traceback, answer_errors)
                result.details = traceback[-4000:]
            else:
                result.status, result.score = "passed", result.points
        elif kind == "manual":
            answer = cell.source if position is not None else ""
            unanswered = notebooks.strip_solution(original)
            result.details = answer[:4000]
            if original.metadata.get(notebooks.EXTENSION_KEY, {}).get("keywords"):
                result.score, result.status, result.reason = _keyword_score(original, answer, unanswered)
            elif answer.strip() == unanswered.strip():
                result.status, result.reason = "unanswered", "not answered (still 'YOUR ANSWER HERE')"
            else:
                result.status, result.reason = "manual", "to be graded by a teacher"
        else:
            result.status, result.reason = "manual", "task to be graded by a teacher"
        results.append(result)
    return results


def find_source(submission: Path, root: Path) -> Path | None:
    """The source notebook of a submission: by the notebook's name, else by its folder's name."""
    for name in (submission.stem, submission.parent.name):
        candidate = notebooks.source_notebook(root, name)
        if candidate.is_file():
            return candidate
    return None


def default_assignments_root() -> Path:
    """``course/assignments`` of the current directory if it exists, else of the repository."""
    here = Path.cwd() / "course" / "assignments"
    if (here / "source").is_dir():
        return here
    return Path(__file__).resolve().parents[2] / "course" / "assignments"


def _student_of(submission: Path) -> str:
    parts = submission.resolve().parts
    if "submitted" in parts[:-1]:
        position = len(parts) - 1 - parts[::-1].index("submitted")
        if position + 1 < len(parts) - 1:
            return parts[position + 1]
    return submission.parent.name or "submission"


def _copy_folder(folder: Path, target: Path, notebook: Path) -> str | None:
    """Copy the submission's folder; only the notebook when the folder is implausibly large."""
    files = list(itertools.islice((path for path in folder.rglob("*") if path.is_file()), MAX_COPY_FILES + 1))
    size = sum(path.stat().st_size for path in files)
    if len(files) > MAX_COPY_FILES or size > MAX_COPY_BYTES:
        target.mkdir(parents=True)
        shutil.copy2(notebook, target / notebook.name)
        return f"the submission's folder {folder} is large ({len(files)}+ files, {size / 2**20:.0f} MB); only the notebook was copied"
    notebooks.copy_assignment_folder(folder, target)
    return None


def grade_submission(
    submission: str | Path,
    root: str | Path | None = None,
    source: str | Path | None = None,
    out_dir: str | Path | None = None,
    student: str | None = None,
    cell_timeout: float | None = DEFAULT_CELL_TIMEOUT,
    total_timeout: float | None = DEFAULT_TOTAL_TIMEOUT,
    watch: list[str | Path] | None = None,
    keep_workdir: bool = False,
) -> Report:
    """Grade one submitted notebook; never raises for a broken submission (it is reported).

    Args:
        submission: The submitted ``.ipynb``.
        root: The assignments folder (holding ``source/`` and ``calibration.json``); default
            :func:`default_assignments_root`.
        source: The source notebook, if not found by name under ``root``.
        out_dir: Where ``report.json``, ``report.md`` and the executed notebook go (``None``: nowhere).
        student: The student's name in the report (default: from the path).
        cell_timeout: Seconds per cell before it is interrupted.
        total_timeout: Seconds for the whole notebook before it is stopped.
        watch: Folders whose files must not change during the run (default: the submission folder's
            parent). See :mod:`~lightning_prune.grading.sandbox`.
        keep_workdir: Keep the temporary folder (its path is added to the report's notes).
    """
    submission = Path(submission).resolve()
    root = Path(root).resolve() if root is not None else default_assignments_root()
    started = time.monotonic()
    source_path = Path(source).resolve() if source is not None else find_source(submission, root)
    assignment = source_path.parent.name if source_path else submission.stem
    report = Report(assignment=assignment, student=student or _student_of(submission), submission=str(submission),
                    graded_at=time.strftime("%Y-%m-%d %H:%M:%S"))
    if source_path is None:
        report.problems.append(f"no source notebook for {submission.name} under {root / 'source'}; nothing was graded")
        return _finish(report, started, out_dir, None)
    source_nb = notebooks.read_notebook(source_path)
    report.max_score = sum(notebooks.points(cell) for cell in source_nb.cells
                           if notebooks.cell_kind(cell) in ("tests", "manual", "task"))
    try:
        submitted_nb = notebooks.read_notebook(submission)
    except Exception as error:  # noqa: BLE001 - not JSON, not a notebook: reported
        report.problems.append(f"the submission is not a readable notebook ({type(error).__name__}: {error}); "
                               "nothing could be run")
        report.results = score_notebook(source_nb, None, notebooks.release_notebook(source_nb, assignment), None, {})
        return _finish(report, started, out_dir, None)
    merged, report.notes = notebooks.merge_submission(source_nb, submitted_nb, assignment)

    scratch = Path(tempfile.mkdtemp(prefix="lp-grade-"))
    try:
        work_parent = scratch / "work"
        workdir = work_parent / submission.parent.name
        copied = _copy_folder(submission.parent, workdir, submission)
        if copied:
            report.notes.append(copied)
        notebooks.write_notebook(merged, workdir / submission.name)
        watched = [Path(path).resolve() for path in (watch if watch is not None else [submission.parent.parent])]
        excluded = [scratch] + ([Path(out_dir).resolve()] if out_dir is not None else [])
        before = sandbox.snapshot(watched, exclude=excluded)
        env = {}
        calibration = root / checks.FILE_NAME
        if calibration.is_file():
            env[checks.ENV_FILE] = str(calibration)
        execution = run_notebook(merged, workdir, scratch / "runner", cell_timeout=cell_timeout,
                                 total_timeout=total_timeout, env=env)
        after = sandbox.snapshot(watched, exclude=excluded)
        _describe_execution(report, execution, merged, cell_timeout, total_timeout, work_parent, submission.parent.parent)
        for change in sandbox.changes(before, after):
            report.problems.append(f"a file outside the submission's folder changed during the run: {change} "
                                   "(best-effort check: another program may have changed it)")
        ran = execution.notebook if execution.notebook is not None else merged
        for cell in ran.cells:
            kind = notebooks.cell_kind(cell)
            error = _error(cell)
            if kind == "answer" and error:
                ename, evalue, _ = error
                report.answer_errors[notebooks.grade_id(cell)] = f"{ename}: {evalue}"[:300] if evalue else ename
        report.results = score_notebook(source_nb, execution.notebook, merged, execution, report.answer_errors)
        if keep_workdir:
            report.notes.append(f"temporary folder kept: {scratch}")
        return _finish(report, started, out_dir, execution.notebook)
    finally:
        if not keep_workdir:
            shutil.rmtree(scratch, ignore_errors=True)


def _describe_execution(report: Report, execution: Execution, merged: NotebookNode, cell_timeout, total_timeout,
                        work_parent: Path, original_parent: Path) -> None:
    ran = execution.notebook if execution.notebook is not None else merged
    if execution.runner_error:
        report.problems.append(f"the notebook could not be run: {execution.runner_error}. Runner log: "
                               f"{execution.log_tail[-600:]}")
    if execution.kernel_died:
        report.problems.append(
            f"the kernel died while running {_cell_name(ran, execution.stopped_at)} (os._exit, a crash, or out of "
            "memory); the cells after it did not run and score nothing")
    if execution.total_timeout:
        report.problems.append(
            f"the notebook exceeded the total time limit of {total_timeout:g} s while running "
            f"{_cell_name(ran, execution.stopped_at)}; it was stopped, and the cells after it did not run")
    for index in execution.cell_timeouts:
        report.problems.append(f"{_cell_name(ran, index)} exceeded the per-cell time limit of {cell_timeout:g} s and was "
                               "interrupted")
    for write in execution.writes_outside:
        shown = write.replace(str(work_parent), str(original_parent)) if str(work_parent) in write else write
        report.problems.append(f"the notebook wrote outside its folder: {shown} (in the grading copy; detected by the "
                               "audit hook)")
    for process in execution.processes:
        report.notes.append(f"the notebook started a process (not sandboxed): {process[:200]}")


def _finish(report: Report, started: float, out_dir: str | Path | None, executed: NotebookNode | None) -> Report:
    report.score = round(sum(result.score for result in report.results), 2)
    report.pending_manual = round(sum(result.points for result in report.results if result.status == "manual"), 2)
    report.seconds = round(time.monotonic() - started, 1)
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (out / "report.md").write_text(report.markdown(), encoding="utf-8")
        if executed is not None:
            notebooks.write_notebook(executed, out / f"{report.assignment}.ipynb")
    return report


def find_submissions(folder: Path) -> list[Path]:
    """Every notebook under ``folder`` (checkpoints skipped), sorted."""
    return sorted(path for path in folder.rglob("*.ipynb")
                  if not any(part in notebooks.IGNORED_FILES for part in path.relative_to(folder).parts))


def default_out_root(path: Path, root: str | Path | None = None) -> Path:
    """``autograded/`` next to a ``submitted/`` folder on the path, else in the assignments folder ``root``."""
    parts = path.resolve().parts
    if "submitted" in parts:
        position = len(parts) - 1 - parts[::-1].index("submitted")
        return Path(*parts[:position]) / "autograded"
    return Path(root if root is not None else default_assignments_root()) / "autograded"


def grade_path(path: str | Path, out_root: str | Path | None = None, **options) -> list[Report]:
    """Grade one notebook, or every notebook under a folder (nbgrader's ``submitted/<student>/<assignment>/``).

    Reports go to ``<out_root>/<student>/<assignment>/``; for a folder, ``grades.csv`` and ``grades.md``
    summarise all submissions in ``out_root``.
    """
    path = Path(path).resolve()
    out_root = Path(out_root) if out_root is not None else default_out_root(path, options.get("root"))
    if path.is_file():
        student = options.pop("student", None) or _student_of(path)
        report = grade_submission(path, student=student, out_dir=out_root / student / path.stem, **options)
        return [report]
    reports = []
    for submission in find_submissions(path):
        if submission.resolve().is_relative_to(out_root.resolve()):
            continue  # an executed notebook of an earlier report
        relative = submission.relative_to(path)
        student = relative.parts[0] if len(relative.parts) >= 3 else path.name
        name = submission.stem
        try:
            report = grade_submission(submission, student=student, out_dir=out_root / student / name, **options)
        except Exception as error:  # noqa: BLE001 - a grader bug or an unreadable folder: report it, grade the others
            report = Report(assignment=name, student=student, submission=str(submission),
                            problems=[f"the grader failed on this submission: {type(error).__name__}: {error}"])
        reports.append(report)
    write_summary(reports, out_root)
    return reports


def write_summary(reports: list[Report], out_root: Path) -> None:
    """``grades.csv`` and ``grades.md``: one row per submission."""
    out_root.mkdir(parents=True, exist_ok=True)
    with open(out_root / "grades.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["student", "assignment", "score", "max_score", "pending_manual", "problems", "report"])
        for report in reports:
            writer.writerow([report.student, report.assignment, report.score, report.max_score, report.pending_manual,
                             len(report.problems), str(Path(report.student) / report.assignment / "report.md")])
    lines = ["| student | assignment | score | manual pending | problems |", "|---|---|---:|---:|---:|"]
    lines += [f"| {r.student} | {r.assignment} | {_number(r.score)} / {_number(r.max_score)} | {_number(r.pending_manual)} | "
              f"{len(r.problems)} |" for r in reports]
    (out_root / "grades.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
