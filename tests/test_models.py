"""Tests for lightning_prune.models: architectures, registry, and the Lightning Classifier."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import lightning as L
import pytest
import torch
import torch_pruning as tp
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_prune.models import MODELS, Classifier, build_model
from trainers import make_trainer

ROOTS = (nn.Conv1d, nn.Conv2d, nn.Linear)

# name -> (input shape without batch, parameter count with default arguments)
SPECS = {
    "lenet_300_100": ((1, 8, 8), 64 * 300 + 300 + 300 * 100 + 100 + 100 * 10 + 10),
    "vgg_small": ((1, 8, 8), 288_170),
    "resnet_small": ((1, 8, 8), 77_754),
    "cnn1d": ((1, 40), 93_834),  # 40 -> 20 -> 10 after pooling: 64 * 10 features into fc
}


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def groups_by_name(model: nn.Module, x: torch.Tensor) -> list[set[str]]:
    """Names of the prunable layers in each Torch-Pruning group (classifier ignored)."""
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    names = {m: n for n, m in model.named_modules()}
    groups = dg.get_all_groups(ignored_layers=[model.classifier], root_module_types=ROOTS)
    return [{names[it.dep.target.module] for it in g if isinstance(it.dep.target.module, ROOTS)}
            for g in groups]


def test_registry_keys() -> None:
    assert set(MODELS) == set(SPECS)


@pytest.mark.parametrize("name", list(SPECS))
@pytest.mark.parametrize("num_classes", [10, 3])
def test_output_shape(name: str, num_classes: int) -> None:
    shape, _ = SPECS[name]
    model = build_model(name, num_classes=num_classes).eval()
    assert model(torch.randn(5, *shape)).shape == (5, num_classes)
    assert model.classifier.out_features == num_classes


@pytest.mark.parametrize("name", list(SPECS))
def test_parameter_count(name: str) -> None:
    assert n_params(build_model(name)) == SPECS[name][1]


def test_lenet_on_mnist1d_and_custom_widths() -> None:
    model = build_model("lenet_300_100", in_features=40, hidden=(50, 20, 10))
    assert model(torch.randn(2, 1, 40)).shape == (2, 10)
    assert n_params(model) == 40 * 50 + 50 + 50 * 20 + 20 + 20 * 10 + 10 + 10 * 10 + 10


def test_cnn1d_other_lengths() -> None:
    model = build_model("cnn1d", channels=(8, 8, 8), length=33, kernel_size=3)
    assert model(torch.randn(2, 1, 33)).shape == (2, 10)
    with pytest.raises(ValueError, match="length=3"):
        build_model("cnn1d", channels=(8, 8), length=3)


def test_activations_are_relu_modules_and_no_dropout() -> None:
    for name in SPECS:
        modules = list(build_model(name).modules())
        relus = [m for m in modules if isinstance(m, nn.ReLU)]
        assert relus and not any(m.inplace for m in relus)
        assert not any(isinstance(m, nn.modules.dropout._DropoutNd) for m in modules)


@pytest.mark.parametrize("name", list(SPECS))
def test_dependency_graph_groups(name: str) -> None:
    shape, _ = SPECS[name]
    model = build_model(name)
    groups = groups_by_name(model, torch.randn(2, *shape))
    assert groups and all(groups)
    # Every prunable layer except the classifier is the root of some group.
    prunable = {n for n, m in model.named_modules() if isinstance(m, ROOTS)} - {"classifier"}
    assert prunable <= set().union(*groups)


def test_resnet_residual_groups_couple_shortcuts() -> None:
    groups = groups_by_name(build_model("resnet_small"), torch.randn(2, 1, 8, 8))
    # Identity shortcut: the first block's second conv is coupled with the stem.
    assert any({"stem.0", "layers.0.conv2"} <= g for g in groups)
    # Projection shortcut: a block's second conv is coupled with its 1x1 shortcut conv.
    assert any({"layers.1.conv2", "layers.1.shortcut.0"} <= g for g in groups)
    assert any({"layers.2.conv2", "layers.2.shortcut.0"} <= g for g in groups)


def test_cnn1d_flatten_coupling_prunes_linear_blocks() -> None:
    model = build_model("cnn1d")
    x = torch.randn(2, 1, 40)
    last_conv, fc = [m for m in model.features if isinstance(m, nn.Conv1d)][-1], model.fc
    length = fc.in_features // last_conv.out_channels
    dg = tp.DependencyGraph().build_dependency(model, example_inputs=x)
    dg.get_pruning_group(last_conv, tp.prune_conv_out_channels, idxs=[0, 5]).prune()
    assert last_conv.out_channels == 62
    assert fc.in_features == 62 * length
    assert model(x).shape == (2, 10)


@pytest.mark.parametrize("name", list(SPECS))
def test_deepcopy(name: str) -> None:
    shape, _ = SPECS[name]
    model = build_model(name).eval()
    clone = copy.deepcopy(model)
    x = torch.randn(3, *shape)
    torch.testing.assert_close(clone(x), model(x), rtol=0, atol=0)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(clone.parameters(), model.parameters()))
    module = Classifier("resnet_small")
    assert isinstance(copy.deepcopy(module).model, type(module.model))


def test_unknown_arch_raises() -> None:
    with pytest.raises(ValueError, match="'nope'") as info:
        build_model("nope")
    assert all(key in str(info.value) for key in MODELS)
    with pytest.raises(ValueError, match="'nope'"):
        Classifier(arch="nope")


def test_bad_optimizer_arguments_raise() -> None:
    with pytest.raises(ValueError, match="optimizer='rmsprop'") as info:
        Classifier(optimizer="rmsprop")
    assert all(name in str(info.value) for name in ("adam", "adamw", "sgd"))
    for bad in (0.0, -1e-3, float("nan")):
        with pytest.raises(ValueError, match="lr="):
            Classifier(lr=bad)
    with pytest.raises(ValueError, match="weight_decay=-1"):
        Classifier(weight_decay=-1)


@pytest.mark.parametrize("opt, cls", [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                      ("sgd", torch.optim.SGD)])
def test_configure_optimizers(opt: str, cls: type) -> None:
    module = Classifier(optimizer=opt, lr=0.05, momentum=0.8, weight_decay=1e-4)
    optim = module.configure_optimizers()
    assert type(optim) is cls
    group = optim.param_groups[0]
    assert group["lr"] == 0.05 and group["weight_decay"] == 1e-4
    assert len(group["params"]) == len(list(module.parameters()))
    if opt == "sgd":
        assert group["momentum"] == 0.8


def test_hyperparameters_and_example_input() -> None:
    module = Classifier("cnn1d", {"num_classes": 4}, input_shape=(1, 40))
    assert module.hparams.arch == "cnn1d" and module.hparams.arch_kwargs == {"num_classes": 4}
    assert module.num_classes == 4 and module.val_acc.num_classes == 4
    assert module(module.example_input_array).shape == (2, 4)
    assert Classifier().example_input_array is None


def test_lenet_in_features_follow_input_shape(tmp_path: Path) -> None:
    """LeNet-300-100 sizes its first layer from ``input_shape`` (784 for MNIST) unless ``arch_kwargs`` says otherwise."""
    module = Classifier("lenet_300_100", input_shape=(1, 28, 28))
    assert module.model.features[0].in_features == 784
    assert module.hparams.arch_kwargs is None  # the default is derived, not written into the hyper-parameters
    assert module(module.example_input_array).shape == (2, 10)
    assert Classifier("lenet_300_100", input_shape=(1, 40)).model.features[0].in_features == 40
    assert Classifier("lenet_300_100").model.features[0].in_features == 64  # no input_shape: the old default
    explicit = Classifier("lenet_300_100", arch_kwargs={"in_features": 100}, input_shape=(1, 28, 28))
    assert explicit.model.features[0].in_features == 100  # arch_kwargs wins
    trainer = _trainer(tmp_path)
    trainer.fit(module, _loader((1, 28, 28)), _loader((1, 28, 28)))  # failed before: 784 inputs into a 64-input layer
    path = tmp_path / "mnist.ckpt"
    trainer.save_checkpoint(path)
    restored = Classifier.load_from_checkpoint(path, map_location="cpu")
    assert restored.model.features[0].in_features == 784


def _loader(shape: tuple[int, ...], n: int = 32, classes: int = 10) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, *shape, generator=g)
    return DataLoader(TensorDataset(x, torch.randint(classes, (n,), generator=g)), batch_size=8)


def _trainer(root: Path) -> L.Trainer:
    return make_trainer(1, limit_train_batches=2, limit_val_batches=1, limit_test_batches=1, default_root_dir=root)


@pytest.mark.parametrize("name", list(SPECS))
def test_fit_test_and_checkpoint_round_trip(name: str, tmp_path: Path) -> None:
    L.seed_everything(0, verbose=False)
    shape, _ = SPECS[name]
    module = Classifier(name, {"num_classes": 10}, optimizer="sgd", lr=0.01, input_shape=shape)
    before = [p.detach().clone() for p in module.parameters()]
    trainer = _trainer(tmp_path)
    trainer.fit(module, _loader(shape), _loader(shape))
    metrics = trainer.callback_metrics
    for key in ("val_acc", "val_loss", "train_acc", "train_loss"):
        assert key in metrics, sorted(metrics)
    assert 0.0 <= float(metrics["val_acc"]) <= 1.0
    assert any(not torch.equal(a, b) for a, b in zip(before, module.parameters()))

    (result,) = trainer.test(module, _loader(shape), verbose=False)
    assert {"test_acc", "test_loss"} <= set(result)

    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path)
    restored = Classifier.load_from_checkpoint(path, map_location="cpu").eval()
    module.eval()
    assert restored.hparams == module.hparams
    x = torch.randn(4, *shape)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), module(x), rtol=0, atol=0)


def test_unknown_lr_schedule_is_named() -> None:
    with pytest.raises(ValueError, match=r"lr_schedule='step' is not supported; expected one of \['constant', 'cosine'\]"):
        Classifier(lr_schedule="step")


def test_cosine_schedule_anneals_over_max_epochs_and_survives_neuron_removal() -> None:
    import math

    from lightning.pytorch.callbacks import Callback

    from lightning_prune import Geometric, Pruning
    from lightning_prune.data import DigitsDataModule

    class Lrs(Callback):
        def __init__(self) -> None:
            self.lrs: list[float] = []
            self.same_params: list[bool] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            optimizer = trainer.optimizers[0]
            self.lrs.append(optimizer.param_groups[0]["lr"])
            scheduler = trainer.lr_scheduler_configs[0].scheduler
            # the scheduler drives the optimizer the trainer steps, over the model's current parameters
            self.same_params.append(scheduler.optimizer is optimizer and
                                    {id(p) for p in optimizer.param_groups[0]["params"]} == {id(p) for p in pl_module.parameters()})

    L.seed_everything(0, verbose=False)
    module = Classifier("lenet_300_100", input_shape=(1, 8, 8), lr=0.01, lr_schedule="cosine")
    lrs = Lrs()
    pruning = Pruning(criterion="l2", granularity="neuron", ranking="layer",
                      schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1, finetune_epochs=1), verbose=False)
    trainer = make_trainer(4, [pruning, lrs], limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, DigitsDataModule(batch_size=32))
    assert module.model.features[0].out_features < 300  # neurons were removed during the fit
    assert lrs.lrs == pytest.approx([0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])
    assert all(lrs.same_params)


def test_cosine_schedule_length_can_follow_lottery_rounds() -> None:
    from lightning.pytorch.callbacks import Callback

    from lightning_prune import Geometric, Pruning, Rewind
    from lightning_prune.data import DigitsDataModule

    with pytest.raises(ValueError, match="lr_schedule_epochs=0 must be an integer >= 1 or None"):
        Classifier(lr_schedule="cosine", lr_schedule_epochs=0)

    class Lrs(Callback):
        def __init__(self) -> None:
            self.lrs: list[float] = []

        def on_train_epoch_start(self, trainer, pl_module) -> None:
            self.lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    L.seed_everything(0, verbose=False)
    module = Classifier("lenet_300_100", input_shape=(1, 8, 8), lr=0.01, lr_schedule="cosine", lr_schedule_epochs=3)
    lrs = Lrs()
    pruning = Pruning(criterion="l1", schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=3, finetune_epochs=3),
                      lottery=Rewind("init"), verbose=False)
    trainer = make_trainer(3 + 3 * len(pruning.fractions), [pruning, lrs], limit_train_batches=2, limit_val_batches=1)
    trainer.fit(module, DigitsDataModule(batch_size=32))
    one_round = [0.01 * (1 + math.cos(math.pi * e / 3)) / 2 for e in range(3)]
    assert lrs.lrs == pytest.approx(one_round * (1 + len(pruning.fractions)))  # every round anneals from the start
