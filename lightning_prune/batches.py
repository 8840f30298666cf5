"""What a pruning step reads from a fit: one model input to trace, calibration batches, and the
module's own step that runs them (``training_step``, or its ``pruning_calibration_step``)."""

from __future__ import annotations

import contextlib
import copy
import itertools
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.signature_utils import is_param_in_hook_signature
from torchmetrics import Metric

from lightning_prune.criteria import Criterion, batch_input, follows_fit_step

#: The LightningModule method that, when defined, runs one calibration batch instead of ``training_step``.
CALIBRATION_HOOK = "pruning_calibration_step"


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


def calibration_batches(trainer: L.Trainer, criterion: Criterion, step: Callable[[Any, int], Any] | None = None) -> list[Any]:
    """The first ``criterion.batches`` training batches, on the device and in the precision of the fit.

    Args:
        trainer: The fit's trainer.
        criterion: The criterion to calibrate.
        step: The module's step that will run the batches (:func:`fit_step`); without one, the
            criterion's defaults feed ``batch[0]`` to the model, which a dict batch does not have.

    Raises:
        ValueError: If the train data is not one ``DataLoader``, or its batches are dicts and
            neither a step nor the criterion's ``forward``/``loss`` says how a batch reaches the model.
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
    if batches and isinstance(batches[0], Mapping) and step is None:
        if criterion.needs_activations and getattr(criterion, "forward", None) is None:
            raise ValueError(
                f"`criterion`={criterion.name!r} feeds each calibration batch to the model, and the train batches are "
                f"dicts, whose model input only the module knows: define `{CALIBRATION_HOOK}(self, batch, batch_idx)` "
                f"in the module, pass {type(criterion).__name__}(forward=lambda model, batch: model(...)) to say how, "
                "or use a weight criterion ('l1', 'l2')."
            )
        if criterion.needs_gradients and getattr(criterion, "loss", None) is None:
            raise ValueError(
                f"`criterion`={criterion.name!r} needs the loss of each calibration batch, and the train batches are "
                f"dicts: define `{CALIBRATION_HOOK}(self, batch, batch_idx)` returning it, or pass "
                f"{type(criterion).__name__}(loss=lambda model, batch: ...) computing it from one of them."
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


def fit_step(trainer: L.Trainer, pl_module: L.LightningModule, criterion: Criterion) -> Callable[[Any, int], Any] | None:
    """The module's own step for a calibration pass, so scores see what training sees.

    ``pl_module.pruning_calibration_step(batch, batch_idx)`` when the module defines it, else its
    ``training_step`` (the class's: a distillation term is not part of it). The step runs under the
    precision plugin's ``train_step_context`` with ``self.log``/``self.log_dict`` silenced and the
    module's torchmetrics states put back afterwards, so a calibration batch is neither logged nor
    counted in a training metric.

    Returns:
        ``step(batch, index)``, or ``None`` when the criterion reads no data, brings its own
        ``forward``/``loss``, or the module optimizes manually (its ``training_step`` steps the
        optimizer) and defines no ``pruning_calibration_step``.
    """
    if not _reads_data_its_default_way(criterion):
        return None
    run = getattr(pl_module, CALIBRATION_HOOK, None)
    if run is None:
        if not pl_module.automatic_optimization:
            return None
        run = type(pl_module).training_step.__get__(pl_module)
    takes_index = is_param_in_hook_signature(run, "batch_idx", min_args=2)

    def step(batch: Any, index: int) -> Any:
        with _silenced_logging(pl_module), _kept_metric_states(pl_module), trainer.precision_plugin.train_step_context():
            return run(batch, index) if takes_index else run(batch)

    return step


def check_fit_step(criterion: Criterion, pl_module: L.LightningModule) -> str | None:
    """Check, when training starts, that the calibration pass has a step it can run.

    Returns:
        A line to log when the criterion falls back on its defaults (manual optimization), else ``None``.

    Raises:
        ValueError: If a gradient criterion would fall back on its default loss (cross-entropy of
            ``model(batch[0])``) because the module optimizes manually, naming the two fixes.
    """
    if not _reads_data_its_default_way(criterion):
        return None
    if pl_module.automatic_optimization or getattr(pl_module, CALIBRATION_HOOK, None) is not None:
        return None
    if criterion.needs_gradients:
        raise ValueError(
            f"`criterion`={criterion.name!r} needs the loss of each calibration batch; with manual optimization "
            "training_step steps the optimizer, so Pruning cannot run it to get the loss: define "
            f"`{CALIBRATION_HOOK}(self, batch, batch_idx)` returning the loss, or pass "
            f"{type(criterion).__name__}(loss=lambda model, batch: ...)."
        )
    return (f"calibration feeds batch[0] to the model's forward (manual optimization: training_step steps the "
            f"optimizer, so it is not run); define `{CALIBRATION_HOOK}(self, batch, batch_idx)` to run it your way.")


def _reads_data_its_default_way(criterion: Criterion) -> bool:
    """Whether the criterion calibrates on data and leaves how a batch reaches the model to the fit."""
    return (criterion.needs_activations or criterion.needs_gradients) and follows_fit_step(criterion)


@contextlib.contextmanager
def _silenced_logging(module: L.LightningModule) -> Iterator[None]:
    names = ("log", "log_dict")
    saved = {name: module.__dict__[name] for name in names if name in module.__dict__}
    for name in names:
        setattr(module, name, lambda *args, **kwargs: None)
    try:
        yield
    finally:
        for name in names:
            module.__dict__.pop(name, None)
        module.__dict__.update(saved)


_METRIC_BOOKKEEPING = ("_update_count", "_computed", "_forward_cache")


@contextlib.contextmanager
def _kept_metric_states(module: torch.nn.Module) -> Iterator[None]:
    """Put every torchmetrics metric of ``module`` back as it was (a training step updates them)."""
    metrics = [m for m in module.modules() if isinstance(m, Metric)]
    saved = [(copy.deepcopy(m.metric_state), {key: copy.deepcopy(getattr(m, key)) for key in _METRIC_BOOKKEEPING
                                               if hasattr(m, key)}) for m in metrics]
    try:
        yield
    finally:
        for metric, (states, bookkeeping) in zip(metrics, saved):
            for key, value in {**states, **bookkeeping}.items():
                setattr(metric, key, value)
