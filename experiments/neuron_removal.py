"""Issue 3 acceptance: physical neuron removal on digits, compact model vs dense, same epochs and optimizer.

* LeNet-300-100 with 80 % of its 400 hidden units removed must stay within 1 point of dense.
* ResNetSmall with half its channels removed must stay within 2 points of dense.

Each pruned run is a real ``lightning.Trainer`` fit with the ``Pruning`` callback
(``granularity="neuron"``, iterative ``schedule="geometric"``); the pruned units are physically
removed during the fit (``remove=True``, the default for neurons). The dense model of the same
experiment is trained for the same number of epochs with the same optimizer, lr and batch size.
After every pruned run the script checks that the model really is smaller: the parameter count of
the module must equal the callback's ``history[-1]["params"]`` and every pruned layer's weight must
have exactly the kept number of output units. Run:

    python experiments/neuron_removal.py --seeds 0 1 2

writes ``experiments/results/neuron_removal.{md,json}``.

Settings (``EXPERIMENTS``) were chosen on validation accuracy with seeds 100-102, never on the test
split or on the reported seeds (``--select`` reruns that comparison).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch

from lightning_prune import Pruning
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier

BATCH_SIZE = 64

# One entry per acceptance goal. ``pruning`` holds the Pruning callback's arguments.
EXPERIMENTS: dict[str, dict[str, Any]] = {
    "lenet_300_100": {
        "arch": "lenet_300_100",
        "epochs": 24,
        "lr": 3e-3,
        "budget": 1.0,  # points of test accuracy allowed below dense
        "pruning": dict(criterion="apoz", scope="layer", target=0.8, schedule="geometric", per_cycle=0.2,
                        warmup_epochs=4, finetune_epochs=2),
    },
    "resnet_small": {
        "arch": "resnet_small",
        "epochs": 20,
        "lr": 3e-3,
        "budget": 2.0,
        "pruning": dict(criterion="l2", scope="layer", target=0.5, schedule="geometric", per_cycle=0.2,
                        warmup_epochs=4, finetune_epochs=2),
    },
}


def make_pruning(settings: dict[str, Any]) -> Pruning:
    return Pruning(granularity="neuron", verbose=False, **settings)


def _widths(model: torch.nn.Module) -> dict[str, int]:
    """Output units of every Linear/Conv layer of the model as it is now."""
    return {name: int(m.weight.shape[0]) for name, m in model.named_modules()
            if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))}


def run(experiment: str, seed: int, variant: str = "pruned", epochs: int | None = None,
        pruning: dict[str, Any] | None = None) -> dict[str, Any]:
    """Train one variant (``"dense"`` or ``"pruned"``) of one experiment with one seed.

    Args:
        experiment: A key of :data:`EXPERIMENTS`.
        seed: Seed of the initialisation and of the training order.
        variant: ``"dense"`` (no callback) or ``"pruned"`` (the ``Pruning`` callback).
        epochs: Override the experiment's number of epochs (tests use fewer).
        pruning: Override the experiment's ``Pruning`` arguments (used by ``--select``).

    Returns:
        Validation and test accuracy of the final model, its parameter count (counted on the module)
        and, when pruned, the callback's last history row (params, MACs, fractions, sparsity) and
        the output width of every layer.

    Raises:
        AssertionError: If a pruned model is not physically as small as the callback reports.
    """
    config = EXPERIMENTS[experiment]
    epochs = config["epochs"] if epochs is None else epochs
    L.seed_everything(seed, verbose=False)
    model = Classifier(config["arch"], lr=config["lr"], input_shape=DigitsDataModule.input_shape)
    dense_params = sum(p.numel() for p in model.parameters())
    dense_widths = _widths(model.model)
    callback = make_pruning(pruning or config["pruning"]) if variant == "pruned" else None
    trainer = L.Trainer(max_epochs=epochs, callbacks=[callback] if callback else [], accelerator="cpu", devices=1,
                        enable_progress_bar=False, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, deterministic=True)
    data = DigitsDataModule(batch_size=BATCH_SIZE, seed=seed)
    start = time.perf_counter()
    trainer.fit(model, data)
    val_acc = trainer.validate(model, data, verbose=False)[0]["val_acc"]
    test_acc = trainer.test(model, data, verbose=False)[0]["test_acc"]
    seconds = time.perf_counter() - start
    params = sum(p.numel() for p in model.parameters())
    row: dict[str, Any] = {
        "experiment": experiment, "variant": variant, "seed": seed, "epochs": epochs,
        "val_acc": val_acc, "test_acc": test_acc, "params": params, "dense_params": dense_params,
        "seconds": seconds,
    }
    if callback is not None:
        last = callback.history[-1]
        keep = callback.keep
        widths = _widths(model.model)
        modules = dict(model.named_modules())
        # The model is physically smaller: exactly the kept units are left, and no masked zeros count.
        for key, mask in keep.items():
            assert modules[key].weight.shape[0] == int(mask.sum()), (key, modules[key].weight.shape, int(mask.sum()))
        assert params == int(last["params"]), (params, last["params"])
        assert not any(row["accepted"] is False for row in callback.history)
        row.update({
            "cycles": len(callback.history),
            "sparsity": last["sparsity"],
            "history_params": int(last["params"]),
            "macs": last["macs"],
            "dense_macs": callback._state["dense"]["macs"],
            "params_fraction": last["params_fraction"],
            "macs_fraction": last["macs_fraction"],
            "widths": {name: [dense_widths[name], widths[name]] for name in widths},
            "units_kept": {key: [int(mask.numel()), int(mask.sum())] for key, mask in keep.items()},
        })
    return row


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.mean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def tables(rows: list[dict[str, Any]]) -> str:
    """Summary table (mean ± std over seeds) and per-seed table, markdown."""
    out = ["| experiment | settings | seeds | dense test acc | compact test acc | drop (points) | budget | met | "
           "params (compact / dense) | MACs (compact / dense) |",
           "|---|---|---|---|---|---|---|---|---|---|"]
    for name, config in EXPERIMENTS.items():
        dense = {r["seed"]: r for r in rows if r["experiment"] == name and r["variant"] == "dense"}
        pruned = {r["seed"]: r for r in rows if r["experiment"] == name and r["variant"] == "pruned"}
        seeds = sorted(set(dense) & set(pruned))
        if not seeds:
            continue
        d_mean, d_std = _mean_std([100 * dense[s]["test_acc"] for s in seeds])
        p_mean, p_std = _mean_std([100 * pruned[s]["test_acc"] for s in seeds])
        drop_mean, drop_std = _mean_std([100 * (dense[s]["test_acc"] - pruned[s]["test_acc"]) for s in seeds])
        p = config["pruning"]
        settings = (f"{p['criterion']}, {p['scope']}, target {p['target']}, per_cycle {p['per_cycle']}, "
                    f"warmup {p['warmup_epochs']}, finetune {p['finetune_epochs']}, {config['epochs']} epochs, "
                    f"Adam {config['lr']:g}")
        first = pruned[seeds[0]]
        params = f"{first['params']:,} / {first['dense_params']:,} ({100 * first['params_fraction']:.1f} %)"
        macs = f"{first['macs']:,.0f} / {first['dense_macs']:,.0f} ({100 * first['macs_fraction']:.1f} %)"
        if len({pruned[s]["params"] for s in seeds}) > 1:  # global scope: sizes differ per seed
            params = "see per seed"
            macs = "see per seed"
        met = "yes" if drop_mean <= config["budget"] else "NO"
        out.append(f"| {name} | {settings} | {len(seeds)} | {d_mean:.2f} ± {d_std:.2f} | {p_mean:.2f} ± {p_std:.2f} | "
                   f"{drop_mean:+.2f} ± {drop_std:.2f} | {config['budget']:.0f} | {met} | {params} | {macs} |")
    out += ["", "Per seed:", "",
            "| experiment | seed | dense val / test | compact val / test | drop (points) | sparsity | "
            "params (module count) | params_fraction | MACs | macs_fraction | kept widths | fit s (dense / pruned) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in EXPERIMENTS:
        dense = {r["seed"]: r for r in rows if r["experiment"] == name and r["variant"] == "dense"}
        pruned = {r["seed"]: r for r in rows if r["experiment"] == name and r["variant"] == "pruned"}
        for s in sorted(set(dense) & set(pruned)):
            d, p = dense[s], pruned[s]
            kept = ", ".join(f"{k} {v[1]}/{v[0]}" for k, v in p["units_kept"].items())
            out.append(
                f"| {name} | {s} | {100 * d['val_acc']:.2f} / {100 * d['test_acc']:.2f} | "
                f"{100 * p['val_acc']:.2f} / {100 * p['test_acc']:.2f} | {100 * (d['test_acc'] - p['test_acc']):+.2f} | "
                f"{p['sparsity']:.3f} | {p['params']:,} | {p['params_fraction']:.3f} | {p['macs']:,.0f} | "
                f"{p['macs_fraction']:.3f} | {kept} | {d['seconds']:.1f} / {p['seconds']:.1f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--experiments", nargs="+", default=list(EXPERIMENTS), choices=list(EXPERIMENTS))
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    start = time.perf_counter()
    rows = [run(name, seed, variant) for name in args.experiments for seed in args.seeds
            for variant in ("dense", "pruned")]
    runtime = time.perf_counter() - start
    table = tables(rows)
    print(table)
    print(f"total runtime {runtime:.0f} s")
    args.out.mkdir(parents=True, exist_ok=True)
    environment = (f"torch {torch.__version__}, lightning {L.__version__}, Python {platform.python_version()}, "
                   f"{torch.get_num_threads()} torch threads")
    (args.out / "neuron_removal.json").write_text(json.dumps(
        {"experiments": {k: EXPERIMENTS[k] for k in args.experiments}, "batch_size": BATCH_SIZE,
         "runtime_s": runtime, "environment": environment, "rows": rows}, indent=2))
    command = "python experiments/neuron_removal.py --seeds " + " ".join(map(str, args.seeds))
    if args.experiments != list(EXPERIMENTS):
        command += " --experiments " + " ".join(args.experiments)
    (args.out / "neuron_removal.md").write_text(
        f"# Neuron removal on digits (issue 3)\n\n`{command}`\n\n"
        f"Runtime {runtime:.0f} s on {environment}.\n\n{table}\n")


if __name__ == "__main__":
    main()
