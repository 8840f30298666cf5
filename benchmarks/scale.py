"""How scoring, ranking and surgery scale with the model: time and peak memory against width.

Stages, each on the model as built (random weights; the work does not depend on the values):

``structure``
    ``NeuronStructure(model, x, find_prunable_layers(model, x))``: Torch-Pruning's dependency trace,
    the neuron groups and the APoZ observation sites.
``scoring``
    ``score_layers(APoZ(), layers, "neuron", 0, model, batches, structure.sites)``: one calibration
    pass with the streaming ``ZeroActivationRate`` metrics (one integer count per unit). Shown next
    to ``forward``: the same batches through the model under ``no_grad`` without any statistics.
``ranking``
    ``ranking.select_units(structure.group_scores(scores), keep, 0.5, scope="global")``.
``masks``
    ``structure.parameter_masks(model, keep)``: the parameter entries the pruned units own (index
    tracking on a float64 copy), what the callback applies each cycle.
``surgery``
    ``structure.remove_units(model, keep)``: half of every group removed for real (a fresh copy of
    the model each repeat; the copy is not timed).

Memory, per stage: ``peak tensor bytes`` is the largest amount of tensor storage allocated inside
the stage and alive at once (a ``TorchDispatchMode`` that follows every allocation and free, see
``benchmarks/_common.py``; exact for tensors, blind to Python objects); ``RSS growth`` the growth of
the process's resident set (sampled; the allocator reuses freed pages, so it is coarse); on CUDA
also ``torch.cuda.max_memory_allocated``. ``statistic bytes`` is the size of APoZ's metric states
after the pass: what scoring keeps.

Models: an MLP and a VGG-style CNN at widths x1, x2, x4, x8, x16, and a ResNet-50-sized bottleneck
ResNet (torchvision's if installed, else the hand-built one below: same layout, 25.6 M parameters,
on a 3x32x32 input). Growth exponents are the least-squares slopes of log(time) and log(memory)
against log(width). A second sweep keeps the model fixed and varies the calibration set (number of
batches, batch size), with a naive APoZ that keeps every activation for contrast: the statistic is
per unit, so it does not grow with the data.

Times are medians of repeats with min-max. Run::

    python -m benchmarks.scale             # full: about a minute on 2 quiet cores
    python -m benchmarks.scale --quick     # widths x1, x2, a small ResNet: seconds

Transformer surgery memory (run alone; writes ``scale_transformer.{json,md}``): a Hugging Face
``BertModel`` with BERT-base's configuration at random init (109.5 M parameters, no download),
half of every group's units (attention heads and FFN units) removed, peak tensor memory of each
stage *including the model itself* divided by the model's bytes (``structure`` includes the
masked-vs-removed verification)::

    python -m benchmarks.scale --transformer            # BERT-base: a few minutes
    python -m benchmarks.scale --transformer --quick    # a 2-layer BERT: seconds
    python -m benchmarks.scale --transformer --baseline OLD.json   # also show an earlier run's ratios
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from torch import nn

from benchmarks import _common as C

NAME = "scale"
WIDTHS = (1, 2, 4, 8, 16)
QUICK_WIDTHS = (1, 2)
STAGES = ("structure", "forward", "scoring", "ranking", "masks", "surgery")


# -------------------------------------------------------------------------------------- ResNet-50
class Bottleneck(nn.Module):
    """ResNet bottleneck: 1x1 reduce, 3x3 (stride), 1x1 expand (x4), each with BN; shortcut; ReLU."""

    expansion = 4

    def __init__(self, c_in: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(c_in, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, out, 1, stride=stride, bias=False), nn.BatchNorm2d(out))
        self.relu3 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu1(self.bn1(self.conv1(x)))
        y = self.relu2(self.bn2(self.conv2(y)))
        return self.relu3(self.bn3(self.conv3(y)) + self.shortcut(x))


class BottleneckResNet(nn.Module):
    """ResNet-50's layout (He et al. 2016): 7x7 stem, max-pool, stages of (3, 4, 6, 3) bottlenecks.

    ``BottleneckResNet()`` has torchvision's ``resnet50()`` parameter count (25,557,032 with 1000
    classes); ``base`` scales every width (64 is ResNet-50).
    """

    def __init__(self, blocks: Sequence[int] = (3, 4, 6, 3), base: int = 64, num_classes: int = 1000,
                 in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, base, 7, stride=2, padding=3, bias=False), nn.BatchNorm2d(base),
                                  nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1))
        stages, c = [], base
        for i, n in enumerate(blocks):
            planes = base * 2 ** i
            for j in range(n):
                stages.append(Bottleneck(c, planes, stride=2 if i > 0 and j == 0 else 1))
                c = planes * Bottleneck.expansion
        self.layers = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.flatten(self.pool(self.layers(self.stem(x)))))


def resnet50(quick: bool) -> tuple[nn.Module, str]:
    """torchvision's ResNet-50 when installed, else :class:`BottleneckResNet` (tiny in quick mode)."""
    if quick:
        return BottleneckResNet(blocks=(1, 1, 1, 1), base=8, num_classes=10), "quick: bottleneck ResNet (1,1,1,1), base 8"
    try:
        import torchvision

        return torchvision.models.resnet50(), f"torchvision {torchvision.__version__} resnet50()"
    except ImportError:
        return BottleneckResNet(), "hand-built bottleneck ResNet-50 (torchvision not installed)"


