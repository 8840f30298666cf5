"""Every invalid argument raises early, naming the argument, the bad value and what is allowed."""

import re

import lightning as L
import numpy as np
import pytest
import torch

from lightning_prune import Pruning
from lightning_prune.criteria import Magnitude
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier
from trainers import make_trainer

VALID = dict(criterion="l1", granularity="weight", scope="global", target=0.5)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"criterion": "l3"}, "`criterion` must be one of ['apoz', 'l1', 'l2', 'random', 'taylor'] or a Criterion object, got 'l3'"),
        ({"criterion": object()}, "has no `scores(layers, granularity, cycle)` method"),
        ({"granularity": "channel"}, "`granularity` must be one of ('weight', 'neuron'), got 'channel'"),
        ({"criterion": "apoz", "granularity": "weight"}, "`criterion`='apoz' scores ('neuron',) only, got granularity='weight'"),
        ({"scope": "local"}, "`scope` must be one of ('global', 'layer'), got 'local'"),
        ({"target": 1.0}, "`target` must be a number in (0, 1), got 1.0"),
        ({"target": 0}, "`target` must be a number in (0, 1), got 0"),
        ({"target": "0.5"}, "`target` must be a number in (0, 1), got '0.5'"),
        ({"schedule": "linear"}, "`schedule` must be one of ('oneshot', 'geometric', 'cubic'), got 'linear'"),
        ({"schedule": "oneshot", "per_cycle": 0.2}, "`per_cycle`=0.2 applies to schedule='geometric' only, got schedule='oneshot'"),
        ({"schedule": "geometric", "cycles": 3}, "`cycles`=3 applies to schedule='cubic' only, got schedule='geometric'"),
        ({"schedule": "geometric", "per_cycle": 1.5}, "`per_cycle` must be a number in (0, 1), got 1.5"),
        ({"schedule": "cubic", "cycles": 0}, "`cycles` must be an integer >= 1, got 0"),
        ({"warmup_epochs": -1}, "`warmup_epochs` must be an integer >= 0, got -1"),
        ({"finetune_epochs": 0}, "`finetune_epochs` must be an integer >= 1, got 0"),
        ({"finetune_epochs": 1.5}, "`finetune_epochs` must be an integer >= 1, got 1.5"),
        ({"monitor": ""}, "`monitor` must be the name of a logged metric or None, got ''"),
        ({"mode": "up"}, "`mode` must be one of ('max', 'min'), got 'up'"),
        ({"monitor": "val_acc", "max_drop": -0.1, "warmup_epochs": 1}, "`max_drop` must be a finite number >= 0 or None, got -0.1"),
        ({"monitor": "val_acc", "max_drop": float("nan"), "warmup_epochs": 1}, "`max_drop` must be a finite number >= 0 or None, got nan"),
        ({"criterion": Magnitude}, "`criterion` must be a Criterion instance, got the class Magnitude: pass Magnitude(...)"),
        ({"verbose": "yes"}, "`verbose` must be True or False, got 'yes'"),
        ({"seed": 2**44}, "`seed` must be an integer in [0, 2**32), got 17592186044416"),
        ({"target": torch.tensor([0.5, 0.5])}, "`target` must be a number in (0, 1), got tensor([0.5000, 0.5000])"),
        ({"max_drop": 0.01}, "`max_drop`=0.01 needs `monitor`, the metric it applies to; got monitor=None"),
        ({"monitor": "val_acc", "max_drop": 0.01}, "`warmup_epochs` must be >= 1, got 0"),
        ({"layers": "fc1"}, "`layers` must be a list of module-name patterns or None, got 'fc1'"),
        ({"ignore_layers": [3]}, "`ignore_layers` must be a list of module-name patterns or None, got [3]"),
        ({"min_keep": 1.0}, "`min_keep` must be a number in [0, 1), got 1.0"),
        ({"calibration_batches": 0}, "`calibration_batches` must be an integer >= 1, got 0"),
        ({"calibration_loss": "mse"}, "`calibration_loss` must be callable as loss(pl_module, batch) or None, got 'mse'"),
        ({"seed": -1}, "`seed` must be an integer >= 0, got -1"),
        ({"layer_targets": ["fc"]}, "`layer_targets` must map module-name patterns to fractions, got ['fc']"),
        ({"scope": "layer", "layer_targets": {"*fc": 1.0}}, "`layer_targets['*fc']` must be a number in (0, 1), got 1.0"),
        ({"layer_targets": {"*fc": 0.5}}, "it needs scope='layer' and budget='units', got scope='global', budget='units'"),
        ({"control": "signed_constant"}, "`control`='signed_constant' changes the values rewound to; it needs `rewind`='init' or an epoch, got rewind=None"),
        ({"normalize": "sum"}, "`normalize` must be one of ('mean', 'max', 'l2'), 'auto' or None, got 'sum'"),
        ({"scope": "layer", "normalize": "l2"}, "with scope='layer' every layer is ranked on its own"),
    ],
)
def test_invalid_argument_raises_at_construction(changes, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Pruning(**{**VALID, **changes})


@pytest.mark.parametrize("target", [np.float32(0.5), np.float64(0.5), torch.tensor(0.5), 0.5])
def test_numpy_and_tensor_fractions_are_accepted_as_plain_floats(target):
    pruning = Pruning(**{**VALID, "target": target, "min_keep": np.float32(0.0)})
    assert type(pruning.target) is float and pruning.target == 0.5
    assert type(pruning.min_keep) is float and pruning.min_keep == 0.0
    assert pruning.fractions[-1] == pytest.approx(0.5)


def _fit(pruning, max_epochs=2, model=None):
    trainer = make_trainer(max_epochs, [pruning], limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(model or Classifier("lenet_300_100", input_shape=(1, 8, 8)), DigitsDataModule(batch_size=32))
    return trainer


def test_max_epochs_too_small_names_the_number_needed():
    pruning = Pruning(target=0.9, schedule="geometric", per_cycle=0.5, warmup_epochs=2, finetune_epochs=2)
    with pytest.raises(ValueError, match=re.escape("`max_epochs`=5 is too small") + ".*needs max_epochs >= 10"):
        _fit(pruning, max_epochs=5)


def test_monitor_never_logged_lists_the_logged_metrics():
    pruning = Pruning(target=0.5, warmup_epochs=1, monitor="val_accuracy", max_drop=0.01)
    with pytest.raises(ValueError, match=r"`monitor`='val_accuracy' was never logged\. Logged metrics: \[.*'val_acc'"):
        _fit(pruning)


def test_layer_pattern_matching_nothing_is_named():
    pruning = Pruning(target=0.5, layers=["model.fc*"])
    with pytest.raises(ValueError, match=r"`layers` pattern 'model.fc\*' matches no module\. Module names: \["):
        _fit(pruning)


def test_selecting_an_unsupported_layer_names_its_type():
    class WithEmbedding(Classifier):
        def __init__(self):
            super().__init__("lenet_300_100", input_shape=(1, 8, 8))
            self.table = torch.nn.Embedding(4, 2)

    pruning = Pruning(target=0.5, layers=["table"])
    with pytest.raises(ValueError, match=r"'table' of type Embedding, which cannot be pruned\. Supported layer types: \["):
        _fit(pruning, model=WithEmbedding())


@pytest.mark.parametrize(("changes", "named"), [
    ({"scope": "layer"}, "scope: checkpoint 'global', now 'layer'"),
    ({"warmup_epochs": 3}, "warmup_epochs: checkpoint 0, now 3"),
    ({"finetune_epochs": 2}, "finetune_epochs: checkpoint 1, now 2"),
    ({"criterion": "l2"}, "criterion: checkpoint 'l1', now 'l2'"),
    ({"min_keep": 0.1}, "min_keep: checkpoint 0.01, now 0.1"),
    ({"seed": 7}, "seed: checkpoint 0, now 7"),
    ({"normalize": "mean"}, "normalize: checkpoint None, now 'mean'"),
    ({"target": 0.7}, "target: checkpoint 0.5, now 0.7"),
    ({"schedule": "geometric", "per_cycle": 0.2}, "schedule: checkpoint 'oneshot', now 'geometric'"),
])
def test_resuming_with_other_arguments_is_refused_naming_each_difference(changes, named):
    state = Pruning(target=0.5).state_dict()
    other = Pruning(**{"target": 0.5, **changes})
    with pytest.raises(ValueError, match="resume with the same arguments") as caught:
        other.load_state_dict(state)
    assert named in str(caught.value)


def test_sharded_strategies_are_refused_at_setup():
    from types import SimpleNamespace

    from lightning.pytorch.strategies import FSDPStrategy

    # FSDP needs a GPU to be set up, so the trainer is a stand-in holding a real FSDPStrategy object.
    trainer = SimpleNamespace(strategy=FSDPStrategy.__new__(FSDPStrategy), max_epochs=1, check_val_every_n_epoch=1)
    with pytest.raises(ValueError, match="does not support the FSDPStrategy strategy"):
        Pruning(target=0.5).setup(trainer, Classifier(), "fit")


def test_layer_target_pattern_matching_nothing_lists_the_prunable_layers():
    pruning = Pruning(scope="layer", layer_targets={"*fc9": 0.3})
    with pytest.raises(ValueError, match=re.escape("pattern '*fc9' matches no prunable layer; prunable: ['model.classifier'")):
        _fit(pruning)


def test_global_target_out_of_reach_under_min_keep_is_named_before_training():
    pruning = Pruning(granularity="neuron", criterion="l2", target=0.9, min_keep=0.5, warmup_epochs=1)
    with pytest.raises(ValueError, match=r"`target`=0.9 is out of reach: with `min_keep`=0.5 at most 0.5000"):
        _fit(pruning)


def test_a_cycle_cut_short_by_early_stopping_is_not_judged():
    class StopAfterFirstFinetuneEpoch(L.Callback):
        def on_train_epoch_end(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                trainer.should_stop = True

    pruning = Pruning(target=0.5, warmup_epochs=1, finetune_epochs=2, monitor="val_acc", max_drop=0.5)
    trainer = make_trainer(3, [pruning, StopAfterFirstFinetuneEpoch()], limit_train_batches=2, limit_val_batches=1,
                           num_sanity_val_steps=0)
    trainer.fit(Classifier("lenet_300_100", input_shape=(1, 8, 8)), DigitsDataModule(batch_size=32))
    assert trainer.current_epoch == 2  # stopped after epoch 1, the cycle's first of two epochs
    assert pruning.history[0]["accepted"] is None
    assert pruning.history[0]["sparsity"] == pytest.approx(0.5, abs=1e-3)


def test_checkpoints_store_only_non_default_settings_so_older_ones_still_resume():
    assert Pruning(target=0.5).state_dict()["config"] == {}  # every setting at its default
    state = Pruning(target=0.7, control="reinit", rewind="init").state_dict()
    assert state["config"] == {"target": 0.7, "fractions": [0.7], "control": "reinit", "rewind": "init"}
    del state["config"]["control"]  # as if written before `control` existed: the run had the default
    Pruning(target=0.7, rewind="init").load_state_dict(state)
    with pytest.raises(ValueError, match="control: checkpoint None, now 'reinit'"):
        Pruning(target=0.7, control="reinit", rewind="init").load_state_dict(state)


@pytest.mark.parametrize(("granularity", "scope", "expected"),
                         [("neuron", "global", "mean"), ("neuron", "layer", None), ("weight", "global", None)])
def test_normalize_auto_balances_a_global_neuron_ranking_only(granularity, scope, expected):
    assert Pruning(granularity=granularity, scope=scope, target=0.5).normalize == expected
