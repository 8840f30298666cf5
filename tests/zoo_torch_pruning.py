"""Torch-Pruning's own test architectures, rewritten small: the second half of the model zoo.

Issue 13's acceptance asks the zoo to hold every architecture that Torch-Pruning's repository
builds in its ``tests/`` (tag v1.6.1, the version we use; its ``tests/`` is unchanged since). These
are our own modules with tiny widths and inputs, written from reading those tests, one builder
``() -> (model, example_input)`` per architecture, like :data:`zoo.ZOO`:

- ``tp_conv_skip``: ``tests/graph_drawing.py`` (three convs, the first one's output added back in
  place, ``x += skip``).
- ``tp_cascaded_concat``: ``tests/test_cascaded_concat.py`` (four conv-BN branches of different widths
  joined by nested channel concatenations).
- ``tp_wide_deep``: ``tests/test_concat.py`` (a wide-and-deep MLP: reshape, Linear-BatchNorm1d-ReLU-
  Dropout, a one-unit and a three-unit branch concatenated on the last dimension, sigmoid).
- ``tp_concat_split``: ``tests/test_concat_split.py`` (a split whose first part is concatenated with a
  parallel path and whose second part is added back after the next conv).
- ``tp_custom_layer``: ``tests/test_customized_layer.py`` (a module with its own per-feature scale and
  shift parameters around an inner Linear, after an L2 normalisation of the features).
- ``tp_unused_parameter``: ``tests/test_unused_parameters.py`` (the same, plus a parameter the forward
  never uses).
- ``tp_lenet5``: ``tests/test_dependency_lenet.py`` (LeNet-5: convs, pooling, ``view`` to Linears, a ReLU
  after the output layer).
- ``tp_fc_residual``: ``tests/test_fully_connected_layers.py`` (fully connected layers with a residual
  addition).
- ``tp_multi_io``: ``tests/test_multiple_inputs_and_outputs.py`` (two inputs, their branches
  concatenated, three outputs: both branches' activations and the head's).
- ``tp_spatial_concat``: ``tests/test_non_feature_dim_cat.py`` (two branches concatenated along the
  height, a conv, a split along the height again).
- ``tp_reshape_deconv``: ``tests/test_reshape.py`` (a Linear reshaped with ``view`` into a feature map,
  two ``ConvTranspose2d``, ``flatten``, a Linear); ``tp_reshape_deconv_narrow`` is the same at 8
  instead of 32 channels, where the library fails differently (README, tests/test_zoo.py's ``BUGS``).
- ``tp_single_channel``: ``tests/test_single_channel_output.py`` (conv-BN layers ending in one channel
  and a one-entry BatchNorm).
- ``tp_split_shared``: ``tests/test_split.py`` (a three-way channel split, one conv block applied to two
  of the parts, three outputs).
- ``tp_convtranspose``: ``tests/test_pruner.py`` and ``tests/test_isomorphic.py`` (conv-BN, a strided
  ``ConvTranspose2d``-BN, conv-BN).
- ``tv_alexnet``: ``tests/test_pruning_fn.py`` (torchvision's AlexNet; its classifier cut to 64 wide).

Not repeated here, because ``tests/zoo.py`` already has the same architecture: resnet18
(``tests/test_dependency_graph.py``, ``test_group_prune.py``, ``test_load.py``, ``test_interactive_pruner.py``,
``test_hessian_importance.py``, ``test_taylor_importance.py``, ``test_importance_reduction.py``,
``test_score_normalization.py``, ``test_print_tool.py``, ``test_benchmark.py``: ``tv_resnet``), resnet50
(``test_pruner.py``, ``test_isomorphic.py``, ``test_flops.py``, ``test_soft_pruning.py``: the Bottleneck graph of
``tv_wide_resnet``), densenet121 (``test_regularization.py``: ``tv_densenet``), convnext_base with its
``layer_scale`` (``test_unwrapped_parameters.py``: ``tv_convnext``), vit_b_16 (``test_serialization.py``:
``tv_vit``), and ``test_backward.py``'s torchvision families: ViT, ConvNeXt, DenseNet, EfficientNet B0-B7
and V2, GoogLeNet, Inception v3, MNASNet, MobileNet V2/V3, RegNetY, ResNet, ResNeXt, Wide ResNet,
SqueezeNet (1.0 has 1.1's Fire modules) and VGG with BatchNorm (``tv_*`` entries; VGG without BatchNorm
is the plain conv-ReLU chain of ``tv_alexnet``).

Torch-Pruning's ``tests/`` build no unbind, LayerNorm, GroupNorm, InstanceNorm, embedding, expand,
grouped or depthwise module of their own, but issue 13's filing names several of these among the
failures it measured; the ``issue_*`` entries are small modules for them:

- ``issue_mha_layernorm``: a pre-norm transformer block with ``nn.MultiheadAttention`` and ``nn.LayerNorm``;
  ``issue_transformer_encoder``: PyTorch's own ``nn.TransformerEncoder``. Their ``_split`` versions are
  the same models after ``lightning_prune.split_attention`` (heads as units).
- ``issue_channel_layernorm``: convs with a LayerNorm over channels (``permute``, LayerNorm, ``permute`` back).
- ``issue_groupnorm`` / ``issue_instancenorm``: conv-GroupNorm and conv-InstanceNorm(affine) stacks.
- ``issue_grouped_depthwise``: a grouped conv followed by a depthwise and a pointwise conv.
- ``issue_unbind``: attention with one fused qkv projection split by ``reshape`` and ``unbind``.
- ``issue_embedding``: ``nn.Embedding`` into an MLP.
- ``issue_expand``: a channel gate broadcast with ``expand`` over the feature map.

Transposed convolutions are prunable layers (their output channels are units); these are the
shapes users bring them in:

- ``issue_dcgan_generator``: the generator of PyTorch's DCGAN example (a latent ``(N, nz, 1, 1)``
  through ``ConvTranspose2d``-BN-ReLU stages to a ``Tanh`` image), at ``ngf=8``.
- ``issue_unet``: a two-level U-Net whose decoder upsamples with ``ConvTranspose2d`` and
  concatenates the encoder's skip connection.
- ``issue_grouped_convtranspose``: a grouped ``ConvTranspose2d`` (left out of the units: Torch-Pruning
  slices grouped transposed convs inexactly) between two convs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


def _randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _conv_bn(c_in: int, c_out: int, deep: bool = False) -> nn.Sequential:
    """A 1x1 conv with BatchNorm; ``deep``: two of them with a GELU between."""
    first = [nn.Conv2d(c_in, c_out if not deep else c_in, 1), nn.BatchNorm2d(c_out if not deep else c_in)]
    rest = [nn.GELU(), nn.Conv2d(c_in, c_out, 1), nn.BatchNorm2d(c_out)] if deep else []
    return nn.Sequential(*first, *rest)


# ----------------------------------------------------------------------------- Torch-Pruning's tests/
class ConvSkip(nn.Module):
    """tests/graph_drawing.py: conv1's output added in place after conv2 and conv3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 16, 3, padding=1)
        self.head = nn.Linear(16, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        skip = x
        x = self.conv3(F.relu(self.conv2(x)))
        x += skip
        return self.head(F.relu(x).mean((2, 3)))


class CascadedConcat(nn.Module):
    """tests/test_cascaded_concat.py: branches of width c, 2c, 3c, 6c concatenated one after another."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.a, self.b = _conv_bn(c, c, deep=True), _conv_bn(c, 2 * c, deep=True)
        self.c, self.d = _conv_bn(c, 3 * c), _conv_bn(c, 6 * c)
        self.out = nn.Conv2d(12 * c, 10, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([self.a(x), self.b(x)], dim=1)
        y = torch.cat([y, self.c(x)], dim=1)
        return self.out(torch.cat([y, self.d(x)], dim=1))


class WideDeep(nn.Module):
    """tests/test_concat.py: a deep MLP (one output unit) and a wide Linear (three) concatenated."""

    def __init__(self, features: int = 32) -> None:
        super().__init__()
        self.deep = nn.Sequential(nn.Linear(features, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2),
                                  nn.Linear(32, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
        self.wide = nn.Linear(features, 3)
        self.out = nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.reshape(x.shape[0], -1)
        return torch.sigmoid(self.out(torch.cat([self.wide(x), self.deep(x)], dim=-1)))


class ConcatSplit(nn.Module):
    """tests/test_concat_split.py: split the main path; part one joins a side path, part two is added back."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.main = _conv_bn(c, 2 * c, deep=True)
        self.side = _conv_bn(c, c, deep=True)
        self.merge = _conv_bn(2 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        side, y = self.side(x), self.main(x)
        first = self.merge[0].in_channels - self.side[-1].num_features  # sizes read from the layers, as there
        joined, added = torch.split(y, [first, y.shape[1] - first], dim=1)
        return self.merge(torch.cat([joined, side], dim=1)) + added


class ScaledNormLinear(nn.Module):
    """tests/test_customized_layer.py's custom layer: features L2-normalised, scaled and shifted by
    the module's own parameters, then an inner Linear."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(1 + 0.1 * _randn(features))
        self.shift = nn.Parameter(0.1 * _randn(features))
        self.fc = nn.Linear(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x / x.pow(2).sum(dim=1, keepdim=True).sqrt()
        return self.fc(x * self.scale + self.shift)


class CustomLayerNet(nn.Module):
    """tests/test_customized_layer.py (``unused``: tests/test_unused_parameters.py)."""

    def __init__(self, unused: bool = False) -> None:
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.custom = ScaledNormLinear(32)
        self.fc2 = nn.Linear(32, 10)
        if unused:
            self.unused = nn.Parameter(torch.zeros(10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.custom(F.relu(self.fc1(x))))


class LeNet5(nn.Module):
    """tests/test_dependency_lenet.py: LeNet-5 on 28x28, flattened with ``view``, ReLU after the output."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(256, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.max_pool2d(F.relu(self.conv1(x)), 2)
        y = F.max_pool2d(F.relu(self.conv2(y)), 2)
        y = y.view(y.shape[0], -1)
        return F.relu(self.fc3(F.relu(self.fc2(F.relu(self.fc1(y))))))


class FCResidual(nn.Module):
    """tests/test_fully_connected_layers.py: fc1's activation added to fc2's."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(16, 32), nn.Linear(32, 32), nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = F.relu(self.fc1(x))
        return self.fc3(F.relu(self.fc2(skip)) + skip)


class MultiIO(nn.Module):
    """tests/test_multiple_inputs_and_outputs.py: two inputs, concatenated branches, three outputs."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(12, 16), nn.Linear(8, 16)
        self.mix = nn.Linear(32, 48)
        self.out = nn.Linear(48, 5)

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, b = F.relu(self.a(a)), F.relu(self.b(b))
        return self.out(F.relu(self.mix(torch.cat([a, b], dim=1)))), a, b


class SpatialConcat(nn.Module):
    """tests/test_non_feature_dim_cat.py: concatenation and split along the height, not the channels."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.top, self.bottom = _conv_bn(c, c, deep=True), _conv_bn(c, c, deep=True)
        self.mix, self.head = nn.Conv2d(c, c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = self.top(x), self.bottom(x)
        y = self.mix(torch.cat([top, bottom], dim=2))
        y, _ = torch.split(y, [top.shape[2], bottom.shape[2]], dim=2)
        return self.head(y)


class ReshapeDeconv(nn.Module):
    """tests/test_reshape.py: a Linear viewed as a 2x2 map of ``up1.in_channels`` channels, two
    transposed convs halving the channels, flatten, a Linear."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.fc = nn.Linear(16, channels * 2 * 2)
        self.up1 = nn.ConvTranspose2d(channels, channels // 2, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(channels // 2, channels // 4, 4, stride=2, padding=1)
        self.head = nn.Linear(channels // 4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.fc(x)).view(-1, self.up1.in_channels, 2, 2)
        x = F.relu(self.up2(F.relu(self.up1(x))))
        return self.head(torch.flatten(x, 1))


class SingleChannel(nn.Module):
    """tests/test_single_channel_output.py: conv-BN-ReLU layers ending in one channel."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 2, stride=2), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 1, 3, padding=1), nn.BatchNorm2d(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.conv2(x)))
        return F.relu(self.bn3(self.conv3(x)))


class SplitShared(nn.Module):
    """tests/test_split.py: the stem's channels split in three; one block is applied to two parts."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.stem = _conv_bn(c, 4 * c, deep=True)
        self.shared = _conv_bn(c, c)
        self.wide = _conv_bn(2 * c, c)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        one, two = self.shared[0].in_channels, self.wide[0].in_channels
        a, b, c = torch.split(x, [one, one, two], dim=1)
        return self.shared(a), self.shared(b), self.wide(c)


class ConvTransposeNet(nn.Module):
    """tests/test_pruner.py and tests/test_isomorphic.py: conv-BN, stride-2 ConvTranspose2d-BN, conv-BN."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.up, self.bn2 = nn.ConvTranspose2d(16, 32, 2, stride=2), nn.BatchNorm2d(32)
        self.conv3, self.bn3 = nn.Conv2d(32, 8, 3, padding=1), nn.BatchNorm2d(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.relu(self.bn2(self.up(x)))
        return F.relu(self.bn3(self.conv3(x)))


def _alexnet() -> tuple[nn.Module, Any]:
    """tests/test_pruning_fn.py: torchvision's AlexNet, its 9216-4096-4096 classifier cut to 64 wide."""
    import torchvision.models as tvm

    model = tvm.alexnet(weights=None, num_classes=10)
    model.classifier = nn.Sequential(nn.Dropout(), nn.Linear(256 * 6 * 6, 64), nn.ReLU(True), nn.Dropout(),
                                     nn.Linear(64, 64), nn.ReLU(True), nn.Linear(64, 10))
    return model, _randn(2, 3, 64, 64)


# ----------------------------------------------------------------------------- named by issue 13's filing
class AttentionBlock(nn.Module):
    """A pre-norm transformer block: LayerNorm, ``nn.MultiheadAttention``, LayerNorm, FFN."""

    def __init__(self, d: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d)
        self.norm1, self.norm2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = nn.MultiheadAttention(d, heads, batch_first=True)
        self.ffn = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d))
        self.head = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        x = x + self.ffn(self.norm2(x))
        return self.head(x.mean(1))


class TransformerEncoderNet(nn.Module):
    """``nn.TransformerEncoder`` (two post-norm ``nn.TransformerEncoderLayer``\ s, batch first) between a
    token embedding ``Linear`` and a classifier on the mean token."""

    def __init__(self, d: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(8, d)
        layer = nn.TransformerEncoderLayer(d, heads, dim_feedforward=4 * d, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.head = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(x)).mean(1))


def _split(model: nn.Module, x: Any) -> tuple[nn.Module, Any]:
    from lightning_prune import split_attention

    return split_attention(model), x


class ChannelLayerNorm(nn.Module):
    """Convs with a LayerNorm over the channels of every pixel (ConvNeXt's)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.norm, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.LayerNorm(16), nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.conv1(x).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return self.head(F.relu(self.conv2(F.relu(x))).mean((2, 3)))


class NormStack(nn.Module):
    """conv-norm-ReLU twice, pooled into a Linear; the norm is built by ``norm(channels)``."""

    def __init__(self, norm: Callable[[int], nn.Module]) -> None:
        super().__init__()
        self.conv1, self.norm1 = nn.Conv2d(3, 16, 3, padding=1), norm(16)
        self.conv2, self.norm2 = nn.Conv2d(16, 32, 3, padding=1), norm(32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm1(self.conv1(x)))
        return self.head(F.relu(self.norm2(self.conv2(x))).mean((2, 3)))


class GroupedDepthwise(nn.Module):
    """A conv, a grouped conv (4 groups), a depthwise conv, a pointwise conv."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 16, 3, padding=1)
        self.grouped = nn.Conv2d(16, 32, 3, padding=1, groups=4)
        self.depthwise = nn.Conv2d(32, 32, 3, padding=1, groups=32)
        self.pointwise = nn.Conv2d(32, 32, 1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.grouped(F.relu(self.stem(x))))
        x = F.relu(self.pointwise(F.relu(self.depthwise(x))))
        return self.head(x.mean((2, 3)))


class UnbindAttention(nn.Module):
    """Self-attention with one fused qkv projection, split into q, k, v by ``reshape`` and ``unbind``."""

    def __init__(self, d: int = 16, heads: int = 4) -> None:
        super().__init__()
        self.heads = heads
        self.embed = nn.Linear(8, d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.head = nn.Linear(d, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        b, t, d = x.shape
        q, k, v = self.qkv(x).reshape(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4).unbind(0)
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, t, d)
        return self.head(F.relu(self.proj(y)).mean(1))


class EmbeddingMLP(nn.Module):
    """``nn.Embedding`` tokens averaged into an MLP."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(32, 8)
        self.fc1, self.fc2 = nn.Linear(8, 64), nn.Linear(64, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.relu(self.fc1(self.embed(tokens).mean(1))))


class ExpandGate(nn.Module):
    """A per-channel gate computed from pooled features, broadcast with ``expand`` over the map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.gate, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.Linear(16, 16), nn.Conv2d(16, 32, 3, padding=1)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        g = torch.sigmoid(self.gate(x.mean((2, 3))))[:, :, None, None].expand(-1, -1, x.shape[2], x.shape[3])
        return self.head(F.relu(self.conv2(x * g)).mean((2, 3)))


class DCGANGenerator(nn.Module):
    """PyTorch examples' DCGAN generator (``examples/dcgan/main.py``), 8x8 → 32x32 at ``ngf=8``."""

    def __init__(self, nz: int = 16, ngf: int = 8, channels: int = 3) -> None:
        super().__init__()
        def up(c_in: int, c_out: int, stride: int, padding: int) -> list[nn.Module]:
            return [nn.ConvTranspose2d(c_in, c_out, 4, stride, padding, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(True)]

        self.main = nn.Sequential(*up(nz, ngf * 4, 1, 0), *up(ngf * 4, ngf * 2, 2, 1), *up(ngf * 2, ngf, 2, 1),
                                  nn.ConvTranspose2d(ngf, channels, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.main(z)


class UNet(nn.Module):
    """A two-level U-Net: conv encoder, max-pool, bottleneck, ``ConvTranspose2d`` up, skip concat, conv decoder."""

    def __init__(self, c: int = 8) -> None:
        super().__init__()
        self.down1, self.down2 = _conv_bn(3, c), _conv_bn(c, 2 * c)
        self.bottom = _conv_bn(2 * c, 4 * c)
        self.up2, self.dec2 = nn.ConvTranspose2d(4 * c, 2 * c, 2, stride=2), _conv_bn(4 * c, 2 * c)
        self.up1, self.dec1 = nn.ConvTranspose2d(2 * c, c, 2, stride=2), _conv_bn(2 * c, c)
        self.head = nn.Conv2d(c, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        one = self.down1(x)
        two = self.down2(F.max_pool2d(one, 2))
        bottom = self.bottom(F.max_pool2d(two, 2))
        two = self.dec2(torch.cat([self.up2(bottom), two], dim=1))
        return self.head(self.dec1(torch.cat([self.up1(two), one], dim=1)))


class GroupedConvTranspose(nn.Module):
    """conv → grouped ``ConvTranspose2d`` (4 groups) → conv."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.up, self.conv2 = nn.Conv2d(3, 16, 3, padding=1), nn.ConvTranspose2d(16, 16, 2, 2, groups=4), \
            nn.Conv2d(16, 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv2(F.relu(self.up(F.relu(self.conv1(x)))))


def _image(size: int = 8, channels: int = 3) -> torch.Tensor:
    return _randn(2, channels, size, size)


#: Model name to builder: ``tp_*`` mirror Torch-Pruning's tests, ``tv_alexnet`` is torchvision's,
#: ``issue_*`` are the structures issue 13's filing names that those tests do not build.
TP_ZOO: dict[str, Callable[[], tuple[nn.Module, Any]]] = {
    "tp_conv_skip": lambda: (ConvSkip(), _image()),
    "tp_cascaded_concat": lambda: (CascadedConcat(), _image(7, 8)),
    "tp_wide_deep": lambda: (WideDeep(), _randn(4, 2, 16)),
    "tp_concat_split": lambda: (ConcatSplit(), _image(7, 8)),
    "tp_custom_layer": lambda: (CustomLayerNet(), _randn(4, 16)),
    "tp_unused_parameter": lambda: (CustomLayerNet(unused=True), _randn(4, 16)),
    "tp_lenet5": lambda: (LeNet5(), _image(28, 1)),
    "tp_fc_residual": lambda: (FCResidual(), _randn(4, 16)),
    "tp_multi_io": lambda: (MultiIO(), (_randn(4, 12), _randn(4, 8))),
    "tp_spatial_concat": lambda: (SpatialConcat(), _image(5, 8)),
    "tp_reshape_deconv": lambda: (ReshapeDeconv(), _randn(4, 16)),
    "tp_reshape_deconv_narrow": lambda: (ReshapeDeconv(channels=8), _randn(4, 16)),
    "tp_single_channel": lambda: (SingleChannel(), _image(8)),
    "tp_split_shared": lambda: (SplitShared(), _image(5, 8)),
    "tp_convtranspose": lambda: (ConvTransposeNet(), _image(8)),
    "tv_alexnet": _alexnet,
    "issue_mha_layernorm": lambda: (AttentionBlock(), _randn(2, 6, 8)),
    "issue_mha_layernorm_split": lambda: _split(AttentionBlock(), _randn(2, 6, 8)),
    "issue_transformer_encoder": lambda: (TransformerEncoderNet(), _randn(2, 6, 8)),
    "issue_transformer_encoder_split": lambda: _split(TransformerEncoderNet(), _randn(2, 6, 8)),
    "issue_channel_layernorm": lambda: (ChannelLayerNorm(), _image(8)),
    "issue_groupnorm": lambda: (NormStack(lambda c: nn.GroupNorm(4, c)), _image(8)),
    "issue_instancenorm": lambda: (NormStack(lambda c: nn.InstanceNorm2d(c, affine=True)), _image(8)),
    "issue_grouped_depthwise": lambda: (GroupedDepthwise(), _image(8)),
    "issue_unbind": lambda: (UnbindAttention(), _randn(2, 6, 8)),
    "issue_embedding": lambda: (EmbeddingMLP(), torch.randint(0, 32, (2, 8), generator=torch.Generator().manual_seed(0))),
    "issue_expand": lambda: (ExpandGate(), _image(8)),
    "issue_dcgan_generator": lambda: (DCGANGenerator(), _randn(2, 16, 1, 1)),
    "issue_unet": lambda: (UNet(), _image(8)),
    "issue_grouped_convtranspose": lambda: (GroupedConvTranspose(), _image(8)),
}
