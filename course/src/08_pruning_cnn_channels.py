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
# # 8 · Pruning CNN channels (filters)
#
# **Lecture concept:** neuron pruning (神经元剪枝) in a convolutional network. For a CNN the "neuron"
# of the lecture is an **output channel**: one filter (卷积核 / 滤波器) of a convolution and the
# feature map (通道) it produces. Removing filter `k` of a convolution removes more than its own weights:
# the `k`-th entries of the BatchNorm that follows it (weight, bias, running mean and variance) and
# **input channel `k` of every layer that consumes the feature map**. In a ResNet, channels that are
# joined by a residual addition (残差连接) `out = branch(x) + x` must be removed *together*: these are
# **coupled channels** (耦合通道), and they form one unit of pruning.
#
# **Learning goals**
#
# - See that a conv filter is a neuron: which entries of which parameters one filter owns, in a
#   VGG-style CNN (`VGGSmall`) and in a ResNet (`ResNetSmall`).
# - Read the **neuron groups** of a ResNet (`NeuronStructure(...).groups`, found with Torch-Pruning's
#   dependency graph) and see that residual-coupled convolutions form one group.
# - Do one pruning step by hand with the library: score filters by their L2 norm, keep half of each
#   group, and check that *masking* those channels and *removing* them compute the same function,
#   with conv weights and BatchNorm buffers that really shrink.
# - Run the whole loop in a `lightning.Trainer` with one
#   `Pruning(granularity="neuron", ranking=PerLayer())` callback, and compare accuracy, parameters,
#   MACs, channel widths and CPU latency with the dense network.
#
# Runs in about 15 s on 2 CPU cores.

# %%
import copy
import statistics
import time

import lightning as L
import matplotlib.pyplot as plt
import torch

from lightning_prune.teaching import accuracy, quiet_setup, quiet_trainer
from lightning_prune import APoZ, Geometric, Magnitude, NeuronStructure, PerLayer, Pruning, apply_masks
from lightning_prune.counting import count_macs, count_parameters
from lightning_prune.criteria import score_layers
from lightning_prune.data import DigitsDataModule
from lightning_prune.layers import find_prunable_layers
from lightning_prune.models import Classifier, ResNetSmall, VGGSmall
from lightning_prune.ranking import select_units

# %matplotlib inline
quiet_setup(0)

datamodule = DigitsDataModule(batch_size=64, seed=0)
datamodule.setup("fit")
datamodule.setup("test")
x_test = torch.cat([xb for xb, _ in datamodule.test_dataloader()])
y_test = torch.cat([yb for _, yb in datamodule.test_dataloader()])
example = torch.zeros(2, 1, 8, 8)  # the digits are 1 × 8 × 8 images


def conv_widths(model):
    """Output channels of every convolution, in forward order."""
    return [layer.num_units for layer in find_prunable_layers(model, example) if not layer.is_output]


# %% [markdown]
# ## 1 · A filter is a neuron; residual connections couple filters
#
# Two small CNNs for the 8 × 8 digits, both with stages of 16, 32 and 64 channels:
#
# - **VGG** (`VGGSmall`): a plain chain conv → BatchNorm → ReLU, twice per stage, max-pooling between
#   stages, then global average pooling and the classifier;
# - **ResNet** (`ResNetSmall`): a stem conv, then one residual block per stage,
#   `relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))`, where the shortcut is the identity in the
#   first block and a strided 1 × 1 conv + BatchNorm where the stage changes the width.
#
# The prunable layers are the convolutions (and the classifier, whose 10 outputs are the classes and
# are never pruned). A conv weight has shape `out_channels × in_channels × kH × kW`: filter `k` is
# the slice `weight[k]`.

# %%
vgg = VGGSmall(in_channels=1, widths=(16, 32, 64))
resnet = ResNetSmall(in_channels=1, widths=(16, 32, 64))
for name, model in (("VGGSmall", vgg), ("ResNetSmall", resnet)):
    print(f"{name}: {count_parameters(model)[1]:,} parameters, {int(count_macs(model, example)['']):,} MACs per image")
    for layer in find_prunable_layers(model, example):
        print(f"  {layer.name:20s} weight {str(tuple(layer.weight.shape)):17s} "
              f"{'(output layer)' if layer.is_output else f'{layer.num_units} filters'}")

