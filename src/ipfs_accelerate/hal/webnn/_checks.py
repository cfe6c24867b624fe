"""Reading the checks that the emitted graph computes: the integer ranges they test against,
and the CPU backend's typed error that each check's values report at readback."""

from __future__ import annotations

from typing import Any

import numpy as np

from ipfs_accelerate.errors import (
    DtypeError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    TensorOverflowError,
)
from ipfs_accelerate.hal.webnn._graph import Node

__all__ = ["FLOAT", "INTEGER", "INT_RANGE", "check_failure", "fits"]

INTEGER = frozenset({"int32", "int64", "int8", "uint8"})
FLOAT = frozenset({"float16", "float32"})
INT_RANGE = {
    "int8": (-128, 127),
    "uint8": (0, 255),
    "int32": (-(2**31), 2**31 - 1),
    "int64": (-(2**63), 2**63 - 1),
}


def fits(source: str, target: str) -> bool:
    """Whether every value of integer dtype ``source`` fits integer dtype ``target``."""
    low, high = INT_RANGE[source]
    target_low, target_high = INT_RANGE[target]
    return target_low <= low and high <= target_high


def check_failure(node: Node, values: list[np.ndarray[Any, Any]]) -> Exception | None:
    """The error a check's values report (None when the checked op went well)."""
    kind = node.attrs[0]
    if kind == "overflow":
        op, dtype = node.attrs[1], node.attrs[2]
        if values[0].any():
            low, high = INT_RANGE[dtype]
            return TensorOverflowError(
                f"{op}: integer result overflows {dtype} [{low}, {high}]; "
                "cast to a wider dtype first"
            )
        return None
    if kind == "neg_unsigned":
        if values[0].any():
            return TensorOverflowError(
                "neg: negating non-zero uint8 values wraps around; cast to a signed dtype first"
            )
        return None
    if kind == "division":
        if values[0].any():
            return InvalidArgumentError(f"{node.attrs[1]}: integer division by zero")
        return None
    if kind == "pow":
        if values[0].any():
            return InvalidArgumentError("pow: integers to negative integer powers are not allowed")
        if values[1].any():
            low, high = INT_RANGE[node.attrs[1]]
            return TensorOverflowError(
                f"pow: integer result overflows {node.attrs[1]} [{low}, {high}]; "
                "cast to a wider dtype first"
            )
        return None
    if kind == "index":
        axis, size = node.attrs[1], node.attrs[2]
        low, high = int(values[0]), int(values[1])
        if low < -size or high >= size:
            bad = high if high >= size else low
            return IndexOutOfRangeError(
                f"gather: index {bad} is out of range for axis {axis} of size {size}"
            )
        return None
    if kind == "index_add":  # indices of a scatter must lie in [0, size)
        axis, size = node.attrs[1], node.attrs[2]
        low, high = int(values[0]), int(values[1])
        if low < 0 or high >= size:
            bad = high if high >= size else low
            return IndexOutOfRangeError(
                f"index_add: index {bad} is out of range for axis {axis} of size {size}"
            )
        return None
    if kind == "reduce_overflow":
        if values[0].any():
            return TensorOverflowError(
                f"{node.attrs[1]}: integer result overflows int64; cast to float64 first"
            )
        return None
    if kind == "cast":
        return _cast_failure(node.attrs[1], node.attrs[2], values)
    raise AssertionError(f"unknown check {kind!r}")  # pragma: no cover


def _cast_failure(source: str, target: str, values: list[np.ndarray[Any, Any]]) -> Exception | None:
    context = "astype()"
    flags, low, high = values
    if target == "bool":
        if flags.any():
            return TensorOverflowError(
                f"{context}: only 0 and 1 convert to bool exactly; found values in [{low}, {high}]"
            )
        return None
    if source in FLOAT and target in INTEGER:
        nan, inf, fraction, outside = (bool(f) for f in flags)
        if nan:
            return TensorOverflowError(f"{context}: value nan cannot be represented as {target}")
        if inf:
            return TensorOverflowError(
                f"{context}: an infinite value cannot be represented as {target}"
            )
        if fraction:
            return DtypeError(
                f"{context}: converting to {target} would truncate a fractional value; "
                "round explicitly first"
            )
        if outside:
            info_low, info_high = INT_RANGE[target]
            bad = high if float(high) > info_high else low
            return TensorOverflowError(
                f"{context}: value {bad} is out of range for {target} [{info_low}, {info_high}]"
            )
        return None
    if flags.any():
        if target in FLOAT:
            return TensorOverflowError(
                f"{context}: a value in [{low}, {high}] overflows {target} "
                f"(max {float(np.finfo(target).max)})"
            )
        info_low, info_high = INT_RANGE[target]
        bad = high if int(high) > info_high else low
        return TensorOverflowError(
            f"{context}: value {bad} is out of range for {target} [{info_low}, {info_high}]"
        )
    return None
