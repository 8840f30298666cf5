"""The batches a pruning step reads from a fit: one model input to trace, and calibration batches."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch

from lightning_prune.criteria import Criterion, batch_input


def example_input(trainer: L.Trainer, pl_module: L.LightningModule) -> Any:
    """A batch of model input to trace, on the module's device and in its precision (``bf16-true``...).

    Raises:
        ValueError: If there is neither ``example_input_array`` nor a train dataloader, or the batches
            are dicts (which of their entries is the model's input only the module knows).
    """
    example = pl_module.example_input_array
    if example is None:
        loader = trainer.train_dataloader
        if loader is None:
            raise ValueError("Pruning needs `pl_module.example_input_array` or a train dataloader to trace the model.")
        batch = next(iter(loader))
        if isinstance(batch, Mapping):
            raise ValueError(
                f"The train batches are dicts (keys {sorted(batch)[:6]}); Pruning cannot tell which entries are the "
                "model's input. Set `self.example_input_array` in your LightningModule to an input its forward takes."
            )
        example = batch_input(batch)
    return trainer.precision_plugin.convert_input(trainer.strategy.batch_to_device(example))


def calibration_batches(trainer: L.Trainer, criterion: Criterion) -> list[Any]:
    """The first ``criterion.batches`` training batches, on the device and in the precision of the fit.

    Raises:
        ValueError: If the train data is not one ``DataLoader``, or its batches are dicts and the
            criterion has no ``forward``/``loss`` saying how a batch reaches the model.
    """
    if not (criterion.needs_activations or criterion.needs_gradients):
        return []
    count = getattr(criterion, "batches", None)
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ValueError(f"`criterion`={criterion.name!r} needs `batches`, the number of calibration batches per cycle, "
                         f"as an integer >= 1; got {count!r}.")
    loader = trainer.train_dataloader
    check_one_loader(criterion, loader)
    batches = [trainer.strategy.batch_to_device(b) for b in itertools.islice(loader, count)]
    if batches and isinstance(batches[0], Mapping):
        if criterion.needs_activations and getattr(criterion, "forward", None) is None:
            raise ValueError(
                f"`criterion`={criterion.name!r} feeds each calibration batch to the model, and the train batches are "
                f"dicts, whose model input only the module knows: pass {type(criterion).__name__}(forward=lambda "
                "model, batch: model(...)) to say how, or use a weight criterion ('l1', 'l2')."
            )
        if criterion.needs_gradients and getattr(criterion, "loss", None) is None:
            raise ValueError(
                f"`criterion`={criterion.name!r} needs the loss of each calibration batch, and the train batches are "
                f"dicts: pass {type(criterion).__name__}(loss=lambda model, batch: ...) computing it from one of them."
            )
    return [trainer.precision_plugin.convert_input(batch) for batch in batches]


def check_one_loader(criterion: Criterion, loader: Any) -> None:
    """Refuse a calibration criterion when the train data is not one ``DataLoader`` (several loaders,
    which Lightning combines with a ``CombinedLoader``); weight criteria read no batches.

    Raises:
        ValueError: Naming the criterion, what ``train_dataloader`` returned and the fix.
    """
    if not (criterion.needs_activations or criterion.needs_gradients) or isinstance(loader, torch.utils.data.DataLoader):
        return
    what = (f"a {type(loader).__name__} of {len(loader)} loaders (Lightning combines them with a CombinedLoader)"
            if isinstance(loader, (Mapping, list, tuple)) else type(loader).__name__)
    raise ValueError(
        f"`criterion`={criterion.name!r} needs calibration batches from one train DataLoader; the train dataloaders are "
        f"{what}. Return one DataLoader from `train_dataloader` (e.g. one over a ConcatDataset), or use a weight "
        "criterion ('l1', 'l2')."
    )
