"""What ``Trainer.fit(torch.compile(module))`` leaves on a LightningModule, known in one place.

Lightning's ``from_compiled`` keeps the module itself and sets the compiled ``forward`` (and steps)
as instance attributes, with the originals in ``module._compiler_ctx["original_<name>"]``. The
pruner traces and calibrates the eager forward (the compiled one's autograd graph names no module),
and a copy of the module must not keep the student's compiled attributes (they call the student).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from torch import nn

_CONTEXT = "_compiler_ctx"


def is_compiled(module: nn.Module) -> bool:
    """Whether ``module`` was given to ``fit`` compiled (``torch.compile(module)``)."""
    return getattr(module, _CONTEXT, None) is not None


@contextlib.contextmanager
def eager_forward(module: nn.Module) -> Iterator[None]:
    """The module's own ``forward`` while the block runs (the compiled one afterwards).

    The masks set meanwhile act on the same parameters that the compiled forward reads.
    """
    context = getattr(module, _CONTEXT, None)
    if not context or "forward" not in vars(module):
        yield
        return
    compiled = module.forward
    module.forward = context["original_forward"]
    try:
        yield
    finally:
        module.forward = compiled


def strip_compiled(copy: nn.Module) -> nn.Module:
    """Give a copy of a compiled module its class's own methods back (in place; returns it)."""
    context = vars(copy).pop(_CONTEXT, None)
    for key in context or ():
        if key.startswith("original_"):
            vars(copy).pop(key[len("original_"):], None)
    return copy