# ------------------------------------------------------------------------------------- transformer
def bert(quick: bool) -> tuple[nn.Module, torch.Tensor, str]:
    """BERT-base (Hugging Face ``BertModel``, random init) and a batch of 16 tokens; a 2-layer BERT when quick."""
    from transformers import BertConfig, BertModel

    if quick:
        config = BertConfig(vocab_size=1024, hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=512, max_position_embeddings=64)
        note = "quick: BertModel, 2 layers, hidden 128, 4 heads, FFN 512"
    else:
        config = BertConfig()  # bert-base-uncased's: 30522 tokens, 12 layers, hidden 768, 12 heads, FFN 3072
        note = "BertModel(BertConfig()): BERT-base, 12 layers, hidden 768, 12 heads, FFN 3072"
    torch.manual_seed(0)
    tokens = torch.randint(0, config.vocab_size, (1, 16), generator=torch.Generator().manual_seed(0))
    return BertModel(config).eval(), tokens, note


def _ratio(result: Mapping[str, Any], model_bytes: int) -> float:
    """Peak of all tensor storage alive in the stage, the model included, over the model's bytes.

    The meter counts what the stage allocates (the model was allocated before), and never
    subtracts the model's own tensors when the stage frees them: an upper bound.
    """
    return (model_bytes + result["peak_tensor_bytes"]) / model_bytes


def bench_transformer(quick: bool, repeats: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Structure (with verification), masks and surgery of half the heads and FFN units of a BERT."""
    from lightning_prune.layers import find_prunable_layers
    from lightning_prune.structure import NeuronStructure

    model, tokens, note = bert(quick)
    model_bytes = sum(t.numel() * t.element_size() for t in list(model.parameters()) + list(model.buffers()))
    res: dict[str, Any] = {"architecture": note, "params": sum(p.numel() for p in model.parameters()),
                           "model_bytes": model_bytes, "tokens": list(tokens.shape)}
    layers = find_prunable_layers(model, tokens)
    holder: dict[str, Any] = {}

    def structure() -> None:
        holder["structure"] = NeuronStructure(model, tokens, layers)

    say("transformer: structure (with verification)")
    res["structure"] = _measure(structure, torch.device("cpu"), repeats)
    st = holder["structure"]
    heads = [g for g in st.groups if g.unit_of is not None]
    res["groups"] = {"heads": len(heads), "other": len(st.groups) - len(heads)}
    res["units"] = sum(st.sizes.values())
    res["head_units"] = sum(g.size for g in heads)
    keep = {g.key: torch.arange(g.size) % 2 == 0 for g in st.groups}  # every other unit: half of each group
    res["removed_units"] = sum(int((~mask).sum()) for mask in keep.values())
    say("transformer: masks")
    res["masks"] = _measure(lambda: st.parameter_masks(model, keep), torch.device("cpu"), repeats)
    say("transformer: surgery")
    res["surgery"] = _measure(lambda m: st.remove_units(m, keep), torch.device("cpu"), repeats,
                              setup=lambda: copy.deepcopy(model))
    compact = copy.deepcopy(model)
    st.remove_units(compact, keep)
    res["params_after_surgery"] = sum(p.numel() for p in compact.parameters())
    for stage in ("structure", "masks", "surgery"):
        res[stage]["peak_over_model"] = _ratio(res[stage], model_bytes)
    return res


def transformer_markdown(report: Mapping[str, Any]) -> str:
    """``scale_transformer.md``: peak memory over the model's bytes per stage (and an earlier run's, if given)."""
    r, c = report["transformer"], report["config"]
    lines = ["# Scale: surgery memory on a transformer", "", f"Command: `{c['command']}`", "",
             C.machine_line(report["machine"], report.get("load_average_at_end")), "",
             f"Model: {r['architecture']}, {r['params'] / 1e6:.1f} M parameters ({r['model_bytes'] / 2**20:.0f} MiB of fp32 "
             f"parameters and buffers), input {r['tokens'][0]}x{r['tokens'][1]} tokens. {r['groups']['heads']} head groups "
             f"({r['head_units']} heads) and {r['groups']['other']} FFN groups, {r['units']:,} units; "
             f"{r['removed_units']:,} removed (every other unit of each group): {r['params'] / 1e6:.1f} M -> "
             f"{r['params_after_surgery'] / 1e6:.1f} M parameters.", "",
             "Peak = the largest amount of tensor storage alive during the stage, the model included, divided by the "
             "model's bytes (the model plus what the stage allocates; an upper bound, see `_ratio`). `structure` is "
             "`NeuronStructure(model, x, layers)` with its masked-vs-removed verification; `masks` is "
             "`structure.parameter_masks(model, keep)` (the bool masks it returns are counted); `surgery` is "
             "`structure.remove_units(model, keep)`.", ""]
    base = report.get("baseline")
    head = "| stage | seconds | peak MiB allocated | peak ÷ model |" + (" before: seconds | before: peak ÷ model |" if base else "")
    lines += [head, "|---|---|---:|---:|" + ("---|---:|" if base else "")]
    for stage in ("structure", "masks", "surgery"):
        m = r[stage]
        row = f"| {stage} | {_s(m)} | {_mb(m['peak_tensor_bytes'])} | {m['peak_over_model']:.2f}x |"
        if base:
            b = base["transformer"][stage]
            row += f" {_s(b)} | {b['peak_over_model']:.2f}x |"
        lines.append(row)
    if base:
        lines += ["", f"Before: {base['config'].get('label', 'an earlier run')} (`{base['config']['command']}`), same machine."]
    lines += ["", "Goals: " + "; ".join(f"{g['goal']}: {g['figure']} ({'met' if g['met'] else 'NOT met'})"
                                        for g in report["goals"]) + "."]
    return "\n".join(lines) + "\n"


def transformer_goals(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Issue 13: surgery on a transformer of >= 100 M parameters peaks at <= 1.5x the model (plus O(units))."""
    r = report["transformer"]
    ratio = r["surgery"]["peak_over_model"]
    return [{"part": NAME, "model": r["architecture"].split(":")[0], "goal": "surgery peak <= 1.5x the model",
             "figure": f"{ratio:.2f}x (masks {r['masks']['peak_over_model']:.2f}x, structure with verification "
                       f"{r['structure']['peak_over_model']:.2f}x)",
             "met": ratio <= 1.5 and r["params"] >= (0 if report["config"]["quick"] else 100e6), "by": None,
             "margin": f"{1.5 - ratio:+.2f}x"}]