# %% [markdown]
# `NeuronStructure` traces one forward pass with Torch-Pruning's `DependencyGraph` and returns the
# **groups** of channels that must be pruned together. Each group has a key (its member layer that the forward pass calls first), a size
# (number of channels) and its member layers: the layers whose output channels *are* the group's
# channels.

# %%
vgg_structure = NeuronStructure(vgg, example, find_prunable_layers(vgg, example))
resnet_structure = NeuronStructure(resnet, example, find_prunable_layers(resnet, example))
for name, structure in (("VGGSmall", vgg_structure), ("ResNetSmall", resnet_structure)):
    print(f"{name}: {len(structure.groups)} groups")
    for group in structure.groups:
        members = [member for member, _ in group.members]
        print(f"  key {group.key:20s} size {group.size:3d}  members {members}")

# %%
assert len(vgg_structure.groups) == 6
assert all(len(group.members) == 1 for group in vgg_structure.groups)  # a plain chain: every conv on its own
assert len(resnet_structure.groups) == 6                                # 9 convs, but only 6 groups
coupled = {group.key: [member for member, _ in group.members] for group in resnet_structure.groups
           if len(group.members) > 1}
assert coupled == {
    "layers.2.conv2": ["layers.2.shortcut.0", "layers.2.conv2"],
    "layers.1.conv2": ["layers.1.shortcut.0", "layers.1.conv2"],
    "stem.0": ["stem.0", "layers.0.conv2"],
}, coupled

# %% [markdown]
# In the VGG every conv is its own group: its filters can be removed independently of all others. The
# ResNet's 9 convolutions form only **6 groups**. Three of them have two members:
#
# - `stem.0` with `layers.0.conv2`: the first block has an identity shortcut, so its output is
#   `bn2(conv2(·)) + stem(x)` channel by channel. Channel `k` of the sum is made of channel `k` of the
#   stem *and* channel `k` of `conv2`; removing one without the other would leave two tensors of
#   different widths to add.
# - `layers.1.shortcut.0` with `layers.1.conv2` (and the same for block 2): where the width changes,
#   the shortcut is a 1 × 1 conv, and its output channels are added to those of `conv2`.
#
# Each block's `conv1` is free: its output only feeds `conv2`. A group is scored as a whole (the
# library averages its members' scores) and its channels are kept or removed in every member at once.
#
# ### What one filter owns
#
# `parameter_masks(model, keep)` lists every parameter entry that the removed channels own. Remove a
# single channel, number 3, from one group of each network and look at which slice of which parameter
# goes with it (BatchNorm running statistics are buffers, not parameters: they are not listed here, but
# they are cut too, as section 2 shows).

# %%
def owned_entries(model, structure, group_key, channel):
    """Parameter name -> (shape, dropped entries, which slice) when `channel` of `group_key` is removed."""
    keep = {key: torch.ones(size, dtype=torch.bool) for key, size in structure.sizes.items()}
    keep[group_key][channel] = False
    result = {}
    for name, mask in structure.parameter_masks(model, keep).items():
        dropped = (~mask).nonzero()
        dims = [d for d in range(mask.dim()) if (dropped[:, d] == channel).all()]
        if mask.dim() == 1:
            where = "entry [k]"  # a BatchNorm's scale γ or shift β
        else:
            where = "output filter [k]" if dims and dims[0] == 0 else "input channel [:, k]" if 1 in dims else "?"
        result[name] = (tuple(mask.shape), len(dropped), where)
    return result


for label, model, structure, key in (("VGGSmall", vgg, vgg_structure, "features.0"),
                                     ("ResNetSmall", resnet, resnet_structure, "stem.0")):
    entries = owned_entries(model, structure, key, 3)
    print(f"{label}: channel k = 3 of group {key!r} owns {sum(n for _, n, _ in entries.values())} parameters")
    for name, (shape, n, where) in entries.items():
        print(f"  {name:28s} {str(shape):16s} {n:4d} entries  {where}")

