"""Issue 14: every configuration object checks its own fields, naming the field, the value and what is
allowed; the rules that span two objects live in ``config.check_combination``; combinations the old
flat API had to refuse at run time cannot be written at all."""

from __future__ import annotations

import re

import lightning as L
import numpy as np
import pytest
import torch

from lightning_prune import (APoZ, Cubic, Custom, DropGuard, Geometric, Global, Magnitude, Neurons, OneShot, PerLayer,
                             Pruning, RandomImportance, RandomMask, Reinit, Rewind, Schedule, SignedConstant, Taylor,
                             Weights)
from lightning_prune.config import PruningConfig, check_combination
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier
from trainers import make_trainer


def _raises(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


class Steps(Schedule):
    """A user's own schedule: ``steps`` equal steps up to ``target``."""

    def __init__(self, target: float = 0.5, steps: int = 2, warmup_epochs: int = 0, finetune_epochs: int = 1) -> None:
        super().__init__(target, warmup_epochs, finetune_epochs)
        self.steps = steps

    def fractions(self) -> list[float]:
        return [self.target * (step + 1) / self.steps for step in range(self.steps)]


# ----------------------------------------------------------------------------- schedules
@pytest.mark.parametrize(("build", "message"), [
    (lambda: OneShot(target=1.0), "`OneShot.target` must be a number in (0, 1), got 1.0."),
    (lambda: OneShot(target=0), "`OneShot.target` must be a number in (0, 1), got 0."),
    (lambda: OneShot(target="0.5"), "`OneShot.target` must be a number in (0, 1), got '0.5'."),
    (lambda: OneShot(target=True), "`OneShot.target` must be a number in (0, 1), got True."),
    (lambda: OneShot(target=float("nan")), "`OneShot.target` must be a number in (0, 1), got nan."),
    (lambda: OneShot(target=torch.tensor([0.5, 0.5])),
     "`OneShot.target` must be a number in (0, 1), got tensor([0.5000, 0.5000])."),
    (lambda: Geometric(target=1.5), "`Geometric.target` must be a number in (0, 1), got 1.5."),
    (lambda: Cubic(target=-0.1), "`Cubic.target` must be a number in (0, 1), got -0.1."),
    (lambda: Steps(target=2), "`Steps.target` must be a number in (0, 1), got 2."),  # a user's subclass, by its name
    (lambda: Geometric(target=0.5, per_cycle=1.5), "`Geometric.per_cycle` must be a number in (0, 1), got 1.5."),
    (lambda: Geometric(target=0.5, per_cycle=0), "`Geometric.per_cycle` must be a number in (0, 1), got 0."),
    (lambda: Geometric(target=0.5, per_cycle=None), "`Geometric.per_cycle` must be a number in (0, 1), got None."),
    (lambda: Cubic(target=0.5, cycles=0), "`Cubic.cycles` must be an integer >= 1, got 0."),
    (lambda: Cubic(target=0.5, cycles=2.0), "`Cubic.cycles` must be an integer >= 1, got 2.0."),
    (lambda: OneShot(warmup_epochs=-1), "`OneShot.warmup_epochs` must be an integer >= 0, got -1."),
    (lambda: Geometric(warmup_epochs=1.5), "`Geometric.warmup_epochs` must be an integer >= 0, got 1.5."),
    (lambda: Cubic(warmup_epochs=True), "`Cubic.warmup_epochs` must be an integer >= 0, got True."),
    (lambda: OneShot(finetune_epochs=0), "`OneShot.finetune_epochs` must be an integer >= 1, got 0."),
    (lambda: Geometric(finetune_epochs=1.5), "`Geometric.finetune_epochs` must be an integer >= 1, got 1.5."),
    (lambda: OneShot(budget="flops"), "`OneShot.budget` must be one of ('units', 'params', 'macs', 'latency') or a Latency(...), got 'flops'."),
    (lambda: Cubic(budget=None), "`Cubic.budget` must be one of ('units', 'params', 'macs', 'latency') or a Latency(...), got None."),
], ids=lambda value: value if isinstance(value, str) else "")
def test_schedule_fields_are_validated(build, message):
    _raises(build, message)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Custom(fraction=0.5, cycles=2), "`Custom.fraction` must be callable as fraction(cycle) -> float, got 0.5."),
    (lambda: Custom(fraction=lambda cycle: 1.0, cycles=2), "`Custom.fraction(0)` must be a number in (0, 1), got 1.0."),
    (lambda: Custom(fraction=lambda cycle: [0.5, 0.0][cycle], cycles=2),
     "`Custom.fraction(1)` must be a number in (0, 1), got 0.0."),
    (lambda: Custom(fraction=lambda cycle: "half", cycles=1), "`Custom.fraction(0)` must be a number in (0, 1), got 'half'."),
    (lambda: Custom(fraction=lambda cycle: [0.6, 0.4][cycle], cycles=2),
     "`Custom.fraction` must not decrease from cycle to cycle, got [0.6, 0.4]."),
    (lambda: Custom(fraction=lambda cycle: 0.5, cycles=0), "`Custom.cycles` must be an integer >= 1, got 0."),
    (lambda: Custom(fraction=lambda cycle: 0.5, cycles=1, warmup_epochs=-1),
     "`Custom.warmup_epochs` must be an integer >= 0, got -1."),
    (lambda: Custom(fraction=lambda cycle: 0.5, cycles=1, finetune_epochs=0),
     "`Custom.finetune_epochs` must be an integer >= 1, got 0."),
    (lambda: Custom(fraction=lambda cycle: 0.5, cycles=1, budget="bytes"),
     "`Custom.budget` must be one of ('units', 'params', 'macs', 'latency') or a Latency(...), got 'bytes'."),
], ids=lambda value: value if isinstance(value, str) else "")
def test_custom_schedule_is_validated_before_any_training(build, message):
    _raises(build, message)


