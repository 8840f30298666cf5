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
# # 1 · Why networks can be pruned
#
# **Lecture concept:** network pruning (网络剪枝) starts from one observation: trained networks are
# *over-parameterised* (过参数化). Many weights are tiny and many neurons are almost never active, so
# they can go without hurting the network much.
#
# **Learning goals**
#
# - Train LeNet-300-100 on the 8×8 digits with a real `lightning.Trainer`.
# - Read a weight-magnitude histogram and say what fraction of the weights is small.
# - Measure how often each neuron fires (1 − APoZ, Hu et al. 2016) with
#   `lightning_prune.criteria.score_layers(APoZ(), ...)`, and count the neurons that almost never do.
# - Check, with numbers, that the never-active neurons can be switched off without changing a single
#   validation prediction.
#
# Runs in about 15 s on 2 CPU cores.

# %%
import copy

import matplotlib.pyplot as plt
import torch

from lightning_prune.teaching import quiet_setup, quiet_trainer
from lightning_prune import APoZ, Magnitude, apply_masks
from lightning_prune.counting import count_parameters
from lightning_prune.criteria import score_layers
from lightning_prune.data import DigitsDataModule
from lightning_prune.layers import find_prunable_layers
from lightning_prune.models import Classifier
from lightning_prune.ranking import select_units

# %matplotlib inline
quiet_setup(0)

# %% [markdown]
# ## The data and the model
#
# The UCI digits: 1,797 grey-scale 8×8 images of handwritten digits, split once and for all into
# 1,080 training, 360 validation and 357 test images. LeNet-300-100 is the multilayer perceptron of
# Han et al. (2015) and of the lottery-ticket paper: 64 → 300 → 100 → 10 with ReLUs.

# %%
datamodule = DigitsDataModule(batch_size=64, seed=0)
datamodule.setup("fit")
datamodule.setup("test")
x, y = next(iter(datamodule.train_dataloader()))
print("one batch:", tuple(x.shape), tuple(y.shape))
print("train / val / test images:", len(datamodule.train_dataloader().dataset),
      len(datamodule.val_dataloader().dataset), len(datamodule.test_dataloader().dataset))

