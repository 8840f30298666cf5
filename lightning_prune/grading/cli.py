"""``python -m lightning_prune.grading`` (console script ``lightning-prune-grade``).

Subcommands:

* ``generate [NAME ...]``: write ``release/<name>/`` from ``source/<name>/`` (deterministic).
* ``check-sync [NAME ...]``: exit 1 if ``release/`` differs from what ``generate`` would write.
* ``grade PATH``: grade a submitted notebook, or every notebook under a folder; print the report(s)
  and write ``report.json`` / ``report.md`` / the executed notebook per submission.
* ``calibrate SOURCE_FOLDER --seeds 5``: run the solution over seeds and write the thresholds to
  ``calibration.json`` and ``calibration.md``.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from lightning_prune.grading import autograde, calibration, checks, notebooks


def _root(value: str | None) -> Path:
    return Path(value) if value else autograde.default_assignments_root()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lightning_prune.grading",
                                     description="Release, grade and calibrate the course's nbgrader-style assignments.")
    commands = parser.add_subparsers(dest="command", required=True)
    root_help = "the assignments folder holding source/ and release/ (default: ./course/assignments, else the repository's)"

    generate = commands.add_parser("generate", help="write release/<name>/ from source/<name>/")
    generate.add_argument("names", nargs="*", help="assignments (default: all)")
    generate.add_argument("--root", help=root_help)

    sync = commands.add_parser("check-sync", help="fail if release/ is not what generate would write")
    sync.add_argument("names", nargs="*", help="assignments (default: all)")
    sync.add_argument("--root", help=root_help)

    grade = commands.add_parser("grade", help="grade a submitted notebook or a folder of them")
    grade.add_argument("path", help="a submitted .ipynb, or a folder (e.g. submitted/ with <student>/<assignment>/)")
    grade.add_argument("--root", help=root_help)
    grade.add_argument("--source", help="the source notebook (default: source/<name>/<name>.ipynb by the submission's name)")
    grade.add_argument("--out", help="report folder (default: autograded/ next to submitted/, else in the assignments folder)")
    grade.add_argument("--student", help="the student's name for a single notebook (default: from the path)")
    grade.add_argument("--cell-timeout", type=float, default=autograde.DEFAULT_CELL_TIMEOUT,
                       help="seconds per cell before it is interrupted (default %(default)s)")
    grade.add_argument("--timeout", type=float, default=autograde.DEFAULT_TOTAL_TIMEOUT,
                       help="seconds for a whole notebook before it is stopped (default %(default)s)")
    grade.add_argument("--watch", action="append",
                       help="a folder whose files must not change during a run (repeatable; default: the submission "
                            "folder's parent)")
    grade.add_argument("--keep", action="store_true", help="keep the temporary folders (for debugging)")
    grade.add_argument("--quiet", action="store_true", help="print one line per submission instead of the reports")

    calibrate = commands.add_parser("calibrate", help="thresholds from the solution's worst result over seeds")
    calibrate.add_argument("folder", help="the source folder, e.g. course/assignments/source/a1_weight_pruning")
    calibrate.add_argument("--seeds", type=int, default=5, help="number of seeds (default %(default)s)")
    calibrate.add_argument("--first-seed", type=int, default=0, help="first seed (default %(default)s)")
    calibrate.add_argument("--calibration", help="the calibration file (default: calibration.json two levels above the folder)")
    calibrate.add_argument("--cell-timeout", type=float, default=300)
    calibrate.add_argument("--timeout", type=float, default=1200)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run a subcommand; returns the exit status (0 success, 1 failure, 2 usage error)."""
    args = _parser().parse_args(argv)
    if args.command == "generate":
        root = _root(args.root)
        written = notebooks.generate(root, args.names or None)
        for path in written:
            print(f"wrote {path}")
        return 0
    if args.command == "check-sync":
        root = _root(args.root)
        problems = notebooks.check_sync(root, args.names or None)
        for problem in problems:
            print(problem)
        if problems:
            print(f"release/ is out of sync; run `python -m lightning_prune.grading generate --root {root}`")
            return 1
        print(f"release/ is in sync with source/ ({', '.join(args.names or notebooks.assignment_names(root))})")
        return 0
    if args.command == "grade":
        path = Path(args.path)
        if not path.exists():
            print(f"{path} does not exist", file=sys.stderr)
            return 2
        out_root = Path(args.out) if args.out else autograde.default_out_root(path, _root(args.root))
        reports = autograde.grade_path(
            path, out_root=out_root, root=_root(args.root), source=args.source, cell_timeout=args.cell_timeout,
            total_timeout=args.timeout, watch=args.watch, keep_workdir=args.keep,
            **({"student": args.student} if args.student else {}))
        if not reports:
            print(f"no notebooks under {path}", file=sys.stderr)
            return 1
        for report in reports:
            if args.quiet:
                print(f"{report.student} {report.assignment}: {report.score:g} / {report.max_score:g}"
                      + (f" ({len(report.problems)} problems)" if report.problems else ""))
            else:
                print(report.markdown())
        print(f"reports in {out_root}")
        return 0
    if args.command == "calibrate":
        folder = Path(args.folder)
        target = Path(args.calibration) if args.calibration else folder.resolve().parent.parent / checks.FILE_NAME
        seeds = list(range(args.first_seed, args.first_seed + args.seeds))
        command = "python -m lightning_prune.grading " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
        calibration.calibrate(folder, seeds, target, command, cell_timeout=args.cell_timeout, total_timeout=args.timeout)
        print(f"wrote {target} and {target.with_suffix('.md')}")
        return 0
    return 2  # pragma: no cover - argparse rejects unknown commands
