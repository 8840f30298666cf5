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
# # 0 · Model compression at a glance
#
# **Lecture concept:** model compression (模型压缩, the lecture's "network compression", 网络压缩). A
# network deployed (部署) *on the device* (a phone, a watch, a sensor, a car) rather than in the cloud
# answers without a network round trip and keeps the data private, but it must fit the device's
# **memory** (parameters × bytes per parameter), its **compute** (multiply-accumulates per input,
# battery) and its **latency** budget. The lecture presents five families of techniques:
#
# | family | 中文 | idea |
# |---|---|---|
# | network pruning | 网络剪枝 | remove weights or whole neurons that matter little, then fine-tune |
# | knowledge distillation | 知识蒸馏 | train a small *student* to imitate a big *teacher*'s output distribution |
# | parameter quantization | 参数量化 | store (and compute with) fewer bits per parameter, e.g. int8 instead of float32 |
# | architecture design | 架构设计 | build layers with fewer parameters from the start: low-rank factorisation (低秩分解), depthwise-separable convolution (深度可分离卷积) |
# | dynamic computation | 动态计算 | spend less computation on easy inputs, e.g. early exit (提前退出) |
#
# The rest of this course (notebooks 1–9) is about the first family. This notebook gives a small,
# runnable taste of **each** of the five, all applied to the same trained model, and puts the results
# in one table: size, speed and accuracy.
#
# **Learning goals**
#
# - Say what each family compresses (parameters, bits per parameter, or computation per input) and
#   measure it: parameters, serialized bytes, MACs per example, latency, test accuracy.
# - Prune neurons with the library (`Pruning(granularity="neuron")`); distill a teacher into a small
#   student with softened outputs (temperature), and distill the dense model into the network being
#   pruned (`Pruning(distill=Distillation(...))`); quantize to int8 by hand and with
#   `torch.ao.quantization.quantize_dynamic`; factorise a `Linear` layer by SVD (W ≈ U V); add an
#   early exit with a confidence threshold.
# - Read the numbers honestly: on a model this small, fewer bytes and MACs do not always mean less
#   time.
#
# Runs in about 30 s on 2 CPU cores.

# %%
import copy
import io
import statistics
import time
import warnings

import lightning as L
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import nn

from lightning_prune.teaching import accuracy, mean_std, quiet_setup, quiet_trainer
from lightning_prune import Distillation, Geometric, Pruning
from lightning_prune.distillation import distillation_loss
from lightning_prune.counting import count_macs, count_parameters
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier

# %matplotlib inline
quiet_setup(0)

datamodule = DigitsDataModule(batch_size=64, seed=0)
datamodule.setup("fit")
x_test = torch.cat([xb for xb, _ in datamodule.test_dataloader()])
y_test = torch.cat([yb for _, yb in datamodule.test_dataloader()])
example = torch.zeros(2, 1, 8, 8)


