"""Small helpers for the course notebooks: a quiet, reproducible setting and trainer.

They keep the notebooks to the concept being taught: one call instead of the same setup cell in
every notebook.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from typing import Any

import lightning as L
import torch


def quiet_setup(seed: int = 0) -> None:
    """One torch thread, no Lightning banners or data-loader warnings, everything seeded."""
    torch.set_num_threads(1)  # on a shared 2-core machine two threads mostly wait for each other
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", ".*(does not have many workers|LeafSpec).*")
    L.seed_everything(seed, verbose=False)


def quiet_trainer(max_epochs: int, callbacks: Iterable[L.Callback] = (), **overrides: Any) -> L.Trainer:
    """A deterministic CPU ``Trainer`` without progress bar, logger, checkpoints or sanity check."""
    options: dict[str, Any] = dict(
        max_epochs=max_epochs, accelerator="cpu", devices=1, deterministic=True, callbacks=list(callbacks),
        enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
        num_sanity_val_steps=0,
    )
    options.update(overrides)
    return L.Trainer(**options)
