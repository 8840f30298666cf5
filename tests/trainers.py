"""The tests' tiny real Trainer, importable by name (a module named ``conftest`` is ambiguous: the
teacher's folder ``course/teacher`` has one too, for nbval)."""

import lightning as L


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
