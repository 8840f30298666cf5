"""The graded assignments under real nbgrader, with the course tooling (``course/tooling``) it is configured with.

Fast tests read the notebooks: the teacher's source (``course/teacher/source``) against the release students
receive (``course/assignments/release``), the calibration record against the checks, the checks themselves.
A tiny assignment runs through nbgrader with the configured preprocessors: the whole-notebook time limit,
the record of writes outside the folder, manual points left pending, hidden tests kept out of the feedback.
One session fixture runs the real pipeline on every assignment, two at a time, each in its own temporary
course directory: ``generate_assignment``, ``autograde`` of the solution and of the untouched release, and
``generate_feedback``; the tests read the gradebook, the reports and the feedback.
"""

from __future__ import annotations

import ast
import html
import json
import math
import os
import re
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

REPOSITORY = Path(__file__).resolve().parents[1]
if str(REPOSITORY) not in sys.path:  # the course tooling is not installed: it is imported from the repository
    sys.path.insert(0, str(REPOSITORY))

from course.tooling import calibrate, checks  # noqa: E402
from course.tooling.__main__ import main as tooling_main  # noqa: E402
from course.tooling.nbgrader_plugins import REPORT  # noqa: E402

TEACHER = REPOSITORY / "course" / "teacher"
SOURCE = TEACHER / "source"
STUDENTS = REPOSITORY / "course" / "assignments"
RELEASE = STUDENTS / "release"
NAMES = sorted(path.name for path in SOURCE.iterdir() if (path / f"{path.name}.ipynb").is_file())
# Cell metadata students may receive: nbgrader's and Jupyter's own keys.
ALLOWED_CELL_METADATA = {"nbgrader", "tags", "editable", "deletable"}
BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"


