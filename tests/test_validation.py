"""Every invalid argument raises early, naming the argument, the bad value and what is allowed."""

import re

import lightning as L
import numpy as np
import pytest
import torch

from lightning_prune import (APoZ, Cubic, DropGuard, Geometric, Global, Magnitude, Neurons, OneShot, PerLayer, Pruning,
                             RandomImportance, Reinit, Rewind, Taylor)
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier
from trainers import make_trainer


# Each configuration object's own checks, and every rule across two of them, are in test_config.py;
# these are the same checks reached through Pruning.
@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: Pruning(criterion="l3"), "`criterion` must be one of ['apoz', 'l1', 'l2', 'random', 'taylor', 'wanda'] or a Criterion object, got 'l3'"),
        (lambda: Pruning(criterion=object()), "has no `scores(layers, granularity, cycle)` method"),
        (lambda: Pruning(granularity="channel"), "`granularity` must be a Granularity object or one of ['neuron', 'weight'], got 'channel'"),
        (lambda: Pruning(criterion="apoz", granularity="weight"), "`criterion`='apoz' scores ('neuron',) only, got granularity=Weights()"),
        (lambda: Pruning(ranking="local"), "`ranking` must be a Ranking object or one of ['global', 'layer'], got 'local'"),
        (lambda: Pruning(schedule=OneShot(target=1.0)), "`OneShot.target` must be a number in (0, 1), got 1.0"),
        (lambda: Pruning(schedule=OneShot(target=0)), "`OneShot.target` must be a number in (0, 1), got 0"),
        (lambda: Pruning(schedule=OneShot(target="0.5")), "`OneShot.target` must be a number in (0, 1), got '0.5'"),
        (lambda: Pruning(schedule="linear"), "`schedule` must be a Schedule object or one of ['cubic', 'geometric', 'oneshot'], got 'linear'"),
        (lambda: Pruning(schedule=Geometric(target=0.5, per_cycle=1.5)), "`Geometric.per_cycle` must be a number in (0, 1), got 1.5"),
        (lambda: Pruning(schedule=Cubic(target=0.5, cycles=0)), "`Cubic.cycles` must be an integer >= 1, got 0"),
        (lambda: Pruning(schedule=OneShot(warmup_epochs=-1)), "`OneShot.warmup_epochs` must be an integer >= 0, got -1"),
        (lambda: Pruning(schedule=OneShot(finetune_epochs=0)), "`OneShot.finetune_epochs` must be an integer >= 1, got 0"),
        (lambda: Pruning(schedule=OneShot(finetune_epochs=1.5)), "`OneShot.finetune_epochs` must be an integer >= 1, got 1.5"),
        (lambda: Pruning(monitor=""), "`monitor` must be the name of a logged metric or None, got ''"),
        (lambda: Pruning(guard=DropGuard("val_acc", 0.01, mode="up")), "`DropGuard.mode` must be one of ('max', 'min'), got 'up'"),
        (lambda: Pruning(guard=DropGuard("val_acc", -0.1)), "`DropGuard.max_drop` must be a finite number >= 0, got -0.1"),
        (lambda: Pruning(guard=DropGuard("val_acc", float("nan"))), "`DropGuard.max_drop` must be a finite number >= 0, got nan"),
        (lambda: Pruning(criterion=Magnitude), "`criterion` must be a Criterion instance, got the class Magnitude: pass Magnitude(...)"),
        (lambda: Pruning(verbose="yes"), "`verbose` must be True or False, got 'yes'"),
        (lambda: Pruning(criterion=RandomImportance(seed=2**44)), "`RandomImportance.seed` must be an integer in [0, 4294967296), got 17592186044416"),
        (lambda: Pruning(schedule=OneShot(target=torch.tensor([0.5, 0.5]))), "`OneShot.target` must be a number in (0, 1), got tensor([0.5000, 0.5000])"),
        (lambda: Pruning(guard=DropGuard("val_acc", 0.01)), "`warmup_epochs` must be >= 1, got 0"),
        (lambda: Pruning(layers="fc1"), "`layers` must be a list of module-name patterns or None, got 'fc1'"),
        (lambda: Pruning(ignore_layers=[3]), "`ignore_layers` must be a list of module-name patterns or None, got [3]"),
        (lambda: Pruning(ranking=Global(min_keep=1.0)), "`Global.min_keep` must be a number in [0, 1), got 1.0"),
        (lambda: Pruning(criterion=APoZ(batches=0)), "`APoZ.batches` must be an integer >= 1, got 0"),
        (lambda: Pruning(criterion=Taylor(loss="mse")), "`Taylor.loss` must be callable as loss(model, batch) -> Tensor or None, got 'mse'"),
        (lambda: Pruning(criterion=RandomImportance(seed=-1)), "`RandomImportance.seed` must be an integer in [0, 4294967296), got -1"),
        (lambda: Pruning(ranking=PerLayer(overrides=["fc"])), "`PerLayer.overrides` must map module-name patterns to fractions, got ['fc']"),
        (lambda: Pruning(ranking=PerLayer(overrides={"*fc": 1.0})), "`PerLayer.overrides['*fc']` must be a number in (0, 1), got 1.0"),
        (lambda: Pruning(schedule=OneShot(budget="params"), ranking=PerLayer(overrides={"*fc": 0.5})),
         "it needs the schedule's budget='units', got budget='params'"),
        (lambda: Pruning(ranking=Global(normalize="sum")), "`Global.normalize` must be one of ('mean', 'max', 'l2', 'auto', None), got 'sum'"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_invalid_argument_raises_at_construction(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


@pytest.mark.parametrize("target", [np.float32(0.5), np.float64(0.5), torch.tensor(0.5), 0.5])
def test_numpy_and_tensor_fractions_are_accepted_as_plain_floats(target):
    pruning = Pruning(schedule=OneShot(target=target), ranking=Global(min_keep=np.float32(0.0)))
    assert type(pruning.schedule.target) is float and pruning.schedule.target == 0.5
    assert type(pruning.ranking.min_keep) is float and pruning.ranking.min_keep == 0.0
    assert pruning.fractions[-1] == pytest.approx(0.5)


def _fit(pruning, max_epochs=2, model=None):
    trainer = make_trainer(max_epochs, [pruning], limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model or Classifier("lenet_300_100", input_shape=(1, 8, 8)), DigitsDataModule(batch_size=32))
    return trainer


def test_max_epochs_too_small_names_the_number_needed():
    pruning = Pruning(schedule=Geometric(target=0.9, per_cycle=0.5, warmup_epochs=2, finetune_epochs=2))
    with pytest.raises(ValueError, match=re.escape("`max_epochs`=5 is too small") + ".*needs max_epochs >= 10"):
        _fit(pruning, max_epochs=5)


def test_monitor_never_logged_lists_the_logged_metrics():
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), guard=DropGuard("val_accuracy", 0.01))
    with pytest.raises(ValueError, match=r"`monitor`='val_accuracy' was never logged\. Logged metrics: \[.*'val_acc'"):
        _fit(pruning)


