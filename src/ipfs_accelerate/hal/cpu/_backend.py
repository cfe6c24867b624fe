"""The CPU backend: numpy kernels, eager, sharing memory with numpy where numpy would."""

from __future__ import annotations

import builtins
import contextlib
import math
import os
import platform
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ipfs_accelerate.errors import (
    IndexOutOfRangeError,
    InvalidArgumentError,
    TensorOverflowError,
)
from ipfs_accelerate.hal._backend import (
    AdamWHyper,
    Backend,
    BackendInfo,
    Scalar,
    SGDHyper,
    Shape,
    cpu_info,
    host_cores,
)
from ipfs_accelerate.hal.cpu import _math, _mkl, _optim, _rows
from ipfs_accelerate.hal.cpu._blas import one_thread_for
from ipfs_accelerate.hal.cpu._quantized import quantized_linear, row_quantized_linear
from ipfs_accelerate.tensor._creation import checked_cast
from ipfs_accelerate.tensor._dtype import DTYPES, DType
from ipfs_accelerate.tensor._tensor import Tensor

if TYPE_CHECKING:
    from ipfs_accelerate.quantization import QuantizedTensor

Array = np.ndarray[Any, Any]


def _rsqrt(x: Array) -> Array:
    out = np.sqrt(x)
    np.reciprocal(out, out=out)
    return out


def _reciprocal(x: Array) -> Array:
    return np.reciprocal(x)


#: below this many elements np.where is as fast as building a bit mask
_SELECT_BITS_MIN = 1 << 12
_SAME_WIDTH_INT = {
    np.dtype(np.float32): np.dtype(np.int32),
    np.dtype(np.float64): np.dtype(np.int64),
}


def _select_bits(cond: Array, x: Any, y: Any, out_shape: Sequence[int]) -> Array | None:
    """``np.where(cond, x, y)`` for float arrays of one dtype (or Python scalars beside one),
    selected with integer bit masks: bit for bit np.where's result, NaN payloads and signed
    zeros included, but branch-free. np.where branches per element, and on a condition like
    a ReLU's (half true, in no order) it mispredicts so often that it runs ten times slower;
    the ReLU backward of an MLP step spent more time there than in its bias gradients."""
    arrays = [v for v in (x, y) if isinstance(v, np.ndarray)]
    if not arrays or math.prod(out_shape) < _SELECT_BITS_MIN or cond.dtype != np.bool_:
        return None
    dtype = arrays[0].dtype
    ints = _SAME_WIDTH_INT.get(dtype)
    if ints is None or any(v.dtype != dtype for v in arrays):
        return None
    # 0 or -1 (every bit set) per element; int8 widens by sign extension in the ops below
    mask = np.negative(cond.view(np.int8))
    x_bits, y_bits = (np.asarray(v, dtype).view(ints) for v in (x, y))
    if y_bits.ndim == 0 and not y_bits.any():  # where(c, x, +0.0): a ReLU's or a mask's backward
        out = np.bitwise_and(x_bits, mask)
    elif x_bits.ndim == 0 and not x_bits.any():
        out = np.bitwise_and(y_bits, np.invert(mask))
    else:  # y ^ ((x ^ y) & mask)
        out = np.bitwise_and(np.bitwise_xor(x_bits, y_bits), mask)
        np.bitwise_xor(out, y_bits, out=out)
    if out.shape != tuple(out_shape):
        out = np.broadcast_to(out, out_shape).copy()
    return out.view(dtype)


def _relu(x: Array) -> Array:
    return np.maximum(x, x.dtype.type(0))


_UNARY: dict[str, Any] = {
    "neg": np.negative,
    "abs": np.abs,
    "exp": np.exp,
    "log": np.log,
    "sqrt": np.sqrt,
    "rsqrt": _rsqrt,
    "erf": _math.erf,
    "sin": np.sin,
    "cos": np.cos,
    "tanh": np.tanh,
    "sigmoid": _math.sigmoid,
    "relu": _relu,
    "silu": _math.silu,
    "gelu": _math.gelu,
    "gelu_tanh": _math.gelu_tanh,
    "logical_not": np.logical_not,
    "floor": np.floor,
    "ceil": np.ceil,
    "round": np.round,
    "sign": np.sign,
    "reciprocal": _reciprocal,
    "isnan": np.isnan,
    "isinf": np.isinf,
    "isfinite": np.isfinite,
    "square": np.square,
}