model = Classifier("lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
initial = copy.deepcopy(model)  # kept to compare the weights before and after training
_, n_params = count_parameters(model)
print(model.model)
print(f"parameters: {n_params:,}  ({n_params / 1080:.0f} per training image)")

# %% [markdown]
# About 47 parameters per training image: far more knobs than the data needs. Let us train it.

# %%
# NBVAL_IGNORE_OUTPUT
trainer = quiet_trainer(10)
trainer.fit(model, datamodule)
test_acc = trainer.test(model, datamodule, verbose=False)[0]["test_acc"]
print(f"test accuracy of the dense model: {test_acc:.4f}")

# %%
assert test_acc > 0.93, test_acc


# %%
@torch.no_grad()
def predictions(module, loader):
    """Predicted classes over a loader (a small helper for the checks below)."""
    module.eval()
    return torch.cat([module(xb).argmax(dim=1) for xb, _ in loader])


val_targets = torch.cat([yb for _, yb in datamodule.val_dataloader()])
test_targets = torch.cat([yb for _, yb in datamodule.test_dataloader()])
dense_val = predictions(model, datamodule.val_dataloader())
print(f"validation accuracy of the dense model: {(dense_val == val_targets).float().mean():.4f}")

# %% [markdown]
# ## Over-parameterisation, part 1: most weights are small
#
# `find_prunable_layers` lists the layers whose weights can be pruned, in forward order; the last
# one is the classifier (its 10 output units are never pruned, but its weights can be).

# %%
layers = find_prunable_layers(model, model.example_input_array)
for layer in layers:
    print(f"{layer.name:22s} weight {tuple(layer.weight.shape)}  output layer: {layer.is_output}")

# %%
weights = torch.cat([layer.weight.detach().flatten() for layer in layers]).abs()
largest = weights.max().item()
for fraction in (0.01, 0.05, 0.10):
    share = (weights < fraction * largest).float().mean().item()
    print(f"|w| < {fraction:>4.0%} of the largest |w|: {share:6.1%} of the {weights.numel():,} weights")
print(f"median |w| / largest |w|: {weights.median().item() / largest:.3f}")

# %%
initial_layers = find_prunable_layers(initial, initial.example_input_array)
fig, axes = plt.subplots(1, len(layers), figsize=(12, 3))
for ax, layer, start in zip(axes, layers, initial_layers):
    ax.hist(start.weight.detach().flatten().numpy(), bins=80, alpha=0.5, color="tab:gray", label="initial")
    ax.hist(layer.weight.detach().flatten().numpy(), bins=80, alpha=0.7, color="tab:blue", label="trained")
    ax.set_title(f"{layer.name}  {tuple(layer.weight.shape)}")
    ax.set_xlabel("weight value")
axes[0].set_ylabel("count")
axes[0].legend()
fig.tight_layout()
plt.show()
for layer, start in zip(layers, initial_layers):
    w, w0 = layer.weight.detach().abs(), start.weight.detach().abs()
    print(f"{layer.name:22s} largest |w| initial {w0.max().item():.3f} -> trained {w.max().item():.3f}; "
          f"trained weights beyond the initial range: {(w > w0.max()).float().mean().item():.1%}")

# %% [markdown]
# The initial weights are uniform in ±1/√fan-in (grey). Training widens the distribution (a quarter
# to a third of the trained weights end up beyond the initial range, printed above) but leaves it
# peaked at zero: by the earlier count, over a third of all weights are below 10 % of the largest one.
# Small weights change a neuron's input very little. That is why weight magnitude (`Magnitude`, L1/L2)
# is the first importance criterion of the lecture.
#
# A preview of notebook 2: zero the smallest fraction of all weights (global magnitude ranking) with
# **no retraining at all**, and watch the test accuracy.

# %%
sweep = {}
for fraction in (0.25, 0.4, 0.5, 0.75, 0.9):
    pruned = copy.deepcopy(model)
    pruned_layers = find_prunable_layers(pruned, pruned.example_input_array)
    scores = score_layers(Magnitude(1), pruned_layers, "weight", cycle=0)
    keep = select_units(scores, {name: torch.ones_like(s, dtype=torch.bool) for name, s in scores.items()}, fraction)
    apply_masks(pruned, {layer.weight_name: keep[layer.name] for layer in pruned_layers})
    sweep[fraction] = (predictions(pruned, datamodule.test_dataloader()) == test_targets).float().mean().item()
dense_test = (predictions(model, datamodule.test_dataloader()) == test_targets).float().mean().item()
print(f"test accuracy, dense: {dense_test:.4f}")
for fraction, acc in sweep.items():
    print(f"smallest {fraction:4.0%} of the weights zeroed, no retraining: {acc:.4f} ({acc - dense_test:+.4f})")

# %%
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot([0, *(100 * f for f in sweep)], [dense_test, *sweep.values()], "o-", label="pruned, no retraining")
ax.axhline(dense_test, color="gray", ls="--", label="dense")
ax.set_xlabel("smallest weights zeroed (%, global magnitude ranking)")
ax.set_ylabel("test accuracy")
ax.legend()
fig.tight_layout()
plt.show()

# %%
assert sweep[0.4] > dense_test - 0.02, sweep
assert sweep[0.9] < sweep[0.4], sweep

# %% [markdown]
# Up to about 40 % of the weights can go with well under 2 points lost, without any retraining (the
# printed numbers and the plot).
# Further out the loss grows quickly; notebook 2 shows that fine-tuning (微调) wins most of it back.

# %% [markdown]
# ## Over-parameterisation, part 2: many neurons are (almost) never active
#
# The lecture's neuron importance is "how often is this neuron's output non-zero on a data set".
# Hu et al. (2016) call the complement APoZ, the *Average Percentage of Zeros* after the ReLU
# (平均零激活百分比).
# `APoZ()` scores each neuron by its activation frequency `1 − APoZ`; it needs a calibration pass over
# data, which `score_layers` runs (model in eval mode, no gradients). We use the validation images.

# %%
frequency = score_layers(APoZ(), layers, "neuron", cycle=0, model=model, batches=datamodule.val_dataloader())
hidden = [layer for layer in layers if not layer.is_output]  # the classifier has no ReLU after it
for layer in hidden:
    f = frequency[layer.name]
    print(f"{layer.name:22s} {f.numel():3d} neurons | never active: {int((f == 0).sum()):3d} | "
          f"active on < 5% of images: {int((f < 0.05).sum()):3d} | mean frequency {f.mean().item():.3f}")

# %%
fig, axes = plt.subplots(1, len(hidden), figsize=(10, 3))
for ax, layer in zip(axes, hidden):
    ax.hist(frequency[layer.name].numpy(), bins=20, range=(0, 1), color="tab:orange")
    ax.set_title(f"{layer.name}: {frequency[layer.name].numel()} neurons")
    ax.set_xlabel("fraction of validation images on which the neuron is non-zero")
axes[0].set_ylabel("neurons")
fig.tight_layout()
plt.show()

# %% [markdown]
# The bar at 0 is the "dead" neurons: their pre-activation is ≤ 0 on every validation image, so the
# ReLU outputs 0 and nothing downstream ever sees them. Switching them off (zeroing their incoming
# weights and bias with `apply_masks`) should therefore leave every validation prediction, and even
# every logit, exactly as it was. Let us check.

# %%
dead = {layer.name: frequency[layer.name] == 0 for layer in hidden}
switched_off = copy.deepcopy(model)
masks = {}
for layer in hidden:
    alive = ~dead[layer.name]
    masks[f"{layer.name}.weight"] = alive[:, None].expand_as(layer.weight).clone()
    masks[f"{layer.name}.bias"] = alive.clone()
apply_masks(switched_off, masks)

with torch.no_grad():
    x_val = torch.cat([xb for xb, _ in datamodule.val_dataloader()])
    same_logits = torch.equal(model(x_val), switched_off(x_val))
n_dead = sum(int(d.sum()) for d in dead.values())
n_hidden = sum(d.numel() for d in dead.values())
off_test = (predictions(switched_off, datamodule.test_dataloader()) == test_targets).float().mean().item()
print(f"dead neurons switched off: {n_dead} of {n_hidden} hidden neurons")
print(f"validation logits identical: {same_logits}")
print(f"test accuracy: dense {dense_test:.4f}, dead neurons off {off_test:.4f}")

# %%
assert same_logits
assert off_test > dense_test - 0.01

# %% [markdown]
# On the validation images the logits are bit-for-bit identical. The test images were not used to find
# the dead neurons, so a few of them could in principle wake up there; the printed test accuracy shows
# whether that mattered.
#
# ## Summary
#
# - LeNet-300-100 has about 47 parameters per training image and still reaches the printed test
#   accuracy after 10 epochs: far more capacity than the task needs.
# - Its trained weights are peaked around zero with a few large ones, and zeroing the smallest 40 %
#   of them, with no retraining, costs less than 2 points of test accuracy (printed sweep); pruning
#   much more without fine-tuning does hurt.
# - A sizeable group of hidden neurons never fires on the validation data (printed per layer); removing
#   them leaves the validation logits exactly unchanged.
# - These two observations give the two importance criteria of the lecture: weight magnitude for
#   weight pruning (权重剪枝, notebook 2) and activation frequency for neuron pruning (神经元剪枝,
#   notebook 3).
#
# ## Exercises
#
# 1. Train for 3 epochs instead of 10. Are there more or fewer dead neurons? Is the weight histogram
#    narrower or wider?
# 2. Compute the activation frequency on the *training* images (`datamodule.train_dataloader()`)
#    instead of the validation images. Do the same neurons come out dead?
# 3. Train a narrow network, `Classifier("lenet_300_100", arch_kwargs={"hidden": (30, 10)}, ...)`, for
#    the same 10 epochs. Does it have dead neurons too, and how does its test accuracy compare? (This
#    is the "why not train a small network directly?" question behind the lottery ticket hypothesis,
#    大乐透假设, notebook 5.)
# 4. Repeat the no-retraining sweep with `scope="layer"` in `select_units` (every layer loses the
#    same fraction). Which scope loses less accuracy at 75 %?
