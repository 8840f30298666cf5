"""The "Works with" table of issue 15: Lightning setups with ``Pruning`` attached, each a tiny real fit.

Gradient accumulation, an ``IterableDataset`` without a length, several train dataloaders, the
``Tuner`` (``lr_find``, ``scale_batch_size``), ``EarlyStopping`` mid-schedule and manual optimization:
each either prunes to the target with the masks holding, or is refused early by name.
"""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader, IterableDataset

from trainers import ManualClassifier, make_trainer
from lightning_prune import APoZ, DropGuard, Geometric, Neurons, OneShot, Pruning
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier

LAYERS = ("features.0", "features.2", "classifier")


def _model():
    return Classifier("lenet_300_100", input_shape=(1, 8, 8))


def _fit(pruning, max_epochs=3, callbacks=(), model=None, train=None, data=None, **trainer_options):
    L.seed_everything(0)
    model = model if model is not None else _model()
    options = dict(limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer = make_trainer(max_epochs, [pruning, *callbacks], **{**options, **trainer_options})
    if train is not None:
        trainer.fit(model, train_dataloaders=train)
    elif data is False:  # the module's own train_dataloader
        trainer.fit(model)
    else:
        trainer.fit(model, data if data is not None else DigitsDataModule(batch_size=32))
    return model, trainer


def _masked_weights_are_zero(model, pruning):
    params = dict(model.named_parameters())
    return all(bool((params[name][~mask] == 0).all()) for name, mask in pruning._masks.items())


def _weight_zeros(model):
    weights = [model.state_dict()[f"model.{name}.weight"] for name in LAYERS]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def _widths(model):
    return [model.model.features[0].weight.shape[0], model.model.features[2].weight.shape[0]]


def _digits(count=96):
    data = DigitsDataModule(batch_size=32)
    data.setup("fit")
    x, y = data.train_dataloader().dataset[:count]
    return x, y


# ----------------------------------------------------------------------------- 1. gradient accumulation
@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_gradient_accumulation_reaches_the_target_and_pruned_weights_stay_zero(granularity):
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1), granularity=granularity)
    model, trainer = _fit(pruning, max_epochs=3, accumulate_grad_batches=2, limit_train_batches=4)
    assert trainer.global_step == 3 * 2  # 4 batches of 2 accumulated: 2 optimizer steps an epoch
    assert len(pruning.history) == 2 and pruning.history[-1]["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert _masked_weights_are_zero(model, pruning)
    if granularity == "weight":
        assert _weight_zeros(model) >= 0.59
    else:
        assert sum(_widths(model)) == pytest.approx(0.4 * 400, abs=2)  # removed for real


# ----------------------------------------------------------------------------- 2. IterableDataset
class _Stream(IterableDataset):
    """Examples one at a time, without ``__len__`` (Lightning counts the train batches as ``inf``)."""

    def __init__(self, x, y):
        self.x, self.y = x, y

    def __iter__(self):
        return zip(self.x, self.y)


def _stream_loader():
    return DataLoader(_Stream(*_digits(96)), batch_size=32)  # 3 batches, unknown to Lightning


@pytest.mark.parametrize("granularity,criterion", [("weight", "l1"), ("neuron", "l2"), ("neuron", APoZ(batches=2))])
def test_an_iterable_dataset_without_length_prunes_to_the_target(granularity, criterion):
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1), criterion=criterion,
                      granularity=granularity)
    model, trainer = _fit(pruning, max_epochs=3, train=_stream_loader(), limit_train_batches=None, limit_val_batches=0)
    assert trainer.num_training_batches == float("inf") and trainer.global_step == 9
    assert pruning.history[-1]["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert _masked_weights_are_zero(model, pruning)


def test_max_steps_with_an_iterable_dataset_warns_that_it_cannot_be_checked():
    """Without a length the steps per epoch are unknown, so a too-small ``max_steps`` cannot be refused
    at the start (as it is with a sized loader, tests/test_setups.py): a warning names it instead."""
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1))  # needs 3 epochs of 3 steps
    with pytest.warns(UserWarning, match=re.escape("`max_steps`=5 cannot be checked") + ".*no length.*limit_train_batches"):
        model, trainer = _fit(pruning, max_epochs=-1, max_steps=5, train=_stream_loader(), limit_train_batches=None,
                              limit_val_batches=0)
    assert trainer.global_step == 5 and len(pruning.history) == 1  # stopped in cycle 0: the history ends early
    assert pruning.history[0]["sparsity"] == pytest.approx(0.4, abs=0.01) and _masked_weights_are_zero(model, pruning)


