"""Checkpoints and exports of physically pruned models.

A pruned model's architecture is not what its class builds: units were removed. The *plan*, the
sequence of removals, is stored in every checkpoint the :class:`~lightning_prune.Pruning` callback
sees (``checkpoint["lightning_prune_plan"]``), and :func:`restore_pruned` replays it on a freshly
built (dense) module before its weights load. Lightning calls a module's ``on_load_checkpoint``
before ``load_state_dict``, both in ``Trainer.fit(ckpt_path=...)`` and in
``LightningModule.load_from_checkpoint``, so :class:`PrunedCheckpointMixin` (or one line in your own
``on_load_checkpoint``) is all a module needs.

Plain exports, without Lightning or pickled classes:

* :func:`save_compact` / :func:`load_compact`: ``{"plan", "state_dict"}`` in a file that
  ``torch.load(..., weights_only=True)`` reads; rebuild the dense model, then load.
* :func:`export_program`: ``torch.export`` of the compact model; ``torch.export.load`` restores it.
"""

from __future__ import annotations

import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lightning_prune.hf_config import follow_configs, pretrained_signatures
from lightning_prune.surgery import Transaction, remove_groups

PLAN_KEY = "lightning_prune_plan"

Plan = dict[str, Any]
"""``{"inputs": [{"shape": [...], "dtype": "float32"}, ...], "steps": [{layer: [unit indices]}, ...]}``."""


def input_spec(example_input: Any) -> list[dict[str, Any]]:
    """Shapes and dtypes of an example input (a tensor or a tuple of tensors), for a plan."""
    inputs = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    return [{"shape": list(t.shape), "dtype": str(t.dtype).removeprefix("torch.")} for t in inputs]


def example_from_spec(spec: list[dict[str, Any]], device: torch.device | str = "cpu") -> tuple[torch.Tensor, ...]:
    """Zero tensors matching an input spec."""
    return tuple(torch.zeros(s["shape"], dtype=getattr(torch, s["dtype"]), device=device) for s in spec)


def _check_plan(plan: Any) -> None:
    ok = isinstance(plan, Mapping) and isinstance(plan.get("inputs"), list) and isinstance(plan.get("steps"), list)
    ok = ok and all(isinstance(step, Mapping) for step in plan["steps"])
    if not ok:
        raise ValueError(f"Corrupted pruning plan: expected {{'inputs': [...], 'steps': [...]}}, got {str(plan)[:200]}.")


def apply_plan(model: nn.Module, plan: Plan) -> None:
    """Replay a plan's removals on a model with the dense architecture.

    Raises:
        ValueError: If the plan is corrupted or does not fit the model (naming the layer).
    """
    _check_plan(plan)
    device = next(model.parameters()).device
    example = example_from_spec(plan["inputs"], device)
    signatures = pretrained_signatures(model)
    for index, step in enumerate(plan["steps"]):
        try:
            remove_groups(model, example, step)
        except ValueError as error:
            raise ValueError(f"The pruning plan does not fit this model (step {index}): {error}") from error
    follow_configs(model, signatures)  # as after the removals it replays (Hugging Face width fields)


