import os

import lightning as L
import pytest

os.environ.setdefault("MPLBACKEND", "Agg")


def make_trainer(max_epochs, callbacks=(), **kwargs):
    """A tiny real Trainer: no progress bar, no logger, no checkpoints unless asked."""
    options = dict(
        max_epochs=max_epochs,
        callbacks=list(callbacks),
        enable_progress_bar=False,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        accelerator="cpu",
        devices=1,
        deterministic=True,
    )
    options.update(kwargs)
    return L.Trainer(**options)


@pytest.fixture
def trainer_factory():
    return make_trainer
