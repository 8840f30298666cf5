"""N:M semi-structured sparsity (issue 17): the pattern, iterated in real fits, exported with equal
outputs, resumed, under DDP, and bad input named."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from trainers import make_trainer
from lightning_prune import NM, Geometric, OneShot, Pruning, Wanda, to_semi_structured
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier
from lightning_prune.semi_structured import NMLinear, compress, decompress, select_nm


def _groups(weight, m=4):
    return (weight.reshape(weight.shape[0], -1, m) != 0).sum(-1)


def _linears(model):
    return {name: module for name, module in model.named_modules() if isinstance(module, nn.Linear)}


def _fit(pruning, max_epochs=3, extra=(), ckpt_path=None, **options):
    L.seed_everything(0)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer = make_trainer(max_epochs, [pruning, *extra], limit_train_batches=4, limit_val_batches=1,
                           enable_checkpointing=bool(extra), **options)
    trainer.fit(model, DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
    return model


def test_selection_keeps_the_best_n_of_every_m_and_only_shrinks():
    scores = {"a": torch.tensor([[4.0, 3, 2, 1, 1, 2, 3, 4]])}
    keep = {"a": torch.ones(1, 8, dtype=torch.bool)}
    three = select_nm(scores, keep, 0.25, NM(2, 4))
    assert three["a"].tolist() == [[True, True, True, False, False, True, True, True]]
    two = select_nm({"a": torch.tensor([[1.0, 9, 9, 9, 9, 9, 9, 1]])}, three, 0.5, NM(2, 4))
    assert two["a"].tolist() == [[False, True, True, False, False, True, True, False]]  # pruned weights stay pruned
    assert not bool((two["a"] & ~three["a"]).any())


def test_a_fit_iterates_3_of_4_then_2_of_4_in_every_linear_layer():
    pruning = Pruning(schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1), granularity=NM(2, 4), verbose=False)
    model = _fit(pruning)
    assert [round(row["sparsity"], 4) for row in pruning.history] == [0.25, 0.5]
    for name, linear in _linears(model).items():
        assert int(_groups(linear.weight).max()) == 2, name  # at most 2 non-zeros per group of 4
        assert int(pruning._masks[f"{name}.weight"].reshape(linear.out_features, -1, 4).sum(-1).min()) == 2


def test_wanda_drives_a_2_4_fit_and_the_export_computes_what_the_masked_model_does():
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), granularity=NM(2, 4), criterion=Wanda(batches=3),
                      verbose=False)
    model = _fit(pruning, max_epochs=2).eval()
    x = torch.randn(32, 1, 8, 8)
    masked = model(x)
    stored = sum(p.numel() for p in model.parameters())
    assert set(to_semi_structured(model).values()) == {"NMLinear"}  # no CUDA here: the reference compressed form
    assert all(isinstance(module, NMLinear) for module in (model.model.features[0], model.model.classifier))
    assert torch.allclose(model(x), masked, atol=1e-6)
    assert sum(p.numel() for p in model.parameters()) < 0.55 * stored  # half the values (+ biases); positions are buffers


def test_compress_round_trips_and_refuses_a_weight_that_is_not_n_m():
    weight = torch.tensor([[0.0, 2, 0, -3, 1, 0, 0, 5]])
    values, positions = compress(weight, 2, 4)
    assert values.tolist() == [[2.0, -3.0, 1.0, 5.0]] and torch.equal(decompress(values, positions, 2, 4), weight)
    with pytest.raises(ValueError, match=re.escape("The weight is not 2:4: some group of 4 has more than 2 non-zeros")):
        compress(torch.ones(1, 8), 2, 4)


def test_layers_whose_inputs_do_not_divide_into_groups_are_left_out_by_name():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.odd, self.even = nn.Linear(6, 8), nn.Linear(8, 3)

        def forward(self, x):
            return self.even(torch.relu(self.odd(x)))

    from lightning_prune.criteria import Magnitude
    from lightning_prune.pruner import Pruner

    pruner = Pruner(Net(), torch.randn(2, 6), Magnitude(1), granularity=NM(2, 4))
    assert [layer.name for layer in pruner.layers] == ["even"]
    assert pruner.excluded_layers == {"odd": "6 inputs per row are not a multiple of NM.m=4"}


@pytest.mark.parametrize("resume_epoch", [1, 2])
def test_a_2_4_run_resumes_exactly(tmp_path, resume_epoch):
    def pruning():
        return Pruning(schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1), granularity=NM(2, 4), verbose=False)

    full = _fit(pruning(), 4, [ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")])
    resumed = _fit(pruning(), 4, ckpt_path=str(tmp_path / f"epoch={resume_epoch}.ckpt"))
    for name, value in full.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[name], atol=1e-6), name


def test_ddp_keeps_the_2_4_pattern_on_both_ranks():
    L.seed_everything(0)
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), granularity=NM(2, 4), criterion=Wanda(batches=2))
    trainer = L.Trainer(max_epochs=2, accelerator="cpu", devices=2, strategy="ddp_spawn", callbacks=[pruning],
                        enable_progress_bar=False, logger=False, enable_checkpointing=False, enable_model_summary=False,
                        limit_train_batches=3, limit_val_batches=1)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer.fit(model, DigitsDataModule(batch_size=32))  # the ranks' mask digests are compared inside the fit
    assert all(int(_groups(linear.weight).max()) <= 2 for linear in _linears(model).values())
    assert float((model.model.features[0].weight == 0).float().mean()) >= 0.5


@pytest.mark.parametrize(("build", "message"), [
    (lambda: NM(4, 4), "`NM.n` must be an integer in [1, 4), got 4"),
    (lambda: NM(2, 1), "`NM.m` must be an integer >= 2, got 1"),
    (lambda: Pruning(schedule=OneShot(target=0.6), granularity=NM(2, 4)),
     "`granularity`=NM(2, 4) removes exactly 0.5 of the weights; the schedule's target must be 0.5 with budget='units', got target=0.6"),
    (lambda: Pruning(schedule=OneShot(target=0.5), granularity=NM(2, 4), criterion="apoz"),
     "`criterion`='apoz' scores ('neuron',) only"),
])
def test_bad_n_m_settings_are_named(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()
