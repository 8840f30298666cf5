"""Ranking: from one score per unit to the units to keep.

Scores come in groups (one tensor per layer for weight pruning, one per coupled group of neurons
for neuron pruning). ``scope="layer"`` prunes every group by the same fraction; ``scope="global"``
ranks all units together, so that the least important units go wherever they are. Either way,
units pruned earlier stay pruned (masks only shrink) and each group keeps at least
``max(1, ceil(min_keep * size))`` units, so a global ranking cannot wipe out a layer.

Raw scores of different layers need not be on one scale (a Taylor score grows with the layer's
gradients, a weight norm with its fan-in); :func:`normalize_scores` rescales each group before a
global ranking, as Molchanov et al. (2017) do with a layer-wise L2 normalisation.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch

SCOPES = ("global", "layer")
NORMALIZERS = ("mean", "max", "l2")


def min_units(size: int, min_keep: float) -> int:
    """Units a group of ``size`` must keep: ``max(1, ceil(min_keep * size))``."""
    return max(1, math.ceil(min_keep * size - 1e-9))


def prunable_capacity(sizes: Mapping[str, int], min_keep: float) -> int:
    """The most units that can be pruned in total while every group keeps its minimum."""
    return sum(size - min_units(size, min_keep) for size in sizes.values())


def normalize_scores(
    scores: Mapping[str, torch.Tensor], keep: Mapping[str, torch.Tensor], method: str
) -> dict[str, torch.Tensor]:
    """Divide each group's scores by one statistic of its kept units' scores.

    ``"mean"`` divides by their mean (Torch-Pruning's default normaliser), ``"max"`` by their
    largest, ``"l2"`` by their L2 norm (Molchanov et al. 2017). The L2 norm grows with the square
    root of the group's size, so ``"l2"`` pushes a global ranking towards pruning large groups. Units already pruned (and
    ``-inf`` scores) do not enter the statistic; a group whose statistic is 0 or not finite keeps
    its scores. Within a group the order is unchanged, so only a global ranking is affected.

    Args:
        scores: Group name to non-negative scores, one per unit.
        keep: Group name to the current ``bool`` keep-mask (same shape as the scores).
        method: One of :data:`NORMALIZERS`.

    Raises:
        ValueError: If ``method`` is unknown or a group's scores and mask differ in shape.
    """
    if method not in NORMALIZERS:
        raise ValueError(f"`normalize` must be one of {NORMALIZERS} or None, got {method!r}.")
    result = {}
    for name, score in scores.items():
        if score.shape != keep[name].shape:
            raise ValueError(f"Scores for {name!r} have shape {tuple(score.shape)}, its mask {tuple(keep[name].shape)}.")
        value = score.detach().double().cpu()
        live = value[keep[name].cpu() & torch.isfinite(value)]
        if method == "mean":
            scale = live.mean() if live.numel() else torch.tensor(0.0)
        elif method == "max":
            scale = live.max() if live.numel() else torch.tensor(0.0)
        else:
            scale = live.norm()
        result[name] = value / scale if torch.isfinite(scale) and scale > 0 else value
    return result


def select_units(
    scores: Mapping[str, torch.Tensor],
    keep: Mapping[str, torch.Tensor],
    fraction: float | Mapping[str, float],
    scope: str = "global",
    min_keep: float = 0.01,
    floors: Mapping[str, int] | None = None,
) -> dict[str, torch.Tensor]:
    """Choose the units to keep so that ``fraction`` of all units is pruned.

    Args:
        scores: Group name to scores, one per unit (any shape); higher means more important.
        keep: Group name to the current ``bool`` keep-mask (same shape as the scores).
        fraction: Cumulative fraction of units to prune: of all units together for ``"global"``,
            of each group for ``"layer"``. With ``"layer"`` it may also be a mapping from group
            name to that group's own fraction (every group named).
        scope: ``"global"`` or ``"layer"``.
        min_keep: Minimum fraction of each group's units that is kept.
        floors: Group name to a minimum number of units it keeps on top of ``min_keep`` (e.g. 2 for a
            group tied to a grouped convolution, which one unit per conv group would turn into a
            depthwise one).

    Returns:
        New keep-masks, a subset of ``keep``. Ties break by group order, then index.

    Raises:
        ValueError: If ``scope`` is unknown, a score is NaN (naming the group), shapes differ, or
            ``fraction`` cannot be reached while each group keeps its minimum, or is a mapping
            with ``"global"`` scope or without an entry for every group.
    """
    if scope not in SCOPES:
        raise ValueError(f"`scope` must be one of {SCOPES}, got {scope!r}.")
    if isinstance(fraction, Mapping):
        if scope != "layer":
            raise ValueError("Per-group fractions need scope='layer'; a global ranking has one fraction.")
        missing = sorted(set(scores) - set(fraction))
        if missing:
            raise ValueError(f"Per-group fractions are missing groups {missing}.")
    ranked: dict[str, torch.Tensor] = {}
    for name, score in scores.items():
        if score.shape != keep[name].shape:
            raise ValueError(f"Scores for {name!r} have shape {tuple(score.shape)}, its mask {tuple(keep[name].shape)}.")
        if torch.isnan(score).any():
            raise ValueError(f"Importance scores of {name!r} contain NaN; cannot rank its units.")
        flat = score.detach().flatten().double().cpu()
        ranked[name] = torch.where(keep[name].flatten().cpu(), flat, torch.tensor(-math.inf, dtype=flat.dtype))

    sizes = {name: value.numel() for name, value in ranked.items()}
    least = {name: min(size, max(min_units(size, min_keep), (floors or {}).get(name, 1))) for name, size in sizes.items()}
    if scope == "layer":
        counts = {}
        for name, size in sizes.items():
            wanted = round((fraction[name] if isinstance(fraction, Mapping) else fraction) * size)
            already = size - int(keep[name].sum())
            counts[name] = min(max(wanted, already), size - least[name])
            if counts[name] < already:
                raise ValueError(f"Group {name!r} already has fewer units than `min_keep` allows.")
    else:
        total = round(fraction * sum(sizes.values()))
        capacity = sum(size - least[name] for name, size in sizes.items())
        if total > capacity:
            raise ValueError(
                f"Pruning {fraction:.4f} of {sum(sizes.values())} units ({total}) would leave a layer below "
                f"`min_keep`={min_keep}; at most {capacity} units can be pruned."
            )
        # Candidates are each group's lowest (size - minimum) scores; the globally lowest `total` of
        # them go. This respects every group's minimum and is optimal among the choices that do.
        total = max(total, sum(size - int(keep[name].sum()) for name, size in sizes.items()))
        values, owners = [], []
        for index, (name, value) in enumerate(ranked.items()):
            order = torch.sort(value, stable=True).indices[: sizes[name] - least[name]]
            values.append(value[order])
            owners.append(torch.full_like(order, index))
        values_all, owners_all = torch.cat(values), torch.cat(owners)
        chosen = torch.sort(values_all, stable=True).indices[:total]
        counts = {name: int((owners_all[chosen] == index).sum()) for index, name in enumerate(ranked)}

    result = {}
    for name, value in ranked.items():
        pruned = torch.sort(value, stable=True).indices[: counts[name]]
        mask = torch.ones(sizes[name], dtype=torch.bool)
        mask[pruned] = False
        result[name] = mask.reshape(keep[name].shape).to(keep[name].device)
    return result


def round_kept(
    scores: Mapping[str, torch.Tensor],
    before: Mapping[str, torch.Tensor],
    after: Mapping[str, torch.Tensor],
    multiple: int,
) -> dict[str, torch.Tensor]:
    """Round each group's kept count up to a multiple (fast kernels like widths of 8).

    Units pruned in this step (kept in ``before``, not in ``after``) are restored, highest score
    first, until the kept count is a multiple of ``multiple`` or the step's pruned units run out.
    Units pruned in earlier steps stay pruned.

    Args:
        scores: Unit scores (same keys and shapes as the masks).
        before: Keep-masks before this step.
        after: Keep-masks chosen by :func:`select_units`.
        multiple: The multiple, >= 1.
    """
    result = {}
    for name, mask in after.items():
        kept = int(mask.sum())
        missing = min(-kept % multiple, mask.numel() - kept)
        candidates = (before[name] & ~mask).flatten().nonzero().flatten()
        mask = mask.clone()
        if missing and candidates.numel():
            order = torch.sort(scores[name].flatten().double().cpu()[candidates.cpu()], descending=True, stable=True).indices
            restore = candidates[order[:missing]]
            flat = mask.flatten()
            flat[restore] = True
            mask = flat.reshape(mask.shape)
        result[name] = mask
    return result


def lopsided(before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor], most: float = 0.8) -> list[str]:
    """Groups that lost more than ``most`` of their units while some other group lost none.

    A global ranking whose scores are not on one scale across layers does this (one layer emptied,
    others untouched); the caller warns with the names.

    Args:
        before: Keep-masks at the start of pruning (all units of each group).
        after: Keep-masks now.
        most: The fraction of a group's units above which its loss is reported.
    """
    lost = {name: 1.0 - float(after[name].float().mean()) for name in after}
    if not any(loss == 0.0 for name, loss in lost.items() if before[name].numel() > 1):
        return []
    return [name for name, loss in lost.items() if loss > most]
