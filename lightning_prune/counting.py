"""Parameter and multiply-accumulate (MAC) counts, dense and after pruning.

MACs are counted by PyTorch's own ``torch.utils.flop_counter.FlopCounterMode`` over one forward
pass (2 FLOPs per MAC for matrix products and convolutions), not by hand. For a masked model the
*kept* MACs of a layer are its dense MACs times the fraction of its weight entries kept: for
``Linear`` and ``Conv`` layers that is exactly the MAC count of the compact layer.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


def count_macs(model: nn.Module, example_input: Any) -> dict[str, float]:
    """MACs per example of each module (by qualified name; ``""`` is the whole model).

    Args:
        model: The model.
        example_input: A batch (tensor or tuple of positional arguments); its first dimension is
            the batch size.
    """
    args = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
    batch = args[0].shape[0]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(*args)
    finally:
        model.train(was_training)
    prefix = type(model).__name__
    result = {}
    for key, per_op in counter.get_flop_counts().items():
        if key == "Global":
            continue
        name = "" if key == prefix else key[len(prefix) + 1 :]
        result[name] = sum(per_op.values()) / 2 / batch
    result.setdefault("", counter.get_total_flops() / 2 / batch)
    return result


def count_parameters(model: nn.Module, masks: Mapping[str, torch.Tensor] | None = None) -> tuple[int, int]:
    """Return ``(kept, total)`` parameters, where masked-out entries are not kept."""
    masks = masks or {}
    total = kept = 0
    for name, param in model.named_parameters():
        total += param.numel()
        kept += int(masks[name].sum()) if name in masks else param.numel()
    return kept, total


def kept_macs(dense_macs: Mapping[str, float], masks: Mapping[str, torch.Tensor]) -> float:
    """MACs per example of the masked model: each layer's dense MACs times its kept weight fraction.

    Args:
        dense_macs: Output of :func:`count_macs` on the dense model.
        masks: Parameter keep-masks (weights named ``<layer>.weight``).
    """
    total = dense_macs[""]
    for name, mask in masks.items():
        layer = name.rsplit(".", 1)[0] if "." in name else ""
        if name.endswith("weight") and layer in dense_macs and layer:
            total -= dense_macs[layer] * (1.0 - float(mask.float().mean()))
    return total