def restore_pruned(module: nn.Module, checkpoint: Mapping[str, Any]) -> bool:
    """Give ``module`` the architecture of ``checkpoint`` before its weights load.

    Does nothing when the module already has the checkpoint's shapes (e.g. a model pruned in this
    process). A module pruned further than the checkpoint (``trainer.test(ckpt_path="best")`` after
    a fit that removed units since the best epoch) is first rebuilt dense from its class and saved
    hyperparameters, as ``load_from_checkpoint`` does (``type(module)(**module.hparams)``); then the
    checkpoint's plan, if any, is replayed. All or nothing: on any error the module is as it was.

    Returns:
        Whether the module's architecture was changed.

    Raises:
        ValueError: If the plan is corrupted, or the module does not fit the checkpoint's weights
            after the replay (another architecture), naming the first mismatch; or if the module is
            pruned further than the checkpoint and cannot be rebuilt dense (no saved hyperparameters).
    """
    plan = checkpoint.get(PLAN_KEY)
    if plan is not None:
        _check_plan(plan)
    state = checkpoint.get("state_dict", {})
    steps = plan["steps"] if plan is not None else []
    if _mismatch(module, state) is None or (not steps and not _is_pruned(module)):
        return False  # the right shapes already, or an unrelated checkpoint: Lightning names the mismatch
    with Transaction(module):
        if _is_pruned(module):
            dense = dense_build(module)
            if dense is None:
                raise ValueError(
                    f"{type(module).__name__} has had units removed since this checkpoint was written, and it cannot be "
                    "rebuilt dense (it saved no hyperparameters: call self.save_hyperparameters() in __init__). Load the "
                    f"checkpoint into a freshly built module instead: {type(module).__name__}.load_from_checkpoint(path)."
                )
            _adopt(module, dense)
        if steps:
            apply_plan(module, plan)
            mark_pruned(module)
        mismatch = _mismatch(module, state)
        if mismatch is not None:
            raise ValueError(f"The pruning plan does not fit this model: after replaying it, {mismatch}.")
    return True


#: Set on a module by :func:`mark_pruned` when units were removed from it in this process.
_PRUNED_FLAG = "_lightning_prune_removed_units"


def mark_pruned(module: nn.Module) -> None:
    """Record that units were physically removed from ``module`` (its shapes are no longer its class's)."""
    setattr(module, _PRUNED_FLAG, True)


def _is_pruned(module: nn.Module) -> bool:
    return bool(getattr(module, _PRUNED_FLAG, False))


def dense_build(module: nn.Module) -> nn.Module | None:
    """A fresh dense instance of ``module``'s class from its saved hyperparameters, or ``None``."""
    hparams = getattr(module, "hparams", None)
    if not isinstance(hparams, Mapping) or not hparams:
        return None
    reference = next(module.parameters(), None)
    fresh = type(module)(**hparams)
    return fresh.to(reference.device, reference.dtype) if reference is not None else fresh


def _adopt(module: nn.Module, dense: nn.Module) -> None:
    """Give ``module`` the submodules, parameters and buffers of ``dense`` (same class), in place."""
    for attribute in ("_modules", "_parameters", "_buffers"):
        setattr(module, attribute, getattr(dense, attribute))
    setattr(module, _PRUNED_FLAG, False)


def _mismatch(module: nn.Module, state: Mapping[str, torch.Tensor]) -> str | None:
    own = module.state_dict()
    for name, value in state.items():
        if name in own and torch.is_tensor(value) and own[name].shape != value.shape:
            return f"{name!r} is {tuple(own[name].shape)} here and {tuple(value.shape)} in the checkpoint"
    return None


class PrunedCheckpointMixin:
    """Mixin for a ``LightningModule``: checkpoints of its pruned versions load.

    Example:
        ``class MyModule(PrunedCheckpointMixin, L.LightningModule): ...``; then
        ``MyModule.load_from_checkpoint(path)`` rebuilds the compact architecture.
    """

    restores_pruned_architecture = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        restore_pruned(self, checkpoint)
        super().on_load_checkpoint(checkpoint)


def save_compact(model: nn.Module, plan: Plan, path: str | Path) -> None:
    """Save a pruned model's plan and weights as plain tensors and lists (``weights_only``-safe)."""
    torch.save({PLAN_KEY: plan, "state_dict": model.state_dict()}, path)


def load_compact(model: nn.Module, path: str | Path) -> nn.Module:
    """Load :func:`save_compact`'s file into a freshly built dense model (shrunk in place first)."""
    saved = torch.load(path, weights_only=True, map_location=next(model.parameters()).device)
    restore_pruned(model, saved)
    model.load_state_dict(saved["state_dict"])
    return model


