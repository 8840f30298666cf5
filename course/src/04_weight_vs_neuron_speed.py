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
# # 4 · Weight pruning vs neuron pruning in practice
#
# **Lecture concept:** weight pruning vs neuron pruning (权重剪枝 vs 神经元剪枝) in practice. Weight
# pruning removes the most parameters for the least accuracy, but it leaves *irregular* sparsity
# (不规则稀疏): the matrices keep their shapes, and the zeros sit wherever the small weights happened to
# be. The lecture shows the figure from Wen et al. 2016 ("Learning Structured Sparsity in Deep Neural
# Networks") for AlexNet: even at more than 95 % sparsity, unstructured sparsity gives very limited
# speed-ups (加速), and on some layers it is *slower* than dense, while structured sparsity gave about
# 5.1× on the CPU. Dense hardware and libraries are built for dense matrices.
#
# **Learning goals**
#
# - Measure, on one CPU thread, how the latency of an MLP changes with sparsity for three versions of
#   the same network: dense with zeroed weights (`apply_masks`), sparse CSR matrices
#   (`torch.sparse.addmm`), and the compact network with the same fraction of neurons removed
#   (`NeuronStructure.remove_units`).
# - Relate the measured speed-up to the multiply-accumulate count (`count_macs`): zeros in a dense
#   matrix are still multiplied; a sparse kernel pays for its irregular memory access; a narrower
#   network is just a smaller dense problem.
# - See that the widths left after removal matter: multiples of 8 or 16 units run faster per MAC.
# - Know why the same holds on GPUs, and which weight pattern hardware does support: 2:4 (N:M)
#   semi-structured sparsity. Prune to it (`granularity=NM(2, 4)`), export it (`to_semi_structured`),
#   and see that on a CPU it is no faster.
#
# Runs in about 35 s on 2 CPU cores.

# %%
import copy
import statistics
import time
import warnings

import matplotlib.pyplot as plt
import torch

from lightning_prune import Magnitude, NeuronStructure, apply_masks
from lightning_prune.counting import count_macs, count_parameters
from lightning_prune.criteria import score_layers
from lightning_prune.layers import find_prunable_layers
from lightning_prune.models import LeNet300100
from lightning_prune.ranking import select_units

# %matplotlib inline
torch.set_num_threads(1)  # one thread: on a shared 2-core machine two threads wait for each other
torch.manual_seed(0)
warnings.filterwarnings("ignore", ".*Sparse CSR tensor support is in beta.*")

# %% [markdown]
# ## The network
#
# Speed does not depend on what the weights have learned, so a randomly initialised MLP will do. We take
# one large enough that the matrix products dominate the time: 1024 inputs, two hidden layers of 2048
# neurons, 10 outputs, and a batch of 256 inputs.

# %%
BATCH = 256
SPARSITIES = (0.0, 0.5, 0.8, 0.9, 0.95)
dense = LeNet300100(in_features=1024, hidden=(2048, 2048)).eval()
x = torch.randn(BATCH, 1024)
layers = find_prunable_layers(dense, x)
hidden = [layer for layer in layers if not layer.is_output]
print(dense)
print("parameters:", f"{count_parameters(dense)[1]:,}")
print("MACs per example:", f"{int(count_macs(dense, x)['']):,}")


# %% [markdown]
# ## Three versions of each sparsity
#
# For every sparsity `s`:
#
# - **masked**: the fraction `s` of the weights of every layer with the smallest magnitude set to zero
#   (`Magnitude(1)` scores, `select_units(..., scope="layer")`, `apply_masks`). Same shapes, same kernels.
# - **CSR**: the masked weights stored as sparse CSR matrices (`W.to_sparse_csr()`; only the non-zeros
#   and their column indices) and multiplied with `torch.sparse.addmm(b, W, h)`. The activations are kept
#   transposed (features × batch) so that every layer is one sparse × dense product.
# - **compact**: the fraction `s` of the *neurons* of each hidden layer removed (the ones with the
#   smallest L2 norm of incoming weights), with `NeuronStructure(...).remove_units`: genuinely smaller
#   `nn.Linear` layers.
#
# CSR at 0 % sparsity would just be a slow copy of the dense network, so it starts at 50 %.

# %%
def weight_pruned(s):
    """A copy of the dense MLP with the fraction `s` of each layer's weights zeroed (by magnitude)."""
    model = copy.deepcopy(dense)
    model_layers = find_prunable_layers(model, x)
    scores = score_layers(Magnitude(1), model_layers, "weight", 0)
    keep = select_units(scores, {n: torch.ones_like(v, dtype=torch.bool) for n, v in scores.items()}, s,
                        scope="layer", min_keep=0.0)
    apply_masks(model, {layer.weight_name: keep[layer.name].reshape(layer.weight.shape) for layer in model_layers})
    return model


def as_csr(model):
    """The model's (weight, bias) pairs with the weights as sparse CSR matrices."""
    linears = [layer.module for layer in find_prunable_layers(model, x)]
    return [(m.weight.detach().to_sparse_csr(), m.bias.detach()[:, None]) for m in linears]


