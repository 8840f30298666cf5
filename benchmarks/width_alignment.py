"""Width alignment: how closely neuron removal's speedup follows the MAC cut, by compact width and rounding.

The inference part measures LeNet-300-100 at a 10x MAC cut (widths 33 and 11) at 0.6 of the MAC cut, far
below the 0.9 the project aims for, while a 1024-4096-4096 MLP at the same cut reaches 1.0. This part
asks why, with the library's own pruning path (``Pruner(..., granularity=Neurons(round_to=...))``,
``Pruner.plan`` then ``Pruner.commit``, exactly what ``Pruning(granularity=Neurons(round_to=...))`` does in a fit):

* every hidden layer keeps a fraction of its units (10 %, 20 %, 30 %, 50 %; L2 norm, per layer);
* each fraction is taken as it falls (``round_to=None``) and rounded up to a multiple of 8 and of 16;
* each compact model and the dense one are timed side by side at batch 256
  (``benchmarks._common.interleave``: ``torch.utils.benchmark.Timer.blocked_autorange(min_run_time=0.1)``
  per model per repeat, in a new seeded random order each repeat), and the speedup is divided by the MAC cut.

On x86 CPUs the float32 GEMM kernels work on 8 (AVX2) or 16 (AVX-512) output columns at a time: a
layer of 33 units pays for 48. The report shows where the ratio reaches the goal and where it cannot
(at small widths a fixed per-layer cost dominates the time).

Run::

    python -m benchmarks.width_alignment            # LeNet-300-100 on 784 inputs: about a minute
    python -m benchmarks.width_alignment --quick    # a tiny model, two fractions: seconds
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

from benchmarks import _common as C

NAME = "width_alignment"
KEEP = (0.1, 0.2, 0.3, 0.5)
QUICK_KEEP = (0.1, 0.5)
ROUND_TO: tuple[int | None, ...] = (None, 8, 16)
BATCH = 256
GOAL = 0.9  # speedup / MAC cut at batch 256 for MLPs (the project's neuron-removal issue)
ATOL = 1e-5


def _model(quick: bool) -> tuple[torch.nn.Module, tuple[int, ...], str]:
    from lightning_prune.models import LeNet300100

    torch.manual_seed(0)
    if quick:
        return LeNet300100(in_features=64, hidden=(64, 32)).eval(), (64,), "quick: 64-64-32-10"
    return LeNet300100(in_features=784).eval(), (1, 28, 28), "LeNet300100(in_features=784), MNIST-sized input"


def hidden_widths(model: torch.nn.Module) -> list[int]:
    """Output widths of the model's Linear layers in forward order, the classifier left out."""
    return [m.out_features for m in model.modules() if isinstance(m, torch.nn.Linear)][:-1]