def export_program(model: nn.Module, example_input: Any, path: str | Path, dynamic_batch: bool = True) -> None:
    """Save the compact model with ``torch.export``: ``torch.export.load(path).module()`` runs it
    without the model's Python class.

    Args:
        model: The (compact) model.
        example_input: A batch the model accepts (a tensor or a tuple of tensors).
        path: Where to write the ``.pt2`` file.
        dynamic_batch: Export the first dimension of every tensor input as dynamic, so the program
            accepts any batch size (an example batch of one is repeated to two for tracing, since
            ``torch.export`` specialises sizes 0 and 1). ``False`` fixes the example's shapes.
    """
    inputs = tuple(example_input) if isinstance(example_input, (tuple, list)) else (example_input,)
    dynamic_shapes = None
    if dynamic_batch:
        inputs = tuple(x.repeat(2, *[1] * (x.dim() - 1)) if torch.is_tensor(x) and x.dim() and x.shape[0] == 1 else x
                       for x in inputs)
        dynamic_shapes = tuple({0: torch.export.Dim.DYNAMIC} if torch.is_tensor(x) and x.dim() else None for x in inputs)
    was_training = model.training
    model.eval()
    try:
        torch.export.save(torch.export.export(model, inputs, dynamic_shapes=dynamic_shapes), path)
    finally:
        model.train(was_training)


def install_restore(module: nn.Module) -> None:
    """Make ``module`` replay a checkpoint's plan before its weights load (``fit(ckpt_path=...)``,
    ``test(ckpt_path="best")``), by wrapping its own ``on_load_checkpoint`` until :func:`uninstall_restore`.

    Lightning restores the module (``on_load_checkpoint``, then ``load_state_dict``) before any
    callback state. Modules that inherit :class:`PrunedCheckpointMixin` need no wrapping.
    """
    if getattr(module, "restores_pruned_architecture", False):
        return
    original = module.on_load_checkpoint

    def on_load_checkpoint(checkpoint: dict[str, Any]) -> None:
        restore_pruned(module, checkpoint)
        original(checkpoint)

    module.on_load_checkpoint = on_load_checkpoint


def uninstall_restore(module: nn.Module) -> None:
    """Undo :func:`install_restore` (once the checkpoint is loaded)."""
    module.__dict__.pop("on_load_checkpoint", None)


def name_unreadable_checkpoints(checkpoint_io: Any) -> None:
    """Make a Lightning ``CheckpointIO`` name the file when it cannot read one (until :func:`unname_unreadable_checkpoints`).

    ``torch.load`` of a truncated file or of something that is not a checkpoint raises an error that
    names neither the file nor the cause (a zip-reader ``RuntimeError``, or an ``UnpicklingError``
    about ``weights_only``); :meth:`load_checkpoint` of the plugin instance is wrapped to raise a
    ``ValueError`` that does. A missing file keeps Lightning's own ``FileNotFoundError``.
    """
    original = getattr(checkpoint_io, "load_checkpoint", None)
    if original is None or getattr(original, "names_unreadable_files", False):
        return  # no plugin (a strategy without one), or wrapped already

    def load_checkpoint(path: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return original(path, *args, **kwargs)
        except FileNotFoundError:
            raise
        except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as error:
            reason = (str(error).strip() or type(error).__name__).split(". ")[0].splitlines()[0][:120]
            cause = ("it is not a checkpoint, or it holds objects that weights-only loading refuses (torch.load's "
                     "`weights_only`)" if isinstance(error, pickle.UnpicklingError) else "it is truncated or corrupted")
            raise ValueError(
                f"The checkpoint {str(path)!r} cannot be read: {cause} ({type(error).__name__}: {reason}). Resume from "
                "another checkpoint, or start a new fit."
            ) from error

    load_checkpoint.names_unreadable_files = True
    checkpoint_io.load_checkpoint = load_checkpoint


def unname_unreadable_checkpoints(checkpoint_io: Any) -> None:
    """Undo :func:`name_unreadable_checkpoints`."""
    if checkpoint_io is not None and getattr(vars(checkpoint_io).get("load_checkpoint"), "names_unreadable_files", False):
        del checkpoint_io.load_checkpoint
