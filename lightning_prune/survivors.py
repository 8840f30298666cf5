"""Which entries of each tensor survive a removal, in O(units) memory.

Torch-Pruning removes units by slicing whole rows, columns or channels: every changed tensor is
``index_select``\ ed (or indexed) along one dimension at a time, possibly more than once (a conv
loses output channels along dim 0, then input channels along dim 1). So what survives of a tensor
is, per sliced dimension, a list of kept indices: :class:`Survivors`. It slices optimizer state and
saved weights with ``index_select`` and builds keep-masks, without ever holding a per-entry index.

The lists are read off a removal done on a *probe*: a :func:`shared_copy` of the model (no tensor
data copied), traced with real values, whose floating parameters are then swapped for ``meta``
stand-ins (shape only, no memory) before Torch-Pruning removes the units. :class:`SliceRecorder`
follows every slicing op during that removal, by storage; a changed tensor it cannot explain
is refused with an error, never guessed.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten


@dataclass(frozen=True)
class Survivors:
    """The entries of one tensor that survive a removal: along each sliced dimension, the indices it keeps.

    What survives is every entry whose index along each sliced dimension is kept (a product of
    index lists), in the order of the lists. Memory: one index per kept unit and sliced dimension.

    Attributes:
        shape: The tensor's shape before the removal.
        index: Dimension to the kept indices along it (a 1-D ``long`` CPU tensor, no repeats), in
            the coordinates before the removal; dimensions not sliced are absent.
    """

    shape: tuple[int, ...]
    index: Mapping[int, torch.Tensor]

    @property
    def new_shape(self) -> tuple[int, ...]:
        """The tensor's shape after the removal."""
        return tuple(len(self.index[dim]) if dim in self.index else size for dim, size in enumerate(self.shape))

    def take(self, value: torch.Tensor) -> torch.Tensor:
        """The surviving entries of ``value`` (shaped like the tensor before), as a new tensor of :attr:`new_shape`.

        Raises:
            ValueError: If ``value`` does not have :attr:`shape`.
        """
        if tuple(value.shape) != self.shape:
            raise ValueError(f"Cannot slice a tensor of shape {tuple(value.shape)} by survivors of shape {self.shape}.")
        for dim, kept in sorted(self.index.items(), key=lambda item: len(item[1]) / self.shape[item[0]]):
            value = value.index_select(dim, kept.to(value.device))
        return value if self.index else value.clone()

    def mask(self) -> torch.Tensor:
        """A ``bool`` CPU tensor of :attr:`shape`, ``True`` on the surviving entries."""
        mask = torch.ones(self.shape, dtype=torch.bool)
        for dim, kept in self.index.items():
            along = torch.zeros(self.shape[dim], dtype=torch.bool)
            along[kept] = True
            mask &= along.view([-1 if d == dim else 1 for d in range(len(self.shape))])
        return mask

    def flat(self) -> torch.Tensor:
        """The kept flat indices (row-major, before the removal) in the order of the entries after it.

        The representation index tracking used before: one ``long`` per surviving entry (8 bytes
        each, twice a float32 tensor's size), for checks and callers that need it.
        """
        return self.take(torch.arange(int(torch.Size(self.shape).numel())).reshape(self.shape)).flatten()


