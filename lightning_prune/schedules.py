"""How much is pruned in each cycle, and when each cycle happens.

A schedule is an object (:class:`OneShot`, :class:`Geometric`, :class:`Cubic`, :class:`Custom`, or
your own :class:`Schedule` subclass) whose :meth:`Schedule.fractions` lists the cumulative fraction
removed after each pruning cycle; the last entry is the target. A cycle is one prune followed by
``finetune_epochs`` epochs of fine-tuning, after ``warmup_epochs`` of ordinary training
(:class:`Timeline`).
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from lightning_prune.latency import Latency
from lightning_prune.validation import Config, check_fraction, check_instance, check_int

BUDGETS = ("units", "params", "macs", "latency")


def make_budget(name: str, value: str | Latency) -> str | Latency:
    """``"units"``, ``"params"`` or ``"macs"`` as given; ``"latency"`` as ``Latency()``; a ``Latency`` as given.

    Raises:
        ValueError: Naming ``name``, for anything else.
    """
    if isinstance(value, Latency):
        return value
    if value not in BUDGETS:
        raise ValueError(f"`{name}` must be one of {BUDGETS} or a Latency(...), got {value!r}.")
    return Latency() if value == "latency" else value


class Schedule(Config):
    """When cycles happen and how much is removed after each: subclass it and define :meth:`fractions`.

    A cycle is one prune followed by ``finetune_epochs`` of fine-tuning, after ``warmup_epochs`` of
    dense training.

    Args:
        target: Final fraction removed, in (0, 1): of prunable units, or of the dense model's
            parameters, MACs or latency (see ``budget``).
        warmup_epochs: Epochs of dense training before the first prune.
        finetune_epochs: Epochs of fine-tuning after each prune (>= 1).
        budget: What ``target`` counts: ``"units"``, ``"params"``, ``"macs"``, or the compact model's
            latency on the fit's device (a :class:`~lightning_prune.latency.Latency`, or ``"latency"``
            for its defaults).

    Raises:
        ValueError: Naming the field, for a value out of range.
    """

    def __init__(self, target: float = 0.5, warmup_epochs: int = 0, finetune_epochs: int = 1,
                 budget: str | Latency = "units") -> None:
        self.target = check_fraction(f"{type(self).__name__}.target", target)
        self.warmup_epochs = check_int(f"{type(self).__name__}.warmup_epochs", warmup_epochs, 0)
        self.finetune_epochs = check_int(f"{type(self).__name__}.finetune_epochs", finetune_epochs, 1)
        self.budget = make_budget(f"{type(self).__name__}.budget", budget)

    def fractions(self) -> list[float]:
        """Cumulative fraction removed after each cycle, non-decreasing, ending at ``target``."""
        raise NotImplementedError(f"{type(self).__name__} must define fractions().")

    def fingerprint(self) -> dict[str, Any]:
        fingerprint = {**super().fingerprint(), "fractions": self.fractions()}
        if isinstance(self.budget, Latency):
            fingerprint["budget"] = self.budget.fingerprint()
        return fingerprint


class OneShot(Schedule):
    """One cycle straight to ``target`` (the lecture's one-shot pruning). Arguments as :class:`Schedule`."""

    def fractions(self) -> list[float]:
        return [self.target]


class Geometric(Schedule):
    """Each cycle removes ``per_cycle`` of what remains (Han et al. 2015; Frankle & Carbin 2019 use 0.2).

    The last cycle lands exactly on ``target``. Other arguments as :class:`Schedule`.

    Args:
        per_cycle: Fraction of the remaining units removed per cycle, in (0, 1).
    """

    def __init__(self, target: float = 0.5, per_cycle: float = 0.2, warmup_epochs: int = 0, finetune_epochs: int = 1,
                 budget: str | Latency = "units") -> None:
        super().__init__(target, warmup_epochs, finetune_epochs, budget)
        self.per_cycle = check_fraction("Geometric.per_cycle", per_cycle)

    def fractions(self) -> list[float]:
        steps = max(1, math.ceil(math.log1p(-self.target) / math.log1p(-self.per_cycle) - 1e-9))
        return [1.0 - (1.0 - self.per_cycle) ** t for t in range(1, steps)] + [self.target]


class Cubic(Schedule):
    """Zhu & Gupta (2017): ``s_t = target * (1 - (1 - t / cycles) ** 3)``: large steps first, small near the target.

    Other arguments as :class:`Schedule`.

    Args:
        cycles: Number of cycles (>= 1).
    """

    def __init__(self, target: float = 0.5, cycles: int = 10, warmup_epochs: int = 0, finetune_epochs: int = 1,
                 budget: str | Latency = "units") -> None:
        super().__init__(target, warmup_epochs, finetune_epochs, budget)
        self.cycles = check_int("Cubic.cycles", cycles, 1)

    def fractions(self) -> list[float]:
        return [self.target * (1.0 - (1.0 - t / self.cycles) ** 3) for t in range(1, self.cycles)] + [self.target]


class Custom(Schedule):
    """Your own schedule: ``fraction(cycle)`` is the cumulative fraction removed after cycle ``cycle``.

    ``target`` is ``fraction(cycles - 1)``. The function is called once here, so its values are
    validated before any training. Other arguments as :class:`Schedule`.

    Args:
        fraction: ``cycle -> fraction`` for ``cycle`` in ``0 .. cycles - 1``, non-decreasing, in (0, 1).
        cycles: Number of cycles (>= 1).

    Raises:
        ValueError: If ``fraction`` is not callable, or its values are out of (0, 1) or decrease.
    """

    def __init__(self, fraction: Callable[[int], float], cycles: int, warmup_epochs: int = 0, finetune_epochs: int = 1,
                 budget: str | Latency = "units") -> None:
        if not callable(fraction):
            raise ValueError(f"`Custom.fraction` must be callable as fraction(cycle) -> float, got {fraction!r}.")
        self.fraction, self.cycles = fraction, check_int("Custom.cycles", cycles, 1)
        self._fractions = [check_fraction(f"Custom.fraction({cycle})", fraction(cycle)) for cycle in range(self.cycles)]
        if any(later < earlier for earlier, later in zip(self._fractions, self._fractions[1:])):
            raise ValueError(f"`Custom.fraction` must not decrease from cycle to cycle, got {self._fractions}.")
        super().__init__(self._fractions[-1], warmup_epochs, finetune_epochs, budget)

    def fractions(self) -> list[float]:
        return list(self._fractions)


SCHEDULES: dict[str, Callable[[], Schedule]] = {"oneshot": OneShot, "geometric": Geometric, "cubic": Cubic}



def make_schedule(value: Schedule | str) -> Schedule:
    """A :class:`Schedule`, from an object or a name of :data:`SCHEDULES`.

    Raises:
        ValueError: For anything else.
    """
    return check_instance("schedule", value, Schedule, SCHEDULES)




@dataclass(frozen=True)
class Timeline:
    """When each cycle prunes, in epochs.

    Attributes:
        warmup_epochs: Epochs of training before the first prune.
        finetune_epochs: Epochs of fine-tuning after each prune.
        num_cycles: Number of prunes.
    """

    warmup_epochs: int
    finetune_epochs: int
    num_cycles: int

    @classmethod
    def of(cls, schedule: Schedule) -> Timeline:
        """The timeline of a schedule."""
        return cls(schedule.warmup_epochs, schedule.finetune_epochs, len(schedule.fractions()))

    def prune_epoch(self, cycle: int) -> int:
        """The epoch at whose start ``cycle`` (0-based) prunes."""
        return self.warmup_epochs + cycle * self.finetune_epochs

    @property
    def epochs_needed(self) -> int:
        """Epochs for warm-up and every cycle's fine-tuning."""
        return self.warmup_epochs + self.num_cycles * self.finetune_epochs

    def cycle_at(self, epoch: int) -> int | None:
        """The cycle that prunes at the start of ``epoch``, if any."""
        offset = epoch - self.warmup_epochs
        if offset < 0 or offset % self.finetune_epochs or offset // self.finetune_epochs >= self.num_cycles:
            return None
        return offset // self.finetune_epochs


def layer_exponents(groups: Iterable[str], layer_targets: Mapping[str, float], target: float) -> dict[str, float]:
    """The schedule exponent of each group matched by a ``PerLayer.overrides`` pattern (the first that matches).

    A group with exponent ``e`` is at cumulative fraction ``1 - (1 - f) ** e`` when the others are at
    ``f`` (:func:`layer_fraction`), so it ends at its own target when they end at ``target``.

    Raises:
        ValueError: If a pattern matches no group (listing the groups).
    """
    groups = list(groups)
    exponents: dict[str, float] = {}
    for pattern, value in layer_targets.items():
        matched = [key for key in groups if fnmatch.fnmatchcase(key, pattern) and key not in exponents]
        if not matched:
            raise ValueError(f"`PerLayer.overrides` pattern {pattern!r} matches no prunable layer; prunable: {sorted(groups)}.")
        exponents.update(dict.fromkeys(matched, math.log1p(-value) / math.log1p(-target)))
    return exponents


def layer_fraction(fraction: float, exponent: float = 1.0) -> float:
    """A group's own cumulative fraction when the schedule is at ``fraction`` (see :func:`layer_exponents`)."""
    return 1.0 - (1.0 - fraction) ** exponent
