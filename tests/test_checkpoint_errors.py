"""A checkpoint that cannot be read is named in the error, and nothing is lost (issue 15)."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch

from trainers import make_trainer
from lightning_prune import OneShot, Pruning
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier


def _digest(module):
    return torch.cat([value.flatten().float() for value in module.state_dict().values()]).sum().item()


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory):
    L.seed_everything(0)
    root = tmp_path_factory.mktemp("ckpt")
    trainer = make_trainer(2, [Pruning(schedule=OneShot(target=0.5, warmup_epochs=1))], enable_checkpointing=True,
                           default_root_dir=root, limit_train_batches=2, limit_val_batches=1)
    trainer.fit(Classifier("lenet_300_100", input_shape=(1, 8, 8)), DigitsDataModule(batch_size=32))
    return trainer.checkpoint_callback.best_model_path


@pytest.mark.parametrize(("damage", "cause"), [
    (lambda data: data[: len(data) // 2], "it is truncated or corrupted"),
    (lambda data: b"not a checkpoint", "it is not a checkpoint"),
])
def test_an_unreadable_checkpoint_is_named_and_the_module_is_untouched(good_checkpoint, tmp_path, damage, cause):
    path = tmp_path / "damaged.ckpt"
    path.write_bytes(damage(open(good_checkpoint, "rb").read()))
    L.seed_everything(0)
    module, pruning = Classifier("lenet_300_100", input_shape=(1, 8, 8)), Pruning(schedule=OneShot(0.5, warmup_epochs=1))
    before = _digest(module)
    trainer = make_trainer(3, [pruning], limit_train_batches=2, limit_val_batches=1)
    with pytest.raises(ValueError, match=re.escape(f"The checkpoint {str(path)!r} cannot be read: {cause}")):
        trainer.fit(module, DigitsDataModule(batch_size=32), ckpt_path=path)
    assert _digest(module) == before and pruning.history == []


def test_a_readable_checkpoint_still_resumes_and_the_plugin_is_restored_after_the_fit(good_checkpoint):
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1))
    trainer = make_trainer(3, [pruning], limit_train_batches=2, limit_val_batches=1)
    trainer.fit(Classifier("lenet_300_100", input_shape=(1, 8, 8)), DigitsDataModule(batch_size=32), ckpt_path=good_checkpoint)
    assert [row["epoch"] for row in pruning.history] == [1]
    assert "load_checkpoint" not in vars(trainer.strategy.checkpoint_io)  # the wrapper is gone after teardown
