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
# # 9 · Pruning transformers: attention heads, FFN neurons and LayerNorm
#
# **Lecture concept:** neuron pruning (神经元剪枝 / 神經元剪枝) in a Transformer. A Transformer layer has
# three kinds of "neurons":
#
# - an **attention head** (注意力头 / 注意力頭): head `h` owns `head_dim` consecutive rows of the query,
#   key and value projections and the same columns of the output projection. Removing only some of its
#   channels makes no sense (the head computes one attention pattern), so a head is **one unit with one
#   score**;
# - an **FFN neuron** (前馈网络 / 前饋網路, the feed-forward network after attention): hidden unit `k`
#   owns row `k` of `fc1` and column `k` of `fc2`, exactly like a neuron of an MLP;
# - a channel of the **residual stream** (残差连接 / 殘差連接: `x + attention(x)`, `x + ffn(x)`), which
#   every block reads and writes and which enters every **LayerNorm** (层归一化 / 層歸一化).
#
# The first two can be pruned exactly; the third cannot be *masked* faithfully, and this notebook shows
# why with numbers.
#
# **Learning goals**
#
# - Read the units of a Hugging Face ViT with `NeuronStructure`: which layers form head groups, which
#   form FFN groups, and which are refused and why.
# - See what one head owns, and check that *masking* a head and *removing* it give the same outputs,
#   with the module's head count (`num_attention_heads`) following the removal.
# - Show numerically that zeroing a channel that feeds a LayerNorm is **not** removing it.
# - Compare how much accuracy is lost when heads or FFN neurons are cut without fine-tuning (微调), then
#   run the whole loop in a `lightning.Trainer` with one `Pruning(granularity="neuron")` callback.
#
# The model is a tiny `ViTForImageClassification` (Hugging Face `transformers`, random initialisation)
# on the 8 × 8 digits: 2 × 2 patches give 16 tokens plus a [CLS] token, hidden size 32, 2 layers of
# 4 heads (head size 8), FFN width 128. Runs in about 30 s on 2 CPU cores.

# %%
import copy
import warnings

import lightning as L
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch.utils import benchmark
from transformers import ViTConfig, ViTForImageClassification

from lightning_prune import Geometric, Magnitude, NeuronStructure, PerLayer, Pruning, Taylor, apply_masks
from lightning_prune.counting import count_parameters
from lightning_prune.criteria import score_layers
from lightning_prune.data import DigitsDataModule
from lightning_prune.layers import find_prunable_layers
from lightning_prune.ranking import select_units
from lightning_prune.teaching import accuracy, quiet_setup, quiet_trainer

# %matplotlib inline
quiet_setup(0)

