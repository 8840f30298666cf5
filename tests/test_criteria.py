import pytest
import torch
from torch import nn

from lightning_prune.criteria import APoZ, Magnitude, RandomImportance, Taylor, make_criterion, score_layers
from lightning_prune.layers import find_prunable_layers
from lightning_prune.statistics import ZeroActivationRate


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def test_apoz_streamed_over_batches_equals_apoz_on_the_concatenated_data():
    model = _mlp()
    layers = find_prunable_layers(model, torch.zeros(1, 12))
    data = torch.randn(70, 12)
    batches = [(chunk, torch.zeros(len(chunk), dtype=torch.long)) for chunk in data.split(16)]
    streamed = score_layers(APoZ(), layers, "neuron", 0, model, batches)
    whole = score_layers(APoZ(), layers, "neuron", 0, model, [(data, torch.zeros(70, dtype=torch.long))])
    # Independent reference: fraction of post-ReLU zeros, computed directly.
    post_relu = model[2](model[1](data))
    assert torch.equal(streamed["1"], whole["1"])
    assert torch.allclose(streamed["1"], (post_relu != 0).double().mean(0))
    assert streamed["1"].shape == (16,) and streamed["5"].shape == (3,)


def test_zero_activation_rate_counts_conv_channels():
    stat = ZeroActivationRate(num_units=2, unit_dim=1)
    x = torch.tensor([[[[1.0, -1.0]], [[0.0, 0.0]]]])  # [N=1, C=2, H=1, W=2]
    stat.update(x)
    assert torch.equal(stat.compute(), torch.tensor([0.5, 1.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="expected 2"):
        stat.update(torch.zeros(1, 3, 2))


def test_taylor_is_the_weight_times_the_summed_gradient():
    model = _mlp()
    layers = find_prunable_layers(model, torch.zeros(1, 12))
    x, y = torch.randn(20, 12), torch.randint(0, 3, (20,))
    batches = [(x[:10], y[:10]), (x[10:], y[10:])]
    per_weight = score_layers(Taylor(), layers, "weight", 0, model, batches)
    per_unit = score_layers(Taylor(), layers, "neuron", 0, model, batches)
    loss = sum(nn.functional.cross_entropy(model(a), b) for a, b in batches)
    grad = torch.autograd.grad(loss, model[1].weight)[0]
    product = (model[1].weight * grad).double()
    assert torch.allclose(per_weight["1"], product.abs(), atol=1e-7)
    assert torch.allclose(per_unit["1"], product.sum(1).abs(), atol=1e-7)
    assert model[1].weight.grad is None  # calibration leaves .grad alone


def test_magnitudes_and_random_scores():
    model = _mlp()
    layers = find_prunable_layers(model, torch.zeros(1, 12))
    weight = model[1].weight.detach()
    assert torch.equal(Magnitude(1).scores(layers, "weight", 0)["1"], weight.abs())
    assert torch.allclose(Magnitude(2).scores(layers, "neuron", 0)["1"], weight.norm(dim=1))
    first, again = RandomImportance(3).scores(layers, "neuron", 1), RandomImportance(3).scores(layers, "neuron", 1)
    other = RandomImportance(3).scores(layers, "neuron", 2)
    assert torch.equal(first["1"], again["1"]) and not torch.equal(first["1"], other["1"])


def test_non_finite_scores_name_the_layer():
    model = _mlp()
    layers = find_prunable_layers(model, torch.zeros(1, 12))
    with torch.no_grad():
        model[3].weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match="non-finite scores for layer '3'"):
        score_layers(Magnitude(1), layers, "weight", 0)


def test_unknown_criterion_lists_the_valid_ones():
    with pytest.raises(ValueError, match=r"`criterion` must be one of \['apoz', 'l1', 'l2', 'random', 'taylor', 'wanda'\]"):
        make_criterion("l3")
    with pytest.raises(ValueError, match="has no `scores"):
        make_criterion(object())
