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
# # 5 · The Lottery Ticket Hypothesis
#
# **Lecture concept:** the lottery ticket hypothesis (大乐透假设, 彩票假设; Frankle & Carbin, ICLR 2019).
# If a pruned network is as good as the big one, why not train the small network directly? In
# practice the small network, randomly initialised, is harder to train. The hypothesis explains why
# big networks train more easily: a big network contains very many sub-networks, each with its own
# random initialisation, and training a big network is like buying many lottery tickets: some
# sub-network is likely to be *lucky*, to have an initialisation that trains well. Pruning finds that
# sub-network, the **winning ticket** (中奖彩票). The test: take the mask found by pruning, put the
# surviving weights back to their *original* initial values (**rewinding**, 回溯), and train again.
#
# **Learning goals**
#
# - Run iterative magnitude pruning with rewinding to the initialisation,
#   `Pruning(lottery=Rewind("init"))`, inside a real `lightning.Trainer`, and see that rewinding really
#   restores the survivors' initial weights.
# - Compare the winning ticket with the paper's two controls: the same masks with a fresh random
#   initialisation (`Rewind("init", control=Reinit())`), and random masks with the same per-layer
#   sparsity (`Rewind("init", control=RandomMask())`).
# - Read one-seed results honestly against the paper and against the repository's 3-seed,
#   full-length experiment (`experiments/results/lottery_ticket.md`), shown at the end of this section,
#   and against the paper's own setting, LeNet-300-100 on real MNIST (`lottery_ticket_mnist.md`).
# - Deconstruct the ticket as Zhou et al. (2019) did: how good is the mask on the *untrained* initial
#   weights (a "supermask")? Do the signs of the initial weights matter, or their magnitudes?
#
# Runs in about 30 s on 2 CPU cores.

# %%
import copy

import lightning as L
import matplotlib.pyplot as plt
import torch
from lightning.pytorch.callbacks import Callback

from lightning_prune.teaching import accuracy, quiet_setup, quiet_trainer
from lightning_prune import Geometric, PerLayer, Pruning, RandomMask, Reinit, Rewind
from lightning_prune.data import DigitsDataModule
from lightning_prune.models import Classifier

# %matplotlib inline
quiet_setup(0)

datamodule = DigitsDataModule(batch_size=64, seed=0)
datamodule.setup("fit")
datamodule.setup("test")
x_test = torch.cat([xb for xb, _ in datamodule.test_dataloader()])
y_test = torch.cat([yb for _, yb in datamodule.test_dataloader()])

F = 10            # epochs per round: round 0 trains the dense model, each later round retrains a pruned one
PER_CYCLE = 0.4   # each round prunes 40 % of the remaining weights of every layer
ROUNDS = 5        # 0.6 ** 5 = 7.8 % of the weights remain at the end
TARGET = 1 - (1 - PER_CYCLE) ** ROUNDS


# %% [markdown]
# ## The experiment
#
# LeNet-300-100 (64 → 300 → 100 → 10) on the 8×8 digits, trained with Adam (lr 1.2e-3, as in the
# paper's LeNet experiments). One `Pruning` callback does the whole iterative loop of the paper:
#
# 1. train for `F` epochs (round 0, dense);
# 2. prune 40 % of the remaining weights of every layer by magnitude (`criterion="l1"`,
#    `granularity="weight"`, `ranking=PerLayer()`);
# 3. put the surviving weights back (`lottery=Rewind("init")`: every parameter, and Adam's state, to
#    its value at the start of training), train for `F` epochs, and repeat from 2.
#
# Steps 1 and 2 and the epochs are the schedule,
# `Geometric(target=TARGET, per_cycle=0.4, warmup_epochs=F, finetune_epochs=F)`; step 3 is the
# `lottery` argument.
#
# The paper prunes 20 % per round for many more rounds; 40 % per round reaches 7.8 % remaining in 5
# rounds, which keeps this notebook short. The three variants differ only in step 3:
#
# | variant | mask | surviving weights start from |
# |---|---|---|
# | `ticket` (`Rewind("init")`) | magnitude | their original initial values |
# | `reinit` (`Rewind("init", control=Reinit())`) | magnitude | a fresh random initialisation (drawn once, reused every round) |
# | `random_mask` (`Rewind("init", control=RandomMask())`) | random, same count per layer | their original initial values |
#
# A small callback records the validation accuracy (`val_acc`, logged by `Classifier`) and the test
# accuracy after every epoch; for the ticket it also keeps a copy of the weights at the start of
# round 1, right after the first rewind.


