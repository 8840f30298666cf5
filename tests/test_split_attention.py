"""Issue 13: the heads of ``nn.MultiheadAttention`` (torchvision's ViT, ``nn.TransformerEncoder``,
hand-written blocks) as units, through ``split_attention``: the same outputs from q/k/v ``Linear`` layers,
whose heads are then removed like Hugging Face's and timm's."""

from __future__ import annotations

import copy

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_prune import OneShot, PrunedCheckpointMixin, Pruning, SplitMultiheadAttention, split_attention
from lightning_prune.config import Global, PerLayer
from lightning_prune.criteria import Magnitude
from lightning_prune.data import DigitsDataModule
from lightning_prune.masks import apply_masks
from lightning_prune.pruner import Pruner
from lightning_prune.structure import MHA_HEADS
from trainers import make_trainer
from zoo import build, outputs
from zoo_torch_pruning import TransformerEncoderNet

CALLS = {
    "default": {},
    "no weights": {"need_weights": False},
    "per-head weights": {"average_attn_weights": False},
    "bool mask": {"attn_mask": "bool"},
    "bool mask, no weights": {"attn_mask": "bool", "need_weights": False},
    "float mask and padding": {"attn_mask": "float", "key_padding_mask": True, "need_weights": False},
    "padding": {"key_padding_mask": True},
    "causal": {"attn_mask": "causal", "is_causal": True},
    "causal, no weights": {"attn_mask": "causal", "is_causal": True, "need_weights": False},
    "mask per head": {"attn_mask": "per head"},
}


def _arguments(kind, batch, length, heads):
    generator = torch.Generator().manual_seed(1)
    masks = {
        "bool": (torch.rand(length, length, generator=generator) > 0.7).fill_diagonal_(False),
        "float": torch.randn(length, length, generator=generator),
        "causal": nn.Transformer.generate_square_subsequent_mask(length),
        "per head": torch.stack([(torch.rand(length, length, generator=generator) > 0.7).fill_diagonal_(False)
                                 for _ in range(batch * heads)]),
    }
    arguments = dict(CALLS[kind])
    if "attn_mask" in arguments:
        arguments["attn_mask"] = masks[arguments["attn_mask"]]
    if arguments.get("key_padding_mask"):
        padding = torch.zeros(batch, length, dtype=torch.bool)
        padding[0, -1] = True
        arguments["key_padding_mask"] = padding
    return arguments


def _same(reference, split, inputs, arguments):
    expected, found = reference(*inputs, **arguments), split(*inputs, **arguments)
    assert torch.allclose(found[0], expected[0], atol=1e-6)
    assert (found[1] is None) == (expected[1] is None)
    if expected[1] is not None:
        assert found[1].shape == expected[1].shape and torch.allclose(found[1], expected[1], atol=1e-6)


@pytest.mark.parametrize("batch_first", [True, False])
@pytest.mark.parametrize("kind", list(CALLS))
def test_split_attention_computes_what_nn_multiheadattention_does(kind, batch_first):
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(16, 4, batch_first=batch_first).eval()
    split = split_attention(copy.deepcopy(reference))
    assert isinstance(split, SplitMultiheadAttention) and (split.num_heads, split.head_dim, split.embed_dim) == (4, 4, 16)
    x = torch.randn(2, 5, 16) if batch_first else torch.randn(5, 2, 16)
    x.requires_grad_(True)
    _same(reference, split, (x, x, x), _arguments(kind, 2, 5, 4))
    grads = [torch.autograd.grad(module(x, x, x, need_weights=False)[0].square().sum(), x)[0] for module in (reference, split)]
    assert torch.allclose(grads[0], grads[1], atol=1e-5)


def test_other_key_and_value_widths_and_unbatched_inputs():
    torch.manual_seed(0)
    reference = nn.MultiheadAttention(16, 4, kdim=8, vdim=12).eval()
    split = split_attention(copy.deepcopy(reference))
    _same(reference, split, (torch.randn(5, 2, 16), torch.randn(7, 2, 8), torch.randn(7, 2, 12)), {})
    _same(reference, split, (torch.randn(5, 16), torch.randn(7, 8), torch.randn(7, 12)), {"need_weights": False})


