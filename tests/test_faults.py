"""Faults lose nothing: a failure while scoring, removing or saving leaves model and checkpoint intact."""

import copy

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from trainers import make_trainer
from lightning_prune import NM, Distillation, Geometric, OneShot, Pruning
from lightning_prune import surgery
from lightning_prune.criteria import Magnitude
from lightning_prune.data import DigitsDataModule
from lightning_prune.layers import find_prunable_layers
from lightning_prune.models import Classifier, build_model
from lightning_prune.structure import NeuronStructure


class FailingAt(Magnitude):
    """L2 scores, except that cycle `cycle` raises.

    The failing cycle is an injected fault, not a setting: it is private, so it stays out of the
    criterion's fingerprint and a checkpoint resumes with another one (``FailingAt(-1)``: no fault).
    """

    def __init__(self, cycle):
        super().__init__(2)
        self._failing_cycle = cycle

    def scores(self, layers, granularity, cycle):
        if cycle == self._failing_cycle:
            raise RuntimeError("scoring failed")
        return super().scores(layers, granularity, cycle)


class EpochEndState(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        self.state = copy.deepcopy(pl_module.state_dict())


def _run(tmp_path, criterion, granularity="neuron", ckpt_path=None, max_epochs=4):
    L.seed_everything(0)
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.3, warmup_epochs=1), criterion=criterion,
                      granularity=granularity)
    recorder = EpochEndState()
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer = make_trainer(max_epochs, [pruning, recorder, ModelCheckpoint(tmp_path, filename="{epoch}", save_top_k=-1)],
                           enable_checkpointing=True, limit_train_batches=3, limit_val_batches=1)
    error = None
    try:
        trainer.fit(model, DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    except RuntimeError as caught:
        error = caught
    return model, pruning, recorder, error


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_a_scoring_failure_leaves_the_model_and_checkpoint_intact(tmp_path, granularity):
    model, pruning, recorder, error = _run(tmp_path, FailingAt(cycle=1), granularity)
    assert str(error) == "scoring failed"
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in recorder.state.items())  # as at the end of epoch 1
    assert len(pruning.history) == 1
    # The last checkpoint loads and the run resumes from it.
    resumed, resumed_pruning, _, error = _run(tmp_path, FailingAt(cycle=-1), granularity, ckpt_path=str(tmp_path / "epoch=1.ckpt"))
    assert error is None and [row["cycle"] for row in resumed_pruning.history] == [0, 1, 2]


def _stepped(arch):
    """A model of ``arch`` after one Adam step (so the optimizer has state to carry over), its input, the optimizer."""
    torch.manual_seed(0)
    model = build_model(arch)
    x = torch.randn(2, 1, 8, 8)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model(x).sum().backward()
    optimizer.step()
    return model, x, optimizer


def test_a_removal_failure_puts_the_model_and_optimizer_back(monkeypatch):
    model, x, optimizer = _stepped("vgg_small")
    structure = NeuronStructure(model, x, find_prunable_layers(model, x))
    keep = {g.key: torch.arange(g.size) % 2 == 0 for g in structure.groups}
    shapes = {n: p.shape for n, p in model.named_parameters()}
    values = copy.deepcopy(model.state_dict())
    params = list(model.parameters())

    original = surgery.remove_groups

    def half_then_fail(target, example_input, removal, graph=None):  # on the real model: prune one group, then fail
        if target is not model:
            return original(target, example_input, removal, graph=graph)
        original(target, example_input, dict(list(removal.items())[:1]))
        raise RuntimeError("surgery failed")

    monkeypatch.setattr(surgery, "remove_groups", half_then_fail)
    with pytest.raises(RuntimeError, match="surgery failed"):
        surgery.remove_units(model, x, structure.removal(keep), [optimizer])
    assert {n: p.shape for n, p in model.named_parameters()} == shapes
    assert all(torch.equal(model.state_dict()[k], v) for k, v in values.items())
    assert [id(p) for p in model.parameters()] == [id(p) for p in params]
    assert [id(p) for p in optimizer.param_groups[0]["params"]] == [id(p) for p in params]
    model(x)  # still runs

    monkeypatch.setattr(surgery, "remove_groups", original)
    monkeypatch.setattr(surgery, "_slice_like", lambda *a: (_ for _ in ()).throw(RuntimeError("optimizer surgery failed")))
    with pytest.raises(RuntimeError, match="optimizer surgery failed"):
        surgery.remove_units(model, x, structure.removal(keep), [optimizer])
    assert {n: p.shape for n, p in model.named_parameters()} == shapes
    assert all(optimizer.state[p]["exp_avg"].shape == p.shape for p in model.parameters())


