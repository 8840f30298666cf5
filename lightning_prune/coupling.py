"""Which coupled groups Torch-Pruning finds, and which of them cannot be pruned exactly.

Torch-Pruning's ``DependencyGraph`` answers, for a layer's output channels, every entry that must go
with them (a *group*). :func:`searched_groups` asks it once per prunable root layer, refusing only
the roots whose search grows without bound. :func:`coupling_refusal` names the couplings where
masking a group's units is not removing them, known without trying: a channel that feeds a norm
over channels, a weight tied to another module's. Couplings found only by trying (a reshape, a
slice) are refused by :mod:`lightning_prune.verification`; grouped convolutions by
:func:`lightning_prune.unit_groups.grouped_conv_units`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch_pruning as tp
from torch import nn

from lightning_prune.layers import PRUNABLE_TYPES
from lightning_prune.surgery import UnsupportedModelError, bounded_group_search

#: Norm layers that mix channels (a GroupNorm only when it has one group: see is_channel_mixing_norm):
#: zeroing a channel that feeds one is not removing it (the zero still enters the mean and variance).
#: Matched by type, or by class name for the many copies (timm's ``LayerNorm2d`` subclasses
#: ``nn.LayerNorm``; Hugging Face's ``LlamaRMSNorm`` does not).
CHANNEL_MIXING_NORMS: tuple[type[nn.Module], ...] = (nn.LayerNorm, nn.GroupNorm) + ((nn.RMSNorm,) if hasattr(nn, "RMSNorm") else ())
_NORM_NAMES = ("LayerNorm", "RMSNorm", "GroupNorm", "LayerNorm2d", "LayerNormChannel")


def is_channel_mixing_norm(module: Any) -> bool:
    """Whether ``module`` normalises over channels (LayerNorm, RMSNorm, GroupNorm and their copies).

    Args:
        module: Any object met in a group (a module, or one of Torch-Pruning's op stand-ins).

    Returns:
        ``True`` for a channel-mixing norm; ``False`` for BatchNorm (per-channel statistics), for a
        GroupNorm of more than one group (each group is normalised on its own, so a whole group masked
        is a group removed: :func:`~lightning_prune.unit_groups.group_norm_units`) and the rest.
    """
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return False
    if isinstance(module, nn.GroupNorm) and module.num_groups > 1:
        return False  # it mixes channels within each of its groups only: whole groups are units (unit_groups)
    return isinstance(module, CHANNEL_MIXING_NORMS) or type(module).__name__.endswith(_NORM_NAMES)


def tied_modules(model: nn.Module) -> dict[int, dict[int, str]]:
    """Modules that share a parameter with another module (tied weights, e.g. an embedding and a head).

    Args:
        model: The model.

    Returns:
        ``id(module)`` to the other modules sharing one of its parameters (``id`` to name).
    """
    owners: dict[int, list[tuple[int, str]]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        for param in module.parameters(recurse=False):
            owners.setdefault(id(param), []).append((id(module), name))
    tied: dict[int, dict[int, str]] = {}
    for sharing in owners.values():
        if len({module for module, _ in sharing}) > 1:
            for module, _ in sharing:
                tied.setdefault(module, {}).update((other, name) for other, name in sharing if other != module)
    return tied


def coupling_refusal(group: Any, tied: Mapping[int, Mapping[int, str]], module_names: Mapping[int, str],
                     allow_norms: bool = False) -> str | None:
    """Why a group's units cannot be masked-then-removed exactly, for couplings known without trying.

    Args:
        group: A Torch-Pruning group (its items' targets are the coupled modules and ops).
        tied: :func:`tied_modules` of the model.
        module_names: ``id(module)`` to its name in the model.
        allow_norms: Do not refuse channels that feed a channel-mixing norm (they are removed at
            the prune step, ``Neurons(norm_coupled="remove")``).

    Returns:
        The reason for the first member (in the group's order) whose weight is tied to a module
        outside the group or (unless ``allow_norms``) that is a channel-mixing norm, or ``None`` when
        there is none. A tie whose every module is in the group (GPT-2's token embedding and
        ``lm_head``) is not refused here: the removal slices both alike and re-ties them
        (:func:`~lightning_prune.surgery.remove_groups`), which the trial removal checks.
    """
    members = {id(item.dep.target.module) for item in group}
    for item in group:
        module = item.dep.target.module
        name = module_names.get(id(module), "?")
        outside = [other for key, other in tied.get(id(module), {}).items() if key not in members]
        if outside:
            return (f"its channels reach {name!r}, whose weight is tied to {outside[0]!r} (one shared "
                    "tensor), whose channels are not in this group: removing them would break the tie")
        if is_channel_mixing_norm(module) and not allow_norms:
            return (f"its channels feed the channel-mixing norm {name!r} ({type(module).__name__}), where a "
                    "zeroed channel is not a removed one (Neurons(norm_coupled='remove') removes them at the prune step)")
    return None


def norm_parameters(model: nn.Module) -> set[int]:
    """``id`` of every parameter of a channel-mixing norm in ``model`` (the norms Torch-Pruning traces
    as operations on an unwrapped parameter, such as Hugging Face's ``LlamaRMSNorm``)."""
    return {id(param) for module in model.modules() if is_channel_mixing_norm(module)
            for param in module.parameters(recurse=False)}


def feeds_norm(group: Any, norm_params: set[int] = frozenset()) -> bool:
    """Whether a Torch-Pruning group's channels feed a channel-mixing norm: a norm module among its
    targets, or the parameter of one (``norm_params``: :func:`norm_parameters`)."""
    return any(is_channel_mixing_norm(target) or id(target) in norm_params
               for target in (item.dep.target.module for item in group))


def searched_groups(graph: tp.DependencyGraph, ignored: Sequence[nn.Module]) -> tuple[list[Any], dict[nn.Module, str]]:
    """Every group Torch-Pruning finds from a prunable root layer's output channels, one search per root.

    Torch-Pruning's ``get_all_groups`` does the same walk but lets one unbounded search hang (or, with
    :func:`~lightning_prune.surgery.bounded_group_search`, fail) the whole model; here only that root
    is refused: on HF LLaMA the residual stream's search explodes while the FFN groups are ordinary.
    A group that contains an ignored layer's output channels (an output layer, a layer not selected)
    is left out, as Torch-Pruning does.

    Args:
        graph: The model's dependency graph.
        ignored: Layers whose output channels are never pruned.

    Returns:
        The groups, and each root layer whose search grows without bound with the reason.
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