def _nbgrader(*args: str, root: Path, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run nbgrader from the teacher's folder (its nbgrader_config.py), on a temporary course root."""
    bin_dir = Path(sys.executable).parent  # nbgrader runs `alembic`: the environment's bin/ must be on PATH
    env = dict(os.environ, PATH=os.pathsep.join([str(bin_dir), os.environ.get("PATH", "")]), MPLBACKEND="Agg")
    command = [sys.executable, "-m", "nbgrader", *args, f"--CourseDirectory.root={root}",
               "--CourseDirectory.release_directory=release", f"--CourseDirectory.db_url=sqlite:///{root}/gradebook.db"]
    result = subprocess.run(command, cwd=TEACHER, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{' '.join(args)} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _grade(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def _regions(text: str, begin: str, end: str) -> list[str]:
    """The lines inside ``begin``/``end`` regions, stripped, long enough to be telling."""
    lines, inside = [], False
    for line in text.splitlines():
        if begin in line:
            inside = True
        elif end in line:
            inside = False
        elif inside and len(line.strip()) >= 12:
            lines.append(line.strip())
    return lines


def _public(text: str) -> str:
    """``text`` without its solution and hidden-test regions."""
    for begin, end in ((BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN, END_HIDDEN)):
        text = re.sub(rf"[^\n]*{re.escape(begin)}.*?{re.escape(end)}[^\n]*", "", text, flags=re.S)
    return text


def _secrets(source: nbformat.NotebookNode, begin: str | None = None, end: str | None = None) -> list[str]:
    """Lines of the solutions and hidden tests (or of one kind of region) that the public parts do not contain."""
    public = "\n".join(_public(cell.source) for cell in source.cells).replace("`", "")  # as Markdown renders
    pairs = [(begin, end)] if begin else [(BEGIN_SOLUTION, END_SOLUTION), (BEGIN_HIDDEN, END_HIDDEN)]
    return [line for cell in source.cells for b, e in pairs for line in _regions(cell.source, b, e) if line not in public]


def _visible_text(html_text: str) -> str:
    """What a browser shows of an nbconvert HTML page (highlighting spans removed, entities decoded)."""
    body = re.sub(r"<style.*?</style>|<script.*?</script>", "", html_text, flags=re.S)
    return html.unescape(re.sub(r"<[^>]+>", "", body))


def _scores(db: Path, assignment: str) -> dict[str, dict]:
    """Per student: total, max, and ``{grade_id: (auto_score, manual_score, score, max, needs_manual)}``."""
    result = {}
    with Gradebook(f"sqlite:///{db}") as gb:
        for submission in gb.assignment_submissions(assignment):
            cells = {grade.name: (grade.auto_score, grade.manual_score, grade.score, grade.max_score,
                                  grade.needs_manual_grade)
                     for notebook in submission.notebooks for grade in notebook.grades}
            result[submission.student_id] = {"score": submission.score, "max": submission.max_score, "cells": cells}
    return result


# --------------------------------------------------------------------------------------------------
# The notebooks, without running them


def test_teacher_and_student_trees_are_apart():
    assert NAMES == ["a1_weight_pruning", "a2_neuron_budget", "a3_lottery_ticket", "a4_scratch_training", "a5_supermask",
                     "a6_distill_and_prune"]
    assert sorted(path.name for path in RELEASE.iterdir() if path.is_dir()) == NAMES
    assert not (STUDENTS / "source").exists(), "the solutions must not sit in the students' tree"
    for path in STUDENTS.rglob("*.ipynb"):
        text = path.read_text(encoding="utf-8")
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
            assert marker not in text, f"{path.relative_to(REPOSITORY)} contains {marker}"


@pytest.mark.parametrize("name", NAMES)
def test_release_carries_nothing_students_should_not_see(name):
    source = _read(SOURCE / name / f"{name}.ipynb")
    release = _read(RELEASE / name / f"{name}.ipynb")
    assert [_grade(c).get("grade_id") for c in release.cells] == [_grade(c).get("grade_id") for c in source.cells]
    text = "\n".join(cell.source for cell in release.cells)
    secrets = _secrets(source)
    assert secrets, "the source has solutions and hidden tests"
    leaked = [line for line in secrets if line in text]
    assert not leaked, f"solution or hidden-test lines in the release: {leaked[:5]}"
    assert set(release.metadata) <= {"kernelspec", "language_info"}
    for cell in release.cells:
        assert set(cell.metadata) <= ALLOWED_CELL_METADATA, f"{_grade(cell).get('grade_id')}: {sorted(cell.metadata)}"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None


@pytest.mark.parametrize("name", NAMES)
def test_test_cells_end_in_no_value(name):
    """nbgrader scores a test cell whose last value is a number by that number: end in a statement or a call
    that returns None (print, the checks, a2's and a6's tier helper)."""
    source = _read(SOURCE / name / f"{name}.ipynb")
    tests = [cell for cell in source.cells if _grade(cell).get("grade") and cell.cell_type == "code"]
    assert tests and all(BEGIN_HIDDEN in cell.source for cell in tests), "every test cell has hidden tests"
    parameters = [c for c in source.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0].source.strip() == "SEED = 0"
    for cell in tests:
        last = ast.parse(cell.source).body[-1]
        if isinstance(last, ast.Expr):
            assert isinstance(last.value, ast.Call) and getattr(last.value.func, "id", None) in (
                "print", "check_at_least", "check_at_most", "_grade_tier"), \
                f"{_grade(cell)['grade_id']} ends in a value: {ast.unparse(last)}"


def _checked_quantities(nb, name: str) -> set[tuple]:
    """``(assignment, quantity, direction, margin)`` of every check_at_least/at_most call in the test cells, and of
    every call of a tier helper ``_grade_tier(tier, quantity, margin)`` (a2, a6), which checks at least."""
    found = set()
    for cell in nb.cells:
        if not _grade(cell).get("grade") or cell.cell_type != "code":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("check_at_least", "check_at_most"):
                if not isinstance(node.args[1], ast.Constant):
                    continue  # the helper's own call, with the quantity as a variable
                direction = "at_least" if node.func.id == "check_at_least" else "at_most"
                margin = next(k.value for k in node.keywords if k.arg == "margin")
                found.add((node.args[0].value, node.args[1].value, direction, ast.literal_eval(margin)))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_grade_tier":
                found.add((name, node.args[1].value, "at_least", node.args[2].value))
    return found


def test_calibration_record_matches_the_hidden_tests():
    record = json.loads(checks.DEFAULT_FILE.read_text(encoding="utf-8"))
    assert checks.DEFAULT_FILE == STUDENTS / "calibration.json"
    assert sorted(record["assignments"]) == NAMES
    assert (STUDENTS / "calibration.md").read_text(encoding="utf-8") == calibrate.markdown(record)
    for name in NAMES:
        entry = record["assignments"][name]
        assert name in entry["command"] and entry["command"].endswith("--seeds 5") and len(entry["seeds"]) >= 5
        checked = _checked_quantities(_read(SOURCE / name / f"{name}.ipynb"), name)
        recorded = {(name, quantity, item["direction"], item["margin"]) for quantity, item in entry["quantities"].items()}
        assert checked == recorded, f"{name}: the tests check {sorted(checked)}, calibration.json has {sorted(recorded)}"
        for quantity, item in entry["quantities"].items():
            values = [item["values"][str(seed)] for seed in entry["seeds"]]
            worst = min(values) if item["direction"] == "at_least" else max(values)
            assert item["worst"] == worst
            bound = worst - item["margin"] if item["direction"] == "at_least" else worst + item["margin"]
            assert abs(item["threshold"] - bound) <= 0.001 + 1e-9, quantity
            assert (item["threshold"] <= bound) if item["direction"] == "at_least" else (item["threshold"] >= bound)


def test_checks_compare_against_the_recorded_threshold(tmp_path, monkeypatch, capsys):
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"assignments": {"x": {"quantities": {"acc": {
        "direction": "at_least", "margin": 0.05, "values": {"0": 0.9, "1": 0.8}, "worst": 0.8, "threshold": 0.75,
        "label": "accuracy"}}}}}))
    monkeypatch.setenv(checks.ENV_FILE, str(path))
    monkeypatch.delenv(checks.ENV_RECORD, raising=False)
    assert checks.check_at_least("x", "acc", 0.76, margin=0.05) is None  # no value: nbgrader would score it
    with pytest.raises(AssertionError, match=r"0\.7000.*0\.7500.*2 seeds"):
        checks.check_at_least("x", "acc", 0.70, margin=0.05, label="accuracy")
    with pytest.raises(AssertionError, match="finite"):
        checks.check_at_least("x", "acc", math.nan, margin=0.05)
    with pytest.raises(checks.CalibrationError, match="recalibrate"):
        checks.check_at_least("x", "acc", 0.9, margin=0.02)
    with pytest.raises(checks.CalibrationError, match="not calibrated"):
        checks.check_at_least("x", "other", 0.9, margin=0.02)
    assert "≥ 0.7500" in checks.show_threshold("x", "acc")
    log = tmp_path / "record.jsonl"
    monkeypatch.setenv(checks.ENV_RECORD, str(log))
    assert checks.check_at_most("x", "new", 3.0, margin=1.0) is None
    assert json.loads(log.read_text())["direction"] == "at_most"
    quantities = calibrate.aggregate([[{"quantity": "q", "label": "q", "direction": "at_most", "margin": 0.1, "value": v}]
                                      for v in (0.2, 0.25)], [0, 1])
    assert quantities["q"]["worst"] == 0.25 and quantities["q"]["threshold"] == 0.35


