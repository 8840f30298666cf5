"""Coupled neurons: which output units must go together, and which parameter entries they own.

Removing a neuron touches more than its own row: its bias, the matching BatchNorm entries, every
consumer's input columns (a conv filter feeding a ``Flatten`` owns ``H * W`` columns of the next
``Linear``), and, across a residual addition, the same channel of every branch. We do not trace
this by hand: Torch-Pruning's ``DependencyGraph`` traces one forward pass and returns *groups* of
coupled channels (:mod:`lightning_prune.coupling`, which also names the couplings refused outright).
A group is one unit of neuron pruning (:mod:`lightning_prune.unit_groups`); its score is the mean of
its member layers' scores.

Which entries of which parameters a set of removed units owns is read off by *index tracking*:
on a probe that shares the model's storage (its parameters swapped for ``meta`` stand-ins), the
removal is done for real by Torch-Pruning while every slicing op is recorded, and the indices kept
along each sliced dimension are exactly the entries to keep (:mod:`lightning_prune.survivors`).
Masking those entries is therefore, by construction, the same function as removing the units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lightning_prune.coupling import (
    CHANNEL_MIXING_NORMS,
    coupling_refusal,
    feeds_norm,
    is_channel_mixing_norm,
    norm_parameters,
    searched_groups,
    tied_modules,
)
from lightning_prune.hf_config import follow_configs, pretrained_signatures
from lightning_prune.layers import PrunableLayer, find_prunable_layers, forward_order, is_prunable
from lightning_prune.masks import Masks
from lightning_prune.surgery import build_graph, remove_units, surviving_entries
from lightning_prune.unit_groups import (
    UnitGroup,
    channel_units,
    first_called,
    group_members,
    head_units,
    keyed_by_first_member,
    kv_groups,
    kv_layers,
    touches_group_norm,
    touches_grouped_conv,
)
from lightning_prune.verification import verify_groups

#: Why the heads of an ``nn.MultiheadAttention`` are not units, and the way to make them units.
MHA_HEADS = ("its heads are not units: nn.MultiheadAttention keeps q, k and v in one in_proj_weight tied to embed_dim; "
             "lightning_prune.split_attention(model) replaces it by SplitMultiheadAttention (same outputs, q/k/v as "
             "separate Linear layers, so heads can be removed)")

__all__ = ["CHANNEL_MIXING_NORMS", "NeuronStructure", "UnitGroup", "is_channel_mixing_norm", "remove_zeroed_units"]


class NeuronStructure:
    """The neuron groups of a model and the parameter entries each unit owns.

    A group is pruned only when masking its units is, exactly, removing them: the masked model
    that a fit trains and judges must be the compact model it ends with. Groups where that cannot
    hold are *refused* (left unpruned, with the reason): channels that feed a channel-mixing norm
    (LayerNorm, RMSNorm, a GroupNorm of one group; kept as :attr:`inexact` groups with ``norm_coupled``, for a
    caller that removes them at the prune step) or a tied weight, channels that reach a grouped convolution
    re-ordered or in part, and, found by trying it, any other group whose masked and removed models
    differ on the example input or whose removal fails or leaves a layer inconsistent (a reshape or
    split the engine cannot follow).

    Args:
        model: The model, with the dense (unpruned) architecture.
        example_input: A batch the model accepts.
        layers: The prunable layers. Groups that include an output layer's units or a layer not in
            ``layers`` are left out.
        verify: Check every group by removing some of its units on a float32 copy (refusing the
            groups that fail). ``False`` skips the check and refuses the groups named in ``refused``.
        refused: Groups refused earlier (key to reason), e.g. by the verified structure of the dense
            model, to refuse again without re-checking.
        norm_coupled: Keep the groups whose channels feed a channel-mixing norm (their masks are not
            their removal: the caller removes them at the prune step); they are listed in
            :attr:`inexact` and verified only to be removable.

    Attributes:
        groups: The prunable groups, in the order Torch-Pruning's ``get_all_groups`` yields them
            (not forward order; look groups up by ``key``).
        refused: Group key (its member layer called first in forward order) to the reason it is not pruned.
        skipped: Layer name to the reason its units cannot be pruned, for every layer in ``layers``
            (other than the output layers) that is a member of no prunable group.
        sites: Layer name to the module whose output is the layer's pre-activation: the BatchNorm
            fed directly by the layer, if any, else the layer.
        inexact: Keys of the groups kept with ``norm_coupled`` (masking their units is not removing them).

    Raises:
        TraceError: If the model's forward pass fails while tracing it.
        UnsupportedModelError: If Torch-Pruning cannot build the model's dependency graph.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: Any,
        layers: Sequence[PrunableLayer],
        verify: bool = True,
        refused: Mapping[str, str] | None = None,
        norm_coupled: bool = False,
    ) -> None:
        self.example_input = example_input
        self.inexact: set[str] = set()
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
        tied = tied_modules(model)
        norm_params = norm_parameters(model) if norm_coupled else set()
        all_groups, unbounded = searched_groups(graph, kept_out + unselected)
        for module, reason in unbounded.items():
            self.refused[module_names[id(module)]] = reason
            grouped[module_names[id(module)]] = reason
        for group in kv_groups(modules, unbounded, names):
            self.groups.append(group)
            for name in kv_layers(group.key):
                self.refused.pop(name, None)
                grouped[name] = None
        for group in all_groups:
            root = group[0].dep.target.module
            if id(root) not in names:
                continue
            size = len(group[0].idxs)
            members = group_members(graph, group, names)
            members_by_name = dict(members) or {names[id(root)]: tuple(range(size))}
            key = first_called(members_by_name, order)
            unit_of, unit_reason = channel_units(group, size)
            reason = self.refused.get(key) or coupling_refusal(group, tied, module_names, norm_coupled) or unit_reason
            if unit_of is None and members:
                unit_of = head_units([name for name, _ in members], [parents.get(name) for name, _ in members], size)
            for name, _ in members:
                grouped[name] = reason if grouped.get(name, "") is not None else None
            if reason is not None:
                self.refused[key] = reason
            elif members:
                self.groups.append(keyed_by_first_member(members_by_name, unit_of, size, order, touches_grouped_conv(group),
                                                         touches_group_norm(group)))
                if norm_coupled and feeds_norm(group, norm_params):
                    self.inexact.add(key)
        if verify:
            for key, reason in verify_groups(model, example_input, self).items():
                self.refused[key] = reason
                grouped.update((name, reason) for name, _ in next(g for g in self.groups if g.key == key).members)
                self.groups = [g for g in self.groups if g.key != key]
                self.inexact.discard(key)
        self.skipped = _skipped(layers, grouped, set(order))
        self.sites = _sites(layers, graph)
        selected = [layer.name for layer in layers]
        for name, module in modules.items():  # heads whose q/k/v share one parameter: say what makes them units
            if isinstance(module, nn.MultiheadAttention):
                self.refused[name] = MHA_HEADS
                block = name.rpartition(".")[0]
                if not block or any(layer.startswith(block + ".") for layer in selected):  # in the selection's reach
                    self.skipped[name] = MHA_HEADS  # the fit's setup warning names it

    @property
    def floors(self) -> dict[str, int]:
        """Group key to the least number of units it keeps (see :attr:`UnitGroup.floor`)."""
        return {group.key: group.floor for group in self.groups}

    @property
    def sizes(self) -> dict[str, int]:
        """Group key to number of units."""
        return {group.key: group.size for group in self.groups}

    def group_scores(self, layer_scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Score each group's units: the mean over member layers and over the unit's channels of the layers' scores.

        Args:
            layer_scores: Member layer name to its per-channel scores (in the layer's channel order).

        Returns:
            Group key to one ``float64`` CPU score per unit.
        """
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

        Raises:
            UnsupportedModelError: If Torch-Pruning's removal is inconsistent (the model and
                optimizers are then put back as they were; see :func:`~lightning_prune.surgery.remove_units`).
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
            UnsupportedModelError: If Torch-Pruning's removal on the probe is inconsistent (the model
                is never changed).
        """
        params = dict(model.named_parameters())
        survivors = surviving_entries(model, self.example_input, self.removal(keep))
        # buffers (running statistics) are left out: masking the parameters suffices
        return {name: kept.mask() for name, kept in survivors.items() if name in params}


def _skipped(layers: Sequence[PrunableLayer], grouped: Mapping[str, str | None], called: set[str]) -> dict[str, str]:
    """Layer name to why its units are not pruned, for each non-output layer in no prunable group."""
    skipped = {}
    for layer in layers:
        if layer.is_output or grouped.get(layer.name, "") is None:
            continue
        if layer.name not in called:
            skipped[layer.name] = "it is never called by the model's forward pass"
        elif grouped.get(layer.name):
            skipped[layer.name] = grouped[layer.name]
        else:
            skipped[layer.name] = "its output channels are coupled to an output layer or to a layer not selected"
    return skipped


def _sites(layers: Sequence[PrunableLayer], graph: Any) -> dict[str, nn.Module]:
    """Layer name to its pre-activation module: the BatchNorm it alone feeds, else the layer itself."""
    sites = {}
    for layer in layers:
        node = graph.module2node.get(layer.module)
        outputs = node.outputs if node else []
        followers = [out.module for out in outputs if isinstance(out.module, nn.modules.batchnorm._BatchNorm)]
        sites[layer.name] = followers[0] if len(outputs) == 1 and followers else layer.module
    return sites


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

    Raises:
        TraceError: If the model's forward pass fails while tracing it.
        UnsupportedModelError: If Torch-Pruning cannot trace the model or removes units inconsistently
            (the model and optimizers are then as they were).
    """
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
        signatures = pretrained_signatures(model)
        remove_units(model, example_input, removal, optimizers)
        follow_configs(model, signatures)  # Hugging Face width fields, as after a fit's own removal
    return removal
