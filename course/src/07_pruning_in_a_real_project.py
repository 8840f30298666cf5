# ---
# jupyter:
#   jupytext:
#     formats: ipynb,src//py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.7
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 7 · Pruning in a real project
#
# **Lecture concept:** the pruning loop of the lecture (train → score importance → prune → fine-tune →
# repeat; 网络剪枝) is a *training-time* procedure, and in a real project training is run from a
# config file, logged, checkpointed (检查点), resumed after an interruption, spread over several
# devices, and its result is deployed (部署) as a file. The previous notebooks called the library
# from Python; this one walks through everything around the loop with one `Pruning` callback inside
# an ordinary Lightning project.
#
# **Learning goals**
#
# - Run pruning from the command line with `LightningCLI` and a YAML config (the shipped
#   `lightning_prune/configs/lenet_digits.yaml`), here in-process, and plot the sparsity (稀疏度) and
#   accuracy curves its `CSVLogger` wrote.
# - Checkpoint a neuron-pruning run with `ModelCheckpoint`, resume it from the middle with
#   `trainer.fit(model, ckpt_path=...)` and get the same result, and load a checkpoint with
#   `Classifier.load_from_checkpoint`, which rebuilds the compact architecture from the removal plan.
# - Save and load the compact model without Lightning (`save_compact` / `load_compact`, readable with
#   `torch.load(..., weights_only=True)`), and export it with `torch.export` (`export_program`).
# - Train with several processes (DDP, 分布式数据并行) and know how the strategy changes when pruned
#   neurons are removed.
#
# Everything is written into a temporary directory that is deleted at the end. Runs in about 25 s
# on 2 CPU cores.

# %%
import csv
import os
import tempfile
import warnings
from pathlib import Path

import lightning as L
import matplotlib.pyplot as plt
import torch
import yaml
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from lightning_prune.teaching import accuracy, quiet_setup, quiet_trainer, widths
from lightning_prune import Geometric, Neurons, Pruning, export_program, load_compact, remove_zeroed_units, save_compact
from lightning_prune.checkpoint import PLAN_KEY
from lightning_prune.cli import config_path, main
from lightning_prune.counting import count_parameters
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier

# %matplotlib inline
quiet_setup(0)
# A warning names the file that raised it, a path on this machine; print only its category and message.
warnings.formatwarning = lambda message, category, *_: f"{category.__name__}: {message}\n"

workdir = tempfile.TemporaryDirectory()
root = Path(workdir.name)
start_dir = Path.cwd()
datamodule = DigitsDataModule(batch_size=64, seed=0)
datamodule.setup("fit")
x_test = torch.cat([xb for xb, _ in datamodule.test_dataloader()])
y_test = torch.cat([yb for _, yb in datamodule.test_dataloader()])

# %% [markdown]
# ## 1 · The command line and a YAML config
#
# `lightning-prune` is a `LightningCLI` (`lightning_prune.cli.PruningCLI`): the YAML file names the
# model, the data module and the trainer with its callbacks, `Pruning` among them, so an experiment
# is a file that can be versioned and diffed rather than a script. The shipped config runs Han et al.'s
# iterative magnitude pruning of LeNet-300-100 on the digits: 8 epochs of dense training, then 11
# cycles of 20 % each down to 90 % of the weights, 2 epochs of fine-tuning per cycle, with a safety
# net (a `DropGuard` with `max_drop: 0.01`: a cycle that costs more than 1 point of validation accuracy
# is rolled back). Each of `Pruning`'s configuration objects is a `class_path` with its `init_args`:
# the schedule (`lightning_prune.Geometric`) and the guard (`lightning_prune.DropGuard`); the simple
# ones (`criterion: l1`, `granularity: weight`, `ranking: global`) are given by their short names.

# %%
print(config_path().read_text())

# %% [markdown]
# In a terminal this is `lightning-prune fit --config lenet_digits.yaml`. Here we shorten it to 12
# epochs (4 dense epochs, then 50 % of the remaining weights per cycle: 50 → 75 → 87.5 → 90 %) by
# editing the schedule's `init_args` in a copy of the YAML, override the logger's directory on the command line
# (`--trainer.logger.init_args.save_dir=...`, any option can be overridden that way), and call the
# CLI's `main` with the arguments a shell would pass. After `fit` the CLI tests the model (the table
# below).

