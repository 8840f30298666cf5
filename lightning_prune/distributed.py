"""What the ``Pruning`` callback needs to know and check about several processes (DDP)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import torch


def check_ranks_agree(trainer: L.Trainer, keep: Mapping[str, torch.Tensor]) -> None:
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


def spawned(trainer: L.Trainer) -> bool:
    """Whether the fit runs in spawned workers whose weights return to a main process of fixed shape."""
    return getattr(trainer.strategy, "_start_method", "popen") != "popen"


def masked_during_fit(trainer: L.Trainer) -> str:
    """What happens to removed neurons when several processes fit (the wrapped module cannot be reshaped)."""
    after = (" (and after it: spawned workers return dense-shaped weights)." if spawned(trainer)
             else " and are removed on every rank when it ends.")
    return f"Pruning: {trainer.world_size} processes; neurons stay masked during the fit{after}"


def measured_on_rank_zero(trainer: L.Trainer, measure: Callable[[], Any]) -> Any:
    """``measure()`` run on rank 0 alone (timings are not disturbed by the other ranks) and broadcast to all."""
    return trainer.strategy.broadcast(measure() if trainer.is_global_zero else None, src=0)
