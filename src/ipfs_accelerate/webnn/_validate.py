"""Validation helpers shared by the builder's methods: every failure is a WebNNValidationError
whose message starts with the op (and its label) and names the offending operand or option."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np

from ipfs_accelerate.errors import WebNNValidationError

__all__ = ["Where"]

_UINT32_MAX = 2**32 - 1
_INT32_MIN, _INT32_MAX = -(2**31), 2**31 - 1


class Where:
    """The context of a check: the op (spec camelCase is not used; snake_case) and its label."""

    __slots__ = ("label", "op")

    def __init__(self, op: str, label: str = "") -> None:
        self.op = op
        self.label = label

    def error(self, message: str) -> WebNNValidationError:
        prefix = f"{self.op} [{self.label}]" if self.label else self.op
        return WebNNValidationError(f"{prefix}: {message}")

    # -------------------------------------------------------------- scalars

    def uint(self, value: object, name: str, *, minimum: int = 0) -> int:
        """An [EnforceRange] unsigned long (optionally with a larger minimum)."""
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise self.error(f"{name} must be an integer, got {value!r}")
        number = int(value)
        if not minimum <= number <= _UINT32_MAX:
            raise self.error(f"{name} must be in [{minimum}, {_UINT32_MAX}], got {number}")
        return number

    def int32(self, value: object, name: str) -> int:
        """An [EnforceRange] long."""
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise self.error(f"{name} must be an integer, got {value!r}")
        number = int(value)
        if not _INT32_MIN <= number <= _INT32_MAX:
            raise self.error(f"{name} must be in [{_INT32_MIN}, {_INT32_MAX}], got {number}")
        return number

    def finite(self, value: object, name: str) -> float:
        """A WebIDL (restricted) double: a finite number."""
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self.error(f"{name} must be a number, got {value!r}")
        number = float(value)
        if not math.isfinite(number):
            raise self.error(f"{name} must be finite, got {number}")
        return number

    def number(self, value: object, name: str) -> int | float:
        """An MLNumber: any int (kept exact) or float (infinities and NaN allowed)."""
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise self.error(f"{name} must be a number, got {value!r}")
        if isinstance(value, (int, np.integer)):
            return int(value)
        return float(value)

    def boolean(self, value: object, name: str) -> bool:
        if not isinstance(value, (bool, np.bool_)):
            raise self.error(f"{name} must be a boolean, got {value!r}")
        return bool(value)

    def choice(self, value: object, name: str, allowed: Sequence[str]) -> str:
        if not isinstance(value, str) or value not in allowed:
            raise self.error(
                f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}"
            )
        return value

    # -------------------------------------------------------------- sequences

    def uint_list(
        self,
        values: object,
        name: str,
        *,
        length: int | None = None,
        minimum: int = 0,
    ) -> tuple[int, ...]:
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise self.error(f"{name} must be a sequence of integers, got {values!r}")
        items = tuple(self.uint(v, name, minimum=minimum) for v in values)
        if length is not None and len(items) != length:
            raise self.error(f"{name} must hold {length} values, got {len(items)}: {list(items)}")
        return items

    def axes(self, values: object, rank: int, name: str = "axes") -> tuple[int, ...]:
        """Distinct axes in [0, rank - 1] (the spec's axes are unsigned: no negative axes)."""
        items = self.uint_list(values, name)
        for axis in items:
            if axis >= rank:
                raise self.error(
                    f"{name} {list(items)}: axis {axis} is out of range for rank {rank} "
                    f"(valid axes are 0..{rank - 1})"
                    if rank
                    else f"{name} {list(items)}: axis {axis} is out of range for a scalar"
                )
        if len(set(items)) != len(items):
            raise self.error(f"{name} {list(items)} holds a repeated axis")
        return items

    def axis(self, value: object, rank: int, name: str = "axis") -> int:
        axis = self.uint(value, name)
        if axis >= rank:
            raise self.error(
                f"{name} {axis} is out of range for rank {rank}"
                + (f" (valid axes are 0..{rank - 1})" if rank else "")
            )
        return axis

    def dims(self, values: object, name: str) -> tuple[int, ...]:
        """A shape given as an argument (every size in [1, 2**32 - 1])."""
        return self.uint_list(values, name, minimum=1)


def broadcast_shapes(
    where: Where, first: tuple[int, ...], second: tuple[int, ...], names: str
) -> tuple[int, ...]:
    """Bidirectional (numpy) broadcasting, as the spec's element-wise ops use it."""
    rank = max(len(first), len(second))
    a = (1,) * (rank - len(first)) + first
    b = (1,) * (rank - len(second)) + second
    out = []
    for x, y in zip(a, b, strict=True):
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        else:
            raise where.error(
                f"shapes {list(first)} and {list(second)} of {names} do not broadcast"
            )
    return tuple(out)


def unidirectional(
    where: Where, source: tuple[int, ...], target: tuple[int, ...], name: str
) -> None:
    """Check that ``source`` broadcasts to ``target`` without changing ``target``."""
    if len(source) > len(target):
        raise where.error(
            f"{name} of shape {list(source)} has a higher rank than {list(target)} "
            "it must broadcast to"
        )
    padded = (1,) * (len(target) - len(source)) + source
    for s, t in zip(padded, target, strict=True):
        if s not in (1, t):
            raise where.error(
                f"{name} of shape {list(source)} does not broadcast to {list(target)}"
            )
