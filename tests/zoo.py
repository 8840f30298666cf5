"""The model zoo: third-party architectures users bring, at random init and tiny sizes.

Each entry builds ``(model, example_input)``. Sizes are cut down (layers, widths, image size) so
that the whole zoo traces, prunes and checks in seconds on a CPU, while keeping each family's
structure: grouped and depthwise convolutions, squeeze-excitation, channel shuffle, dense
concatenation, LayerNorm'd channels, attention heads, GPT-2's ``Conv1D``, rotary embeddings and
grouped-query attention.
"""

from __future__ import annotations

import copy
import re
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch
from torch import nn


def _image(size: int = 16, channels: int = 3, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, channels, size, size, generator=torch.Generator().manual_seed(0))


def _tokens(vocab: int = 64, length: int = 8, batch: int = 2) -> torch.Tensor:
    return torch.randint(0, vocab, (batch, length), generator=torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- torchvision
def _tv(name: str, size: int = 32, **kwargs: Any) -> tuple[nn.Module, Any]:
    import torchvision.models as tvm

    return getattr(tvm, name)(weights=None, num_classes=10, **kwargs), _image(size)


def _tv_resnet(block: str, layers: list[int], **kwargs: Any) -> tuple[nn.Module, Any]:
    from torchvision.models import resnet

    return resnet.ResNet(getattr(resnet, block), layers, num_classes=10, **kwargs), _image()


def _tv_regnet(se: float | None) -> tuple[nn.Module, Any]:
    from torchvision.models import regnet

    params = regnet.BlockParams.from_init_params(depth=4, w_0=16, w_a=8.0, w_m=2.0, group_width=8, se_ratio=se)
    return regnet.RegNet(params, num_classes=10, stem_width=16), _image()


def _tv_convnext() -> tuple[nn.Module, Any]:
    from torchvision.models import convnext

    setting = [convnext.CNBlockConfig(16, 32, 1), convnext.CNBlockConfig(32, None, 1)]
    return convnext.ConvNeXt(setting, num_classes=10), _image()


def _tv_vit() -> tuple[nn.Module, Any]:
    from torchvision.models.vision_transformer import VisionTransformer

    model = VisionTransformer(image_size=16, patch_size=4, num_layers=2, num_heads=4, hidden_dim=32, mlp_dim=64, num_classes=10)
    return model, _image()


def _tv_vit_split() -> tuple[nn.Module, Any]:
    from lightning_prune import split_attention

    model, x = _tv_vit()
    return split_attention(model), x  # nn.MultiheadAttention's heads as units


def _tv_swin() -> tuple[nn.Module, Any]:
    from torchvision.models.swin_transformer import SwinTransformer

    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[2, 4], window_size=[4, 4], num_classes=10)
    return model, _image()


def _tv_vgg() -> tuple[nn.Module, Any]:
    import torchvision.models as tvm

    model = tvm.vgg11_bn(weights=None, num_classes=10)  # its classifier (25088-4096-4096) cut to 64 wide
    model.classifier = nn.Sequential(nn.Linear(512 * 7 * 7, 64), nn.ReLU(True), nn.Dropout(), nn.Linear(64, 64), nn.ReLU(True),
                                     nn.Dropout(), nn.Linear(64, 10))
    return model, _image(32)


def _tv_shufflenet() -> tuple[nn.Module, Any]:
    from torchvision.models.shufflenetv2 import ShuffleNetV2

    return ShuffleNetV2([1, 1, 1], [8, 16, 32, 64, 128], num_classes=10), _image()


def _tv_densenet() -> tuple[nn.Module, Any]:
    from torchvision.models.densenet import DenseNet

    return DenseNet(growth_rate=8, block_config=(2, 2), num_init_features=16, bn_size=2, num_classes=10), _image()


# ----------------------------------------------------------------------------- timm
def _timm(name: str, size: int = 32, **kwargs: Any) -> tuple[nn.Module, Any]:
    import timm

    return timm.create_model(name, pretrained=False, num_classes=10, **kwargs), _image(size)


def _timm_mixer() -> tuple[nn.Module, Any]:
    from timm.models.mlp_mixer import MlpMixer

    return MlpMixer(num_classes=10, img_size=16, patch_size=4, num_blocks=2, embed_dim=32), _image()


# ----------------------------------------------------------------------------- Hugging Face
def _hf_bert(classify: bool = False) -> tuple[nn.Module, Any]:
    from transformers import BertConfig, BertForSequenceClassification, BertModel

    config = BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=16, num_labels=3)
    model = BertForSequenceClassification(config) if classify else BertModel(config)
    return model, _tokens()


def _hf_gpt2() -> tuple[nn.Module, Any]:
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(vocab_size=64, n_positions=16, n_embd=32, n_layer=2, n_head=4)
    return GPT2LMHeadModel(config), _tokens()


def _hf_llama() -> tuple[nn.Module, Any]:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=16)
    return LlamaForCausalLM(config), _tokens()


def _hf_vit() -> tuple[nn.Module, Any]:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, num_labels=10)
    return ViTForImageClassification(config), _image()


