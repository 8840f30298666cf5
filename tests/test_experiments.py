"""Smoke tests of the paper-reproduction scripts in experiments/: each one's `run` on a tiny schedule.

The committed results come from full runs (minutes to half an hour); these tests only keep the
scripts from rotting and check the invariants they assert about the library along the way.
"""

import sys
from functools import partial
from pathlib import Path

import pytest
import torch

from lightning_prune.teaching import quiet_trainer

sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))

import han_iterative  # noqa: E402
import lottery_ticket  # noqa: E402
import rethinking  # noqa: E402


@pytest.mark.parametrize("schedule", ["constant", "cosine"])
def test_rethinking_runs_every_variant_on_the_pruned_architecture(monkeypatch, schedule):
    monkeypatch.setitem(rethinking.EXPERIMENTS, "digits_lenet", {**rethinking.EXPERIMENTS["digits_lenet"], "warmup": 1, "finetune": 1})
    rows = {row["variant"]: row for row in rethinking.run("digits_lenet", seed=0, lr_schedule=schedule)}
    assert list(rows) == list(rethinking.VARIANTS)
    pruned = rows["fine-tuned"]["params"]
    assert pruned < rows["dense"]["params"]
    assert all(rows[v]["params"] == pruned for v in ("scratch-E", "scratch-B", "ticket-E"))  # same compact architecture
    assert rows["scratch-E"]["epochs"] == rows["dense"]["epochs"] == 2
    assert rows["scratch-B"]["epochs"] > rows["scratch-E"]["epochs"]  # same compute as dense: more epochs
    assert all(0.0 <= r["test_acc"] <= 1.0 for r in rows.values())
    lr = rethinking.EXPERIMENTS["digits_lenet"]["lr"]
    for r in rows.values():  # cosine: every run ends its own schedule near 0; constant: at the base lr
        assert r["final_lr"] < 0.05 * lr if schedule == "cosine" else r["final_lr"] == lr


@pytest.mark.parametrize(("arch", "dataset"), [("lenet_300_100", "digits"), ("cnn1d", "mnist1d"), ("lenet_300_100", "mnist")])
def test_lottery_ticket_rounds_reach_their_sparsity(arch, dataset):
    result = lottery_ticket.run("ticket", seed=0, dataset=dataset, rounds=2, epochs_per_round=1, arch=arch)
    rounds = result["rounds"]
    assert [r["round"] for r in rounds] == [0, 1, 2]
    assert rounds[0]["remaining"] == 1.0
    assert rounds[1]["remaining"] > rounds[2]["remaining"] > 0.6  # 20 % per round (10 % for the output layer)
    assert rounds[2]["params"] < rounds[0]["params"]


@pytest.mark.parametrize(("dataset", "target"), [("digits", 0.5), ("mnist", 0.36)])  # mnist: 2 cycles, 3 epochs a run
def test_han_iterative_and_one_shot_reach_the_same_target(monkeypatch, dataset, target):
    monkeypatch.setattr(han_iterative, "WARMUP", 1)
    monkeypatch.setattr(han_iterative, "FINETUNE", 1)
    iterative = han_iterative.run("iterative", target, seed=0, dataset=dataset)
    one_shot = han_iterative.run("oneshot", target, seed=0, dataset=dataset)
    assert iterative["weights"] == (784 if dataset == "mnist" else 64) * 300 + 300 * 100 + 100 * 10
    assert iterative["cycles"] > 1 and one_shot["cycles"] == 1
    assert iterative["epochs"] == one_shot["epochs"]  # the same training budget
    assert iterative["sparsity"] == pytest.approx(target, abs=1e-3) and one_shot["sparsity"] == pytest.approx(target, abs=1e-3)


