import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_prune.ranking import min_units, normalize_scores, select_units


def _scores(sizes, seed):
    generator = torch.Generator().manual_seed(seed)
    return {f"layer{i}": torch.randn(size, generator=generator) for i, size in enumerate(sizes)}


def _dense(scores):
    return {name: torch.ones_like(value, dtype=torch.bool) for name, value in scores.items()}


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 60), min_size=1, max_size=5),
    fraction=st.floats(0.05, 0.9),
    seed=st.integers(0, 10_000),
)
def test_global_ranking_prunes_the_lowest_scores_within_the_minimum(sizes, fraction, seed):
    scores = _scores(sizes, seed)
    min_keep = 0.0
    capacity = sum(size - min_units(size, min_keep) for size in sizes)
    total = round(fraction * sum(sizes))
    if total > capacity:
        with pytest.raises(ValueError, match="min_keep"):
            select_units(scores, _dense(scores), fraction, "global", min_keep)
        return
    keep = select_units(scores, _dense(scores), fraction, "global", min_keep)
    assert sum(int((~mask).sum()) for mask in keep.values()) == total
    # Every kept score >= every pruned score, except in a layer held at its minimum.
    free = [name for name, mask in keep.items() if int(mask.sum()) > min_units(mask.numel(), min_keep)]
    kept = torch.cat([scores[n][keep[n]] for n in free]) if free else torch.tensor([])
    pruned = torch.cat([scores[n][~keep[n]] for n in keep])
    if kept.numel() and pruned.numel():
        assert kept.min() >= pruned.max()


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(2, 80), min_size=1, max_size=4), fraction=st.floats(0.05, 0.95), seed=st.integers(0, 999))
def test_layer_ranking_prunes_each_layer_by_the_fraction(sizes, fraction, seed):
    scores = _scores(sizes, seed)
    keep = select_units(scores, _dense(scores), fraction, "layer", min_keep=0.0)
    for name, mask in keep.items():
        expected = min(round(fraction * mask.numel()), mask.numel() - 1)
        assert int((~mask).sum()) == expected
        assert scores[name][mask].min() >= scores[name][~mask].max() if (~mask).any() else True


def test_masks_only_shrink_even_when_scores_change():
    first = _scores([50, 30], seed=1)
    keep = select_units(first, _dense(first), 0.4, "global", 0.01)
    again = select_units(_scores([50, 30], seed=2), keep, 0.6, "global", 0.01)
    for name in keep:
        assert not (again[name] & ~keep[name]).any()  # nothing regrows
    assert sum(int((~m).sum()) for m in again.values()) == round(0.6 * 80)


def test_global_ranking_keeps_the_minimum_of_a_layer_with_tiny_scores():
    scores = {"big": torch.rand(100) + 1.0, "tiny": torch.rand(10) * 1e-6}
    keep = select_units(scores, _dense(scores), 0.5, "global", min_keep=0.2)
    assert int(keep["tiny"].sum()) == 2  # ceil(0.2 * 10), not wiped out
    assert int((~keep["big"]).sum()) == 55 - 8


def test_weight_shaped_scores_keep_their_shape():
    scores = {"w": torch.randn(4, 3, 2)}
    keep = select_units(scores, _dense(scores), 0.5, "layer", 0.0)
    assert keep["w"].shape == (4, 3, 2) and int((~keep["w"]).sum()) == 12


def test_nan_scores_name_the_layer():
    scores = {"fc1": torch.tensor([1.0, math.nan])}
    with pytest.raises(ValueError, match="'fc1' contain NaN"):
        select_units(scores, _dense(scores), 0.5)


def test_unknown_scope_is_named():
    scores = {"fc1": torch.ones(3)}
    with pytest.raises(ValueError, match=r"`scope` must be one of \('global', 'layer'\), got 'local'"):
        select_units(scores, _dense(scores), 0.5, "local")


def test_layer_ranking_takes_one_fraction_per_group():
    scores = {"a": torch.arange(10.0), "b": torch.arange(20.0)}
    keep = {name: torch.ones_like(value, dtype=torch.bool) for name, value in scores.items()}
    chosen = select_units(scores, keep, {"a": 0.3, "b": 0.75}, scope="layer", min_keep=0.0)
    assert torch.equal(chosen["a"], torch.arange(10) >= 3)
    assert torch.equal(chosen["b"], torch.arange(20) >= 15)
    with pytest.raises(ValueError, match="missing groups"):
        select_units(scores, keep, {"a": 0.3}, scope="layer")
    with pytest.raises(ValueError, match="need scope='layer'"):
        select_units(scores, keep, {"a": 0.3, "b": 0.3}, scope="global")


@pytest.mark.parametrize("method", ["mean", "max", "l2"])
def test_normalized_scores_put_layers_on_one_scale_and_keep_each_order(method):
    generator = torch.Generator().manual_seed(0)
    base = torch.rand(50, generator=generator)
    scores = {"big": 1000.0 * base, "small": 0.001 * base[:20]}
    keep = _dense(scores)
    keep["big"][0] = False  # a pruned unit does not enter the statistic
    normalized = normalize_scores(scores, keep, method)
    for name in scores:  # same order within a group: a per-layer ranking would not change
        assert torch.equal(torch.argsort(normalized[name]), torch.argsort(scores[name].double()))
    statistic = {"mean": lambda v: v.mean(), "max": lambda v: v.max(), "l2": lambda v: v.norm()}[method]
    for name in scores:
        assert statistic(normalized[name][keep[name]]).item() == pytest.approx(1.0)
    # raw scores: a global ranking takes the small-scale layer down to its minimum first
    raw = select_units(scores, _dense(scores), 0.3, "global", 0.0)
    assert int(raw["small"].sum()) == 1
    fair = select_units(normalized, keep, 0.3, "global", 0.0)
    assert int(fair["small"].sum()) > 5 and int(fair["big"].sum()) < 49


def test_normalizing_zero_or_removed_scores_leaves_them_alone():
    scores = {"zeros": torch.zeros(4), "gone": torch.tensor([-math.inf, 2.0, 4.0])}
    keep = {"zeros": torch.ones(4, dtype=torch.bool), "gone": torch.tensor([False, True, True])}
    normalized = normalize_scores(scores, keep, "mean")
    assert torch.equal(normalized["zeros"], torch.zeros(4, dtype=torch.float64))
    assert normalized["gone"][0] == -math.inf and normalized["gone"][1:].tolist() == [2 / 3, 4 / 3]
    with pytest.raises(ValueError, match=r"`normalize` must be one of \('mean', 'max', 'l2'\) or None, got 'sum'"):
        normalize_scores(scores, keep, "sum")


def test_normalizing_scores_of_the_wrong_shape_is_named():
    with pytest.raises(ValueError, match=r"Scores for 'a' have shape \(3,\), its mask \(4,\)"):
        normalize_scores({"a": torch.ones(3)}, {"a": torch.ones(4, dtype=torch.bool)}, "mean")


def test_lopsided_names_a_group_emptied_while_another_is_untouched():
    from lightning_prune.ranking import lopsided

    before = {"a": torch.ones(10, dtype=torch.bool), "b": torch.ones(10, dtype=torch.bool)}
    emptied = {"a": torch.tensor([True] + [False] * 9), "b": torch.ones(10, dtype=torch.bool)}
    balanced = {"a": torch.arange(10) < 5, "b": torch.arange(10) < 5}
    assert lopsided(before, emptied) == ["a"]
    assert lopsided(before, balanced) == []
    both_emptied = {"a": emptied["a"], "b": emptied["a"]}
    assert lopsided(before, both_emptied) == []  # everything went: not lopsided, just a high target
