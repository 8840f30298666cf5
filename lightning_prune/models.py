"""Small reference architectures and a generic Lightning classifier.

Every architecture is a plain ``nn.Module`` built from ``nn.ReLU()`` *modules* (not in-place,
not functional) so forward hooks see post-activation outputs, without dropout so runs are
deterministic. Each exposes its final ``nn.Linear`` as ``model.classifier``: pass it to
Torch-Pruning's ``ignored_layers`` so the class count is never pruned.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics.classification import MulticlassAccuracy

from lightning_prune.checkpoint import PrunedCheckpointMixin

__all__ = [
    "CNN1D", "MODELS", "BasicBlock", "Classifier", "LeNet300100", "ResNetSmall", "VGGSmall",
    "build_model",
]

Batch = tuple[torch.Tensor, torch.Tensor]


class LeNet300100(nn.Module):
    """The LeNet-300-100 multilayer perceptron of Han et al. 2015 and Frankle & Carbin 2019.

    Args:
        in_features: Flattened input size (64 for 8x8 digits, 40 for MNIST-1D, 784 for MNIST).
        num_classes: Number of output classes.
        hidden: Widths of the hidden layers, each followed by a ReLU.
    """

    def __init__(
        self, in_features: int = 64, num_classes: int = 10, hidden: Sequence[int] = (300, 100)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        self.flatten = nn.Flatten()
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.flatten(x)))


def _conv_bn_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]


class VGGSmall(nn.Module):
    """A VGG-style CNN: two conv-BN-ReLU blocks per stage, max-pooling between stages.

    With the default three stages an 8x8 input is pooled to 2x2, then globally averaged.

    Args:
        in_channels: Input image channels.
        num_classes: Number of output classes.
        widths: Output channels of each stage.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128)
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for i, w in enumerate(widths):
            if i > 0:
                layers.append(nn.MaxPool2d(2))
            layers += _conv_bn_relu(c, w) + _conv_bn_relu(w, w)
            c = w
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.features(x))))


