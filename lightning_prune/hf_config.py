"""Hugging Face config fields that follow a removal, so that ``save_pretrained`` writes the compact model.

A Hugging Face model is rebuilt from its ``config`` (``from_pretrained``, ``from_config``). After units
are removed, its width fields (``hidden_size``, ``intermediate_size``, head counts, ...) must describe
the compact model, or the rebuilt model has the dense shapes and cannot take the compact weights.

Which field governs which shape is read off the model class, not listed per family: each width field
is changed on a ``meta``-device build, and the parameter dimensions that move with it are the ones it
governs (``dimension = factor * field``). The compact model's widths there give the field's new
value. The new config is used only if a ``meta`` build from it has exactly the compact model's
parameter shapes. Otherwise the config is left as it was, and the reason is returned: a config holds
one width per field, so layers pruned to different widths (a global ranking) cannot be written in
it, nor can BERT's, ViT's or GPT-2's head counts (their head size is ``hidden_size // heads``).

The new config is a copy, set on every module that held the old one. The object the user passed in
(perhaps stored by ``save_hyperparameters()``) stays dense, so ``load_from_checkpoint`` still
rebuilds the dense model and replays the pruning plan.
"""

from __future__ import annotations

import copy
import itertools
import sys
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from lightning_prune.attention import HEAD_COUNT_ATTRS, HEAD_DIM_ATTRS, HEAD_WIDTH_ATTRS

#: Config fields that set widths, across Hugging Face families (BERT/ViT/LLaMA, GPT-2, BART/T5-style).
WIDTH_FIELDS = ("hidden_size", "n_embd", "d_model", "intermediate_size", "n_inner", "ffn_dim", "num_attention_heads",
                "n_head", "num_key_value_heads", "head_dim")
#: Stand-in values for a width field that is ``None`` (GPT-2's ``n_inner``: ``4 * n_embd``).
_PROBE = (8, 16)
#: Changed fields tried in every combination up to this many (more: all of them at once only).
_MAX_FIELDS = 6
_MAX_TRIES = 2**_MAX_FIELDS


