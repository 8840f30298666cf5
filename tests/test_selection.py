"""Which layers are pruned by default (issue 15): frozen layers and layers the forward pass never calls
(a GAN's discriminator) are left out, named once, and pruned only when selected by ``layers=``."""

from __future__ import annotations

import logging

import lightning as L
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from trainers import make_trainer
from lightning_prune import Neurons, OneShot, Pruning
from lightning_prune.layers import find_layers


class TinyGAN(L.LightningModule):
    """A GAN as Lightning users write one: manual optimization, ``forward`` is the generator."""

    def __init__(self):
        super().__init__()
        self.automatic_optimization = False
        self.generator = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 16))
        self.discriminator = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 1))
        self.example_input_array = torch.zeros(4, 8)

    def forward(self, z):
        return self.generator(z)

    def training_step(self, batch, batch_idx):
        real, = batch
        opt_g, opt_d = self.optimizers()
        z = torch.randn(real.shape[0], 8)
        bce = nn.functional.binary_cross_entropy_with_logits
        d_loss = bce(self.discriminator(real), torch.ones(real.shape[0], 1)) + bce(
            self.discriminator(self(z).detach()), torch.zeros(real.shape[0], 1))
        opt_d.zero_grad()
        self.manual_backward(d_loss)
        opt_d.step()
        g_loss = bce(self.discriminator(self(z)), torch.ones(real.shape[0], 1))
        opt_g.zero_grad()
        self.manual_backward(g_loss)
        opt_g.step()

    def configure_optimizers(self):
        return [torch.optim.Adam(self.generator.parameters(), 1e-3), torch.optim.Adam(self.discriminator.parameters(), 1e-3)]


class FrozenBackbone(L.LightningModule):
    """A classifier fine-tuning its head on a frozen first layer."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Linear(16, 64)
        self.backbone.requires_grad_(False)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, x):
        return self.head(self.backbone(x))

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self(x), y)

    def configure_optimizers(self):
        return torch.optim.SGD([p for p in self.parameters() if p.requires_grad], lr=0.1)


def _loader(*tensors):
    return DataLoader(TensorDataset(*tensors), batch_size=16)


def _fit(module, pruning, data, caplog):
    L.seed_everything(0)
    with caplog.at_level(logging.INFO, logger="lightning.pytorch.utilities.rank_zero"):
        make_trainer(2, [pruning], limit_train_batches=3, limit_val_batches=0).fit(module, data)


def test_a_gans_discriminator_is_left_out_and_named_and_the_generator_pruned(caplog):
    gan = TinyGAN()
    discriminator = {name: value.clone() for name, value in gan.discriminator.state_dict().items()}
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1))
    _fit(gan, pruning, _loader(torch.randn(64, 16)), caplog)
    assert pruning.history[0]["sparsity"] == pytest.approx(0.5, abs=0.01)
    generator = torch.cat([gan.generator[i].weight.flatten() for i in (0, 2)])
    assert (generator == 0).float().mean() == pytest.approx(0.5, abs=0.01)
    assert all(bool((value != 0).all()) for name, value in gan.discriminator.state_dict().items() if "weight" in name)
    assert any(not torch.equal(value, gan.discriminator.state_dict()[name]) for name, value in discriminator.items())
    assert "'discriminator.0': never called by the model's forward pass" in caplog.text


def test_a_frozen_layer_is_left_out_and_the_trainable_head_loses_neurons(caplog):
    module = FrozenBackbone()
    frozen = module.backbone.weight.clone()
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), granularity=Neurons())
    _fit(module, pruning, _loader(torch.randn(64, 16), torch.randint(0, 4, (64,))), caplog)
    assert module.head[1].out_features == 16 and module.backbone.out_features == 64
    assert torch.equal(module.backbone.weight, frozen)
    assert "'backbone': frozen (no parameter requires a gradient)" in caplog.text


def test_layers_selects_a_frozen_or_uncalled_layer_explicitly():
    gan, x = TinyGAN(), torch.zeros(4, 8)
    selected, excluded = find_layers(gan, x)
    assert [layer.name for layer in selected] == ["generator.0", "generator.2"]
    assert set(excluded) == {"discriminator.0", "discriminator.2"}
    selected, excluded = find_layers(gan, x, layers=["discriminator.0", "discriminator.2"])
    assert [layer.name for layer in selected] == ["discriminator.0", "discriminator.2"] and not excluded


def test_nothing_left_but_frozen_layers_names_them():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2)).requires_grad_(False)
    with pytest.raises(ValueError, match=r"left out by default: '0': frozen .*select them with `layers=`"):
        find_layers(model, torch.zeros(2, 4))
