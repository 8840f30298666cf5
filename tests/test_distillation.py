"""Distillation from the dense model during fine-tuning (issue 17): the loss term, real fits with
neuron removal, resume, DDP, and bad input named."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint

from trainers import make_trainer
from lightning_prune import Distillation, Geometric, Neurons, OneShot, Pruning
from lightning_prune.counting import count_parameters
from lightning_prune.data import DigitsDataModule
from lightning_prune.distillation import DistillationHook, distillation_loss, logits_of
from lightning_prune.models import Classifier


def _classifier():
    return Classifier("lenet_300_100", input_shape=(1, 8, 8))


def test_the_term_is_t_squared_kl_of_the_softened_distributions():
    student, teacher = torch.randn(5, 10), torch.randn(5, 10)
    expected = sum(
        (F.softmax(teacher[i] / 3, -1) * (F.log_softmax(teacher[i] / 3, -1) - F.log_softmax(student[i] / 3, -1))).sum()
        for i in range(5)) / 5 * 9
    assert torch.allclose(distillation_loss(student, teacher, 3.0), expected, atol=1e-6)
    assert distillation_loss(teacher, teacher, 3.0).abs() < 1e-6


def test_the_hook_adds_weight_times_the_term_to_the_returned_loss_and_leaves_when_removed():
    L.seed_everything(0)
    student, teacher = _classifier(), _classifier().eval()
    x, y = torch.randn(8, 1, 8, 8), torch.randint(0, 10, (8,))
    plain = student.training_step((x, y), 0)
    hook = DistillationHook(student, teacher, Distillation(weight=0.5, temperature=2.0), active=lambda: True)
    distilled = student.training_step((x, y), 0)
    plain = plain["loss"] if isinstance(plain, dict) else plain
    distilled = distilled["loss"] if isinstance(distilled, dict) else distilled
    assert torch.allclose(distilled - plain, 0.5 * distillation_loss(student(x), teacher(x), 2.0), atol=1e-5)
    hook.remove()
    assert "training_step" not in vars(student) and not student._forward_hooks



def test_the_student_s_logits_are_found_after_a_loss_in_the_output():
    """A Hugging Face model called with labels returns ``ModelOutput(loss=..., logits=...)``: the loss
    comes first, and was taken for the logits (an IndexError in the fit) before ``logits`` was read by name."""
    outputs = pytest.importorskip("transformers.modeling_outputs")
    loss, logits = torch.tensor(1.5), torch.randn(4, 3)
    assert logits_of(outputs.SequenceClassifierOutput(loss=loss, logits=logits)) is logits
    assert logits_of((loss, logits)) is logits  # a tuple: the first floating tensor that is not a scalar
    assert logits_of({"logits": logits, "hidden": torch.randn(4, 8)}) is logits

class _Spy(L.Callback):
    def __init__(self, pruning):
        self.pruning, self.seen = pruning, []

    def on_train_epoch_end(self, trainer, pl_module):
        teacher = self.pruning.teacher
        self.seen.append(None if teacher is None else (count_parameters(teacher)[1], count_parameters(pl_module)[1]))


def test_the_teacher_stays_dense_while_the_student_loses_neurons():
    L.seed_everything(0)
    pruning = Pruning(schedule=Geometric(target=0.75, per_cycle=0.5, warmup_epochs=1), granularity=Neurons(),
                      distill=Distillation(weight=0.5), verbose=False)
    spy = _Spy(pruning)
    model = _classifier()
    dense = count_parameters(model)[1]
    make_trainer(3, [pruning, spy], limit_train_batches=3, limit_val_batches=1).fit(model, DigitsDataModule(batch_size=32))
    assert spy.seen[0] is None  # warm-up: no teacher yet
    assert all(teacher == dense and student < dense for teacher, student in spy.seen[1:])
    assert spy.seen[2][1] < spy.seen[1][1]  # the second cycle removed more
    assert pruning.teacher is None and "training_step" not in vars(model)  # the hook is gone after the fit


def test_distillation_changes_the_fine_tuned_weights_and_only_in_the_chosen_cycles():
    def run(distill):
        L.seed_everything(0)
        model = _classifier()
        pruning = Pruning(schedule=Geometric(target=0.75, per_cycle=0.5, warmup_epochs=1), distill=distill, verbose=False)
        make_trainer(3, [pruning], limit_train_batches=3, limit_val_batches=1).fit(model, DigitsDataModule(batch_size=32))
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    plain, distilled, later_only = run(None), run(Distillation()), run(Distillation(cycles=[5]))
    assert not torch.allclose(plain, distilled)
    assert torch.equal(plain, later_only)  # no cycle 5: nothing distilled, the same run


@pytest.mark.parametrize("resume_epoch", [1, 2])  # right after the first prune (removed), mid-schedule
def test_a_distilled_run_resumes_exactly(tmp_path, resume_epoch):
    def run(extra=(), ckpt_path=None):
        L.seed_everything(0)
        model = _classifier()
        pruning = Pruning(schedule=Geometric(target=0.75, per_cycle=0.5, warmup_epochs=1), granularity="neuron",
                          distill=Distillation(weight=0.5, temperature=3.0), verbose=False)
        trainer = make_trainer(4, [pruning, *extra], limit_train_batches=3, limit_val_batches=1,
                               enable_checkpointing=bool(extra))
        trainer.fit(model, DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
        return model

    full = run([ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")])
    resumed = run(ckpt_path=str(tmp_path / f"epoch={resume_epoch}.ckpt"))
    for name, value in full.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[name], atol=1e-6), name


def test_ddp_distils_on_both_ranks_with_identical_masks(tmp_path):
    L.seed_everything(0)
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), granularity="neuron", distill=Distillation())
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", callbacks=[pruning],
                        enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        limit_train_batches=3, limit_val_batches=1)
    model = _classifier()
    trainer.fit(model, DigitsDataModule(batch_size=32))  # the mask digests of both ranks are compared in the fit
    weights = model.model.classifier.weight
    assert float((weights == 0).all(dim=0).float().mean()) == pytest.approx(0.5, abs=0.05)  # half the inputs masked
    assert "pruning/distillation" in trainer.callback_metrics


@pytest.mark.parametrize(("arguments", "message"), [
    ({"weight": 0}, "`Distillation.weight` must be a finite number > 0, got 0"),
    ({"temperature": float("nan")}, "`Distillation.temperature` must be a finite number > 0, got nan"),
    ({"cycles": "all"}, "`Distillation.cycles` must be a list of cycle indices or None, got 'all'"),
    ({"cycles": [-1]}, "`Distillation.cycles[...]` must be an integer >= 0, got -1"),
])
def test_bad_distillation_settings_are_named(arguments, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Distillation(**arguments)


def test_distill_must_be_a_distillation():
    with pytest.raises(ValueError, match=re.escape("`distill` must be a Distillation or None, got 0.5")):
        Pruning(distill=0.5)


class _Manual(Classifier):
    def __init__(self):
        super().__init__("lenet_300_100", input_shape=(1, 8, 8))
        self.automatic_optimization = False


def test_manual_optimization_is_refused_at_setup():
    pruning = Pruning(schedule=OneShot(0.5, warmup_epochs=1), distill=Distillation())
    with pytest.raises(ValueError, match="manual optimization does not use"):
        make_trainer(2, [pruning], limit_train_batches=2).fit(_Manual(), DigitsDataModule(batch_size=32))


class _NoForward(Classifier):
    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self.model(x), y)  # calls the inner network, not self(...)


def test_a_training_step_that_never_calls_forward_is_named():
    L.seed_everything(0)
    pruning = Pruning(schedule=OneShot(0.5, warmup_epochs=1), distill=Distillation())
    with pytest.raises(ValueError, match=re.escape("training_step did not call the module's forward (self(...))")):
        make_trainer(2, [pruning], limit_train_batches=2, limit_val_batches=1).fit(
            _NoForward("lenet_300_100", input_shape=(1, 8, 8)), DigitsDataModule(batch_size=32))
