"""The Pruning callback in real Trainer runs on the digits data."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from lightning_prune import Cubic, DropGuard, Geometric, Global, Neurons, OneShot, Pruning
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier
from lightning_prune.ranking import min_units


class Recorder(Callback):
    """After every optimizer step: whether every pruned weight is exactly zero; after each epoch
    (after the Pruning callback's epoch end): the keep-masks, and whether the optimizer state's
    pruned entries are zero too."""

    def __init__(self, pruning):
        self.pruning, self.keeps, self.zero = pruning, [], []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        params = dict(pl_module.named_parameters())
        self.zero.append(all(torch.all(params[n][~m] == 0) for n, m in self.pruning._masks.items()))

    def on_train_epoch_end(self, trainer, pl_module):
        self.keeps.append({k: v.clone() for k, v in self.pruning.keep.items()})
        params, state = dict(pl_module.named_parameters()), trainer.optimizers[0].state
        for name, mask in self.pruning._masks.items():
            values = [v for v in state[params[name]].values() if torch.is_tensor(v) and v.shape == mask.shape]
            self.zero.append(all(torch.all(v[~mask] == 0) for v in values))


def _fit(pruning, max_epochs, optimizer="adam", batches=6, seed=0, **trainer_kwargs):
    from trainers import make_trainer

    L.seed_everything(seed)
    model = Classifier("lenet_300_100", optimizer=optimizer, lr=1e-2 if optimizer == "sgd" else 1e-3, input_shape=(1, 8, 8))
    recorder = Recorder(pruning)
    trainer = make_trainer(max_epochs, [pruning, recorder], limit_train_batches=batches, limit_val_batches=2, **trainer_kwargs)
    trainer.fit(model, DigitsDataModule(batch_size=32))
    return model, trainer, recorder


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
@pytest.mark.parametrize("scope", ["global", "layer"])
def test_weight_pruning_follows_the_schedule_and_stays_zero(optimizer, scope):
    pruning = Pruning(schedule=Geometric(target=0.875, per_cycle=0.5, warmup_epochs=1), criterion="l1", ranking=scope)
    model, _, recorder = _fit(pruning, max_epochs=5, optimizer=optimizer)
    assert [row["epoch"] for row in pruning.history] == [1, 2, 3]
    for row, fraction in zip(pruning.history, [0.5, 0.75, 0.875]):
        total = sum(mask.numel() for mask in pruning.keep.values())
        assert abs(row["sparsity"] - fraction) <= len(pruning.keep) / total  # within one weight per layer
    for name, mask in pruning.keep.items():
        if scope == "layer":
            assert abs(float((~mask).float().mean()) - 0.875) <= 1 / mask.numel()
        assert int(mask.sum()) >= min_units(mask.numel(), 0.01)
    for before, after in zip(recorder.keeps, recorder.keeps[1:]):
        assert all(not (after[k] & ~before[k]).any() for k in before)  # masks only shrink
    assert all(recorder.zero)  # every pruned weight exactly zero after every epoch of steps


def test_neuron_pruning_with_apoz_masks_whole_units():
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion="apoz", granularity=Neurons(remove=False),
                      ranking="layer")
    model, _, recorder = _fit(pruning, max_epochs=3)
    keep = pruning.keep
    hidden = [layer.name for layer in pruning.pruner.layers if not layer.is_output]
    assert sorted(keep) == sorted(hidden) and len(hidden) == 2  # the classifier's units are never pruned
    for name, mask in keep.items():
        assert int((~mask).sum()) == round(0.5 * mask.numel())
    # The pruned neurons' rows, biases and the consumers' columns are zero.
    params = dict(model.named_parameters())
    first = next(iter(keep))
    weight, bias = params[f"{first}.weight"], params[f"{first}.bias"]
    assert torch.all(weight[~keep[first]] == 0) and torch.all(bias[~keep[first]] == 0)
    assert all(recorder.zero)
    assert pruning.history[-1]["params_fraction"] < 0.6


class DensityModule(Classifier):
    """Logs the fraction of non-zero weights as `val_density`: drops with every prune."""

    def on_validation_epoch_end(self):
        weights = [p for n, p in self.named_parameters() if n.endswith("weight")]
        density = sum(int((w != 0).sum()) for w in weights) / sum(w.numel() for w in weights)
        self.log("val_density", density)


def test_rollback_restores_the_last_accepted_weights_and_stops():
    L.seed_everything(0)
    pruning = Pruning(schedule=Geometric(target=0.9, per_cycle=0.3, warmup_epochs=1), criterion="l1",
                      guard=DropGuard("val_density", 0.5))

    class AtRollback(Callback):
        """The model at the end of epoch 1 (accepted) and right after the rollback at the start of epoch 3."""

        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 3:
                self.state = {k: v.clone() for k, v in pl_module.state_dict().items()}

        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                self.accepted = {k: v.clone() for k, v in pl_module.state_dict().items()}

    from trainers import make_trainer

    probe = AtRollback()
    model = DensityModule("lenet_300_100", input_shape=(1, 8, 8))
    trainer = make_trainer(8, [pruning, probe], limit_train_batches=4, limit_val_batches=1)
    trainer.fit(model, DigitsDataModule(batch_size=32))
    # Density 0.7 after cycle 0 (drop 0.3: accepted), 0.49 after cycle 1 (drop 0.51: rolled back),
    # and no third cycle.
    assert [row["accepted"] for row in pruning.history] == [True, False]
    for key, value in probe.accepted.items():
        assert torch.equal(probe.state[key], value), key
    kept = torch.cat([mask.flatten() for mask in pruning.keep.values()])
    assert float((~kept).float().mean()) == pytest.approx(0.3, abs=1e-3)
    params = dict(model.named_parameters())
    assert all(torch.all(params[name][~mask] == 0) for name, mask in pruning._masks.items())


@pytest.mark.parametrize("granularity,criterion,remove,on_train_epoch_end,resume_epoch", [
    ("weight", "l1", False, False, 2),
    ("weight", "random", False, True, 0),  # mid warm-up
    ("neuron", "apoz", False, False, 2),
    ("neuron", "taylor", True, True, 1),  # right after the first prune
    ("neuron", "l2", True, False, 3),
])
def test_resume_mid_schedule_reaches_the_same_masks_and_weights(
    tmp_path, granularity, criterion, remove, on_train_epoch_end, resume_epoch
):
    from lightning.pytorch.callbacks import EarlyStopping

    def pruning():
        return Pruning(schedule=Geometric(target=0.8, per_cycle=0.4, warmup_epochs=1), criterion=criterion,
                       granularity=Neurons(remove=remove) if granularity == "neuron" else granularity,
                       guard=DropGuard("val_acc", 0.5))

    def callbacks():
        return [EarlyStopping("val_acc", mode="max", patience=100, check_on_train_epoch_end=False)]

    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}",
                                  save_on_train_epoch_end=on_train_epoch_end)
    full = pruning()
    model_full, _, _ = _fit_with(full, 5, [checkpoints, *callbacks()])
    resumed = pruning()
    model_resumed, _, _ = _fit_with(resumed, 5, callbacks(), ckpt_path=str(tmp_path / f"epoch={resume_epoch}.ckpt"))
    assert len(full.history) == len(resumed.history) == 4
    for key in full.keep:
        assert torch.equal(full.keep[key], resumed.keep[key])
    resumed_state = model_resumed.state_dict()
    for name, value in model_full.state_dict().items():
        assert value.shape == resumed_state[name].shape and torch.allclose(value, resumed_state[name], atol=1e-6), name


def _fit_with(pruning, max_epochs, extra, ckpt_path=None):
    from trainers import make_trainer

    L.seed_everything(0)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer = make_trainer(max_epochs, [pruning, *extra], limit_train_batches=6, limit_val_batches=2,
                           enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in extra))
    trainer.fit(model, DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    return model, trainer, None


def test_each_cycle_is_logged_to_the_trainers_loggers(tmp_path):
    import csv

    from lightning.pytorch.loggers import CSVLogger

    from trainers import make_trainer

    L.seed_everything(0)
    pruning = Pruning(schedule=Geometric(target=0.75, per_cycle=0.5, warmup_epochs=1), criterion="l2", monitor="val_acc")
    logger = CSVLogger(tmp_path, name="run")
    trainer = make_trainer(3, [pruning], logger=logger, limit_train_batches=3, limit_val_batches=1)
    trainer.fit(Classifier("lenet_300_100", input_shape=(1, 8, 8)), DigitsDataModule(batch_size=32))
    with open(logger.experiment.metrics_file_path) as handle:
        rows = list(csv.DictReader(handle))
    sparsity = [float(r["pruning/sparsity"]) for r in rows if r.get("pruning/sparsity")]
    assert sparsity == pytest.approx([0.5, 0.75], abs=1e-3)
    assert any(r.get("pruning/sparsity/model.features.0") for r in rows)
    macs = [float(r["pruning/macs"]) for r in rows if r.get("pruning/macs")]
    assert macs[0] > macs[1] > 0 and all(float(r["pruning/params"]) > 0 for r in rows if r.get("pruning/params"))
    metric = [float(r["pruning/metric/val_acc"]) for r in rows if r.get("pruning/metric/val_acc")]
    assert len(metric) == 2  # the monitored metric after each cycle's fine-tuning
    assert "Pruning summary" in pruning.summary_table() and len(pruning.summary_table().splitlines()) == 4


def test_the_readme_snippet_prunes_90_percent_within_half_a_point(tmp_path):
    """Acceptance (issue 2): the README snippet vs the dense model trained for the same epochs."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "experiments"))
    from digits_acceptance import run

    dense = run("dense", seed=0)
    pruned = run("weight_l1_90", seed=0)
    assert pruned["sparsity"] == pytest.approx(0.9) and not pruned["rolled_back"]
    assert pruned["test_acc"] >= dense["test_acc"] - 0.005
    neurons = run("neuron_apoz_50", seed=0)
    assert neurons["sparsity"] >= 0.5 and neurons["test_acc"] >= dense["test_acc"] - 0.01


@pytest.mark.parametrize("resume_epoch", [2, 4])  # before and after the rollback (start of epoch 3)
def test_resume_around_a_rollback_equals_the_uninterrupted_run(tmp_path, resume_epoch):
    from trainers import make_trainer

    def run(ckpt_path=None, extra=()):
        L.seed_everything(0)
        pruning = Pruning(schedule=Geometric(target=0.9, per_cycle=0.3, warmup_epochs=1), criterion="l1",
                          guard=DropGuard("val_density", 0.5))
        model = DensityModule("lenet_300_100", input_shape=(1, 8, 8))
        trainer = make_trainer(8, [pruning, *extra], limit_train_batches=4, limit_val_batches=1,
                               enable_checkpointing=bool(extra))
        trainer.fit(model, DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
        return model, pruning

    full_model, full = run(extra=[ModelCheckpoint(tmp_path, filename="{epoch}", save_top_k=-1)])
    model, resumed = run(ckpt_path=str(tmp_path / f"epoch={resume_epoch}.ckpt"))
    assert [r["accepted"] for r in resumed.history] == [r["accepted"] for r in full.history] == [True, False]
    assert all(torch.equal(full.keep[k], resumed.keep[k]) for k in full.keep)
    state = model.state_dict()
    assert all(torch.allclose(v, state[k], atol=1e-6) for k, v in full_model.state_dict().items())


def test_resume_from_a_best_k_checkpoint_equals_the_uninterrupted_run(tmp_path):
    def pruning():
        return Pruning(schedule=Geometric(target=0.6, per_cycle=0.3, warmup_epochs=1), criterion="l2", granularity="neuron")

    best = ModelCheckpoint(dirpath=tmp_path, monitor="val_acc", mode="max", save_top_k=2, filename="{epoch}")
    full = pruning()
    model_full, _, _ = _fit_with(full, 6, [best])
    earliest = min(tmp_path.glob("epoch=*.ckpt"), key=lambda p: int(p.stem.split("=")[1]))
    assert int(earliest.stem.split("=")[1]) < 5
    resumed = pruning()
    model_resumed, _, _ = _fit_with(resumed, 6, [], ckpt_path=str(earliest))
    assert all(torch.equal(full.keep[k], resumed.keep[k]) for k in full.keep)
    state = model_resumed.state_dict()
    for name, value in model_full.state_dict().items():
        assert value.shape == state[name].shape and torch.allclose(value, state[name], atol=1e-6), name


@pytest.mark.parametrize("normalize", [None, "mean"])
def test_global_ranking_with_normalized_scores_does_not_empty_a_small_scale_layer(normalize):
    # The second hidden layer's weights are 1000x smaller, so its raw L2 scores are too: one raw global
    # ranking takes it down to `min_keep` first; normalised scores give it a fair share.
    from trainers import make_trainer

    L.seed_everything(0, verbose=False)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8), lr=1e-4)
    with torch.no_grad():
        model.model.features[2].weight.mul_(1e-3)
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion="l2", granularity="neuron",
                      ranking=Global(normalize=normalize, min_keep=0.05), verbose=False)
    make_trainer(2, [pruning], limit_train_batches=2, limit_val_batches=1).fit(model, DigitsDataModule(batch_size=32))
    widths = [model.model.features[0].out_features, model.model.features[2].out_features]
    assert (300 - widths[0]) + (100 - widths[1]) == 200  # half of the 400 hidden units went, either way
    if normalize is None:
        assert widths[1] == min_units(100, 0.05), widths
    else:
        assert widths[1] > 30 and widths[0] < 270, widths


