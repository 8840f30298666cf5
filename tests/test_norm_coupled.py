"""Channels that feed a channel-mixing norm, removed at the prune step (issue 13, point 3):
``Neurons(norm_coupled="remove")``.

Zeroing a channel that feeds LayerNorm/RMSNorm is not removing it (the zero still enters the mean and
variance), so by default such groups are refused (tests/test_zoo.py). With ``norm_coupled="remove"``
they are pruned by removal right at the prune step: the model trained from then on is the compact
one, so there is no masked model to differ from it. A transformer's residual stream and ConvNeXt's
channels then go too, and the zoo's partial models reach the 20 % parameter cut.
"""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from trainers import make_trainer
from zoo import NORM_COUPLED, build, outputs
from lightning_prune import APoZ, DropGuard, Geometric, Global, Neurons, OneShot, Pruning, Rewind
from lightning_prune.checkpoint import input_spec, load_compact, save_compact
from lightning_prune.criteria import Magnitude
from lightning_prune.fit_checks import check_norm_coupled_removal
from lightning_prune.pruner import Pruner
from lightning_prune.surgery import tied_parameters
from lightning_prune.tracing import call, output_tensors

pytest.importorskip("timm")
pytest.importorskip("transformers")

def _count(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", NORM_COUPLED)
def test_normed_channels_are_removed_and_the_cut_reaches_a_fifth(name, tmp_path):
    model, x = build(name)
    model.eval()
    dense = _count(model)
    pruner = Pruner(model, x, Magnitude(2), Neurons(norm_coupled="remove"), Global(normalize="mean"))
    inexact = set(pruner.structure.inexact)
    assert inexact and not (inexact & set(pruner.structure.refused))  # the normed groups are pruned, not refused
    ties = [[f"{id(module)}.{attribute}" for module, attribute in holders] for holders in tied_parameters(model)]
    removal, _ = pruner.commit(pruner.plan(pruner.dense_keep(), 0.3, 0))
    assert any(removal.get(key) for key in inexact)  # normed channels left the model
    assert [[f"{id(module)}.{attribute}" for module, attribute in holders] for holders in tied_parameters(model)] == ties
    assert _count(model) <= 0.8 * dense, (name, _count(model) / dense)
    model.train()
    loss = sum(tensor.float().pow(2).mean() for tensor in output_tensors(call(model, x)))
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    path = tmp_path / f"{name}.pt"
    save_compact(model, {"inputs": input_spec(x), "steps": [removal]}, path)
    fresh, _ = build(name)
    load_compact(fresh, path)
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(outputs(fresh.eval(), x), outputs(model, x)))


def test_by_default_the_same_channels_are_refused_naming_the_norm_and_the_option():
    model, x = build("timm_vit")
    pruner = Pruner(model.eval(), x, Magnitude(2), Neurons(), Global())
    assert not pruner.structure.inexact
    reason = pruner.structure.refused["patch_embed.proj"]
    assert "channel-mixing norm" in reason and "norm_coupled='remove'" in reason


def test_a_removal_that_fails_is_refused_on_a_copy_and_the_users_model_is_untouched():
    """torchvision's ViT left unsplit: removing its residual stream fails (nn.MultiheadAttention needs embed_dim
    divisible by num_heads); the trial runs on a copy, so the group is refused by name and the model keeps every
    tensor."""
    model, x = build("tv_vit")
    before = {key: value.clone() for key, value in model.state_dict().items()}
    pruner = Pruner(model.eval(), x, Magnitude(2), Neurons(norm_coupled="remove"), Global())
    assert "removing its units fails" in pruner.structure.refused["conv_proj"]
    assert "conv_proj" not in pruner.structure.inexact and pruner.structure.groups  # the MLP units are still pruned
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())


class _ViT(L.LightningModule):
    def __init__(self):
        super().__init__()
        self.net, self.example_input_array = build("timm_vit")

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        loss = F.cross_entropy(self(batch[0]), batch[1])
        self.log("train_loss", loss, on_step=True)
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


def _images():
    generator = torch.Generator().manual_seed(0)
    return DataLoader(TensorDataset(torch.randn(32, 3, 16, 16, generator=generator),
                                    torch.randint(0, 10, (32,), generator=generator)), batch_size=8)


