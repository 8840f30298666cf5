"""What the paper-reproduction scripts share: the common options and the environment line of the reports.

The scripts run as ``python experiments/<name>.py`` (this folder is then on ``sys.path``) and are
imported the same way by ``tests/test_experiments.py``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import lightning as L
import torch

RESULTS = Path(__file__).parent / "results"


def environment() -> str:
    """Versions and thread count of this process, for the reports."""
    return (f"torch {torch.__version__}, lightning {L.__version__}, Python {platform.python_version()}, "
            f"{torch.get_num_threads()} torch thread(s), {platform.machine()}")


def add_common_arguments(parser: argparse.ArgumentParser, render: bool = True, quick: str | None = None) -> None:
    """``--seeds``, ``--threads``, ``--out``, (with ``render``) ``--render`` and (with ``quick``, its help) ``--quick``."""
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads")
    parser.add_argument("--out", type=Path, default=RESULTS)
    if render:
        parser.add_argument("--render", action="store_true", help="only rewrite the report from the saved JSON")
    if quick:
        parser.add_argument("--quick", action="store_true", help=quick)


def fit_and_evaluate(trainer: L.Trainer, model: L.LightningModule, data: L.LightningDataModule) -> dict[str, float]:
    """Fit, then validate and test the final model: wall seconds of the fit, val and test accuracy."""
    start = time.perf_counter()
    trainer.fit(model, data)
    seconds = time.perf_counter() - start
    val = trainer.validate(model, data, verbose=False)[0]["val_acc"]
    test = trainer.test(model, data, verbose=False)[0]["test_acc"]
    return {"fit_seconds": seconds, "val_acc": val, "test_acc": test}


def machine() -> str:
    """The CPU's model name (``/proc/cpuinfo``), for the reports."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return cpu


def run_or_load(args: argparse.Namespace, name: str, script: str, run: Callable[[int], dict[str, Any]],
                settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The saved run of ``name`` (``--render``), or a new one: ``run(seed)`` for every seed, written to
    ``<out>/<name>.json`` with the command, ``settings``, runtime, environment, CPU and rows."""
    path = args.out / f"{name}.json"
    if args.render:
        return json.loads(path.read_text())
    start, rows = time.perf_counter(), []
    for seed in args.seeds:
        rows.append(run(seed))
        print(f"seed {seed} done after {time.perf_counter() - start:.0f} s", flush=True)
    command = f"python experiments/{script}.py --seeds " + " ".join(map(str, args.seeds))
    command += " --quick" * bool(getattr(args, "quick", False)) + (f" --threads {args.threads}" if args.threads != 1 else "")
    saved = {"command": command, **(settings or {}), "runtime_s": time.perf_counter() - start,
             "environment": environment(), "cpu": machine(), "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(saved, indent=2))
    return saved


def report_header(title: str, saved: dict[str, Any]) -> list[str]:
    """The first lines of a report: its title, the command and the runtime with the environment."""
    return [f"# {title}", "", f"`{saved['command']}`", "",
            f"Total runtime {saved['runtime_s']:.0f} s ({saved['environment']}; {saved['cpu']}; 2 CPU cores shared with "
            "other jobs).", ""]
