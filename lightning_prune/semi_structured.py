"""N:M semi-structured weight sparsity: exactly N kept in every M consecutive input weights of a row.

The one form of weight pruning that dense hardware accelerates: NVIDIA's sparse tensor cores
(Ampere and newer) multiply a 2:4 matrix at up to twice the dense rate, from a compressed form (the
kept half of the values and 2-bit positions). The lecture's "irregular weights cannot be sped up"
holds for unstructured masks; 2:4 is regular enough.

``granularity=NM(2, 4)`` makes the pruning loop keep the best ``n`` of each group of ``m`` by any
weight criterion. Iterated with a schedule, each cycle keeps ``ceil(m * (1 - fraction))`` per group
(never fewer than ``n``), so ``Geometric(target=0.5, per_cycle=0.3)`` goes 3:4 then 2:4; the
schedule's target must be ``1 - n/m``. :func:`to_semi_structured` exports the pruned ``Linear``
layers: with CUDA and half precision as ``torch.sparse.to_sparse_semi_structured`` tensors, otherwise
as :class:`NMLinear` (the compressed values and positions, decompressed at each call: the reference
form, to check the export computes what the masked model does).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lightning_prune.config import Granularity, PerLayer, Ranking
from lightning_prune.layers import hf_conv1d_type, is_transposed
from lightning_prune.validation import check_int


class NM(Granularity):
    """N:M semi-structured weights: ``n`` kept in every ``m`` consecutive input weights of each row.

    Args:
        n: Weights kept per group (>= 1).
        m: Group size (> n); 2:4 is what sparse tensor cores run.

    Raises:
        ValueError: Naming the field, if ``n`` or ``m`` is not allowed.
    """

    name = "weight"  # masks of single weights; the pattern is the selection's

    def __init__(self, n: int = 2, m: int = 4) -> None:
        self.m = check_int("NM.m", m, 2)
        self.n = check_int("NM.n", n, 1, self.m)

    @property
    def sparsity(self) -> float:
        """The fraction of weights an N:M pattern removes: ``1 - n/m``."""
        return 1.0 - self.n / self.m

    def kept_per_group(self, fraction: float) -> int:
        """Weights kept per group after a cycle at cumulative ``fraction`` (at least ``n``)."""
        return max(self.n, math.ceil(self.m * (1.0 - fraction) - 1e-9))

    def check_with(self, target: float, budget: str, ranking: Ranking) -> None:
        """Raises: ValueError: If the schedule does not end at ``1 - n/m`` of the units, or layers get own targets."""
        if abs(target - self.sparsity) > 1e-9 or budget != "units":
            raise ValueError(
                f"`granularity`=NM({self.n}, {self.m}) removes exactly {self.sparsity:g} of the weights; the schedule's "
                f"target must be {self.sparsity:g} with budget='units', got target={target!r}, budget={budget!r}."
            )
        if isinstance(ranking, PerLayer) and ranking.overrides:
            raise ValueError(f"`PerLayer.overrides` sets layer targets; NM({self.n}, {self.m}) gives every layer the same pattern.")


def group_columns(weight: torch.Tensor, transposed: bool = False) -> torch.Tensor:
    """The weight as rows of input weights: ``(outputs, inputs)`` (a convolution's ``in x kh x kw`` flattened)."""
    weight = weight.transpose(0, 1) if transposed else weight
    return weight.flatten(1)


def fits_pattern(weight: torch.Tensor, m: int, transposed: bool = False) -> bool:
    """Whether the layer's inputs per row divide into groups of ``m``."""
    return group_columns(weight, transposed).shape[1] % m == 0


def select_nm(scores: Mapping[str, torch.Tensor], keep: Mapping[str, torch.Tensor], fraction: float, pattern: NM,
              transposed: frozenset[str] = frozenset()) -> dict[str, torch.Tensor]:
    """Keep the ``kept_per_group(fraction)`` highest-scored weights of each group of ``m``; masks only shrink.

    Args:
        scores: Layer name to weight-shaped scores.
        keep: Layer name to the current weight-shaped keep-mask.
        fraction: The cycle's cumulative fraction.
        pattern: The N:M granularity.
        transposed: Names of layers whose weight stores inputs in dimension 0 (HF ``Conv1D``).

    Raises:
        ValueError: If a layer's inputs do not divide into groups of ``m``, or a score is NaN.
    """
    count = pattern.kept_per_group(fraction)
    result = {}
    for name, score in scores.items():
        flip = name in transposed
        rows = group_columns(score.detach().double().cpu(), flip)
        alive = group_columns(keep[name].cpu(), flip)
        if rows.shape[1] % pattern.m:
            raise ValueError(f"Layer {name!r} has {rows.shape[1]} inputs per row, not a multiple of NM.m={pattern.m}.")
        if torch.isnan(rows).any():
            raise ValueError(f"Importance scores of {name!r} contain NaN; cannot rank its weights.")
        groups = torch.where(alive, rows, torch.tensor(-math.inf, dtype=rows.dtype)).reshape(rows.shape[0], -1, pattern.m)
        top = groups.topk(count, dim=-1, sorted=False).indices
        mask = torch.zeros_like(groups, dtype=torch.bool).scatter_(-1, top, True).reshape(rows.shape) & alive
        shaped = keep[name].transpose(0, 1).shape if flip else keep[name].shape
        mask = mask.reshape(shaped)
        result[name] = (mask.transpose(0, 1) if flip else mask).to(keep[name].device)
    return result


def compress(weight: torch.Tensor, n: int, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``n`` largest-magnitude values of each group of ``m`` in a ``(out, in)`` weight, and their positions.

    Raises:
        ValueError: If a group has more than ``n`` non-zeros (the weight is not N:M), or ``in % m``.
    """
    if weight.shape[1] % m:
        raise ValueError(f"A weight with {weight.shape[1]} inputs per row does not divide into groups of {m}.")
    groups = weight.reshape(weight.shape[0], -1, m)
    if bool(((groups != 0).sum(-1) > n).any()):
        raise ValueError(f"The weight is not {n}:{m}: some group of {m} has more than {n} non-zeros.")
    positions = groups.abs().topk(n, dim=-1, sorted=False).indices.sort(dim=-1).values
    return groups.gather(-1, positions).reshape(weight.shape[0], -1), positions.reshape(weight.shape[0], -1).to(torch.uint8)


def decompress(values: torch.Tensor, positions: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """The dense ``(out, in)`` weight of :func:`compress`'s output."""
    rows = values.shape[0]
    dense = torch.zeros(rows, values.shape[1] // n, m, dtype=values.dtype, device=values.device)
    dense.scatter_(-1, positions.long().reshape(rows, -1, n), values.reshape(rows, -1, n))
    return dense.reshape(rows, -1)


class NMLinear(nn.Module):
    """A ``Linear`` stored N:M-compressed: ``n/m`` of the values plus one byte of position each.

    The reference form of the export (any device, any dtype): the dense weight is rebuilt at each
    call, so it is as fast as a dense ``Linear`` at best; the speed comes from sparse tensor cores
    (:func:`to_semi_structured` on CUDA).
    """

    def __init__(self, linear: nn.Linear, n: int, m: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.n, self.m = linear.in_features, linear.out_features, n, m
        values, positions = compress(linear.weight.detach(), n, m)
        self.values = nn.Parameter(values)
        self.register_buffer("positions", positions)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, decompress(self.values, self.positions, self.n, self.m), self.bias)


def to_semi_structured(model: nn.Module, n: int = 2, m: int = 4) -> dict[str, str]:
    """Export every ``Linear`` (and Hugging Face ``Conv1D``, as the ``Linear`` it computes) whose weight is N:M, in place.

    On CUDA with a half-precision 2:4 weight, the weight becomes a ``torch.sparse`` semi-structured
    tensor (sparse tensor cores); otherwise the layer becomes an :class:`NMLinear`.

    Returns:
        Module name to what it became (``"semi_structured"``, ``"NMLinear"``) or why it stayed dense.
    """
    done: dict[str, str] = {}
    conv1d = hf_conv1d_type()
    for name, module in list(model.named_modules()):
        if not isinstance(module, nn.Linear):
            if conv1d is None or not isinstance(module, conv1d):
                continue
            module = _conv1d_as_linear(module)  # GPT-2's Conv1D stores (inputs, outputs): x @ W + b
        weight = module.weight.detach()
        groups_ok = weight.shape[1] % m == 0 and bool(((weight.reshape(weight.shape[0], -1, m) != 0).sum(-1) <= n).all())
        if not groups_ok:
            done[name] = f"left dense: not {n}:{m}"
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        if weight.is_cuda and weight.dtype in (torch.float16, torch.bfloat16) and (n, m) == (2, 4):
            module.weight = nn.Parameter(torch.sparse.to_sparse_semi_structured(weight), requires_grad=False)
            setattr(parent, child, module)
            done[name] = "semi_structured"
            continue
        setattr(parent, child, NMLinear(module, n, m))
        done[name] = "NMLinear"
    return done


def _conv1d_as_linear(conv1d: nn.Module) -> nn.Linear:
    """The ``nn.Linear`` that computes what a Hugging Face ``Conv1D`` does (its weight transposed)."""
    inputs, outputs = conv1d.weight.shape
    linear = nn.Linear(inputs, outputs, bias=conv1d.bias is not None, device=conv1d.weight.device, dtype=conv1d.weight.dtype)
    with torch.no_grad():
        linear.weight.copy_(conv1d.weight.t())
        if conv1d.bias is not None:
            linear.bias.copy_(conv1d.bias)
    return linear


def layers_off_pattern(layers: Any, pattern: NM) -> dict[str, str]:
    """Prunable layers whose inputs per row do not divide into groups of ``m``, with the reason."""
    return {layer.name: f"{group_columns(layer.weight, is_transposed(layer.module)).shape[1]} inputs per row are not a "
            f"multiple of NM.m={pattern.m}" for layer in layers
            if not fits_pattern(layer.weight, pattern.m, is_transposed(layer.module))}