# %%
vgg_owned = owned_entries(vgg, vgg_structure, "features.0", 3)
resnet_owned = owned_entries(resnet, resnet_structure, "stem.0", 3)
assert list(vgg_owned) == ["features.0.weight", "features.1.weight", "features.1.bias", "features.3.weight"]
assert vgg_owned["features.3.weight"] == ((16, 16, 3, 3), 16 * 9, "input channel [:, k]")
assert resnet_owned["layers.0.conv2.weight"] == ((16, 16, 3, 3), 16 * 9, "output filter [k]")  # coupled filter
assert resnet_owned["layers.1.shortcut.0.weight"][2] == "input channel [:, k]"
assert sum(n for _, n, _ in resnet_owned.values()) == 621

# %% [markdown]
# In the VGG, filter 3 of the first conv owns its 9 weights, the BatchNorm's scale and shift (γ, β) for
# channel 3, and the 16 × 3 × 3 weights of the next conv that read channel 3. In the ResNet, channel 3
# of the stem group owns the filters of **two** convolutions (`stem.0` and `layers.0.conv2`), two
# BatchNorms' entries, and the input channel 3 of the three convolutions that read the sum: the
# first block's `conv1`, and the second block's `conv1` and shortcut. 621 parameters for one "neuron".
#
# ## 2 · One pruning step by hand
#
# Train the ResNet on the digits for 12 epochs (the same `Classifier` and data as in the rest of the
# course; this dense model is also the baseline of section 3, which trains for 12 epochs too).

# %%
# NBVAL_IGNORE_OUTPUT
EPOCHS = 12
ARCH = dict(arch_kwargs=dict(in_channels=1, widths=[16, 32, 64]), lr=3e-3, input_shape=(1, 8, 8))
L.seed_everything(0, verbose=False)
dense = Classifier("resnet_small", **ARCH)
quiet_trainer(EPOCHS).fit(dense, datamodule)
dense_acc = accuracy(dense, x_test, y_test)
print(f"dense ResNetSmall test accuracy after {EPOCHS} epochs: {dense_acc:.4f}")

# %% [markdown]
# Score every filter by the **L2 norm** of its weights (`Magnitude(2)`, one score per output channel),
# average the scores of each group's members (`group_scores`), and keep the better half of every group
# (`select_units(..., scope="layer")`). Then make two copies of the trained network:
#
# - **masked**: the removed channels' entries set to zero (`parameter_masks` + `apply_masks`); same
#   shapes as the dense network;
# - **compact**: the removed channels physically cut out (`remove_units`): narrower convolutions and
#   BatchNorms.
#
# (Inside the `Classifier` the network is the attribute `model`, so layer names now start with `model.`.)

# %%
dense_layers = find_prunable_layers(dense, dense.example_input_array)
structure = NeuronStructure(dense, dense.example_input_array, dense_layers)
filter_scores = score_layers(Magnitude(2), [layer for layer in dense_layers if not layer.is_output], "neuron", 0)
scores = structure.group_scores(filter_scores)
everything = {key: torch.ones_like(s, dtype=torch.bool) for key, s in scores.items()}
keep = select_units(scores, everything, 0.5, scope="layer")
for key, mask in keep.items():
    print(f"group {key:26s} keeps {int(mask.sum()):2d} of {mask.numel():2d} channels: "
          f"{mask.nonzero().flatten().tolist()}")

masked = copy.deepcopy(dense)
apply_masks(masked, structure.parameter_masks(masked, keep))
compact = copy.deepcopy(dense)
structure.remove_units(compact, keep)

# %%
shown = ["model.stem.0.weight", "model.stem.1.weight", "model.stem.1.running_mean", "model.layers.0.conv1.weight",
         "model.layers.0.conv2.weight", "model.layers.0.bn2.running_var", "model.layers.1.conv1.weight",
         "model.layers.1.shortcut.0.weight", "model.layers.2.conv2.weight", "model.classifier.weight"]
before = {**dict(dense.named_parameters()), **dict(dense.named_buffers())}
after = {**dict(compact.named_parameters()), **dict(compact.named_buffers())}
print(f"{'tensor':34s} {'dense':>16s} {'compact':>16s}")
for name in shown:
    print(f"{name:34s} {str(tuple(before[name].shape)):>16s} {str(tuple(after[name].shape)):>16s}")
print(f"{'parameters':34s} {count_parameters(dense)[1]:>16,} {count_parameters(compact)[1]:>16,}")

