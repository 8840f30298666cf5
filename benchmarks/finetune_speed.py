"""Fine-tuning speed after neuron removal: epoch time as a fraction of the dense epoch, against MACs.

For each model, hidden units (neurons, channels) are removed with lightning_prune
(``NeuronStructure(model, x, find_prunable_layers(model, x)).remove_units(model, keep)``) so that
every group keeps 75 %, 50 %, 25 % or 10 % of its units (the units with the largest L2 norm; which
ones does not change the time). The compact models and the dense one are then trained side by side:

``trainer``
    A real ``Trainer.fit`` of ``Classifier`` (Adam 1e-3, no validation, logger, progress bar or
    checkpoints) for one untimed epoch and then ``timed_epochs`` epochs, each timed from
    ``on_train_epoch_start`` to ``on_train_epoch_end``: data loading, Lightning's loop, forward,
    backward and the optimizer step, everything a fine-tuning epoch costs.
``loop``
    The same number of steps in a plain loop (forward, cross-entropy, backward, ``Adam.step``,
    ``zero_grad``) over the same batches already in memory: the compute alone.

Fits and loops are interleaved over repeats in a new seeded random order each repeat
(``benchmarks._common.interleave``): a loop epoch is ``torch.utils.benchmark.Timer.timeit(steps)``
(a fixed count: every model takes one epoch of steps over the same batches), a fit's epochs are timed
by a callback between Lightning's epoch hooks. The time fraction is the median of the per-repeat
ratios to the dense model (min-max shown; ``benchmarks.stats.summarise``), next to the MAC fraction
(``lightning_prune.counting.count_macs``, FlopCounterMode). Goal (the issue): training gets faster,
not slower, at every fraction. The machine is shared and noisy: read the ranges.

Run::

    python -m benchmarks.finetune_speed             # full: a few minutes on 2 cores
    python -m benchmarks.finetune_speed --quick     # two tiny models, keep 25 %: seconds
"""

from __future__ import annotations

import argparse
import copy
import itertools
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from benchmarks import _common as C

NAME = "finetune_speed"
KEEP = (0.75, 0.5, 0.25, 0.1)
QUICK_KEEP = (0.25,)
LR = 1e-3
BATCH = 64
NUM_CLASSES = 10


@dataclass
class Spec:
    arch: str
    kwargs: dict[str, Any]
    input_shape: tuple[int, ...]
    data: str  # "mnist1d" (real, frozen) or "synthetic"
    batches: int  # per epoch (MNIST-1D: at most its 3500 training examples = 55 batches)
    note: str
    repeats: int = 5  # full-mode defaults; the small models' epochs are short and noisy, so they get more
    timed_epochs: int = 2


def _specs(quick: bool) -> dict[str, Spec]:
    if quick:
        return {
            "lenet_mnist1d": Spec("lenet_300_100", dict(in_features=40, hidden=[300, 100]), (1, 40), "mnist1d", 6,
                                  "quick: 40-300-100-10 on MNIST-1D, 6 batches"),
            "vgg_small": Spec("vgg_small", dict(in_channels=3, widths=[8, 16, 16]), (3, 8, 8), "synthetic", 4,
                              "quick: VGGSmall widths (8, 16, 16), 3x8x8 synthetic"),
        }
    return {
        "lenet_mnist1d": Spec("lenet_300_100", dict(in_features=40, hidden=[300, 100]), (1, 40), "mnist1d", 55,
                              "LeNet-300-100 (40-300-100-10) on MNIST-1D, all 55 training batches", repeats=9, timed_epochs=3),
        "mlp_wide": Spec("lenet_300_100", dict(in_features=1024, hidden=[2048, 2048]), (1024,), "synthetic", 8,
                         "MLP 1024-2048-2048-10, synthetic inputs, 8 batches"),
        "cnn1d_mnist1d": Spec("cnn1d", dict(channels=[32, 64], hidden=128), (1, 40), "mnist1d", 55,
                              "CNN1D (channels 32, 64; hidden 128) on MNIST-1D, all 55 training batches", repeats=9,
                              timed_epochs=3),
        "vgg_small": Spec("vgg_small", dict(in_channels=3, widths=[32, 64, 128]), (3, 16, 16), "synthetic", 6,
                          "VGGSmall widths (32, 64, 128), 3x16x16 synthetic inputs, 6 batches"),
    }


