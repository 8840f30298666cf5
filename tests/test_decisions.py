"""The run's decisions as pure functions (issue 14): when to prune, accept or roll back, rewind points, controls."""

from __future__ import annotations

import pytest
import torch

from lightning_prune.config import DropGuard, RandomMask, Reinit, Rewind
from lightning_prune.decisions import (controlled_keep, cycle_due, cycle_fraction, judgement_due, numeric,
                                       rewind_point_due, verdict)
from lightning_prune.schedules import Geometric, Timeline
from lightning_prune.state import PruningState


def test_cycle_due_follows_the_timeline_once_per_cycle_and_never_after_a_rollback():
    timeline = Timeline.of(Geometric(target=0.6, per_cycle=0.3, warmup_epochs=2, finetune_epochs=2))
    assert timeline.num_cycles == 3
    state = PruningState()
    assert [cycle_due(timeline, epoch, state) for epoch in range(9)] == [None, None, 0, None, None, None, None, None, None]
    state.cycle = 1
    assert cycle_due(timeline, 4, state) == 1 and cycle_due(timeline, 2, state) is None  # a done cycle never repeats
    state.stopped = True
    assert cycle_due(timeline, 4, state) is None


def test_rewind_point_is_due_once_at_its_epoch():
    state = PruningState()
    assert rewind_point_due(Rewind(2), 2, state) and not rewind_point_due(Rewind(2), 1, state)
    assert rewind_point_due(Rewind("init"), 0, state) and not rewind_point_due(None, 0, state)
    state.rewind_point = {"model": {}}
    assert not rewind_point_due(Rewind("init"), 0, state)


def test_judgement_is_due_after_the_cycles_last_fine_tuning_epoch():
    state = PruningState(pending={"cycle": 0, "epoch": 3})
    assert judgement_due(state, 3) is None and judgement_due(state, 4) == {"cycle": 0, "epoch": 3}
    assert judgement_due(PruningState(), 10) is None


@pytest.mark.parametrize(("mode", "baseline", "value", "kept"), [
    ("max", 0.90, 0.895, True), ("max", 0.90, 0.88, False), ("min", 0.30, 0.305, True), ("min", 0.30, 0.32, False),
])
def test_verdict_accepts_a_drop_up_to_max_drop_in_either_direction(mode, baseline, value, kept):
    assert verdict(DropGuard("m", 0.01, mode=mode), baseline, value) is kept


def test_verdict_names_the_metric_when_it_was_not_logged():
    with pytest.raises(ValueError, match="`guard` needs `val_acc` after warm-up"):
        verdict(DropGuard("val_acc", 0.01), None, 0.5)


def test_cycle_fraction_gives_overridden_groups_their_own_rate():
    fractions = Geometric(target=1 - 0.8**3, per_cycle=0.2).fractions()
    assert cycle_fraction(fractions, 1, {}, ["a"]) == pytest.approx(0.36)
    exponent = torch.log1p(torch.tensor(-(1 - 0.9**3))).item() / torch.log1p(torch.tensor(-(1 - 0.8**3))).item()
    per_group = cycle_fraction(fractions, 2, {"out": exponent}, ["hidden", "out"])
    assert per_group["hidden"] == pytest.approx(1 - 0.8**3) and per_group["out"] == pytest.approx(1 - 0.9**3, rel=1e-5)


def test_random_mask_control_keeps_the_counts_and_only_shrinks_masks():
    before = {"a": torch.tensor([True, True, True, False, True, True])}
    chosen = {"a": torch.tensor([True, True, False, False, False, True])}
    assert controlled_keep(None, before, chosen, 0) is chosen
    assert controlled_keep(Reinit(), before, chosen, 0) is chosen
    drawn = controlled_keep(RandomMask(seed=5), before, chosen, 0)
    assert int(drawn["a"].sum()) == 3 and not bool((drawn["a"] & ~before["a"]).any())
    assert torch.equal(drawn["a"], controlled_keep(RandomMask(seed=5), before, chosen, 0)["a"])  # seeded: resumable


def test_numeric_keeps_numbers_only():
    assert numeric({"cycle": 1, "sparsity": 0.5, "metric": None, "accepted": True, "name": "x"}) == {"cycle": 1, "sparsity": 0.5}