# %%
class RoundRecorder(Callback):
    """Per epoch: validation and test accuracy; per round: the keep-masks; optionally the weights at
    the start of one epoch."""

    def __init__(self, pruning, snapshot_epoch=None):
        self.val, self.test, self.masks = {}, {}, {}
        self.pruning, self.snapshot_epoch, self.snapshot = pruning, snapshot_epoch, None

    def on_train_epoch_start(self, trainer, pl_module):
        # Runs after Pruning's hook (callbacks run in list order): the prune and the rewind are done.
        if trainer.current_epoch % F == 0:  # the start of a round: this round's masks
            self.masks[trainer.current_epoch // F] = {name: mask.clone() for name, mask in self.pruning.keep.items()}
        if trainer.current_epoch == self.snapshot_epoch:
            self.snapshot = copy.deepcopy(pl_module.state_dict())

    def on_validation_end(self, trainer, pl_module):
        epoch = trainer.current_epoch
        self.val[epoch] = float(trainer.callback_metrics["val_acc"])
        self.test[epoch] = accuracy(pl_module, x_test, y_test)
        pl_module.train()


VARIANTS = {
    "ticket": Rewind("init"),
    "reinit": Rewind("init", control=Reinit()),
    "random_mask": Rewind("init", control=RandomMask()),
}


def run(variant):
    """Train one variant for ROUNDS + 1 rounds of F epochs; seed 0 for everything."""
    L.seed_everything(0, verbose=False)
    model = Classifier("lenet_300_100", lr=1.2e-3, input_shape=(1, 8, 8))
    initial = copy.deepcopy(model.state_dict())
    pruning = Pruning(schedule=Geometric(target=TARGET, per_cycle=PER_CYCLE, warmup_epochs=F, finetune_epochs=F),
                      criterion="l1", granularity="weight", ranking=PerLayer(), lottery=VARIANTS[variant],
                      verbose=False)
    recorder = RoundRecorder(pruning, snapshot_epoch=F)
    quiet_trainer((ROUNDS + 1) * F, [pruning, recorder]).fit(model, datamodule)
    return {"model": model, "initial": initial, "pruning": pruning, "recorder": recorder}


# %%
# NBVAL_IGNORE_OUTPUT
runs = {variant: run(variant) for variant in VARIANTS}
print("schedule (fraction of weights remaining after each prune):",
      [round(1 - row["sparsity"], 3) for row in runs["ticket"]["pruning"].history])

# %% [markdown]
# ## Rewinding restores the initial weights of the survivors
#
# Compare the ticket's weights at the start of round 1 (after `F` epochs of dense training, one
# prune and one rewind) with the copy of its `state_dict` saved before training: every surviving
# weight must equal its initial value exactly, every pruned weight must be zero. The biases are not
# pruned, so they are simply back at their initial values. For `reinit` the survivors start from new
# values instead.

# %%
ticket = runs["ticket"]
keep1 = {name + ".weight": mask for name, mask in ticket["pruning"].keep.items()}  # final masks ⊆ round-1 masks
for key, initial in ticket["initial"].items():
    rewound = ticket["recorder"].snapshot[key]
    reinit = runs["reinit"]["recorder"].snapshot[key]
    if key in keep1:
        alive = rewound != 0
        print(f"{key:26s} survivors {int(alive.sum()):6d}/{alive.numel():6d}; "
              f"equal to init: {torch.equal(rewound[alive], initial[alive])}; "
              f"pruned entries all zero: {bool((rewound[~alive] == 0).all())}; "
              f"reinit survivors equal to init: {torch.equal(reinit[reinit != 0], initial[reinit != 0])}")
        assert torch.equal(rewound[alive], initial[alive]) and (rewound[~alive] == 0).all()
        assert keep1[key].sum() <= alive.sum()
    else:
        print(f"{key:26s} (not pruned) equal to init: {torch.equal(rewound, initial)}")
        assert torch.equal(rewound, initial)

# %% [markdown]
# ## Same sparsity in every variant
#
# The comparison is only fair if the three variants keep the same number of weights in every layer.
# `pruning.keep` holds the final keep-masks (one boolean per weight):

# %%
for variant, result in runs.items():
    counts = {name: f"{int(mask.sum())}/{mask.numel()}" for name, mask in result["pruning"].keep.items()}
    print(f"{variant:12s}", counts)
reference = {name: int(mask.sum()) for name, mask in runs["ticket"]["pruning"].keep.items()}
for result in runs.values():
    assert {name: int(mask.sum()) for name, mask in result["pruning"].keep.items()} == reference
    assert [row["sparsity"] for row in result["pruning"].history] == [row["sparsity"] for row in ticket["pruning"].history]

# %% [markdown]
# ## Accuracy against weights remaining
#
# For each round, the accuracy after its last epoch (round 0 is the dense model, the same for all
# three variants).

# %%
remaining = [1.0] + [1 - row["sparsity"] for row in ticket["pruning"].history]
table = {}
for variant, result in runs.items():
    last = [(r + 1) * F - 1 for r in range(ROUNDS + 1)]
    table[variant] = {"val": [result["recorder"].val[e] for e in last], "test": [result["recorder"].test[e] for e in last]}
print(f"{'remaining':>9s} " + " ".join(f"{v + ' val/test':>22s}" for v in VARIANTS))
for r, fraction in enumerate(remaining):
    print(f"{fraction:9.1%} " + " ".join(f"{table[v]['val'][r]:>14.3f} / {table[v]['test'][r]:.3f}" for v in VARIANTS))

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharey=True)
for ax, split in zip(axes, ("val", "test")):
    for variant in VARIANTS:
        ax.plot([100 * f for f in remaining], table[variant][split], marker="o", label=variant)
    ax.set_xscale("log")
    ax.invert_xaxis()
    ax.set_xlabel("% of weights remaining (log scale)")
    ax.set_title(f"{split} accuracy after each round (seed 0)")
    ax.grid(alpha=0.3)
