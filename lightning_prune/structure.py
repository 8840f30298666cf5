"""Coupled neurons: which output units must go together, and which parameter entries they own.

Removing a neuron touches more than its own row: its bias, the matching BatchNorm entries, every
consumer's input columns (a conv filter feeding a ``Flatten`` owns ``H * W`` columns of the next
``Linear``), and, across a residual addition, the same channel of every branch. We do not trace
this by hand: Torch-Pruning's ``DependencyGraph`` traces one forward pass and returns *groups* of
coupled channels. A group is one unit of neuron pruning; its score is the mean of its member
layers' scores.

Which entries of which parameters a set of removed units owns is read off by *index tracking*:
on a float64 copy of the model whose parameters hold their own flat indices, the removal is done
for real by Torch-Pruning, and the indices that survive are exactly the entries to keep. Masking
those entries is therefore, by construction, the same function as removing the units.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from lightning_prune.layers import PRUNABLE_TYPES, PrunableLayer
from lightning_prune.masks import Masks
from lightning_prune.surgery import build_graph, remove_units, surviving_entries


@dataclass(frozen=True)
class UnitGroup:
    """Channels of one or more layers that are pruned together.

    Attributes:
        key: The name of the group's root layer (used as the group's name).
        size: Number of units (channels) in the group.
        members: For each member layer (whose output units are the group's units), its name and the
            permutation taking the member's unit order to the root's.
    """

    key: str
    size: int
    members: tuple[tuple[str, tuple[int, ...]], ...]


class NeuronStructure:
    """The neuron groups of a model and the parameter entries each unit owns.

    Args:
        model: The model, with the dense (unpruned) architecture.
        example_input: A batch the model accepts.
        layers: The prunable layers. Groups that include the output layer's units or a layer not in
            ``layers`` are left out.

    Attributes:
        groups: The prunable groups, in the order Torch-Pruning's ``get_all_groups`` yields them
            (not forward order; look groups up by ``key``).
        skipped: Names of layers in ``layers`` (other than the output layer) that belong to no
            prunable group, so their units cannot be pruned.
        sites: Layer name to the module whose output is the layer's pre-activation: the BatchNorm
            fed directly by the layer, if any, else the layer.
    """

    def __init__(self, model: nn.Module, example_input: Any, layers: Sequence[PrunableLayer]) -> None:
        self.example_input = example_input
        names = {id(layer.module): layer.name for layer in layers}
        kept_out = [layer.module for layer in layers if layer.is_output]
        unselected = [
            module for module in model.modules() if type(module) in PRUNABLE_TYPES.values() and id(module) not in names
        ]
        graph = build_graph(model, example_input)
        self.groups: list[UnitGroup] = []
        grouped: set[str] = set()
        for group in graph.get_all_groups(ignored_layers=kept_out + unselected, root_module_types=tuple(PRUNABLE_TYPES.values())):
            root = group[0].dep.target.module
            size = len(group[0].idxs)
            members = []
            for item in group:
                module = item.dep.target.module
                if id(module) in names and graph.is_out_channel_pruning_fn(item.dep.handler):
                    plain = [int(i) for i in tp._helpers.to_plain_idxs(item.idxs)]
                    roots = [int(i) for i in tp._helpers.to_root_idxs(item.idxs)]
                    if len(plain) != size or sorted(roots) != list(range(size)):
                        continue
                    order = [plain[roots.index(r)] for r in range(size)]
                    members.append((names[id(module)], tuple(order)))
                    grouped.add(names[id(module)])
            if members:
                self.groups.append(UnitGroup(names[id(root)], size, tuple(dict(members).items())))
        self.skipped = [layer.name for layer in layers if not layer.is_output and layer.name not in grouped]
        self.sites = {}
        for layer in layers:
            node = graph.module2node.get(layer.module)
            followers = [out.module for out in (node.outputs if node else []) if isinstance(out.module, nn.modules.batchnorm._BatchNorm)]
            self.sites[layer.name] = followers[0] if len(node.outputs if node else []) == 1 and followers else layer.module

    @property
    def sizes(self) -> dict[str, int]:
        """Group key to number of units."""
        return {group.key: group.size for group in self.groups}

    def group_scores(self, layer_scores: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Score each group's units by the mean of its member layers' unit scores."""
        result = {}
        for group in self.groups:
            aligned = [layer_scores[name].flatten()[list(order)].double() for name, order in group.members]
            result[group.key] = torch.stack(aligned).mean(dim=0)
        return result

    def removal(self, keep: Mapping[str, torch.Tensor]) -> dict[str, list[int]]:
        """The unit indices each group drops under ``keep``."""
        return {group.key: (~keep[group.key].cpu()).nonzero().flatten().tolist() for group in self.groups}

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
            Parameter name to keep-mask, for every parameter with at least one removed entry.
        """
        params = dict(model.named_parameters())
        masks = {}
        for name, indices in surviving_entries(model, self.example_input, self.removal(keep)).items():
            if name not in params:  # a buffer (running statistics): masking the parameters suffices
                continue
            mask = torch.zeros(params[name].numel(), dtype=torch.bool)
            mask[indices] = True
            masks[name] = mask.reshape(params[name].shape)
        return masks


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
    removal: dict[str, list[int]] = {}
    for group in structure.groups:
        zero = torch.ones(group.size, dtype=torch.bool)
        for name, order in group.members:
            rows = params[f"{name}.weight"].detach().flatten(1).abs().sum(dim=1).cpu() == 0
            zero &= rows[list(order)]
        if zero.all():
            zero[0] = False  # never empty a group
        if not zero.any():
            continue
        keep = {key: torch.ones(size, dtype=torch.bool) for key, size in structure.sizes.items()}
        keep[group.key] = ~zero
        dropped = structure.parameter_masks(model, keep)
        if all(not params[name].detach()[~mask.to(params[name].device)].any() for name, mask in dropped.items()):
            removal[group.key] = zero.nonzero().flatten().tolist()
    if removal:
        remove_units(model, example_input, removal, optimizers)
    return removal
