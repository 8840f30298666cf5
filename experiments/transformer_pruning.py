"""Issue 13: a small vision transformer trained on real MNIST, its attention heads and FFN units pruned in a Trainer.

A Hugging Face ``ViTForImageClassification`` at random initialisation (28 × 28 images cut into 7 × 7
patches: 16 tokens and a [CLS] token; hidden size 64, 4 layers of 4 heads, FFN width 256) is wrapped
in a plain ``LightningModule`` whose ``forward`` returns the logits, and trained on the frozen
real-MNIST subset (3,500 training images, :class:`~lightning_prune.data.MNISTDataModule`).

* **dense**: trained for ``EPOCHS`` epochs.
* **pruned**: the same model, seed and epochs with one ``Pruning(granularity="neuron")`` callback:
  ``WARMUP`` dense epochs, then cycles that remove a fraction of the prunable units (whole attention
  heads, one score per head, and FFN hidden units) and fine-tune, until half of them are gone
  (``TARGET``); the removed units are physically cut out during the fit (``Neurons(remove=True)``, the default).
  The residual-stream channels (the patch embedding, every ``o_proj`` and ``fc2``) are refused by the
  library: they feed LayerNorm, where a zeroed channel still enters the mean and variance, so masking
  one is not removing it. Only heads and FFN units are pruned.

For every seed :func:`run` checks that the pruned model really is smaller (each attention module's
``num_attention_heads`` equals its kept heads, q/k/v have ``heads × head_dim`` rows, ``fc1`` has the
kept FFN units) and that masking is removing: the compact model's weights scattered back into a
freshly built dense model, zeros elsewhere (:func:`masked_twin`), give the same logits. CPU latency
is measured with ``torch.utils.benchmark`` (batch 256, one thread, eval mode, no grad): repeats of
dense and pruned interleaved in a random order, median of each.

    python experiments/transformer_pruning.py --seeds 0 1 2

writes ``experiments/results/transformer_pruning.{md,json}`` (about 10 minutes on the shared 2-core
machine). ``--quick`` (3 epochs, 2 cycles of 30 %, 3 latency repeats) is what ``tests/test_experiments.py`` runs.
"""

from __future__ import annotations

import argparse
import random
import statistics
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils import benchmark
from torchmetrics.classification import MulticlassAccuracy

import _common as C  # noqa: E402  (experiments/ is on sys.path when run as a script)
from lightning_prune import Geometric, NeuronStructure, Pruning
from lightning_prune.data import MNISTDataModule
from lightning_prune.layers import find_prunable_layers
from lightning_prune.teaching import mean_std, quiet_trainer

#: The transformer (Hugging Face ``ViTConfig`` arguments).
VIT = dict(image_size=28, patch_size=7, num_channels=1, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
           intermediate_size=256, num_labels=10, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
BATCH_SIZE = 64
LR = 2e-3
EPOCHS = 20
WARMUP = 8
#: The ``Geometric`` schedule's arguments (``warmup_epochs`` and ``finetune_epochs`` are set by :func:`make_pruning`).
SCHEDULE = dict(target=0.5, per_cycle=0.2)
#: The callback's other arguments.
PRUNING = dict(criterion="taylor", granularity="neuron", ranking="layer", monitor="val_acc")
FINETUNE = 2
QUICK = dict(epochs=3, warmup=1, finetune=1, per_cycle=0.3, repeats=3)
LATENCY_BATCH = 256


class ViTClassifier(L.LightningModule):
    """A Hugging Face ViT as a Lightning classifier: ``forward`` returns the logits tensor, batches are ``(x, y)``."""

    def __init__(self, lr: float = LR, **vit: Any) -> None:
        super().__init__()
        from transformers import ViTConfig, ViTForImageClassification

        self.save_hyperparameters()
        self.vit = ViTForImageClassification(ViTConfig(**{**VIT, **vit}))
        self.example_input_array = torch.zeros(2, 1, 28, 28)
        self.val_acc = MulticlassAccuracy(10, average="micro")
        self.test_acc = MulticlassAccuracy(10, average="micro")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.vit(pixel_values=x).logits

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.val_acc(self(x), y)
        self.log("val_acc", self.val_acc)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        x, y = batch
        self.test_acc(self(x), y)
        self.log("test_acc", self.test_acc)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr)


