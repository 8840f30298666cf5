"""Issue 13, point 1: a pruned Hugging Face model's config fields follow the removal, so that
``save_pretrained``/``from_pretrained`` rebuild the compact model; where a config cannot describe it,
the config is left as it was and the fit says so once."""

from __future__ import annotations

import warnings

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from lightning_prune import Geometric, Neurons, OneShot, PerLayer, PrunedCheckpointMixin, Pruning
from lightning_prune.config import Global
from lightning_prune.criteria import Magnitude
from lightning_prune.hf_config import follow_configs, pretrained_signatures
from lightning_prune.pruner import Pruner
from lightning_prune.tracing import call, output_tensors
from trainers import make_trainer
from zoo import build

pytest.importorskip("transformers")


def _outputs(model, x):
    with torch.no_grad():
        return output_tensors(call(model.eval(), x))[0]


def _prune(name, granularity=None, ranking=None, layers=None):
    model, x = build(name)
    config = model.config
    pruner = Pruner(model.eval(), x, Magnitude(2), granularity or Neurons(), ranking or PerLayer(), layers)
    pruner.commit(pruner.plan(pruner.dense_keep(), 0.3, 0))
    return model, x, config, pruner


def _reloaded(model, tmp_path):
    model.save_pretrained(tmp_path)
    return type(model).from_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("name", "granularity", "layers", "fields"),
    [
        ("hf_llama", Neurons(), None, {"num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 45}),
        ("hf_llama", Neurons(norm_coupled="remove"), None,
         {"hidden_size": 22, "num_attention_heads": 2, "num_key_value_heads": 1, "intermediate_size": 45}),
        ("hf_bert", Neurons(), ["*intermediate.dense"], {"intermediate_size": 45}),
        ("hf_gpt2", Neurons(), ["*c_fc"], {"n_inner": 90}),  # None before: 4 * n_embd
    ],
    ids=["llama-heads-ffn", "llama-residual-too", "bert-ffn", "gpt2-ffn"],
)
def test_the_config_follows_a_removal_and_save_pretrained_rebuilds_the_compact_model(name, granularity, layers, fields,
                                                                                     tmp_path):
    model, x, dense_config, pruner = _prune(name, granularity, layers=layers)
    assert pruner.config_notes == []
    assert {field: getattr(model.config, field) for field in fields} == fields
    assert all(getattr(dense_config, field) != value for field, value in fields.items())  # the user's object: dense
    assert all(module.config is model.config for module in model.modules() if hasattr(module, "config"))

    reloaded = _reloaded(model, tmp_path)
    assert sum(p.numel() for p in reloaded.parameters()) == sum(p.numel() for p in model.parameters())
    assert torch.allclose(_outputs(reloaded, x), _outputs(model, x), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "ranking", "layers", "mismatch"),
    [
        ("hf_bert", PerLayer(), None, "attention.self.query.weight"),  # head size = hidden_size // heads
        ("hf_gpt2", PerLayer(), None, "attn.c_attn.weight"),
        ("hf_llama", Global(normalize="mean"), None, "mlp.gate_proj.weight"),  # layers at different widths
    ],
    ids=["bert-heads", "gpt2-heads", "llama-global"],
)
def test_a_config_that_cannot_describe_the_compact_model_is_left_as_it_was_and_named(name, ranking, layers, mismatch):
    model, x, dense_config, pruner = _prune(name, ranking=ranking, layers=layers)
    assert model.config is dense_config
    (note,) = pruner.config_notes
    assert "cannot describe the pruned widths" in note and mismatch in note and "load_from_checkpoint" in note


def test_a_failure_after_the_config_followed_puts_the_old_config_back(monkeypatch):
    import lightning_prune.pruner as pruner_module

    model, x = build("hf_llama")
    config = model.config
    pruner = Pruner(model.eval(), x, Magnitude(2), Neurons(), PerLayer())
    keep = pruner.plan(pruner.dense_keep(), 0.3, 0)
    before = {key: value.clone() for key, value in model.state_dict().items()}

    def follow_then_fail(module, before):
        follow_configs(module, before)
        assert module.config is not config  # it did follow
        raise RuntimeError("injected after the config followed")

    monkeypatch.setattr(pruner_module, "follow_configs", follow_then_fail)
    with pytest.raises(RuntimeError, match="injected"):
        pruner.commit(keep)
    assert all(module.config is config for module in model.modules() if hasattr(module, "config"))
    assert config.intermediate_size == 64 and config.num_attention_heads == 4
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


class TinyLlama(PrunedCheckpointMixin, L.LightningModule):
    """A causal LM built from its hyperparameters, as ``load_from_checkpoint`` rebuilds it."""

    def __init__(self, intermediate_size: int = 64):
        super().__init__()
        from transformers import LlamaConfig, LlamaForCausalLM

        self.save_hyperparameters()
        self.net = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=intermediate_size,
                                                num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                                max_position_embeddings=16))
        self.example_input_array = torch.randint(0, 64, (2, 8), generator=torch.Generator().manual_seed(1))

    def forward(self, ids):
        return self.net(ids, use_cache=False).logits

    def training_step(self, batch, batch_idx):
        ids, targets = batch
        return F.cross_entropy(self(ids).flatten(0, -2), targets.flatten())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-3)


