"""Issues 15 and 17 on third-party models in real ``Trainer`` fits: distillation from a Hugging Face
``ModelOutput``, 2:4 sparsity on a timm ResNet and on GPT-2's ``Conv1D`` layers, Wanda on BERT, Taylor
on a BERT regressor from the loss its ``training_step`` returns, and a frozen timm stem left out of neuron pruning. Every model is built at random init and a tiny size."""

from __future__ import annotations

import lightning as L
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from trainers import make_trainer
from zoo import ZOO
from lightning_prune import NM, Distillation, Geometric, Neurons, OneShot, Pruning, Taylor, Wanda, to_semi_structured
from lightning_prune.layers import is_transposed

pytest.importorskip("transformers")
pytest.importorskip("timm")


class ThirdParty(L.LightningModule):
    """A third-party network as users wrap one: ``forward`` calls it and returns what it returns (a
    ``ModelOutput`` for Hugging Face models); ``training_step`` takes the logits with ``logits`` and
    gives the cross-entropy of every position (``labels_in_forward``: the model's own ``loss`` instead).

    Args:
        net: The network.
        example: Its example input (``example_input_array``).
        logits: The logits in ``net``'s output.
        labels_in_forward: Pass the labels to ``net`` (Hugging Face computes the loss) and return it.
        **net_kwargs: Keyword arguments of every ``net`` call (``use_cache=False``).
    """

    def __init__(self, net, example, logits=lambda out: out, labels_in_forward=False, **net_kwargs):
        super().__init__()
        self.net, self.logits, self.labels_in_forward, self.net_kwargs = net, logits, labels_in_forward, net_kwargs
        self.example_input_array = example

    def forward(self, x, labels=None):
        return self.net(x, **self.net_kwargs) if labels is None else self.net(x, labels=labels, **self.net_kwargs)

    def training_step(self, batch, batch_idx):
        x, y = batch
        if self.labels_in_forward:
            return self(x, labels=y).loss
        return F.cross_entropy(self.logits(self(x)).flatten(0, -2), y.flatten())

    def configure_optimizers(self):
        return torch.optim.Adam([p for p in self.parameters() if p.requires_grad], lr=1e-3)


def _loader(x, y):
    return DataLoader(TensorDataset(x, y), batch_size=8)


def _tokens(labels=None):
    """32 random sequences of 8 tokens (vocabulary 64) with ``labels`` classes, or the next token."""
    ids = torch.randint(0, 64, (32, 8), generator=torch.Generator().manual_seed(0))
    return _loader(ids, ids[:, 0] % labels if labels else ids.roll(-1, dims=1))


def _images():
    generator = torch.Generator().manual_seed(0)
    return _loader(torch.randn(32, 3, 16, 16, generator=generator), torch.randint(0, 10, (32,), generator=generator))


def _timm_resnet():
    from timm.models.resnet import BasicBlock, ResNet

    model = ResNet(BasicBlock, [1, 1, 1, 1], num_classes=10, channels=(8, 16, 32, 64), stem_width=8)
    return model, torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


def _fit(module, pruning, data, max_epochs, callbacks=()):
    make_trainer(max_epochs, [pruning, *callbacks], limit_train_batches=2, limit_val_batches=0,
                 num_sanity_val_steps=0).fit(module, data)


def _pruned_zeros(pruning):
    """Fraction of zeros over the weights of every layer the fit pruned."""
    weights = [layer.weight for layer in pruning.pruner.layers]
    return sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)


def _nonzeros_per_group(layer, m=4):
    """Non-zeros of every group of ``m`` consecutive input weights of every output row."""
    weight = layer.weight.detach()
    rows = (weight.transpose(0, 1) if is_transposed(layer.module) else weight).flatten(1)
    return (rows.reshape(rows.shape[0], -1, m) != 0).sum(-1)


class _TeacherSpy(L.Callback):
    def __init__(self, pruning):
        self.pruning, self.teachers = pruning, []

    def on_train_epoch_end(self, trainer, pl_module):
        self.teachers.append(None if self.pruning.teacher is None else type(self.pruning.teacher.net).__name__)


