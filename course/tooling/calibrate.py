"""The bars of the hidden tests: the solution's worst result over several seeds, minus a margin.

``python -m course.tooling calibrate <name> --seeds 5`` runs the teacher's notebook
(``course/teacher/source/<name>/<name>.ipynb``, solutions and hidden tests) once per seed, with
``SEED = <seed>`` inserted after the cell tagged ``parameters`` (papermill's convention) and
:data:`~course.tooling.checks.ENV_RECORD` set, so every ``check_at_least`` / ``check_at_most`` records its
value instead of comparing it. Every other cell must pass on every seed. The bars (``worst - margin``, or
``worst + margin`` for ``at_most``, rounded outwards to 3 decimals) go to
``course/assignments/calibration.json``, and a table to ``calibration.md``, with the command, the
versions and the machine.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat

from course.tooling import checks

REPOSITORY = Path(__file__).resolve().parents[2]
SOURCE = REPOSITORY / "course" / "teacher" / "source"


class CalibrationFailed(RuntimeError):
    """The solution failed on a seed (a cell raised or timed out)."""


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for module in ("torch", "lightning", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - reported as missing
            versions[module] = "missing"
    return versions


def seeded_notebook(source: nbformat.NotebookNode, seed: int) -> nbformat.NotebookNode:
    """The source notebook without outputs, with ``SEED = seed`` inserted after its ``parameters`` cell."""
    nb = copy.deepcopy(source)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    for index, cell in enumerate(nb.cells):
        if "parameters" in cell.metadata.get("tags", []):
            nb.cells.insert(index + 1, nbformat.v4.new_code_cell(f"SEED = {seed}  # injected by calibrate"))
            return nb
    raise ValueError("the source notebook has no cell tagged 'parameters' (it should define SEED)")


def run_seed(folder: Path, seed: int, cell_timeout: int = 300) -> tuple[list[dict], float]:
    """Run the solution in ``folder`` with ``seed``; return the recorded checks and the seconds taken.

    Raises:
        CalibrationFailed: Naming the cell and the error when anything but a recorded check fails.
    """
    from nbclient import NotebookClient

    name = folder.name
    nb = seeded_notebook(nbformat.read(folder / f"{name}.ipynb", as_version=4), seed)
    scratch = Path(tempfile.mkdtemp(prefix="course-calibrate-"))
    saved = {key: os.environ.get(key) for key in (checks.ENV_RECORD, "PYTHONPATH", "MPLBACKEND")}
    try:
        workdir = scratch / name
        shutil.copytree(folder, workdir, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "*.ipynb"))
        record = scratch / "record.jsonl"
        record.touch()
        os.environ[checks.ENV_RECORD] = str(record)
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPOSITORY), saved["PYTHONPATH"]) if p)
        os.environ.setdefault("MPLBACKEND", "Agg")
        start = time.monotonic()
        NotebookClient(nb, timeout=cell_timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(workdir)}}).execute()
        seconds = time.monotonic() - start
        for index, cell in enumerate(nb.cells):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", index)
                    raise CalibrationFailed(f"{name}, seed {seed}: cell {grade_id} failed: "
                                            f"{output.get('ename')}: {output.get('evalue')}")
        entries = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines() if line.strip()]
        return entries, seconds
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(scratch, ignore_errors=True)


def aggregate(runs: Sequence[list[dict]], seeds: Sequence[int]) -> dict[str, dict]:
    """Per quantity: label, direction, margin, values by seed, worst, threshold.

    Raises:
        CalibrationFailed: If a quantity is missing on some seed or its margin/direction varies.
    """
    quantities: dict[str, dict] = {}
    for seed, entries in zip(seeds, runs):
        for entry in entries:
            item = quantities.setdefault(entry["quantity"], {
                "label": entry["label"], "direction": entry["direction"], "margin": entry["margin"], "values": {}})
            if (item["direction"], item["margin"]) != (entry["direction"], entry["margin"]):
                raise CalibrationFailed(f"{entry['quantity']}: direction/margin differ between checks")
            item["values"][str(seed)] = round(entry["value"], 6)
    for quantity, item in quantities.items():
        missing = [seed for seed in seeds if str(seed) not in item["values"]]
        if missing:
            raise CalibrationFailed(f"{quantity} was not measured with seeds {missing}")
        values = list(item["values"].values())
        if item["direction"] == "at_least":
            item["worst"] = min(values)
            item["threshold"] = math.floor((item["worst"] - item["margin"]) * 1000 + 1e-9) / 1000
        else:
            item["worst"] = max(values)
            item["threshold"] = math.ceil((item["worst"] + item["margin"]) * 1000 - 1e-9) / 1000
    return quantities


def calibrate(name: str, seeds: Sequence[int], command: str, calibration_path: str | Path | None = None,
              source: str | Path = SOURCE, log=print) -> dict:
    """Calibrate one assignment and update ``calibration.json`` and ``calibration.md``; return its entry."""
    folder = Path(source) / name
    if not (folder / f"{name}.ipynb").is_file():
        raise FileNotFoundError(f"{folder / (name + '.ipynb')} does not exist")
    runs, seconds = [], []
    for seed in seeds:
        entries, elapsed = run_seed(folder, seed)
        runs.append(entries)
        seconds.append(round(elapsed, 1))
        log(f"{name} seed {seed}: {elapsed:.1f} s; " + ", ".join(f"{e['quantity']}={e['value']:.4f}" for e in entries))
    entry = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seeds": list(seeds),
        "seconds_per_run": seconds,
        "versions": _versions(),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}",
        "quantities": dict(sorted(aggregate(runs, list(seeds)).items())),
    }
    path = Path(calibration_path) if calibration_path else checks.calibration_file()
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    record["about"] = ("Bars of the assignments' hidden tests: the solution's worst value over the seeds, minus the "
                       "margin (plus, for at_most). Written by `python -m course.tooling calibrate`; do not edit by hand.")
    record.setdefault("assignments", {})[name] = entry
    record["assignments"] = dict(sorted(record["assignments"].items()))
    path.write_text(json.dumps(record, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    path.with_suffix(".md").write_text(markdown(record), encoding="utf-8")
    return entry


def markdown(record: dict) -> str:
    """``calibration.md``: one table per assignment."""
    lines = ["# Calibration of the assignments' thresholds", "",
             "Each bar is the solution's worst value over the seeds minus the margin (`at_least`), or plus the",
             "margin (`at_most`), rounded outwards to 3 decimals. Generated from `calibration.json` by the calibrate",
             "command; do not edit by hand.", ""]
    for name, entry in record.get("assignments", {}).items():
        seeds = entry["seeds"]
        lines += [f"## {name}", "", f"Command: `{entry['command']}`", "",
                  (f"Run {entry['date']} on {entry['machine']} ({', '.join(f'{k} {v}' for k, v in entry['versions'].items())}); "
                   f"seconds per run: {', '.join(map(str, entry['seconds_per_run']))}."), "",
                  "| quantity | what | " + " | ".join(f"seed {s}" for s in seeds) + " | worst | margin | bar |",
                  "|---|---|" + "---:|" * (len(seeds) + 3)]
        for quantity, item in entry["quantities"].items():
            sign = "≥" if item["direction"] == "at_least" else "≤"
            values = " | ".join(f"{item['values'][str(s)]:.4f}" for s in seeds)
            lines.append(f"| `{quantity}` | {item['label']} | {values} | {item['worst']:.4f} | {item['margin']:g} | "
                         f"{sign} {item['threshold']:.3f} |")
        lines.append("")
    return "\n".join(lines)