def test_layer_pattern_matching_nothing_is_named():
    pruning = Pruning(schedule=OneShot(target=0.5), layers=["model.fc*"])
    with pytest.raises(ValueError, match=r"`layers` pattern 'model.fc\*' matches no module\. Module names: \["):
        _fit(pruning)


def test_selecting_an_unsupported_layer_names_its_type():
    class WithEmbedding(Classifier):
        def __init__(self):
            super().__init__("lenet_300_100", input_shape=(1, 8, 8))
            self.table = torch.nn.Embedding(4, 2)

    pruning = Pruning(schedule=OneShot(target=0.5), layers=["table"])
    with pytest.raises(ValueError, match=r"'table' of type Embedding, which cannot be pruned\. Supported layer types: \["):
        _fit(pruning, model=WithEmbedding())


BASE = dict(schedule=OneShot(target=0.5))


@pytest.mark.parametrize(("base", "changes", "named"), [
    (BASE, {"ranking": "layer"}, "ranking.type: checkpoint 'Global', now 'PerLayer'"),
    (BASE, {"schedule": OneShot(target=0.5, warmup_epochs=3)}, "schedule.warmup_epochs: checkpoint 0, now 3"),
    (BASE, {"schedule": OneShot(target=0.5, finetune_epochs=2)}, "schedule.finetune_epochs: checkpoint 1, now 2"),
    (BASE, {"schedule": OneShot(target=0.5, budget="params")}, "schedule.budget: checkpoint 'units', now 'params'"),
    (BASE, {"criterion": "l2"}, "criterion.name: checkpoint 'l1', now 'l2'"),
    (BASE, {"ranking": Global(min_keep=0.1)}, "ranking.min_keep: checkpoint 0.01, now 0.1"),
    ({**BASE, "criterion": RandomImportance()}, {"criterion": RandomImportance(seed=7)}, "criterion.seed: checkpoint 0, now 7"),
    (BASE, {"ranking": Global(normalize="mean")}, "ranking.normalize: checkpoint 'auto', now 'mean'"),
    (BASE, {"schedule": OneShot(target=0.7)}, "schedule.target: checkpoint 0.5, now 0.7"),
    (BASE, {"schedule": Geometric(target=0.5, per_cycle=0.2)}, "schedule.type: checkpoint 'OneShot', now 'Geometric'"),
    ({**BASE, "granularity": "neuron"}, {"granularity": Neurons(remove=False)}, "granularity.remove: checkpoint True, now False"),
    ({**BASE, "granularity": "neuron"}, {"granularity": Neurons(round_to=8)}, "granularity.round_to: checkpoint None, now 8"),
    ({**BASE, "ranking": PerLayer(overrides={"*fc": 0.3})}, {"ranking": PerLayer(overrides={"*fc": 0.4})},
     "ranking.overrides.*fc: checkpoint 0.3, now 0.4"),  # the pattern is named
    ({"schedule": OneShot(target=0.5, warmup_epochs=1), "guard": DropGuard("val_acc", 0.01)},
     {"guard": DropGuard("val_acc", 0.02)}, "guard.max_drop: checkpoint 0.01, now 0.02"),
    ({"schedule": OneShot(target=0.5, warmup_epochs=1), "lottery": Rewind("init")}, {"lottery": Rewind(1)},
     "lottery.to: checkpoint 'init', now 1"),
    ({**BASE, "lottery": Rewind("init", control=Reinit())}, {"lottery": Rewind("init", control=Reinit(seed=2))},
     "lottery.control.seed: checkpoint 1, now 2"),
    (BASE, {"monitor": "val_acc"}, "monitor: checkpoint None, now 'val_acc'"),
    (BASE, {"layers": ["model.features.0"]}, "layers: checkpoint None, now ['model.features.0']"),
], ids=lambda value: value if isinstance(value, str) else "")
def test_resuming_with_other_arguments_is_refused_naming_each_difference(base, changes, named):
    state = Pruning(**base).state_dict()
    Pruning(**base).load_state_dict(state)  # the same configuration resumes
    other = Pruning(**{**base, **changes})
    with pytest.raises(ValueError, match="resume with the same arguments") as caught:
        other.load_state_dict(state)
    assert named in str(caught.value)