def _fit(module, pruning, tmp_path):
    ids = torch.randint(0, 64, (32, 8), generator=torch.Generator().manual_seed(0))
    checkpoint = ModelCheckpoint(dirpath=tmp_path, save_last=True)
    make_trainer(3, [pruning, checkpoint], limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0,
                 enable_checkpointing=True).fit(
        module, DataLoader(TensorDataset(ids, ids.roll(-1, dims=1)), batch_size=8))
    return checkpoint.last_model_path


def test_a_fit_with_per_layer_ranking_leaves_a_model_that_save_pretrained_and_load_from_checkpoint_rebuild(tmp_path):
    from transformers import LlamaForCausalLM

    L.seed_everything(0)
    module = TinyLlama()
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion="l2", granularity="neuron",
                      ranking="layer", verbose=False)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        last = _fit(module, pruning, tmp_path)
    assert not [w for w in caught if "cannot describe" in str(w.message)]
    config = module.net.config
    assert (config.num_attention_heads, config.num_key_value_heads, config.intermediate_size) == (2, 1, 32)
    assert module.hparams.intermediate_size == 64  # the saved hyperparameters still build the dense model

    expected = _outputs(module, module.example_input_array)
    module.net.save_pretrained(tmp_path / "hf")
    reloaded = LlamaForCausalLM.from_pretrained(tmp_path / "hf")
    assert torch.allclose(_outputs(reloaded, module.example_input_array), expected, atol=1e-6)
    loaded = TinyLlama.load_from_checkpoint(last)  # dense from hparams, then the plan replayed
    assert loaded.net.config.intermediate_size == 32 and loaded.net.config.num_key_value_heads == 1
    assert torch.allclose(_outputs(loaded, module.example_input_array), expected, atol=1e-6)


def test_a_fit_whose_layers_end_at_different_widths_warns_once_and_keeps_the_config(tmp_path):
    L.seed_everything(0)
    module = TinyLlama()
    pruning = Pruning(schedule=Geometric(target=0.5, per_cycle=0.3), criterion="l2", granularity="neuron", verbose=False)
    with pytest.warns(UserWarning, match="cannot describe the pruned widths") as caught:
        _fit(module, pruning, tmp_path)
    assert module.net.config.intermediate_size == 64 and module.net.model.layers[0].mlp.up_proj.out_features < 64
    assert len([w for w in caught if "cannot describe" in str(w.message)]) == 1  # two removals, one warning
    assert len(pruning._state.plan["steps"]) == 2


def test_models_the_removal_did_not_change_are_left_alone_and_an_uncopyable_config_is_a_note_not_an_error():
    import threading

    from torch import nn
    from transformers import BertConfig, BertModel

    class NeedsMore(BertModel):  # a class that cannot be rebuilt from its config alone
        def __init__(self, config, scale):
            super().__init__(config)
            self.scale = scale

    llama, x = build("hf_llama")
    other = NeedsMore(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                 intermediate_size=64), 2.0)
    container = nn.ModuleDict({"student": llama, "other": other})
    before = pretrained_signatures(container)
    pruner = Pruner(llama.eval(), x, Magnitude(2), Neurons(), PerLayer())
    pruner.commit(pruner.plan(pruner.dense_keep(), 0.3, 0))
    assert follow_configs(container, before) == []  # the student followed already; `other` did not change
    (note,) = follow_configs(container)  # without `before`: every model is checked, and `other` cannot be rebuilt
    assert "'other'" in note and "could not be built" in note

    llama.config.lock = threading.Lock()  # deepcopy fails on it: a note, not an error
    (note,) = follow_configs(llama)
    assert "could not be built from a copy of its config" in note and llama.config.intermediate_size == 45


def test_removing_the_zeroed_units_of_a_masked_model_makes_the_config_follow_too(tmp_path):
    """What a ddp_spawn fit hands back is masked, dense-shaped; remove_zeroed_units makes it compact, config included."""
    from lightning_prune.masks import apply_masks
    from lightning_prune.structure import remove_zeroed_units

    model, x = build("hf_llama")
    pruner = Pruner(model.eval(), x, Magnitude(2), Neurons(), PerLayer())
    apply_masks(model, pruner.parameter_masks(pruner.plan(pruner.dense_keep(), 0.3, 0)))
    expected = _outputs(model, x)
    remove_zeroed_units(model, x)
    assert (model.config.num_key_value_heads, model.config.intermediate_size) == (1, 45)
    reloaded = _reloaded(model, tmp_path)
    assert torch.allclose(_outputs(reloaded, x), expected, atol=1e-5)
