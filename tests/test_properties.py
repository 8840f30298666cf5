"""Property-based tests on generated architectures: masking == removal, and plans round-trip."""

import copy

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from lightning_prune.checkpoint import load_compact, save_compact
from lightning_prune.layers import find_prunable_layers
from lightning_prune.masks import apply_masks
from lightning_prune.structure import NeuronStructure

SETTINGS = settings(max_examples=70, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ACTIVATIONS = [nn.ReLU, nn.Tanh, nn.GELU]


class Residual(nn.Module):
    def __init__(self, channels, norm):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels) if norm else nn.Identity(), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels) if norm else nn.Identity(),
        )

    def forward(self, x):
        return torch.relu(self.body(x) + x)


@st.composite
def mlps(draw):
    widths = draw(st.lists(st.integers(2, 12), min_size=1, max_size=3))
    norm, act = draw(st.booleans()), draw(st.sampled_from(ACTIVATIONS))
    layers, width = [nn.Flatten()], 6
    for out in widths:
        layers += [nn.Linear(width, out), nn.BatchNorm1d(out) if norm else nn.Identity(), act()]
        width = out
    return nn.Sequential(*layers, nn.Linear(width, 3)), (1, 6)


@st.composite
def cnns(draw):
    channels = draw(st.lists(st.integers(2, 8), min_size=1, max_size=3))
    norm, pool, act = draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from(ACTIVATIONS))
    layers, c, size = [], 2, 8
    for out in channels:
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out) if norm else nn.Identity(), act()]
        if pool and size > 2:
            layers.append(nn.MaxPool2d(2))
            size //= 2
        c = out
    hidden = draw(st.integers(2, 8))
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * size * size, hidden), act(), nn.Linear(hidden, 3)), (2, 8, 8)


@st.composite
def resnets(draw):
    channels, blocks, norm = draw(st.integers(2, 8)), draw(st.integers(1, 2)), draw(st.booleans())
    return nn.Sequential(
        nn.Conv2d(1, channels, 3, padding=1), nn.ReLU(), *[Residual(channels, norm) for _ in range(blocks)],
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, 3),
    ), (1, 6, 6)


def _randomize(model, seed):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.weight.copy_(torch.randn(module.weight.shape, generator=generator))
                module.bias.copy_(torch.randn(module.bias.shape, generator=generator))
                module.running_mean.copy_(torch.randn(module.running_mean.shape, generator=generator))
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=generator) + 0.5)
    return model.eval()


def _check_equivalence(model, shape, seed, tmp_path=None):
    torch.manual_seed(seed)
    model = _randomize(model, seed)
    x = torch.randn(3, *shape)
    structure = NeuronStructure(model, x[:2], find_prunable_layers(model, x[:2]))
    generator = torch.Generator().manual_seed(seed)
    keep = {}
    for group in structure.groups:
        mask = torch.rand(group.size, generator=generator) > 0.5
        mask[torch.randint(group.size, (1,), generator=generator)] = True  # at least one unit stays
        keep[group.key] = mask
    masked, removed = copy.deepcopy(model), copy.deepcopy(model)
    apply_masks(masked, structure.parameter_masks(model, keep))
    structure.remove_units(removed, keep)
    assert torch.allclose(masked(x), removed(x), atol=1e-5), (masked(x) - removed(x)).abs().max()
    modules = dict(removed.named_modules())
    for group in structure.groups:
        assert modules[group.key].weight.shape[0] == int(keep[group.key].sum())
    return x, removed, structure.removal(keep)


@SETTINGS
@given(architecture=mlps(), seed=st.integers(0, 2**16))
def test_mlp_masking_equals_removal(architecture, seed):
    _check_equivalence(*architecture, seed)


@SETTINGS
@given(architecture=cnns(), seed=st.integers(0, 2**16))
def test_cnn_masking_equals_removal(architecture, seed):
    _check_equivalence(*architecture, seed)


@SETTINGS
@given(architecture=resnets(), seed=st.integers(0, 2**16))
def test_residual_masking_equals_removal_and_plans_round_trip(architecture, seed, tmp_path_factory):
    model, shape = architecture
    dense = copy.deepcopy(model)
    x, removed, removal = _check_equivalence(model, shape, seed)
    path = tmp_path_factory.mktemp("plan") / "compact.pt"
    plan = {"inputs": [{"shape": [2, *shape], "dtype": "float32"}], "steps": [removal]}
    save_compact(removed, plan, path)
    restored = load_compact(dense, path).eval()
    assert torch.allclose(restored(x), removed(x), atol=1e-6)