# ----------------------------------------------------------------------------- 3. several train dataloaders
class _TwoLoaders(Classifier):
    """``train_dataloader`` returns a dict (or list) of loaders: each batch is a dict (list) of their batches."""

    def __init__(self, as_list=False):
        super().__init__("lenet_300_100", input_shape=(1, 8, 8))
        self.as_list = as_list

    def train_dataloader(self):
        x, y = _digits(96)
        loaders = {"a": DataLoader(torch.utils.data.TensorDataset(x, y), batch_size=32),
                   "b": DataLoader(torch.utils.data.TensorDataset(x.flip(-1), y), batch_size=32)}
        return list(loaders.values()) if self.as_list else loaders

    def training_step(self, batch, batch_idx):
        parts = batch if self.as_list else list(batch.values())
        return sum(super(_TwoLoaders, self).training_step(part, batch_idx) for part in parts)


@pytest.mark.parametrize("as_list", [False, True])
def test_several_train_dataloaders_prune_by_weight_magnitude(as_list):
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), granularity="neuron")
    model, trainer = _fit(pruning, max_epochs=2, model=_TwoLoaders(as_list), data=False, limit_val_batches=0)
    assert trainer.global_step == 6 and pruning.history[-1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert sum(_widths(model)) == pytest.approx(200, abs=2)


@pytest.mark.parametrize("criterion", [APoZ(batches=2), "taylor"])
def test_several_train_dataloaders_with_a_calibration_criterion_are_refused_before_training(criterion):
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion=criterion, granularity="neuron")
    trainer = make_trainer(2, [pruning], limit_train_batches=3, limit_val_batches=0, num_sanity_val_steps=0)
    with pytest.raises(ValueError, match=r"needs calibration batches from one train DataLoader; the train dataloaders "
                                         r"are a dict of 2 loaders .*CombinedLoader.*Return one DataLoader from "
                                         r"`train_dataloader`.*or use a weight criterion"):
        trainer.fit(_TwoLoaders())
    assert trainer.global_step == 0  # refused at the start, not after the warm-up


# ----------------------------------------------------------------------------- 4. the Tuner
@pytest.mark.parametrize("tune", ["lr_find", "scale_batch_size"])
def test_the_tuner_leaves_the_model_dense_and_the_real_fit_prunes_to_the_target(tmp_path, tune):
    from lightning.pytorch.tuner import Tuner

    L.seed_everything(0)
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1), granularity="neuron",
                      criterion=APoZ(batches=2))
    model, data = _model(), DigitsDataModule(batch_size=16)
    trainer = make_trainer(3, [pruning], limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0,
                           default_root_dir=tmp_path)
    tuner = Tuner(trainer)
    if tune == "lr_find":
        tuner.lr_find(model, datamodule=data, num_training=4, min_lr=1e-4, max_lr=1e-2)
    else:
        size = tuner.scale_batch_size(model, datamodule=data, steps_per_trial=1, init_val=16, max_trials=2)
        assert size == data.batch_size > 16
    assert pruning.history == [] and _widths(model) == [300, 100] and _weight_zeros(model) == 0  # nothing pruned
    assert trainer.callbacks.count(pruning) == 1
    trainer.fit(model, datamodule=data)
    assert len(pruning.history) == 2 and pruning.history[-1]["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert sum(_widths(model)) == pytest.approx(160, abs=2) and _masked_weights_are_zero(model, pruning)


def test_the_learning_rate_finder_callback_runs_before_the_fit_and_the_fit_prunes_to_the_target(tmp_path):
    """``LearningRateFinder`` inside ``fit``: its trial steps run without ``Pruning`` (Lightning swaps the
    callbacks out), then it restores its checkpoint of ``on_fit_start``, whose ``Pruning`` state was
    saved before training started; that state has nothing to resume (it crashed the fit before)."""
    from lightning.pytorch.callbacks import LearningRateFinder

    L.seed_everything(0)
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1), granularity="neuron",
                      criterion=APoZ(batches=2))
    finder = LearningRateFinder(num_training_steps=4, min_lr=1e-4, max_lr=1e-2)
    model, trainer = _fit(pruning, callbacks=[finder], model=_model(), data=DigitsDataModule(batch_size=16),
                          default_root_dir=tmp_path)
    assert len(finder.optimal_lr.results["lr"]) == 4  # the trial steps ran
    assert trainer.global_step == 9 and len(pruning.history) == 2  # the real fit: 3 epochs x 3 batches
    assert pruning.history[-1]["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert sum(_widths(model)) == pytest.approx(160, abs=2) and _masked_weights_are_zero(model, pruning)


# ----------------------------------------------------------------------------- 5. EarlyStopping mid-schedule
def test_early_stopping_mid_schedule_leaves_a_shorter_history_and_a_consistent_model():
    """A real EarlyStopping ends the fit in cycle 1 of 4 (tests/test_validation.py cuts the only cycle
    of a OneShot with a hand-made stop): cycle 0 is judged and removed, cycle 1 stays masked, unjudged."""
    pruning = Pruning(schedule=Geometric(target=0.8, per_cycle=0.4, warmup_epochs=1, finetune_epochs=2),
                      granularity="neuron", guard=DropGuard("val_acc", 1.0))  # cycles at epochs 1, 3, 5, 7
    stop = EarlyStopping("val_loss", mode="min", min_delta=10.0, patience=3, check_on_train_epoch_end=False)
    model, trainer = _fit(pruning, max_epochs=9, callbacks=[stop], limit_train_batches=2)
    assert trainer.current_epoch == 4 and stop.stopped_epoch == 3  # no improvement by 10 after epoch 0
    assert len(pruning.fractions) == 4 and len(pruning.history) == 2  # the history ends early
    assert [row["cycle"] for row in pruning.history] == [0, 1]
    assert [row["accepted"] for row in pruning.history] == [True, None]  # cycle 1 cut short: not judged
    assert pruning.history[-1]["sparsity"] == pytest.approx(0.64, abs=0.01)
    assert sum(_widths(model)) == pytest.approx(0.6 * 400, abs=2)  # cycle 0's units removed
    kept = torch.cat([mask.flatten() for mask in pruning.keep.values()])
    assert float((~kept).float().mean()) == pytest.approx(0.64, abs=0.01)  # cycle 1's still masked
    assert _masked_weights_are_zero(model, pruning)


# ----------------------------------------------------------------------------- 6. manual optimization
def test_manual_optimization_prunes_weights_and_the_masks_hold_through_its_steps():
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1))
    model, trainer = _fit(pruning, max_epochs=3, model=ManualClassifier())
    assert trainer.global_step == 9 and pruning.history[-1]["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert _masked_weights_are_zero(model, pruning) and _weight_zeros(model) >= 0.59


class _TwoHeads(L.LightningModule):
    """A shared trunk with two classifier heads (3 and 5 classes): both are output layers."""

    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(8, 32), torch.nn.ReLU(), torch.nn.Linear(32, 16), torch.nn.ReLU())
        self.head_a, self.head_b = torch.nn.Linear(16, 3), torch.nn.Linear(16, 5)
        self.example_input_array = torch.zeros(2, 8)

    def forward(self, x):
        hidden = self.trunk(x)
        return self.head_a(hidden), self.head_b(hidden)

    def training_step(self, batch, batch_idx):
        x, y_a, y_b = batch
        a, b = self(x)
        return torch.nn.functional.cross_entropy(a, y_a) + torch.nn.functional.cross_entropy(b, y_b)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        g = torch.Generator().manual_seed(0)
        data = torch.utils.data.TensorDataset(torch.randn(64, 8, generator=g), torch.randint(0, 3, (64,), generator=g),
                                              torch.randint(0, 5, (64,), generator=g))
        return torch.utils.data.DataLoader(data, batch_size=16)


