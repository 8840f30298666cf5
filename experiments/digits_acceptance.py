"""Accuracy of the README snippet on digits: dense vs 90 % weight pruning vs 50 % neuron pruning.

Each run trains LeNet-300-100 for the same number of epochs (20) with Adam 3e-3, batch 64, and
reports the test accuracy of the final model. Run:

    python experiments/digits_acceptance.py --seeds 0 1 2

writes ``experiments/results/digits_acceptance.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import lightning as L

from lightning_prune import DropGuard, Geometric, Pruning
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier
from lightning_prune.teaching import mean_std, quiet_trainer

EPOCHS = 20
LR = 3e-3


def weight_pruning() -> Pruning:
    """The issue's snippet: iterative global L1 pruning to 90 % of the weights."""
    return Pruning(schedule=Geometric(target=0.9, per_cycle=0.2, warmup_epochs=4, finetune_epochs=1),
                   criterion="l1", granularity="weight", ranking="global",
                   guard=DropGuard(monitor="val_acc", max_drop=0.01), verbose=False)


def neuron_pruning() -> Pruning:
    """Iterative APoZ neuron pruning to half of the hidden units of each layer, 10 % per cycle."""
    return Pruning(schedule=Geometric(target=0.5, per_cycle=0.1, warmup_epochs=4, finetune_epochs=2),
                   criterion="apoz", granularity="neuron", ranking="layer",
                   guard=DropGuard(monitor="val_acc", max_drop=0.02), verbose=False)


VARIANTS = {"dense": lambda: None, "weight_l1_90": weight_pruning, "neuron_apoz_50": neuron_pruning}


def run(variant: str, seed: int) -> dict:
    """Train one variant with one seed; return its test accuracy and final sparsity."""
    L.seed_everything(seed, verbose=False)
    pruning = VARIANTS[variant]()
    trainer = quiet_trainer(EPOCHS, [pruning] if pruning else [], num_sanity_val_steps=2)  # Lightning's default sanity check, as in the committed run
    model = Classifier("lenet_300_100", lr=LR, input_shape=(1, 8, 8))
    data = DigitsDataModule(batch_size=64, seed=seed)
    trainer.fit(model, data)
    test_acc = trainer.test(model, data, verbose=False)[0]["test_acc"]
    sparsity = pruning.history[-1]["sparsity"] if pruning and pruning.history else 0.0
    rolled_back = any(row["accepted"] is False for row in pruning.history) if pruning else False
    return {"variant": variant, "seed": seed, "test_acc": test_acc, "sparsity": sparsity, "rolled_back": rolled_back}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = parser.parse_args()
    rows = [run(variant, seed) for seed in args.seeds for variant in VARIANTS]
    lines = ["| variant | seeds | test acc (mean ± std) | final sparsity | drop vs dense (points) |", "|---|---|---|---|---|"]
    dense = statistics.mean(r["test_acc"] for r in rows if r["variant"] == "dense")
    for variant in VARIANTS:
        accs = [r["test_acc"] for r in rows if r["variant"] == variant]
        sparsity = statistics.mean(r["sparsity"] for r in rows if r["variant"] == variant)
        mean, std = mean_std(accs)
        lines.append(f"| {variant} | {len(accs)} | {100 * mean:.2f} ± {100 * std:.2f} | "
                     f"{sparsity:.3f} | {100 * (dense - mean):+.2f} |")
    table = "\n".join(lines)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "digits_acceptance.json").write_text(json.dumps(rows, indent=2))
    command = "python experiments/digits_acceptance.py --seeds " + " ".join(map(str, args.seeds))
    (args.out / "digits_acceptance.md").write_text(f"# Digits acceptance\n\n`{command}`\n\n{table}\n")


if __name__ == "__main__":
    main()
