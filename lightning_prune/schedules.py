"""How much is pruned in each cycle, and when each cycle happens.

A schedule is the list of cumulative fractions removed after each pruning cycle; the last entry is
the target. A cycle is one prune followed by ``finetune_epochs`` epochs of fine-tuning, after
``warmup_epochs`` of ordinary training.
"""

from __future__ import annotations

import fnmatch
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

SCHEDULES = ("oneshot", "geometric", "cubic")


def sparsity_schedule(kind: str, target: float, per_cycle: float | None = None, cycles: int | None = None) -> list[float]:
    """Cumulative fraction removed after each cycle.

    * ``"oneshot"``: one cycle straight to ``target``.
    * ``"geometric"``: each cycle removes ``per_cycle`` of what remains (Han et al. 2015; Frankle &
      Carbin 2019 use 0.2); the last cycle lands exactly on ``target``.
    * ``"cubic"``: Zhu & Gupta (2017), ``s_t = target * (1 - (1 - t / cycles) ** 3)`` for
      ``t = 1 .. cycles``: large steps first, small steps near the target.

    Args:
        kind: One of :data:`SCHEDULES`.
        target: Final fraction removed, in (0, 1).
        per_cycle: Fraction of the remaining units removed per cycle (``"geometric"`` only).
        cycles: Number of cycles (``"cubic"`` only).

    Returns:
        Non-decreasing fractions, ending at ``target``.

    Raises:
        ValueError: If ``kind`` is unknown or its parameters are missing or out of range.
    """
    if kind not in SCHEDULES:
        raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {kind!r}.")
    if not 0.0 < target < 1.0:
        raise ValueError(f"`target` must be in (0, 1), got {target!r}.")
    if kind == "oneshot":
        return [target]
    if kind == "geometric":
        if per_cycle is None or not 0.0 < per_cycle < 1.0:
            raise ValueError(f"`per_cycle` must be in (0, 1) for schedule='geometric', got {per_cycle!r}.")
        steps = max(1, math.ceil(math.log1p(-target) / math.log1p(-per_cycle) - 1e-9))
        return [1.0 - (1.0 - per_cycle) ** t for t in range(1, steps)] + [target]
    if cycles is None or cycles < 1:
        raise ValueError(f"`cycles` must be an integer >= 1 for schedule='cubic', got {cycles!r}.")
    return [target * (1.0 - (1.0 - t / cycles) ** 3) for t in range(1, cycles)] + [target]


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
    """The schedule exponent of each group matched by a ``layer_targets`` pattern (the first that matches).

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
            raise ValueError(f"`layer_targets` pattern {pattern!r} matches no prunable layer; prunable: {sorted(groups)}.")
        exponents.update(dict.fromkeys(matched, math.log1p(-value) / math.log1p(-target)))
    return exponents


def layer_fraction(fraction: float, exponent: float = 1.0) -> float:
    """A group's own cumulative fraction when the schedule is at ``fraction`` (see :func:`layer_exponents`)."""
    return 1.0 - (1.0 - fraction) ** exponent
