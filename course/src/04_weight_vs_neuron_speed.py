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
# - Know why the same holds on GPUs, and which structured sparsity patterns (N:M) hardware does support.
#
# Runs in about 25 s on 2 CPU cores.

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
# speed-up follows its MAC cut much more closely (the repository's `benchmarks/results/width_alignment.md`
# measures this for several fractions: 0.74 of the MAC cut at widths 60/20, 0.91 at 64/32). When you
# prune for speed, round the widths to what the hardware computes in one go: `Neurons(round_to=8)` or
# `16` on CPUs, multiples of 8 (fp16) or more on GPU tensor cores.
#
# ## And on a GPU?
#
# GPUs are even more dense hardware than CPUs: thousands of lanes doing the same multiply on regular
# tiles of a matrix. Irregular sparsity breaks those tiles, so a sparse library (cuSPARSE) typically
# beats dense cuBLAS only at very high sparsity (often quoted as well above 90–95 %), and the masked
# model is, as here, exactly as slow as the dense one. What GPUs do accelerate is *structured*
# sparsity: removed neurons or channels (a smaller dense problem, as above), and since NVIDIA Ampere
# (A100) the **2:4 (N:M) pattern**, at most 2 non-zeros in every 4 consecutive weights, which the
# sparse tensor cores run at up to 2× the dense throughput. (The repository's
# `benchmarks/results/inference_gpu_machine.md` has measurements on a GPU machine.)
#
# ## Summary
#
# - Weight pruning leaves the matrices' shapes intact: zeroed weights in a dense layer give no speed-up
#   at all, whatever the sparsity, while `count_macs` still counts every dense multiply-accumulate.
# - Sparse formats (CSR) can skip the zeros, but their irregular memory access makes them slower than
#   dense at moderate sparsity and much less effective than their MAC count suggests at high sparsity.
# - Neuron pruning gives a smaller *dense* network: it runs with the ordinary kernels and its speed-up
#   follows the MAC reduction. This is why the lecture recommends neuron (structured) pruning in
#   practice, even though weight pruning removes more parameters at the same accuracy.
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
