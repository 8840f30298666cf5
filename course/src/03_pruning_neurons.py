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
# # 3 · Pruning neurons
#
# **Lecture concept:** neuron pruning (神经元剪枝). Weight pruning leaves an irregular network: the
# matrices keep their shapes, full of zeros. Removing whole *neurons* instead gives a network that is
# simply narrower: smaller matrices, fewer parameters and fewer multiply-accumulate operations (MACs,
# 乘加运算), with no special kernels needed.
#
# **Learning goals**
#
# - Score neurons by activation frequency (1 − APoZ) and by the L1/L2 norm of their weights, and see
#   how much the criteria agree.
# - Remove a neuron by hand from a two-layer MLP with plain tensor indexing (a row of W1, an entry of
#   b1, a column of W2) and check that the output is unchanged when the neuron's output was always zero.
# - Do the same with the library: `remove_units` for one step, and `Pruning(granularity=Neurons())` for
#   the whole loop with fine-tuning; compare parameters and MACs before and after (`count_parameters`,
#   `count_macs`).
#
# Runs in about 20 s on 2 CPU cores.

# %%
import copy

import lightning as L
import matplotlib.pyplot as plt
import torch
from torch import nn

from lightning_prune.teaching import accuracy, quiet_setup, quiet_trainer
from lightning_prune import APoZ, Geometric, Magnitude, Neurons, Pruning, remove_units
from lightning_prune.counting import count_macs, count_parameters
from lightning_prune.criteria import score_layers
from lightning_prune.data import DigitsDataModule
from lightning_prune.layers import find_prunable_layers
from lightning_prune.models import Classifier
from lightning_prune.ranking import select_units

# %matplotlib inline
quiet_setup(0)

datamodule = DigitsDataModule(batch_size=64, seed=0)
datamodule.setup("fit")
datamodule.setup("test")
x_val = torch.cat([xb for xb, _ in datamodule.val_dataloader()])
y_test = torch.cat([yb for _, yb in datamodule.test_dataloader()])
x_test = torch.cat([xb for xb, _ in datamodule.test_dataloader()])

# %% [markdown]
# ## Neuron importance: activation frequency versus weight norms
#
# Train LeNet-300-100 (64 → 300 → 100 → 10) and score its 400 hidden neurons three ways:
#
# - **APoZ**, the *Average Percentage of Zeros* (平均零激活百分比, Hu et al. 2016): the fraction of the
#   validation images on which the neuron's ReLU output is zero. A neuron with a high APoZ is almost
#   never active, so it is unimportant. `APoZ()` scores each neuron by the complement, its activation
#   frequency `1 − APoZ` (how often the output is non-zero), so that, as for every criterion, a higher
#   score means more important; the rows below are labelled `1-APoZ`;
# - **L1 / L2** (`Magnitude(1)`, `Magnitude(2)` with `granularity="neuron"`): the norm of the neuron's
#   incoming weights (its row of the weight matrix).