def make_pruning(warmup: int, finetune: int, per_cycle: float = SCHEDULE["per_cycle"]) -> Pruning:
    schedule = Geometric(**{**SCHEDULE, "per_cycle": per_cycle}, warmup_epochs=warmup, finetune_epochs=finetune)
    return Pruning(schedule=schedule, verbose=False, **PRUNING)


def attention_modules(module: nn.Module) -> dict[str, nn.Module]:
    """The attention modules (those with a ``num_attention_heads``) in forward order."""
    return {name: m for name, m in module.named_modules() if hasattr(m, "num_attention_heads") and name}


def shape(module: ViTClassifier) -> dict[str, Any]:
    """Heads per layer (the modules' own attribute), q/k/v output widths and FFN widths, per layer."""
    layers = module.vit.vit.layers if hasattr(module.vit.vit, "layers") else module.vit.vit.encoder.layer
    heads = [m.num_attention_heads for m in attention_modules(module).values()]
    return {
        "heads": heads,
        "qkv_width": [int(layer.attention.q_proj.out_features) for layer in layers],
        "ffn": [int(layer.mlp.fc1.out_features) for layer in layers],
    }


def masked_twin(compact: ViTClassifier, keep: dict[str, torch.Tensor], seed: int) -> ViTClassifier:
    """A dense-shaped model that computes what ``compact`` computes, if masking is removing.

    A fresh dense model gets the compact model's weights at the kept positions of every parameter
    (the library's ``parameter_masks`` for the callback's ``keep``) and zeros elsewhere: the removed
    heads' q/k/v rows and ``o_proj`` columns, the removed FFN units' ``fc1`` rows and ``fc2`` columns.
    """
    torch.manual_seed(seed)
    dense = ViTClassifier(**compact.hparams)
    example = dense.example_input_array
    structure = NeuronStructure(dense, example, find_prunable_layers(dense, example))
    masks = structure.parameter_masks(dense, keep)
    small = dict(compact.named_parameters())
    with torch.no_grad():
        for name, parameter in dense.named_parameters():
            if name in masks:
                parameter.zero_()
                parameter[masks[name]] = small[name].flatten()  # row-major order: kept rows × kept columns
            else:
                parameter.copy_(small[name])
    return dense.eval()