@pytest.mark.parametrize("build", [
    lambda: OneShot(target=0.5, per_cycle=0.2),  # was: per_cycle with schedule="oneshot", refused at run time
    lambda: Geometric(target=0.5, cycles=3),  # was: cycles with schedule="geometric"
    lambda: Cubic(target=0.5, per_cycle=0.2),
    lambda: Custom(fraction=lambda cycle: 0.5, cycles=1, target=0.7),  # the target is the function's last value
])
def test_a_field_of_another_schedule_cannot_be_written(build):
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        build()


def test_a_schedule_without_fractions_is_refused_by_name():
    with pytest.raises(ValueError, match=re.escape("`schedule`=Schedule(target=0.5, warmup_epochs=0, finetune_epochs=1, "
                                                   "budget='units') defines no fractions()")):
        Pruning(schedule=Schedule(target=0.5))


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Neurons(remove=1), "`Neurons.remove` must be True or False, got 1"),
    (lambda: Magnitude(p=True), "`Magnitude.p` must be 1 (L1) or 2 (L2), got True"),
])
def test_a_bool_and_an_int_are_not_interchangeable(build, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        build()


# ----------------------------------------------------------------------------- granularity and ranking
@pytest.mark.parametrize(("build", "message"), [
    (lambda: Neurons(remove="yes"), "`Neurons.remove` must be True or False, got 'yes'."),
    (lambda: Neurons(remove=None), "`Neurons.remove` must be True or False, got None."),
    (lambda: Neurons(round_to=0), "`Neurons.round_to` must be an integer >= 1, got 0."),
    (lambda: Neurons(round_to=8.0), "`Neurons.round_to` must be an integer >= 1, got 8.0."),
    (lambda: Neurons(round_to=True), "`Neurons.round_to` must be an integer >= 1, got True."),
], ids=lambda value: value if isinstance(value, str) else "")
def test_neurons_fields_are_validated(build, message):
    _raises(build, message)


@pytest.mark.parametrize("build", [
    lambda: Weights(remove=True),  # was: remove=True with granularity="weight"
    lambda: Weights(round_to=8),  # was: round_to with granularity="weight"
])
def test_removal_or_rounding_of_single_weights_cannot_be_written(build):
    with pytest.raises(TypeError, match="takes 1 positional argument|unexpected keyword argument|takes no arguments"):
        build()


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Global(normalize="sum"), "`Global.normalize` must be one of ('mean', 'max', 'l2', 'auto', None), got 'sum'."),
    (lambda: Global(normalize=True), "`Global.normalize` must be one of ('mean', 'max', 'l2', 'auto', None), got True."),
    (lambda: Global(min_keep=1.0), "`Global.min_keep` must be a number in [0, 1), got 1.0."),
    (lambda: Global(min_keep=-0.01), "`Global.min_keep` must be a number in [0, 1), got -0.01."),
    (lambda: PerLayer(min_keep=1.5), "`PerLayer.min_keep` must be a number in [0, 1), got 1.5."),
    (lambda: PerLayer(min_keep="0.1"), "`PerLayer.min_keep` must be a number in [0, 1), got '0.1'."),
    (lambda: PerLayer(overrides=["fc"]), "`PerLayer.overrides` must map module-name patterns to fractions, got ['fc']."),
    (lambda: PerLayer(overrides={1: 0.5}), "`PerLayer.overrides` must map module-name patterns to fractions, got {1: 0.5}."),
    (lambda: PerLayer(overrides={"*fc": 1.0}), "`PerLayer.overrides['*fc']` must be a number in (0, 1), got 1.0."),
    (lambda: PerLayer(overrides={"*fc": None}), "`PerLayer.overrides['*fc']` must be a number in (0, 1), got None."),
], ids=lambda value: value if isinstance(value, str) else "")
def test_ranking_fields_are_validated(build, message):
    _raises(build, message)