def csr_forward(csr_layers, inputs):
    """Run the MLP on CSR weights: h = ReLU(W h + b) with h kept as features × batch."""
    h = inputs.flatten(1).t().contiguous()
    for i, (weight, bias) in enumerate(csr_layers):
        h = torch.sparse.addmm(bias, weight, h)
        if i < len(csr_layers) - 1:
            h = torch.relu(h)
    return h.t()


def neuron_pruned(s):
    """A compact copy of the dense MLP with the fraction `s` of each hidden layer's neurons removed."""
    model = copy.deepcopy(dense)
    model_hidden = [layer for layer in find_prunable_layers(model, x) if not layer.is_output]
    structure = NeuronStructure(model, x, find_prunable_layers(model, x))
    scores = structure.group_scores(score_layers(Magnitude(2), model_hidden, "neuron", 0))
    keep = select_units(scores, {n: torch.ones_like(v, dtype=torch.bool) for n, v in scores.items()}, s,
                        scope="layer", min_keep=0.0)
    structure.remove_units(model, keep)
    return model


variants = {"dense": lambda: dense(x)}
macs = {"dense": count_macs(dense, x)[""]}
masked_models, csr_models, compact_models = {}, {}, {}
for s in SPARSITIES[1:]:
    masked_models[s] = weight_pruned(s)
    csr_models[s] = as_csr(masked_models[s])
    compact_models[s] = neuron_pruned(s).eval()
    variants[f"masked {s:.0%}"] = lambda m=masked_models[s]: m(x)
    variants[f"csr {s:.0%}"] = lambda c=csr_models[s]: csr_forward(c, x)
    variants[f"compact {s:.0%}"] = lambda m=compact_models[s]: m(x)

with torch.no_grad():
    print(f"{'sparsity':>8} {'zeros in masked':>16} {'CSR non-zeros':>14} {'compact widths':>15} "
          f"{'MACs/ex dense-shaped':>21} {'MACs/ex compact':>16}")
    for s in SPARSITIES[1:]:
        kept, total = count_parameters(masked_models[s])
        nnz = sum(w._nnz() for w, _ in csr_models[s])
        widths = [layer.num_units for layer in find_prunable_layers(compact_models[s], x)][:-1]
        macs[f"compact {s:.0%}"] = count_macs(compact_models[s], x)[""]
        zeros = sum(int((layer.weight == 0).sum()) for layer in find_prunable_layers(masked_models[s], x))
        print(f"{s:>8.0%} {zeros:>16,} {nnz:>14,} {str(widths):>15} "
              f"{int(count_macs(masked_models[s], x)['']):>21,} {int(macs[f'compact {s:.0%}']):>16,}")
        # every version computes the same function as the masked model (CSR) or is a narrower network (compact)
        assert torch.allclose(csr_forward(csr_models[s], x), masked_models[s](x), atol=1e-4)
        assert compact_models[s](x).shape == (BATCH, 10)

# %% [markdown]
# `count_macs` counts what the kernel *does*: the masked model still performs all 6.3 M dense
# multiply-accumulates per example, whatever the sparsity; only the CSR kernel and the compact network
# skip work. Removing a fraction `s` of the neurons removes more than a fraction `s` of the MACs: the
# 2048 × 2048 middle matrix loses rows *and* columns, so at 90 % of the neurons it keeps only 1 % of
# its entries.
#
# ## Timing
#
# Each call is timed with `time.perf_counter`; the versions are interleaved in a random order in each of
# several repeats, and we keep the median, so that a burst of load on the shared machine hits all
# versions alike. These numbers vary from run to run; the ratios are what matters.

# %%
# NBVAL_IGNORE_OUTPUT
REPEATS = 7
times = {name: [] for name in variants}
generator = torch.Generator().manual_seed(0)
with torch.no_grad():
    for fn in variants.values():  # one untimed warm-up call each
        fn()
    for _ in range(REPEATS):
        for i in torch.randperm(len(variants), generator=generator).tolist():
            name, fn = list(variants.items())[i]
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
median_ms = {name: 1000 * statistics.median(t) for name, t in times.items()}
print(f"{'sparsity':>8} {'masked ms':>10} {'CSR ms':>10} {'compact ms':>11}   (dense: {median_ms['dense']:.1f} ms)")
for s in SPARSITIES[1:]:
    row = [median_ms[f"{kind} {s:.0%}"] for kind in ("masked", "csr", "compact")]
    print(f"{s:>8.0%} {row[0]:>10.1f} {row[1]:>10.1f} {row[2]:>11.2f}")
print("speed-up vs dense:")
for s in SPARSITIES[1:]:
    ups = [median_ms["dense"] / median_ms[f"{kind} {s:.0%}"] for kind in ("masked", "csr", "compact")]
    print(f"{s:>8.0%} {ups[0]:>9.2f}× {ups[1]:>9.2f}× {ups[2]:>10.1f}×"
          f"   (MAC reduction of compact: {macs['dense'] / macs[f'compact {s:.0%}']:.1f}×)")

# %%
fig, ax = plt.subplots(figsize=(6.5, 4))
percent = [100 * s for s in SPARSITIES]
ax.plot(percent, [median_ms["dense"]] + [median_ms[f"masked {s:.0%}"] for s in SPARSITIES[1:]], "o-",
        label="weight pruning, masked dense")