# %%
assert tuple(after["model.stem.0.weight"].shape) == (8, 1, 3, 3)          # half of the stem's filters
assert tuple(after["model.stem.1.running_mean"].shape) == (8,)             # ... and its BatchNorm buffers
assert tuple(after["model.layers.0.conv1.weight"].shape) == (8, 8, 3, 3)   # fewer filters *and* inputs
assert tuple(after["model.layers.1.shortcut.0.weight"].shape) == (16, 8, 1, 1)
assert tuple(after["model.classifier.weight"].shape) == (10, 32)           # 10 classes kept, 32 inputs
assert conv_widths(compact) == [8, 8, 8, 16, 16, 16, 32, 32, 32]

# %% [markdown]
# Every conv now has half its filters *and* half its input channels (its producer lost half its
# filters too), so most convolutions keep only a quarter of their weights. The classifier keeps its 10
# outputs and loses half of its inputs.
#
# Masking and removing are the same function. In eval mode a masked channel is exactly zero after its
# BatchNorm (γ and β are zero), and every consumer's weights on that channel are zero, so the masked
# network and the compact one give the same logits, up to floating-point rounding:

# %%
with torch.no_grad():
    logits = {name: model.eval()(x_test) for name, model in (("dense", dense), ("masked", masked),
                                                             ("compact", compact))}
print(f"max |masked − compact| logit: {(logits['masked'] - logits['compact']).abs().max().item():.1e}")
print(f"max |dense − compact| logit:  {(logits['dense'] - logits['compact']).abs().max().item():.1e}")
step_acc = accuracy(compact, x_test, y_test)
print(f"test accuracy: dense {dense_acc:.4f}, half of the channels removed, not fine-tuned {step_acc:.4f}")

# %%
assert torch.allclose(logits["masked"], logits["compact"], atol=1e-5)
assert (logits["dense"] - logits["compact"]).abs().max() > 1e-2  # pruning did change the function
assert step_acc < dense_acc - 0.2, step_acc                          # ... and, without fine-tuning, badly

# %% [markdown]
# Cutting half of every group in one go, with no fine-tuning (微调), is a disaster: the printed accuracy
# falls close to chance. Part of the damage is specific to CNNs with BatchNorm: every BatchNorm after a
# pruned conv still normalises with running statistics measured when the conv had all its inputs
# (exercise 2). The lecture's loop repairs the damage by pruning a little at a time and fine-tuning
# after each step.
#
# ## 3 · The whole loop in a `Trainer`: `Pruning(granularity="neuron")`
#
# One callback does everything of section 2 at every cycle, inside an ordinary `trainer.fit`: it scores
# the filters, averages scores over each group, ranks per group (`ranking=PerLayer()`), masks the losers,
# fine-tunes, and physically removes the channels once the cycle is done (carrying the optimizer state
# over to the narrower tensors). We train 4 dense epochs, then prune geometrically, 20 % of the
# remaining channels per cycle, down to half of every group (4 cycles: 20 %, 36 %, 48.8 %, 50 %), with 2
# epochs of fine-tuning after each cycle (`Geometric(target=0.5, per_cycle=0.2, warmup_epochs=4,
# finetune_epochs=2)`): 12 epochs, as many as the dense run. We run it twice, with the L2 norm of the
# filters (`Magnitude(2)`) and with APoZ (平均零激活百分比, the average percentage of zeros in a
# channel's post-ReLU feature maps, over all positions of a few training batches, `APoZ(batches=16)`:
# the channels that are mostly zero go first).

# %%
# NBVAL_IGNORE_OUTPUT
runs = {}
for criterion, importance in (("l2", Magnitude(2)), ("apoz", APoZ(batches=16))):
    L.seed_everything(0, verbose=False)
    model = Classifier("resnet_small", **ARCH)
    callback = Pruning(schedule=Geometric(target=0.5, per_cycle=0.2, warmup_epochs=4, finetune_epochs=2),
                       criterion=importance, granularity="neuron", ranking=PerLayer(), verbose=False)
    assert 4 + 2 * len(callback.fractions) == EPOCHS
    quiet_trainer(EPOCHS, [callback]).fit(model, datamodule)
    runs[criterion] = {"model": model, "acc": accuracy(model, x_test, y_test), "cycles": len(callback.history)}
    print(f"{criterion}: {len(callback.history)} cycles, test accuracy {runs[criterion]['acc']:.4f}")