def run_transformer(quick: bool = False, out: Path = C.DEFAULT_OUT, threads: int | None = None, repeats: int | None = None,
                    baseline: Path | None = None, label: str | None = None, command: str | None = None) -> dict[str, Any]:
    """Run the transformer part alone (on the CPU) and write ``scale_transformer.{json,md}`` into ``out``."""
    import json

    say = C.progress(NAME)
    started = time.perf_counter()
    with C.num_threads(threads):
        report: dict[str, Any] = {"name": f"{NAME}_transformer", "machine": C.machine_info(torch.device("cpu")),
                                  "config": {"quick": quick, "command": command or C.command_line(),
                                             "repeats": repeats or 1, "precision": "fp32", "label": label}}
        report["transformer"] = bench_transformer(quick, repeats or 1, say)
    if baseline is not None:
        report["baseline"] = json.loads(Path(baseline).read_text())
    return C.finish(report, Path(out), f"{NAME}_transformer", started, transformer_goals, lambda report, out: [],
                    transformer_markdown)


# ------------------------------------------------------------------------------------------ models
def _families(quick: bool) -> dict[str, dict[str, Any]]:
    from lightning_prune.models import LeNet300100, VGGSmall

    if quick:
        return {
            "mlp": dict(build=lambda w: LeNet300100(in_features=64, hidden=(32 * w, 32 * w)), input_shape=(64,),
                        batches=2, batch=16, note="MLP 64-(32w)-(32w)-10"),
            "cnn": dict(build=lambda w: VGGSmall(in_channels=3, widths=(4 * w, 8 * w, 8 * w)), input_shape=(3, 8, 8),
                        batches=2, batch=8, note="VGGSmall widths (4w, 8w, 8w), 3x8x8"),
        }
    return {
        "mlp": dict(build=lambda w: LeNet300100(in_features=256, hidden=(256 * w, 256 * w)), input_shape=(256,),
                    batches=16, batch=64, note="MLP 256-(256w)-(256w)-10 (x16: 4096 units per hidden layer, 17.9 M parameters)"),
        "cnn": dict(build=lambda w: VGGSmall(in_channels=3, widths=(8 * w, 16 * w, 32 * w)), input_shape=(3, 16, 16),
                    batches=8, batch=32, note="VGGSmall widths (8w, 16w, 32w), 3x16x16 input (x16: 128-256-512 channels)"),
    }


def _batches(input_shape: Sequence[int], count: int, size: int, device: torch.device, seed: int = 0) -> list[tuple]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, *input_shape, generator=gen).to(device), torch.zeros(size, dtype=torch.long, device=device))
            for _ in range(count)]


def _measure(fn: Callable[[], Any], device: torch.device, repeats: int, setup: Callable[[], Any] | None = None,
             memory: bool = True, warmup: bool = False) -> dict[str, Any]:
    """Median [min–max] seconds over ``repeats`` calls (after one untimed call with ``warmup``), then one
    call under the memory trackers."""
    if warmup:
        fn(setup()) if setup else fn()
    times = []
    for _ in range(repeats):
        arg = setup() if setup else None
        C.sync(device)
        start = time.perf_counter()
        fn(arg) if setup else fn()
        C.sync(device)
        times.append(time.perf_counter() - start)
    result: dict[str, Any] = {"seconds": C.spread(times)}
    if memory:
        arg = setup() if setup else None
        with C.PeakRSS() as rss, C.cuda_peak(device) as cuda, C.LiveTensorMemory() as live:
            fn(arg) if setup else fn()
        result["peak_tensor_bytes"] = live.peak
        result["rss_growth_bytes"] = rss.delta
        if "bytes" in cuda:
            result["cuda_peak_bytes"] = cuda["bytes"]
    return result