axes[0].set_ylabel("accuracy")
axes[0].legend()
fig.tight_layout()
plt.show()

# %%
final = {variant: table[variant]["test"][-1] for variant in VARIANTS}
dense = table["ticket"]["test"][0]
print(f"dense: {dense:.3f}; at {remaining[-1]:.1%} remaining: " + ", ".join(f"{v} {a:.3f}" for v, a in final.items()))
print(f"ticket − random_mask at the last round: {final['ticket'] - final['random_mask']:+.3f} (test), "
      f"{table['ticket']['val'][-1] - table['random_mask']['val'][-1]:+.3f} (val)")
assert dense > 0.93, dense
assert final["ticket"] > 0.85 and final["reinit"] > 0.85, final
assert final["ticket"] - final["random_mask"] > 0.15, final
assert table["ticket"]["val"][-1] - table["random_mask"]["val"][-1] > 0.15

# %% [markdown]
# ## What the numbers say, and what they do not
#
# One seed, 10 epochs per round, 40 % pruned per round: a quick version of the experiment. The test
# split has 357 examples (one example = 0.28 points), and on this data set the seed-to-seed spread
# is about 0.2-0.8 points (see `experiments/results/lottery_ticket.md`), so differences of a point
# or two between variants in the table above are not resolved.
#
# - **Random masks collapse.** With the same number of weights in every layer, random masks fall
#   far behind the magnitude masks at the last round (the printed difference above, tens of points).
#   *Which* weights are kept matters, not only how many: this agrees with the paper's random-pruning
#   control, and with the 3-seed experiment (random masks at 91.0 % test at 11.2 % remaining and
#   77.8 ± 3.5 % at 4.8 %, against the ticket's 96.2 % and 94.6 %).
# - **The ticket holds up much longer, but does not quite match dense here.** In this run it loses
#   about 2-4 test points by 22-13 % remaining and about 5 at 7.8 % (on validation only about 2 points:
#   the dense model's 0.975 on test is a lucky high). The 3-seed experiment, with 15 epochs per round
#   and 20 % per round, finds the ticket at or above dense down to 11.2 % remaining and 1.6 points
#   below at 4.8 %; our 10-epoch rounds and 40 % steps are harsher. The paper's "matches dense
#   down to 3.6 %" (MNIST, 784 inputs) is not reproduced on digits, whose first layer has only
#   19,200 weights.
# - **Random re-initialisation did NOT fall behind.** The paper's central control: the same
#   architecture, re-initialised, learns more slowly and ends lower. Here `reinit` ends close to the
#   ticket (see the table; with one seed, either may be ahead), and in the 3-seed experiment it
#   tracks the ticket within noise all the way to 4.8 %. On this small problem the original
#   initialisation gives no measurable advantage; this agrees with Liu et al. (2019, notebook 6):
#   with a well-tuned learning rate the ticket's initialisation is not what makes it good. One
#   difference from the paper: the library's `reinit` finds its later masks on its own
#   re-initialised training run (round 1's mask is the ticket's), while the paper re-initialises the
#   ticket's final mask once. On a small *convolutional* network the gap does appear: with a
#   Conv-2-shaped 1-D CNN on MNIST-1D (`experiments/results/lottery_ticket_cnn1d.md`, 3 seeds) the
#   ticket beats re-initialisation in all 24 (round, seed) pairs from 80 % down to 17 % remaining
#   (23 of 24 at the early-stopping epoch), and even beats the dense network, as the paper reports
#   for its conv nets (below 11 % the order reverses there).
#
# So the robust lesson of this notebook is the mask: magnitude pruning with rewinding finds sparse
# sub-networks that train to good accuracy from the start, and random ones of the same size do not.
# Whether the *initial values* are lucky is the part of the hypothesis that depends on the setting.

