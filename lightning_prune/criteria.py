"""Importance criteria: one score per unit, higher meaning more important.

A unit is a weight for ``granularity="weight"`` (the score has the weight's shape) and an output
neuron or filter for ``granularity="neuron"`` (one score per row of the weight). Ranking, not the
criterion, decides whether scores are compared per layer or globally.

Criteria that need data (APoZ, Wanda) or gradients (Taylor) observe a calibration pass run by
:func:`score_layers` over ``batches`` training batches. In a fit the pass runs the module's own
step (its ``training_step``, or a ``pruning_calibration_step`` it defines), so dict batches,
preprocessing inside ``training_step`` and the user's own loss work as they do in training; a
criterion told ``forward=``/``loss=`` runs that instead. Any object with the attributes and methods
of :class:`Criterion` can be passed to :class:`~lightning_prune.Pruning` instead of a name.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_prune.layers import PrunableLayer, is_transposed
from lightning_prune.statistics import WeightGradientProduct, ZeroActivationRate
from lightning_prune.tracing import output_tensors
from lightning_prune.validation import check_int, without_defaults

GRANULARITIES = ("weight", "neuron")



def _per_unit(values: torch.Tensor) -> torch.Tensor:
    """Sum a weight-shaped tensor over everything but the output-unit dimension."""
    return values.flatten(1).sum(dim=1)


def _units_first(layer: PrunableLayer, values: torch.Tensor) -> torch.Tensor:
    """A weight-shaped tensor with the layer's output units in dimension 0 (HF ``Conv1D`` stores them in 1)."""
    return values.transpose(0, 1) if is_transposed(layer.module) else values


class Criterion:
    """Base class and protocol of importance criteria.

    Attributes:
        name: Short name used in logs.
        needs_activations: The criterion observes a forward pass over calibration data.
        needs_gradients: The criterion observes gradients of the loss over calibration data.
        granularities: The granularities the criterion can score.
        batches: Calibration batches per cycle (criteria that need data).
    """

    name = "criterion"
    needs_activations = False
    needs_gradients = False
    granularities: tuple[str, ...] = GRANULARITIES
    batches = 0

    def fingerprint(self) -> dict[str, Any]:
        """The plain settings that shape the scores, without those at their ``__init__`` defaults (what a
        checkpoint compares on resume)."""
        plain = (int, float, str, bool, type(None))
        settings = {key: value for key, value in vars(self).items() if not key.startswith("_") and isinstance(value, plain)}
        return {"type": type(self).__name__, "name": self.name, **without_defaults(type(self), settings)}

    def calibration_forward(self, model: nn.Module, batch: Any) -> None:
        """Feed one calibration batch to the model (criteria that observe activations)."""
        model(batch_input(batch))

    def calibration_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        """The loss of one calibration batch (criteria that observe gradients)."""
        return cross_entropy_loss(model, batch)

    def begin(self, layers: Sequence[PrunableLayer], sites: Mapping[str, nn.Module]) -> None:
        """Reset statistics and start observing (called before a calibration pass).

        Args:
            layers: The layers to score.
            sites: Layer name to the module whose output is the layer's pre-activation (its
                BatchNorm, or the layer itself).
        """

    def observe_gradients(self, layers: Sequence[PrunableLayer], grads: Sequence[torch.Tensor | None]) -> None:
        """Record one calibration batch's loss gradients with respect to each layer's weight."""

    def end(self) -> None:
        """Stop observing (remove hooks)."""

    def scores(self, layers: Sequence[PrunableLayer], granularity: str, cycle: int) -> dict[str, torch.Tensor]:
        """Scores of every unit of every layer, keyed by layer name."""
        raise NotImplementedError


class Magnitude(Criterion):
    """Weight magnitude (Han et al. 2015): ``|w|`` per weight; per neuron the p-norm of its weights.

    Args:
        p: 1 for L1, 2 for L2.
    """

    def __init__(self, p: int = 1) -> None:
        if isinstance(p, bool) or p not in (1, 2):
            raise ValueError(f"`Magnitude.p` must be 1 (L1) or 2 (L2), got {p!r}.")
        self.p = p
        self.name = f"l{p}"

    def scores(self, layers: Sequence[PrunableLayer], granularity: str, cycle: int) -> dict[str, torch.Tensor]:
        result = {}
        for layer in layers:
            weight = layer.weight.detach()
            if granularity == "weight":
                result[layer.name] = weight.abs() ** self.p
            else:
                result[layer.name] = torch.linalg.vector_norm(layer.unit_weight.detach().flatten(1), ord=self.p, dim=1)
        return result


