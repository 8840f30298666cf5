"""Calibration through the module's own step (issue 15): APoZ, Taylor and Wanda read the batches the
way ``training_step`` does, or the way the module's ``pruning_calibration_step`` says, without a
custom ``forward``/``loss``; each case is a tiny real fit."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F

from trainers import ManualClassifier, make_trainer
from lightning_prune import APoZ, Distillation, Geometric, OneShot, Pruning, Taylor, Wanda
from lightning_prune.batches import fit_step
from lightning_prune.criteria import follows_fit_step, step_loss
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier


def _fit(pruning, model, data=None, max_epochs=3, **options):
    L.seed_everything(0)
    trainer = make_trainer(max_epochs, [pruning], **{"limit_train_batches": 3, "limit_val_batches": 0,
                                                     "num_sanity_val_steps": 0, **options})
    trainer.fit(model, data if data is not None else DigitsDataModule(batch_size=32))
    return trainer


def _parameters(model):
    return {name: value.detach().clone() for name, value in model.state_dict().items()}


def _same(a, b):
    return a.keys() == b.keys() and all(a[key].shape == b[key].shape and torch.equal(a[key], b[key]) for key in a)


class _DictData(L.LightningDataModule):
    """Digits as ``{"image", "label"}`` batches, as Hugging Face datasets give them."""

    def __init__(self):
        super().__init__()
        self.digits = DigitsDataModule(batch_size=32)

    def setup(self, stage):
        self.digits.setup(stage)

    def train_dataloader(self):
        def collate(items):
            return {"image": torch.stack([x for x, _ in items]), "label": torch.tensor([int(y) for _, y in items])}

        return torch.utils.data.DataLoader(self.digits.train_dataloader().dataset, batch_size=32, collate_fn=collate)


class _DictClassifier(Classifier):
    """Dict batches, unpacked in ``training_step`` (which also logs on every step and updates a metric)."""

    def __init__(self):
        super().__init__("lenet_300_100", input_shape=(1, 8, 8))

    def training_step(self, batch, batch_idx):
        return super().training_step((batch["image"], batch["label"]), batch_idx)


@pytest.mark.parametrize("criterion", ["apoz", "taylor", "wanda"])
def test_dict_batches_calibrate_through_training_step_as_an_explicit_forward_or_loss_would(criterion):
    """Without ``forward``/``loss``, the scores come from ``training_step``: the run equals one told the
    same path by hand, bit for bit (the calibration neither logs nor moves the training metric)."""
    def explicit_forward(model, batch):
        model(batch["image"])

    def explicit_loss(model, batch):
        return F.cross_entropy(model(batch["image"]), batch["label"])

    build = {"apoz": (lambda **kw: APoZ(batches=2, **kw), {"forward": explicit_forward}),
             "taylor": (lambda **kw: Taylor(batches=2, **kw), {"loss": explicit_loss}),
             "wanda": (lambda **kw: Wanda(batches=2, **kw), {"forward": explicit_forward})}[criterion]
    granularity = "weight" if criterion == "wanda" else "neuron"
    runs = []
    for told in ({}, build[1]):
        pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1), criterion=build[0](**told),
                          granularity=granularity, verbose=False)
        L.seed_everything(0)
        model = _DictClassifier()
        _fit(pruning, model, _DictData())
        runs.append((pruning, model))
    (by_step, model_a), (by_hand, model_b) = runs
    assert [row["sparsity"] for row in by_step.history] == pytest.approx([0.4, 0.6], abs=0.01)
    assert _same(_parameters(model_a), _parameters(model_b))
    assert all(torch.equal(by_step.keep[key], by_hand.keep[key]) for key in by_hand.keep)


class _BytesRegressor(L.LightningModule):
    """Preprocessing inside ``training_step`` (uint8 pixels scaled to [0, 1]) and a loss that is not
    cross-entropy (regressing the digit's value): ``model(batch[0])`` would fail on the raw bytes."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 48), torch.nn.ReLU(), torch.nn.Linear(48, 1))
        self.example_input_array = torch.zeros(2, 1, 8, 8)

    def forward(self, x):
        return self.net(x).squeeze(-1)

    def training_step(self, batch, batch_idx):
        pixels, digit = batch
        loss = F.mse_loss(self(pixels.float() / 255.0), digit.float())
        self.log("train_mse", loss, on_step=True)
        return {"loss": loss}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def _byte_digits():
    data = DigitsDataModule(batch_size=32)
    data.setup("fit")
    x = torch.stack([item[0] for item in data.train_dataloader().dataset])
    y = torch.tensor([int(item[1]) for item in data.train_dataloader().dataset])
    scaled = ((x - x.min()) / (x.max() - x.min()) * 255).round().to(torch.uint8)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(scaled, y), batch_size=32)


def test_taylor_scores_come_from_the_loss_and_preprocessing_of_training_step():
    def by_hand(model, batch):
        return F.mse_loss(model(batch[0].float() / 255.0), batch[1].float())

    finals = []
    for criterion in (Taylor(batches=2), Taylor(batches=2, loss=by_hand)):
        pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion=criterion, granularity="neuron",
                          verbose=False)
        L.seed_everything(0)
        model = _BytesRegressor()
        make_trainer(2, [pruning], limit_train_batches=3, num_sanity_val_steps=0).fit(model, _byte_digits())
        finals.append((pruning.keep["net.1"], model.net[1].out_features))
    assert finals[0][1] == 24  # half of the hidden units removed
    assert torch.equal(finals[0][0], finals[1][0])  # the same units as the user's loss, written out


