"""Configuration of a pruning run: one small object per concern, each validating its own fields.

:class:`~lightning_prune.Pruning` takes

* a **schedule** (:mod:`lightning_prune.schedules`: ``OneShot``, ``Geometric``, ``Cubic``,
  ``Custom`` or your own ``Schedule`` subclass): how much is removed after each cycle and when;
* a **granularity** (:class:`Weights` or :class:`Neurons`): what a unit is;
* a **ranking** (:class:`Global` or :class:`PerLayer`): which units are compared with which;
* optionally a **guard** (:class:`DropGuard`): accept or roll back each cycle;
* optionally a **lottery** (:class:`Rewind`, with a control :class:`Reinit`, :class:`RandomMask`
  or :class:`SignedConstant`): rewind the weights after each prune (lottery tickets).

Criteria (:mod:`lightning_prune.criteria`) are objects too. Strings stay as shortcuts for the
simplest cases (``"neuron"``, ``"layer"``, ``"geometric"``...). The rules that span two objects
live in one place, :func:`check_combination`.

The objects are plain classes, not dataclasses, so that LightningCLI's YAML can name each one with
``class_path``/``init_args`` (jsonargparse parses a dataclass field by field, without a subclass
choice). Every object has a ``fingerprint()``: the plain values a checkpoint stores to check that a
resumed run is configured as the run that wrote it.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightning_prune.criteria import GRANULARITIES, make_criterion
from lightning_prune.distillation import Distillation
from lightning_prune.ranking import NORMALIZERS
from lightning_prune.schedules import Schedule, make_schedule
from lightning_prune.validation import Config, as_float, check_choice, check_fraction, check_instance, check_int


# ----------------------------------------------------------------------------- granularity
class Granularity(Config):
    """What one unit is. Use :class:`Weights` or :class:`Neurons`."""

    name = "granularity"
    #: Whether channels that feed a channel-mixing norm are pruned, by removal at the prune step (:class:`Neurons`).
    removes_norm_coupled = False


class Weights(Granularity):
    """Single weights (unstructured pruning): masked, never removed, so the shapes stay dense."""

    name = "weight"


class Neurons(Granularity):
    """Whole output neurons, filters, channels or attention heads, with their coupled parameters.

    Args:
        remove: Physically remove pruned neurons once their cycle is accepted (smaller, faster
            model); ``False`` keeps them as masked zeros.
        round_to: Round each layer's kept units up to a multiple of this (e.g. 8, for the widths
            that dense kernels run fastest at); ``None``: no rounding.
        norm_coupled: What to do with channels that feed a channel-mixing norm (LayerNorm,
            RMSNorm, a GroupNorm of one group: a transformer's residual stream, ConvNeXt's
            channels; a GroupNorm of several groups is pruned exactly, a whole group per unit), where a
            zeroed channel still enters the mean and variance, so masking them is not removing
            them. ``"refuse"`` (default): leave them unpruned, with the reason. ``"remove"``:
            prune them by removing them at the prune step, so the model trained from then on is
            the compact one; this needs ``remove=True``, one process and no ``guard`` (each of
            which trains or judges a masked model).

    Raises:
        ValueError: Naming the field, for a value that is not allowed.
    """

    name = "neuron"

    def __init__(self, remove: bool = True, round_to: int | None = None, norm_coupled: str = "refuse") -> None:
        if not isinstance(remove, bool):
            raise ValueError(f"`Neurons.remove` must be True or False, got {remove!r}.")
        self.remove = remove
        self.round_to = None if round_to is None else check_int("Neurons.round_to", round_to, 1)
        if norm_coupled not in NORM_COUPLED:
            raise ValueError(f"`Neurons.norm_coupled` must be one of {NORM_COUPLED}, got {norm_coupled!r}.")
        if norm_coupled == "remove" and not remove:
            raise ValueError("`Neurons.norm_coupled='remove'` removes those channels at the prune step; it needs "
                             "`Neurons.remove=True`, got remove=False (masking them is not removing them).")
        self.norm_coupled = norm_coupled

    @property
    def removes_norm_coupled(self) -> bool:
        """Whether channels that feed a channel-mixing norm are pruned (by removal at the prune step)."""
        return self.norm_coupled == "remove"


#: What :class:`Neurons` does with channels that feed a channel-mixing norm.
NORM_COUPLED = ("refuse", "remove")


GRANULARITY_SHORTCUTS: dict[str, Callable[[], Granularity]] = {"weight": Weights, "neuron": Neurons}


# ----------------------------------------------------------------------------- ranking
class Ranking(Config):
    """Which units compete with which. Use :class:`Global` or :class:`PerLayer`."""

    scope = "ranking"

    def __init__(self, min_keep: float = 0.01) -> None:
        self.min_keep = check_fraction(f"{type(self).__name__}.min_keep", min_keep, low_open=False)

    def normalizer(self, granularity: Granularity) -> str | None:
        """How each group's scores are rescaled before ranking (``None``: raw)."""
        return None