# %%
config = yaml.safe_load(config_path().read_text())
config["trainer"]["max_epochs"] = 12
config["trainer"]["callbacks"][0]["init_args"]["schedule"]["init_args"].update(warmup_epochs=4, per_cycle=0.5)
(root / "short.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
args = ["fit", "--config", "short.yaml", "--trainer.logger.init_args.save_dir=runs"]  # relative to `root`
print("lightning-prune " + " ".join(args))

# %%
# NBVAL_IGNORE_OUTPUT
with warnings.catch_warnings():  # the notebook kernel has command-line arguments of its own; `args` is what counts
    warnings.filterwarnings("ignore", ".*args parameter is intended.*")
    os.chdir(root)  # run the command from the temporary directory, as a shell would: its paths are relative
    try:
        main(args)
    finally:
        os.chdir(start_dir)

# %% [markdown]
# The run left its files in the logger's directory: the `CSVLogger`'s `metrics.csv`, the resolved
# `config.yaml` (every option, defaults included: the exact record of the experiment), and a
# checkpoint of the last epoch, which `LightningCLI` writes by default.

# %%
run_dir = root / "runs" / "lenet_digits" / "version_0"
print(sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()))

# %% [markdown]
# ## 2 · Logged curves
#
# `Pruning` logs one row per cycle to every logger of the trainer, under `pruning/...`: the sparsity
# reached (overall and per layer), the kept parameters and MACs, and, once the cycle's fine-tuning is
# done, the monitored metric. The `Classifier` logs the loss and accuracy of every epoch. Read the CSV
# file back and plot both against the epoch.

# %%
with open(run_dir / "metrics.csv") as handle:
    rows = list(csv.DictReader(handle))
val_acc = {int(r["epoch"]): float(r["val_acc"]) for r in rows if r["val_acc"]}
cycles = [r for r in rows if r["pruning/sparsity"]]
prune_epochs = [int(float(r["pruning/epoch"])) for r in cycles]
sparsity = [float(r["pruning/sparsity"]) for r in cycles]
test_acc = float(next(r["test_acc"] for r in rows if r["test_acc"]))
layers = [key.removeprefix("pruning/sparsity/") for key in rows[0] if key.startswith("pruning/sparsity/")]
print(f"{'cycle':>5} {'epoch':>5} {'sparsity':>8}  " + "  ".join(f"{name:>17}" for name in layers))
for r in cycles:
    print(f"{int(float(r['pruning/cycle'])):>5} {int(float(r['pruning/epoch'])):>5} {float(r['pruning/sparsity']):8.3f}  "
          + "  ".join(f"{float(r['pruning/sparsity/' + name]):17.3f}" for name in layers))
print(f"test accuracy after the run: {test_acc:.4f}")

# %%
epochs = sorted(val_acc)
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot(epochs, [val_acc[e] for e in epochs], "o-")
for e in prune_epochs:
    axes[0].axvline(e - 0.5, color="grey", linestyle=":")
axes[0].set_xlabel("epoch")
axes[0].set_ylabel("validation accuracy")
axes[0].set_title("accuracy (dotted: a pruning cycle)")
axes[1].step([0] + prune_epochs + [max(epochs) + 1], [0] + sparsity + [sparsity[-1]], where="post")
axes[1].set_xlabel("epoch")
axes[1].set_ylabel("fraction of weights pruned")
axes[1].set_title("sparsity (global L1 ranking)")
fig.tight_layout()
plt.show()

# %%
assert prune_epochs == [4, 6, 8, 10], prune_epochs
assert abs(sparsity[-1] - 0.9) < 1e-3, sparsity
assert test_acc > 0.9, test_acc
assert min(val_acc[e] for e in epochs if e >= prune_epochs[0]) > val_acc[prune_epochs[0] - 1] - 0.02, val_acc

