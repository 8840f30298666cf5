"""Units of a neuron group: which channels go together, in whose order, under which name.

A Torch-Pruning group lists coupled channels; pruning needs *units*: usually one channel each, the
same position in every block of a grouped convolution, a whole attention head, or a key/value group
of a grouped-query attention. :class:`UnitGroup` holds a group's units, and the functions here
build one from a Torch-Pruning group (named after its member called first in forward order, so
the name survives a re-trace).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
import math
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from lightning_prune.attention import QKV_NAMES, attention_heads, kv_group_attention


@dataclass(frozen=True)
class UnitGroup:
    """Channels of one or more layers that are pruned together, partitioned into units.

    A unit is usually one channel. In a group that feeds or leaves a grouped convolution with ``G``
    groups, a unit is the same position in every one of the ``G`` channel blocks (removing it keeps
    every conv group the same size, which is what the conv needs and what Torch-Pruning assumes).

    Attributes:
        key: The name of the group's root layer (used as the group's name).
        size: Number of units in the group.
        members: For each member layer (whose output channels are the group's channels), its name and
            the permutation taking the member's channel order to the root's.
        unit_of: For each channel (root order), the index of its unit; ``None`` when every channel is
            its own unit.
        grouped_conv: Whether the group touches a grouped (or depthwise) convolution.
        group_norm: Whether its units are the groups of a GroupNorm (:func:`group_norm_units`).
    """

    key: str
    size: int
    members: tuple[tuple[str, tuple[int, ...]], ...]
    unit_of: tuple[int, ...] | None = None
    grouped_conv: bool = False
    group_norm: bool = False

    @property
    def floor(self) -> int:
        """Units the group always keeps: two when it touches a grouped or depthwise conv or its units
        are GroupNorm groups, else one.

        The engine tells a depthwise conv by ``groups == out_channels > 1``: a depthwise conv cut to
        one channel, or a grouped conv cut to one channel per group, would change kind under it and
        the next trace would couple other channels. A GroupNorm cut to one group would normalise
        over all of its channels, as LayerNorm does, and its channels would be refused next time.
        """
        return min(self.size, 2) if self.grouped_conv or self.group_norm else 1

    @property
    def channels(self) -> int:
        """Number of channels (output units of the root layer)."""
        return self.size if self.unit_of is None else len(self.unit_of)

    def channel_keep(self, keep: torch.Tensor) -> torch.Tensor:
        """A keep-mask over units expanded to the group's channels."""
        return keep if self.unit_of is None else keep[torch.tensor(self.unit_of)]

    def unit_scores(self, channel_scores: torch.Tensor) -> torch.Tensor:
        """Per-unit scores: the mean of the unit's channel scores."""
        if self.unit_of is None:
            return channel_scores
        index = torch.tensor(self.unit_of)
        totals = torch.zeros(self.size, dtype=channel_scores.dtype).index_add_(0, index, channel_scores.cpu())
        return totals / torch.bincount(index, minlength=self.size).to(channel_scores.dtype)


def first_called(names: Iterable[str], order: Mapping[str, int]) -> str:
    """The name called first in forward order (``order``: name to position; names never called last, by name).

    Torch-Pruning names a group after whichever layer it met first in its own bookkeeping, which can
    change when the model is re-traced after a removal; the first member in forward order does not.
    """
    return min(names, key=lambda name: (order.get(name, len(order)), name))


def _indices(item: Any) -> tuple[list[int], list[int]]:
    """A group item's channel indices in its own layer, and the root channel each one comes from."""
    return ([int(i) for i in tp._helpers.to_plain_idxs(item.idxs)],
            [int(i) for i in tp._helpers.to_root_idxs(item.idxs)])


def group_members(graph: tp.DependencyGraph, group: Any, names: Mapping[int, str]) -> list[tuple[str, tuple[int, ...]]]:
    """The selected layers whose output channels are the group's channels, each with its channel order.

    Args:
        graph: The dependency graph the group comes from.
        group: A Torch-Pruning group over all of its root's output channels.
        names: ``id(module)`` to layer name, for the selected prunable layers.

    Returns:
        ``(name, permutation)`` per member, the permutation taking the member's channel order to the
        root's. A member that holds only part of the channels, or some more than once, is left out.
    """
    size = len(group[0].idxs)
    members = []
    for item in group:
        module = item.dep.target.module
        if id(module) in names and graph.is_out_channel_pruning_fn(item.dep.handler):
            plain, roots = _indices(item)
            if len(plain) != size or sorted(roots) != list(range(size)):
                continue
            members.append((names[id(module)], tuple(plain[roots.index(r)] for r in range(size))))
    return members


def keyed_by_first_member(
    members: Mapping[str, tuple[int, ...]],
    unit_of: tuple[int, ...] | None,
    channels: int,
    order: Mapping[str, int],
    grouped_conv: bool,
    group_norm: bool = False,
) -> UnitGroup:
    """A group named after its member called first in forward order, in that member's channel order.

    Args:
        members: Member layer name to the permutation taking its channel order to the root's.
        unit_of: The unit of each channel in the root's order, or ``None`` (one channel per unit).
        channels: Number of channels in the group.
        order: Layer name to its position in forward order (see :func:`first_called`).
        grouped_conv: Whether the group touches a grouped convolution.
        group_norm: Whether the units are a GroupNorm's groups.

    Returns:
        The group, keyed and ordered by its first member called.
    """
    key = first_called(members, order)
    to_root = {channel: root for root, channel in enumerate(members[key])}  # key's channel -> root channel
    roots = [to_root[channel] for channel in range(channels)]
    aligned = {name: tuple(permutation[root] for root in roots) for name, permutation in members.items()}
    units = None if unit_of is None else tuple(unit_of[root] for root in roots)
    return UnitGroup(key, channels if units is None else max(units) + 1, tuple(aligned.items()), units, grouped_conv,
                     group_norm)


def head_units(members: Sequence[str], parents: Sequence[nn.Module | None], channels: int) -> tuple[int, ...] | None:
    """Whole attention heads as units, when every member layer is a q/k/v projection of one attention module.

    A head owns ``head_dim`` consecutive channels of each projection (of each third of a fused
    ``qkv``); masking a head's rows (weights and bias) of q, k and v zeroes its output exactly, and
    removing them removes the head (the module's head count is updated by the surgery). The output
    projection's channels are not heads (they are the model's width), even where they number
    ``heads * head_dim``.

    Args:
        members: The member layers' names.
        parents: Each member's parent module.
        channels: Number of channels in the group.

    Returns:
        The head of each channel, or ``None`` when the members are not one attention's projections.
    """
    parent = parents[0] if parents else None
    projections = all(name.rpartition(".")[2] in QKV_NAMES for name in members)
    heads = attention_heads(parent) if projections and parent is not None and all(p is parent for p in parents) else None
    if heads is None:
        return None
    _, count, size = heads
    if channels not in (count * size, 3 * count * size):
        return None
    return tuple((channel % (count * size)) // size for channel in range(channels))


def grouped_conv_units(group: Any, channels: int) -> tuple[tuple[int, ...] | None, str | None]:
    """The unit of each channel when the group touches grouped convolutions, or why it cannot be pruned.

    Returns:
        ``(unit_of, None)`` (``unit_of`` is ``None`` when no grouped conv is involved) or
        ``(None, reason)``.
    """
    blocks = 1
    for item in group:
        module = item.dep.target.module
        if not isinstance(module, nn.modules.conv._ConvNd) or module.groups == 1:
            continue
        if module.groups == module.in_channels == module.out_channels:
            continue  # depthwise: every channel is its own conv group, any subset can go
        plain, roots = _indices(item)
        if plain != roots or len(plain) != channels:
            return None, f"its channels reach the grouped convolution {type(module).__name__}(groups={module.groups}) re-ordered or in part"
        blocks = math.lcm(blocks, module.groups)
    if blocks == 1:
        return None, None
    if channels % blocks:
        return None, f"its {channels} channels do not split into the {blocks} groups of a grouped convolution"
    period = channels // blocks
    return tuple(channel % period for channel in range(channels)), None


def group_norm_units(group: Any, channels: int) -> tuple[tuple[int, ...] | None, str | None]:
    """Whole GroupNorm groups as units, when the group's channels feed a GroupNorm of several groups.

    GroupNorm normalises each of its groups over that group's channels only. Masking every channel
    of one group (the layers' rows, the norm's weight and bias) makes that group's output exactly
    zero, as removing it does; masking part of a group would change the rest of the group's
    statistics. So a unit is one group: ``channels // num_groups`` consecutive channels.

    Returns:
        ``(unit_of, None)`` (``unit_of`` is ``None`` when no such GroupNorm is involved) or
        ``(None, reason)``.
    """
    counts = set()
    for item in group:
        module = item.dep.target.module
        if not isinstance(module, nn.GroupNorm) or module.num_groups == 1:
            continue
        plain, roots = _indices(item)
        if plain != roots or len(plain) != channels or module.num_channels != channels:
            return None, f"its channels reach the GroupNorm(num_groups={module.num_groups}) re-ordered or in part"
        counts.add(module.num_groups)
    if not counts:
        return None, None
    if len(counts) > 1:
        return None, f"its channels reach GroupNorms of {sorted(counts)} groups, whose groups are not the same channels"
    period = channels // counts.pop()
    return tuple(channel // period for channel in range(channels)), None


def channel_units(group: Any, channels: int) -> tuple[tuple[int, ...] | None, str | None]:
    """The unit of each channel, from the grouped convolutions or the GroupNorm the group reaches.

    Returns:
        ``(unit_of, None)`` (``unit_of`` is ``None`` when neither is involved: one channel per unit,
        or attention heads) or ``(None, reason)``, also when both are involved (their units differ).
    """
    conv_units, conv_reason = grouped_conv_units(group, channels)
    norm_units, norm_reason = group_norm_units(group, channels)
    if conv_reason or norm_reason:
        return None, conv_reason or norm_reason
    if conv_units is not None and norm_units is not None:
        return None, "its channels reach both a grouped convolution and a GroupNorm, whose units differ"
    return (norm_units if norm_units is not None else conv_units), None


def touches_group_norm(group: Any) -> bool:
    """Whether a Torch-Pruning group reaches a GroupNorm of several groups (its units are whole groups)."""
    return any(isinstance(item.dep.target.module, nn.GroupNorm) and item.dep.target.module.num_groups > 1
               for item in group)


def touches_grouped_conv(group: Any) -> bool:
    """Whether a Torch-Pruning group reaches a convolution with ``groups > 1`` (see :attr:`UnitGroup.floor`)."""
    return any(isinstance(item.dep.target.module, nn.modules.conv._ConvNd) and item.dep.target.module.groups > 1
               for item in group)


def kv_layers(q_name: str) -> list[str]:
    """The q/k/v projection names next to the query projection ``q_name`` (Hugging Face's naming)."""
    parent = q_name.rpartition(".")[0]
    return [f"{parent}.{name}" for name in ("q_proj", "k_proj", "v_proj")]


def kv_groups(modules: Mapping[str, nn.Module], unbounded: Mapping[nn.Module, str], names: Mapping[int, str]) -> list[UnitGroup]:
    """Groups of grouped-query attention modules (HF LLaMA), where Torch-Pruning's search from the
    q/k/v projections grows without bound.

    One unit per key/value group, scored by its query channels, removed by
    :func:`~lightning_prune.attention.remove_kv_groups`.

    Args:
        modules: The model's modules by name.
        unbounded: Root layers whose search grew without bound (see
            :func:`~lightning_prune.coupling.searched_groups`).
        names: ``id(module)`` to layer name, for the selected prunable layers.
    """
    found = []
    searched = {id(module) for module in unbounded}
    for module in modules.values():
        attention = kv_group_attention(module)
        if attention is None or not all(id(p) in searched for p in (attention.q, attention.k, attention.v)):
            continue
        if id(attention.o) not in names:  # an output projection the user did not select, or an output layer
            continue
        q_name = names[id(attention.q)]
        channels = attention.q.out_features
        unit_of = tuple(channel // attention.channels_per_unit for channel in range(channels))
        found.append(UnitGroup(q_name, attention.kv_heads, ((q_name, tuple(range(channels))),), unit_of, False))
    return found
