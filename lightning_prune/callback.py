"""The ``Pruning`` callback: routes Lightning's hooks to the pure core.

Timeline of a fit (epochs are 0-based)::

    epochs [0, warmup)            train the dense model
    start of epoch warmup + c*F   cycle c: score, rank, mask (F = finetune_epochs)
    epochs of cycle c             fine-tune with masks enforced after every optimizer step
    start of the next epoch       judge cycle c on the monitored metric: accept, or roll back and stop

Neurons are masked when pruned and physically removed (``remove=True``, the default for neurons)
once their cycle is accepted: right away without ``max_drop``, after the judgement with it, so a
rollback only ever restores weights of the current architecture. With several processes (DDP) the
wrapped module cannot be reshaped, so units stay masked during the fit.

Every decision is taken at the *start* of an epoch (or at the end of training for the last cycle),
after any checkpoint of the previous epoch and before any of this one, so a run resumed from any
checkpoint takes the same decisions as the uninterrupted run.
"""

from __future__ import annotations

import hashlib
import itertools
import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import nn

from lightning_prune.checkpoint import PLAN_KEY, input_spec, restore_pruned
from lightning_prune.counting import count_parameters
from lightning_prune.criteria import GRANULARITIES, Criterion, batch_input, cross_entropy_loss, make_criterion
from lightning_prune.lottery import (
    clone_tensors,
    reinit_control_state,
    rewind,
    shuffle_within_groups,
    signed_constant_state,
    slice_snapshot,
    training_snapshot,
)
from lightning_prune.masks import MaskEnforcer, apply_masks, enforce_masks
from lightning_prune.pruner import BUDGETS, Keep, Pruner
from lightning_prune.ranking import NORMALIZERS, SCOPES, lopsided, min_units, prunable_capacity
from lightning_prune.schedules import SCHEDULES, Timeline, layer_exponents, layer_fraction, sparsity_schedule
from lightning_prune.state import PruningState, config_differences, non_default

MODES = ("max", "min")
CONTROLS = ("reinit", "random_mask", "signed_constant")
UNSUPPORTED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


def _default_config() -> dict[str, Any]:
    """The configuration of ``Pruning()`` with every argument at its default (what checkpoints omit)."""
    return Pruning()._config()


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")


