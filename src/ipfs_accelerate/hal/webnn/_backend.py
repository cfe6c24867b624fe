"""The WebNN backend: tensor ops traced into lazy nodes, compiled into WebNN graphs on readback."""

from __future__ import annotations

import math
import platform
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from ipfs_accelerate.errors import (
    IndexOutOfRangeError,
    InvalidArgumentError,
    UnsupportedDtypeError,
    UnsupportedOpError,
)
from ipfs_accelerate.hal._backend import (
    COMPARISON_OPS,
    Backend,
    BackendInfo,
    Scalar,
    Shape,
    host_cores,
)
from ipfs_accelerate.hal.webnn._cache import GraphCache
from ipfs_accelerate.hal.webnn._capture import (
    Captured,
    CaptureKey,
    HeadGraph,
    detached,
    head_rows,
)
from ipfs_accelerate.hal.webnn._checks import INTEGER, check_failure, fits
from ipfs_accelerate.hal.webnn._emit import GraphOutput, TraceEmitter, scalar_token
from ipfs_accelerate.hal.webnn._graph import Node, Trace, leaf, trace, trace_roots
from ipfs_accelerate.tensor._dtype import DType, as_dtype
from ipfs_accelerate.tensor._tensor import Tensor

if TYPE_CHECKING:
    from ipfs_accelerate.quantization import QuantizedTensor

Array = np.ndarray[Any, Any]

_DTYPES = ("float16", "float32", "int32", "int64", "int8", "uint8", "bool")
#: WebNN's highest operand rank
_MAX_RANK = 8
#: compiled graphs kept per backend (least recently used goes first)
DEFAULT_CACHE_SIZE = 64
#: estimated memory the cached graphs may hold together (see _Compiled.cost)
DEFAULT_CACHE_BYTES = 2 << 30
#: a linear layer whose parameters take at least this many bytes, as the result of a graph,
#: runs as a head graph of its own that every graph ending in it shares (see _shared_head)
DEFAULT_SHARED_HEAD_BYTES = 4 << 20
#: the ops a shared head may be: a matrix product of the input by parameters
_HEAD_OPS = frozenset({"linear", "quantized_linear"})
_BOOL_RESULT_UNARY = frozenset({"logical_not", "isnan", "isinf", "isfinite"})
_CHECKED_BINARY = frozenset({"add", "sub", "mul"})
#: integer matmuls hold every product (M x K x N) before summing: beyond this, the CPU backend
_INTEGER_MATMUL_LIMIT = 1 << 26


@dataclass
class Stats:
    """What the backend has done since it started (or since ``reset``): for tests and tuning."""

    #: graphs built and compiled (cache misses)
    compilations: int = 0
    #: graph runs
    dispatches: int = 0
    #: materialisations answered from the compiled-graph cache
    cache_hits: int = 0
    #: ops on empty tensors, computed on the host (there is nothing to run)
    host_ops: int = 0
    #: lazy op nodes the op layer created (what a captured function's replay does not do)
    traced_ops: int = 0
    #: runs of captured functions (each is also one dispatch)
    replays: int = 0

    def reset(self) -> None:
        self.compilations = self.dispatches = self.cache_hits = self.host_ops = 0
        self.traced_ops = self.replays = 0


@dataclass(slots=True)
class _Compiled:
    """A compiled trace: the graph and how its inputs and outputs map to trace positions."""

    graph: Any  # MLGraph
    #: graph input name -> position of the leaf it is fed from
    inputs: dict[str, int]
    #: in graph output order
    outputs: list[GraphOutput]
    #: parameter leaves embedded as constants: kept alive with the graph
    params: list[Node] = field(default_factory=list)
    #: estimated bytes the session holds: its constants (ONNX Runtime prepacks a copy of
    #: matrix weights) and an arena of a few times the largest intermediate
    cost: int = 0
    #: the parameter leaves it multiplies by (each has a prepacked copy in the session)
    packed: tuple[Node, ...] = ()