def test_library_carries_no_grading():
    assert not (REPOSITORY / "lightning_prune" / "grading").exists()
    pyproject = (REPOSITORY / "pyproject.toml").read_text(encoding="utf-8")
    assert "lightning-prune-grade" not in pyproject and "grading" not in pyproject.split("[project.scripts]")[1].split("[")[0]


# --------------------------------------------------------------------------------------------------
# A tiny assignment: what the course tooling adds to nbgrader


def _cell(kind: str, source: str, grade_id: str, points: float | None = None, cell_type: str = "code", **extra):
    flags = {"readonly": (False, True, False), "answer": (False, False, True), "tests": (True, True, False),
             "manual": (True, False, True)}[kind]
    meta = {"nbgrader": {"grade": flags[0], "locked": flags[1], "solution": flags[2], "grade_id": grade_id,
                         "schema_version": 3, "task": False, **({"points": points} if points else {})}, **extra}
    make = nbformat.v4.new_code_cell if cell_type == "code" else nbformat.v4.new_markdown_cell
    return make(source, metadata=meta)


def test_tiny_assignment_time_limit_outside_writes_pending_manual_points_and_feedback(tmp_path, capsys):
    name = "tiny"
    outside = tmp_path / "outside.txt"
    cells = [
        _cell("readonly", "# A tiny assignment", "intro", cell_type="markdown"),
        _cell("readonly", "import time\nx = 2", "setup"),
        _cell("answer", "def double(v):\n    ### BEGIN SOLUTION\n    return 2 * v\n    ### END SOLUTION", "double"),
        _cell("tests", "assert double(1) == 2\n### BEGIN HIDDEN TESTS\nassert double(21) == 42, 'hidden secret 4242'\n"
                       "### END HIDDEN TESTS", "double_tests", 2),
        _cell("tests", f"with open({str(outside)!r}, 'w') as handle:\n    handle.write('x')", "writes_tests", 1),
        _cell("manual", "### BEGIN SOLUTION\nBecause of the secret reason 777.\n### END SOLUTION", "why", 3,
              cell_type="markdown", rubric={"keywords": ["secret"]}),
        _cell("readonly", "time.sleep(60)", "slow"),
        _cell("tests", "assert x == 2", "after_limit", 1),
    ]
    (tmp_path / "source" / name).mkdir(parents=True)
    nbformat.write(nbformat.v4.new_notebook(cells=cells), tmp_path / "source" / name / f"{name}.ipynb")
    _nbgrader("generate_assignment", name, root=tmp_path)
    release = _read(tmp_path / "release" / name / f"{name}.ipynb")
    text = json.dumps(release)
    # the secrets with their words: bare digits can turn up in the random cell ids
    assert "secret 4242" not in text and "reason 777" not in text and "rubric" not in text
    for student, notebook in (("solution", tmp_path / "source" / name / f"{name}.ipynb"),
                              ("blank", tmp_path / "release" / name / f"{name}.ipynb")):
        (tmp_path / "submitted" / student / name).mkdir(parents=True)
        shutil.copy(notebook, tmp_path / "submitted" / student / name / f"{name}.ipynb")
    _nbgrader("autograde", name, "--LimitedExecute.total_timeout=5", root=tmp_path)
    _nbgrader("generate_feedback", name, root=tmp_path)

    scores = _scores(tmp_path / "gradebook.db", name)
    solution, blank = scores["solution"]["cells"], scores["blank"]["cells"]
    assert solution["double_tests"][2] == 2
    assert solution["writes_tests"][2] == 1, "an outside write is reported, not penalised"
    assert solution["why"][:3] == (None, None, 0) and solution["why"][4], "manual points: pending, not counted"
    assert solution["after_limit"][2] == 0, "cells after the whole-notebook limit are not run and score 0"
    assert scores["solution"]["score"] == 3 and scores["solution"]["max"] == 7
    assert scores["blank"]["score"] == 1 and blank["double_tests"][2] == 0  # only the outside write scores
    report = json.loads((tmp_path / "autograded" / "solution" / name / REPORT).read_text())[name]
    assert report["time_limit_hit"] and report["total_timeout"] == 5 and report["cell_timeout"] == 120
    assert any(str(outside) in write for write in report["writes_outside"]), report
    capsys.readouterr()
    assert tooling_main(["report", str(tmp_path / "autograded")]) == 1
    listed = capsys.readouterr().out
    assert f"solution {name}/{name}" in listed and "over the limit of 5 s" in listed and str(outside) in listed
    autograded = _read(tmp_path / "autograded" / "solution" / name / f"{name}.ipynb")
    assert [c.source for c in autograded.cells] == [c.source for c in cells], "the grader's prelude left no trace"
    assert any(o.get("ename") == "NotebookTimeLimit" for o in autograded.cells[-1].outputs)
    feedback = _visible_text((tmp_path / "feedback" / "solution" / name / f"{name}.html").read_text(encoding="utf-8"))
    assert "assert double(1) == 2" in feedback  # the visible test is shown ...
    assert "hidden secret 4242" not in feedback and "double(21)" not in feedback  # ... the hidden one is not
    blank_feedback = _visible_text((tmp_path / "feedback" / "blank" / name / f"{name}.html").read_text(encoding="utf-8"))
    assert "reason 777" not in blank_feedback and "return 2 * v" not in blank_feedback and "double(21)" not in blank_feedback


