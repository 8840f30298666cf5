"""Wanda, activation-aware weight scores |W_ij| * ||X_j||_2 (issue 17): the statistic, the scores on
Linear, convolution and Hugging Face Conv1D layers, a real fit, dict batches, and bad input named."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from torch import nn

from trainers import make_trainer
from lightning_prune import Geometric, Pruning, Wanda
from lightning_prune.criteria import score_layers
from lightning_prune.data import DigitsDataModule
from lightning_prune.layers import find_prunable_layers
from lightning_prune.models import Classifier
from lightning_prune.statistics import InputFeatureNorm


def test_the_norm_streamed_over_batches_equals_one_pass():
    data = torch.randn(30, 5, 7)
    streamed = InputFeatureNorm(7, -1)
    for chunk in data.split(4):
        streamed.update(chunk)
    assert torch.allclose(streamed.compute(), data.reshape(-1, 7).double().norm(dim=0))


def test_scores_are_weight_magnitude_times_input_norm_on_linear_and_conv_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))
    x = torch.randn(8, 3, 8, 8)
    scores = score_layers(Wanda(), find_prunable_layers(model, x), "weight", 0, model, [(x[:5], None), (x[5:], None)])
    hidden = torch.relu(model[0](x)).flatten(1).double()
    assert torch.allclose(scores["3"], model[3].weight.abs().double() * hidden.norm(dim=0))
    channel_norm = x.double().transpose(0, 1).reshape(3, -1).norm(dim=1)
    assert torch.allclose(scores["0"], model[0].weight.abs().double() * channel_norm.reshape(1, 3, 1, 1))


def test_scores_follow_hugging_face_conv1d_weights_stored_inputs_first():
    conv1d = pytest.importorskip("transformers.pytorch_utils").Conv1D
    model = nn.Sequential(conv1d(6, 4), nn.ReLU(), nn.Linear(6, 2))  # Conv1D(nf=6 outputs, nx=4 inputs)
    x = torch.randn(9, 4)
    scores = score_layers(Wanda(), find_prunable_layers(model, x), "weight", 0, model, [(x, None)])
    assert scores["0"].shape == model[0].weight.shape == (4, 6)
    assert torch.allclose(scores["0"], model[0].weight.abs().double() * x.double().norm(dim=0)[:, None])


def test_a_fit_with_wanda_reaches_the_target():
    L.seed_everything(0)
    pruning = Pruning(schedule=Geometric(target=0.7, per_cycle=0.5, warmup_epochs=1), criterion=Wanda(batches=3),
                      verbose=False)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    make_trainer(3, [pruning], limit_train_batches=4, limit_val_batches=1).fit(model, DigitsDataModule(batch_size=32))
    assert pruning.history[-1]["sparsity"] == pytest.approx(0.7, abs=0.005)
    weights = [model.model.features[0].weight, model.model.features[2].weight, model.model.classifier.weight]
    assert sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights) == pytest.approx(0.7, abs=0.005)


class _DictBatches(L.LightningDataModule):
    def train_dataloader(self):
        data = [{"pixels": torch.randn(1, 8, 8), "label": torch.tensor(i % 10)} for i in range(64)]
        return torch.utils.data.DataLoader(data, batch_size=16)


class _DictClassifier(Classifier):
    def __init__(self):
        super().__init__("lenet_300_100", input_shape=(1, 8, 8))

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch["pixels"]), batch["label"])


def test_wanda_reads_dict_batches_through_its_forward():
    L.seed_everything(0)
    pruning = Pruning(schedule=Geometric(target=0.5, per_cycle=0.5, warmup_epochs=1),
                      criterion=Wanda(batches=2, forward=lambda model, batch: model(batch["pixels"])), verbose=False)
    make_trainer(2, [pruning], limit_train_batches=2, limit_val_batches=0).fit(_DictClassifier(), _DictBatches())
    assert pruning.history[-1]["sparsity"] == pytest.approx(0.5, abs=0.005)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Wanda(batches=0), "`Wanda.batches` must be an integer >= 1, got 0"),
    (lambda: Wanda(forward="x"), "`Wanda.forward` must be callable as forward(model, batch) or None, got 'x'"),
    (lambda: Pruning(criterion="wanda", granularity="neuron"), "`criterion`='wanda' scores ('weight',) only"),
])
def test_bad_wanda_settings_are_named(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()