def _stat_bytes(criterion: Any) -> int:
    """Bytes of APoZ's metric states (its per-layer ``ZeroActivationRate`` metrics)."""
    return sum(int(v.numel() * v.element_size()) for stat in criterion._stats.values() for v in stat.metric_state.values())


def bench_model(model: nn.Module, input_shape: Sequence[int], batches: int, batch: int, device: torch.device,
                repeats: int) -> dict[str, Any]:
    """Every stage on one model."""
    from lightning_prune.counting import count_macs
    from lightning_prune.criteria import APoZ, score_layers
    from lightning_prune.layers import find_prunable_layers
    from lightning_prune.ranking import select_units
    from lightning_prune.structure import NeuronStructure

    model = model.to(device).eval()
    example = torch.randn(2, *input_shape, device=device)
    calibration = _batches(input_shape, batches, batch, device)
    layers = find_prunable_layers(model, example)
    res: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters()),
                           "macs_per_example": count_macs(copy.deepcopy(model).cpu(), example.cpu())[""],
                           "calibration": {"batches": batches, "batch": batch}}
    holder: dict[str, Any] = {}

    def structure() -> None:
        holder["structure"] = NeuronStructure(model, example, layers)

    res["structure"] = _measure(structure, device, max(1, repeats - 1))
    st = holder["structure"]
    scored = [layer for layer in layers if layer.name in {n for g in st.groups for n, _ in g.members}]
    res["units"] = sum(st.sizes.values())
    res["groups"] = len(st.groups)
    res["activations_per_example"] = 0

    def count_activations() -> None:  # elements of the observed pre-activations, per example
        sizes = []
        handles = [st.sites.get(layer.name, layer.module).register_forward_hook(
            lambda m, a, o: sizes.append(o[0].numel())) for layer in scored]
        with torch.no_grad():
            model(example[:1])
        for h in handles:
            h.remove()
        res["activations_per_example"] = sum(sizes)

    count_activations()

    def forward() -> None:
        with torch.no_grad():
            for x, _ in calibration:
                model(x)

    res["forward"] = _measure(forward, device, repeats, warmup=True)

    def scoring() -> None:
        criterion = APoZ()
        holder["scores"] = score_layers(criterion, scored, "neuron", 0, model, calibration, st.sites)
        holder["criterion"] = criterion

    res["scoring"] = _measure(scoring, device, repeats, warmup=True)
    res["statistic_bytes"] = _stat_bytes(holder["criterion"])
    res["scored_layers"] = len(scored)
    res["scored_units"] = sum(layer.num_units for layer in scored)  # a residual group's units count once per member
    group_scores = st.group_scores(holder["scores"])
    keep_all = {key: torch.ones(size, dtype=torch.bool) for key, size in st.sizes.items()}

    def ranking() -> None:
        holder["keep"] = select_units(group_scores, keep_all, 0.5, "global", 0.01)

    res["ranking"] = _measure(ranking, device, repeats, warmup=True)
    keep = holder["keep"]
    res["surgery_device"] = str(device)
    if device.type != "cpu":  # the library's removal on the device itself; recorded, then the CPU if it fails
        try:
            st.remove_units(copy.deepcopy(model), keep)
        except Exception as error:  # noqa: BLE001 - recorded in the report
            res["surgery_device"] = f"cpu (on {device}: {type(error).__name__}: {str(error)[:200]})"
            model = model.cpu()
            st = NeuronStructure(model, example.cpu(), find_prunable_layers(model, example.cpu()))
            device = torch.device("cpu")
    res["masks"] = _measure(lambda: st.parameter_masks(model, keep), device, max(1, repeats - 1))
    res["surgery"] = _measure(lambda m: st.remove_units(m, keep), device, max(1, repeats - 1),
                              setup=lambda: copy.deepcopy(model))
    compact = copy.deepcopy(model)
    st.remove_units(compact, keep)
    res["params_after_surgery"] = sum(p.numel() for p in compact.parameters())
    return res


def naive_apoz_peak(model: nn.Module, layers: Sequence[Any], sites: Mapping[str, nn.Module],
                    calibration: Sequence[tuple], device: torch.device) -> int:
    """Peak tensor bytes of a naive APoZ that keeps every observed activation, then counts zeros."""
    kept: dict[str, list[torch.Tensor]] = {layer.name: [] for layer in layers}
    handles = [sites.get(layer.name, layer.module).register_forward_hook(
        lambda m, a, o, name=layer.name: kept[name].append(o.detach().clone())) for layer in layers]
    with C.LiveTensorMemory() as live:
        with torch.no_grad():
            for x, _ in calibration:
                model(x)
            for name, acts in kept.items():
                unit_dim = -1 if acts[0].dim() == 2 else 1
                (torch.cat([a.movedim(unit_dim, -1).reshape(-1, a.shape[unit_dim]) for a in acts]) <= 0).double().mean(0)
        kept.clear()
    for h in handles:
        h.remove()
    return live.peak