def _dataset(spec: Spec, device: torch.device) -> TensorDataset:
    if spec.data == "mnist1d":
        from lightning_prune.data import MNIST1DDataModule

        dm = MNIST1DDataModule(batch_size=BATCH, seed=0)
        dm.setup("fit")
        x, y = dm.splits["train"].tensors
        n = min(len(x), spec.batches * BATCH)
        return TensorDataset(x[:n], y[:n])
    gen = torch.Generator().manual_seed(1)
    n = spec.batches * BATCH
    return TensorDataset(torch.randn(n, *spec.input_shape, generator=gen), torch.randint(0, NUM_CLASSES, (n,), generator=gen))


def compact_classifier(spec: Spec, keep_fraction: float) -> tuple[Any, dict[str, Any]]:
    """A ``Classifier`` with every group keeping ``keep_fraction`` of its units (1.0: dense)."""
    from lightning_prune.counting import count_macs
    from lightning_prune.layers import find_prunable_layers
    from lightning_prune.models import Classifier
    from lightning_prune.structure import NeuronStructure

    torch.manual_seed(0)
    module = Classifier(spec.arch, arch_kwargs=dict(spec.kwargs), optimizer="adam", lr=LR)
    net = module.model
    example = torch.randn(2, *spec.input_shape)
    dense_macs = count_macs(net, example)[""]
    dense_params = sum(p.numel() for p in net.parameters())
    info: dict[str, Any] = {"keep_fraction": keep_fraction}
    if keep_fraction < 1.0:
        structure = NeuronStructure(net, example, find_prunable_layers(net, example))
        layer_scores = {name: net.get_submodule(name).weight.detach().flatten(1).norm(dim=1)
                        for group in structure.groups for name, _ in group.members}
        group_scores = structure.group_scores(layer_scores)  # L2 norm of each unit's weights, mean over the group
        keep = {}
        for group in structure.groups:
            mask = torch.zeros(group.size, dtype=torch.bool)
            mask[torch.topk(group_scores[group.key], max(1, round(group.size * keep_fraction))).indices] = True
            keep[group.key] = mask
        _, info["remove_units_s"] = C.time_once(lambda: structure.remove_units(net, keep))
        info["kept_units"] = {k: int(m.sum()) for k, m in keep.items()}
        info["units"] = structure.sizes
    info["mac_fraction"] = count_macs(net, example)[""] / dense_macs
    info["param_fraction"] = sum(p.numel() for p in net.parameters()) / dense_params
    info["macs_per_example"] = count_macs(net, example)[""]
    return module, info


def bench_model(name: str, spec: Spec, device: torch.device, precision: str, repeats: int, timed_epochs: int,
                keep_fractions: Sequence[float], say: Callable[[str], None]) -> dict[str, Any]:
    import lightning as L

    data = _dataset(spec, device)
    variants = {"dense": 1.0, **{f"keep_{round(100 * k)}": k for k in keep_fractions}}
    modules, infos = {}, {}
    for v, k in variants.items():
        modules[v], infos[v] = compact_classifier(spec, k)
    batches = [(x.to(device), y.to(device)) for x, y in DataLoader(data, batch_size=BATCH, shuffle=False)]
    autocast = device.type == "cuda" and precision.startswith("bf16")

    def fit_block(v: str) -> Callable[[], float]:
        def go() -> float:  # seconds per timed epoch (after the first), timed by a callback
            timer = C.epoch_timer(device)
            trainer = L.Trainer(max_epochs=1 + timed_epochs, callbacks=[timer], limit_val_batches=0,
                                **C.trainer_kwargs(device, precision))
            trainer.fit(modules[v], DataLoader(data, batch_size=BATCH, shuffle=False))
            return statistics.median(timer.seconds)

        return go

    loop_models = {v: copy.deepcopy(m.model).to(device).train() for v, m in modules.items()}
    loop_opts = {v: torch.optim.Adam(m.parameters(), lr=LR) for v, m in loop_models.items()}

    def loop_step(v: str) -> Callable[[], None]:
        model, opt = loop_models[v], loop_opts[v]
        cycle = itertools.cycle(batches)

        def step() -> None:
            x, y = next(cycle)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)

        return step

    say(f"{name}: {repeats} repeats of {len(variants)} fits ({timed_epochs} timed epochs each) and loops")
    with C.quiet_lightning():
        fit = C.summarise(C.interleave({v: fit_block(v) for v in variants}, repeats, self_timed=True, seed=1,
                                       collect=True), "dense", scale=1e3)
    # one epoch of warm-up steps (allocator, Adam state), then Timer.timeit(one epoch of steps) per repeat
    loop = C.summarise(C.interleave({v: loop_step(v) for v in variants}, repeats, number=len(batches),
                                    warmup=len(batches), seed=2), "dense", scale=1e3 * len(batches))
    rows = {}
    for v in variants:
        info = infos[v]
        rows[v] = {
            **info,
            "trainer_epoch_ms": fit[v]["value"],
            "trainer_time_fraction": fit[v]["ratio"],
            "loop_epoch_ms": loop[v]["value"],
            "loop_time_fraction": loop[v]["ratio"],
            # speedup / MAC cut: 1.0 = time falls exactly as the MACs do
            "trainer_efficiency": info["mac_fraction"] / fit[v]["ratio"]["median"],
            "loop_efficiency": info["mac_fraction"] / loop[v]["ratio"]["median"],
        }
    return {"architecture": spec.note, "arch": spec.arch, "arch_kwargs": spec.kwargs, "input_shape": list(spec.input_shape),
            "data": spec.data, "batches_per_epoch": len(batches), "batch": BATCH, "repeats": repeats,
            "timed_epochs_per_fit": timed_epochs, "variants": rows}


