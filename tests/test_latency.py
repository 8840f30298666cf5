"""Latency budgets (issue 17): the lookup table, its prediction, and the budget in real fits.

Timings are never asserted (they are measured in ``experiments/latency_budget.py``). What is asserted
is what the measurements feed: the prediction from a table, the widths read from masks, the budget
met by the prediction, the table kept across a resume and shared by the ranks, and bad input named.
"""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_prune import Geometric, Latency, Neurons, OneShot, PerLayer, Pruning
from lightning_prune.criteria import Magnitude
from lightning_prune.data import DigitsDataModule
from lightning_prune.latency import LatencyTable, final_check, layer_widths, repeat_batch
from lightning_prune.layers import PrunableLayer
from lightning_prune.models import Classifier
from lightning_prune.pruner import Pruner

FAST = dict(batch_size=256, levels=2, min_run_time=0.01)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a shared 2-core machine, two threads spin against other processes' work."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _entry(inputs, outputs, seconds):
    return {"inputs": inputs, "outputs": outputs, "seconds": seconds}


def test_prediction_is_the_rest_plus_each_layers_entry_interpolated_between_widths():
    table = LatencyTable({"a": _entry([1, 11], [2, 4], [[1.0, 3.0], [5.0, 7.0]]), "b": _entry([8], [1, 9], [[2.0, 6.0]])},
                         rest=0.5, dense=10.0)
    assert table.predict({}) == pytest.approx(0.5 + 7.0 + 6.0)  # every layer at its dense widths
    assert table.predict({"a": (1, 2), "b": (8, 1)}) == pytest.approx(0.5 + 1.0 + 2.0)  # grid points
    assert table.predict({"a": (6, 3)}) == pytest.approx(0.5 + 4.0 + 6.0)  # half-way in both dimensions
    assert table.removed({"b": (8, 5)}) == pytest.approx(1 - (0.5 + 7.0 + 4.0) / 13.5)
    assert LatencyTable.from_state(table.state_dict()).predict({"a": (6, 3)}) == table.predict({"a": (6, 3)})


def test_the_rest_follows_the_compact_copies_it_was_calibrated_on():
    entry = _entry([4], [1, 9], [[1.0, 3.0]])
    table = LatencyTable({"a": {**entry, "elements": 90}, "b": {**entry, "elements": 10}}, rest=2.0, dense=8.0)
    assert table.kept_outputs({"a": (4, 1), "b": (4, 9)}) == pytest.approx((90 / 9 + 10) / 100)
    assert table.rest_at({"a": (4, 1), "b": (4, 1)}) == 2.0  # no calibration: fixed
    table.calibrate([({"a": (4, 1), "b": (4, 1)}, 2.5)])  # measured 2.5 s, of which the layers take 2 x 1.0
    assert table.curve == [[pytest.approx(1 / 9), pytest.approx(0.5)]]
    half = {"a": (4, 5), "b": (4, 5)}  # kept 5/9 of the outputs: half-way between 1/9 and 1 on the curve
    assert table.rest_at(half) == pytest.approx(0.5 + (2.0 - 0.5) * (5 / 9 - 1 / 9) / (1 - 1 / 9))
    assert table.predict(half) == pytest.approx(table.rest_at(half) + 2 * 2.0)
    assert LatencyTable.from_state(table.state_dict()).predict(half) == pytest.approx(table.predict(half))


def test_widths_are_read_from_the_kept_rows_and_columns_of_linear_conv_depthwise_and_hf_conv1d():
    from transformers.pytorch_utils import Conv1D

    model = nn.Sequential(nn.Linear(6, 5), nn.Conv2d(4, 8, 3, groups=2), nn.Conv2d(8, 8, 3, groups=8), Conv1D(7, 3))
    layers = [PrunableLayer(str(i), module) for i, module in enumerate(model)]
    linear = torch.ones(5, 6, dtype=torch.bool)
    linear[:2] = False  # two output rows gone
    linear[:, 0] = False  # one input column gone
    grouped = torch.ones(8, 2, 3, 3, dtype=torch.bool)
    grouped[:, 1] = False  # the second input of each group gone: 2 of 4 inputs
    depthwise = torch.ones(8, 1, 3, 3, dtype=torch.bool)
    depthwise[5:] = False
    conv1d = torch.ones(3, 7, dtype=torch.bool)  # HF Conv1D stores (in, out)
    conv1d[:, 4:] = False
    widths = layer_widths(layers, {"0.weight": linear, "1.weight": grouped, "2.weight": depthwise, "3.weight": conv1d})
    assert widths == {"0": (5, 3), "1": (2, 8), "2": (5, 5), "3": (3, 4)}
    assert layer_widths(layers) == {"0": (6, 5), "1": (4, 8), "2": (8, 8), "3": (3, 7)}