def serialized_bytes(state):
    """Bytes of `torch.save(state)`: what the model costs on disk (and, roughly, in memory)."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getbuffer().nbytes


@torch.inference_mode()
def latency_ms(forward, x, repeats=50):
    """Median wall time of `forward(x)` in milliseconds (one warm-up call first)."""
    forward(x)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        forward(x)
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


# %% [markdown]
# ## The model to compress
#
# LeNet-300-100 (64 → 300 → 100 → 10, ReLU) on the 8×8 digits, trained for 10 epochs. Every family
# below starts from this trained model (the *teacher* in distillation). `results` collects one row per
# method for the final table.

# %%
# NBVAL_IGNORE_OUTPUT
L.seed_everything(0, verbose=False)
teacher = Classifier("lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
quiet_trainer(10).fit(teacher, datamodule)
teacher.eval()
teacher_acc = accuracy(teacher, x_test, y_test)
print(f"LeNet-300-100 test accuracy: {teacher_acc:.4f}")

# %%
assert teacher_acc > 0.93, teacher_acc
results = {}


def record(name, family, network, forward=None, params=None, nbytes=None, macs=None, acc=None):
    """One row of the final table; missing numbers are measured on `network` (an `nn.Module`)."""
    network.eval()
    results[name] = {
        "family": family,
        "params": count_parameters(network)[1] if params is None else params,
        "bytes": serialized_bytes(network.state_dict()) if nbytes is None else nbytes,
        "macs": count_macs(network, example)[""] if macs is None else macs,
        "latency": latency_ms(forward or network, x_test),
        "acc": accuracy(network, x_test, y_test) if acc is None else acc,
    }
    return results[name]


dense_row = record("dense LeNet-300-100", "baseline", teacher.model)
print(f"parameters {dense_row['params']:,}, {dense_row['bytes']:,} bytes as float32, "
      f"{dense_row['macs']:,.0f} MACs per image")

# %% [markdown]
# ## 1 · Network pruning (网络剪枝)
#
# The rest of the course in one call: the `Pruning` callback removes 80 % of the 400 hidden neurons
# from the trained model in two cycles (60 %, then the rest of the way to 80 %) with 3 epochs of
# fine-tuning after each (the schedule, `Geometric(target=0.8, per_cycle=0.6, finetune_epochs=3)`),
# ranking them by the L2 norm of their weights, and physically removing them (`granularity="neuron"`):
# the result is a plain, narrower LeNet.

# %%
# NBVAL_IGNORE_OUTPUT
L.seed_everything(0, verbose=False)
pruned = Classifier("lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
pruned.load_state_dict(teacher.state_dict())
pruning = Pruning(Geometric(target=0.8, per_cycle=0.6, finetune_epochs=3), criterion="l2", granularity="neuron",
                  verbose=False)
quiet_trainer(pruning.timeline.epochs_needed, [pruning]).fit(pruned, datamodule)
pruned_row = record("pruned (80 % of neurons)", "pruning", pruned.model)
print(pruned.model)
print(f"test accuracy {pruned_row['acc']:.4f}, parameters {dense_row['params']:,} → {pruned_row['params']:,}")

# %%
widths = [pruned.model.features[0].out_features, pruned.model.features[2].out_features]
assert sum(widths) == 80, widths
assert pruned_row["params"] < 0.15 * dense_row["params"], pruned_row
assert pruned_row["acc"] > teacher_acc - 0.06, pruned_row

# %% [markdown]
# ## 2 · Knowledge distillation (知识蒸馏)
#
# The teacher's (教师网络) output is a probability distribution, and it says more than the label:
# "this 8 looks a bit like a 3 and a 9". Hinton et al. (2015) train the student on these **soft
# targets**, divided by a **temperature** T before the softmax (温度) so that the small probabilities
# become visible:
#
# `loss = α · T² · KL(softmax(teacher / T) ‖ softmax(student / T)) + (1 − α) · CE(student, label)`
#
# (T² keeps the gradient scale of the soft term independent of T.) First, what temperature does to
# the teacher's output for one test image:

# %%
with torch.no_grad():
    teacher_logits = teacher(x_test[:1])
fig, axes = plt.subplots(1, 3, figsize=(10, 2.6), sharey=True)
for ax, temperature in zip(axes, (1, 4, 10)):
    ax.bar(range(10), F.softmax(teacher_logits[0] / temperature, dim=0))
    ax.set_title(f"softmax(teacher logits / {temperature})")
    ax.set_xticks(range(10))
axes[0].set_ylabel("probability")
fig.tight_layout()
plt.show()
print(f"true label {int(y_test[0])}")


# %% [markdown]
# The student (学生网络) is a LeNet with **one hidden layer of 32 neurons** (2,410 parameters, 21×
# fewer than the teacher). The only new code is the training step: a `Classifier` whose loss is the
# formula above. The teacher is kept in a tuple, so that it is not a sub-module: its weights are neither
# trained nor saved with the student. As a control, the same student is trained on the labels alone.

# %%
class DistilledStudent(Classifier):
    """A `Classifier` trained on a teacher's softened outputs as well as on the labels."""

    def attach_teacher(self, teacher, temperature=2.0, alpha=0.5):
        self.teacher = (teacher.eval(),)
        self.temperature, self.alpha = temperature, alpha
        return self

    def training_step(self, batch, batch_idx):
        x, y = batch
        logits = self(x)
        with torch.no_grad():
            soft_targets = F.softmax(self.teacher[0](x) / self.temperature, dim=1)
        t = self.temperature
        soft = F.kl_div(F.log_softmax(logits / t, dim=1), soft_targets, reduction="batchmean") * t * t
        loss = self.alpha * soft + (1 - self.alpha) * F.cross_entropy(logits, y)
        self.log("train_loss", loss)
        return loss