class WebNNBackend(GraphCache, Backend):
    """Tensor ops on a WebNN context (ONNX Runtime underneath), traced and compiled.

    ``cache_size`` bounds the number of compiled graphs kept and ``cache_bytes`` the memory
    they are estimated to hold (least recently used are dropped; the latest graph is always
    kept). A graph whose result is a linear layer over at least ``shared_head_bytes`` of
    parameters (a language model's vocabulary projection) computes the layer's input, and
    a head graph per row count (1, or a multiple of 8) computes it for all of them (ONNX Runtime
    prepacks a matrix weight once per session: without the split, each decode step graph would
    hold its own copy of the projection). The design is in docs/webnn.md.
    """

    name: ClassVar[str] = "webnn"
    fused: ClassVar[frozenset[str]] = frozenset(
        {"softmax", "layer_norm", "linear", "attention", "clamp", "quantized_linear",
         "dynamic_quantized_linear", "row_quantized_linear", "block_quantized_linear",
         "index_add"}
    )  # fmt: skip
    shares_host_memory: ClassVar[bool] = False

    def __init__(
        self,
        *,
        power_preference: str = "default",
        cache_size: int = DEFAULT_CACHE_SIZE,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        shared_head_bytes: int = DEFAULT_SHARED_HEAD_BYTES,
    ) -> None:
        from ipfs_accelerate import webnn

        if (
            isinstance(shared_head_bytes, bool)
            or not isinstance(shared_head_bytes, int)
            or shared_head_bytes < 0
        ):
            raise InvalidArgumentError(
                "webnn: shared_head_bytes must be a non-negative integer, got "
                f"{shared_head_bytes!r}"
            )
        self.context = webnn.create_context(power_preference=power_preference)
        self.cache_size = cache_size
        self.cache_bytes = cache_bytes
        self.shared_head_bytes = shared_head_bytes
        self.stats = Stats()
        self._cache: OrderedDict[Any, _Compiled] = OrderedDict()
        self._lock = threading.RLock()
        self._dtypes = frozenset(as_dtype(name) for name in _DTYPES)

    # ------------------------------------------------------------------ identity, memory

    def info(self) -> BackendInfo:
        from ipfs_accelerate.hal.cpu._backend import _cpu_model
        from ipfs_accelerate.webnn._runtime import ort

        providers = self.context.execution_providers
        on_cpu = providers[0] == "CPUExecutionProvider"
        return BackendInfo(
            name=self.name,
            available=True,
            device_name=_cpu_model() if on_cpu else providers[0],
            vendor=platform.machine() if on_cpu else "",
            adapter_type="cpu" if on_cpu else "unknown",
            api="onnxruntime",
            dtypes=_DTYPES,
            features=("graph-compilation", "int64", "float16"),
            limits={"max_rank": _MAX_RANK, "cores": host_cores()},
            details={
                "onnxruntime": str(ort().__version__),
                "execution_providers": list(providers),
                "power_preference": self.context.power_preference,
                "cached_graphs": len(self._cache),
                "cache_size": self.cache_size,
                "cache_bytes": self.cache_bytes,
                "shared_head_bytes": self.shared_head_bytes,
            },
        )

    def share_host_array(self, array: Array) -> Node | None:
        """A per-call leaf over a read-only view of ``array`` where ONNX Runtime computes on
        the CPU (its inputs are read from host memory as they are), else None. An input leaf,
        never a graph constant, so a graph that reads it always reads its current values."""
        if self.context.execution_providers[0] != "CPUExecutionProvider":
            return None
        if array.dtype.name not in _DTYPES or not array.flags.c_contiguous:
            return None
        return leaf(array.view(), array.dtype.name)

    def read_host(self, x: Tensor) -> Array | None:
        if self.context.execution_providers[0] != "CPUExecutionProvider":
            return None
        return self._materialise(x._data)  # a leaf's value: read-only already

    @property
    def supported_dtypes(self) -> frozenset[DType]:
        return self._dtypes

    def from_numpy(self, array: Array) -> Node:
        dtype = _dtype_name(array.dtype)
        if _immutable(array):
            # memory-mapped weights and other data nobody can write: a parameter, used without
            # a copy where its layout allows
            value = (
                array.view() if array.flags.c_contiguous else np.array(array, copy=True, order="C")
            )
            return leaf(value, dtype, param=True)
        return leaf(np.array(array, copy=True, order="C"), dtype)

    def to_numpy(self, x: Tensor) -> Array:
        node: Node = x._data
        value = self._materialise(node)
        return np.array(value, copy=True)

    def mark_parameter(self, x: Tensor) -> None:
        """Make ``x`` a graph constant from now on (computing it first if it is pending)."""
        node: Node = x._data
        self._materialise(node)
        node.make_parameter()

    def full(self, shape: Shape, value: Scalar, dtype: DType) -> Node:
        name = self._check_dtype(dtype, "full")
        if not math.prod(shape):
            return self._empty(shape, name)
        self.stats.traced_ops += 1
        return Node("full", (scalar_token(value),), (), shape, name)

    def arange(self, start: Scalar, step: Scalar, size: int, dtype: DType) -> Node:
        name = self._check_dtype(dtype, "arange")
        if not size:
            return self._empty((0,), name)
        self.stats.traced_ops += 1
        return Node("arange", (scalar_token(start), scalar_token(step), size), (), (size,), name)

    def copy(self, x: Tensor) -> Node:
        # nodes are immutable values: a copy may share them
        node: Node = x._data
        return node

    def cast(self, x: Tensor, dtype: DType) -> Node:
        target = self._check_dtype(dtype, "cast")
        source = x.dtype.name
        if x.size == 0:
            return self._empty(x.shape, target)
        node = self._op("cast", (target,), (x._data,), x.shape, target)
        if source != "bool" and (target == "bool" or _value_changing(source, target)):
            self._check(node, ("cast", source, target))
        return node

    # ------------------------------------------------------------------ element-wise

    def unary(self, op: str, x: Tensor) -> Node:
        dtype = "bool" if op in _BOOL_RESULT_UNARY else x.dtype.name
        if x.size == 0:
            return self._empty(x.shape, dtype)
        node = self._op("unary", (op,), (x._data,), x.shape, dtype)
        source = x.dtype.name
        if op == "neg" and source == "uint8":
            self._check(node, ("neg_unsigned",))
        elif op in ("neg", "abs") and source in ("int32", "int64", "int8"):
            self._check(node, ("overflow", op, source))
        return node

    def binary(self, op: str, a: Tensor | Scalar, b: Tensor | Scalar, out_shape: Shape) -> Node:
        tensors = [t for t in (a, b) if isinstance(t, Tensor)]
        compute = tensors[0].dtype.name
        dtype = "bool" if op in COMPARISON_OPS else compute
        if not math.prod(out_shape) or any(t.size == 0 for t in tensors):
            return self._empty(out_shape, dtype)
        attrs = (
            op,
            None if isinstance(a, Tensor) else scalar_token(a),
            None if isinstance(b, Tensor) else scalar_token(b),
        )
        node = self._op("binary", attrs, tuple(t._data for t in tensors), out_shape, dtype)
        if compute in INTEGER:
            if op in _CHECKED_BINARY:
                self._check(node, ("overflow", op, compute))
            elif op in ("floor_divide", "remainder"):
                self._check(node, ("division", op))
            elif op == "pow":
                self._check(node, ("pow", compute))
        return node

    def where(self, cond: Tensor, a: Tensor | Scalar, b: Tensor | Scalar, out_shape: Shape) -> Node:
        dtype = next(t.dtype.name for t in (a, b) if isinstance(t, Tensor))
        if not math.prod(out_shape):
            return self._empty(out_shape, dtype)
        attrs = (
            None if isinstance(a, Tensor) else scalar_token(a),
            None if isinstance(b, Tensor) else scalar_token(b),
        )
        inputs = tuple(t._data for t in (cond, a, b) if isinstance(t, Tensor))
        return self._op("where", attrs, inputs, out_shape, dtype)

    def clamp(self, x: Tensor, low: Scalar | None, high: Scalar | None) -> Node:
        if x.size == 0:
            return self._empty(x.shape, x.dtype.name)
        attrs = (
            None if low is None else scalar_token(low),
            None if high is None else scalar_token(high),
        )
        return self._op("clamp", attrs, (x._data,), x.shape, x.dtype.name)

    # ------------------------------------------------------------------ reductions

    def reduce(
        self,
        op: str,
        x: Tensor,
        axes: tuple[int, ...],
        keepdims: bool,
        out_dtype: DType,
        correction: float = 0.0,
    ) -> Node:
        out = self._check_dtype(out_dtype, op)
        shape = (
            tuple(1 if i in axes else d for i, d in enumerate(x.shape))
            if keepdims
            else tuple(d for i, d in enumerate(x.shape) if i not in axes)
        )
        if x.size == 0:
            return self._on_host(
                "reduce", (op, x, axes, keepdims, out_dtype, correction), shape, out
            )
        attrs = (op, axes, keepdims, float(correction).hex())
        node = self._op("reduce", attrs, (x._data,), shape, out)
        if out in INTEGER and (op == "prod" or (op == "sum" and x.dtype.name == "int64")):
            self._check(node, ("reduce_overflow", op))
        return node

    def arg_reduce(self, op: str, x: Tensor, axis: int, keepdims: bool) -> Node:
        shape = (
            tuple(1 if i == axis else d for i, d in enumerate(x.shape))
            if keepdims
            else tuple(d for i, d in enumerate(x.shape) if i != axis)
        )
        return self._op("arg", (op, axis, keepdims), (x._data,), shape, "int64")

    # ------------------------------------------------------------------ shape, data movement

    def reshape(self, x: Tensor, shape: Shape) -> Node:
        if x.size == 0:
            return self._empty(shape, x.dtype.name)
        return self._op("reshape", (), (x._data,), shape, x.dtype.name)

    def permute(self, x: Tensor, axes: tuple[int, ...]) -> Node:
        shape = tuple(x.shape[a] for a in axes)
        if x.size == 0:
            return self._empty(shape, x.dtype.name)
        return self._op("permute", (axes,), (x._data,), shape, x.dtype.name)

    def broadcast_to(self, x: Tensor, shape: Shape) -> Node:
        if not math.prod(shape):
            return self._empty(shape, x.dtype.name)
        return self._op("expand", (), (x._data,), shape, x.dtype.name)

    def slice(self, x: Tensor, starts: Shape, steps: Shape, sizes: Shape) -> Node:
        if not math.prod(sizes):
            return self._empty(sizes, x.dtype.name)
        return self._op("slice", (starts, steps, sizes), (x._data,), sizes, x.dtype.name)

    def concat(self, xs: Sequence[Tensor], axis: int) -> Node:
        shape = list(xs[0].shape)
        shape[axis] = sum(t.shape[axis] for t in xs)
        parts = [t for t in xs if t.size]
        dtype = xs[0].dtype.name
        if not parts:
            return self._empty(tuple(shape), dtype)
        if len(parts) == 1:
            node: Node = parts[0]._data
            return node
        return self._op("concat", (axis,), tuple(t._data for t in parts), tuple(shape), dtype)

    def gather(self, x: Tensor, indices: Tensor, axis: int) -> Node:
        shape = (*x.shape[:axis], *indices.shape, *x.shape[axis + 1 :])
        if not math.prod(shape) or x.size == 0:
            if indices.size == 0:
                return self._empty(shape, x.dtype.name)
            return self._on_host("gather", (x, indices, axis), shape, x.dtype.name)
        node = self._op("gather", (axis,), (x._data, indices._data), shape, x.dtype.name)
        self._check(node, ("index", axis, x.shape[axis]))
        return node

    def scattered_rows(self, x: Tensor) -> list[tuple[Tensor, Tensor]] | None:
        parts: list[tuple[Node, Node]] = []
        if not _scatters_into_zeros(x._data, x._data, parts):
            return None
        return [
            (
                Tensor(indices, indices.shape, as_dtype(indices.dtype), self),
                Tensor(rows, rows.shape, as_dtype(rows.dtype), self),
            )
            for indices, rows in parts
        ]

    def index_add(self, base: Tensor, axis: int, indices: Tensor, source: Tensor) -> Node:
        shape, dtype = base.shape, base.dtype.name
        if not base.size:
            if indices.size and not shape[axis]:
                raise IndexOutOfRangeError(f"index_add: axis {axis} of {shape} is empty")
            return self._empty(shape, dtype)
        if not indices.size:
            return self.copy(base)
        node = self._op(
            "index_add", (axis,), (base._data, indices._data, source._data), shape, dtype
        )
        self._check(node, ("index_add", axis, shape[axis]))
        return node

    def pad(self, x: Tensor, pads: tuple[tuple[int, int], ...], mode: str, value: Scalar) -> Node:
        shape = tuple(d + before + after for d, (before, after) in zip(x.shape, pads, strict=True))
        if not math.prod(shape):
            return self._empty(shape, x.dtype.name)
        if x.size == 0:
            return self._on_host("pad", (x, pads, mode, value), shape, x.dtype.name)
        attrs = (tuple(pads), mode, scalar_token(value))
        return self._op("pad", attrs, (x._data,), shape, x.dtype.name)

    # ------------------------------------------------------------------ matrix, nn

    def matmul(self, a: Tensor, b: Tensor, out_shape: Shape) -> Node:
        if not math.prod(out_shape):
            return self._empty(out_shape, a.dtype.name)
        if a.size == 0 or b.size == 0:
            return self._on_host("matmul", (a, b, out_shape), out_shape, a.dtype.name)
        if not a.dtype.is_floating and math.prod(out_shape) * a.shape[-1] > _INTEGER_MATMUL_LIMIT:
            # WebNN's matmul is float-only: integers multiply out every product before summing
            raise UnsupportedOpError(
                f"webnn: integer matmul {a.shape} @ {b.shape} needs "
                f"{math.prod(out_shape) * a.shape[-1]} intermediate products (WebNN multiplies "
                f"integers element-wise; limit {_INTEGER_MATMUL_LIMIT})"
            )
        return self._op("matmul", (), (a._data, b._data), out_shape, a.dtype.name)

    def linear(self, x: Tensor, weight: Tensor, bias: Tensor | None) -> Node:
        shape = (*x.shape[:-1], weight.shape[0])
        tensors = [x, weight] if bias is None else [x, weight, bias]
        if not math.prod(shape):
            return self._empty(shape, x.dtype.name)
        if any(t.size == 0 for t in tensors):
            return self._on_host("linear", (x, weight, bias), shape, x.dtype.name)
        return self._op(
            "linear", (bias is not None,), tuple(t._data for t in tensors), shape, x.dtype.name
        )

    def quantized_linear(self, x: Tensor, weight: QuantizedTensor, bias: Tensor | None) -> Node:
        return self._quantized("float", x, weight, bias)

    def dynamic_quantized_linear(
        self, x: Tensor, weight: QuantizedTensor, bias: Tensor | None
    ) -> Node:
        return self._quantized("int8", x, weight, bias)

    def row_quantized_linear(self, x: Tensor, weight: QuantizedTensor, bias: Tensor | None) -> Node:
        return self._quantized("int8_row", x, weight, bias)

    def block_quantized_linear(
        self, x: Tensor, weight: QuantizedTensor, bias: Tensor | None
    ) -> Node:
        return self._quantized("int8_block", x, weight, bias)

    def _quantized(
        self, activations: str, x: Tensor, weight: QuantizedTensor, bias: Tensor | None
    ) -> Node:
        """The dequantizeLinear (+ quantizeLinear) + matmul pattern that the compiler lowers
        to ONNX Runtime's integer kernels (hal/webnn/_quantized.py)."""
        from ipfs_accelerate.hal.webnn._quantized import resident

        shape = (*x.shape[:-1], weight.shape[0])
        if not math.prod(shape):  # (a quantized weight is never empty)
            return self._empty(shape, x.dtype.name)
        inputs = (x._data, *resident(weight).nodes) + (() if bias is None else (bias._data,))
        return self._op(
            "quantized_linear", (activations, bias is not None), inputs, shape, x.dtype.name
        )

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
    ) -> Node:
        tensors = [x, weight] if bias is None else [x, weight, bias]
        if not math.prod(out_shape):
            return self._empty(out_shape, x.dtype.name)
        if any(t.size == 0 for t in tensors):
            args = (x, weight, bias, stride, padding, dilation, groups, out_shape)
            return self._on_host("conv", args, out_shape, x.dtype.name)
        attrs = (stride, padding, dilation, groups, bias is not None)
        return self._op("conv", attrs, tuple(t._data for t in tensors), out_shape, x.dtype.name)

    def softmax(self, x: Tensor, axis: int, log: bool) -> Node:
        if x.size == 0:
            return self._empty(x.shape, x.dtype.name)
        return self._op("softmax", (axis, log), (x._data,), x.shape, x.dtype.name)

    def layer_norm(
        self, x: Tensor, weight: Tensor | None, bias: Tensor | None, num_axes: int, eps: float
    ) -> Node:
        if x.size == 0:
            return self._empty(x.shape, x.dtype.name)
        tensors = [t for t in (x, weight, bias) if t is not None]
        attrs = (num_axes, float(eps).hex(), weight is not None, bias is not None)
        return self._op("layer_norm", attrs, tuple(t._data for t in tensors), x.shape, x.dtype.name)

    def attention(
        self,
        q: Tensor,
        k: Tensor,
        v: Tensor,
        mask: Tensor | None,
        is_causal: bool,
        scale: float,
        out_shape: Shape,
    ) -> Node:
        tensors = [q, k, v] if mask is None else [q, k, v, mask]
        if not math.prod(out_shape):
            return self._empty(out_shape, q.dtype.name)
        if any(t.size == 0 for t in tensors):
            args = (q, k, v, mask, is_causal, scale, out_shape)
            return self._on_host("attention", args, out_shape, q.dtype.name)
        kind = "none" if mask is None else "bool" if mask.dtype.is_bool else "float"
        attrs = (kind, is_causal, float(scale).hex())
        return self._op(
            "attention", attrs, tuple(t._data for t in tensors), out_shape, q.dtype.name
        )

    # ------------------------------------------------------------------ captured functions

    def capture(
        self,
        fn: Callable[..., Sequence[Tensor]],
        inputs: Sequence[Tensor],
        *,
        threads: int | None = None,
    ) -> Captured | None:
        """``fn(*inputs)`` traced once and compiled as one graph with all of ``fn``'s results
        as outputs; None when the trace reads a per-call leaf that is not one of ``inputs``
        (it would be frozen into the graph) or ``fn`` returns something else than tensors of
        this backend. ``inputs`` are computed first if pending; ``fn`` sees them as fresh
        per-call leaves, so that each becomes a graph input even if it is a parameter.
        ``threads``: the graph's runs use at most that many threads (1: the replaying thread
        alone), for a caller that replays graphs side by side; it is cached apart from the
        same trace's graph for the default (MLGraphBuilder.build's ``threads``)."""
        placeholders: list[Node] = []
        arguments: list[Tensor] = []
        self._materialise_all(
            [t._data for t in inputs if isinstance(t, Tensor) and t._backend is self]
        )
        for index, tensor in enumerate(inputs):
            if not isinstance(tensor, Tensor) or tensor._backend is not self:
                raise InvalidArgumentError(
                    f"webnn capture: input {index} is not a webnn tensor ({tensor!r})"
                )
            value = self._materialise(tensor._data)
            node = Node(None, (), (), value.shape, tensor.dtype.name, value)
            placeholders.append(node)
            arguments.append(Tensor(node, tensor.shape, tensor.dtype, self))
        results = fn(*arguments)
        if not all(isinstance(r, Tensor) and r._backend is self for r in results):
            return None
        roots = [r._data for r in results]
        heads = {index: node for index, node in enumerate(roots) if self._shared_head(node)}
        found, positions = trace_roots(
            tuple(node.inputs[0] if index in heads else node for index, node in enumerate(roots))
        )
        computed = {id(node) for node in found.nodes}
        if any(id(node) in computed for node in heads.values()):
            # another result reads a head's product: the graph computes it anyway
            heads = {}
            found, positions = trace_roots(tuple(roots))
        argument_of = {id(node): index for index, node in enumerate(placeholders)}
        for node in found.nodes:
            if node.op is None and not node.param and id(node) not in argument_of:
                return None  # an undeclared per-call value: replaying would reuse it
        argument_at = {
            position: argument_of[id(node)]
            for position, node in enumerate(found.nodes)
            if id(node) in argument_of
        }
        copy = detached(found)
        key = CaptureKey(found.key if threads is None else (found.key, "threads", threads))
        with self._lock:
            compiled = self._compiled(key, copy, threads)
            shared = {index: self._head_graph(node) for index, node in heads.items()}
        return Captured(
            self, key, copy, compiled, positions, argument_at, placeholders, shared, threads
        )

    def _shared_head(self, node: Node, *, pending: bool = True) -> bool:
        """Whether ``node`` is a linear layer over at least ``shared_head_bytes`` of parameters
        (whose input is still to be computed, with ``pending``): a graph ending in it computes
        the input, and a head graph computes the layer (:meth:`_head_graph`)."""
        if node.op not in _HEAD_OPS or node.checks or (pending and node.inputs[0].op is None):
            return False
        size = 0
        for weight in node.inputs[1:]:
            if weight.op is not None or not weight.param or weight.value is None:
                return False
            size += weight.value.nbytes
        return size >= self.shared_head_bytes

    def _head_graph(self, node: Node) -> HeadGraph:
        """The head graph of the linear ``node``: the layer alone over a per-call input of
        :func:`head_rows` rows (hold the lock). Its key names only those rows, the width and
        the parameters, so every graph ending in the same layer shares it (and the prepacked
        weight in its session) for one row count of a few."""
        source = node.inputs[0]
        rows = math.prod(source.shape[:-1])
        bucket = head_rows(rows)
        placeholder = Node(None, (), (), (bucket, source.shape[-1]), source.dtype)
        shape = (bucket, node.shape[-1])
        head = Node(node.op, node.attrs, (placeholder, *node.inputs[1:]), shape, node.dtype)
        found, (position,) = trace_roots((head,))
        compiled = self._compiled(found.key, found)
        (name,) = (name for name, at in compiled.inputs.items() if at == 0)
        (output,) = (out.name for out in compiled.outputs if out.position == position)
        return HeadGraph(found.key, found, name, output, rows, node.shape)

    # ------------------------------------------------------------------ node plumbing

    def _op(
        self, op: str, attrs: tuple[Any, ...], inputs: tuple[Node, ...], shape: Shape, dtype: str
    ) -> Node:
        rank = len(shape)
        for source in inputs:
            rank = max(rank, len(source.shape))
        if rank > _MAX_RANK:
            raise UnsupportedOpError(
                f"webnn: {op} on a tensor of rank {rank} "
                f"(WebNN operands have at most {_MAX_RANK} dimensions)"
            )
        self.stats.traced_ops += 1
        return Node(op, attrs, inputs, shape, dtype)

    @staticmethod
    def _check(node: Node, attrs: tuple[Any, ...]) -> None:
        node.checks = (Node("check", attrs, (node,), (), "uint8"),)

    def _check_dtype(self, dtype: DType, op: str) -> str:
        if dtype.name not in _DTYPES:
            raise UnsupportedDtypeError(
                f"webnn: {op} to {dtype.name} is not supported: WebNN has no {dtype.name} "
                f"(supported: {', '.join(_DTYPES)})"
            )
        return dtype.name

    def _empty(self, shape: Shape, dtype: str) -> Node:
        self.stats.host_ops += 1
        return leaf(np.empty(shape, dtype=np.dtype(dtype)), dtype)

    def _on_host(self, method: str, args: tuple[Any, ...], shape: Shape, dtype: str) -> Node:
        """An op on empty tensors (WebNN operands have no empty dimensions): the CPU backend
        computes it from the inputs' (mostly empty) host values."""
        from ipfs_accelerate.hal import get_backend

        cpu = get_backend("cpu")

        def on_cpu(value: Any) -> Any:
            if isinstance(value, Tensor):
                return Tensor(self._materialise(value._data), value.shape, value.dtype, cpu)
            return value

        self.stats.host_ops += 1
        result = getattr(cpu, method)(*(on_cpu(a) for a in args))
        array = np.array(result, dtype=np.dtype(dtype), copy=True, order="C").reshape(shape)
        return leaf(array, dtype)

    # ------------------------------------------------------------------ materialisation

    def _materialise(self, node: Node) -> Array:
        """The value of ``node``, computing the pending DAG behind it as one graph."""
        if node.op is None:
            assert node.value is not None
            return node.value
        with self._lock:
            if node.op is None:  # another thread computed it meanwhile
                assert node.value is not None
                return node.value
            if node.op in ("full", "arange"):
                value = _generate(node)
                node.become_leaf(value, param=True)
                return value
            if self._shared_head(node, pending=False):
                # the layer's input first, then the layer in the head graph of its rows
                source = self._materialise(node.inputs[0])
                value = self._head_graph(node).run(self, source)
                node.become_leaf(value, param=bool(node.inputs[0].param))
                return value
            found = trace(node)
            compiled = self._cache.get(found.key)
            if compiled is None:
                compiled = self._compile(found)
                self._cache[found.key] = compiled
                self._evict()
            else:
                self.stats.cache_hits += 1
                self._cache.move_to_end(found.key)
            self._run(compiled, found)
            assert node.value is not None
            return node.value

    def _materialise_all(self, nodes: Sequence[Node]) -> None:
        """Compute every pending node of ``nodes`` in one graph (a captured function's inputs
        left pending by a cache's growth or rearrangement: one run, not one per tensor)."""
        with self._lock:
            pending = list({id(n): n for n in nodes if n.op is not None}.values())
            if len(pending) < 2:
                for node in pending:
                    self._materialise(node)
                return
            found, _ = trace_roots(tuple(pending))
            self._run(self._compiled(found.key, found), found)

    def _compile(self, found: Trace, threads: int | None = None) -> _Compiled:
        from ipfs_accelerate.webnn import MLGraphBuilder

        builder = MLGraphBuilder(self.context)
        emitter = TraceEmitter(builder)
        inputs, outputs = emitter.emit(found)
        graph = builder.build(
            {output.name: operand for output, operand in outputs}, threads=threads
        )
        self.stats.compilations += 1
        # inputs no output depends on (an op that ignores its operand's values) are not graph inputs
        used = graph.input_descriptors
        inputs = {name: position for name, position in inputs.items() if name in used}
        params = [node for node in found.nodes if node.op is None and node.param]
        packed = _packed(found)
        cost = sum(_nbytes(weight) for weight in packed) + _arena(found)
        return _Compiled(graph, inputs, [output for output, _ in outputs], params, cost, packed)

    def _run(self, compiled: _Compiled, found: Trace) -> None:
        feeds = {}
        for name, position in compiled.inputs.items():
            value = found.nodes[position].value
            assert value is not None
            feeds[name] = value.view(np.uint8) if value.dtype == np.bool_ else value
        results = self.context.compute(compiled.graph, feeds)
        self.stats.dispatches += 1
        checks: dict[int, list[Array]] = {}
        values: dict[int, Array] = {}
        for output in compiled.outputs:
            if output.check:
                checks.setdefault(output.position, []).append(results[output.name])
            else:
                values[output.position] = results[output.name]
        for position in found.checks:
            error = check_failure(found.nodes[position], checks[position])
            if error is not None:
                raise error
        for position, value in values.items():
            node = found.nodes[position]
            if node.dtype == "bool":
                value = value.view(np.bool_)
            node.become_leaf(value, param=not found.variable[position])


