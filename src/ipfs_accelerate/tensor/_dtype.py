"""Data types and the type-promotion rules.

The package supports eight dtypes: float16, float32, float64, int32, int64, int8, uint8 and
bool. Promotion follows numpy (NEP 50: Python scalars are "weak" and take the tensor's dtype
when they fit), computed by numpy itself and cached, with one exception taken from torch and
JAX: mixed integer/float operands promote to the float operand's dtype (int32 + float32 ->
float32, int64 + float16 -> float16; an integer tensor with a Python float -> float32), so
that backends without float64 are never handed one. Where numpy would produce a dtype
outside the supported set (uint64 from summing uint8, int16 from int8 + uint8...), the result
is named explicitly in the op's documentation or refused with :class:`DtypeError`.
"""

from __future__ import annotations

from typing import Any, Final

import numpy as np

from ipfs_accelerate.errors import DtypeError

__all__ = [
    "DTYPES",
    "DType",
    "as_dtype",
    "bool_",
    "float16",
    "float32",
    "float64",
    "int8",
    "int32",
    "int64",
    "result_type",
    "uint8",
]


class DType:
    """A tensor element type. Compares equal to its name and to the matching numpy dtype."""

    __slots__ = (
        "is_bool",
        "is_floating",
        "is_integer",
        "is_signed",
        "itemsize",
        "max",
        "min",
        "name",
        "numpy",
    )

    def __init__(self, name: str) -> None:
        self.name: Final = name
        self.numpy: Final = np.dtype("bool" if name == "bool" else name)
        self.itemsize: Final = self.numpy.itemsize
        self.is_floating: Final = self.numpy.kind == "f"
        self.is_integer: Final = self.numpy.kind in "iu"
        self.is_signed: Final = self.numpy.kind in "if"
        self.is_bool: Final = self.numpy.kind == "b"
        #: largest and smallest finite values (1/0 for bool)
        info: Any = (
            np.finfo(self.numpy)
            if self.is_floating
            else np.iinfo(self.numpy)
            if self.is_integer
            else None
        )
        self.max: Final[float | int] = (
            (float(info.max) if self.is_floating else int(info.max)) if info is not None else 1
        )
        self.min: Final[float | int] = (
            (float(info.min) if self.is_floating else int(info.min)) if info is not None else 0
        )

    def __repr__(self) -> str:
        return f"ipfs_accelerate.{self.name if self.name != 'bool' else 'bool_'}"

    def __str__(self) -> str:
        return self.name

    def __eq__(self, other: object) -> bool:
        if isinstance(other, DType):
            return other is self
        try:
            return as_dtype(other) is self  # type: ignore[arg-type]
        except (DtypeError, TypeError):
            return False

    def __hash__(self) -> int:
        return hash(self.name)

    def __reduce__(self) -> tuple[Any, ...]:
        return (as_dtype, (self.name,))


float16 = DType("float16")
float32 = DType("float32")
float64 = DType("float64")
int32 = DType("int32")
int64 = DType("int64")
int8 = DType("int8")
uint8 = DType("uint8")
bool_ = DType("bool")

DTYPES: Final[tuple[DType, ...]] = (
    float16, float32, float64, int32, int64, int8, uint8, bool_
)  # fmt: skip

_BY_NAME: dict[str, DType] = {d.name: d for d in DTYPES}
_BY_NAME.update(
    {
        "bool_": bool_,
        "half": float16,
        "float": float32,
        "double": float64,
        "long": int64,
        "int": int64,
    }
)
_BY_NUMPY: dict[np.dtype[Any], DType] = {d.numpy: d for d in DTYPES}