# %% [markdown]
# ### The committed 3-seed experiments
#
# The numbers quoted above come from two runs of `experiments/lottery_ticket.py` that take 12-33
# minutes, so the notebook does not repeat them: it loads their committed results. Test accuracy
# after each round's last epoch, mean ± std over 3 seeds, every second round; "ticket > reinit" counts
# the seeds where the ticket is ahead.

# %%
import numpy as np

from lightning_prune.teaching import committed_figure, committed_result


def by_round(result, dataset, key="test_acc"):
    """Weights remaining per round, and {variant: seeds × rounds array of `key`} from a committed result."""
    runs = sorted((r for r in result["results"] if r["dataset"] == dataset), key=lambda r: r["seed"])
    fractions = np.array([entry["remaining"] for entry in runs[0]["rounds"]])
    return fractions, {v: np.array([[e[key] for e in r["rounds"]] for r in runs if r["variant"] == v])
                       for v in ("ticket", "reinit", "random_mask")}


def show_rounds(fractions, acc, every=2):
    print(f"{'remaining':>9} " + " ".join(f"{v:>13}" for v in acc) + "  ticket > reinit")
    for i in list(range(0, len(fractions), every)) + ([len(fractions) - 1] if (len(fractions) - 1) % every else []):
        print(f"{fractions[i]:>9.1%} " + " ".join(f"{100 * a[:, i].mean():>6.1f} ± {100 * a[:, i].std(ddof=1):3.1f}"
                                                  for a in acc.values())
              + f"  {int((acc['ticket'][:, i] > acc['reinit'][:, i]).sum())} of {len(acc['ticket'])} seeds")


digits_result = committed_result("experiments/results/lottery_ticket.json")
digits_frac, digits_acc = by_round(digits_result, "digits")
show_rounds(digits_frac, digits_acc)

# %%
ticket_gap = 100 * (digits_acc["ticket"] - digits_acc["ticket"][:, :1]).mean(0)  # ticket − dense, per round
reinit_gap = 100 * (digits_acc["ticket"] - digits_acc["reinit"]).mean(0)
assert all(ticket_gap[digits_frac >= 0.11] > -0.5), ticket_gap       # at or above dense down to 11.2 %
assert -2.5 < ticket_gap[-1] < -1, ticket_gap[-1]                     # 1.6 points below at 4.8 %
assert all(abs(reinit_gap) < 1), reinit_gap                           # reinit within a point of the ticket
assert 100 * digits_acc["random_mask"][:, -1].mean() < 80             # random masks collapse (77.8 %)