@pytest.mark.parametrize("build", [
    lambda: PerLayer(normalize="l2"),  # was: scope="layer" with normalize, refused at run time
    lambda: Global(overrides={"*fc": 0.5}),  # was: layer_targets with scope="global"
])
def test_a_field_of_the_other_ranking_cannot_be_written(build):
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        build()


@pytest.mark.parametrize(("granularity", "ranking", "expected"), [
    (Neurons(), Global(), "mean"), (Weights(), Global(), None), (Neurons(), PerLayer(), None),
    (Neurons(), Global(normalize=None), None), (Weights(), Global(normalize="l2"), "l2"),
])
def test_normalize_auto_balances_a_global_neuron_ranking_only(granularity, ranking, expected):
    assert ranking.normalizer(granularity) == expected


# ----------------------------------------------------------------------------- guard and lottery
@pytest.mark.parametrize(("build", "message"), [
    (lambda: DropGuard("", 0.01), "`DropGuard.monitor` must be the name of a logged metric, got ''."),
    (lambda: DropGuard(None, 0.01), "`DropGuard.monitor` must be the name of a logged metric, got None."),
    (lambda: DropGuard("val_acc", float("nan")), "`DropGuard.max_drop` must be a finite number >= 0, got nan."),
    (lambda: DropGuard("val_acc", float("inf")), "`DropGuard.max_drop` must be a finite number >= 0, got inf."),
    (lambda: DropGuard("val_acc", -0.1), "`DropGuard.max_drop` must be a finite number >= 0, got -0.1."),
    (lambda: DropGuard("val_acc", "0.01"), "`DropGuard.max_drop` must be a finite number >= 0, got '0.01'."),
    (lambda: DropGuard("val_acc", None), "`DropGuard.max_drop` must be a finite number >= 0, got None."),
    (lambda: DropGuard("val_acc", 0.01, mode="up"), "`DropGuard.mode` must be one of ('max', 'min'), got 'up'."),
], ids=lambda value: value if isinstance(value, str) else "")
def test_drop_guard_fields_are_validated(build, message):
    _raises(build, message)


def test_a_drop_guard_without_a_metric_cannot_be_written():
    with pytest.raises(TypeError, match="monitor"):  # was: max_drop without monitor, refused at run time
        DropGuard(max_drop=0.01)


def test_drop_guard_judges_in_the_direction_of_its_mode():
    assert DropGuard("val_acc", 0.1).accepts(0.9, 0.85) and not DropGuard("val_acc", 0.1).accepts(0.9, 0.75)
    assert DropGuard("val_loss", 0.1, mode="min").accepts(0.5, 0.55)
    assert not DropGuard("val_loss", 0.1, mode="min").accepts(0.5, 0.65)


