"""Surviving entries as kept indices per sliced dimension: the same entries as the float64 probe, in O(units) memory."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from benchmarks._common import LiveTensorMemory
from lightning_prune.layers import find_prunable_layers
from lightning_prune.models import LeNet300100
from lightning_prune.structure import NeuronStructure
from lightning_prune.surgery import remove_units, surviving_entries
from lightning_prune.survivors import SliceRecorder, Survivors, UnexplainedRemovalError
from survivor_reference import float64_probe
from zoo import ZOO


def _random_keep(structure: NeuronStructure, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    keep = {}
    for group in structure.groups:
        mask = torch.rand(group.size, generator=generator) > 0.5
        mask[0] = True
        keep[group.key] = mask
    return keep


@pytest.mark.parametrize("name", ["tv_resnet", "tv_resnext", "hf_bert", "tv_vit", "hf_gpt2", "hf_llama"])
def test_survivors_are_the_float64_probes_flat_indices(name):
    pytest.importorskip("torchvision")
    pytest.importorskip("transformers")
    torch.manual_seed(0)
    model, x = ZOO[name]()
    model.eval()
    state = copy.deepcopy(model.state_dict())
    structure = NeuronStructure(model, x, find_prunable_layers(model, x), verify=False)
    for seed in (0, 1):
        removal = structure.removal(_random_keep(structure, seed))
        expected = float64_probe(model, x, removal)
        found = surviving_entries(model, x, removal)
        assert found.keys() == expected.keys()
        for key, survivors in found.items():
            assert torch.equal(survivors.flat(), expected[key]), key
            assert torch.equal(survivors.mask().flatten().nonzero().flatten(), expected[key].sort().values), key
    if name == "tv_resnet":  # BatchNorm running statistics are followed too
        assert any(key.endswith("running_mean") for key in found) and any(key.endswith("running_var") for key in found)
    assert all(torch.equal(state[key], value) for key, value in model.state_dict().items())  # the model is untouched


def test_survivors_take_mask_and_flat_agree():
    survivors = Survivors((4, 5, 3), {0: torch.tensor([0, 2, 3]), 2: torch.tensor([1])})
    value = torch.randn(4, 5, 3)
    assert survivors.new_shape == (3, 5, 1)
    assert torch.equal(survivors.take(value), value.flatten()[survivors.flat()].reshape(3, 5, 1))
    assert torch.equal(value[survivors.mask()], survivors.take(value).flatten())
    with pytest.raises(ValueError, match="shape"):
        survivors.take(torch.randn(4, 5))


def test_a_tensor_changed_by_anything_but_slicing_is_refused():
    source = nn.Parameter(torch.randn(6, 4))
    recorder = SliceRecorder([source])
    with recorder:
        sliced = torch.index_select(source, 0, torch.tensor([0, 2, 5]))
        narrowed = source[:3].clone()  # a view first: not followed
        summed = source * 2  # not a slicing op
    assert torch.equal(recorder.survivors("w", source, sliced).index[0], torch.tensor([0, 2, 5]))
    for tensor in (narrowed, summed):
        with pytest.raises(UnexplainedRemovalError, match="Cannot tell which entries of 'w'"):
            recorder.survivors("w", source, tensor)


def test_the_recorder_refuses_writes_into_the_models_tensors():
    weight = torch.randn(3)
    with pytest.raises(UnexplainedRemovalError, match="wrote into a tensor of the model"):
        with SliceRecorder([], protected=[weight]):
            weight.mul_(0)
    assert weight.abs().sum() > 0


def _bert() -> tuple[nn.Module, torch.Tensor]:
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=64, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=512, max_position_embeddings=16)
    torch.manual_seed(0)
    return transformers.BertModel(config).eval(), torch.randint(0, 64, (1, 8), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("build", [lambda: (LeNet300100(in_features=256, hidden=(1024, 1024)), torch.randn(2, 256)), _bert],
                         ids=["mlp", "bert"])
def test_surgery_and_masks_allocate_the_survivors_not_copies_of_the_model(build):
    """Half of every group removed; the peak of what each stage allocates, on the tensor meter of the benchmarks.

    Surgery keeps the model (for rollback) while it makes the surviving part of each changed tensor;
    besides that it may allocate at most half of the changed tensors again, transiently (Torch-Pruning's
    intermediate for a weight sliced along two dimensions, the trace's activations). Masks allocate the
    masks they return and the trace. The float64 probe this replaced allocated over 4x the model.
    On BERT-base, where the embeddings do not change, surgery peaks at 1.41x the model (benchmarks/scale.py).
    """
    model, x = build()
    model_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    structure = NeuronStructure(model, x, find_prunable_layers(model, x), verify=False)
    keep = {group.key: torch.arange(group.size) % 2 == 0 for group in structure.groups}
    with LiveTensorMemory() as meter:
        masks = structure.parameter_masks(model, keep)
    assert meter.peak <= sum(mask.numel() for mask in masks.values()) + 0.1 * model_bytes
    before = {name: param.numel() * param.element_size() for name, param in model.named_parameters()}
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    with LiveTensorMemory() as meter:
        kept = remove_units(model, x, structure.removal(keep), [optimizer])
    changed = sum(size for name, size in before.items() if name in kept)
    survivors = sum(param.numel() * param.element_size() for name, param in model.named_parameters() if name in kept)
    assert changed > 0.9 * model_bytes
    assert meter.peak <= survivors + 0.5 * changed
