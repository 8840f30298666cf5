"""Transposed convolutions are prunable layers (issue 13): their output channels, stored in dimension 1
of the weight, are units. A real fit of a conv autoencoder on digits, whose decoder upsamples with
``ConvTranspose2d``; the zoo (tests/zoo_torch_pruning.py) adds a DCGAN generator, a U-Net and the
grouped transposed conv that is refused."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from trainers import make_trainer
from lightning_prune import Neurons, OneShot, Pruning
from lightning_prune.checkpoint import PrunedCheckpointMixin
from lightning_prune.data import DigitsDataModule
from lightning_prune.layers import find_prunable_layers


class AutoEncoder(PrunedCheckpointMixin, L.LightningModule):
    """8x8 digits → 32 channels at 2x2 → back to 8x8 through two ``ConvTranspose2d``; MSE on the pixels."""

    def __init__(self):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = nn.Sequential(nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
                                     nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())
        self.decoder = nn.Sequential(nn.ConvTranspose2d(32, 16, 2, stride=2), nn.ReLU(), nn.ConvTranspose2d(16, 1, 2, stride=2))
        self.example_input_array = torch.zeros(2, 1, 8, 8)

    def forward(self, x):
        return self.decoder(self.encoder(x))

    def training_step(self, batch, batch_idx):
        loss = F.mse_loss(self(batch[0]), batch[0])  # not cross-entropy: Taylor's gradients come from this loss
        self.log("train_mse", loss, on_step=True)
        return loss

    def validation_step(self, batch, batch_idx):
        self.log("val_mse", F.mse_loss(self(batch[0]), batch[0]))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def test_transposed_convs_are_layers_with_units_in_dimension_one():
    layers = {layer.name: layer for layer in find_prunable_layers(AutoEncoder(), torch.zeros(2, 1, 8, 8))}
    assert list(layers) == ["encoder.0", "encoder.2", "decoder.0", "decoder.2"]
    assert layers["decoder.0"].num_units == 16 and layers["decoder.0"].weight.shape[:2] == (32, 16)
    assert layers["decoder.2"].is_output and not layers["decoder.0"].is_output


@pytest.mark.parametrize("criterion", ["l1", "taylor", "apoz"])
def test_an_autoencoders_transposed_conv_channels_are_removed_in_a_fit(criterion, tmp_path):
    L.seed_everything(0)
    model = AutoEncoder()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion=criterion, granularity="neuron",
                      ranking="layer", verbose=False)
    trainer = make_trainer(2, [pruning, checkpoint], limit_train_batches=4, limit_val_batches=2,
                           enable_checkpointing=True)
    trainer.fit(model, DigitsDataModule(batch_size=32))
    up, out = model.decoder[0], model.decoder[2]
    assert (model.encoder[0].out_channels, model.encoder[2].out_channels) == (8, 16)
    assert (up.in_channels, up.out_channels, tuple(up.weight.shape[:2])) == (16, 8, (16, 8))
    assert (out.in_channels, out.out_channels) == (8, 1)  # the output layer keeps its channel
    x = torch.randn(4, 1, 8, 8)
    assert model(x).shape == (4, 1, 8, 8)
    assert pruning.history[0]["sparsity"] == pytest.approx(0.5, abs=0.01)

    reloaded = AutoEncoder.load_from_checkpoint(checkpoint.last_model_path)  # compact, from the plan
    model.eval(), reloaded.eval()
    assert reloaded.decoder[0].weight.shape == up.weight.shape
    assert torch.allclose(reloaded(x), model(x), atol=1e-6)


def test_masked_transposed_conv_channels_compute_what_the_compact_model_does():
    L.seed_everything(0)
    model = AutoEncoder()
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), granularity=Neurons(remove=False), ranking="layer",
                      verbose=False)
    make_trainer(2, [pruning], limit_train_batches=4, limit_val_batches=0, num_sanity_val_steps=0).fit(
        model, DigitsDataModule(batch_size=32))
    assert model.decoder[0].out_channels == 16  # masked, not removed
    kept = pruning.keep["decoder.0"]
    assert int(kept.sum()) == 8 and bool((model.decoder[0].weight[:, ~kept] == 0).all())
    x = torch.randn(4, 1, 8, 8)
    model.eval()
    masked = model(x)
    pruning.pruner.commit(pruning.keep, None, [])
    assert model.decoder[0].out_channels == 8
    assert torch.allclose(model(x), masked, atol=1e-5 * float(masked.abs().max()))
