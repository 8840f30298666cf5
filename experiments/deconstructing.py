"""Deconstructing lottery tickets (Zhou, Lan, Liu & Yosinski, NeurIPS 2019) with LeNet-300-100 on digits and MNIST-1D.

Iterative magnitude pruning with rewinding to the initialisation, as in ``lottery_ticket.py`` but
shorter (``per_cycle`` of each layer's remaining weights per round, ``F`` epochs per round, Adam).
Two trained variants:

* ``ticket``: the survivors rewind to their original initial values (``lottery=Rewind("init")``);
* ``signed_constant``: they rewind to ``sign(w0) * std`` of their layer's initial weights
  (``Rewind("init", control=SignedConstant())``): only the signs of the initialisation survive.

And, at the start of every round of the ticket run (after the prune and the rewind, before any
training), the test accuracy of *untrained* networks under a mask, Zhou et al.'s "supermask" test:

* ``mask on init``: the round's mask on the original initial weights;
* ``signs only``: the same mask on ``signed_constant_state`` of the initial weights;
* ``magnitudes only``: the same mask on the initial magnitudes with random signs
  (``random_sign_state``);
* ``random mask``: the initial weights under a random mask with the same per-layer counts.

Chance is 10 %. Zhou et al. report supermasks far above chance (up to 86 % on MNIST with their best
mask criterion), that the signs carry the initialisation's value (signed constants train as well as
the original values; random signs do not), and that the magnitudes alone are worth little.
Run:

    python experiments/deconstructing.py --seeds 0 1 2

writes ``experiments/results/deconstructing.{md,json,png}``. One torch thread (``--threads``).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("MPLBACKEND", "Agg")

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback

import _common as C  # noqa: E402  (experiments/ is on sys.path when run as a script)
from lightning_prune import Geometric, Pruning, Rewind, SignedConstant, apply_masks
from lightning_prune.data import DigitsDataModule, MNIST1DDataModule
from lightning_prune.lottery import random_sign_state, shuffle_within_groups, signed_constant_state
from lightning_prune.models import Classifier
from lightning_prune.teaching import accuracy, mean_std, quiet_trainer

BATCH_SIZE = 64
LR = 1.2e-3
DATASETS: dict[str, dict[str, Any]] = {
    "digits": {"data": DigitsDataModule, "arch_kwargs": None, "input_shape": DigitsDataModule.input_shape},
    "mnist1d": {"data": MNIST1DDataModule, "arch_kwargs": {"in_features": 40}, "input_shape": None},
}
TRAINED = {"ticket": Rewind("init"), "signed_constant": Rewind("init", control=SignedConstant())}
UNTRAINED = ("mask on init", "signs only", "magnitudes only", "random mask")


class RoundStart(Callback):
    """At the start of each round (after ``Pruning``'s prune and rewind): the round's keep-masks."""

    def __init__(self, pruning: Pruning, epochs_per_round: int) -> None:
        self.pruning, self.epochs_per_round = pruning, epochs_per_round
        self.masks: dict[int, dict[str, torch.Tensor]] = {}

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch % self.epochs_per_round == 0:
            self.masks[trainer.current_epoch // self.epochs_per_round] = {
                name: mask.clone() for name, mask in self.pruning.keep.items()}


def _model(config: dict[str, Any]) -> Classifier:
    return Classifier("lenet_300_100", arch_kwargs=config["arch_kwargs"], lr=LR, input_shape=config["input_shape"])


def run(dataset: str, seed: int, rounds: int = 7, epochs_per_round: int = 8, per_cycle: float = 0.3) -> dict[str, Any]:
    """Both trained variants and the untrained supermask tests for one data set and seed."""
    config = DATASETS[dataset]
    data = config["data"](batch_size=BATCH_SIZE, seed=seed)
    data.setup("fit")
    test_x, test_y = data.splits["test"].tensors
    target = 1.0 - (1.0 - per_cycle) ** rounds
    result: dict[str, Any] = {"dataset": dataset, "seed": seed, "trained": {}, "untrained": {k: [] for k in UNTRAINED}}
    for variant, lottery in TRAINED.items():
        L.seed_everything(seed, verbose=False)
        model = _model(config)
        initial = {name: value.clone() for name, value in model.state_dict().items()}
        schedule = Geometric(target=target, per_cycle=per_cycle, warmup_epochs=epochs_per_round,
                             finetune_epochs=epochs_per_round)
        pruning = Pruning(criterion="l1", granularity="weight", ranking="layer", schedule=schedule, lottery=lottery,
                          verbose=False)
        assert len(pruning.fractions) == rounds
        recorder = RoundStart(pruning, epochs_per_round)
        trainer = quiet_trainer((rounds + 1) * epochs_per_round, [pruning, recorder], limit_val_batches=0)
        trainer.fit(model, data)
        result["trained"][variant] = {
            "test_acc": accuracy(model, test_x, test_y),
            "remaining": [1.0] + [1.0 - row["sparsity"] for row in pruning.history],
        }
        if variant != "ticket":
            continue
        names = [f"{name}.weight" for name in pruning.keep]
        starts = {"mask on init": initial, "signs only": signed_constant_state(initial, names),
                  "magnitudes only": random_sign_state(initial, names, seed=seed)}
        generator = torch.Generator().manual_seed(seed)
        probe = _model(config)
        for r in range(1, rounds + 1):
            keep = recorder.masks[r]
            masks = {f"{name}.weight": mask for name, mask in keep.items()}
            for kind, state in starts.items():
                probe.load_state_dict(state)
                apply_masks(probe, masks)
                result["untrained"][kind].append(accuracy(probe, test_x, test_y))
            everything = {name: torch.ones_like(mask) for name, mask in keep.items()}
            shuffled = shuffle_within_groups(everything, keep, generator)
            probe.load_state_dict(initial)
            apply_masks(probe, {f"{name}.weight": mask for name, mask in shuffled.items()})
            result["untrained"]["random mask"].append(accuracy(probe, test_x, test_y))
        probe.load_state_dict(initial)
        result["untrained_dense"] = accuracy(probe, test_x, test_y)
    assert result["trained"]["ticket"]["remaining"] == result["trained"]["signed_constant"]["remaining"]
    return result


def table(results: list[dict[str, Any]], dataset: str) -> str:
    runs = [r for r in results if r["dataset"] == dataset]
    remaining = runs[0]["trained"]["ticket"]["remaining"][1:]
    out = ["| weights remaining | " + " | ".join(UNTRAINED) + " |", "|---|" + "---|" * len(UNTRAINED)]
    for i, fraction in enumerate(remaining):
        cells = []
        for kind in UNTRAINED:
            m, s = mean_std([100 * r["untrained"][kind][i] for r in runs])
            cells.append(f"{m:.1f} ± {s:.1f}")
        out.append(f"| {100 * fraction:.1f} % | " + " | ".join(cells) + " |")
    dense_m, dense_s = mean_std([100 * r["untrained_dense"] for r in runs])
    lines = [f"Untrained networks (test accuracy %, mean ± std over {len(runs)} seeds; untrained dense network "
             f"{dense_m:.1f} ± {dense_s:.1f}):", ""] + out
    ticket = [100 * r["trained"]["ticket"]["test_acc"] for r in runs]
    signed = [100 * r["trained"]["signed_constant"]["test_acc"] for r in runs]
    (tm, ts), (sm, ss) = mean_std(ticket), mean_std(signed)
    dm, ds = mean_std([s - t for s, t in zip(signed, ticket)])
    lines += ["", f"Trained at {100 * remaining[-1]:.1f} % remaining (test accuracy %): ticket {tm:.2f} ± {ts:.2f}, "
              f"signed constant {sm:.2f} ± {ss:.2f} (paired difference {dm:+.2f} ± {ds:.2f})."]
    return "\n".join(lines)


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = [d for d in DATASETS if any(r["dataset"] == d for r in results)]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5.5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        runs = [r for r in results if r["dataset"] == dataset]
        x = [100 * f for f in runs[0]["trained"]["ticket"]["remaining"][1:]]
        for kind in UNTRAINED:
            stats = [mean_std([100 * r["untrained"][kind][i] for r in runs]) for i in range(len(x))]
            ax.errorbar(x, [m for m, _ in stats], yerr=[s for _, s in stats], marker="o", capsize=3, label=kind)
        ax.axhline(10, color="grey", ls=":", lw=1, label="chance")
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.set_ylabel("test accuracy without training (%)")
        ax.set_title(f"{dataset}: the ticket's masks on untrained weights", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# Written after the run of ``--seeds 0 1 2`` (defaults); rerunning regenerates the tables, not this text.
ANALYSIS = """## Comparison with Zhou et al. (2019), as measured (3 seeds, defaults)

Test splits: digits 357 examples, MNIST-1D 1000; chance is 10 %.

* **Supermasks: agrees.** The ticket's mask on the *untrained* initial weights classifies far above
  chance: digits 88.8 ± 3.3 % at 49 % of the weights remaining, MNIST-1D 35.0 ± 2.2 % (a trained
  dense MLP reaches about 60 % there). A random mask with the same per-layer counts stays at chance
  (9-12 %) at every sparsity. As in Zhou et al.'s figures, the supermask is best at moderate sparsity
  and fades towards chance when few weights are left (digits 30 ± 20 % at 8.2 %).
* **The signs carry it: agrees.** With the mask kept and every surviving weight replaced by
  `sign(w0) * std` of its layer ("signs only"), the untrained network does as well as with the true
  initial values on MNIST-1D at every sparsity (within one standard deviation) and on digits down to
  about a third of the weights (somewhat lower beyond). The same magnitudes with random signs stay at
  chance everywhere.
* **Training from signed constants: agrees, no difference resolved.** At 8.2 % remaining, after
  training: MNIST-1D ticket 48.80 ± 1.61 vs signed constant 47.17 ± 2.08 (paired -1.6 ± 2.7);
  digits 79.93 ± 18.33 vs 87.30 ± 0.32, where the ticket's spread comes from one seed whose last round
  trained to only 58.8 % (the other two: 89.1 and 91.9). Zhou et al. find signed-constant
  initialisations train about as well as the original values; 3 seeds cannot separate them here.
* Scale: LeNet-300-100 on 1,080 (digits) or 3,500 (MNIST-1D) training examples, 8 epochs per round,
  30 % per round; Zhou et al. use MNIST/CIFAR-10 and the paper's 20 % rounds.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_arguments(parser, render=True)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    args = parser.parse_args()
    if args.render:  # the report keeps the environment recorded by the run
        saved = json.loads((args.out / "deconstructing.json").read_text())
        report(saved["results"], args, saved["runtime_s"], saved.get("environment"))
        return
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    results = []
    for dataset in args.datasets:
        for seed in args.seeds:
            results.append(run(dataset, seed))
            r = results[-1]
            print(f"{dataset} seed {seed}: supermask " + ", ".join(f"{100 * a:.1f}" for a in r["untrained"]["mask on init"])
                  + f"; trained ticket {100 * r['trained']['ticket']['test_acc']:.2f}, signed constant "
                  f"{100 * r['trained']['signed_constant']['test_acc']:.2f}", flush=True)
    report(results, args, time.perf_counter() - start)


def report(results: list[dict[str, Any]], args: argparse.Namespace, runtime: float, environment: str | None = None) -> None:
    """Print the tables and write the markdown, JSON and plot."""
    args.out.mkdir(parents=True, exist_ok=True)
    tables = {d: table(results, d) for d in args.datasets}
    for dataset, text in tables.items():
        print(f"## {dataset}\n{text}")
    plot(results, args.out / "deconstructing.png")
    environment = environment or C.environment()
    command = "python experiments/deconstructing.py --seeds " + " ".join(map(str, args.seeds))
    if args.datasets != list(DATASETS):
        command += " --datasets " + " ".join(args.datasets)
    (args.out / "deconstructing.json").write_text(json.dumps(
        {"command": command, "lr": LR, "batch_size": BATCH_SIZE, "runtime_s": runtime, "environment": environment,
         "results": results}, indent=2))
    lines = ["# Deconstructing lottery tickets (Zhou et al. 2019) on digits and MNIST-1D", "", f"`{command}`", "",
             f"Total runtime {runtime:.0f} s ({environment}; 2 shared CPU cores).", "",
             __doc__.split("\n\n", 1)[1].split("Run:")[0].strip(), "",
             "Defaults: 7 rounds of 30 % per layer (8.2 % of the weights remain), 8 epochs per round, Adam lr 1.2e-3, "
             "batch 64.", "", "![supermask accuracy](deconstructing.png)", ""]
    for dataset, text in tables.items():
        lines += [f"## {dataset}", "", text, ""]
    if args.seeds == [0, 1, 2] and args.datasets == list(DATASETS):
        lines += [ANALYSIS]
    (args.out / "deconstructing.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