class Global(Ranking):
    """One ranking across all layers: the least important units go wherever they are.

    Args:
        normalize: Rescale each layer's (group's) scores before the ranking by the mean, max or L2
            norm of its kept units' scores (``"mean"``, ``"max"``, ``"l2"``), so that layers whose
            raw scores are on a smaller scale are not emptied first. ``"mean"`` is size-neutral;
            the L2 norm grows with the square root of the number of units, so ``"l2"`` (Molchanov
            et al. 2017's choice for Taylor scores) prunes large layers harder. ``None``: raw
            scores. ``"auto"``: ``"mean"`` for neurons (raw neuron scores emptied single layers of
            torchvision/timm CNNs: 9 of 512 channels kept in resnet18's ``layer4.0.conv1``), raw
            for weights.
        min_keep: Fraction of each layer's units always kept (at least one unit), in [0, 1).

    Raises:
        ValueError: Naming the field, for a value that is not allowed.
    """

    scope = "global"

    def __init__(self, normalize: str | None = "auto", min_keep: float = 0.01) -> None:
        super().__init__(min_keep)
        self.normalize = check_choice("Global.normalize", normalize, (*NORMALIZERS, "auto", None))

    def normalizer(self, granularity: Granularity) -> str | None:
        if self.normalize == "auto":
            return "mean" if isinstance(granularity, Neurons) else None
        return self.normalize


class PerLayer(Ranking):
    """Every layer (neuron group) loses the same fraction of its units, ranked on its own.

    Args:
        overrides: ``{pattern: final fraction}``: layers whose name matches a glob pattern (the
            first that matches) end at their own fraction, following the same schedule: after
            every cycle their kept fraction is the others' to the power
            ``log(1 - own) / log(1 - target)``. With ``Geometric(target=1 - 0.8**n)`` and
            ``{"*classifier": 1 - 0.9**n}`` the output layer loses 10 % of its remaining weights per
            cycle while the others lose 20 % (Frankle & Carbin 2019). Needs ``budget="units"``.
        min_keep: Fraction of each layer's units always kept (at least one unit), in [0, 1).

    Raises:
        ValueError: Naming the field, for a value that is not allowed.
    """

    scope = "layer"

    def __init__(self, overrides: Mapping[str, float] | None = None, min_keep: float = 0.01) -> None:
        super().__init__(min_keep)
        if overrides is not None:
            if not isinstance(overrides, Mapping) or not all(isinstance(key, str) for key in overrides):
                raise ValueError(f"`PerLayer.overrides` must map module-name patterns to fractions, got {overrides!r}.")
            overrides = {key: check_fraction(f"PerLayer.overrides[{key!r}]", value) for key, value in overrides.items()}
        self.overrides = overrides


RANKING_SHORTCUTS: dict[str, Callable[[], Ranking]] = {"global": Global, "layer": PerLayer}


