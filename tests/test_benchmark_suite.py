"""Smoke test of the benchmark suite (benchmarks/run_all.py): the quick mode of every part, structure only.

No speed is asserted: the figures of a quick run on tiny models mean nothing, and the machine is shared.
"""

import json
import re
from pathlib import Path

import pytest
import torch

from benchmarks import _common as C
from benchmarks import run_all, stats
from benchmarks._common import LiveTensorMemory, loglog_slope, resolve_device

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def quick_suite(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite")
    threads = torch.get_num_threads()
    code = run_all.main(["--quick", "--out", str(out), "--device", "cpu"])
    assert torch.get_num_threads() == threads  # every part restores the thread count it changes
    return out, code


def test_quick_suite_writes_every_part_report_and_plot(quick_suite):
    out, code = quick_suite
    assert code == 0
    suite = json.loads((out / "suite.json").read_text())
    assert set(suite["parts"]) == set(run_all.PARTS)
    assert suite["quick"] is True and "failures" not in suite
    for name, part in suite["parts"].items():
        assert (out / f"{name}.json").exists() and (out / f"{name}.md").exists(), name
        assert part["quick"] is True
        assert part["device"] == "cpu"
        assert part["report"]["machine"]["torch"] == torch.__version__
        assert part["load_average_at_start"] is None or len(part["load_average_at_start"]) == 3
        assert part["plots"], name
        for plot in part["plots"]:
            assert (out / plot).stat().st_size > 1000, plot
        for goal in part["goals"]:
            assert {"subject", "goal", "figure", "met"} <= set(goal), (name, goal)

    md = (out / "RESULTS.md").read_text()
    assert "## Goals" in md and "## Machine, versions, devices" in md
    for title in run_all.TITLES.values():
        assert f"## {title}" in md
    assert "torch-pruning 1.6.1" in md or "torch-pruning" in md


def test_accuracy_part_compares_ours_modelpruning_and_dense(quick_suite):
    out, _ = quick_suite
    report = json.loads((out / "accuracy.json").read_text())
    for dataset in ("digits", "mnist1d"):
        entry = next(iter(report["summary"][dataset]["targets"].values()))
        assert {"dense", "modelpruning", "weight_l1_global", "weight_l2_global", "neuron_apoz", "neuron_l2",
                "neuron_taylor"} <= set(entry)
        for variant, e in entry.items():
            assert 0 <= e["acc_mean"] <= 100
            if variant != "dense":  # every pruned run reached its target (weights or parameters removed)
                assert e["weights_removed"] > 0.7, (dataset, variant)
        # neuron runs removed units for real: the hidden layers are narrower
        assert entry["neuron_apoz"]["widths"][1] < 300
    runs = {(r["dataset"], r["variant"]) for r in report["runs"]}
    assert ("digits", "modelpruning") in runs and ("mnist1d", "dense") in runs
    assert {g["dataset"] for g in report["goals"]} == {"digits", "mnist1d"}


def test_finetune_and_scale_parts_record_fractions_and_growth(quick_suite):
    out, _ = quick_suite
    ft = json.loads((out / "finetune_speed.json").read_text())
    for model, res in ft["results"].items():
        assert res["variants"]["dense"]["mac_fraction"] == 1.0
        fractions = [v["mac_fraction"] for k, v in res["variants"].items() if k != "dense"]
        assert all(0 < f < 1 for f in fractions), model
        for v in res["variants"].values():
            assert v["trainer_time_fraction"]["min"] <= v["trainer_time_fraction"]["median"] <= v["trainer_time_fraction"]["max"]
            assert v["loop_epoch_ms"]["median"] > 0

    sc = json.loads((out / "scale.json").read_text())
    for family in ("mlp", "cnn"):
        rows = sc["families"][family]["rows"]
        assert [r["width"] for r in rows] == sorted(r["width"] for r in rows)
        for r in rows:  # APoZ keeps one int64 count per unit (+ one per layer): it grows with units only
            assert r["statistic_bytes"] == 8 * (r["scored_units"] + r["scored_layers"])
            assert r["surgery"]["peak_tensor_bytes"] > 0 and r["params_after_surgery"] < r["params"]
        assert sc["families"][family]["slopes"]["units"] == pytest.approx(1.0)
    cal = sc["calibration"]
    assert len({r["statistic_bytes"] for r in cal["rows"]}) == 1  # independent of the calibration set
    assert sc["resnet50"]["params_after_surgery"] < sc["resnet50"]["params"]


def test_width_alignment_part_rounds_widths_and_keeps_outputs(quick_suite):
    out, _ = quick_suite
    report = json.loads((out / "width_alignment.json").read_text())
    rows = report["results"]["variants"]
    assert rows["dense"]["mac_cut"] == 1.0
    for name, row in rows.items():
        if name == "dense":
            continue
        if row["round_to"]:  # rounded up to the multiple unless a layer ran out of just-removed units
            assert all(w % row["round_to"] == 0 or w == full for w, full in zip(row["widths"], rows["dense"]["widths"]))
        assert row["max_abs_diff_vs_masked"] <= 1e-5  # removal == masking, through Pruner.plan/commit
        assert row["mac_cut"] > 1.0 and row["speedup"]["median"] > 0
        assert row["speedup_over_mac_cut"] == pytest.approx(row["speedup"]["median"] / row["mac_cut"])
    plain = {r["keep_fraction"]: r for r in rows.values() if r["round_to"] is None and r["keep_fraction"] < 1}
    rounded = {r["keep_fraction"]: r for r in rows.values() if r["round_to"] == 16}
    for k in plain:  # rounding up only ever keeps more units, so cuts fewer MACs
        assert all(a >= b for a, b in zip(rounded[k]["widths"], plain[k]["widths"]))
        assert rounded[k]["mac_cut"] <= plain[k]["mac_cut"]
    assert {g["subject"].split("round_to=")[1] for g in report["goals"]} == {"None", "8", "16"}
    assert all(g["met"] is None for g in report["goals"])  # diagnostic: the goal is judged by the inference part
    layers = report["layers"]
    assert {"16->10", "32->16"} <= set(layers) and all(row["us"]["median"] > 0 and row["gmacs_per_s"] > 0 for row in layers.values())


def test_only_reruns_one_part_and_keeps_the_others(quick_suite, tmp_path):
    out, _ = quick_suite
    target = tmp_path / "again"
    target.mkdir()
    (target / "suite.json").write_text((out / "suite.json").read_text())
    assert run_all.main(["--quick", "--out", str(target), "--only", "scale", "--device", "cpu"]) == 0
    suite = json.loads((target / "suite.json").read_text())
    assert suite["ran"] == ["scale"]
    assert set(suite["parts"]) == set(run_all.PARTS)  # the others kept from the earlier suite.json
    assert (target / "RESULTS.md").exists()


def test_common_helpers():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    assert loglog_slope([1, 2, 4, 8], [3, 12, 48, 192]) == pytest.approx(2.0)
    with LiveTensorMemory() as memory:
        a = torch.ones(1000, 250)  # 1 MB
        b = a * 2  # +1 MB while both live
        del a
        c = b.sum(0)  # views and in-place ops are not new storage
        b.add_(1)
        del b
    assert memory.peak == 2 * 1000 * 250 * 4
    assert memory.live == c.numel() * 4


def test_interleave_runs_every_contender_once_per_repeat_in_seeded_shuffled_orders():
    names = ("a", "b", "c", "d")

    def orders(seed):
        log = []

        def contender(name):
            log.append(name)
            return 1.0

        times = C.interleave({n: (lambda n=n: contender(n)) for n in names}, repeats=8, self_timed=True, seed=seed)
        assert times == {n: [1.0] * 8 for n in names}
        return [tuple(log[i:i + len(names)]) for i in range(0, len(log), len(names))]

    first = orders(0)
    assert len(first) == 8
    assert all(sorted(order) == sorted(names) for order in first)  # each round runs every contender once
    assert len(set(first)) > 1  # the order changes between rounds ...
    assert len({order[0] for order in first}) > 1  # ... and not always the same one goes first
    assert len({order[order.index("a") - 1] for order in first if order[0] != "a"}) > 1  # nor before "a"
    assert orders(0) == first  # seeded: the same orders again
    assert orders(1) != first


def test_interleave_warms_up_before_the_first_round():
    log = []
    C.interleave({n: (lambda n=n: log.append(n)) for n in "ab"}, repeats=1, number=1, warmup=3)
    assert log[:6] == ["a"] * 3 + ["b"] * 3


def test_interleave_measures_with_torch_benchmark_timer_at_the_callers_threads(monkeypatch):
    calls = []

    class SpyTimer(torch.utils.benchmark.Timer):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            calls.append(("init", kwargs.get("num_threads")))

        def timeit(self, number=1000000):
            calls.append(("timeit", number))
            return super().timeit(number)

        def blocked_autorange(self, callback=None, min_run_time=0.2):
            calls.append(("blocked_autorange", min_run_time))
            return super().blocked_autorange(callback, min_run_time)

    monkeypatch.setattr(C.torch_benchmark, "Timer", SpyTimer)
    seen_threads = set()

    def contender():
        seen_threads.add(torch.get_num_threads())

    with C.num_threads(2):
        C.interleave({"x": contender, "y": contender}, repeats=2, number=3)
    assert calls.count(("init", 2)) == 4 and calls.count(("timeit", 3)) == 4
    assert seen_threads == {2}  # torch's Timer alone would have run the statement on 1 thread

    calls.clear()
    times = C.interleave({"x": lambda: torch.ones(8).sum()}, repeats=3, min_run_time=0.001)
    assert calls.count(("blocked_autorange", 0.001)) == 3 and len(times["x"]) == 3


def test_interleave_self_timed_returns_what_the_contender_measured_and_checks_its_mode():
    values = iter([0.5, 0.25, 0.125, 1.0])
    times = C.interleave({"p": lambda: next(values), "q": lambda: next(values)}, repeats=2, self_timed=True)
    assert sorted(times["p"] + times["q"]) == [0.125, 0.25, 0.5, 1.0]
    for modes in ({}, {"number": 2, "min_run_time": 0.1}, {"number": 2, "self_timed": True}):
        with pytest.raises(ValueError, match="exactly one"):
            C.interleave({"p": lambda: None}, repeats=1, **modes)
    with pytest.raises(ValueError, match="at least one call"):
        C.interleave({"p": lambda: None}, repeats=1, number=0)


def test_summarise_pairs_each_repeat_with_the_baseline():
    summary = stats.summarise({"base": [2.0, 4.0, 8.0], "half": [1.0, 2.0, 4.0], "odd": [4.0, 2.0, 8.0]}, "base", scale=1e3)
    assert summary["base"]["value"] == {"median": 4000.0, "min": 2000.0, "max": 8000.0, "n": 3}
    assert summary["base"]["ratio"] == {"median": 1.0, "min": 1.0, "max": 1.0, "n": 3}
    assert summary["half"]["runs"] == [1000.0, 2000.0, 4000.0]
    assert summary["half"]["ratio"]["median"] == 0.5 and summary["half"]["speedup"]["median"] == 2.0
    # per-repeat ratios 2, 0.5, 1: not the ratio of the medians (2 / 4 = 0.5)
    assert summary["odd"]["ratio"] == {"median": 1.0, "min": 0.5, "max": 2.0, "n": 3}
    assert summary["odd"]["speedup"] == {"median": 1.0, "min": 0.5, "max": 2.0, "n": 3}
    assert "ratio" not in stats.summarise({"a": [1.0]})["a"]
    with pytest.raises(ValueError, match="baseline"):
        stats.summarise({"a": [1.0]}, "b")
    with pytest.raises(ValueError, match="same number of runs"):
        stats.summarise({"a": [1.0, 2.0], "b": [1.0]}, "a")
    assert stats.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0) and stats.mean_std([5.0]) == (5.0, 0.0)


def test_helpers_are_defined_once():
    from lightning_prune import teaching

    assert teaching.mean_std is stats.mean_std is C.mean_std
    helpers = ("machine_info", "interleave", "_interleave", "calibrated_blocks", "mean_std", "spread", "loglog_slope")
    defined = {}
    for path in sorted((ROOT / "benchmarks").glob("*.py")) + sorted((ROOT / "experiments").glob("*.py")):
        for name in re.findall(r"^def (\w+)\(", path.read_text(), flags=re.M):
            if name in helpers:
                defined.setdefault(name, []).append(path.name)
    assert defined == {"interleave": ["_common.py"], "spread": ["stats.py"],
                       "loglog_slope": ["stats.py"], "machine_info": ["_common.py"]}
