"""One prune step on a plain model: score, rank, mask. No Lightning here.

:class:`Pruner` holds what does not change during a run (the prunable layers, the neuron groups,
the dense MAC counts) and turns a fraction into new keep-masks. It never mutates the model while
deciding: :meth:`Pruner.plan` returns new masks, and only :func:`~lightning_prune.masks.apply_masks`
writes zeros, so a failure while scoring or ranking leaves the model as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lightning_prune.counting import count_macs, count_parameters, kept_macs
from lightning_prune.criteria import GRANULARITIES, Criterion, cross_entropy_loss, score_layers
from lightning_prune.layers import PrunableLayer, find_prunable_layers
from lightning_prune.masks import Masks
from lightning_prune.ranking import select_units
from lightning_prune.structure import NeuronStructure

Keep = dict[str, torch.Tensor]
"""Unit keep-masks: layer name to a weight-shaped mask (weight granularity), or neuron-group key to
one entry per unit (neuron granularity)."""


class Pruner:
    """Scores, ranks and masks the units of one model.

    Args:
        model: The model (dense architecture).
        example_input: A batch the model accepts, to find layer order, neuron groups and MACs.
        criterion: The importance criterion.
        granularity: ``"weight"`` or ``"neuron"``.
        scope: ``"global"`` or ``"layer"``.
        min_keep: Minimum fraction of each layer's (group's) units kept.
        layers: Glob patterns of module names to prune (``None``: all supported layers).
        ignore_layers: Glob patterns of module names never to prune.

    Raises:
        ValueError: If ``granularity`` is unknown or no layer can be pruned.
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: Any,
        criterion: Criterion,
        granularity: str = "weight",
        scope: str = "global",
        min_keep: float = 0.01,
        layers: Sequence[str] | None = None,
        ignore_layers: Sequence[str] | None = None,
    ) -> None:
        if granularity not in GRANULARITIES:
            raise ValueError(f"`granularity` must be one of {GRANULARITIES}, got {granularity!r}.")
        self.model = model
        self.criterion = criterion
        self.granularity = granularity
        self.scope = scope
        self.min_keep = min_keep
        self.layers: list[PrunableLayer] = find_prunable_layers(model, example_input, layers, ignore_layers)
        self.structure = NeuronStructure(model, example_input, self.layers) if granularity == "neuron" else None
        if self.structure is not None:
            members = {name for group in self.structure.groups for name, _ in group.members}
            self.scored_layers = [layer for layer in self.layers if layer.name in members]
            if not self.scored_layers:
                raise ValueError(
                    f"No neuron can be pruned: every selected layer ({[layer.name for layer in self.layers]}) is "
                    "the output layer or coupled to it."
                )
        else:
            self.scored_layers = self.layers
        self.dense_macs = count_macs(model, example_input)

    @property
    def skipped_layers(self) -> list[str]:
        """Selected layers whose neurons cannot be pruned (coupled to a kept layer)."""
        return self.structure.skipped if self.structure is not None else []

    def dense_keep(self) -> Keep:
        """Keep-masks with every unit kept."""
        if self.structure is not None:
            return {key: torch.ones(size, dtype=torch.bool) for key, size in self.structure.sizes.items()}
        return {layer.name: torch.ones_like(layer.weight, dtype=torch.bool) for layer in self.layers}

    def check_keep(self, keep: Mapping[str, torch.Tensor]) -> None:
        """Check that keep-masks fit this model (e.g. restored from a checkpoint).

        Raises:
            ValueError: Naming the first group or layer that is missing, extra or of another size.
        """
        expected = {name: tuple(mask.shape) for name, mask in self.dense_keep().items()}
        found = {name: tuple(mask.shape) for name, mask in keep.items()}
        if expected != found:
            diff = sorted(set(expected.items()) ^ set(found.items()))
            raise ValueError(
                f"Pruning masks do not fit this model ({self.granularity} granularity): mismatched entries {diff[:4]}. "
                "Was the checkpoint made with another architecture or other `layers`?"
            )

    def plan(
        self,
        keep: Mapping[str, torch.Tensor],
        fraction: float,
        cycle: int,
        batches: Iterable[Any] = (),
        loss_fn: Callable[[nn.Module, Any], torch.Tensor] = cross_entropy_loss,
    ) -> Keep:
        """New keep-masks with ``fraction`` of all units pruned; ``keep`` only shrinks.

        Args:
            keep: Current keep-masks.
            fraction: Cumulative fraction of units to prune.
            cycle: Index of the cycle (seeds random scores).
            batches: Calibration batches for data-driven criteria.
            loss_fn: Loss for gradient-based criteria.
        """
        sites = self.structure.sites if self.structure is not None else {}
        scores = score_layers(
            self.criterion, self.scored_layers, self.granularity, cycle, self.model, batches, sites, loss_fn
        )
        if self.structure is not None:
            scores = self.structure.group_scores(scores)
        return select_units(scores, keep, fraction, self.scope, self.min_keep)

    def parameter_masks(self, keep: Mapping[str, torch.Tensor]) -> Masks:
        """Parameter keep-masks that realise unit keep-masks (see :mod:`lightning_prune.structure`)."""
        if self.structure is not None:
            return self.structure.parameter_masks(self.model, keep)
        names = {layer.name: layer.weight_name for layer in self.layers}
        return {names[name]: mask.clone() for name, mask in keep.items()}

    def summary(self, keep: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor]) -> dict[str, float]:
        """Sparsity (overall and per layer/group), kept parameters and MACs, as loggable numbers."""
        pruned = sum(int((~mask).sum()) for mask in keep.values())
        units = sum(mask.numel() for mask in keep.values())
        params_kept, params_total = count_parameters(self.model, masks)
        macs = kept_macs(self.dense_macs, masks)
        stats = {
            "sparsity": pruned / units,
            "params": float(params_kept),
            "params_fraction": params_kept / params_total,
            "macs": macs,
            "macs_fraction": macs / self.dense_macs[""] if self.dense_macs[""] else 1.0,
        }
        for name, mask in keep.items():
            stats[f"sparsity/{name}"] = 1.0 - float(mask.float().mean())
        return stats
