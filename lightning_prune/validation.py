"""Field checks shared by the configuration objects, and their base class :class:`Config`.

Every check returns the value in its plain form (a Python ``float``/``int``) or raises a
``ValueError`` that names the field, the value and what is allowed.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch


def as_float(value: Any) -> float | None:
    """A real number (Python, NumPy or a one-element tensor) as a ``float``; ``None`` for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if torch.is_tensor(value) and value.numel() == 1 and not value.is_complex() and value.dtype != torch.bool:
        return float(value)
    return None


def check_fraction(name: str, value: Any, low_open: bool = True) -> float:
    """The fraction as a plain ``float`` (so it checkpoints as one).

    Raises:
        ValueError: Naming ``name`` and the value, if it is not a number in (0, 1) (``[0, 1)``
            with ``low_open=False``).
    """
    number = as_float(value)
    if number is None or not (0.0 < number < 1.0 if low_open else 0.0 <= number < 1.0):
        raise ValueError(f"`{name}` must be a number in {'(0, 1)' if low_open else '[0, 1)'}, got {value!r}.")
    return number


def check_int(name: str, value: Any, minimum: int, below: int | None = None) -> int:
    """The integer, checked against ``[minimum, below)``.

    Raises:
        ValueError: Naming ``name`` and the value, if it is not an integer in range.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum or (
        below is not None and value >= below
    ):
        allowed = f">= {minimum}" if below is None else f"in [{minimum}, {below})"
        raise ValueError(f"`{name}` must be an integer {allowed}, got {value!r}.")
    return int(value)


def check_choice(name: str, value: Any, choices: Sequence[Any]) -> Any:
    """The value, if it is one of ``choices``.

    Raises:
        ValueError: Naming ``name``, the value and the choices.
    """
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}, got {value!r}.")
    return value


def without_defaults(cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """``values`` without the entries equal to ``cls.__init__``'s default for that argument."""
    parameters = inspect.signature(cls.__init__).parameters
    return {name: value for name, value in values.items()
            if name not in parameters or parameters[name].default is inspect.Parameter.empty
            or not _same(parameters[name].default, value)}


def _same(default: Any, value: Any) -> bool:
    return type(default) is type(value) and default == value if isinstance(default, bool) or isinstance(value, bool) \
        else default == value


class Config:
    """Base of the configuration objects: ``repr``, equality and a fingerprint from ``__init__``'s arguments.

    Subclasses store each ``__init__`` argument under its own name (validated).
    """

    def _fields(self) -> dict[str, Any]:
        kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
        parameters = inspect.signature(type(self).__init__).parameters.values()
        names = [p.name for p in parameters if p.name != "self" and p.kind in kinds]
        return {name: getattr(self, name) for name in names}

    def fingerprint(self) -> dict[str, Any]:
        """The class name and the fields that differ from their ``__init__`` defaults (callables left out).

        Fields at their defaults are left out, so that a field added later (at its default) does not
        change the fingerprint of an older run: what a checkpoint stores and compares on resume.
        """
        values = {name: value for name, value in self._fields().items() if not callable(value)}
        return {"type": type(self).__name__, **without_defaults(type(self), values)}

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={value!r}" for name, value in self._fields().items())
        return f"{type(self).__name__}({fields})"

    def __eq__(self, other: object) -> bool:
        return type(self) is type(other) and self._fields() == other._fields()

    __hash__ = None


def check_instance(name: str, value: Any, base: type, shortcuts: Mapping[str, Callable[[], Any]]) -> Any:
    """``value`` as an instance of ``base``: an instance passes, a shortcut string is built.

    Raises:
        ValueError: Naming ``name``, if ``value`` is a class, an unknown string or another type.
    """
    if isinstance(value, base):
        return value
    if isinstance(value, str) and value in shortcuts:
        return shortcuts[value]()
    if isinstance(value, type):
        raise ValueError(f"`{name}` must be an instance, got the class {value.__name__}: pass {value.__name__}(...).")
    raise ValueError(f"`{name}` must be a {base.__name__} object or one of {sorted(shortcuts)}, got {value!r}.")
