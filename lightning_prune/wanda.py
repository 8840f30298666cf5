"""Wanda, Pruning by Weights and activations (Sun et al. 2023): ``|W_ij| · ‖X_j‖₂`` per weight."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from lightning_prune.criteria import ObservingCriterion, _units_first
from lightning_prune.layers import PrunableLayer, is_transposed
from lightning_prune.statistics import InputFeatureNorm


class Wanda(ObservingCriterion):
    """Pruning by Weights and activations (Sun et al. 2023): ``|W_ij| · ‖X_j‖₂`` per weight.

    A weight matters as much as its size times the size of the input it multiplies: ``‖X_j‖₂`` is
    the L2 norm of input feature ``j`` over the calibration batches
    (:class:`~lightning_prune.statistics.InputFeatureNorm`, summed across ranks). For a convolution
    the norm is per input channel, over all positions. Weights (and N:M patterns) only. The paper
    ranks each output row's weights on their own; here the ranking is the run's (per layer or
    global), and one-shot Wanda without fine-tuning is its setting.

    Arguments (``batches``, ``forward``) as :class:`~lightning_prune.criteria.ObservingCriterion`.
    """

    name = "wanda"
    granularities = ("weight",)

    def begin(self, layers: Sequence[PrunableLayer], sites: Mapping[str, nn.Module]) -> None:
        self.end()
        self._stats = {}
        for layer in layers:
            weight = _units_first(layer, layer.weight)
            feature_dim = -1 if weight.dim() == 2 else 1  # Linear / HF Conv1D: last; convolutions: channels
            stat = InputFeatureNorm(weight.shape[1], feature_dim).to(layer.weight.device)
            self._stats[layer.name] = stat
            self._handles.append(layer.module.register_forward_pre_hook(
                lambda module, args, stat=stat: stat.update(args[0])))

    def scores(self, layers: Sequence[PrunableLayer], granularity: str, cycle: int) -> dict[str, torch.Tensor]:
        if not self._stats:
            raise RuntimeError("Wanda has no statistics: run a calibration pass (`score_layers`) first.")
        result = {}
        for layer in layers:
            weight = _units_first(layer, layer.weight.detach()).abs().double()
            norm = self._stats[layer.name].compute().to(weight.device)
            score = weight * norm.reshape(1, -1, *([1] * (weight.dim() - 2)))
            result[layer.name] = score.transpose(0, 1) if is_transposed(layer.module) else score
        return result
