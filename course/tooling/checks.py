"""Calibrated bars, called by the assignments' test cells.

A bar is never typed into a test: the test measures a quantity (an accuracy, a difference of
accuracies) and calls :func:`check_at_least` / :func:`check_at_most` with the quantity's name and a
margin. ``python -m course.tooling calibrate`` runs the solution over several seeds with
:data:`ENV_RECORD` set: the checks then only record the values, and the calibration writes, per
quantity, the worst value over the seeds and the bar ``worst - margin`` (``worst + margin`` for
:func:`check_at_most`) to ``course/assignments/calibration.json``. Graded runs compare against that bar.

The checks return ``None``: nbgrader scores a test cell whose last value is a number by that number,
so a test cell must end in no value.

The calibration file is ``$LIGHTNING_PRUNE_CALIBRATION`` if set, else ``course/assignments/calibration.json``
of this repository.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

ENV_FILE = "LIGHTNING_PRUNE_CALIBRATION"
ENV_RECORD = "LIGHTNING_PRUNE_CALIBRATION_RECORD"
DEFAULT_FILE = Path(__file__).resolve().parents[1] / "assignments" / "calibration.json"
DIRECTIONS = ("at_least", "at_most")


class CalibrationError(RuntimeError):
    """No usable calibrated bar: the file or the quantity is missing, or its margin changed."""


def calibration_file() -> Path:
    """The calibration file (see the module docstring)."""
    return Path(os.environ[ENV_FILE]) if os.environ.get(ENV_FILE) else DEFAULT_FILE


def load_calibration(path: str | Path | None = None) -> dict:
    """The calibration record (``{"assignments": {name: {"quantities": {...}}}}``)."""
    path = Path(path) if path is not None else calibration_file()
    if not path.is_file():
        raise CalibrationError(f"no calibration file {path}; run `python -m course.tooling calibrate <name> --seeds 5`")
    return json.loads(path.read_text(encoding="utf-8"))


def quantity_record(assignment: str, quantity: str, path: str | Path | None = None) -> dict:
    """The calibration entry of one quantity: values over seeds, worst, margin, direction, threshold."""
    try:
        return load_calibration(path)["assignments"][assignment]["quantities"][quantity]
    except KeyError:
        raise CalibrationError(f"{assignment}/{quantity} is not calibrated; run "
                               f"`python -m course.tooling calibrate {assignment} --seeds 5`") from None


def recording() -> bool:
    """Whether this run is a calibration run (checks record values instead of comparing)."""
    return bool(os.environ.get(ENV_RECORD))


def _check(assignment: str, quantity: str, value: float, margin: float, direction: str, label: str | None) -> None:
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
        return
    entry = quantity_record(assignment, quantity)
    if entry.get("direction") != direction or not math.isclose(float(entry.get("margin", math.nan)), margin):
        raise CalibrationError(
            f"{assignment}/{quantity} was calibrated as {entry.get('direction')} with margin {entry.get('margin')}, "
            f"but the test now checks {direction} with margin {margin}; recalibrate")
    bar = float(entry["threshold"])
    sign = "≥" if direction == "at_least" else "≤"
    print(f"{label}: {value:.4f} (bar {sign} {bar:.4f})")
    if not (value >= bar if direction == "at_least" else value <= bar):
        raise AssertionError(
            f"{label} is {value:.4f}; the bar is {sign} {bar:.4f} (the solution's worst over "
            f"{len(entry.get('values', []))} seeds, {entry.get('worst')}, "
            f"{'minus' if direction == 'at_least' else 'plus'} a margin of {margin})")


def check_at_least(assignment: str, quantity: str, value: float, *, margin: float, label: str | None = None) -> None:
    """Assert ``value >= bar`` (the solution's minimum over the seeds minus ``margin``).

    Raises:
        AssertionError: The value is below the bar (the message gives both and how the bar was set).
        CalibrationError: The quantity is not calibrated, or with another margin or direction.
    """
    _check(assignment, quantity, value, margin, "at_least", label)


def check_at_most(assignment: str, quantity: str, value: float, *, margin: float, label: str | None = None) -> None:
    """Assert ``value <= bar`` (the solution's maximum over the seeds plus ``margin``)."""
    _check(assignment, quantity, value, margin, "at_most", label)


def show_threshold(assignment: str, quantity: str) -> str:
    """A line for visible tests: the bar, or where to find it."""
    try:
        entry = quantity_record(assignment, quantity)
    except CalibrationError:
        return f"{assignment}/{quantity}: bar in course/assignments/calibration.md"
    sign = "≥" if entry.get("direction") == "at_least" else "≤"
    return f"{entry.get('label', quantity)}: the bar is {sign} {float(entry['threshold']):.4f}"
