"""Lottery tickets and "Rethinking the Value of Network Pruning", as plain functions.

* Rewinding (Frankle & Carbin 2019; Frankle et al. 2020): after each prune, every parameter and
  buffer, the optimizer state and the learning-rate schedulers go back to a snapshot taken at
  initialisation (``"init"``) or at an early epoch, and the surviving weights retrain from there.
  Snapshots are copied tensors (never views or deep-copied modules), so every rewind restores the
  same values, however many rounds came before.
* Controls: the same masks with a fresh random initialisation (:func:`reinitialized_state`), and
  random masks with the same per-layer counts (:func:`shuffle_within_groups`).
* Deconstructing tickets (Zhou et al. 2019): what of the initial weights matters? Keep only their
  signs (:func:`signed_constant_state`, every weight ``sign(w) * std`` of its layer), or only their
  magnitudes (:func:`random_sign_state`, signs redrawn at random).
* Scratch training (Liu et al. 2019): Scratch-E trains the pruned architecture from scratch for
  the same epochs, Scratch-B for the same compute (:func:`scratch_epochs`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lightning_prune.config import Reinit, SignedConstant
from lightning_prune.masks import apply_masks
from lightning_prune.surgery import detached_copy


def clone_tensors(state: Any) -> Any:
    """Copy of nested dicts/lists of tensors with fresh storage (no aliasing of the source)."""
    if torch.is_tensor(state):
        return state.detach().clone()
    if isinstance(state, dict):
        return {key: clone_tensors(value) for key, value in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(clone_tensors(value) for value in state)
    return state


def training_snapshot(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer], schedulers: Sequence[Any]) -> dict:
    """Copied state of the model (parameters and buffers), optimizers and LR schedulers."""
    return {
        "model": clone_tensors(model.state_dict()),
        "optimizers": [clone_tensors(optimizer.state_dict()) for optimizer in optimizers],
        "schedulers": [clone_tensors(scheduler.state_dict()) for scheduler in schedulers],
    }


def rewind(
    model: nn.Module,
    optimizers: Sequence[torch.optim.Optimizer],
    schedulers: Sequence[Any],
    snapshot: Mapping[str, Any],
    masks: Mapping[str, torch.Tensor],
) -> None:
    """Put model, optimizers and schedulers back to ``snapshot``, then zero the pruned entries.

    Everything is loaded from fresh copies, so the snapshot itself is never trained in place.
    """
    model.load_state_dict(clone_tensors(snapshot["model"]))
    for optimizer, state in zip(optimizers, snapshot["optimizers"]):
        optimizer.load_state_dict(clone_tensors(state))
    for scheduler, state in zip(schedulers, snapshot["schedulers"]):
        scheduler.load_state_dict(clone_tensors(state))
    apply_masks(model, masks)


def slice_snapshot(
    snapshot: Mapping[str, Any],
    kept: Mapping[str, torch.Tensor],
    shapes: Mapping[str, torch.Size],
    optimizer_names: Sequence[Sequence[str]],
) -> dict[str, Any]:
    """A snapshot made for the model before a neuron removal, cut down to the model after it.

    Rewinding a model whose neurons were physically removed needs the snapshot in the new shapes:
    each changed parameter or buffer keeps its surviving entries, and so does every optimizer-state
    tensor of a changed parameter (momentum, Adam moments). Scheduler states do not change.

    Args:
        snapshot: ``{"model", "optimizers", "schedulers"}`` from :func:`training_snapshot`.
        kept: State-dict name to the surviving entries (:class:`~lightning_prune.survivors.Survivors`),
            as returned by :func:`~lightning_prune.surgery.remove_units`.
        shapes: State-dict name to shape, of the model after the removal.
        optimizer_names: For each optimizer, the parameter name of each entry of its state-dict
            indexing (parameters in param-group order), taken before the removal.

    Returns:
        A new snapshot (the given one is not modified).

    Raises:
        ValueError: If a sliced tensor does not come out in the shape ``shapes`` gives.
    """
    old_shapes = {name: value.shape for name, value in snapshot["model"].items()}

    def cut(name: str, value: Any) -> Any:
        if name not in kept or not (torch.is_tensor(value) and value.shape == old_shapes[name]):
            return clone_tensors(value)
        sliced = kept[name].take(value)
        if sliced.shape != shapes[name]:
            raise ValueError(f"{name!r} sliced to {tuple(sliced.shape)}, but the model's is {tuple(shapes[name])}.")
        return sliced

    model = {name: cut(name, value) for name, value in snapshot["model"].items()}
    optimizers = []
    for state_dict, names in zip(snapshot["optimizers"], optimizer_names):
        state = {index: {key: cut(names[index], value) for key, value in values.items()}
                 for index, values in state_dict["state"].items()}
        optimizers.append({**clone_tensors(state_dict), "state": state})
    return {**snapshot, "model": model, "optimizers": optimizers, "schedulers": clone_tensors(snapshot["schedulers"])}


def slice_to_model(snapshot: Mapping[str, Any], kept: Mapping[str, torch.Tensor], model: nn.Module,
                   optimizer_names: Sequence[Sequence[str]]) -> dict[str, Any]:
    """:func:`slice_snapshot` to the shapes ``model`` has now (after a removal)."""
    return slice_snapshot(snapshot, kept, {name: value.shape for name, value in model.state_dict().items()}, optimizer_names)


def optimizer_names(model: nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> list[list[str]]:
    """For each optimizer, the parameter name of each entry of its state-dict indexing (param-group order)."""
    names = {id(param): name for name, param in model.named_parameters()}
    return [[names.get(id(p), "") for group in optimizer.param_groups for p in group["params"]] for optimizer in optimizers]


def reinitialized_state(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """The state dict of a copy of ``model`` whose layers were re-initialised from ``seed``.

    Every module with ``reset_parameters`` draws new values (PyTorch's default initialisers), under
    a forked RNG so the caller's random state is untouched.
    """
    fresh = detached_copy(model)
    _reinitialise(fresh, seed)
    return clone_tensors(fresh.state_dict())


def reinit_control_state(model: nn.Module, seed: int, original: Mapping[str, torch.Tensor],
                         weights: Sequence[str]) -> dict[str, torch.Tensor]:
    """The re-initialisation control's fresh state: :func:`reinitialized_state` from ``seed``, never ``original``.

    If the global seed drew the very same initialisation (``seed_everything(seed)`` right before the
    model was built), every named weight would equal ``original`` and the control would silently be
    the ticket; then another seed is drawn.
    """
    fresh = reinitialized_state(model, seed)
    if all(torch.equal(fresh[name], original[name]) for name in weights):
        fresh = reinitialized_state(model, seed + 2**31)
    return fresh


def _reinitialise(model: nn.Module, seed: int) -> None:
    """``reset_parameters`` of every module that has one, seeded, under forked CPU and CUDA RNGs."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        for module in model.modules():
            if callable(getattr(module, "reset_parameters", None)):
                module.reset_parameters()


def signed_constant_state(state: Mapping[str, torch.Tensor], names: Sequence[str]) -> dict[str, torch.Tensor]:
    """Copy of ``state`` whose named tensors keep only their signs: ``sign(w) * std(w)`` per tensor.

    Zhou et al. (2019)'s "signed constant" initialisation: every weight of a layer gets the same
    magnitude, the standard deviation of the layer's values, and keeps its own sign. Other entries
    (biases, buffers) are copied unchanged.

    Raises:
        KeyError: If a name is not in ``state``.
    """
    result = clone_tensors(dict(state))
    for name in names:
        value = result[name]
        spread = value.float().std() if value.numel() > 1 else value.float().abs().flatten()[0]  # one weight: its own size
        result[name] = torch.sign(value) * spread.to(value.dtype)
    return result


def random_sign_state(state: Mapping[str, torch.Tensor], names: Sequence[str], seed: int) -> dict[str, torch.Tensor]:
    """Copy of ``state`` whose named tensors keep their magnitudes with random signs (Zhou et al. 2019).

    Each entry is ``|w|`` times an independent fair sign drawn from ``seed``; other entries are
    copied unchanged.

    Raises:
        KeyError: If a name is not in ``state``.
    """
    generator = torch.Generator().manual_seed(seed)
    result = clone_tensors(dict(state))
    for name in names:
        value = result[name]
        signs = torch.randint(0, 2, value.shape, generator=generator).to(value.device, value.dtype) * 2 - 1
        result[name] = value.abs() * signs
    return result


def shuffle_within_groups(
    before: Mapping[str, torch.Tensor], after: Mapping[str, torch.Tensor], generator: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random masks with the same per-group counts as ``after``, pruning only units kept in ``before``.

    The random-mask control: as many units pruned in each layer as the criterion chose, but which
    ones is random (masks still only shrink).
    """
    result = {}
    for name, mask in after.items():
        alive = before[name].flatten().nonzero().flatten()
        keep_count = int(mask.sum())
        chosen = alive[torch.randperm(alive.numel(), generator=generator)[:keep_count]]
        shuffled = torch.zeros(mask.numel(), dtype=torch.bool)
        shuffled[chosen] = True
        result[name] = shuffled.reshape(mask.shape).to(mask.device)
    return result


def scratch_epochs(epochs: int, dense_macs: float, pruned_macs: float) -> dict[str, int]:
    """Epoch budgets for training a pruned architecture from scratch (Liu et al. 2019).

    Scratch-E: the same epochs. Scratch-B: the same compute, ``epochs * dense / pruned`` MACs,
    rounded up.

    Raises:
        ValueError: If an argument is not positive.
    """
    if epochs < 1 or dense_macs <= 0 or pruned_macs <= 0:
        raise ValueError(
            f"`epochs` must be >= 1 and MACs > 0, got epochs={epochs}, dense_macs={dense_macs}, pruned_macs={pruned_macs}."
        )
    return {"scratch_e": epochs, "scratch_b": math.ceil(epochs * dense_macs / pruned_macs - 1e-9)}


def ticket_model(model: nn.Module, plan: Mapping[str, Any]) -> nn.Module:
    """The pruned architecture of ``plan`` keeping ``model``'s values for the surviving units.

    Given the dense model *at its initialisation*, this is the structured winning ticket that Liu
    et al. (2019, Sec. 6) compare with :func:`scratch_model`'s random initialisation.

    Args:
        model: The dense model holding the weights to keep (it is shrunk in place and returned).
        plan: A removal plan (``Pruning.state_dict()["plan"]`` or a checkpoint's
            ``"lightning_prune_plan"``).

    Raises:
        ValueError: If the plan does not fit the model.
    """
    from lightning_prune.checkpoint import apply_plan

    apply_plan(model, plan)
    return model


def scratch_model(model: nn.Module, plan: Mapping[str, Any], seed: int) -> nn.Module:
    """The pruned architecture of ``plan``, freshly initialised: Liu et al.'s scratch baseline.

    Args:
        model: A newly built dense model (it is shrunk in place and returned).
        plan: A removal plan (``Pruning.state_dict()["plan"]`` or a checkpoint's
            ``"lightning_prune_plan"``).
        seed: Seed of the fresh initialisation (PyTorch's default initialisers, compact shapes).
    """
    from lightning_prune.checkpoint import apply_plan

    apply_plan(model, plan)
    _reinitialise(model, seed)
    return model


def control_state(control: Any, model: nn.Module, state: Mapping[str, torch.Tensor],
                  weights: Sequence[str]) -> Mapping[str, torch.Tensor]:
    """The values a lottery control rewinds to instead of ``state`` (the rewind point's model state).

    ``Reinit(seed)``: a fresh initialisation (:func:`reinit_control_state`); ``SignedConstant()``:
    the prunable ``weights`` reduced to their signs (:func:`signed_constant_state`); any other
    control (``RandomMask`` changes the masks, not the values) or ``None``: ``state`` itself.
    """
    if isinstance(control, Reinit):
        return reinit_control_state(model, control.seed, state, weights)
    if isinstance(control, SignedConstant):
        return signed_constant_state(state, weights)
    return state
