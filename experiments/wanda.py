"""Issue 17: activation-aware weight scores (Wanda) against magnitude, at equal sparsity.

Sun et al. (2023), "A Simple and Effective Pruning Approach for Large Language Models": scoring each
weight by ``|W_ij| · ‖X_j‖₂`` instead of ``|W_ij|`` prunes LLaMA to 50 % unstructured sparsity
*without any retraining* at a far smaller perplexity loss than magnitude (LLaMA-7B: 7.26 vs 17.29
WikiText perplexity; dense 5.68). Their explanation: a few input features carry large activations,
so a small weight on them matters more than a large weight on a quiet feature.

Two settings, per data set and seed, on the same trained dense model:

* **one-shot, no fine-tuning**: prune 50/70/90 % of the weights of every layer (per layer, as Wanda
  does per output row) with each criterion and measure test accuracy straight away;
* **iterative with fine-tuning**: ``Pruning(schedule=Geometric(target=0.9, per_cycle=0.5), ...)``
  inside ``Trainer.fit``, the same epochs for both criteria.

Models: LeNet-300-100 on real MNIST (a 5,000-image subset, whose border pixels are always zero: the
extreme case of quiet features), on MNIST-1D and on digits; and, one-shot only, the small Hugging
Face ViT of ``experiments/transformer_pruning.py`` on real MNIST. Run:

    python experiments/wanda.py --seeds 0 1 2

writes ``experiments/results/wanda.{md,json}``.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

import lightning as L
import torch

import _common as C  # noqa: E402  (experiments/ is on sys.path when run as a script)
from lightning_prune import Geometric, Magnitude, Pruning, Wanda
from lightning_prune.criteria import batch_input
from lightning_prune.data import DigitsDataModule, MNIST1DDataModule, MNISTDataModule
from lightning_prune.masks import apply_masks
from lightning_prune.models import Classifier
from lightning_prune.pruner import Pruner
from lightning_prune.teaching import accuracy, mean_std, quiet_trainer

BATCH_SIZE, LR = 64, 3e-3
DENSE_EPOCHS = 12
ITERATIVE = dict(target=0.9, per_cycle=0.5, warmup_epochs=8, finetune_epochs=2)  # 0.5, 0.75, 0.875, 0.9
SPARSITIES = (0.5, 0.7, 0.9)
CALIBRATION_BATCHES = 16
DATASETS = {"mnist": MNISTDataModule, "mnist1d": MNIST1DDataModule, "digits": DigitsDataModule}
CRITERIA = {"magnitude": lambda: Magnitude(1), "wanda": lambda: Wanda(batches=CALIBRATION_BATCHES)}


def _test_tensors(data: L.LightningDataModule) -> tuple[torch.Tensor, torch.Tensor]:
    data.setup("test")
    xs, ys = zip(*data.test_dataloader())
    return torch.cat(xs), torch.cat(ys)


def one_shot(model: torch.nn.Module, data: L.LightningDataModule, criterion: str, sparsity: float) -> float:
    """Test accuracy of ``model`` with ``sparsity`` of every layer's weights masked, no fine-tuning (model unchanged)."""
    data.setup("fit")
    batches = [batch for _, batch in zip(range(CALIBRATION_BATCHES), data.train_dataloader())]
    saved = {name: value.clone() for name, value in model.state_dict().items()}
    pruner = Pruner(model, batch_input(batches[0]), CRITERIA[criterion](), granularity="weight", ranking="layer")
    keep = pruner.plan(pruner.dense_keep(), sparsity, 0, batches)
    apply_masks(model, pruner.parameter_masks(keep))
    result = accuracy(model, *_test_tensors(data))
    model.load_state_dict(saved)
    return result