ax.plot(percent[1:], [median_ms[f"csr {s:.0%}"] for s in SPARSITIES[1:]], "s-", label="weight pruning, sparse CSR")
ax.plot(percent, [median_ms["dense"]] + [median_ms[f"compact {s:.0%}"] for s in SPARSITIES[1:]], "^-",
        label="neuron pruning, compact")
ax.axhline(median_ms["dense"], color="grey", ls=":", lw=1)
ax.set_yscale("log")
ax.set_xlabel("sparsity: % of weights (masked, CSR) or of hidden neurons (compact) removed")
ax.set_ylabel(f"median latency, batch {BATCH} (ms, log)")
ax.legend()
fig.tight_layout()
plt.show()

# %% [markdown]
# The checks below are deliberately loose (the machine is shared and noisy); the printed table has the
# actual numbers.

# %%
speedup = {name: median_ms["dense"] / ms for name, ms in median_ms.items()}
assert speedup["compact 90%"] > 2, speedup      # a narrower network really is faster
assert speedup["masked 90%"] < 1.5, speedup     # zeros in a dense matrix are still multiplied
assert speedup["masked 95%"] < 1.5, speedup
assert speedup["compact 90%"] > 2 * speedup["csr 90%"], speedup  # structure beats a sparse kernel at equal sparsity
assert speedup["csr 50%"] < 1, speedup          # at moderate sparsity the sparse format only costs

# %% [markdown]
# What the table shows (see the printed numbers of this run):
#
# - **Masked dense** takes the same time as dense at every sparsity: `torch.matmul` does not look at
#   the values, and multiplying by zero costs as much as multiplying by anything else.
# - **CSR** is *slower* than dense at moderate sparsity, and only pays off at high sparsity: every
#   non-zero carries an index, the reads of the dense operand jump around, and the sparse kernel is far
#   less optimised than dense GEMM. Even at 95 % it gains much less than the 20× fewer MACs it does,
#   just as in Wen et al.'s AlexNet figure.
# - **Compact** gets faster roughly in step with its MAC count, and is faster than the CSR network at
#   every sparsity, because it is an ordinary dense network, only narrower. At the highest sparsities
#   it falls somewhat behind its MAC reduction: the layers become so small that fixed costs per call
#   (launching the kernels, the ReLUs, the bias additions) start to count.
#
# ## Widths the hardware likes
#
# Why does compact fall behind its MAC count? Part of it is the fixed cost per call, and part is the
# *width* itself. A CPU's matrix-multiply kernel computes 8 (AVX2) or 16 (AVX-512) output columns at
# once: a layer of 60 units costs about as much as one of 64, and one of 33 about as much as 48.
# Let us see it on the classic LeNet-300-100 (784 inputs, as for MNIST) with 80 % of its hidden
# neurons removed: the plain choice keeps 60 and 20 units; `round_kept(..., 16)` (what
# `Pruning(granularity=Neurons(round_to=16))` does at every step) puts back the best-scored of the
# just-removed units until each layer's width is a multiple of 16: 64 and 32.

# %%
from lightning_prune.ranking import round_kept

lenet = LeNet300100(in_features=784).eval()
x_mnist = torch.randn(BATCH, 784)


def lenet_without(fraction, multiple=None):
    """A compact LeNet-300-100 with `fraction` of each hidden layer's neurons removed (widths rounded up)."""
    model = copy.deepcopy(lenet)
    structure = NeuronStructure(model, x_mnist, find_prunable_layers(model, x_mnist))
    model_hidden = [layer for layer in find_prunable_layers(model, x_mnist) if not layer.is_output]
    scores = structure.group_scores(score_layers(Magnitude(2), model_hidden, "neuron", 0))
    everything = {n: torch.ones_like(v, dtype=torch.bool) for n, v in scores.items()}
    keep = select_units(scores, everything, fraction, scope="layer", min_keep=0.0)
    if multiple:
        keep = round_kept(scores, everything, keep, multiple)
    structure.remove_units(model, keep)
    return model.eval()


lenets = {"dense 300/100": lenet, "plain": lenet_without(0.8), "rounded to 16": lenet_without(0.8, 16)}
lenet_macs = {name: count_macs(m, x_mnist)[""] for name, m in lenets.items()}
for name, m in lenets.items():
    widths = [layer.num_units for layer in find_prunable_layers(m, x_mnist)][:-1]
    print(f"{name:>14}: widths {widths}, MACs/example {int(lenet_macs[name]):,}")
widths_rounded = [layer.num_units for layer in find_prunable_layers(lenets["rounded to 16"], x_mnist)][:-1]
assert all(w % 16 == 0 for w in widths_rounded), widths_rounded

# %%
# NBVAL_IGNORE_OUTPUT
def block_ms(model, calls=20):
    start = time.perf_counter()
    for _ in range(calls):
        model(x_mnist)
    return 1000 * (time.perf_counter() - start) / calls


lenet_times = {name: [] for name in lenets}
with torch.no_grad():
    for m in lenets.values():
        block_ms(m, 3)  # warm-up
    for _ in range(15):
        for i in torch.randperm(len(lenets), generator=generator).tolist():
            name = list(lenets)[i]
            lenet_times[name].append(block_ms(lenets[name]))