def pretrained_models(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The outermost Hugging Face ``PreTrainedModel``\\ s in ``model``.

    Returns:
        ``(name, module)`` of each, in module order; empty if ``transformers`` is not imported.
    """
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return []
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        inside = any(outer == "" or name.startswith(outer + ".") for outer, _ in found)
        if not inside and isinstance(module, transformers.PreTrainedModel):
            found.append((name, module))
    return found


def pretrained_signatures(model: nn.Module) -> dict[str, dict[str, tuple[int, ...]]]:
    """The :func:`signature` of each Hugging Face model in ``model``, by name (taken before a removal)."""
    return {name: signature(pretrained) for name, pretrained in pretrained_models(model)}


def follow_configs(model: nn.Module, before: Mapping[str, Mapping[str, tuple[int, ...]]] | None = None) -> list[str]:
    """Give every Hugging Face model inside ``model`` a config that describes its current widths.

    Args:
        model: The model, after a removal.
        before: :func:`pretrained_signatures` taken before the removal: models whose signature did
            not change (a frozen teacher, a model nobody pruned) are left alone. ``None``: all.

    Returns:
        One line per changed model whose config cannot describe it (left as it was), naming the
        model and why.
    """
    notes = []
    for name, pretrained in pretrained_models(model):
        config = getattr(pretrained, "config", None)
        compact = signature(pretrained)
        if config is None or (before is not None and before.get(name) == compact):
            continue
        new, why = compact_config(type(pretrained), config, compact)
        if new is None:
            notes.append(f"the config of {name or type(pretrained).__name__!r} ({type(config).__name__}) was left as it "
                         f"was: {why}. `save_pretrained` would not rebuild this model; reload it through the pruning "
                         "plan (`load_from_checkpoint`, `load_compact`).")
        elif new is not config:
            for module in pretrained.modules():
                if getattr(module, "config", None) is config:
                    module.config = new
    return notes


def compact_config(cls: type, config: Any, compact: Mapping[str, tuple[int, ...]]) -> tuple[Any, str]:
    """A copy of ``config`` whose width fields make ``cls`` build the ``compact`` model.

    Args:
        cls: The model's class.
        config: Its config (not changed).
        compact: The pruned model's :func:`signature`.

    Returns:
        ``(config, "")`` if the config already builds it; ``(new config, "")`` if changed width
        fields do; ``(None, why)`` if no such fields were found or the config cannot be copied or
        built from.
    """
    copied = _with(config, {})
    base = _built(cls, copied) if copied is not None else None  # a copy: a class may write to the config it is built from
    if base is None:
        return None, f"{cls.__name__} could not be built from a copy of its config on the meta device"
    if base == compact:
        return config, ""
    inferred = {}
    for field, positions in _governed(cls, config, base).items():
        values = {compact[key][dim] / factor for key, dim, factor in positions if len(compact.get(key, ())) > dim}
        value = next(iter(values)) if len(values) == 1 else None
        if value is not None and value.is_integer() and value >= 1 and int(value) != getattr(config, field):
            inferred[field] = int(value)
    # Fields can explain the same widths together (LLaMA's q/k/v: fewer heads, or a smaller head_dim):
    # the fewest changed fields that build the compact model win.
    fields = sorted(inferred)
    subsets = [combo for size in range(1, len(fields) + 1) for combo in itertools.combinations(fields, size)]
    built = base
    for combo in subsets[:_MAX_TRIES] if len(fields) <= _MAX_FIELDS else [tuple(fields)]:
        new = _with(config, {field: inferred[field] for field in combo})
        built = _built(cls, new) if new is not None else None
        if built == compact:
            return new, ""
    wrong = [f"{key}: {compact[key]} pruned, {built.get(key) if built else None} from the config" for key in compact
             if not built or built.get(key) != compact[key]]
    return None, ("it cannot describe the pruned widths (a config holds one width per field, so layers pruned to "
                  "different widths cannot be written in it, nor can heads whose size the model derives as "
                  "hidden_size // heads, as BERT, ViT and GPT-2 do; a `PerLayer` ranking keeps layers at one width): "
                  + "; ".join(wrong[:3]))


def signature(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """What a config must reproduce: every parameter's and buffer's shape, and every attention module's
    head attributes (same shapes can hold fewer heads or smaller ones: LLaMA's ``head_dim``)."""
    found = {key: tuple(t.shape) for key, t in itertools.chain(model.named_parameters(), model.named_buffers())}
    for name, module in model.named_modules():
        for attribute in (*HEAD_COUNT_ATTRS, *HEAD_DIM_ATTRS, *HEAD_WIDTH_ATTRS, "num_key_value_groups"):
            if type(vars(module).get(attribute)) is int:
                found[f"{name}:{attribute}"] = (vars(module)[attribute],)  # checked, not inferred from
    return found


def _built(cls: type, config: Any) -> dict[str, tuple[int, ...]] | None:
    """The :func:`signature` of ``cls(config)``, built on the ``meta`` device (no memory), or ``None`` if it fails."""
    try:
        with torch.device("meta"):
            model = cls(config)
    except Exception:  # a class that needs more than its config, or a probe value it rejects: not followed
        return None
    return signature(model)


def _with(config: Any, values: Mapping[str, int]) -> Any:
    """A copy of ``config`` with ``values`` set, or ``None`` if it cannot be copied."""
    try:
        new = copy.deepcopy(config)
    except Exception:  # a config holding something uncopyable: its fields are not followed
        return None
    for field, value in values.items():
        setattr(new, field, value)
    return new


def _governed(cls: type, config: Any, base: dict[str, tuple[int, ...]]) -> dict[str, list[tuple[str, int, float]]]:
    """For each width field of ``config``: the ``(parameter, dimension, factor)`` that move with it,
    where ``dimension size == factor * field``."""
    governed = {}
    for field in WIDTH_FIELDS:
        if not hasattr(config, field):
            continue
        value = getattr(config, field)
        if value is None:
            low, high = _PROBE
        elif type(value) is int and value >= 1:
            low, high = value, 2 * value
        else:
            continue
        shapes = [base if value is not None else _probe(cls, config, field, low), _probe(cls, config, field, high)]
        if shapes[0] is None or shapes[1] is None:
            continue
        positions = [(key, dim, shape[dim] / low) for key, shape in shapes[0].items()
                     if ":" not in key and key in shapes[1] and len(shapes[1][key]) == len(shape)
                     for dim in range(len(shape)) if shapes[1][key][dim] != shape[dim]]
        if positions:
            governed[field] = positions
    return governed


def _probe(cls: type, config: Any, field: str, value: int) -> dict[str, tuple[int, ...]] | None:
    """The :func:`signature` ``cls`` builds with ``field`` set to ``value``, or ``None``."""
    probe = _with(config, {field: value})
    return _built(cls, probe) if probe is not None else None
