"""Checks of a fit's setup against a pruning configuration, as plain functions of plain values.

:class:`~lightning_prune.Pruning` calls them from its hooks with what the ``Trainer`` says; each
raises a ``ValueError`` naming the setting and what to change, before anything is pruned.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from lightning_prune.config import DropGuard, Ranking
from lightning_prune.ranking import min_units, prunable_capacity
from lightning_prune.schedules import Timeline

UNSUPPORTED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


def check_strategy(strategy: str) -> None:
    """Raises: ValueError: For a strategy that shards parameters (they cannot be masked or removed in place)."""
    if strategy in UNSUPPORTED_STRATEGIES:
        raise ValueError(
            f"Pruning does not support the {strategy} strategy (sharded parameters cannot be masked or "
            f"removed in place); use a single device, 'ddp' or 'ddp_spawn'."
        )


def check_one_callback(count: int) -> None:
    """Raises: ValueError: If a Trainer has more than one ``Pruning`` callback."""
    if count > 1:
        raise ValueError(
            f"This Trainer has {count} Pruning callbacks; use one (their scores, masks and removals would act on "
            "the same layers). To prune some layers by weight and others by neuron, prune in two fits."
        )


def check_not_compiled(removes: bool, compiled: bool) -> None:
    """Raises: ValueError: If neurons are to be removed from a ``torch.compile``'d module."""
    if removes and compiled:
        raise ValueError(
            "Neuron removal reshapes the module, which a torch.compile'd module cannot follow. Fit the module "
            "uncompiled (compile the compact model afterwards), or keep the neurons masked with Neurons(remove=False)."
        )


def check_norm_coupled_removal(removes_norm_coupled: bool, world_size: int) -> None:
    """Raises: ValueError: If channels that feed a norm are to be removed at the prune step under DDP, where
    the wrapped module cannot be reshaped during the fit (the ranks would train the masked model)."""
    if removes_norm_coupled and world_size > 1:
        raise ValueError(
            f"`Neurons.norm_coupled='remove'` removes channels that feed a norm at the prune step; with {world_size} "
            "processes the model stays masked until the fit ends, and for these channels the masked model is another "
            "function. Fit on one device, or use norm_coupled='refuse'."
        )


def check_epochs(timeline: Timeline, max_epochs: int | None) -> None:
    """Raises: ValueError: If ``max_epochs`` ends the fit before the schedule's last cycle is fine-tuned."""
    if max_epochs is not None and 0 <= max_epochs < timeline.epochs_needed:
        raise ValueError(
            f"`max_epochs`={max_epochs} is too small for this pruning schedule: warmup_epochs="
            f"{timeline.warmup_epochs} + {timeline.num_cycles} cycles x finetune_epochs="
            f"{timeline.finetune_epochs} needs max_epochs >= {timeline.epochs_needed}."
        )


def check_steps(timeline: Timeline, max_steps: int, batches: int | float, accumulate: int) -> str | None:
    """Refuse a ``max_steps`` that ends the fit before the schedule (``-1``: no limit).

    Returns:
        A warning when ``max_steps`` is set but the train data has no length (an ``IterableDataset``:
        Lightning counts its batches as ``inf``), so the check cannot be made; else ``None``.

    Raises:
        ValueError: Naming ``max_steps``, the steps per epoch and the epochs the schedule needs.
    """
    if max_steps >= 0 and batches == float("inf"):
        return (f"`max_steps`={max_steps} cannot be checked against this pruning schedule: the train data has no "
                f"length (an IterableDataset), and the schedule needs {timeline.epochs_needed} epochs. If the fit "
                "stops before them, the history ends early; set `limit_train_batches` (an int) to count the steps.")
    if max_steps < 0 or not isinstance(batches, int) or batches < 1:
        return None
    per_epoch = max(1, math.ceil(batches / accumulate))
    needed = timeline.epochs_needed
    if max_steps < needed * per_epoch:  # the last cycle fine-tunes too
        raise ValueError(
            f"`max_steps`={max_steps} ends the fit before this pruning schedule: it needs {needed} epochs "
            f"(warmup_epochs={timeline.warmup_epochs} + {timeline.num_cycles} cycles x finetune_epochs="
            f"{timeline.finetune_epochs}) of {per_epoch} optimizer steps, so max_steps >= {needed * per_epoch}."
        )
    return None


