"""What a ``Pruning`` callback remembers between epochs and across a resume, and the check that a
resumed run is configured as the run that wrote the checkpoint.

The state is one plain dataclass (tensors, numbers, lists and dicts only), so it goes into a
Lightning checkpoint as a dict and comes back unchanged. The configuration fingerprint stores only
the settings that differ from their defaults: a setting added to the library later is, in an older
checkpoint, simply at its default, so old checkpoints keep resuming.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch

from lightning_prune.lottery import clone_tensors


@dataclasses.dataclass
class PruningState:
    """The decisions a fit has taken so far.

    Attributes:
        cycle: Pruning cycles done.
        keep: Unit keep-masks (group or layer key to a ``bool`` tensor), in dense coordinates.
        present: Neurons: the units still physically in the model, in dense coordinates.
        plan: ``{"inputs", "steps"}``: the removals done, replayable on the dense model.
        dense: ``{"params", "macs"}`` of the model before pruning.
        baseline: The dense model's monitored metric (with ``max_drop``).
        metrics: Epoch to the monitored metric after that epoch's validation.
        pending: ``{"cycle", "epoch"}``: the cycle awaiting judgement after ``epoch``.
        stopped: A cycle was rolled back: no more pruning.
        history: One row per cycle (epoch, sparsity, parameters, MACs, metric, accepted).
        snapshot: The last accepted ``{"model", "optimizers", "keep", "present"}`` (with ``max_drop``).
        rewind_point: ``{"model", "optimizers", "schedulers"}`` to rewind to after each prune.
    """

    cycle: int = 0
    keep: dict[str, torch.Tensor] | None = None
    present: dict[str, torch.Tensor] | None = None
    plan: dict[str, Any] | None = None
    dense: dict[str, float] | None = None
    baseline: float | None = None
    metrics: dict[int, float] = dataclasses.field(default_factory=dict)
    pending: dict[str, int] | None = None
    stopped: bool = False
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    snapshot: dict[str, Any] | None = None
    rewind_point: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        """A plain dict with copies of every tensor (what goes into a checkpoint)."""
        return clone_tensors({field.name: getattr(self, field.name) for field in dataclasses.fields(self)})

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> PruningState:
        """The state saved by :meth:`to_dict`; keys this version does not know are an error.

        Raises:
            ValueError: If ``values`` has a key that is not a field.
        """
        names = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"The checkpoint's Pruning state has keys {unknown} this version does not know; expected {sorted(names)}.")
        return cls(**dict(values))


def non_default(config: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of ``config`` that differ from ``defaults`` (what a checkpoint stores)."""
    return {key: value for key, value in config.items() if key not in defaults or defaults[key] != value}


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """``"key: checkpoint X, now Y"`` for every setting where a checkpoint (stored with
    :func:`non_default`) and the current configuration differ; keys missing on either side are at
    their defaults."""
    differences = []
    for key in sorted(set(saved) | set(current)):
        was, now = saved.get(key, defaults.get(key)), current.get(key, defaults.get(key))
        if was != now:
            differences.append(f"{key}: checkpoint {was!r}, now {now!r}")
    return differences
