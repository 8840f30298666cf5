"""Inference latency of weight pruning vs. neuron removal, side by side in one process.

The practical point of the lecture: zeroing weights (unstructured pruning) leaves every tensor dense,
so a dense kernel does exactly the same work and the model is *not* faster; removing whole neurons
(structured pruning) gives a smaller dense model that is faster roughly in proportion to the MACs it
saves. Sparse kernels sit in between.

Variants, each a separate copy of the same initial model, in eval mode under ``torch.inference_mode``:

``dense``
    The model as built.
``masked``
    90 % of the weights of every prunable layer (``Linear``/``Conv``, classifier included, biases and
    norms not) zeroed by one global magnitude ranking. The tensors stay dense.
``csr``
    The ``masked`` MLP with each ``Linear`` weight stored as a sparse CSR matrix and run as
    ``torch.sparse.addmm(bias, W_csr, h)`` on transposed activations (``F.linear(x, W_csr)`` is
    slower than dense, see FIELD_NOTES). MLPs only: PyTorch has no fast sparse convolution, so the
    CNNs skip it (recorded as skipped, with the reason).
``compact_ours``
    Neurons removed by lightning_prune: ``NeuronStructure(model, x, find_prunable_layers(model, x))``,
    each group's units scored by the mean over its member layers of the L2 norm of each unit's
    weights, the same fraction of units kept in every group (``int(size * (1 - r))``, Torch-Pruning's
    rounding), ``r`` found by bisection so that the MACs fall by the model's target factor, then
    ``structure.remove_units(model, keep)``.
``compact_torch_pruning``
    Torch-Pruning's own compact model at the same ratio ``r``: ``tp.pruner.MetaPruner`` with
    ``GroupMagnitudeImportance(p=2)`` (local pruning, one ratio for every group) and
    ``ignored_layers=[classifier]``. Its MAC count is checked to equal ours (same widths).

Correctness: ``compact_ours`` must compute the same function as the dense model with the removed
units masked (``structure.parameter_masks`` applied in place) within ``atol=1e-4``, and ``csr`` the
same as ``masked``; the benchmark raises otherwise. BatchNorm running statistics and affine
parameters are randomised first so that the check covers them.

Fine-tuning speed: one training step (forward, cross-entropy, backward, ``Adam.step()``,
``zero_grad``) of the compact models against the dense one. The compact model of lightning_prune is
made by ``remove_units`` *with* the dense model's Adam passed in (its state carried over), which is
how the library is used while fine-tuning.

Method: after a warm-up, the variants are interleaved by ``benchmarks._common.interleave``: each
repeat runs every variant once, in a new seeded random order, measured by
``torch.utils.benchmark.Timer.blocked_autorange(min_run_time=block_s)`` (the Timer's untimed sizing
calls put each variant back in its steady state after another model ran; the run's time is the
median per-call time over its blocks). We report per variant the median time per call and, against
``dense``, the median of the per-repeat speedups with their min-max (``benchmarks.stats.summarise``).
The library timings are one call each (``C.time_once``): removal changes the model, so it cannot be
repeated by a Timer. The machine is shared and noisy: read the ranges, not only the medians.

Run::

    python -m benchmarks.inference                   # full: a few minutes on 2 CPU cores
    python -m benchmarks.inference --cnn-batch 256   # the CNNs at batch 256 too (what the suite runs)
    python -m benchmarks.inference --quick           # tiny models, a few seconds (tests)
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

from lightning_prune.counting import count_macs, kept_macs
from lightning_prune.layers import find_prunable_layers
from lightning_prune.masks import apply_masks
from lightning_prune.models import LeNet300100, ResNetSmall, VGGSmall
from lightning_prune.structure import NeuronStructure
from lightning_prune.surgery import remove_groups

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks import _common as C  # noqa: E402

DEFAULT_OUT = Path(__file__).resolve().parent / "results"
SPARSITY = 0.9  # fraction of weights zeroed in ``masked`` / ``csr``
ATOL = 1e-4
NUM_CLASSES = 10
LR = 1e-3
VARIANTS = ("dense", "masked", "csr", "compact_ours", "compact_torch_pruning")
COMPACT = ("compact_ours", "compact_torch_pruning")
TRAIN_VARIANTS = ("dense", "compact_ours", "compact_torch_pruning")
# From the project's issue: compact speedup / MAC reduction at the large batch.
GOALS = {"mlp": 0.9, "cnn": 0.8}
CSR_SKIPPED = (
    "skipped: CNN. PyTorch has no fast sparse convolution (CSR matmul needs the conv unrolled by "
    "im2col, which costs more than the dense conv it replaces); only the MLPs run as CSR."
)


@dataclass
class ModelSpec:
    """One architecture of the benchmark."""

    kind: str  # "mlp" or "cnn"
    build: Callable[[], nn.Module]
    input_shape: tuple[int, ...]
    mac_target: float  # factor by which the compact variants cut the MACs
    batches: tuple[int, ...]
    train_batch: int
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _specs(quick: bool) -> dict[str, ModelSpec]:
    if quick:
        return {
            "mlp_1024_4096_4096": ModelSpec("mlp", lambda: LeNet300100(in_features=64, hidden=(128, 128)), (64,), 10.0, (1, 16), 16,
                                            note="quick: 64-128-128-10 stand-in"),
            "lenet_300_100": ModelSpec("mlp", lambda: LeNet300100(in_features=64), (64,), 10.0, (1, 16), 16,
                                       note="quick: 64-300-100-10"),
            "vgg_small": ModelSpec("cnn", lambda: VGGSmall(in_channels=3, widths=(8, 16, 16)), (3, 8, 8), 4.0, (1, 8), 8,
                                   note="quick: widths (8,16,16), 8x8 input"),
            "resnet_small": ModelSpec("cnn", lambda: ResNetSmall(in_channels=3, widths=(8, 16, 16)), (3, 8, 8), 4.0, (1, 8), 8,
                                      note="quick: widths (8,16,16), 8x8 input"),
        }
    return {
        "mlp_1024_4096_4096": ModelSpec("mlp", lambda: LeNet300100(in_features=1024, hidden=(4096, 4096)), (1024,), 10.0,
                                        (1, 256), 64, note="LeNet300100(in_features=1024, hidden=(4096, 4096))"),
        "lenet_300_100": ModelSpec("mlp", lambda: LeNet300100(in_features=784), (1, 28, 28), 10.0, (1, 256), 256,
                                   note="LeNet300100(in_features=784), MNIST-sized input"),
        "vgg_small": ModelSpec("cnn", lambda: VGGSmall(in_channels=3, widths=(64, 128, 256)), (3, 32, 32), 4.0, (1, 64), 32,
                               note="VGGSmall(in_channels=3, widths=(64, 128, 256)), 32x32 input"),
        "resnet_small": ModelSpec("cnn", lambda: ResNetSmall(in_channels=3, widths=(64, 128, 256)), (3, 32, 32), 4.0, (1, 64), 32,
                                  note="ResNetSmall(in_channels=3, widths=(64, 128, 256)), 32x32 input"),
    }


# ------------------------------------------------------------------------------------------- setup
@torch.no_grad()
def randomise_norms(model: nn.Module, seed: int = 0) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters (as if trained)."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            n = module.num_features
            module.running_mean.copy_(0.1 * torch.randn(n, generator=gen))
            module.running_var.copy_(0.5 + torch.rand(n, generator=gen))
            module.weight.copy_(0.5 + torch.rand(n, generator=gen))
            module.bias.copy_(0.1 * torch.randn(n, generator=gen))


def global_magnitude_masks(model: nn.Module, layer_names: Sequence[str], sparsity: float = SPARSITY) -> dict[str, torch.Tensor]:
    """Bool keep-masks of the layers' weights: one global magnitude ranking over all of them."""
    params = dict(model.named_parameters())
    names = [f"{n}.weight" for n in layer_names]
    scores = torch.cat([params[n].detach().abs().flatten().cpu() for n in names])
    k = int(round(sparsity * scores.numel()))
    threshold = torch.kthvalue(scores, k).values if k > 0 else scores.min() - 1
    return {n: (params[n].detach().abs() > threshold.to(params[n].device)) for n in names}


