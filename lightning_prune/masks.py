"""Boolean keep-masks on parameters, enforced in place after every optimizer step.

A mask is a ``bool`` tensor of a parameter's shape, ``True`` where the entry is kept. Masks are
applied by multiplying in place, so parameters keep their names, ``state_dict`` keys do not change,
the model deep-copies and pickles, and evaluation runs at dense speed (no forward pre-hooks, no
``weight_orig``/``weight_mask`` pairs as in ``torch.nn.utils.prune``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

Masks = dict[str, torch.Tensor]
"""Parameter name (as in ``model.named_parameters()``) to a ``bool`` keep-mask of its shape."""


def check_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Check that every mask names a parameter of the model and has its shape.

    Raises:
        ValueError: Naming the first parameter that is missing or whose shape differs.
    """
    params = dict(model.named_parameters(remove_duplicate=False))  # tied weights under every name
    for name, mask in masks.items():
        if name not in params:
            raise ValueError(f"Mask for {name!r}, but the model has no such parameter. Parameters: {sorted(params)}")
        if mask.shape != params[name].shape or mask.dtype != torch.bool:
            raise ValueError(
                f"Mask for {name!r} has shape {tuple(mask.shape)} and dtype {mask.dtype}; the parameter has shape "
                f"{tuple(params[name].shape)} (a bool mask of that shape is required)."
            )


@torch.no_grad()
def apply_masks(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
    """Zero the pruned entries of the model's parameters in place."""
    params = dict(model.named_parameters(remove_duplicate=False))  # tied weights under every name
    for name, mask in masks.items():
        params[name].mul_(mask.to(params[name].device))


def count_kept(masks: Mapping[str, torch.Tensor]) -> tuple[int, int]:
    """Return ``(kept, total)`` entries over all masks."""
    kept = sum(int(mask.sum()) for mask in masks.values())
    total = sum(mask.numel() for mask in masks.values())
    return kept, total


class MaskEnforcer:
    """Keeps pruned entries at zero in the parameters and the optimizer state.

    * :meth:`enforce` zeroes the pruned entries of each masked parameter and of every optimizer
      state tensor of its shape (SGD momentum, Adam's moments, AMSGrad's maxima, ...).
    * :meth:`attach` zeroes pruned entries after every ``optimizer.step()`` (a step post-hook, so
      manual optimization and gradient accumulation are covered): of the weights only by default,
      which is all it takes to keep a pruned weight from regrowing, or of the weights and the
      state with ``state=True``.

    With ``state=False`` the pruned entries of the optimizer state move between two
    :meth:`enforce` calls, but they never reach a kept weight and are discarded by removal or
    rewinding. It is the cheaper choice: one pass per step instead of three with Adam, and Adam's
    square root is slow on this CPU when its second moments are exactly zero (see
    ``benchmarks/results/training_overhead.md``).

    Multiplies are one fused ``torch._foreach_mul_`` over all tensors with masks cached in the
    parameters' dtype (measured faster than per-tensor ``mul_``/``masked_fill_`` with bool masks).
    """

    def __init__(self, model: nn.Module, masks: Mapping[str, torch.Tensor]) -> None:
        check_masks(model, masks)
        params = dict(model.named_parameters(remove_duplicate=False))  # tied weights under every name
        self._pairs = [
            (params[name], mask.to(device=params[name].device, dtype=params[name].dtype)) for name, mask in masks.items()
        ]
        self._handles: list[RemovableHandle] = []

    @torch.no_grad()
    def enforce(self, optimizers: Iterable[torch.optim.Optimizer] = ()) -> None:
        """Zero pruned entries of the parameters and of the optimizers' state tensors."""
        tensors = [param.data for param, _ in self._pairs]
        factors = [mask for _, mask in self._pairs]
        for optimizer in optimizers:
            for param, mask in self._pairs:
                for value in optimizer.state.get(param, {}).values():
                    if torch.is_tensor(value) and value.shape == param.shape and value.is_floating_point():
                        tensors.append(value)
                        factors.append(mask.to(value.dtype))
        if tensors:
            torch._foreach_mul_(tensors, factors)

    def attach(self, optimizers: Iterable[torch.optim.Optimizer], state: bool = False) -> None:
        """Zero pruned weights (and, with ``state=True``, their optimizer state) after every step."""
        for optimizer in optimizers:
            hook = (lambda opt, args, kwargs: self.enforce([opt])) if state else (lambda opt, args, kwargs: self.enforce())
            self._handles.append(optimizer.register_step_post_hook(hook))

    def detach(self) -> None:
        """Remove the optimizer hooks."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()


def enforce_masks(
    model: nn.Module, masks: Mapping[str, torch.Tensor], optimizers: Iterable[torch.optim.Optimizer], state: bool = False
) -> MaskEnforcer:
    """What ``Pruning`` does whenever its masks change: zero the pruned weights and their optimizer
    state now, then keep the weights (with ``state=True`` the state too) zero after every step.

    Returns:
        The attached enforcer (``detach()`` it before enforcing other masks).

    Raises:
        ValueError: If a mask names no parameter or has the wrong shape (see :func:`check_masks`).
    """
    optimizers = list(optimizers)
    enforcer = MaskEnforcer(model, masks)  # checks the masks before anything changes
    apply_masks(model, masks)
    enforcer.enforce(optimizers)
    enforcer.attach(optimizers, state=state)
    return enforcer


def reapply_if_leaked(model: nn.Module, masks: Mapping[str, torch.Tensor]) -> list[str]:
    """Zero the pruned weights again if something wrote non-zeros there; return the names it found.

    Masks reach every name of a tied tensor; entries whose shape no longer fits are skipped.
    """
    params = dict(model.named_parameters(remove_duplicate=False))
    with torch.no_grad():
        leaked = [name for name, mask in masks.items()
                  if name in params and params[name].shape == mask.shape and bool(params[name][~mask].any())]
    if leaked:
        apply_masks(model, masks)
    return leaked


def leak_warning(leaked: list[str]) -> str:
    """What to tell a user whose masked weights :func:`reapply_if_leaked` found non-zero after a fit."""
    return (f"Pruning: pruned weights of {leaked[:3]}{'...' if len(leaked) > 3 else ''} were non-zero when the fit "
            "ended (a callback such as StochasticWeightAveraging or an EMA wrote weights after the last pruning step); "
            "the masks were re-applied, so the model has the sparsity of the history. Start the averaging after the "
            "last prune for averages of the pruned network only.")
