"""Attention heads: finding them in the modules users bring, and keeping a module's head count
right when whole heads are removed.

A head owns ``head_dim`` consecutive output channels of each query/key/value projection (of each
third of a fused ``qkv``). Torch-Pruning removes those channels like any others; the attention
module's own attributes (head count, ``heads * head_dim``, GPT-2's ``split_size``) are ours to
update, read from its attribute names (:data:`HEAD_COUNT_ATTRS` and friends) rather than given
by hand as Torch-Pruning's examples do.

Grouped-query attention (HF LLaMA with ``num_key_value_heads < num_attention_heads``) is removed
here entirely: key/value heads are shared by ``n_rep`` query heads through ``repeat_kv`` (an
expand and a reshape), where Torch-Pruning's dependency search grows without bound. Its unit is a
*key/value group*: one key/value head and the ``n_rep`` query heads that read it, so the query,
key, value and output projections all lose whole heads and the module's ``num_key_value_groups``
stays right.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch_pruning as tp
from torch import nn

from lightning_prune.layers import is_transposed


#: Attribute names under which attention modules keep their head count and head size (Hugging Face
#: BERT/ViT: ``num_attention_heads``/``attention_head_size``; GPT-2, timm and others: ``num_heads``/``head_dim``).
HEAD_COUNT_ATTRS = ("num_attention_heads", "num_heads", "n_head", "n_heads")
HEAD_DIM_ATTRS = ("attention_head_size", "head_dim", "head_size")
#: Attributes that hold ``heads * head_dim`` and follow the head count (GPT-2 splits its fused
#: ``c_attn`` output at ``split_size``).
HEAD_WIDTH_ATTRS = ("all_head_size", "attn_dim", "inner_dim", "split_size")
#: Names of the query/key/value projections (separate or fused) among an attention module's children.
QKV_NAMES = ("query", "key", "value", "qkv", "c_attn", "q_proj", "k_proj", "v_proj")


def attention_heads(module: nn.Module) -> tuple[str | None, int, int] | None:
    """``(count attribute, heads, head_dim)`` of an attention module, or ``None`` if it is not one.

    The count attribute is ``None`` where the module keeps no head count and reads it off its query
    projection's width at every call (HF LLaMA: ``view(..., -1, head_dim)``).
    """
    count = next((name for name in HEAD_COUNT_ATTRS if type(getattr(module, name, None)) is int), None)
    size = next((name for name in HEAD_DIM_ATTRS if type(getattr(module, name, None)) is int), None)
    if size is None or getattr(module, size) < 1:
        return None
    if count is not None:
        return (count, getattr(module, count), getattr(module, size)) if getattr(module, count) >= 1 else None
    query = next((child for name, child in module.named_children() if name in ("q_proj", "query")), None)
    width = _out_width(query) if getattr(query, "weight", None) is not None and query.weight.ndim == 2 else 0
    return (None, width // getattr(module, size), getattr(module, size)) if width and width % getattr(module, size) == 0 else None


def _out_width(layer: nn.Module) -> int:
    return layer.weight.shape[1 if is_transposed(layer) else 0]


def qkv_widths(model: nn.Module) -> dict[nn.Module, tuple[str | None, int, int, dict[nn.Module, int]]]:
    """Each attention module with its head attributes and the output widths of its q/k/v projections."""
    found = {}
    for module in model.modules():
        heads = attention_heads(module)
        if heads is not None:
            projections = {child: _out_width(child) for name, child in module.named_children()
                           if name in QKV_NAMES and getattr(child, "weight", None) is not None and child.weight.ndim == 2}
            found[module] = (*heads, projections)
    return found


def update_head_counts(before: Mapping[nn.Module, tuple[str | None, int, int, dict[nn.Module, int]]]) -> None:
    """After a removal, set each attention module's head count (and ``heads * head_dim`` attributes)
    from the width of its q/k/v projections, which lost whole heads."""
    for module, (count, heads, size, projections) in before.items():
        for projection, width in projections.items():
            new = _out_width(projection)
            segments = width // (heads * size) if width % (heads * size) == 0 else 0
            if new == width or segments not in (1, 3) or new % (segments * size):
                continue
            new_heads = new // (segments * size)
            if count is None:  # the module reads its head count off the projection's width
                break
            setattr(module, count, new_heads)
            for name in HEAD_WIDTH_ATTRS:
                if type(getattr(module, name, None)) is int and getattr(module, name) == heads * size:
                    setattr(module, name, new_heads * size)
            break


@dataclass(frozen=True)
class KVGroupAttention:
    """An attention module with separate q/k/v/o projections and fewer key/value heads than query
    heads (``heads == kv_heads * n_rep``, ``n_rep > 1``)."""

    q: nn.Linear
    k: nn.Linear
    v: nn.Linear
    o: nn.Linear
    head_dim: int
    kv_heads: int

    @property
    def n_rep(self) -> int:
        """Query heads per key/value head."""
        return self.q.out_features // (self.kv_heads * self.head_dim)

    @property
    def channels_per_unit(self) -> int:
        """Query channels one key/value group owns (``n_rep * head_dim``)."""
        return self.n_rep * self.head_dim


def kv_group_attention(parent: nn.Module | None, layer: nn.Module | None = None) -> KVGroupAttention | None:
    """``parent`` as a grouped-query attention module (if ``layer`` is given, only when it is the query
    projection), else ``None``."""
    heads = attention_heads(parent) if parent is not None else None
    projections = [getattr(parent, name, None) for name in ("q_proj", "k_proj", "v_proj", "o_proj")]
    if heads is None or not all(type(p) is nn.Linear for p in projections):
        return None
    q, k, v, o = projections
    size = heads[2]
    if layer is not None and layer is not q:
        return None
    if k.out_features != v.out_features or k.out_features % size or q.out_features % size or o.in_features != q.out_features:
        return None
    kv_heads = k.out_features // size
    if kv_heads == 0 or q.out_features == k.out_features or q.out_features % k.out_features:
        return None
    return KVGroupAttention(q, k, v, o, size, kv_heads)


def remove_kv_groups(attention: KVGroupAttention, q_channels: Sequence[int]) -> None:
    """Remove whole key/value groups, named by their query channels (every channel of each group).

    Raises:
        ValueError: If ``q_channels`` are not whole key/value groups, or would remove all of them.
    """
    per_unit, size = attention.channels_per_unit, attention.head_dim
    units = sorted({channel // per_unit for channel in q_channels})
    whole = [unit * per_unit + offset for unit in units for offset in range(per_unit)]
    if sorted(set(q_channels)) != whole or len(units) >= attention.kv_heads:
        raise ValueError(
            f"Grouped-query attention loses whole key/value groups ({per_unit} query channels each, "
            f"{attention.kv_heads} groups), not query channels {sorted(q_channels)[:8]}..."
        )
    kv = [unit * size + offset for unit in units for offset in range(size)]
    tp.prune_linear_out_channels(attention.q, whole)
    tp.prune_linear_out_channels(attention.k, kv)
    tp.prune_linear_out_channels(attention.v, kv)
    tp.prune_linear_in_channels(attention.o, whole)
