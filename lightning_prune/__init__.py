"""lightning_prune: network pruning for PyTorch Lightning.

Attach :class:`Pruning` to a ``lightning.Trainer`` and get the whole loop of the lecture: train,
score importance, rank, mask or remove, fine-tune, repeat until the target is met or accuracy
would suffer. It is configured with one small object per concern::

    Pruning(schedule=Geometric(target=0.9, per_cycle=0.2, warmup_epochs=4, finetune_epochs=1),
            criterion="l1", guard=DropGuard(monitor="val_acc", max_drop=0.01))

Scoring, ranking, masks, structure, surgery and schedules are plain functions and
classes (``criteria``, ``ranking``, ``masks``, ``structure``, ``surgery``, ``schedules``,
``pruner``), usable without a Trainer.
"""

from lightning_prune.callback import Pruning
from lightning_prune.checkpoint import PrunedCheckpointMixin, export_program, load_compact, restore_pruned, save_compact
from lightning_prune.config import (
    DropGuard,
    Global,
    Neurons,
    PerLayer,
    RandomMask,
    Reinit,
    Rewind,
    SignedConstant,
    Weights,
)
from lightning_prune.criteria import CRITERIA, APoZ, Criterion, Magnitude, RandomImportance, Taylor, Wanda
from lightning_prune.distillation import Distillation
from lightning_prune.latency import Latency
from lightning_prune.masks import MaskEnforcer, apply_masks
from lightning_prune.mha import SplitMultiheadAttention, split_attention
from lightning_prune.pruner import Pruner
from lightning_prune.schedules import Cubic, Custom, Geometric, OneShot, Schedule
from lightning_prune.semi_structured import NM, to_semi_structured
from lightning_prune.structure import NeuronStructure, remove_zeroed_units
from lightning_prune.surgery import remove_units

__all__ = [
    "CRITERIA",
    "APoZ",
    "Criterion",
    "Cubic",
    "Custom",
    "Distillation",
    "DropGuard",
    "Geometric",
    "Global",
    "Latency",
    "Neurons",
    "OneShot",
    "PerLayer",
    "RandomMask",
    "Reinit",
    "Rewind",
    "Schedule",
    "SignedConstant",
    "SplitMultiheadAttention",
    "Weights",
    "Magnitude",
    "MaskEnforcer",
    "NM",
    "NeuronStructure",
    "PrunedCheckpointMixin",
    "Pruner",
    "Pruning",
    "RandomImportance",
    "Taylor",
    "Wanda",
    "apply_masks",
    "export_program",
    "load_compact",
    "remove_units",
    "remove_zeroed_units",
    "restore_pruned",
    "save_compact",
    "split_attention",
    "to_semi_structured",
]
__version__ = "0.1.0"
