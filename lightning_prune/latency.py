"""Latency budgets: prune until the compact model is a fraction faster, measured on the fit's device.

MACs are a proxy: a layer's time is not proportional to its multiply-accumulates (small widths pay a
fixed overhead, memory-bound layers and vector widths break the proportion). NetAdapt (Yang et al.
2018) and HALP (Shen et al. 2022) therefore measure: a lookup table gives each layer's latency for
candidate widths, and the pruner reads it instead of counting MACs.

Here, :class:`LatencyTable` times every prunable layer alone, at a grid of input and output widths
(``Latency.levels`` per changing dimension), at ``Latency.batch_size``, with
``torch.utils.benchmark`` on the device and in the dtype of the fit. The rest of the model (norms,
activations, residual additions, attention products, pooling) is the whole model's measured latency
minus its layers' table entries, measured on the dense model and on compact copies that keep the same
fraction of every group (:meth:`LatencyTable.calibrate`), as a function of the fraction of the
layers' output elements kept. A candidate's latency is that rest plus each layer's entry, bilinearly
interpolated at its kept widths. The table is measured once, on the dense model, and
stored in the callback's state, so a resumed run decides exactly as the uninterrupted one would.
At the end of the fit the compact model itself is timed and compared with the budget.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils import benchmark

from lightning_prune.layers import PrunableLayer, is_transposed
from lightning_prune.validation import Config, check_fraction, check_int

Widths = dict[str, tuple[int, int]]
"""Layer name to its ``(input, output)`` width (channels or features)."""


class Latency(Config):
    """A budget that counts the compact model's latency, measured on the fit's device.

    With ``schedule.budget=Latency(...)`` (or ``"latency"``), the schedule's ``target`` is the fraction
    of the dense model's latency to remove, e.g. ``OneShot(0.5, budget=Latency(batch_size=256))``
    asks for half the dense latency at batch 256. Needs ``Neurons(remove=True)``: masked units run at
    dense speed.

    Args:
        batch_size: The batch size at which latency is measured (the example input is repeated to it).
        levels: Widths measured per changing dimension of each layer, evenly spaced from one unit to
            the dense width (>= 2).
        min_run_time: Seconds of repeated runs per measurement (``blocked_autorange``).
        tolerance: How far (as a fraction of the dense latency) the measured final model may miss the
            target before a warning says so.
        per_second: Rank units by importance per predicted second saved (HALP's knapsack, greedily):
            units of layers that cost more time per unit go first. With scores of similar size (e.g.
            normalised weight norms) this can empty the costliest layer. ``False`` (default): rank
            by importance and use the table to decide how many units go.

    Raises:
        ValueError: Naming the field, for a value out of range.
    """

    name = "latency"

    def __init__(self, batch_size: int = 256, levels: int = 5, min_run_time: float = 0.05, tolerance: float = 0.05,
                 per_second: bool = False) -> None:
        self.batch_size = check_int("Latency.batch_size", batch_size, 1)
        self.levels = check_int("Latency.levels", levels, 2)
        self.min_run_time = check_fraction("Latency.min_run_time", min_run_time)
        self.tolerance = check_fraction("Latency.tolerance", tolerance)
        if not isinstance(per_second, bool):
            raise ValueError(f"`Latency.per_second` must be True or False, got {per_second!r}.")
        self.per_second = per_second


def seconds(function: Callable[[], Any], min_run_time: float) -> float:
    """Seconds per call of ``function``: the fastest of at least five timed blocks, after three warm-up calls
    (``torch.utils.benchmark``, the process's thread count; it synchronises CUDA).

    The fastest block, not the median: other work on the machine only ever adds time, and a table
    of the device's own speed should not record a burst of someone else's load.
    """
    for _ in range(3):  # warm-up: the first calls at a new shape create kernels and buffers
        function()
    timer = benchmark.Timer(stmt="function()", globals={"function": function}, num_threads=torch.get_num_threads())
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    times = list(measurement.times)
    while len(times) < 5:  # a slow call fills min_run_time alone: a median of one is no median
        times.append(timer.timeit(measurement.number_per_run).median)
    return float(min(times))


def repeat_batch(example: Any, batch_size: int) -> Any:
    """``example`` (a tensor or a tuple of arguments) with every tensor's first dimension made ``batch_size``."""
    if torch.is_tensor(example):
        times = math.ceil(batch_size / max(1, example.shape[0]))
        return example.repeat(times, *([1] * (example.dim() - 1)))[:batch_size]
    if isinstance(example, (tuple, list)):
        return type(example)(repeat_batch(item, batch_size) for item in example)
    return example


def model_seconds(model: nn.Module, example: Any, config: Latency) -> float:
    """The model's forward latency (eval mode, no gradients) at ``config.batch_size``, timed by :func:`seconds`."""
    batch = repeat_batch(example, config.batch_size)
    args = batch if isinstance(batch, (tuple, list)) else (batch,)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return seconds(lambda: model(*args), config.min_run_time)
    finally:
        model.train(was_training)


def layer_widths(layers: Sequence[PrunableLayer], masks: Mapping[str, torch.Tensor] | None = None) -> Widths:
    """Each layer's kept ``(input, output)`` width under parameter keep-masks (its shape where unmasked)."""
    widths = {}
    for layer in layers:
        module, weight = layer.module, layer.weight
        mask = (masks or {}).get(layer.weight_name)
        if mask is None:
            mask = torch.ones(weight.shape[:2], dtype=torch.bool)
        mask = mask.reshape(*mask.shape[:2], -1).any(dim=-1)
        if is_transposed(module):
            mask = mask.t()
        out_kept, in_kept = int(mask.any(dim=1).sum()), int(mask.any(dim=0).sum())
        groups = getattr(module, "groups", 1)
        if groups > 1 and in_kept == 1 and weight.shape[1] == 1:  # depthwise: one input per output channel
            in_kept = out_kept
        else:
            in_kept *= groups
        widths[layer.name] = (in_kept, out_kept)
    return widths


def _grid(dense: int, levels: int, varies: bool) -> list[int]:
    if not varies:
        return [dense]
    return sorted({max(1, round(dense * step / (levels - 1))) for step in range(levels)} | {dense})


def _shrunk(module: nn.Module, width_in: int, width_out: int) -> nn.Module:
    """A fresh layer like ``module`` with the given widths (grouped convs keep their group count)."""
    bias = getattr(module, "bias", None) is not None
    if isinstance(module, nn.modules.conv._ConvNd):
        groups = module.groups
        if groups > 1 and groups == module.in_channels == module.out_channels:  # depthwise
            width_in = width_out = groups = max(width_in, width_out)
        elif groups > 1:
            width_in, width_out = (math.ceil(w / groups) * groups for w in (width_in, width_out))
        if module.transposed:
            conv = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}[len(module.kernel_size)]
            return conv(width_in, width_out, module.kernel_size, module.stride, module.padding, module.output_padding,
                        groups, bias, module.dilation, module.padding_mode)
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[len(module.kernel_size)]
        return conv(width_in, width_out, module.kernel_size, module.stride, module.padding, module.dilation, groups,
                    bias, module.padding_mode)
    return nn.Linear(width_in, width_out, bias=bias)  # Linear, its subclasses and HF Conv1D: one matrix product


class LatencyTable:
    """Measured seconds of each prunable layer at a grid of widths, and of the rest of the model.

    Args:
        entries: Layer name to ``{"inputs": [...], "outputs": [...], "seconds": [[...]]}`` (seconds per
            forward call summed over the layer's calls, indexed ``[input][output]``).
        rest: Seconds of everything else in the dense model's forward.
        dense: The dense model's measured seconds.
        curve: ``[kept, seconds]`` points of the rest measured on compact copies (see
            :meth:`calibrate`): norms, activations and additions after pruned layers shrink with
            them. ``kept`` is :meth:`kept_outputs`. Without points the rest is fixed.
    """

    def __init__(self, entries: Mapping[str, Mapping[str, list]], rest: float, dense: float,
                 curve: Sequence[Sequence[float]] = ()) -> None:
        self.entries, self.rest, self.dense = {k: dict(v) for k, v in entries.items()}, float(rest), float(dense)
        self.curve = sorted([float(kept), float(value)] for kept, value in curve)

    @classmethod
    def measure(cls, model: nn.Module, layers: Sequence[PrunableLayer], example: Any, varying: Mapping[str, tuple[bool, bool]],
                config: Latency) -> LatencyTable:
        """Time each layer alone at its grid of widths, and the dense model.

        Args:
            model: The dense model.
            layers: Its prunable layers.
            example: A batch the model accepts (repeated to ``config.batch_size``).
            varying: Layer name to whether its ``(input, output)`` width can change under pruning.
            config: The budget's settings.
        """
        batch = repeat_batch(example, config.batch_size)
        inputs, outputs = _layer_shapes(model, layers, batch)
        dense = model_seconds(model, batch, config)
        entries, covered = {}, 0.0
        for layer in layers:
            if layer.name not in inputs:
                continue  # never called: not part of the forward's latency
            shape, weight = inputs[layer.name][0], layer.weight
            width_in, width_out = layer_widths([layer])[layer.name]
            grid_in = _grid(width_in, config.levels, varying.get(layer.name, (False, False))[0])
            grid_out = _grid(width_out, config.levels, varying.get(layer.name, (False, False))[1])
            table = []
            for w_in in grid_in:
                row = []
                for w_out in grid_out:
                    shrunk = _shrunk(layer.module, w_in, w_out).to(weight.device, weight.dtype).requires_grad_(False)
                    channel_dim = 1 if isinstance(layer.module, nn.modules.conv._ConvNd) else len(shape) - 1
                    size = list(shape)
                    size[channel_dim] = shrunk.in_channels if hasattr(shrunk, "in_channels") else w_in
                    x = torch.randn(size, device=weight.device, dtype=weight.dtype)
                    row.append(len(inputs[layer.name]) * seconds(lambda f=shrunk, x=x: f(x), config.min_run_time))
                table.append(row)
            entries[layer.name] = {"inputs": grid_in, "outputs": grid_out, "seconds": table,
                                   "elements": sum(math.prod(shape) for shape in outputs[layer.name])}
            covered += table[-1][-1]
        return cls(entries, max(0.0, dense - covered), dense)

    def layers_seconds(self, widths: Mapping[str, tuple[int, int]]) -> float:
        """The table's seconds of the layers alone at ``widths`` (missing layers: dense)."""
        total = 0.0
        for name, entry in self.entries.items():
            w_in, w_out = widths.get(name, (entry["inputs"][-1], entry["outputs"][-1]))
            total += _bilinear(entry, w_in, w_out)
        return total

    def kept_outputs(self, widths: Mapping[str, tuple[int, int]]) -> float:
        """The fraction of the layers' output elements kept at ``widths`` (what the rest's work scales with)."""
        kept = total = 0.0
        for name, entry in self.entries.items():
            if len(entry["outputs"]) > 1:
                total += entry.get("elements", 1)
                kept += entry.get("elements", 1) * widths.get(name, (0, entry["outputs"][-1]))[1] / entry["outputs"][-1]
        return kept / total if total else 1.0

    def rest_at(self, widths: Mapping[str, tuple[int, int]]) -> float:
        """The rest's seconds at ``widths``: interpolated on the calibration curve (fixed without one)."""
        points = [*self.curve, [1.0, self.rest]]
        kept = self.kept_outputs(widths)
        if len(points) == 1 or kept >= 1.0:
            return self.rest
        below = [p for p in points if p[0] <= kept]
        above = [p for p in points if p[0] >= kept]
        if not below:
            return above[0][1]
        (k0, r0), (k1, r1) = below[-1], above[0]
        return r0 if k1 == k0 else r0 + (r1 - r0) * (kept - k0) / (k1 - k0)

    def calibrate(self, points: Sequence[tuple[Mapping[str, tuple[int, int]], float]]) -> None:
        """Add rest points from whole compact models: each ``(widths, measured seconds)``."""
        for widths, measured in points:
            self.curve.append([self.kept_outputs(widths), max(0.0, measured - self.layers_seconds(widths))])
        self.curve.sort()

    def predict(self, widths: Mapping[str, tuple[int, int]]) -> float:
        """Predicted seconds of the model with each layer at ``widths`` (missing layers: dense)."""
        total = self.rest_at(widths)
        for name, entry in self.entries.items():
            w_in, w_out = widths.get(name, (entry["inputs"][-1], entry["outputs"][-1]))
            total += _bilinear(entry, w_in, w_out)
        return total

    def removed(self, widths: Mapping[str, tuple[int, int]]) -> float:
        """Predicted fraction of the dense latency removed at ``widths``."""
        return 1.0 - self.predict(widths) / self.predict({})

    def state_dict(self) -> dict[str, Any]:
        """Plain lists and floats (what the callback's state stores)."""
        return {"entries": self.entries, "rest": self.rest, "dense": self.dense, "curve": self.curve}

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> LatencyTable:
        """The table saved by :meth:`state_dict`."""
        return cls(state["entries"], state["rest"], state["dense"], state.get("curve", ()))


def _layer_shapes(model: nn.Module, layers: Sequence[PrunableLayer], batch: Any) -> tuple[dict, dict]:
    """Each layer's input and output shapes at every call in one forward pass (eval mode, no gradients)."""
    inputs: dict[str, list[tuple[int, ...]]] = {}
    outputs: dict[str, list[tuple[int, ...]]] = {}

    def record(module: nn.Module, args: Any, output: Any, name: str) -> None:
        inputs.setdefault(name, []).append(tuple(args[0].shape))
        outputs.setdefault(name, []).append(tuple(output.shape) if torch.is_tensor(output) else ())

    handles = [layer.module.register_forward_hook(lambda m, a, o, name=layer.name: record(m, a, o, name))
               for layer in layers]
    args = batch if isinstance(batch, (tuple, list)) else (batch,)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*args)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return inputs, outputs