class RandomImportance(Criterion):
    """Random scores: the control every pruning paper compares against.

    Scores depend only on ``seed`` and the cycle, so a resumed run and every DDP rank draw the same.

    Args:
        seed: Seed of the draws, in [0, 2**32).

    Raises:
        ValueError: If ``seed`` is out of range.
    """

    name = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = check_int("RandomImportance.seed", seed, 0, 2**32)  # seed * 1_000_003 + cycle < 2**64

    def scores(self, layers: Sequence[PrunableLayer], granularity: str, cycle: int) -> dict[str, torch.Tensor]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + cycle)
        shape = (lambda layer: layer.weight.shape) if granularity == "weight" else (lambda layer: (layer.num_units,))
        return {layer.name: torch.rand(shape(layer), generator=generator) for layer in layers}


class ObservingCriterion(Criterion):
    """Base of the criteria that observe activations over calibration batches through hooks (APoZ, Wanda).

    Args:
        batches: Training batches observed per cycle (>= 1).
        forward: ``forward(model, batch)`` runs the model on one training batch. Default: in a
            fit, the module's ``training_step`` (or its ``pruning_calibration_step``); outside
            one, and under manual optimization, ``model(batch[0])`` for tuple batches and
            ``model(batch)`` otherwise.

    Raises:
        ValueError: If ``batches`` is not an integer >= 1 or ``forward`` is not callable.
    """

    needs_activations = True

    def __init__(self, batches: int = 16, forward: Callable[[nn.Module, Any], Any] | None = None) -> None:
        self.batches = check_int(f"{type(self).__name__}.batches", batches, 1)
        if forward is not None and not callable(forward):
            raise ValueError(
                f"`{type(self).__name__}.forward` must be callable as forward(model, batch) or None, got {forward!r}."
            )
        self.forward = forward
        self._stats: dict[str, Any] = {}
        self._handles: list[Any] = []

    def calibration_forward(self, model: nn.Module, batch: Any) -> None:
        if self.forward is None:
            return super().calibration_forward(model, batch)
        self.forward(model, batch)

    def end(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class APoZ(ObservingCriterion):
    """Activation frequency, ``1 - APoZ``: how often each neuron's post-ReLU output is non-zero.

    Hu et al. (2016), "Network Trimming": neurons that are mostly zero over the data are unimportant.
    Counts are :class:`~lightning_prune.statistics.ZeroActivationRate` metrics, reduced across ranks.
    Arguments (``batches``, ``forward``) as :class:`ObservingCriterion`.
    """

    name = "apoz"
    granularities = ("neuron",)

    def begin(self, layers: Sequence[PrunableLayer], sites: Mapping[str, nn.Module]) -> None:
        self.end()
        self._stats = {}
        for layer in layers:
            unit_dim = -1 if isinstance(layer.module, nn.Linear) else 1
            stat = ZeroActivationRate(layer.num_units, unit_dim).to(layer.weight.device)
            self._stats[layer.name] = stat
            site = sites.get(layer.name, layer.module)
            self._handles.append(site.register_forward_hook(lambda module, args, output, stat=stat: stat.update(output)))

    def scores(self, layers: Sequence[PrunableLayer], granularity: str, cycle: int) -> dict[str, torch.Tensor]:
        if not self._stats:
            raise RuntimeError("APoZ has no statistics: run a calibration pass (`score_layers`) first.")
        return {layer.name: 1.0 - self._stats[layer.name].compute() for layer in layers}


class Taylor(Criterion):
    """First-order Taylor importance ``|w * dL/dw|`` (Molchanov et al. 2017/2019).

    Per weight, the absolute product of the weight and the loss gradient summed over calibration
    batches; per neuron, the absolute sum of those products over the neuron's weights (the
    first-order change of the loss when the whole neuron is removed).

    Args:
        batches: Training batches whose gradients are summed per cycle (>= 1).
        loss: ``loss(model, batch) -> Tensor`` for one training batch. Default: in a fit, the
            loss the module's ``training_step`` (or its ``pruning_calibration_step``) returns;
            outside one, the cross-entropy of the model's logits on ``batch[0]`` against
            ``batch[1]``.

    Raises:
        ValueError: If ``batches`` is not an integer >= 1 or ``loss`` is not callable.
    """

    name = "taylor"
    needs_gradients = True

    def __init__(self, batches: int = 16, loss: Callable[[nn.Module, Any], torch.Tensor] | None = None) -> None:
        self.batches = check_int("Taylor.batches", batches, 1)
        if loss is not None and not callable(loss):
            raise ValueError(f"`Taylor.loss` must be callable as loss(model, batch) -> Tensor or None, got {loss!r}.")
        self.loss = loss
        self._stats: dict[str, WeightGradientProduct] = {}

    def calibration_loss(self, model: nn.Module, batch: Any) -> torch.Tensor:
        return cross_entropy_loss(model, batch) if self.loss is None else self.loss(model, batch)

    def begin(self, layers: Sequence[PrunableLayer], sites: Mapping[str, nn.Module]) -> None:
        self._stats = {layer.name: WeightGradientProduct(layer.weight.shape).to(layer.weight.device) for layer in layers}

    def observe_gradients(self, layers: Sequence[PrunableLayer], grads: Sequence[torch.Tensor | None]) -> None:
        for layer, grad in zip(layers, grads):
            if grad is not None:
                self._stats[layer.name].update(layer.weight, grad)

    def scores(self, layers: Sequence[PrunableLayer], granularity: str, cycle: int) -> dict[str, torch.Tensor]:
        if not self._stats:
            raise RuntimeError("Taylor has no statistics: run a calibration pass (`score_layers`) first.")
        totals = {layer.name: self._stats[layer.name].compute() for layer in layers}
        if granularity == "weight":
            return {name: total.abs() for name, total in totals.items()}
        return {layer.name: _per_unit(_units_first(layer, totals[layer.name])).abs() for layer in layers}


#: Criterion names accepted by :class:`~lightning_prune.Pruning`, each with its factory.
CRITERIA: dict[str, Callable[[], Criterion]] = {
    "l1": lambda: Magnitude(1),
    "l2": lambda: Magnitude(2),
    "apoz": APoZ,
    "taylor": Taylor,
    "random": RandomImportance,
}  # and "wanda", registered at the end of this module


def make_criterion(criterion: str | Criterion) -> Criterion:
    """Turn a name from :data:`CRITERIA` into a criterion; pass objects through.

    Raises:
        ValueError: If a name is unknown (listing the valid ones) or an object lacks ``scores``.
    """
    if isinstance(criterion, str):
        if criterion not in CRITERIA:
            raise ValueError(f"`criterion` must be one of {sorted(CRITERIA)} or a Criterion object, got {criterion!r}.")
        return CRITERIA[criterion]()
    if isinstance(criterion, type):
        raise ValueError(
            f"`criterion` must be a Criterion instance, got the class {criterion.__name__}: pass {criterion.__name__}(...)."
        )
    if not callable(getattr(criterion, "scores", None)):
        raise ValueError(
            f"`criterion` object {criterion!r} has no `scores(layers, granularity, cycle)` method; "
            f"subclass lightning_prune.criteria.Criterion or pass one of {sorted(CRITERIA)}."
        )
    return criterion


def batch_input(batch: Any) -> Any:
    """The model input of a batch: the first element of a tuple/list batch, else the batch itself."""
    return batch[0] if isinstance(batch, (tuple, list)) else batch


def cross_entropy_loss(model: nn.Module, batch: Any) -> torch.Tensor:
    """Default calibration loss for gradient criteria: cross-entropy of ``model(x)`` against ``y``.

    The logits are ``model(x)`` itself or, for an output object (a Hugging Face ``ModelOutput``, a
    tuple or a dict), its first floating tensor (``logits`` when no loss was computed).
    """
    inputs, targets = batch[0], batch[1]
    output = model(inputs)
    logits = output if torch.is_tensor(output) else next(iter(output_tensors(output)), None)
    if logits is None:
        raise ValueError(f"The model returned {type(output).__name__} without a tensor; pass `Taylor(loss=...)`.")
    return F.cross_entropy(logits, targets)


def follows_fit_step(criterion: Criterion) -> bool:
    """Whether a fit's calibration runs the module's own step rather than the criterion's.

    True for a criterion told no ``forward``/``loss`` that keeps the default calibration methods;
    a criterion overriding ``calibration_forward``/``calibration_loss`` keeps its own.
    """
    if getattr(criterion, "forward", None) is not None or getattr(criterion, "loss", None) is not None:
        return False
    kind = type(criterion)
    return kind.calibration_forward in _DEFAULT_CALIBRATION and kind.calibration_loss in _DEFAULT_CALIBRATION


def step_loss(output: Any) -> torch.Tensor | None:
    """The loss in what a step returned: a tensor, a dict's ``"loss"``, or ``None`` (a skipped batch).

    Raises:
        ValueError: If the output is none of these.
    """
    if output is None or torch.is_tensor(output):
        return output
    if isinstance(output, Mapping) and torch.is_tensor(output.get("loss")):
        return output["loss"]
    raise ValueError(
        f"The calibration step returned {type(output).__name__}, not a loss: return a tensor or a dict with 'loss' "
        "from training_step (or from `pruning_calibration_step`), or pass Taylor(loss=lambda model, batch: ...)."
    )


def score_layers(
    criterion: Criterion,
    layers: Sequence[PrunableLayer],
    granularity: str,
    cycle: int,
    model: nn.Module | None = None,
    batches: Iterable[Any] = (),
    sites: Mapping[str, nn.Module] | None = None,
    step: Callable[[Any, int], Any] | None = None,
) -> dict[str, torch.Tensor]:
    """Score every unit, running a calibration pass first when the criterion needs one.

    The pass runs the model in eval mode (BatchNorm statistics untouched) and leaves ``.grad``
    alone: gradients are taken with ``torch.autograd.grad``.

    Args:
        criterion: The criterion.
        layers: Layers to score.
        granularity: ``"weight"`` or ``"neuron"``.
        cycle: Index of the pruning cycle (seeds random scores).
        model: The model, for criteria that need data.
        batches: Calibration batches, for criteria that need data.
        sites: Layer name to the module whose output is the layer's pre-activation.
        step: ``step(batch, index)``, the fit's own step (``training_step``): runs a calibration
            batch through the model the way training does and returns its loss (a tensor or a
            dict with ``"loss"``). Used instead of the criterion's defaults when it was told no
            ``forward``/``loss`` of its own (:func:`follows_fit_step`).

    Returns:
        Layer name to scores (weight-shaped, or one per output unit).

    Raises:
        ValueError: If the criterion needs data and no model or batch is given, ``step`` returns
            something without a loss, or a score is not finite (naming the layer).
    """
    if criterion.needs_activations or criterion.needs_gradients:
        if model is None:
            raise ValueError(f"Criterion {criterion.name!r} needs a model and calibration batches.")
        was_training = model.training
        seen = losses = 0
        own = step is None or not follows_fit_step(criterion)
        criterion.begin(layers, sites or {})
        try:
            model.eval()
            for index, batch in enumerate(batches):
                seen += 1
                if criterion.needs_gradients:
                    with torch.enable_grad():
                        loss = criterion.calibration_loss(model, batch) if own else step_loss(step(batch, index))
                        if loss is None:  # the step skipped this batch, as training_step may
                            continue
                        grads = torch.autograd.grad(loss, [layer.weight for layer in layers], allow_unused=True)
                    criterion.observe_gradients(layers, grads)
                    losses += 1
                elif own:
                    with torch.no_grad():
                        criterion.calibration_forward(model, batch)
                else:
                    with torch.no_grad():
                        step(batch, index)
        finally:
            criterion.end()
            model.train(was_training)
        if seen == 0:
            raise ValueError(f"Criterion {criterion.name!r} needs calibration batches, but none were given.")
        if criterion.needs_gradients and losses == 0:
            raise ValueError(f"Criterion {criterion.name!r} needs a loss, but the step skipped all {seen} calibration "
                             "batches (training_step returned None): return the loss, or pass Taylor(loss=...).")
    scores = criterion.scores(layers, granularity, cycle)
    for layer in layers:
        score = scores.get(layer.name)
        if score is None:
            raise ValueError(f"Criterion {criterion.name!r} returned no scores for layer {layer.name!r}.")
        if not torch.isfinite(score).all():
            raise ValueError(f"Criterion {criterion.name!r} gave non-finite scores for layer {layer.name!r}.")
    return scores


# Wanda lives in its own module, on top of the base class above; it is registered here so that
# ``criterion="wanda"`` and ``from lightning_prune.criteria import Wanda`` work like the others.
from lightning_prune.wanda import Wanda  # noqa: E402

CRITERIA["wanda"] = Wanda

#: The calibration methods that leave the pass to the fit's step when one is given.
_DEFAULT_CALIBRATION = (Criterion.calibration_forward, Criterion.calibration_loss, ObservingCriterion.calibration_forward,
                        Taylor.calibration_loss)