@pytest.mark.parametrize(("build", "message"), [
    (lambda: Rewind(to="end"), "`Rewind.to` must be 'init' or an epoch >= 0, got 'end'."),
    (lambda: Rewind(to=-1), "`Rewind.to` must be 'init' or an epoch >= 0, got -1."),
    (lambda: Rewind(to=1.5), "`Rewind.to` must be 'init' or an epoch >= 0, got 1.5."),
    (lambda: Rewind(to=True), "`Rewind.to` must be 'init' or an epoch >= 0, got True."),
    (lambda: Rewind(control="reinit"),
     "`Rewind.control` must be None, Reinit(), RandomMask() or SignedConstant(), got 'reinit'."),
    (lambda: Rewind(control=Reinit),
     "`Rewind.control` must be None, Reinit(), RandomMask() or SignedConstant(), got <class 'lightning_prune.config.Reinit'>."),
    (lambda: Reinit(seed=-1), "`Reinit.seed` must be an integer in [0, 4294967296), got -1."),
    (lambda: Reinit(seed=2**32), "`Reinit.seed` must be an integer in [0, 4294967296), got 4294967296."),
    (lambda: Reinit(seed="1"), "`Reinit.seed` must be an integer in [0, 4294967296), got '1'."),
    (lambda: RandomMask(seed=-1), "`RandomMask.seed` must be an integer in [0, 4294967296), got -1."),
    (lambda: RandomMask(seed=1.5), "`RandomMask.seed` must be an integer in [0, 4294967296), got 1.5."),
], ids=lambda value: value if isinstance(value, str) else "")
def test_lottery_fields_are_validated(build, message):
    _raises(build, message)


@pytest.mark.parametrize("control", [Reinit(), RandomMask(), SignedConstant()])
def test_a_control_without_a_rewind_cannot_be_written(control):
    # was: control="random_mask" etc. without rewind; a control now only exists inside Rewind(control=...)
    with pytest.raises(TypeError, match="unexpected keyword argument 'control'"):
        Pruning(schedule=OneShot(target=0.5), control=control)
    assert Pruning(schedule=OneShot(target=0.5), lottery=Rewind("init", control=control)).lottery.control == control


# ----------------------------------------------------------------------------- criteria
@pytest.mark.parametrize(("build", "message"), [
    (lambda: Magnitude(p=3), "`Magnitude.p` must be 1 (L1) or 2 (L2), got 3."),
    (lambda: Magnitude(p="l2"), "`Magnitude.p` must be 1 (L1) or 2 (L2), got 'l2'."),
    (lambda: APoZ(batches=0), "`APoZ.batches` must be an integer >= 1, got 0."),
    (lambda: APoZ(batches=2.5), "`APoZ.batches` must be an integer >= 1, got 2.5."),
    (lambda: APoZ(forward="model(x)"), "`APoZ.forward` must be callable as forward(model, batch) or None, got 'model(x)'."),
    (lambda: Taylor(batches=0), "`Taylor.batches` must be an integer >= 1, got 0."),
    (lambda: Taylor(batches=None), "`Taylor.batches` must be an integer >= 1, got None."),
    (lambda: Taylor(loss="mse"), "`Taylor.loss` must be callable as loss(model, batch) -> Tensor or None, got 'mse'."),
    (lambda: RandomImportance(seed=-1), "`RandomImportance.seed` must be an integer in [0, 4294967296), got -1."),
    (lambda: RandomImportance(seed=2**44),
     "`RandomImportance.seed` must be an integer in [0, 4294967296), got 17592186044416."),
], ids=lambda value: value if isinstance(value, str) else "")
def test_criterion_fields_are_validated(build, message):
    _raises(build, message)


@pytest.mark.parametrize("build", [lambda: APoZ(loss=lambda model, batch: 0), lambda: Taylor(forward=lambda model, batch: 0)])
def test_a_calibration_hook_of_the_other_criterion_cannot_be_written(build):
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        build()