def test_repeat_batch_makes_every_tensor_the_batch_size():
    x, y = torch.arange(3.0).reshape(3, 1), torch.zeros(3, 2)
    assert repeat_batch(x, 7).shape == (7, 1) and repeat_batch(x, 7)[3:6].flatten().tolist() == [0.0, 1.0, 2.0]
    assert [t.shape[0] for t in repeat_batch((x, y, "keep"), 2)[:2]] == [2, 2]


def _digits_pruner(granularity="neuron"):
    L.seed_everything(0)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    return Pruner(model, torch.randn(4, 1, 8, 8), Magnitude(2), granularity)


def test_the_table_times_each_called_layer_over_the_widths_pruning_can_give_it():
    pruner = _digits_pruner()
    table = pruner.measure_latency(Latency(levels=3, batch_size=16, min_run_time=0.001))
    entries = table.entries
    assert list(entries) == ["model.features.0", "model.features.2", "model.classifier"]
    assert entries["model.features.0"]["inputs"] == [64]  # the data's width never changes
    assert entries["model.features.0"]["outputs"] == [1, 150, 300]
    assert entries["model.classifier"]["outputs"] == [10]  # the output layer keeps its classes
    assert entries["model.classifier"]["inputs"] == [1, 50, 100]
    assert all(s > 0 for e in entries.values() for row in e["seconds"] for s in row)
    assert table.dense > 0 and table.rest >= 0
    assert [round(kept, 2) for kept, _ in table.curve] == [0.5]  # the rest, measured on a compact copy keeping half


def test_the_plan_meets_the_predicted_budget_and_per_second_prunes_the_costlier_group_first():
    pruner = _digits_pruner()
    table = LatencyTable({  # the second layer costs four times as much per unit as the first
        "model.features.0": _entry([64], [1, 300], [[0.0, 3.0]]),
        "model.features.2": _entry([300], [1, 100], [[0.0, 4.0]]),
    }, rest=1.0, dense=8.0)
    reference = {"latency": table}
    keep = pruner.dense_keep()
    for per_second in (False, True):
        budget = Latency(per_second=per_second)
        new = pruner.plan(keep, 0.25, 0, budget=budget, reference=reference)
        masks = pruner.parameter_masks(new)
        assert 0.25 <= table.removed(layer_widths(pruner.layers, masks)) < 0.25 + 0.02  # bisection: just enough
        lost = {key: 1 - float(mask.float().mean()) for key, mask in new.items()}
        if per_second:
            assert lost["model.features.2"] > 2 * lost["model.features.0"]
        else:
            by_importance = lost
    assert by_importance["model.features.2"] < lost["model.features.2"]


def test_a_latency_budget_needs_removal_and_valid_fields():
    with pytest.raises(ValueError, match=r"needs granularity=Neurons\(remove=True\), got Weights"):
        Pruning(OneShot(0.5, budget="latency"))
    with pytest.raises(ValueError, match=r"got Neurons\(remove=False"):
        Pruning(OneShot(0.5, budget=Latency()), granularity=Neurons(remove=False))
    with pytest.raises(ValueError, match="needs the schedule's budget='units'"):
        Pruning(OneShot(0.5, budget="latency"), granularity="neuron", ranking=PerLayer(overrides={"*": 0.3}))
    for field, value in [("batch_size", 0), ("levels", 1), ("min_run_time", 0), ("tolerance", 1.5), ("per_second", "yes")]:
        with pytest.raises(ValueError, match=f"`Latency.{field}`"):
            Latency(**{field: value})
    with pytest.raises(ValueError, match=r"`OneShot.budget` must be one of .*'latency'.* or a Latency\(...\), got 'speed'"):
        OneShot(0.5, budget="speed")
    with pytest.raises(ValueError, match="needs neuron granularity"):
        _digits_pruner("weight").plan(_digits_pruner("weight").dense_keep(), 0.5, 0, budget=Latency(),
                                      reference={"latency": LatencyTable({}, 0.0, 1.0)})
    assert OneShot(0.5, budget="latency").budget == Latency()


