"""Which layers of a model can be pruned, in the order the forward pass runs them.

A *prunable layer* is a module whose ``weight`` is pruned: its output units (rows of a ``Linear``,
filters of a ``Conv``) are the neurons of neuron pruning, its individual entries the weights of
weight pruning. Norms, embeddings and biases are never pruned as weights.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from typing import Any

import torch
from torch import nn

from lightning_prune.tracing import call, output_tensors

#: Layer types that can be pruned, keyed by the name used in error messages. Subclasses count too
#: (timm's heads subclass ``nn.Linear``); Hugging Face's GPT-2 ``Conv1D`` is added when transformers
#: is installed.
PRUNABLE_TYPES: dict[str, type[nn.Module]] = {
    "Linear": nn.Linear,
    "Conv1d": nn.Conv1d,
    "Conv2d": nn.Conv2d,
    "Conv3d": nn.Conv3d,
    "ConvTranspose1d": nn.ConvTranspose1d,
    "ConvTranspose2d": nn.ConvTranspose2d,
    "ConvTranspose3d": nn.ConvTranspose3d,
}


def hf_conv1d_type() -> type[nn.Module] | None:
    """Hugging Face's ``Conv1D`` (GPT-2's linear layer, weight stored as ``(in, out)``), if importable."""
    try:
        from transformers.pytorch_utils import Conv1D
    except Exception:  # transformers missing or broken: nothing of it can be in the model
        return None
    return Conv1D


_HF_CONV1D = hf_conv1d_type()
if _HF_CONV1D is not None:
    PRUNABLE_TYPES["transformers.Conv1D"] = _HF_CONV1D


def is_transposed(module: nn.Module) -> bool:
    """Whether the module's weight stores output units in dimension 1 (HF ``Conv1D``, transposed convs)."""
    return (_HF_CONV1D is not None and isinstance(module, _HF_CONV1D)) or bool(getattr(module, "transposed", False))


#: Integer attributes in which a module keeps the width of its own parameters, and which its forward
#: may read (torchvision's ``VisionTransformer`` reshapes its patches with ``self.hidden_dim``).
WIDTH_ATTRS = ("hidden_dim", "embed_dim", "hidden_size", "d_model", "num_features")


def own_widths(model: nn.Module) -> dict[nn.Module, tuple[dict[str, tuple[int, ...]], dict[str, int]]]:
    """For each module holding a :data:`WIDTH_ATTRS` attribute: its own parameters' shapes and those attributes."""
    found = {}
    for module in model.modules():
        attrs = {name: vars(module)[name] for name in WIDTH_ATTRS if type(vars(module).get(name)) is int}
        shapes = {name: tuple(p.shape) for name, p in module.named_parameters(recurse=False)}
        if attrs and shapes:
            found[module] = (shapes, attrs)
    return found


def follow_own_widths(before: dict[nn.Module, tuple[dict[str, tuple[int, ...]], dict[str, int]]]) -> None:
    """After a removal, set each :data:`WIDTH_ATTRS` attribute that equalled a width its module's own
    parameters lost to that width's new size (one old size changing to two new ones: left as it was).

    Matched by value: a module whose own parameter has another dimension of the same size that
    changes would have the attribute follow that one (no zoo model has one).
    """
    for module, (shapes, attrs) in before.items():
        now = {name: tuple(p.shape) for name, p in module.named_parameters(recurse=False)}
        changes: dict[int, set[int]] = {}
        for name, shape in shapes.items():
            if name in now and len(now[name]) == len(shape):
                for old, new in zip(shape, now[name]):
                    if old != new:
                        changes.setdefault(old, set()).add(new)
        for attr, value in attrs.items():
            if len(changes.get(value, ())) == 1:
                setattr(module, attr, next(iter(changes[value])))


def group_norm_sizes(model: nn.Module) -> dict[nn.GroupNorm, tuple[int, int]]:
    """``(num_channels, num_groups)`` of every GroupNorm of several groups (before a removal)."""
    return {m: (m.num_channels, m.num_groups) for m in model.modules() if isinstance(m, nn.GroupNorm) and m.num_groups > 1}


