"""The contract between the op layer and a hardware backend.

The op layer (:mod:`ipfs_accelerate.ops`) validates every call (shapes, broadcasting, axes,
dtypes, devices) and computes the result's shape and dtype; a backend only computes. So a
backend method receives *validated* arguments:

* input tensors as :class:`~ipfs_accelerate.tensor.Tensor` objects of this backend (their
  ``shape``, ``dtype`` and backend-specific ``_data`` handle are available);
* axes already normalised (non-negative, sorted where order does not matter);
* for element-wise ops, operands already promoted to one compute dtype (or Python scalars);

and returns a backend-specific *handle* (numpy array on CPU, a device buffer on WebGPU, a
graph node on WebNN) that the op layer wraps in a Tensor of the shape and dtype it computed.
Handles may be lazy: a backend may record work and only run it when :meth:`Backend.to_numpy`
is called. A backend never imports a model and never validates user input again.

An op a backend cannot run (at all, or for these dtypes/arguments) raises
:class:`~ipfs_accelerate.errors.UnsupportedOpError` or
:class:`~ipfs_accelerate.errors.UnsupportedDtypeError`; the op layer then falls back to the
CPU backend with a :class:`~ipfs_accelerate.errors.BackendFallbackWarning` and moves the
result back, so the caller gets a correct result on the device it asked for.

Optional fused ops (``softmax``, ``layer_norm``, ``linear``, ``attention``, ``var``...) are
listed in :attr:`Backend.fused`; for the others the op layer composes the result from the
required primitives, on the same backend.
"""

from __future__ import annotations

import abc
import functools
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ipfs_accelerate.errors import UnsupportedOpError

if TYPE_CHECKING:
    from ipfs_accelerate.quantization import QuantizedTensor
    from ipfs_accelerate.tensor._dtype import DType
    from ipfs_accelerate.tensor._tensor import Tensor

Scalar = bool | int | float
Shape = tuple[int, ...]

#: element-wise functions of one tensor: ``unary(op, x)``; the output dtype is the input's,
#: except ``logical_not`` (bool) and ``isnan``/``isinf``/``isfinite`` (bool)
UNARY_OPS: frozenset[str] = frozenset(
    {
        "neg", "abs", "exp", "log", "sqrt", "rsqrt", "erf", "sin", "cos", "tanh",
        "sigmoid", "relu", "silu", "gelu", "gelu_tanh", "logical_not", "floor", "ceil",
        "round", "sign", "reciprocal", "isnan", "isinf", "isfinite", "square",
    }
)  # fmt: skip

#: element-wise functions of two operands with numpy broadcasting
BINARY_OPS: frozenset[str] = frozenset(
    {
        "add", "sub", "mul", "div", "pow", "maximum", "minimum", "floor_divide", "remainder",
        "equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
        "logical_and", "logical_or", "logical_xor",
    }
)  # fmt: skip

#: binary ops whose output dtype is bool whatever the compute dtype
COMPARISON_OPS: frozenset[str] = frozenset(
    {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
     "logical_and", "logical_or", "logical_xor"}
)  # fmt: skip

REDUCE_OPS: frozenset[str] = frozenset({"sum", "prod", "max", "min", "mean", "var"})
ARG_REDUCE_OPS: frozenset[str] = frozenset({"argmax", "argmin"})

#: optional fused ops a backend may provide (see each method's docstring)
FUSABLE_OPS: frozenset[str] = frozenset(
    {"softmax", "layer_norm", "linear", "attention", "clamp", "quantized_linear",
     "dynamic_quantized_linear", "row_quantized_linear", "block_quantized_linear",
     "adamw_step", "sgd_step", "cross_entropy"}
)  # fmt: skip


