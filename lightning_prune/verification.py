"""Checking that masking a group's units is removing them, by trying it on a copy.

The fit trains and judges the *masked* model and ends with the *compact* one, so a group is pruned
only if the two are the same function. Some couplings the engine reports are not (a channel that
feeds a norm over channels, a reshape into heads of another size, a slice); rather than list every
such pattern, :func:`verify_groups` removes some units of every group on a float32 copy, compares
the outputs with the masked copy's, and names the groups that differ or whose removal fails.

Both copies are :func:`~lightning_prune.survivors.shared_copy`\ s, converted to float32 on the CPU
(no copy at all when the model already is): masking replaces the masked parameters (never writes
them in place), removal makes new tensors for the changed ones only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from lightning_prune.surgery import remove_groups, to_dtype
from lightning_prune.survivors import shared_copy
from lightning_prune.tracing import call, map_tensors, output_tensors

if TYPE_CHECKING:
    from lightning_prune.structure import NeuronStructure


#: How the check removes units of a group: a random third (fixed seed), and the last half (a
#: contiguous block, which is what catches slices such as GhostNet's ``[:, :out_chs]``).
PROBES = ("random", "tail")


def _probe_keep(structure: NeuronStructure, keys: Sequence[str], probe: str = "random") -> dict[str, torch.Tensor]:
    """Unit keep-masks that drop some units of the groups in ``keys`` (see :data:`PROBES`)."""
    keep = {}
    for group in structure.groups:
        mask = torch.ones(group.size, dtype=torch.bool)
        if group.key in keys and group.size > max(1, group.floor):
            if probe == "random":
                generator = torch.Generator().manual_seed(group.size)
                mask[torch.randperm(group.size, generator=generator)[: max(1, group.size // 3)]] = False
            else:
                mask[max(group.floor, group.size // 2):] = False
        keep[group.key] = mask
    return keep


def _masked_equals_removed(
    model: nn.Module, example_input: Any, structure: NeuronStructure, keys: Sequence[str], probe: str = "random",
    exact: bool = True,
) -> str | None:
    """``None`` if masking and removing some units of the groups ``keys`` give the same outputs, else why not.

    With ``exact=False`` (groups removed at the prune step, whose masks are not their removal) only the
    removal is checked: it must succeed and keep the shapes of the model's outputs.
    """
    keep = _probe_keep(structure, keys, probe)
    x = to_dtype(map_tensors(example_input, lambda tensor: tensor.cpu()), torch.float32)
    try:
        masks = structure.parameter_masks(model, keep)
        masked = shared_copy(model).to("cpu", torch.float32).eval()
        with torch.no_grad():
            for name, param in masked.named_parameters():
                if name in masks:
                    param.data = param.data * masks.pop(name)  # a new tensor: the copy shares the model's storage
            expected = output_tensors(call(masked, x))
        del masked
        removed = shared_copy(model).to("cpu", torch.float32).eval()
        remove_groups(removed, x, {key: idx for key, idx in structure.removal(keep).items() if key in keys and idx})
        with torch.no_grad():
            found = output_tensors(call(removed, x))
    except Exception as error:  # the engine cannot follow this group: refuse it, say why
        cause = error.__cause__ or error
        return f"removing its units fails ({type(cause).__name__}: {str(cause)[:200]})"
    if len(found) != len(expected) or any(a.shape != b.shape for a, b in zip(found, expected)):
        return "removing its units changes the shape of the model's output"
    for a, b in zip(found, expected) if exact else ():
        finite = torch.isfinite(b)
        if not torch.equal(torch.isfinite(a), finite) or not torch.equal(a[~finite].nan_to_num(), b[~finite].nan_to_num()):
            return "masking its units gives other non-finite outputs (NaN, inf) than removing them"  # a zeroed group, eps=0
        a, b = a[finite], b[finite]
        scale = max(1.0, float(b.abs().max())) if b.numel() else 1.0
        difference = float((a - b).abs().max()) / scale if b.numel() else 0.0
        if difference > 1e-4:  # float32 sums in another order differ by ~1e-7; a mixed-in zero by 1e-2 and more
            return (f"masking its units is not removing them (outputs differ by {difference:.2e} relative): they reach "
                    "an operation that mixes channels (a norm over channels, a reshape, a split)")
    return None


def verify_groups(model: nn.Module, example_input: Any, structure: NeuronStructure) -> dict[str, str]:
    """Groups whose masked and removed models differ, or whose removal fails, each with the reason.

    All groups are checked at once, once per pattern of :data:`PROBES` (units removed on a float32 copy);
    when that fails, halves are checked recursively, so a model with ``k`` bad groups of ``n`` costs
    about ``k log n`` checks. The groups in ``structure.inexact`` (removed at the prune step) are
    checked apart, for a removal that succeeds and keeps the output shapes.
    """
    failed: dict[str, str] = {}

    def check(keys: list[str], probe: str, exact: bool) -> None:
        reason = _masked_equals_removed(model, example_input, structure, keys, probe, exact)
        if reason is None:
            return
        if len(keys) == 1:
            failed[keys[0]] = reason
            return
        middle = len(keys) // 2
        check(keys[:middle], probe, exact)
        check(keys[middle:], probe, exact)

    for probe in PROBES:
        for exact in (True, False):
            keys = [group.key for group in structure.groups
                    if group.size > 1 and group.key not in failed and (group.key in structure.inexact) != exact]
            if keys:
                check(keys, probe, exact)
    return failed
