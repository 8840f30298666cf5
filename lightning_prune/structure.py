"""Coupled neurons: which output units must go together, and which parameter entries they own.

Removing a neuron touches more than its own row: its bias, the matching BatchNorm entries, every
consumer's input columns (a conv filter feeding a ``Flatten`` owns ``H * W`` columns of the next
``Linear``), and, across a residual addition, the same channel of every branch. We do not trace
this by hand: Torch-Pruning's ``DependencyGraph`` traces one forward pass and returns *groups* of
coupled channels. A group is one unit of neuron pruning; its score is the mean of its member
layers' scores.

Which entries of which parameters a set of removed units owns is read off by *index tracking*:
on a probe that shares the model's storage (its parameters swapped for ``meta`` stand-ins), the
removal is done for real by Torch-Pruning while every slicing op is recorded, and the indices kept
along each sliced dimension are exactly the entries to keep (:mod:`lightning_prune.survivors`).
Masking those entries is therefore, by construction, the same function as removing the units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import math
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from lightning_prune.layers import PRUNABLE_TYPES, PrunableLayer, forward_order, is_prunable
from lightning_prune.masks import Masks
from lightning_prune.attention import attention_heads, kv_group_attention
from lightning_prune.surgery import (
    UnsupportedModelError,
    bounded_group_search,
    build_graph,
    remove_units,
    surviving_entries,
)
from lightning_prune.verification import verify_groups


#: Norm layers that mix channels: zeroing a channel that feeds one is not removing it (the zero
#: still enters the mean and variance). Matched by type, or by class name for the many copies
#: (timm's ``LayerNorm2d`` subclasses ``nn.LayerNorm``; Hugging Face's ``LlamaRMSNorm`` does not).
CHANNEL_MIXING_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_NORM_NAMES = ("LayerNorm", "RMSNorm", "GroupNorm", "LayerNorm2d", "LayerNormChannel")


def is_channel_mixing_norm(module: Any) -> bool:
    """Whether ``module`` normalises over channels (LayerNorm, RMSNorm, GroupNorm and their copies)."""
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return False
    return isinstance(module, CHANNEL_MIXING_NORMS) or type(module).__name__.endswith(_NORM_NAMES)


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
    """

    key: str
    size: int
    members: tuple[tuple[str, tuple[int, ...]], ...]
    unit_of: tuple[int, ...] | None = None
    grouped_conv: bool = False

    @property
    def floor(self) -> int:
        """Units the group always keeps: two when it touches a grouped or depthwise conv, else one.

        The engine tells a depthwise conv by ``groups == out_channels > 1``: a depthwise conv cut to
        one channel, or a grouped conv cut to one channel per group, would change kind under it and
        the next trace would couple other channels.
        """
        return min(self.size, 2) if self.grouped_conv else 1

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


def _keyed_by_first_member(
    members: Mapping[str, tuple[int, ...]],
    unit_of: tuple[int, ...] | None,
    channels: int,
    order: Mapping[str, int],
    grouped_conv: bool,
) -> UnitGroup:
    """A group named after its member called first in forward order, in that member's channel order.

    Torch-Pruning names a group after whichever layer it met first in its own bookkeeping, which can
    change when the model is re-traced after a removal; the first member in forward order does not.
    """
    key = min(members, key=lambda name: (order.get(name, len(order)), name))
    to_root = {channel: root for root, channel in enumerate(members[key])}  # key's channel -> root channel
    roots = [to_root[channel] for channel in range(channels)]
    aligned = {name: tuple(permutation[root] for root in roots) for name, permutation in members.items()}
    units = None if unit_of is None else tuple(unit_of[root] for root in roots)
    return UnitGroup(key, channels if units is None else max(units) + 1, tuple(aligned.items()), units, grouped_conv)