def test_deconstructing_records_supermask_accuracies_for_every_round():
    import deconstructing

    result = deconstructing.run("digits", seed=0, rounds=2, epochs_per_round=1, per_cycle=0.3)
    assert set(result["trained"]) == {"ticket", "signed_constant"}
    assert result["trained"]["ticket"]["remaining"] == pytest.approx([1.0, 0.7, 0.49], abs=1e-3)
    for kind in deconstructing.UNTRAINED:
        assert len(result["untrained"][kind]) == 2 and all(0.0 <= a <= 1.0 for a in result["untrained"][kind])
    # a random mask on untrained weights stays near chance (10 classes)
    assert max(result["untrained"]["random mask"]) < 0.3


def test_lottery_ticket_refuses_the_cnn_on_images():
    with pytest.raises(ValueError, match="cnn1d on mnist1d only"):
        lottery_ticket.run("ticket", seed=0, dataset="digits", rounds=1, epochs_per_round=1, arch="cnn1d")


def test_neuron_removal_and_acceptance_scripts_train_through_the_shared_trainer():
    import digits_acceptance
    import neuron_removal

    row = neuron_removal.run("lenet_300_100", seed=0, setting=None, epochs=1)  # the dense reference, one epoch
    assert 0.0 <= row["test_acc"] <= 1.0 and row["fit_seconds"] > 0
    assert callable(digits_acceptance.run)  # run in full by tests/test_callback.py (the README snippet)


def test_transformer_pruning_removes_heads_and_ffn_units_of_a_hugging_face_vit_in_a_trainer():
    pytest.importorskip("transformers")
    import transformer_pruning

    # Two Trainer fits on real MNIST (3 epochs each): dense, and Pruning(granularity="neuron") in 2 cycles.
    # run() itself asserts that each attention module's num_attention_heads equals its kept heads, that
    # q/k/v/o and fc1 have exactly the kept units, and that the compact model equals its masked twin.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the script runs (--threads 1); two threads on the shared 2-core machine ran 10x slower
    try:
        row = transformer_pruning.run(seed=0, quick=True)
    finally:
        torch.set_num_threads(threads)
    dense, pruned = row["dense"], row["pruned"]
    assert dense["heads"] == [4, 4, 4, 4] and dense["ffn"] == [256, 256, 256, 256]
    assert pruned["heads"] == [2, 2, 2, 2]  # half of every layer's heads removed, the head count attribute follows
    assert pruned["qkv_width"] == [2 * 16] * 4 and pruned["ffn"] == [128] * 4
    assert row["hf_config_heads"] == 4  # Hugging Face's global config is left as it was
    assert [c["sparsity"] for c in row["cycles"]] == pytest.approx([0.3, 0.5], abs=0.02)
    assert row["masked_vs_compact_max_abs"] < 1e-4
    # The residual stream (patch embedding, o_proj, fc2) feeds LayerNorm: refused, not pruned.
    assert sorted(name.rsplit(".", 1)[-1] for name in row["refused"]) == ["fc2"] * 4 + ["o_proj"] * 4 + ["projection"]
    assert all("LayerNorm" in reason for reason in row["refused"].values())
    assert pruned["params"] < 0.55 * dense["params"] and pruned["macs"] < 0.55 * dense["macs"]
    assert dense["test_acc"] > 0.25 and pruned["test_acc"] > 0.25  # 10 classes: chance is 0.1
    assert pruned["latency_ms"]["median"] > 0


def test_residual_stream_experiment_cuts_both_arms_to_the_same_size_differently():
    pytest.importorskip("transformers")
    import residual_stream

    # Two Trainer fits on real MNIST (3 epochs each): heads+FFN, then +residual at its parameter count.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        row = residual_stream.run(seed=0, quick=True)  # asserts the residual width shrank and the sizes match
    finally:
        torch.set_num_threads(threads)
    plain, residual = row["heads+FFN"], row["+residual"]
    assert plain["hidden"] == 64 and residual["hidden"] < 64
    assert plain["heads"] == [2, 2, 2, 2] and residual["heads"][0] > 2  # the cut went partly into the stream
    assert abs(plain["params"] - residual["params"]) <= 0.03 * row["dense"]["params"]
    assert plain["test_acc"] > 0.25 and residual["test_acc"] > 0.25
    assert "±" in residual_stream.tables([row])


