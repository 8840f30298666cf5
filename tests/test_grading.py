"""The classroom assignments and their autograder (``lightning_prune.grading``).

Fast tests check the nbgrader conventions (source → release, merge, calibration records) without running
a kernel. A tiny assignment without torch checks how the grader reports broken submissions (an exception,
a dead kernel, an endless loop, the total time limit, writes outside the folder, tampered tests). One
session fixture grades the five real assignments' solutions, untouched student versions and a
deliberately wrong solution, once, and the tests read its reports.
"""

from __future__ import annotations

import ast
import copy
import csv
import json
import math
from pathlib import Path

import nbformat
import pytest

from lightning_prune.grading import autograde, calibration, checks, cli, notebooks

ROOT = Path(__file__).resolve().parents[1] / "course" / "assignments"
NAMES = notebooks.assignment_names(ROOT)


def _meta(kind: str, grade_id: str, points: float | None = None) -> dict:
    flags = {
        "readonly": {"grade": False, "locked": True, "solution": False},
        "answer": {"grade": False, "locked": False, "solution": True},
        "tests": {"grade": True, "locked": True, "solution": False},
        "manual": {"grade": True, "locked": False, "solution": True},
    }[kind]
    meta = {**flags, "grade_id": grade_id, "schema_version": 3, "task": False}
    if points is not None:
        meta["points"] = points
    return {"nbgrader": meta}


# --------------------------------------------------------------------------------------------------
# Conventions, without running anything


def test_there_are_five_assignments():
    assert NAMES == ["a1_weight_pruning", "a2_neuron_budget", "a3_lottery_ticket", "a4_scratch_training", "a5_supermask"]


def test_release_is_in_sync_with_source():
    assert notebooks.check_sync(ROOT) == []


def test_generate_is_deterministic_and_check_sync_fails_on_drift(tmp_path, capsys):
    root = tmp_path / "assignments"
    (root / "source").mkdir(parents=True)
    notebooks.copy_assignment_folder(ROOT / "source" / NAMES[0], root / "source" / NAMES[0])
    assert cli.main(["check-sync", "--root", str(root)]) == 1  # no release yet
    assert cli.main(["generate", "--root", str(root)]) == 0
    first = (root / "release" / NAMES[0] / f"{NAMES[0]}.ipynb").read_bytes()
    assert first == (ROOT / "release" / NAMES[0] / f"{NAMES[0]}.ipynb").read_bytes()
    notebooks.generate(root)
    assert (root / "release" / NAMES[0] / f"{NAMES[0]}.ipynb").read_bytes() == first
    assert cli.main(["check-sync", "--root", str(root)]) == 0
    (root / "release" / NAMES[0] / "stray.txt").write_text("x")
    release = root / "release" / NAMES[0] / f"{NAMES[0]}.ipynb"
    release.write_bytes(first.replace(b"YOUR CODE HERE", b"my code", 1))
    assert cli.main(["check-sync", "--root", str(root)]) == 1
    out = capsys.readouterr().out
    assert "differs" in out and "stray.txt" in out
    notebooks.generate(root)
    assert not (root / "release" / NAMES[0] / "stray.txt").exists()
    assert notebooks.check_sync(root) == []


@pytest.mark.parametrize("name", NAMES)
def test_release_hides_solutions_and_hidden_tests(name):
    source = notebooks.read_notebook(notebooks.source_notebook(ROOT, name))
    release = notebooks.read_notebook(ROOT / "release" / name / f"{name}.ipynb")
    assert [notebooks.grade_id(c) for c in release.cells] == [notebooks.grade_id(c) for c in source.cells]
    kinds = [notebooks.cell_kind(c) for c in source.cells]
    assert {"answer", "tests"} <= set(kinds)
    for original, released in zip(source.cells, release.cells):
        kind = notebooks.cell_kind(original)
        text = released.source
        for marker in ("BEGIN SOLUTION", "END SOLUTION", "HIDDEN TESTS"):
            assert marker not in text
        if kind == "answer":
            assert "# YOUR CODE HERE" in text and "raise NotImplementedError()" in text
            assert notebooks.BEGIN_SOLUTION in original.source
        elif kind == "manual":
            assert notebooks.TEXT_STUB in text
        elif kind == "tests":
            assert text == notebooks.strip_hidden_tests(original.source)
            assert notebooks.BEGIN_HIDDEN in original.source, f"{notebooks.grade_id(original)} has no hidden tests"
        else:
            assert text == original.source
        assert released.metadata.get("nbgrader") == original.metadata.get("nbgrader")
        assert notebooks.EXTENSION_KEY not in released.metadata
        if released.cell_type == "code":
            assert released.outputs == [] and released.execution_count is None