def shared_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model``'s modules whose parameters and buffers are new tensor objects over the same storage.

    No tensor data is copied. Replacing, slicing or converting (``.to()``) the copy's tensors leaves
    the model alone; writing into them in place would write the model's. An attached Lightning
    trainer is shared, not copied.
    """
    trainer = getattr(model, "_trainer", None)
    memo: dict[int, Any] = {id(trainer): trainer} if trainer is not None else {}
    for module in model.modules():
        for param in module._parameters.values():
            if param is not None and id(param) not in memo:
                memo[id(param)] = nn.Parameter(param.detach(), requires_grad=param.requires_grad)
        for buffer in module._buffers.values():
            if buffer is not None and id(buffer) not in memo:
                memo[id(buffer)] = buffer.detach()
    return copy.deepcopy(model, memo)


def swap_to_meta(probe: nn.Module, graph: Any) -> None:
    """Replace the floating parameters of ``probe`` by ``meta`` stand-ins, keeping ``graph`` (traced on it) valid.

    Torch-Pruning keys an unwrapped ``nn.Parameter`` (one outside a known layer) in its graph by the
    parameter itself, so those keys move to the stand-ins too. Buffers stay (they are per-channel
    and small) and parameters shared between modules stay shared.
    """
    swapped: dict[int, tuple[nn.Parameter, nn.Parameter]] = {}
    for module in probe.modules():
        for name, param in module._parameters.items():
            if param is not None and param.is_floating_point():
                if id(param) not in swapped:
                    stand_in = nn.Parameter(torch.empty_like(param, device="meta"), requires_grad=param.requires_grad)
                    swapped[id(param)] = (param, stand_in)
                module._parameters[name] = swapped[id(param)][1]
    for old, new in swapped.values():
        if old in graph.module2node:
            node = graph.module2node.pop(old)
            node.module = new
            graph.module2node[new] = node
        if old in graph._param_to_name:
            graph._param_to_name[new] = graph._param_to_name.pop(old)


def _key(tensor: torch.Tensor) -> int:
    return tensor.untyped_storage()._cdata


def _layout(tensor: torch.Tensor) -> tuple:
    return tuple(tensor.shape), tuple(tensor.stride()), tensor.storage_offset()


class UnexplainedRemovalError(RuntimeError):
    """A tensor changed in a way the recorded slicing does not explain, so its surviving entries are unknown."""


class SliceRecorder(TorchDispatchMode):
    """Follows, op by op, how each tensor is sliced during a removal, and refuses writes into protected storage.

    Recorded: ``index_select`` and single-dimension indexing (a 1-D integer or ``bool`` index along
    one dimension), and ``clone``/``_to_copy`` (same entries). An integer index moved to ``meta``
    (Torch-Pruning moves its index list to the weight's device) keeps its real values. Every
    tensor seen is kept alive while recording, so storages are never reused under it (the ``meta``
    ones cost nothing).

    Args:
        sources: The tensors slicing starts from (the probe's parameters and buffers).
        protected: Tensors whose storage must not be written (the model's, shared by the probe).
    """

    def __init__(self, sources: Iterable[torch.Tensor], protected: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        # storage -> (source storage, steps ((dim or None, kept indices), ...), layout); None: not explainable
        self._made: dict[int, tuple | None] = {_key(t): (_key(t), (), _layout(t)) for t in sources}
        self._values: dict[int, torch.Tensor] = {}  # a meta index's storage -> its real values
        self._protected = {_key(t) for t in protected if t.device.type != "meta"}
        self._alive: list[Any] = [list(sources)]

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func._schema.is_mutable:
            for position, argument in enumerate(func._schema.arguments):
                value = kwargs.get(argument.name, args[position] if position < len(args) else None)
                written = argument.alias_info is not None and argument.alias_info.is_write
                if written and torch.is_tensor(value) and _key(value) in self._protected:
                    raise UnexplainedRemovalError(f"The removal wrote into a tensor of the model ({func}); refused.")
        out = func(*args, **kwargs)
        if torch.is_tensor(out):
            self._follow(func, args, out)
        return out

    def _follow(self, func: Any, args: Any, out: torch.Tensor) -> None:
        source, dim, index = args[0], None, None
        if func in (aten._to_copy.default, aten.clone.default):
            if not source.is_floating_point() and out.device.type == "meta" and source.device.type != "meta":
                self._values[_key(out)] = source  # an index list on its way to a meta weight
                self._alive.append(out)
                return
        elif func is aten.index_select.default:
            dim, index = args[1], args[2]
        elif func is aten.index.Tensor:
            given = [(position, i) for position, i in enumerate(args[1]) if i is not None]
            dim, index = given[0] if len(given) == 1 else (None, None)
            if index is None:
                self._record(out, None)
                return
        else:
            return
        base = self._made.get(_key(source))
        if base is None or base[2] != _layout(source):
            self._record(out, None)  # not a tensor we follow, or a view of one
            return
        steps = base[1]
        if index is not None:
            if index.device.type == "meta":
                index = self._values.get(_key(index))
            if index is None or index.dim() != 1:
                self._record(out, None)
                return
            kept = index.cpu().nonzero().flatten() if index.dtype == torch.bool else index.cpu().long()
            steps = (*steps, (dim % source.dim(), kept))
        self._record(out, (base[0], steps, _layout(out)))

    def _record(self, out: torch.Tensor, entry: tuple | None) -> None:
        self._made[_key(out)] = entry
        self._alive.append(out)

    def survivors(self, name: str, before: torch.Tensor, after: torch.Tensor) -> Survivors:
        """The surviving entries of ``before`` that make up ``after``.

        Raises:
            UnexplainedRemovalError: If ``after`` was not made from ``before`` by recorded slicing alone.
        """
        entry = self._made.get(_key(after))
        if entry is None or entry[0] != _key(before) or entry[2] != _layout(after):
            raise UnexplainedRemovalError(
                f"Cannot tell which entries of {name!r} survive the removal: it changed from {tuple(before.shape)} to "
                f"{tuple(after.shape)} by an operation other than slicing along its dimensions."
            )
        index: dict[int, torch.Tensor] = {}
        for dim, kept in entry[1]:
            if dim is not None:
                index[dim] = index[dim][kept] if dim in index else kept
        result = Survivors(tuple(before.shape), dict(sorted(index.items())))
        repeated = any(len(kept.unique()) != len(kept) for kept in index.values())
        if repeated or result.new_shape != tuple(after.shape):
            raise UnexplainedRemovalError(f"The recorded slicing of {name!r} repeats entries or does not give its new shape.")
        return result
