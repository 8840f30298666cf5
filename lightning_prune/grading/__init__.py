"""Classroom assignments with an autograder, following nbgrader's conventions without needing nbgrader.

An assignment is a folder ``source/<name>/`` holding the teacher's notebook ``<name>.ipynb``: solutions
between ``### BEGIN SOLUTION`` / ``### END SOLUTION``, hidden tests between ``### BEGIN HIDDEN TESTS`` /
``### END HIDDEN TESTS``, and nbgrader's cell metadata (``grade``, ``grade_id``, ``points``, ``solution``,
``locked``, ``schema_version: 3``), so nbgrader itself can also use the folder.

* :mod:`~lightning_prune.grading.notebooks`: the source-to-release transformation and the merge of a
  submission with its source (``generate``, ``check-sync``).
* :mod:`~lightning_prune.grading.autograde`: runs a submission in a temporary copy of its folder,
  with the source's test cells (hidden tests included), per-cell and total time limits and a
  best-effort check for writes outside the folder; scores every test cell and writes JSON and
  Markdown reports (``grade``).
* :mod:`~lightning_prune.grading.calibration`: runs a solution over several seeds and writes the
  thresholds the hidden tests use (``calibrate``).
* :mod:`~lightning_prune.grading.checks`: the calibrated threshold checks called inside notebooks.

Command line: ``python -m lightning_prune.grading {generate,check-sync,grade,calibrate} ...``.
"""

SCHEMA_VERSION = 3

__all__ = ["SCHEMA_VERSION"]