# A compiled graph's estimated bytes, as measured with ONNX Runtime's CPU provider, are a
# prepacked copy of its matrix-product weights (_packed) and an arena of about four times its
# largest intermediate (_arena). The parameters themselves are not counted: sessions use them
# in place (shared initializers), so every graph over them holds the one copy (a MiniLM graph
# adds about 45 MB of RSS, its prepacked matrices, over the 90 MB of weights all share).


def _packed(found: Trace) -> tuple[Node, ...]:
    """The parameter leaves that ``found`` multiplies by (its matrix products' weights)."""
    packed: dict[int, Node] = {}
    for node in found.nodes:
        if node.op in ("linear", "matmul", "conv", "quantized_linear") and node.inputs[1].param:
            packed[id(node.inputs[1])] = node.inputs[1]
    return tuple(packed.values())


def _nbytes(node: Node) -> int:
    assert node.value is not None
    return int(node.value.nbytes)


def _arena(found: Trace) -> int:
    largest = 0
    for node in found.nodes:
        if node.op is not None:
            largest = max(largest, math.prod(node.shape) * np.dtype(node.dtype).itemsize)
    return 4 * largest


def _generate(node: Node) -> Array:
    """The value of a generator node (``full``/``arange``), computed on the host."""
    from ipfs_accelerate.hal.webnn._emit import arange_values, token_value

    if node.op == "full":
        return np.full(node.shape, token_value(node.attrs[0]), dtype=np.dtype(node.dtype))
    start, step, size = token_value(node.attrs[0]), token_value(node.attrs[1]), node.attrs[2]
    return arange_values(start, step, size, node.dtype)