def check_validation_every_epoch(guard: DropGuard | None, every_n_epochs: int | None) -> None:
    """Raises: ValueError: If a guard judges every cycle but validation does not run every epoch."""
    if guard is not None and every_n_epochs != 1:
        raise ValueError(
            f"`guard` judges every cycle on `{guard.monitor}`, so validation must run every epoch; got "
            f"check_val_every_n_epoch={every_n_epochs}."
        )


def check_resume_source(saved_states: Sequence[str], state_key: str, resume_epoch: int, timeline: Timeline) -> None:
    """Refuse a checkpoint whose pruning state a callback keyed ``state_key`` cannot continue.

    Args:
        saved_states: The checkpoint's ``Pruning`` state keys.
        state_key: This callback's state key.
        resume_epoch: The epoch the resumed fit starts with.
        timeline: This callback's timeline.

    Raises:
        ValueError: If the checkpoint holds another granularity's state, or none at all while it
            resumes after the first prune (no cycle would ever run).
    """
    if state_key in saved_states:
        return
    if saved_states:
        raise ValueError(
            f"The checkpoint's pruning state was written by {saved_states[0]}, this callback is {state_key}; "
            "resume with the same granularity (or start a new fit from the weights)."
        )
    if resume_epoch > timeline.warmup_epochs:
        raise ValueError(
            f"The checkpoint was written without a Pruning callback and resumes at epoch {resume_epoch}, after this "
            f"schedule's first prune (start of epoch warmup_epochs={timeline.warmup_epochs}), so no cycle would run. "
            "Load its weights into the module and start a new fit (trainer.fit(module) without ckpt_path), or raise "
            "warmup_epochs past the resume epoch."
        )


def unreachable_layers(keep: Mapping[str, torch.Tensor], ranking: Ranking, final_fraction_of) -> list[str]:
    """Check the unit target against ``min_keep`` before any training (params/MACs: at the prune).

    Args:
        keep: The dense keep-masks.
        ranking: The ranking, with its ``min_keep``.
        final_fraction_of: ``group -> its final fraction``.

    Returns:
        With a per-layer ranking, the groups whose target ``min_keep`` caps (a warning, not an error).

    Raises:
        ValueError: If a global ranking cannot remove the target while every group keeps ``min_keep``.
    """
    sizes = {key: mask.numel() for key, mask in keep.items()}
    if ranking.scope == "global":
        target = final_fraction_of(next(iter(sizes)))
        capacity = prunable_capacity(sizes, ranking.min_keep)
        if round(target * sum(sizes.values())) > capacity:
            raise ValueError(
                f"The schedule's `target`={target} is out of reach: with `min_keep`={ranking.min_keep} at most "
                f"{capacity / sum(sizes.values()):.4f} of the {sum(sizes.values())} units can be pruned."
            )
        return []
    return [key for key, size in sizes.items()
            if round(final_fraction_of(key) * size) > size - min_units(size, ranking.min_keep)]


def too_narrow_to_round(keep: Mapping[str, torch.Tensor], round_to: int | None) -> list[str]:
    """Groups no wider than ``round_to``: rounding keeps all of their units."""
    return [key for key, mask in keep.items() if round_to and mask.numel() <= round_to]


def setup_warnings(dense: Mapping[str, torch.Tensor], ranking: Ranking, round_to: int | None, final_fraction_of,
                   skipped: Mapping[str, str], counts_units: bool) -> list[str]:
    """What a user should hear before training: capped layers, widths too narrow to round, layers left unpruned.

    Raises:
        ValueError: From :func:`unreachable_layers`, for a global target out of reach.
    """
    messages = []
    capped = unreachable_layers(dense, ranking, final_fraction_of) if counts_units else []
    if capped:
        messages.append(f"layers {capped} keep `min_keep`={ranking.min_keep} of their units and stop short of their target.")
    narrow = too_narrow_to_round(dense, round_to)
    if narrow:
        messages.append(
            f"`Neurons.round_to`={round_to} is not below the width of {narrow[:5]}{'...' if len(narrow) > 5 else ''}: "
            "their kept units round up to all of them, so they are never pruned. Use a smaller round_to."
        )
    messages += [f"the neurons of layer {name!r} are left unpruned: {reason}." for name, reason in skipped.items()]
    return messages