def _as_float(value: Any) -> float | None:
    """A real number (Python, NumPy or a one-element tensor) as a ``float``; ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if torch.is_tensor(value) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        return float(value)
    return None


def _check_fraction(name: str, value: Any, low_open: bool = True) -> float:
    """The fraction as a plain ``float`` (so it checkpoints as one), or a ``ValueError`` naming it."""
    number = _as_float(value)
    if number is None or not (0.0 < number < 1.0 if low_open else 0.0 <= number < 1.0):
        raise ValueError(f"`{name}` must be a number in {'(0, 1)' if low_open else '[0, 1)'}, got {value!r}.")
    return number


def _check_ranks_agree(trainer: L.Trainer, keep: Keep) -> None:
    """Fail loudly if the ranks decided different masks (a digest of every mask, gathered from all ranks).

    Called on each rank's own decision, before rank 0's is broadcast: the scores come from the same
    weights and rank-synchronised statistics, so a difference means something was not synchronised.

    Raises:
        RuntimeError: Naming the ranks whose masks differ from rank 0's.
    """
    if trainer.world_size == 1:
        return
    digest = hashlib.sha256(b"".join(keep[key].cpu().numpy().tobytes() for key in sorted(keep))).digest()
    local = torch.tensor(list(digest[:8]), dtype=torch.int64, device=trainer.strategy.root_device)
    gathered = trainer.strategy.all_gather(local).reshape(trainer.world_size, -1)
    differing = [rank for rank in range(trainer.world_size) if not torch.equal(gathered[rank], gathered[0])]
    if differing:
        raise RuntimeError(f"Pruning masks differ between rank 0 and ranks {differing}; refusing to continue.")


def _spawned(trainer: L.Trainer) -> bool:
    """Whether the fit runs in spawned workers whose weights return to a main process of fixed shape."""
    return getattr(trainer.strategy, "_start_method", "popen") != "popen"


class Pruning(Callback):
    """Iterative pruning inside ``Trainer.fit``: train, score, rank, prune, fine-tune, repeat.

    Args:
        criterion: Importance of each unit: ``"l1"``, ``"l2"``, ``"apoz"`` (neurons only),
            ``"taylor"``, ``"random"``, or a :class:`~lightning_prune.criteria.Criterion`.
        granularity: ``"weight"`` (unstructured) or ``"neuron"`` (whole output units / filters,
            with their coupled bias, BatchNorm entries and consumer inputs).
        remove: Physically remove pruned neurons (default ``True`` for ``"neuron"``); ``False``
            keeps them as masked zeros. Not available for ``"weight"``.
        scope: ``"global"`` (one ranking across layers) or ``"layer"`` (same fraction per layer).
        normalize: ``scope="global"`` only: rescale each layer's (group's) scores before the
            ranking, by the mean, max or L2 norm of its kept units' scores (``"mean"``, ``"max"``,
            ``"l2"``), so that layers whose raw scores are on a smaller scale are not emptied
            first. ``"mean"`` is size-neutral; the L2 norm grows with the square root of the
            number of units, so ``"l2"`` (Molchanov et al. 2017's choice for Taylor scores of
            neurons) prunes large layers harder, strongly so for weights. ``None``: raw scores.
            ``"auto"`` (the default): ``"mean"`` for a global neuron ranking (raw neuron scores
            emptied single layers of torchvision/timm CNNs: 9 of 512 channels kept in resnet18's
            ``layer4.0.conv1``), ``None`` otherwise.
        target: Final fraction removed, in (0, 1): of prunable units (weights or neurons), or of
            the dense model's parameters or MACs (see ``budget``).
        budget: What ``target`` and the schedule count: ``"units"``, ``"params"`` or ``"macs"``.
        round_to: Neurons only: round each layer's kept units up to a multiple of this (e.g. 8).
        rewind: ``None`` (fine-tune), ``"init"`` (after each prune, rewind every parameter, buffer,
            the optimizer state and the LR schedulers to their values at the start of training:
            lottery tickets) or an epoch ``k <= warmup_epochs`` (late rewinding, to the start of
            epoch ``k``). With removed neurons the snapshot is cut to the survivors at each removal.
        control: The lottery-ticket controls: ``"reinit"`` (rewind to a fresh random
            initialisation instead of the original one), ``"random_mask"`` (prune as many units
            per layer as the criterion chose, but random ones) or ``"signed_constant"`` (rewind
            the prunable layers' weights to ``sign(w) * std`` of their rewind-point values: only
            the signs of the original initialisation survive, Zhou et al. 2019).
        layer_targets: Per-layer final targets, ``{pattern: fraction}`` (``scope="layer"``,
            ``budget="units"``): layers (neuron groups) whose name matches a glob pattern end at
            their own fraction, following the same schedule: after every cycle their kept fraction
            is the others' kept fraction to the power ``log(1 - t_layer) / log(1 - target)``. With
            ``schedule="geometric"``, ``per_cycle=0.2``, ``target=1 - 0.8**n`` and
            ``{"*classifier": 1 - 0.9**n}`` the matched layer loses 10 % of its remaining weights per
            cycle while the others lose 20 % (Frankle & Carbin 2019's output layer).
        schedule: ``"oneshot"``, ``"geometric"`` or ``"cubic"``.
        per_cycle: Fraction of the remaining units pruned per cycle (``"geometric"``; default 0.2).
        cycles: Number of cycles (``"cubic"``; default 10).
        warmup_epochs: Epochs of dense training before the first prune.
        finetune_epochs: Epochs of fine-tuning after each prune (>= 1).
        monitor: Logged validation metric recorded after each cycle (e.g. ``"val_acc"``).
        mode: ``"max"`` if a higher ``monitor`` is better, ``"min"`` if lower is.
        max_drop: Largest accepted worsening of ``monitor`` against the dense model. A cycle that
            worsens it more is rolled back and pruning stops. Needs ``monitor`` and a warm-up.
        layers: Glob patterns of module names to prune (default: every ``Linear``/``Conv``).
        ignore_layers: Glob patterns of module names never to prune.
        min_keep: Fraction of each layer's units always kept (at least one unit).
        calibration_batches: Training batches seen by ``"apoz"``/``"taylor"`` per cycle.
        calibration_loss: ``loss(pl_module, batch) -> Tensor`` for ``"taylor"`` (default:
            cross-entropy of ``pl_module(batch[0])`` against ``batch[1]``).
        seed: Seed of the ``"random"`` criterion.
        verbose: Print one line per cycle and a summary table (rank zero).

    Raises:
        ValueError: At construction, for any invalid argument (naming it, its value and what is
            allowed); at ``setup``, when ``max_epochs`` is too small for the schedule or the
            strategy shards parameters; at the start of training, when no layer can be pruned, a
            ``layers``/``layer_targets`` pattern matches nothing, a global ``target`` is out of
            reach under ``min_keep``, or a checkpoint's state does not fit; during the fit, when
            ``monitor`` is never logged or a params/MACs budget is out of reach.
        RuntimeError: Under DDP, when the ranks decide different masks.
    """

    def __init__(
        self,
        criterion: str | Criterion = "l1",
        granularity: str = "weight",
        scope: str = "global",
        target: float = 0.5,
        schedule: str = "oneshot",
        per_cycle: float | None = None,
        cycles: int | None = None,
        warmup_epochs: int = 0,
        finetune_epochs: int = 1,
        monitor: str | None = None,
        mode: str = "max",
        max_drop: float | None = None,
        layers: Sequence[str] | None = None,
        ignore_layers: Sequence[str] | None = None,
        min_keep: float = 0.01,
        calibration_batches: int = 16,
        calibration_loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
        seed: int = 0,
        verbose: bool = True,
        remove: bool | None = None,
        budget: str = "units",
        round_to: int | None = None,
        rewind: str | int | None = None,
        control: str | None = None,
        layer_targets: Mapping[str, float] | None = None,
        normalize: str | None = "auto",
    ) -> None:
        if granularity not in GRANULARITIES:
            raise ValueError(f"`granularity` must be one of {GRANULARITIES}, got {granularity!r}.")
        if remove not in (None, True, False):
            raise ValueError(f"`remove` must be True, False or None, got {remove!r}.")
        if remove and granularity == "weight":
            raise ValueError("`remove`=True needs granularity='neuron': single weights cannot be removed from a dense layer.")
        self.criterion = make_criterion(criterion, seed)
        if granularity not in getattr(self.criterion, "granularities", GRANULARITIES):
            raise ValueError(
                f"`criterion`={self.criterion.name!r} scores {self.criterion.granularities} only, got "
                f"granularity={granularity!r}."
            )
        if budget not in BUDGETS:
            raise ValueError(f"`budget` must be one of {BUDGETS}, got {budget!r}.")
        if round_to is not None:
            _check_int("round_to", round_to, 1)
            if granularity != "neuron":
                raise ValueError(f"`round_to`={round_to!r} rounds neuron counts; it needs granularity='neuron'.")
        if rewind is not None and rewind != "init" and (isinstance(rewind, bool) or not isinstance(rewind, int)
                                                        or not 0 <= rewind <= warmup_epochs):
            raise ValueError(
                f"`rewind` must be None, 'init' or an epoch in [0, warmup_epochs={warmup_epochs}], got {rewind!r}."
            )
        if control is not None and control not in CONTROLS:
            raise ValueError(f"`control` must be one of {CONTROLS} or None, got {control!r}.")
        if control in ("reinit", "signed_constant") and rewind is None:
            raise ValueError(
                f"`control`={control!r} changes the values rewound to; it needs `rewind`='init' or an epoch, got rewind=None."
            )
        if scope not in SCOPES:
            raise ValueError(f"`scope` must be one of {SCOPES}, got {scope!r}.")
        if normalize == "auto":  # balanced by default where raw scores are known to empty layers (issue 13)
            normalize = "mean" if granularity == "neuron" and scope == "global" else None
        if normalize is not None:
            if normalize not in NORMALIZERS:
                raise ValueError(f"`normalize` must be one of {NORMALIZERS}, 'auto' or None, got {normalize!r}.")
            if scope != "global":
                raise ValueError(
                    f"`normalize`={normalize!r} rescales each layer's scores for one global ranking; with "
                    f"scope={scope!r} every layer is ranked on its own and it would change nothing. Use "
                    "scope='global' or normalize=None."
                )
        target = _check_fraction("target", target)
        if layer_targets is not None:
            if not isinstance(layer_targets, Mapping) or not all(isinstance(k, str) for k in layer_targets):
                raise ValueError(f"`layer_targets` must map module-name patterns to fractions, got {layer_targets!r}.")
            for pattern, value in layer_targets.items():
                _check_fraction(f"layer_targets[{pattern!r}]", value)
            if scope != "layer" or budget != "units":
                raise ValueError(
                    f"`layer_targets` sets each layer's own fraction of units; it needs scope='layer' and "
                    f"budget='units', got scope={scope!r}, budget={budget!r}."
                )
        if schedule not in SCHEDULES:
            raise ValueError(f"`schedule` must be one of {SCHEDULES}, got {schedule!r}.")
        if per_cycle is not None and schedule != "geometric":
            raise ValueError(f"`per_cycle`={per_cycle!r} applies to schedule='geometric' only, got schedule={schedule!r}.")
        if cycles is not None and schedule != "cubic":
            raise ValueError(f"`cycles`={cycles!r} applies to schedule='cubic' only, got schedule={schedule!r}.")
        if schedule == "geometric":
            per_cycle = 0.2 if per_cycle is None else per_cycle
            per_cycle = _check_fraction("per_cycle", per_cycle)
        if schedule == "cubic":
            cycles = 10 if cycles is None else cycles
            _check_int("cycles", cycles, 1)
        _check_int("warmup_epochs", warmup_epochs, 0)
        _check_int("finetune_epochs", finetune_epochs, 1)
        if monitor is not None and not (isinstance(monitor, str) and monitor):
            raise ValueError(f"`monitor` must be the name of a logged metric or None, got {monitor!r}.")
        if mode not in MODES:
            raise ValueError(f"`mode` must be one of {MODES}, got {mode!r}.")
        if max_drop is not None:
            if _as_float(max_drop) is None or not math.isfinite(_as_float(max_drop)) or _as_float(max_drop) < 0:
                raise ValueError(f"`max_drop` must be a finite number >= 0 or None, got {max_drop!r}.")
            max_drop = _as_float(max_drop)
            if monitor is None:
                raise ValueError(f"`max_drop`={max_drop!r} needs `monitor`, the metric it applies to; got monitor=None.")
            if warmup_epochs < 1:
                raise ValueError(
                    f"`max_drop` compares against the dense model's `{monitor}`, measured after warm-up; "
                    f"`warmup_epochs` must be >= 1, got {warmup_epochs!r}."
                )
        for name, patterns in (("layers", layers), ("ignore_layers", ignore_layers)):
            if patterns is not None and (isinstance(patterns, str) or not all(isinstance(p, str) for p in patterns)):
                raise ValueError(f"`{name}` must be a list of module-name patterns or None, got {patterns!r}.")
        min_keep = _check_fraction("min_keep", min_keep, low_open=False)
        _check_int("calibration_batches", calibration_batches, 1)
        if calibration_loss is not None and not callable(calibration_loss):
            raise ValueError(f"`calibration_loss` must be callable as loss(pl_module, batch) or None, got {calibration_loss!r}.")
        _check_int("seed", seed, 0)
        if seed >= 2**32:  # seeds torch.Generator as seed * 1_000_003 + cycle, which must stay below 2**64
            raise ValueError(f"`seed` must be an integer in [0, 2**32), got {seed!r}.")
        if not isinstance(verbose, bool):
            raise ValueError(f"`verbose` must be True or False, got {verbose!r}.")

        self.granularity, self.scope, self.target, self.schedule = granularity, scope, target, schedule
        self.monitor, self.mode, self.max_drop = monitor, mode, max_drop
        self.layers = list(layers) if layers is not None else None
        self.ignore_layers = list(ignore_layers) if ignore_layers is not None else None
        self.min_keep, self.calibration_batches, self.verbose = min_keep, calibration_batches, verbose
        self.remove = granularity == "neuron" if remove is None else remove
        self.budget, self.round_to, self.normalize = budget, round_to, normalize
        self.rewind, self.control, self.seed = rewind, control, seed
        self.layer_targets = dict(layer_targets) if layer_targets is not None else None
        self._exponents: dict[str, float] = {}  # group -> log(1 - its target) / log(1 - target)
        self._commit_during_fit = False
        self.calibration_loss = calibration_loss or cross_entropy_loss
        self.fractions = sparsity_schedule(schedule, target, per_cycle, cycles)
        self.timeline = Timeline(warmup_epochs, finetune_epochs, len(self.fractions))
        self._timeline = self.timeline  # the one this fit follows (one prune at epoch 0 under fast_dev_run)
        self.pruner: Pruner | None = None
        self._enforcer: MaskEnforcer | None = None
        self._masks: dict[str, torch.Tensor] = {}
        self._state = PruningState()
        self._restored: PruningState | None = None

    # ----------------------------------------------------------------------------- state
    def _config(self) -> dict[str, Any]:
        """Every argument that shapes the decisions: a run resumes only with the same ones."""
        return {
            "criterion": self.criterion.name,
            "granularity": self.granularity,
            "warmup_epochs": self.timeline.warmup_epochs,
            "finetune_epochs": self.timeline.finetune_epochs,
            "min_keep": self.min_keep,
            "layers": self.layers,
            "ignore_layers": self.ignore_layers,
            "monitor": self.monitor,
            "mode": self.mode,
            "max_drop": self.max_drop,
            "seed": self.seed,
            "scope": self.scope,
            "target": self.target,
            "schedule": self.schedule,
            "fractions": list(self.fractions),
            "remove": self.remove,
            "budget": self.budget,
            "round_to": self.round_to,
            "rewind": self.rewind,
            "control": self.control,
            "layer_targets": self.layer_targets,
            "normalize": self.normalize,
        }

    @property
    def state_key(self) -> str:
        # Granularity only: a changed target or schedule must reach `load_state_dict` and fail there,
        # by name, instead of Lightning dropping the state as another callback's (a silent restart).
        return self._generate_state_key(granularity=self.granularity)

    def state_dict(self) -> dict[str, Any]:
        return {**self._state.to_dict(), "config": non_default(self._config(), _default_config())}

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        """Refuse a checkpoint whose pruning state this callback cannot continue, naming why.

        Raises:
            ValueError: If the checkpoint holds another granularity's ``Pruning`` state, or none at all
                while it resumes after this schedule's first prune (no cycle would ever run).
        """
        states = [key for key in checkpoint.get("callbacks", {}) if key.startswith(type(self).__qualname__ + "{")]
        if self.state_key in states:
            return
        if states:
            raise ValueError(
                f"The checkpoint's pruning state was written by {states[0]}, this callback is {self.state_key}; "
                "resume with the same granularity (or start a new fit from the weights)."
            )
        epoch = checkpoint.get("epoch", 0) + 1  # the epoch the resumed fit starts with
        if epoch > self.timeline.warmup_epochs:
            raise ValueError(
                f"The checkpoint was written without a Pruning callback and resumes at epoch {epoch}, after this "
                f"schedule's first prune (start of epoch warmup_epochs={self.timeline.warmup_epochs}), so no cycle "
                "would run. Load its weights into the module and start a new fit (trainer.fit(module) without "
                "ckpt_path), or raise warmup_epochs past the resume epoch."
            )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the checkpoint's state, if it was made with this configuration.

        Raises:
            ValueError: Naming every setting that differs between the checkpoint and this callback.
        """
        state_dict = dict(state_dict)
        saved = state_dict.pop("config", None)
        if not isinstance(saved, dict):
            raise ValueError("The checkpoint's Pruning state has no configuration; it was not written by this callback.")
        differences = config_differences(saved, self._config(), _default_config())
        if differences:
            raise ValueError(
                "The checkpoint's pruning run was configured differently; resume with the same arguments "
                "(or start a new fit from the weights). Differs: " + "; ".join(differences) + "."
            )
        self._restored = PruningState.from_dict(state_dict)

    @property
    def history(self) -> list[dict[str, Any]]:
        """One row per cycle: epoch, sparsity, kept parameters and MACs, metric, accepted."""
        return self._state.history

    @property
    def dense(self) -> dict[str, float] | None:
        """``{"params", "macs"}`` of the model before pruning (set when training starts)."""
        return dict(self._state.dense) if self._state.dense is not None else None

    @property
    def keep(self) -> Keep | None:
        """Current unit keep-masks."""
        return self._state.keep

    @property
    def plan(self) -> dict[str, Any] | None:
        """The removals done so far, ``{"inputs", "steps"}`` (a copy): what ``scratch_model``,
        ``ticket_model``, ``save_compact`` and checkpoints replay on a freshly built dense model."""
        return clone_tensors(self._state.plan)

    # ----------------------------------------------------------------------------- hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.remove and not getattr(pl_module, "restores_pruned_architecture", False):
            self._install_restore(pl_module)  # any stage may load a checkpoint (test(ckpt_path="best"))
        if stage != "fit":
            return
        self._state, self._restored = PruningState(), None
        strategy = type(trainer.strategy).__name__
        if strategy in UNSUPPORTED_STRATEGIES:
            raise ValueError(
                f"Pruning does not support the {strategy} strategy (sharded parameters cannot be masked or "
                f"removed in place); use a single device, 'ddp' or 'ddp_spawn'."
            )
        others = [c for c in trainer.callbacks if isinstance(c, Pruning) and c is not self]
        if others:
            raise ValueError(
                f"This Trainer has {len(others) + 1} Pruning callbacks; use one (their scores, masks and removals would "
                "act on the same layers). To prune some layers by weight and others by neuron, prune in two fits."
            )
        if self.remove and getattr(pl_module, "_compiler_ctx", None) is not None:
            raise ValueError(
                "Neuron removal reshapes the module, which a torch.compile'd module cannot follow. Fit the module "
                "uncompiled (compile the compact model afterwards), or keep the neurons masked with remove=False."
            )
        self._timeline = self.timeline
        if trainer.fast_dev_run:
            self._timeline = Timeline(0, 1, 1)
            rank_zero_info(
                "Pruning: fast_dev_run: one prune at the start of the run, to the schedule's first fraction "
                f"({self.fractions[0]:.3f}), without warm-up or judgement; a smoke test of the pruning step only."
            )
            return
        max_epochs = trainer.max_epochs
        if max_epochs is not None and 0 <= max_epochs < self.timeline.epochs_needed:
            raise ValueError(
                f"`max_epochs`={max_epochs} is too small for this pruning schedule: warmup_epochs="
                f"{self.timeline.warmup_epochs} + {self.timeline.num_cycles} cycles x finetune_epochs="
                f"{self.timeline.finetune_epochs} needs max_epochs >= {self.timeline.epochs_needed}."
            )
        if self.max_drop is not None and trainer.check_val_every_n_epoch != 1:
            raise ValueError(
                f"`max_drop` judges every cycle on `{self.monitor}`, so validation must run every epoch; got "
                f"check_val_every_n_epoch={trainer.check_val_every_n_epoch}."
            )

    def _install_restore(self, pl_module: L.LightningModule) -> None:
        """Replay the checkpoint's plan before Lightning loads its weights (``fit(ckpt_path=...)``).

        Lightning restores the module (``on_load_checkpoint``, then ``load_state_dict``) before any
        callback state, so the module's own hook is wrapped until ``on_train_start``. Modules that
        inherit :class:`~lightning_prune.checkpoint.PrunedCheckpointMixin` need no wrapping.
        """
        original = pl_module.on_load_checkpoint

        def on_load_checkpoint(checkpoint: dict[str, Any]) -> None:
            restore_pruned(pl_module, checkpoint)
            original(checkpoint)

        pl_module.on_load_checkpoint = on_load_checkpoint

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.__dict__.pop("on_load_checkpoint", None)  # undo _install_restore: the checkpoint is loaded

    on_test_start = on_predict_start = on_validation_start

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.__dict__.pop("on_load_checkpoint", None)  # undo _install_restore
        self._check_max_steps(trainer)
        example = self._example_input(trainer, pl_module)
        self.pruner = Pruner(
            pl_module, example, self.criterion, self.granularity, self.scope, self.min_keep, self.layers, self.ignore_layers
        )
        self._commit_during_fit = self.remove and trainer.world_size == 1
        if self.remove and not self._commit_during_fit:
            rank_zero_info(
                f"Pruning: {trainer.world_size} processes; neurons stay masked during the fit"
                + (" (and after it: spawned workers return dense-shaped weights)." if _spawned(trainer) else
                   " and are removed on every rank when it ends.")
            )
        self._exponents = self._layer_exponents(self.pruner.dense_keep())
        self._check_reachable(self.pruner.dense_keep())
        narrow = [key for key, mask in self.pruner.dense_keep().items() if self.round_to and mask.numel() <= self.round_to]
        if narrow:
            rank_zero_warn(
                f"Pruning: `round_to`={self.round_to} is not below the width of {narrow[:5]}{'...' if len(narrow) > 5 else ''}: "
                "their kept units round up to all of them, so they are never pruned. Use a smaller round_to."
            )
        for name, reason in self.pruner.skipped_layers.items():
            rank_zero_warn(f"Pruning: the neurons of layer {name!r} are left unpruned: {reason}.")
        if self._restored is not None:
            self._state, self._restored = self._restored, None
            self.pruner.check_keep(self._state.keep, self._state.present)
        else:
            self._state.keep = self.pruner.dense_keep()
            self._state.present = self.pruner.dense_keep() if self.granularity == "neuron" else None
            self._state.plan = {"inputs": input_spec(example), "steps": []}
            self._state.dense = {"params": count_parameters(pl_module)[1], "macs": self.pruner.macs[""]}
        self._apply(trainer, pl_module, self._state.keep)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        self._judge_pending(trainer, pl_module, before_epoch=epoch)
        if self.rewind is not None and self._state.rewind_point is None and epoch == (
            0 if self.rewind == "init" else self.rewind
        ):
            self._state.rewind_point = self._rewind_point(trainer, pl_module)
        cycle = self._timeline.cycle_at(epoch)
        if self._state.stopped or cycle is None or cycle != self._state.cycle:
            return
        if cycle == 0 and self.monitor is not None:
            self._state.baseline = self._state.metrics.get(epoch - 1)
        if cycle == 0 and self.max_drop is not None:
            self._state.snapshot = self._snapshot(trainer, pl_module)
        self._prune(trainer, pl_module, cycle, epoch)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enforcer is not None:  # the optimizer state's pruned entries, zeroed once an epoch
            self._enforcer.enforce(trainer.optimizers)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.monitor is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ValueError(
                f"`monitor`={self.monitor!r} was never logged. Logged metrics: {sorted(trainer.callback_metrics)}."
            )
        if not trainer.sanity_checking:
            self._state.metrics[trainer.current_epoch] = float(value)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # `current_epoch` counts the completed epochs here: a cycle cut short (early stop) is not judged.
        self._judge_pending(trainer, pl_module, before_epoch=trainer.current_epoch)
        if self.remove and not self._commit_during_fit and not _spawned(trainer):
            self._commit(trainer, pl_module)  # every rank removes the same units: identical compact models
        if self._enforcer is not None:
            self._enforcer.enforce(trainer.optimizers)
            self._enforcer.detach()
        if self.verbose:
            rank_zero_info(self.summary_table())

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Re-apply the masks if a callback wrote weights after the last step (``on_train_end``), as
        StochasticWeightAveraging does with its averages, or an EMA callback listed after this one."""
        params = dict(pl_module.named_parameters(remove_duplicate=False))
        with torch.no_grad():
            leaked = [name for name, mask in self._masks.items()
                      if name in params and params[name].shape == mask.shape and bool(params[name][~mask].any())]
        if leaked:
            apply_masks(pl_module, self._masks)
            rank_zero_warn(
                f"Pruning: pruned weights of {leaked[:3]}{'...' if len(leaked) > 3 else ''} were non-zero when the fit "
                "ended (a callback such as StochasticWeightAveraging or an EMA wrote weights after the last pruning step); "
                "the masks were re-applied, so the model has the sparsity of the history. Start the averaging after the "
                "last prune for averages of the pruned network only."
            )

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        plan = self._state.plan
        if plan is not None and plan["steps"]:
            checkpoint[PLAN_KEY] = clone_tensors(plan)

    def _check_max_steps(self, trainer: L.Trainer) -> None:
        """Refuse a ``max_steps`` that ends the fit before the schedule (``max_epochs`` is checked at setup).

        Raises:
            ValueError: Naming ``max_steps``, the steps per epoch and the epochs the schedule needs.
        """
        batches = trainer.num_training_batches
        if trainer.max_steps < 0 or trainer.fast_dev_run or not isinstance(batches, int) or batches < 1:
            return
        per_epoch = max(1, math.ceil(batches / trainer.accumulate_grad_batches))
        needed = self.timeline.epochs_needed
        if trainer.max_steps < needed * per_epoch:  # as max_epochs >= epochs_needed: the last cycle fine-tunes too
            raise ValueError(
                f"`max_steps`={trainer.max_steps} ends the fit before this pruning schedule: it needs {needed} epochs "
                f"(warmup_epochs={self.timeline.warmup_epochs} + {self.timeline.num_cycles} cycles x finetune_epochs="
                f"{self.timeline.finetune_epochs}) of {per_epoch} optimizer steps, so max_steps >= {needed * per_epoch}."
            )

    # ----------------------------------------------------------------------------- steps
    def _example_input(self, trainer: L.Trainer, pl_module: L.LightningModule) -> Any:
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

    def _calibration_batches(self, trainer: L.Trainer) -> list[Any]:
        if not (self.criterion.needs_activations or self.criterion.needs_gradients):
            return []
        loader = trainer.train_dataloader
        if not isinstance(loader, torch.utils.data.DataLoader):
            raise ValueError(
                f"`criterion`={self.criterion.name!r} needs calibration batches from one train DataLoader; "
                f"got {type(loader).__name__}."
            )
        batches = [trainer.strategy.batch_to_device(b) for b in itertools.islice(loader, self.calibration_batches)]
        if batches and isinstance(batches[0], Mapping):
            if self.criterion.needs_activations:
                raise ValueError(
                    f"`criterion`={self.criterion.name!r} feeds each calibration batch's input to forward, and the train "
                    "batches are dicts, whose model input only the module knows; use a weight criterion ('l1', 'l2') "
                    "or batches that are (input, target) tuples."
                )
            if self.calibration_loss is cross_entropy_loss:
                raise ValueError(
                    f"`criterion`={self.criterion.name!r} needs the loss of each calibration batch, and the train batches "
                    "are dicts: pass `calibration_loss=lambda module, batch: ...` computing it from one of them."
                )
        return [trainer.precision_plugin.convert_input(batch) for batch in batches]

    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule, keep: Keep) -> None:
        masks = self.pruner.parameter_masks(keep, self._state.present)
        if self._enforcer is not None:
            self._enforcer.detach()
        self._enforcer = enforce_masks(pl_module, masks, trainer.optimizers)  # weights zeroed after every step
        self._masks = masks

    def _check_reachable(self, keep: Keep) -> None:
        """Check the unit target against ``min_keep`` before any training (params/MACs: at the prune).

        Raises:
            ValueError: If a global ranking cannot remove ``target`` of the units while every layer
                keeps ``min_keep``. With ``scope="layer"`` the capped layers are named in a warning.
        """
        if self.budget != "units":
            return
        sizes = {key: mask.numel() for key, mask in keep.items()}
        if self.scope == "global":
            capacity = prunable_capacity(sizes, self.min_keep)
            if round(self.target * sum(sizes.values())) > capacity:
                raise ValueError(
                    f"`target`={self.target} is out of reach: with `min_keep`={self.min_keep} at most "
                    f"{capacity / sum(sizes.values()):.4f} of the {sum(sizes.values())} units can be pruned."
                )
            return
        capped = [key for key, size in sizes.items()
                  if round(self._cycle_fraction_of(key, self.fractions[-1]) * size) > size - min_units(size, self.min_keep)]
        if capped:
            rank_zero_warn(
                f"Pruning: layers {capped} keep `min_keep`={self.min_keep} of their units and stop short of their target."
            )

    def _layer_exponents(self, keep: Keep) -> dict[str, float]:
        """Each group matched by ``layer_targets`` (first matching pattern) and its schedule exponent.

        Raises:
            ValueError: If a pattern matches no prunable layer (listing the prunable ones).
        """
        return layer_exponents(keep, self.layer_targets, self.target) if self.layer_targets else {}

    def _cycle_fraction_of(self, key: str, fraction: float) -> float:
        """A group's own cumulative fraction when the schedule is at ``fraction``."""
        return layer_fraction(fraction, self._exponents.get(key, 1.0))

    def _cycle_fraction(self, cycle: int) -> float | dict[str, float]:
        """The cumulative fraction to remove after ``cycle``: one number, or one per group."""
        fraction = self.fractions[cycle]
        if not self._exponents:
            return fraction
        return {key: self._cycle_fraction_of(key, fraction) for key in self._state.keep}

    def _prune(self, trainer: L.Trainer, pl_module: L.LightningModule, cycle: int, epoch: int) -> None:
        fraction = self._cycle_fraction(cycle)
        keep = self.pruner.plan(
            self._state.keep, fraction, cycle, self._calibration_batches(trainer), self.calibration_loss,
            self._state.present, self.budget, self._state.dense, self.round_to, self.normalize,
        )
        if self.control == "random_mask":
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + cycle)
            keep = shuffle_within_groups(self._state.keep, keep, generator)
        _check_ranks_agree(trainer, keep)
        keep = trainer.strategy.broadcast(keep, src=0)  # bit-identical on every rank from here on
        if self._state.rewind_point is not None:
            rewind(pl_module, trainer.optimizers, self._schedulers(trainer), self._state.rewind_point, {})
        self._apply(trainer, pl_module, keep)
        self._state.keep = keep
        self._state.cycle = cycle + 1
        if self._commit_during_fit and self.max_drop is None:
            self._commit(trainer, pl_module)
        last = self._timeline.prune_epoch(cycle) + self._timeline.finetune_epochs - 1
        self._state.pending = {"cycle": cycle, "epoch": last}
        stats = self.pruner.summary(keep, self._masks)
        stats["params_fraction"] = stats["params"] / self._state.dense["params"]
        stats["macs_fraction"] = stats["macs"] / self._state.dense["macs"] if self._state.dense["macs"] else 1.0
        row = {"cycle": cycle, "epoch": epoch, **stats, "metric": None, "accepted": None}
        self._state.history.append(row)
        self._log(trainer, {k: v for k, v in row.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
        emptied = lopsided({key: torch.ones_like(mask) for key, mask in keep.items()}, keep)
        if emptied and self.scope == "global":
            rank_zero_warn(
                f"Pruning: a global ranking removed most units of {emptied[:5]} while other layers lost none. Their scores "
                "are probably on another scale: use `normalize='mean'` or `scope='layer'`, or protect them with `min_keep`."
            )
        if self.verbose:
            rank_zero_info(
                f"Pruning cycle {cycle} at epoch {epoch}: {self.granularity} sparsity {row['sparsity']:.4f}, "
                f"{int(row['params'])} parameters ({row['params_fraction']:.3f}), {row['macs']:.0f} MACs "
                f"({row['macs_fraction']:.3f})"
            )

    def _judge_pending(self, trainer: L.Trainer, pl_module: L.LightningModule, before_epoch: int) -> None:
        pending = self._state.pending
        if pending is None or before_epoch <= pending["epoch"]:
            return
        self._state.pending = None
        if self.monitor is None:
            return
        row = self._state.history[pending["cycle"]]
        row["metric"] = self._state.metrics.get(pending["epoch"])
        self._log(trainer, {f"metric/{self.monitor}": row["metric"]} if row["metric"] is not None else {})
        if self.max_drop is None or trainer.fast_dev_run:
            return
        baseline, value = self._state.baseline, row["metric"]
        if baseline is None or value is None:
            raise ValueError(f"`max_drop` needs `{self.monitor}` after warm-up and after each cycle; it was not logged.")
        drop = baseline - value if self.mode == "max" else value - baseline
        row["accepted"] = trainer.strategy.broadcast(drop <= self.max_drop, src=0)  # rank 0 decides for all
        if row["accepted"]:
            if self._commit_during_fit:
                self._commit(trainer, pl_module)
            self._state.snapshot = self._snapshot(trainer, pl_module)
            return
        self._rollback(trainer, pl_module)
        self._state.stopped = True
        rank_zero_warn(
            f"Pruning: cycle {pending['cycle']} worsened `{self.monitor}` by {drop:.4f} (> max_drop={self.max_drop}); "
            f"rolled back to the last accepted model and stopped pruning."
        )

    def _commit(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Physically remove the masked neurons; record the removal in the plan."""
        names = {id(param): name for name, param in pl_module.named_parameters()}
        optimizer_names = [[names.get(id(p), "") for group in optimizer.param_groups for p in group["params"]]
                           for optimizer in trainer.optimizers]
        removal, kept = self.pruner.commit(self._state.keep, self._state.present, trainer.optimizers)
        if removal:
            if self._state.rewind_point is not None:  # rewinding now restores the compact shapes
                shapes = {name: value.shape for name, value in pl_module.state_dict().items()}
                self._state.rewind_point = slice_snapshot(self._state.rewind_point, kept, shapes, optimizer_names)
            self._state.plan["steps"].append(removal)
            self._state.present = clone_tensors(self._state.keep)
            self._apply(trainer, pl_module, self._state.keep)

    @staticmethod
    def _schedulers(trainer: L.Trainer) -> list[Any]:
        return [config.scheduler for config in trainer.lr_scheduler_configs]

    def _rewind_point(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        point = training_snapshot(pl_module, trainer.optimizers, self._schedulers(trainer))
        weights = [layer.weight_name for layer in self.pruner.layers]
        if self.control == "reinit":
            point["model"] = reinit_control_state(pl_module, self.seed + 1, point["model"], weights)
        elif self.control == "signed_constant":
            point["model"] = signed_constant_state(point["model"], weights)
        return point

    def _snapshot(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        return {
            "model": clone_tensors(pl_module.state_dict()),
            "optimizers": [clone_tensors(optimizer.state_dict()["state"]) for optimizer in trainer.optimizers],
            "keep": clone_tensors(self._state.keep),
            "present": clone_tensors(self._state.present),
        }

    def _rollback(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        snapshot = self._state.snapshot
        pl_module.load_state_dict(snapshot["model"])
        for optimizer, saved in zip(trainer.optimizers, snapshot["optimizers"]):
            params = [p for group in optimizer.param_groups for p in group["params"]]
            optimizer.state.clear()
            for index, values in saved.items():
                optimizer.state[params[index]] = clone_tensors(values)
        self._state.keep = clone_tensors(snapshot["keep"])
        self._state.present = clone_tensors(snapshot["present"])
        self._apply(trainer, pl_module, self._state.keep)

    def _log(self, trainer: L.Trainer, metrics: dict[str, float]) -> None:
        if not metrics:
            return
        for logger in trainer.loggers:
            logger.log_metrics({f"pruning/{key}": value for key, value in metrics.items()}, step=trainer.global_step)

    def summary_table(self) -> str:
        """The per-cycle history as a text table."""
        header = f"{'cycle':>5} {'epoch':>5} {'sparsity':>9} {'params':>10} {'MACs':>12} {'metric':>8} {'accepted':>8}"
        lines = ["Pruning summary", header]
        for row in self.history:
            metric = "-" if row["metric"] is None else f"{row['metric']:.4f}"
            accepted = "-" if row["accepted"] is None else ("yes" if row["accepted"] else "ROLLBACK")
            lines.append(
                f"{row['cycle']:>5} {row['epoch']:>5} {row['sparsity']:>9.4f} {int(row['params']):>10} "
                f"{row['macs']:>12.0f} {metric:>8} {accepted:>8}"
            )
        return "\n".join(lines)