def test_torch_transformer_encoder_and_torchvision_vit_compute_the_same_after_the_split():
    torch.manual_seed(0)
    encoder, x = TransformerEncoderNet(), torch.randn(2, 6, 8)
    split = split_attention(copy.deepcopy(encoder))
    assert type(split.encoder.layers[0].self_attn) is SplitMultiheadAttention
    for mode in ("eval", "train"):  # eval: nn.TransformerEncoderLayer would take its fused path; it falls back
        getattr(encoder, mode)(), getattr(split, mode)()
        assert torch.allclose(split(x), encoder(x), atol=1e-5), mode
    vit, image = build("tv_vit")
    split_vit = split_attention(copy.deepcopy(vit))
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(outputs(split_vit.eval(), image), outputs(vit.eval(), image)))
    assert "encoder.layers.encoder_layer_0.self_attention.q_proj.weight" in split_vit.state_dict()


def test_extra_key_value_positions_are_refused_by_name_and_nothing_is_replaced():
    model = nn.Sequential(nn.Linear(8, 16))
    model.add_module("plain", nn.MultiheadAttention(16, 4))
    model.add_module("extra", nn.MultiheadAttention(16, 4, add_bias_kv=True))
    with pytest.raises(ValueError, match="'extra'.*add_bias_kv"):
        split_attention(model)
    assert type(model.plain) is nn.MultiheadAttention and type(model.extra) is nn.MultiheadAttention


def test_unsplit_heads_are_refused_naming_split_attention():
    model, x = build("tv_vit")
    pruner = Pruner(model.eval(), x, Magnitude(2), "neuron", Global())
    assert pruner.structure.refused["encoder.layers.encoder_layer_0.self_attention"] == MHA_HEADS
    assert pruner.structure.skipped["encoder.layers.encoder_layer_1.self_attention"] == MHA_HEADS  # a fit warns with it
    assert "split_attention(model)" in MHA_HEADS


@pytest.mark.parametrize("name", ["tv_vit_split", "issue_transformer_encoder_split"])
def test_after_the_split_whole_heads_are_units_and_masking_them_is_removing_them(name):
    model, x = build(name)
    model.eval()
    pruner = Pruner(model, x, Magnitude(2), "neuron", PerLayer())
    attentions = [m for m in model.modules() if isinstance(m, SplitMultiheadAttention)]
    heads = [g for g in pruner.structure.groups if g.key.endswith("q_proj")]
    assert len(heads) == len(attentions) == 2 and all(g.size == 4 and g.unit_of is not None for g in heads)
    keep = pruner.plan(pruner.dense_keep(), 0.5, 0)
    masked = copy.deepcopy(model)
    apply_masks(masked, pruner.parameter_masks(keep))
    pruner.commit(keep)
    assert [(a.num_heads, a.q_proj.out_features, a.out_proj.in_features) for a in attentions] == [(2, 2 * a.head_dim, 2 * a.head_dim)
                                                                                                  for a in attentions]
    assert all(torch.allclose(a, b, atol=1e-5) for a, b in zip(outputs(model, x), outputs(masked, x)))
    per_head = torch.zeros(2 * 4, 3, 3, dtype=torch.bool)  # made for the 4 heads the attention had
    with pytest.raises(ValueError, match="heads were removed"):
        attentions[0](torch.randn(2, 3, attentions[0].embed_dim), *[torch.randn(2, 3, attentions[0].embed_dim)] * 2,
                      attn_mask=per_head)


class DigitRows(PrunedCheckpointMixin, L.LightningModule):
    """An 8x8 digit read as 8 tokens of 8 pixels by ``nn.TransformerEncoder``, its heads split in ``__init__``."""

    def __init__(self):
        super().__init__()
        self.save_hyperparameters()
        self.net = split_attention(TransformerEncoderNet())
        self.example_input_array = torch.zeros(2, 8, 8)

    def forward(self, x):
        return self.net(x.reshape(-1, 8, 8))

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-3)


