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


class InputFeatureNorm(Metric):
    """The L2 norm of each input feature of a layer over every example (and position) seen: ``‖X_j‖₂``.

    Wanda's activation statistic (Sun et al. 2023). Squares are summed in ``update`` (float64) and the
    root is taken in ``compute``, so under DDP the norm is that of all ranks' inputs together.

    Args:
        num_features: Number of input features (``in_features``, or input channels of a convolution).
        feature_dim: The dimension of the inputs that indexes features (``-1`` for ``Linear``, ``1``
            for convolutions, whose spatial positions count as more observations).
    """

    full_state_update = False

    def __init__(self, num_features: int, feature_dim: int) -> None:
        super().__init__()
        self.num_features, self.feature_dim = num_features, feature_dim
        self.add_state("squares", torch.zeros(num_features, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, inputs: torch.Tensor) -> None:
        """Add one batch's squared inputs, per feature.

        Raises:
            ValueError: If the feature dimension does not have ``num_features`` entries.
        """
        if inputs.shape[self.feature_dim] != self.num_features:
            raise ValueError(
                f"Input of shape {tuple(inputs.shape)} has {inputs.shape[self.feature_dim]} features in dimension "
                f"{self.feature_dim}, expected {self.num_features}."
            )
        per_feature = inputs.detach().movedim(self.feature_dim, -1).reshape(-1, self.num_features).double()
        self.squares += (per_feature**2).sum(dim=0)

    def compute(self) -> torch.Tensor:
        """``‖X_j‖₂`` per input feature."""
        return self.squares.sqrt()