@pytest.mark.parametrize("name", NAMES)
def test_source_follows_nbgrader_schema(name):
    source = notebooks.read_notebook(notebooks.source_notebook(ROOT, name))
    notebooks.validate_source(source, name)
    parameters = [c for c in source.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(parameters) == 1 and parameters[0].source.strip() == "SEED = 0"
    for cell in source.cells:
        meta = cell.metadata.get("nbgrader")
        assert meta is not None, "every source cell is an nbgrader cell (read-only, answer or test)"
        assert set(meta) >= {"grade", "grade_id", "locked", "schema_version", "solution", "task"}
        if meta["grade"]:
            assert meta["points"] > 0
        if notebooks.cell_kind(cell) == "answer":
            assert cell.cell_type == "code"
    total = sum(notebooks.points(c) for c in source.cells)
    intro = source.cells[0].source
    assert "| task" in intro or "| part" in intro, "the introduction lists the tasks and points"
    assert total >= 10


def test_strip_solution_follows_nbgrader():
    code = nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return x\n    ### END SOLUTION\nprint(1)",
                                     metadata=_meta("answer", "f"))
    assert notebooks.strip_solution(code) == "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError()\nprint(1)"
    whole = nbformat.v4.new_code_cell("x = 1", metadata=_meta("answer", "x"))
    assert notebooks.strip_solution(whole) == "# YOUR CODE HERE\nraise NotImplementedError()"
    text = nbformat.v4.new_markdown_cell("Answer:\n### BEGIN SOLUTION\nbecause\n### END SOLUTION",
                                         metadata=_meta("manual", "m", 1))
    assert notebooks.strip_solution(text) == "Answer:\nYOUR ANSWER HERE"
    assert notebooks.strip_hidden_tests("a\n### BEGIN HIDDEN TESTS\nb\n### END HIDDEN TESTS\nc") == "a\nc"
    for broken in ("### BEGIN HIDDEN TESTS\nb", "b\n### END HIDDEN TESTS", "### BEGIN HIDDEN TESTS\n### BEGIN HIDDEN TESTS"):
        with pytest.raises(notebooks.NotebookFormatError):
            notebooks.strip_hidden_tests(broken)


def test_validate_source_rejects_broken_metadata():
    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("pass", metadata=_meta("tests", "t", 1))])
    notebooks.validate_source(good)
    for cells, message in (
        ([nbformat.v4.new_code_cell("pass", metadata=_meta("tests", "t", 1)),
          nbformat.v4.new_code_cell("pass", metadata=_meta("tests", "t", 1))], "duplicate"),
        ([nbformat.v4.new_code_cell("pass", metadata=_meta("tests", "t"))], "points"),
        ([nbformat.v4.new_code_cell("pass", metadata=_meta("tests", "a b", 1))], "grade_id"),
        ([nbformat.v4.new_code_cell("### BEGIN SOLUTION\n### END SOLUTION", metadata=_meta("readonly", "r"))], "solution"),
        ([nbformat.v4.new_code_cell("### BEGIN HIDDEN TESTS\n### END HIDDEN TESTS", metadata=_meta("answer", "a"))],
         "hidden"),
    ):
        with pytest.raises(notebooks.NotebookFormatError, match=message):
            notebooks.validate_source(nbformat.v4.new_notebook(cells=cells))


def test_merge_never_trusts_the_submission_test_cells():
    source = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("x = 1", metadata=_meta("readonly", "setup")),
        nbformat.v4.new_code_cell("### BEGIN SOLUTION\ny = x\n### END SOLUTION", metadata=_meta("answer", "a")),
        nbformat.v4.new_code_cell("assert y == 1\n### BEGIN HIDDEN TESTS\nassert y > 0\n### END HIDDEN TESTS",
                                  metadata=_meta("tests", "t", 2)),
        nbformat.v4.new_code_cell("### BEGIN SOLUTION\nz = 2\n### END SOLUTION", metadata=_meta("answer", "b")),
    ])
    release = notebooks.release_notebook(source)
    submission = copy.deepcopy(release)
    submission.cells[1].source = "y = 1"
    submission.cells[2].source = "pass"                           # tampered test
    submission.cells[2].metadata["nbgrader"]["points"] = 100      # tampered points
    submission.cells.insert(2, nbformat.v4.new_code_cell("helper = 3"))  # a student's own cell
    del submission.cells[4]                                       # answer cell b deleted
    merged, notes = notebooks.merge_submission(source, submission)
    assert [c.source for c in merged.cells] == [
        "x = 1", "y = 1", "helper = 3", source.cells[2].source, "# YOUR CODE HERE\nraise NotImplementedError()"]
    assert merged.cells[3].metadata["nbgrader"]["points"] == 2
    assert any("'t' was modified" in note for note in notes)
    assert any("'b' is missing" in note for note in notes)
    assert len({c["id"] for c in merged.cells}) == len(merged.cells)