# %%
# NBVAL_IGNORE_OUTPUT
student_kwargs = dict(arch="lenet_300_100", arch_kwargs={"hidden": (32,)}, lr=3e-3, input_shape=(1, 8, 8))
L.seed_everything(0, verbose=False)
student = DistilledStudent(**student_kwargs).attach_teacher(teacher, temperature=2.0, alpha=0.5)
quiet_trainer(20).fit(student, datamodule)
L.seed_everything(0, verbose=False)
label_student = Classifier(**student_kwargs)
quiet_trainer(20).fit(label_student, datamodule)
student_row = record("student, distilled (32 hidden)", "distillation", student.model)
label_row = record("student, labels only (control)", "(control)", label_student.model)
print(f"student from the teacher: {student_row['acc']:.4f}; the same student from the labels: {label_row['acc']:.4f}")

# %%
assert student_row["params"] < dense_row["params"] / 20, student_row
assert student_row["acc"] > teacher_acc - 0.08, student_row
assert abs(student_row["acc"] - label_row["acc"]) < 0.05, (student_row, label_row)

# %% [markdown]
# The student keeps most of the teacher's accuracy with 21× fewer parameters. Distillation itself,
# however, does **not** beat the labels-only control here: the two are within a point, and the
# control is as good or slightly better (printed above). The digits are easy, and the teacher is
# nearly 100 % sure on its own training images, so its soft targets add little to the labels.
# Distillation pays off when the teacher knows something the labels do not say, e.g. an ensemble
# teacher, or far more unlabeled inputs than labeled ones (exercise 1).
#
# ### Distillation *while* pruning
#
# The families combine (more on that below the final table), and distillation has a natural place
# inside the pruning loop: the fine-tuning after each prune can learn from the dense model's outputs
# as well as from the labels. The **student** is the network being pruned; the **teacher** is a
# frozen copy of the dense model *after warm-up*, taken just before the first prune, so it is a
# trained network. It stays dense while neurons are removed from the student and is never trained.
# The library does this with one argument, `Pruning(..., distill=Distillation(weight, temperature))`:
# during every cycle's fine-tuning it adds
#
# `weight · T² · KL(softmax(teacher / T) ‖ softmax(student / T))`
#
# to the loss that the module's `training_step` returns (the cross-entropy on the labels stays, with
# weight 1). This is the soft term of the formula above. The callback wraps `training_step`: it reads
# the student's logits from the step's `self(x)` call and runs the teacher on the same inputs.
# The term that the library computes (`distillation_loss`), for the small student above at T = 2,
# is the formula written out:

# %%
with torch.no_grad():
    student_logits, teacher_logits = student(x_test), teacher(x_test)
term = distillation_loss(student_logits, teacher_logits, temperature=2.0)
by_hand = 2.0 ** 2 * F.kl_div(F.log_softmax(student_logits / 2.0, dim=1), F.softmax(teacher_logits / 2.0, dim=1),
                              reduction="batchmean")
print(f"distillation_loss: {term:.4f}; T² · KL written out: {by_hand:.4f}")
assert torch.isclose(term, by_hand)

# %% [markdown]
# Now the committed experiment's setting in miniature: start from the trained LeNet above (its 10
# epochs are the warm-up, so the callback's teacher is this model), remove 90 % of each hidden
# layer's neurons in four cycles (50 %, 75 %, 87.5 %, 90 %) with 2 epochs of fine-tuning after each,
# once with `distill=Distillation(weight=0.5, temperature=2.0)` (the setting the experiment chose for
# the digits on validation data) and once without, three training orders (seeds) each. Both runs of a seed
# see the same batches in the same order.

