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
    """The outermost Hugging Face ``PreTrainedModel``\\ s in ``model`` (with their names), if
    ``transformers`` is imported at all."""
    transformers = sys.modules.get("transformers")
    if transformers is None:
        return []
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        inside = any(outer == "" or name.startswith(outer + ".") for outer, _ in found)
        if not inside and isinstance(module, transformers.PreTrainedModel):
            found.append((name, module))
    return found


def follow_configs(model: nn.Module) -> list[str]:
    """Give every Hugging Face model inside ``model`` a config that describes its current widths.

    Returns:
        One line per model whose config cannot describe it (left as it was), naming the model and
        the first parameters whose shapes the config cannot give.
    """
    notes = []
    for name, pretrained in pretrained_models(model):
        config = getattr(pretrained, "config", None)
        if config is None:
            continue
        compact = signature(pretrained)
        new, mismatches = compact_config(type(pretrained), config, compact)
        if new is None:
            where = name or type(pretrained).__name__
            notes.append(f"the config of {where!r} ({type(config).__name__}) cannot describe its pruned widths, so it "
                         "was left as it was and `save_pretrained` would not rebuild this model (a config holds one "
                         "width per field, so layers pruned to different widths cannot be written in it, nor can "
                         "heads whose size the model derives as hidden_size // heads, as BERT, ViT and GPT-2 do): "
                         f"{'; '.join(mismatches)}. Reload it through the pruning plan instead (`load_from_checkpoint`, "
                         "`load_compact`); `PerLayer` ranking keeps the layers at one width.")
        elif new is not config:
            for module in pretrained.modules():
                if getattr(module, "config", None) is config:
                    module.config = new
    return notes


def compact_config(cls: type, config: Any, compact: dict[str, tuple[int, ...]]) -> tuple[Any, list[str]]:
    """A copy of ``config`` whose width fields make ``cls`` build the ``compact`` parameter shapes.

    Args:
        cls: The model's class.
        config: Its config (not changed).
        compact: The pruned model's :func:`signature`.

    Returns:
        ``(config, [])`` if the shapes are already the config's; ``(new config, [])`` if changed
        width fields give them; ``(None, mismatches)`` if no such fields were found, each mismatch
        naming a parameter, its compact shape and the shape the config would build.
    """
    base = _shapes(cls, config)
    if base is None:
        return None, [f"{cls.__name__} cannot be built from its config on the meta device"]
    if base == compact:
        return config, []
    inferred = {}
    for field, positions in _governed(cls, config, base).items():
        values = {compact[key][dim] / factor for key, dim, factor in positions if len(compact.get(key, ())) > dim}
        value = next(iter(values)) if len(values) == 1 else None
        if value is not None and value.is_integer() and value >= 1 and int(value) != getattr(config, field):
            inferred[field] = int(value)
    # Fields can explain the same widths together (LLaMA's q/k/v: fewer heads, or a smaller head_dim):
    # the fewest changed fields that build the compact shapes win.
    fields = sorted(inferred)
    subsets = [combo for size in range(1, len(fields) + 1) for combo in itertools.combinations(fields, size)]
    built = base
    for combo in subsets[:_MAX_TRIES] if len(fields) <= _MAX_FIELDS else [tuple(fields)]:
        new = copy.deepcopy(config)
        for field in combo:
            setattr(new, field, inferred[field])
        built = _shapes(cls, new)
        if built == compact:
            return new, []
    wrong = [f"{key}: {compact[key]} pruned, {built.get(key) if built else None} from the config" for key in compact
             if not built or built.get(key) != compact[key]]
    return None, wrong[:3]


def signature(model: nn.Module) -> dict[str, tuple[int, ...]]:
    """What a config must reproduce: every parameter's and buffer's shape, and every attention module's
    head attributes (same shapes can hold fewer heads or smaller ones: LLaMA's ``head_dim``)."""
    found = {key: tuple(t.shape) for key, t in itertools.chain(model.named_parameters(), model.named_buffers())}
    for name, module in model.named_modules():
        for attribute in (*HEAD_COUNT_ATTRS, *HEAD_DIM_ATTRS, *HEAD_WIDTH_ATTRS, "num_key_value_groups"):
            if type(vars(module).get(attribute)) is int:
                found[f"{name}:{attribute}"] = (vars(module)[attribute],)  # checked, not inferred from
    return found


def _shapes(cls: type, config: Any) -> dict[str, tuple[int, ...]] | None:
    """The :func:`signature` of ``cls(config)``, built on the ``meta`` device (no memory), or ``None`` if it fails."""
    try:
        with torch.device("meta"):
            model = cls(config)
    except Exception:  # a probe value the class rejects: that field is not followed
        return None
    return signature(model)


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
    probe = copy.deepcopy(config)
    setattr(probe, field, value)
    return _shapes(cls, probe)