def test_distillation_prunes_with_and_without_the_teacher_and_renders_the_table(monkeypatch):
    import distillation

    # 1 warm-up epoch and 2 cycles of 1 epoch (0.5, then 0.75 of the hidden neurons removed), 3 epochs a fit.
    monkeypatch.setattr(distillation, "SCHEDULE", dict(target=0.75, per_cycle=0.5, warmup_epochs=1, finetune_epochs=1))
    monkeypatch.setattr(distillation, "WARMUP", 1)
    monkeypatch.setattr(distillation, "FINETUNE", 1)
    monkeypatch.setattr(distillation, "quiet_trainer", partial(quiet_trainer, limit_train_batches=4, limit_val_batches=2))
    assert distillation.epochs() == 3
    rows = {variant: distillation.run("digits", seed=0, variant=variant) for variant in (None, "pruned", "w1-T4")}
    assert rows[None]["hidden"] == [300, 100]
    assert rows["pruned"]["hidden"] == rows["w1-T4"]["hidden"] == [75, 25]  # 75 % of each layer's neurons removed
    for row in rows.values():
        assert 0.0 <= row["val_acc"] <= 1.0 and 0.0 <= row["test_acc"] <= 1.0 and row["fit_seconds"] > 0
    assert rows[None]["test_acc"] > 0.3  # 12 batches on digits: above chance (0.1)
    results = {"seeds": [0], "environment": "test", "datasets": {"digits": {
        "chosen": "w1-T4", "selection": {"w1-T4": rows["w1-T4"]["val_acc"]},
        "dense": [rows[None]], "pruned": [rows["pruned"]], "distilled": [rows["w1-T4"]]}}}
    report = distillation.render(results)
    assert f"| digits (8x8) | {rows[None]['test_acc']:.3f} ± 0.000 | {rows['pruned']['test_acc']:.3f} ± 0.000 | " in report
    assert "Hidden widths after pruning: [75, 25]." in report


def test_wanda_one_shot_evaluates_the_masked_model_and_restores_it_and_iterates_both_criteria(monkeypatch):
    import wanda

    monkeypatch.setattr(wanda, "DENSE_EPOCHS", 1)
    monkeypatch.setattr(wanda, "ITERATIVE", dict(target=0.75, per_cycle=0.5, warmup_epochs=1, finetune_epochs=1))
    monkeypatch.setattr(wanda, "CALIBRATION_BATCHES", 2)
    monkeypatch.setattr(wanda, "SPARSITIES", (0.5, 0.9))
    monkeypatch.setattr(wanda, "quiet_trainer", partial(quiet_trainer, limit_train_batches=4, limit_val_batches=2))
    evaluated = []  # every layer's sparsity in the model that one_shot evaluates

    def recording_accuracy(model, x, y):
        evaluated.append([float((m.weight == 0).float().mean()) for m in model.modules() if isinstance(m, torch.nn.Linear)])
        return wanda_accuracy(model, x, y)

    wanda_accuracy = wanda.accuracy
    monkeypatch.setattr(wanda, "accuracy", recording_accuracy)
    row = wanda.mlp_run("digits", seed=0)
    assert set(row) == {"dense", "one_shot", "iterative"}
    assert set(row["one_shot"]) == set(row["iterative"]) == {"magnitude", "wanda"}
    assert all(set(accuracies) == {"0.5", "0.9"} for accuracies in row["one_shot"].values())
    # per-layer ranking: each layer at the asked sparsity; magnitude then Wanda, 0.5 then 0.9 (Wanda's 0.5
    # after magnitude's 0.9: the model was restored in between)
    assert len(evaluated) == 4
    for layers, sparsity in zip(evaluated, [0.5, 0.9, 0.5, 0.9]):
        assert layers == pytest.approx([sparsity] * 3, abs=0.01)
    accuracies = [row["dense"], *row["iterative"].values(), *(a for c in row["one_shot"].values() for a in c.values())]
    assert all(0.0 <= a <= 1.0 for a in accuracies)
    assert row["dense"] > 0.2  # 4 Adam steps on digits: above chance (0.1)
