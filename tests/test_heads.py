"""Attention heads as units: a head is one unit with one score; head counts follow the removal."""

from __future__ import annotations

import copy

import pytest
import torch

from lightning_prune.criteria import Magnitude
from lightning_prune.layers import is_prunable, is_transposed
from lightning_prune.masks import apply_masks
from lightning_prune.pruner import Pruner
from lightning_prune.tracing import call, output_tensors
from zoo import ZOO

pytest.importorskip("timm")
pytest.importorskip("transformers")


def _half_removed_like_masked(pruner, model, x):
    """Remove half of every group's units; assert the compact model computes what the masked one did."""
    keep = pruner.plan(pruner.dense_keep(), 0.5, 0)
    masked = copy.deepcopy(model)
    apply_masks(masked, pruner.parameter_masks(keep))
    with torch.no_grad():
        expected = output_tensors(call(masked, x))[0]
    pruner.commit(keep)
    with torch.no_grad():
        found = output_tensors(call(model, x))[0]
    assert torch.allclose(found, expected, atol=1e-5 * max(1.0, float(expected.abs().max())))
    return keep


@pytest.mark.parametrize(
    ("name", "attention", "count", "size", "segments"),
    [
        ("hf_bert", "encoder.layer.{}.attention.self", "num_attention_heads", 8, 1),
        ("hf_vit", "vit.layers.{}.attention", "num_attention_heads", 8, 1),
        ("timm_vit", "blocks.{}.attn", "num_heads", 64, 3),
        ("hf_gpt2", "transformer.h.{}.attn", "num_heads", 8, 3),  # fused c_attn is an HF Conv1D
    ],
)
def test_whole_heads_are_units_and_the_head_count_follows_the_removal(name, attention, count, size, segments):
    torch.manual_seed(0)
    model, x = ZOO[name]()
    model.eval()
    modules = dict(model.named_modules())
    if attention.format(0) not in modules:  # transformers renamed ViT's modules across versions
        attention = next(n.rsplit(".0.", 1)[0] + ".{}." + n.rsplit(".0.", 1)[1] for n, m in modules.items()
                         if getattr(m, count, None) is not None and ".0." in n)
    heads = getattr(modules[attention.format(0)], count)
    pruner = Pruner(model, x, Magnitude(2), granularity="neuron", ranking="layer")
    head_groups = [g for g in pruner.structure.groups if g.unit_of is not None and g.channels == segments * heads * size]
    assert len(head_groups) == 2 and all(g.size == heads for g in head_groups)  # one unit per head, both blocks

    keep = _half_removed_like_masked(pruner, model, x)
    for block in range(2):
        module = dict(model.named_modules())[attention.format(block)]
        left = int(keep[head_groups[0].key].sum())
        assert getattr(module, count) == left == heads // 2
        widths = [child.weight.shape[1 if is_transposed(child) else 0] for child in module.children() if is_prunable(child)]
        assert segments * left * size in widths  # q/k/v (or the fused qkv) lost whole heads
        if hasattr(module, "split_size"):  # GPT-2 splits the fused c_attn output into q, k, v there
            assert module.split_size == left * size
    loss = output_tensors(call(model.train(), x))[0].pow(2).mean()
    loss.backward()  # and it trains
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_grouped_query_attention_loses_whole_key_value_groups():
    """HF LLaMA with 4 query heads sharing 2 key/value heads: a unit is one key/value head and the two
    query heads that read it (Torch-Pruning's search cannot follow ``repeat_kv``; removal is ours)."""
    torch.manual_seed(0)
    model, x = ZOO["hf_llama"]()
    model.eval()
    pruner = Pruner(model, x, Magnitude(2), granularity="neuron", ranking="layer")
    kv_groups = {g.key: g for g in pruner.structure.groups if g.key.endswith("self_attn.q_proj")}
    assert sorted(kv_groups) == [f"model.layers.{i}.self_attn.q_proj" for i in range(2)]
    assert all(g.size == 2 and g.unit_of == (0,) * 16 + (1,) * 16 for g in kv_groups.values())

    keep = _half_removed_like_masked(pruner, model, x)
    for layer in model.model.layers:
        attention = layer.self_attn
        assert (attention.q_proj.out_features, attention.k_proj.out_features, attention.v_proj.out_features) == (16, 8, 8)
        assert attention.o_proj.in_features == 16 and attention.num_key_value_groups == 2
    output_tensors(call(model.train(), x))[0].pow(2).mean().backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
