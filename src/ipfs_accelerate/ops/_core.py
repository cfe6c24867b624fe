"""Shared machinery of the op layer: operands, devices, broadcasting, axes and dispatch."""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ipfs_accelerate.errors import (
    AxisError,
    BackendFallbackWarning,
    DeviceMismatchError,
    DtypeError,
    InvalidArgumentError,
    ShapeError,
    UnsupportedOpError,
)
from ipfs_accelerate.hal._backend import Backend
from ipfs_accelerate.hal._limits import check_tensor_size
from ipfs_accelerate.tensor._autograd import STATE as _GRAD_STATE
from ipfs_accelerate.tensor._autograd import record as _record
from ipfs_accelerate.tensor._dtype import DType, result_type
from ipfs_accelerate.tensor._tensor import Tensor

Scalar = bool | int | float
Shape = tuple[int, ...]
Operand = Tensor | Scalar


def describe(x: Any) -> str:
    """How an operand appears in error messages: shape, dtype and device, or its Python type."""
    if isinstance(x, Tensor):
        return f"Tensor(shape={x.shape}, dtype={x.dtype.name}, device={x.device!r})"
    return f"{type(x).__name__} {x!r}"


def is_scalar(value: Any) -> bool:
    return isinstance(value, bool | int | float) or (
        isinstance(value, np.generic) and value.dtype.kind in "biuf"
    )


def python_scalar(value: Any) -> Scalar:
    if isinstance(value, np.generic):
        item: Scalar = value.item()
        return item
    return value  # type: ignore[no-any-return]


def as_tensor(value: Any, *, op: str, like: Tensor | None = None) -> Tensor:
    """``value`` as a Tensor: tensors pass through; host data (lists, numpy arrays, scalars)
    is copied onto ``like``'s device (or the default device)."""
    if isinstance(value, Tensor):
        return value
    from ipfs_accelerate.tensor._creation import tensor

    try:
        return tensor(value, device=like.device if like is not None else None)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(
            f"{op}: operand {type(value).__name__} is not tensor data ({exc})"
        ) from None


def same_backend(op: str, tensors: Sequence[Tensor]) -> Backend:
    """The backend shared by ``tensors``; mixing devices raises DeviceMismatchError."""
    backend = tensors[0]._backend
    for t in tensors[1:]:
        if t._backend is not backend:
            devices = ", ".join(sorted({x.device for x in tensors}))
            raise DeviceMismatchError(
                f"{op}: operands are on different devices ({devices}); move them to one device "
                f"explicitly with .to(device) first"
            )
    return backend


_BROADCAST_CACHE: dict[tuple[Shape, Shape], Shape] = {}


def broadcast_shapes(a: Shape, b: Shape, op: str) -> Shape:
    """numpy's broadcast of two shapes, or ShapeError naming the op and both shapes."""
    if a == b:
        return a
    key = (a, b)
    cached = _BROADCAST_CACHE.get(key)
    if cached is not None:
        return cached
    ndim = max(len(a), len(b))
    pa = (1,) * (ndim - len(a)) + a
    pb = (1,) * (ndim - len(b)) + b
    out = []
    for i, (da, db) in enumerate(zip(pa, pb, strict=True)):
        if da == db or db == 1:
            out.append(da)
        elif da == 1:
            out.append(db)
        else:
            raise ShapeError(
                f"{op}: shapes {a} and {b} cannot be broadcast together "
                f"(dimension {i - ndim} is {da} vs {db})"
            )
    result = tuple(out)
    if len(_BROADCAST_CACHE) < 4096:
        _BROADCAST_CACHE[key] = result
    return result


def broadcast_many(shapes: Sequence[Shape], op: str) -> Shape:
    result = shapes[0]
    for shape in shapes[1:]:
        result = broadcast_shapes(result, shape, op)
    return result


def normalize_axis(axis: Any, ndim: int, op: str) -> int:
    """A single axis in [-ndim, ndim) as a non-negative int, or AxisError."""
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral):
        raise AxisError(f"{op}: axis must be an int, got {axis!r}")
    axis = int(axis)
    if not -ndim <= axis < ndim:
        raise AxisError(
            f"{op}: axis {axis} is out of range for a tensor of rank {ndim} (valid: "
            f"{-ndim}..{ndim - 1})"
            if ndim
            else f"{op}: axis {axis} is out of range for a 0-d tensor"
        )
    return axis + ndim if axis < 0 else axis