lenet_ms = {name: statistics.median(t) for name, t in lenet_times.items()}
efficiency = {}
for name in ("plain", "rounded to 16"):
    mac_cut = lenet_macs["dense 300/100"] / lenet_macs[name]
    speed = lenet_ms["dense 300/100"] / lenet_ms[name]
    efficiency[name] = speed / mac_cut
    print(f"{name:>14}: {lenet_ms[name]:.3f} ms (dense {lenet_ms['dense 300/100']:.3f}), {mac_cut:.2f}× fewer MACs, "
          f"{speed:.2f}× faster: speed-up ÷ MAC cut = {efficiency[name]:.2f}")

# %%
assert efficiency["rounded to 16"] > efficiency["plain"], efficiency  # aligned widths use the MACs better

# %% [markdown]
# The rounded network does *more* multiply-accumulates, yet it is about as fast or faster, and its
# speed-up follows its MAC cut much more closely. One run on a loaded machine says little, so here is
# the repository's benchmark of the same thing (`benchmarks/width_alignment.py`, run by the command
# printed below): LeNet-300-100 at MNIST size, batch 256, one CPU thread of a 2-core machine, 9
# interleaved repeats, for four fractions of units kept, plain and rounded up to multiples of 8 and 16.
# Its machine was loaded during the run (see `benchmarks/results/RESULTS.md`), so the ratios may be
# pessimistic; read the min–max ranges.

# %%
from lightning_prune.teaching import committed_figure, committed_result

alignment = committed_result("benchmarks/results/width_alignment.json")
variants = alignment["results"]["variants"]
print(f"{'kept':>5} {'round_to':>8} {'widths':>8} {'MAC cut':>8} {'speed-up [min-max]':>20} {'speed-up ÷ MAC cut':>19}")
for v in variants.values():
    if "same_as" in v:
        continue  # rounding to 16 gave the same widths as rounding to 8
    speedup = v["speedup"]
    print(f"{v['keep_fraction']:>5.0%} {str(v['round_to'] or '—'):>8} {'/'.join(map(str, v['widths'])):>8} "
          f"{v['mac_cut']:>7.2f}× {speedup['median']:>6.2f}× [{speedup['min']:.2f}–{speedup['max']:.2f}] "
          f"{v['speedup_over_mac_cut']:>19.2f}")
committed_figure("benchmarks/results/width_alignment.png")

# %%
for kept in (10, 20, 30, 50):  # at every fraction, rounded widths use the MACs better than plain ones
    plain = variants[f"keep_{kept}_round_1"]["speedup_over_mac_cut"]
    assert variants[f"keep_{kept}_round_8"]["speedup_over_mac_cut"] > plain, kept
    assert variants[f"keep_{kept}_round_16"]["speedup_over_mac_cut"] > plain, kept

# %% [markdown]
# At every fraction the rounded widths turn more of the MAC cut into speed: at 20 % kept, 0.74 of the
# MAC cut at widths 60/20 against 0.90 at 64/32. When you prune for speed, round the widths to what the
# hardware computes in one go: `Neurons(round_to=8)` or `16` on CPUs, multiples of 8 (fp16) or more on
# GPU tensor cores.
#
# ## And on a GPU?
#
# GPUs are even more dense hardware than CPUs: thousands of lanes doing the same multiply on regular
# tiles of a matrix. Irregular sparsity breaks those tiles, so a sparse library (cuSPARSE) typically
# beats dense cuBLAS only at very high sparsity (often quoted as well above 90–95 %), and the masked
# model is exactly as slow as the dense one. What GPUs do accelerate is *structured* sparsity: removed
# neurons or channels (a smaller dense problem, as above), and since NVIDIA Ampere (A100) the **2:4
# (N:M) pattern**, at most 2 non-zeros in every 4 consecutive weights, which the sparse tensor cores
# run at up to 2× the dense throughput (NVIDIA's figure; not measured here, see below).
#
# This notebook runs on a CPU. The repository has one GPU measurement, from a lent machine with an
# **NVIDIA H200** (`benchmarks/inference.py`, command below): the masked, CSR and compact versions of
# an MLP 1024-4096-4096 and of LeNet-300-100 (784 inputs), all with 90 % of the weights zeroed or 10×
# fewer MACs, at batch 256. Its CPU rows used all 16 cores of that machine, not one thread as above.

# %%
gpu = committed_result("benchmarks/results/inference_gpu_machine.json")
gpu_speedup = {}
print(f"{'model':>19} {'device':>6} {'masked':>7} {'CSR':>7} {'compact':>8}  (speed-up vs dense at batch 256; "
      "10× fewer effective MACs)")
for model in ("mlp_1024_4096_4096", "lenet_300_100"):
    for device in ("cpu", "cuda"):
        run = next(r for r in gpu["results"][model][device]["inference"] if r["batch"] == 256)["variants"]
        gpu_speedup[model, device] = {name: run[name]["speedup_median"] for name in ("masked", "csr", "compact_ours")}
        print(f"{model:>19} {device:>6} " + " ".join(f"{s:>7.2f}×" for s in gpu_speedup[model, device].values()))

