"""What a :class:`~lightning_prune.Pruning` callback shows and checkpoints: its state, in and out.

The callback's decisions live in a typed :class:`~lightning_prune.state.PruningState`; this mixin
turns it into Lightning's callback state (``state_dict``/``load_state_dict``, keyed by granularity
only, with the configuration's fingerprint for the resume check), writes the removal plan into
checkpoints, refuses checkpoints it cannot continue, and exposes the results (``history``,
``dense``, ``keep``, ``plan``, ``teacher``, ``summary_table``).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from lightning_prune import fit_checks
from lightning_prune.checkpoint import PLAN_KEY
from lightning_prune.config import PruningConfig
from lightning_prune.lottery import clone_tensors
from lightning_prune.pruner import Keep
from lightning_prune.state import PruningState, check_same_config, flatten, non_default, summary_table

_DEFAULT_CONFIG = flatten(PruningConfig().fingerprint())  # what checkpoints omit


class CheckpointedState:
    """State in and out of a ``Pruning`` callback (a mixin: it reads the callback's ``config``,
    ``granularity``, ``timeline``, ``_state``, ``_restored`` and ``_distiller``)."""

    @property
    def state_key(self) -> str:
        # Granularity only: a changed target or schedule must reach `load_state_dict` and fail there,
        # by name, instead of Lightning dropping the state as another callback's (a silent restart).
        return self._generate_state_key(granularity=self.granularity.name)

    def state_dict(self) -> dict[str, Any]:
        return {**self._state.to_dict(), "config": non_default(flatten(self.config.fingerprint()), _DEFAULT_CONFIG)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Take the checkpoint's state, if it was made with this configuration.

        A state saved before training started (``LearningRateFinder``'s checkpoint of ``on_fit_start``,
        restored after its trial steps) has nothing to resume: the fit starts as if none was loaded.

        Raises:
            ValueError: Naming every setting that differs between the checkpoint and this callback.
        """
        state_dict = dict(state_dict)
        check_same_config(state_dict.pop("config", None), flatten(self.config.fingerprint()), _DEFAULT_CONFIG)
        restored = PruningState.from_dict(state_dict)
        self._restored = restored if restored.keep is not None else None

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        prefix = type(self).__qualname__ + "{"
        saved = [key for key in checkpoint.get("callbacks", {}) if key.startswith(prefix)]
        fit_checks.check_resume_source(saved, self.state_key, checkpoint.get("epoch", 0) + 1, self.timeline)

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

    @property
    def teacher(self) -> torch.nn.Module | None:
        """The frozen dense teacher while the fit distils (``distill``), else ``None``."""
        return self._distiller.teacher if self._distiller is not None else None

    def summary_table(self) -> str:
        """The per-cycle history as a text table."""
        return summary_table(self.history)

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]) -> None:
        plan = self._state.plan
        if plan is not None and plan["steps"]:
            checkpoint[PLAN_KEY] = clone_tensors(plan)