# %%
# NBVAL_IGNORE_OUTPUT
L.seed_everything(0, verbose=False)
lenet = Classifier("lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
quiet_trainer(10).fit(lenet, datamodule)
lenet_acc = accuracy(lenet, x_test, y_test)
print(f"LeNet-300-100 test accuracy: {lenet_acc:.4f}")

# %%
assert lenet_acc > 0.93, lenet_acc
layers = find_prunable_layers(lenet, lenet.example_input_array)
hidden = [layer for layer in layers if not layer.is_output]
scores = {
    "1-APoZ": score_layers(APoZ(), hidden, "neuron", 0, model=lenet, batches=datamodule.val_dataloader()),
    "L1": score_layers(Magnitude(1), hidden, "neuron", 0),
    "L2": score_layers(Magnitude(2), hidden, "neuron", 0),
}
for name, layer_scores in scores.items():
    print(name, {layer: tuple(s.shape) for layer, s in layer_scores.items()})


# %%
def rank_correlation(a, b):
    """Spearman's rank correlation (Pearson's on the ranks; ties broken by position)."""
    ra, rb = a.argsort().argsort().double(), b.argsort().argsort().double()
    return torch.corrcoef(torch.stack([ra, rb]))[0, 1].item()


def pruned_half(layer_scores):
    """The neurons a per-layer ranking removes at 50 %."""
    keep = select_units(layer_scores, {n: torch.ones_like(s, dtype=torch.bool) for n, s in layer_scores.items()},
                        0.5, scope="layer")
    return {name: set((~mask).nonzero().flatten().tolist()) for name, mask in keep.items()}


halves = {name: pruned_half(s) for name, s in scores.items()}
for layer in hidden:
    n = layer.name
    print(f"{n} ({layer.num_units} neurons)")
    for a, b in (("1-APoZ", "L1"), ("1-APoZ", "L2"), ("L1", "L2")):
        common = len(halves[a][n] & halves[b][n])
        print(f"  {a:6s} vs {b:2s}: rank correlation {rank_correlation(scores[a][n], scores[b][n]):+.2f}, "
              f"same neuron in both pruned halves: {common}/{len(halves[a][n])}")

# %%
fig, axes = plt.subplots(1, len(hidden), figsize=(10, 3.2))
for ax, layer in zip(axes, hidden):
    ax.scatter(scores["L2"][layer.name], scores["1-APoZ"][layer.name], s=8)
    ax.set_title(layer.name)
    ax.set_xlabel("L2 norm of incoming weights")
axes[0].set_ylabel("activation frequency (1 − APoZ)")
fig.tight_layout()
plt.show()

# %% [markdown]
# Unlike for single weights (notebook 2), L1 and L2 now differ: the norm is taken over a whole row,
# and two rows can be ordered differently by their L1 and L2 norms. They still agree closely (the
# printed correlation and overlap). APoZ measures something else, how the neuron behaves *on the
# data*: its agreement with the weight norms is weak in the first hidden layer and only moderate in
# the second (printed above, and visible in the scatter). A neuron with large incoming weights can
# still be dead if its pre-activation is always negative.
#
# ## Removing a neuron by hand
#
# Take the smallest possible case, an MLP with one hidden layer:
# `h = ReLU(W1 x + b1)`, `logits = W2 h + b2`, with `W1: 100×64`, `b1: 100`, `W2: 10×100`.
# Neuron `j` of the hidden layer owns **row j of W1**, **entry j of b1** and **column j of W2**. If
# `h_j` is zero on every input, its column of W2 only ever multiplies zeros, so removing the three
# pieces leaves the logits unchanged.

# %%
# NBVAL_IGNORE_OUTPUT
L.seed_everything(0, verbose=False)
mlp = Classifier("lenet_300_100", arch_kwargs={"hidden": (100,)}, lr=3e-3, input_shape=(1, 8, 8))
quiet_trainer(10).fit(mlp, datamodule)
mlp_acc = accuracy(mlp, x_test, y_test)
print(f"two-layer MLP test accuracy: {mlp_acc:.4f}")

# %%
assert mlp_acc > 0.9, mlp_acc
print(mlp.model)
mlp_layers = find_prunable_layers(mlp, mlp.example_input_array)
frequency = score_layers(APoZ(), mlp_layers[:1], "neuron", 0, model=mlp, batches=datamodule.val_dataloader())
frequency = frequency["model.features.0"]
dead = (frequency == 0).nonzero().flatten()
busiest = int(frequency.argmax())
print(f"hidden neurons never active on the validation images: {dead.numel()} of {frequency.numel()}")
print(f"first dead neuron: {int(dead[0])}; busiest neuron: {busiest} (active on {frequency[busiest]:.0%} of images)")

# %%
W1 = mlp.model.features[0].weight.detach()
b1 = mlp.model.features[0].bias.detach()
W2 = mlp.model.classifier.weight.detach()
b2 = mlp.model.classifier.bias.detach()


def without(drop):
    """A narrower copy of the MLP: the hidden neurons in `drop` removed by indexing."""
    keep = torch.ones(W1.shape[0], dtype=torch.bool)
    keep[drop] = False
    small = nn.Sequential(nn.Flatten(), nn.Linear(64, int(keep.sum())), nn.ReLU(), nn.Linear(int(keep.sum()), 10))
    with torch.no_grad():
        small[1].weight.copy_(W1[keep])      # rows of W1: the neuron's incoming weights
        small[1].bias.copy_(b1[keep])        # entries of b1
        small[3].weight.copy_(W2[:, keep])   # columns of W2: the neuron's outgoing weights
        small[3].bias.copy_(b2)              # b2 belongs to the output neurons: unchanged
    return small


with torch.no_grad():
    reference = mlp(x_val)
    for label, drop in (("dead neuron", [int(dead[0])]), ("busiest neuron", [busiest]), ("all dead neurons", dead)):
        small = without(drop)
        out = small(x_val)
        changed = int((out.argmax(1) != reference.argmax(1)).sum())
        print(f"remove {label:16s}: hidden width {small[1].out_features:3d}, max |Δlogit| on validation "
              f"{(out - reference).abs().max().item():.2e}, predictions changed {changed}/{len(x_val)}")

# %%
with torch.no_grad():
    assert torch.allclose(without(dead)(x_val), reference, atol=1e-5)
    assert (without([busiest])(x_val) - reference).abs().max() > 1e-2

# %% [markdown]
# Removing a dead neuron changes the logits only by floating-point rounding (the matrix products
# now sum one zero term fewer); removing the busiest neuron changes them visibly. All dead neurons
# go at once just as safely.
#
# The library does exactly this surgery with `remove_units(model, example_input, {layer: indices})`:
# it traces the model (with Torch-Pruning's dependency graph) to find every tensor a neuron owns, so
# it also works for BatchNorm, convolutions feeding a `Flatten`, and residual connections. On our MLP it
# must produce the same matrices as our indexing.

# %%
surgery = copy.deepcopy(mlp.model)
remove_units(surgery, torch.zeros(2, 1, 8, 8), {"features.0": dead.tolist()})
manual = without(dead)
print(surgery)
same = (torch.equal(surgery.features[0].weight, manual[1].weight)
        and torch.equal(surgery.features[0].bias, manual[1].bias)
        and torch.equal(surgery.classifier.weight, manual[3].weight))
print("remove_units gives the same W1, b1 and W2 as manual indexing:", same)
mlp_params, surgery_params = count_parameters(mlp.model)[1], count_parameters(surgery)[1]
print(f"parameters: {mlp_params:,} -> {surgery_params:,}")

# %%
assert same

# %% [markdown]
# ## The whole loop: `Pruning(granularity=Neurons())`
#
# With `granularity=Neurons()` (the string `"neuron"` is the same) the callback scores neurons, ranks
# them globally over the hidden layers (the 10 output neurons are never pruned), masks the losers, and,
# once a cycle is done, **physically removes** them (`Neurons(remove=True)` is the default;
# `remove=False` keeps them as masked zeros), carrying the optimizer state over to the smaller
# matrices. We prune 80 % of LeNet-300-100's 400 hidden neurons, 30 % of the remaining ones per cycle
# with 2 epochs of fine-tuning each, once with APoZ (`APoZ(batches=16)`: the zero counts come from 16
# training batches per cycle) and once with the L1 norm (`Magnitude(1)`).

# %%
# NBVAL_IGNORE_OUTPUT
example = torch.zeros(1, 1, 8, 8)
runs = {}
for criterion, importance in (("apoz", APoZ(batches=16)), ("l1", Magnitude(1))):
    L.seed_everything(0, verbose=False)
    model = Classifier("lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
    before = (count_parameters(model)[1], count_macs(model, example)[""])
    callback = Pruning(schedule=Geometric(target=0.8, per_cycle=0.3, warmup_epochs=10, finetune_epochs=2),
                       criterion=importance, granularity=Neurons(), ranking="global", verbose=False)
    quiet_trainer(10 + 2 * len(callback.fractions) + 2, [callback]).fit(model, datamodule)
    runs[criterion] = {
        "before": before,
        "after": (count_parameters(model)[1], count_macs(model, example)[""]),
        "widths": [layer.weight.shape[0] for layer in find_prunable_layers(model, example)],
        "acc": accuracy(model, x_test, y_test),
        "cycles": len(callback.history),
        "model": model,
    }

# %%
print(runs["apoz"]["model"].model)
print(f"dense LeNet-300-100: test accuracy {lenet_acc:.4f}")
print(f"{'criterion':>9} {'cycles':>6} {'widths':>14} {'params':>17} {'MACs':>17} {'test acc':>8}")
for criterion, run in runs.items():
    (p0, m0), (p1, m1) = run["before"], run["after"]
    print(f"{criterion:>9} {run['cycles']:>6d} {str(run['widths']):>14} {p0:>7,} → {p1:>6,} "
          f"{int(m0):>7,} → {int(m1):>6,} {run['acc']:>8.4f}")
    print(f"{'':>31} {p0 / p1:>16.1f}× {m0 / m1:>16.1f}×")

# %%
for criterion, run in runs.items():
    assert sum(run["widths"][:-1]) == 80, run["widths"]  # 20 % of the 400 hidden neurons remain
    assert run["widths"][-1] == 10                         # the output layer is untouched
    assert run["before"][0] / run["after"][0] > 5, run
    assert run["acc"] > lenet_acc - 0.06, (criterion, run["acc"])

# %% [markdown]
# Both runs end with 80 of the 400 hidden neurons, in real, smaller `nn.Linear` layers: about 9–10×
# fewer parameters and MACs (printed); the two factors are nearly equal because every removed weight
# was one multiply-accumulate per image (only the biases are parameters without a MAC). The test accuracy stays within a few points
# of the dense model; which criterion wins at this size is in the table, and with a single seed and
# 357 test images, a difference of a point or so (3–4 images) is not meaningful.
#
# ## Summary
#
# - Neuron importance by activation frequency (1 − APoZ) and by incoming-weight norm agree only loosely;
#   L1 and L2 norms agree closely but, unlike for single weights, not exactly.
# - A hidden neuron owns a row of W1, an entry of b1 and a column of W2. Removing a neuron that is
#   never active leaves the logits unchanged up to rounding; removing an active one does not.
# - `remove_units` performs the same surgery, found automatically from the dependency graph, and
#   `Pruning(granularity=Neurons())` runs the whole loop and leaves a genuinely smaller network: the
#   printed parameter and MAC counts both drop by 9–10×, for a loss of a few points of test accuracy.
#
# ## Exercises
#
# 1. In the two-layer MLP, remove the 10 *least* active neurons that are not dead. How large is the
#    largest logit change, and how many validation predictions change?
# 2. Compute the APoZ scores on the training images instead of the validation images. Are the same
#    neurons dead? Does the manual check still hold on the validation images?
# 3. Run the loop with `ranking="layer"` (`PerLayer()`: each hidden layer loses 80 %). Compare the final widths, the
#    MACs and the accuracy with the global ranking above.
# 4. Time `model(x)` on a batch of 4096 images for the dense LeNet and the pruned one (use
#    `time.perf_counter` and take the median of several runs). Is the speed-up close to the MAC
#    ratio? Compare with the 90 % *weight*-pruned model of notebook 2.