#: Family name to builder. Names say where the model comes from.
ZOO: dict[str, Callable[[], tuple[nn.Module, Any]]] = {
    "tv_resnet": partial(_tv_resnet, "BasicBlock", [1, 1, 1, 1]),
    "tv_resnext": partial(_tv_resnet, "Bottleneck", [1, 1, 1, 1], groups=4, width_per_group=8),
    "tv_wide_resnet": partial(_tv_resnet, "Bottleneck", [1, 1, 1, 1], width_per_group=128),
    "tv_resnet_groupnorm": partial(_tv_resnet, "BasicBlock", [1, 1, 1, 1], norm_layer=partial(nn.GroupNorm, 8)),
    "tv_vgg": _tv_vgg,
    "tv_densenet": _tv_densenet,
    "tv_googlenet": partial(_tv, "googlenet", size=32, aux_logits=False, init_weights=True),
    "tv_inception_v3": partial(_tv, "inception_v3", size=75, aux_logits=False, init_weights=True),
    "tv_mobilenet_v2": partial(_tv, "mobilenet_v2", width_mult=0.25),
    "tv_mobilenet_v3": partial(_tv, "mobilenet_v3_small"),
    "tv_mnasnet": partial(_tv, "mnasnet0_5"),
    "tv_efficientnet": partial(_tv, "efficientnet_b0"),
    "tv_efficientnet_v2": partial(_tv, "efficientnet_v2_s"),
    "tv_regnet_x": partial(_tv_regnet, None),
    "tv_regnet_y": partial(_tv_regnet, 0.25),
    "tv_shufflenet_v2": _tv_shufflenet,
    "tv_squeezenet": partial(_tv, "squeezenet1_1"),
    "tv_convnext": _tv_convnext,
    "tv_vit": _tv_vit,
    "tv_vit_split": _tv_vit_split,
    "tv_swin": _tv_swin,
    "timm_resnet": partial(_timm, "resnet10t"),
    "timm_regnet": partial(_timm, "regnetx_002"),
    "timm_convnext": partial(_timm, "convnext_atto"),
    "timm_efficientnet": partial(_timm, "efficientnet_b0"),
    "timm_mobilenetv3": partial(_timm, "mobilenetv3_small_050"),
    "timm_ghostnet": partial(_timm, "ghostnet_050"),
    "timm_vit": partial(_timm, "vit_tiny_patch16_224", size=16, img_size=16, patch_size=4, depth=2),
    "timm_deit": partial(_timm, "deit_tiny_patch16_224", size=16, img_size=16, patch_size=4, depth=2),
    "timm_mixer": _timm_mixer,
    "hf_bert": _hf_bert,
    "hf_bert_classifier": partial(_hf_bert, classify=True),
    "hf_gpt2": _hf_gpt2,
    "hf_llama": _hf_llama,
    "hf_vit": _hf_vit,
}


@dataclass
class Outcome:
    """What :func:`prune_and_compare` found for one model.

    Attributes:
        dense: Parameters of the dense model.
        refusal: The ``UnsupportedModelError`` that ``Pruner(...)`` raised (then nothing else is set).
        untouched: After a refusal, whether every parameter and buffer is as it was (names, shapes, values).
        groups: Neuron groups pruned (refused ones not counted).
        refused: Refused groups, each with its reason.
        removal: The removal done (the checkpoint plan's step).
        compact: Parameters of the compact model.
        expected: The masked model's output tensors.
        found: The compact model's output tensors.
    """

    dense: int
    refusal: Exception | None = None
    untouched: bool | None = None
    groups: int = 0
    refused: dict[str, str] = field(default_factory=dict)
    removal: dict[str, list[int]] = field(default_factory=dict)
    compact: int = 0
    expected: list[torch.Tensor] = field(default_factory=list)
    found: list[torch.Tensor] = field(default_factory=list)

    @property
    def fraction(self) -> float:
        """The compact model's parameters as a fraction of the dense model's."""
        return self.compact / self.dense

    @property
    def error(self) -> float:
        """Largest masked-vs-compact difference over all outputs, each relative to its scale (max(1, max|y|))."""
        return max(float((b - a).abs().max()) / max(1.0, float(a.abs().max())) for a, b in zip(self.expected, self.found))

    @property
    def exact(self) -> bool:
        """Masked == compact: the same output shapes, at most 1e-5 apart relative to the output scale."""
        same_shapes = [a.shape for a in self.expected] == [b.shape for b in self.found]
        return bool(self.expected) and same_shapes and self.error <= 1e-5


def _count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def outputs(model: nn.Module, x: Any) -> list[torch.Tensor]:
    """Every floating output tensor of the model on ``x``, without gradients."""
    from lightning_prune.tracing import call, output_tensors

    with torch.no_grad():
        return output_tensors(call(model, x))


