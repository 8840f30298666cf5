"""What a ``Pruning`` callback remembers between epochs and across a resume, and the check that a
resumed run is configured as the run that wrote the checkpoint.

The state is one plain dataclass (tensors, numbers, lists and dicts only), so it goes into a
Lightning checkpoint as a dict and comes back unchanged. The configuration fingerprint stores only
the settings that differ from their defaults: a setting added to the library later is, in an older
checkpoint, simply at its default, so old checkpoints keep resuming.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from lightning_prune.latency import LatencyTable
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
        teacher: The dense model's state, taken before the first prune (with ``distill``).
        latency: With a latency budget, ``{"table"}``: the :class:`~lightning_prune.latency.LatencyTable`
            measured on the dense model (as plain data), and ``"final"``: the compact model's
            measured seconds at the end of the fit.
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
    teacher: dict[str, Any] | None = None
    latency: dict[str, Any] | None = None

    def reference(self) -> dict[str, Any]:
        """What budgets other than units count against: the dense ``params`` and ``macs``, and the ``latency`` table."""
        table = LatencyTable.from_state(self.latency["table"]) if self.latency is not None else None
        return {**(self.dense or {}), **({"latency": table} if table is not None else {})}

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
    """The entries of ``config`` that differ from ``defaults`` (what a checkpoint stores); a key the
    defaults lack counts as ``None`` there, as in :func:`config_differences`."""
    return {key: value for key, value in config.items()
            if (key not in defaults and value is not None) or (key in defaults and defaults[key] != value)}


def config_differences(saved: Mapping[str, Any], current: Mapping[str, Any], defaults: Mapping[str, Any]) -> list[str]:
    """``"key: checkpoint X, now Y"`` for every setting where a checkpoint (stored with
    :func:`non_default`) and the current configuration differ.

    A key missing on either side is at its default: the run's (``defaults``), or, for a field of a
    configuration object, its class's ``__init__`` default (the object named by ``<prefix>.type``).
    """
    was_all, now_all = with_field_defaults({**defaults, **saved}), with_field_defaults({**defaults, **current})
    differences = []
    for key in sorted(set(was_all) | set(now_all)):
        was, now = was_all.get(key), now_all.get(key)
        if was != now:
            differences.append(f"{key}: checkpoint {was!r}, now {now!r}")
    return differences


def _configuration_classes() -> dict[str, type]:
    """Every configuration object's and criterion's class, by name (subclasses included)."""
    from lightning_prune.criteria import Criterion
    from lightning_prune.validation import Config

    found: dict[str, type] = {}
    stack: list[type] = [Config, Criterion]
    while stack:
        cls = stack.pop()
        found.setdefault(cls.__name__, cls)
        stack.extend(cls.__subclasses__())
    return found


def with_field_defaults(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``flat`` with each named object's missing fields at their ``__init__`` defaults (fingerprints
    leave them out, see :meth:`lightning_prune.validation.Config.fingerprint`)."""
    full = dict(flat)
    classes = _configuration_classes()
    for key, name in flat.items():
        if not (key == "type" or key.endswith(".type")) or name not in classes:
            continue
        prefix = key[: -len("type")]
        for parameter in inspect.signature(classes[name].__init__).parameters.values():
            default = parameter.default
            if parameter.name != "self" and default is not inspect.Parameter.empty and not callable(default):
                full.setdefault(prefix + parameter.name, default)
    return full


def check_same_config(saved: Any, current: Mapping[str, Any], defaults: Mapping[str, Any]) -> None:
    """Refuse to resume a run configured differently from the one that wrote the checkpoint.

    Raises:
        ValueError: If ``saved`` is not a configuration, or naming every setting that differs.
    """
    if not isinstance(saved, Mapping):
        raise ValueError("The checkpoint's Pruning state has no configuration; it was not written by this callback.")
    differences = config_differences(saved, current, defaults)
    if differences:
        raise ValueError(
            "The checkpoint's pruning run was configured differently; resume with the same arguments "
            "(or start a new fit from the weights). Differs: " + "; ".join(differences) + "."
        )


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level, keys joined with dots (``{"schedule": {"target": 0.9}}`` ->
    ``{"schedule.target": 0.9}``), so that a difference names the field."""
    flat: dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def take_snapshot(model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer],
                  keep: Mapping[str, torch.Tensor] | None, present: Mapping[str, torch.Tensor] | None) -> dict[str, Any]:
    """Copies of the model's state, the optimizers' per-parameter state and the masks: what a rollback restores."""
    return {
        "model": clone_tensors(model.state_dict()),
        "optimizers": [clone_tensors(optimizer.state_dict()["state"]) for optimizer in optimizers],
        "keep": clone_tensors(keep),
        "present": clone_tensors(present),
    }


def restore_snapshot(snapshot: Mapping[str, Any], model: torch.nn.Module, optimizers: Sequence[torch.optim.Optimizer]) -> None:
    """Put the model and the optimizers' per-parameter state back to a :func:`take_snapshot` (masks: the caller's)."""
    model.load_state_dict(snapshot["model"])
    for optimizer, saved in zip(optimizers, snapshot["optimizers"]):
        params = [p for group in optimizer.param_groups for p in group["params"]]
        optimizer.state.clear()
        for index, values in saved.items():
            optimizer.state[params[index]] = clone_tensors(values)


def history_row(cycle: int, epoch: int, stats: Mapping[str, float], dense: Mapping[str, float]) -> dict[str, Any]:
    """One cycle's history row: the pruner's summary with the kept fractions of the dense model's params and MACs."""
    return {"cycle": cycle, "epoch": epoch, **stats, "params_fraction": stats["params"] / dense["params"],
            "macs_fraction": stats["macs"] / dense["macs"] if dense["macs"] else 1.0, "metric": None, "accepted": None}


def cycle_line(row: Mapping[str, Any], granularity: str) -> str:
    """One line saying what a cycle did."""
    return (f"Pruning cycle {row['cycle']} at epoch {row['epoch']}: {granularity} sparsity {row['sparsity']:.4f}, "
            f"{int(row['params'])} parameters ({row['params_fraction']:.3f}), {row['macs']:.0f} MACs ({row['macs_fraction']:.3f})")


def summary_table(history: Sequence[Mapping[str, Any]]) -> str:
    """The per-cycle history as a text table."""
    header = f"{'cycle':>5} {'epoch':>5} {'sparsity':>9} {'params':>10} {'MACs':>12} {'metric':>8} {'accepted':>8}"
    lines = ["Pruning summary", header]
    for row in history:
        metric = "-" if row["metric"] is None else f"{row['metric']:.4f}"
        accepted = "-" if row["accepted"] is None else ("yes" if row["accepted"] else "ROLLBACK")
        lines.append(
            f"{row['cycle']:>5} {row['epoch']:>5} {row['sparsity']:>9.4f} {int(row['params']):>10} "
            f"{row['macs']:>12.0f} {metric:>8} {accepted:>8}"
        )
    return "\n".join(lines)
