"""QuantizedTensor: integer data, scales and zero points, and the error they introduced."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from ipfs_accelerate.errors import DtypeError, InvalidArgumentError, ShapeError
from ipfs_accelerate.tensor._tensor import Tensor

__all__ = ["ErrorStats", "QuantizedTensor", "pack_int4", "unpack_int4"]

R = TypeVar("R")


@dataclass(frozen=True)
class ErrorStats:
    """What quantization changed: the largest absolute and the root-mean-square error."""

    max_abs: float
    rms: float


def pack_int4(values: np.ndarray[Any, Any], signed: bool) -> np.ndarray[Any, Any]:
    """Values in the 4-bit range packed two per byte, low nibble first (WebNN's int4 layout)."""
    from ipfs_accelerate.webnn._types import pack_four_bit  # webnn loads onnx; only here

    dtype = np.int8 if signed else np.uint8
    return np.frombuffer(pack_four_bit(values.astype(dtype)), dtype=np.uint8).copy()


def unpack_int4(
    packed: np.ndarray[Any, Any], shape: tuple[int, ...], signed: bool
) -> np.ndarray[Any, Any]:
    """The inverse of :func:`pack_int4`: one int8 (signed) or uint8 value per element."""
    from ipfs_accelerate.webnn._types import MLOperandDescriptor, unpack_four_bit

    descriptor = MLOperandDescriptor("int4" if signed else "uint4", shape)
    return unpack_four_bit(packed.tobytes(), descriptor)


def _validate(
    data: np.ndarray[Any, Any],
    scales: np.ndarray[Any, Any],
    zero_points: np.ndarray[Any, Any] | None,
    shape: tuple[int, ...],
    bits: int,
) -> None:
    """What a QuantizedTensor's parts must satisfy, whoever built them (quantize(), a loaded
    checkpoint, a caller): a wrong part would give wrong products, never an error."""
    if isinstance(bits, bool) or bits not in (4, 8):
        raise InvalidArgumentError(f"QuantizedTensor: bits must be 8 or 4, got {bits!r}")
    count = math.prod(shape)
    want = count if bits == 8 else (count + 1) // 2
    # symmetric 8-bit values are signed; asymmetric ones (with zero points) unsigned
    kinds = ("uint8",) if bits == 4 or zero_points is not None else ("int8",)
    if data.dtype.name not in kinds or data.size != want:
        raise DtypeError(
            f"QuantizedTensor: data must hold {want} {kinds[0]} values for shape "
            f"{shape} at {bits} bits, got {data.dtype} x {data.size}"
        )
    if scales.dtype.name not in ("float32", "float16"):
        raise DtypeError(f"QuantizedTensor: scales must be float32 or float16, got {scales.dtype}")
    if scales.ndim != len(shape) or any(
        size == 0 or full % size for size, full in zip(scales.shape, shape, strict=True)
    ):
        raise ShapeError(
            f"QuantizedTensor: scales of shape {scales.shape} do not divide the shape {shape} "
            "axis by axis"
        )
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        bad = scales[~(np.isfinite(scales) & (scales > 0))].flat[0]
        raise InvalidArgumentError(
            f"QuantizedTensor: scales must be finite and positive, got {float(bad)!r}"
        )
    if zero_points is not None and (
        zero_points.shape != scales.shape
        or zero_points.dtype != np.uint8
        or (bits == 4 and np.any(zero_points > 15))
    ):
        raise InvalidArgumentError(
            f"QuantizedTensor: zero_points must be uint8 of the scales' shape {scales.shape}"
            f"{' in [0, 15]' if bits == 4 else ''}, got {zero_points.dtype} {zero_points.shape}"
        )


class QuantizedTensor:
    """A float tensor stored as integers: ``(q - zero_point) * scale`` gives it back.

    ``data`` holds int8 values (``bits=8``, uint8 when asymmetric) or, for ``bits=4``, the
    values packed two per byte, low nibble first (uint8 array of ``ceil(n / 2)`` bytes).
    ``scales`` and ``zero_points`` have the weight's rank, with size 1 along every axis they do
    not vary on (WebNN's and ONNX's blockwise broadcast): ``()`` entries for per-tensor,
    ``shape[axis]`` for per-axis, ``shape[axis] // block_size`` for blockwise. ``zero_points``
    is None when symmetric (zero point 0).
    """

    __slots__ = (
        "_axis",
        "_bits",
        "_block_size",
        "_data",
        "_device",
        "_dtype",
        "_error",
        "_lock",
        "_prepared",
        "_scales",
        "_shape",
        "_zero_points",
    )  # fmt: skip

    def __init__(
        self,
        data: np.ndarray[Any, Any],
        scales: np.ndarray[Any, Any],
        zero_points: np.ndarray[Any, Any] | None,
        *,
        shape: tuple[int, ...],
        bits: int,
        axis: int | None,
        block_size: int | None,
        dtype: str,
        device: str,
        error: ErrorStats,
    ) -> None:
        _validate(data, scales, zero_points, shape, bits)
        self._data = data
        self._scales = scales
        self._zero_points = zero_points
        self._shape = shape
        self._bits = bits
        self._axis = axis
        self._block_size = block_size
        self._dtype = dtype
        self._device = device
        self._error = error
        self._prepared: dict[str, Any] = {}
        self._lock = threading.RLock()

    @property
    def data(self) -> np.ndarray[Any, Any]:
        return self._data

    @property
    def scales(self) -> np.ndarray[Any, Any]:
        return self._scales

    @property
    def zero_points(self) -> np.ndarray[Any, Any] | None:
        return self._zero_points

    @property
    def shape(self) -> tuple[int, ...]:
        return self._shape

    @property
    def bits(self) -> int:
        return self._bits

    @property
    def axis(self) -> int | None:
        return self._axis

    @property
    def block_size(self) -> int | None:
        return self._block_size

    @property
    def symmetric(self) -> bool:
        return self._zero_points is None

    @property
    def dtype(self) -> str:
        """The dtype of the tensor that was quantized (and that ``dequantize`` returns)."""
        return self._dtype

    @property
    def device(self) -> str:
        return self._device

    @property
    def error(self) -> ErrorStats:
        """Max abs and RMS error against the original weight, measured once by ``quantize``."""
        return self._error

    @property
    def nbytes(self) -> int:
        """Bytes held: integer data plus scales plus zero points."""
        extra = 0 if self._zero_points is None else self._zero_points.nbytes
        return int(self._data.nbytes + self._scales.nbytes + extra)

    @property
    def ndim(self) -> int:
        return len(self._shape)

    def _replace(self, **changes: Any) -> QuantizedTensor:
        fields: dict[str, Any] = {
            "data": self._data, "scales": self._scales, "zero_points": self._zero_points,
            "shape": self._shape, "bits": self._bits, "axis": self._axis,
            "block_size": self._block_size, "dtype": self._dtype, "device": self._device,
            "error": self._error,
        }  # fmt: skip
        fields.update(changes)
        return QuantizedTensor(**fields)

    def to(self, device: str) -> QuantizedTensor:
        """The same quantized values bound to ``device``. The host arrays are shared; each
        backend builds its resident form (device buffers, graph constants) on first use."""
        from ipfs_accelerate.hal import get_backend

        name = get_backend(device, fallback=False).name
        return self if name == self._device else self._replace(device=name)

    def transpose(self) -> QuantizedTensor:
        """The transposed 2-D weight: same integers and scales, axes swapped (what
        ``ops.matmul(x, q)`` uses to run a (K, N) weight through the linear kernels)."""
        if self.ndim != 2:
            raise ShapeError(f"transpose: a QuantizedTensor of shape {self._shape} is not 2-D")

        def build(_: QuantizedTensor) -> QuantizedTensor:
            shape = (self._shape[1], self._shape[0])
            ints = np.ascontiguousarray(self.int_values().T)
            data = ints if self._bits == 8 else pack_int4(ints, signed=self.symmetric)
            zero = None if self._zero_points is None else self._zero_points.T.copy()
            axis = None if self._axis is None else 1 - self._axis
            return self._replace(
                data=data, scales=self._scales.T.copy(), zero_points=zero, shape=shape, axis=axis
            )

        return self.prepared("transpose", build)

    @property
    def T(self) -> QuantizedTensor:
        return self.transpose()

    def prepared(self, key: str, build: Callable[[QuantizedTensor], R]) -> R:
        """``build(self)`` computed once per ``key`` and kept with the weight: backends keep
        their resident form of the weight here (a key per backend and layout)."""
        with self._lock:
            if key not in self._prepared:
                self._prepared[key] = build(self)
            value: R = self._prepared[key]
            return value

    def int_values(self) -> np.ndarray[Any, Any]:
        """One integer per element, in the weight's shape (int4 unpacked, sign-extended)."""
        if self._bits == 8:
            return self._data.reshape(self._shape)
        return unpack_int4(self._data, self._shape, signed=self.symmetric)

    def dequantize_numpy(self) -> np.ndarray[Any, Any]:
        """The float values as a host array of the original dtype."""
        return self.dequantize("cpu").numpy()

    def dequantize(self, device: str | None = None) -> Tensor:
        """The float tensor (original dtype) on ``device`` (default: the weight's device),
        computed there by :func:`~ipfs_accelerate.ops.dequantize_linear`."""
        from ipfs_accelerate import ops
        from ipfs_accelerate.tensor import tensor, zeros
        from ipfs_accelerate.tensor._dtype import as_dtype

        target = device or self._device
        values = tensor(self.int_values(), device=target)
        # float16 scales widen exactly: the product is float32 whatever the scales' dtype
        scales = tensor(self._scales.astype(np.float32), device=target)
        if self._zero_points is None:
            zero = zeros(self._scales.shape, dtype=values.dtype, device=target)
        else:
            zero = tensor(self._zero_points, device=target)
        result = ops.dequantize_linear(values, scales, zero)
        wanted = as_dtype(self._dtype)
        return result if result.dtype is wanted else ops.astype(result, wanted)

    def __repr__(self) -> str:
        kind = "symmetric" if self.symmetric else "asymmetric"
        return (
            f"QuantizedTensor(shape={self._shape}, bits={self._bits}, axis={self._axis}, "
            f"block_size={self._block_size}, {kind}, scales={self._scales.dtype}, "
            f"nbytes={self.nbytes}, max_abs_error={self._error.max_abs:.3g})"
        )