def test_normalized_global_neuron_ranking_across_removals_reaches_the_target():
    # After each cycle the removed units are gone from the model (scores -inf in dense coordinates):
    # the normalising statistic must only see the units still kept.
    from trainers import make_trainer

    L.seed_everything(0, verbose=False)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.3, warmup_epochs=1), criterion="l2", granularity="neuron",
                      ranking=Global(normalize="mean"), verbose=False)
    make_trainer(1 + len(pruning.fractions), [pruning], limit_train_batches=2, limit_val_batches=1).fit(
        model, DigitsDataModule(batch_size=32))
    widths = [model.model.features[0].out_features, model.model.features[2].out_features]
    assert len(pruning.fractions) >= 3 and pruning.history[-1]["sparsity"] == pytest.approx(0.6, abs=1 / 400)
    assert 400 - sum(widths) == round(0.6 * 400)  # the units really left the model
    assert all(w >= min_units(size, 0.01) for w, size in zip(widths, (300, 100)))


def _checkpointed(tmp_path, pruning, epochs, resume_epoch):
    """Fit ``epochs`` epochs with ``pruning`` (or none), a checkpoint after each; the path of the one
    a fit resumes from at ``resume_epoch``."""
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")
    _fit_with(pruning, epochs, [checkpoints]) if pruning is not None else _fit_without_pruning(epochs, checkpoints)
    return str(tmp_path / f"epoch={resume_epoch - 1}.ckpt")


