"""Issue 17: does distilling from the dense model during fine-tuning recover what neuron pruning costs?

Hinton et al. (2015), "Distilling the Knowledge in a Neural Network", MNIST: a 2x800-unit net made 67
test errors; a 2x300-unit net trained alone 146; the same small net trained on the big one's
softened outputs (T = 20) 74: distillation recovered most of the gap. Here the small network is not
trained from scratch but *pruned* from the dense one inside ``Trainer.fit``: LeNet-300-100 loses 90 %
of its hidden neurons (physically removed, per layer by L2 norm, 4 geometric cycles of 50 %), with
and without ``distill=Distillation(...)`` during every cycle's fine-tuning, from the same seed, for
the same 20 epochs (8 of warm-up, 3 per cycle). The dense model is trained for the same 20 epochs.

The distillation settings (weight, temperature) are chosen on validation accuracy over separate
seeds (100, 101), never on the test split: ``--select`` trains each of :data:`CANDIDATES`; without
it the settings chosen that way (:data:`CHOSEN`) are used. Run:

    python experiments/distillation.py --seeds 0 1 2 --select

writes ``experiments/results/distillation.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
import statistics
from typing import Any

import lightning as L
import torch

import _common as C  # noqa: E402  (experiments/ is on sys.path when run as a script)
from lightning_prune import Distillation, Geometric, Neurons, Pruning
from lightning_prune.data import DigitsDataModule, MNIST1DDataModule, MNISTDataModule
from lightning_prune.models import Classifier
from lightning_prune.teaching import mean_std, quiet_trainer

BATCH_SIZE = 64
LR = 3e-3
WARMUP, FINETUNE = 8, 3
SCHEDULE = dict(target=0.9, per_cycle=0.5, warmup_epochs=WARMUP, finetune_epochs=FINETUNE)  # 0.5, 0.75, 0.875, 0.9
SELECTION_SEEDS = (100, 101)
DATASETS = {"digits": DigitsDataModule, "mnist1d": MNIST1DDataModule, "mnist": MNISTDataModule}
TITLES = {"digits": "digits (8x8)", "mnist1d": "MNIST-1D", "mnist": "real MNIST (5,000-image subset)"}
CANDIDATES = {"w0.5-T2": (0.5, 2.0), "w1-T4": (1.0, 4.0), "w2-T4": (2.0, 4.0)}
CHOSEN = {"digits": "w1-T4", "mnist1d": "w1-T4", "mnist": "w1-T4"}  # replaced by --select's choice when run


def epochs() -> int:
    """Warm-up plus every cycle's fine-tuning: the same for the dense and the pruned runs."""
    return WARMUP + len(Geometric(**SCHEDULE).fractions()) * FINETUNE


def run(dataset: str, seed: int, variant: str | None) -> dict[str, float]:
    """One fit: ``variant`` is ``None`` (dense), ``"pruned"``, or a key of :data:`CANDIDATES` (pruned + distilled)."""
    L.seed_everything(seed)
    data = DATASETS[dataset](batch_size=BATCH_SIZE, seed=seed)
    model = Classifier("lenet_300_100", lr=LR, input_shape=DATASETS[dataset].input_shape)
    callbacks = []
    if variant is not None:
        distill = Distillation(*CANDIDATES[variant]) if variant in CANDIDATES else None
        callbacks.append(Pruning(schedule=Geometric(**SCHEDULE), criterion="l2", granularity=Neurons(), ranking="layer",
                                 distill=distill, verbose=False))
    result = C.fit_and_evaluate(quiet_trainer(epochs(), callbacks), model, data)
    result["hidden"] = [model.model.features[i].out_features for i in (0, 2)]
    return result


def select(dataset: str) -> tuple[str, dict[str, float]]:
    """The candidate with the best mean validation accuracy over :data:`SELECTION_SEEDS`."""
    scores = {name: statistics.mean(run(dataset, seed, name)["val_acc"] for seed in SELECTION_SEEDS) for name in CANDIDATES}
    return max(scores, key=scores.get), scores


def render(results: dict[str, Any]) -> str:
    lines = [
        "# Distillation from the dense model while pruning (issue 17)",
        "",
        f"LeNet-300-100, 90 % of the hidden neurons removed (4 geometric cycles of 50 %, per layer, L2), {epochs()} epochs "
        f"for every model (Adam, lr {LR}, batch {BATCH_SIZE}); test accuracy, mean ± std over seeds {results['seeds']}. "
        "Distillation settings chosen on validation accuracy over seeds 100 and 101.",
        "",
        "| data | dense | pruned | pruned + distilled | chosen (weight, T) | gap recovered |",
        "|---|---|---|---|---|---|",
    ]
    for dataset, row in results["datasets"].items():
        dense, pruned, distilled = (mean_std([r["test_acc"] for r in row[key]]) for key in ("dense", "pruned", "distilled"))
        gap = dense[0] - pruned[0]
        recovered = f"{(distilled[0] - pruned[0]) / gap:+.0%}" if gap > 0.005 else "no gap"
        weight, temperature = CANDIDATES[row["chosen"]]
        lines.append(f"| {TITLES[dataset]} | {dense[0]:.3f} ± {dense[1]:.3f} | {pruned[0]:.3f} ± {pruned[1]:.3f} | "
                     f"{distilled[0]:.3f} ± {distilled[1]:.3f} | {weight}, {temperature} | {recovered} |")
    lines += ["", "Validation accuracy of each candidate on the selection seeds:", ""]
    for dataset, row in results["datasets"].items():
        lines.append(f"- {TITLES[dataset]}: " + ", ".join(f"{k} {v:.3f}" for k, v in row["selection"].items()))
    lines += ["", f"Hidden widths after pruning: {results['datasets'][next(iter(results['datasets']))]['pruned'][0]['hidden']}.",
              "", f"Environment: {results['environment']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_arguments(parser)
    parser.add_argument("--select", action="store_true", help="choose the distillation settings on validation seeds")
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = args.out / "distillation.json"
    if not args.render:
        results: dict[str, Any] = {"seeds": args.seeds, "environment": C.environment(), "datasets": {}}
        for dataset in args.datasets:
            chosen, selection = select(dataset) if args.select else (CHOSEN[dataset], {})
            results["datasets"][dataset] = {
                "chosen": chosen, "selection": selection,
                "dense": [run(dataset, seed, None) for seed in args.seeds],
                "pruned": [run(dataset, seed, "pruned") for seed in args.seeds],
                "distilled": [run(dataset, seed, chosen) for seed in args.seeds],
            }
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))
    results = json.loads(path.read_text())
    (args.out / "distillation.md").write_text(render(results))
    print(render(results))


if __name__ == "__main__":
    main()