# %% [markdown]
# The 1-D CNN on MNIST-1D (`--arch cnn1d`), where the ticket does beat re-initialisation:

# %%
cnn_result = committed_result("experiments/results/lottery_ticket_cnn1d.json")
cnn_frac, cnn_acc = by_round(cnn_result, "mnist1d")
show_rounds(cnn_frac, cnn_acc)
moderate = (cnn_frac < 1) & (cnn_frac > 0.15)  # rounds 1-8: 80 % down to 17 % remaining
_, cnn_at_es = by_round(cnn_result, "mnist1d", key="early_stop_test_acc")
wins = int((cnn_acc["ticket"] > cnn_acc["reinit"])[:, moderate].sum())
wins_es = int((cnn_at_es["ticket"] > cnn_at_es["reinit"])[:, moderate].sum())
print(f"ticket > reinit from 80 % to 17 % remaining: {wins} of {moderate.sum() * 3} (round, seed) pairs "
      f"(last epoch), {wins_es} at the early-stopping epoch")
assert wins == 24 and wins_es >= 23
assert all(cnn_acc["ticket"][:, moderate].mean(0) > cnn_acc["ticket"][:, 0].mean())  # above dense there
assert all(cnn_acc["reinit"][:, cnn_frac < 0.12].mean(0) > cnn_acc["ticket"][:, cnn_frac < 0.12].mean(0))

# %% [markdown]
# ### The paper's setting: LeNet-300-100 on real MNIST
#
# Frankle & Carbin's LeNet-300-100 has 784 inputs (266,200 weights) and was trained on MNIST's 55,000
# training images for 50,000 iterations per round, reaching about 98 % dense. For this network they
# report: winning tickets *above* the dense accuracy at moderate sparsity (e.g. at 13.5 % remaining),
# matching it down to 3.6 %, and learning faster; randomly re-initialised networks losing accuracy
# after little pruning; random masks worse still.
#
# The repository runs the same network, pruning rates (20 % of each hidden layer, 10 % of the output
# layer per round; 15 rounds to 3.6 %) and optimizer (Adam 1.2e-3) on the frozen real-MNIST subset:
# 3,500 training images instead of 55,000, and 8 epochs per round (440 iterations) instead of 50,000
# iterations. The test split has 1,000 images, so one image is 0.1 points. 16 minutes on 2 CPU cores:

# %%
mnist_result = committed_result("experiments/results/lottery_ticket_mnist.json")
mnist_frac, mnist_acc = by_round(mnist_result, "mnist")
show_rounds(mnist_frac, mnist_acc)
committed_figure("experiments/results/lottery_ticket_mnist.png")

# %%
dense_mnist = 100 * mnist_acc["ticket"][:, 0].mean()
gap_to_dense = 100 * (mnist_acc["ticket"] - mnist_acc["ticket"][:, :1]).mean(0)
ticket_vs_reinit = mnist_acc["ticket"] > mnist_acc["reinit"]
down_to_21 = (mnist_frac < 1) & (mnist_frac > 0.2)
pruned_to_9 = (mnist_frac < 1) & (mnist_frac > 0.08)  # 80 % down to 8.7 % remaining
print(f"dense {dense_mnist:.2f} %; ticket − dense: {gap_to_dense[pruned_to_9].min():+.2f} to "
      f"{gap_to_dense[pruned_to_9].max():+.2f} points from 80 % down to 8.7 %, {gap_to_dense[-1]:+.2f} at 3.6 %")
print(f"ticket > reinit in {int(ticket_vs_reinit[:, down_to_21].sum())} of {down_to_21.sum() * 3} (round, seed) "
      f"pairs from 80 % to 21 %; reinit − dense at 4.5 %: {100 * mnist_acc['reinit'][:, -2].mean() - dense_mnist:+.2f}")