def _fit_without_pruning(epochs, checkpoints):
    from trainers import make_trainer

    L.seed_everything(0)
    trainer = make_trainer(epochs, [checkpoints], limit_train_batches=6, limit_val_batches=2, enable_checkpointing=True)
    trainer.fit(Classifier("lenet_300_100", input_shape=(1, 8, 8)), DigitsDataModule(batch_size=32))


def _geometric(target=0.8, per_cycle=0.4):
    return Geometric(target=target, per_cycle=per_cycle, warmup_epochs=1)


@pytest.fixture(scope="module")
def geometric_checkpoint(tmp_path_factory):
    """A fit of ``Pruning(schedule=_geometric())`` (L1 weights, 0.4, 0.64, 0.784, 0.8 from epoch 1), with a
    checkpoint after each epoch; the one a fit resumes from at epoch 2, after the first prune."""
    return _checkpointed(tmp_path_factory.mktemp("geometric"), Pruning(schedule=_geometric()), epochs=5, resume_epoch=2)


@pytest.mark.parametrize(("changes", "named"), [
    ({"schedule": _geometric(target=0.7)}, "schedule.target: checkpoint 0.8, now 0.7"),
    ({"schedule": Cubic(target=0.8, cycles=4, warmup_epochs=1)}, "schedule.type: checkpoint 'Geometric', now 'Cubic'"),
    ({"schedule": _geometric(per_cycle=0.5)}, "schedule.per_cycle: checkpoint 0.4, now 0.5"),
    ({"schedule": Geometric(target=0.8, per_cycle=0.4, warmup_epochs=1, finetune_epochs=2)},
     "schedule.finetune_epochs: checkpoint 1, now 2"),
    ({"criterion": "l2"}, "criterion.name: checkpoint 'l1', now 'l2'"),
    ({"ranking": "layer"}, "ranking.type: checkpoint 'Global', now 'PerLayer'"),
], ids=["target", "schedule", "per_cycle", "finetune_epochs", "criterion", "ranking"])
def test_a_resume_with_a_changed_target_or_schedule_is_refused_by_name(geometric_checkpoint, changes, named):
    pruning = Pruning(**{"schedule": _geometric(), **changes})
    with pytest.raises(ValueError, match="configured differently") as caught:
        _fit_with(pruning, 9, [], ckpt_path=geometric_checkpoint)
    assert named in str(caught.value)  # the message names the key that differs
    assert pruning.history == []  # refused before any cycle: no silent restart from the dense schedule