# ----------------------------------------------------------------------------- Pruning's own arguments
@pytest.mark.parametrize(("arguments", "message"), [
    ({"guard": "val_acc"}, "`guard` must be a DropGuard or None, got 'val_acc'."),
    ({"guard": 0.01}, "`guard` must be a DropGuard or None, got 0.01."),
    ({"lottery": "init"}, "`lottery` must be a Rewind or None, got 'init'."),
    ({"lottery": Reinit()}, "`lottery` must be a Rewind or None, got Reinit(seed=1)."),
    ({"verbose": "yes"}, "`verbose` must be True or False, got 'yes'."),
    ({"verbose": 1}, "`verbose` must be True or False, got 1."),
    ({"monitor": ""}, "`monitor` must be the name of a logged metric or None, got ''."),
    ({"layers": "fc1"}, "`layers` must be a list of module-name patterns or None, got 'fc1'."),
    ({"ignore_layers": "fc1"}, "`ignore_layers` must be a list of module-name patterns or None, got 'fc1'."),
    ({"ignore_layers": [3]}, "`ignore_layers` must be a list of module-name patterns or None, got [3]."),
    ({"schedule": Geometric}, "`schedule` must be an instance, got the class Geometric: pass Geometric(...)."),
    ({"granularity": Neurons}, "`granularity` must be an instance, got the class Neurons: pass Neurons(...)."),
    ({"ranking": PerLayer}, "`ranking` must be an instance, got the class PerLayer: pass PerLayer(...)."),
    ({"criterion": Magnitude}, "`criterion` must be a Criterion instance, got the class Magnitude: pass Magnitude(...)."),
    ({"schedule": "linear"}, "`schedule` must be a Schedule object or one of ['cubic', 'geometric', 'oneshot'], got 'linear'."),
    ({"schedule": 0.9}, "`schedule` must be a Schedule object or one of ['cubic', 'geometric', 'oneshot'], got 0.9."),
    ({"granularity": "channel"}, "`granularity` must be a Granularity object or one of ['neuron', 'weight'], got 'channel'."),
    ({"ranking": "local"}, "`ranking` must be a Ranking object or one of ['global', 'layer'], got 'local'."),
    ({"criterion": "l3"}, "`criterion` must be one of ['apoz', 'l1', 'l2', 'random', 'taylor', 'wanda'] or a Criterion object, got 'l3'."),
], ids=lambda value: value if isinstance(value, str) else "")
def test_pruning_arguments_are_validated(arguments, message):
    _raises(lambda: Pruning(**arguments), message)


def test_a_criterion_object_without_scores_is_named():
    _raises(lambda: Pruning(criterion=object()), "has no `scores(layers, granularity, cycle)` method")


@pytest.mark.parametrize("removed", ["target", "per_cycle", "cycles", "warmup_epochs", "finetune_epochs", "budget",
                                     "scope", "normalize", "min_keep", "layer_targets", "remove", "round_to", "max_drop",
                                     "mode", "rewind", "control", "seed", "calibration_batches", "calibration_loss"])
def test_the_old_flat_arguments_are_gone(removed):
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{removed}'"):
        Pruning(**{removed: 1})


def test_shortcut_strings_build_the_objects_at_their_defaults():
    pruning = Pruning(schedule="geometric", criterion="random", granularity="neuron", ranking="layer")
    assert pruning.schedule == Geometric() and pruning.criterion.fingerprint() == RandomImportance().fingerprint()
    assert pruning.granularity == Neurons() and pruning.remove is True and pruning.ranking == PerLayer()
    defaults = Pruning()
    assert defaults.schedule == OneShot() and defaults.granularity == Weights() and defaults.ranking == Global()
    assert defaults.guard is None and defaults.lottery is None and defaults.fractions == [0.5]


# ----------------------------------------------------------------------------- check_combination
@pytest.mark.parametrize(("arguments", "message"), [
    ({"criterion": "apoz", "granularity": "weight"}, "`criterion`='apoz' scores ('neuron',) only, got granularity=Weights()."),
    ({"criterion": APoZ(batches=2), "granularity": Weights()},
     "`criterion`='apoz' scores ('neuron',) only, got granularity=Weights()."),
    ({"schedule": OneShot(target=0.5, budget="params"), "ranking": PerLayer(overrides={"*classifier": 0.3})},
     "`PerLayer.overrides` sets each layer's own fraction of units; it needs the schedule's budget='units', got budget='params'."),
    ({"schedule": Geometric(target=0.5, budget="macs"), "ranking": PerLayer(overrides={"*classifier": 0.3})},
     "it needs the schedule's budget='units', got budget='macs'."),
    ({"guard": DropGuard("val_acc", 0.01)},
     "`guard` compares against the dense model's `val_acc`, measured after warm-up; the schedule's `warmup_epochs` must be "
     ">= 1, got 0."),
    ({"schedule": OneShot(target=0.5, warmup_epochs=1), "lottery": Rewind(2)},
     "`Rewind.to`=2 is after the first prune; it must be 'init' or an epoch in [0, warmup_epochs=1]."),
    ({"lottery": Rewind(1, control=Reinit())},
     "`Rewind.to`=1 is after the first prune; it must be 'init' or an epoch in [0, warmup_epochs=0]."),
    ({"schedule": OneShot(target=0.5, warmup_epochs=1), "guard": DropGuard("val_acc", 0.01), "monitor": "val_loss"},
     "`monitor`='val_loss' differs from `DropGuard.monitor`='val_acc'; the history records one metric: leave `monitor` out "
     "(the guard's is recorded)."),
], ids=lambda value: value if isinstance(value, str) else "")
def test_rules_across_two_objects_are_checked_once_at_construction(arguments, message):
    _raises(lambda: Pruning(**arguments), message)