def test_a_failing_checkpoint_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    class FailSecondSave(Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 2:
                monkeypatch.setattr(torch, "save", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("disk full")))

    L.seed_everything(0)
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.3, warmup_epochs=1), criterion="l2", granularity="neuron")
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer = make_trainer(4, [pruning, FailSecondSave(), ModelCheckpoint(tmp_path, filename="{epoch}", save_top_k=-1)],
                           enable_checkpointing=True, limit_train_batches=3, limit_val_batches=1)
    with pytest.raises(RuntimeError, match="disk full"):
        trainer.fit(model, DigitsDataModule(batch_size=32))
    monkeypatch.undo()
    restored = Classifier.load_from_checkpoint(tmp_path / "epoch=1.ckpt")
    assert sum(p.numel() for p in restored.parameters()) < sum(p.numel() for p in Classifier("lenet_300_100").parameters())


def test_one_callback_instance_serves_several_fits():
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion="l1")
    for _ in range(2):
        L.seed_everything(0)
        model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
        make_trainer(2, [pruning], limit_train_batches=2, limit_val_batches=1).fit(model, DigitsDataModule(batch_size=32))
        assert len(pruning.history) == 1 and pruning.history[0]["sparsity"] == pytest.approx(0.5, abs=1e-3)
        zero = sum(int((p == 0).sum()) for n, p in model.named_parameters() if n.endswith("weight"))
        assert zero >= 0.5 * sum(m.numel() for m in pruning.keep.values()) - 3


def _digest(model, optimizer):
    """Every tensor of the model and the optimizer state, with names and shapes: equal or not."""
    import hashlib

    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode() + str(tuple(tensor.shape)).encode() + tensor.detach().cpu().numpy().tobytes())
    for index, param in enumerate(p for group in optimizer.param_groups for p in group["params"]):
        digest.update(str(index).encode() + str(tuple(param.shape)).encode())
        for key, value in sorted(optimizer.state.get(param, {}).items()):
            digest.update(key.encode() + (value.detach().cpu().numpy().tobytes() if torch.is_tensor(value) else repr(value).encode()))
    return digest.hexdigest()


@pytest.mark.parametrize("failing_step", ["retrace", "macs", "check"])
def test_a_failure_after_the_removal_puts_model_optimizer_and_pruner_back(monkeypatch, failing_step):
    # The removal itself succeeds; what follows it (re-tracing the compact model, counting its MACs,
    # checking the masks fit) fails: the commit is all or nothing.
    from lightning_prune import pruner as pruner_module
    from lightning_prune.pruner import Pruner

    model, x, optimizer = _stepped("resnet_small")
    pruner = Pruner(model, x, Magnitude(2), granularity="neuron", ranking="layer")
    keep = pruner.plan(pruner.dense_keep(), 0.5, 0)
    before = _digest(model, optimizer)
    structure, macs = pruner.structure, pruner.macs
    expected = model.eval()(x).detach()

    def fail(*args, **kwargs):
        raise RuntimeError(f"{failing_step} failed")

    target = {"retrace": "NeuronStructure", "macs": "count_macs", "check": "_check_fits"}[failing_step]
    monkeypatch.setattr(pruner_module, target, fail)
    with pytest.raises(RuntimeError, match=f"{failing_step} failed"):
        pruner.commit(keep, optimizers=[optimizer])
    assert _digest(model, optimizer) == before
    assert pruner.structure is structure and pruner.macs is macs
    assert torch.equal(model(x).detach(), expected)  # the dense model still computes what it did

    monkeypatch.undo()
    pruner.commit(keep, optimizers=[optimizer])  # and the same step then succeeds
    assert _digest(model, optimizer) != before


