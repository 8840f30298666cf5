"""Physical removal of neurons: the model, the optimizer state, and what each parameter kept.

Removal itself is Torch-Pruning's: one ``DependencyGraph`` trace, then for each group the root
layer's output units are removed together with every coupled entry (bias, BatchNorm, consumers'
inputs, residual partners). Torch-Pruning *replaces* each affected ``nn.Parameter``; an optimizer
built before the removal would keep training the dead tensors (measured: the pruned layers silently
stop learning). :func:`remove_units` therefore moves each optimizer's parameter references and
state (momentum, Adam moments, step) to the new parameters, sliced to the surviving entries, and
leaves param-group settings and learning-rate schedulers alone.

Which entries survive is read off by *index tracking*: the same removal is done on a probe that
shares the model's storage and has ``meta`` parameters, recording how each tensor is sliced
(:mod:`lightning_prune.survivors`): per changed tensor, the kept indices along each sliced dimension.
"""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

from lightning_prune.attention import kv_group_attention, qkv_widths, remove_kv_groups, update_head_counts
from lightning_prune.layers import (
    follow_group_norms,
    follow_own_widths,
    group_norm_sizes,
    hf_conv1d_type,
    own_widths,
    width_mismatches,
)
from lightning_prune.survivors import SliceRecorder, Survivors, UnexplainedRemovalError, shared_copy, swap_to_meta
from lightning_prune.tracing import call, map_tensors, output_tensors

Removal = dict[str, list[int]]
"""Group key (root layer name) to the indices of its output units to remove, in current coordinates."""


def to_dtype(value: Any, dtype: torch.dtype) -> Any:
    """Cast the floating tensors of a (nested tuple/list/dict of) tensors."""
    return map_tensors(value, lambda tensor: tensor.to(dtype) if tensor.is_floating_point() else tensor)


class TraceError(RuntimeError):
    """The model's forward pass failed while tracing it; ``__cause__`` is the model's own error."""


class UnsupportedModelError(ValueError):
    """The engine (Torch-Pruning) cannot trace this model's structure; ``__cause__`` is its error."""


