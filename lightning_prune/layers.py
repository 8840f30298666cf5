"""Which layers of a model can be pruned, in the order the forward pass runs them.

A *prunable layer* is a module whose ``weight`` is pruned: its output units (rows of a ``Linear``,
filters of a ``Conv``) are the neurons of neuron pruning, its individual entries the weights of
weight pruning. Norms, embeddings and biases are never pruned as weights.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

#: Layer types that can be pruned, keyed by the name used in error messages.
PRUNABLE_TYPES: dict[str, type[nn.Module]] = {
    "Linear": nn.Linear,
    "Conv1d": nn.Conv1d,
    "Conv2d": nn.Conv2d,
    "Conv3d": nn.Conv3d,
}


@dataclass(frozen=True)
class PrunableLayer:
    """One prunable layer of a model.

    Attributes:
        name: The module's qualified name inside the model (``model.named_modules()``).
        module: The module itself.
        is_output: Whether this is the model's output layer (the classifier), whose output units are
            never pruned.
    """

    name: str
    module: nn.Module
    is_output: bool = False

    @property
    def weight(self) -> torch.nn.Parameter:
        """The layer's weight; its first dimension indexes output units."""
        return self.module.weight

    @property
    def weight_name(self) -> str:
        """The qualified parameter name of the weight (``model.named_parameters()``)."""
        return f"{self.name}.weight" if self.name else "weight"

    @property
    def num_units(self) -> int:
        """Number of output units (neurons or filters)."""
        return self.module.weight.shape[0]


def _is_prunable(module: nn.Module) -> bool:
    return type(module) in PRUNABLE_TYPES.values()


def forward_order(model: nn.Module, example_input: torch.Tensor | Sequence[torch.Tensor]) -> list[str]:
    """Names of the prunable modules in the order one forward pass calls them.

    Args:
        model: The model to run.
        example_input: A batch the model accepts (a tensor, or a tuple of positional arguments).

    Returns:
        Module names, each once, in first-call order.
    """
    order: list[str] = []
    handles = []
    for name, module in model.named_modules():
        if _is_prunable(module):
            handles.append(
                module.register_forward_hook(lambda m, i, o, name=name: order.append(name) if name not in order else None)
            )
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            args = example_input if isinstance(example_input, (tuple, list)) else (example_input,)
            model(*args)
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return order


def find_prunable_layers(
    model: nn.Module,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None = None,
    layers: Sequence[str] | None = None,
    ignore_layers: Sequence[str] | None = None,
) -> list[PrunableLayer]:
    """Find the layers to prune.

    The output layer is the prunable module the forward pass calls last (with ``example_input``), or
    the last one registered when no input is given. It is part of the result (its weights can be
    pruned), marked ``is_output=True`` so that its output units are kept.

    Args:
        model: The model.
        example_input: A batch for one forward pass, to order layers and find the output layer.
        layers: Glob patterns (``fnmatch``) of module names to prune; ``None`` selects every
            supported layer.
        ignore_layers: Glob patterns of module names never to prune.

    Returns:
        The selected layers, in forward order (or registration order without an input).

    Raises:
        ValueError: If a pattern matches no module, if a module selected by name is of a type that
            cannot be pruned (the message lists the supported types), or if nothing is left.
    """
    modules = dict(model.named_modules())
    names = [name for name, module in modules.items() if _is_prunable(module)]
    output_name = names[-1] if names else None
    if example_input is not None:
        called = forward_order(model, example_input)
        names = called + [name for name in names if name not in called]
        output_name = called[-1] if called else output_name

    selected = names
    if layers is not None:
        selected = []
        for pattern in layers:
            matches = [name for name in modules if name and fnmatch.fnmatchcase(name, pattern)]
            if not matches:
                raise ValueError(
                    f"`layers` pattern {pattern!r} matches no module. Module names: {sorted(n for n in modules if n)}"
                )
            for name in matches:
                if not _is_prunable(modules[name]):
                    raise ValueError(
                        f"`layers` selects {name!r} of type {type(modules[name]).__name__}, which cannot be "
                        f"pruned. Supported layer types: {sorted(PRUNABLE_TYPES)}."
                    )
        selected = [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in layers)]
    for pattern in ignore_layers or ():
        if not any(fnmatch.fnmatchcase(name, pattern) for name in modules if name):
            raise ValueError(
                f"`ignore_layers` pattern {pattern!r} matches no module. Module names: {sorted(n for n in modules if n)}"
            )
        selected = [name for name in selected if not fnmatch.fnmatchcase(name, pattern)]
    if not selected:
        raise ValueError(
            f"No prunable layer left (layers={layers!r}, ignore_layers={ignore_layers!r}). "
            f"Supported layer types: {sorted(PRUNABLE_TYPES)}."
        )
    return [PrunableLayer(name, modules[name], is_output=name == output_name) for name in selected]
