import math
import re

import pytest

from lightning_prune.schedules import Cubic, Geometric, OneShot, Timeline


def test_oneshot_is_one_step_to_target():
    assert OneShot(target=0.8).fractions() == [0.8]


def test_geometric_prunes_per_cycle_of_what_remains_and_lands_on_target():
    fractions = Geometric(target=0.9, per_cycle=0.2).fractions()
    # 0.8**10 = 0.107 remaining is not yet 0.9 pruned, so an 11th cycle lands exactly on 0.9.
    assert len(fractions) == math.ceil(math.log(0.1) / math.log(0.8)) == 11
    for cycle, fraction in enumerate(fractions[:-1], start=1):
        assert fraction == pytest.approx(1 - 0.8**cycle)
    assert fractions[-1] == 0.9
    assert all(b > a for a, b in zip(fractions, fractions[1:]))


def test_geometric_exact_power_does_not_add_an_empty_cycle():
    assert Geometric(target=0.75, per_cycle=0.5).fractions() == [0.5, 0.75]


def test_cubic_follows_zhu_and_gupta():
    fractions = Cubic(target=0.8, cycles=4).fractions()
    assert fractions == pytest.approx([0.8 * (1 - (1 - t / 4) ** 3) for t in range(1, 5)])
    steps = [b - a for a, b in zip([0.0] + fractions, fractions)]
    assert all(later < earlier for earlier, later in zip(steps, steps[1:]))  # big steps first


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: OneShot(target=1.0), "`OneShot.target` must be a number in (0, 1), got 1.0"),
        (lambda: Geometric(target=0.5, per_cycle=None), "`Geometric.per_cycle` must be a number in (0, 1), got None"),
        (lambda: Cubic(target=0.5, cycles=0), "`Cubic.cycles` must be an integer >= 1, got 0"),
    ],
)
def test_invalid_schedules_are_named(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


def test_an_unknown_schedule_name_is_named():
    from lightning_prune.schedules import make_schedule

    with pytest.raises(ValueError, match=re.escape("`schedule` must be a Schedule object or one of ['cubic', 'geometric', 'oneshot'], got 'linear'")):
        make_schedule("linear")


def test_timeline_places_cycles_after_warmup():
    timeline = Timeline(warmup_epochs=3, finetune_epochs=2, num_cycles=3)
    assert [timeline.prune_epoch(c) for c in range(3)] == [3, 5, 7]
    assert timeline.epochs_needed == 9
    assert [timeline.cycle_at(e) for e in range(10)] == [None, None, None, 0, None, 1, None, 2, None, None]


def test_layer_exponents_end_each_matched_group_at_its_own_target():
    import math

    from lightning_prune.schedules import layer_exponents, layer_fraction

    rounds = 14
    exponents = layer_exponents(["features.0", "features.2", "classifier"], {"*classifier": 1 - 0.9**rounds}, 1 - 0.8**rounds)
    assert set(exponents) == {"classifier"}
    assert exponents["classifier"] == pytest.approx(math.log(0.9) / math.log(0.8))
    # after every round the matched layer has lost 10 % of what remained, the others 20 %
    for r in range(1, rounds + 1):
        assert layer_fraction(1 - 0.8**r, exponents["classifier"]) == pytest.approx(1 - 0.9**r)
        assert layer_fraction(1 - 0.8**r) == pytest.approx(1 - 0.8**r)
    with pytest.raises(ValueError, match=r"pattern '\*fc9' matches no prunable layer; prunable: \['classifier'"):
        layer_exponents(["classifier", "features.0"], {"*fc9": 0.5}, 0.8)