def test_a_fit_removes_heads_of_torchs_transformer_encoder_and_the_checkpoint_reloads(tmp_path):
    L.seed_everything(0)
    model = DigitRows()
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion="taylor", granularity="neuron",
                      ranking="layer", verbose=False)
    make_trainer(2, [pruning, checkpoint], limit_train_batches=4, limit_val_batches=0, num_sanity_val_steps=0,
                 enable_checkpointing=True).fit(model, DigitsDataModule(batch_size=32))
    attention = model.net.encoder.layers[0].self_attn
    assert (attention.num_heads, attention.q_proj.out_features) == (2, 8)  # 2 of 4 heads of 4 channels
    assert model.net.encoder.layers[0].linear1.out_features == 32
    reloaded = DigitRows.load_from_checkpoint(checkpoint.last_model_path)
    x = torch.randn(4, 8, 8)
    assert reloaded.net.encoder.layers[1].self_attn.num_heads == 2
    assert torch.allclose(reloaded.eval()(x), model.eval()(x), atol=1e-6)


def test_a_default_encoder_in_no_grad_with_padding_gives_the_same_tokens():
    """nn.TransformerEncoder packs padded batches into nested tensors for nn.MultiheadAttention (eval, no_grad);
    after the split it does not, and every position but the padded ones (zeros before, computed now) is equal."""
    torch.manual_seed(0)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 4, 32, batch_first=True), 2).eval()
    split = split_attention(copy.deepcopy(encoder))
    x, padding = torch.randn(2, 5, 16), torch.zeros(2, 5, dtype=torch.bool)
    padding[1, -2:] = True
    with torch.no_grad():
        expected, found = encoder(x, src_key_padding_mask=padding), split(x, src_key_padding_mask=padding)
    assert torch.allclose(found[~padding], expected[~padding], atol=1e-5)


def test_bad_calls_fail_as_nn_multiheadattention_fails_and_frozen_weights_stay_frozen():
    reference = nn.MultiheadAttention(16, 4, batch_first=True)
    for p in reference.parameters():
        p.requires_grad_(False)
    split = split_attention(copy.deepcopy(reference))
    assert not any(p.requires_grad for p in split.parameters())
    x = torch.randn(2, 5, 16)
    for module in (reference, split):
        with pytest.raises(RuntimeError, match="Need attn_mask if specifying the is_causal hint"):
            module(x, x, x, is_causal=True, key_padding_mask=torch.zeros(2, 5, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool or floating point"):
        split(x, x, x, attn_mask=torch.zeros(5, 5, dtype=torch.uint8))
    with pytest.raises(TypeError):  # keyword-only past `bias`, so nn.MultiheadAttention's positional flags cannot land
        SplitMultiheadAttention(16, 4, 0.0, True, False, False)


def test_one_attention_registered_under_two_names_is_replaced_by_one_module():
    shared = nn.MultiheadAttention(16, 4)
    model = nn.Module()
    model.first, model.second = shared, shared
    split_attention(model)
    assert isinstance(model.first, SplitMultiheadAttention) and model.first is model.second


class _NoResidual(nn.Module):
    """Attention whose output projection feeds the classifier directly (no residual stream to couple it)."""

    def __init__(self):
        super().__init__()
        self.embed, self.attn, self.head = nn.Linear(8, 16), nn.MultiheadAttention(16, 4, batch_first=True), nn.Linear(16, 10)

    def forward(self, x):
        h = self.embed(x)
        return self.head(torch.relu(self.attn(h, h, h, need_weights=False)[0]).mean(1))


def test_the_output_projections_channels_are_single_units_even_when_they_number_heads_times_head_dim():
    torch.manual_seed(0)
    model, x = split_attention(_NoResidual()).eval(), torch.randn(2, 6, 8)
    pruner = Pruner(model, x, Magnitude(2), "neuron", PerLayer())
    groups = {group.key: group for group in pruner.structure.groups}
    assert groups["attn.out_proj"].unit_of is None and groups["attn.out_proj"].size == 16  # 16 channels, not 4 "heads"
    assert groups["attn.q_proj"].size == 4  # the heads
    keep = pruner.plan(pruner.dense_keep(), 0.25, 0)
    masked = copy.deepcopy(model)
    apply_masks(masked, pruner.parameter_masks(keep))
    pruner.commit(keep)
    assert (model.attn.num_heads, model.attn.out_proj.out_features) == (3, 12)
    assert torch.allclose(model(x), masked(x), atol=1e-5)
