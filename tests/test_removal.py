"""Neuron pruning that really shrinks the network, inside Trainer.fit, and checkpoints that load."""

import subprocess
import sys
import textwrap

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from trainers import make_trainer
from lightning_prune import DropGuard, Geometric, Neurons, OneShot, Pruning
from lightning_prune.checkpoint import PLAN_KEY, export_program, load_compact, save_compact
from lightning_prune.data import DigitsDataModule, MNIST1DDataModule
from lightning_prune.models import Classifier


def _prune(tmp_path, arch="lenet_300_100", max_drop=None, **kwargs):
    L.seed_everything(0)
    guard = DropGuard(monitor="val_acc", max_drop=max_drop) if max_drop is not None else None
    pruning = Pruning(criterion="l2", granularity="neuron", schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1),
                      guard=guard, **kwargs)
    checkpoints = ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, filename="{epoch}")
    data = MNIST1DDataModule(batch_size=32) if arch == "cnn1d" else DigitsDataModule(batch_size=32)
    model = Classifier(arch, input_shape=data.input_shape, lr=3e-3)
    trainer = make_trainer(pruning.timeline.epochs_needed, [pruning, checkpoints], enable_checkpointing=True,
                           limit_train_batches=4, limit_val_batches=1)
    trainer.fit(model, data)
    return model, pruning, trainer


@pytest.mark.parametrize("arch", ["lenet_300_100", "vgg_small", "resnet_small"])
def test_pruned_neurons_are_removed_and_the_model_is_smaller(tmp_path, arch):
    dense = Classifier(arch, input_shape=(1, 8, 8))
    model, pruning, trainer = _prune(tmp_path, arch)
    modules = dict(model.named_modules())
    for key, mask in pruning.keep.items():
        assert modules[key].weight.shape[0] == int(mask.sum())  # the root layer has only its kept units
    assert sum(p.numel() for p in model.parameters()) < 0.75 * sum(p.numel() for p in dense.parameters())
    assert pruning.history[-1]["sparsity"] == pytest.approx(0.5, abs=0.01)
    # The optimizer trains the new parameters, not the dead ones.
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in model.parameters()}
    assert not [n for n, m in model.named_modules() if hasattr(m, "weight_orig")]


def test_max_drop_removes_only_accepted_cycles(tmp_path):
    model, pruning, _ = _prune(tmp_path, max_drop=1.0)
    assert all(row["accepted"] for row in pruning.history)
    modules = dict(model.named_modules())
    assert all(modules[key].weight.shape[0] == int(mask.sum()) for key, mask in pruning.keep.items())