# %%
# NBVAL_IGNORE_OUTPUT
distill_results = {"pruned": [], "pruned + distilled": []}
for seed in (0, 1, 2):
    for name, distill in (("pruned", None), ("pruned + distilled", Distillation(weight=0.5, temperature=2.0))):
        L.seed_everything(seed, verbose=False)
        fine_tuned = Classifier("lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
        fine_tuned.load_state_dict(teacher.state_dict())
        neuron_pruning = Pruning(Geometric(target=0.9, per_cycle=0.5, finetune_epochs=2), criterion="l2",
                                 granularity="neuron", ranking="layer", distill=distill, verbose=False)
        trainer = quiet_trainer(neuron_pruning.timeline.epochs_needed, [neuron_pruning])
        trainer.fit(fine_tuned, DigitsDataModule(batch_size=64, seed=seed))
        distill_results[name].append(accuracy(fine_tuned, x_test, y_test))
    hidden_widths = [fine_tuned.model.features[i].out_features for i in (0, 2)]
    print(f"seed {seed}: widths {hidden_widths}, test accuracy pruned {distill_results['pruned'][-1]:.4f}, "
          f"pruned + distilled {distill_results['pruned + distilled'][-1]:.4f} (distillation term in the last "
          f"epoch: {float(trainer.logged_metrics['pruning/distillation']):.3f})")
for name, accuracies in distill_results.items():
    print(f"{name:18s}: {mean_std(accuracies)[0]:.4f} ± {mean_std(accuracies)[1]:.4f}   (dense teacher {teacher_acc:.4f})")

# %%
assert hidden_widths == [30, 10], hidden_widths
plain_mean, distilled_mean = (mean_std(distill_results[name])[0] for name in ("pruned", "pruned + distilled"))
assert plain_mean > teacher_acc - 0.12 and distilled_mean > teacher_acc - 0.12, distill_results
assert abs(distilled_mean - plain_mean) < 0.03, distill_results  # within a couple of points
assert distilled_mean < plain_mean + 0.02, distill_results  # no clear gain from distillation here

# %% [markdown]
# Distillation does not help in this run: the two means are within a couple of points, and the
# distilled one is not the higher (printed above; about a point lower when this notebook was last
# executed). Three seeds of 8 short epochs are not enough to rank the two, but the committed experiment (`experiments/results/distillation.md`; 20 epochs, the setting
# chosen on validation seeds, test accuracy over 3 seeds) found the same on the digits: pruned
# 0.937 ± 0.002, pruned + distilled 0.937 ± 0.013 (dense 0.973 ± 0.004); on MNIST-1D 0.586 ± 0.005
# vs 0.595 ± 0.019, and on a 5,000-image subset of real MNIST 0.935 ± 0.006 vs 0.927 ± 0.004. No gain
# beyond the seed-to-seed spread. This is unlike Hinton et al.'s MNIST result, where a small net made
# 146 test errors trained alone and 74 distilled from a big one (which made 67). Our setting differs in
# three ways that plausibly explain it. The student is not trained from scratch but pruned from its own
# teacher, so it starts from the teacher's function. The teacher is trained for only 8 epochs on a few
# thousand images, and knows little that the labels do not say. Only three (weight, T) pairs with
# T ≤ 4 were tried; Hinton et al. used T = 20.
#
# The committed experiment's numbers (its file does not record the command; the repository's README
# gives it: `python experiments/distillation.py --seeds 0 1 2 --select`, about 25 minutes):

# %%
from lightning_prune.teaching import committed_result

distillation = committed_result("experiments/results/distillation.json")
print(f"{'data':>8} {'dense':>13} {'pruned':>13} {'pruned + distilled':>19}  chosen (weight, T)")
committed = {}
for data, runs in distillation["datasets"].items():
    committed[data] = {kind: mean_std([run["test_acc"] for run in runs[kind]]) for kind in ("dense", "pruned", "distilled")}
    print(f"{data:>8} " + " ".join(f"{m:.3f} ± {s:.3f}".rjust(w) for (m, s), w in zip(committed[data].values(), (13, 13, 19)))
          + f"  {runs['chosen']}")
for data, result in committed.items():  # no gain from distillation beyond the seed-to-seed spread
    (pruned, pruned_std), (distilled, distilled_std) = result["pruned"], result["distilled"]
    assert abs(distilled - pruned) <= 2 * max(pruned_std, distilled_std) + 0.002, (data, result)

# %% [markdown]
# ## 3 · Parameter quantization (参数量化)
#
# Store each weight in 8 bits instead of 32. The simplest scheme, symmetric per-tensor int8: one
# float **scale** s = max|W| / 127 per matrix, and integer codes q = round(W / s) in [−127, 127]; the
# weight is read back as s · q, with an error of at most s / 2. First by hand, on the first layer:

# %%
W = teacher.model.features[0].weight.detach()
scale = W.abs().max() / 127
codes = torch.round(W / scale).to(torch.int8)
error = (codes.float() * scale - W).abs().max().item()
print(f"W: {tuple(W.shape)} {W.dtype}, scale {scale:.5f}; codes {codes.dtype}, "
      f"range [{int(codes.min())}, {int(codes.max())}]")
print(f"largest |s·q − W| = {error:.6f} ≤ s/2 = {scale / 2:.6f}")
print(f"bytes: float32 {W.numel() * 4:,}, int8 codes {codes.numel():,} + one float32 scale")

# %%
assert error <= scale / 2 + 1e-7
int8_state = {}
round_tripped = copy.deepcopy(teacher.model)
with torch.no_grad():
    for name, module in round_tripped.named_modules():
        if isinstance(module, nn.Linear):
            s = module.weight.abs().max() / 127
            q = torch.round(module.weight / s).to(torch.int8)
            int8_state[name] = {"codes": q, "scale": s, "bias": module.bias.clone()}
            module.weight.copy_(q.float() * s)  # the weights the int8 file gives back
round_trip_acc = accuracy(round_tripped, x_test, y_test)
print(f"test accuracy with every weight rounded to int8 and back: {round_trip_acc:.4f} (float32: {teacher_acc:.4f})")
print(f"int8 file: {serialized_bytes(int8_state):,} bytes (float32: {dense_row['bytes']:,})")

# %% [markdown]
# PyTorch does the same and more in one call: `quantize_dynamic` replaces each `nn.Linear` with a
# layer that keeps int8 weights and also computes in int8 (the activations are quantized on the fly,
# "dynamically", per batch). Recent PyTorch versions mark `torch.ao.quantization` as deprecated in
# favour of the separate `torchao` package, so the cell hides that warning and falls back to the
# hand-made int8 model above where the call no longer exists.

# %%
# NBVAL_IGNORE_OUTPUT
try:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(copy.deepcopy(teacher.model), {nn.Linear},
                                                           dtype=torch.qint8)
    quantized_bytes = serialized_bytes(quantized.state_dict())
    print(quantized)
except (AttributeError, ImportError, RuntimeError) as failure:
    print(f"quantize_dynamic is not available here ({failure!r}); using the hand-made int8 model")
    quantized, quantized_bytes = round_tripped, serialized_bytes(int8_state)
quantized_row = record("int8 weights", "quantization", quantized, params=dense_row["params"],
                       nbytes=quantized_bytes, macs=dense_row["macs"])
print(f"test accuracy {quantized_row['acc']:.4f}; {dense_row['bytes']:,} → {quantized_row['bytes']:,} bytes")

# %%
assert quantized_row["bytes"] < dense_row["bytes"] / 3, quantized_row
assert abs(round_trip_acc - teacher_acc) < 0.02 and abs(quantized_row["acc"] - teacher_acc) < 0.02

# %% [markdown]
# Same parameters, same MACs, about a quarter of the bytes, and the accuracy is unchanged to within
# an image or two. (The file is not exactly 4× smaller: the biases stay float32, and every file carries a
# fixed overhead.) The lecture goes further: binary weights (1 bit, e.g. BinaryConnect) and weight
# clustering (store a few shared values and a small index per weight).
#
# ## 4 · Architecture design (架构设计): low-rank factorisation
#
# A `Linear` layer with an M×N weight matrix costs M·N parameters and MACs. If W has (nearly) rank
# k, it factors as W ≈ U V with U: M×k and V: k×N, and the layer becomes two thinner layers with
# k·(M + N) parameters, fewer as soon as k < MN/(M+N). The SVD gives the best rank-k approximation.
# How fast do the singular values of the trained LeNet's two hidden layers decay?

# %%
RANK = 8
fig, ax = plt.subplots(figsize=(6, 3))
for index in (0, 2):
    singular_values = torch.linalg.svdvals(teacher.model.features[index].weight.detach())
    energy = (singular_values ** 2).cumsum(0) / (singular_values ** 2).sum()
    ax.plot(range(1, len(energy) + 1), energy, label=f"features.{index} {tuple(teacher.model.features[index].weight.shape)}")
    print(f"features.{index}: rank {RANK} keeps {energy[RANK - 1]:.1%} of Σσ²")
    assert energy[RANK - 1] > 0.5
ax.axvline(RANK, color="grey", linestyle=":")
ax.set_xlabel("rank k")
ax.set_ylabel("fraction of Σσ² kept")
ax.legend()
fig.tight_layout()
plt.show()


# %% [markdown]
# Both spectra are far from flat: the first 8 directions carry more than half of each matrix's Σσ²
# (printed above). Keep rank k = 8 in both hidden layers (the dotted line), which costs some
# accuracy, then fine-tune 3 epochs to win part of it back. The factorised layer is written here in a few lines; the same idea, built
# into the architecture from the start, is the *bottleneck* layer.

# %%
def low_rank(linear, rank):
    """Two `Linear` layers (N → rank → M) computing the best rank-`rank` approximation of `linear`."""
    U, S, Vh = torch.linalg.svd(linear.weight.detach(), full_matrices=False)
    first = nn.Linear(linear.in_features, rank, bias=False)
    second = nn.Linear(rank, linear.out_features)
    with torch.no_grad():
        first.weight.copy_(S[:rank, None] * Vh[:rank])  # V = S_k Vh_k: rank × N
        second.weight.copy_(U[:, :rank])                # U = U_k: M × rank
        second.bias.copy_(linear.bias)
    return nn.Sequential(first, second)


factorised = Classifier("lenet_300_100", lr=1e-3, input_shape=(1, 8, 8))
factorised.load_state_dict(teacher.state_dict())
for index in (0, 2):
    factorised.model.features[index] = low_rank(factorised.model.features[index], RANK)
print(factorised.model.features)
before_finetune = accuracy(factorised, x_test, y_test)
print(f"test accuracy right after the factorisation: {before_finetune:.4f}")

# %%
# NBVAL_IGNORE_OUTPUT
L.seed_everything(0, verbose=False)
factorised.train()
quiet_trainer(3).fit(factorised, datamodule)
factorised_row = record(f"low-rank, k = {RANK}", "architecture", factorised.model)
print(f"after 3 epochs of fine-tuning: {factorised_row['acc']:.4f}; "
      f"parameters {dense_row['params']:,} → {factorised_row['params']:,}")

# %%
assert factorised_row["params"] < 0.4 * dense_row["params"], factorised_row
assert factorised_row["acc"] > teacher_acc - 0.04, factorised_row

# %% [markdown]
# For convolutions the lecture's example is the **depthwise-separable convolution** (深度可分离卷积,
# MobileNet): a 3×3 *depthwise* convolution filters each input channel on its own (`groups=C_in`),
# and a 1×1 *pointwise* convolution mixes the channels. It is a low-rank factorisation of the
# ordinary convolution's weight tensor. The parameter count, for 64 → 128 channels:

# %%
# NBVAL_CHECK_OUTPUT
standard = nn.Conv2d(64, 128, 3, padding=1, bias=False)
separable = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False), nn.Conv2d(64, 128, 1, bias=False))
for label, conv in (("standard 3×3", standard), ("depthwise 3×3 + pointwise 1×1", separable)):
    print(f"{label:31s}: {count_parameters(conv)[1]:6,} parameters, "
          f"{count_macs(conv, torch.zeros(1, 64, 8, 8))['']:9,.0f} MACs on an 8×8 input")