def test_the_model_s_own_forward_error_reaches_the_user_not_the_tracer_s_retry():
    from lightning_prune.surgery import TraceError, build_graph

    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x):
            raise KeyError("the real cause")

    with pytest.raises(TraceError, match="KeyError: 'the real cause'") as caught:
        build_graph(Broken(), torch.randn(2, 4))
    assert isinstance(caught.value.__cause__, KeyError)


def _callback_digest(pruning):
    """Every value of the callback's checkpointed state (history, masks, plan, teacher...): equal or not.

    Leaves out ``pending``: the previous cycle's judgement, due at the start of the epoch, is done
    before the failing prune (and is not part of it).
    """
    import hashlib

    digest = hashlib.sha256()

    def walk(value):
        if torch.is_tensor(value):
            digest.update(str(tuple(value.shape)).encode() + value.detach().cpu().numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                digest.update(repr(key).encode())
                walk(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item)
        else:
            digest.update(repr(value).encode())

    walk({key: value for key, value in pruning.state_dict().items() if key != "pending"})
    return digest.hexdigest()


class EpochEndDigests(Callback):
    """After Pruning's own epoch end: digests of the model with its optimizer, and of the callback's state."""

    def __init__(self, pruning):
        self.pruning, self.digests = pruning, []

    def on_train_epoch_end(self, trainer, pl_module):
        self.digests.append((_digest(pl_module, trainer.optimizers[0]), _callback_digest(self.pruning)))


@pytest.mark.parametrize(("granularity", "distill", "failing_cycle"), [
    ("neuron", Distillation(), 0),  # the teacher is taken just before this prune
    ("neuron", Distillation(), 1),  # the teacher distils when the next prune fails
    (NM(2, 4), None, 1),  # the 2:4 selection fails, after scoring
], ids=["distill-first-prune", "distill-second-prune", "2:4-second-prune"])
def test_a_failing_prune_step_leaves_model_optimizer_and_callback_state_as_they_were(monkeypatch, granularity, distill,
                                                                                      failing_cycle):
    from lightning_prune import pruner as pruner_module

    selections = []

    def select_then_fail(*args, **kwargs):
        selections.append(args[2])
        if len(selections) > failing_cycle:
            raise RuntimeError("N:M selection failed")
        return select_nm(*args, **kwargs)

    select_nm = pruner_module.select_nm
    monkeypatch.setattr(pruner_module, "select_nm", select_then_fail)
    isnm = isinstance(granularity, NM)
    L.seed_everything(0)
    pruning = Pruning(schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1),
                      criterion="l1" if isnm else FailingAt(failing_cycle), granularity=granularity, distill=distill,
                      verbose=False)
    recorder = EpochEndDigests(pruning)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer = make_trainer(4, [pruning, recorder], limit_train_batches=3, limit_val_batches=1)
    with pytest.raises(RuntimeError, match="N:M selection failed" if isnm else "scoring failed"):
        trainer.fit(model, DigitsDataModule(batch_size=32))
    assert len(recorder.digests) == 1 + failing_cycle  # the prune at the start of epoch 1 + failing_cycle failed
    assert (_digest(model, trainer.optimizers[0]), _callback_digest(pruning)) == recorder.digests[-1]
    assert len(pruning.history) == failing_cycle
    assert selections == (pytest.approx([0.3, 0.5]) if isnm else [])  # the cycles' fractions: 3:4, then 2:4 (failed)
    # the fit is over: the distillation hook has left the module, as after a fit that ends normally
    assert pruning.teacher is None and "training_step" not in vars(model) and not model._forward_hooks