# %% [markdown]
# Validation runs at the end of each epoch, after a whole epoch of fine-tuning, so the accuracy curve
# hardly shows the cycles (dotted lines): at this sparsity one epoch recovers most of what a prune
# costs, and the accuracy stays within a couple of points of the dense model's while 90 % of the
# weights go. The global ranking prunes the layers unequally (per-layer columns above): the largest
# layer (`model.features.2`, 300 → 100) loses the most. TensorBoard or Weights & Biases
# loggers receive the same `pruning/...` values; put them in the YAML's `logger` entry instead.
#
# This was **weight** pruning: the checkpoint keeps the dense shapes, with 90 % of the entries of the
# pruned layers at zero.

# %%
cli_checkpoint = next((run_dir / "checkpoints").glob("*.ckpt"))
weight_pruned = Classifier.load_from_checkpoint(cli_checkpoint)
zeros = sum(int((p == 0).sum()) for name, p in weight_pruned.named_parameters() if name.endswith("weight"))
total = sum(p.numel() for name, p in weight_pruned.named_parameters() if name.endswith("weight"))
print(f"{cli_checkpoint.name}: widths {widths(weight_pruned)}, {zeros / total:.1%} of the weights are zero")
assert abs(zeros / total - 0.9) < 0.01

# %% [markdown]
# ## 3 · Checkpoints and resume with neuron pruning
#
# With `granularity="neuron"` the pruned neurons are physically removed, so the model's architecture
# changes during the fit and a checkpoint's weights no longer fit a freshly built `Classifier`. The
# callback therefore stores the **removal plan** (which units each step removed) in every checkpoint,
# and replays it on the freshly built model before the weights load.
#
# Prune 80 % of LeNet-300-100's 400 hidden neurons (4 dense epochs, then 50 → 75 → 80 %, 2 epochs of
# fine-tuning each), keeping a checkpoint of every epoch (`ModelCheckpoint(save_top_k=-1)`) and a CSV
# log.

# %%
# NBVAL_IGNORE_OUTPUT
pruning_args = dict(schedule=Geometric(target=0.8, per_cycle=0.5, warmup_epochs=4, finetune_epochs=2),
                    criterion="l2", granularity=Neurons(), verbose=False)