def bench_calibration(family: Mapping[str, Any], width: int, counts: Sequence[int], sizes: Sequence[int], base_count: int,
                      base_size: int, device: torch.device, repeats: int) -> dict[str, Any]:
    """Scoring at one width while the calibration set varies: batch count at ``base_size``, batch size at ``base_count``."""
    from lightning_prune.criteria import APoZ, score_layers
    from lightning_prune.layers import find_prunable_layers
    from lightning_prune.structure import NeuronStructure

    model = family["build"](width).to(device).eval()
    example = torch.randn(2, *family["input_shape"], device=device)
    layers = find_prunable_layers(model, example)
    st = NeuronStructure(model, example, layers)
    scored = [layer for layer in layers if layer.name in {n for g in st.groups for n, _ in g.members}]
    rows = []
    for kind, values in (("batches", counts), ("batch_size", sizes)):
        for v in values:
            count, size = (v, base_size) if kind == "batches" else (base_count, v)
            calibration = _batches(family["input_shape"], count, size, device, seed=v)
            holder: dict[str, Any] = {}

            def scoring(holder: dict[str, Any] = holder, calibration: list[tuple] = calibration) -> None:
                holder["criterion"] = APoZ()
                score_layers(holder["criterion"], scored, "neuron", 0, model, calibration, st.sites)

            m = _measure(scoring, device, repeats, warmup=True)
            rows.append({"vary": kind, "batches": count, "batch": size, "examples": count * size, **m,
                         "statistic_bytes": _stat_bytes(holder["criterion"]),
                         "naive_peak_tensor_bytes": naive_apoz_peak(model, scored, st.sites, calibration, device)})
    return {"width": width, "units": sum(st.sizes.values()), "rows": rows}


def _slopes(rows: Sequence[Mapping[str, Any]], x_key: str = "width") -> dict[str, float | None]:
    """Growth exponents: log-log slopes of every stage's time and memory against ``x_key``."""
    x = [r[x_key] for r in rows]
    out: dict[str, float | None] = {}
    for stage in STAGES:
        out[f"{stage}_time"] = C.loglog_slope(x, [r[stage]["seconds"]["median"] for r in rows])
        out[f"{stage}_peak_tensor_bytes"] = C.loglog_slope(x, [r[stage].get("peak_tensor_bytes", 0) for r in rows])
    for key in ("units", "params", "macs_per_example", "activations_per_example", "statistic_bytes"):
        out[key] = C.loglog_slope(x, [r[key] for r in rows])
    return out


# ------------------------------------------------------------------------------------------ report
def _mb(b: float | None) -> str:
    if b is None:
        return "—"
    return f"{b / 2**20:.2f}" if b < 100 * 2**20 else f"{b / 2**20:.0f}"


def _s(m: Mapping[str, Any]) -> str:
    s = m["seconds"]
    return f"{s['median']:.3g} [{s['min']:.2g}–{s['max']:.2g}]"


def _slope(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}"


