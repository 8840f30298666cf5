"""Lottery tickets: rewinding restores everything every round; controls; Scratch-E/B budgets."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from trainers import make_trainer
from lightning_prune import Geometric, Neurons, OneShot, PerLayer, Pruning, RandomMask, Reinit, Rewind, SignedConstant
from lightning_prune.data import DigitsDataModule
from lightning_prune.lottery import (
    clone_tensors,
    random_sign_state,
    reinitialized_state,
    scratch_epochs,
    shuffle_within_groups,
    signed_constant_state,
)
from lightning_prune.models import Classifier


class WithScheduler(Classifier):
    def configure_optimizers(self):
        optimizer = torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9)
        scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.7)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}


class Probe(Callback):
    """Training state at the start of epochs (recorded after the Pruning callback's decisions)."""

    def __init__(self):
        self.states, self.trained = {}, {}

    def on_train_epoch_end(self, trainer, pl_module):
        self.trained[trainer.current_epoch] = clone_tensors(pl_module.state_dict())

    def on_train_epoch_start(self, trainer, pl_module):
        self.states[trainer.current_epoch] = {
            "model": clone_tensors(pl_module.state_dict()),
            "optimizer": clone_tensors(trainer.optimizers[0].state_dict()),
            "scheduler": [dict(c.scheduler.state_dict()) for c in trainer.lr_scheduler_configs],
        }


def _lottery_run(rewind, control=None, model_cls=WithScheduler, max_epochs=6, **kwargs):
    L.seed_everything(0)
    pruning = Pruning(criterion="l1", schedule=Geometric(target=0.6, per_cycle=0.3, warmup_epochs=2, finetune_epochs=1),
                      lottery=Rewind(rewind, control=control), **kwargs)
    probe = Probe()
    model = model_cls("lenet_300_100", input_shape=(1, 8, 8))
    trainer = make_trainer(max_epochs, [pruning, probe], limit_train_batches=3, limit_val_batches=1)
    trainer.fit(model, DigitsDataModule(batch_size=32))
    return pruning, probe


def _assert_rewound(state, point, masks):
    for name, value in point["model"].items():
        expected = value * masks[name] if name in masks else value
        assert torch.equal(state["model"][name], expected), name


@pytest.mark.parametrize("rewind_to", ["init", 1])
def test_every_round_rewinds_weights_buffers_optimizer_and_scheduler(rewind_to):
    pruning, probe = _lottery_run(rewind_to)
    assert [row["epoch"] for row in pruning.history] == [2, 3, 4]  # three rounds
    point_epoch = 0 if rewind_to == "init" else 1
    point = probe.states[point_epoch]
    for round_epoch in (2, 3, 4):
        state = probe.states[round_epoch]
        # This round's masks, read off the rewound weights (pruned entries are exactly zero).
        masks = {name: (state["model"][name] != 0).to(point["model"][name].dtype)
                 for name in pruning.pruner.parameter_masks(pruning.keep)}
        _assert_rewound(state, point, masks)
        assert state["scheduler"] == point["scheduler"]
        assert state["optimizer"]["param_groups"][0]["lr"] == point["optimizer"]["param_groups"][0]["lr"]
        if rewind_to == 1:  # momentum buffers: the snapshot's, with pruned entries zero
            for index, values in point["optimizer"]["state"].items():
                buffer = state["optimizer"]["state"][index]["momentum_buffer"]
                reference = values["momentum_buffer"]
                assert torch.equal(buffer[buffer != 0], reference[buffer != 0])
        else:
            assert state["optimizer"]["state"] == {}


def test_rewinding_every_round_is_not_a_no_op_after_the_first():
    pruning, probe = _lottery_run("init")
    init = probe.states[0]["model"]
    survivors = [n for n in init if n.endswith("features.0.weight")][0]
    for epoch in (2, 3, 4):
        kept = probe.states[epoch]["model"][survivors] != 0
        assert torch.equal(probe.states[epoch]["model"][survivors][kept], init[survivors][kept])
        before = probe.trained[epoch - 1][survivors]
        assert not torch.equal(before[kept], init[survivors][kept])  # training had moved them


def test_reinit_control_rewinds_to_a_fresh_initialisation():
    pruning, probe = _lottery_run("init", control=Reinit())
    init = probe.states[0]["model"]
    state = probe.states[2]["model"]
    name = "model.features.0.weight"
    kept = state[name] != 0
    fresh = reinitialized_state(Classifier("lenet_300_100"), seed=1)
    assert torch.equal(state[name][kept], fresh[name][kept])
    assert not torch.equal(state[name][kept], init[name][kept])


def test_signed_constant_and_random_sign_states_keep_one_property_of_the_weights():
    generator = torch.Generator().manual_seed(0)
    state = {"w": torch.randn(30, 20, generator=generator), "b": torch.randn(30, generator=generator)}
    signed = signed_constant_state(state, ["w"])
    assert torch.equal(torch.sign(signed["w"]), torch.sign(state["w"]))  # the signs survive
    assert torch.allclose(signed["w"].abs(), torch.full((30, 20), float(state["w"].std())))  # one magnitude
    assert torch.equal(signed["b"], state["b"]) and signed["b"] is not state["b"]  # others copied
    flipped = random_sign_state(state, ["w"], seed=3)
    assert torch.equal(flipped["w"].abs(), state["w"].abs())  # the magnitudes survive
    agree = float((torch.sign(flipped["w"]) == torch.sign(state["w"])).float().mean())
    assert 0.35 < agree < 0.65  # about half of the signs flipped
    assert torch.equal(random_sign_state(state, ["w"], seed=3)["w"], flipped["w"])  # seeded


def test_signed_constant_control_rewinds_the_survivors_to_their_signs():
    pruning, probe = _lottery_run("init", control=SignedConstant())
    init = probe.states[0]["model"]
    for epoch in (2, 3, 4):
        state = probe.states[epoch]["model"]
        for name in ("model.features.0.weight", "model.classifier.weight"):
            kept = state[name] != 0
            assert 0 < int(kept.sum()) < kept.numel()
            expected = torch.sign(init[name]) * init[name].std()
            assert torch.equal(state[name][kept], expected[kept])
        assert torch.equal(state["model.features.0.bias"], init["model.features.0.bias"])  # biases rewound as they were


def test_signed_constant_of_a_single_weight_is_that_weight():
    state = signed_constant_state({"w": torch.tensor([[-0.3]])}, ["w"])
    assert torch.equal(state["w"], torch.tensor([[-0.3]]))  # no NaN from the std of one value


def test_signed_constant_control_with_removed_neurons_keeps_plus_minus_std_of_the_dense_layer():
    pruning, probe = _lottery_run("init", control=SignedConstant(), granularity="neuron", ranking="layer",
                                  model_cls=Classifier)
    init = probe.states[0]["model"]
    std = float(init["model.features.0.weight"].std())
    for epoch in (2, 3, 4):
        rows = probe.states[epoch]["model"]["model.features.0.weight"]
        assert rows.shape[0] < 300  # neurons were physically removed ...
        assert torch.allclose(rows.abs(), torch.full_like(rows, std))  # ... and the survivors are ±std of the dense init


def test_reinit_control_differs_from_the_original_even_when_the_global_seed_matches_its_own():
    # Reinit() draws its fresh initialisation from seed 1; a model built right after
    # seed_everything(1) has exactly that initialisation, so the control must draw another.
    L.seed_everything(1)
    pruning = Pruning(criterion="l1", schedule=OneShot(target=0.5, warmup_epochs=1), lottery=Rewind("init", control=Reinit()),
                      verbose=False)
    probe = Probe()
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    make_trainer(2, [pruning, probe], limit_train_batches=2, limit_val_batches=1).fit(model, DigitsDataModule(batch_size=32))
    init, rewound = probe.states[0]["model"], probe.states[1]["model"]
    name = "model.features.0.weight"
    kept = rewound[name] != 0
    assert not torch.equal(rewound[name][kept], init[name][kept])


def test_random_mask_control_keeps_the_per_layer_counts():
    generator = torch.Generator().manual_seed(0)
    before = {"a": torch.rand(40) > 0.2, "b": torch.rand(7, 5) > 0.5}
    after = {name: mask & (torch.rand(mask.shape) > 0.4) for name, mask in before.items()}
    shuffled = shuffle_within_groups(before, after, generator)
    for name in before:
        assert int(shuffled[name].sum()) == int(after[name].sum())
        assert not (shuffled[name] & ~before[name]).any()
    pruning, _ = _lottery_run("init", control=RandomMask(), ranking="layer", model_cls=Classifier)
    for mask in pruning.keep.values():
        assert abs(float((~mask).float().mean()) - 0.6) <= 1 / mask.numel()


def test_scratch_budgets():
    assert scratch_epochs(20, dense_macs=50_200, pruned_macs=5_240) == {"scratch_e": 20, "scratch_b": 192}
    assert scratch_epochs(10, 100, 50) == {"scratch_e": 10, "scratch_b": 20}
    with pytest.raises(ValueError, match="MACs > 0"):
        scratch_epochs(10, 100, 0)


@pytest.mark.parametrize("granularity", ["weight", "neuron"])
def test_resume_mid_lottery_run_equals_the_uninterrupted_run(tmp_path, granularity):
    def run(ckpt_path=None, extra=()):
        L.seed_everything(0)
        pruning = Pruning(criterion="l1", schedule=Geometric(target=0.6, per_cycle=0.3, warmup_epochs=2), lottery=Rewind(1),
                          granularity=granularity)  # neurons: physically removed, the rewind point cut with them
        model = WithScheduler("lenet_300_100", input_shape=(1, 8, 8))
        trainer = make_trainer(6, [pruning, *extra], limit_train_batches=3, limit_val_batches=1,
                               enable_checkpointing=bool(extra))
        trainer.fit(model, DigitsDataModule(batch_size=32), ckpt_path=ckpt_path)
        return model, pruning

    full_model, full = run(extra=[ModelCheckpoint(tmp_path, filename="{epoch}", save_top_k=-1)])
    resumed_model, resumed = run(ckpt_path=str(tmp_path / "epoch=2.ckpt"))
    for key in full.keep:
        assert torch.equal(full.keep[key], resumed.keep[key])
    resumed_state = resumed_model.state_dict()
    assert {n: v.shape for n, v in resumed_state.items()} == {n: v.shape for n, v in full_model.state_dict().items()}
    if granularity == "neuron":
        assert resumed_model.model.features[0].weight.shape[0] < 300  # compact
    for name, value in full_model.state_dict().items():
        assert torch.allclose(value, resumed_state[name], atol=1e-6), name


def test_scratch_model_has_the_pruned_architecture_and_a_fresh_init(tmp_path):
    from lightning_prune.lottery import scratch_model, ticket_model

    L.seed_everything(0)
    pruning = Pruning(criterion="l2", granularity="neuron", schedule=OneShot(target=0.5, warmup_epochs=1))
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    initial = clone_tensors(model.state_dict())
    make_trainer(2, [pruning], limit_train_batches=2, limit_val_batches=1).fit(model, DigitsDataModule(batch_size=32))
    plan = pruning.state_dict()["plan"]
    scratch = scratch_model(Classifier("lenet_300_100", input_shape=(1, 8, 8)), plan, seed=5)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    assert {n: p.shape for n, p in scratch.named_parameters()} == shapes
    again = scratch_model(Classifier("lenet_300_100", input_shape=(1, 8, 8)), plan, seed=5)
    assert all(torch.equal(a, b) for a, b in zip(scratch.parameters(), again.parameters()))  # seeded
    assert not torch.equal(scratch.model.classifier.weight, model.model.classifier.weight)

    # The structured ticket: the same architecture, the initial values of the surviving units.
    dense = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    dense.load_state_dict(initial)
    ticket = ticket_model(dense, plan)
    assert {n: p.shape for n, p in ticket.named_parameters()} == shapes
    kept = pruning.keep
    rows = {key: mask.nonzero().flatten() for key, mask in kept.items()}
    first, second = sorted(rows)  # the two hidden layers, in forward order
    assert torch.equal(ticket.model.features[0].weight, initial["model.features.0.weight"][rows[first]])
    assert torch.equal(ticket.model.features[2].weight,
                       initial["model.features.2.weight"][rows[second]][:, rows[first]])
    assert torch.equal(ticket.model.classifier.weight, initial["model.classifier.weight"][:, rows[second]])


def test_output_layer_pruned_at_half_the_rate_as_in_frankle_and_carbin():
    """20 % of each hidden layer's remaining weights per round, 10 % of the output layer's (the paper's setup)."""
    rounds = 3
    L.seed_everything(0)
    pruning = Pruning(criterion="l1", schedule=Geometric(target=1 - 0.8**rounds, per_cycle=0.2, warmup_epochs=1),
                      ranking=PerLayer(overrides={"*classifier": 1 - 0.9**rounds}), lottery=Rewind("init"), verbose=False)
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    trainer = make_trainer(1 + rounds, [pruning], limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, DigitsDataModule(batch_size=32))
    assert len(pruning.history) == rounds
    for cycle, row in enumerate(pruning.history, start=1):
        for name, mask in pruning.keep.items():
            rate = 0.1 if name.endswith("classifier") else 0.2
            assert abs(row[f"sparsity/{name}"] - (1 - (1 - rate) ** cycle)) <= 1 / mask.numel(), (cycle, name)
    # The weights themselves: the classifier keeps 0.9**3 of its weights, the hidden layers 0.8**3.
    weight = model.model.classifier.weight
    assert abs(float((weight != 0).float().mean()) - 0.9**rounds) <= 1 / weight.numel()


class KeepProbe(Probe):
    """Also the unit keep-masks in force at the start of each epoch."""

    def __init__(self, pruning):
        super().__init__()
        self.pruning, self.keep = pruning, {}

    def on_train_epoch_start(self, trainer, pl_module):
        super().on_train_epoch_start(trainer, pl_module)
        self.keep[trainer.current_epoch] = clone_tensors(self.pruning.keep)


@pytest.mark.parametrize("rewind_to", ["init", 1])
def test_neuron_rewinding_with_removal_equals_rewinding_the_masked_model(rewind_to):
    def run(remove):
        L.seed_everything(0)
        pruning = Pruning(criterion="l2", granularity=Neurons(remove=remove), ranking="layer",
                          schedule=Geometric(target=0.6, per_cycle=0.3, warmup_epochs=2), lottery=Rewind(rewind_to),
                          verbose=False)
        probe = KeepProbe(pruning)
        model = WithScheduler("lenet_300_100", input_shape=(1, 8, 8))
        make_trainer(6, [pruning, probe], limit_train_batches=3, limit_val_batches=1).fit(
            model, DigitsDataModule(batch_size=32))
        return model, pruning, probe

    masked_model, masked, _ = run(remove=False)
    removed_model, removed, probe = run(remove=True)
    for key in masked.keep:
        assert torch.equal(masked.keep[key], removed.keep[key])
    assert removed_model.model.features[0].weight.shape[0] == int(removed.keep["model.features.0"].sum())
    data = DigitsDataModule()
    data.setup("test")
    x = data.splits["test"].tensors[0][:64]
    masked_model.eval(), removed_model.eval()
    assert torch.allclose(masked_model(x), removed_model(x), atol=1e-5)

    # Every round of the compact run starts from the snapshot cut to that round's survivors.
    point = probe.states[0 if rewind_to == "init" else 1]
    for epoch in (2, 3, 4):
        rows = probe.keep[epoch]["model.features.0"].nonzero().flatten()
        state = probe.states[epoch]
        assert torch.equal(state["model"]["model.features.0.weight"], point["model"]["model.features.0.weight"][rows])
        assert torch.equal(state["model"]["model.features.0.bias"], point["model"]["model.features.0.bias"][rows])
        assert state["scheduler"] == point["scheduler"]
        if rewind_to == 1:
            buffer = state["optimizer"]["state"][0]["momentum_buffer"]
            assert torch.equal(buffer, point["optimizer"]["state"][0]["momentum_buffer"][rows])


def test_reinit_control_state_never_returns_the_original_initialisation():
    from lightning_prune.lottery import reinit_control_state

    torch.manual_seed(5)
    model = Classifier("lenet_300_100")
    original = clone_tensors(model.state_dict())
    weights = [n for n in original if n.endswith("weight")]
    fresh = reinit_control_state(model, 5, original, weights)  # seed 5 would redraw the original exactly
    assert all(not torch.equal(fresh[n], original[n]) for n in weights)
    other = reinit_control_state(model, 6, original, weights)
    assert torch.equal(other["model.features.0.weight"], reinitialized_state(model, 6)["model.features.0.weight"])
