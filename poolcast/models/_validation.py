"""Parameter constraints of the candidates (a small subset of scikit-learn's ``_param_validation``).

A constraint list names what a parameter may be: a type (``bool``, ``str``), an
:class:`Interval`, an :class:`Options` set, or ``None`` (the value None is allowed).
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from poolcast.errors import InvalidParameterError

__all__ = ["Interval", "Options", "validate_parameters"]


@dataclass(frozen=True)
class Interval:
    """A real or integer range; ``closed`` is "both", "left", "right" or "neither"; None = unbounded.

    Booleans never satisfy an Interval, even though ``bool`` subclasses ``int``.
    """

    kind: type
    left: float | None
    right: float | None
    closed: str = "both"

    def accepts(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        base = numbers.Integral if self.kind is int else numbers.Real
        if not isinstance(value, base):
            return False
        lo_ok = self.left is None or (
            value >= self.left if self.closed in ("both", "left") else value > self.left
        )
        hi_ok = self.right is None or (
            value <= self.right if self.closed in ("both", "right") else value < self.right
        )
        return bool(lo_ok and hi_ok)

    def __str__(self) -> str:
        lb = "[" if self.closed in ("both", "left") else "("
        rb = "]" if self.closed in ("both", "right") else ")"
        lo = "-inf" if self.left is None else self.left
        hi = "inf" if self.right is None else self.right
        return f"{self.kind.__name__} in {lb}{lo}, {hi}{rb}"


@dataclass(frozen=True)
class Options:
    """One of a fixed set of values."""

    values: frozenset[Any]

    def accepts(self, value: Any) -> bool:
        try:
            return value in self.values
        except TypeError:
            return False

    def __str__(self) -> str:
        return "one of " + ", ".join(repr(v) for v in sorted(self.values, key=repr))


def _accepts(constraint: Any, value: Any) -> bool:
    if constraint is None:
        return value is None
    if isinstance(constraint, type):
        return isinstance(value, constraint)
    return bool(constraint.accepts(value))


def _describe(constraint: Any) -> str:
    if constraint is None:
        return "None"
    if isinstance(constraint, type):
        return f"an instance of {constraint.__name__}"
    return str(constraint)


def validate_parameters(
    constraints: Mapping[str, Sequence[Any]], params: Mapping[str, Any], *, caller: str
) -> None:
    """Raise :class:`InvalidParameterError` naming the first parameter outside its constraints."""
    for key, value in params.items():
        allowed = constraints.get(key)
        if allowed is None:
            continue
        if not any(_accepts(c, value) for c in allowed):
            options = " or ".join(_describe(c) for c in allowed)
            raise InvalidParameterError(
                f"{caller}: parameter {key}={value!r} is invalid; it must be {options}"
            )
