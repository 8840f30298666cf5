"""Statistics streamed over calibration batches, the torchmetrics way.

Counts are summed in ``update`` and divided in ``compute``; each state declares
``dist_reduce_fx="sum"``, so under DDP ``compute`` returns the statistic of all ranks' data together,
equal to one process seeing the same batches.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric


class ZeroActivationRate(Metric):
    """APoZ: the Average Percentage of Zeros of each unit's post-ReLU output (Hu et al. 2016).

    ``update`` takes a unit's *pre-activation* (the layer's output, or its BatchNorm's when one
    follows): ReLU outputs zero exactly where the pre-activation is ``<= 0``, so the count is that of
    the post-ReLU zeros. Counts are integers, so streaming equals one pass over the concatenated data.

    Args:
        num_units: Number of units (output features or channels).
        unit_dim: The dimension of the activations that indexes units (``-1`` for ``Linear``
            outputs, ``1`` for convolution outputs).
    """

    full_state_update = False

    def __init__(self, num_units: int, unit_dim: int) -> None:
        super().__init__()
        self.num_units = num_units
        self.unit_dim = unit_dim
        self.add_state("zeros", torch.zeros(num_units, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("observations", torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, pre_activation: torch.Tensor) -> None:
        """Count the entries of each unit that ReLU would zero.

        Raises:
            ValueError: If the unit dimension does not have ``num_units`` entries.
        """
        if pre_activation.shape[self.unit_dim] != self.num_units:
            raise ValueError(
                f"Activation of shape {tuple(pre_activation.shape)} has {pre_activation.shape[self.unit_dim]} units "
                f"in dimension {self.unit_dim}, expected {self.num_units}."
            )
        per_unit = pre_activation.detach().movedim(self.unit_dim, -1).reshape(-1, self.num_units)
        self.zeros += (per_unit <= 0).sum(dim=0)
        self.observations += per_unit.shape[0]

    def compute(self) -> torch.Tensor:
        """The fraction of zeros per unit, in [0, 1]."""
        return self.zeros.double() / self.observations.clamp(min=1)


class WeightGradientProduct(Metric):
    """Sum over batches of ``weight * dLoss/dweight``: first-order Taylor importance (Molchanov et al.).

    Args:
        shape: Shape of the weight.
    """

    full_state_update = False

    def __init__(self, shape: torch.Size | tuple[int, ...]) -> None:
        super().__init__()
        self.add_state("total", torch.zeros(shape, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, weight: torch.Tensor, grad: torch.Tensor) -> None:
        """Add one batch's ``weight * grad``."""
        self.total += (weight.detach() * grad.detach()).double()

    def compute(self) -> torch.Tensor:
        """The summed products, shaped like the weight."""
        return self.total
