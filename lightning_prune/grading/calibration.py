"""Thresholds from the solution's worst result over seeds, minus a margin.

``calibrate source/<name> --seeds 5`` runs the source notebook (solutions and hidden tests) once per
seed, with ``SEED = <seed>`` inserted after the cell tagged ``parameters`` (papermill's convention)
and :data:`~lightning_prune.grading.checks.ENV_RECORD` set, so that every
:func:`~lightning_prune.grading.checks.check_at_least` / ``check_at_most`` records its value instead of
comparing it. Every other cell must pass on every seed. The thresholds (``worst - margin``, or
``worst + margin`` for ``at_most``, rounded outwards to 3 decimals) go to ``calibration.json``, and a
readable table to ``calibration.md``, with the command, the versions and the machine.
"""

from __future__ import annotations

import copy
import json
import math
import platform
import shutil
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import nbformat

from lightning_prune.grading import checks, notebooks
from lightning_prune.grading.runner import run_notebook


class CalibrationFailed(RuntimeError):
    """The solution failed on a seed (a cell raised, timed out, or the kernel died)."""


def _versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for module in ("torch", "lightning", "numpy"):
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - reported as missing
            versions[module] = "missing"
    return versions


def seeded_notebook(source: nbformat.NotebookNode, seed: int) -> nbformat.NotebookNode:
    """The source notebook with ``SEED = seed`` inserted after its ``parameters`` cell.

    Raises:
        ValueError: If no cell is tagged ``parameters``.
    """
    nb = notebooks.clear_outputs(copy.deepcopy(source))
    for index, cell in enumerate(nb.cells):
        if "parameters" in cell.metadata.get("tags", []):
            nb.cells.insert(index + 1, nbformat.v4.new_code_cell(f"SEED = {seed}  # injected by calibrate"))
            for number, each in enumerate(nb.cells):
                each["id"] = f"cell-{number}"
            return nb
    raise ValueError("the source notebook has no cell tagged 'parameters' (it should define SEED)")


def run_seed(folder: Path, seed: int, cell_timeout: float | None, total_timeout: float | None) -> tuple[list[dict], float]:
    """Run the solution of ``folder`` with ``seed``; return the recorded checks and the seconds taken.

    Raises:
        CalibrationFailed: Naming the cell and the error when anything but a recorded check fails.
    """
    name = folder.name
    nb = seeded_notebook(notebooks.read_notebook(folder / f"{name}.ipynb"), seed)
    scratch = Path(tempfile.mkdtemp(prefix="lp-calibrate-"))
    try:
        workdir = scratch / "work" / name
        notebooks.copy_assignment_folder(folder, workdir)
        record = scratch / "record.jsonl"
        record.touch()
        execution = run_notebook(nb, workdir, scratch / "runner", cell_timeout=cell_timeout, total_timeout=total_timeout,
                                 env={checks.ENV_RECORD: str(record)}, audit=False)
        if execution.runner_error or execution.kernel_died or execution.total_timeout or execution.notebook is None:
            raise CalibrationFailed(f"{name}, seed {seed}: the run failed (runner error {execution.runner_error!r}, "
                                    f"kernel died {execution.kernel_died}, total timeout {execution.total_timeout}); "
                                    f"log: {execution.log_tail[-1500:]}")
        for index, cell in enumerate(execution.notebook.cells):
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    raise CalibrationFailed(f"{name}, seed {seed}: cell {index} ({notebooks.grade_id(cell)}) failed: "
                                            f"{output.get('ename')}: {output.get('evalue')}")
        entries = [json.loads(line) for line in record.read_text(encoding="utf-8").splitlines() if line.strip()]
        return entries, execution.seconds
    finally:
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
                "assignment": entry["assignment"], "label": entry["label"], "direction": entry["direction"],
                "margin": entry["margin"], "values": {}})
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


def calibrate(folder: str | Path, seeds: Sequence[int], calibration_path: str | Path, command: str,
              cell_timeout: float | None = 300, total_timeout: float | None = 1200, log=print) -> dict:
    """Calibrate one assignment and update ``calibration.json`` and ``calibration.md``.

    Returns:
        The assignment's new calibration entry.
    """
    folder = Path(folder).resolve()
    name = folder.name
    if not (folder / f"{name}.ipynb").is_file():
        raise FileNotFoundError(f"{folder / (name + '.ipynb')} does not exist")
    runs, seconds = [], []
    for seed in seeds:
        entries, elapsed = run_seed(folder, seed, cell_timeout, total_timeout)
        runs.append(entries)
        seconds.append(round(elapsed, 1))
        log(f"{name} seed {seed}: {elapsed:.1f} s; " + ", ".join(f"{e['quantity']}={e['value']:.4f}" for e in entries))
    quantities = aggregate(runs, list(seeds))
    for item in quantities.values():
        item.pop("assignment", None)
    entry = {
        "command": command,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "seeds": list(seeds),
        "seconds_per_run": seconds,
        "versions": _versions(),
        "machine": f"{platform.machine()}, {platform.system()} {platform.release()}",
        "quantities": dict(sorted(quantities.items())),
    }
    path = Path(calibration_path)
    record = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    record["about"] = ("Thresholds of the assignments' hidden tests: the solution's worst value over the seeds, "
                       "minus the margin (plus, for at_most). Written by `python -m lightning_prune.grading calibrate`; "
                       "do not edit by hand.")
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