def tables(report: Mapping[str, Any]) -> list[str]:
    lines = ["Seconds: median [min–max]; MiB: peak tensor memory allocated inside the stage (RSS growth in brackets).", "",
             "| model | width | units | params | MACs/ex | structure s | forward s | scoring s | scoring MiB | statistic KiB | "
             "ranking s | masks s | masks MiB | surgery s | surgery MiB |",
             "|---|---:|---:|---:|---:|---|---|---|---|---:|---|---|---|---|---|"]
    rows = [(fam, r) for fam, res in report["families"].items() for r in res["rows"]]
    if report.get("resnet50"):
        rows.append(("resnet50", {**report["resnet50"], "width": "—"}))
    for fam, r in rows:
        lines.append(
            f"| {fam} | {r['width']} | {r['units']:,} | {r['params'] / 1e6:.2f} M | {r['macs_per_example'] / 1e6:.1f} M | "
            f"{_s(r['structure'])} | {_s(r['forward'])} | {_s(r['scoring'])} | {_mb(r['scoring']['peak_tensor_bytes'])} "
            f"({_mb(r['scoring']['rss_growth_bytes'])}) | {r['statistic_bytes'] / 1024:.1f} | {_s(r['ranking'])} | "
            f"{_s(r['masks'])} | {_mb(r['masks']['peak_tensor_bytes'])} | {_s(r['surgery'])} | "
            f"{_mb(r['surgery']['peak_tensor_bytes'])} ({_mb(r['surgery']['rss_growth_bytes'])}) |")
    lines += ["", "Growth exponents (log-log slope against the width multiplier; for reference units grow as width^1, "
              "MLP/CNN parameters and MACs as width^2):", "",
              "| model | units | params | MACs | structure time | forward time | scoring time | scoring peak memory | "
              "statistic bytes | ranking time | masks time | masks memory | surgery time | surgery memory |",
              "|---|" + "---:|" * 13]
    fits = [(fam, res["slopes"]) for fam, res in report["families"].items()]
    fits += [(f"{fam}, x{res['rows'][-3]['width']}–x{res['rows'][-1]['width']} only", _slopes(res["rows"][-3:]))
             for fam, res in report["families"].items() if len(res["rows"]) >= 4]  # fixed costs weigh less
    for fam, s in fits:
        lines.append(f"| {fam} | {_slope(s['units'])} | {_slope(s['params'])} | {_slope(s['macs_per_example'])} | "
                     f"{_slope(s['structure_time'])} | {_slope(s['forward_time'])} | {_slope(s['scoring_time'])} | "
                     f"{_slope(s['scoring_peak_tensor_bytes'])} | {_slope(s['statistic_bytes'])} | {_slope(s['ranking_time'])} | "
                     f"{_slope(s['masks_time'])} | {_slope(s['masks_peak_tensor_bytes'])} | {_slope(s['surgery_time'])} | "
                     f"{_slope(s['surgery_peak_tensor_bytes'])} |")
    cal = report.get("calibration")
    if cal:
        lines += ["", f"Calibration set varied at a fixed model ({cal['family']} x{cal['width']}, {cal['units']:,} units):", "",
                  "| vary | batches | batch | examples | scoring s | peak tensor MiB (streaming APoZ) | RSS growth MiB | "
                  "statistic bytes | peak tensor MiB, naive APoZ keeping activations |",
                  "|---|---:|---:|---:|---|---:|---:|---:|---:|"]
        for r in cal["rows"]:
            lines.append(f"| {r['vary']} | {r['batches']} | {r['batch']} | {r['examples']} | {_s(r)} | "
                         f"{_mb(r['peak_tensor_bytes'])} | {_mb(r['rss_growth_bytes'])} | {r['statistic_bytes']:,} | "
                         f"{_mb(r['naive_peak_tensor_bytes'])} |")
        s = cal["slopes"]
        lines += ["", "Slopes against the number of batches: streaming peak {}, statistic {}, naive peak {}; against the "
                  "batch size: streaming peak {}, statistic {}, naive peak {}.".format(
                      *(_slope(s[k]) for k in ("batches_peak", "batches_stat", "batches_naive", "batch_peak", "batch_stat",
                                               "batch_naive")))]
    return lines


def findings(report: Mapping[str, Any]) -> list[str]:
    """Plain sentences for RESULTS.md."""
    out = []
    for fam, res in report["families"].items():
        s = res["slopes"]
        t = _slopes(res["rows"][-3:]) if len(res["rows"]) >= 4 else s

        def both(key: str) -> str:
            return f"^{_slope(s[key])}" + (f" (x{res['rows'][-3]['width']}–x{res['rows'][-1]['width']}: ^{_slope(t[key])})"
                                           if t is not s else "")

        out.append(f"{fam}: statistic bytes grow as width^{_slope(s['statistic_bytes'])} (units ^{_slope(s['units'])}); "
                   f"scoring peak memory {both('scoring_peak_tensor_bytes')} (one batch's activations); scoring time "
                   f"{both('scoring_time')}, forward alone {both('forward_time')}, MACs {both('macs_per_example')}; "
                   f"ranking {both('ranking_time')}; surgery time {both('surgery_time')}, memory "
                   f"{both('surgery_peak_tensor_bytes')}; params {both('params')}.")
    r = report.get("resnet50")
    if r:
        out.append(f"ResNet-50-sized ({r['architecture']}, {r['params'] / 1e6:.1f} M params, {r['units']:,} units in "
                   f"{r['groups']} groups): structure {r['structure']['seconds']['median']:.1f} s, scoring "
                   f"{r['scoring']['seconds']['median']:.1f} s ({r['calibration']['batches']}x{r['calibration']['batch']} "
                   f"examples), ranking {r['ranking']['seconds']['median'] * 1e3:.1f} ms, masks "
                   f"{r['masks']['seconds']['median']:.1f} s, surgery {r['surgery']['seconds']['median']:.1f} s with "
                   f"{_mb(r['surgery']['peak_tensor_bytes'])} MiB of tensors at peak "
                   f"({r['surgery']['peak_tensor_bytes'] / (4 * r['params']):.1f}x the fp32 model).")
    return out


def to_markdown(report: Mapping[str, Any]) -> str:
    c = report["config"]
    lines = ["# Scale: scoring, ranking and surgery as the model grows", "", f"Command: `{c['command']}`", "",
             C.machine_line(report["machine"], report.get("load_average_at_end")), "",
             f"Quick mode: {c['quick']}. {c['repeats']} repeats per stage (structure, masks and surgery: one fewer). "
             "Models: " + "; ".join(f"{k}: {v['note']}, calibration {v['rows'][0]['calibration']['batches']} batches of "
                                      f"{v['rows'][0]['calibration']['batch']}" for k, v in report["families"].items())
             + (f"; resnet50: {report['resnet50']['architecture']}, 3x32x32 input" if report.get("resnet50") else "") + ".", ""]
    lines += tables(report)
    lines += ["", "## Findings", ""] + [f"- {f}" for f in findings(report)]
    return "\n".join(lines) + "\n"


