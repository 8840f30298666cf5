"""Issue 17: a latency budget (NetAdapt/HALP-style lookup table) against a MAC budget, on the CPU.

NetAdapt (Yang et al. 2018) and HALP (Shen et al. 2022) argue that MACs are a poor proxy for latency
and prune against a measured per-layer latency table instead: NetAdapt reports MobileNet 1.7x faster
on a mobile CPU at equal accuracy where a MAC-driven method is 1.4x faster; HALP reports ResNet-50
1.60x faster than dense on a V100 at a small loss (76.5 vs 77.2 % top-1).

Here, per model, data set and seed, the same dense warm-up and fine-tuning schedule
(``Geometric(per_cycle=0.35)``, neuron removal, global L2 ranking) runs with

* ``budget="macs"`` at several targets (the fraction of MACs removed),
* ``budget=Latency(...)`` at several targets (the fraction of the dense latency removed, predicted
  from the table), ranking by importance, and
* the same with ``Latency(per_second=True)``: HALP's importance per second saved.

After each fit, the compact model's latency is measured side by side with a dense model of the same
architecture (median ratio of interleaved repeats, ``torch.utils.benchmark``, batch 256), so every
run is judged by measured time, whatever it was pruned against. Models: LeNet-300-100 on real
MNIST (784 inputs) and the small ResNet of notebook 8 on digits (8x8: small convs, where a layer's
fixed cost is a large part of its time). Run:

    python experiments/latency_budget.py --seeds 0 1 2

writes ``experiments/results/latency_budget.{md,json,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from typing import Any

import lightning as L
import torch

import _common as C  # noqa: E402  (experiments/ is on sys.path when run as a script)
from lightning_prune import Geometric, Latency, Neurons, Pruning
from lightning_prune.data import DigitsDataModule, MNISTDataModule
from lightning_prune.latency import repeat_batch, seconds
from lightning_prune.models import Classifier
from lightning_prune.teaching import mean_std, quiet_trainer

BATCH = 256
REPEATS, RUN_TIME = 5, 0.05  # interleaved repeats of the dense/compact measurement, seconds per timing
SETTINGS = {  # name: (arch, data module, lr)
    "LeNet-300-100 / mnist": ("lenet_300_100", MNISTDataModule, 3e-3),
    "ResNetSmall / digits": ("resnet_small", DigitsDataModule, 3e-3),
}
SCHEDULE = dict(per_cycle=0.35, warmup_epochs=6, finetune_epochs=1)
BUDGETS = {  # label: (budget, targets)
    "macs": ("macs", (0.3, 0.5, 0.7)),
    "latency": (Latency(batch_size=BATCH, levels=4, min_run_time=0.03), (0.2, 0.4)),
    "latency, per second": (Latency(batch_size=BATCH, levels=4, min_run_time=0.03, per_second=True), (0.2, 0.4)),
}


def measured_fraction(compact: torch.nn.Module, dense: torch.nn.Module, example: torch.Tensor) -> float:
    """Median over interleaved repeats of compact seconds / dense seconds (eval, no gradients, batch 256;
    each timing the fastest of its blocks, see :func:`lightning_prune.latency.seconds`)."""
    batch = repeat_batch(example, BATCH)
    ratios = []
    for model in (compact, dense):
        model.eval()
    with torch.no_grad():
        for _ in range(REPEATS):
            dense_s = seconds(lambda: dense(batch), RUN_TIME)
            compact_s = seconds(lambda: compact(batch), RUN_TIME)
            ratios.append(compact_s / dense_s)
    return statistics.median(ratios)


def run(setting: str, label: str, target: float, seed: int, epochs_scale: float = 1.0) -> dict[str, Any]:
    """One fit pruned against one budget; accuracy, MACs and measured latency of the compact model."""
    arch, data_module, lr = SETTINGS[setting]
    budget = BUDGETS[label][0]
    schedule = Geometric(target, budget=budget, **SCHEDULE)
    epochs = max(1, round(SCHEDULE["warmup_epochs"] * epochs_scale)) + len(schedule.fractions()) * SCHEDULE["finetune_epochs"]
    schedule = Geometric(target, budget=budget, **{**SCHEDULE, "warmup_epochs": epochs - len(schedule.fractions())})
    L.seed_everything(seed)
    model = Classifier(arch, lr=lr, input_shape=data_module.input_shape)
    pruning = Pruning(schedule, criterion="l2", granularity=Neurons(), verbose=False)
    try:
        result = C.fit_and_evaluate(quiet_trainer(epochs, [pruning]), model, data_module(batch_size=64, seed=seed))
    except ValueError as error:  # a latency target the table says is out of reach
        return {"error": str(error).split(" The rest")[0]}
    last = pruning.history[-1]
    dense = Classifier(arch, input_shape=data_module.input_shape)
    example = torch.randn(2, *data_module.input_shape)
    return {"test_acc": result["test_acc"], "macs_fraction": last["macs_fraction"],
            "params_fraction": last["params_fraction"], "predicted_latency_fraction": last.get("latency_fraction"),
            "measured_latency_fraction": measured_fraction(model, dense, example)}


def render(results: dict[str, Any]) -> str:
    lines = ["# Latency budget against MAC budget, on the CPU (issue 17)", "",
             f"Test accuracy and the compact model's measured latency (fraction of the dense model's, batch {BATCH}, "
             f"median of interleaved repeats), mean ± std over seeds {results['seeds']}. Schedule "
             f"`Geometric(target, {SCHEDULE})`, neuron removal, global L2 ranking. \"predicted\" is the table's "
             "prediction at the last prune.", ""]
    for setting, rows in results["runs"].items():
        lines += [f"## {setting}", "", "| budget | target | test acc | MACs kept | predicted latency kept | measured latency kept |",
                  "|---|---:|---:|---:|---:|---:|"]
        for label, (_, targets) in BUDGETS.items():
            for target in targets:
                cells = [c for c in rows[label][str(target)] if "error" not in c]
                if not cells:
                    lines.append(f"| {label} | {target} | out of reach: {rows[label][str(target)][0]['error']} | | | |")
                    continue
                acc, macs, measured = (mean_std([c[key] for c in cells]) for key in ("test_acc", "macs_fraction",
                                                                                      "measured_latency_fraction"))
                predicted = [c["predicted_latency_fraction"] for c in cells if c["predicted_latency_fraction"] is not None]
                pred = f"{statistics.mean(predicted):.3f}" if predicted else "-"
                lines.append(f"| {label} | {target} | {acc[0]:.3f} ± {acc[1]:.3f} | {macs[0]:.3f} | {pred} | "
                             f"{measured[0]:.3f} ± {measured[1]:.3f} |")
        lines.append("")
    lines += [f"Environment: {results['environment']}."]
    if results.get("load"):
        parts = "; ".join(f"{part}: {value}" for part, value in results["load"].items())
        lines.append(f"1-minute load average of the machine (2 cores) at the start and end of each part: {parts}.")
    if results.get("note"):
        lines.append(results["note"])
    return "\n".join(lines + [""])


def plot(results: dict[str, Any], path) -> None:
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(results["runs"]), figsize=(5 * len(results["runs"]), 3.6))
    for axis, (setting, rows) in zip(list(axes) if len(results["runs"]) > 1 else [axes], results["runs"].items()):
        for label, marker in zip(BUDGETS, "os^"):
            done = [[c for c in rows[label][str(t)] if "error" not in c] for t in BUDGETS[label][1]]
            points = [(statistics.mean(c["measured_latency_fraction"] for c in cells),
                       statistics.mean(c["test_acc"] for c in cells)) for cells in done if cells]
            axis.plot(*zip(*sorted(points)), marker=marker, label=label)
        axis.set(title=setting, xlabel="measured latency kept (fraction of dense)", ylabel="test accuracy")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_arguments(parser)
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="scale the warm-up (tests: small)")
    parser.add_argument("--settings", nargs="+", choices=list(SETTINGS), default=list(SETTINGS), metavar="NAME",
                        help="run only these settings; the others are kept from the saved JSON")
    parser.add_argument("--budgets", nargs="+", choices=list(BUDGETS), default=list(BUDGETS), metavar="LABEL",
                        help="run only these budgets; the others are kept from the saved JSON")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = args.out / "latency_budget.json"
    if not args.render:
        start = os.getloadavg()[0]
        runs = {setting: {label: {str(t): [run(setting, label, t, seed, args.epochs_scale) for seed in args.seeds]
                                  for t in targets} for label, (_, targets) in BUDGETS.items() if label in args.budgets}
                for setting in args.settings}
        loads = f"{start:.1f} → {os.getloadavg()[0]:.1f}"
        command = "python experiments/latency_budget.py --seeds " + " ".join(map(str, args.seeds))
        partial = args.settings != list(SETTINGS) or args.budgets != list(BUDGETS)
        saved = json.loads(path.read_text()) if path.exists() and partial else {"runs": {}}
        runs = {setting: {**saved["runs"].get(setting, {}), **runs.get(setting, {})} for setting in SETTINGS
                if setting in runs or setting in saved["runs"]}
        load = {**saved.get("load", {}), **{f"{setting} / {label}": loads for setting in args.settings for label in args.budgets}}
        results = {"seeds": args.seeds, "command": command, "environment": C.environment(), "device": "cpu", "runs": runs,
                   "load": load}
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))
    results = json.loads(path.read_text())
    (args.out / "latency_budget.md").write_text(render(results))
    plot(results, args.out / "latency_budget.png")
    print(render(results))


if __name__ == "__main__":
    main()
