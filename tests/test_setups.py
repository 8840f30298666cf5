"""The training setups Lightning users have (issue 15): each one works, or is refused early by name."""

from __future__ import annotations

import re

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import StochasticWeightAveraging

from trainers import make_trainer
from lightning_prune import APoZ, DropGuard, Geometric, Neurons, OneShot, Pruning, Taylor
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier


def _fit(pruning, max_epochs=3, callbacks=(), model=None, data=None, **trainer_options):
    L.seed_everything(0)
    model = model if model is not None else Classifier("lenet_300_100", input_shape=(1, 8, 8))
    options = dict(limit_train_batches=3, limit_val_batches=1, num_sanity_val_steps=0)
    trainer = make_trainer(max_epochs, [pruning, *callbacks], **{**options, **trainer_options})
    trainer.fit(model, data or DigitsDataModule(batch_size=32))
    return model, trainer


def _zeros(model):
    weights = [model.state_dict()[f"model.{name}.weight"] for name in ("features.0", "features.2", "classifier")]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def test_max_steps_that_ends_before_the_schedule_is_refused_naming_the_steps_needed():
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1))  # 2 cycles: 3 epochs
    with pytest.raises(ValueError, match=re.escape("`max_steps`=5 ends the fit before this pruning schedule") + ".*max_steps >= 9"):
        _fit(pruning, max_epochs=-1, max_steps=5)


def test_max_steps_long_enough_reaches_the_target():
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1))
    _fit(pruning, max_epochs=-1, max_steps=9)
    assert pruning.history[-1]["sparsity"] == pytest.approx(0.6, abs=0.01)


def test_fast_dev_run_prunes_once_as_a_smoke_test():
    pruning = Pruning(schedule=Geometric(target=0.8, per_cycle=0.5, warmup_epochs=3), guard=DropGuard("val_acc", 0.1))
    model, _ = _fit(pruning, max_epochs=10, fast_dev_run=True)
    assert len(pruning.history) == 1 and pruning.history[0]["epoch"] == 0
    assert pruning.history[0]["sparsity"] == pytest.approx(0.5, abs=0.01)  # the schedule's first fraction
    assert _zeros(model) >= 0.49


def test_two_pruning_callbacks_in_one_trainer_are_refused():
    with pytest.raises(ValueError, match="This Trainer has 2 Pruning callbacks; use one"):
        _fit(Pruning(schedule=OneShot(target=0.5), granularity="neuron"), callbacks=[Pruning(schedule=OneShot(target=0.5))])


def test_neuron_removal_in_a_compiled_module_is_refused():
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="torch.compile'd module cannot follow"):
        _fit(Pruning(schedule=OneShot(target=0.5), granularity="neuron"), model=torch.compile(model))



class _TinyMLP(L.LightningModule):
    """8-16-16-3, plain SGD: the cheapest module that dynamo traces in a second."""

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 16), torch.nn.ReLU(),
                                       torch.nn.Linear(16, 3))
        self.example_input_array = torch.zeros(2, 8)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return torch.nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_neurons_masked_in_a_compiled_module_reach_the_target_and_the_compiled_forward_sees_the_masks():
    """``fit(torch.compile(module))`` with ``Neurons(remove=False)``: the pruner traces the module's own
    forward (the compiled one names no layer: "No neuron can be pruned" before), and the compiled forward
    computes what the masked module does. Dynamo's ``eager`` backend: inductor takes over 30 s here."""
    L.seed_everything(0)
    model = _TinyMLP()
    compiled = torch.compile(model, backend="eager")
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.randn(32, 8, generator=generator), torch.randint(0, 3, (32,), generator=generator)), batch_size=8)
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), granularity=Neurons(remove=False))
    make_trainer(2, [pruning], limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0).fit(compiled, data)
    assert pruning.history[0]["sparsity"] == pytest.approx(0.5)
    hidden = [model.net[0], model.net[2]]
    dead = [int(((layer.weight == 0).all(dim=1) & (layer.bias == 0)).sum()) for layer in hidden]
    assert sum(dead) == 16 and [layer.out_features for layer in hidden] == [16, 16]  # half the units masked, none removed
    assert "forward" in vars(model) and model.forward is not model._compiler_ctx["original_forward"]  # compiled again
    eager = _TinyMLP()
    eager.load_state_dict(model.state_dict())
    x = torch.randn(4, 8)
    assert torch.allclose(compiled(x), eager(x), atol=1e-6)


