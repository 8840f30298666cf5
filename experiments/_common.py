"""What the paper-reproduction scripts share: the common options and the environment line of the reports.

The scripts run as ``python experiments/<name>.py`` (this folder is then on ``sys.path``) and are
imported the same way by ``tests/test_experiments.py``.
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path

import lightning as L
import torch

RESULTS = Path(__file__).parent / "results"


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


def fit_and_evaluate(trainer: L.Trainer, model: L.LightningModule, data: L.LightningDataModule) -> dict[str, float]:
    """Fit, then validate and test the final model: wall seconds of the fit, val and test accuracy."""
    start = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - start
    val = trainer.validate(model, data, verbose=False)[0]["val_acc"]
    test = trainer.test(model, data, verbose=False)[0]["test_acc"]
    return {"fit_seconds": seconds, "val_acc": val, "test_acc": test}