def test_a_timm_vits_residual_stream_is_removed_in_a_fit_and_trains_on():
    data = _images()
    L.seed_everything(0)
    module = _ViT()
    dense_width, dense = module.net.patch_embed.proj.out_channels, _count(module)
    pruning = Pruning(schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1), criterion="taylor",
                      granularity=Neurons(norm_coupled="remove"), ranking="layer", verbose=False)
    trainer = make_trainer(4, [pruning], limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, data)
    width = module.net.patch_embed.proj.out_channels
    assert width == dense_width // 2  # the residual stream: half of it, removed
    block = module.net.blocks[0]
    assert block.norm1.normalized_shape == (width,) and block.attn.qkv.in_features == width
    assert module.net.cls_token.shape[-1] == width and module.net.pos_embed.shape[-1] == width
    assert [row["sparsity"] for row in pruning.history] == pytest.approx([0.3, 0.5], abs=0.02)
    assert _count(module) < 0.6 * dense
    assert torch.isfinite(trainer.callback_metrics["train_loss"])  # trained on after both removals
    assert module(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("option", ["rewind", "apoz", "macs"])
def test_removal_at_once_works_with_rewinding_activation_scores_and_a_macs_budget(option):
    """Lottery rewinding (the rewind point is sliced to the compact model), APoZ's hooks on the residual
    stream, and a MACs budget met by the compact model."""
    extra = {"rewind": dict(lottery=Rewind("init")), "apoz": dict(criterion=APoZ(batches=2)), "macs": {}}[option]
    schedule = OneShot(target=0.3, warmup_epochs=1, budget="macs" if option == "macs" else "units")
    L.seed_everything(0)
    module = _ViT()
    dense_width = module.net.patch_embed.proj.out_channels
    pruning = Pruning(schedule=schedule, granularity=Neurons(norm_coupled="remove"), verbose=False, **extra)
    init = {key: value.clone() for key, value in module.state_dict().items()}
    make_trainer(2, [pruning], limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0).fit(module, _images())
    assert module.net.patch_embed.proj.out_channels < dense_width
    if option == "rewind":  # the rewind point holds the initial values of the residual channels kept, in order
        removed = set(pruning._state.plan["steps"][0]["net.patch_embed.proj"])
        kept = torch.tensor([c for c in range(dense_width) if c not in removed])
        point = pruning._state.rewind_point["model"]
        assert torch.equal(point["net.patch_embed.proj.weight"], init["net.patch_embed.proj.weight"][kept])
        assert torch.equal(point["net.cls_token"], init["net.cls_token"][..., kept])
        assert torch.equal(point["net.norm.weight"], init["net.norm.weight"][kept])
        assert torch.equal(point["net.blocks.0.attn.qkv.weight"], init["net.blocks.0.attn.qkv.weight"][:, kept])
    row = pruning.history[-1]
    if option == "macs":
        assert 1 - row["macs"] / pruning.dense["macs"] >= 0.3
    else:
        assert row["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert module(torch.randn(2, 3, 16, 16)).shape == (2, 10)


@pytest.mark.parametrize("resume_epoch", [1, 2])
def test_a_fit_that_removed_the_residual_stream_resumes_exactly(tmp_path, resume_epoch):
    """The checkpoint's plan (normed channels included) is replayed on a fresh dense ViT; the resumed fit
    ends with the weights of the uninterrupted one."""
    def run(extra=(), ckpt_path=None):
        L.seed_everything(0)
        module = _ViT()
        pruning = Pruning(schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1), criterion="l2",
                          granularity=Neurons(norm_coupled="remove"), ranking="layer", verbose=False)
        trainer = make_trainer(4, [pruning, *extra], limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0,
                               enable_checkpointing=bool(extra))
        trainer.fit(module, _images(), ckpt_path=ckpt_path)
        return module

    full = run([ModelCheckpoint(dirpath=tmp_path, save_top_k=-1, every_n_epochs=1, filename="{epoch}")])
    resumed = run(ckpt_path=str(tmp_path / f"epoch={resume_epoch}.ckpt"))
    assert resumed.net.patch_embed.proj.out_channels == full.net.patch_embed.proj.out_channels < 192
    for name, value in full.state_dict().items():
        assert torch.allclose(value, resumed.state_dict()[name], atol=1e-6), name


def test_removal_at_once_is_refused_where_a_masked_model_is_trained_or_judged():
    with pytest.raises(ValueError, match="norm_coupled='remove'.*needs `Neurons.remove=True`"):
        Neurons(remove=False, norm_coupled="remove")
    with pytest.raises(ValueError, match=r"`Neurons.norm_coupled` must be one of \('refuse', 'remove'\), got 'drop'"):
        Neurons(norm_coupled="drop")
    with pytest.raises(ValueError, match="`guard` judges the masked model before removing it"):
        Pruning(schedule=OneShot(target=0.3, warmup_epochs=1), granularity=Neurons(norm_coupled="remove"),
                guard=DropGuard("val_acc", 0.01))
    with pytest.raises(ValueError, match="with 2 processes the model stays masked until the fit ends"):
        check_norm_coupled_removal(True, 2)
    check_norm_coupled_removal(True, 1)
    check_norm_coupled_removal(False, 2)
