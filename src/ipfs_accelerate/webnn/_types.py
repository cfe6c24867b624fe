"""Operand data types and descriptors (the spec's ``MLOperandDataType`` and
``MLOperandDescriptor``).

Only numpy is imported here: ONNX enum values are the stable integers of ``onnx.TensorProto``
written out, so that describing an operand never loads onnx.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ipfs_accelerate.errors import WebNNValidationError

__all__ = [
    "DATA_TYPES",
    "FLOAT_TYPES",
    "FOUR_BIT_TYPES",
    "INTEGER_TYPES",
    "MAX_RANK",
    "MAX_TENSOR_BYTE_LENGTH",
    "MLOperandDescriptor",
    "coerce_array",
    "integer_bounds",
    "numpy_dtype",
    "onnx_type",
    "pack_four_bit",
    "parse_descriptor",
    "unpack_four_bit",
]

#: The operand data types this implementation supports: the spec's ``MLOperandDataType``
#: values in spec order, then ``int4``/``uint4``, an extension (see docs/webnn.md).
DATA_TYPES: Final[tuple[str, ...]] = (
    "float32",
    "float16",
    "int32",
    "uint32",
    "int64",
    "uint64",
    "int8",
    "uint8",
    "int4",
    "uint4",
)
FLOAT_TYPES: Final[tuple[str, ...]] = ("float32", "float16")
#: The 4-bit extension types. numpy has no 4-bit dtype: their values are held one per
#: int8/uint8 element (range-checked on the way in), and packed two per byte only in
#: bytes-like buffers.
FOUR_BIT_TYPES: Final[tuple[str, ...]] = ("int4", "uint4")
INTEGER_TYPES: Final[tuple[str, ...]] = tuple(t for t in DATA_TYPES if t not in FLOAT_TYPES)

_HELD_AS: Final[dict[str, str]] = {"int4": "int8", "uint4": "uint8"}
_NUMPY: Final[dict[str, np.dtype[Any]]] = {
    name: np.dtype(_HELD_AS.get(name, name)) for name in DATA_TYPES
}
_BOUNDS_4BIT: Final[dict[str, tuple[int, int]]] = {"int4": (-8, 7), "uint4": (0, 15)}

# onnx.TensorProto.DataType values (stable across onnx releases)
_ONNX: Final[dict[str, int]] = {
    "float32": 1,
    "uint8": 2,
    "int8": 3,
    "int32": 6,
    "int64": 7,
    "bool": 9,
    "float16": 10,
    "uint32": 12,
    "uint64": 13,
    "float64": 11,  # internal: intermediate results only, never a WebNN operand type
    # 4-bit operands travel through the ONNX graph widened to 8 bits (see _onnx/_quantize.py)
    "int4": 3,
    "uint4": 2,
}

#: Highest operand rank accepted (the rank range reported by ``op_support_limits()``).
MAX_RANK: Final[int] = 8
#: Largest tensor accepted, in bytes (``maxTensorByteLength`` of ``op_support_limits()``).
MAX_TENSOR_BYTE_LENGTH: Final[int] = 2**40
# the spec's dimensions are [EnforceRange] unsigned long
_MAX_DIMENSION: Final[int] = 2**32 - 1


def numpy_dtype(data_type: str) -> np.dtype[Any]:
    """The numpy dtype holding a WebNN data type (int8/uint8 for int4/uint4)."""
    return _NUMPY[data_type]


def integer_bounds(data_type: str) -> tuple[int, int]:
    """The smallest and largest value of an integer data type (4-bit types included)."""
    if data_type in _BOUNDS_4BIT:
        return _BOUNDS_4BIT[data_type]
    info = np.iinfo(_NUMPY[data_type])
    return int(info.min), int(info.max)


def onnx_type(data_type: str) -> int:
    """The ``onnx.TensorProto`` enum value of a WebNN data type name (or ``"bool"``)."""
    return _ONNX[data_type]


@dataclass(frozen=True, slots=True)
class MLOperandDescriptor:
    """The spec's ``MLOperandDescriptor``: a data type and a shape (a tuple of positive sizes)."""

    data_type: str
    shape: tuple[int, ...]

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def element_count(self) -> int:
        return math.prod(self.shape)

    @property
    def numpy_dtype(self) -> np.dtype[Any]:
        return _NUMPY[self.data_type]

    @property
    def byte_length(self) -> int:
        if self.data_type in FOUR_BIT_TYPES:
            return (self.element_count + 1) // 2  # packed two per byte, as the spec sizes them
        return self.element_count * _NUMPY[self.data_type].itemsize

    def as_dict(self) -> dict[str, Any]:
        """The descriptor as the spec's dictionary (``{"dataType", "shape"}``)."""
        return {"dataType": self.data_type, "shape": list(self.shape)}


