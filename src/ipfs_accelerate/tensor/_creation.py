"""Creating tensors: from data, filled, ranges and seeded random values.

Default dtypes: Python floats give float32 (the library's default floating dtype, as in
PyTorch), Python ints give int64 and bools give bool; numpy arrays keep their dtype. Values
are checked against the target dtype: an out-of-range integer, a float with a fractional part
(or NaN/inf) into an integer dtype, or a finite float that would become infinite in a
narrower float dtype raise instead of wrapping or truncating silently.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.errors import (
    DtypeError,
    InvalidArgumentError,
    ShapeError,
    TensorOverflowError,
    TensorTooLargeError,
)
from ipfs_accelerate.tensor._dtype import (
    DType,
    as_dtype,
    bool_,
    float32,
    from_numpy_dtype,
    int64,
)
from ipfs_accelerate.tensor._tensor import Tensor

if TYPE_CHECKING:
    from ipfs_accelerate.hal._backend import Backend

__all__ = [
    "arange",
    "from_numpy",
    "full",
    "full_like",
    "ones",
    "ones_like",
    "rand",
    "randn",
    "tensor",
    "zeros",
    "zeros_like",
]

DEFAULT_FLOAT = float32
_default_rng = np.random.default_rng()


def _backend(device: str | None) -> Backend:
    from ipfs_accelerate.hal import get_backend

    return get_backend(device)


def _sized_backend(device: str | None, shape: tuple[int, ...], dtype: DType, op: str) -> Backend:
    """The backend of ``device``, once a ``dtype`` tensor of ``shape`` is known to fit the
    size bound (checked before the backend allocates anything)."""
    from ipfs_accelerate.hal._limits import check_tensor_size

    backend = _backend(device)
    check_tensor_size(shape, dtype.itemsize, op=op, dtype=dtype.name, device=backend.name)
    return backend


def normalize_shape(shape: Any, *, context: str) -> tuple[int, ...]:
    """``shape`` as a tuple of non-negative ints (accepts an int, a sequence, or varargs)."""
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        dims = tuple(shape)
    except TypeError:
        raise ShapeError(
            f"{context}: shape must be an int or a sequence of ints, got {shape!r}"
        ) from None
    out = []
    for dim in dims:
        if isinstance(dim, bool) or not isinstance(dim, numbers.Integral):
            raise ShapeError(f"{context}: shape {dims!r} has a non-integer dimension {dim!r}")
        if dim < 0:
            raise ShapeError(f"{context}: shape {dims!r} has a negative dimension {dim}")
        out.append(int(dim))
    return tuple(out)


def _shape_from_varargs(shape: tuple[Any, ...], context: str) -> tuple[int, ...]:
    if len(shape) == 1 and not isinstance(shape[0], numbers.Integral):
        return normalize_shape(shape[0], context=context)
    return normalize_shape(shape, context=context)


def checked_cast(
    array: np.ndarray[Any, Any], dtype: DType, *, context: str
) -> np.ndarray[Any, Any]:
    """``array`` converted to ``dtype``, refusing conversions that would change values silently.

    Refused: NaN/inf or values with a fractional part into integer or bool dtypes; values out
    of an integer dtype's range; finite floats that overflow to infinity in a narrower float;
    non-0/1 values into bool. Rounding to a less precise float is allowed (that is what a
    float dtype means).
    """
    target = dtype.numpy
    source = array.dtype
    if source == target:
        return array
    if source.kind == "b" or (source.kind in "iu" and target.kind == "f"):
        return array.astype(target)
    if source.kind not in "biuf":
        raise DtypeError(f"{context}: cannot convert data of numpy dtype {source} to {dtype.name}")
    if target.kind == "b":
        if array.size and not np.isin(array, (0, 1)).all():
            raise TensorOverflowError(
                f"{context}: only 0 and 1 convert to bool exactly; "
                f"found {_first_bad(array, ~np.isin(array, (0, 1)))}"
            )
        return array.astype(target)
    if target.kind in "iu":
        info = np.iinfo(target)
        if source.kind == "f":
            if array.size:
                bad = ~np.isfinite(array)
                if bad.any():
                    raise TensorOverflowError(
                        f"{context}: {_first_bad(array, bad)} cannot be represented as {dtype.name}"
                    )
                bad = array != np.trunc(array)
                if bad.any():
                    raise DtypeError(
                        f"{context}: converting to {dtype.name} "
                        f"would truncate {_first_bad(array, bad)}; round explicitly first"
                    )
            low, high = float(info.min), float(info.max)
        else:
            low, high = info.min, info.max  # type: ignore[assignment]
        if array.size:
            bad = (array < low) | (array > high)
            if bad.any():
                raise TensorOverflowError(
                    f"{context}: {_first_bad(array, bad)} is out of range "
                    f"for {dtype.name} [{info.min}, {info.max}]"
                )
        return array.astype(target)
    # float -> float
    with np.errstate(over="ignore"):
        converted = array.astype(target)
    if target.itemsize < source.itemsize and converted.size:
        bad = np.isinf(converted) & np.isfinite(array)
        if bad.any():
            raise TensorOverflowError(
                f"{context}: {_first_bad(array, bad)} overflows {dtype.name} "
                f"(max {np.finfo(target).max})"
            )
    return converted


def _first_bad(array: np.ndarray[Any, Any], mask: np.ndarray[Any, Any]) -> str:
    index = np.unravel_index(int(np.argmax(mask)), array.shape) if array.ndim else ()
    value = array[index] if array.ndim else array[()]
    where = f" at index {tuple(int(i) for i in index)}" if array.ndim else ""
    return f"value {value!r}{where}"


def _host_array(data: Any, dtype: DType | None, context: str) -> np.ndarray[Any, Any]:
    """Python/numpy/tensor data as a new numpy array of a supported dtype.

    The result never aliases ``data``."""
    borrowed = True
    if isinstance(data, Tensor):
        array = data.numpy()
    elif isinstance(data, np.ndarray | np.generic):
        array = np.asarray(data)
    else:
        borrowed = False
        try:
            array = np.array(data)
        except (ValueError, TypeError):
            raise InvalidArgumentError(
                f"{context}: cannot make a tensor from this {type(data).__name__}: "
                "nested sequences must be rectangular (not ragged) and hold numbers"
            ) from None
        except OverflowError:
            raise TensorOverflowError(
                f"{context}: a value in the data does not fit any supported dtype"
            ) from None
        if array.dtype == object:
            raise InvalidArgumentError(
                f"{context}: data is ragged, too large for int64, or holds non-numeric values; "
                "nested sequences must be rectangular and numeric"
            )
        if dtype is None and array.dtype.kind == "f":
            dtype = DEFAULT_FLOAT
        elif dtype is None and array.dtype.kind in "iu":
            dtype = int64
    if dtype is None:
        dtype = from_numpy_dtype(array.dtype, context=context)
    result = checked_cast(array, dtype, context=context)
    return result.copy() if borrowed and result is array else result


def tensor(
    data: Any,
    dtype: DType | str | None = None,
    device: str | None = None,
    *,
    requires_grad: bool = False,
) -> Tensor:
    """A new tensor holding a copy of ``data`` (nested sequences, scalars, numpy arrays, tensors).

    ``dtype`` defaults to the data's (Python floats -> float32, ints -> int64); values that do
    not fit ``dtype`` raise (see module docstring). ``device`` names a backend ("cpu" default).
    """
    target = as_dtype(dtype) if dtype is not None else None
    array = _host_array(data, target, "tensor()")
    backend = _backend(device)
    result = Tensor(
        backend.from_numpy(array),
        array.shape,
        from_numpy_dtype(array.dtype, context="tensor()"),
        backend,
    )
    return _leaf(result, requires_grad, "tensor()")


def from_numpy(
    array: np.ndarray[Any, Any], device: str | None = None, *, requires_grad: bool = False
) -> Tensor:
    """Wrap a numpy array. On CPU the tensor shares memory with ``array`` (no copy)."""
    if not isinstance(array, np.ndarray):
        raise InvalidArgumentError(
            f"from_numpy(): expected a numpy.ndarray, got {type(array).__name__}"
        )
    dt = from_numpy_dtype(array.dtype, context="from_numpy()")
    backend = _backend(device)
    return _leaf(
        Tensor(backend.from_numpy(array), array.shape, dt, backend), requires_grad, "from_numpy()"
    )


def _leaf(result: Tensor, requires_grad: bool, context: str) -> Tensor:
    if requires_grad:
        from ipfs_accelerate.tensor._autograd import check_can_require_grad

        check_can_require_grad(result, context)
        result.requires_grad_(True)
    return result


def _rebuild(array: np.ndarray[Any, Any], device: str, requires_grad: bool = False) -> Tensor:
    return from_numpy(array, device, requires_grad=requires_grad)


def _fill_dtype(value: Any) -> DType:
    if isinstance(value, bool | np.bool_):
        return bool_
    if isinstance(value, numbers.Integral):
        return int64
    if isinstance(value, numbers.Real):
        return DEFAULT_FLOAT
    raise DtypeError(f"full(): fill value must be a bool, int or float, got {type(value).__name__}")


def full(
    shape: Any,
    fill_value: Any,
    dtype: DType | str | None = None,
    device: str | None = None,
    *,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of ``shape`` filled with ``fill_value`` (dtype defaults from the value)."""
    dims = normalize_shape(shape, context="full()")
    target = as_dtype(dtype) if dtype is not None else _fill_dtype(fill_value)
    value = _checked_scalar(fill_value, target, "full()")
    backend = _sized_backend(device, dims, target, "full()")
    return _leaf(
        Tensor(backend.full(dims, value, target), dims, target, backend), requires_grad, "full()"
    )


