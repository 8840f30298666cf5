"""The ``Pruning`` callback: routes Lightning's hooks to the pure core, broadcasts under DDP, and logs.

Timeline of a fit (epochs are 0-based; W = warmup_epochs, F = finetune_epochs of the schedule)::

    epochs [0, W)              train the dense model
    start of epoch W + c*F     cycle c: score, rank, mask
    epochs of cycle c          fine-tune with masks enforced after every optimizer step
    start of the next epoch    judge cycle c (with a guard): accept, or roll back and stop

Neurons are masked when pruned and physically removed (``Neurons(remove=True)``, the default) once
their cycle is accepted: right away without a guard, after the judgement with one, so a rollback
only ever restores weights of the current architecture. With several processes (DDP) the wrapped
module cannot be reshaped, so units stay masked during the fit.

Every decision is taken at the *start* of an epoch (or at the end of training for the last cycle),
after any checkpoint of the previous epoch and before any of this one, so a resumed run takes the
same decisions as the uninterrupted one. The decisions are pure functions (:mod:`.decisions`), the
checks are in :mod:`.fit_checks`, the pruning step is :class:`~lightning_prune.pruner.Pruner`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from lightning_prune import fit_checks
from lightning_prune.batches import calibration_batches, check_fit_step, check_one_loader, example_input, fit_step
from lightning_prune.callback_state import CheckpointedState
from lightning_prune.checkpoint import (input_spec, install_restore, name_unreadable_checkpoints, uninstall_restore,
                                        unname_unreadable_checkpoints)
from lightning_prune.compiled import eager_forward, is_compiled
from lightning_prune.config import DropGuard, Granularity, PruningConfig, Ranking, Rewind
from lightning_prune.counting import count_parameters
from lightning_prune.criteria import Criterion
from lightning_prune.decisions import (controlled_keep, cycle_due, cycle_fraction, judgement_due, numeric,
                                       rewind_point_due, verdict)
from lightning_prune.distillation import (Distillation, DistillationHook, check_distillable, frozen_teacher,
                                          teacher_from_state)
from lightning_prune.distributed import check_ranks_agree, masked_during_fit, measured_on_rank_zero, spawned
from lightning_prune.latency import Latency, final_check, model_seconds
from lightning_prune.lottery import (clone_tensors, control_state, optimizer_names, rewind, slice_to_model,
                                     training_snapshot)
from lightning_prune.masks import MaskEnforcer, enforce_masks, leak_warning, reapply_if_leaked
from lightning_prune.pruner import Keep, Pruner
from lightning_prune.ranking import lopsided
from lightning_prune.schedules import Schedule, Timeline, layer_exponents
from lightning_prune.state import PruningState, cycle_line, history_row, restore_snapshot, take_snapshot


class Pruning(CheckpointedState, Callback):
    """Iterative pruning inside ``Trainer.fit``: train, score, rank, prune, fine-tune, repeat.

    Args:
        schedule: How much and when: ``OneShot(target=...)``, ``Geometric(target, per_cycle)``,
            ``Cubic(target, cycles)``, ``Custom(fraction, cycles)`` or a ``Schedule`` subclass, each
            with ``warmup_epochs``, ``finetune_epochs`` and ``budget``. ``"oneshot"``,
            ``"geometric"``, ``"cubic"``: that schedule at its defaults (target 0.5).
        criterion: Importance of each unit: ``Magnitude(p)``, ``APoZ(batches, forward)``,
            ``Taylor(batches, loss)``, ``Wanda(batches, forward)``, ``RandomImportance(seed)``, your
            own ``Criterion``, or ``"l1"``, ``"l2"``, ``"apoz"``, ``"taylor"``, ``"wanda"``, ``"random"``.
        granularity: ``Weights()`` / ``"weight"`` (unstructured), ``NM(n, m)`` (N:M semi-structured)
            or ``Neurons(remove, round_to, norm_coupled)`` / ``"neuron"`` (whole output units, filters and heads).
        ranking: ``Global(normalize, min_keep)`` / ``"global"`` or ``PerLayer(overrides, min_keep)`` /
            ``"layer"``.
        guard: ``DropGuard(monitor, max_drop, mode)``: roll back a cycle that worsens the metric
            by more than ``max_drop`` against the dense model, and stop. ``None``: no judgement.
        lottery: ``Rewind(to, control)``: after each prune, rewind to ``"init"`` or an early
            epoch (lottery tickets), optionally with a control experiment. ``None``: fine-tune.
        distill: ``Distillation(weight, temperature, cycles)``: during fine-tuning, add the
            temperature-scaled KL to a frozen copy of the dense model (taken after warm-up) to the
            loss ``training_step`` returns. ``None``: no distillation.
        monitor: A logged validation metric to record after each cycle without judging it (the
            guard's metric is recorded anyway).
        layers: Glob patterns of module names to prune (default: every ``Linear``/``Conv``).
        ignore_layers: Glob patterns of module names never to prune.
        verbose: Print one line per cycle and a summary table (rank zero).

    Raises:
        ValueError: At construction, for any invalid argument or combination (naming it, its value
            and what is allowed); at ``setup``, when the fit cannot follow the schedule; at the start
            of training, when no layer can be pruned, a pattern matches nothing, the target is out
            of reach, or a checkpoint's state does not fit; during the fit, when ``monitor`` is never
            logged or a params/MACs/latency budget is out of reach.
        RuntimeError: Under DDP, when the ranks decide different masks.
    """

    def __init__(
        self,
        schedule: Schedule | str = "oneshot",
        criterion: Criterion | str = "l1",
        granularity: Granularity | str = "weight",
        ranking: Ranking | str = "global",
        guard: DropGuard | None = None,
        lottery: Rewind | None = None,
        monitor: str | None = None,
        layers: Sequence[str] | None = None,
        ignore_layers: Sequence[str] | None = None,
        distill: Distillation | None = None,
        verbose: bool = True,
    ) -> None:
        if not isinstance(verbose, bool):
            raise ValueError(f"`verbose` must be True or False, got {verbose!r}.")
        self.config = PruningConfig(schedule, criterion, granularity, ranking, guard, lottery, monitor, layers, ignore_layers,
                                    distill)
        self.schedule, self.criterion, self.granularity = self.config.schedule, self.config.criterion, self.config.granularity
        self.ranking, self.guard, self.lottery, self.monitor = (self.config.ranking, self.config.guard, self.config.lottery,
                                                                self.config.monitor)
        self.verbose, self.remove, self.distill = verbose, self.config.removes, self.config.distill
        self.fractions = self.schedule.fractions()
        self.timeline = self._timeline = Timeline.of(self.schedule)  # _timeline: this fit's (fast_dev_run: one prune)
        self.pruner: Pruner | None = None
        self._exponents: dict[str, float] = {}  # group -> log(1 - its target) / log(1 - target) (PerLayer.overrides)
        self._commit_during_fit = False
        self._config_noted = False
        self._enforcer: MaskEnforcer | None = None
        self._masks: dict[str, torch.Tensor] = {}
        self._state, self._restored = PruningState(), None
        self._distiller: DistillationHook | None = None

    # ----------------------------------------------------------------------------- hooks
    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        name_unreadable_checkpoints(getattr(trainer.strategy, "checkpoint_io", None))
        if self.remove:
            install_restore(pl_module)  # any stage may load a checkpoint (test(ckpt_path="best"))
        if stage != "fit":
            return
        self._state, self._restored = PruningState(), None
        fit_checks.check_strategy(type(trainer.strategy).__name__)
        fit_checks.check_one_callback(sum(isinstance(c, Pruning) for c in trainer.callbacks))
        fit_checks.check_not_compiled(self.remove, is_compiled(pl_module))
        check_distillable(self.distill, pl_module.automatic_optimization)
        fit_checks.check_norm_coupled_removal(self.granularity.removes_norm_coupled, trainer.world_size)
        self._timeline = self.timeline
        if trainer.fast_dev_run:
            self._timeline = Timeline(0, 1, 1)
            rank_zero_info(
                "Pruning: fast_dev_run: one prune at the start of the run, to the schedule's first fraction "
                f"({self.fractions[0]:.3f}), without warm-up or judgement; a smoke test of the pruning step only."
            )
            return
        fit_checks.check_epochs(self.timeline, trainer.max_epochs)
        fit_checks.check_validation_every_epoch(self.guard, trainer.check_val_every_n_epoch)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        unname_unreadable_checkpoints(getattr(trainer.strategy, "checkpoint_io", None))
        self._distil(pl_module, None)

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        uninstall_restore(pl_module)  # the checkpoint is loaded

    on_test_start = on_predict_start = on_validation_start

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        uninstall_restore(pl_module)
        if not trainer.fast_dev_run:
            unchecked = fit_checks.check_steps(self.timeline, trainer.max_steps, trainer.num_training_batches,
                                               trainer.accumulate_grad_batches)
            if unchecked:
                rank_zero_warn(f"Pruning: {unchecked}")
        check_one_loader(self.criterion, trainer.train_dataloader)  # before warm-up, not at the first prune
        fallback = check_fit_step(self.criterion, pl_module)
        if fallback:
            rank_zero_info(f"Pruning: {fallback}")
        example = example_input(trainer, pl_module)
        with eager_forward(pl_module):
            self.pruner = Pruner(pl_module, example, self.criterion, self.granularity, self.ranking, self.config.layers,
                                 self.config.ignore_layers)
        self._commit_during_fit = self.remove and trainer.world_size == 1
        self._config_noted = False
        if self.remove and not self._commit_during_fit:
            rank_zero_info(masked_during_fit(trainer))
        dense = self.pruner.dense_keep()
        overrides = self.config.overrides
        self._exponents = layer_exponents(dense, overrides, self.schedule.target) if overrides else {}
        final = cycle_fraction(self.fractions, -1, self._exponents, list(dense))
        if self.pruner.excluded_layers:
            rank_zero_info("Pruning: left out (name them in `layers=` to prune them): " + "; ".join(
                f"{name!r}: {why}" for name, why in self.pruner.excluded_layers.items()))
        for message in fit_checks.setup_warnings(dense, self.ranking, self.config.round_to, lambda key: final if isinstance(
                final, float) else final[key], self.pruner.skipped_layers, self.schedule.budget == "units"):
            rank_zero_warn(f"Pruning: {message}")
        if self._restored is not None:
            self._state, self._restored = self._restored, None
            self.pruner.check_keep(self._state.keep, self._state.present)
            if self._state.teacher is not None:
                self._distil(pl_module, teacher_from_state(pl_module, self._state.teacher, bool(self._state.plan["steps"])))
        else:
            self._state.keep = dense
            self._state.present = self.pruner.dense_keep() if self.granularity.name == "neuron" else None
            self._state.plan = {"inputs": input_spec(example), "steps": []}
            self._state.dense = {"params": count_parameters(pl_module)[1], "macs": self.pruner.macs[""]}
            if isinstance(self.schedule.budget, Latency):  # the lookup table of NetAdapt/HALP, measured once
                table = measured_on_rank_zero(trainer, lambda: self.pruner.measure_latency(self.schedule.budget).state_dict())
                self._state.latency = {"table": table, "final": None}
        self._apply(trainer, pl_module, self._state.keep)

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        epoch = trainer.current_epoch
        self._judge_pending(trainer, pl_module, before_epoch=epoch)
        if rewind_point_due(self.lottery, epoch, self._state):
            point = training_snapshot(pl_module, trainer.optimizers, _schedulers(trainer))
            weights = [layer.weight_name for layer in self.pruner.layers]
            point["model"] = control_state(self.lottery.control, pl_module, point["model"], weights)
            self._state.rewind_point = point
        cycle = cycle_due(self._timeline, epoch, self._state)
        if cycle is None:
            return
        # Before the first prune: the dense model's metric, snapshot and teacher, kept once the prune succeeded
        # (a failing prune step leaves the callback's state and the module's training_step as they were).
        dense: dict[str, Any] = {}
        if cycle == 0 and self.monitor is not None:
            dense["baseline"] = self._state.metrics.get(epoch - 1)
        if cycle == 0 and self.guard is not None:
            dense["snapshot"] = take_snapshot(pl_module, trainer.optimizers, self._state.keep, self._state.present)
        if cycle == 0 and self.distill is not None:  # the dense teacher, after warm-up
            dense["teacher"], teacher = clone_tensors(pl_module.state_dict()), frozen_teacher(pl_module)
        with eager_forward(pl_module):
            self._prune(trainer, pl_module, cycle, epoch)
        for name, value in dense.items():
            setattr(self._state, name, value)
        if "teacher" in dense:
            self._distil(pl_module, teacher)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._enforcer is not None:  # the optimizer state's pruned entries, zeroed once an epoch
            self._enforcer.enforce(trainer.optimizers)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.monitor is None:
            return
        value = trainer.callback_metrics.get(self.monitor)
        if value is None:
            raise ValueError(f"`monitor`={self.monitor!r} was never logged. Logged metrics: {sorted(trainer.callback_metrics)}.")
        if not trainer.sanity_checking:
            self._state.metrics[trainer.current_epoch] = float(value)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # `current_epoch` counts the completed epochs here: a cycle cut short (early stop) is not judged.
        self._judge_pending(trainer, pl_module, before_epoch=trainer.current_epoch)
        if self.remove and not self._commit_during_fit and not spawned(trainer):
            self._commit(trainer, pl_module)  # every rank removes the same units: identical compact models
        if self._enforcer is not None:
            self._enforcer.enforce(trainer.optimizers)
            self._enforcer.detach()
        if self._state.latency is not None and (self._commit_during_fit or (self.remove and not spawned(trainer))):
            self._check_latency(trainer, pl_module)
        if self.verbose:
            rank_zero_info(self.summary_table())
        self._distil(pl_module, None)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """A fit that raises ends without ``teardown``: give the module back its own ``training_step``."""
        self._distil(pl_module, None)

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Re-apply the masks if a callback wrote weights after the last step (``on_train_end``), as
        StochasticWeightAveraging does with its averages, or an EMA callback listed after this one."""
        leaked = reapply_if_leaked(pl_module, self._masks)
        if leaked:
            rank_zero_warn(leak_warning(leaked))

    # ----------------------------------------------------------------------------- steps
    def _apply(self, trainer: L.Trainer, pl_module: L.LightningModule, keep: Keep) -> None:
        masks = self.pruner.parameter_masks(keep, self._state.present)
        if self._enforcer is not None:
            self._enforcer.detach()
        self._enforcer = enforce_masks(pl_module, masks, trainer.optimizers)  # weights zeroed after every step
        self._masks = masks

    def _prune(self, trainer: L.Trainer, pl_module: L.LightningModule, cycle: int, epoch: int) -> None:
        fraction = cycle_fraction(self.fractions, cycle, self._exponents, list(self._state.keep))
        step = fit_step(trainer, pl_module, self.criterion)
        keep = self.pruner.plan(self._state.keep, fraction, cycle, calibration_batches(trainer, self.criterion, step),
                                self._state.present, self.schedule.budget, self._state.reference(), step)
        keep = controlled_keep(self.lottery.control if self.lottery else None, self._state.keep, keep, cycle)
        check_ranks_agree(trainer, keep)
        keep = trainer.strategy.broadcast(keep, src=0)  # bit-identical on every rank from here on
        if self._state.rewind_point is not None:
            rewind(pl_module, trainer.optimizers, _schedulers(trainer), self._state.rewind_point, {})
        self._apply(trainer, pl_module, keep)
        self._state.keep, self._state.cycle = keep, cycle + 1
        if self._commit_during_fit and self.guard is None:
            self._commit(trainer, pl_module)
        self._state.pending = {"cycle": cycle, "epoch": self._timeline.prune_epoch(cycle) + self._timeline.finetune_epochs - 1}
        row = history_row(cycle, epoch, self.pruner.summary(keep, self._masks, self._state.reference().get("latency")),
                          self._state.dense)
        self._state.history.append(row)
        self._log(trainer, numeric(row))
        emptied = lopsided({key: torch.ones_like(mask) for key, mask in keep.items()}, keep)
        if emptied and self.ranking.scope == "global":
            rank_zero_warn(f"Pruning: a global ranking removed most units of {emptied[:5]} while other layers lost none. "
                           "Use Global(normalize='mean') or PerLayer(), or protect them with min_keep.")
        if self.verbose:
            rank_zero_info(cycle_line(row, self.granularity.name))

    def _judge_pending(self, trainer: L.Trainer, pl_module: L.LightningModule, before_epoch: int) -> None:
        pending = judgement_due(self._state, before_epoch)
        if pending is None:
            return
        self._state.pending = None
        if self.monitor is None:
            return
        row = self._state.history[pending["cycle"]]
        row["metric"] = self._state.metrics.get(pending["epoch"])
        self._log(trainer, {f"metric/{self.monitor}": row["metric"]} if row["metric"] is not None else {})
        if self.guard is None or trainer.fast_dev_run:
            return
        baseline, value = self._state.baseline, row["metric"]
        row["accepted"] = trainer.strategy.broadcast(verdict(self.guard, baseline, value), src=0)  # rank 0 decides
        if row["accepted"]:
            if self._commit_during_fit:
                self._commit(trainer, pl_module)
            self._state.snapshot = take_snapshot(pl_module, trainer.optimizers, self._state.keep, self._state.present)
            return
        snapshot = self._state.snapshot
        restore_snapshot(snapshot, pl_module, trainer.optimizers)
        self._state.keep, self._state.present = clone_tensors(snapshot["keep"]), clone_tensors(snapshot["present"])
        self._apply(trainer, pl_module, self._state.keep)
        self._state.stopped = True
        rank_zero_warn(
            f"Pruning: cycle {pending['cycle']} worsened `{self.monitor}` by {self.guard.worsening(baseline, value):.4f} "
            f"(> max_drop={self.guard.max_drop}); rolled back to the last accepted model and stopped pruning."
        )

    def _commit(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Physically remove the masked neurons; record the removal in the plan."""
        names = optimizer_names(pl_module, trainer.optimizers)  # before the removal replaces the parameters
        removal, kept = self.pruner.commit(self._state.keep, self._state.present, trainer.optimizers)
        if removal:
            if self._state.rewind_point is not None:  # rewinding now restores the compact shapes
                self._state.rewind_point = slice_to_model(self._state.rewind_point, kept, pl_module, names)
            self._state.plan["steps"].append(removal)
            if self.pruner.config_notes and not self._config_noted:  # once per fit: the widths change every step
                self._config_noted = True
                rank_zero_warn("Pruning: " + " ".join(self.pruner.config_notes))
            self._state.present = clone_tensors(self._state.keep)
            self._apply(trainer, pl_module, self._state.keep)

    def _check_latency(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        """Time the compact model (the final check of a latency budget) and warn if it misses the target."""
        budget = self.schedule.budget
        measured = measured_on_rank_zero(trainer, lambda: model_seconds(pl_module, self.pruner.example_input, budget))
        self._state.latency["final"] = measured
        removed, line, missed = final_check(self._state.reference()["latency"], measured, self.schedule.target, budget)
        self._log(trainer, {"latency_removed": removed})
        (rank_zero_warn if missed else rank_zero_info)(line + (" Missed by more than Latency.tolerance: the table's "
                                                               "timings (taken before the first prune) or its rest "
                                                               "model did not hold; measure on a quiet device." if missed else ""))

    def _distil(self, pl_module: L.LightningModule, teacher: torch.nn.Module | None) -> None:
        """Distil from ``teacher`` from now on (``None``: stop)."""
        if self._distiller is not None:
            self._distiller.remove()
            self._distiller = None
        if teacher is not None:
            self._distiller = DistillationHook(pl_module, teacher, self.distill, lambda: self.distill.active(self._state.cycle))

    def _log(self, trainer: L.Trainer, metrics: dict[str, float]) -> None:
        for logger in trainer.loggers if metrics else ():
            logger.log_metrics({f"pruning/{key}": value for key, value in metrics.items()}, step=trainer.global_step)


def _schedulers(trainer: L.Trainer) -> list[Any]:
    return [config.scheduler for config in trainer.lr_scheduler_configs]