def goals(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per model: the slowest compact variant's Trainer epoch fraction must be below 1 (faster than dense)."""
    rows = []
    for name, res in report["results"].items():
        compact = {v: r for v, r in res["variants"].items() if v != "dense"}
        worst_v = max(compact, key=lambda v: compact[v]["trainer_time_fraction"]["median"])
        worst = compact[worst_v]["trainer_time_fraction"]["median"]
        monotone = all(a["trainer_time_fraction"]["median"] >= b["trainer_time_fraction"]["median"]
                       for a, b in zip(list(compact.values()), list(compact.values())[1:]))
        rows.append({"part": NAME, "model": name, "goal": "fine-tuning epoch faster than dense at every fraction",
                     "figure": ", ".join(f"{v}: {r['trainer_time_fraction']['median']:.2f} (MACs {r['mac_fraction']:.2f})"
                                         for v, r in compact.items()),
                     "met": worst < 1.0, "by": 1.0 - worst,
                     "margin": f"slowest compact epoch {worst:.2f} of dense ({worst_v})"
                               + ("" if monotone else "; not monotone in the fraction kept"),
                     "monotone": monotone})
    return rows


def table(report: Mapping[str, Any]) -> list[str]:
    lines = ["| model | variant | MAC fraction | param fraction | Trainer epoch ms | Trainer epoch / dense | "
             "plain loop ms | plain loop / dense | MAC fraction ÷ time fraction (Trainer, loop) |",
             "|---|---|---:|---:|---:|---|---:|---|---|"]
    for name, res in report["results"].items():
        for v, r in res["variants"].items():
            lines.append(f"| {name} | {v} | {r['mac_fraction']:.3f} | {r['param_fraction']:.3f} | "
                         f"{r['trainer_epoch_ms']['median']:.1f} | {C.fmt_spread(r['trainer_time_fraction'], '{:.3f}')} | "
                         f"{r['loop_epoch_ms']['median']:.1f} | {C.fmt_spread(r['loop_time_fraction'], '{:.3f}')} | "
                         f"{r['trainer_efficiency']:.2f}, {r['loop_efficiency']:.2f} |")
    return lines


def to_markdown(report: Mapping[str, Any]) -> str:
    c = report["config"]
    lines = ["# Fine-tuning speed after neuron removal", "", f"Command: `{c['command']}`", "",
             C.machine_line(report["machine"], report.get("load_average_at_end")), "",
             f"Quick mode: {c['quick']}. Precision {c['precision']}. Batch {BATCH}, Adam {LR}. Every group keeps the "
             "stated fraction of its units (removed by `NeuronStructure.remove_units`). *Trainer epoch*: a real "
             "`Trainer.fit` epoch (timed from `on_train_epoch_start` to `on_train_epoch_end`, after one untimed epoch; "
             "no validation); *plain loop*: the same steps without Lightning. Time fractions: median of per-repeat "
             "ratios to dense [min–max]; repeats interleaved in a new seeded random order each; plain-loop epochs timed by "
             "`torch.utils.benchmark.Timer.timeit(steps)`. The last column is 1.0 when time falls "
             "exactly as the MACs do.", ""]
    lines += table(report)
    lines += ["", "Models: " + "; ".join(f"{n}: {r['architecture']} ({r['repeats']} repeats, {r['timed_epochs_per_fit']} timed epochs per fit)" for n, r in report["results"].items()) + ".",
              "", "## Goal", "", "| model | goal | figure (Trainer epoch / dense) | met | margin |", "|---|---|---|---|---|"]
    for g in report["goals"]:
        lines.append(f"| {g['model']} | {g['goal']} | {g['figure']} | {'yes' if g['met'] else '**no**'} | {g['margin']} |")
    return "\n".join(lines) + "\n"


def suite_section(report: Mapping[str, Any]) -> str:
    return "\n".join(table(report)) + "\n"


def plot(report: Mapping[str, Any], out: Path) -> list[str]:
    """``finetune_speed.png``: epoch-time fraction against MAC fraction, one line per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, kind in zip(axes, ("trainer", "loop")):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":", label="time = MACs")
        for name, res in report["results"].items():
            rows = list(res["variants"].values())
            x = [r["mac_fraction"] for r in rows]
            y = [r[f"{kind}_time_fraction"]["median"] for r in rows]
            lo = [r[f"{kind}_time_fraction"]["median"] - r[f"{kind}_time_fraction"]["min"] for r in rows]
            hi = [r[f"{kind}_time_fraction"]["max"] - r[f"{kind}_time_fraction"]["median"] for r in rows]
            ax.errorbar(x, y, yerr=[lo, hi], marker="o", ms=4, capsize=3, label=name)
        ax.set_xlabel("MAC fraction of dense")
        ax.set_ylabel("epoch time fraction of dense")
        ax.set_title("Trainer.fit epoch" if kind == "trainer" else "plain training loop")
        ax.set_xlim(0, 1.05)
        ax.set_ylim(0, max(1.1, ax.get_ylim()[1]))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    path = Path(out) / "finetune_speed.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path.name]


def run(quick: bool = False, out: Path = C.DEFAULT_OUT, device: str | None = "auto", threads: int | None = None,
        repeats: int | None = None, timed_epochs: int | None = None, models: Sequence[str] | None = None,
        keep_fractions: Sequence[float] | None = None, precision: str | None = None, command: str | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``finetune_speed.{json,md}`` and its plot into ``out``.

    Args:
        repeats: Interleaved repeats (default 2 quick; full: per model, 5 or 9).
        timed_epochs: Timed epochs per fit (default 1 quick; full: per model, 2 or 3).
        precision: Lightning precision (default ``"32-true"``; ``"bf16-mixed"`` on CUDA).
    """
    say = progress or C.progress(NAME)
    dev = C.resolve_device(device)
    precision = precision or ("bf16-mixed" if dev.type == "cuda" else "32-true")
    started = time.perf_counter()
    specs = _specs(quick)
    if models is not None:
        unknown = set(models) - set(specs)
        if unknown:
            raise ValueError(f"unknown models {sorted(unknown)}; expected some of {list(specs)}")
        specs = {k: v for k, v in specs.items() if k in models}
    keep_fractions = list(keep_fractions or (QUICK_KEEP if quick else KEEP))
    with C.num_threads(threads):
        report: dict[str, Any] = {
            "name": NAME, "machine": C.machine_info(dev),
            "config": {"quick": quick, "command": command or C.command_line(), "repeats": repeats or "per model",
                       "timed_epochs": timed_epochs or "per model", "keep_fractions": list(keep_fractions), "precision": precision,
                       "batch": BATCH, "optimizer": f"Adam(lr={LR})",
                       "timing": "Trainer.fit epochs (on_train_epoch_start to on_train_epoch_end) and a plain loop "
                                 "(torch.utils.benchmark.Timer.timeit(steps of one epoch))", "order": C.ORDER},
            "results": {},
        }
        for name, spec in specs.items():
            report["results"][name] = bench_model(name, spec, dev, precision, repeats or (2 if quick else spec.repeats),
                                                  timed_epochs or (1 if quick else spec.timed_epochs), keep_fractions, say)
    return C.finish(report, Path(out), NAME, started, goals, plot, to_markdown)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_arguments(parser, "tiny models, 2 repeats (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default per model, 5-9; 2 quick)")
    parser.add_argument("--timed-epochs", type=int, default=None, help="timed epochs per fit (default per model, 2-3; 1 quick)")
    parser.add_argument("--model", action="append", default=None, help="only this model (repeatable)")
    parser.add_argument("--precision", default=None, help="Lightning precision (default 32-true; bf16-mixed on CUDA)")
    args = parser.parse_args(argv)
    report = run(args.quick, args.out, args.device, args.threads, args.repeats, args.timed_epochs, args.model,
                 precision=args.precision)
    print(to_markdown(report))
    print(f"Wrote {args.out / (NAME + '.json')} and {args.out / (NAME + '.md')} in {report['seconds']:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
