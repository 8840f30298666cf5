"""Issue 13, point 3: GroupNorm. Each group of channels is normalised on its own, so a whole group is
a unit: masking all of its channels is removing it, and ``num_groups`` follows the removal.
A GroupNorm of one group mixes every channel, as LayerNorm does, and stays refused by default."""

from __future__ import annotations

import copy
from functools import partial

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_prune import OneShot, PrunedCheckpointMixin, Pruning
from lightning_prune.config import PerLayer
from lightning_prune.criteria import Magnitude
from lightning_prune.data import DigitsDataModule
from lightning_prune.layers import width_mismatches
from lightning_prune.masks import apply_masks
from lightning_prune.pruner import Pruner
from lightning_prune.surgery import UnsupportedModelError
from trainers import make_trainer


def _net(groups: int = 4) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.GroupNorm(groups, 16), nn.ReLU(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.GroupNorm(groups, 32), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(32, 10))


def test_whole_groupnorm_groups_are_units_and_masking_them_is_removing_them():
    torch.manual_seed(0)
    model, x = _net().eval(), torch.randn(4, 1, 8, 8)
    pruner = Pruner(model, x, Magnitude(2), "neuron", PerLayer())
    groups = {group.key: group for group in pruner.structure.groups}
    assert {key: (g.size, g.unit_of[:9]) for key, g in groups.items()} == {
        "0": (4, (0, 0, 0, 0, 1, 1, 1, 1, 2)), "3": (4, (0,) * 8 + (1,))}  # 4 channels, then 8, per unit
    keep = pruner.plan(pruner.dense_keep(), 0.5, 0)
    masked = copy.deepcopy(model)
    apply_masks(masked, pruner.parameter_masks(keep))
    pruner.commit(keep)
    assert [(m.num_channels, m.num_groups) for m in (model[1], model[4])] == [(8, 2), (16, 2)]
    assert not width_mismatches(model[1]) and not width_mismatches(model[4])
    assert torch.allclose(model(x), masked(x), atol=1e-6)


def test_part_of_a_group_is_not_a_unit_because_a_zeroed_channel_changes_its_groups_statistics():
    torch.manual_seed(0)
    norm, x = nn.GroupNorm(2, 8).eval(), torch.randn(3, 8, 4, 4)
    zeroed = x.clone()
    zeroed[:, 0] = 0  # channel 0 of group 0 (channels 0-3) masked
    with torch.no_grad():
        masked = norm(zeroed)[:, 1:4]
        removed = F.group_norm(x[:, 1:4], 1, norm.weight[1:4], norm.bias[1:4], norm.eps)  # group 0 without channel 0
        whole_group = norm(torch.cat([torch.zeros_like(x[:, :4]), x[:, 4:]], dim=1))[:, 4:]  # group 0 masked whole
    assert not torch.allclose(masked, removed, atol=1e-3)
    assert torch.allclose(whole_group, F.group_norm(x[:, 4:], 1, norm.weight[4:], norm.bias[4:], norm.eps), atol=1e-6)


def test_a_groupnorm_of_one_group_mixes_every_channel_and_stays_refused_by_default():
    model, x = _net(groups=1).eval(), torch.randn(4, 1, 8, 8)
    with pytest.raises(UnsupportedModelError, match=r"channel-mixing norm '1' \(GroupNorm\).*norm_coupled='remove'"):
        Pruner(model, x, Magnitude(2), "neuron", PerLayer())


class GroupNormNet(PrunedCheckpointMixin, L.LightningModule):
    def __init__(self):
        super().__init__()
        self.save_hyperparameters()
        self.net = _net()
        self.example_input_array = torch.zeros(2, 1, 8, 8)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_acc", (self(batch[0]).argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


@pytest.mark.parametrize("criterion", ["l2", "taylor", "apoz"])
def test_a_fit_removes_whole_groups_and_the_checkpoint_reloads(criterion, tmp_path):
    L.seed_everything(0)
    model = GroupNormNet()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion=criterion, granularity="neuron",
                      ranking="layer", verbose=False)
    make_trainer(2, [pruning, checkpoint], limit_train_batches=4, limit_val_batches=0, num_sanity_val_steps=0,
                 enable_checkpointing=True).fit(model, DigitsDataModule(batch_size=32))
    assert [(m.num_channels, m.num_groups) for m in (model.net[1], model.net[4])] == [(8, 2), (16, 2)]
    reloaded = GroupNormNet.load_from_checkpoint(checkpoint.last_model_path)
    x = torch.randn(4, 1, 8, 8)
    assert reloaded.net[4].num_groups == 2
    assert torch.allclose(reloaded.eval()(x), model.eval()(x), atol=1e-6)


