"""Neuron groups and the law of equivalence: masking units == removing them."""

import copy

import pytest
import torch
from torch import nn

from lightning_prune.layers import find_prunable_layers
from lightning_prune.masks import apply_masks
from lightning_prune.models import build_model
from lightning_prune.structure import NeuronStructure

ARCHITECTURES = {
    "lenet_300_100": ({}, (1, 8, 8)),
    "vgg_small": ({}, (1, 8, 8)),
    "resnet_small": ({}, (1, 8, 8)),
    "cnn1d": ({}, (1, 40)),
}


def _randomize_norms(model):
    """Give BatchNorms non-trivial affine parameters and running statistics."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.normal_()
                module.bias.normal_()
                module.running_mean.normal_()
                module.running_var.uniform_(0.5, 2.0)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_masking_units_equals_removing_them(arch):
    torch.manual_seed(0)
    kwargs, shape = ARCHITECTURES[arch]
    model = build_model(arch, **kwargs).eval()
    _randomize_norms(model)
    x = torch.randn(5, *shape)
    layers = find_prunable_layers(model, x)
    structure = NeuronStructure(model, x, layers)
    assert structure.groups and not structure.skipped
    generator = torch.Generator().manual_seed(1)
    keep = {g.key: torch.rand(g.size, generator=generator) > 0.5 for g in structure.groups}
    for mask in keep.values():
        mask[0] = True  # keep one unit per group
    masked, removed = copy.deepcopy(model), copy.deepcopy(model)
    apply_masks(masked, structure.parameter_masks(model, keep))
    structure.remove_units(removed, keep)
    assert torch.allclose(masked(x), removed(x), atol=1e-5)
    assert not torch.allclose(masked(x), model(x), atol=1e-3)  # the pruning did change the function
    kept = sum(int(m.sum()) for m in keep.values())
    total = sum(m.numel() for m in keep.values())
    assert sum(p.numel() for p in removed.parameters()) < sum(p.numel() for p in model.parameters())
    assert kept < total
    # Each root layer now has exactly the kept number of output units.
    modules = dict(removed.named_modules())
    for group in structure.groups:
        assert modules[group.key].weight.shape[0] == int(keep[group.key].sum())


def test_residual_channels_form_one_group():
    model = build_model("resnet_small").eval()
    x = torch.randn(2, 1, 8, 8)
    structure = NeuronStructure(model, x, find_prunable_layers(model, x))
    coupled = [group for group in structure.groups if len(group.members) > 1]
    assert coupled, "a block's second conv must be coupled with its shortcut"
    for group in coupled:
        sizes = {dict(model.named_modules())[name].weight.shape[0] for name, _ in group.members}
        assert sizes == {group.size}


def test_the_output_layer_keeps_its_units_and_batchnorm_is_the_apoz_site():
    model = build_model("vgg_small").eval()
    x = torch.randn(2, 1, 8, 8)
    layers = find_prunable_layers(model, x)
    structure = NeuronStructure(model, x, layers)
    output = [layer.name for layer in layers if layer.is_output]
    assert len(output) == 1 and output[0] not in structure.sizes
    conv = next(layer for layer in layers if isinstance(layer.module, nn.Conv2d))
    assert isinstance(structure.sites[conv.name], nn.BatchNorm2d)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_removing_zeroed_units_keeps_the_outputs(arch):
    from lightning_prune.structure import remove_zeroed_units

    torch.manual_seed(0)
    kwargs, shape = ARCHITECTURES[arch]
    model = build_model(arch, **kwargs).eval()
    _randomize_norms(model)
    x = torch.randn(4, *shape)
    structure = NeuronStructure(model, x, find_prunable_layers(model, x))
    keep = {g.key: torch.arange(g.size) % 3 != 1 for g in structure.groups}
    apply_masks(model, structure.parameter_masks(model, keep))
    before = model(x)
    removal = remove_zeroed_units(model, x)
    assert {key: len(idx) for key, idx in removal.items()} == {k: int((~m).sum()) for k, m in keep.items()}
    assert torch.allclose(model(x), before, atol=1e-5)
    modules = dict(model.named_modules())
    assert all(modules[key].weight.shape[0] == int(mask.sum()) for key, mask in keep.items())


def test_a_graph_the_engine_cannot_build_is_refused_before_anything_changes(monkeypatch):
    import torch_pruning as tp

    from lightning_prune.criteria import Magnitude
    from lightning_prune.pruner import Pruner
    from lightning_prune.surgery import UnsupportedModelError

    def broken(*args, **kwargs):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'NoneType'")  # GPT-2's KV-cache concat, before

    model = build_model("lenet_300_100")
    before = copy.deepcopy(model.state_dict())
    monkeypatch.setattr(tp.DependencyGraph, "build_dependency", broken)
    with pytest.raises(UnsupportedModelError, match="could not build the dependency graph of") as caught:
        Pruner(model, torch.randn(2, 64), Magnitude(2), granularity="neuron")
    assert isinstance(caught.value.__cause__, TypeError)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_an_unbounded_search_refuses_only_the_layers_it_starts_from():
    pytest.importorskip("torchvision")
    from zoo import ZOO

    torch.manual_seed(0)
    model, x = ZOO["tv_swin"]()  # window partitions: the search along the residual stream never ends
    structure = NeuronStructure(model.eval(), x, find_prunable_layers(model, x))
    unbounded = [key for key, reason in structure.refused.items() if "grows without bound from this layer" in reason]
    assert unbounded and not any(key.endswith("mlp.0") for key in unbounded)
    assert sorted(structure.sizes) == ["features.1.0.mlp.0", "features.3.0.mlp.0"]  # MLP hidden units still pruned