datamodule = DigitsDataModule(batch_size=32, seed=0)
datamodule.setup("fit")
datamodule.setup("test")
x_test = torch.cat([xb for xb, _ in datamodule.test_dataloader()])
y_test = torch.cat([yb for _, yb in datamodule.test_dataloader()])
CONFIG = ViTConfig(image_size=8, patch_size=2, num_channels=1, hidden_size=32, num_hidden_layers=2,
                   num_attention_heads=4, intermediate_size=128, num_labels=10,
                   hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


class ViTClassifier(L.LightningModule):
    """A Hugging Face ViT in a LightningModule. `forward` returns the logits tensor (not HF's output object)."""

    def __init__(self, lr=1e-3):
        super().__init__()
        self.vit = ViTForImageClassification(CONFIG)
        self.lr = lr
        self.example_input_array = torch.zeros(2, 1, 8, 8)  # what the callback traces the model with

    def forward(self, x):
        return self.vit(pixel_values=x).logits

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.cross_entropy(self(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_acc", (self(x).argmax(dim=1) == y).float().mean())

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=self.lr)


def heads_and_ffn(module):
    """Heads per layer (each attention module's own attribute) and FFN width per layer."""
    layers = module.vit.vit.layers
    return [layer.attention.num_attention_heads for layer in layers], [layer.mlp.fc1.out_features for layer in layers]


# %% [markdown]
# ## 1 · The units of a transformer layer
#
# `find_prunable_layers` lists the `Linear` (and `Conv`) layers; `NeuronStructure` traces one forward pass
# and groups the channels that must be pruned together.

# %%
L.seed_everything(0, verbose=False)
dense = ViTClassifier()
example = dense.example_input_array
layers = find_prunable_layers(dense, example)
structure = NeuronStructure(dense, example, layers)
print(f"{count_parameters(dense)[1]:,} parameters")
for layer in layers:
    print(f"  {layer.name:48s} weight {str(tuple(layer.weight.shape)):10s}{'  (output layer)' * layer.is_output}")
print("groups:")
for group in structure.groups:
    kind = "heads" if group.unit_of is not None else "neurons"
    print(f"  {group.key:40s} {group.size:3d} {kind:7s} ({group.channels} channels) members "
          f"{[name.rsplit('.', 1)[1] for name, _ in group.members]}")
print("refused:")
for name, reason in structure.skipped.items():
    print(f"  {name:48s} {reason}")

# %%
head_groups = [g.key for g in structure.groups if g.unit_of is not None]
ffn_groups = [g.key for g in structure.groups if g.unit_of is None]
assert head_groups == ["vit.vit.layers.0.attention.q_proj", "vit.vit.layers.1.attention.q_proj"]
assert ffn_groups == ["vit.vit.layers.0.mlp.fc1", "vit.vit.layers.1.mlp.fc1"]
assert all(structure.sizes[k] == 4 for k in head_groups) and all(structure.sizes[k] == 128 for k in ffn_groups)
assert set(structure.skipped) == {"vit.vit.embeddings.patch_embeddings.projection", "vit.vit.layers.0.attention.o_proj",
                                  "vit.vit.layers.0.mlp.fc2", "vit.vit.layers.1.attention.o_proj", "vit.vit.layers.1.mlp.fc2"}
assert all("LayerNorm" in reason for reason in structure.skipped.values())

# %% [markdown]
# Four groups, two per layer:
#
# - a **head group**, keyed by `q_proj`, with `q_proj`, `k_proj` and `v_proj` as members: 32 channels
#   but only **4 units**, one per head (channels 0–7 are head 0, 8–15 head 1, ...). A head's score is
#   the mean of its channels' scores;
# - an **FFN group**, `fc1`, with 128 units: one per hidden neuron.
#
# Everything that writes into the residual stream is refused: the patch embedding, every `o_proj` and
# every `fc2`. Their 32 output channels are the same 32 channels all the way from the embedding to the
# final LayerNorm (the residual additions couple them into one group), and they feed LayerNorms
# (section 3 shows why that matters). The classifier is the output layer: its 10 outputs are the classes.
#
# ### What one head and one FFN neuron own
#
# `parameter_masks` lists every parameter entry that goes with the removed units. Remove head 1 of
# layer 0, then FFN neuron 5 of layer 0:

# %%
def owned(group_key, unit):
    """Print which entries of which parameters go when `unit` of `group_key` is removed; return their count."""
    keep = {key: torch.ones(size, dtype=torch.bool) for key, size in structure.sizes.items()}
    keep[group_key][unit] = False
    masks = structure.parameter_masks(dense, keep)
    for name, mask in masks.items():
        gone = ~mask
        if mask.dim() == 1:
            kind, index = "entries", gone.nonzero().flatten()
        elif gone.all(dim=1).any():
            kind, index = "rows", gone.all(dim=1).nonzero().flatten()
        else:
            kind, index = "columns", gone.all(dim=0).nonzero().flatten()
        span = f"{int(index.min())}–{int(index.max())}" if len(index) > 1 else f"{int(index[0])}"
        print(f"  {name.removeprefix('vit.vit.layers.0.'):24s} {str(tuple(mask.shape)):9s} {int(gone.sum()):4d} entries: {kind} {span}")
    return sum(int((~mask).sum()) for mask in masks.values())


print("head 1 of layer 0:")
head_entries = owned("vit.vit.layers.0.attention.q_proj", 1)
print("FFN neuron 5 of layer 0:")
neuron_entries = owned("vit.vit.layers.0.mlp.fc1", 5)
print(f"one head owns {head_entries} parameters, one FFN neuron {neuron_entries}")

# %%
assert head_entries == 3 * (8 * 32 + 8) + 32 * 8  # q, k, v: 8 rows and 8 biases each; o_proj: 8 columns
assert neuron_entries == 32 + 1 + 32              # fc1: one row and its bias; fc2: one column

# %% [markdown]
# Head 1 owns rows 8–15 of the query, key and value weights (and their biases) and columns 8–15 of the
# output projection: 1,048 parameters, as many as 16 FFN neurons.
#
# ## 2 · Masking a head is removing it
#
# Train the dense ViT for 12 epochs (AdamW, lr 1e-3, batches of 32).

# %%
# NBVAL_IGNORE_OUTPUT
EPOCHS = 12
quiet_trainer(EPOCHS).fit(dense, datamodule)
dense_acc = accuracy(dense, x_test, y_test)
print(f"dense ViT, test accuracy after {EPOCHS} epochs: {dense_acc:.4f}")

# %% [markdown]
# Remove head 1 of layer 0 in two ways:
#
# - **masked**: its q/k/v rows and `o_proj` columns set to zero (`parameter_masks` + `apply_masks`), same
#   shapes as before;
# - **compact**: the head physically cut out (`remove_units`).
#
# A masked head's query and key are zero, so its attention is uniform, but its values are zero too, so
# it outputs exactly zero, and `o_proj`'s columns for it are zero as well: nothing of it reaches the
# residual stream. That is what removing it does.

# %%
keep = {key: torch.ones(size, dtype=torch.bool) for key, size in structure.sizes.items()}
keep["vit.vit.layers.0.attention.q_proj"][1] = False
masked = copy.deepcopy(dense)
apply_masks(masked, structure.parameter_masks(masked, keep))
compact = copy.deepcopy(dense)
structure.remove_units(compact, keep)
with torch.no_grad():
    logits = {name: m.eval()(x_test) for name, m in (("dense", dense), ("masked", masked), ("compact", compact))}
attention = compact.vit.vit.layers[0].attention
print(f"compact layer 0: num_attention_heads {attention.num_attention_heads}, q_proj {tuple(attention.q_proj.weight.shape)}, "
      f"o_proj {tuple(attention.o_proj.weight.shape)}; layer 1 still has {compact.vit.vit.layers[1].attention.num_attention_heads}")
print(f"max |masked − compact| logit: {(logits['masked'] - logits['compact']).abs().max().item():.1e}")
print(f"max |dense − compact| logit:  {(logits['dense'] - logits['compact']).abs().max().item():.1e}")

# %%
assert attention.num_attention_heads == 3 and tuple(attention.q_proj.weight.shape) == (24, 32)
assert tuple(attention.o_proj.weight.shape) == (32, 24)
assert torch.allclose(logits["masked"], logits["compact"], atol=1e-5)
assert (logits["dense"] - logits["compact"]).abs().max() > 1e-3  # the head did contribute something

# %% [markdown]
# The compact layer has 3 heads: 24-row q/k/v, an `o_proj` with 24 inputs, and `num_attention_heads`
# updated (the library changes the module's own attribute). The model's global
# `config.num_attention_heads` stays 4: a ViT derives its head size as `hidden_size // num_attention_heads`,
# so no ViT config describes 3 heads of 8 (where a config can describe the compact model, as LLaMA's
# or an FFN width kept equal in every layer, the library rewrites it, so `save_pretrained` works). The
# masked and the compact model give the same logits.
#
# ## 3 · LayerNorm: zeroing a channel is not removing it
#
# LayerNorm normalises each token over **all** its channels:
# `y_i = γ_i · (x_i − mean(x)) / std(x) + β_i`. Zero channel `k` of a token and the other channels'
# outputs change, because the zero still counts in the mean and the variance. Remove channel `k` instead
# (a LayerNorm over the 31 others, same γ and β) and they change differently.
#
# Take the real input of layer 1's first LayerNorm (`layernorm_before`) on the test images, and compare
# the two for the channel with the smallest mean |activation|, the one a magnitude criterion would
# drop first.

# %%
captured = {}
norm = dense.vit.vit.layers[1].layernorm_before
hook = norm.register_forward_hook(lambda module, inputs, output: captured.update(x=inputs[0].detach()))
accuracy(dense, x_test, y_test)
hook.remove()
x = captured["x"].reshape(-1, 32)  # one row per token (357 images × 17 tokens)
k = int(x.abs().mean(dim=0).argmin())
others = [i for i in range(32) if i != k]

zeroed = x.clone()
zeroed[:, k] = 0
with torch.no_grad():
    y_zeroed = norm(zeroed)[:, others]  # channel k zeroed, the LayerNorm still over 32 channels
    y_removed = F.layer_norm(x[:, others], (31,), norm.weight[others], norm.bias[others], norm.eps)  # over 31 channels
    y_dense = norm(x)[:, others]
print(f"channel {k}: mean |x_k| {x[:, k].abs().mean():.3f} (all channels: {x.abs().mean():.3f})")
print("mean of the first 3 tokens, x_k zeroed (over 32):", [round(v, 4) for v in zeroed.mean(dim=1)[:3].tolist()],
      " x_k removed (over 31):", [round(v, 4) for v in x[:, others].mean(dim=1)[:3].tolist()])
layer_norm_gap = (y_zeroed - y_removed).abs().max().item()
print(f"max |LayerNorm(zeroed) − LayerNorm(removed)| on the other channels: {layer_norm_gap:.3f} "
      f"(the outputs' scale: {y_dense.abs().mean():.3f} on average)")

# %% [markdown]
# And the same comparison for an FFN neuron, which feeds no LayerNorm: zero row `k` of `fc1` (and its
# bias) and the neuron's GELU output is GELU(0) = 0, so `fc2` receives nothing from it, exactly as if
# its column were gone.

# %%
mlp = dense.vit.vit.layers[1].mlp
h = torch.randn(100, 32, generator=torch.Generator().manual_seed(0))
j = 5
with torch.no_grad():
    masked_mlp = copy.deepcopy(mlp)
    masked_mlp.fc1.weight[j] = 0
    masked_mlp.fc1.bias[j] = 0
    rest = [i for i in range(128) if i != j]
    removed_out = F.linear(F.gelu(F.linear(h, mlp.fc1.weight[rest], mlp.fc1.bias[rest])), mlp.fc2.weight[:, rest], mlp.fc2.bias)
    ffn_gap = (masked_mlp(h) - removed_out).abs().max().item()
print(f"max |FFN with neuron {j} zeroed − FFN without it|: {ffn_gap:.1e}")

# %%
assert layer_norm_gap > 1e-2, layer_norm_gap  # zeroing a LayerNorm input is a different function
assert ffn_gap < 1e-5, ffn_gap                # zeroing an FFN neuron is removing it

# %% [markdown]
# Zeroing one residual channel moves every other channel's LayerNorm output by up to the printed gap;
# zeroing an FFN neuron changes nothing beyond rounding. The `Pruning` callback trains and judges the
# *masked* model (and, under DDP or `remove=False`, keeps it masked) and ends with the compact one, so
# it only prunes what it can remove exactly: the residual-stream group is **refused** (the warning in
# section 1), and in a transformer only heads and FFN neurons are pruned by default. Removing residual
# channels is possible, but then the model is a different function that needs fine-tuning from a new
# starting point, not a masked model that already is the pruned one: `Neurons(norm_coupled="remove")`
# does exactly that, removing them at the prune step (one process, no `guard`, so that no masked model
# is ever trained or judged).
#
# ## 4 · Heads or FFN neurons: which cost more accuracy?
#
# Cut a fraction of each layer's heads (or of each layer's FFN neurons) from the trained model in one
# shot, without fine-tuning, by their L2 norm (`Magnitude(2)`: a head's score is the mean of its
# channels' norms). Masking is removing here, so masked copies are enough to measure accuracy.

# %%
group_scores = structure.group_scores(score_layers(Magnitude(2), layers, "neuron", 0))
dense_params = count_parameters(dense)[1]
fractions = [0.0, 0.25, 0.5, 0.75]
sweep = {"heads": [], "FFN neurons": []}
for kind, keys in (("heads", head_groups), ("FFN neurons", ffn_groups)):
    for fraction in fractions:
        keep = {key: torch.ones(size, dtype=torch.bool) for key, size in structure.sizes.items()}
        if fraction:
            keep.update(select_units({k: group_scores[k] for k in keys}, {k: keep[k] for k in keys}, fraction, scope="layer"))
        pruned = copy.deepcopy(dense)
        masks = structure.parameter_masks(pruned, keep)
        apply_masks(pruned, masks)
        removed = sum(int((~m).sum()) for m in masks.values())
        sweep[kind].append((accuracy(pruned, x_test, y_test), (dense_params - removed) / dense_params))
        print(f"{kind:11s} {fraction:4.2f} pruned per layer: test accuracy {sweep[kind][-1][0]:.4f}, "
              f"parameters {sweep[kind][-1][1]:.3f} of dense")

fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
for kind, marker in (("heads", "o"), ("FFN neurons", "s")):
    axes[0].plot(fractions, [a for a, _ in sweep[kind]], marker=marker, label=kind)
    axes[1].plot([p for _, p in sweep[kind]], [a for a, _ in sweep[kind]], marker=marker, label=kind)
axes[0].set_xlabel("fraction of each layer's units pruned (no fine-tuning)")
axes[1].set_xlabel("parameters left (fraction of dense)")
for ax in axes:
    ax.axhline(0.1, color="gray", linestyle=":", label="chance")
    ax.set_ylabel("test accuracy")
    ax.legend()
fig.tight_layout()
plt.show()

# %%
assert sweep["heads"][0][0] == sweep["FFN neurons"][0][0] == dense_acc
assert sweep["heads"][2][1] > sweep["FFN neurons"][2][1]     # half the heads: fewer parameters than half the FFN
assert sweep["heads"][-1][0] < dense_acc - 0.1               # 3 of 4 heads per layer gone, no fine-tuning: it hurts
assert sweep["FFN neurons"][2][0] > sweep["heads"][2][0] + 0.1  # half the FFN neurons gone costs far less

# %% [markdown]
# Without fine-tuning, removing heads costs accuracy quickly: each head is a quarter of its layer's
# attention and a whole attention pattern, and the layers after it were trained on its output. Half of
# each layer's FFN neurons go at almost no cost: this FFN (128 neurons for 32 channels) is far wider than
# the 8 × 8 digits need, and many of its neurons have small weights. The right panel shows the same per
# parameter: half of the heads is 2 × 1,048 parameters per layer, half of the FFN 64 × 65, and still the
# heads cost more. (The printed numbers are one seed and one trained model; the order of the curves is
# what the asserts check.)
#
# ## 5 · The whole loop in a `Trainer`
#
# Now prune the trained ViT while fine-tuning it: one callback, `granularity="neuron"`, Taylor scores
# (`Taylor(batches=16)`: |w · ∂L/∂w| with the gradients of 16 training batches, averaged over a unit's
# weights: the importance Michel et al. 2019 used for heads; the loss is the one our `training_step`
# returns, run by the callback on those batches, so a model with dict batches or its own loss needs
# nothing more), half of every group's units removed
# (`ranking=PerLayer()`: 2 of 4 heads and 64 of 128 FFN neurons per layer) in two cycles of 30 % of what
# is left, one fine-tuning epoch each (`Geometric(target=0.5, per_cycle=0.3, finetune_epochs=1)`), then
# two more epochs. The `LightningModule` is unchanged: the callback finds the heads, prunes them,
# updates the head counts and carries AdamW's state over to the smaller tensors.

# %%
# NBVAL_IGNORE_OUTPUT
pruned = copy.deepcopy(dense).train()
callback = Pruning(schedule=Geometric(target=0.5, per_cycle=0.3, finetune_epochs=1), criterion=Taylor(batches=16),
                   granularity="neuron", ranking=PerLayer(), verbose=False)
with warnings.catch_warnings(record=True) as caught:  # the callback warns about every refused layer
    warnings.simplefilter("always")
    quiet_trainer(len(callback.fractions) + 2, [callback]).fit(pruned, datamodule)
refusals = [str(w.message) for w in caught if str(w.message).startswith("Pruning: the neurons of layer")]
config_notes = [str(w.message) for w in caught if "cannot describe the pruned widths" in str(w.message)]
print(f"{len(refusals)} refusal warnings from the callback, the first: {refusals[0]}")
print(f"and once: {config_notes[0][:200]}...")
pruned_acc = accuracy(pruned, x_test, y_test)
for row in callback.history:
    print(f"cycle {row['cycle']}: {row['sparsity']:.2f} of the units pruned, {int(row['params']):,} parameters")

# %%
x_batch = x_test[:256]
times = {}
for name, model in (("dense", dense), ("pruned", pruned)):
    timer = benchmark.Timer("with torch.no_grad(): model(x)", globals={"model": model.eval(), "x": x_batch, "torch": torch},
                            num_threads=1)
    times[name] = timer.blocked_autorange(min_run_time=0.5).median * 1000
print(f"{'model':7s} {'params':>7s} {'test acc':>8s}  heads/layer  FFN/layer")
for name, model in (("dense", dense), ("pruned", pruned)):
    heads, ffn = heads_and_ffn(model)
    print(f"{name:7s} {count_parameters(model)[1]:>7,} {accuracy(model, x_test, y_test):>8.4f}  {heads}       {ffn}")

# %%
# NBVAL_IGNORE_OUTPUT
print(f"CPU, 1 thread, batch of 256: dense {times['dense']:.2f} ms, pruned {times['pruned']:.2f} ms "
      f"({times['dense'] / times['pruned']:.2f}× faster)")

# %%
assert len(callback.history) == 2 and len(refusals) == 5
assert heads_and_ffn(pruned) == ([2, 2], [64, 64])
assert pruned.vit.config.num_attention_heads == 4 and len(config_notes) == 1  # a ViT config cannot say "2 heads of 8"
assert pruned_acc > dense_acc - 0.05, (pruned_acc, dense_acc)

# %% [markdown]
# Every layer keeps 2 heads and 64 FFN neurons, the attention modules report `num_attention_heads = 2`,
# and after a few epochs of fine-tuning the test accuracy is back near the dense model's (the printed
# table; the assert allows 5 points, one point is 3–4 test images). The residual stream keeps its 32
# channels, so the embedding, the LayerNorms and the classifier are unchanged, and the parameter cut is
# less than half.
#
# The printed latency of such a tiny model is noisy and changes from run to run: with 17 tokens of 32
# channels much of the time goes into per-operator costs that do not shrink with the number of heads
# (LayerNorm, softmax, reshapes, Hugging Face's own bookkeeping). `experiments/transformer_pruning.py`
# measures a larger ViT (hidden size 64, 4 layers, FFN 256) on 28 × 28 real MNIST images, over 3 seeds,
# with a real latency cut. Its committed result:

# %%
from lightning_prune.teaching import committed_result

vit_runs = committed_result("experiments/results/transformer_pruning.json")
print(f"{'seed':>4} {'test acc dense → pruned':>24} {'parameters':>20} {'heads':>13} {'latency ms dense → pruned':>27}")
for row in vit_runs["rows"]:
    dense_row, pruned_row = row["dense"], row["pruned"]
    print(f"{row['seed']:>4} {dense_row['test_acc']:>10.3f} → {pruned_row['test_acc']:.3f} "
          f"{dense_row['params']:>9,} → {pruned_row['params']:,} {str(pruned_row['heads']):>13} "
          f"{dense_row['latency_ms']['median']:>12.1f} → {pruned_row['latency_ms']['median']:.1f}")
speedups = [row["dense"]["latency_ms"]["median"] / row["pruned"]["latency_ms"]["median"] for row in vit_runs["rows"]]
assert all(s > 1.5 for s in speedups), speedups  # the half-width ViT is really faster, measured side by side
assert all(row["pruned"]["test_acc"] > row["dense"]["test_acc"] - 0.03 for row in vit_runs["rows"])

# %% [markdown]
# Half the heads and half the FFN width, 1.7× faster on one CPU thread at batch 256 (dense and pruned
# timed side by side on a shared machine, so the absolute milliseconds vary between seeds but the
# ratio does not), and no loss in test accuracy at the same number of epochs.
#
# ## Summary
#
# - A transformer layer has three kinds of units: **attention heads** (q/k/v rows and `o_proj` columns,
#   one unit with one score), **FFN neurons** (an `fc1` row and an `fc2` column) and the **residual
#   stream** channels that every block and every LayerNorm shares.
# - Masking a head equals removing it (checked to 1e-5), and the attention module's `num_attention_heads`
#   follows the removal.
# - A zeroed channel still enters LayerNorm's mean and variance, so masking a residual channel is not
#   removing it. The library refuses those channels (naming the LayerNorm) and prunes heads and FFN
#   neurons only.
# - PyTorch's own `nn.MultiheadAttention` (torchvision's ViT, `nn.TransformerEncoder`) keeps q, k and v
#   in one parameter, so its heads are not units until `lightning_prune.split_attention(model)` gives it
#   separate q/k/v layers (same outputs).
# - `Pruning(criterion=Taylor(), granularity="neuron", ranking=PerLayer())` prunes a Hugging Face model
#   inside a `Trainer` with nothing added to the `LightningModule` but a `forward` that returns the
#   logits and an `example_input_array`.
#
# ## Exercises
#
# 1. Use `ranking="global"` in section 5. Which units go first, heads or FFN neurons? Why does a global
#    ranking that counts *units* treat a head (1,048 parameters) and an FFN neuron (65) alike, and what
#    changes with the schedule's `budget="params"` (`Geometric(..., budget="params")`)?
# 2. In section 3, zero the channel with the *largest* mean |activation| instead. Is the gap larger or
#    smaller? What happens to the per-token mean and variance?
# 3. Repeat section 4 with `Magnitude(1)`, and with scores averaged only over `v_proj`'s rows. Do the same
#    heads go?
# 4. Give `ViTConfig` 8 heads of size 4 instead of 4 of size 8 (same hidden size). How many parameters does a
#    head own now, and how does the one-shot heads curve change?
# 5. Replace the ViT with `BertForSequenceClassification` on a toy token task (the `hf_bert_classifier` model
#    of `tests/zoo.py`). Print its groups and refused layers as in section 1: where are the heads, the FFN
#    neurons and the residual stream, and what happens to the pooler?