@pytest.mark.parametrize("target", [0.75, 0.9])
def test_a_groupnorm_keeps_two_groups_so_it_never_turns_into_a_norm_over_every_channel(target):
    torch.manual_seed(0)
    model, x = _net().eval(), torch.randn(4, 1, 8, 8)
    pruner = Pruner(model, x, Magnitude(2), "neuron", PerLayer())
    assert pruner.structure.floors == {"0": 2, "3": 2}
    pruner.commit(pruner.plan(pruner.dense_keep(), target, 0))
    assert [(m.num_channels, m.num_groups) for m in (model[1], model[4])] == [(8, 2), (16, 2)]


def test_a_zeroed_group_that_gives_nan_under_eps_zero_is_refused_by_the_trial_removal():
    torch.manual_seed(0)
    model, x = _net().eval(), torch.randn(4, 1, 8, 8)
    model[1].eps = 0.0  # a masked group has variance 0: 0 / sqrt(0) is NaN, the removed model is finite
    pruner = Pruner(model, x, Magnitude(2), "neuron", PerLayer())
    assert "non-finite" in pruner.structure.refused["0"] and "3" in pruner.structure.sizes


def test_a_removal_that_takes_part_of_a_group_is_refused_not_regrouped():
    from lightning_prune.surgery import Transaction, remove_groups

    torch.manual_seed(0)
    model, x = _net().eval(), torch.randn(4, 1, 8, 8)
    with pytest.raises(UnsupportedModelError, match=r"part of a group of GroupNorm\(4, 16\)"):
        with Transaction(model):
            remove_groups(model, x, {"0": [0, 4, 8, 12]})  # one channel of every group: 12 channels, 4 groups
    assert (model[1].num_channels, model[1].num_groups) == (16, 4)  # put back


def test_a_global_ranking_in_a_fit_keeps_every_groupnorm_at_two_groups_or_more(tmp_path):
    L.seed_everything(0)
    model = GroupNormNet()
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion="l2", granularity="neuron",
                      ranking="global", verbose=False)
    make_trainer(2, [pruning], limit_train_batches=4, limit_val_batches=0, num_sanity_val_steps=0).fit(
        model, DigitsDataModule(batch_size=32))
    norms = [model.net[1], model.net[4]]
    assert [norm.num_channels // norm.num_groups for norm in norms] == [4, 8]  # whole groups of 4 and 8 channels left
    assert min(norm.num_groups for norm in norms) >= 2 and sum(norm.num_groups for norm in norms) == 4  # 4 of 8 units


@pytest.mark.parametrize("setup", ["masked", "guarded"])
def test_groupnorm_units_need_no_option_where_the_masked_model_is_trained_or_judged(setup):
    """Masking a whole group is removing it, so GroupNorm groups are pruned with ``remove=False`` (the model
    stays masked) and under a ``DropGuard`` (the masked model is judged), unlike LayerNorm-coupled channels."""
    from lightning_prune import DropGuard, Neurons

    L.seed_everything(0)
    model = GroupNormNet()
    options = {"masked": dict(granularity=Neurons(remove=False)),
               "guarded": dict(granularity="neuron", guard=DropGuard("val_acc", 1.0))}[setup]
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion="l2", ranking="layer", verbose=False,
                      **options)
    make_trainer(2, [pruning], limit_train_batches=4, limit_val_batches=2, num_sanity_val_steps=0).fit(
        model, DigitsDataModule(batch_size=32))
    norm = model.net[4]
    if setup == "masked":  # dense shapes; two of the four groups of 8 channels are zero in the norm's weight
        zero = (norm.weight.detach() == 0).reshape(4, 8)
        assert norm.num_groups == 4 and zero.all(dim=1).sum() == 2 and zero.any(dim=1).sum() == 2
    else:
        assert (norm.num_channels, norm.num_groups) == (16, 2) and pruning.history[0]["sparsity"] == pytest.approx(0.5)
