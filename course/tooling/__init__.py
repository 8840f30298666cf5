"""Course tooling: what nbgrader does not do for the assignments, and nothing else.

This folder is not part of the ``lightning_prune`` package (a plain install of the library carries no
grading). nbgrader itself releases, autogrades and writes feedback, configured by
``course/teacher/nbgrader_config.py``; this package adds:

* :mod:`course.tooling.checks`: calibrated bars, called by the assignments' test cells
  (``check_at_least`` / ``check_at_most`` / ``show_threshold``);
* :mod:`course.tooling.calibrate`: the bars from the solution's worst result over several seeds
  (``python -m course.tooling calibrate <name> --seeds 5``);
* :mod:`course.tooling.nbgrader_plugins`: nbgrader preprocessors for a whole-notebook time limit and
  a report of writes outside the submission's folder (autograde), for stripping custom cell metadata
  from the release (generate_assignment), and for keeping hidden tests out of the feedback
  (generate_feedback);
* ``python -m course.tooling report``: the time-limit and outside-write reports of every autograded
  submission.

It is imported as ``course.tooling`` with the repository root on ``PYTHONPATH`` (``nbgrader_config.py``
sets that for nbgrader's kernels). It needs nbgrader (the ``course`` extra of the project).
"""