def follow_group_norms(before: Mapping[nn.GroupNorm, tuple[int, int]], removed: Mapping[nn.GroupNorm, Collection[int]]) -> None:
    """After a removal, lower each GroupNorm's ``num_groups`` by the groups it lost (Torch-Pruning keeps it).

    Args:
        before: :func:`group_norm_sizes` before the removal.
        removed: GroupNorm to the indices of its channels the removal took.

    Raises:
        ValueError: If the removal took part of a group (the rest of that group would be normalised
            with other statistics), naming the GroupNorm's size and the channels.
    """
    for norm, (channels, groups) in before.items():
        gone = set(removed.get(norm, ()))
        if not gone:
            continue
        per_group = channels // groups
        lost = {channel // per_group for channel in gone}
        if len(gone) != len(lost) * per_group:
            raise ValueError(f"the removal took part of a group of GroupNorm({groups}, {channels}) (channels "
                             f"{sorted(gone)[:8]}), not whole groups of {per_group} channels")
        norm.num_groups = groups - len(lost)


def width_mismatches(module: nn.Module) -> list[str]:
    """The width attributes of ``module`` that disagree with its weight's shape, as ``"attr=declared (weight: actual)"``.

    A layer whose ``in_channels`` (``in_features``, ``num_features``...) is not its weight's width
    fails, or silently computes another function, wherever the model's forward reads the attribute
    (e.g. ``x.view(-1, self.up.in_channels, 2, 2)``). Covered: ``Linear``, convolutions (transposed
    too), BatchNorm and GroupNorm (also: channels a multiple of ``num_groups``); other modules give ``[]``.
    """
    weight = getattr(module, "weight", None)
    if isinstance(module, nn.GroupNorm):
        wrong = [] if module.num_channels % module.num_groups == 0 else [
            f"num_channels={module.num_channels} (not a multiple of num_groups={module.num_groups})"]
        same = not torch.is_tensor(weight) or weight.shape[0] == module.num_channels
        return wrong + ([] if same else [f"num_channels={module.num_channels} (weight: {weight.shape[0]})"])
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        stats = weight if weight is not None else getattr(module, "running_mean", None)
        widths = {"num_features": stats.shape[0]} if torch.is_tensor(stats) else {}
    elif not torch.is_tensor(weight) or weight.dim() < 2:
        widths = {}
    elif isinstance(module, nn.Linear):
        widths = {"out_features": weight.shape[0], "in_features": weight.shape[1]}
    elif isinstance(module, nn.modules.conv._ConvNd):
        spread = weight.shape[1] * module.groups  # dim 1 holds one conv group's width
        widths = ({"in_channels": weight.shape[0], "out_channels": spread} if module.transposed
                  else {"out_channels": weight.shape[0], "in_channels": spread})
    else:
        widths = {}
    return [f"{name}={getattr(module, name)} (weight: {actual})" for name, actual in widths.items()
            if getattr(module, name) != actual]


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
        """The layer's weight (output units in dimension 0, except for HF ``Conv1D``: see :attr:`unit_weight`)."""
        return self.module.weight

    @property
    def weight_name(self) -> str:
        """The qualified parameter name of the weight (``model.named_parameters()``)."""
        return f"{self.name}.weight" if self.name else "weight"

    @property
    def unit_weight(self) -> torch.Tensor:
        """The weight with output units in dimension 0 (a transposed view for HF ``Conv1D``)."""
        weight = self.module.weight
        return weight.transpose(0, 1) if is_transposed(self.module) else weight

    @property
    def num_units(self) -> int:
        """Number of output units (neurons or filters)."""
        return self.unit_weight.shape[0]


def is_prunable(module: nn.Module) -> bool:
    """Whether ``module`` is a supported layer (by type hierarchy, so subclasses count).

    Transposed convolutions (``ConvTranspose1d/2d/3d``, which subclass no ``ConvNd`` above) count
    when they have one group: their output channels are units stored in dimension 1 of the weight,
    like HF ``Conv1D``'s. Grouped transposed convs are not: Torch-Pruning's handling of them is not
    exact.
    """
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return module.groups == 1
    return isinstance(module, tuple(PRUNABLE_TYPES.values()))



def _trace_layers(model: nn.Module, example_input: Any) -> tuple[list[str], list[str]]:
    """Run one forward pass; return the prunable modules in first-call order and the output layers.

    An *output layer* is a prunable layer whose output reaches the model's output without passing
    through another prunable layer (found by walking the autograd graph back from every output
    tensor, stopping at prunable layers' outputs). A classifier, every head of a multi-head model,
    and a layer whose features the model also returns are all output layers.
    """
    order: list[str] = []
    produced: dict[Any, str] = {}  # grad_fn of a prunable layer's output -> layer name

    def record(name: str, output: Any) -> None:
        if name not in order:
            order.append(name)
        if torch.is_tensor(output) and output.grad_fn is not None:
            produced.setdefault(output.grad_fn, name)

    handles = [
        module.register_forward_hook(lambda m, i, o, name=name: record(name, o))
        for name, module in model.named_modules()
        if is_prunable(module)
    ]
    was_training = model.training
    try:
        model.eval()
        with torch.enable_grad():
            outputs = output_tensors(call(model, example_input))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    found: list[str] = []
    seen: set[Any] = set()
    stack = [tensor.grad_fn for tensor in outputs if tensor.grad_fn is not None]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if node in produced:
            if produced[node] not in found:
                found.append(produced[node])
            continue
        stack.extend(next_node for next_node, _ in node.next_functions)
    outputs_in_order = [name for name in order if name in found]
    return order, outputs_in_order


def forward_order(model: nn.Module, example_input: Any) -> list[str]:
    """Names of the prunable modules in the order one forward pass calls them.

    Args:
        model: The model to run.
        example_input: A batch the model accepts (a tensor, a tuple of positional arguments or a
            dict of keyword arguments).

    Returns:
        Module names, each once, in first-call order.
    """
    return _trace_layers(model, example_input)[0]


def find_prunable_layers(
    model: nn.Module,
    example_input: Any = None,
    layers: Sequence[str] | None = None,
    ignore_layers: Sequence[str] | None = None,
) -> list[PrunableLayer]:
    """The layers to prune: :func:`find_layers` without the reasons for the layers left out.

    Raises:
        ValueError: As :func:`find_layers`.
    """
    return find_layers(model, example_input, layers, ignore_layers)[0]


def find_layers(
    model: nn.Module,
    example_input: Any = None,
    layers: Sequence[str] | None = None,
    ignore_layers: Sequence[str] | None = None,
) -> tuple[list[PrunableLayer], dict[str, str]]:
    """Find the layers to prune.

    Without ``layers``, every supported layer is selected except frozen ones (no parameter requires
    a gradient: fine-tuning could not recover what pruning them costs) and, with ``example_input``,
    ones the forward pass never calls (a GAN's discriminator, an unused head): scores, masks and
    MACs of those would mean nothing for this forward. Name them in ``layers`` to prune them anyway.

    The output layers are the prunable layers whose outputs reach the model's output without passing
    through another prunable layer (with ``example_input``: every head of a multi-head model), or
    the last one registered when no input is given. They are part of the result (their weights can
    be pruned), marked ``is_output=True`` so that their output units are kept.

    Args:
        model: The model.
        example_input: A batch for one forward pass, to order layers and find the output layer.
        layers: Glob patterns (``fnmatch``) of module names to prune; ``None`` selects every
            supported layer.
        ignore_layers: Glob patterns of module names never to prune.

    Returns:
        The selected layers, in forward order (or registration order without an input), and the
        supported layers left out by default, each with the reason.

    Raises:
        ValueError: If a pattern matches no module, if a module selected by name is of a type that
            cannot be pruned (the message lists the supported types), or if nothing is left.
    """
    modules = dict(model.named_modules())
    names = [name for name, module in modules.items() if is_prunable(module)]
    output_names = set(names[-1:])
    if example_input is not None:
        called, outputs = _trace_layers(model, example_input)
        names = called + [name for name in names if name not in called]
        output_names = set(outputs) or set(called[-1:]) or output_names

    selected, excluded = names, {}
    if layers is None:
        for name in names:
            params = list(modules[name].parameters())
            if params and not any(param.requires_grad for param in params):
                excluded[name] = "frozen (no parameter requires a gradient)"
            elif example_input is not None and name not in called:
                excluded[name] = "never called by the model's forward pass"
        selected = [name for name in names if name not in excluded]
    else:
        selected = []
        for pattern in layers:
            matches = [name for name in modules if name and fnmatch.fnmatchcase(name, pattern)]
            if not matches:
                raise ValueError(
                    f"`layers` pattern {pattern!r} matches no module. Module names: {sorted(n for n in modules if n)}"
                )
            for name in matches:
                if not is_prunable(modules[name]):
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
        left_out = "; ".join(f"{name!r}: {why}" for name, why in list(excluded.items())[:5])
        raise ValueError(
            f"No prunable layer left (layers={layers!r}, ignore_layers={ignore_layers!r}"
            f"{'; left out by default: ' + left_out + ', select them with `layers=`' if left_out else ''}). "
            f"Supported layer types: {sorted(PRUNABLE_TYPES)}."
        )
    return [PrunableLayer(name, modules[name], is_output=name in output_names) for name in selected], excluded
