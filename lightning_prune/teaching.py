"""Small helpers defined once for the course notebooks, the tests, the experiments and the benchmarks.

A quiet, reproducible setting and trainer, the accuracy of a model on a batch of examples, the widths
of its ``Linear`` layers, the mean and standard deviation of a few seeds' results, and a result file the
repository commits (``experiments/results``, ``benchmarks/results``) loaded with the command that made it.
They keep the notebooks to the concept being taught: one import instead of the same helper written in
every notebook.
"""

from __future__ import annotations

import json
import logging
import statistics
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch import nn


def quiet_setup(seed: int = 0) -> None:
    """One torch thread, no Lightning banners or data-loader warnings, everything seeded."""
    torch.set_num_threads(1)  # on a shared 2-core machine two threads mostly wait for each other
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*(does not have many workers|LeafSpec).*")
    L.seed_everything(seed, verbose=False)


def quiet_trainer(max_epochs: int, callbacks: Iterable[L.Callback] = (), **overrides: Any) -> L.Trainer:
    """A deterministic CPU ``Trainer`` without progress bar, logger, checkpoints or sanity check.

    ``overrides`` add to or replace these options (e.g. ``limit_val_batches=0``, or
    ``num_sanity_val_steps=2`` for Lightning's default sanity check).
    """
    options: dict[str, Any] = dict(
        max_epochs=max_epochs, accelerator="cpu", devices=1, deterministic=True, callbacks=list(callbacks),
        enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(overrides)
    return L.Trainer(**options)


@torch.no_grad()
def accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of the examples ``x`` whose highest logit is the label ``y``.

    Puts ``module`` in eval mode and leaves it there (``Trainer.fit`` switches back to training).
    """
    module.eval()
    return (module(x).argmax(dim=1) == y).float().mean().item()


def widths(model: nn.Module) -> list[int]:
    """Output width of every ``Linear`` layer of ``model``, in the order they were registered."""
    return [module.out_features for module in model.modules() if isinstance(module, nn.Linear)]


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of ``values`` (standard deviation 0 for a single value)."""
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def repository_file(path: str) -> Path:
    """The file at ``path`` (relative to the repository root, e.g. ``"experiments/results/wanda.json"``).

    Result files ship with the source checkout, not with an installed package: raises ``FileNotFoundError``
    saying so when the file is not there.
    """
    file = Path(__file__).resolve().parents[1] / path
    if not file.is_file():
        raise FileNotFoundError(f"{path} is not in this checkout (result files come with the repository's source, "
                                "not with the installed package)")
    return file


def committed_result(path: str) -> dict[str, Any]:
    """Load a committed JSON result by its path from the repository root, and print where it came from.

    Prints the path, the command that produced it and what it ran on, as far as the file records them:
    ``command`` and ``environment`` at the top (the experiments), or ``config.command`` and ``machine``
    (the benchmarks; the device is named, with the GPU's name when CUDA was used).
    """
    result = json.loads(repository_file(path).read_text())
    command = result.get("command") or result.get("config", {}).get("command")
    machine = result.get("machine")
    if isinstance(machine, dict):
        device = machine.get("cuda_device") or f"CPU only ({machine.get('device_name') or machine.get('processor')})"
        ran_on = (f"{device}; {machine.get('cpu_count')} CPU cores, torch {machine.get('torch')}, "
                  f"{machine.get('torch_num_threads')} torch thread(s)")
    else:
        ran_on = result.get("environment")
    print(f"committed result: {path}")
    print(f"  command: {command or '(not recorded in the file; see the .md report beside it)'}")
    if ran_on:
        print(f"  ran on:  {ran_on}")
    return result


def committed_figure(path: str) -> Any:
    """A committed PNG (path from the repository root) as an ``IPython.display.Image``, for a notebook to show."""
    from IPython.display import Image  # only the notebooks need IPython

    return Image(filename=str(repository_file(path)))