def compact(dense: torch.nn.Module, example: torch.Tensor, keep_fraction: float, round_to: int | None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A copy of ``dense`` with every hidden layer keeping ``keep_fraction`` of its units, removed by the library.

    The kept units are checked against the dense model with the pruned units masked (outputs equal).
    """
    from lightning_prune import Magnitude, Neurons, PerLayer
    from lightning_prune.masks import apply_masks
    from lightning_prune.pruner import Pruner

    model = copy.deepcopy(dense)
    pruner = Pruner(model, example, Magnitude(2), granularity=Neurons(round_to=round_to), ranking=PerLayer(min_keep=0.0))
    keep = pruner.plan(pruner.dense_keep(), 1.0 - keep_fraction, cycle=0)
    masked = copy.deepcopy(dense)
    apply_masks(masked, pruner.parameter_masks(keep))
    pruner.commit(keep)
    with torch.inference_mode():
        check = torch.randn(8, *example.shape[1:])
        diff = float((model(check) - masked(check)).abs().max())
    if diff > ATOL:
        raise AssertionError(f"compact model differs from the masked one by {diff:.3g} (keep {keep_fraction}, round_to {round_to})")
    return model, {"widths": hidden_widths(model), "max_abs_diff_vs_masked": diff}


def bench(dense: torch.nn.Module, input_shape: tuple[int, ...], keep_fractions: Sequence[float], batch: int,
          repeats: int, block_s: float, say: Callable[[str], None]) -> dict[str, Any]:
    from lightning_prune.counting import count_macs

    example = torch.randn(2, *input_shape)
    dense_macs = count_macs(dense, example[:1])[""]
    models: dict[str, torch.nn.Module] = {"dense": dense}
    rows: dict[str, dict[str, Any]] = {"dense": {"keep_fraction": 1.0, "round_to": None,
                                                 "widths": hidden_widths(dense),
                                                 "mac_cut": 1.0}}
    by_widths: dict[tuple[int, ...], str] = {}
    for k in keep_fractions:
        for r in ROUND_TO:
            name = f"keep_{round(100 * k)}_round_{r or 1}"
            model, info = compact(dense, example, k, r)
            widths = tuple(info["widths"])
            row = {"keep_fraction": k, "round_to": r, **info,
                   "mac_cut": dense_macs / count_macs(model, example[:1])[""]}
            if widths in by_widths:  # same widths as an earlier variant: not timed twice
                row["same_as"] = by_widths[widths]
            else:
                by_widths[widths] = name
                models[name] = model.eval()
            rows[name] = row
    x = torch.randn(batch, *input_shape)
    say(f"timing {len(models)} models at batch {batch}, {repeats} repeats")
    with torch.inference_mode():
        times = C.interleave({n: (lambda m=m: m(x)) for n, m in models.items()}, repeats, min_run_time=block_s, warmup=3)
    for name, s in C.summarise(times, "dense", scale=1e3).items():
        rows[name].update({"ms": s["value"], "speedup": s["speedup"]})
        rows[name]["speedup_over_mac_cut"] = rows[name]["speedup"]["median"] / rows[name]["mac_cut"]
    for row in rows.values():
        if "same_as" in row:
            for key in ("ms", "speedup", "speedup_over_mac_cut"):
                row[key] = rows[row["same_as"]][key]
    return {"dense_macs_per_example": dense_macs, "variants": rows}


LAYER_WIDTHS = (30, 32, 33, 40, 48, 60, 64)
SMALL_LAYERS = ((32, 16), (16, 10), (33, 11), (11, 10))


def bench_layers(in_features: int, batch: int, repeats: int, block_s: float, quick: bool) -> dict[str, Any]:
    """One ``Linear(in_features, N)`` per width N, and the small tail layers alone, timed side by side.

    MACs per second show the width effect directly (a width that is not a multiple of the kernel's
    block runs fewer MACs per second); the tail layers' time is almost all fixed per-call cost.
    """
    torch.manual_seed(0)
    widths = LAYER_WIDTHS[:3] if quick else LAYER_WIDTHS
    x = torch.randn(batch, in_features)
    fns: dict[str, Callable[[], Any]] = {}
    macs: dict[str, float] = {}
    for n in widths:
        layer = torch.nn.Linear(in_features, n)
        fns[f"{in_features}->{n}"] = lambda layer=layer: layer(x)
        macs[f"{in_features}->{n}"] = batch * in_features * n
    for a, b in SMALL_LAYERS:
        layer, h = torch.nn.Linear(a, b), torch.randn(batch, a)
        fns[f"{a}->{b}"] = lambda layer=layer, h=h: layer(h)
        macs[f"{a}->{b}"] = batch * a * b
    with torch.inference_mode():
        times = C.interleave(fns, repeats, min_run_time=block_s, warmup=3, seed=1)
    rows = {}
    for name, s in C.summarise(times, scale=1e6).items():
        us = s["value"]
        rows[name] = {"us": us, "macs": macs[name], "gmacs_per_s": macs[name] / (us["median"] * 1e-6) / 1e9}
    return rows


def goals(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per rounding: the largest MAC cut whose speedup reaches :data:`GOAL` of it (the issue's goal for MLPs)."""
    rows = []
    variants = report["results"]["variants"]
    for r in ROUND_TO:
        mine = [v for v in variants.values() if v["round_to"] == r and v["keep_fraction"] < 1]
        if not mine:
            continue
        reaching = [v for v in mine if v["speedup_over_mac_cut"] >= GOAL]
        best = max(reaching, key=lambda v: v["mac_cut"]) if reaching else None
        deepest = max(mine, key=lambda v: v["mac_cut"])
        figure = ", ".join(f"widths {'/'.join(map(str, v['widths']))}: {v['speedup_over_mac_cut']:.2f} at {v['mac_cut']:.1f}x"
                           for v in sorted(mine, key=lambda v: v["mac_cut"]))
        rows.append({"part": NAME, "subject": f"{report['config']['model']}, round_to={r}",
                     "goal": f"diagnostic (the goal is judged in the inference part): the largest MAC cut whose "
                             f"speedup reaches {GOAL} of it, batch {report['config']['batch']}",
                     "figure": figure, "met": None,
                     "margin": (f"met up to a {best['mac_cut']:.1f}x MAC cut (widths {'/'.join(map(str, best['widths']))})"
                                if best else "met at no fraction")
                               + f"; at the deepest cut ({deepest['mac_cut']:.1f}x) {deepest['speedup_over_mac_cut']:.2f}",
                     "largest_cut_meeting_goal": best["mac_cut"] if best else None})
    return rows


def table(report: Mapping[str, Any]) -> list[str]:
    lines = ["| units kept per layer | round_to | widths | MAC cut | median ms | speedup vs dense [min–max] | speedup ÷ MAC cut |",
             "|---:|---:|---|---:|---:|---|---:|"]
    for row in report["results"]["variants"].values():
        same = f" (= {row['same_as']})" if "same_as" in row else ""
        lines.append(f"| {row['keep_fraction']:.0%} | {row['round_to'] or '—'} | {'/'.join(map(str, row['widths']))}{same} | "
                     f"{row['mac_cut']:.2f}x | {row['ms']['median']:.3f} | {C.fmt_spread(row['speedup'], '{:.2f}', 'x')} | "
                     f"{row['speedup_over_mac_cut']:.2f} |")
    return lines


def to_markdown(report: Mapping[str, Any]) -> str:
    c = report["config"]
    lines = ["# Width alignment: speedup ÷ MAC cut of compact MLPs", "", f"Command: `{c['command']}`", "",
             C.machine_line(report["machine"], report.get("load_average_at_end")), "",
             f"Quick mode: {c['quick']}. Model: {c['model']}. Batch {c['batch']}, fp32, inference mode. Each hidden layer "
             "keeps the stated fraction of its units (L2 norm; `Pruner(..., granularity=Neurons(round_to=...))`, `Pruner.plan` "
             "then `Pruner.commit`, the path `Pruning(granularity=Neurons(round_to=...))` takes), rounded up to a multiple of `round_to`. "
             f"{c['repeats']} interleaved repeats (seeded random order), each model timed by "
             f"`torch.utils.benchmark.Timer.blocked_autorange(min_run_time={c['block_s']})`; speedup = median of per-repeat ratios to dense. "
             "Every compact model's outputs equal the dense model's with the same units masked "
             f"(max |diff| ≤ {ATOL}).", ""]
    lines += table(report)
    lines += ["", "## Single layers", "", f"Each layer alone at batch {c['batch']} (median µs of interleaved Timer runs "
              "[min–max]) and its multiply-accumulates per second:", ""] + layer_table(report)
    lines += ["", "## Diagnostic", "", "| subject | what | margin |", "|---|---|---|"]
    for g in report["goals"]:
        lines.append(f"| {g['subject']} | {g['goal']} | {g['margin']} |")
    return "\n".join(lines) + "\n"


def layer_table(report: Mapping[str, Any]) -> list[str]:
    lines = ["| layer (in->out) | µs per call | GMAC/s |", "|---|---|---:|"]
    for name, row in report.get("layers", {}).items():
        lines.append(f"| {name} | {C.fmt_spread(row['us'], '{:.1f}')} | {row['gmacs_per_s']:.1f} |")
    return lines


def suite_section(report: Mapping[str, Any]) -> str:
    return "\n".join(table(report) + ["", "Single layers at the same batch:", ""] + layer_table(report)) + "\n"


def plot(report: Mapping[str, Any], out: Path) -> list[str]:
    """``width_alignment.png``: speedup ÷ MAC cut against the MAC cut, one line per rounding."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    variants = [v for v in report["results"]["variants"].values() if v["keep_fraction"] < 1]
    for r in ROUND_TO:
        mine = sorted((v for v in variants if v["round_to"] == r), key=lambda v: v["mac_cut"])
        ax.plot([v["mac_cut"] for v in mine], [v["speedup_over_mac_cut"] for v in mine], marker="o",
                label=f"round_to={r}" if r else "no rounding")
        for v in mine:
            ax.annotate("/".join(map(str, v["widths"])), (v["mac_cut"], v["speedup_over_mac_cut"]), fontsize=7,
                        textcoords="offset points", xytext=(3, 3))
    ax.axhline(GOAL, color="grey", ls=":", lw=1, label=f"goal {GOAL}")
    ax.set_xlabel("MAC cut (dense MACs ÷ compact MACs)")
    ax.set_ylabel("speedup ÷ MAC cut")
    ax.set_title(f"{report['config']['model_short']}, batch {report['config']['batch']}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(out) / "width_alignment.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path.name]


def run(quick: bool = False, out: Path = C.DEFAULT_OUT, device: str | None = "auto", threads: int | None = None,
        repeats: int | None = None, batch: int | None = None, command: str | None = None,
        progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the benchmark and write ``width_alignment.{json,md}`` and its plot into ``out``.

    The part is CPU-only (it is about CPU GEMM kernels): ``device`` is recorded, not used.
    """
    say = progress or C.progress(NAME)
    started = time.perf_counter()
    dense, input_shape, note = _model(quick)
    repeats = repeats or (2 if quick else 9)
    batch = batch or (16 if quick else BATCH)
    block_s = 0.02 if quick else 0.1
    with C.num_threads(threads):
        report: dict[str, Any] = {
            "name": NAME, "machine": C.machine_info(torch.device("cpu")),
            "config": {"quick": quick, "command": command or C.command_line(), "repeats": repeats, "batch": batch,
                       "block_s": block_s, "model": note, "model_short": "quick MLP" if quick else "LeNet-300-100",
                       "keep_fractions": list(QUICK_KEEP if quick else KEEP), "round_to": list(ROUND_TO),
                       "device_requested": device, "precision": "fp32", "order": C.ORDER},
        }
        report["results"] = bench(dense, input_shape, report["config"]["keep_fractions"], batch, repeats, block_s, say)
        say("timing single layers by width")
        report["layers"] = bench_layers(int(torch.Size(input_shape).numel()), batch, repeats, block_s, quick)
    return C.finish(report, Path(out), NAME, started, goals, plot, to_markdown)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    C.add_common_arguments(parser, "a tiny model, two fractions (seconds)")
    parser.add_argument("--repeats", type=int, default=None, help="interleaved repeats (default 9; 2 quick)")
    parser.add_argument("--batch", type=int, default=None, help=f"batch size (default {BATCH}; 16 quick)")
    args = parser.parse_args(argv)
    report = run(args.quick, args.out, args.device, args.threads, args.repeats, args.batch)
    print(to_markdown(report))
    print(f"Wrote {args.out / (NAME + '.json')} and {args.out / (NAME + '.md')} in {report['seconds']:.0f} s.", file=sys.stderr)


if __name__ == "__main__":
    main()