def suite_section(report: Mapping[str, Any]) -> str:
    return "\n".join(tables(report) + [""] + [f"- {f}" for f in findings(report)]) + "\n"


def goals(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue asks to show that the statistics grow with the number of units, not of activations."""
    rows = []
    for fam, res in report["families"].items():
        rs = res["rows"] + ([report["resnet50"]] if fam == "cnn" and report.get("resnet50") else [])
        exact = all(r["statistic_bytes"] == 8 * (r["scored_units"] + r["scored_layers"]) for r in rs)
        slope, acts = res["slopes"]["statistic_bytes"], res["slopes"]["activations_per_example"]
        rows.append({"part": NAME, "model": fam + (" + resnet50" if len(rs) > len(res["rows"]) else ""),
                     "goal": "APoZ statistics grow with the number of units, not of activations",
                     "figure": f"statistic = 8 bytes per unit + 8 per layer at every size: {'yes' if exact else 'NO'}; "
                               f"~ width^{_slope(slope)} (units ^{_slope(res['slopes']['units'])}, activations ^{_slope(acts)})",
                     "met": exact, "by": None, "margin": "exact" if exact else "statistic size differs from 8 bytes/unit"})
    cal = report.get("calibration")
    if cal:
        s = cal["slopes"]
        stat_const = len({r["statistic_bytes"] for r in cal["rows"]}) == 1
        met = stat_const and abs(s["batches_peak"] or 0) < 0.2
        rows.append({"part": NAME, "model": f"{cal['family']} x{cal['width']}",
                     "goal": "scoring memory does not grow with the number of calibration batches",
                     "figure": f"statistic constant: {'yes' if stat_const else 'NO'}; peak tensors ~ batches^"
                               f"{_slope(s['batches_peak'])} (naive APoZ keeping activations ^{_slope(s['batches_naive'])}); "
                               f"~ batch size^{_slope(s['batch_peak'])} (one batch's activations are transient)",
                     "met": met, "by": None, "margin": f"peak exponent vs batches {_slope(s['batches_peak'])}"})
    return rows


def plot(report: Mapping[str, Any], out: Path) -> list[str]:
    """``scale_time.png`` (time per stage vs width) and ``scale_memory.png`` (memory vs width and calibration)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = list(report["families"])
    fig, axes = plt.subplots(1, len(fams), figsize=(6 * len(fams), 4.2), squeeze=False)
    for ax, fam in zip(axes[0], fams):
        rows = report["families"][fam]["rows"]
        x = [r["width"] for r in rows]
        for stage in STAGES:
            ax.plot(x, [r[stage]["seconds"]["median"] for r in rows], marker="o", ms=4,
                    label=f"{stage} (^{_slope(report['families'][fam]['slopes'][f'{stage}_time'])})")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("width multiplier")
        ax.set_ylabel("seconds")
        ax.set_title(f"{fam}: time per stage")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    p1 = Path(out) / "scale_time.png"
    fig.savefig(p1, dpi=110)
    plt.close(fig)

    cal = report.get("calibration")
    fig, axes = plt.subplots(1, 2 if cal else 1, figsize=(12 if cal else 6, 4.2), squeeze=False)
    ax = axes[0][0]
    for fam in fams:
        rows = report["families"][fam]["rows"]
        units = [r["units"] for r in rows]
        ax.plot(units, [r["statistic_bytes"] for r in rows], marker="o", ms=4, label=f"{fam}: APoZ statistic")
        ax.plot(units, [r["scoring"]["peak_tensor_bytes"] for r in rows], marker="s", ms=4, ls="--",
                label=f"{fam}: scoring peak tensors")
        ax.plot(units, [r["surgery"]["peak_tensor_bytes"] for r in rows], marker="^", ms=4, ls=":",
                label=f"{fam}: surgery peak tensors")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("units (neurons + channels) in prunable groups")
    ax.set_ylabel("bytes")
    ax.set_title("memory vs model size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    if cal:
        ax = axes[0][1]
        rows = [r for r in cal["rows"] if r["vary"] == "batches"]
        x = [r["batches"] for r in rows]
        ax.plot(x, [r["statistic_bytes"] for r in rows], marker="o", label="streaming APoZ: statistic")
        ax.plot(x, [r["peak_tensor_bytes"] for r in rows], marker="s", ls="--", label="streaming APoZ: peak tensors")
        ax.plot(x, [r["naive_peak_tensor_bytes"] for r in rows], marker="^", ls=":", label="naive (keeps activations): peak")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(f"calibration batches (of {rows[0]['batch']})")
        ax.set_ylabel("bytes")
        ax.set_title(f"memory vs calibration set ({cal['family']} x{cal['width']})")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    fig.tight_layout()
    p2 = Path(out) / "scale_memory.png"
    fig.savefig(p2, dpi=110)
    plt.close(fig)
    return [p1.name, p2.name]


# --------------------------------------------------------------------------------------------- run
def run(quick: bool = False, out: Path = C.DEFAULT_OUT, device: str | None = "auto", threads: int | None = None,
        widths: Sequence[int] | None = None, repeats: int | None = None, resnet: bool = True,
        command: str | None = None, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``scale.{json,md}`` and its plots into ``out``.

    Args:
        widths: Width multipliers (default 1, 2, 4, 8, 16; quick 1, 2).
        repeats: Repeats per stage (default 5; quick 2).
        resnet: Also the ResNet-50-sized model.
    """
    say = progress or C.progress(NAME)
    dev = C.resolve_device(device)
    started = time.perf_counter()
    widths = list(widths or (QUICK_WIDTHS if quick else WIDTHS))
    repeats = repeats or (2 if quick else 5)
    with C.num_threads(threads):
        report: dict[str, Any] = {"name": NAME, "machine": C.machine_info(dev),
                                  "config": {"quick": quick, "command": command or C.command_line(), "widths": widths,
                                             "repeats": repeats, "precision": "fp32"},
                                  "families": {}}
        for fam, spec in _families(quick).items():
            rows = []
            for w in widths:
                say(f"{fam} x{w}")
                torch.manual_seed(0)
                rows.append({"width": w, **bench_model(spec["build"](w), spec["input_shape"], spec["batches"], spec["batch"],
                                                       dev, repeats)})
            report["families"][fam] = {"note": spec["note"], "rows": rows, "slopes": _slopes(rows)}
        fam = "cnn"
        spec = _families(quick)[fam]
        width = widths[min(2, len(widths) - 1)]
        say(f"calibration sweep on {fam} x{width}")
        counts = (1, 2) if quick else (1, 2, 4, 8, 16)
        sizes = (4, 8) if quick else (8, 16, 32, 64, 128)
        cal = bench_calibration(spec, width, counts, sizes, spec["batches"], spec["batch"], dev, repeats)
        by = {k: [r for r in cal["rows"] if r["vary"] == k] for k in ("batches", "batch_size")}
        cal["family"] = fam
        cal["slopes"] = {
            "batches_peak": C.loglog_slope([r["batches"] for r in by["batches"]], [r["peak_tensor_bytes"] for r in by["batches"]]),
            "batches_stat": C.loglog_slope([r["batches"] for r in by["batches"]], [r["statistic_bytes"] for r in by["batches"]]),
            "batches_naive": C.loglog_slope([r["batches"] for r in by["batches"]], [r["naive_peak_tensor_bytes"] for r in by["batches"]]),
            "batches_time": C.loglog_slope([r["batches"] for r in by["batches"]], [r["seconds"]["median"] for r in by["batches"]]),
            "batch_peak": C.loglog_slope([r["batch"] for r in by["batch_size"]], [r["peak_tensor_bytes"] for r in by["batch_size"]]),
            "batch_stat": C.loglog_slope([r["batch"] for r in by["batch_size"]], [r["statistic_bytes"] for r in by["batch_size"]]),
            "batch_naive": C.loglog_slope([r["batch"] for r in by["batch_size"]], [r["naive_peak_tensor_bytes"] for r in by["batch_size"]]),
        }
        report["calibration"] = cal
        if resnet:
            model, arch = resnet50(quick)
            say(f"ResNet-50-sized: {arch}")
            torch.manual_seed(0)
            report["resnet50"] = {"architecture": arch, **bench_model(model, (3, 32, 32), 2 if quick else 8, 4 if quick else 32,
                                                                      dev, 1 if quick else 3)}
    return C.finish(report, Path(out), NAME, started, goals, plot, to_markdown)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_arguments(parser, "widths x1, x2 of tiny models and a tiny ResNet (seconds)")
    parser.add_argument("--widths", type=int, nargs="+", default=None, help="width multipliers (default 1 2 4 8 16)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per stage (default 5; 2 quick)")
    parser.add_argument("--no-resnet", dest="resnet", action="store_false", help="skip the ResNet-50-sized model")
    parser.add_argument("--transformer", action="store_true",
                        help="only the transformer surgery-memory part (BERT-base; --quick: a 2-layer BERT), on the CPU")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="with --transformer: an earlier scale_transformer.json to show next to this run")
    parser.add_argument("--label", default=None, help="with --transformer: what this run measures (kept in the JSON)")
    args = parser.parse_args(argv)
    if args.transformer:
        report = run_transformer(args.quick, args.out, args.threads, args.repeats, args.baseline, args.label)
        print(transformer_markdown(report))
        name = f"{NAME}_transformer"
    else:
        report = run(args.quick, args.out, args.device, args.threads, args.widths, args.repeats, args.resnet)
        print(to_markdown(report))
        name = NAME
    print(f"Wrote {args.out / (name + '.json')} and {args.out / (name + '.md')} in {report['seconds']:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
