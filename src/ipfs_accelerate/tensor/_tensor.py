"""The Tensor type: a shape, a dtype and data held by a hardware backend.

A Tensor never computes anything itself: its operators and methods call the functions of
:mod:`ipfs_accelerate.ops`, which validate and dispatch to the tensor's backend. Data leaves
the backend only when asked (``numpy()``, printing, ``item()``, Python comparisons of
one-element tensors).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.errors import DeviceMismatchError, InvalidArgumentError
from ipfs_accelerate.tensor._dtype import DType, as_dtype

if TYPE_CHECKING:
    from ipfs_accelerate.hal._backend import Backend
    from ipfs_accelerate.tensor._autograd import Node

Scalar = bool | int | float
AxisArg = int | Sequence[int] | None


class Tensor:
    """An n-dimensional array on a hardware backend (``device``: "cpu", "webgpu", "webnn").

    Create tensors with :func:`ipfs_accelerate.tensor` and friends rather than calling the
    constructor, which wraps an existing backend handle.
    """

    __slots__ = (
        "__weakref__",
        "_backend",
        "_data",
        "_grad",
        "_grad_fn",
        "_requires_grad",
        "_version",
        "dtype",
        "shape",
    )
    __array_priority__ = 1000  # numpy defers binary operators to Tensor

    def __init__(self, data: Any, shape: tuple[int, ...], dtype: DType, backend: Backend) -> None:
        self._data = data
        self.shape: tuple[int, ...] = shape
        self.dtype: DType = dtype
        self._backend = backend
        self._requires_grad = False
        self._grad: Tensor | None = None
        self._grad_fn: Node | None = None
        self._version = 0  # bumped by in-place writes: backward checks what it saved

    # ------------------------------------------------------------------ properties

    @property
    def device(self) -> str:
        """Name of the backend holding the data."""
        return self._backend.name

    @property
    def backend(self) -> Backend:
        return self._backend

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @property
    def T(self) -> Tensor:
        """The tensor with its axes reversed (numpy's ``.T``)."""
        return _ops.transpose(self)

    @property
    def mT(self) -> Tensor:
        """The tensor with its last two axes swapped (stacks of matrices transposed)."""
        return _ops.matrix_transpose(self)

    # ------------------------------------------------------------------ autograd

    @property
    def requires_grad(self) -> bool:
        """Whether gradients flow to this tensor: set on a leaf, or made by an op with an
        operand that requires grad (while grad mode is on)."""
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        self.requires_grad_(value)

    def requires_grad_(self, requires_grad: bool = True) -> Tensor:
        """Make this leaf require grad (or not); only floating tensors can. Returns self."""
        if self._grad_fn is not None:
            from ipfs_accelerate.errors import AutogradError

            raise AutogradError(
                f"requires_grad_: Tensor(shape={self.shape}, dtype={self.dtype.name}) is the "
                f"result of {self._grad_fn.name}, not a leaf; detach() it first"
            )
        if requires_grad:
            _autograd.check_can_require_grad(self, "requires_grad_")
            _autograd.arm()
        self._requires_grad = bool(requires_grad)
        return self

    @property
    def grad(self) -> Tensor | None:
        """The accumulated gradient of a leaf (None until a backward pass reaches it)."""
        return self._grad

    @grad.setter
    def grad(self, value: Tensor | None) -> None:
        if value is not None:
            if not isinstance(value, Tensor):
                raise InvalidArgumentError(
                    f"grad must be a Tensor or None, got {type(value).__name__}"
                )
            if value.shape != self.shape or value._backend is not self._backend:
                raise InvalidArgumentError(
                    f"grad of shape {value.shape} on {value.device!r} does not match "
                    f"Tensor(shape={self.shape}, device={self.device!r})"
                )
        self._grad = value

    @property
    def grad_fn(self) -> Node | None:
        """The recorded op that made this tensor (None for leaves)."""
        return self._grad_fn

    @property
    def is_leaf(self) -> bool:
        """True unless an op recorded this tensor as its result (torch's meaning)."""
        return self._grad_fn is None

    def detach(self) -> Tensor:
        """The same data (shared, no copy) outside the graph: no grad_fn, no requires_grad."""
        return Tensor(self._data, self.shape, self.dtype, self._backend)

    def backward(
        self,
        gradient: Tensor | None = None,
        retain_graph: bool = False,
        *,
        check_finite: bool | None = None,
    ) -> None:
        """Accumulate the gradient of this tensor into the ``.grad`` of every leaf that
        requires grad and reaches it.

        ``gradient`` (same shape, dtype and device) is required unless this tensor has one
        element. The graph's saved tensors are freed afterwards unless ``retain_graph``; a
        second backward through a freed graph raises AutogradError. ``check_finite`` reads a
        one-element output and raises NonFiniteLossError when it is NaN or infinite; by default
        it does so where the value is already on the host (cpu), never forcing a device read.
        """
        _autograd.backward(self, gradient, retain_graph, check_finite)

    # ------------------------------------------------------------------ host interop

    def numpy(self) -> np.ndarray[Any, Any]:
        """The data as a numpy array. On CPU it shares memory with the tensor."""
        return self._backend.to_numpy(self)

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray[Any, Any]:
        array = self.numpy()
        if dtype is not None and np.dtype(dtype) != array.dtype:
            return array.astype(dtype)
        if copy:
            return array.copy()
        return array

    def __dlpack__(self, *, stream: Any = None, **kwargs: Any) -> Any:
        """Export the data through DLPack (host memory only: move device tensors to 'cpu')."""
        if self.device != "cpu":
            raise DeviceMismatchError(
                f"__dlpack__: tensor is on {self.device!r}; DLPack export is host-only, "
                "call .to('cpu') first"
            )
        return self.numpy().__dlpack__(stream=stream, **kwargs)

    def __dlpack_device__(self) -> tuple[int, int]:
        if self.device != "cpu":
            raise DeviceMismatchError(
                f"__dlpack_device__: tensor is on {self.device!r}; call .to('cpu') first"
            )
        return (1, 0)  # kDLCPU, device 0

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def item(self) -> Scalar:
        """The value of a one-element tensor as a Python scalar."""
        if self.size != 1:
            raise InvalidArgumentError(
                f"item(): tensor of shape {self.shape} has {self.size} elements, expected 1"
            )
        value: Scalar = self.numpy().reshape(()).item()
        return value

    def __bool__(self) -> bool:
        if self.size != 1:
            raise InvalidArgumentError(
                f"the truth value of a tensor of shape {self.shape} is ambiguous; "
                "use .any() or .all()"
            )
        return bool(self.item())

    def __float__(self) -> float:
        return float(self.item())

    def __int__(self) -> int:
        return int(self.item())

    def __index__(self) -> int:
        if not (self.dtype.is_integer or self.dtype.is_bool):
            raise InvalidArgumentError(
                f"only integer tensors can be used as an index, got {self.dtype}"
            )
        return int(self.item())

    def __len__(self) -> int:
        if not self.shape:
            raise InvalidArgumentError("len() of a 0-d tensor")
        return self.shape[0]

    def __iter__(self) -> Iterator[Tensor]:
        if not self.shape:
            raise InvalidArgumentError("iteration over a 0-d tensor")
        for i in range(self.shape[0]):
            yield self[i]

    def __repr__(self) -> str:
        body = np.array2string(self.numpy(), separator=", ", prefix="Tensor(", threshold=200)
        grad = (
            f", grad_fn={self._grad_fn!r}"
            if self._grad_fn is not None
            else ", requires_grad=True"
            if self._requires_grad
            else ""
        )
        return f"Tensor({body}, dtype={self.dtype.name}, device={self.device!r}{grad})"

    def __str__(self) -> str:
        # the values as numpy prints them, then where they live: a mixed-device error is
        # easier to read when every printed tensor says its device
        return f"{self.numpy()} ({self.dtype.name} on {self.device})"

    def __format__(self, spec: str) -> str:
        if self.size == 1 and spec:
            return format(self.item(), spec)
        return str(self)

    __hash__ = object.__hash__  # identity, like torch: __eq__ is element-wise

    def __reduce__(self) -> tuple[Any, ...]:
        from ipfs_accelerate.tensor._creation import _rebuild

        if self._requires_grad and self._grad_fn is None:  # a leaf keeps requires_grad
            return (_rebuild, (self.numpy().copy(), self.device, True))
        return (_rebuild, (self.numpy().copy(), self.device))

    # ------------------------------------------------------------------ conversion

    def to(self, device: str | None = None, dtype: DType | str | None = None) -> Tensor:
        """This tensor on another backend and/or with another dtype (a copy when either changes)."""
        result = self
        if device is not None:
            result = _ops.to_device(result, device)
        if dtype is not None:
            result = result.astype(dtype)
        return result

    def cpu(self) -> Tensor:
        return self.to("cpu")

    def clone(self) -> Tensor:
        """An independent copy on the same backend."""
        return _ops.clone(self)

    def astype(self, dtype: DType | str, *, copy: bool = True) -> Tensor:
        """This tensor converted to ``dtype``. Conversions that would lose values silently
        (float -> int with a fractional part, NaN or out-of-range values; out-of-range
        integers) raise TensorOverflowError or DtypeError."""
        return _ops.astype(self, as_dtype(dtype), copy=copy)

    def copy_(self, src: Any) -> Tensor:
        """Overwrite the values in place with ``src`` (broadcast, converted to this dtype) and
        return self; see :func:`ipfs_accelerate.ops.copy_`."""
        return _ops.copy_(self, src)

    def contiguous(self) -> Tensor:
        return _ops.contiguous(self)

    # ------------------------------------------------------------------ indexing

    def __getitem__(self, key: Any) -> Tensor:
        return _ops.getitem(self, key)

    def __setitem__(self, key: Any, value: Any) -> None:
        _ops.setitem(self, key, value)

    # ------------------------------------------------------------------ operators

    def __add__(self, other: Any) -> Tensor:
        return _ops.add(self, other)

    def __radd__(self, other: Any) -> Tensor:
        return _ops.add(other, self)

    def __sub__(self, other: Any) -> Tensor:
        return _ops.sub(self, other)

    def __rsub__(self, other: Any) -> Tensor:
        return _ops.sub(other, self)

    def __mul__(self, other: Any) -> Tensor:
        return _ops.mul(self, other)

    def __rmul__(self, other: Any) -> Tensor:
        return _ops.mul(other, self)

    def __truediv__(self, other: Any) -> Tensor:
        return _ops.div(self, other)

    def __rtruediv__(self, other: Any) -> Tensor:
        return _ops.div(other, self)

    def __floordiv__(self, other: Any) -> Tensor:
        return _ops.floor_divide(self, other)

    def __rfloordiv__(self, other: Any) -> Tensor:
        return _ops.floor_divide(other, self)

    def __mod__(self, other: Any) -> Tensor:
        return _ops.remainder(self, other)

    def __rmod__(self, other: Any) -> Tensor:
        return _ops.remainder(other, self)

    def __pow__(self, other: Any) -> Tensor:
        return _ops.pow(self, other)

    def __rpow__(self, other: Any) -> Tensor:
        return _ops.pow(other, self)

    def __matmul__(self, other: Any) -> Tensor:
        return _ops.matmul(self, other)

    def __rmatmul__(self, other: Any) -> Tensor:
        return _ops.matmul(other, self)

    def __neg__(self) -> Tensor:
        return _ops.neg(self)

    def __pos__(self) -> Tensor:
        return self

    def __abs__(self) -> Tensor:
        return _ops.abs(self)

    def __invert__(self) -> Tensor:
        return _ops.logical_not(self)

    def __and__(self, other: Any) -> Tensor:
        return _ops.logical_and(self, other)

    def __rand__(self, other: Any) -> Tensor:
        return _ops.logical_and(other, self)

    def __or__(self, other: Any) -> Tensor:
        return _ops.logical_or(self, other)

    def __ror__(self, other: Any) -> Tensor:
        return _ops.logical_or(other, self)

    def __xor__(self, other: Any) -> Tensor:
        return _ops.logical_xor(self, other)

    def __rxor__(self, other: Any) -> Tensor:
        return _ops.logical_xor(other, self)

    def __eq__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _ops.equal(self, other)

    def __ne__(self, other: Any) -> Tensor:  # type: ignore[override]
        return _ops.not_equal(self, other)

    def __lt__(self, other: Any) -> Tensor:
        return _ops.less(self, other)

    def __le__(self, other: Any) -> Tensor:
        return _ops.less_equal(self, other)

    def __gt__(self, other: Any) -> Tensor:
        return _ops.greater(self, other)

    def __ge__(self, other: Any) -> Tensor:
        return _ops.greater_equal(self, other)

    # ------------------------------------------------------------------ methods (numpy names)

    def reshape(self, *shape: Any) -> Tensor:
        return _ops.reshape(
            self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape
        )

    def view(self, *shape: Any) -> Tensor:
        return self.reshape(*shape)

    def flatten(self) -> Tensor:
        return _ops.reshape(self, (-1,))

    def transpose(self, *axes: Any) -> Tensor:
        if not axes:
            return _ops.transpose(self)
        if len(axes) == 1 and not isinstance(axes[0], int):
            return _ops.transpose(self, tuple(axes[0]))
        return _ops.transpose(self, axes)

    def permute(self, *axes: Any) -> Tensor:
        return _ops.permute(
            self, axes[0] if len(axes) == 1 and not isinstance(axes[0], int) else axes
        )

    def swapaxes(self, axis1: int, axis2: int) -> Tensor:
        return _ops.swapaxes(self, axis1, axis2)

    def expand(self, *shape: Any) -> Tensor:
        return _ops.expand(
            self, shape[0] if len(shape) == 1 and not isinstance(shape[0], int) else shape
        )

    def broadcast_to(self, shape: Sequence[int]) -> Tensor:
        return _ops.broadcast_to(self, shape)

    def squeeze(self, axis: AxisArg = None) -> Tensor:
        return _ops.squeeze(self, axis)

    def unsqueeze(self, axis: int | Sequence[int]) -> Tensor:
        return _ops.unsqueeze(self, axis)

    def sum(self, axis: AxisArg = None, keepdims: bool = False) -> Tensor:
        return _ops.sum(self, axis, keepdims=keepdims)

    def mean(self, axis: AxisArg = None, keepdims: bool = False) -> Tensor:
        return _ops.mean(self, axis, keepdims=keepdims)

    def max(self, axis: AxisArg = None, keepdims: bool = False) -> Tensor:
        return _ops.max(self, axis, keepdims=keepdims)

    def min(self, axis: AxisArg = None, keepdims: bool = False) -> Tensor:
        return _ops.min(self, axis, keepdims=keepdims)

    def prod(self, axis: AxisArg = None, keepdims: bool = False) -> Tensor:
        return _ops.prod(self, axis, keepdims=keepdims)

    def var(self, axis: AxisArg = None, keepdims: bool = False, correction: float = 0.0) -> Tensor:
        return _ops.var(self, axis, keepdims=keepdims, correction=correction)

    def std(self, axis: AxisArg = None, keepdims: bool = False, correction: float = 0.0) -> Tensor:
        return _ops.std(self, axis, keepdims=keepdims, correction=correction)

    def argmax(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        return _ops.argmax(self, axis, keepdims=keepdims)

    def argmin(self, axis: int | None = None, keepdims: bool = False) -> Tensor:
        return _ops.argmin(self, axis, keepdims=keepdims)

    def any(self, axis: AxisArg = None, keepdims: bool = False) -> Tensor:
        return _ops.any(self, axis, keepdims=keepdims)

    def all(self, axis: AxisArg = None, keepdims: bool = False) -> Tensor:
        return _ops.all(self, axis, keepdims=keepdims)

    def abs(self) -> Tensor:
        return _ops.abs(self)

    def exp(self) -> Tensor:
        return _ops.exp(self)

    def log(self) -> Tensor:
        return _ops.log(self)

    def sqrt(self) -> Tensor:
        return _ops.sqrt(self)

    def rsqrt(self) -> Tensor:
        return _ops.rsqrt(self)

    def sin(self) -> Tensor:
        return _ops.sin(self)

    def cos(self) -> Tensor:
        return _ops.cos(self)

    def tanh(self) -> Tensor:
        return _ops.tanh(self)

    def sigmoid(self) -> Tensor:
        return _ops.sigmoid(self)

    def relu(self) -> Tensor:
        return _ops.relu(self)

    def clamp(self, min: Any = None, max: Any = None) -> Tensor:
        return _ops.clamp(self, min, max)

    clip = clamp

    def softmax(self, axis: int = -1) -> Tensor:
        return _ops.softmax(self, axis)

    def log_softmax(self, axis: int = -1) -> Tensor:
        return _ops.log_softmax(self, axis)

    def matmul(self, other: Any) -> Tensor:
        return _ops.matmul(self, other)


from ipfs_accelerate import ops as _ops  # noqa: E402 - ops imports Tensor from this module
from ipfs_accelerate.tensor import _autograd  # noqa: E402