# --------------------------------------------------------------------------------------------------
# The six assignments through real nbgrader


def _pipeline(name: str, base: Path) -> Path:
    root = base / name
    (root / "source").mkdir(parents=True)
    shutil.copytree(SOURCE / name, root / "source" / name)
    _nbgrader("generate_assignment", name, root=root)
    for student, notebook in (("solution", root / "source" / name / f"{name}.ipynb"),
                              ("untouched", root / "release" / name / f"{name}.ipynb")):
        (root / "submitted" / student / name).mkdir(parents=True)
        shutil.copy(notebook, root / "submitted" / student / name / f"{name}.ipynb")
    _nbgrader("autograde", name, root=root)
    _nbgrader("generate_feedback", name, root=root)
    return root


@pytest.fixture(scope="session")
def graded(tmp_path_factory) -> dict[str, Path]:
    """Every assignment through generate_assignment, autograde (solution, untouched release), generate_feedback."""
    base = tmp_path_factory.mktemp("nbgrader")
    with ThreadPoolExecutor(max_workers=2) as pool:  # slowest first; each in its own course root and gradebook
        roots = dict(zip(NAMES, pool.map(lambda name: _pipeline(name, base), NAMES)))
    return roots


@pytest.mark.parametrize("name", NAMES)
def test_nbgrader_release_is_the_committed_one(graded, name):
    generated = graded[name] / "release" / name / f"{name}.ipynb"
    assert generated.read_bytes() == (RELEASE / name / f"{name}.ipynb").read_bytes(), \
        "course/assignments/release is out of date: run `nbgrader generate_assignment <name> --force` in course/teacher"