_BINARY: dict[str, Any] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.true_divide,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "floor_divide": np.floor_divide,
    "remainder": np.remainder,
    "equal": np.equal,
    "not_equal": np.not_equal,
    "less": np.less,
    "less_equal": np.less_equal,
    "greater": np.greater,
    "greater_equal": np.greater_equal,
    "logical_and": np.logical_and,
    "logical_or": np.logical_or,
    "logical_xor": np.logical_xor,
}

_CHECKED_INT_OPS = frozenset({"add", "sub", "mul", "pow"})
#: kernels of several numpy passes: float16 runs them in float32 (as numpy's own float16
#: ufuncs do internally) so that intermediate rounding does not pile up
_WIDEN_HALF = frozenset({"erf", "gelu", "gelu_tanh", "sigmoid", "silu", "rsqrt"})


class CPUBackend(Backend):
    """numpy on the host CPU. Tensors hold numpy arrays; slicing, reshape and transpose give
    views that share memory, as in numpy; every other op allocates its result."""

    name: ClassVar[str] = "cpu"
    fused: ClassVar[frozenset[str]] = frozenset(
        {"softmax", "layer_norm", "linear", "attention", "clamp", "quantized_linear", "index_add",
         "row_quantized_linear", "adamw_step", "sgd_step", "cross_entropy"}
    )  # fmt: skip
    shares_host_memory: ClassVar[bool] = True

    def __init__(self) -> None:
        self._dtypes = frozenset(DTYPES)

    # ------------------------------------------------------------------ identity, memory

    def info(self) -> BackendInfo:
        memory = None
        with contextlib.suppress(ValueError, OSError, AttributeError):
            memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        blas = _blas_name()
        return BackendInfo(
            name=self.name,
            available=True,
            device_name=_cpu_model(),
            vendor=platform.machine(),
            adapter_type="cpu",
            api="numpy",
            memory_bytes=memory,
            max_buffer_bytes=memory,
            dtypes=tuple(d.name for d in DTYPES),
            features=("float64", "int64", "item-assignment", "zero-copy-numpy"),
            limits={"cores": host_cores()},
            details={"numpy": np.__version__, "blas": blas, "mkl": _mkl.version() or "not used"},
        )

    @property
    def supported_dtypes(self) -> frozenset[DType]:
        return self._dtypes

    def from_numpy(self, array: Array) -> Array:
        return array

    def to_numpy(self, x: Tensor) -> Array:
        data: Array = x._data
        return data

    def full(self, shape: Shape, value: Scalar, dtype: DType) -> Array:
        if value == 0 and math.copysign(1.0, value) > 0:
            # calloc'd: the OS hands out zeroed pages as they are first written, so a large
            # zero tensor (an embedding's gradient before index_add) costs no pass of its own
            return np.zeros(shape, dtype=dtype.numpy)
        return np.full(shape, value, dtype=dtype.numpy)

    def arange(self, start: Scalar, step: Scalar, size: int, dtype: DType) -> Array:
        return _math.arange_values(start, step, size, dtype.numpy)

    def copy(self, x: Tensor) -> Array:
        return np.array(x._data, copy=True, order="C")

    def cast(self, x: Tensor, dtype: DType) -> Array:
        return checked_cast(x._data, dtype, context="astype()")

    # ------------------------------------------------------------------ element-wise

    def unary(self, op: str, x: Tensor) -> Array:
        data = x._data
        if op in ("neg", "abs") and data.dtype.kind in "iu":
            _math.checked_unary(op, data)
        if data.ndim == 0:  # numpy ufuncs turn 0-d arrays into scalars; kernels work in place
            data = data.reshape(1)
        if data.dtype == np.float16 and op in _WIDEN_HALF:
            result = _UNARY[op](data.astype(np.float32)).astype(np.float16)
        else:
            result = _UNARY[op](data)
        if x.ndim == 0:
            return np.asarray(result).reshape(())
        return result if isinstance(result, np.ndarray) else np.asarray(result)

    def binary(self, op: str, a: Tensor | Scalar, b: Tensor | Scalar, out_shape: Shape) -> Array:
        if a.__class__ is Tensor:
            x, integer = a._data, a.dtype.is_integer  # type: ignore[union-attr]
            y = b._data if b.__class__ is Tensor else b  # type: ignore[union-attr]
        else:
            x, y, integer = a, b._data, b.dtype.is_integer  # type: ignore[union-attr]
        if integer:
            return self._integer_binary(op, x, y)
        result = _BINARY[op](x, y)
        return result if result.__class__ is np.ndarray else np.asarray(result)

    def _integer_binary(self, op: str, x: Any, y: Any) -> Array:
        if op in ("floor_divide", "remainder") and np.any(np.asarray(y) == 0):
            raise InvalidArgumentError(f"{op}: integer division by zero")
        if op == "pow" and np.any(np.asarray(y) < 0):
            raise InvalidArgumentError("pow: integers to negative integer powers are not allowed")
        with np.errstate(over="ignore"):
            result = _BINARY[op](x, y)
        result = result if isinstance(result, np.ndarray) else np.asarray(result)
        if op in _CHECKED_INT_OPS and result.dtype.kind in "iu":
            _math.checked_int_binary(op, x, y, result)
        return result

    def where(
        self, cond: Tensor, a: Tensor | Scalar, b: Tensor | Scalar, out_shape: Shape
    ) -> Array:
        x = a._data if not isinstance(a, bool | int | float) else a
        y = b._data if not isinstance(b, bool | int | float) else b
        selected = _select_bits(cond._data, x, y, out_shape)
        if selected is not None:
            return selected
        result = np.where(cond._data, x, y)
        dtype = next((v.dtype for v in (x, y) if isinstance(v, np.ndarray)), None)
        if dtype is not None and result.dtype != dtype:
            result = result.astype(dtype)
        return result

    def clamp(self, x: Tensor, low: Scalar | None, high: Scalar | None) -> Array:
        data = x._data
        if low is not None:
            data = np.maximum(data, data.dtype.type(low))
        if high is not None:
            data = np.minimum(data, data.dtype.type(high))
        return np.asarray(data)

    # ------------------------------------------------------------------ reductions

    def reduce(
        self,
        op: str,
        x: Tensor,
        axes: tuple[int, ...],
        keepdims: bool,
        out_dtype: DType,
        correction: float = 0.0,
    ) -> Array:
        data = x._data
        axis = axes if len(axes) != data.ndim else None
        if op == "sum":
            result = np.sum(data, axis=axis, dtype=out_dtype.numpy, keepdims=keepdims)
            if out_dtype.is_integer:
                self._check_int_reduction(
                    "sum", np.asarray(np.sum(data, axis=axis, dtype=np.float64, keepdims=keepdims))
                )
        elif op == "prod":
            result = np.prod(data, axis=axis, dtype=out_dtype.numpy, keepdims=keepdims)
            if out_dtype.is_integer:
                with np.errstate(over="ignore"):
                    self._check_int_reduction(
                        "prod",
                        np.asarray(np.prod(data, axis=axis, dtype=np.float64, keepdims=keepdims)),
                    )
        elif op == "max":
            result = np.max(data, axis=axis, keepdims=keepdims)
        elif op == "min":
            result = np.min(data, axis=axis, keepdims=keepdims)
        elif op == "mean":
            result = np.mean(data, axis=axis, keepdims=keepdims)
        elif op == "var":
            result = np.var(data, axis=axis, ddof=correction, keepdims=keepdims)
        else:  # pragma: no cover - the op layer only sends REDUCE_OPS
            raise InvalidArgumentError(f"cpu: unknown reduction {op!r}")
        result = np.asarray(result)
        if result.dtype != out_dtype.numpy:
            result = result.astype(out_dtype.numpy)
        return result

    @staticmethod
    def _check_int_reduction(op: str, approx: Array) -> None:
        limit = float(2**63)
        if np.any(np.abs(approx) >= limit):
            raise TensorOverflowError(
                f"{op}: integer result overflows int64; cast to float64 first"
            )

    def arg_reduce(self, op: str, x: Tensor, axis: int, keepdims: bool) -> Array:
        fn = np.argmax if op == "argmax" else np.argmin
        return np.asarray(fn(x._data, axis=axis, keepdims=keepdims), dtype=np.int64)

    # ------------------------------------------------------------------ shape, data movement

    def reshape(self, x: Tensor, shape: Shape) -> Array:
        return np.reshape(x._data, shape)

    def permute(self, x: Tensor, axes: tuple[int, ...]) -> Array:
        return np.transpose(x._data, axes)

    def broadcast_to(self, x: Tensor, shape: Shape) -> Array:
        return np.broadcast_to(x._data, shape)

    def slice(self, x: Tensor, starts: Shape, steps: Shape, sizes: Shape) -> Array:
        key = []
        for start, step, size in zip(starts, steps, sizes, strict=True):
            stop: int | None = start + step * size
            if step < 0 and stop is not None and stop < 0:
                stop = None
            key.append(builtins.slice(start, stop, step))
        data: Array = x._data[tuple(key)]
        return data

    def concat(self, xs: Sequence[Tensor], axis: int) -> Array:
        return np.concatenate([t._data for t in xs], axis=axis)

    def gather(self, x: Tensor, indices: Tensor, axis: int) -> Array:
        try:
            return np.asarray(np.take(x._data, indices._data, axis=axis))
        except IndexError:
            n = x.shape[axis]
            idx = indices._data
            bad = idx[(idx < -n) | (idx >= n)].ravel()[0]
            raise IndexOutOfRangeError(
                f"gather: index {int(bad)} is out of range for axis {axis} of size {n}"
            ) from None

    def index_add(self, base: Tensor, axis: int, indices: Tensor, source: Tensor) -> Array:
        data = base._data
        if data.flags.c_contiguous and data.size and not data.reshape(-1).view(np.uint8).any():
            # all +0.0 bits (gather's gradient starts from zeros: an embedding table's worth):
            # new calloc'd zeros are written only where the rows land, instead of a copy that
            # writes every page of the table (the scan reads untouched pages, which are shared)
            out = np.zeros(data.shape, dtype=data.dtype)
            if axis == 0:  # an embedding's gradient: the optimizer updates these rows only
                _rows.mark_rows(out, np.unique(indices._data))
        else:
            out = np.array(data, copy=True)
        # np.add.at accumulates repeated indices (a fancy-index += would keep only one)
        np.add.at(out, (slice(None),) * axis + (indices._data,), source._data)
        return out

    def pad(self, x: Tensor, pads: tuple[tuple[int, int], ...], mode: str, value: Scalar) -> Array:
        if mode == "constant":
            return np.pad(x._data, pads, mode="constant", constant_values=value)
        return np.pad(x._data, pads, mode=mode)  # type: ignore[call-overload]

    def setitem(self, x: Tensor, key: Any, value: Array) -> None:
        data = x._data
        if not data.flags.writeable:
            raise InvalidArgumentError(
                "setitem: this tensor is a read-only broadcast view (from expand/broadcast_to); "
                "clone() it first"
            )
        data[key] = value

    # ------------------------------------------------------------------ matrix, nn

    def matmul(self, a: Tensor, b: Tensor, out_shape: Shape) -> Array:
        x, w = a._data, b._data
        if w.ndim == 2 and x.ndim >= 2 and x.size and (x.ndim == 2 or x.flags.c_contiguous):
            product = _mkl_product(x.reshape(-1, x.shape[-1]), w)
            if product is not None:
                return product.reshape(out_shape)
        # (small products on one BLAS thread: see hal/cpu/_blas.py)
        with one_thread_for(math.prod(out_shape) * x.shape[-1]):
            if x.ndim > 2 and w.ndim == 2 and x.flags.c_contiguous:
                # one GEMM over all rows instead of numpy's loop over the batch
                flat = x.reshape(-1, x.shape[-1]) @ w
                return flat.reshape(out_shape)
            return np.matmul(x, w)

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Array:
        data = x._data
        w = weight._data
        rows = data.reshape(-1, data.shape[-1]) if data.ndim != 2 else data
        product = (
            _mkl_product(rows, w.T, None if bias is None else bias._data) if rows.size else None
        )
        if product is not None:
            return product.reshape(*data.shape[:-1], w.shape[0])
        with one_thread_for(rows.shape[0] * w.shape[0] * w.shape[1]):
            if _FEW_ROWS[0] <= rows.shape[0] <= _FEW_ROWS[1] and w.flags.c_contiguous:
                # a few rows (a decode step's batch, a short sentence): OpenBLAS runs
                # W @ X^T, written (out_features, rows), 1.2-2.2x faster than X @ W^T here;
                # the transposed copy back (with the bias) is small
                product = w @ rows.T
                out = np.empty((rows.shape[0], w.shape[0]), dtype=product.dtype)
                if bias is not None:
                    np.add(product.T, bias._data, out=out)
                else:
                    np.copyto(out, product.T)
                return out.reshape(*data.shape[:-1], w.shape[0])
            out = rows @ w.T
        if bias is not None:
            out += bias._data
        return out.reshape(*data.shape[:-1], w.shape[0])

    def adamw_step(
        self,
        param: Tensor,
        grad: Tensor,
        exp_avg: Tensor,
        exp_avg_sq: Tensor,
        max_exp_avg_sq: Tensor | None,
        hyper: AdamWHyper,
    ) -> bool:
        return _optim.adamw_step(
            param._data,
            grad._data,
            exp_avg._data,
            exp_avg_sq._data,
            None if max_exp_avg_sq is None else max_exp_avg_sq._data,
            hyper,
        )

    def sgd_step(
        self, param: Tensor, grad: Tensor, momentum_buffer: Tensor | None, hyper: SGDHyper
    ) -> bool:
        buffer = None if momentum_buffer is None else momentum_buffer._data
        return _optim.sgd_step(param._data, grad._data, buffer, hyper)

    def quantized_linear(self, x: Tensor, weight: QuantizedTensor, bias: Tensor | None) -> Array:
        return quantized_linear(x._data, weight, None if bias is None else bias._data)

    def row_quantized_linear(
        self, x: Tensor, weight: QuantizedTensor, bias: Tensor | None
    ) -> Array:
        # integers through MKL where it is in use; the rows rounded in float elsewhere
        return row_quantized_linear(x._data, weight, None if bias is None else bias._data)

    def integer_kernel(self, name: str) -> bool:
        return name == "row_quantized_linear" and _mkl.int8_enabled()

    def conv(
        self,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        stride: tuple[int, ...],
        padding: tuple[tuple[int, int], ...],
        dilation: tuple[int, ...],
        groups: int,
        out_shape: Shape,
    ) -> Array:
        data = x._data
        w = weight._data
        spatial = data.ndim - 2
        if any(p for pair in padding for p in pair):
            data = np.pad(data, ((0, 0), (0, 0), *padding))
        n, c_in = data.shape[:2]
        c_out = w.shape[0]
        kernel = w.shape[2:]
        out_spatial = out_shape[2:]
        # a strided view (N, C, *out_spatial, *kernel) of the padded input: no copy yet
        strides = data.strides
        view_shape = (n, c_in, *out_spatial, *kernel)
        view_strides = (
            strides[0],
            strides[1],
            *(strides[2 + i] * stride[i] for i in range(spatial)),
            *(strides[2 + i] * dilation[i] for i in range(spatial)),
        )
        windows = np.lib.stride_tricks.as_strided(data, view_shape, view_strides, writeable=False)
        cin_g, cout_g = c_in // groups, c_out // groups
        positions = int(np.prod(out_spatial))
        ksize = int(np.prod(kernel))
        out = np.empty((n, c_out, positions), dtype=data.dtype)
        for g in range(groups):
            # columns (N, positions, C_g * kernel) @ weights (C_g * kernel, C_out_g)
            win = windows[:, g * cin_g : (g + 1) * cin_g]
            order = (0, *range(2, 2 + spatial), 1, *range(2 + spatial, 2 + 2 * spatial))
            cols = np.ascontiguousarray(win.transpose(order)).reshape(n, positions, cin_g * ksize)
            wg = w[g * cout_g : (g + 1) * cout_g].reshape(cout_g, cin_g * ksize)
            product = _mkl_product(cols.reshape(n * positions, -1), wg.T)
            if product is not None:
                product = product.reshape(n, positions, cout_g)
            else:
                with one_thread_for(n * positions * cin_g * ksize * cout_g):
                    product = cols @ wg.T
            out[:, g * cout_g : (g + 1) * cout_g] = product.transpose(0, 2, 1)
        if bias is not None:
            out += bias._data[None, :, None]
        return out.reshape(out_shape)

    def cross_entropy(
        self, logits: Tensor, target: Tensor, ignore_index: int, reduction: str, check_range: bool
    ) -> Array:
        # the composed loss's numbers (log_softmax, the target's entry picked, negated,
        # summed, divided by the count) in five numpy calls instead of some twenty ops
        x, t = logits._data, target._data
        n, classes = x.shape
        valid = t != ignore_index
        if check_range:
            bad = valid & ((t < 0) | (t >= classes))
            if bad.any():
                raise IndexOutOfRangeError(
                    f"cross_entropy: target class {int(t[bad][0])} is out of range for "
                    f"{classes} classes"
                )
        logp = self.softmax(logits, 1, True)
        picked = logp[np.arange(n), np.where(valid, t, 0)]
        picked += x.dtype.type(0)  # -0.0 to +0.0, as the composed sum of the selected row
        loss = np.where(valid, np.negative(picked), x.dtype.type(0))
        if reduction == "none":
            return loss
        total = np.sum(loss, dtype=x.dtype)
        if reduction == "sum":
            return np.asarray(total)
        with np.errstate(invalid="ignore", divide="ignore"):  # every row ignored: NaN (torch)
            return np.asarray(total / x.dtype.type(np.count_nonzero(valid)))

    def cross_entropy_backward(
        self, logits: Tensor, target: Tensor, grad: Tensor, ignore_index: int, reduction: str
    ) -> Array:
        # the composed rules' arithmetic, signed zeros included: the loss row's gradient s
        # (0 where ignored), -s at the target column (a one-hot select: none where the
        # target is no class), then through log_softmax: g - p * rowsum(g)
        x, t, g = logits._data, target._data, grad._data
        n, classes = x.shape
        zero = x.dtype.type(0)
        valid = t != ignore_index
        share = g
        if reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                share = g / x.dtype.type(np.count_nonzero(valid))
        picked = np.negative(np.where(valid, share, zero).astype(x.dtype, copy=False))
        rows = np.flatnonzero((t >= 0) & (t < classes))  # the rows with a one-hot column
        row_sum = np.full(n, zero)
        row_sum[rows] = picked[rows] + zero  # one entry beside +0.0s: -0.0 sums to +0.0
        out = np.exp(self.softmax(logits, 1, True))
        out *= row_sum[:, None]
        columns = t[rows]
        at_target = picked[rows] - out[rows, columns]
        np.subtract(zero, out, out=out)
        out[rows, columns] = at_target
        return out

    def softmax(self, x: Tensor, axis: int, log: bool) -> Array:
        with one_thread_for(x.size):  # short rows sum through a BLAS product
            return _softmax(x._data, axis, log)

    def layer_norm(
        self, x: Tensor, weight: Tensor | None, bias: Tensor | None, num_axes: int, eps: float
    ) -> Array:
        data = x._data
        w = None if weight is None else weight._data
        b = None if bias is None else bias._data
        width = math.prod(data.shape[data.ndim - num_axes :])
        if (
            data.dtype in (np.float32, np.float64)
            and data.size >= _SHORT_ROWS_MIN
            and width > 1
            and all(p is None or (p.dtype == data.dtype and p.size == width) for p in (w, b))
        ):
            with one_thread_for(data.size):  # the row sums are BLAS products
                return _layer_norm_rows(data.reshape(-1, width), w, b, eps).reshape(data.shape)
        axes = tuple(range(data.ndim - num_axes, data.ndim))
        # the mean accumulates in float64: a float32 mean of equal values can miss them by an
        # ulp, and with a tiny eps (BERT's 1e-12) that ulp normalises to a large value
        mean = np.mean(
            data, axis=axes, keepdims=True, dtype=np.float64 if data.dtype.itemsize < 8 else None
        )
        centred = data - mean.astype(data.dtype, copy=False)
        variance = np.mean(np.square(centred), axis=axes, keepdims=True)
        variance += data.dtype.type(eps)
        np.sqrt(variance, out=variance)
        centred /= variance
        if weight is not None:
            centred *= weight._data
        if bias is not None:
            centred += bias._data
        return centred

    def attention(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        scale: float,
        out_shape: Shape,
    ) -> Array:
        qd, kd, vd = q._data, k._data, v._data
        with one_thread_for(math.prod(out_shape[:-1]) * kd.shape[-2] * qd.shape[-1]):
            return self._attention(qd, kd, vd, mask, is_causal, scale, out_shape)

    @staticmethod
    def _attention(
        qd: Array,
        kd: Array,
        vd: Array,
        mask: Tensor | None,
        is_causal: bool,
        scale: float,
        out_shape: Shape,
    ) -> Array:
        length, source = qd.shape[-2], kd.shape[-2]
        if (
            mask is None
            and not is_causal
            and len(out_shape) == 4
            and qd.ndim == kd.ndim == vd.ndim == 4
            and source >= _LONG_SOURCE
            and length * source >= _LONG_SCORES
            and qd.dtype == kd.dtype == vd.dtype
            and qd.dtype in (np.float32, np.float64)
        ):
            return _attention_by_rows(qd, kd, vd, scale, out_shape)
        scores = np.matmul(qd, np.swapaxes(kd, -1, -2))
        scores *= qd.dtype.type(scale)
        allowed = np.tri(length, source, dtype=bool) if is_causal else None
        if allowed is None and mask is not None:
            m = mask._data
            if m.dtype != np.bool_:
                if np.broadcast_shapes(scores.shape, m.shape) == scores.shape:
                    # in place: the scores are this call's own array (MPNet's bias: one
                    # (B, H, L, L) allocation and pass fewer per layer)
                    np.add(scores, m, out=scores, casting="same_kind")
                else:  # the mask adds batch dimensions
                    scores = scores + m
            else:
                allowed = m
        if allowed is not None:
            if np.broadcast_shapes(scores.shape, allowed.shape) == scores.shape:
                # in place: the (small) inverted mask broadcasts over the scores
                np.copyto(scores, qd.dtype.type(-np.inf), where=~allowed)
            else:  # the mask adds batch dimensions
                scores = np.where(allowed, scores, qd.dtype.type(-np.inf))
        probs = _softmax(scores, -1, False, overwrite=True)  # the scores are this call's own
        if len(out_shape) == 4 and probs.dtype == vd.dtype:
            # written as (B, L, heads, d) and returned as its (B, heads, L, d) view: merging the
            # heads back (a permute and reshape) is then free instead of a copy; BLAS writes
            # each (L, d) product with a row stride of heads * d
            batch, heads, length, dim = out_shape
            merged = np.empty((batch, length, heads, dim), dtype=probs.dtype)
            out = merged.transpose(0, 2, 1, 3)
            np.matmul(probs, vd, out=out)
            return out
        return np.matmul(probs, vd)