def test_sharded_strategies_are_refused_at_setup():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    # FSDP needs a GPU to be set up, so the trainer is a stand-in holding a real FSDPStrategy object.
    trainer = SimpleNamespace(strategy=FSDPStrategy.__new__(FSDPStrategy), max_epochs=1, check_val_every_n_epoch=1)
    with pytest.raises(ValueError, match="does not support the FSDPStrategy strategy"):
        Pruning(schedule=OneShot(target=0.5)).setup(trainer, Classifier(), "fit")


def test_layer_target_pattern_matching_nothing_lists_the_prunable_layers():
    pruning = Pruning(ranking=PerLayer(overrides={"*fc9": 0.3}))
    with pytest.raises(ValueError, match=re.escape("pattern '*fc9' matches no prunable layer; prunable: ['model.classifier'")):
        _fit(pruning)


def test_global_target_out_of_reach_under_min_keep_is_named_before_training():
    pruning = Pruning(schedule=OneShot(target=0.9, warmup_epochs=1), criterion="l2", granularity="neuron",
                      ranking=Global(min_keep=0.5))
    with pytest.raises(ValueError, match=r"The schedule's `target`=0.9 is out of reach: with `min_keep`=0.5 at most 0.5000"):
        _fit(pruning)


def test_a_cycle_cut_short_by_early_stopping_is_not_judged():
    class StopAfterFirstFinetuneEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                trainer.should_stop = True

    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1, finetune_epochs=2), guard=DropGuard("val_acc", 0.5))
    trainer = make_trainer(3, [pruning, StopAfterFirstFinetuneEpoch()], limit_train_batches=2, limit_val_batches=1,
                           num_sanity_val_steps=0)
    trainer.fit(Classifier("lenet_300_100", input_shape=(1, 8, 8)), DigitsDataModule(batch_size=32))
    assert trainer.current_epoch == 2  # stopped after epoch 1, the cycle's first of two epochs
    assert pruning.history[0]["accepted"] is None
    assert pruning.history[0]["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_checkpoints_store_only_non_default_settings_so_older_ones_still_resume():
    assert Pruning(schedule=OneShot(target=0.5)).state_dict()["config"] == {}  # every setting at its default
    state = Pruning(schedule=OneShot(target=0.7), lottery=Rewind("init", control=Reinit())).state_dict()
    assert state["config"] == {"schedule.target": 0.7, "schedule.fractions": [0.7], "lottery.type": "Rewind",
                               "lottery.control.type": "Reinit"}  # fields at their defaults (to="init", seed=1) left out
    del state["config"]["lottery.control.type"]  # as if written before `control` existed
    Pruning(schedule=OneShot(target=0.7), lottery=Rewind("init")).load_state_dict(state)  # the run had the default
    with pytest.raises(ValueError, match=re.escape("lottery.control.type: checkpoint None, now 'Reinit'")):
        Pruning(schedule=OneShot(target=0.7), lottery=Rewind("init", control=Reinit())).load_state_dict(state)


@pytest.mark.parametrize(("granularity", "ranking", "expected"),
                         [("neuron", "global", "mean"), ("neuron", "layer", None), ("weight", "global", None)])
def test_normalize_auto_balances_a_global_neuron_ranking_only(granularity, ranking, expected):
    pruning = Pruning(schedule=OneShot(target=0.5), granularity=granularity, ranking=ranking)
    assert pruning.ranking.normalizer(pruning.granularity) == expected
