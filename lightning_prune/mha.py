"""``nn.MultiheadAttention`` with its heads as units: q, k and v as separate ``Linear`` layers.

``nn.MultiheadAttention`` keeps q, k and v in one ``in_proj_weight`` whose rows must number
``3 * embed_dim``: its inner width is tied to the model's width, so whole heads cannot be removed
from it (Torch-Pruning prunes it only along ``embed_dim``, the residual stream). torchvision's
ViT, ``nn.TransformerEncoderLayer`` and many hand-written blocks use it.

:func:`split_attention` replaces each one by a :class:`SplitMultiheadAttention`: the same
computation (same outputs, same call signature and return value), with ``q_proj``, ``k_proj``,
``v_proj`` and ``out_proj`` as ``Linear`` layers and ``num_heads``/``head_dim`` attributes, so its
heads are units like those of Hugging Face and timm attention (:mod:`lightning_prune.attention`).
Its state-dict keys are the projections', so call it where the model is built (in the
``LightningModule``'s ``__init__``, after loading pretrained weights), so that checkpoints and
``load_from_checkpoint`` see the same modules.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


class SplitMultiheadAttention(nn.Module):
    """Multi-head attention computed as ``nn.MultiheadAttention`` computes it, from separate q/k/v layers.

    Args:
        embed_dim: Width of the query input and of the output.
        num_heads: Attention heads.
        dropout: Dropout on the attention weights in training.
        bias: Whether the projections have biases.
        kdim: Width of the key input (default ``embed_dim``).
        vdim: Width of the value input (default ``embed_dim``).
        batch_first: Inputs and outputs are ``(batch, sequence, features)`` (else ``(sequence, batch, features)``).
        head_dim: Width of one head (default ``embed_dim // num_heads``).

    Raises:
        ValueError: If ``head_dim`` is not given and ``embed_dim`` does not divide by ``num_heads``.
    """

    # nn.TransformerEncoderLayer and nn.TransformerEncoder read these to choose their fused fast path,
    # which needs one in_proj_weight: None and False send them to the plain path, which calls forward.
    in_proj_weight = None
    in_proj_bias = None
    _qkv_same_embed_dim = False

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True, *, kdim: int | None = None,
                 vdim: int | None = None, batch_first: bool = False, head_dim: int | None = None,
                 device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        if head_dim is None and embed_dim % num_heads:
            raise ValueError(f"SplitMultiheadAttention: embed_dim={embed_dim} must divide by num_heads={num_heads} "
                             "(or give head_dim).")
        factory = {"device": device, "dtype": dtype}
        self.num_heads, self.head_dim = num_heads, head_dim or embed_dim // num_heads
        self.dropout, self.batch_first = dropout, batch_first
        inner = self.num_heads * self.head_dim
        self.q_proj = nn.Linear(embed_dim, inner, bias, **factory)
        self.k_proj = nn.Linear(kdim or embed_dim, inner, bias, **factory)
        self.v_proj = nn.Linear(vdim or embed_dim, inner, bias, **factory)
        self.out_proj = nn.Linear(inner, embed_dim, bias, **factory)

    @property
    def embed_dim(self) -> int:
        """Width of the output (and of the query input)."""
        return self.out_proj.out_features

    @classmethod
    def from_module(cls, module: nn.MultiheadAttention, name: str = "") -> SplitMultiheadAttention:
        """The same attention as ``module``, with its weights (frozen or not), device, dtype and train/eval mode.

        Args:
            module: The attention to copy (not changed).
            name: Its name in the model, for error messages.

        Raises:
            ValueError: If ``module`` uses ``add_bias_kv`` or ``add_zero_attn`` (extra key/value
                positions, not carried over), naming it.
        """
        if module.bias_k is not None or module.add_zero_attn:
            raise ValueError(f"split_attention: the nn.MultiheadAttention {name or type(module).__name__!r} uses add_bias_kv "
                             "or add_zero_attn (extra key/value positions), which SplitMultiheadAttention does not carry "
                             "over; nothing was replaced. Replace the others one by one with "
                             "SplitMultiheadAttention.from_module(module).")
        weight = module.out_proj.weight
        split = cls(module.embed_dim, module.num_heads, module.dropout, module.in_proj_bias is not None, kdim=module.kdim,
                    vdim=module.vdim, batch_first=module.batch_first, device=weight.device, dtype=weight.dtype)
        if module._qkv_same_embed_dim:
            weights = module.in_proj_weight.chunk(3)
        else:
            weights = (module.q_proj_weight, module.k_proj_weight, module.v_proj_weight)
        biases = module.in_proj_bias.chunk(3) if module.in_proj_bias is not None else (None, None, None)
        with torch.no_grad():
            pairs = [(layer.weight, w) for layer, w in zip((split.q_proj, split.k_proj, split.v_proj), weights)]
            pairs += [(layer.bias, b) for layer, b in zip((split.q_proj, split.k_proj, split.v_proj), biases) if b is not None]
            pairs += [(split.out_proj.weight, module.out_proj.weight)]
            pairs += [(split.out_proj.bias, module.out_proj.bias)] if module.out_proj.bias is not None else []
            for new, old in pairs:
                new.copy_(old)
                new.requires_grad_(old.requires_grad)  # a frozen attention stays frozen
        return split.train(module.training)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As ``nn.MultiheadAttention.forward``: ``(output, attention weights or None)``.

        Raises:
            RuntimeError: If ``is_causal`` is set without an ``attn_mask`` (as ``nn.MultiheadAttention``).
            TypeError: If a mask is neither boolean nor floating point.
            ValueError: If ``attn_mask`` holds one mask per head for another number of heads (heads
                were removed since it was made).
        """
        if is_causal and attn_mask is None:
            raise RuntimeError("Need attn_mask if specifying the is_causal hint (as nn.MultiheadAttention). You may use "
                               "nn.Transformer.generate_square_subsequent_mask to create this mask.")
        batched = query.dim() == 3
        if not batched:
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = key_padding_mask.unsqueeze(0) if key_padding_mask is not None else None
        elif not self.batch_first:
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        batch, length, source = query.shape[0], query.shape[1], key.shape[1]
        q = self.q_proj(query).view(batch, length, -1, self.head_dim).transpose(1, 2)
        k = self.k_proj(key).view(batch, source, -1, self.head_dim).transpose(1, 2)
        v = self.v_proj(value).view(batch, source, -1, self.head_dim).transpose(1, 2)
        mask = self._additive_mask(attn_mask, key_padding_mask, batch, length, source, q.dtype)
        dropout = self.dropout if self.training else 0.0
        weights = None
        if need_weights:  # the weights are returned: computed here, as nn.MultiheadAttention does (after dropout)
            scores = q @ k.transpose(-2, -1) * self.head_dim**-0.5
            weights = F.dropout((scores if mask is None else scores + mask).softmax(dim=-1), dropout, self.training)
            out = weights @ v
            weights = weights.mean(dim=1) if average_attn_weights else weights
        else:  # is_causal is only a hint that attn_mask is causal: the mask itself is used
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, -1))
        if not batched:
            return out.squeeze(0), weights.squeeze(0) if weights is not None else None
        return (out if self.batch_first else out.transpose(0, 1)), weights

    def _additive_mask(self, attn_mask: torch.Tensor | None, key_padding_mask: torch.Tensor | None, batch: int,
                       length: int, source: int, dtype: torch.dtype) -> torch.Tensor | None:
        """``attn_mask`` and ``key_padding_mask`` as one float mask to add to the scores (``True``: not attended)."""
        mask = None
        if attn_mask is not None:
            mask = _additive(attn_mask, dtype)
            if mask.dim() == 3:  # one mask per (sample, head)
                if mask.shape[0] != batch * self.num_heads:
                    raise ValueError(f"attn_mask holds {mask.shape[0]} masks, one per sample and head, but this attention "
                                     f"has {self.num_heads} heads (batch {batch}): heads were removed since it was made.")
                mask = mask.view(batch, self.num_heads, length, source)
        if key_padding_mask is not None:
            padding = _additive(key_padding_mask, dtype).view(batch, 1, 1, source)
            mask = padding if mask is None else mask + padding
        return mask


