"""Smoke test of the benchmark suite (benchmarks/run_all.py): the quick mode of every part, structure only.

No speed is asserted: the figures of a quick run on tiny models mean nothing, and the machine is shared.
"""

import json

import pytest
import torch

from benchmarks import run_all
from benchmarks._common import LiveTensorMemory, loglog_slope, resolve_device


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
