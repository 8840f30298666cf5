"""pytest (nbval) in the teacher's folder: the source notebooks import ``course.tooling``, so their
kernels need the repository root on PYTHONPATH; nbgrader's working folders are not collected."""

import os
from pathlib import Path

REPOSITORY = str(Path(__file__).resolve().parents[2])
if REPOSITORY not in os.environ.get("PYTHONPATH", "").split(os.pathsep):
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPOSITORY, os.environ.get("PYTHONPATH")) if p)

collect_ignore = ["nbgrader_config.py"]
collect_ignore_glob = ["submitted/*", "autograded/*", "feedback/*", "exchange/*", "release/*"]
