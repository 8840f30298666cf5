"""lightning_prune: network pruning for PyTorch Lightning.

Attach :class:`Pruning` to a ``lightning.Trainer`` and get the whole loop of the lecture: train,
score importance, rank, mask or remove, fine-tune, repeat until the target is met or accuracy
would suffer. Scoring, ranking, masks, structure and schedules are plain functions and classes
(``criteria``, ``ranking``, ``masks``, ``structure``, ``schedules``, ``pruner``), usable without a
Trainer.
"""

from lightning_prune.callback import Pruning
from lightning_prune.criteria import CRITERIA, APoZ, Criterion, Magnitude, RandomImportance, Taylor
from lightning_prune.masks import MaskEnforcer, apply_masks
from lightning_prune.pruner import Pruner
from lightning_prune.schedules import sparsity_schedule

__all__ = [
    "CRITERIA",
    "APoZ",
    "Criterion",
    "Magnitude",
    "MaskEnforcer",
    "Pruner",
    "Pruning",
    "RandomImportance",
    "Taylor",
    "apply_masks",
    "sparsity_schedule",
]
__version__ = "0.1.0"