def test_a_resume_with_the_same_configuration_continues_the_schedule(geometric_checkpoint):
    pruning = Pruning(schedule=_geometric())
    _fit_with(pruning, 5, [], ckpt_path=geometric_checkpoint)
    assert [row["epoch"] for row in pruning.history] == [1, 2, 3, 4]  # cycle 0 from the checkpoint, then 1..3
    assert pruning.history[-1]["sparsity"] == pytest.approx(0.8, abs=1e-3)


def _neurons_with_guard():
    return Pruning(schedule=Geometric(target=0.6, per_cycle=0.3, warmup_epochs=1), criterion="l2", granularity=Neurons(),
                   guard=DropGuard("val_acc", 0.5))


@pytest.fixture(scope="module")
def neuron_run(tmp_path_factory):
    """An uninterrupted fit of ``_neurons_with_guard()`` with a checkpoint after each epoch: the folder,
    the final keep-masks and weights."""
    folder = tmp_path_factory.mktemp("neurons")
    pruning = _neurons_with_guard()
    model, _, _ = _fit_with(pruning, 4, [ModelCheckpoint(dirpath=folder, save_top_k=-1, every_n_epochs=1, filename="{epoch}")])
    return folder, pruning.keep, model.state_dict()


@pytest.mark.parametrize("key", [
    "granularity.round_to",  # Neurons(round_to=None)
    "granularity.remove",  # Neurons(remove=True)
    "guard.mode",  # DropGuard(mode="max")
    "ranking.normalize",  # Global(normalize="auto")
    "schedule.budget",
])
def test_a_checkpoint_written_before_an_option_with_a_default_existed_still_resumes(neuron_run, tmp_path, key):
    folder, keep, weights = neuron_run
    checkpoint = torch.load(folder / "epoch=1.ckpt", weights_only=False)
    (state_key,) = [name for name in checkpoint["callbacks"] if name.startswith("Pruning{")]
    config = checkpoint["callbacks"][state_key]["config"]
    # Fields at their defaults are never stored, so a checkpoint written before the option existed
    # looks the same; the settings that are not at their defaults are.
    assert key not in config and {"granularity.type", "guard.max_drop", "schedule.target"} <= set(config), config
    torch.save(checkpoint, tmp_path / "older.ckpt")
    torch.save(checkpoint, tmp_path / "older.ckpt")
    resumed = _neurons_with_guard()
    model, _, _ = _fit_with(resumed, 4, [], ckpt_path=str(tmp_path / "older.ckpt"))
    assert len(resumed.history) == 3 and all(torch.equal(keep[k], resumed.keep[k]) for k in keep)
    state = model.state_dict()
    for name, value in weights.items():
        assert value.shape == state[name].shape and torch.allclose(value, state[name], atol=1e-6), name


def test_a_resume_with_another_granularity_is_refused(tmp_path):
    ckpt = _checkpointed(tmp_path, Pruning(schedule=OneShot(target=0.5, warmup_epochs=1)), epochs=2, resume_epoch=2)
    with pytest.raises(ValueError, match=r"written by Pruning\{'granularity': 'weight'\}, this callback is Pruning\{'granularity': 'neuron'\}"):
        _fit_with(Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), granularity="neuron"), 4, [], ckpt_path=ckpt)


def test_a_dense_checkpoint_resumed_past_the_first_prune_is_refused_and_before_it_prunes(tmp_path):
    ckpt = _checkpointed(tmp_path, None, epochs=2, resume_epoch=2)  # written without Pruning
    with pytest.raises(ValueError, match="written without a Pruning callback and resumes at epoch 2"):
        _fit_with(Pruning(schedule=OneShot(target=0.5, warmup_epochs=1)), 4, [], ckpt_path=ckpt)
    late = Pruning(schedule=OneShot(target=0.5, warmup_epochs=3))  # its first prune is still ahead: the fit prunes
    _fit_with(late, 4, [], ckpt_path=ckpt)
    assert len(late.history) == 1 and late.history[0]["sparsity"] == pytest.approx(0.5, abs=0.01)
