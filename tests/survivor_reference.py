"""The index tracking the library used before :mod:`lightning_prune.survivors`, kept as the reference.

The removal is done for real on a float32 CPU copy whose floating parameters and buffers are then
replaced by their own flat indices in float64; what is left are the surviving flat indices (memory:
a float64 copy of the model, about twice a float32 model, and an int64 index per surviving entry).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from lightning_prune.surgery import build_graph, detached_copy, remove_groups, to_dtype
from lightning_prune.tracing import map_tensors


def float64_probe(model: nn.Module, example_input: Any, removal: Mapping[str, Sequence[int]]) -> dict[str, torch.Tensor]:
    """State-dict name to the kept flat indices of every changed floating tensor (the former ``surviving_entries``)."""
    probe = detached_copy(model).to("cpu", torch.float32)
    graph = build_graph(probe, to_dtype(map_tensors(example_input, lambda tensor: tensor.cpu()), torch.float32))
    shapes = {}
    with torch.no_grad():
        for name, tensor in itertools.chain(probe.named_parameters(), probe.named_buffers()):
            if tensor.is_floating_point():
                shapes[name] = tensor.shape
                tensor.data = torch.arange(tensor.numel(), dtype=torch.float64).reshape(tensor.shape)
    remove_groups(probe, None, removal, graph=graph)
    return {
        name: tensor.detach().flatten().long()
        for name, tensor in itertools.chain(probe.named_parameters(), probe.named_buffers())
        if name in shapes and tensor.shape != shapes[name]
    }