@functools.cache
def cpu_info(key: str) -> str | None:
    """The value of ``key`` ("model name", "vendor_id", "flags", ...) for the first CPU in
    /proc/cpuinfo, read once per key; None where it is not reported (not on Linux)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as info:
            for line in info:
                name, _, value = line.partition(":")
                if name.strip() == key:
                    return value.strip()
    except OSError:
        pass
    return None


def host_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS reports one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class BackendInfo:
    """What a backend is and can do on this machine, as reported by ``available_backends()``."""

    name: str
    available: bool
    device_name: str = ""
    vendor: str = ""
    #: "cpu" (a CPU runs the kernels), "integrated", "discrete", "virtual" or "unknown"
    adapter_type: str = "unknown"
    #: the API underneath: "numpy", "Vulkan", "Metal", "D3D12", "onnxruntime"...
    api: str = ""
    memory_bytes: int | None = None
    max_buffer_bytes: int | None = None
    dtypes: tuple[str, ...] = ()
    features: tuple[str, ...] = ()
    limits: dict[str, int] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)
    #: why the backend is unavailable (None when available)
    reason: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "available": self.available,
            "device_name": self.device_name,
            "vendor": self.vendor,
            "adapter_type": self.adapter_type,
            "api": self.api,
            "memory_bytes": self.memory_bytes,
            "max_buffer_bytes": self.max_buffer_bytes,
            "dtypes": list(self.dtypes),
            "features": list(self.features),
            "limits": dict(self.limits),
            "details": dict(self.details),
            "reason": self.reason,
        }


class CapturedFunction(abc.ABC):
    """A function of tensors recorded by :meth:`Backend.capture`."""

    @abc.abstractmethod
    def replay(self, *inputs: Tensor | np.ndarray[Any, Any]) -> tuple[Tensor, ...]:
        """``fn``'s results for these input values (tensors of the backend or host arrays,
        the same shapes and dtypes as when captured, in the same order)."""


@dataclass(frozen=True, slots=True)
class AdamWHyper:
    """One AdamW step's hyperparameters, as floats (``step`` counts from 1)."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    step: int


@dataclass(frozen=True, slots=True)
class SGDHyper:
    """One SGD step's hyperparameters, as floats."""

    lr: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    first_step: bool