# %%
mlp_gpu = gpu_speedup["mlp_1024_4096_4096", "cuda"]
assert 0.9 < mlp_gpu["masked"] < 1.1, mlp_gpu  # zeros in a dense matrix: no faster on the GPU either
assert mlp_gpu["csr"] < 1, mlp_gpu             # cuSPARSE at 90 % sparsity: slower than dense cuBLAS
assert mlp_gpu["compact_ours"] > 2, mlp_gpu     # removed neurons: a smaller dense problem, faster
assert gpu_speedup["lenet_300_100", "cuda"]["compact_ours"] < 1.5  # but LeNet is too small to gain on a GPU

# %% [markdown]
# On the H200 the masked MLP is exactly as fast as the dense one, CSR at 90 % sparsity is about 7×
# *slower* than dense, and the compact MLP is about 3.7× faster: structured pruning pays on a GPU too,
# though less of the 10× MAC cut arrives than on the CPU, because a GPU is not kept busy by the small
# matrices that are left. LeNet-300-100 is so small that on the GPU every version takes the same time:
# the cost of launching the kernels, not the arithmetic, sets it.
#
# ## 2:4 semi-structured sparsity (半结构化稀疏): the weight pattern GPUs accelerate
#
# Between irregular weights and whole neurons lies **N:M semi-structured sparsity**: at most N
# non-zeros in every group of M consecutive input weights of a row. The zeros are still wherever the
# small weights were *within* a group, but every group has the same amount of work, which is regular
# enough for hardware. NVIDIA's sparse tensor cores (Ampere and newer) run **2:4**: they store only the
# 2 kept values of every 4, plus a 2-bit position for each, and skip the other two multiplications.
# The sparsity is fixed at 50 %, far less than weight pruning reaches, but on the right GPU it is
# faster.
#
# The library prunes to this pattern with `granularity=NM(2, 4)`: at each prune it keeps the
# best-scored weights of every group of 4 (here by magnitude, the default criterion), following the
# schedule. `Geometric(target=0.5, per_cycle=0.3)` keeps 3 of every 4, then 2 of every 4 (the target
# must be 1 − 2/4 = 0.5). A LeNet-300-100 on the 8×8 digits, with 4 epochs of warm-up and 2 of
# fine-tuning after each prune. For comparison, the dense network is trained for the same 8 epochs.

# %%
# NBVAL_IGNORE_OUTPUT
import lightning as L
import torch.utils.benchmark as benchmark

from lightning_prune import NM, Geometric, Pruning, to_semi_structured
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier
from lightning_prune.semi_structured import NMLinear, select_nm
from lightning_prune.teaching import accuracy, quiet_setup, quiet_trainer

quiet_setup(0)
digits = DigitsDataModule(batch_size=64, seed=0)
digits.setup("fit")
x_digits = torch.cat([xb for xb, _ in digits.test_dataloader()])
y_digits = torch.cat([yb for _, yb in digits.test_dataloader()])

two_four = Pruning(Geometric(target=0.5, per_cycle=0.3, warmup_epochs=4, finetune_epochs=2), granularity=NM(2, 4),
                   verbose=False)