@pytest.mark.parametrize("labels_in_forward", [False, True], ids=["logits-in-training-step", "model-computes-loss"])
def test_distillation_on_a_hugging_face_bert_whose_forward_returns_a_model_output(labels_in_forward):
    """With labels passed, the ModelOutput's first tensor is the loss (a scalar): the logits are read by name."""
    L.seed_everything(0)
    module = ThirdParty(*ZOO["hf_bert_classifier"](), logits=lambda out: out.logits, labels_in_forward=labels_in_forward)
    pruning = Pruning(schedule=Geometric(target=0.75, per_cycle=0.5, warmup_epochs=1), distill=Distillation(temperature=2.0),
                      verbose=False)
    spy = _TeacherSpy(pruning)
    trainer = make_trainer(3, [pruning, spy], limit_train_batches=2, limit_val_batches=0, num_sanity_val_steps=0)
    trainer.fit(module, _tokens(labels=3))
    assert spy.teachers == [None, "BertForSequenceClassification", "BertForSequenceClassification"]
    term = float(trainer.callback_metrics["pruning/distillation"])  # the KL term the hook added, logged per epoch
    assert 0.0 < term < 10.0
    assert [row["sparsity"] for row in pruning.history] == pytest.approx([0.5, 0.75], abs=0.005)
    assert _pruned_zeros(pruning) == pytest.approx(0.75, abs=0.005)
    assert pruning.teacher is None and "training_step" not in vars(module)  # the hook left with the fit


def test_2_4_sparsity_in_a_fit_of_a_timm_resnet_and_its_export():
    L.seed_everything(0)
    module = ThirdParty(*_timm_resnet())
    pruning = Pruning(schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1), granularity=NM(2, 4), verbose=False)
    _fit(module, pruning, _images(), 3)
    assert [round(row["sparsity"], 4) for row in pruning.history] == [0.25, 0.5]  # 3:4, then 2:4
    assert pruning.pruner.excluded_layers == {"net.conv1": "147 inputs per row are not a multiple of NM.m=4"}  # 3 x 7 x 7
    assert len(pruning.pruner.layers) == 13  # 8 block convs, 4 downsampling convs (stem 64 -> 8 too), the classifier
    for layer in pruning.pruner.layers:
        assert bool((_nonzeros_per_group(layer) == 2).all()), layer.name
    module.eval()
    x = module.example_input_array
    masked = module(x)
    assert to_semi_structured(module) == {"net.fc": "NMLinear"}  # convolutions stay dense (masked)
    assert torch.allclose(module(x), masked, atol=1e-6)


def test_2_4_sparsity_in_a_fit_of_hugging_face_gpt2_conv1d_layers():
    L.seed_everything(0)
    module = ThirdParty(*ZOO["hf_gpt2"](), logits=lambda out: out.logits, use_cache=False)
    pruning = Pruning(schedule=Geometric(target=0.5, per_cycle=0.3, warmup_epochs=1), granularity=NM(2, 4), verbose=False)
    _fit(module, pruning, _tokens(), 3)
    assert [round(row["sparsity"], 4) for row in pruning.history] == [0.25, 0.5]
    kinds = sorted({type(layer.module).__name__ for layer in pruning.pruner.layers})
    assert kinds == ["Conv1D", "Linear"] and len(pruning.pruner.layers) == 9  # 4 Conv1D a block, 2 blocks, lm_head
    for layer in pruning.pruner.layers:  # Conv1D stores (inputs, outputs): groups run along dimension 0
        assert bool((_nonzeros_per_group(layer) == 2).all()), layer.name
    wte = module.net.transformer.wte.weight
    assert wte is module.net.lm_head.weight and float((wte == 0).float().mean()) == pytest.approx(0.5)  # tied: masked too
    module.eval()
    x = module.example_input_array
    masked = module(x).logits
    exported = to_semi_structured(module)
    assert exported == {layer.name: "NMLinear" for layer in pruning.pruner.layers}  # Conv1D layers too, as Linear
    assert not any(type(m).__name__ == "Conv1D" for m in module.modules())
    assert torch.allclose(module(x).logits, masked, atol=1e-5)