def normalize_axes(axis: Any, ndim: int, op: str) -> tuple[int, ...]:
    """``axis`` (None = all, an int, or a sequence) as sorted unique non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, numbers.Integral) and not isinstance(axis, bool):
        return (normalize_axis(axis, ndim, op),)
    try:
        items = list(axis)
    except TypeError:
        raise AxisError(
            f"{op}: axis must be None, an int or a sequence of ints, got {axis!r}"
        ) from None
    axes = [normalize_axis(a, ndim, op) for a in items]
    if len(set(axes)) != len(axes):
        raise AxisError(f"{op}: repeated axis in {tuple(items)}")
    return tuple(sorted(axes))


def check_dtype(op: str, x: Tensor, allowed: Callable[[DType], bool], what: str) -> None:
    if not allowed(x.dtype):
        raise DtypeError(f"{op}: expected {what} tensor, got {x.dtype.name} {describe(x)}")


def wrap(handle: Any, shape: Shape, dtype: DType, backend: Backend) -> Tensor:
    return Tensor(handle, shape, dtype, backend)


def run(
    backend: Backend,
    method: str,
    args: tuple[Any, ...],
    shape: Shape,
    dtype: DType,
    kwargs: dict[str, Any] | None = None,
) -> Tensor:
    """Call ``backend.method(*args)`` and wrap the handle; an op the backend lacks (it raises
    UnsupportedOpError) runs on the CPU backend with a BackendFallbackWarning, and its result
    moves back to ``backend``. A result over the size bound (``hal.max_tensor_bytes``) raises
    TensorTooLargeError before the backend allocates it.

    Once any tensor has required grad, a floating result whose operands require grad gets its
    backward node here (tensor/_autograd.py), so every op composed of backend primitives is
    differentiable; until then the check costs one attribute read."""
    check_tensor_size(shape, dtype.itemsize, op=method, dtype=dtype.name, device=backend.name)
    try:
        handle = getattr(backend, method)(*args, **(kwargs or {}))
    except UnsupportedOpError as exc:
        if backend.name == "cpu":
            raise
        result = _fallback(backend, method, args, kwargs or {}, shape, dtype, exc)
    else:
        result = Tensor(handle, shape, dtype, backend)
    if _GRAD_STATE.armed and dtype.is_floating:
        _record(method, args, result)
    return result


def _fallback(
    backend: Backend,
    method: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    shape: Shape,
    dtype: DType,
    exc: UnsupportedOpError,
) -> Tensor:
    from ipfs_accelerate.hal import get_backend

    cpu = get_backend("cpu")
    warnings.warn(
        BackendFallbackWarning(
            f"{exc}; running {method} on 'cpu' and moving the result back to {backend.name!r}"
        ),
        stacklevel=4,
    )

    def to_cpu(value: Any) -> Any:
        if isinstance(value, Tensor):  # read-only use on the CPU: sharing host memory is fine
            return Tensor(cpu.from_numpy(value.numpy()), value.shape, value.dtype, cpu)
        if isinstance(value, list | tuple) and value and all(isinstance(v, Tensor) for v in value):
            return type(value)(to_cpu(v) for v in value)
        return value

    handle = getattr(cpu, method)(
        *(to_cpu(a) for a in args), **{k: to_cpu(v) for k, v in kwargs.items()}
    )
    host = cpu.to_numpy(Tensor(handle, shape, dtype, cpu))
    return Tensor(backend.from_numpy(np.ascontiguousarray(host)), shape, dtype, backend)


def promote(op: str, *operands: Operand) -> DType:
    """numpy's promoted dtype of tensors and Python scalars (weak), named in errors by ``op``."""
    return result_type(*(o.dtype if isinstance(o, Tensor) else o for o in operands), op=op)


def cast_to(x: Tensor, dtype: DType) -> Tensor:
    """``x`` as ``dtype`` (itself when already so). Used for promotion, which never loses values
    except where numpy's promotion itself does (int64 -> float64 precision)."""
    if x.dtype is dtype:
        return x
    return run(x._backend, "cast", (x, dtype), x.shape, dtype)