def l2_unit_scores(model: nn.Module, layer_names: Sequence[str]) -> dict[str, torch.Tensor]:
    """L2 norm of each output unit's weights (row of a Linear, filter of a Conv)."""
    modules = dict(model.named_modules())
    return {n: modules[n].weight.detach().flatten(1).norm(dim=1).cpu() for n in layer_names}


def keep_count(size: int, ratio: float) -> int:
    """Units kept of ``size`` at pruning ratio ``ratio``: Torch-Pruning's rounding (MetaPruner)."""
    return max(1, int(size * (1 - ratio)))


def keep_masks(structure: NeuronStructure, scores: Mapping[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Per group, keep the ``keep_count`` units with the largest score."""
    result = {}
    for group in structure.groups:
        mask = torch.zeros(group.size, dtype=torch.bool)
        mask[torch.topk(scores[group.key], keep_count(group.size, ratio)).indices] = True
        result[group.key] = mask
    return result


def find_ratio(model: nn.Module, example: torch.Tensor, structure: NeuronStructure, target: float) -> tuple[float, float]:
    """Bisect the uniform pruning ratio whose compact MACs are closest to ``dense / target``.

    The compact MACs of a candidate are counted on a ``meta``-device copy (no data, cheap) whose units
    are removed with the library's own removal (Torch-Pruning underneath); which units go does not
    change the MACs, so the first ones are removed.

    Returns:
        ``(ratio, mac_reduction)``.
    """
    meta = copy.deepcopy(model).to("meta")
    meta_x = example[:1].to("meta")
    dense = count_macs(meta, meta_x)[""]

    seen: dict[tuple[int, ...], float] = {}

    def reduction(ratio: float) -> float:
        widths = tuple(keep_count(g.size, ratio) for g in structure.groups)
        if widths not in seen:  # many ratios give the same widths
            probe = copy.deepcopy(meta)
            remove_groups(probe, meta_x, {g.key: list(range(g.size - w)) for g, w in zip(structure.groups, widths)})
            seen[widths] = dense / count_macs(probe, meta_x)[""]
        return seen[widths]

    lo, hi = 0.0, 0.999
    best = (0.0, 1.0)
    for _ in range(14):
        mid = (lo + hi) / 2
        red = reduction(mid)
        if abs(red - target) < abs(best[1] - target):
            best = (mid, red)
        if red < target:
            lo = mid
        else:
            hi = mid
    return best


class CsrMLP(nn.Module):
    """An MLP whose ``Linear`` weights are sparse CSR, run as ``sparse.addmm`` on transposed activations.

    Activations are kept as ``(features, batch)`` throughout, so each layer is one
    ``torch.sparse.addmm(bias[:, None], W_csr, h)`` with no transposes in between; a batch of one
    runs ``torch.mv(W_csr, h) + bias`` (measured 3x faster than ``addmm`` with one column here).
    """

    def __init__(self, mlp: LeNet300100) -> None:
        super().__init__()
        self.ops: list[tuple[str, Any]] = []
        for module in list(mlp.features) + [mlp.classifier]:
            if isinstance(module, nn.Linear):
                weight = module.weight.detach().to_sparse_csr()
                bias = module.bias.detach().unsqueeze(1).clone() if module.bias is not None else None
                self.ops.append(("linear", (weight, bias)))
            elif isinstance(module, nn.ReLU):
                self.ops.append(("relu", None))
            else:
                raise TypeError(f"CsrMLP supports Linear and ReLU only, not {type(module).__name__}")

    @property
    def linears(self) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        """``(W_csr, bias column)`` of each layer."""
        return [value for kind, value in self.ops if kind == "linear"]

    @property
    def nnz(self) -> list[int]:
        return [int(w._nnz()) for w, _ in self.linears]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1).t()
        for kind, value in self.ops:
            if kind == "relu":
                h = torch.relu(h)
            elif h.shape[1] == 1:  # one example: sparse matrix-vector product (addmm is no faster than dense here)
                weight, bias = value
                h = torch.mv(weight, h[:, 0]).unsqueeze(1)
                h = h if bias is None else h + bias
            else:
                weight, bias = value
                h = torch.sparse.mm(weight, h) if bias is None else torch.sparse.addmm(bias, weight, h)
        return h.t()


# ----------------------------------------------------------------------------------------- timing
def _summarise(times: Mapping[str, list[float]], baseline: str = "dense") -> dict[str, dict[str, Any]]:
    """:func:`benchmarks.stats.summarise` in this report's keys (ms; speedup and time fraction vs ``baseline``)."""
    out = {}
    for name, s in C.summarise(times, baseline, scale=1e3).items():
        out[name] = {
            "median_ms": s["value"]["median"],
            "min_ms": s["value"]["min"],
            "ms_per_repeat": s["runs"],
            "speedup_median": s["speedup"]["median"],
            "speedup_min": s["speedup"]["min"],
            "speedup_max": s["speedup"]["max"],
            "time_fraction_median": s["ratio"]["median"],
            "time_fraction_min": s["ratio"]["min"],
            "time_fraction_max": s["ratio"]["max"],
        }
    return out


# -------------------------------------------------------------------------------------- one model
def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max())


def bench_model(name: str, spec: ModelSpec, device: torch.device, repeats: int, block_s: float, warmup: int,
                progress: Callable[[str], None]) -> dict[str, Any]:
    # Every model is made on the CPU and then moved to ``device``. lightning_prune's index tracking
    # once built its probe tensors on the CPU, so ``parameter_masks`` / ``remove_units`` on a CUDA
    # model failed; whether the on-device path works is recorded in ``library_on_device``.
    torch.manual_seed(0)
    dense = spec.build()
    randomise_norms(dense)
    dense.eval()
    example = torch.randn(2, *spec.input_shape)
    timings: dict[str, float] = {}

    # --- lightning_prune: structure, keep-masks, masked equivalent, removal
    # One call each (C.time_once): tracing and removal are what a user pays once; removal changes the model.
    layers, timings["find_prunable_layers_s"] = C.time_once(lambda: find_prunable_layers(dense, example))
    structure, timings["neuron_structure_s"] = C.time_once(lambda: NeuronStructure(dense, example, layers))
    layer_names = [layer.name for layer in layers]
    (ratio, _), timings["ratio_search_s"] = C.time_once(lambda: find_ratio(dense, example, structure, spec.mac_target))
    keep = keep_masks(structure, structure.group_scores(l2_unit_scores(dense, layer_names)), ratio)

    unit_masks, timings["parameter_masks_s"] = C.time_once(lambda: structure.parameter_masks(dense, keep))
    units_masked = copy.deepcopy(dense)
    apply_masks(units_masked, unit_masks)

    compact_ours = copy.deepcopy(dense)
    _, timings["remove_units_s"] = C.time_once(lambda: structure.remove_units(compact_ours, keep))

    # --- Torch-Pruning's compact model at the same ratio
    compact_tp = copy.deepcopy(dense)

    def metapruner() -> None:
        tp.pruner.MetaPruner(compact_tp, example, importance=tp.importance.GroupMagnitudeImportance(p=2),
                             pruning_ratio=ratio, ignored_layers=[compact_tp.classifier]).step()

    _, timings["torch_pruning_metapruner_s"] = C.time_once(metapruner)

    # --- weight pruning: masked (dense tensors)
    masked = copy.deepcopy(dense)
    weight_masks = global_magnitude_masks(masked, layer_names)
    apply_masks(masked, weight_masks)

    # --- to the device; CSR is built there from the masked model
    cpu_dense = copy.deepcopy(dense)  # Module.to() moves in place
    dense, units_masked, compact_ours, compact_tp, masked = (
        m.to(device).eval() for m in (dense, units_masked, compact_ours, compact_tp, masked)
    )
    example = example.to(device)
    one = example[:1]
    csr = CsrMLP(masked) if spec.kind == "mlp" else None
    on_device = {"device": str(device), "ok": True}
    if device.type != "cpu":
        probe = copy.deepcopy(dense)
        try:  # the library's own path on the device (see the comment at the top)
            NeuronStructure(probe, example, find_prunable_layers(probe, example)).remove_units(probe, keep)
        except Exception as error:  # noqa: BLE001 - recorded in the report
            cause = error.__context__ or error.__cause__  # Torch-Pruning re-raises the trace's error as another
            message = f"{type(error).__name__}: {str(error)[:200]}"
            if cause is not None:
                message = f"{type(cause).__name__}: {str(cause)[:300]} (then {message})"
            on_device = {"device": str(device), "ok": False, "error": message}
            progress(f"  lightning_prune on {device} failed ({on_device['error'][:120]}); models made on the CPU")
        del probe

    models: dict[str, nn.Module | None] = {
        "dense": dense, "masked": masked, "csr": csr, "compact_ours": compact_ours, "compact_torch_pruning": compact_tp,
    }

    # --- correctness
    check_x = torch.randn(8, *spec.input_shape, device=device)
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False  # exact fp32 for the check
    with torch.inference_mode():
        ref_units = units_masked(check_x)
        diffs = {"compact_ours_vs_units_masked": _max_diff(compact_ours(check_x), ref_units)}
        if csr is not None:
            diffs["csr_vs_masked"] = _max_diff(csr(check_x), masked(check_x))
        diffs["output_scale_max_abs"] = float(ref_units.abs().max())
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    for key, value in diffs.items():
        if key != "output_scale_max_abs" and not value <= ATOL:
            raise AssertionError(f"{name} on {device}: {key} max |diff| = {value:.3g} > atol {ATOL}")

    # --- MACs per example
    dense_macs = count_macs(dense, one)
    macs: dict[str, dict[str, float]] = {}
    eff_masked = kept_macs(dense_macs, weight_masks)
    macs["dense"] = {"computed": dense_macs[""], "effective": dense_macs[""]}
    macs["masked"] = {"computed": count_macs(masked, one)[""], "effective": eff_masked}
    if csr is not None:
        # the CSR kernel multiplies only the stored nonzeros: one MAC per nonzero per example
        macs["csr"] = {"computed": float(sum(csr.nnz)), "effective": eff_masked, "dense_shaped": dense_macs[""]}
    for variant in COMPACT:
        m = count_macs(models[variant], one)[""]
        macs[variant] = {"computed": m, "effective": m}
    for m in macs.values():
        m["reduction"] = dense_macs[""] / m["effective"]
    params = {v: sum(p.numel() for p in mdl.parameters()) for v, mdl in models.items() if isinstance(mdl, nn.Module)}
    if csr is not None:
        params["csr"] = sum(csr.nnz) + sum(int(b.numel()) for _, b in csr.linears if b is not None)
    ours_shapes = {n: tuple(p.shape) for n, p in compact_ours.named_parameters()}
    tp_shapes = {n: tuple(p.shape) for n, p in compact_tp.named_parameters()}
    widths = {g.key: int(keep[g.key].sum()) for g in structure.groups}

    # --- inference latency
    inference = []
    for batch in spec.batches:
        progress(f"  {name} {device.type} batch {batch}")
        x = torch.randn(batch, *spec.input_shape, device=device)
        fns = {v: (lambda m=m: m(x)) for v, m in models.items() if m is not None}
        with torch.inference_mode():
            times = C.interleave(fns, repeats, min_run_time=block_s, warmup=warmup)
        summary = _summarise(times)
        vs_tp = _summarise(times, "compact_torch_pruning")["compact_ours"]
        summary["compact_ours"]["time_vs_torch_pruning_median"] = vs_tp["time_fraction_median"]
        summary["compact_ours"]["time_vs_torch_pruning_min"] = vs_tp["time_fraction_min"]
        summary["compact_ours"]["time_vs_torch_pruning_max"] = vs_tp["time_fraction_max"]
        for v, s in summary.items():
            s["speedup_over_mac_reduction"] = s["speedup_median"] / macs[v]["reduction"]
        if csr is None:
            summary["csr"] = {"skipped": CSR_SKIPPED}
        inference.append({"batch": batch, "variants": {v: summary[v] for v in VARIANTS}})

    # --- fine-tuning step
    progress(f"  {name} {device.type} training step, batch {spec.train_batch}")
    training = bench_training(cpu_dense, structure, keep, compact_tp, spec, device, repeats, block_s, warmup,
                              carry_optimizer=on_device["ok"])
    training["variants"]["compact_ours"]["mac_fraction"] = macs["compact_ours"]["effective"] / dense_macs[""]
    training["variants"]["compact_torch_pruning"]["mac_fraction"] = macs["compact_torch_pruning"]["effective"] / dense_macs[""]
    training["variants"]["dense"]["mac_fraction"] = 1.0
    timings["remove_units_with_adam_s"] = training.pop("remove_units_with_adam_s")

    return {
        "kind": spec.kind,
        "architecture": spec.note,
        "input_shape": list(spec.input_shape),
        "device": str(device),
        "device_name": C.device_name(device),
        "mac_target": spec.mac_target,
        "pruning_ratio": ratio,
        "kept_units_per_group": widths,
        "units_per_group": structure.sizes,
        "torch_pruning_same_shapes_as_ours": ours_shapes == tp_shapes,
        "weight_sparsity_of_masked": 1 - sum(int(m.sum()) for m in weight_masks.values()) / sum(m.numel() for m in weight_masks.values()),
        "macs_per_example": macs,
        "params": params,
        "correctness": {**diffs, "atol": ATOL},
        "library_timings_s": timings,
        "library_on_device": on_device,
        "repeats": repeats,
        "inference": inference,
        "training": training,
    }


def bench_training(dense: nn.Module, structure: NeuronStructure, keep: Mapping[str, torch.Tensor], compact_tp: nn.Module,
                   spec: ModelSpec, device: torch.device, repeats: int, block_s: float, warmup: int,
                   carry_optimizer: bool = True) -> dict[str, Any]:
    """Per-step time of forward + cross-entropy + backward + Adam step, compact vs dense.

    ``dense`` is the CPU model. With ``carry_optimizer`` the compact model of lightning_prune is
    made on ``device`` by ``remove_units`` with the dense model's Adam passed in; without it (the
    library's removal fails on that device) it is made on the CPU, moved, and gets a fresh Adam.
    """
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(spec.train_batch, *spec.input_shape, generator=gen).to(device)
    y = torch.randint(0, NUM_CLASSES, (spec.train_batch,), generator=gen).to(device)

    def trainer(model: nn.Module, optimizer: torch.optim.Optimizer) -> Callable[[], None]:
        def step() -> None:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step

    runs = {}
    model = copy.deepcopy(dense).to(device).train()
    runs["dense"] = trainer(model, torch.optim.Adam(model.parameters(), lr=LR))
    # lightning_prune while fine-tuning: Adam built on the dense model, one step, then removal with
    # the optimizer carried over (parameters and moments sliced to the survivors).
    removal_s = None
    if carry_optimizer:
        model = copy.deepcopy(dense).to(device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
        trainer(model, optimizer)()
        if device.type != "cpu":  # the structure's example input must be on the model's device
            ex = structure.example_input.to(device)
            structure = NeuronStructure(model, ex, find_prunable_layers(model, ex))
        _, removal_s = C.time_once(lambda: structure.remove_units(model, keep, optimizers=[optimizer]), device)
    else:
        model = copy.deepcopy(dense).train()
        structure.remove_units(model, keep)
        model = model.to(device)
        optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    runs["compact_ours"] = trainer(model, optimizer)
    model = copy.deepcopy(compact_tp).train()
    runs["compact_torch_pruning"] = trainer(model, torch.optim.Adam(model.parameters(), lr=LR))

    # blocked_autorange, not a fixed count: the models are independent and nothing is checked after the
    # steps, so a faster model may take more of them; the figure is the steady-state time per step.
    times = C.interleave(runs, repeats, min_run_time=block_s, warmup=warmup)
    summary = _summarise(times)
    return {"batch": spec.train_batch, "optimizer": "Adam", "optimizer_carried_over_by_remove_units": carry_optimizer,
            "variants": summary, "remove_units_with_adam_s": removal_s}


# ------------------------------------------------------------------------------------------ report
def _fmt_macs(value: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g}{unit}"
    return f"{value:.3g}"


def _fmt_s(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _speedup(s: Mapping[str, Any]) -> str:
    return f"{s['speedup_median']:.2f}× [{s['speedup_min']:.2f}–{s['speedup_max']:.2f}]"


def goals(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per (model, device): compact speedup ÷ MAC reduction at the largest batch, and ours vs Torch-Pruning."""
    rows = []
    for name, per_device in report["results"].items():
        for device, r in per_device.items():
            big = max(r["inference"], key=lambda e: e["batch"])
            ours = big["variants"]["compact_ours"]
            goal = GOALS[r["kind"]]
            rows.append({
                "model": name, "device": device, "batch": big["batch"], "goal": goal,
                "compact_ours_ratio": ours["speedup_over_mac_reduction"],
                "compact_torch_pruning_ratio": big["variants"]["compact_torch_pruning"]["speedup_over_mac_reduction"],
                "met": ours["speedup_over_mac_reduction"] >= goal,
                "ours_time_vs_tp": ours["time_vs_torch_pruning_median"],
                "ours_time_vs_tp_min": ours["time_vs_torch_pruning_min"],
                "ours_time_vs_tp_max": ours["time_vs_torch_pruning_max"],
                "not_slower_than_tp": ours["time_vs_torch_pruning_median"] <= 1.05,
                "masked_speedup": big["variants"]["masked"]["speedup_median"],
            })
    return rows


def to_markdown(report: Mapping[str, Any]) -> str:
    m, c = report["machine"], report["config"]
    lines = [
        "# Inference: weight pruning vs neuron removal",
        "",
        f"Command: `{c['command']}`",
        "",
        C.machine_line(m, report.get("load_average_at_end")) + f" CUDA available: {m['cuda_available']}"
        + (f" ({m['cuda_device']})" if m["cuda_device"] else "") + f". Devices benchmarked: {', '.join(c['devices'])}.",
        "",
        (f"Precision: {c['precision']}. " if c.get("precision") else "")
        + f"Quick mode: {c['quick']}. {c['repeats']} interleaved repeats (seeded random order each repeat; each run = "
        f"`torch.utils.benchmark.Timer.blocked_autorange(min_run_time={c['block_s']})`, its median per-call time). "
        "Speedup = dense time / variant time, median of the per-repeat ratios [min–max]. The machine is shared and "
        "noisy: read the ranges. MACs per example from `lightning_prune.counting.count_macs` (FlopCounterMode). "
        "*computed* = multiply-adds the kernel does; *effective* = MACs of kept weights; MAC reduction = dense ÷ effective. "
        f"`masked` zeroes {SPARSITY:.0%} of the prunable weights by one global magnitude ranking. "
        "`csr` runs the masked MLP's Linear layers as `torch.sparse.addmm(b, W_csr, h)` (`torch.mv` at batch 1); it is skipped for CNNs "
        "(no fast sparse convolution in PyTorch). Compact variants remove the same fraction of units in every group "
        "(ours: L2 norm of each unit's weights; Torch-Pruning: MetaPruner + GroupMagnitudeImportance(p=2)).",
        "",
        "## Latency",
        "",
        "| model | device | batch | variant | median ms | speedup vs dense | MACs/ex computed | MACs/ex effective | MAC reduction | speedup ÷ MAC red. |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, per_device in report["results"].items():
        for device, r in per_device.items():
            for entry in r["inference"]:
                for v in VARIANTS:
                    s = entry["variants"][v]
                    if "skipped" in s:
                        lines.append(f"| {name} | {device} | {entry['batch']} | {v} | skipped (CNN) | | | | | |")
                        continue
                    mac = r["macs_per_example"][v]
                    ratio = f"{s['speedup_over_mac_reduction']:.2f}" if v != "dense" else ""
                    lines.append(
                        f"| {name} | {device} | {entry['batch']} | {v} | {s['median_ms']:.3g} | {_speedup(s)} | "
                        f"{_fmt_macs(mac['computed'])} | {_fmt_macs(mac['effective'])} | {mac['reduction']:.2f}× | {ratio} |"
                    )
    lines += [
        "",
        "## Goals",
        "",
        f"From the issue: compact speedup ≥ {GOALS['mlp']} of the MAC reduction at the large batch for MLPs, "
        f"≥ {GOALS['cnn']} for CNNs; compact_ours never slower than Torch-Pruning at equal MACs "
        "(ours ÷ TP time, median of per-repeat ratios; ≤ 1.05 counted as within noise).",
        "",
        "| model | device | batch | goal | ours: speedup ÷ MAC red. | TP: speedup ÷ MAC red. | met | ours ÷ TP time | not slower than TP | masked speedup |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for g in report["goals"]:
        lines.append(
            f"| {g['model']} | {g['device']} | {g['batch']} | ≥ {g['goal']} | {g['compact_ours_ratio']:.2f} | "
            f"{g['compact_torch_pruning_ratio']:.2f} | {'yes' if g['met'] else 'NO'} | {g['ours_time_vs_tp']:.3f} "
            f"[{g['ours_time_vs_tp_min']:.2f}–{g['ours_time_vs_tp_max']:.2f}] | {'yes' if g['not_slower_than_tp'] else 'NO'} | "
            f"{g['masked_speedup']:.2f}× |"
        )
    lines += [
        "",
        "## Fine-tuning step (forward + backward + Adam step)",
        "",
        "| model | device | batch | variant | median ms/step | time fraction of dense | MAC fraction |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, per_device in report["results"].items():
        for device, r in per_device.items():
            t = r["training"]
            for v in TRAIN_VARIANTS:
                s = t["variants"][v]
                lines.append(
                    f"| {name} | {device} | {t['batch']} | {v} | {s['median_ms']:.3g} | {s['time_fraction_median']:.3f} "
                    f"[{s['time_fraction_min']:.3f}–{s['time_fraction_max']:.3f}] | {s['mac_fraction']:.3f} |"
                )
    lines += [
        "",
        "## Models, pruning and correctness",
        "",
        "| model | device | architecture | ratio r | kept units / group | same shapes as TP | masked sparsity | "
        "max abs diff ours vs units-masked | max abs diff csr vs masked | output scale |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, per_device in report["results"].items():
        for device, r in per_device.items():
            kept = ", ".join(f"{k}: {v}/{r['units_per_group'][k]}" for k, v in r["kept_units_per_group"].items())
            cor = r["correctness"]
            csr = f"{cor['csr_vs_masked']:.2g}" if "csr_vs_masked" in cor else "n/a"
            lines.append(
                f"| {name} | {device} | {r['architecture']} | {r['pruning_ratio']:.4f} | {kept} | "
                f"{r['torch_pruning_same_shapes_as_ours']} | {r['weight_sparsity_of_masked']:.3f} | "
                f"{cor['compact_ours_vs_units_masked']:.2g} | {csr} | {cor['output_scale_max_abs']:.3g} |"
            )
    lines += [
        "",
        "## Library timings (seconds, one call each; noisy machine)",
        "",
        "All of these run on the CPU, also in the rows of another device: the models are built and pruned on the "
        "CPU and then moved (see below for why). `remove_units + Adam` is the removal that carries a stepped Adam "
        "over; it runs on the device itself and is n/a where the library's removal fails there.",
        "",
        "| model | device | find_prunable_layers | NeuronStructure | ratio search (meta) | parameter_masks | remove_units | remove_units + Adam | TP MetaPruner |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, per_device in report["results"].items():
        for device, r in per_device.items():
            t = r["library_timings_s"]
            lines.append(
                f"| {name} | {device} | {t['find_prunable_layers_s']:.3f} | {t['neuron_structure_s']:.3f} | "
                f"{t['ratio_search_s']:.3f} | {t['parameter_masks_s']:.3f} | {t['remove_units_s']:.3f} | "
                f"{_fmt_s(t['remove_units_with_adam_s'])} | {t['torch_pruning_metapruner_s']:.3f} |"
            )
    for name, per_device in report["results"].items():
        for device, r in per_device.items():
            od = r["library_on_device"]
            if device != "cpu":
                status = "works" if od["ok"] else f"FAILS (`{od['error']}`); the models were made on the CPU and moved"
                lines.append(f"\nlightning_prune's `parameter_masks`/`remove_units` on {device} ({name}): {status}.")
    if c.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {n}" for n in c["notes"]]
    return "\n".join(lines) + "\n"


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(quick: bool = False, out: Path = DEFAULT_OUT, repeats: int | None = None, devices: Sequence[str] | None = None,
        models: Sequence[str] | None = None, command: str | None = None, block_s: float | None = None,
        threads: int | None = None, cnn_batch: int | None = None, notes: Sequence[str] = (),
        progress: Callable[[str], None] = _progress) -> dict[str, Any]:
    """Run the benchmark and write ``inference.json`` and ``inference.md`` into ``out``.

    Args:
        quick: Tiny models, 2 repeats, short blocks: a few seconds (for tests).
        out: Output folder (created).
        repeats: Interleaved repeats per measurement (default 2 quick, 9 full).
        devices: Devices to run on; default CPU, plus CUDA when available.
        models: Subset of model names (default all).
        command: The command line to record (default: this process's argv).
        block_s: Target seconds per timed block (default 0.005 quick, 0.1 full).
        threads: ``torch.set_num_threads`` for the run (restored after). Default: 1 in quick mode (on a
            loaded 2-core machine OpenMP threads waiting for time slices make tiny ops 100x slower),
            else torch's default.
        cnn_batch: The large batch of the CNNs (default 64 full; the MLPs always use 256).
        notes: Extra lines for the report's notes.

    Returns:
        The report written to ``inference.json``.
    """
    if threads is None and quick:
        threads = 1
    previous_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(quick, Path(out), repeats, devices, models, command, block_s, cnn_batch, list(notes), progress)
    finally:
        torch.set_num_threads(previous_threads)


def _run(quick: bool, out: Path, repeats: int | None, devices: Sequence[str] | None, models: Sequence[str] | None,
         command: str | None, block_s: float | None, cnn_batch: int | None, extra_notes: list[str],
         progress: Callable[[str], None]) -> dict[str, Any]:
    specs = _specs(quick)
    if cnn_batch is not None:
        for spec in specs.values():
            if spec.kind == "cnn":
                spec.batches = (1, cnn_batch)
    if models is not None:
        unknown = set(models) - set(specs)
        if unknown:
            raise ValueError(f"Unknown models {sorted(unknown)}; expected some of {list(specs)}")
        specs = {k: v for k, v in specs.items() if k in models}
    if devices is None:
        devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    repeats = repeats or (2 if quick else 9)
    block_s = block_s if block_s is not None else (0.005 if quick else 0.1)
    warmup = 1 if quick else 3
    notes = [
        "Batches: " + "; ".join(f"{n} {' and '.join(map(str, sp.batches))}" for n, sp in specs.items())
        + ". Goals are read at each model's largest batch.",
        "csr is skipped for the CNNs (no fast sparse convolution in PyTorch).",
        "Training-step batch: " + "; ".join(f"{n} {sp.train_batch}" for n, sp in specs.items()) + ".",
        "On CUDA the correctness check runs with TF32 off; timings use PyTorch's defaults.",
    ] + extra_notes
    started = time.perf_counter()
    report: dict[str, Any] = {
        "machine": {**C.machine_info("cpu"), "device": ", ".join(devices),
                    "device_name": ", ".join(C.device_name(torch.device(d)) for d in devices)},
        "config": {
            "quick": quick, "repeats": repeats, "block_s": block_s, "warmup_calls": warmup, "devices": list(devices),
            "order": C.ORDER, "timer": "torch.utils.benchmark.Timer.blocked_autorange(min_run_time=block_s) per variant per repeat",
            "sparsity_of_masked": SPARSITY, "atol": ATOL, "goals_speedup_over_mac_reduction": GOALS,
            "command": command or C.command_line(), "notes": notes, "precision": "fp32",
        },
        "results": {},
    }
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*[Ss]parse CSR tensor support is in beta.*")
        for name, spec in specs.items():
            report["results"][name] = {}
            for dev in devices:
                progress(f"{name} on {dev}")
                report["results"][name][dev] = bench_model(name, spec, torch.device(dev), repeats, block_s, warmup, progress)
                _write(report, out, started, final=False)  # partial results survive an interrupted run
    return _write(report, out, started)


def _write(report: dict[str, Any], out: Path, started: float, final: bool = True) -> dict[str, Any]:
    report["name"] = "inference"
    report["goals"] = goals(report)
    report["load_average_at_end"] = C.load_average()
    report["seconds"] = time.perf_counter() - started
    out.mkdir(parents=True, exist_ok=True)
    if final:
        report["plots"] = plot(report, out)
    (out / "inference.json").write_text(json.dumps(report, indent=1))
    (out / "inference.md").write_text(to_markdown(report))
    return report


# ----------------------------------------------------------------------------------- suite (run_all)
def suite_section(report: Mapping[str, Any]) -> str:
    """Speedups against dense at each batch, with the MAC reduction, for RESULTS.md."""
    lines = ["Inference speedup against dense (median of per-repeat ratios [min–max]); *÷ MACs* = speedup ÷ MAC reduction:",
             "", "| model | device | batch | masked 90 % | sparse CSR 90 % | compact, ours | compact, Torch-Pruning | "
             "MAC reduction | ours ÷ MACs |", "|---|---|---:|---|---|---|---|---:|---:|"]
    for name, per_device in report["results"].items():
        for device, r in per_device.items():
            for entry in r["inference"]:
                v = entry["variants"]
                csr = "—" if "skipped" in v["csr"] else _speedup(v["csr"])
                lines.append(f"| {name} | {device} | {entry['batch']} | {_speedup(v['masked'])} | {csr} | "
                             f"{_speedup(v['compact_ours'])} | {_speedup(v['compact_torch_pruning'])} | "
                             f"{r['macs_per_example']['compact_ours']['reduction']:.2f}× | "
                             f"{v['compact_ours']['speedup_over_mac_reduction']:.2f} |")
    lines += ["", "Fine-tuning step of the compact model (forward + backward + Adam), time / dense step:", "",
              "| model | device | batch | compact, ours | compact, Torch-Pruning | MAC fraction |", "|---|---|---:|---|---|---:|"]
    for name, per_device in report["results"].items():
        for device, r in per_device.items():
            t = r["training"]["variants"]
            lines.append(f"| {name} | {device} | {r['training']['batch']} | {t['compact_ours']['time_fraction_median']:.3f} "
                         f"[{t['compact_ours']['time_fraction_min']:.2f}–{t['compact_ours']['time_fraction_max']:.2f}] | "
                         f"{t['compact_torch_pruning']['time_fraction_median']:.3f} | {t['compact_ours']['mac_fraction']:.3f} |")
    return "\n".join(lines) + "\n"


def suite_goals(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for g in report["goals"]:
        rows.append({"part": "inference", "subject": f"{g['model']} ({g['device']}, batch {g['batch']})",
                     "goal": f"compact speedup ≥ {g['goal']} of the MAC reduction",
                     "figure": f"{g['compact_ours_ratio']:.2f} (Torch-Pruning {g['compact_torch_pruning_ratio']:.2f}; "
                               f"masked weights {g['masked_speedup']:.2f}×)",
                     "met": g["met"], "margin": f"{g['compact_ours_ratio'] - g['goal']:+.2f}"})
        rows.append({"part": "inference", "subject": f"{g['model']} ({g['device']}, batch {g['batch']})",
                     "goal": "compact model not slower than Torch-Pruning's (≤ 1.05× its time)",
                     "figure": f"{g['ours_time_vs_tp']:.3f}× [{g['ours_time_vs_tp_min']:.2f}–{g['ours_time_vs_tp_max']:.2f}]",
                     "met": g["not_slower_than_tp"], "margin": f"{1.05 - g['ours_time_vs_tp']:+.3f}"})
    return rows


def plot(report: Mapping[str, Any], out: Path) -> list[str]:
    """``inference.png``: per model, speedup of each variant at its largest batch against the MAC reduction."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(name, device, r) for name, per_device in report["results"].items() for device, r in per_device.items()]
    fig, ax = plt.subplots(figsize=(max(7, 1.9 * len(rows)), 4.4))
    names = ["masked", "csr", "compact_ours", "compact_torch_pruning"]
    width = 0.8 / len(names)
    for i, v in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for j, (_, _, r) in enumerate(rows):
            s = max(r["inference"], key=lambda e: e["batch"])["variants"][v]
            if "skipped" in s:
                continue
            xs.append(j + (i - 1.5) * width)
            ys.append(s["speedup_median"])
            lo.append(s["speedup_median"] - s["speedup_min"])
            hi.append(s["speedup_max"] - s["speedup_median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=v)
    for j, (_, _, r) in enumerate(rows):
        ax.hlines(r["macs_per_example"]["compact_ours"]["reduction"], j - 0.45, j + 0.45, colors="black", linestyles="--",
                  lw=1.2, label="MAC reduction of the compact models" if j == 0 else None)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), [f"{n}\n{d}, batch {max(e['batch'] for e in r['inference'])}" for n, d, r in rows],
                  fontsize=7)
    ax.set_ylabel("speedup vs dense (log)")
    ax.set_title("Inference speedup at the largest batch (dashed: MAC reduction)")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3, axis="y", which="both")
    fig.tight_layout()
    path = Path(out) / "inference.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path.name]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny models and repeats (a few seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 9; 2 with --quick)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default benchmarks/results)")
    parser.add_argument("--device", action="append", default=None, help="cpu or cuda (repeatable; default cpu, plus cuda if available)")
    parser.add_argument("--model", action="append", default=None, help="run only this model (repeatable)")
    parser.add_argument("--block-s", type=float, default=None, help="target seconds per timed block")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's; 1 with --quick)")
    parser.add_argument("--cnn-batch", type=int, default=None, help="large batch of the CNNs (default 64)")
    parser.add_argument("--note", action="append", default=[], help="extra line for the report's notes (repeatable)")
    args = parser.parse_args(argv)
    report = run(quick=args.quick, out=args.out, repeats=args.repeats, devices=args.device, models=args.model,
                 block_s=args.block_s, threads=args.threads, cnn_batch=args.cnn_batch, notes=args.note)
    print(to_markdown(report))
    print(f"wrote {args.out / 'inference.json'} and {args.out / 'inference.md'}", file=sys.stderr)


if __name__ == "__main__":
    main()