class _HFConv1DPruner(tp.pruner.function.BasePruningFunc):
    """Torch-Pruning handler for Hugging Face's ``Conv1D`` (GPT-2): a linear layer whose weight is
    ``(in, out)``, so output units are columns. Torch-Pruning has none of its own."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.nf)) - set(idxs))
        layer.nf = len(keep)
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 1)
        if layer.bias is not None:
            layer.bias = self._prune_parameter_and_grad(layer.bias, keep, 0)
        return layer

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.weight.shape[0])) - set(idxs))
        if hasattr(layer, "nx"):
            layer.nx = len(keep)
        layer.weight = self._prune_parameter_and_grad(layer.weight, keep, 0)
        return layer

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.nf

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.weight.shape[0]


def detached_copy(model: nn.Module) -> nn.Module:
    """``copy.deepcopy`` of a module that shares (does not copy) an attached Lightning trainer."""
    trainer = getattr(model, "_trainer", None)
    memo = {id(trainer): trainer} if trainer is not None else {}
    return copy.deepcopy(model, memo)


def build_graph(model: nn.Module, example_input: Any) -> tp.DependencyGraph:
    """Trace ``model`` with Torch-Pruning in eval mode, leaving its train/eval mode as it was.

    The model is called by :func:`~lightning_prune.tracing.call` (a tensor, a tuple of arguments or
    a dict of keyword arguments) and every floating tensor of its output is traced, so tuples,
    dicts and ``ModelOutput``\ s with caches need no wrapper.

    Raises:
        TraceError: If the model's forward pass fails, with the model's own error as its cause.
    """
    was_training = model.training
    conv1d = hf_conv1d_type()  # registered only when present: a customized pruner changes how Torch-Pruning traces
    uses_conv1d = conv1d is not None and any(isinstance(module, conv1d) for module in model.modules())
    customized = {conv1d: _HFConv1DPruner()} if uses_conv1d else None

    def forward(module: nn.Module, inputs: Any) -> Any:
        try:
            return call(module, inputs)
        except Exception as error:
            raise TraceError(f"The model's forward pass failed while tracing it: {type(error).__name__}: {error}") from error

    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example_input, forward_fn=forward, output_transform=output_tensors,
                customized_pruners=customized, verbose=False,
            )
    except TraceError:
        raise
    except Exception as error:  # the engine's own failure: name it, keep its error as the cause
        raise UnsupportedModelError(
            f"Torch-Pruning could not build the dependency graph of {type(model).__name__} "
            f"({type(error).__name__}: {str(error)[:200]}), so its coupled neurons cannot be found. Prune its weights "
            "(granularity='weight') or select the layers it can follow with `layers=`/`ignore_layers=`."
        ) from error
    finally:
        model.train(was_training)


@contextlib.contextmanager
def bounded_group_search(graph: tp.DependencyGraph, per_node: int = 64, per_target: int = 16) -> Iterator[None]:
    """Stop Torch-Pruning's search for a group's dependencies when it does not terminate.

    On some models (torchvision's Swin: window partitions, reshapes of reshapes) the index lists
    grow by the flatten stride at every step and the search never ends in practice. A group that
    needs more than ``per_node`` dependencies per node of the graph, reaches one node more than
    ``per_target`` times (a search that ends reached each node once or twice on the 11 zoo models
    measured, see ``shared/FIELD_NOTES.md``), or needs more indices for one dependency than the model's largest parameter has entries,
    is not one the library can prune;
    the search is stopped with :class:`UnsupportedModelError` instead of hanging the fit. Torch-Pruning offers
    no limit of its own, so ``Group.add_dep`` is counted while the block runs (and restored after).
    """
    group_class = tp.dependency.group.Group
    original = group_class.add_dep
    limit = per_node * max(1, len(graph.module2node))
    largest = max((p.numel() for p in graph.model.parameters()), default=1)  # no dimension has more entries

    def counted(group: Any, dep: Any, idxs: Any) -> None:
        seen = vars(group).setdefault("_lightning_prune_seen", {})  # target node -> times reached
        seen[dep.target] = seen.get(dep.target, 0) + 1
        group._lightning_prune_deps = getattr(group, "_lightning_prune_deps", 0) + 1
        if group._lightning_prune_deps > limit or len(idxs) > largest or seen[dep.target] > per_target:
            raise UnsupportedModelError(
                f"Torch-Pruning's search for coupled channels grows without bound on this model (a group past {limit} "
                f"dependencies, {per_target} visits of one layer or {largest} indices: reshapes of reshapes, e.g. "
                "window partitions). Prune its weights "
                "(granularity='weight') or select the layers it can follow with `layers=`/`ignore_layers=`."
            )
        original(group, dep, idxs)

    group_class.add_dep = counted
    try:
        yield
    finally:
        group_class.add_dep = original


def remove_groups(
    model: nn.Module, example_input: Any, removal: Mapping[str, Sequence[int]], graph: tp.DependencyGraph | None = None
) -> None:
    """Remove units in place, group by group (no optimizer involved).

    Args:
        model: The model (changed in place).
        example_input: A batch the model accepts (unused when ``graph`` is given).
        removal: Group key (a layer name) to the indices of its output channels to remove.
        graph: A dependency graph already traced on ``model``.

    Raises:
        ValueError: If a key names no module or a group would lose all of its units.
        UnsupportedModelError: If Torch-Pruning removed other units of the root layer than those asked,
            or left a layer of the group whose width attribute is not its weight's (see
            :func:`~lightning_prune.layers.width_mismatches`); the model is then half-changed, so
            callers run this on a probe or inside a :class:`Transaction`.
    """
    modules = dict(model.named_modules())
    names = {id(module): name for name, module in modules.items()}
    graph = graph if graph is not None else build_graph(model, example_input)
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
        attention = kv_group_attention(modules.get(key.rpartition(".")[0]), module)
        if attention is not None:  # grouped-query attention: Torch-Pruning cannot follow repeat_kv
            remove_kv_groups(attention, sorted(set(indices)))
            continue
        heads, widths, ties, norms = qkv_widths(model), own_widths(model), tied_parameters(model), group_norm_sizes(model)
        group = graph.get_pruning_group(module, pruner.prune_out_channels, sorted(set(indices)))
        group.prune()
        update_head_counts(heads)
        follow_own_widths(widths)
        _follow_group_norms(norms, group, key)
        retie(ties, key, names)
        _check_widths(key, units - len(set(indices)), pruner.get_out_channels(module), group, names)


def _follow_group_norms(norms: Mapping[nn.GroupNorm, tuple[int, int]], group: Any, key: str) -> None:
    """:func:`~lightning_prune.layers.follow_group_norms` with the channels each GroupNorm of ``group`` lost.

    Raises:
        UnsupportedModelError: If the removal from ``key`` took part of a GroupNorm's group.
    """
    removed: dict[nn.GroupNorm, set[int]] = {}
    for item in group:
        if isinstance(item.dep.target.module, nn.GroupNorm):
            removed.setdefault(item.dep.target.module, set()).update(int(i) for i in tp._helpers.to_plain_idxs(item.idxs))
    try:
        follow_group_norms(norms, removed)
    except ValueError as error:
        raise UnsupportedModelError(f"Torch-Pruning's removal from {key!r}: {error}.") from error


def tied_parameters(model: nn.Module) -> list[list[tuple[nn.Module, str]]]:
    """Every parameter that several modules share (tied weights), as the ``(module, attribute)`` holding it."""
    holders: dict[int, list[tuple[nn.Module, str]]] = {}
    for module in model.modules():
        for attribute, param in module._parameters.items():
            if param is not None:
                holders.setdefault(id(param), []).append((module, attribute))
    return [found for found in holders.values() if len(found) > 1]


def retie(ties: Sequence[Sequence[tuple[nn.Module, str]]], key: str, names: Mapping[int, str]) -> None:
    """After a removal, make each tie one shared parameter again (Torch-Pruning gives each holder its own slice).

    Raises:
        UnsupportedModelError: If the holders of one tied parameter were sliced differently.
    """
    for holders in ties:
        params = [module._parameters[attribute] for module, attribute in holders]
        if all(param is params[0] for param in params):
            continue
        same = all(p.shape == params[0].shape for p in params) and (
            params[0].is_meta or all(torch.equal(p, params[0]) for p in params))
        if not same:
            where = [f"{names.get(id(module), type(module).__name__)}.{attribute}" for module, attribute in holders]
            raise UnsupportedModelError(f"Torch-Pruning's removal from {key!r} sliced the tied weight {where} differently.")
        for module, attribute in holders[1:]:
            module._parameters[attribute] = params[0]


def _check_widths(key: str, expected: int, found: int, group: Any, names: Mapping[int, str]) -> None:
    """Raise :class:`UnsupportedModelError` unless the root ``key`` kept ``expected`` units and every
    layer of the pruned ``group`` has the widths its weights have."""
    if found != expected:  # e.g. a Linear viewed into channels: each channel owns several of its units
        raise UnsupportedModelError(
            f"Torch-Pruning's removal from {key!r} kept {found} of its units where {expected} were to stay: "
            "it maps them onto the next layers' channels in blocks (a view/reshape), not one by one."
        )
    for module in {id(item.dep.target.module): item.dep.target.module for item in group}.values():
        wrong = width_mismatches(module) if isinstance(module, nn.Module) else []
        if wrong:
            raise UnsupportedModelError(
                f"Torch-Pruning's removal from {key!r} left {names.get(id(module), type(module).__name__)!r} "
                f"inconsistent: {', '.join(wrong)}."
            )


def surviving_entries(model: nn.Module, example_input: Any, removal: Mapping[str, Sequence[int]]) -> dict[str, Survivors]:
    """Which entries each changed parameter or floating buffer keeps when ``removal`` is done, without doing it.

    The removal is done for real on a probe: a :func:`~lightning_prune.survivors.shared_copy` of the
    model (no tensor data copied), traced on the model's own device and dtype, whose floating
    parameters are then swapped for ``meta`` stand-ins, while a
    :class:`~lightning_prune.survivors.SliceRecorder` follows how Torch-Pruning slices each tensor.
    Extra memory: the trace's activations, the changed buffers and one index per kept unit and
    sliced dimension; the model is never written.

    Returns:
        State-dict name to the :class:`~lightning_prune.survivors.Survivors` of every tensor whose
        shape changes (parameters, and buffers such as BatchNorm running statistics).

    Raises:
        TraceError: If the model's forward pass fails while tracing it.
        ValueError: If a key of ``removal`` names no module or a group would lose all of its units.
        UnexplainedRemovalError: If a tensor changes by anything but slicing along its dimensions
            (or the removal writes into the model's tensors): its survivors are refused, not guessed.
    """
    probe = shared_copy(model)
    graph = build_graph(probe, example_input)
    protected = [tensor for tensor in itertools.chain(probe.parameters(), probe.buffers())]
    swap_to_meta(probe, graph)
    before = {name: tensor for name, tensor in itertools.chain(probe.named_parameters(), probe.named_buffers())
              if tensor.is_floating_point()}
    recorder = SliceRecorder(before.values(), protected)
    with recorder:
        remove_groups(probe, None, removal, graph=graph)
    for node in graph.module2node.values():  # the graph is cyclic garbage now: let its trace's activations go
        node.grad_fn = None
        for name in ("grad_fn", "_grad_fn"):  # Torch-Pruning's ops (a slice, an element-wise op) keep theirs too
            if not isinstance(node.module, (nn.Module, torch.Tensor)) and hasattr(node.module, name):
                setattr(node.module, name, None)
    return {
        name: recorder.survivors(name, before[name], tensor)
        for name, tensor in itertools.chain(probe.named_parameters(), probe.named_buffers())
        if name in before and tensor.shape != before[name].shape
    }


class Transaction:
    """Puts a model's modules and its optimizers back as they were if anything in the block fails.

    Torch-Pruning changes a module by swapping its attributes (new ``nn.Parameter``\ s, new
    ``in_channels``...), so a shallow copy of every module's ``__dict__`` (and of its parameter and
    buffer dicts) and of every optimizer's param lists and state map is a full, cheap snapshot of
    what a removal can touch.

    Example::

        with Transaction(model, optimizers):
            remove_groups(model, x, removal)
            retrace(model)          # any failure here restores the model and optimizers
    """

    def __init__(self, model: nn.Module, optimizers: Iterable[torch.optim.Optimizer] = ()) -> None:
        self.model = model
        self.optimizers = list(optimizers)

    def __enter__(self) -> "Transaction":
        self._modules = {  # containers are copied (the engine replaces their entries); other values kept as they are
            module: {key: copy.copy(value) if isinstance(value, (dict, list, set)) else value for key, value in vars(module).items()}
            for module in self.model.modules()
        }
        self._optimizers = [
            ([list(group["params"]) for group in optimizer.param_groups], dict(optimizer.state)) for optimizer in self.optimizers
        ]
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        if kind is not None:
            self.restore()
        return False

    def restore(self) -> None:
        """Put every module and optimizer back as it was at ``__enter__``."""
        for module, attributes in self._modules.items():
            vars(module).clear()
            vars(module).update(attributes)
        for optimizer, (params, state) in zip(self.optimizers, self._optimizers):
            for group, saved in zip(optimizer.param_groups, params):
                group["params"] = saved
            optimizer.state.clear()
            optimizer.state.update(state)


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
        State-dict name to the :class:`~lightning_prune.survivors.Survivors` (kept indices per
        sliced dimension) of every changed parameter and floating buffer.

    Raises:
        UnexplainedRemovalError: If the surviving entries of a changed tensor cannot be told (before
            anything changes; see :func:`surviving_entries`).
        Exception: Whatever the removal raised, after the model and optimizers were put back as they were.
    """
    optimizers = list(optimizers)
    kept = surviving_entries(model, example_input, removal)
    before = dict(model.named_parameters())
    with Transaction(model, optimizers):
        remove_groups(model, example_input, removal)
        after = dict(model.named_parameters())
        replaced = {id(before[n]): (before[n], after[n], kept.get(n)) for n in before if after[n] is not before[n]}
        moved = [_moved_state(optimizer, replaced) for optimizer in optimizers]
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


def _slice_like(value: Any, old: torch.Tensor, new: torch.Tensor, survivors: Survivors | None) -> Any:
    """Slice a per-entry state tensor (same shape as ``old``) to the entries ``new`` kept."""
    if not (torch.is_tensor(value) and value.shape == old.shape) or survivors is None:
        return value
    sliced = survivors.take(value)
    if sliced.shape != new.shape:
        raise ValueError(f"Optimizer state of shape {tuple(value.shape)} sliced to {tuple(sliced.shape)}, not {tuple(new.shape)}.")
    return sliced
