"""One prune step on a plain model: score, rank, mask, and (for neurons) remove. No Lightning here.

:class:`Pruner` holds the prunable layers, the neuron groups and the MAC counts of the current
model, and turns a fraction into new keep-masks. Unit keep-masks are always in *dense coordinates*
(one entry per unit of the original model); for neurons, ``present`` says which units are still
physically in the model. Pruned units are first masked; :meth:`Pruner.commit` removes them.

Deciding never mutates the model: :meth:`Pruner.plan` returns new masks, and only
:func:`~lightning_prune.masks.apply_masks` and :meth:`Pruner.commit` change it, so a failure while
scoring or ranking leaves the model as it was.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lightning_prune.checkpoint import mark_pruned
from lightning_prune.config import Granularity, Neurons, Ranking, make_granularity, make_ranking
from lightning_prune.counting import count_macs, count_parameters, kept_macs
from lightning_prune.criteria import Criterion, score_layers
from lightning_prune.hf_config import follow_configs, pretrained_signatures
from lightning_prune.latency import Latency, LatencyTable, Widths, layer_widths, model_seconds
from lightning_prune.layers import PrunableLayer, find_layers, is_transposed
from lightning_prune.masks import Masks
from lightning_prune.ranking import min_units, normalize_scores, round_kept, select_units
from lightning_prune.schedules import BUDGETS
from lightning_prune.semi_structured import NM, layers_off_pattern, select_nm
from lightning_prune.structure import NeuronStructure
from lightning_prune.surgery import Transaction, UnsupportedModelError, detached_copy, remove_units
from lightning_prune.survivors import Survivors

Keep = dict[str, torch.Tensor]
"""Unit keep-masks: layer name to a weight-shaped mask (weight granularity), or neuron-group key to
one entry per unit of the dense model (neuron granularity)."""


def _current(keep: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor] | None) -> Keep:
    """Restrict dense-coordinate keep-masks to the units physically present."""
    return dict(keep) if present is None else {key: mask[present[key]] for key, mask in keep.items()}


class Pruner:
    """Scores, ranks and masks the units of one model.

    Args:
        model: The model (dense architecture).
        example_input: A batch the model accepts, to find layer order, neuron groups and MACs.
        criterion: The importance criterion.
        granularity: A :class:`~lightning_prune.config.Granularity`, ``"weight"`` or ``"neuron"``.
            With ``Neurons(norm_coupled="remove")`` the groups that feed a channel-mixing norm
            (``structure.inexact``) are pruned too, and their masks are not their removal: call
            :meth:`commit` right after :meth:`plan`, before training or judging the model.
        ranking: A :class:`~lightning_prune.config.Ranking`, ``"global"`` or ``"layer"``.
        layers: Glob patterns of module names to prune (``None``: all supported layers).
        ignore_layers: Glob patterns of module names never to prune.

    Raises:
        ValueError: If ``granularity`` or ``ranking`` is invalid, or no layer can be pruned.
        UnsupportedModelError: If no neuron of the selected layers can be pruned (naming why).
    """

    def __init__(
        self,
        model: nn.Module,
        example_input: Any,
        criterion: Criterion,
        granularity: Granularity | str = "weight",
        ranking: Ranking | str = "global",
        layers: Sequence[str] | None = None,
        ignore_layers: Sequence[str] | None = None,
    ) -> None:
        self.model = model
        self.criterion = criterion
        self.granularity_config = make_granularity(granularity)
        self.ranking = make_ranking(ranking)
        self.granularity = self.granularity_config.name
        self.scope, self.min_keep = self.ranking.scope, self.ranking.min_keep
        self.layers: list[PrunableLayer]
        self.layers, self.excluded_layers = find_layers(model, example_input, layers, ignore_layers)
        if isinstance(self.granularity_config, NM):
            off = layers_off_pattern(self.layers, self.granularity_config)
            self.excluded_layers.update(off)
            self.layers = [layer for layer in self.layers if layer.name not in off]
            if not self.layers:
                raise ValueError(f"No layer fits the N:M pattern: {off}.")
        self._norm_coupled = self.granularity_config.removes_norm_coupled
        self.structure = (NeuronStructure(model, example_input, self.layers, norm_coupled=self._norm_coupled)
                          if self.granularity == "neuron" else None)
        if self.structure is not None:
            members = {name for group in self.structure.groups for name, _ in group.members}
            self.scored_layers = [layer for layer in self.layers if layer.name in members]
            if not self.scored_layers:
                reasons = "; ".join(f"{name!r}: {why}" for name, why in list(self.structure.skipped.items())[:5])
                raise UnsupportedModelError(
                    f"No neuron can be pruned: every selected layer ({[layer.name for layer in self.layers]}) is an "
                    f"output layer or left unpruned ({reasons or 'coupled to an output layer'}). Prune its weights "
                    "(granularity='weight') or select other layers with `layers=`/`ignore_layers=`."
                )
        else:
            self.scored_layers = self.layers
        self.example_input = example_input
        self.macs = count_macs(model, example_input)
        #: Hugging Face models whose config could not follow the last removal (:func:`~lightning_prune.hf_config.follow_configs`).
        self.config_notes: list[str] = []

    @property
    def skipped_layers(self) -> dict[str, str]:
        """Selected layers whose neurons cannot be pruned, each with the reason."""
        return dict(self.structure.skipped) if self.structure is not None else {}

    def dense_keep(self) -> Keep:
        """Keep-masks with every unit of the current model kept."""
        if self.structure is not None:
            return {key: torch.ones(size, dtype=torch.bool) for key, size in self.structure.sizes.items()}
        return {layer.name: torch.ones(layer.weight.shape, dtype=torch.bool) for layer in self.layers}  # on the CPU

    def check_keep(self, keep: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor] | None) -> None:
        """Check that keep-masks (e.g. restored from a checkpoint) fit the current model.

        Raises:
            ValueError: Naming the first group or layer that is missing, extra or of another size.
        """
        expected = {name: tuple(mask.shape) for name, mask in self.dense_keep().items()}
        _check_fits(expected, keep, present, self.granularity)

    def plan(
        self,
        keep: Mapping[str, torch.Tensor],
        fraction: float | Mapping[str, float],
        cycle: int,
        batches: Iterable[Any] = (),
        present: Mapping[str, torch.Tensor] | None = None,
        budget: str | Latency = "units",
        reference: Mapping[str, Any] | None = None,
        step: Callable[[Any, int], Any] | None = None,
    ) -> Keep:
        """New keep-masks that remove ``fraction`` of the budget; ``keep`` only shrinks.

        Args:
            keep: Current keep-masks (dense coordinates).
            fraction: Cumulative fraction to remove: of all (dense) units for ``budget="units"``,
                of ``reference["params"]`` or ``reference["macs"]`` for ``"params"``/``"macs"``, of
                the latency predicted by ``reference["latency"]`` (a :class:`LatencyTable`) for a
                :class:`Latency` budget.
                With a ``PerLayer`` ranking and ``budget="units"``, a mapping gives each layer (group)
                its own fraction.
            cycle: Index of the cycle (seeds random scores).
            batches: Calibration batches for data-driven criteria.
            present: For neurons, which dense units are still in the model (``None``: all).
            budget: ``"units"``, ``"params"``, ``"macs"`` or a :class:`Latency`.
            reference: The dense model's ``{"params", "macs"}``, and ``"latency"``: its
                :class:`LatencyTable` (for the budgets other than units).
            step: The fit's own step for the calibration pass (see :func:`~.criteria.score_layers`).

        The ranking's normaliser and minimum, and the granularity's ``round_to``, are the
        configuration objects given at construction.

        Raises:
            ValueError: If ``budget`` is unknown, ``reference`` is missing for a params/MACs budget,
                per-layer fractions are combined with one, or the budget cannot be reached while
                each layer keeps its minimum.
        """
        config, budget = (budget, budget.name) if isinstance(budget, Latency) else (None, budget)
        if budget not in BUDGETS or (budget == "latency" and config is None):
            raise ValueError(f"`budget` must be one of {BUDGETS[:3]} or a Latency, got {budget!r}.")
        if budget != "units" and (reference is None or budget not in reference):
            raise ValueError(f"budget={budget!r} needs `reference` with the dense model's {budget!r}, got {reference!r}.")
        if config is not None and self.structure is None:
            raise ValueError("A latency budget needs neuron granularity: masked weights run at dense speed.")
        sites = self.structure.sites if self.structure is not None else {}
        scores = score_layers(self.criterion, self.scored_layers, self.granularity, cycle, self.model, batches, sites,
                              step)
        if self.structure is not None:
            scores = self.structure.group_scores(scores)
            if present is not None:
                scores = {key: _scatter(value, present[key]) for key, value in scores.items()}
        normalize = self.ranking.normalizer(self.granularity_config)
        if normalize is not None:
            scores = normalize_scores(scores, keep, normalize)
        if config is not None and config.per_second and self.scope == "global":
            scores = self._per_second(scores, keep, present, reference["latency"])
        round_to = self.granularity_config.round_to if isinstance(self.granularity_config, Neurons) else None

        if isinstance(self.granularity_config, NM):
            if budget != "units" or isinstance(fraction, Mapping):
                raise ValueError("An N:M pattern removes a fraction of the units, the same in every layer.")
            transposed = frozenset(layer.name for layer in self.layers if is_transposed(layer.module))
            return select_nm(scores, keep, fraction, self.granularity_config, transposed)

        def choose(unit_fraction: float | Mapping[str, float]) -> Keep:
            floors = self.structure.floors if self.structure is not None else None
            chosen = select_units(scores, keep, unit_fraction, self.scope, self.min_keep, floors)
            return round_kept(scores, keep, chosen, round_to) if round_to else chosen

        if budget == "units":
            return choose(fraction)
        if isinstance(fraction, Mapping):
            raise ValueError(f"Per-layer fractions count units; they cannot be combined with budget={budget!r}.")
        return self._search(choose, keep, present, fraction, budget, reference)

    def measure_latency(self, config: Latency) -> LatencyTable:
        """Time every layer of the (dense) model at the widths pruning can give it (see :mod:`~lightning_prune.latency`)."""
        least = {key: torch.arange(size) < min(size, max(1, self.structure.floors[key]))
                 for key, size in self.structure.sizes.items()}
        dense, narrowest = layer_widths(self.layers), layer_widths(self.layers, self.parameter_masks(least))
        varying = {name: (dense[name][0] != narrowest[name][0], dense[name][1] != narrowest[name][1]) for name in dense}
        table = LatencyTable.measure(self.model, self.layers, self.example_input, varying, config)
        table.calibrate([point for point in map(lambda f: self._compact_seconds(f, config), _uniform(config.levels)) if point])
        return table

    def _compact_seconds(self, fraction: float, config: Latency) -> tuple[Widths, float] | None:
        """Widths and measured seconds of a compact copy keeping ``fraction`` of every group's units
        (``None`` if the copy cannot be made: the rest then stays fixed)."""
        keep = {key: torch.arange(size) < min(size, max(self.structure.floors[key], round(fraction * size)))
                for key, size in self.structure.sizes.items()}
        try:
            compact = detached_copy(self.model)
            remove_units(compact, self.example_input, {k: i for k, i in self.structure.removal(keep).items() if i})
            return layer_widths(self.layers, self.parameter_masks(keep)), model_seconds(compact, self.example_input, config)
        except Exception:  # noqa: BLE001 - a calibration point is optional
            return None

    def _per_second(self, scores: Keep, keep: Keep, present: Keep | None, table: LatencyTable) -> Keep:
        """Scores divided by each group's predicted seconds saved per unit, relative to the mean (HALP)."""
        now = table.predict(layer_widths(self.layers, self.parameter_masks(keep, present)))
        saved = {}
        for key, mask in keep.items():
            kept = mask.nonzero().flatten()
            step = max(1, len(kept) // 10)
            if len(kept) <= step:
                continue
            trial = {**keep, key: mask.clone().index_fill_(0, kept[:step].to(mask.device), False)}
            saved[key] = (now - table.predict(layer_widths(self.layers, self.parameter_masks(trial, present)))) / step
        positive = [value for value in saved.values() if value > 0]
        mean = sum(positive) / len(positive) if positive else 1.0
        return {key: score / max(saved.get(key, 0.0) / mean, 1e-3) for key, score in scores.items()}

    def _search(self, choose, keep, present, fraction: float, budget: str, reference) -> Keep:
        """Bisect the unit fraction whose keep-masks remove ``fraction`` of the params/MACs/latency."""

        def removed(candidate: Keep) -> float:
            masks = self.parameter_masks(candidate, present)
            if budget == "latency":
                return reference["latency"].removed(layer_widths(self.layers, masks))
            kept = count_parameters(self.model, masks)[0] if budget == "params" else kept_macs(self.macs, masks)
            return 1.0 - kept / reference[budget]

        sizes = {name: mask.numel() for name, mask in keep.items()}
        units = sum(sizes.values())
        low = sum(size - int(keep[name].sum()) for name, size in sizes.items()) / units
        floors = self.structure.floors if self.structure is not None else {}  # e.g. 2 units beside a grouped conv
        capacity = sum(size - min(size, max(min_units(size, self.min_keep), floors.get(name, 1))) for name, size in sizes.items())
        high = capacity / units if self.scope == "global" else 1.0 - self.min_keep
        if removed(choose(high)) < fraction:
            raise ValueError(
                f"Removing {fraction:.4f} of the {budget} is out of reach: at most {removed(choose(high)):.4f} "
                f"while each layer keeps `min_keep`={self.min_keep} of its units."
                + (" The rest of the model and each layer's fixed cost stay: a larger `Latency.batch_size` makes "
                   "the layers' share larger." if budget == "latency" else "")
            )
        while high - low > 0.5 / units:
            middle = (low + high) / 2
            if removed(choose(middle)) >= fraction:
                high = middle
            else:
                low = middle
        return choose(high)

    def parameter_masks(self, keep: Mapping[str, torch.Tensor], present: Mapping[str, torch.Tensor] | None = None) -> Masks:
        """Parameter keep-masks of the current model that realise unit keep-masks."""
        if self.structure is not None:
            return self.structure.parameter_masks(self.model, _current(keep, present))
        names = {layer.name: layer.weight_name for layer in self.layers}
        return {names[name]: mask.clone() for name, mask in keep.items()}

    def commit(
        self,
        keep: Mapping[str, torch.Tensor],
        present: Mapping[str, torch.Tensor] | None = None,
        optimizers: Sequence[torch.optim.Optimizer] = (),
    ) -> tuple[dict[str, list[int]], dict[str, Survivors]]:
        """Physically remove the masked neurons, carrying the optimizers over to the new parameters.

        Args:
            keep: Keep-masks (dense coordinates).
            present: Units in the model before the removal (``None``: all).
            optimizers: Optimizers of the model.

        Returns:
            The removal done, in the model's coordinates before it (the next step of the plan), and
            the surviving entries (:class:`~lightning_prune.survivors.Survivors`: kept indices per
            sliced dimension) of every changed parameter and buffer (empty if nothing changed).

        Raises:
            ValueError: For weight granularity (single weights cannot be removed).
            Exception: Whatever the removal raised, after the model was put back as it was.
        """
        if self.structure is None:
            raise ValueError("Only neurons can be removed; weight pruning keeps the dense shapes.")
        removal = {key: idx for key, idx in self.structure.removal(_current(keep, present)).items() if idx}
        kept: dict[str, Survivors] = {}
        if removal:
            with Transaction(self.model, optimizers):  # removal, re-trace, MACs and checks: all or nothing
                signatures = pretrained_signatures(self.model)
                kept = remove_units(self.model, self.example_input, removal, optimizers)
                structure = NeuronStructure(self.model, self.example_input, self.layers, verify=False,
                                            refused=self.structure.refused, norm_coupled=self._norm_coupled)
                macs = count_macs(self.model, self.example_input)
                _check_fits({key: (size,) for key, size in structure.sizes.items()}, keep, keep)
                self.config_notes = follow_configs(self.model, signatures)  # Hugging Face width fields (module attributes)
            self.structure, self.macs = structure, macs
            mark_pruned(self.model)  # its shapes are no longer its class's (see checkpoint.restore_pruned)
        return removal, kept

    def summary(self, keep: Mapping[str, torch.Tensor], masks: Mapping[str, torch.Tensor],
                latency: LatencyTable | None = None) -> dict[str, float]:
        """Sparsity (overall and per layer/group), kept parameters and MACs of the current model, and
        with a latency ``table``, the predicted fraction of the dense latency kept (``latency_fraction``)."""
        pruned = sum(int((~mask).sum()) for mask in keep.values())
        units = sum(mask.numel() for mask in keep.values())
        params_kept, _ = count_parameters(self.model, masks)
        stats = {"sparsity": pruned / units, "params": float(params_kept), "macs": kept_macs(self.macs, masks)}
        if latency is not None:
            stats["latency_fraction"] = 1.0 - latency.removed(layer_widths(self.layers, masks))
        for name, mask in keep.items():
            stats[f"sparsity/{name}"] = 1.0 - float(mask.float().mean())
        return stats


def _check_fits(
    expected: Mapping[str, tuple[int, ...]],
    keep: Mapping[str, torch.Tensor],
    present: Mapping[str, torch.Tensor] | None,
    granularity: str = "neuron",
) -> None:
    """Raise ``ValueError`` naming the groups/layers whose keep-masks do not fit ``expected`` shapes."""
    found = {name: tuple(mask.shape) for name, mask in _current(keep, present).items()}
    if dict(expected) != found:
        diff = sorted(set(dict(expected).items()) ^ set(found.items()))
        raise ValueError(
            f"Pruning masks do not fit this model ({granularity} granularity): mismatched entries {diff[:4]}. "
            "Was the checkpoint made with another architecture or other `layers`?"
        )


def _uniform(levels: int) -> list[float]:
    """The kept fractions at which the rest of the model is measured on compact copies."""
    return [step / (levels - 1) for step in range(1, levels - 1)] or [0.5]


def _scatter(scores: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
    """Scores of the present units placed at their dense positions (removed units get -inf)."""
    dense = torch.full(present.shape, -torch.inf, dtype=scores.dtype)
    dense[present.cpu()] = scores.cpu()
    return dense
