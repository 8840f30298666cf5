"""The tests' tiny real Trainer, importable by name (a module named ``conftest`` is ambiguous: the
teacher's folder ``course/teacher`` has one too, for nbval)."""

from functools import partial

from lightning_prune.teaching import quiet_trainer

#: ``quiet_trainer(max_epochs, callbacks=(), **overrides)``: the course's deterministic CPU Trainer
#: without progress bar, logger or checkpoints, but with Lightning's sanity check of two validation
#: batches (the callbacks' validation hooks run before training, as in a user's default Trainer).
make_trainer = partial(quiet_trainer, num_sanity_val_steps=2)