# --------------------------------------------------------------------------------------------------
# Calibration


def _checked_quantities(nb) -> set[tuple]:
    """``(assignment, quantity, direction, margin)`` of every check_at_least/at_most call in the test cells."""
    found = set()
    for cell in nb.cells:
        if notebooks.cell_kind(cell) != "tests":
            continue
        for node in ast.walk(ast.parse(cell.source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("check_at_least", "check_at_most"):
                if not isinstance(node.args[1], ast.Constant):
                    continue  # the helper's own call, with the quantity as a variable
                direction = "at_least" if node.func.id == "check_at_least" else "at_most"
                margin = next(k.value for k in node.keywords if k.arg == "margin")
                found.add((node.args[0].value, node.args[1].value, direction, ast.literal_eval(margin)))
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "_grade_tier":
                found.add(("a2_neuron_budget", node.args[1].value, "at_least", node.args[2].value))
    return found


def test_calibration_record_matches_the_hidden_tests():
    record = json.loads((ROOT / "calibration.json").read_text())
    assert sorted(record["assignments"]) == NAMES
    assert (ROOT / "calibration.md").read_text() == calibration.markdown(record)
    for name in NAMES:
        entry = record["assignments"][name]
        assert entry["command"] == f"python -m lightning_prune.grading calibrate course/assignments/source/{name} --seeds 5"
        assert len(entry["seeds"]) >= 5
        checked = _checked_quantities(notebooks.read_notebook(notebooks.source_notebook(ROOT, name)))
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
    assert checks.check_at_least("x", "acc", 0.76, margin=0.05) == 0.75
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


def test_aggregate_takes_the_worst_seed_and_rounds_outwards():
    runs = [[{"assignment": "x", "quantity": "q", "value": v, "margin": 0.03, "direction": "at_least", "label": "q"},
             {"assignment": "x", "quantity": "t", "value": 10 * v, "margin": 1.0, "direction": "at_most", "label": "t"}]
            for v in (0.9123, 0.8871, 0.95)]
    result = calibration.aggregate(runs, [0, 1, 2])
    assert result["q"]["worst"] == 0.8871 and result["q"]["threshold"] == 0.857
    assert result["t"]["worst"] == 9.5 and result["t"]["threshold"] == 10.5
    with pytest.raises(calibration.CalibrationFailed, match="seeds"):
        calibration.aggregate(runs[:2] + [[]], [0, 1, 2])


# --------------------------------------------------------------------------------------------------
# A tiny assignment (no torch in the kernel): how broken submissions are reported

ADD = "def add(a, b):\n    ### BEGIN SOLUTION\n    return a + b\n    ### END SOLUTION"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny") / "assignments"
    source = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_markdown_cell("# Tiny", metadata=_meta("readonly", "intro")),
        nbformat.v4.new_code_cell("SEED = 0", metadata={**_meta("readonly", "parameters"), "tags": ["parameters"]}),
        nbformat.v4.new_code_cell(ADD, metadata=_meta("answer", "add")),
        nbformat.v4.new_code_cell("# add works on small numbers\nassert add(1, 2) == 3\n### BEGIN HIDDEN TESTS\n"
                                  "assert add(-1, 1) == 0, 'add(-1, 1) must be 0'\n### END HIDDEN TESTS",
                                  metadata=_meta("tests", "add_tests", 2)),
        nbformat.v4.new_code_cell("# add is symmetric\nassert add(2, 5) == add(5, 2) == 7",
                                  metadata=_meta("tests", "symmetry__tier1", 1)),
        nbformat.v4.new_markdown_cell("### BEGIN SOLUTION\nIt is dense, so it is not faster.\n### END SOLUTION",
                                      metadata={**_meta("manual", "why", 2),
                                                notebooks.EXTENSION_KEY: {"keywords": [["dense"], ["faster", "speed"]]}}),
    ], metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    notebooks.write_notebook(source, root / "source" / "tiny" / "tiny.ipynb")
    notebooks.generate(root)
    return root


def _submit(tiny, folder: Path, answer: str | None = None, extra: str | None = None, text: str | None = None) -> Path:
    """A copy of the tiny release with the answer cell replaced (and an extra cell after it)."""
    nb = notebooks.read_notebook(tiny / "release" / "tiny" / "tiny.ipynb")
    if answer is not None:
        nb.cells[2].source = answer
    if text is not None:
        nb.cells[5].source = text
    if extra is not None:
        nb.cells.insert(3, nbformat.v4.new_code_cell(extra))
    path = folder / "tiny" / "tiny.ipynb"
    notebooks.write_notebook(nb, path)
    return path


def _grade(tiny, path, **options):
    options.setdefault("cell_timeout", 30)
    options.setdefault("total_timeout", 120)
    return autograde.grade_submission(path, root=tiny, out_dir=path.parent / "report", **options)


def _by_id(report):
    return {result.grade_id: result for result in report.results}


def test_tiny_solution_and_untouched_release(tiny, tmp_path):
    good = _grade(tiny, _submit(tiny, tmp_path / "good", answer="def add(a, b):\n    return a + b",
                                text="The masked model is dense: same speed."))
    assert (good.score, good.max_score, good.problems) == (5, 5, [])
    assert _by_id(good)["why"].status == "keywords"
    assert json.loads((tmp_path / "good" / "tiny" / "report" / "report.json").read_text())["score"] == 5
    assert "**Score: 5 / 5**" in (tmp_path / "good" / "tiny" / "report" / "report.md").read_text()

    empty = _grade(tiny, _submit(tiny, tmp_path / "empty"))
    assert empty.score == 0 and empty.problems == []
    results = _by_id(empty)
    assert "not implemented yet" in results["add_tests"].reason
    assert results["why"].status == "unanswered"
    assert empty.answer_errors == {}  # a def with `raise NotImplementedError()` only fails when called


def test_a_failing_hidden_test_gives_its_message(tiny, tmp_path):
    report = _grade(tiny, _submit(tiny, tmp_path / "abs", answer="def add(a, b):\n    return abs(a) + abs(b)"))
    results = _by_id(report)
    assert results["add_tests"].score == 0 and results["add_tests"].reason == "AssertionError: add(-1, 1) must be 0"
    assert results["symmetry__tier1"].status == "passed"


def test_tampered_test_cells_are_replaced(tiny, tmp_path):
    path = _submit(tiny, tmp_path / "cheat", answer="def add(a, b):\n    return 0")
    nb = notebooks.read_notebook(path)
    nb.cells[3].source = "pass"
    nb.cells[3].metadata["nbgrader"]["points"] = 100
    notebooks.write_notebook(nb, path)
    report = _grade(tiny, path)
    assert report.score == 0 and report.max_score == 5
    assert any("'add_tests' was modified" in note for note in report.notes)


def test_a_dead_kernel_is_reported(tiny, tmp_path):
    report = _grade(tiny, _submit(tiny, tmp_path / "dies", answer="import os\nos._exit(3)"))
    assert report.score == 0
    assert any("kernel died while running cell 2 (add)" in problem for problem in report.problems), report.problems
    assert _by_id(report)["add_tests"].status == "not run"
    assert "kernel died" in _by_id(report)["add_tests"].reason


def test_an_endless_loop_is_interrupted_and_the_rest_still_runs(tiny, tmp_path):
    report = _grade(tiny, _submit(tiny, tmp_path / "loops", answer="def add(a, b):\n    return a + b",
                                  extra="while True:\n    pass"), cell_timeout=3)
    assert any("exceeded the per-cell time limit of 3 s" in problem for problem in report.problems), report.problems
    assert report.score == 3 + 0  # the tests after the loop ran and passed; the answer text is unanswered
    assert all(result.status != "not run" for result in report.results)


def test_the_total_time_limit_stops_the_notebook(tiny, tmp_path):
    report = _grade(tiny, _submit(tiny, tmp_path / "slow", answer="import time\ntime.sleep(120)"),
                    cell_timeout=None, total_timeout=15)
    assert report.seconds < 60
    assert any("exceeded the total time limit of 15 s while running cell 2 (add)" in p for p in report.problems)
    assert {r.status for r in report.results if r.kind == "tests"} == {"not run"}
    assert "total time limit" in _by_id(report)["add_tests"].reason


def test_writes_outside_the_folder_are_reported(tiny, tmp_path):
    folder = tmp_path / "writer"
    target = folder / "outside-by-shell.txt"
    answer = ("def add(a, b):\n    return a + b\n"
              "open('../outside.txt', 'w').write('x')\n"
              "open('inside.txt', 'w').write('fine')\n"
              f"import os\nos.system('touch {target}')")
    report = _grade(tiny, _submit(tiny, folder, answer=answer))
    assert report.score == 3  # graded as usual; the writes are reported
    problems = "\n".join(report.problems)
    assert f"wrote outside its folder: {folder / 'outside.txt'}" in problems
    assert f"created {target}" in problems
    assert "inside.txt" not in problems
    assert not (folder / "outside.txt").exists() and not (folder / "tiny" / "inside.txt").exists()
    assert any("started a process" in note for note in report.notes)


def test_a_file_that_is_not_a_notebook_is_reported(tiny, tmp_path):
    path = tmp_path / "junk" / "tiny" / "tiny.ipynb"
    path.parent.mkdir(parents=True)
    path.write_text("{ not json")
    report = _grade(tiny, path)
    assert report.score == 0 and "not a readable notebook" in report.problems[0]
    assert {r.status for r in report.results if r.kind == "tests"} == {"not run"}
    unknown = tmp_path / "other" / "unknown.ipynb"
    unknown.parent.mkdir()
    unknown.write_text("{}")
    assert "no source notebook" in _grade(tiny, unknown).problems[0]


def test_grading_a_folder_of_submissions(tiny, tmp_path, capsys):
    submitted = tmp_path / "submitted"
    _submit(tiny, submitted / "alice", answer="def add(a, b):\n    return a + b", text="dense, so no speed-up")
    _submit(tiny, submitted / "bob")
    assert cli.main(["grade", str(submitted), "--root", str(tiny), "--quiet", "--cell-timeout", "30"]) == 0
    assert "alice tiny: 5 / 5" in capsys.readouterr().out
    autograded = tmp_path / "autograded"
    rows = list(csv.DictReader((autograded / "grades.csv").open()))
    assert [(row["student"], float(row["score"])) for row in rows] == [("alice", 5.0), ("bob", 0.0)]
    for student in ("alice", "bob"):
        assert {p.name for p in (autograded / student / "tiny").iterdir()} == {"report.json", "report.md", "tiny.ipynb"}


# --------------------------------------------------------------------------------------------------
# The five assignments, graded once per session


@pytest.fixture(scope="session")
def graded(tmp_path_factory):
    """Reports of every solution, every untouched release, and a wrong a1 solution (largest weights pruned)."""
    base = tmp_path_factory.mktemp("graded")
    reports = {}
    for name in NAMES:
        for variant, folder in (("solution", ROOT / "source" / name), ("release", ROOT / "release" / name)):
            target = base / variant / name
            notebooks.copy_assignment_folder(folder, target)
            reports[variant, name] = autograde.grade_submission(target / f"{name}.ipynb", root=ROOT,
                                                                out_dir=base / "out" / variant / name)
    source = notebooks.read_notebook(notebooks.source_notebook(ROOT, NAMES[0]))
    text = notebooks.dumps(source)
    assert text.count("largest=True") == 1
    wrong = base / "wrong" / NAMES[0] / f"{NAMES[0]}.ipynb"
    wrong.parent.mkdir(parents=True)
    wrong.write_text(text.replace("largest=True", "largest=False"))
    reports["wrong", NAMES[0]] = autograde.grade_submission(wrong, root=ROOT, out_dir=base / "out" / "wrong")
    return reports


@pytest.mark.parametrize("name", NAMES)
def test_solution_gets_full_marks(graded, name):
    report = graded["solution", name]
    assert report.problems == [], report.problems
    failed = [(r.grade_id, r.reason) for r in report.results if r.status not in ("passed", "keywords", "manual")]
    assert failed == []
    assert report.score == report.max_score - report.pending_manual, report.markdown()
    assert report.seconds < 90, f"{name} took {report.seconds} s to grade"


@pytest.mark.parametrize("name", NAMES)
def test_untouched_release_scores_zero_without_crashing(graded, name):
    report = graded["release", name]
    assert report.problems == [], report.problems
    assert report.score == 0, report.markdown()
    for result in report.results:
        assert result.status in ("failed", "unanswered", "manual"), (result.grade_id, result.status)
        if result.kind == "tests":
            assert result.reason, result.grade_id
    assert set(report.answer_errors.values()) <= {"NotImplementedError"}


def test_wrong_solution_loses_that_task_only(graded):
    report = graded["wrong", NAMES[0]]
    results = _by_id(report)
    assert results["layer_mask_tests"].score == 0
    assert "smallest must be pruned" in results["layer_mask_tests"].reason
    others = [r for r in report.results if r.grade_id != "layer_mask_tests"]
    assert all(r.score == r.points for r in others), [(r.grade_id, r.reason) for r in others if r.score != r.points]
    assert report.score == report.max_score - results["layer_mask_tests"].points
