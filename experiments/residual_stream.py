"""Issue 13: is it worth removing a transformer's residual stream? Heads and FFN units alone against
heads, FFN units and residual channels, at the same parameter count, on real MNIST.

The ViT and training of ``transformer_pruning.py`` (Hugging Face ``ViTForImageClassification``, hidden
size 64, 4 layers of 4 heads, FFN 256; 3,500 real-MNIST training images, AdamW, 20 epochs), two arms
per seed, both ``Pruning(criterion="taylor", ranking="layer")`` with the same warm-up and cycles:

* **heads+FFN**: ``granularity="neuron"`` (the default refuses the residual-stream channels, which
  feed LayerNorm), half of every layer's heads and FFN units removed (``transformer_pruning.py``'s
  pruned model).
* **+residual**: ``granularity=Neurons(norm_coupled="remove")``, which removes the residual-stream
  channels at the prune step too, with a parameter budget (``budget="params"``) set to the fraction of
  parameters the heads+FFN arm removed in the same seed: the same size, cut differently.

CPU latency of both (and of a dense model of the same architecture, whose speed does not depend on its
weights) is measured side by side: ``torch.utils.benchmark``, batch 256, one thread, repeats
interleaved in a random order, median.

    python experiments/residual_stream.py --seeds 0 1 2

writes ``experiments/results/residual_stream.{md,json}``. ``--quick`` (3 epochs, 2 cycles, 3 latency
repeats) is what ``tests/test_experiments.py`` runs.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch

import _common as C  # noqa: E402  (experiments/ is on sys.path when run as a script)
import transformer_pruning as T  # noqa: E402
from lightning_prune import Geometric, Neurons, Pruning
from lightning_prune.teaching import mean_std

ARMS = ("heads+FFN", "+residual")


def make_arm(arm: str, warmup: int, finetune: int, per_cycle: float, params_removed: float | None = None) -> Pruning:
    """The callback of one arm (``params_removed``: the +residual arm's parameter budget)."""
    if arm == "heads+FFN":
        return T.make_pruning(warmup, finetune, per_cycle)
    schedule = Geometric(params_removed, per_cycle=per_cycle, warmup_epochs=warmup, finetune_epochs=finetune,
                         budget="params")
    options = {**T.PRUNING, "granularity": Neurons(norm_coupled="remove")}
    return Pruning(schedule=schedule, verbose=False, **options)


def hidden_width(module: T.ViTClassifier) -> int:
    """The residual stream's width (the patch embedding's output channels)."""
    return int(module.vit.vit.embeddings.patch_embeddings.projection.out_channels)


def run(seed: int, quick: bool = False) -> dict[str, Any]:
    """Both arms of one seed: accuracy, shapes, parameters, MACs and CPU latency.

    Raises:
        AssertionError: If the +residual arm kept its residual width, or the two arms differ in size by
            more than 3 % of the dense parameters.
    """
    settings = T.QUICK if quick else dict(epochs=T.EPOCHS, warmup=T.WARMUP, finetune=T.FINETUNE,
                                          per_cycle=T.SCHEDULE["per_cycle"], repeats=21)
    epochs, warmup, finetune, per_cycle = (settings[k] for k in ("epochs", "warmup", "finetune", "per_cycle"))
    models, rows = {}, {}
    callback = make_arm("heads+FFN", warmup, finetune, per_cycle)
    models["heads+FFN"], rows["heads+FFN"] = T.fit(seed, epochs, callback)
    dense_params, dense_macs = callback.dense["params"], callback.dense["macs"]
    removed = 1.0 - rows["heads+FFN"]["params"] / dense_params
    rows["heads+FFN"]["macs"] = callback.history[-1]["macs"]
    callback = make_arm("+residual", warmup, finetune, per_cycle, removed)
    models["+residual"], rows["+residual"] = T.fit(seed, epochs, callback)
    rows["+residual"]["macs"] = callback.history[-1]["macs"]
    for arm, model in models.items():
        rows[arm]["hidden"] = hidden_width(model)
    assert rows["+residual"]["hidden"] < T.VIT["hidden_size"], rows["+residual"]["hidden"]
    gap = abs(rows["+residual"]["params"] - rows["heads+FFN"]["params"]) / dense_params
    assert gap <= 0.03, gap
    torch.manual_seed(seed)
    latency = T.latency_ms({"dense": T.ViTClassifier(), **models}, settings["repeats"], seed)
    for arm in ARMS:
        rows[arm]["latency_ms"] = latency[arm]
    return {"seed": seed, "epochs": epochs, "warmup": warmup, "finetune": finetune, "per_cycle": per_cycle,
            "dense": {"params": dense_params, "macs": dense_macs, "hidden": T.VIT["hidden_size"],
                      "latency_ms": latency["dense"]},
            "params_removed": removed, **rows}


def tables(rows: list[dict[str, Any]]) -> str:
    def ms(values: list[float], digits: int = 2) -> str:
        mean, std = mean_std(values)
        return f"{mean:.{digits}f} ± {std:.{digits}f}"

    summary = ["| arm | test acc (%) | val acc (%) | parameters (of dense) | MACs (of dense) | residual width | heads per layer "
               "| FFN width per layer | speed-up over dense (CPU, batch 256) |", "|---|---|---|---|---|---|---|---|---|"]
    for arm in ARMS:
        r = [row[arm] for row in rows]
        shapes = sorted({(x["hidden"], tuple(x["heads"]), tuple(x["ffn"])) for x in r})
        summary.append(
            f"| {arm} | {ms([100 * x['test_acc'] for x in r])} | {ms([100 * x['val_acc'] for x in r])} | "
            f"{ms([x['params'] / row['dense']['params'] for x, row in zip(r, rows)], 3)} | "
            f"{ms([x['macs'] / row['dense']['macs'] for x, row in zip(r, rows)], 3)} | "
            f"{' / '.join(str(s[0]) for s in shapes)} | {' / '.join(str(list(s[1])) for s in shapes)} | "
            f"{' / '.join(str(list(s[2])) for s in shapes)} | "
            f"{ms([row['dense']['latency_ms']['median'] / x['latency_ms']['median'] for x, row in zip(r, rows)])}× |")
    diff = mean_std([100 * (row["+residual"]["test_acc"] - row["heads+FFN"]["test_acc"]) for row in rows])
    summary += ["", f"+residual minus heads+FFN, test accuracy: {diff[0]:+.2f} ± {diff[1]:.2f} points (per seed "
                + ", ".join(f"{100 * (row['+residual']['test_acc'] - row['heads+FFN']['test_acc']):+.1f}" for row in rows)
                + "; one test image is 0.1 points)."]
    per_seed = ["| seed | arm | test / val acc (%) | parameters | MACs | latency ms (min-max), dense in the same run | fit s |",
                "|---|---|---|---|---|---|---|"]
    for row in rows:
        d = row["dense"]["latency_ms"]
        for arm in ARMS:
            x = row[arm]
            per_seed.append(
                f"| {row['seed']} | {arm} | {100 * x['test_acc']:.2f} / {100 * x['val_acc']:.2f} | {x['params']:,} | "
                f"{int(x['macs']):,} | {x['latency_ms']['median']:.2f} ({x['latency_ms']['min']:.2f}-"
                f"{x['latency_ms']['max']:.2f}), dense {d['median']:.2f} | {x['fit_seconds']:.0f} |")
    return "\n".join(summary + ["", "Per seed:", ""] + per_seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_arguments(parser, quick="3 epochs, 2 cycles, 3 latency repeats: a smoke run, not results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = "residual_stream" + "_quick" * args.quick
    saved = C.run_or_load(args, name, "residual_stream", lambda seed: run(seed, quick=args.quick),
                          {"vit": T.VIT, "batch_size": T.BATCH_SIZE, "lr": T.LR})
    table = tables(saved["rows"])
    print(table)
    lines = C.report_header("Heads and FFN units, or the residual stream too? (issue 13)", saved) + [
        "The ViT, data and training of `transformer_pruning.md` (hidden size 64, 4 layers of 4 heads, FFN 256; "
        "3,500 real-MNIST training images; AdamW; the same epochs, warm-up and cycles in both arms, same seed). "
        "**heads+FFN**: `granularity=\"neuron\"`, the residual stream refused (it feeds LayerNorm), half of every "
        "layer's heads and FFN units removed. **+residual**: `granularity=Neurons(norm_coupled=\"remove\")`, the "
        "residual-stream channels removed at the prune step as well, to the same parameter count "
        "(`budget=\"params\"`, target = the fraction the heads+FFN arm removed in that seed). Both rank per layer "
        "(`ranking=\"layer\"`) by Taylor scores. Speed-ups are dense ÷ arm median latency, all three models timed "
        "side by side in the same run.", "",
        table, "",
    ]
    (args.out / f"{name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