assert 91 < dense_mnist < 94                                              # far below the paper's ~98 %
assert all(gap_to_dense[pruned_to_9] > 0)                                # ticket above dense down to 8.7 %
assert -1.5 < gap_to_dense[-1] < 0                                        # a little below at 3.6 %
assert ticket_vs_reinit[:, down_to_21].all()                              # ticket ahead of reinit, every seed
assert 100 * mnist_acc["reinit"][:, -2].mean() > dense_mnist - 0.5        # but reinit does not fall off
assert 100 * mnist_acc["random_mask"][:, -1].mean() < dense_mnist - 4     # random masks do

# %% [markdown]
# Against the paper, honestly: on real MNIST with a small training set the ticket is above the dense
# network down to 8.7 % of the weights, by 0.2-0.6 points (2-6 test images), and within a point of it
# at 3.6 %: the paper's shape, at a much lower accuracy (92.7 % dense instead of about 98 %). The
# ticket is ahead of re-initialisation in every seed from 80 % to 21 % remaining, but only by about
# half a point, and `reinit` does not fall off: it stays within half a point of dense down to 4.5 %.
# The paper's large gap is not reproduced. Random masks do fall off (86.9 % at 3.6 %). Learning speed
# cannot be compared: the 8-epoch rounds end before the validation loss turns up (right panel).

# %% [markdown]
# ## Deconstructing the ticket: the mask alone, and the signs (Zhou et al. 2019)
#
# Zhou, Lan, Liu & Yosinski ("Deconstructing Lottery Tickets: Zeros, Signs, and the Supermask",
# NeurIPS 2019), also in the lecture, asked *what* of the ticket matters:
#
# - **The mask alone.** Put each round's mask on the *initial, untrained* weights and test it. If the
#   mask only selected weights that train well, this network should be at chance (10 %). Zhou et al.
#   found it far above chance: pruning is itself a kind of training, and such a mask is a
#   **supermask** (超级掩码).
# - **Signs or magnitudes?** Keep the mask and replace the surviving initial weights by
#   `sign(w) * std` of their layer (`signed_constant_state`: only the signs survive), or keep their
#   magnitudes with random signs (`random_sign_state`). Zhou et al. found the signs are what matters.
#
# No training here: every number below is a test accuracy of *initial* weights under a mask, for the
# ticket's mask of each round, and for a random mask with the same per-layer counts.

# %%
from lightning_prune import apply_masks
from lightning_prune.lottery import random_sign_state, shuffle_within_groups, signed_constant_state


def untrained_accuracy(state, keep):
    """Test accuracy of a LeNet-300-100 holding `state`, with the weights outside `keep` zeroed."""
    model = Classifier("lenet_300_100", input_shape=(1, 8, 8))
    model.load_state_dict(state)
    apply_masks(model, {name + ".weight": mask for name, mask in keep.items()})
    return accuracy(model, x_test, y_test)


initial = ticket["initial"]
names = [name + ".weight" for name in ticket["pruning"].keep]
starts = {
    "initial weights": initial,
    "signs only": signed_constant_state(initial, names),
    "magnitudes only": random_sign_state(initial, names, seed=0),
}
generator = torch.Generator().manual_seed(0)
supermask = {kind: [] for kind in (*starts, "random mask")}
for r in range(1, ROUNDS + 1):
    mask = ticket["recorder"].masks[r]
    for kind, state in starts.items():
        supermask[kind].append(untrained_accuracy(state, mask))
    everything = {name: torch.ones_like(m) for name, m in mask.items()}
    supermask["random mask"].append(untrained_accuracy(initial, shuffle_within_groups(everything, mask, generator)))
no_mask = untrained_accuracy(initial, {name: torch.ones_like(m) for name, m in ticket["pruning"].keep.items()})
print(f"untrained dense network: {no_mask:.3f} (chance is 0.1)")
print(f"{'remaining':>9s} " + " ".join(f"{kind:>16s}" for kind in supermask))
for r, fraction in enumerate(remaining[1:]):
    print(f"{fraction:9.1%} " + " ".join(f"{supermask[kind][r]:16.3f}" for kind in supermask))

fig, ax = plt.subplots(figsize=(6, 3.6))
for kind, accs in supermask.items():
    ax.plot([100 * f for f in remaining[1:]], accs, marker="o", label=kind)
