"""The decisions of a pruning run, as pure functions of its configuration and state.

:class:`~lightning_prune.Pruning` asks these at the start of every epoch and acts on the answers
(score, mask, remove, roll back); they read plain values only, so they are tested without a
``Trainer`` (``tests/test_decisions.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lightning_prune.config import Control, DropGuard, RandomMask, Rewind
from lightning_prune.lottery import shuffle_within_groups
from lightning_prune.schedules import Timeline, layer_fraction
from lightning_prune.state import PruningState


def cycle_due(timeline: Timeline, epoch: int, state: PruningState) -> int | None:
    """The cycle to prune at the start of ``epoch``: the next one, if the timeline says so and no rollback stopped the run."""
    cycle = timeline.cycle_at(epoch)
    return None if state.stopped or cycle is None or cycle != state.cycle else cycle


def rewind_point_due(lottery: Rewind | None, epoch: int, state: PruningState) -> bool:
    """Whether the lottery's rewind point is taken at the start of ``epoch`` (once)."""
    return lottery is not None and state.rewind_point is None and epoch == lottery.epoch


def judgement_due(state: PruningState, before_epoch: int) -> dict[str, int] | None:
    """The pending ``{"cycle", "epoch"}`` whose fine-tuning has ended before ``before_epoch``, if any."""
    pending = state.pending
    return pending if pending is not None and before_epoch > pending["epoch"] else None


def verdict(guard: DropGuard, baseline: float | None, value: float | None) -> bool:
    """Whether the guard keeps a cycle that moved the metric from ``baseline`` (dense) to ``value``.

    Raises:
        ValueError: If either metric was not logged.
    """
    if baseline is None or value is None:
        raise ValueError(f"`guard` needs `{guard.monitor}` after warm-up and after each cycle; it was not logged.")
    return guard.accepts(baseline, value)


def cycle_fraction(fractions: Sequence[float], cycle: int, exponents: Mapping[str, float],
                   groups: Sequence[str]) -> float | dict[str, float]:
    """The cumulative fraction to remove after ``cycle``: one number, or one per group (``PerLayer.overrides``)."""
    fraction = fractions[cycle]
    if not exponents:
        return fraction
    return {key: layer_fraction(fraction, exponents.get(key, 1.0)) for key in groups}


def controlled_keep(control: Control | None, before: Mapping[str, torch.Tensor], chosen: dict[str, torch.Tensor],
                    cycle: int) -> dict[str, torch.Tensor]:
    """The masks a lottery control keeps instead of the criterion's: ``RandomMask`` draws as many per group, at random."""
    if not isinstance(control, RandomMask):
        return chosen
    generator = torch.Generator().manual_seed(control.seed * 1_000_003 + cycle)
    return shuffle_within_groups(before, chosen, generator)


def numeric(row: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of a history row (what goes to the loggers)."""
    return {key: value for key, value in row.items() if isinstance(value, (int, float)) and not isinstance(value, bool)}