def prune_and_compare(model: nn.Module, x: Any, target: float = 0.3) -> Outcome:
    """Plan a global neuron prune (L2, scores normalised by their mean), mask a copy, remove in place, compare.

    ``model`` (put in eval mode) ends compact. ``Pruner(...)`` raising ``UnsupportedModelError`` is
    a refusal: it is returned, with whether the model was left untouched. Any other error propagates.
    """
    from lightning_prune.config import Global
    from lightning_prune.criteria import Magnitude
    from lightning_prune.masks import apply_masks
    from lightning_prune.pruner import Pruner
    from lightning_prune.surgery import UnsupportedModelError

    model.eval()
    outcome = Outcome(dense=_count(model))
    before = {key: value.clone() for key, value in model.state_dict().items()}
    try:
        pruner = Pruner(model, x, Magnitude(2), granularity="neuron", ranking=Global(normalize="mean"))
    except UnsupportedModelError as error:
        after = model.state_dict()
        outcome.refusal = error
        outcome.untouched = before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
        return outcome
    del before
    keep = pruner.plan(pruner.dense_keep(), target, 0)
    masked = copy.deepcopy(model)
    apply_masks(masked, pruner.parameter_masks(keep))
    outcome.expected = outputs(masked, x)
    outcome.groups, outcome.refused = len(pruner.structure.groups), dict(pruner.structure.refused)
    outcome.removal, _ = pruner.commit(keep)
    outcome.found, outcome.compact = outputs(model, x), _count(model)
    return outcome


def report(zoo: Mapping[str, Callable[[], tuple[nn.Module, Any]]] | None = None, names: list[str] | None = None) -> str:
    """A markdown table: each zoo model pruned at a 30 % global unit target (L2, normalised), or refused."""
    zoo = ZOO if zoo is None else zoo
    rows = ["| model | parameters | after 30 % of units | masked == compact | groups pruned / refused | why refused |",
            "|---|---:|---:|---|---|---|"]
    for name in names or list(zoo):
        torch.manual_seed(0)
        model, x = zoo[name]()
        dense = _count(model)
        try:
            outcome = prune_and_compare(model, x)
        except Exception as error:  # not a clean refusal: a library bug (the test marks it xfail)
            rows.append(f"| {name} | {dense:,} | ERROR | - | - | {type(error).__name__}: {str(error)[:120]} |")
            continue
        if outcome.refusal is not None:
            error = outcome.refusal
            rows.append(f"| {name} | {dense:,} | refused | - | - | {type(error).__name__}: {str(error)[:120]} |")
            continue
        kinds = Counter(re.split(r" '| \(|:", reason)[0] for reason in outcome.refused.values())
        why = "; ".join(f"{count}x {kind}" for kind, count in kinds.most_common(3)) or "-"
        rows.append(f"| {name} | {dense:,} | {outcome.fraction:.2f} | {'yes' if outcome.exact else 'NO'} | "
                    f"{outcome.groups} / {len(outcome.refused)} | {why} |")
    return "\n".join(rows)


#: The models whose channels that feed a channel-mixing norm are refused by default and are pruned with
#: ``Neurons(norm_coupled="remove")`` (tests/test_norm_coupled.py), from either zoo.
NORM_COUPLED = ["timm_vit", "timm_deit", "hf_vit", "hf_bert_classifier", "hf_llama", "tv_convnext", "timm_convnext",
                "tv_vit_split", "hf_gpt2", "issue_channel_layernorm", "issue_mha_layernorm_split",
                "issue_transformer_encoder_split"]


def build(name: str) -> tuple[nn.Module, Any]:
    """A model of either zoo (this one or tests/zoo_torch_pruning.py), seeded."""
    from zoo_torch_pruning import TP_ZOO

    torch.manual_seed(0)
    return (ZOO.get(name) or TP_ZOO[name])()


def norm_coupled_report(names: list[str] | None = None) -> str:
    """A markdown table: parameters left after 30 % of units by default and with ``norm_coupled="remove"``."""
    from lightning_prune.config import Global, Neurons
    from lightning_prune.criteria import Magnitude
    from lightning_prune.pruner import Pruner

    rows = ["| model | parameters | after 30 % of units, default | with `norm_coupled=\"remove\"` | normed groups / groups |",
            "|---|---:|---:|---:|---|"]
    for name in names or NORM_COUPLED:
        model, x = build(name)
        dense = _count(model)
        default = prune_and_compare(model, x).compact / dense
        model, x = build(name)
        pruner = Pruner(model.eval(), x, Magnitude(2), Neurons(norm_coupled="remove"), Global(normalize="mean"))
        normed, groups = len(pruner.structure.inexact), len(pruner.structure.groups)
        pruner.commit(pruner.plan(pruner.dense_keep(), 0.3, 0))
        rows.append(f"| {name} | {dense:,} | {default:.2f} | {_count(model) / dense:.2f} | {normed} / {groups} |")
    return "\n".join(rows)


if __name__ == "__main__":
    import sys
    import warnings

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    args = sys.argv[1:]
    if "--norm-coupled" in args:  # channels that feed a norm, removed at the prune step
        args.remove("--norm-coupled")
        print(norm_coupled_report(args or None))
    elif "--torch-pruning" in args:  # Torch-Pruning's own test architectures (tests/zoo_torch_pruning.py)
        from zoo_torch_pruning import TP_ZOO

        args.remove("--torch-pruning")
        print(report(TP_ZOO, args or None))
    else:
        print(report(ZOO, args or None))
