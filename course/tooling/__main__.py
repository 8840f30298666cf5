"""``python -m course.tooling``: calibrate the bars, or list the autograder's reports.

* ``calibrate NAME [--seeds 5] [--first-seed 0]``: run the solution of ``course/teacher/source/NAME``
  over seeds and write ``course/assignments/calibration.{json,md}``.
* ``report [AUTOGRADED]``: the whole-notebook time limits hit and the writes outside the folder that
  nbgrader's autograde recorded (``grading_report.json`` under ``course/teacher/autograded/``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

from course.tooling.calibrate import REPOSITORY, calibrate
from course.tooling.nbgrader_plugins import REPORT


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; returns the exit status (0: fine; 1: ``report`` found problems)."""
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="python -m course.tooling", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    cal = commands.add_parser("calibrate", help="bars from the solution's worst result over seeds")
    cal.add_argument("name", help="the assignment, e.g. a1_weight_pruning")
    cal.add_argument("--seeds", type=int, default=5)
    cal.add_argument("--first-seed", type=int, default=0)
    rep = commands.add_parser("report", help="time limits hit and writes outside the folder, per submission")
    rep.add_argument("autograded", nargs="?", default=str(REPOSITORY / "course" / "teacher" / "autograded"))
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        command = "python -m course.tooling " + " ".join(shlex.quote(a) for a in argv)
        calibrate(args.name, seeds, command)
        print("wrote course/assignments/calibration.json and calibration.md")
        return 0
    problems = 0
    for path in sorted(Path(args.autograded).glob(f"*/*/{REPORT}")):
        for notebook, report in json.loads(path.read_text(encoding="utf-8")).items():
            lines = []
            if report.get("time_limit_hit"):
                lines.append(f"stopped at cell {report['stopped_at_cell']}: over the limit of {report['total_timeout']} s")
            lines += [f"cell {index} interrupted after {report['cell_timeout']} s" for index in report.get("cell_timeouts", [])]
            lines += [f"wrote outside its folder: {write}" for write in report.get("writes_outside", [])]
            status = "; ".join(lines) if lines else "fine"
            problems += bool(lines)
            print(f"{report.get('student')} {report.get('assignment')}/{notebook} ({report.get('seconds')} s): {status}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
