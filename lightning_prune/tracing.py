"""Calling a model on an example input and finding the tensors it returns, whatever their nesting.

Models users bring take a tensor, a tuple of positional arguments or a dict of keyword arguments
(Hugging Face's ``input_ids=...``), and return a tensor, a tuple, a dict or a ``ModelOutput`` that
may also hold a key/value cache object. The tracer (Torch-Pruning's ``DependencyGraph``) and the
output-layer search both need "call it, then give me every output tensor"; this module is that,
once, and it lets the model's own error through unchanged (Torch-Pruning's bare ``except:`` retry
would replace it with a misleading ``TypeError``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn


@contextlib.contextmanager
def kv_cache_off(model: nn.Module) -> Iterator[None]:
    """Set ``config.use_cache = False`` on every Hugging Face (sub)model while the block runs.

    A key/value cache is a copy of the keys and values kept for generation. The library calls a
    model to find its structure, never to generate: with the cache on, the key and value
    projections would reach the output (and so look like output layers whose units must be kept),
    and the cache's concatenation with an empty past breaks Torch-Pruning's index mapping (GPT-2).
    """
    configs = {id(config): config for module in model.modules()
               if type(getattr(config := getattr(module, "config", None), "use_cache", None)) is bool}
    saved = {key: config.use_cache for key, config in configs.items()}
    for config in configs.values():
        config.use_cache = False
    try:
        yield
    finally:
        for key, config in configs.items():
            config.use_cache = saved[key]


def call(model: nn.Module, example_input: Any) -> Any:
    """``model(x)``, ``model(*x)`` for a tuple/list, ``model(**x)`` for a dict, with any KV cache off."""
    with kv_cache_off(model):
        if isinstance(example_input, Mapping):
            return model(**example_input)
        if isinstance(example_input, (tuple, list)):
            return model(*example_input)
        return model(example_input)


def output_tensors(output: Any) -> list[torch.Tensor]:
    """Every floating tensor in a (nested) model output, in a stable order.

    Tuples, lists, dicts (``ModelOutput`` is one) and dataclasses are walked; anything else that is
    not a tensor (a key/value cache object, ``None``, numbers) is skipped.
    """
    found: list[torch.Tensor] = []

    def walk(value: Any) -> None:
        if torch.is_tensor(value):
            if value.is_floating_point() or value.is_complex():
                found.append(value)
        elif isinstance(value, Mapping):
            for item in value.values():
                walk(item)
        elif isinstance(value, (tuple, list)):
            for item in value:
                walk(item)
        elif dataclasses.is_dataclass(value) and not isinstance(value, type):
            for field in dataclasses.fields(value):
                walk(getattr(value, field.name))

    walk(output)
    return found


def map_tensors(value: Any, fn) -> Any:
    """Apply ``fn`` to every tensor of a nested tuple/list/dict input (other values unchanged)."""
    if torch.is_tensor(value):
        return fn(value)
    if isinstance(value, Mapping):
        return {key: map_tensors(item, fn) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(item, fn) for item in value)
    return value