def test_a_resume_with_another_latency_setting_is_refused_by_name():
    base = Pruning(OneShot(0.5, budget=Latency(batch_size=64)), granularity="neuron")
    other = Pruning(OneShot(0.5, budget=Latency(batch_size=128)), granularity="neuron")
    with pytest.raises(ValueError, match="schedule.budget.batch_size: checkpoint 64, now 128"):
        other.load_state_dict(base.state_dict())


def test_final_check_reports_the_measured_cut_and_whether_it_missed():
    table = LatencyTable({}, rest=0.0, dense=0.010)
    removed, line, missed = final_check(table, 0.006, 0.5, Latency(batch_size=32, tolerance=0.05))
    assert removed == pytest.approx(0.4) and missed and "batch 32" in line and "6.000 ms" in line
    assert not final_check(table, 0.0052, 0.5, Latency(tolerance=0.05))[2]


def _fit(pruning, max_epochs, extra=(), ckpt_path=None):
    from trainers import make_trainer

    L.seed_everything(0)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer = make_trainer(max_epochs, [pruning, *extra], limit_train_batches=4, limit_val_batches=1,
                           enable_checkpointing=bool(extra))
    trainer.fit(model, DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    return model


def _fake_measure(model, layers, example, varying, config):
    """A deterministic table: each layer's seconds proportional to its MACs, plus a fixed rest."""
    entries = {}
    for layer in layers:
        out_units, in_units = layer.weight.shape[:2]
        grid_in = [1, in_units] if varying[layer.name][0] else [in_units]
        grid_out = [1, out_units] if varying[layer.name][1] else [out_units]
        entries[layer.name] = _entry(grid_in, grid_out, [[i * o * 1e-8 for o in grid_out] for i in grid_in])
    return LatencyTable(entries, rest=1e-5, dense=1e-5 + sum(e["seconds"][-1][-1] for e in entries.values()))


def test_in_a_fit_the_budget_is_met_by_the_prediction_and_the_compact_model_is_measured(tmp_path):
    pruning = Pruning(Geometric(0.4, per_cycle=0.25, budget=Latency(**FAST)), granularity="neuron", verbose=False)
    model = _fit(pruning, 3)
    assert [round(row["latency_fraction"], 2) for row in pruning.history][-1] <= 0.6 + 1e-9
    assert pruning.history[0]["latency_fraction"] > pruning.history[-1]["latency_fraction"]
    final = pruning.state_dict()["latency"]["final"]
    assert final is not None and final > 0  # the compact model was timed
    assert model.model.features[0].out_features < 300  # removed, not masked


def test_a_resumed_fit_reuses_the_stored_table_and_decides_as_the_uninterrupted_one(tmp_path, monkeypatch):
    monkeypatch.setattr(LatencyTable, "measure", classmethod(lambda cls, *args: _fake_measure(*args)))

    def pruning():
        return Pruning(Geometric(0.5, per_cycle=0.3, budget=Latency(**FAST)), granularity="neuron", verbose=False)

    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    full = pruning()
    model_full = _fit(full, 3, [checkpoints])

    def never(*args):
        raise AssertionError("a resumed fit must not measure the table again")

    monkeypatch.setattr(LatencyTable, "measure", classmethod(lambda cls, *args: never()))
    resumed = pruning()
    model_resumed = _fit(resumed, 3, [ModelCheckpoint(dirpath=tmp_path / "again")], ckpt_path=str(tmp_path / "epoch=0.ckpt"))
    assert [row["latency_fraction"] for row in full.history] == [row["latency_fraction"] for row in resumed.history]
    assert all(torch.equal(full.keep[key], resumed.keep[key]) for key in full.keep)
    assert {n: p.shape for n, p in model_full.named_parameters()} == {n: p.shape for n, p in model_resumed.named_parameters()}


def test_the_latency_experiment_runs_each_budget_and_measures_every_compact_model(monkeypatch):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))
    import latency_budget as E

    monkeypatch.setattr(E, "SCHEDULE", {**E.SCHEDULE, "warmup_epochs": 1})
    monkeypatch.setattr(E, "REPEATS", 1)
    monkeypatch.setattr(E, "RUN_TIME", 0.01)
    cheap = Latency(batch_size=256, levels=2, min_run_time=0.01)
    monkeypatch.setattr(E, "BUDGETS", {"macs": ("macs", (0.3,)), "latency": (cheap, (0.2,))})
    rows = {label: {"0.3" if label == "macs" else "0.2": [E.run("LeNet-300-100 / mnist", label, target, 0)]}
            for label, (_, (target,)) in E.BUDGETS.items()}
    macs, latency = rows["macs"]["0.3"][0], rows["latency"]["0.2"][0]
    assert macs["macs_fraction"] <= 0.7 + 1e-3 and macs["predicted_latency_fraction"] is None
    assert "error" in latency or latency["predicted_latency_fraction"] <= 0.8 + 1e-9  # met, or refused by name
    assert 0 < macs["measured_latency_fraction"] < 1.5 and 0 <= macs["test_acc"] <= 1
    report = E.render({"seeds": [0], "environment": "test", "runs": {"LeNet-300-100 / mnist": rows}})
    assert "| macs | 0.3 |" in report and "| latency | 0.2 |" in report