def mlp_run(dataset: str, seed: int) -> dict[str, Any]:
    L.seed_everything(seed)
    data = DATASETS[dataset](batch_size=BATCH_SIZE, seed=seed)
    model = Classifier("lenet_300_100", lr=LR, input_shape=DATASETS[dataset].input_shape)
    dense = C.fit_and_evaluate(quiet_trainer(DENSE_EPOCHS), model, data)
    row: dict[str, Any] = {"dense": dense["test_acc"], "one_shot": {}, "iterative": {}}
    for criterion in CRITERIA:
        row["one_shot"][criterion] = {str(s): one_shot(model, data, criterion, s) for s in SPARSITIES}
    epochs = ITERATIVE["warmup_epochs"] + len(Geometric(**ITERATIVE).fractions()) * ITERATIVE["finetune_epochs"]
    for criterion in CRITERIA:
        L.seed_everything(seed)
        fresh = Classifier("lenet_300_100", lr=LR, input_shape=DATASETS[dataset].input_shape)
        pruning = Pruning(schedule=Geometric(**ITERATIVE), criterion=CRITERIA[criterion](), ranking="layer", verbose=False)
        row["iterative"][criterion] = C.fit_and_evaluate(quiet_trainer(epochs, [pruning]), fresh, data)["test_acc"]
    return row


def vit_run(seed: int) -> dict[str, Any]:
    import transformer_pruning as T  # the issue-9 ViT and its settings

    L.seed_everything(seed)
    model, info = T.fit(seed, T.EPOCHS, None)
    data = MNISTDataModule(batch_size=BATCH_SIZE, seed=seed)
    row: dict[str, Any] = {"dense": info["test_acc"], "one_shot": {}}
    for criterion in CRITERIA:
        row["one_shot"][criterion] = {str(s): one_shot(model, data, criterion, s) for s in SPARSITIES}
    return row


def render(results: dict[str, Any]) -> str:
    lines = ["# Wanda against magnitude, at equal sparsity (issue 17)", "",
             f"Test accuracy, mean ± std over seeds {results['seeds']}; per-layer ranking for both criteria; Wanda's "
             f"activation norms from {CALIBRATION_BATCHES} training batches.", "",
             "## One-shot, no fine-tuning", "", "| model / data | dense | sparsity | magnitude | Wanda |", "|---|---|---|---|---|"]
    for name, rows in results["runs"].items():
        dense = mean_std([row["dense"] for row in rows])
        for s in SPARSITIES:
            cells = [mean_std([row["one_shot"][c][str(s)] for row in rows]) for c in CRITERIA]
            lines.append(f"| {name} | {dense[0]:.3f} ± {dense[1]:.3f} | {s:.0%} | "
                         + " | ".join(f"{m:.3f} ± {d:.3f}" for m, d in cells) + " |")
    lines += ["", f"## Iterative with fine-tuning (Geometric to 90 %, {ITERATIVE})", "",
              "| model / data | dense | magnitude | Wanda |", "|---|---|---|---|"]
    for name, rows in results["runs"].items():
        if "iterative" not in rows[0]:
            continue
        dense = mean_std([row["dense"] for row in rows])
        cells = [mean_std([row["iterative"][c] for row in rows]) for c in CRITERIA]
        lines.append(f"| {name} | {dense[0]:.3f} ± {dense[1]:.3f} | " + " | ".join(f"{m:.3f} ± {d:.3f}" for m, d in cells) + " |")
    lines += ["", f"Environment: {results['environment']}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_arguments(parser)
    parser.add_argument("--no-vit", action="store_true", help="skip the ViT (the slowest part)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    path = args.out / "wanda.json"
    if not args.render:
        runs = {f"LeNet-300-100 / {name}": [mlp_run(name, seed) for seed in args.seeds] for name in DATASETS}
        if not args.no_vit:
            runs["HF ViT (4 layers) / mnist"] = [vit_run(seed) for seed in args.seeds]
        results = {"seeds": args.seeds, "environment": C.environment(), "runs": runs}
        args.out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(results, indent=1))
    results = json.loads(path.read_text())
    (args.out / "wanda.md").write_text(render(results))
    print(render(results))


if __name__ == "__main__":
    main()