def test_wanda_in_a_fit_of_a_hugging_face_bert():
    L.seed_everything(0)
    module = ThirdParty(*ZOO["hf_bert_classifier"](), logits=lambda out: out.logits)
    pruning = Pruning(schedule=Geometric(target=0.6, per_cycle=0.4, warmup_epochs=1), criterion=Wanda(batches=2),
                      verbose=False)
    _fit(module, pruning, _tokens(labels=3), 3)
    assert [row["sparsity"] for row in pruning.history] == pytest.approx([0.4, 0.6], abs=0.005)
    assert len(pruning.pruner.layers) == 14 and not pruning.pruner.excluded_layers  # 6 Linear a layer, pooler, classifier
    assert _pruned_zeros(pruning) == pytest.approx(0.6, abs=0.005)
    logits = module.eval()(module.example_input_array).logits
    assert logits.shape == (2, 3) and bool(torch.isfinite(logits).all())


def test_taylor_heads_and_ffn_units_of_a_bert_regressor_from_the_loss_hugging_face_computes_in_training_step():
    """``Taylor()`` with no loss of its own takes its gradients from ``training_step``: here the MSE that
    BertForSequenceClassification computes for one regression target (the former default, cross-entropy
    of the logits, cannot take float targets). The units are those of that loss written out by hand."""
    from transformers import BertConfig, BertForSequenceClassification

    def hf_loss(module, batch):
        return module(batch[0], labels=batch[1]).loss

    ids = torch.randint(0, 64, (32, 8), generator=torch.Generator().manual_seed(0))
    data = _loader(ids, ids.float().mean(dim=1) / 64)  # a float target per sequence
    keeps = []
    for criterion in (Taylor(batches=2), Taylor(batches=2, loss=hf_loss)):
        L.seed_everything(0)
        net = BertForSequenceClassification(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2,
                                                       num_attention_heads=4, intermediate_size=64,
                                                       max_position_embeddings=16, num_labels=1))
        module = ThirdParty(net, ids[:2], logits=lambda out: out.logits, labels_in_forward=True)
        pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), criterion=criterion, granularity="neuron",
                          ranking="layer", verbose=False)
        _fit(module, pruning, data, 2)
        keeps.append(pruning.keep)
        attention = net.bert.encoder.layer[0].attention.self
        assert attention.num_attention_heads == 2 and attention.query.out_features == 16  # 2 of 4 heads, head_dim 8
        assert net.bert.encoder.layer[0].intermediate.dense.out_features == 32  # half of the FFN
    assert keeps[0].keys() == keeps[1].keys() and all(torch.equal(keeps[0][k], keeps[1][k]) for k in keeps[0])


def test_a_frozen_timm_stem_and_first_stage_are_left_out_of_neuron_removal():
    L.seed_everything(0)
    net, x = _timm_resnet()
    frozen = (net.conv1, net.bn1, net.layer1)
    for part in frozen:
        part.requires_grad_(False)
    module = ThirdParty(net, x)
    before = {name: p.clone() for name, p in module.named_parameters() if not p.requires_grad}
    assert len(before) == 12  # 4 convs, 4 BatchNorms' weight and bias
    pruning = Pruning(schedule=OneShot(target=0.5, warmup_epochs=1), granularity=Neurons(), verbose=False)
    _fit(module, pruning, _images(), 2)
    assert pruning.pruner.excluded_layers == {
        name: "frozen (no parameter requires a gradient)"
        for name in ("net.conv1", "net.layer1.0.conv1", "net.layer1.0.conv2", "net.layer1.0.downsample.0")}
    # the frozen layers keep every channel and value, layer1's outputs too (they feed its residual add and layer2)
    frozen_convs = [net.conv1, net.layer1[0].conv1, net.layer1[0].conv2, net.layer1[0].downsample[0]]
    assert [conv.out_channels for conv in frozen_convs] == [64, 8, 8, 8]
    assert all(torch.equal(p, before[name]) for name, p in module.named_parameters() if name in before)
    assert net.layer2[0].conv1.out_channels < 16 and net.layer4[0].conv2.out_channels < 64  # the rest lost neurons
    assert net.fc.out_features == 10 and pruning.history[0]["sparsity"] == pytest.approx(0.5, abs=0.02)
    assert module.eval()(x).shape == (2, 10)