def test_check_combination_is_the_one_place_of_the_cross_object_rules():
    # The same rule, called directly (as Pruning's PruningConfig calls it), with the objects themselves.
    _raises(lambda: check_combination(OneShot(), Neurons(), Global(), Magnitude(), DropGuard("val_acc", 0.1), None, None),
            "the schedule's `warmup_epochs` must be >= 1, got 0.")
    check_combination(OneShot(warmup_epochs=1), Neurons(), Global(), Magnitude(), DropGuard("val_acc", 0.1), Rewind(1),
                      "val_acc")  # all allowed: same monitor, rewind at the first prune
    config = PruningConfig(schedule=OneShot(warmup_epochs=1), guard=DropGuard("val_acc", 0.1))
    assert config.monitor == "val_acc"  # the guard's metric is recorded


# ----------------------------------------------------------------------------- numbers and fits
@pytest.mark.parametrize("number", [np.float32(0.5), np.float64(0.5), torch.tensor(0.5), torch.tensor([0.5]), 0.5])
def test_numpy_and_one_element_tensor_fractions_are_accepted_as_plain_floats(number):
    quarter = number / 2
    schedule = Geometric(target=number, per_cycle=quarter)
    ranking = PerLayer(overrides={"*classifier": quarter}, min_keep=number - number)
    guard = DropGuard("val_acc", quarter)
    custom = Custom(fraction=lambda cycle: number, cycles=1)
    pruning = Pruning(schedule=schedule, ranking=ranking)
    values = [schedule.target, schedule.per_cycle, ranking.overrides["*classifier"], ranking.min_keep, guard.max_drop,
              custom.target, *custom.fractions()]
    assert [type(value) for value in values] == [float] * len(values)  # plain floats: checkpoints hold no tensors
    assert values == [0.5, 0.25, 0.25, 0.0, 0.25, 0.5, 0.5]
    assert pruning.fractions[-1] == 0.5 and type(pruning.fractions[-1]) is float


def _fit(pruning, max_epochs):
    L.seed_everything(0)
    trainer = make_trainer(max_epochs, [pruning], limit_train_batches=2, limit_val_batches=1, num_sanity_val_steps=0)
    trainer.fit(Classifier("lenet_300_100", input_shape=(1, 8, 8)), DigitsDataModule(batch_size=32))


def _weights(pruning):
    return sum(mask.numel() for mask in pruning.keep.values())


@pytest.mark.parametrize("schedule", [
    Steps(target=0.6, steps=3, warmup_epochs=1),
    Custom(fraction=lambda cycle: (0.25, 0.5, 0.7)[cycle], cycles=3, warmup_epochs=1),
], ids=["Schedule-subclass", "Custom"])
def test_a_users_schedule_drives_a_real_fit_to_its_fractions(schedule):
    expected = [0.2, 0.4, 0.6] if isinstance(schedule, Steps) else [0.25, 0.5, 0.7]
    pruning = Pruning(schedule=schedule, verbose=False)
    assert pruning.fractions == pytest.approx(expected) and pruning.timeline.num_cycles == 3
    _fit(pruning, max_epochs=4)
    assert [row["epoch"] for row in pruning.history] == [1, 2, 3]
    for row, fraction in zip(pruning.history, expected):
        assert abs(row["sparsity"] - fraction) <= len(pruning.keep) / _weights(pruning)  # within one weight per layer
    assert pruning.state_dict()["config"]["schedule.type"] == type(schedule).__name__  # its fingerprint checkpoints