class Backend(abc.ABC):
    """A hardware backend: memory, transfers and the op set. See the module docstring."""

    #: registry name, also the ``device`` string of its tensors
    name: ClassVar[str]
    #: names from FUSABLE_OPS this backend implements natively
    fused: ClassVar[frozenset[str]] = frozenset()
    #: True when tensors live in host memory that ``to_numpy`` returns without copying (CPU);
    #: device backends return a fresh array from ``to_numpy`` that the caller owns
    shares_host_memory: ClassVar[bool] = False

    def share_host_array(self, array: np.ndarray[Any, Any]) -> Any | None:
        """A handle that reads ``array``'s memory without copying it, for a caller that
        keeps updating the array in place between uses (an optimizer's host kernel, see
        optim/_compiled.py), or None where this backend's kernels cannot read host memory
        (a device backend). The caller must not write while a computation reads it."""
        return array if self.shares_host_memory else None

    def read_host(self, x: Tensor) -> np.ndarray[Any, Any] | None:
        """``x``'s computed values as a read-only view of the host memory that holds them
        (no copy), or None where they live on a device: the other half of
        :meth:`share_host_array`."""
        if not self.shares_host_memory:
            return None
        view: np.ndarray[Any, Any] = x._data.view()
        view.flags.writeable = False
        return view

    # ------------------------------------------------------------------ identity, memory

    @abc.abstractmethod
    def info(self) -> BackendInfo:
        """Describe the device (name, vendor, adapter type, limits, dtypes, features)."""

    @property
    @abc.abstractmethod
    def supported_dtypes(self) -> frozenset[DType]:
        """The dtypes tensors of this backend can hold and compute with."""

    @abc.abstractmethod
    def from_numpy(self, array: np.ndarray[Any, Any]) -> Any:
        """A handle holding ``array``'s data (dtype supported, any strides).

        The CPU backend may share memory with ``array``; device backends copy it.
        """

    @abc.abstractmethod
    def to_numpy(self, x: Tensor) -> np.ndarray[Any, Any]:
        """The data of ``x`` on the host. Runs any pending work first. Shares memory only when
        ``shares_host_memory`` is True; otherwise the array is fresh and owned by the caller."""

    @abc.abstractmethod
    def full(self, shape: Shape, value: Scalar, dtype: DType) -> Any:
        """A new tensor of ``shape`` filled with ``value`` (already checked to fit ``dtype``)."""

    @abc.abstractmethod
    def arange(self, start: Scalar, step: Scalar, size: int, dtype: DType) -> Any:
        """``[start + i * step for i in range(size)]`` as ``dtype`` (numpy's arange values)."""

    @abc.abstractmethod
    def copy(self, x: Tensor) -> Any:
        """An independent copy of ``x`` (``clone()``)."""

    @abc.abstractmethod
    def cast(self, x: Tensor, dtype: DType) -> Any:
        """``x`` converted to ``dtype`` with numpy's casting of values (the op layer has already
        refused conversions that would lose values silently where it can see the values)."""

    # ------------------------------------------------------------------ element-wise

    @abc.abstractmethod
    def unary(self, op: str, x: Tensor) -> Any:
        """An element-wise function of ``x`` (``op`` in UNARY_OPS). Float functions receive a
        floating ``x``; the output dtype equals the input's except for the bool-valued ops."""

    @abc.abstractmethod
    def binary(self, op: str, a: Tensor | Scalar, b: Tensor | Scalar, out_shape: Shape) -> Any:
        """An element-wise function of two operands broadcast to ``out_shape`` (``op`` in
        BINARY_OPS). Tensor operands share one compute dtype; a Python scalar operand stands for
        a value of that dtype (at least one operand is a tensor). The output has the compute
        dtype, or bool for COMPARISON_OPS. ``div`` is true division on floats (the op layer never
        sends integers to ``div``). Integer add/sub/mul/pow that overflow the dtype must raise
        TensorOverflowError (eagerly, or at the next readback for deferred devices)."""

    @abc.abstractmethod
    def where(self, cond: Tensor, a: Tensor | Scalar, b: Tensor | Scalar, out_shape: Shape) -> Any:
        """``a`` where ``cond`` (bool) else ``b``, broadcast to ``out_shape``.

        ``a`` and ``b`` share a dtype."""

    # ------------------------------------------------------------------ reductions

    @abc.abstractmethod
    def reduce(
        self,
        op: str,
        x: Tensor,
        axes: tuple[int, ...],
        keepdims: bool,
        out_dtype: DType,
        correction: float = 0.0,
    ) -> Any:
        """Reduce ``x`` over ``axes`` (non-empty, sorted, unique) with ``op`` in REDUCE_OPS,
        accumulating and returning ``out_dtype`` (int64 for integer sums/products, float64 for
        integer means). ``var`` divides by ``N - correction``. Reduced axes are non-empty."""

    @abc.abstractmethod
    def arg_reduce(self, op: str, x: Tensor, axis: int, keepdims: bool) -> Any:
        """Index (int64) of the first max/min along ``axis`` (``op`` in ARG_REDUCE_OPS)."""

    # ------------------------------------------------------------------ shape, data movement

    @abc.abstractmethod
    def reshape(self, x: Tensor, shape: Shape) -> Any:
        """``x``'s elements in row-major order with a new shape of the same size."""

    @abc.abstractmethod
    def permute(self, x: Tensor, axes: tuple[int, ...]) -> Any:
        """``x`` with its axes reordered (``axes`` is a permutation of range(ndim))."""

    @abc.abstractmethod
    def broadcast_to(self, x: Tensor, shape: Shape) -> Any:
        """``x`` broadcast to ``shape`` (numpy rules, already checked)."""

    @abc.abstractmethod
    def slice(self, x: Tensor, starts: Shape, steps: Shape, sizes: Shape) -> Any:
        """Per axis, ``sizes[i]`` elements starting at ``starts[i]`` every ``steps[i]`` (steps may
        be negative; every index is in range)."""

    @abc.abstractmethod
    def concat(self, xs: Sequence[Tensor], axis: int) -> Any:
        """Join tensors of one dtype along ``axis`` (other dimensions equal)."""

    @abc.abstractmethod
    def gather(self, x: Tensor, indices: Tensor, axis: int) -> Any:
        """numpy's ``take(x, indices, axis)``: shape ``x.shape[:axis] + indices.shape +
        x.shape[axis+1:]``. ``indices`` is int32 or int64; negative indices count from the end.
        An index outside ``[-n, n)`` must raise IndexOutOfRangeError (eagerly, or at the next
        readback for deferred devices), never read out of bounds."""

    @abc.abstractmethod
    def pad(self, x: Tensor, pads: tuple[tuple[int, int], ...], mode: str, value: Scalar) -> Any:
        """Pad each axis by (before, after) >= 0; ``mode`` is "constant" (with ``value``),
        "edge" or "reflect" (numpy's meanings)."""

    def setitem(self, x: Tensor, key: Any, value: np.ndarray[Any, Any]) -> None:
        """Assign ``value`` (host data already converted to ``x``'s dtype and broadcastable to the
        selection) in place at ``key`` (a validated numpy indexing key). CPU only by default."""
        raise UnsupportedOpError(
            f"item assignment is not supported on the {self.name!r} backend; "
            "move the tensor to 'cpu' with .to('cpu'), assign, and move it back"
        )

    # ------------------------------------------------------------------ matrix, nn

    @abc.abstractmethod
    def matmul(self, a: Tensor, b: Tensor, out_shape: Shape) -> Any:
        """Batched matrix product of ``a`` (..., M, K) and ``b`` (..., K, N), both >= 2-D and of
        one dtype, batch dimensions broadcast to ``out_shape[:-2]``."""

    @abc.abstractmethod
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
    ) -> Any:
        """Cross-correlation over 1 or 2 spatial dimensions: ``x`` (N, C_in, *spatial),
        ``weight`` (C_out, C_in / groups, *kernel), optional ``bias`` (C_out,), zero padding
        (before, after) per spatial axis (PyTorch's conv1d/conv2d semantics)."""

    # ------------------------------------------------------------------ optional fused ops
    # Called only when the name is in ``fused``; otherwise the op layer composes them.

    def softmax(self, x: Tensor, axis: int, log: bool) -> Any:
        """Numerically stable (log-)softmax along ``axis`` of a floating ``x``."""
        raise UnsupportedOpError(f"{self.name}: no fused softmax")

    def layer_norm(
        self, x: Tensor, weight: Tensor | None, bias: Tensor | None, num_axes: int, eps: float
    ) -> Any:
        """Normalise over the last ``num_axes`` axes (biased variance), then scale and shift."""
        raise UnsupportedOpError(f"{self.name}: no fused layer_norm")

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Any:
        """``x @ weight.T + bias`` with ``weight`` (out, in) as in PyTorch/HF checkpoints."""
        raise UnsupportedOpError(f"{self.name}: no fused linear")

    def quantized_linear(self, x: Tensor, weight: QuantizedTensor, bias: Tensor | None) -> Any:
        """``x @ dequantize(weight).T + bias`` with float activations (weight-only
        quantization). ``weight`` is a 2-D (out, in) QuantizedTensor bound to this backend:
        int8, or int4 packed two per byte, with per-tensor, per-axis or blockwise scales and
        optional zero points. ``weight.prepared(key, build)`` keeps the backend's resident
        form of it. The result has ``x``'s float dtype."""
        raise UnsupportedOpError(f"{self.name}: no quantized linear")

    def dynamic_quantized_linear(
        self, x: Tensor, weight: QuantizedTensor, bias: Tensor | None
    ) -> Any:
        """As :meth:`quantized_linear`, with ``x`` quantized on the fly to uint8 with one
        scale and zero point for the whole tensor (ONNX DynamicQuantizeLinear: the range
        [min(x, 0), max(x, 0)] over 255 steps) and an integer matrix product."""
        raise UnsupportedOpError(f"{self.name}: no dynamic quantized linear")

    def row_quantized_linear(self, x: Tensor, weight: QuantizedTensor, bias: Tensor | None) -> Any:
        """As :meth:`dynamic_quantized_linear`, with one uint8 scale and zero point per row of
        ``x`` (per index of its leading axes) instead of one for the tensor
        (``ops.linear(activations="int8_row")``, exact rule in ``ops/_quantized.py``)."""
        raise UnsupportedOpError(f"{self.name}: no row-quantized linear")

    def integer_kernel(self, name: str) -> bool:
        """Whether the fused op ``name`` (``"dynamic_quantized_linear"``,
        ``"row_quantized_linear"`` or ``"block_quantized_linear"``) multiplies in integers on
        this machine, so that quantizing a layer's inputs pays: the default int8 activation
        policy (models/_precision.py) uses only these. Default: whether ``fused`` lists it;
        a backend that takes the op everywhere but has the integer kernel only on some
        machines (cpu: with MKL) says so here."""
        return name in self.fused

    def block_quantized_linear(
        self, x: Tensor, weight: QuantizedTensor, bias: Tensor | None
    ) -> Any:
        """As :meth:`quantized_linear` for a blockwise weight (blocks along in_features), with
        each row of ``x`` rounded to symmetric int8 per block of the weight's block size
        (``ops.linear(activations="int8_block")``, exact rule in ``ops/_quantized.py``) and an
        integer product."""
        raise UnsupportedOpError(f"{self.name}: no block-quantized linear")

    def attention(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        scale: float,
        out_shape: Shape,
    ) -> Any:
        """softmax(q @ k^T * scale + mask) @ v. ``mask`` is None, bool (True = attend) or
        additive float, broadcastable to (..., L, S); ``is_causal`` masks j > i (top-left)."""
        raise UnsupportedOpError(f"{self.name}: no fused attention")

    def clamp(self, x: Tensor, low: Scalar | None, high: Scalar | None) -> Any:
        """``min(max(x, low), high)`` with None meaning unbounded (NaN propagates)."""
        raise UnsupportedOpError(f"{self.name}: no fused clamp")

    def cross_entropy(
        self, logits: Tensor, target: Tensor, ignore_index: int, reduction: str, check_range: bool
    ) -> Any:
        """Cross entropy of float (N, C) ``logits`` against (N,) integer class indices:
        ``-log_softmax(logits)[i, target[i]]`` per row, 0 where ``target == ignore_index``;
        ``reduction`` "none" (N,), "sum" or "mean" (over the rows not ignored) as a 0-d
        result. With ``check_range``, a class outside [0, C) (not ignored) raises
        IndexOutOfRangeError. Backends listing it also give :meth:`cross_entropy_backward`."""
        raise UnsupportedOpError(f"{self.name}: no fused cross_entropy")

    def cross_entropy_backward(
        self, logits: Tensor, target: Tensor, grad: Tensor, ignore_index: int, reduction: str
    ) -> Any:
        """The gradient of :meth:`cross_entropy` for ``logits``, given the loss's ``grad``."""
        raise UnsupportedOpError(f"{self.name}: no fused cross_entropy")

    def scattered_rows(self, x: Tensor) -> list[tuple[Tensor, Tensor]] | None:
        """Where ``x`` is not computed yet and is rows scattered along axis 0 into zeros (an
        embedding table's gradient: one ``index_add`` into zeros per lookup, summed), the
        (indices, rows) of each scatter, so that a caller can take the rows instead of the
        dense table; else None. Only backends that defer computation can tell."""
        return None

    def index_add(self, base: Tensor, axis: int, indices: Tensor, source: Tensor) -> Any:
        """``base`` plus ``source`` scattered along ``axis``: entry ``indices[j]`` of that axis
        receives the sum of the slices ``source[..., j, ...]`` (repeated indices add up).
        ``indices`` holds int32/int64 in ``[0, n)``; ``source`` has shape
        ``base.shape[:axis] + indices.shape + base.shape[axis+1:]`` (the gradient of gather)."""
        raise UnsupportedOpError(f"{self.name}: no fused index_add")

    def adamw_step(
        self,
        param: Tensor,
        grad: Tensor,
        exp_avg: Tensor,
        exp_avg_sq: Tensor,
        max_exp_avg_sq: Tensor | None,
        hyper: AdamWHyper,
    ) -> bool:
        """One AdamW update written in place into ``param``, ``exp_avg``, ``exp_avg_sq`` (and
        ``max_exp_avg_sq`` with AMSGrad), with torch.optim.AdamW's arithmetic (see
        :class:`~ipfs_accelerate.optim.AdamW`); ``grad`` is only read. All tensors have
        ``param``'s shape and dtype. False, with nothing written, when these tensors cannot
        be updated in place (the optimizer then composes the update from ops)."""
        raise UnsupportedOpError(f"{self.name}: no fused adamw_step")

    def sgd_step(
        self, param: Tensor, grad: Tensor, momentum_buffer: Tensor | None, hyper: SGDHyper
    ) -> bool:
        """One SGD update written in place into ``param`` and ``momentum_buffer`` (None
        without momentum; on the first step, ``hyper.first_step``, the buffer's old values are
        ignored and it takes the decayed gradient), with torch.optim.SGD's arithmetic (see
        :class:`~ipfs_accelerate.optim.SGD`); ``grad`` is only read. False, with nothing
        written, when the tensors cannot be updated in place."""
        raise UnsupportedOpError(f"{self.name}: no fused sgd_step")

    # ------------------------------------------------------------------ hints

    def mark_parameter(self, x: Tensor) -> None:  # noqa: B027 - ignoring the hint is right for eager backends
        """Hint that ``x`` is a long-lived parameter (model weights): read by many computations
        and never changed again. A graph-compiling backend may embed it in its compiled graphs
        as a constant (letting the runtime prepack and fuse around it). Only a hint: results
        never depend on it, and eager backends ignore it."""

    def capture(
        self,
        fn: Callable[..., Sequence[Tensor]],
        inputs: Sequence[Tensor],
        *,
        threads: int | None = None,
    ) -> CapturedFunction | None:
        """Optional: ``fn(*inputs)`` (``inputs`` are this backend's tensors) recorded once so
        that :meth:`CapturedFunction.replay` computes its results for new input values of the
        same shapes and dtypes without running ``fn``'s Python again. None when the backend
        cannot (the default) or when ``fn`` reads a per-call value that is not one of
        ``inputs`` (freezing it would give wrong results later): the caller runs ``fn``.
        ``threads`` asks for a function whose replays use at most that many threads (1: the
        calling thread alone), for a caller that replays several side by side and shares the
        cores out; None lets the backend choose. Replays of captured functions may run
        concurrently from several threads."""
        return None

    # ------------------------------------------------------------------ lifecycle

    def synchronize(self) -> None:  # noqa: B027 - a no-op is right for eager backends
        """Block until all recorded work has run (no-op for eager backends)."""

    def transient_graphs(self) -> AbstractContextManager[None]:
        """A context whose compiled graphs are dropped when it exits, for a one-off run (a
        calibration pass) that should not keep their memory: a no-op where nothing is
        compiled (the default)."""
        return nullcontext()

    def memory_in_use(self) -> int | None:
        """Bytes this backend currently holds for tensors, if it tracks them."""
        return None
