"""Smoke test of the training-overhead benchmark: structure only, no speed assertions."""

import json

import pytest
import torch

from benchmarks.training_overhead import MODELS, VARIANTS, run


@pytest.fixture
def one_thread():
    # Structure only: one thread keeps the smoke test fast on a loaded 2-core machine
    # (OpenMP threads contending with other processes make every op wait for a time slice).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_quick_benchmark_writes_every_model_and_variant(tmp_path, one_thread):
    report = run(quick=True, repeats=2, steps=2, out=tmp_path)

    data = json.loads((tmp_path / "training_overhead.json").read_text())
    assert data["results"].keys() == set(MODELS)
    for model in MODELS:
        variants = data["results"][model]["variants"]
        assert variants.keys() == set(VARIANTS)
        for name, v in variants.items():
            assert v["median_ms"] > 0, (model, name)
            assert v["ratio_median"] > 0 and v["ratio_min"] <= v["ratio_median"] <= v["ratio_max"], (model, name)
            assert len(v["ms_per_repeat"]) == 2
        assert variants["dense"]["ratio_median"] == 1.0
        assert 0.89 < data["results"][model]["sparsity_of_masked"] < 0.91
        # lightning_prune's weights were checked zero, then its optimizer state after the epoch-end enforce
        assert 0.0 <= data["results"][model]["pruned_state_nonzero_fraction_before_enforce"]["lightning_prune"] <= 1.0
    assert data["modelpruning"]["global_path_calls_global_unstructured"]
    assert data["machine"]["torch"] == torch.__version__
    assert "trainer" not in data  # the Trainer comparison is off in quick mode unless asked

    markdown = (tmp_path / "training_overhead.md").read_text()
    assert "| model | variant | median ms/step |" in markdown
    for model in MODELS:
        for name in VARIANTS:
            assert f"| {model} | {name} |" in markdown
    assert report["results"].keys() == data["results"].keys()