def _checked_scalar(value: Any, dtype: DType, context: str) -> bool | int | float:
    if isinstance(value, Tensor):
        value = value.item()
    array = checked_cast(np.asarray(value), dtype, context=context)
    scalar: bool | int | float = array.item()
    return scalar


def zeros(
    *shape: Any,
    dtype: DType | str | None = None,
    device: str | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of zeros (float32 unless ``dtype`` says otherwise)."""
    dims = _shape_from_varargs(shape, "zeros()")
    return full(
        dims,
        0,
        dtype if dtype is not None else DEFAULT_FLOAT,
        device,
        requires_grad=requires_grad,
    )


def ones(
    *shape: Any,
    dtype: DType | str | None = None,
    device: str | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor of ones (float32 unless ``dtype`` says otherwise)."""
    dims = _shape_from_varargs(shape, "ones()")
    return full(
        dims,
        1,
        dtype if dtype is not None else DEFAULT_FLOAT,
        device,
        requires_grad=requires_grad,
    )


def full_like(
    other: Tensor,
    fill_value: Any,
    dtype: DType | str | None = None,
    device: str | None = None,
    *,
    requires_grad: bool = False,
) -> Tensor:
    """A tensor shaped like ``other`` (same dtype and device unless given) filled with a value."""
    _require_tensor(other, "full_like()")
    return full(
        other.shape,
        fill_value,
        dtype if dtype is not None else other.dtype,
        device or other.device,
        requires_grad=requires_grad,
    )


def zeros_like(
    other: Tensor,
    dtype: DType | str | None = None,
    device: str | None = None,
    *,
    requires_grad: bool = False,
) -> Tensor:
    return full_like(other, 0, dtype, device, requires_grad=requires_grad)


def ones_like(
    other: Tensor,
    dtype: DType | str | None = None,
    device: str | None = None,
    *,
    requires_grad: bool = False,
) -> Tensor:
    return full_like(other, 1, dtype, device, requires_grad=requires_grad)


def _require_tensor(value: Any, context: str) -> None:
    if not isinstance(value, Tensor):
        raise InvalidArgumentError(f"{context}: expected a Tensor, got {type(value).__name__}")


def arange(
    start: float,
    end: float | None = None,
    step: float = 1,
    dtype: DType | str | None = None,
    device: str | None = None,
    *,
    requires_grad: bool = False,
) -> Tensor:
    """Evenly spaced values in ``[start, end)`` (``arange(n)`` counts from 0), numpy's values.

    dtype defaults to int64 when start, end and step are ints, else float32.
    """
    if end is None:
        start, end = 0, start
    for name, value in (("start", start), ("end", end), ("step", step)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidArgumentError(f"arange(): {name} must be a real number, got {value!r}")
        if not math.isfinite(value):
            raise InvalidArgumentError(f"arange(): {name} must be finite, got {value!r}")
    if step == 0:
        raise InvalidArgumentError("arange(): step must not be zero")
    all_int = all(isinstance(v, numbers.Integral) for v in (start, end, step))
    target = as_dtype(dtype) if dtype is not None else (int64 if all_int else DEFAULT_FLOAT)
    count = (end - start) / step
    if not math.isfinite(count):  # e.g. arange(0, 1e300, 1e-300): more values than any memory
        raise TensorTooLargeError(
            f"arange(): [{start!r}, {end!r}) in steps of {step!r} holds more than 1e308 values"
        )
    size = max(0, math.ceil(count))
    if size:
        last = start + (size - 1) * step
        _checked_scalar(start, target, "arange()")
        _checked_scalar(last, target, "arange()")
    backend = _sized_backend(device, (size,), target, "arange()")
    return _leaf(
        Tensor(backend.arange(start, step, size, target), (size,), target, backend),
        requires_grad,
        "arange()",
    )


def rand(
    *shape: Any,
    low: float = 0.0,
    high: float = 1.0,
    seed: int | None = None,
    dtype: DType | str | None = None,
    device: str | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """Uniform random values in ``[low, high)``; the same ``seed`` gives the same values on
    every backend (they are drawn on the host with numpy's PCG64 generator)."""
    dims = _shape_from_varargs(shape, "rand()")
    target = _float_dtype(dtype, "rand()")
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise InvalidArgumentError(
            f"rand(): need finite low < high, got low={low!r}, high={high!r}"
        )
    _sized_backend(device, dims, target, "rand()")
    array = uniform_array(dims, seed, target, low, high)
    return from_numpy(array, device, requires_grad=requires_grad)


def uniform_array(
    dims: tuple[int, ...],
    seed: int | None,
    dtype: DType,
    low: float = 0.0,
    high: float = 1.0,
) -> np.ndarray[Any, Any]:
    """:func:`rand`'s values as a host array (what a captured training step feeds as its
    dropout masks' input)."""
    rng = np.random.default_rng(seed) if seed is not None else _default_rng
    values = rng.uniform(low, high, size=dims)
    # rounding into a narrower float can land exactly on ``high``: keep the interval half-open
    array = values.astype(dtype.numpy)
    np.minimum(array, np.nextafter(dtype.numpy.type(high), dtype.numpy.type(low)), out=array)
    return array


def randn(
    *shape: Any,
    seed: int | None = None,
    dtype: DType | str | None = None,
    device: str | None = None,
    requires_grad: bool = False,
) -> Tensor:
    """Standard normal random values; seeded like :func:`rand`."""
    dims = _shape_from_varargs(shape, "randn()")
    target = _float_dtype(dtype, "randn()")
    _sized_backend(device, dims, target, "randn()")
    rng = np.random.default_rng(seed) if seed is not None else _default_rng
    return from_numpy(
        rng.standard_normal(size=dims).astype(target.numpy), device, requires_grad=requires_grad
    )


def _float_dtype(dtype: DType | str | None, context: str) -> DType:
    target = as_dtype(dtype) if dtype is not None else DEFAULT_FLOAT
    if not target.is_floating:
        raise DtypeError(f"{context}: dtype must be a floating dtype, got {target.name}")
    return target