def latency_ms(models: dict[str, nn.Module], repeats: int, seed: int, batch: int = LATENCY_BATCH) -> dict[str, dict[str, float]]:
    """Median (and min, max) ms per forward pass of a batch, one thread, repeats interleaved in a random order."""
    x = torch.randn(batch, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    timers = {name: benchmark.Timer("with torch.no_grad(): model(x)", globals={"model": m.eval(), "x": x, "torch": torch},
                                    num_threads=1) for name, m in models.items()}
    for timer in timers.values():
        timer.timeit(2)  # warm-up
    times: dict[str, list[float]] = {name: [] for name in models}
    order = random.Random(seed)
    for _ in range(repeats):
        names = list(models)
        order.shuffle(names)
        for name in names:
            times[name].append(timers[name].timeit(3).median * 1000)
    return {name: {"median": statistics.median(t), "min": min(t), "max": max(t)} for name, t in times.items()}


def fit(seed: int, epochs: int, callback: Pruning | None) -> tuple[ViTClassifier, dict[str, Any]]:
    L.seed_everything(seed, verbose=False)
    model = ViTClassifier()
    data = MNISTDataModule(batch_size=BATCH_SIZE, seed=seed)
    trainer = quiet_trainer(epochs, [callback] if callback else [])
    measured = C.fit_and_evaluate(trainer, model, data)
    params = sum(p.numel() for p in model.parameters())
    return model, {**measured, "params": params, **shape(model)}


def run(seed: int, quick: bool = False) -> dict[str, Any]:
    """The dense and the pruned model of one seed, their shapes, accuracies and CPU latency.

    Raises:
        AssertionError: If the pruned model is not as small as the callback's masks say, a head count
            attribute was not updated, or the compact model and its masked twin differ.
    """
    settings = QUICK if quick else dict(epochs=EPOCHS, warmup=WARMUP, finetune=FINETUNE, per_cycle=SCHEDULE["per_cycle"],
                                        repeats=21)
    epochs, warmup, finetune = settings["epochs"], settings["warmup"], settings["finetune"]
    dense, dense_row = fit(seed, epochs, None)
    callback = make_pruning(warmup, finetune, settings["per_cycle"])
    pruned, pruned_row = fit(seed, epochs, callback)
    keep = {key: mask.clone() for key, mask in callback.keep.items()}

    # Physically smaller, and the modules' own head counts follow.
    modules = dict(pruned.named_modules())
    head_keys = [key for key in keep if key.endswith("attention.q_proj")]
    head_dim = VIT["hidden_size"] // VIT["num_attention_heads"]
    for key in head_keys:
        attention = modules[key.removesuffix(".q_proj")]
        assert attention.num_attention_heads == int(keep[key].sum()), (key, attention.num_attention_heads)
        for part in ("q_proj", "k_proj", "v_proj"):
            assert getattr(attention, part).out_features == head_dim * attention.num_attention_heads
        assert attention.o_proj.in_features == head_dim * attention.num_attention_heads
    for key, mask in keep.items():
        assert modules[key].weight.shape[0] == (head_dim if key in head_keys else 1) * int(mask.sum()), key
    assert pruned_row["params"] == int(callback.history[-1]["params"])

    # Masking is removing: the compact model and its dense-shaped, zero-filled twin agree.
    twin = masked_twin(pruned, keep, seed)
    x = torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        compact_logits, twin_logits = pruned.eval()(x), twin(x)
    masked_vs_compact = float((compact_logits - twin_logits).abs().max())
    assert masked_vs_compact <= 1e-4 * max(1.0, float(compact_logits.abs().max())), masked_vs_compact

    latency = latency_ms({"dense": dense, "pruned": pruned}, settings["repeats"], seed)
    last = callback.history[-1]
    return {
        "seed": seed, "epochs": epochs, "warmup": warmup, "finetune": finetune, "per_cycle": settings["per_cycle"],
        "dense": {**dense_row, "macs": callback.dense["macs"], "latency_ms": latency["dense"]},
        "pruned": {**pruned_row, "macs": last["macs"], "latency_ms": latency["pruned"]},
        "cycles": [{k: r[k] for k in ("cycle", "epoch", "sparsity", "params", "macs", "metric")} for r in callback.history],
        "refused": {name: reason for name, reason in callback.pruner.skipped_layers.items()},
        "units_kept": {key.removeprefix("vit.vit."): [int(m.numel()), int(m.sum())] for key, m in keep.items()},
        "masked_vs_compact_max_abs": masked_vs_compact,
        "hf_config_heads": pruned.vit.config.num_attention_heads,
    }


def tables(rows: list[dict[str, Any]]) -> str:
    def ms(values: list[float]) -> str:
        mean, std = mean_std(values)
        return f"{mean:.2f} ± {std:.2f}"

    summary = ["| model | test acc (%) | val acc (%) | parameters | MACs per image | heads per layer | FFN width per layer | "
               "CPU latency, batch 256 (ms) |", "|---|---|---|---|---|---|---|---|"]
    for variant in ("dense", "pruned"):
        r = [row[variant] for row in rows]
        heads = sorted({tuple(x["heads"]) for x in r})
        ffn = sorted({tuple(x["ffn"]) for x in r})
        summary.append(
            f"| {variant} | {ms([100 * x['test_acc'] for x in r])} | {ms([100 * x['val_acc'] for x in r])} | "
            f"{ms([x['params'] for x in r]).replace('.00', '')} | {ms([x['macs'] for x in r]).replace('.00', '')} | "
            f"{' / '.join(str(list(h)) for h in heads)} | {' / '.join(str(list(f)) for f in ffn)} | "
            f"{ms([x['latency_ms']['median'] for x in r])} |")
    drop = mean_std([100 * (row["dense"]["test_acc"] - row["pruned"]["test_acc"]) for row in rows])
    speed = mean_std([row["dense"]["latency_ms"]["median"] / row["pruned"]["latency_ms"]["median"] for row in rows])
    params = mean_std([row["pruned"]["params"] / row["dense"]["params"] for row in rows])
    macs = mean_std([row["pruned"]["macs"] / row["dense"]["macs"] for row in rows])
    summary += ["", f"Test accuracy drop (dense − pruned): {drop[0]:+.2f} ± {drop[1]:.2f} points; pruned/dense parameters "
                f"{params[0]:.3f} ± {params[1]:.3f}, MACs {macs[0]:.3f} ± {macs[1]:.3f}; CPU speed-up (dense ÷ pruned "
                f"median latency) {speed[0]:.2f} ± {speed[1]:.2f}×."]
    per_seed = ["| seed | dense test / val (%) | pruned test / val (%) | drop (points) | parameters dense → pruned | "
                "heads per layer | FFN width per layer | latency ms dense → pruned (min-max) | speed-up | "
                "max abs masked − compact logit | fit s dense / pruned |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        d, p = row["dense"], row["pruned"]
        per_seed.append(
            f"| {row['seed']} | {100 * d['test_acc']:.2f} / {100 * d['val_acc']:.2f} | {100 * p['test_acc']:.2f} / "
            f"{100 * p['val_acc']:.2f} | {100 * (d['test_acc'] - p['test_acc']):+.2f} | {d['params']:,} → {p['params']:,} | "
            f"{p['heads']} | {p['ffn']} | {d['latency_ms']['median']:.2f} ({d['latency_ms']['min']:.2f}-"
            f"{d['latency_ms']['max']:.2f}) → {p['latency_ms']['median']:.2f} ({p['latency_ms']['min']:.2f}-"
            f"{p['latency_ms']['max']:.2f}) | {d['latency_ms']['median'] / p['latency_ms']['median']:.2f}× | "
            f"{row['masked_vs_compact_max_abs']:.1e} | {d['fit_seconds']:.0f} / {p['fit_seconds']:.0f} |")
    cycles = ["| seed | cycle | epoch | fraction of units removed | parameters | val acc after its fine-tuning (%) |",
              "|---|---|---|---|---|---|"]
    for row in rows:
        for c in row["cycles"]:
            metric = f"{100 * c['metric']:.2f}" if c["metric"] is not None else "-"
            cycles.append(f"| {row['seed']} | {c['cycle']} | {c['epoch']} | {c['sparsity']:.3f} | {int(c['params']):,} | {metric} |")
    return "\n".join(summary + ["", "Per seed:", ""] + per_seed + ["", "Pruning cycles:", ""] + cycles)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    C.add_common_arguments(parser, quick="3 epochs, 2 cycles, 3 latency repeats: a smoke run, not results")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    name = "transformer_pruning" + "_quick" * args.quick
    saved = C.run_or_load(args, name, "transformer_pruning", lambda seed: run(seed, quick=args.quick), {
        "vit": VIT, "batch_size": BATCH_SIZE, "lr": LR, "optimizer": "adamw", "epochs": EPOCHS, "warmup": WARMUP,
        "finetune": FINETUNE, "pruning": {**PRUNING, "schedule": {"Geometric": SCHEDULE}}, "latency_batch": LATENCY_BATCH})
    rows = saved["rows"]
    table = tables(rows)
    print(table)
    refused = sorted(rows[0]["refused"])
    first = rows[0]
    lines = C.report_header("Pruning a small vision transformer's heads and FFN units on real MNIST (issue 13)", saved) + [
        "Model: Hugging Face `ViTForImageClassification` at random initialisation, 28 × 28 images in 7 × 7 patches "
        f"(16 tokens + [CLS]), hidden size {VIT['hidden_size']}, {VIT['num_hidden_layers']} layers of "
        f"{VIT['num_attention_heads']} heads (head size {VIT['hidden_size'] // VIT['num_attention_heads']}), FFN width "
        f"{VIT['intermediate_size']}, no dropout, wrapped in a `LightningModule` whose `forward` returns the logits. "
        f"Data: the frozen real-MNIST subset (3,500 train, 500 val, 1,000 test images; 1 test image = 0.1 points). "
        f"AdamW, lr {LR}, batch {BATCH_SIZE}, {first['epochs']} epochs for both models, same seed. A ViT trained "
        "from scratch on 3,500 images is a weak MNIST model (LeNet-300-100 reaches about 94 % on the same split, "
        "`han_iterative_mnist.md`) and both models were still improving; what is compared is dense against pruned "
        "at the same number of epochs.", "",
        "Pruned: `Pruning(schedule=Geometric(" + ", ".join(f"{k}={v!r}" for k, v in SCHEDULE.items())
        + f", warmup_epochs={first['warmup']}, finetune_epochs={first['finetune']}), "
        + ", ".join(f"{k}={v!r}" for k, v in PRUNING.items()) + ")`: after the dense warm-up, each cycle removes "
        "20 % of the remaining units of every group (`ranking=\"layer\"`: each layer's heads and each layer's FFN "
        "units are ranked on their own, by Taylor scores |w · ∂L/∂w| averaged over the unit's weights and 16 "
        "calibration batches) and fine-tunes; the last cycle stops at half of the units; the removed heads and FFN units are physically cut "
        "out during the fit and the model trains on until the last epoch. A unit is a whole attention head (its "
        "q/k/v rows and its `o_proj` columns, one score) or an FFN hidden unit (its `fc1` row and `fc2` column). "
        "Every layer ends with half its heads and half its FFN width; which heads and which units go is the "
        "criterion's choice. (A global ranking, `ranking=\"global\"`, counts a head as one unit among 4 + 256 per "
        "layer: in a short trial run, 3 epochs, it removed FFN units only and kept all 16 heads.)", "",
        "Refused by the library (residual-stream channels, one group spanning every block): "
        + ", ".join(f"`{n}`" for n in refused) + f": \"{first['refused'][refused[0]]}\". A LayerNorm normalises each "
        "token over all its channels, so a zeroed channel still counts in the mean and the variance (it pulls the mean "
        "to zero and adds (0 − mean)² to the variance): the masked model and the one without the channel compute "
        "different functions, and the callback, which trains and judges the masked model, only prunes what it can "
        "remove exactly.", "",
        "Checks on every seed (assertions in the script): each attention module's `num_attention_heads` equals its "
        "kept heads and q/k/v/o have `heads × head size` rows/columns; every pruned layer has exactly the kept units; "
        "the module's parameter count equals the callback's; the compact model and a dense-shaped twin holding its "
        "weights at the kept positions and zeros elsewhere give the same logits (column \"max abs masked − compact\"). "
        f"Hugging Face's global `config.num_attention_heads` stays {first['hf_config_heads']}: a ViT config derives "
        "the head size as `hidden_size // num_attention_heads`, so it cannot describe the pruned heads (the fit warns "
        "once; the model reloads through the checkpoint's pruning plan).", "",
        f"CPU latency: `torch.utils.benchmark.Timer`, forward pass of a batch of {LATENCY_BATCH} in eval mode under "
        "`torch.no_grad()`, 1 thread; 21 repeats of 3 calls per model, dense and pruned interleaved in a random order, "
        "median per model (min-max in the per-seed table). The machine was shared with other jobs (load average "
        "7-12 on its 2 cores during the committed run), so the absolute times vary by 3x between seeds; the ratio, "
        "measured side by side, held at 1.70-1.75x.", "",
        table, "",
    ]
    (args.out / f"{name}.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