def test_distillation_in_a_compiled_module_distils_from_a_dense_teacher():
    """The teacher copied the compiled forward, which calls the student: the term was 0, silently."""
    from lightning_prune import Distillation

    seen = []

    class Spy(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if pruning.teacher is not None:
                x = torch.randn(4, 8)
                difference = float((pruning.teacher(x) - pl_module(x)).abs().max())
                seen.append((difference, float(trainer.callback_metrics["pruning/distillation"])))

    L.seed_everything(0)
    model = _TinyMLP()
    generator = torch.Generator().manual_seed(0)
    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(
        torch.randn(32, 8, generator=generator), torch.randint(0, 3, (32,), generator=generator)), batch_size=8)
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), granularity=Neurons(remove=False),
                      distill=Distillation(), verbose=False)
    make_trainer(3, [pruning, Spy()], limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0).fit(
        torch.compile(model, backend="eager"), data)
    assert len(seen) == 2 and all(difference > 1e-3 and term > 0 for difference, term in seen)

def test_round_to_as_wide_as_a_layer_warns_that_it_is_never_pruned():
    with pytest.warns(UserWarning, match=r"`Neurons.round_to`=128 is not below the width of \['model.features.2'\]"):
        _fit(Pruning(schedule=OneShot(target=0.5), granularity=Neurons(round_to=128), ranking="layer"), max_epochs=1)


def test_weights_averaged_after_the_last_prune_are_masked_again_at_the_end():
    """StochasticWeightAveraging writes its averages (of weights from before the prunes too) in
    on_train_end, after Pruning's; the model must still have the sparsity the history reports."""
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1))
    swa = StochasticWeightAveraging(swa_lrs=1e-3, swa_epoch_start=1)
    with pytest.warns(UserWarning, match="were non-zero when the fit ended"):
        model, _ = _fit(pruning, max_epochs=3, callbacks=[swa])
    assert pruning.history[-1]["sparsity"] == pytest.approx(0.6, abs=0.01)
    assert _zeros(model) >= 0.59


@pytest.mark.parametrize("precision", ["bf16-true", "64-true"])
def test_true_precision_fits_prune_neurons(precision):
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), granularity="neuron")
    model, _ = _fit(pruning, max_epochs=2, precision=precision)
    dtype = torch.bfloat16 if precision == "bf16-true" else torch.float64
    assert model.model.features[0].weight.dtype == dtype
    assert model.model.features[0].weight.shape[0] < 300  # removed for real
    assert pruning.history[0]["sparsity"] == pytest.approx(0.5, abs=0.01)


class _DictBatches(L.LightningDataModule):
    """Digits as ``{"pixels", "label"}`` batches (or other keys), as Hugging Face datasets give them."""

    def __init__(self, inputs="pixels", labels="label"):
        super().__init__()
        self.digits = DigitsDataModule(batch_size=32)
        self.inputs, self.labels = inputs, labels

    def setup(self, stage):
        self.digits.setup(stage)

    def train_dataloader(self):
        def collate(items):
            return {self.inputs: torch.stack([x for x, _ in items]), self.labels: torch.tensor([int(y) for _, y in items])}

        return torch.utils.data.DataLoader(self.digits.train_dataloader().dataset, batch_size=32, collate_fn=collate)


class _DictClassifier(Classifier):
    """A classifier whose training batches are ``{"x", "y"}`` dicts."""

    def training_step(self, batch, batch_idx):
        return super().training_step((batch["x"], batch["y"]), batch_idx)


def test_dict_batches_without_an_example_input_are_refused_naming_the_fix():
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    model.example_input_array = None
    with pytest.raises(ValueError, match=r"The train batches are dicts \(keys \['label', 'pixels'\]\).*example_input_array"):
        _fit(Pruning(schedule=OneShot(target=0.5, warmup_epochs=1)), model=model, data=_DictBatches(), limit_val_batches=0)


def test_apoz_with_a_forward_prunes_a_fit_with_dict_batches():
    """Issue 15: ``APoZ(forward=...)`` says how a dict batch reaches the model; the calibration runs on it."""
    seen = []

    def forward(model, batch):
        seen.append(sorted(batch))
        return model(batch["x"])

    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1), criterion=APoZ(batches=2, forward=forward),
                      granularity="neuron")
    model, _ = _fit(pruning, max_epochs=3, model=_DictClassifier("lenet_300_100", input_shape=(1, 8, 8)),
                    data=_DictBatches("x", "y"), limit_val_batches=0)
    assert seen == [["x", "y"]] * 4  # two calibration batches per cycle, two cycles
    assert [row["sparsity"] for row in pruning.history] == pytest.approx([0.4, 0.6], abs=0.01)
    widths = model.model.features[0].out_features + model.model.features[2].out_features
    assert widths == 400 - round(0.6 * 400)  # the units left the model