def _bilinear(entry: Mapping[str, list], w_in: int, w_out: int) -> float:
    (i0, i1, a), (o0, o1, b) = _bracket(entry["inputs"], w_in), _bracket(entry["outputs"], w_out)
    table = entry["seconds"]
    low = table[i0][o0] * (1 - b) + table[i0][o1] * b
    high = table[i1][o0] * (1 - b) + table[i1][o1] * b
    return low * (1 - a) + high * a


def _bracket(grid: list[int], width: int) -> tuple[int, int, float]:
    """The grid indices around ``width`` and its position between them (0 at the lower)."""
    if len(grid) == 1 or width <= grid[0]:
        return 0, 0, 0.0
    for index in range(1, len(grid)):
        if width <= grid[index]:
            return index - 1, index, (width - grid[index - 1]) / (grid[index] - grid[index - 1])
    return len(grid) - 1, len(grid) - 1, 0.0


def final_check(table: LatencyTable, measured: float, target: float, config: Latency) -> tuple[float, str, bool]:
    """Compare the compact model's measured seconds with the budget.

    Returns:
        The measured fraction of the dense latency removed, a line saying so (with the prediction),
        and whether it misses ``target`` by more than ``config.tolerance``.
    """
    removed = 1.0 - measured / table.dense
    line = (f"Pruning: latency at batch {config.batch_size}: {measured * 1e3:.3f} ms, dense {table.dense * 1e3:.3f} ms "
            f"(measured before the first prune): {removed:.3f} removed, target {target:.3f}.")
    return removed, line, removed < target - config.tolerance