sparse_net = Classifier("lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
quiet_trainer(two_four.timeline.epochs_needed, [two_four]).fit(sparse_net, digits)
L.seed_everything(0, verbose=False)
dense_net = Classifier("lenet_300_100", lr=3e-3, input_shape=(1, 8, 8))
quiet_trainer(two_four.timeline.epochs_needed).fit(dense_net, digits)
sparse_acc, dense_acc = accuracy(sparse_net, x_digits, y_digits), accuracy(dense_net, x_digits, y_digits)
print(f"test accuracy after {two_four.timeline.epochs_needed} epochs: 2:4-pruned {sparse_acc:.4f}, dense {dense_acc:.4f}")

# %% [markdown]
# The pattern: the first row of the first layer (its 64 input weights, in 16 groups of 4; 1 = kept),
# and the non-zeros per group in every layer.

# %%
first_row = sparse_net.model.features[0].weight.detach()[0]
print("features.0, row 0:", " ".join("".join(str(int(v)) for v in group) for group in (first_row != 0).reshape(-1, 4)))
for name, module in sparse_net.model.named_modules():
    if isinstance(module, torch.nn.Linear):
        per_group = (module.weight.detach() != 0).reshape(module.out_features, -1, 4).sum(-1)
        print(f"{name:11s} {str(tuple(module.weight.shape)):10s}: non-zeros per group of 4 from {int(per_group.min())} "
              f"to {int(per_group.max())}; {float((module.weight == 0).float().mean()):.0%} of the weights are zero")
        assert int(per_group.max()) <= 2, name
assert sparse_acc > dense_acc - 0.05, (sparse_acc, dense_acc)

# %% [markdown]
# **Export.** The masked model still stores every zero. `to_semi_structured(model)` replaces each
# `Linear` whose weight is 2:4 in place. On CUDA in half precision, the weight becomes a
# `torch.sparse.to_sparse_semi_structured` tensor, which the sparse tensor cores multiply. Elsewhere
# (here) the layer becomes an `NMLinear`: the kept values and one byte of position per value. This is
# the reference form, which rebuilds the dense weight at every call. It must compute exactly what the
# masked model does:

# %%
exported = copy.deepcopy(sparse_net.model).eval()
print(to_semi_structured(exported))
kept_values = sum(module.values.numel() for module in exported.modules() if isinstance(module, NMLinear))
all_weights = sum(module.weight.numel() for module in sparse_net.model.modules() if isinstance(module, torch.nn.Linear))
print(f"weights stored: {all_weights:,} dense → {kept_values:,} values + {kept_values:,} one-byte positions")
with torch.no_grad():
    difference = (exported(x_digits) - sparse_net.model.eval()(x_digits)).abs().max().item()
print(f"largest difference between the exported and the masked model's outputs: {difference:.1e}")
assert difference < 1e-5, difference

# %% [markdown]
# **Timing on the CPU.** LeNet-300-100 on the digits is too small to time. Fixed costs per call would
# dominate. So take one `Linear` layer of 1024 → 1024 at batch 256 (like the layers above, and the
# smallest size of `python -m benchmarks.semi_structured`): dense, the same layer with a 2:4 mask
# (`select_nm` keeps the 2 largest weights of every 4), and that masked layer as an `NMLinear`. Each is
# timed with `torch.utils.benchmark.Timer`, 10 calls per measurement, interleaved in a random order
# over 5 repeats, median kept. The timings vary from run to run.

# %%
# NBVAL_IGNORE_OUTPUT
torch.manual_seed(0)
layer = torch.nn.Linear(1024, 1024).eval()
masked_layer = copy.deepcopy(layer)
weight_scores = {"w": masked_layer.weight.detach().abs()}
two_four_mask = select_nm(weight_scores, {"w": torch.ones_like(masked_layer.weight, dtype=torch.bool)}, 0.5, NM(2, 4))
with torch.no_grad():
    masked_layer.weight.mul_(two_four_mask["w"])
compressed_layer = NMLinear(masked_layer, 2, 4).eval()
x_layer = torch.randn(BATCH, 1024)
contenders = {"dense": layer, "masked 2:4": masked_layer, "NMLinear 2:4": compressed_layer}
layer_times = {name: [] for name in contenders}
with torch.inference_mode():
    assert torch.allclose(compressed_layer(x_layer), masked_layer(x_layer), atol=1e-5)
    for _ in range(5):
        for i in torch.randperm(len(contenders), generator=generator).tolist():
            name, module = list(contenders.items())[i]
            timer = benchmark.Timer("module(x)", globals={"module": module, "x": x_layer}, num_threads=1)
            layer_times[name].append(timer.timeit(10).median)
layer_ms = {name: 1000 * statistics.median(t) for name, t in layer_times.items()}
for name, ms in layer_ms.items():
    print(f"{name:13s}: {ms:6.2f} ms per call, speed-up vs dense {layer_ms['dense'] / ms:.2f}×")

# %%
assert layer_ms["dense"] / layer_ms["masked 2:4"] < 1.5, layer_ms    # the zeros are still multiplied
assert layer_ms["dense"] / layer_ms["NMLinear 2:4"] < 1.2, layer_ms  # and decompressing only adds work

# %% [markdown]
# On the CPU, 2:4 gains nothing. The masked layer takes about as long as the dense one, for the same
# reason as in the first section: the zeros are still multiplied. The `NMLinear` is slower, because it
# rebuilds the dense weight before every product. A CPU has no instruction that skips 2 of every 4
# multiplications, so a 2:4 matrix is just a dense matrix with zeros in it.
#
# The speed-up needs **sparse tensor cores**, on NVIDIA GPUs of the Ampere generation or newer. There,
# `to_semi_structured` stores each 2:4 weight in the compressed form those cores read. NVIDIA quotes
# up to twice the dense throughput. **This project has not measured that speed-up on a GPU.** The
# benchmark `python -m benchmarks.semi_structured` times dense vs 2:4 for one layer at several sizes.
# It runs the sparse-tensor-core version when a CUDA device is present; otherwise it says so in its
# report and times only the CPU versions shown here. Its committed report is of the second kind: it
# ran on a CPU-only machine, so it confirms the CPU result at larger sizes and has no GPU figure.

# %%
semi = committed_result("benchmarks/results/semi_structured.json")
for row in semi["results"]:
    print(f"{row['inputs']:>5} → {row['outputs']:<5} {row['dtype']}: speed-up vs dense, masked 2:4 "
          f"{row['speedup']['masked 2:4']['median']:.2f}×, NMLinear {row['speedup']['NMLinear']['median']:.2f}×")
assert not semi["cuda"]  # no sparse-tensor-core measurement in the repository: the GPU speed-up is unmeasured
assert all(row["speedup"]["masked 2:4"]["median"] < 1.2 for row in semi["results"])

# %% [markdown]
# ## Pruning to a latency budget (NetAdapt, HALP)
#
# A MAC count is a proxy for time, and the sections above show where it fails: zeros that are still
# multiplied, fixed costs per call, widths the hardware does not like. NetAdapt (Yang et al. 2018) and
# HALP (Shen et al. 2022) therefore prune against *measured* latency: a lookup table holds each layer's
# time at a range of widths, measured on the target device, and the pruner reads the table instead of
# counting MACs. `Latency(...)` does this for `lightning_prune`: `Pruner.measure_latency` times every
# prunable layer alone (`torch.utils.benchmark`) at `levels` widths per changing dimension, and takes
# the rest of the model (ReLUs, reshapes) as the dense model's measured time minus its layers' entries.

# %%
from lightning_prune import Latency, Pruner

budget = Latency(batch_size=BATCH, levels=4, min_run_time=0.02)
pruner = Pruner(copy.deepcopy(dense), x, Magnitude(2), granularity="neuron", ranking="layer")
table = pruner.measure_latency(budget)
for name, entry in table.entries.items():
    print(f"{name}: input widths {entry['inputs']}, output widths {entry['outputs']}")
    for width_in, row in zip(entry["inputs"], entry["seconds"]):
        print(f"   in {width_in:>4}: " + "  ".join(f"{1e3 * t:6.2f} ms" for t in row))
print(f"dense model: {1e3 * table.dense:.1f} ms; everything but the three layers: {1e3 * table.rest:.1f} ms")

# %%
middle = table.entries["features.2"]
dense_ms = 1e3 * middle["seconds"][-1][-1]
fig, ax = plt.subplots(figsize=(5.5, 3.6))
for width_in, row in zip(middle["inputs"], middle["seconds"]):
    fractions = [width_in * width_out / (middle["inputs"][-1] * middle["outputs"][-1]) for width_out in middle["outputs"]]
    ax.plot(fractions, [1e3 * t / dense_ms for t in row], "o-", label=f"{width_in} inputs")
ax.plot([0, 1], [0, 1], color="grey", ls=":", lw=1, label="time proportional to MACs")
ax.set_xlabel("MACs of the layer (fraction of dense)")
ax.set_ylabel("measured time (fraction of dense)")
ax.set_title("the 2048 x 2048 layer at the widths of the table")
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# Each line is one input width, each point one output width. A point above the dotted line is a layer
# that takes more time than its MACs say: the narrowest layers, whose fixed cost per call is a large
# part of their time. Now prune to half the dense *latency* and to half the dense *MACs*, each layer by
# the same fraction of its neurons, and measure both compact networks side by side with the dense one.
# The latency budget bisects the fraction of neurons until the table's prediction meets the target.

# %%
def compact_for(budget_kind):
    """A compact copy of the dense MLP pruned per layer to half of `budget_kind` ('latency' or 'macs')."""
    model = copy.deepcopy(dense)
    pruner = Pruner(model, x, Magnitude(2), granularity="neuron", ranking="layer")
    reference = {"latency": table} if budget_kind == "latency" else {"macs": count_macs(dense, x)[""]}
    keep = pruner.plan(pruner.dense_keep(), 0.5, 0, budget=budget if budget_kind == "latency" else "macs",
                       reference=reference)
    pruner.commit(keep)
    return model.eval(), 1.0 - table.removed(layer_widths(find_prunable_layers(model, x)))


from lightning_prune.latency import layer_widths, seconds  # noqa: E402

budgets = {kind: compact_for(kind) for kind in ("latency", "macs")}
ratios = {kind: [] for kind in budgets}
with torch.no_grad():
    for _ in range(5):  # interleaved repeats: a burst of load hits dense and compact alike
        dense_s = seconds(lambda: dense(x), 0.05)
        for kind, (model, _) in budgets.items():
            ratios[kind].append(seconds(lambda m=model: m(x), 0.05) / dense_s)
print(f"{'budget':>8} {'hidden widths':>14} {'MACs kept':>10} {'predicted time kept':>20} {'measured time kept':>19}")
for kind, (model, predicted) in budgets.items():
    widths = [layer.num_units for layer in find_prunable_layers(model, x)][:-1]
    print(f"{kind:>8} {str(widths):>14} {count_macs(model, x)[''] / macs['dense']:>10.3f} {predicted:>20.3f} "
          f"{statistics.median(ratios[kind]):>19.3f}")
assert budgets["latency"][1] <= 0.5 + 1e-9  # the bisection meets the budget by the table's prediction
assert statistics.median(ratios["latency"]) < 0.85  # and the compact network really is faster (loose: shared machine)

# %% [markdown]
# On this large MLP, time follows MACs closely (the middle layer dominates, and its time is almost
# proportional to its MACs), so the two budgets give similar networks. The difference grows where
# the MAC count misleads: small layers, convolutions on small images, memory-bound layers, or another
# device. In a fit the budget is one argument, and the table is measured once, on the dense model, on
# the device the fit runs on (rank 0 under DDP), and kept in the checkpoint so that a resumed run
# decides as the uninterrupted one would; when the fit ends, the compact model is timed and compared
# with the target:
#
# ```python
# Pruning(Geometric(target=0.5, per_cycle=0.35, warmup_epochs=6, budget=Latency(batch_size=256)),
#         granularity=Neurons(remove=True))
# ```
#
# A latency budget needs neuron removal: a masked network runs at dense speed, as the first section showed.
#
# Inside whole fits, the repository's experiment compares latency budgets with MAC budgets on two small
# models and judges every compact model by its measured time, side by side with a dense one:

# %%
latency_runs = committed_result("experiments/results/latency_budget.json")
print(f"{'model':>22} {'budget':>20} {'target':>6} {'test acc':>9} {'MACs kept':>9} {'predicted':>9} {'measured':>9}  (time kept)")
summary = {}
for setting, rows in latency_runs["runs"].items():
    for label, by_target in rows.items():
        for target, cells in by_target.items():
            done = [c for c in cells if "error" not in c]
            mean = {key: statistics.mean(c[key] for c in done) for key in ("test_acc", "macs_fraction", "measured_latency_fraction")}
            predicted = statistics.mean(c["predicted_latency_fraction"] for c in done) if label != "macs" else None
            summary[setting, label, target] = {**mean, "predicted": predicted, "accuracies": [c["test_acc"] for c in done],
                                               "macs": [c["macs_fraction"] for c in done]}
            print(f"{setting:>22} {label:>20} {target:>6} {mean['test_acc']:>9.3f} {mean['macs_fraction']:>9.3f} "
                  f"{'-' if predicted is None else f'{predicted:.3f}':>9} {mean['measured_latency_fraction']:>9.3f}")
committed_figure("experiments/results/latency_budget.png")

# %%
mlp = [v for (setting, label, _), v in summary.items() if setting.startswith("LeNet") and label == "latency"]
assert all(abs(v["predicted"] - v["measured_latency_fraction"]) < 0.15 for v in mlp)  # the MLP: the table predicts well
resnet = summary["ResNetSmall / digits", "latency", "0.4"]
assert max(resnet["macs"]) - min(resnet["macs"]) > 0.2  # the small ResNet: one target, very different networks per seed
assert min(summary["ResNetSmall / digits", "latency, per second", "0.2"]["accuracies"]) < 0.5  # per-second can empty a layer

# %% [markdown]
# What the committed run shows, honestly:
#
# - On the MLP, time follows MACs and the table's prediction is within a few points of the measured
#   time; a latency budget and a MAC budget give the same trade-off (all at about 93.5 % test accuracy).
# - On the small ResNet on 8 × 8 digits the layers are tiny: a layer's time hardly depends on its
#   width, the norms and additions around the convolutions take about half the time, and the timings of
#   a shared machine are noisy. The same latency target then gave very different networks from one seed
#   to the next (the MAC fractions above), and accuracy suffered where the table led to a thin network.
#   A MAC budget was the more reliable choice here. NetAdapt's and HALP's gains were measured on larger
#   networks on dedicated phones and GPUs, where a layer's time depends on its width.
# - `per_second=True` (HALP's importance per second saved) emptied a layer in one seed: with scores of
#   similar size, the greedy ratio sends all cuts to the layer that looks costliest per unit.

# %% [markdown]
# ## Summary
#
# - Weight pruning leaves the matrices' shapes intact: zeroed weights in a dense layer give no speed-up
#   at all, whatever the sparsity, while `count_macs` still counts every dense multiply-accumulate.
# - Sparse formats (CSR) can skip the zeros, but their irregular memory access makes them slower than
#   dense at moderate sparsity and much less effective than their MAC count suggests at high sparsity.
# - Neuron pruning gives a smaller *dense* network: it runs with the ordinary kernels and its speed-up
#   follows the MAC reduction. This is why the lecture recommends neuron (structured) pruning in
#   practice, even though weight pruning removes more parameters at the same accuracy.
# - On a GPU (the repository's one measurement, on an NVIDIA H200): the masked MLP is as slow as the
#   dense one, CSR at 90 % sparsity is slower, the compact MLP is about 3.7× faster; LeNet-300-100 is
#   too small to gain anything there.
# - A latency budget (`Latency(...)`, NetAdapt/HALP) prunes against a table of measured layer times
#   instead of the MAC count; the compact model's time is measured, not assumed.
# - The exception is 2:4 semi-structured sparsity (at most 2 non-zeros in every 4 consecutive input
#   weights; `granularity=NM(2, 4)`, exported with `to_semi_structured`). It costs little accuracy here;
#   NVIDIA quotes up to 2× on its sparse tensor cores (Ampere and newer). On a CPU the masked and the
#   exported layers are no faster than dense. This project has not measured the GPU speed-up.
#
# ## Exercises
#
# 1. Repeat the timing at batch 1 (`x = torch.randn(1, 1024)`; use `torch.mv` for the CSR product). Do
#    the ratios change? Why is a single example harder to speed up?
# 2. Use 2 threads (`torch.set_num_threads(2)`). Which version gains most from the second thread?
# 3. Find, by bisection over the sparsity, where CSR becomes faster than dense on this machine. Compare
#    with the >95 % of the lecture's AlexNet figure.
# 4. Remove neurons so that the compact network has the *same* MACs as the 90 % weight-pruned network
#    (10× fewer). What fraction of neurons is that, and how does its latency compare with the CSR
#    network's at 90 %?
# 5. Remove 90 % of LeNet-300-100's hidden neurons (widths 30/10) and compare with `round_kept(..., 8)`
#    and `round_kept(..., 16)`. Which widths does each give, and which is fastest per MAC? At such small
#    widths, what else limits the speed-up?
# 6. Prune the digits LeNet to 2:4 in one step (`OneShot(target=0.5, warmup_epochs=4, finetune_epochs=4)`)
#    instead of 3:4 and then 2:4. Does the accuracy change? Then try `NM(1, 4)` (target 0.75). How
#    much accuracy does the stricter pattern cost?