@pytest.mark.parametrize("name", NAMES)
def test_nbgrader_gives_the_solution_full_marks_and_the_release_zero(graded, name):
    scores = _scores(graded[name] / "gradebook.db", name)
    solution, untouched = scores["solution"], scores["untouched"]
    manual = {grade_id for grade_id, cell in solution["cells"].items() if cell[4]}
    for grade_id, (auto, _, score, maximum, needs_manual) in solution["cells"].items():
        if grade_id in manual:
            assert auto is None and score == 0, f"{grade_id}: written answers wait for the teacher"
        else:
            assert score == maximum, f"{name}/{grade_id}: the solution scores {score} of {maximum}"
    assert solution["score"] == sum(cell[3] for grade_id, cell in solution["cells"].items() if grade_id not in manual)
    assert untouched["score"] == 0, {k: v for k, v in untouched["cells"].items() if v[2]}
    report = json.loads((graded[name] / "autograded" / "solution" / name / REPORT).read_text())[name]
    assert not report["time_limit_hit"] and not report["cell_timeouts"] and report["writes_outside"] == []


@pytest.mark.parametrize("name", NAMES)
def test_feedback_shows_no_hidden_test_or_solution(graded, name):
    source = _read(SOURCE / name / f"{name}.ipynb")
    hidden, solutions = _secrets(source, BEGIN_HIDDEN, END_HIDDEN), _secrets(source, BEGIN_SOLUTION, END_SOLUTION)
    visible_test = next(cell.source.splitlines()[1] for cell in source.cells
                        if _grade(cell).get("grade") and cell.cell_type == "code")
    own = set(_regions("\n".join(cell.source for cell in source.cells), BEGIN_SOLUTION, END_SOLUTION))
    for student, secrets in (("solution", [line for line in hidden if line not in own]), ("untouched", hidden + solutions)):
        page = _visible_text((graded[name] / "feedback" / student / name / f"{name}.html").read_text(encoding="utf-8"))
        assert visible_test.strip() in page, "the feedback shows the visible tests"
        assert "__course_tooling_audit" not in page
        leaked = [line for line in secrets if line in page]
        assert not leaked, f"{student}'s feedback shows: {leaked[:5]}"