def check_data_type(value: object, what: str) -> str:
    """Validate a data type name; raise WebNNValidationError naming ``what`` otherwise."""
    if not isinstance(value, str) or value not in _NUMPY:
        raise WebNNValidationError(
            f"{what}: unsupported data type {value!r} (expected one of {', '.join(DATA_TYPES)})"
        )
    return value


def check_shape(value: object, what: str) -> tuple[int, ...]:
    """Validate a shape: a sequence of integers in [1, 2**32 - 1], at most MAX_RANK of them."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise WebNNValidationError(f"{what}: shape must be a sequence of integers, got {value!r}")
    dims: list[int] = []
    for dim in value:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
            raise WebNNValidationError(f"{what}: shape {value!r} holds a non-integer {dim!r}")
        if not 0 < int(dim) <= _MAX_DIMENSION:
            raise WebNNValidationError(
                f"{what}: shape {list(value)!r} holds the size {int(dim)}; "
                f"every size must be in [1, {_MAX_DIMENSION}]"
            )
        dims.append(int(dim))
    if len(dims) > MAX_RANK:
        raise WebNNValidationError(f"{what}: rank {len(dims)} exceeds the maximum rank {MAX_RANK}")
    return tuple(dims)


def parse_descriptor(value: object, what: str) -> MLOperandDescriptor:
    """Accept an MLOperandDescriptor or a mapping with ``dataType``/``data_type`` and ``shape``.

    Raises WebNNValidationError naming ``what`` for a missing key, an unknown data type, a size
    outside [1, 2**32 - 1], a rank above MAX_RANK or a byte length above MAX_TENSOR_BYTE_LENGTH.
    """
    if isinstance(value, MLOperandDescriptor):
        descriptor = value
    elif isinstance(value, Mapping):
        data_type = value.get("dataType", value.get("data_type"))
        if data_type is None:
            raise WebNNValidationError(f"{what}: descriptor {dict(value)!r} has no 'dataType'")
        if "shape" not in value:
            raise WebNNValidationError(f"{what}: descriptor {dict(value)!r} has no 'shape'")
        descriptor = MLOperandDescriptor(
            check_data_type(data_type, what), check_shape(value["shape"], what)
        )
    else:
        raise WebNNValidationError(
            f"{what}: expected a descriptor {{'dataType', 'shape'}}, got {type(value).__name__}"
        )
    if descriptor.byte_length > MAX_TENSOR_BYTE_LENGTH:
        raise WebNNValidationError(
            f"{what}: {descriptor.byte_length} bytes exceed the maximum tensor byte length "
            f"{MAX_TENSOR_BYTE_LENGTH}"
        )
    return descriptor


def _exact_integers(data: object, data_type: str, what: str) -> np.ndarray[Any, Any]:
    """Nested Python numbers as an integer array, refusing anything not exactly representable
    (read through Python objects: a float64 detour would round values past 2**53)."""
    raw = np.asarray(data, dtype=object)
    dtype = _NUMPY[data_type]
    low, high = integer_bounds(data_type)
    values = []
    for value in raw.reshape(-1):
        if isinstance(value, (bool, np.bool_)) or not isinstance(
            value, (int, float, np.integer, np.floating)
        ):
            raise WebNNValidationError(f"{what}: expected numbers, got {type(value).__name__}")
        if isinstance(value, (float, np.floating)):
            if not math.isfinite(value) or not float(value).is_integer():
                raise WebNNValidationError(
                    f"{what}: non-integral value {value!r} cannot be held by {data_type}"
                )
            value = int(value)
        number = int(value)
        if not low <= number <= high:
            raise WebNNValidationError(
                f"{what}: values such as {number} do not fit {data_type} [{low}, {high}]"
            )
        values.append(number)
    return np.array(values, dtype=dtype).reshape(raw.shape)


def _check_four_bit(array: np.ndarray[Any, Any], data_type: str, what: str) -> None:
    low, high = _BOUNDS_4BIT[data_type]
    outside = (array < low) | (array > high)
    if np.any(outside):
        raise WebNNValidationError(
            f"{what}: values such as {int(array[outside].flat[0])} do not fit {data_type} "
            f"[{low}, {high}]"
        )


def pack_four_bit(array: np.ndarray[Any, Any]) -> bytes:
    """int4/uint4 values (one per int8/uint8 element) packed two per byte, low nibble first."""
    nibbles = (array.reshape(-1).astype(np.int16) & 0xF).astype(np.uint8)
    if nibbles.size % 2:
        nibbles = np.append(nibbles, np.uint8(0))
    return (nibbles[0::2] | (nibbles[1::2] << 4)).tobytes()


def unpack_four_bit(
    buffer: bytes | bytearray | memoryview, descriptor: MLOperandDescriptor
) -> np.ndarray[Any, Any]:
    """The inverse of pack_four_bit: one value per element, sign-extended for int4."""
    packed = np.frombuffer(memoryview(buffer).cast("B"), dtype=np.uint8)
    nibbles = np.empty(packed.size * 2, dtype=np.uint8)
    nibbles[0::2] = packed & 0xF
    nibbles[1::2] = packed >> 4
    values = nibbles[: descriptor.element_count]
    if descriptor.data_type == "int4":
        values = ((values ^ 8).astype(np.int8) - 8).astype(np.int8)  # nibbles 8..15: -8..-1
    return values.reshape(descriptor.shape)


def coerce_array(data: object, descriptor: MLOperandDescriptor, what: str) -> np.ndarray[Any, Any]:
    """Turn ``data`` into a C-contiguous numpy array of the descriptor's data type and shape.

    Accepted: a numpy array of exactly the descriptor's dtype with the same element count
    (reshaped; never converted, so nothing is rounded or wrapped silently); a bytes-like
    object of exactly the descriptor's byte length; or nested Python numbers, converted only
    when every value is representable (integers in range, no fractional value for an integer
    type). The result may share memory with ``data``.

    ``int4``/``uint4`` take an int8/uint8 array (one value per element) or a bytes-like
    object packing two values per byte, the first in the low nibble (ONNX's and the
    browsers' layout); every value is checked against the 4-bit range.
    """
    dtype = _NUMPY[descriptor.data_type]
    if isinstance(data, np.ndarray):
        if data.dtype != dtype:
            raise WebNNValidationError(
                f"{what}: array dtype {data.dtype} does not match the data type "
                f"{descriptor.data_type} (convert it explicitly)"
            )
        if data.size != descriptor.element_count:
            raise WebNNValidationError(
                f"{what}: array of shape {data.shape} ({data.size} elements) does not fit "
                f"shape {list(descriptor.shape)} ({descriptor.element_count} elements)"
            )
        array = np.ascontiguousarray(data).reshape(descriptor.shape)
        if descriptor.data_type in FOUR_BIT_TYPES:
            _check_four_bit(array, descriptor.data_type, what)
        return array
    if isinstance(data, (bytes, bytearray, memoryview)):
        view = memoryview(data)
        if view.nbytes != descriptor.byte_length:
            raise WebNNValidationError(
                f"{what}: buffer of {view.nbytes} bytes does not match the descriptor's "
                f"{descriptor.byte_length} bytes ({descriptor.data_type} {list(descriptor.shape)})"
            )
        if descriptor.data_type in FOUR_BIT_TYPES:
            return unpack_four_bit(view, descriptor)
        return np.frombuffer(view.cast("B"), dtype=dtype).reshape(descriptor.shape)
    if dtype.kind in "iu":
        exact = _exact_integers(data, descriptor.data_type, what)
    else:
        try:
            values = np.asarray(data, dtype=np.float64)
        except (ValueError, TypeError) as error:
            raise WebNNValidationError(f"{what}: expected numbers: {error}") from error
        with np.errstate(over="ignore"):
            exact = values.astype(dtype)
        overflow = np.isfinite(values) & ~np.isfinite(exact)
        if np.any(overflow):
            raise WebNNValidationError(
                f"{what}: values such as {values[overflow].flat[0]!r} overflow {dtype}"
            )
    if exact.size != descriptor.element_count:
        raise WebNNValidationError(
            f"{what}: {exact.size} values do not fit shape {list(descriptor.shape)} "
            f"({descriptor.element_count} elements)"
        )
    return exact.reshape(descriptor.shape)