def _additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (``True``: not attended) as ``0``/``-inf``; a float mask as it is.

    Raises:
        TypeError: For another dtype (``nn.MultiheadAttention`` takes only these two).
    """
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    if not mask.is_floating_point():
        raise TypeError(f"SplitMultiheadAttention: masks must be bool or floating point, not {mask.dtype} "
                        "(as nn.MultiheadAttention).")
    return mask.to(dtype)


def split_attention(model: nn.Module) -> nn.Module:
    """Replace every ``nn.MultiheadAttention`` in ``model`` by a :class:`SplitMultiheadAttention`, in place.

    The model computes the same outputs, and its attention heads become prunable units. An
    ``nn.TransformerEncoder`` around them stops packing padded batches into nested tensors (its
    fast path for ``nn.MultiheadAttention``): padded positions of its output then hold computed
    values instead of zeros; every other position is the same.

    Args:
        model: The model (changed in place).

    Returns:
        ``model`` (or the replacement, if ``model`` itself is an ``nn.MultiheadAttention``).

    Raises:
        ValueError: If one of them uses ``add_bias_kv`` or ``add_zero_attn`` (named); nothing is
            replaced then.
    """
    if isinstance(model, nn.MultiheadAttention):
        return SplitMultiheadAttention.from_module(model)
    found = [(name, module) for name, module in model.named_modules(remove_duplicate=False)
             if isinstance(module, nn.MultiheadAttention)]
    replacements: dict[int, SplitMultiheadAttention] = {}
    for name, module in found:  # one replacement per module, set under each of its names
        if id(module) not in replacements:
            replacements[id(module)] = SplitMultiheadAttention.from_module(module, name)
    for name, module in found:
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent), child, replacements[id(module)])
    for module in model.modules():
        if isinstance(module, nn.TransformerEncoder) and any(isinstance(m, SplitMultiheadAttention) for m in module.modules()):
            module.use_nested_tensor = False
    return model