@pytest.mark.parametrize("arch", ["lenet_300_100", "vgg_small", "resnet_small", "cnn1d"])
def test_checkpoint_of_a_pruned_model_loads_in_a_fresh_process(tmp_path, arch):
    model, pruning, _ = _prune(tmp_path, arch)
    checkpoint = sorted(tmp_path.glob("*.ckpt"))[-1]
    assert torch.load(checkpoint, weights_only=True)[PLAN_KEY]["steps"]
    x = torch.randn(4, *model.hparams.input_shape)
    torch.save(x, tmp_path / "x.pt")
    model.eval()
    torch.save(model(x).detach(), tmp_path / "y.pt")
    script = textwrap.dedent(f"""
        import torch
        from lightning_prune.models import Classifier
        model = Classifier.load_from_checkpoint({str(checkpoint)!r}).eval()
        x, y = torch.load({str(tmp_path / 'x.pt')!r}), torch.load({str(tmp_path / 'y.pt')!r})
        assert torch.allclose(model(x), y, atol=1e-6), (model(x) - y).abs().max()
        print("params", sum(p.numel() for p in model.parameters()))
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"params {sum(p.numel() for p in model.parameters())}" in done.stdout


def test_fit_resumes_from_a_pruned_checkpoint(tmp_path):
    _, pruning, _ = _prune(tmp_path)
    last = sorted(tmp_path.glob("*.ckpt"))[-1]
    L.seed_everything(0)
    resumed = Pruning(criterion="l2", granularity="neuron", schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1))
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8), lr=3e-3)
    trainer = make_trainer(pruning.timeline.epochs_needed + 1, [resumed], limit_train_batches=4, limit_val_batches=1)
    trainer.fit(model, DigitsDataModule(batch_size=32), ckpt_path=str(last))
    modules = dict(model.named_modules())
    assert all(modules[key].weight.shape[0] == int(mask.sum()) for key, mask in resumed.keep.items())
    assert [r["sparsity"] for r in resumed.history] == [r["sparsity"] for r in pruning.history]


def test_plain_exports_restore_the_compact_model(tmp_path):
    model, pruning, _ = _prune(tmp_path)
    model.eval()
    x = torch.randn(3, 1, 8, 8)
    save_compact(model, pruning.state_dict()["plan"], tmp_path / "compact.pt")
    fresh = load_compact(Classifier("lenet_300_100", input_shape=(1, 8, 8)), tmp_path / "compact.pt").eval()
    assert torch.allclose(fresh(x), model(x), atol=1e-6)
    export_program(model.model, x[:1], tmp_path / "compact.pt2")  # traced on one example ...
    program = torch.export.load(tmp_path / "compact.pt2").module()
    assert torch.allclose(program(x), model(x), atol=1e-6)  # ... runs any batch size
    big = torch.randn(257, 1, 8, 8)
    assert torch.allclose(program(big), model(big), atol=1e-5)


class WithoutMixin(Classifier):
    """A module that does nothing about pruned checkpoints: the callback must restore them itself."""

    restores_pruned_architecture = False

    def on_load_checkpoint(self, checkpoint):
        L.LightningModule.on_load_checkpoint(self, checkpoint)


def test_the_callback_restores_the_architecture_for_modules_without_the_mixin(tmp_path):
    _, pruning, _ = _prune(tmp_path)
    last = sorted(tmp_path.glob("*.ckpt"))[-1]
    resumed = Pruning(criterion="l2", granularity="neuron", schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1))
    model = WithoutMixin("lenet_300_100", input_shape=(1, 8, 8), lr=3e-3)
    trainer = make_trainer(pruning.timeline.epochs_needed + 1, [resumed], limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, DigitsDataModule(batch_size=32), ckpt_path=str(last))
    modules = dict(model.named_modules())
    assert all(modules[key].weight.shape[0] == int(mask.sum()) for key, mask in resumed.keep.items())
    assert "on_load_checkpoint" not in model.__dict__  # the temporary wrapper is gone


@pytest.mark.parametrize("budget", ["macs", "params"])
def test_budget_in_macs_or_parameters_is_reached(tmp_path, budget):
    L.seed_everything(0)
    pruning = Pruning(criterion="l2", granularity="neuron", schedule=OneShot(target=0.6, warmup_epochs=1, budget=budget))
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer = make_trainer(2, [pruning], limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, DigitsDataModule(batch_size=32))
    row = pruning.history[-1]
    removed = 1 - row[f"{budget}_fraction"]
    assert 0.6 <= removed <= 0.6 + 0.02  # reached, by at most a few units more
    if budget == "params":
        dense = sum(p.numel() for p in Classifier("lenet_300_100").parameters())
        assert sum(p.numel() for p in model.parameters()) <= 0.4 * dense


def test_round_to_keeps_multiples_of_eight(tmp_path):
    L.seed_everything(0)
    pruning = Pruning(criterion="l2", granularity=Neurons(round_to=8), ranking="layer",
                      schedule=OneShot(target=0.5, warmup_epochs=1))
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    make_trainer(2, [pruning], limit_train_batches=2, limit_val_batches=1).fit(model, DigitsDataModule(batch_size=32))
    modules = dict(model.named_modules())
    widths = [modules[key].weight.shape[0] for key in pruning.keep]
    assert sorted(widths) == [56, 152]  # 150 -> 152 and 50 -> 56: kept counts rounded up to multiples of 8


def test_corrupted_or_foreign_plans_are_named(tmp_path):
    model, pruning, _ = _prune(tmp_path)
    checkpoint = torch.load(sorted(tmp_path.glob("*.ckpt"))[-1], weights_only=True)
    corrupted = dict(checkpoint, **{PLAN_KEY: {"steps": "oops"}})
    torch.save(corrupted, tmp_path / "corrupted.ckpt")
    with pytest.raises(ValueError, match="Corrupted pruning plan"):
        Classifier.load_from_checkpoint(tmp_path / "corrupted.ckpt")
    foreign = dict(checkpoint, **{PLAN_KEY: dict(checkpoint[PLAN_KEY], steps=[{"model.nope": [0]}])})
    torch.save(foreign, tmp_path / "foreign.ckpt")
    with pytest.raises(ValueError, match="does not fit this model .*names layer 'model.nope', which this model does not have"):
        Classifier.load_from_checkpoint(tmp_path / "foreign.ckpt")
    other_arch = dict(checkpoint, hyper_parameters=dict(checkpoint["hyper_parameters"], arch_kwargs={"hidden": [200, 100]}))
    torch.save(other_arch, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="pruning plan does not fit this model.*Cannot remove units"):
        Classifier.load_from_checkpoint(tmp_path / "other.ckpt")


@pytest.mark.parametrize("epoch", [0, 2])  # 0: the dense warm-up (no plan); 2: after one of the two removals
def test_testing_an_earlier_checkpoint_after_removal_rebuilds_its_architecture(tmp_path, epoch):
    """The ordinary ModelCheckpoint flow: `trainer.test(ckpt_path=<an earlier, larger model>)` after a fit
    that removed units since. The module is rebuilt dense from its hyperparameters, then the checkpoint's
    plan is replayed, exactly as `load_from_checkpoint` does."""
    model, pruning, trainer = _prune(tmp_path)
    path = tmp_path / f"epoch={epoch}.ckpt"
    saved = torch.load(path, weights_only=False)["state_dict"]
    data = DigitsDataModule(batch_size=32)
    found = trainer.test(model, data, ckpt_path=str(path), verbose=False)[0]
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in saved.items()}
    assert all(torch.equal(model.state_dict()[k], v) for k, v in saved.items())
    fresh = Classifier.load_from_checkpoint(path)
    expected = make_trainer(1, limit_test_batches=trainer.limit_test_batches).test(fresh, data, verbose=False)[0]
    assert found == pytest.approx(expected)


def test_a_pruned_module_without_hyperparameters_cannot_load_an_earlier_checkpoint_and_is_untouched(tmp_path):
    from lightning_prune.checkpoint import restore_pruned

    model, pruning, trainer = _prune(tmp_path)
    model._hparams = type(model.hparams)()  # as if it never called save_hyperparameters()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    checkpoint = torch.load(tmp_path / "epoch=0.ckpt", weights_only=False)
    with pytest.raises(ValueError, match=r"cannot be rebuilt dense .* Classifier.load_from_checkpoint\(path\)"):
        restore_pruned(model, checkpoint)
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