#: unmasked attention over at least _LONG_SOURCE keys whose scores (queries x keys, per
#: head) hold at least _LONG_SCORES values is computed a block of _score_rows queries at a
#: time (see _attention_by_rows)
_LONG_SOURCE = 256
_LONG_SCORES = 1 << 18


def _score_rows(source: int) -> int:
    """Queries per block: a block's scores take at most about 1 MiB in float32 (a core's L2
    cache on the machines measured), between 32 and 256 rows."""
    return max(32, min(256, (1 << 18) // source))


def _attention_by_rows(qd: Array, kd: Array, vd: Array, scale: float, out_shape: Shape) -> Array:
    """Unmasked attention, one block of queries of one head at a time: each block's scores
    stay in cache through the scaling, the softmax and the product with the values, where the
    whole (B, heads, L, S) scores array (Whisper's encoder: 6 x 1500 x 1500 floats, 54 MB
    per layer) went through memory four times. Row by row the same operations in the same
    order as the whole-array path; BLAS may round a block's products differently from the
    whole array's (within 2.4e-7 of them on Whisper-tiny's shapes). Written as (B, L, heads,
    d) and returned as its (B, heads, L, d) view, as the whole-array path does. Whisper-tiny's
    encoder self-attention (6 heads, 1500 positions) on the 2-core Zen 5: 37 -> 24 ms per
    layer (one BLAS thread: 53 -> 37 ms), its whole encoder 318 -> 268 ms."""
    batch, heads, length, dim = out_shape
    merged = np.empty((batch, length, heads, dim), dtype=vd.dtype)
    out = merged.transpose(0, 2, 1, 3)
    source = kd.shape[-2]
    rows = _score_rows(source)
    block = np.empty((rows, source), dtype=qd.dtype)
    factor = qd.dtype.type(scale)
    for b in range(batch):
        for h in range(heads):
            # a broadcast batch or head dimension of q/k/v is read at index 0
            q = qd[b if qd.shape[0] > 1 else 0, h if qd.shape[1] > 1 else 0]
            keys = kd[b if kd.shape[0] > 1 else 0, h if kd.shape[1] > 1 else 0].T
            values = vd[b if vd.shape[0] > 1 else 0, h if vd.shape[1] > 1 else 0]
            for start in range(0, length, rows):
                stop = min(length, start + rows)
                scores = block[: stop - start]
                np.matmul(q[start:stop], keys, out=scores)
                scores *= factor
                probs = _softmax(scores, -1, False, overwrite=True)
                np.matmul(probs, values, out=out[b, h, start:stop])
    return out


#: rows at most this long, in arrays at least _SHORT_ROWS_MIN large, take the short-row path
_SHORT_ROW = 64
_SHORT_ROWS_MIN = 1 << 12


#: the row counts for which ``linear`` multiplies as W @ X^T: measured with numpy's OpenBLAS
#: (SkylakeX kernels) on the 2-core Xeon, for weights 384x384 to 3072x768, against X @ W^T:
#: 2 rows 0.94-2.25x, 4-16 rows 1.30-2.15x, 32 rows 1.23-1.59x, 64 rows 0.85-1.16x, 128 rows
#: 0.51-1.05x (one row is a matrix-vector product either way)
_FEW_ROWS = (2, 32)


def _mkl_product(a: Array, b: Array, bias: Array | None = None) -> Array | None:
    """``a @ b (+ bias)`` for a 2-D float32 ``a`` through MKL, as a new array, where
    :func:`~ipfs_accelerate.hal.cpu._mkl.takes_product` says so (inside a sharded batch);
    None otherwise or where MKL cannot read the operands (numpy multiplies)."""
    if a.dtype != np.float32 or b.dtype != np.float32:
        return None
    if not _mkl.takes_product(a.shape[0]):
        return None
    if bias is not None and (bias.dtype != np.float32 or bias.shape != (b.shape[1],)):
        return None
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
    if bias is not None:
        out[...] = bias
    return out if _mkl.gemm(a, b, out, accumulate=bias is not None) else None


def _layer_norm_rows(rows: Array, w: Array | None, b: Array | None, eps: float) -> Array:
    """layer_norm of each row of a (N, width) float array, its reductions as products with a
    ones vector (BLAS beats numpy's row reductions here; see docs/tensors.md). The mean is
    taken twice: the second, of the centred rows, removes what rounding left of the first, so
    rows of one repeated value centre to exactly 0 (with BERT's eps of 1e-12 a leftover ulp
    would normalise to a large value)."""
    scale = rows.dtype.type(1.0 / rows.shape[1])
    ones = np.ones(rows.shape[1], dtype=rows.dtype)
    centred = rows - ((rows @ ones) * scale)[:, None]
    centred -= ((centred @ ones) * scale)[:, None]
    deviation = np.einsum("ij,ij->i", centred, centred)
    deviation *= scale
    deviation += rows.dtype.type(eps)
    np.sqrt(deviation, out=deviation)
    np.reciprocal(deviation, out=deviation)  # one division per row, not per element
    centred *= deviation[:, None]
    if w is not None:
        centred *= w.reshape(-1)
    if b is not None:
        centred += b.reshape(-1)
    return centred


def _softmax(data: Array, axis: int, log: bool, *, overwrite: bool = False) -> Array:
    """(log-)softmax of a new array, or, with ``overwrite``, in ``data`` itself (a C-contiguous
    float array the caller owns: attention's scores, one (B, heads, L, L) allocation and its
    page faults fewer per layer). numpy pays a per-row overhead when it reduces along a
    short last axis, so short float rows take their max as an element-wise maximum over the
    columns and their sum as a product with a ones vector (BLAS); see docs/tensors.md."""
    overwrite = overwrite and data.flags.c_contiguous and data.flags.writeable
    width = data.shape[axis] if data.ndim else 1
    if (
        axis in (-1, data.ndim - 1)
        and data.ndim >= 2
        and 1 < width <= _SHORT_ROW
        and data.size >= _SHORT_ROWS_MIN
        and data.dtype in (np.float32, np.float64)
    ):
        rows = data.reshape(-1, width)
        peak = rows[:, 0].copy()
        for column in range(1, width):
            np.maximum(peak, rows[:, column], out=peak)
        shifted = np.subtract(rows, peak[:, None], out=rows if overwrite else None)
        ones = np.ones(width, dtype=data.dtype)
        if log:
            shifted -= np.log(np.exp(shifted) @ ones)[:, None]
        else:
            np.exp(shifted, out=shifted)
            shifted *= np.reciprocal(shifted @ ones)[:, None]  # a division per row only
        return shifted.reshape(data.shape)
    shifted = np.subtract(
        data, np.max(data, axis=axis, keepdims=True), out=data if overwrite else None
    )
    if log:
        shifted -= np.log(np.sum(np.exp(shifted), axis=axis, keepdims=True))
        return shifted
    np.exp(shifted, out=shifted)
    shifted /= np.sum(shifted, axis=axis, keepdims=True)
    return shifted


def _cpu_model() -> str:
    return cpu_info("model name") or platform.processor() or platform.machine() or "cpu"


def _blas_name() -> str:
    try:
        config = np.show_config(mode="dicts")  # type: ignore[call-arg]
        blas = config.get("Build Dependencies", {}).get("blas", {})  # type: ignore[union-attr]
        return str(blas.get("name", "unknown"))
    except Exception:
        return "unknown"