ax.axhline(0.1, color="gray", ls="--", label="chance")
ax.set_xscale("log")
ax.set_xticks([100 * f for f in remaining[1:]], [f"{100 * f:.1f}" for f in remaining[1:]])
ax.minorticks_off()
ax.invert_xaxis()
ax.set_xlabel("% of weights remaining (log scale)")
ax.set_ylabel("test accuracy, untrained")
ax.set_title("the ticket's mask on untrained weights (seed 0)")
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %%
assert max(supermask["initial weights"]) > 0.6, supermask      # the ticket's mask alone classifies
assert max(supermask["signs only"]) > 0.6, supermask           # ... and so it does with only the signs
assert max(supermask["random mask"]) < 0.3, supermask          # a random mask of the same size does not
assert max(supermask["magnitudes only"]) < 0.3, supermask      # nor do the magnitudes with random signs

# %% [markdown]
# Read the table row by row, or the plot. With the ticket's mask, the untrained initial weights already classify
# most test digits at moderate sparsity, while a random mask with the same counts, or the same
# magnitudes with random signs, stay near chance. Keeping only the signs (every weight of a layer
# the same size) does about as well as the true initial values at moderate sparsity, and somewhat
# worse once few weights are left; the magnitudes alone are worth nothing. Zhou et al.'s reading: magnitude
# pruning with rewinding keeps weights whose training *moved them away from zero in the direction
# of their initial sign*; the mask plus the signs already encode much of what training learned. At the
# highest sparsity the supermask fades: too few weights are left for the untrained network to work.
#
# %% [markdown]
# ## Summary
#
# - The lottery ticket hypothesis: a big randomly initialised network contains sub-networks (winning
#   tickets, 中奖彩票) that, trained in isolation from their original initialisation, reach the big
#   network's accuracy; big networks train easily because they hold many such tickets.
# - Finding them: iterative magnitude pruning with rewinding, `Pruning(lottery=Rewind("init"))`: after
#   each prune the survivors (and the optimizer state) go back to their initial values; we checked that
#   they equal the saved initial `state_dict` exactly.
# - The controls, `Rewind("init", control=Reinit())` and `Rewind("init", control=RandomMask())`, keep
#   the same per-layer sparsity
#   (`pruning.keep`). Random masks collapse at high sparsity; on digits, re-initialised tickets do
#   about as well as the winning ticket, in this one-seed run and in the 3-seed experiment, while on a
#   small 1-D CNN the ticket beats re-initialisation at moderate sparsity, as in the paper.
# - In the paper's setting (LeNet-300-100, real MNIST, 3 committed seeds) the ticket stays above dense
#   down to 8.7 % of the weights and is ahead of re-initialisation in every seed down to 21 %, but by
#   half a point, not the paper's gap; random masks fall off.
# - Deconstructing the ticket (Zhou et al. 2019): the ticket's mask on the untrained initial weights is
#   already far above chance (a supermask), and keeping only the signs of the initial weights
#   (`signed_constant_state`) does nearly as well at moderate sparsity, while random signs do not.
#
# ## Exercises
#
# 1. Run the notebook with seeds 1 and 2 (in `run` and in `DigitsDataModule`). Which differences
#    between `ticket` and `reinit` keep their sign? Which between `ticket` and `random_mask`?
# 2. Use `per_cycle=0.2` and 11 rounds (the paper's rate; about 8.6 % remaining). Does pruning
#    more gently change the last round's accuracy of each variant?
# 3. Late rewinding (Frankle et al. 2020): `Rewind(1)` rewinds to the start of epoch 1 instead of the
#    initialisation (it needs `Rewind.to <= warmup_epochs`). Does it help the ticket at 7.8 %?
# 4. One-shot lottery ticket: `OneShot(target=TARGET, warmup_epochs=F, finetune_epochs=F)`. How does
#    one prune to 7.8 % compare with five?
# 5. Raise the learning rate to 1e-2 for all three variants. The paper reports that tickets are
#    harder to find at large learning rates for deeper networks; what happens here?
# 6. Train a fourth variant, `Rewind("init", control=SignedConstant())`: every round rewinds the
#    survivors to `sign(w) * std` of their layer instead of their initial values. Does it train as well
#    as the ticket, as Zhou et al. found?