def _dtype_name(dtype: np.dtype[Any]) -> str:
    name = "bool" if dtype == np.bool_ else dtype.name
    if name not in _DTYPES:
        raise UnsupportedDtypeError(
            f"webnn: tensors of {name} are not supported: WebNN has no {name} "
            f"(supported: {', '.join(_DTYPES)}); convert with .astype() on 'cpu' first"
        )
    return name


def _immutable(array: Array) -> bool:
    """Whether nobody can ever write to ``array``'s memory: it and every array it views are
    read-only, and the memory belongs to a read-only buffer (a read-only memory map, bytes).
    An array that owns its memory is never immutable: its owner can make it writable again."""
    value: Any = array
    while isinstance(value, np.ndarray):
        if value.flags.writeable:
            return False
        value = value.base
    if value is None:
        return False
    try:
        return bool(memoryview(value).readonly)
    except TypeError:
        return False


def _value_changing(source: str, target: str) -> bool:
    """Whether a cast from ``source`` to ``target`` can change values (checked in the graph)."""
    if source in ("float16", "float32") and target in INTEGER:
        return True
    if source in INTEGER and target in INTEGER:
        return not fits(source, target)
    return source == "float32" and target == "float16"


__all__ = [
    "DEFAULT_CACHE_BYTES",
    "DEFAULT_CACHE_SIZE",
    "DEFAULT_SHARED_HEAD_BYTES",
    "Stats",
    "WebNNBackend",
]


def _scatters_into_zeros(node: Node, whole: Node, parts: list[tuple[Node, Node]]) -> bool:
    """Whether ``node`` is a sum of ``index_add``s along axis 0 into zero tables of
    ``whole``'s shape and dtype; their (indices, rows) are appended to ``parts``."""
    from ipfs_accelerate.hal.webnn._emit import token_value

    if node.shape != whole.shape or node.dtype != whole.dtype:
        return False
    if node.op == "index_add":
        table = node.inputs[0]
        if node.attrs[0] != 0 or table.op != "full" or token_value(table.attrs[0]) != 0:
            return False
        parts.append((node.inputs[1], node.inputs[2]))
        return True
    if node.op == "binary" and node.attrs[0] == "add" and len(node.inputs) == 2:
        return all(_scatters_into_zeros(term, whole, parts) for term in node.inputs)
    return False
