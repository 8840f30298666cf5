"""The course notebooks teach with the library: goals, summary and exercises; no copies of library code."""

import ast
import inspect
from pathlib import Path

import nbformat
import pytest

import lightning_prune
from lightning_prune import callback, checkpoint, config, counting, criteria, layers, lottery, masks, pruner, ranking
from lightning_prune import schedules, statistics, structure, surgery, teaching

COURSE = Path(__file__).parents[1] / "course"
NOTEBOOKS = sorted(COURSE.glob("*.ipynb"))
SOURCES = sorted((COURSE / "teacher" / "source").glob("*/*.ipynb"))  # the assignments' solutions
MODULES = [lightning_prune, callback, checkpoint, config, counting, criteria, layers, lottery, masks, pruner, ranking,
           schedules, statistics, structure, surgery, teaching]
LIBRARY_NAMES = {
    name for module in MODULES for name, value in vars(module).items()
    if (inspect.isfunction(value) or inspect.isclass(value)) and getattr(value, "__module__", "").startswith("lightning_prune")
}


def test_there_are_notebooks():
    assert NOTEBOOKS


def test_the_teaching_helpers_count_as_library_names():
    assert {"accuracy", "widths", "mean_std", "quiet_trainer", "quiet_setup", "committed_result", "committed_figure"} <= LIBRARY_NAMES


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_has_goals_summary_exercises_and_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    text = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "markdown")
    for heading in ("Learning goals", "Summary", "Exercises"):
        assert heading in text, f"{path.name} has no '{heading}'"
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert any(cell.get("outputs") for cell in code), f"{path.name} was committed without outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_defines_nothing_the_library_provides(path):
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
                assert node.name not in LIBRARY_NAMES, f"{path.name} redefines library name {node.name!r}"


@pytest.mark.parametrize("path", NOTEBOOKS + SOURCES, ids=[p.name for p in NOTEBOOKS + SOURCES])
def test_notebook_configures_pruning_with_its_current_arguments(path):
    """Every ``Pruning(...)`` call names only arguments the callback takes (the flat ``target=``, ``scope=``,
    ``rewind=``... of before issue 14 became configuration objects) and passes at most one positional (the schedule)."""
    allowed = set(inspect.signature(lightning_prune.Pruning).parameters)
    notebook = nbformat.read(path, as_version=4)
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Pruning":
                names = {keyword.arg for keyword in node.keywords if keyword.arg is not None}
                assert names <= allowed, f"{path.name}: Pruning({', '.join(sorted(names - allowed))}=...) no longer exists"
                assert len(node.args) <= 1, f"{path.name}: Pruning's only positional argument is the schedule"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_and_its_paired_jupytext_source_hold_the_same_cells(path):
    """Edit one, then `jupytext --sync` (course/README.md): a notebook edited alone drifts from its source."""
    jupytext = pytest.importorskip("jupytext")
    notebook = [(cell.cell_type, cell.source.strip()) for cell in nbformat.read(path, as_version=4).cells]
    source = [(cell.cell_type, cell.source.strip()) for cell in jupytext.read(COURSE / "src" / f"{path.stem}.py").cells]
    assert notebook == source