class _WithCalibrationStep(_DictClassifier):
    """Defines ``pruning_calibration_step``: calibration runs it, not ``training_step``."""

    def __init__(self):
        super().__init__()
        self.calls = {"training_step": 0, "pruning_calibration_step": 0}

    def training_step(self, batch, batch_idx):
        self.calls["training_step"] += 1
        return super().training_step(batch, batch_idx)

    def pruning_calibration_step(self, batch, batch_idx):
        self.calls["pruning_calibration_step"] += 1
        return F.cross_entropy(self(batch["image"]), batch["label"])


def test_a_modules_pruning_calibration_step_replaces_training_step_for_calibration():
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1), criterion=Taylor(batches=2),
                      granularity="neuron", verbose=False)
    model = _WithCalibrationStep()
    _fit(pruning, model, _DictData())
    assert model.calls == {"training_step": 9, "pruning_calibration_step": 4}  # 3 epochs x 3 batches; 2 cycles x 2
    assert [row["sparsity"] for row in pruning.history] == pytest.approx([0.4, 0.6], abs=0.01)


def test_the_step_neither_logs_nor_moves_a_training_metric():
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False)
    step = fit_step(trainer, model, APoZ())
    x, y = torch.randn(8, 1, 8, 8), torch.arange(8)
    before = {key: value.clone() for key, value in model.train_acc.metric_state.items()}
    loss = step_loss(step((x, y), 0))  # Classifier.training_step calls self.log: outside a fit it would raise
    assert torch.allclose(loss, F.cross_entropy(model(x), y))
    assert model.train_acc.update_count == 0
    assert all(torch.equal(before[key], value) for key, value in model.train_acc.metric_state.items())
    assert "log" not in vars(model) and "log_dict" not in vars(model)  # the module's own log is back


def test_manual_optimization_refuses_taylor_without_a_loss_before_the_warm_up():
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion=Taylor(batches=2), granularity="neuron")
    model = ManualClassifier()
    before = _parameters(model)
    with pytest.raises(ValueError, match="with manual optimization training_step steps the optimizer.*"
                                         "pruning_calibration_step.*Taylor\\(loss=lambda model, batch"):
        _fit(pruning, model)
    assert _same(before, _parameters(model))  # refused when training starts, before any step


def test_manual_optimization_calibrates_apoz_on_the_models_forward_and_taylor_on_the_modules_hook():
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion=APoZ(batches=2), granularity="neuron",
                      verbose=False)
    model = ManualClassifier()
    _fit(pruning, model, max_epochs=2)
    assert model.model.features[0].out_features + model.model.features[2].out_features == 200

    class WithHook(ManualClassifier):
        def pruning_calibration_step(self, batch, batch_idx):
            return F.cross_entropy(self(batch[0]), batch[1])

    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion=Taylor(batches=2), granularity="neuron",
                      verbose=False)
    model = WithHook()
    _fit(pruning, model, max_epochs=2)
    assert model.model.features[0].out_features + model.model.features[2].out_features == 200


def test_distillation_is_not_part_of_the_calibration_loss():
    """Taylor's scores in a distilled fit come from the module's own loss, not the loss plus the KL term."""
    def own_loss(model, batch):
        return F.cross_entropy(model(batch[0]), batch[1])

    models = []
    for criterion in (Taylor(batches=2), Taylor(batches=2, loss=own_loss)):
        pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1), criterion=criterion,
                          granularity="neuron", distill=Distillation(weight=0.5), verbose=False)
        L.seed_everything(0)
        model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
        _fit(pruning, model)
        models.append(model)
    assert _same(_parameters(models[0]), _parameters(models[1]))


def test_a_criterion_told_its_own_path_or_overriding_it_keeps_it():
    assert follows_fit_step(APoZ()) and follows_fit_step(Taylor()) and follows_fit_step(Wanda())
    assert not follows_fit_step(APoZ(forward=lambda model, batch: None))
    assert not follows_fit_step(Taylor(loss=lambda model, batch: None))

    class Own(Taylor):
        def calibration_loss(self, model, batch):
            return model(batch[0]).sum()

    assert not follows_fit_step(Own())


@pytest.mark.parametrize("output", ["a string", {"logits": torch.zeros(1)}])
def test_a_step_without_a_loss_is_refused_naming_what_it_returned(output):
    with pytest.raises(ValueError, match=f"returned {type(output).__name__}, not a loss.*training_step"):
        step_loss(output)
    assert step_loss(None) is None and torch.equal(step_loss({"loss": torch.ones(1)}), torch.ones(1))


def test_a_step_that_skips_every_calibration_batch_is_refused_for_taylor():
    class Skipping(Classifier):
        def training_step(self, batch, batch_idx):
            return None if self.trainer.current_epoch > 0 else super().training_step(batch, batch_idx)

    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion=Taylor(batches=2), granularity="neuron")
    model = Skipping("lenet_300_100", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="the step skipped all 2 calibration batches"):
        _fit(pruning, model)
    assert pruning.history == []