# %%
one = torch.zeros(1, 1, 8, 8)
table = {"dense": dense, "pruned, L2": runs["l2"]["model"], "pruned, APoZ": runs["apoz"]["model"]}
counts = {name: (count_parameters(m)[1], count_macs(m, one)[""]) for name, m in table.items()}
print(f"{'model':>13} {'params':>8} {'MACs/image':>11} {'test acc':>8}  conv widths")
for name, m in table.items():
    params, macs = counts[name]
    print(f"{name:>13} {params:>8,} {int(macs):>11,} {accuracy(m, x_test, y_test):>8.4f}  {conv_widths(m)}")
print(f"pruned: {counts['dense'][0] / counts['pruned, L2'][0]:.2f}× fewer parameters, "
      f"{counts['dense'][1] / counts['pruned, L2'][1]:.2f}× fewer MACs")
print(runs["l2"]["model"].model.layers[1])

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
positions = torch.arange(len(table)).tolist()
for offset, (label, index) in zip((-0.2, 0.2), (("parameters", 0), ("MACs per image", 1))):
    axes[0].bar([p + offset for p in positions], [counts[name][index] / counts["dense"][index] for name in table],
                width=0.4, label=label)
axes[0].set_ylabel("fraction of the dense model")
axes[0].legend()
bars = axes[1].bar(positions, [accuracy(m, x_test, y_test) for m in table.values()], color="tab:green")
axes[1].bar_label(bars, fmt="%.3f")
axes[1].set_ylim(0.8, 1.0)
axes[1].set_ylabel("test accuracy")
for ax in axes:
    ax.set_xticks(positions, list(table))
fig.tight_layout()
plt.show()

# %%
for criterion, run in runs.items():
    assert run["cycles"] == 4, run
    assert conv_widths(run["model"]) == [8, 8, 8, 16, 16, 16, 32, 32, 32]  # the channels are really gone
    assert run["acc"] > dense_acc - 0.03, (criterion, run["acc"], dense_acc)
assert counts["dense"] == (77754, 763520)
assert counts["pruned, L2"] == (19810, 193344)

# %% [markdown]
# Both pruned networks end with exactly half the channels of every group and are ordinary, narrower
# `nn.Conv2d`/`nn.BatchNorm2d` modules (the block printed above). Half the channels means about a
# quarter of the parameters and MACs (3.9× fewer): a conv's cost is `out_channels × in_channels × k²`
# per position, and both factors were halved. With fine-tuning the test accuracy stays within about a
# point of the dense network (the table and the plot; over seeds 0–4 both pruned networks were at most
# 1.4 points below their dense run, and sometimes above it). With 357 test images a point is 3–4
# images: do not read much into which criterion wins.
#
# A remark on APoZ in a ResNet: for the convs that end a block (`conv2`, the shortcut conv) the
# library counts zeros of the branch's BatchNorm output, *before* the residual addition; the ReLU of
# the block acts on the sum. For those members APoZ is an approximation of the real activation
# frequency.
#
# ## 4 · Is the compact network faster?
#
# Time the dense network, the masked one of section 2 (half the channels zeroed, dense shapes) and the
# compact one from the `Trainer` on a batch of 256 images, one CPU thread, repeats interleaved in a
# random order and the median kept (as in notebook 4). These numbers vary from run to run.

# %%
# NBVAL_IGNORE_OUTPUT
batch = x_test[:256]
contenders = {"dense": dense.model.eval(), "masked": masked.model.eval(), "compact": runs["l2"]["model"].model.eval()}
times = {name: [] for name in contenders}
generator = torch.Generator().manual_seed(0)
with torch.no_grad():
    for m in contenders.values():  # warm-up
        m(batch)
    for _ in range(30):
        for i in torch.randperm(len(contenders), generator=generator).tolist():
            name, m = list(contenders.items())[i]
            start = time.perf_counter()
            m(batch)
            times[name].append(time.perf_counter() - start)
median_ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
for name, ms in median_ms.items():
    print(f"{name:>8}: {ms:6.2f} ms per batch of 256, {median_ms['dense'] / ms:.2f}× the speed of dense")