# %% [markdown]
# ## 5 · Dynamic computation (动态计算): early exit
#
# Most digits are easy. An **early exit** (提前退出) adds a second classifier after the first hidden
# layer; at inference, if its confidence (the largest softmax probability) reaches a threshold τ,
# the network answers there and skips the rest. Only the exit head (300 → 10) is trained, on top of
# the frozen teacher, so the full path still computes exactly the teacher's answer.

# %%
class EarlyExitLeNet(Classifier):
    """LeNet-300-100 with a second classifier ("exit") after its first hidden layer."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.exit_head = nn.Linear(300, 10)

    def first_stage(self, x):
        return self.model.features[:2](self.model.flatten(x))  # h1 = ReLU(W1 x + b1)

    def second_stage(self, h1):
        return self.model.classifier(self.model.features[2:](h1))

    def training_step(self, batch, batch_idx):
        x, y = batch
        loss = F.cross_entropy(self.exit_head(self.first_stage(x)), y)
        self.log("train_loss", loss)
        return loss


@torch.inference_mode()
def early_exit_predict(model, x, threshold):
    """Predictions, and which examples left at the exit: only the unsure ones run the second stage."""
    model.eval()
    h1 = model.first_stage(x)
    confidence, prediction = F.softmax(model.exit_head(h1), dim=1).max(dim=1)
    late = confidence < threshold
    prediction[late] = model.second_stage(h1[late]).argmax(dim=1)
    return prediction, ~late


# %%
# NBVAL_IGNORE_OUTPUT
L.seed_everything(0, verbose=False)
early_exit = EarlyExitLeNet(arch="lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
early_exit.model.load_state_dict(teacher.model.state_dict())
early_exit.model.requires_grad_(False)
quiet_trainer(10, limit_val_batches=0).fit(early_exit, datamodule)
early_exit.eval()
print(f"exit head alone: test accuracy {accuracy(nn.Sequential(early_exit.model.flatten, early_exit.model.features[:2], early_exit.exit_head), x_test, y_test):.4f}")

# %%
hidden = torch.zeros(2, 300)
stage_macs = {
    "first stage": count_macs(nn.Sequential(early_exit.model.flatten, early_exit.model.features[:2]), example)[""],
    "exit head": count_macs(early_exit.exit_head, hidden)[""],
    "second stage": count_macs(nn.Sequential(early_exit.model.features[2:], early_exit.model.classifier), hidden)[""],
}
print("MACs per image:", {name: int(m) for name, m in stage_macs.items()})

sweep = []
for threshold in (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999):
    prediction, exited = early_exit_predict(early_exit, x_test, threshold)
    fraction = exited.float().mean().item()
    macs = stage_macs["first stage"] + stage_macs["exit head"] + (1 - fraction) * stage_macs["second stage"]
    sweep.append((threshold, fraction, macs, (prediction == y_test).float().mean().item()))
    print(f"τ = {threshold:5}: {fraction:6.1%} exit early, {macs:8,.0f} MACs per image on average, "
          f"test accuracy {sweep[-1][3]:.4f}")

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
axes[0].plot([s[0] for s in sweep], [s[1] for s in sweep], "o-")
axes[0].set_xlabel("threshold τ")
axes[0].set_ylabel("fraction that exits early")
axes[1].plot([s[2] for s in sweep], [s[3] for s in sweep], "o-", label="early exit, τ from 0.5 to 0.999")
axes[1].plot([dense_row["macs"]], [teacher_acc], "r*", markersize=12, label="dense LeNet (no exit)")
axes[1].set_xlabel("average MACs per image")
axes[1].set_ylabel("test accuracy")
axes[1].legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# A higher τ sends more images through the whole network: more MACs, and accuracy approaching the
# teacher's. For the table take τ = 0.9, fixed before looking at these numbers. Note the cost of an
# exit: an image that does *not* leave early pays for the exit head too.

# %%
# NBVAL_IGNORE_OUTPUT
THRESHOLD = 0.9
prediction, exited = early_exit_predict(early_exit, x_test, THRESHOLD)
exit_fraction = exited.float().mean().item()
early_row = record(
    f"early exit, τ = {THRESHOLD}", "dynamic", early_exit,
    forward=lambda x: early_exit_predict(early_exit, x, THRESHOLD),
    params=count_parameters(early_exit)[1], nbytes=serialized_bytes(early_exit.state_dict()),
    macs=stage_macs["first stage"] + stage_macs["exit head"] + (1 - exit_fraction) * stage_macs["second stage"],
    acc=(prediction == y_test).float().mean().item(),
)
print(f"{exit_fraction:.1%} of the test images exit early; test accuracy {early_row['acc']:.4f}")

# %%
assert exit_fraction > 0.5, exit_fraction
assert early_row["macs"] < dense_row["macs"], early_row
assert early_row["acc"] > teacher_acc - 0.03, early_row

# %% [markdown]
# ## All five, side by side
#
# Latency is the median time of one forward pass over the 357 test images (one batch, one thread);
# it changes from run to run, so that cell's output is not checked. The last two columns compare each
# method with the dense model: how many times fewer MACs per image, and how many times faster.

# %%
# NBVAL_IGNORE_OUTPUT
print(f"{'method':31s} {'family':13s} {'params':>7s} {'bytes':>8s} {'MACs/img':>8s} {'ms/357 img':>10s} "
      f"{'test acc':>8s} {'MACs ÷':>7s} {'speed-up':>8s}")
for name, row in results.items():
    print(f"{name:31s} {row['family']:13s} {row['params']:7,d} {row['bytes']:8,d} {row['macs']:8,.0f} "
          f"{row['latency']:10.3f} {row['acc']:8.4f} {dense_row['macs'] / row['macs']:6.1f}× "
          f"{dense_row['latency'] / row['latency']:7.1f}×")

# %%
fig, ax = plt.subplots(figsize=(6.5, 3.5))
for name, row in results.items():
    ax.scatter(row["bytes"] / 1e3, row["acc"], s=40)
    big, below = row["bytes"] > 150e3, row["family"] == "dynamic"  # keep the labels apart and inside
    ax.annotate(name, (row["bytes"] / 1e3, row["acc"]), fontsize=8, ha="right" if big else "left",
                xytext=(-6 if big else 6, -10 if below else 3), textcoords="offset points")
ax.set_xlabel("serialized size (kB)")
ax.set_ylabel("test accuracy")
fig.tight_layout()
plt.show()

# %% [markdown]
# Reading the table:
#
# - **What shrinks differs.** Pruning, distillation and low-rank factorisation reduce the number of
#   parameters *and* of MACs; quantization keeps both and reduces the bits per parameter (about a
#   quarter of the bytes); early exit keeps (and slightly adds to) the parameters and reduces the
#   *average* MACs, by a different amount for every input.
# - **Latency on a tiny model.** LeNet-300-100 takes about half a millisecond for all 357 images, and
#   at this size fixed per-call costs (Python, operator dispatch, memory allocation) weigh as much as
#   the arithmetic. Compare the last two columns: the smaller models are faster, but typically by
#   well under their MAC ratio; whether int8 kernels beat float32 ones depends on the CPU; and the
#   early exit's bookkeeping (a softmax, a comparison, an indexed second pass) can cost more time than
#   the MACs it saves. Notebook 4 measures speed-ups on a larger network, where they come closer to
#   the MAC ratios.
# - **The families combine.** A distilled student can be pruned, a pruned model quantized, and so on;
#   Han et al.'s *Deep Compression* (2016) chains pruning, quantization and Huffman coding.
#
# ## Summary
#
# - Model compression (模型压缩) makes a network fit a device's memory, compute and latency budgets.
#   The lecture's five families: network pruning (网络剪枝), knowledge distillation (知识蒸馏),
#   parameter quantization (参数量化), architecture design (架构设计) and dynamic computation (动态计算).
# - On the same trained LeNet-300-100 (all numbers in the table above): neuron pruning kept 80 of the
#   400 hidden neurons, about 10× fewer parameters, for about 3 points of test accuracy; a 21× smaller
#   student came within about 2–3 points of the teacher (distillation did not beat training on labels
#   on this easy data, and distilling the dense model into the network being pruned,
#   `Pruning(distill=Distillation(...))`, did not help either, here or in the committed experiment); int8 weights cut the bytes by about 3.6× at the same accuracy; a rank-8
#   factorisation cut the parameters by about 6.7× for about 2 points after fine-tuning; an early exit
#   answered about 70 % of the images after the first layer, with about 38 % fewer MACs on average
#   and no accuracy lost.
# - Fewer bytes or MACs is not the same as less time: on a model this small, fixed per-call costs
#   weigh as much as the arithmetic.
#
# ## Exercises
#
# 1. Distillation: train the student with `temperature=1, alpha=1` (pure imitation of the teacher),
#    and with `temperature=8`. Then give the students only 100 labeled training images but let the
#    teacher label all 1,080 (soft targets need no labels): does distillation now beat the control?
#    While pruning: try `Distillation(weight=2.0, temperature=8.0)`, and `cycles=[3]` (distil only
#    the last, hardest cycle). Does either move the mean beyond the spread over the three seeds?
# 2. Quantization: quantize per *row* (one scale per output neuron) instead of per tensor, and with 4
#    bits (codes in [−7, 7]). How do the largest error and the accuracy change?
# 3. Low rank: plot test accuracy right after the factorisation (no fine-tuning) against k = 2, 4, 8,
#    16, 32. Where does it fall off? Compare with the singular-value plot.
# 4. Combine: quantize the pruned model with `quantize_dynamic`. How many bytes remain, compared with
#    the dense float32 model?