def test_on_grouped_and_depthwise_convs_the_table_and_the_removal_agree(monkeypatch):
    """torchvision's ResNeXt (grouped convs): every layer gets a table entry, and the plan removes."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from zoo import ZOO

    model, example = ZOO["tv_resnext"]()
    pruner = Pruner(model.eval(), example, Magnitude(2), "neuron")
    table = pruner.measure_latency(Latency(batch_size=8, levels=2, min_run_time=0.001))
    assert set(table.entries) == {layer.name for layer in pruner.layers}
    keep = pruner.plan(pruner.dense_keep(), 0.1, 0, budget=Latency(), reference={"latency": table})
    assert table.removed(layer_widths(pruner.layers, pruner.parameter_masks(keep))) >= 0.1
    pruner.commit(keep)
    assert model(example).shape == (2, 10)
    # near the limit, a budget counts the units grouped convs must keep: out of reach, said so
    with pytest.raises(ValueError, match="of the macs is out of reach"):
        pruner.plan(keep, 0.9999, 1, present=keep, budget="macs", reference={"macs": pruner.macs[""]})


def test_a_transposed_conv_is_timed_as_a_transposed_conv_and_narrower_ones_are_predicted(monkeypatch):
    """A U-Net whose decoder upsamples with ConvTranspose2d: each entry is timed on a layer of the same
    kind (a Conv2d of the same stride would downsample the recorded input instead). Timings are not
    asserted: at this size the rest of the model dominates."""
    import sys
    from pathlib import Path

    from lightning_prune import latency

    sys.path.insert(0, str(Path(__file__).parent))
    from zoo_torch_pruning import TP_ZOO

    built = []
    shrunk = latency._shrunk
    monkeypatch.setattr(latency, "_shrunk", lambda module, *widths: built.append(type(shrunk(module, *widths))) or
                        shrunk(module, *widths))
    model, example = TP_ZOO["issue_unet"]()
    pruner = Pruner(model.eval(), example, Magnitude(2), "neuron")
    table = pruner.measure_latency(Latency(batch_size=4, levels=2, min_run_time=0.001))
    assert {"up1", "up2"} <= set(table.entries) and nn.ConvTranspose2d in built
    transposed = [kind for kind in built if kind is nn.ConvTranspose2d]
    assert len(transposed) == 2 * 2 * 2  # up1 and up2, each over 2 input x 2 output widths
    widths = layer_widths(pruner.layers, pruner.parameter_masks(pruner.plan(pruner.dense_keep(), 0.3, 0)))
    assert widths["up1"][1] < 8 and table.predict(widths) > 0  # narrower transposed convs have a prediction
