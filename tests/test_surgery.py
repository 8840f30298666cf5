"""Removal during training: optimizer state follows the surviving entries; schedulers are untouched."""

import copy

import pytest
import torch
from torch import nn

from lightning_prune.layers import find_prunable_layers
from lightning_prune.masks import MaskEnforcer, apply_masks
from lightning_prune.models import build_model
from lightning_prune.structure import NeuronStructure
from lightning_prune.surgery import UnsupportedModelError, remove_units

SHAPES = {"lenet_300_100": (1, 8, 8), "vgg_small": (1, 8, 8), "resnet_small": (1, 8, 8), "cnn1d": (1, 40)}


def _steps(model, optimizer, batches, enforcer=None):
    for x, y in batches:
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()


@pytest.mark.parametrize("arch", sorted(SHAPES))
@pytest.mark.parametrize("make_optimizer", [
    lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-4),
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
], ids=["adam", "sgd-momentum"])
def test_training_after_removal_equals_training_the_masked_model(arch, make_optimizer):
    torch.manual_seed(0)
    shape = SHAPES[arch]
    batches = [(torch.randn(16, *shape), torch.randint(0, 10, (16,))) for _ in range(6)]
    model = build_model(arch)
    optimizer = make_optimizer(model.parameters())
    _steps(model, optimizer, batches[:3])  # non-trivial optimizer state before pruning

    x = batches[0][0]
    structure = NeuronStructure(model, x[:2], find_prunable_layers(model, x[:2]))
    generator = torch.Generator().manual_seed(1)
    keep = {g.key: torch.rand(g.size, generator=generator) > 0.4 for g in structure.groups}
    for mask in keep.values():
        mask[0] = True

    masked, removed = copy.deepcopy(model), copy.deepcopy(model)
    masked_opt, removed_opt = make_optimizer(masked.parameters()), make_optimizer(removed.parameters())
    # Optimizer.load_state_dict keeps the very tensors it is given: copy, or the two would share state.
    masked_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    removed_opt.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    scheduler = torch.optim.lr_scheduler.StepLR(removed_opt, step_size=1, gamma=0.5)
    scheduler_state = copy.deepcopy(scheduler.state_dict())

    masks = structure.parameter_masks(masked, keep)
    enforcer = MaskEnforcer(masked, masks)
    apply_masks(masked, masks)
    enforcer.enforce([masked_opt])
    enforcer.attach([masked_opt])
    kept = remove_units(removed, x[:2], structure.removal(keep), [removed_opt])

    assert scheduler.state_dict() == scheduler_state
    new_params = set(map(id, removed.parameters()))
    assert {id(p) for g in removed_opt.param_groups for p in g["params"]} == new_params
    for name, param in removed.named_parameters():
        for value in removed_opt.state[param].values():
            if torch.is_tensor(value) and value.dim():
                assert value.shape == param.shape, name

    masked.train(), removed.train()
    _steps(masked, masked_opt, batches[3:])
    _steps(removed, removed_opt, batches[3:])
    masked.eval(), removed.eval()
    assert torch.allclose(masked(x), removed(x), atol=1e-5)
    masked_params = dict(masked.named_parameters())
    for name, param in removed.named_parameters():
        reference = masked_params[name].detach()
        if name in kept:
            reference = kept[name].take(reference)
        assert torch.allclose(param.detach(), reference, atol=1e-5), name

    scheduler.step()
    assert removed_opt.param_groups[0]["lr"] == pytest.approx(masked_opt.param_groups[0]["lr"] * 0.5)


def test_removal_that_would_empty_a_layer_is_refused_and_changes_nothing():
    model = build_model("lenet_300_100")
    x = torch.randn(2, 1, 8, 8)
    state = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="Cannot remove units .* of layer 'features.2', which has 100"):
        remove_units(model, x, {"features.2": list(range(100))})
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize(("units", "message"), [
    ([0], r"kept 28 of its units where 31 were to stay"),  # one unit asked, a whole 4-unit channel removed
    ([0, 1, 2, 3], r"left 'up1' inconsistent: in_channels=4 \(weight: 7\)"),  # one channel, counted four times
])
def test_removal_that_torch_pruning_gets_wrong_is_refused_and_changes_nothing(units, message):
    from zoo_torch_pruning import ReshapeDeconv  # a Linear viewed into 8 ConvTranspose2d channels, 4 units each

    torch.manual_seed(0)
    model, x = ReshapeDeconv(channels=8), torch.randn(4, 16)
    state = copy.deepcopy(model.state_dict())
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(UnsupportedModelError, match=message):
        remove_units(model, x, {"fc": units}, [optimizer])
    assert (model.fc.out_features, model.up1.in_channels) == (32, 8)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert optimizer.param_groups[0]["params"] == list(model.parameters())
    structure = NeuronStructure(model, x, find_prunable_layers(model, x))  # the trial removal refuses fc up front
    assert {group.key for group in structure.groups} == {"up1", "up2"}  # the transposed convs' own channels
    assert "in blocks" in structure.refused["fc"], structure.refused


def test_retie_makes_holders_one_parameter_again_and_refuses_holders_sliced_differently():
    from lightning_prune.surgery import UnsupportedModelError, retie, tied_parameters

    embedding, head = torch.nn.Embedding(10, 8), torch.nn.Linear(8, 10, bias=False)
    head.weight = embedding.weight
    ties = tied_parameters(torch.nn.ModuleList([embedding, head]))
    assert len(ties) == 1
    kept = torch.tensor([0, 2, 5])
    sliced = embedding.weight.detach()[:, kept]
    embedding.weight, head.weight = torch.nn.Parameter(sliced.clone()), torch.nn.Parameter(sliced.clone())  # alike
    retie(ties, "root", {})
    assert head.weight is embedding.weight

    ties = tied_parameters(torch.nn.ModuleList([embedding, head]))
    embedding.weight = torch.nn.Parameter(embedding.weight.detach()[:, :2].clone())
    head.weight = torch.nn.Parameter(head.weight.detach()[:, 1:].clone())  # other columns
    with pytest.raises(UnsupportedModelError, match="sliced the tied weight"):
        retie(ties, "root", {})


def test_a_width_attribute_follows_its_modules_own_parameter():
    from lightning_prune.layers import follow_own_widths, own_widths

    class Stem(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hidden_dim, self.num_features = 32, 7  # 7: no own parameter has a width of 7
            self.class_token = torch.nn.Parameter(torch.zeros(1, 1, 32))

    stem = Stem()
    before = own_widths(stem)
    stem.class_token = torch.nn.Parameter(torch.zeros(1, 1, 22))
    follow_own_widths(before)
    assert (stem.hidden_dim, stem.num_features) == (22, 7)
