"""Smoke test of the inference benchmark: structure only, no speed assertions."""

import json

import torch

from benchmarks.inference import COMPACT, TRAIN_VARIANTS, VARIANTS, run


def test_quick_inference_benchmark_writes_every_variant(tmp_path):
    threads = torch.get_num_threads()
    report = run(quick=True, out=tmp_path)
    assert torch.get_num_threads() == threads  # run() restores the thread count it changes

    data = json.loads((tmp_path / "inference.json").read_text())
    assert data["results"].keys() == {"mlp_1024_4096_4096", "lenet_300_100", "vgg_small", "resnet_small"}
    assert data["machine"]["torch"] == torch.__version__
    for model, per_device in data["results"].items():
        assert "cpu" in per_device
        for device, r in per_device.items():
            assert r["device"] == device
            assert len(r["inference"]) == 2  # two batch sizes
            for entry in r["inference"]:
                assert entry["variants"].keys() == set(VARIANTS)
                for name, v in entry["variants"].items():
                    if name == "csr" and r["kind"] == "cnn":
                        assert "skipped" in v
                        continue
                    assert v["median_ms"] > 0, (model, entry["batch"], name)
                    assert v["speedup_min"] <= v["speedup_median"] <= v["speedup_max"]
            macs = r["macs_per_example"]
            for name in COMPACT:
                assert macs[name]["reduction"] > 1, (model, name)
                assert macs[name]["computed"] < macs["dense"]["computed"]
            assert macs["masked"]["computed"] == macs["dense"]["computed"]
            assert macs["masked"]["effective"] < macs["dense"]["effective"]
            assert r["correctness"]["compact_ours_vs_units_masked"] <= 1e-4
            for name in TRAIN_VARIANTS:
                assert r["training"]["variants"][name]["median_ms"] > 0
    assert len(data["goals"]) == 4

    markdown = (tmp_path / "inference.md").read_text()
    assert "| model | device | batch | variant | median ms |" in markdown
    assert "compact_torch_pruning" in markdown
    assert report["results"].keys() == data["results"].keys()