# ----------------------------------------------------------------------------- guard
class DropGuard(Config):
    """Judge every cycle on a validation metric: roll back the cycle and stop if it costs too much.

    Args:
        monitor: The logged validation metric (e.g. ``"val_acc"``).
        max_drop: Largest accepted worsening of ``monitor`` against the dense model (after
            warm-up), a finite number >= 0.
        mode: ``"max"`` if a higher ``monitor`` is better, ``"min"`` if lower is.

    Raises:
        ValueError: Naming the field, for a value that is not allowed.
    """

    def __init__(self, monitor: str, max_drop: float, mode: str = "max") -> None:
        if not (isinstance(monitor, str) and monitor):
            raise ValueError(f"`DropGuard.monitor` must be the name of a logged metric, got {monitor!r}.")
        number = as_float(max_drop)
        if number is None or not math.isfinite(number) or number < 0:
            raise ValueError(f"`DropGuard.max_drop` must be a finite number >= 0, got {max_drop!r}.")
        self.monitor, self.max_drop = monitor, number
        self.mode = check_choice("DropGuard.mode", mode, ("max", "min"))

    def worsening(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline`` (negative if better)."""
        return baseline - value if self.mode == "max" else value - baseline

    def accepts(self, baseline: float, value: float) -> bool:
        """Whether a cycle that moved the metric from ``baseline`` (dense) to ``value`` is kept."""
        return self.worsening(baseline, value) <= self.max_drop


# ----------------------------------------------------------------------------- lottery tickets
class Control(Config):
    """A lottery-ticket control experiment. Use :class:`Reinit`, :class:`RandomMask` or :class:`SignedConstant`."""


class Reinit(Control):
    """Rewind to a fresh random initialisation instead of the original one (Frankle & Carbin 2019).

    Args:
        seed: Seed of the fresh initialisation, in [0, 2**32).
    """

    def __init__(self, seed: int = 1) -> None:
        self.seed = check_int("Reinit.seed", seed, 0, 2**32)


class RandomMask(Control):
    """Prune as many units per layer as the criterion chose, but random ones.

    Args:
        seed: Seed of the random choice, in [0, 2**32).
    """

    def __init__(self, seed: int = 0) -> None:
        self.seed = check_int("RandomMask.seed", seed, 0, 2**32)


class SignedConstant(Control):
    """Rewind the prunable weights to ``sign(w) * std`` of their rewind-point values (Zhou et al. 2019)."""


class Rewind(Config):
    """After each prune, rewind every parameter, buffer, optimizer and LR-scheduler state (lottery tickets).

    Args:
        to: ``"init"`` (the start of training, Frankle & Carbin 2019) or an epoch ``k`` (late
            rewinding to the start of epoch ``k``, Frankle et al. 2020), at most the schedule's
            ``warmup_epochs``. With removed neurons the snapshot is cut to the survivors.
        control: ``None`` (the ticket), or a :class:`Control` experiment.

    Raises:
        ValueError: Naming the field, for a value that is not allowed.
    """

    def __init__(self, to: str | int = "init", control: Control | None = None) -> None:
        if to != "init" and (isinstance(to, bool) or not isinstance(to, numbers.Integral) or to < 0):
            raise ValueError(f"`Rewind.to` must be 'init' or an epoch >= 0, got {to!r}.")
        if control is not None and not isinstance(control, Control):
            raise ValueError(
                f"`Rewind.control` must be None, Reinit(), RandomMask() or SignedConstant(), got {control!r}."
            )
        self.to, self.control = ("init" if to == "init" else int(to)), control

    @property
    def epoch(self) -> int:
        """The epoch at whose start the rewind point is taken."""
        return 0 if self.to == "init" else self.to

    def fingerprint(self) -> dict[str, Any]:
        fingerprint = super().fingerprint()
        if self.control is not None:
            fingerprint["control"] = self.control.fingerprint()
        return fingerprint


# ----------------------------------------------------------------------------- the whole
def make_granularity(value: Granularity | str) -> Granularity:
    """A :class:`Granularity`, from an object, ``"weight"`` or ``"neuron"``.

    Raises:
        ValueError: For anything else.
    """
    return check_instance("granularity", value, Granularity, GRANULARITY_SHORTCUTS)


def make_ranking(value: Ranking | str) -> Ranking:
    """A :class:`Ranking`, from an object, ``"global"`` or ``"layer"``.

    Raises:
        ValueError: For anything else.
    """
    return check_instance("ranking", value, Ranking, RANKING_SHORTCUTS)


class PruningConfig:
    """Everything :class:`~lightning_prune.Pruning` is configured with, checked as a whole.

    Arguments as :class:`~lightning_prune.Pruning`'s (shortcut strings are turned into objects).

    Raises:
        ValueError: For an invalid argument (naming it), or a rule that spans two objects
            (:func:`check_combination`).
    """

    def __init__(self, schedule: Schedule | str = "oneshot", criterion: Any = "l1", granularity: Granularity | str = "weight",
                 ranking: Ranking | str = "global", guard: DropGuard | None = None, lottery: Rewind | None = None,
                 monitor: str | None = None, layers: Sequence[str] | None = None,
                 ignore_layers: Sequence[str] | None = None, distill: Distillation | None = None) -> None:
        self.schedule, self.criterion = make_schedule(schedule), make_criterion(criterion)
        self.granularity, self.ranking = make_granularity(granularity), make_ranking(ranking)
        if guard is not None and not isinstance(guard, DropGuard):
            raise ValueError(f"`guard` must be a DropGuard or None, got {guard!r}.")
        if lottery is not None and not isinstance(lottery, Rewind):
            raise ValueError(f"`lottery` must be a Rewind or None, got {lottery!r}.")
        if monitor is not None and not (isinstance(monitor, str) and monitor):
            raise ValueError(f"`monitor` must be the name of a logged metric or None, got {monitor!r}.")
        for name, patterns in (("layers", layers), ("ignore_layers", ignore_layers)):
            if patterns is not None and (isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns)):
                raise ValueError(f"`{name}` must be a list of module-name patterns or None, got {patterns!r}.")
        if distill is not None and not isinstance(distill, Distillation):
            raise ValueError(f"`distill` must be a Distillation or None, got {distill!r}.")
        try:
            self.schedule.fractions()
        except NotImplementedError as error:
            raise ValueError(f"`schedule`={self.schedule!r} defines no fractions(): use OneShot, Geometric, Cubic, Custom "
                             "or a Schedule subclass that defines fractions().") from error
        check_combination(self.schedule, self.granularity, self.ranking, self.criterion, guard, lottery, monitor)
        self.guard, self.lottery, self.distill = guard, lottery, distill
        self.monitor = guard.monitor if guard is not None else monitor
        self.layers = list(layers) if layers is not None else None
        self.ignore_layers = list(ignore_layers) if ignore_layers is not None else None

    @property
    def removes(self) -> bool:
        """Whether pruned neurons are physically removed."""
        return isinstance(self.granularity, Neurons) and self.granularity.remove

    @property
    def round_to(self) -> int | None:
        """The neuron-count rounding (``None``: none, or weights)."""
        return self.granularity.round_to if isinstance(self.granularity, Neurons) else None

    @property
    def overrides(self) -> dict[str, float] | None:
        """``PerLayer.overrides`` (``None``: none)."""
        return self.ranking.overrides if isinstance(self.ranking, PerLayer) else None

    def fingerprint(self) -> dict[str, Any]:
        """Every setting that shapes the decisions, nested by object; what a checkpoint compares on resume."""
        criterion = getattr(self.criterion, "fingerprint", None)
        return {
            "schedule": self.schedule.fingerprint(),
            "criterion": criterion() if callable(criterion) else {"name": self.criterion.name},
            "granularity": self.granularity.fingerprint(),
            "ranking": self.ranking.fingerprint(),
            "guard": self.guard.fingerprint() if self.guard is not None else None,
            "lottery": self.lottery.fingerprint() if self.lottery is not None else None,
            "distill": self.distill.fingerprint() if self.distill is not None else None,
            "monitor": self.monitor, "layers": self.layers, "ignore_layers": self.ignore_layers,
        }


def check_combination(schedule: Schedule, granularity: Granularity, ranking: Ranking, criterion: Any,
                      guard: DropGuard | None, lottery: Rewind | None, monitor: str | None) -> None:
    """The rules that span two configuration objects, checked once.

    Raises:
        ValueError: Naming both objects' fields, when the criterion cannot score the granularity,
            ``PerLayer.overrides`` meets a params/MACs/latency budget, a latency budget meets masking, a guard or late rewind has no
            warm-up to measure, or ``monitor`` differs from the guard's.
    """
    allowed = getattr(criterion, "granularities", GRANULARITIES)
    if granularity.name not in allowed:
        raise ValueError(
            f"`criterion`={getattr(criterion, 'name', criterion)!r} scores {tuple(allowed)} only, got granularity={granularity!r}."
        )
    check_with = getattr(granularity, "check_with", None)  # a pattern's own rules (NM: the target is 1 - n/m)
    if callable(check_with):
        check_with(schedule.target, schedule.budget, ranking)
    if getattr(schedule.budget, "name", None) == "latency" and not (isinstance(granularity, Neurons) and granularity.remove):
        raise ValueError(
            f"A latency budget (`{type(schedule).__name__}.budget`={schedule.budget!r}) counts the compact model's speed; "
            f"masked weights and masked neurons run at dense speed. It needs granularity=Neurons(remove=True), got "
            f"{granularity!r}."
        )
    if isinstance(ranking, PerLayer) and ranking.overrides and schedule.budget != "units":
        raise ValueError(
            f"`PerLayer.overrides` sets each layer's own fraction of units; it needs the schedule's budget='units', "
            f"got budget={schedule.budget!r}."
        )
    if guard is not None and schedule.warmup_epochs < 1:
        raise ValueError(
            f"`guard` compares against the dense model's `{guard.monitor}`, measured after warm-up; the schedule's "
            f"`warmup_epochs` must be >= 1, got {schedule.warmup_epochs}."
        )
    if lottery is not None and lottery.epoch > schedule.warmup_epochs:
        raise ValueError(
            f"`Rewind.to`={lottery.to!r} is after the first prune; it must be 'init' or an epoch in "
            f"[0, warmup_epochs={schedule.warmup_epochs}]."
        )
    if guard is not None and granularity.removes_norm_coupled:
        raise ValueError(
            f"`Neurons.norm_coupled='remove'` removes channels that feed a norm at the prune step, but `guard` judges "
            f"the masked model before removing it (for these channels another function, and a rollback could not "
            f"restore the architecture): leave out `guard`={guard!r}, or use norm_coupled='refuse'."
        )
    if monitor is not None and guard is not None and monitor != guard.monitor:
        raise ValueError(
            f"`monitor`={monitor!r} differs from `DropGuard.monitor`={guard.monitor!r}; the history records one "
            "metric: leave `monitor` out (the guard's is recorded)."
        )