def as_dtype(value: DType | str | np.dtype[Any] | type) -> DType:
    """Return the :class:`DType` named by ``value`` (a DType, a name, a numpy dtype or type).

    Raises DtypeError naming the value and the supported dtypes when it is not one of them.
    """
    if type(value) is DType:
        return value
    if isinstance(value, str):
        found = _BY_NAME.get(value)
        if found is not None:
            return found
    else:
        if value is bool:
            return bool_
        if value is float:
            return float64
        if value is int:
            return int64
        try:
            found = _BY_NUMPY.get(np.dtype(value))  # type: ignore[arg-type]
        except TypeError:
            found = None
        if found is not None:
            return found
    raise DtypeError(
        f"unsupported dtype {value!r}; supported dtypes are " + ", ".join(d.name for d in DTYPES)
    )


def from_numpy_dtype(dtype: np.dtype[Any], *, context: str) -> DType:
    """The DType of a numpy dtype, or DtypeError naming ``context`` when it is not supported."""
    found = _BY_NUMPY.get(dtype)
    if found is None:
        raise DtypeError(
            f"{context}: numpy dtype {dtype} is not supported; supported dtypes are "
            + ", ".join(d.name for d in DTYPES)
            + " (convert with .astype() first)"
        )
    return found


Scalar = bool | int | float

_PROMOTE_CACHE: dict[tuple[Any, ...], DType] = {}


def result_type(*operands: DType | Scalar, op: str = "op") -> DType:
    """The result dtype for tensors of the given dtypes and Python scalars.

    numpy's rule (NEP 50), except that integer/bool tensors mixed with floats (tensors or
    Python floats) give the floats' dtype, or float32 when the only float is a Python scalar.
    Raises DtypeError naming ``op`` when the answer lies outside the supported dtypes.
    """
    key = tuple(o if type(o) is DType else type(o) for o in operands)
    cached = _PROMOTE_CACHE.get(key)
    if cached is not None:
        return cached
    numpy_args: list[Any] = []
    for operand in operands:
        if type(operand) is DType:
            numpy_args.append(operand.numpy)
        elif isinstance(operand, bool | int | float):
            # a representative value of the scalar's Python type: numpy 2 treats it as weak
            numpy_args.append(type(operand)(0))
        else:
            raise DtypeError(f"{op}: cannot promote operand of type {type(operand).__name__}")
    float_args = [a for a in numpy_args if type(a) is float or getattr(a, "kind", "") == "f"]
    if float_args and len(float_args) < len(numpy_args) and _has_exact_tensor(operands):
        # torch/JAX rule: the float operand decides; a lone Python float means float32
        has_float_tensor = any(type(a) is not float for a in float_args)
        numpy_args = float_args if has_float_tensor else [float32.numpy]
    try:
        promoted = np.result_type(*numpy_args)
    except TypeError as exc:
        raise DtypeError(f"{op}: no common dtype for {_describe(operands)}: {exc}") from None
    found = _BY_NUMPY.get(promoted)
    if found is None:
        raise DtypeError(
            f"{op}: promoting {_describe(operands)} gives numpy dtype {promoted}, which is not "
            "supported; cast the operands explicitly with .astype()"
        )
    _PROMOTE_CACHE[key] = found
    return found


def _has_exact_tensor(operands: tuple[DType | Scalar, ...]) -> bool:
    """Whether an integer or bool tensor dtype is among ``operands``."""
    return any(type(o) is DType and not o.is_floating for o in operands)


def _describe(operands: tuple[DType | Scalar, ...]) -> str:
    return ", ".join(
        o.name if isinstance(o, DType) else f"Python {type(o).__name__}" for o in operands
    )


_UFUNC_RESULT_CACHE: dict[tuple[str, DType], DType] = {}


def float_result_dtype(dtype: DType, op: str) -> DType:
    """The dtype numpy gives for a floating-point function (sqrt, exp...) of ``dtype``.

    numpy picks the smallest float that holds the input safely: bool/int8/uint8 -> float16,
    int32/int64 -> float64, floats keep their dtype.
    """
    key = (op, dtype)
    cached = _UFUNC_RESULT_CACHE.get(key)
    if cached is not None:
        return cached
    result = np.sqrt(np.zeros(1, dtype=dtype.numpy)).dtype
    found = _BY_NUMPY[result]
    _UFUNC_RESULT_CACHE[key] = found
    return found