L.seed_everything(0, verbose=False)
model = Classifier("lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
pruning = Pruning(**pruning_args)
every_epoch = ModelCheckpoint(dirpath=root / "checkpoints", filename="{epoch}", save_top_k=-1)
max_epochs = pruning.timeline.epochs_needed
trainer = quiet_trainer(max_epochs, [pruning, every_epoch], enable_checkpointing=True,
                        logger=CSVLogger(root / "runs", name="neurons"))
trainer.fit(model, datamodule)
model_acc = accuracy(model, x_test, y_test)
print(f"{max_epochs} epochs, widths {widths(model)}, test accuracy {model_acc:.4f}")

# %%
print(sorted(p.name for p in (root / "checkpoints").glob("*.ckpt")))
middle = root / "checkpoints" / "epoch=5.ckpt"  # after cycle 0 and its fine-tuning
checkpoint = torch.load(middle, weights_only=False)
plan = checkpoint[PLAN_KEY]
print(f"{middle.name}: plan with {len(plan['steps'])} step(s); input {plan['inputs']}")
for step in plan["steps"]:
    print("  removed", {layer: len(units) for layer, units in step.items()}, "units")
print("  weight shapes:", {k: tuple(v.shape) for k, v in checkpoint["state_dict"].items() if k.endswith("weight")})

# %% [markdown]
# Now suppose the job was killed after epoch 5. Resuming (恢复训练, 断点续训) means building the model
# and the callbacks exactly as before (the module **dense**, as its class builds it; the same
# `ModelCheckpoint`, which overwrites the later checkpoints) and passing the checkpoint to `fit`.
# Lightning restores the weights, the optimizer state, the epoch counter and the callback's state
# (its cycle, masks and history); the plan reshapes the model first. Because every decision of
# `Pruning` is taken at the start of an epoch, from restored state, the resumed run should take the
# same decisions as the uninterrupted one.

# %%
# NBVAL_IGNORE_OUTPUT
L.seed_everything(0, verbose=False)
resumed = Classifier("lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
resumed_pruning = Pruning(**pruning_args)
resumed_checkpoints = ModelCheckpoint(dirpath=root / "checkpoints", filename="{epoch}", save_top_k=-1)  # as before
with warnings.catch_warnings():  # expected: the same `ModelCheckpoint` overwrites the later checkpoints
    warnings.filterwarnings("ignore", "Checkpoint directory .* exists and is not empty")
    quiet_trainer(max_epochs, [resumed_pruning, resumed_checkpoints], enable_checkpointing=True).fit(
        resumed, datamodule, ckpt_path=middle)
difference = max((a - b).abs().max().item() for a, b in zip(model.parameters(), resumed.parameters()))
print(f"resumed from epoch 5: widths {widths(resumed)}, test accuracy {accuracy(resumed, x_test, y_test):.4f}")
print(f"largest weight difference from the uninterrupted run: {difference:.2e}")

# %%
print("uninterrupted:", [(r["epoch"], round(r["sparsity"], 3)) for r in pruning.history])
print("resumed:      ", [(r["epoch"], round(r["sparsity"], 3)) for r in resumed_pruning.history])
assert widths(resumed) == widths(model)
assert [r["sparsity"] for r in resumed_pruning.history] == [r["sparsity"] for r in pruning.history]
assert sum(widths(model)[:-1]) == 80 and model_acc > 0.9, (widths(model), model_acc)

# %% [markdown]
# Same cycles, same widths, and the same weights up to floating-point noise (printed; the data order
# depends only on the seed and the epoch, and the optimizer state was restored).
#
# To *use* a checkpoint, `Classifier.load_from_checkpoint` rebuilds the compact model: `Classifier`
# inherits `PrunedCheckpointMixin`, whose `on_load_checkpoint` replays the plan before
# `load_state_dict`. (For your own `LightningModule`, inherit the mixin too.)

# %%
last = root / "checkpoints" / f"epoch={max_epochs - 1}.ckpt"
loaded = Classifier.load_from_checkpoint(last).eval()
print(f"{last.name}: widths {widths(loaded)}, {count_parameters(loaded)[1]:,} parameters "
      f"(dense: {count_parameters(Classifier('lenet_300_100'))[1]:,})")
with torch.no_grad():
    same_output = torch.allclose(loaded(x_test), model.eval()(x_test), atol=1e-6)
print("same outputs as the trained model:", same_output)

# %%
assert widths(loaded) == widths(model) and same_output
assert count_parameters(loaded)[1] == count_parameters(model)[1] < 0.25 * count_parameters(Classifier())[1]

# %% [markdown]
# ## 4 · Loading the compact model without Lightning
#
# A Lightning checkpoint also holds the optimizer state, the callbacks' state and the
# hyper-parameters, and it is unpickled with Lightning installed. For deployment (部署) two plain files
# are enough:
#
# - `save_compact(model, plan, path)`: the plan and the weights, plain tensors and lists, so
#   `torch.load(path, weights_only=True)` reads it (no code is unpickled, which is what makes a
#   downloaded file safe to open). `load_compact(fresh_dense_model, path)` replays the plan and loads.
# - `export_program(model, example, path)`: a `torch.export` program, which runs **without the model's
#   Python class** (section 6).
#
# The plan of the run is in the callback's state (`pruning.plan`); the checkpoints
# carry the same one.

# %%
compact_file = root / "lenet_compact.pt"
save_compact(model, pruning.plan, compact_file)
raw = torch.load(compact_file, weights_only=True)
print("keys:", sorted(raw), "| plan steps:", len(raw[PLAN_KEY]["steps"]))
print(f"file sizes: checkpoint {last.stat().st_size:,} bytes, compact file {compact_file.stat().st_size:,} bytes")

# %% [markdown]
# The plan names the layers as the callback saw them, in the `Classifier` (`model.features.0`, ...),
# so save the whole `Classifier` and load into a freshly built, dense one:

# %%
fresh = load_compact(Classifier("lenet_300_100", input_shape=(1, 8, 8)), compact_file).eval()
with torch.no_grad():
    same_output = torch.allclose(fresh(x_test), model(x_test), atol=1e-6)
print(f"widths {widths(fresh)}, same outputs: {same_output}, test accuracy {accuracy(fresh, x_test, y_test):.4f}")
assert same_output and widths(fresh) == widths(model)

# %% [markdown]
# ## 5 · Multi-device training (DDP)
#
# With `strategy="ddp"` or `"ddp_spawn"` and `devices=N`, Lightning runs N processes, each with its own
# copy of the model and a shard of every batch, and averages the gradients. `Pruning` keeps the ranks
# in agreement: importance statistics (APoZ, Taylor) are reduced across ranks, the masks are decided
# on every rank and broadcast from rank 0, and a digest of every rank's masks is compared, so that
# different masks fail loudly instead of silently training different models. One thing changes: a
# model wrapped in `DistributedDataParallel` cannot be reshaped, so **during** the fit pruned neurons
# stay masked (zeros), and they are removed afterwards:
#
# | strategy | how the processes start | after `fit` |
# |---|---|---|
# | `"ddp"` | the script is launched again for each rank (needs a script) | every rank removes the masked neurons when the fit ends: compact model |
# | `"ddp_spawn"`, `"ddp_notebook"` | worker processes are spawned (forked) | the main process receives rank 0's **dense-shaped** weights, pruned entries zero; `remove_zeroed_units(model, x)` removes them |
#
# In a script or with the CLI (`--trainer.strategy=ddp_spawn --trainer.devices=2`), a CPU run is:
#
# ```python
# trainer = L.Trainer(strategy="ddp_spawn", devices=2, accelerator="cpu", max_epochs=..., callbacks=[pruning])
# trainer.fit(model, datamodule)
# remove_zeroed_units(model, torch.zeros(2, 1, 8, 8))   # the compact model, same function
# ```
#
# Inside a notebook Lightning refuses `ddp_spawn` (the spawned workers cannot import code defined in
# the notebook) and offers `ddp_notebook`, which forks instead:

# %%
try:
    L.Trainer(strategy="ddp_spawn", devices=2, accelerator="cpu", logger=False)
    print("ddp_spawn accepted: this is not an interactive session")
except MisconfigurationException as error:
    print(str(error).split(". ")[0] + ".")

# %% [markdown]
# `ddp_notebook` behaves like `ddp_spawn` for pruning. Two processes on the 2 CPU cores, 3 short
# epochs (8 batches each), one epoch of warm-up and two cycles of neuron pruning to 50 %. (Lightning
# warns that `val_loss` and `train_loss` are logged without `sync_dist=True`: each rank logs the loss
# of its own shard. The accuracy is a torchmetrics metric, which is synchronised across ranks.)

# %%
# NBVAL_IGNORE_OUTPUT
L.seed_everything(0, verbose=False)
ddp_model = Classifier("lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
ddp_pruning = Pruning(Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1), criterion="l2", granularity="neuron",
                      verbose=False)
ddp_trainer = L.Trainer(strategy="ddp_notebook", devices=2, accelerator="cpu", max_epochs=3, callbacks=[ddp_pruning],
                        limit_train_batches=8, enable_progress_bar=False, logger=False, enable_checkpointing=False,
                        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=root)
ddp_trainer.fit(ddp_model, DigitsDataModule(batch_size=32, seed=0))

# %%
dense_shaped = widths(ddp_model)
zero_rows = [int((m.weight.abs().sum(dim=1) == 0).sum()) for m in ddp_model.modules() if isinstance(m, torch.nn.Linear)]
ddp_model.eval()
with torch.no_grad():
    before = ddp_model(x_test)
removal = remove_zeroed_units(ddp_model, torch.zeros(2, 1, 8, 8))
with torch.no_grad():
    same_output = torch.allclose(ddp_model(x_test), before, atol=1e-5)
print(f"returned from the workers: widths {dense_shaped}, all-zero rows {zero_rows}")
print(f"after remove_zeroed_units: widths {widths(ddp_model)}, same outputs: {same_output}, "
      f"test accuracy {accuracy(ddp_model, x_test, y_test):.4f}")

# %%
assert dense_shaped == [300, 100, 10] and sum(zero_rows) == 200, (dense_shaped, zero_rows)
assert widths(ddp_model) == [300 - zero_rows[0], 100 - zero_rows[1], 10] and same_output

# %% [markdown]
# 3 epochs on 8 batches each are too few for a good model (the accuracy is printed for completeness);
# the point is the shapes: 200 of the 400 hidden neurons came back as zero rows, and
# `remove_zeroed_units` removed exactly those without changing the outputs. DDP pays off with one
# process per GPU or per machine; here the two processes only share two CPU cores.
#
# ## 6 · Exporting (导出)
#
# `export_program(model, example, path)` saves the compact network as a `torch.export` program;
# `torch.export.load(path).module()` runs it with no `LeNet300100` or `Classifier` class and no
# `lightning_prune` import (C++ runtimes and compilers such as ExecuTorch start from this format). We
# export the plain network (`model.model`), which is what a deployment needs.

# %%
program_file = root / "lenet_compact.pt2"
export_program(model.model, x_test[:1], program_file)  # traced on one image, the batch dimension left dynamic
program = torch.export.load(program_file).module()
with torch.no_grad():
    same_output = torch.allclose(program(x_test), model.model(x_test), atol=1e-6)
print(f"{program_file.name}: {program_file.stat().st_size:,} bytes; "
      f"outputs for all {len(x_test)} test images: {tuple(program(x_test).shape)}, same as the model: {same_output}")
assert same_output

# %% [markdown]
# `torch.export` fixes every dimension to the example's size unless told otherwise; `export_program`
# marks the first dimension of each input as dynamic (`dynamic_batch=True`, the default), so one
# example image is enough and the program serves any batch size. Pass `dynamic_batch=False` to fix
# the shapes (some compilers want static shapes).

# %%
workdir.cleanup()
print("temporary directory removed:", not root.exists())

# %% [markdown]
# ## Summary
#
# - `Pruning` is an ordinary Lightning callback, so a pruning experiment is a YAML file for
#   `LightningCLI` (`lightning-prune fit --config ...`), and every logger receives the `pruning/...`
#   curves: sparsity overall and per layer, kept parameters and MACs, the monitored metric.
# - Neuron pruning changes the architecture; every checkpoint carries the removal plan, so
#   `trainer.fit(model, ckpt_path=...)` resumes (here with the same cycles and widths as the
#   uninterrupted run) and `Classifier.load_from_checkpoint` returns the compact model.
# - For deployment: `save_compact`/`load_compact` (a `weights_only` file of plan and weights) and
#   `export_program` (`torch.export`, any batch size).
# - With DDP the pruned neurons stay masked during the fit; popen `ddp` removes them on every rank at
#   the end, `ddp_spawn`/`ddp_notebook` return dense-shaped weights, and `remove_zeroed_units` makes
#   them compact.
#
# ## Exercises
#
# 1. Add a second callback to the YAML config: `lightning.pytorch.callbacks.EarlyStopping` on
#    `val_acc`. Why is it a bad idea together with `Pruning`? (Look at the dip after each cycle in the
#    accuracy curve.) Then change the guard's `max_drop` to `0.0`: at which cycle is the run rolled
#    back?
# 2. Resume from `epoch=3.ckpt`, the checkpoint of the last dense epoch, and from `epoch=8.ckpt`. At
#    which epoch does each resumed run prune first? Are the results still identical?
# 3. Write a subclass of `Classifier` with `restores_pruned_architecture = False` whose
#    `on_load_checkpoint` does nothing, and call its `load_from_checkpoint` on the last checkpoint.
#    What error do you get? Which one line (see the `lightning_prune.checkpoint` docstring) fixes it?
# 4. Time the exported program, the `load_compact` model and the dense LeNet on the 357 test images.