def _head_units(parents: Sequence[nn.Module | None], channels: int) -> tuple[int, ...] | None:
    """Whole attention heads as units, when every member layer is a q/k/v projection of one attention module.

    A head owns ``head_dim`` consecutive channels of each projection (of each third of a fused
    ``qkv``); masking a head's rows (weights and bias) of q, k and v zeroes its output exactly, and
    removing them removes the head (the module's head count is updated by the surgery).
    """
    parent = parents[0] if parents else None
    heads = attention_heads(parent) if parent is not None and all(p is parent for p in parents) else None
    if heads is None:
        return None
    _, count, size = heads
    if channels not in (count * size, 3 * count * size):
        return None
    return tuple((channel % (count * size)) // size for channel in range(channels))


def _tied_positions(group: Any, channels: int) -> tuple[tuple[int, ...] | None, str | None]:
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
        plain = [int(i) for i in tp._helpers.to_plain_idxs(item.idxs)]
        roots = [int(i) for i in tp._helpers.to_root_idxs(item.idxs)]
        if plain != roots or len(plain) != channels:
            return None, f"its channels reach the grouped convolution {type(module).__name__}(groups={module.groups}) re-ordered or in part"
        blocks = math.lcm(blocks, module.groups)
    if blocks == 1:
        return None, None
    if channels % blocks:
        return None, f"its {channels} channels do not split into the {blocks} groups of a grouped convolution"
    period = channels // blocks
    return tuple(channel % period for channel in range(channels)), None


def _searched_groups(graph: tp.DependencyGraph, ignored: Sequence[nn.Module]) -> tuple[list[Any], dict[nn.Module, str]]:
    """Every group Torch-Pruning finds from a prunable root layer's output channels, one search per
    root, and the roots whose search grows without bound (with the reason).

    Torch-Pruning's ``get_all_groups`` does the same walk but lets one unbounded search hang (or, with
    :func:`~lightning_prune.surgery.bounded_group_search`, fail) the whole model; here only that root
    is refused: on HF LLaMA the residual stream's search explodes while the FFN groups are ordinary.
    A group that contains an ignored layer's output channels (an output layer, a layer not selected)
    is left out, as Torch-Pruning does.
    """
    ignored_ids = {id(module) for module in [*ignored, *graph.IGNORED_LAYERS_IN_TRACING]}
    visited: set[int] = set()
    groups, unbounded = [], {}
    for module in list(graph.module2node):
        if id(module) in ignored_ids or id(module) in visited or not isinstance(module, tuple(PRUNABLE_TYPES.values())):
            continue
        pruner = graph.get_pruner_of_module(module)
        channels = pruner.get_out_channels(module) if pruner is not None else None
        if channels is None:
            continue
        try:
            with bounded_group_search(graph):
                group = graph.get_pruning_group(module, pruner.prune_out_channels, list(range(channels)))
        except UnsupportedModelError as error:
            visited.add(id(module))
            unbounded[module] = str(error).split(". ")[0].replace("on this model ", "from this layer ")
            continue
        outs = [item.dep.target.module for item in group if graph.is_out_channel_pruning_fn(item.dep.handler)]
        visited.update(id(out) for out in outs)
        if not any(id(out) in ignored_ids for out in outs):
            groups.append(group)
    return groups, unbounded


def _tied_modules(model: nn.Module) -> dict[int, str]:
    """``id(module)`` to the name of another module sharing one of its parameters (tied weights)."""
    owners: dict[int, list[tuple[int, str]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for param in module.parameters(recurse=False):
            owners.setdefault(id(param), []).append((id(module), name))
    tied = {}
    for sharing in owners.values():
        if len({module for module, _ in sharing}) > 1:
            for module, _ in sharing:
                tied[module] = next(name for other, name in sharing if other != module)
    return tied


def _kv_layers(q_name: str) -> list[str]:
    parent = q_name.rpartition(".")[0]
    return [f"{parent}.{name}" for name in ("q_proj", "k_proj", "v_proj")]


def _kv_groups(modules: Mapping[str, nn.Module], unbounded: Mapping[nn.Module, str], names: Mapping[int, str]) -> list[UnitGroup]:
    """Groups of grouped-query attention modules (HF LLaMA), where Torch-Pruning's search from the
    q/k/v projections grows without bound: one unit per key/value group, scored by its query
    channels, removed by :func:`~lightning_prune.attention.remove_kv_groups`."""
    found = []
    searched = {id(module) for module in unbounded}
    for name, module in modules.items():
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


class NeuronStructure:
    """The neuron groups of a model and the parameter entries each unit owns.

    A group is pruned only when masking its units is, exactly, removing them: the masked model
    that a fit trains and judges must be the compact model it ends with. Groups where that cannot
    hold are *refused* (left unpruned, with the reason): channels that feed a channel-mixing norm
    (LayerNorm, RMSNorm, GroupNorm), channels that reach a grouped convolution re-ordered or in
    part, and, found by trying it, any other group whose masked and removed models differ on the
    example input or whose removal fails (a reshape or split the engine cannot follow).

    Args:
        model: The model, with the dense (unpruned) architecture.
        example_input: A batch the model accepts.
        layers: The prunable layers. Groups that include an output layer's units or a layer not in
            ``layers`` are left out.
        verify: Check every group by removing some of its units on a float32 copy (refusing the
            groups that fail). ``False`` skips the check and refuses the groups named in ``refused``.
        refused: Groups refused earlier (key to reason), e.g. by the verified structure of the dense
            model, to refuse again without re-checking.

    Attributes:
        groups: The prunable groups, in the order Torch-Pruning's ``get_all_groups`` yields them
            (not forward order; look groups up by ``key``).
        refused: Group key (its member layer called first in forward order) to the reason it is not pruned.
        skipped: Layer name to the reason its units cannot be pruned, for every layer in ``layers``
            (other than the output layers) that is a member of no prunable group.
        sites: Layer name to the module whose output is the layer's pre-activation: the BatchNorm
            fed directly by the layer, if any, else the layer.

    Raises:
        TraceError: If the model's forward pass fails while tracing it.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: Any,
        layers: Sequence[PrunableLayer],
        verify: bool = True,
        refused: Mapping[str, str] | None = None,
    ) -> None:
        self.example_input = example_input
        names = {id(layer.module): layer.name for layer in layers}
        module_names = {id(module): name for name, module in model.named_modules()}
        kept_out = [layer.module for layer in layers if layer.is_output]
        unselected = [module for module in model.modules() if is_prunable(module) and id(module) not in names]
        graph = build_graph(model, example_input)
        order = {name: index for index, name in enumerate(forward_order(model, example_input))}
        modules = dict(model.named_modules())
        parents = {layer.name: modules.get(layer.name.rpartition(".")[0]) for layer in layers}
        self.groups: list[UnitGroup] = []
        self.refused: dict[str, str] = dict(refused or {})
        grouped: dict[str, str | None] = {}  # member layer -> reason its group is refused (None: pruned)
        tied = _tied_modules(model)
        all_groups, unbounded = _searched_groups(graph, kept_out + unselected)
        for module, reason in unbounded.items():
            self.refused[module_names[id(module)]] = reason
            grouped[module_names[id(module)]] = reason
        for group in _kv_groups(modules, unbounded, names):
            self.groups.append(group)
            for name in _kv_layers(group.key):
                self.refused.pop(name, None)
                grouped[name] = None
        for group in all_groups:
            root = group[0].dep.target.module
            if id(root) not in names:
                continue
            size = len(group[0].idxs)
            members = []
            for item in group:
                module = item.dep.target.module
                if id(module) in names and graph.is_out_channel_pruning_fn(item.dep.handler):
                    plain = [int(i) for i in tp._helpers.to_plain_idxs(item.idxs)]
                    roots = [int(i) for i in tp._helpers.to_root_idxs(item.idxs)]
                    if len(plain) != size or sorted(roots) != list(range(size)):
                        continue
                    members.append((names[id(module)], tuple(plain[roots.index(r)] for r in range(size))))
            members_by_name = dict(members) or {names[id(root)]: tuple(range(size))}
            key = min(members_by_name, key=lambda name: (order.get(name, len(order)), name))
            reason = self.refused.get(key)
            for item in group:
                module = item.dep.target.module
                if reason is None and id(module) in tied:
                    reason = (f"its channels reach {module_names.get(id(module), '?')!r}, whose weight is tied to "
                              f"{tied[id(module)]!r} (one shared tensor): removing them would break the tie")
                if reason is None and is_channel_mixing_norm(module):
                    reason = (f"its channels feed the channel-mixing norm {module_names.get(id(module), '?')!r} "
                              f"({type(module).__name__}), where a zeroed channel is not a removed one")
            unit_of, tie_reason = _tied_positions(group, size)
            reason = reason or tie_reason
            if unit_of is None and members:
                unit_of = _head_units([parents.get(name) for name, _ in members], size)
            for name, _ in members:
                grouped[name] = reason if grouped.get(name, "") is not None else None
            if reason is not None:
                self.refused[key] = reason
            elif members:
                grouped_conv = any(isinstance(item.dep.target.module, nn.modules.conv._ConvNd)
                                   and item.dep.target.module.groups > 1 for item in group)
                self.groups.append(_keyed_by_first_member(members_by_name, unit_of, size, order, grouped_conv))
        if verify:
            for key, reason in verify_groups(model, example_input, self).items():
                self.refused[key] = reason
                refused_members = dict(next(g for g in self.groups if g.key == key).members)
                for name in refused_members:
                    grouped[name] = reason
                self.groups = [g for g in self.groups if g.key != key]
        called = set(order)
        self.skipped: dict[str, str] = {}
        for layer in layers:
            if layer.is_output or grouped.get(layer.name, "") is None:
                continue
            if layer.name not in called:
                self.skipped[layer.name] = "it is never called by the model's forward pass"
            elif grouped.get(layer.name):
                self.skipped[layer.name] = grouped[layer.name]
            else:
                self.skipped[layer.name] = "its output channels are coupled to an output layer or to a layer not selected"
        self.sites = {}
        for layer in layers:
            node = graph.module2node.get(layer.module)
            followers = [out.module for out in (node.outputs if node else []) if isinstance(out.module, nn.modules.batchnorm._BatchNorm)]
            self.sites[layer.name] = followers[0] if len(node.outputs if node else []) == 1 and followers else layer.module

    @property
    def floors(self) -> dict[str, int]:
        """Group key to the least number of units it keeps (see :attr:`UnitGroup.floor`)."""
        return {group.key: group.floor for group in self.groups}

    @property
    def sizes(self) -> dict[str, int]:
        """Group key to number of units."""
        return {group.key: group.size for group in self.groups}

    def group_scores(self, layer_scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Score each group's units: the mean over member layers and over the unit's channels of the
        layers' per-channel scores."""
        result = {}
        for group in self.groups:
            aligned = [layer_scores[name].flatten()[list(order)].double().cpu() for name, order in group.members]
            result[group.key] = group.unit_scores(torch.stack(aligned).mean(dim=0))
        return result

    def removal(self, keep: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
        """The channel indices (root layer's output units) each group drops under unit keep-masks ``keep``."""
        return {
            group.key: (~group.channel_keep(keep[group.key].cpu())).nonzero().flatten().tolist() for group in self.groups
        }

    def remove_units(
        self, model: nn.Module, keep: Mapping[str, torch.Tensor], optimizers: Sequence[torch.optim.Optimizer] = ()
    ) -> None:
        """Physically remove the units not kept, in place, carrying the optimizers over.

        Args:
            model: The model this structure was built on (same architecture).
            keep: Group key to a ``bool`` keep-mask over the group's current units.
            optimizers: Optimizers whose parameters and state move to the compact parameters.
        """
        remove_units(model, self.example_input, self.removal(keep), optimizers)

    def parameter_masks(self, model: nn.Module, keep: Mapping[str, torch.Tensor]) -> Masks:
        """Keep-masks of every parameter entry that the removed units own.

        Args:
            model: The model this structure was built on.
            keep: Group key to a ``bool`` keep-mask over its units.

        Returns:
            Parameter name to keep-mask (``bool``, on the CPU), for every parameter with at least one
            removed entry. Extra memory besides the masks: O(units) (see
            :func:`~lightning_prune.surgery.surviving_entries`).

        Raises:
            UnexplainedRemovalError: If the entries a parameter keeps cannot be told.
        """
        params = dict(model.named_parameters())
        survivors = surviving_entries(model, self.example_input, self.removal(keep))
        # buffers (running statistics) are left out: masking the parameters suffices
        return {name: kept.mask() for name, kept in survivors.items() if name in params}


def remove_zeroed_units(
    model: nn.Module, example_input: Any, optimizers: Sequence[torch.optim.Optimizer] = ()
) -> dict[str, list[int]]:
    """Physically remove the neurons whose every owned entry is already zero.

    For a model whose pruned neurons are masked rather than removed (e.g. the dense-shaped weights
    a ``ddp_spawn`` fit returns to the main process). A neuron is removed only if its rows in every
    member layer are zero *and* every other entry its removal would drop (bias, BatchNorm entries,
    consumers' input columns) is zero too, so the model computes exactly the same function.
    Each group keeps at least one unit.

    Args:
        model: The model (changed in place).
        example_input: A batch the model accepts.
        optimizers: Optimizers to carry over to the compact parameters.

    Returns:
        The removal done (group key to unit indices), a step of a plan.
    """
    from lightning_prune.layers import find_prunable_layers

    structure = NeuronStructure(model, example_input, find_prunable_layers(model, example_input))
    params = dict(model.named_parameters())
    modules = dict(model.named_modules())
    removal: dict[str, list[int]] = {}
    for group in structure.groups:
        zero_channels = torch.ones(group.channels, dtype=torch.bool)
        for name, order in group.members:
            rows = PrunableLayer(name, modules[name]).unit_weight.detach().flatten(1).abs().sum(dim=1).cpu() == 0
            zero_channels &= rows[list(order)]
        zero = zero_channels if group.unit_of is None else group.unit_scores(zero_channels.double()) == 1.0
        if zero.all():
            zero[0] = False  # never empty a group
        if not zero.any():
            continue
        keep = {key: torch.ones(size, dtype=torch.bool) for key, size in structure.sizes.items()}
        keep[group.key] = ~zero
        dropped = structure.parameter_masks(model, keep)
        if all(not params[name].detach()[~mask.to(params[name].device)].any() for name, mask in dropped.items()):
            removal[group.key] = structure.removal(keep)[group.key]
    if removal:
        remove_units(model, example_input, removal, optimizers)
    return removal
