"""Calibrated threshold checks, called by the assignments' hidden tests.

A bar is never typed into a test: the test measures a quantity (an accuracy, a difference of
accuracies) and calls :func:`check_at_least` / :func:`check_at_most` with the quantity's name and a
margin. ``python -m lightning_prune.grading calibrate`` runs the solution over several seeds with
:data:`ENV_RECORD` set: the checks then only record the values. It writes ``calibration.json``
with, per quantity, the worst value over the seeds and the threshold ``worst - margin`` (``worst +
margin`` for :func:`check_at_most`). Graded runs compare against that threshold.

The calibration file is found through :data:`ENV_FILE` (the grader sets it), else in the current
directory or a parent that also holds a ``source/`` folder (a notebook run inside
``course/assignments/``), else at ``course/assignments/calibration.json`` of the repository.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

ENV_FILE = "LIGHTNING_PRUNE_CALIBRATION"
ENV_RECORD = "LIGHTNING_PRUNE_CALIBRATION_RECORD"
FILE_NAME = "calibration.json"
DIRECTIONS = ("at_least", "at_most")


class CalibrationError(RuntimeError):
    """No usable calibrated threshold: the file or the quantity is missing, or its margin changed."""


def calibration_file() -> Path | None:
    """The calibration file to use, or ``None`` when there is none (see the module docstring)."""
    if os.environ.get(ENV_FILE):
        return Path(os.environ[ENV_FILE])
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / FILE_NAME).is_file() and (folder / "source").is_dir():
            return folder / FILE_NAME
    repository = Path(__file__).resolve().parents[2] / "course" / "assignments" / FILE_NAME
    return repository if repository.is_file() else None


def load_calibration(path: str | Path | None = None) -> dict:
    """The calibration record (``{"assignments": {name: {"quantities": {...}}}}``)."""
    path = Path(path) if path is not None else calibration_file()
    if path is None or not path.is_file():
        raise CalibrationError(
            f"no calibration file ({path or FILE_NAME}); run `python -m lightning_prune.grading calibrate "
            "course/assignments/source/<name> --seeds 5` first"
        )
    return json.loads(path.read_text(encoding="utf-8"))


def quantity_record(assignment: str, quantity: str, path: str | Path | None = None) -> dict:
    """The calibration entry of one quantity: values over seeds, worst, margin, direction, threshold."""
    record = load_calibration(path)
    try:
        return record["assignments"][assignment]["quantities"][quantity]
    except KeyError:
        raise CalibrationError(
            f"{assignment}/{quantity} is not calibrated; run `python -m lightning_prune.grading calibrate "
            f"course/assignments/source/{assignment} --seeds 5`"
        ) from None


def threshold(assignment: str, quantity: str) -> float:
    """The calibrated bar of ``assignment``/``quantity``."""
    return float(quantity_record(assignment, quantity)["threshold"])


def recording() -> bool:
    """Whether this run is a calibration run (checks record values instead of comparing)."""
    return bool(os.environ.get(ENV_RECORD))


def _check(assignment: str, quantity: str, value: float, margin: float, direction: str, label: str | None) -> float | None:
    label = label or f"{assignment}/{quantity}"
    value = float(value)
    if not math.isfinite(value):
        raise AssertionError(f"{label}: the measured value is {value}, not a finite number")
    if recording():
        entry = {"assignment": assignment, "quantity": quantity, "value": value, "margin": float(margin),
                 "direction": direction, "label": label}
        with open(os.environ[ENV_RECORD], "a", encoding="utf-8") as log:
            log.write(json.dumps(entry) + "\n")
        print(f"[calibration] {label}: {value:.4f}")
        return None
    entry = quantity_record(assignment, quantity)
    if entry.get("direction") != direction or not math.isclose(float(entry.get("margin", math.nan)), margin):
        raise CalibrationError(
            f"{assignment}/{quantity} was calibrated as {entry.get('direction')} with margin {entry.get('margin')}, "
            f"but the test now checks {direction} with margin {margin}; recalibrate"
        )
    bar = float(entry["threshold"])
    sign = "≥" if direction == "at_least" else "≤"
    seeds = len(entry.get("values", []))
    print(f"{label}: {value:.4f} (bar {sign} {bar:.4f})")
    passed = value >= bar if direction == "at_least" else value <= bar
    if not passed:
        raise AssertionError(
            f"{label} is {value:.4f}; the bar is {sign} {bar:.4f} (the solution's worst over {seeds} seeds, "
            f"{entry.get('worst')}, {'minus' if direction == 'at_least' else 'plus'} a margin of {margin})"
        )
    return bar


def check_at_least(assignment: str, quantity: str, value: float, *, margin: float, label: str | None = None) -> float | None:
    """Assert ``value >= threshold`` (calibrated as the solution's minimum over seeds minus ``margin``).

    Returns:
        The threshold, or ``None`` in a calibration run (where the value is only recorded).

    Raises:
        AssertionError: The value is below the bar (the message gives both and how the bar was set).
        CalibrationError: The quantity is not calibrated, or with another margin or direction.
    """
    return _check(assignment, quantity, value, margin, "at_least", label)


def check_at_most(assignment: str, quantity: str, value: float, *, margin: float, label: str | None = None) -> float | None:
    """Assert ``value <= threshold`` (calibrated as the solution's maximum over seeds plus ``margin``)."""
    return _check(assignment, quantity, value, margin, "at_most", label)


def show_threshold(assignment: str, quantity: str) -> str:
    """A line for visible tests: the bar if the calibration file can be found, else where it lives."""
    try:
        entry = quantity_record(assignment, quantity)
    except CalibrationError:
        return f"{assignment}/{quantity}: bar in course/assignments/calibration.md"
    sign = "≥" if entry.get("direction") == "at_least" else "≤"
    return f"{entry.get('label', quantity)}: the bar is {sign} {float(entry['threshold']):.4f}"