print(f"MAC reduction of compact: {counts['dense'][1] / counts['pruned, L2'][1]:.2f}×")

fig, ax = plt.subplots(figsize=(5, 3.2))
ax.bar(list(median_ms), list(median_ms.values()), color=["tab:gray", "tab:orange", "tab:blue"])
ax.set_ylabel("median ms per batch of 256")
ax.set_title(f"CPU, 1 thread; compact has {counts['dense'][1] / counts['pruned, L2'][1]:.1f}× fewer MACs")
fig.tight_layout()
plt.show()

# %%
assert median_ms["compact"] * 1.3 < median_ms["dense"], median_ms  # loose: the machine is shared and noisy

# %% [markdown]
# The masked network is as slow as the dense one: zeros are multiplied like any other number. The
# compact one is genuinely faster, because it runs the same convolution kernels on narrower tensors. It
# gains less than its 3.9× MAC reduction: on such small images (8 × 8 and smaller) a large part of the
# time goes into per-layer costs that do not shrink with the width (BatchNorm, ReLU, the additions,
# launching each operator), the same effect as notebook 4's narrow layers.
#
# ## Summary
#
# - In a CNN the neuron is an output channel: filter `k` of a conv owns `weight[k]`, entry `k` of the
#   following BatchNorm (γ, β, running mean and variance) and input channel `k` (`weight[:, k]`) of every
#   consumer.
# - A residual addition couples the channels of everything it adds: the ResNet's 9 convolutions form 6
#   groups, three of them with two members (`NeuronStructure.groups`). A group is scored as a whole and
#   pruned in every member at once.
# - With GroupNorm (组归一化 / 組歸一化) instead of BatchNorm, channels are normalised together, group by
#   group: zeroing one channel would change its group's mean and variance, so the library's unit is a
#   *whole group* (masking all of its channels is removing it), and `num_groups` follows the removal. A
#   GroupNorm of one group mixes every channel, like LayerNorm (notebook 9).
# - Masking a channel's entries and removing the channel give the same outputs (checked to 1e-5);
#   removal gives narrower conv weights and BatchNorm buffers. Halving every group leaves about a
#   quarter of the parameters and MACs, because each conv loses half its outputs *and* half its inputs.
# - `Pruning(Geometric(target=0.5), granularity="neuron", ranking=PerLayer())` in a real
#   `Trainer` does all of this with fine-tuning: 3.9× fewer parameters and MACs, test accuracy within
#   about a point of the dense run of the same length, and a measurably faster network on the CPU
#   (less than the MAC ratio on such small images).
#
# ## Exercises
#
# 1. Build `ResNetSmall(in_channels=1, widths=(16, 16, 32))`: block 1 keeps 16 channels but still has
#    stride 2. Predict whether its shortcut is the identity or a conv, how many groups there are and
#    which layers the coupled ones contain; then print them. If block 1 had stride 1 (an identity
#    shortcut), which convolutions would all have to share one group?
# 2. Part of the collapse of section 2 (no fine-tuning) comes from stale BatchNorm statistics. On a copy
#    of `compact`, call `reset_running_stats()` and set `momentum = None` on every `nn.BatchNorm2d`, run
#    a few training batches through it in train mode under `torch.no_grad()` (no weight changes), and
#    measure the test accuracy again. How much comes back? What is left for fine-tuning to repair?
# 3. In section 2, score the filters with `Magnitude(1)` instead of `Magnitude(2)`, and then only by the
#    *first* member of each group instead of the mean. How many kept channels change?
# 4. Prune the `VGGSmall` with the same callback (`Classifier("vgg_small", arch_kwargs=...)`). Compare the
#    parameters, MACs and accuracy with the ResNet's: which has more MACs per parameter, and why?
# 5. Use `ranking="global"` (`Global()`) instead of `PerLayer()`. Which groups lose most of their
#    channels? Does the latency improve more or less than with per-group ranking at the same number of
#    removed channels?
# 6. Repeat the timing with a batch of 8 images, and with 28 × 28 inputs
#    (`torch.randn(256, 1, 28, 28)`; the networks accept any size thanks to global average pooling). How
#    does the speed-up compare with the MAC ratio now?