def test_taylor_with_a_loss_prunes_a_fit_with_dict_batches():
    """Issue 15: ``Taylor(loss=...)`` computes each calibration batch's loss from a dict batch."""
    seen = []

    def loss(model, batch):
        seen.append(sorted(batch))
        return torch.nn.functional.cross_entropy(model(batch["x"]), batch["y"])

    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1), criterion=Taylor(batches=2, loss=loss))
    model, _ = _fit(pruning, max_epochs=3, model=_DictClassifier("lenet_300_100", input_shape=(1, 8, 8)),
                    data=_DictBatches("x", "y"), limit_val_batches=0)
    assert seen == [["x", "y"]] * 4
    assert [row["sparsity"] for row in pruning.history] == pytest.approx([0.4, 0.6], abs=0.01)
    assert _zeros(model) >= 0.59


class _TiedTokens(L.LightningModule):
    """Digits' pixels as 17 tokens (values 0..16), reconstructed through an output layer whose weight
    is the embedding's (tied, as in GPT-2 and BERT's language-model heads)."""

    def __init__(self):
        super().__init__()
        self.embedding = torch.nn.Embedding(17, 16)
        self.hidden1, self.hidden2 = torch.nn.Linear(16, 32), torch.nn.Linear(32, 16)
        self.out = torch.nn.Linear(16, 17, bias=False)
        self.out.weight = self.embedding.weight
        self.example_input_array = torch.zeros(2, 64, dtype=torch.long)

    def forward(self, tokens):
        return self.out(torch.relu(self.hidden2(torch.relu(self.hidden1(self.embedding(tokens))))))

    def training_step(self, batch, _):
        tokens = batch[0].flatten(1).round().long().clamp(0, 16)
        return torch.nn.functional.cross_entropy(self(tokens).flatten(0, 1), tokens.flatten())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


class _TiedResidual(_TiedTokens):
    """As :class:`_TiedTokens` with a residual MLP: the embedding's width is one group of channels that
    holds both holders of the tie (the embedding's columns and the output layer's inputs)."""

    def forward(self, tokens):
        x = self.embedding(tokens)
        return self.out(x + self.hidden2(torch.relu(self.hidden1(x))))


def test_a_tie_whose_holders_are_both_in_the_group_is_removed_alike_and_stays_one_tensor():
    import copy

    from lightning_prune.config import PerLayer
    from lightning_prune.criteria import Magnitude
    from lightning_prune.masks import apply_masks
    from lightning_prune.pruner import Pruner

    torch.manual_seed(0)
    model = _TiedResidual().eval()
    x = torch.randint(0, 17, (2, 64), generator=torch.Generator().manual_seed(0))
    pruner = Pruner(model, x, Magnitude(2), "neuron", PerLayer())
    assert {g.key for g in pruner.structure.groups} == {"hidden1", "hidden2"}  # hidden2's group: the embedding width
    keep = pruner.plan(pruner.dense_keep(), 0.5, 0)
    masked = copy.deepcopy(model)
    apply_masks(masked, pruner.parameter_masks(keep))
    pruner.commit(keep)
    assert model.out.weight is model.embedding.weight and model.embedding.weight.shape == (17, 8)
    assert torch.allclose(model(x), masked(x), atol=1e-6)  # masked == compact


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_tied_embedding_and_output_stay_tied(granularity):
    model = _TiedTokens()
    pruning = Pruning(schedule=OneShot(target=0.4, warmup_epochs=1), granularity=granularity)
    _fit(pruning, max_epochs=2, model=model, limit_val_batches=0)
    assert model.out.weight is model.embedding.weight  # still one tensor
    if granularity == "weight":  # the shared tensor is masked (no KeyError for the name named_parameters() hides)
        pruned = ~pruning.keep["out"]
        assert pruned.any() and bool((model.out.weight[pruned] == 0).all())
    else:  # hidden2's units reach the tied output: refused, named; hidden1's are removed
        assert model.hidden1.out_features < 32 and model.hidden2.out_features == 16
        assert "tied to 'embedding'" in pruning.pruner.skipped_layers["hidden2"]
