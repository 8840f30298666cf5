"""Physical removal of neurons: the model, the optimizer state, and what each parameter kept.

Removal itself is Torch-Pruning's: one ``DependencyGraph`` trace, then for each group the root
layer's output units are removed together with every coupled entry (bias, BatchNorm, consumers'
inputs, residual partners). Torch-Pruning *replaces* each affected ``nn.Parameter``; an optimizer
built before the removal would keep training the dead tensors (measured: the pruned layers silently
stop learning). :func:`remove_units` therefore moves each optimizer's parameter references and
state (momentum, Adam moments, step) to the new parameters, sliced to the surviving entries, and
leaves param-group settings and learning-rate schedulers alone.

Which entries survive is read off by *index tracking*: the same removal is done on a float64 copy
whose parameters hold their own flat indices.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

Removal = dict[str, list[int]]
"""Group key (root layer name) to the indices of its output units to remove, in current coordinates."""


def to_dtype(value: Any, dtype: torch.dtype) -> Any:
    """Cast the floating tensors of a (nested tuple/list of) tensors."""
    if torch.is_tensor(value) and value.is_floating_point():
        return value.to(dtype)
    if isinstance(value, (tuple, list)):
        return type(value)(to_dtype(item, dtype) for item in value)
    return value


def _to_cpu(value: Any) -> Any:
    if torch.is_tensor(value):
        return value.cpu()
    if isinstance(value, (tuple, list)):
        return type(value)(_to_cpu(item) for item in value)
    return value


def detached_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` of a module that shares (does not copy) an attached Lightning trainer."""
    trainer = getattr(model, "_trainer", None)
    memo = {id(trainer): trainer} if trainer is not None else {}
    return copy.deepcopy(model, memo)


def build_graph(model: nn.Module, example_input: Any) -> tp.DependencyGraph:
    """Trace ``model`` with Torch-Pruning in eval mode, leaving its train/eval mode as it was."""
    was_training = model.training
    try:
        inputs = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
        return tp.DependencyGraph().build_dependency(model, example_inputs=tuple(inputs), verbose=False)
    finally:
        model.train(was_training)


def remove_groups(model: nn.Module, example_input: Any, removal: Mapping[str, Sequence[int]]) -> None:
    """Remove units in place, group by group (no optimizer involved).

    Raises:
        ValueError: If a key names no module or a group would lose all of its units.
    """
    modules = dict(model.named_modules())
    graph = build_graph(model, example_input)
    for key, indices in removal.items():
        if not indices:
            continue
        if key not in modules:
            raise ValueError(f"Removal names layer {key!r}, which this model does not have.")
        module = modules[key]
        pruner = graph.get_pruner_of_module(module)
        units = pruner.get_out_channels(module)
        if len(set(indices)) >= units or max(indices) >= units or min(indices) < 0:
            raise ValueError(f"Cannot remove units {sorted(indices)[:8]}... of layer {key!r}, which has {units}.")
        graph.get_pruning_group(module, pruner.prune_out_channels, sorted(set(indices))).prune()


def surviving_entries(model: nn.Module, example_input: Any, removal: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """Flat indices of the entries each changed parameter or floating buffer keeps when ``removal`` is done.

    Returns:
        State-dict name to a sorted ``long`` tensor of kept flat indices (changed tensors only:
        parameters, and buffers such as BatchNorm running statistics).
    """
    probe = detached_copy(model).to("cpu", torch.float64)  # on the CPU whatever the model's device
    shapes = {}
    with torch.no_grad():
        for name, tensor in itertools.chain(probe.named_parameters(), probe.named_buffers()):
            if tensor.is_floating_point():
                shapes[name] = tensor.shape
                tensor.data = torch.arange(tensor.numel(), dtype=torch.float64).reshape(tensor.shape)
    remove_groups(probe, to_dtype(_to_cpu(example_input), torch.float64), removal)
    return {
        name: tensor.detach().flatten().long()
        for name, tensor in itertools.chain(probe.named_parameters(), probe.named_buffers())
        if name in shapes and tensor.shape != shapes[name]
    }


def remove_units(
    model: nn.Module,
    example_input: Any,
    removal: Mapping[str, Sequence[int]],
    optimizers: Iterable[torch.optim.Optimizer] = (),
) -> dict[str, torch.Tensor]:
    """Remove units in place and carry every optimizer over to the new parameters. All or nothing.

    Args:
        model: The model (its modules are changed in place).
        example_input: A batch the model accepts.
        removal: Group key to unit indices to remove, in the model's current coordinates.
        optimizers: Optimizers over the model's parameters; their state is sliced to the survivors.

    Returns:
        State-dict name to the kept flat indices, for every changed parameter and floating buffer.

    Raises:
        Exception: Whatever the removal raised, after the model was put back as it was.
    """
    optimizers = list(optimizers)
    kept = surviving_entries(model, example_input, removal)
    saved = {module: {key: copy.copy(value) for key, value in vars(module).items()} for module in model.modules()}
    before = dict(model.named_parameters())
    try:
        remove_groups(model, example_input, removal)
        after = dict(model.named_parameters())
        replaced = {id(before[n]): (before[n], after[n], kept.get(n)) for n in before if after[n] is not before[n]}
        moved = [_moved_state(optimizer, replaced) for optimizer in optimizers]
    except BaseException:
        for module, attributes in saved.items():  # Torch-Pruning swaps attributes; swap them back
            vars(module).clear()
            vars(module).update(attributes)
        raise
    for optimizer, (groups, state) in zip(optimizers, moved):
        for group, params in zip(optimizer.param_groups, groups):
            group["params"] = params
        for old, new, _ in replaced.values():
            if optimizer.state.pop(old, None) is not None:
                optimizer.state[new] = state[new]
    return kept


def _moved_state(optimizer: torch.optim.Optimizer, replaced: Mapping[int, tuple]) -> tuple[list, dict]:
    """New param lists and state entries of ``optimizer`` for the replaced parameters (no mutation)."""
    groups = [[replaced[id(p)][1] if id(p) in replaced else p for p in group["params"]] for group in optimizer.param_groups]
    state = {}
    for old, new, indices in replaced.values():
        if old in optimizer.state:
            state[new] = {key: _slice_like(value, old, new, indices) for key, value in optimizer.state[old].items()}
    return groups, state


def _slice_like(value: Any, old: torch.Tensor, new: torch.Tensor, indices: torch.Tensor | None) -> Any:
    """Slice a per-entry state tensor (same shape as ``old``) to the entries ``new`` kept."""
    if not (torch.is_tensor(value) and value.shape == old.shape) or indices is None:
        return value
    return value.flatten()[indices.to(value.device)].reshape(new.shape).clone()