def test_two_output_heads_both_keep_their_outputs_under_neuron_removal():
    from lightning_prune import RandomImportance

    keeps = {}
    for remove in (False, True):
        L.seed_everything(0)
        model = _TwoHeads()
        pruning = Pruning(OneShot(0.5), criterion=RandomImportance(seed=3), granularity=Neurons(remove=remove), verbose=False)
        make_trainer(2, [pruning], limit_val_batches=0).fit(model)
        assert (model.head_a.out_features, model.head_b.out_features) == (3, 5)  # no head loses a class
        assert pruning.history[-1]["sparsity"] == pytest.approx(0.5, abs=0.02)
        keeps[remove] = {key: mask.clone() for key, mask in pruning.keep.items()}
        if remove:
            assert model.trunk[2].out_features < 16 and model.head_a.in_features == model.head_b.in_features
    # the random criterion picks the same neurons whether they are then masked or removed
    assert all(torch.equal(keeps[False][key], keeps[True][key]) for key in keeps[False])


class _EMA(L.Callback):
    """An exponential moving average of the weights (every step, from the start: dense weights too),
    written into the model when training ends, as EMA callbacks do."""

    def __init__(self, decay=0.9):
        self.decay, self.shadow = decay, None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        params = {n: p.detach().clone() for n, p in pl_module.named_parameters()}
        if self.shadow is None or any(self.shadow[n].shape != p.shape for n, p in params.items()):
            self.shadow = params
        else:
            self.shadow = {n: self.decay * self.shadow[n] + (1 - self.decay) * p for n, p in params.items()}

    def on_train_end(self, trainer, pl_module):
        with torch.no_grad():
            for name, param in pl_module.named_parameters():
                param.copy_(self.shadow[name])


def test_an_ema_callback_listed_after_pruning_cannot_unmask_the_final_model():
    pruning = Pruning(Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1), verbose=False)
    L.seed_everything(0)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    with pytest.warns(UserWarning, match="were non-zero when the fit ended"):
        make_trainer(3, [pruning, _EMA()], limit_train_batches=4, limit_val_batches=1).fit(model, DigitsDataModule(batch_size=32))
    weights = [p for n, p in model.named_parameters() if n.endswith("weight")]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    assert pruning.history[-1]["sparsity"] == pytest.approx(0.6, abs=0.01) and zeros >= 0.59