class BasicBlock(nn.Module):
    """ResNet basic block: conv-BN-ReLU-conv-BN, plus a shortcut, then ReLU.

    The shortcut is a 1x1 conv + BN when the stride or channel count changes, else identity.
    """

    def __init__(self, c_in: int, c_out: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A small ResNet: stem, one :class:`BasicBlock` per stage (stride 2 between stages).

    Args:
        in_channels: Input image channels.
        num_classes: Number of output classes.
        widths: Output channels of each stage; the stem has ``widths[0]`` channels.
    """

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, widths: Sequence[int] = (16, 32, 64)
    ) -> None:
        super().__init__()
        self.stem = nn.Sequential(*_conv_bn_relu(in_channels, widths[0]))
        blocks, c = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(BasicBlock(c, w, stride=1 if i == 0 else 2))
            c = w
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.layers(self.stem(x)))))


class CNN1D(nn.Module):
    """A 1-D CNN for MNIST-1D: Conv1d-ReLU-MaxPool layers, flatten, hidden Linear-ReLU, classifier.

    The flatten between the last conv and the hidden ``Linear`` couples each conv channel with a
    block of ``Linear`` input features, which structured pruning must follow.

    Args:
        in_channels: Input channels.
        num_classes: Number of output classes.
        channels: Output channels of each conv layer; each is max-pooled to half the length.
        length: Input sequence length (40 for MNIST-1D).
        hidden: Width of the hidden fully connected layer.
        kernel_size: Conv kernel size (padding ``kernel_size // 2``).

    Raises:
        ValueError: If ``length`` is too short for the number of conv layers.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        channels: Sequence[int] = (32, 64),
        length: int = 40,
        hidden: int = 128,
        kernel_size: int = 5,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c, n = in_channels, length
        k = kernel_size
        for w in channels:
            layers += [nn.Conv1d(c, w, k, padding=k // 2), nn.ReLU(), nn.MaxPool1d(2)]
            c, n = w, (n + 2 * (k // 2) - k + 1) // 2
        if n < 1:
            raise ValueError(f"length={length!r} is too short for {len(channels)} pooled convs")
        self.features = nn.Sequential(*layers)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(c * n, hidden)
        self.relu = nn.ReLU()
        self.classifier = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.relu(self.fc(self.flatten(self.features(x)))))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "lenet_300_100": LeNet300100,
    "vgg_small": VGGSmall,
    "resnet_small": ResNetSmall,
    "cnn1d": CNN1D,
}


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build the architecture registered as ``name`` in :data:`MODELS` with ``**kwargs``.

    Raises:
        ValueError: If ``name`` is not a key of :data:`MODELS`.
    """
    if name not in MODELS:
        raise ValueError(f"arch={name!r} is unknown; expected one of {list(MODELS)}")
    return MODELS[name](**kwargs)


_OPTIMIZERS = ("adam", "adamw", "sgd")
_LR_SCHEDULES = ("constant", "cosine")


class Classifier(PrunedCheckpointMixin, L.LightningModule):
    """Cross-entropy classifier around any architecture of :data:`MODELS`.

    All arguments are plain hyper-parameters, so ``Classifier.load_from_checkpoint(path)`` rebuilds
    the module and a ``LightningCLI`` YAML can configure it. Batches are ``(x, y)`` tuples.

    Args:
        arch: Architecture name, a key of :data:`MODELS`.
        arch_kwargs: Keyword arguments for the architecture; ``num_classes`` (default 10) also
            sizes the accuracy metrics. For ``"lenet_300_100"`` with ``input_shape`` given,
            ``in_features`` defaults to the product of ``input_shape`` (784 for ``(1, 28, 28)``);
            an ``in_features`` in ``arch_kwargs`` wins.
        optimizer: One of ``"adam"``, ``"adamw"``, ``"sgd"``.
        lr: Learning rate, > 0.
        momentum: SGD momentum, >= 0 (ignored by Adam/AdamW).
        weight_decay: Weight decay, >= 0.
        input_shape: Shape of one example without the batch dimension; when given,
            ``example_input_array`` is a batch of two zero inputs (and LeNet-300-100's
            ``in_features`` follows it, see ``arch_kwargs``).
        lr_schedule: ``"constant"``, or ``"cosine"``: cosine annealing from ``lr`` towards 0 over
            ``lr_schedule_epochs`` epochs, stepped once per epoch (``CosineAnnealingLR``). ``Pruning``
            leaves the scheduler untouched when it removes neurons. With ``Pruning(lottery=Rewind(...))`` the
            scheduler is rewound with everything else at every round, so each round replays the
            first epochs of the schedule: set ``lr_schedule_epochs`` to the round length (e.g.
            ``finetune_epochs``) for a full anneal per round.
        lr_schedule_epochs: Length of the cosine schedule in epochs (default: the first fit's
            ``max_epochs``). It is fixed when the optimizer is configured: a fit resumed from a
            checkpoint keeps the checkpoint's schedule, whatever its own ``max_epochs``.

    Raises:
        ValueError: If ``arch``, ``optimizer`` or ``lr_schedule`` is unknown, ``lr <= 0``, or
            ``momentum`` or ``weight_decay`` is negative.
    """

    def __init__(
        self,
        arch: str = "lenet_300_100",
        arch_kwargs: dict[str, Any] | None = None,
        optimizer: str = "adam",
        lr: float = 1e-3,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        input_shape: tuple[int, ...] | None = None,
        lr_schedule: str = "constant",
        lr_schedule_epochs: int | None = None,
    ) -> None:
        super().__init__()
        if lr_schedule not in _LR_SCHEDULES:
            raise ValueError(f"lr_schedule={lr_schedule!r} is not supported; expected one of {list(_LR_SCHEDULES)}")
        if lr_schedule_epochs is not None and (isinstance(lr_schedule_epochs, bool) or not isinstance(lr_schedule_epochs, int)
                                               or lr_schedule_epochs < 1):
            raise ValueError(f"lr_schedule_epochs={lr_schedule_epochs!r} must be an integer >= 1 or None")
        if optimizer not in _OPTIMIZERS:
            raise ValueError(
                f"optimizer={optimizer!r} is not supported; expected one of {list(_OPTIMIZERS)}"
            )
        if not lr > 0:
            raise ValueError(f"lr={lr!r} must be > 0")
        if momentum < 0:
            raise ValueError(f"momentum={momentum!r} must be >= 0")
        if weight_decay < 0:
            raise ValueError(f"weight_decay={weight_decay!r} must be >= 0")
        self.save_hyperparameters()
        model_kwargs = dict(arch_kwargs or {})
        if arch == "lenet_300_100" and input_shape is not None and "in_features" not in model_kwargs:
            model_kwargs["in_features"] = math.prod(input_shape)  # the MLP flattens its input
        self.model = build_model(arch, **model_kwargs)
        self.num_classes = int((arch_kwargs or {}).get("num_classes", 10))
        if input_shape is not None:
            self.example_input_array = torch.zeros(2, *input_shape)
        self.train_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.val_acc = MulticlassAccuracy(self.num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(self.num_classes, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def _step(self, batch: Batch, stage: str, metric: MulticlassAccuracy) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = F.cross_entropy(logits, y)
        metric(logits, y)  # forward: accumulates and caches the batch value for on_step logging
        on_step = stage == "train"
        # Validation/test losses are averaged over ranks, so every rank judges a cycle on the same value.
        self.log(f"{stage}_loss", loss, on_step=on_step, on_epoch=True, prog_bar=stage == "val", sync_dist=not on_step)
        self.log(f"{stage}_acc", metric, on_step=on_step, on_epoch=True, prog_bar=stage == "val")
        return loss

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train", self.train_acc)

    def validation_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "val", self.val_acc)

    def test_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "test", self.test_acc)

    def configure_optimizers(self) -> torch.optim.Optimizer | dict[str, Any]:
        """Build the optimizer over the current parameters (``Pruning`` carries it over removals),
        with a cosine learning-rate scheduler over ``trainer.max_epochs`` if ``lr_schedule="cosine"``."""
        hp = self.hparams
        if hp.optimizer == "sgd":
            optimizer = torch.optim.SGD(self.parameters(), lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        else:
            cls = torch.optim.Adam if hp.optimizer == "adam" else torch.optim.AdamW
            optimizer = cls(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        if hp.get("lr_schedule", "constant") == "constant":
            return optimizer
        epochs = hp.get("lr_schedule_epochs") or (self.trainer.max_epochs if self._trainer is not None else None)
        if epochs is None or epochs < 1:
            raise ValueError(
                f"lr_schedule='cosine' anneals over the fit's max_epochs, which is {epochs!r}; set max_epochs >= 1 "
                "or lr_schedule_epochs."
            )
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
