"""What the paper-reproduction scripts share: a quiet deterministic Trainer, the common options, summaries
(``mean_std`` comes from ``benchmarks/stats.py``, shared with the benchmark suite).

The scripts run as ``python experiments/<name>.py`` (this folder is then on ``sys.path``) and are
imported the same way by ``tests/test_experiments.py``.
"""

from __future__ import annotations

import argparse
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # the repository root: `benchmarks.stats`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.stats import mean_std  # noqa: E402,F401  (one definition for benchmarks and experiments)

RESULTS = Path(__file__).parent / "results"


def trainer(max_epochs: int, callbacks: Sequence[Any] = (), **options: Any) -> L.Trainer:
    """A one-CPU, deterministic ``Trainer`` without progress bar, logger, checkpoints or model summary.

    ``options`` add to or override these (e.g. ``num_sanity_val_steps=0``, ``limit_val_batches=0``).
    """
    settings = {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "logger": False,
                "enable_checkpointing": False, "enable_model_summary": False, "deterministic": True}
    return L.Trainer(max_epochs=max_epochs, callbacks=list(callbacks), **{**settings, **options})


def environment() -> str:
    """Versions and thread count of this process, for the reports."""
    return (f"torch {torch.__version__}, lightning {L.__version__}, Python {platform.python_version()}, "
            f"{torch.get_num_threads()} torch thread(s), {platform.machine()}")


def add_common_arguments(parser: argparse.ArgumentParser, render: bool = True) -> None:
    """``--seeds``, ``--threads``, ``--out`` and (with ``render``) ``--render``."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    if render:
        parser.add_argument("--render", action="store_true", help="only rewrite the report from the saved JSON")
