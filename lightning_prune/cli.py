"""Command line: ``lightning-prune fit --config CONFIG.yaml`` (Lightning's ``LightningCLI``).

The YAML sets the model (:class:`~lightning_prune.models.Classifier`), the data (any
``LightningDataModule``, e.g. :class:`~lightning_prune.data.DigitsDataModule`) and the trainer with
its callbacks, :class:`~lightning_prune.Pruning` among them. The callback's configuration objects
are nested by ``class_path``/``init_args``, shortcut strings stay allowed where ``Pruning`` takes them::

    callbacks:
      - class_path: lightning_prune.Pruning
        init_args:
          schedule: {class_path: lightning_prune.Geometric, init_args: {target: 0.9, per_cycle: 0.2, warmup_epochs: 8}}
          guard: {class_path: lightning_prune.DropGuard, init_args: {monitor: val_acc, max_drop: 0.01}}
          granularity: weight

After ``fit`` the pruned model is evaluated on the test split. ``lightning-prune fit --print_config``
shows every option.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import lightning as L
from lightning.pytorch.cli import LightningCLI

from lightning_prune.models import Classifier


def config_path(name: str = "lenet_digits.yaml") -> Path:
    """Path of a config shipped with the package (``lightning_prune/configs``)."""
    return Path(str(resources.files("lightning_prune") / "configs" / name))


class PruningCLI(LightningCLI):
    """``LightningCLI`` for :class:`Classifier` that tests the model after ``fit``."""

    def after_fit(self) -> None:
        self.trainer.test(self.model, datamodule=self.datamodule, verbose=True)


def main(args: list[str] | None = None) -> None:
    """Entry point of the ``lightning-prune`` command."""
    PruningCLI(
        Classifier,
        L.LightningDataModule,
        subclass_mode_data=True,
        save_config_kwargs={"overwrite": True},
        args=args,
    )


if __name__ == "__main__":
    main()
