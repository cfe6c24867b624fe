"""The "webnn" backend: tensor ops traced into WebNN graphs, compiled once per signature.

Tensor ops on a ``device="webnn"`` tensor run nothing: each returns a lazy node (op,
attributes, input nodes, shape, dtype). Reading a tensor (``numpy()``, ``item()``, printing,
``.to("cpu")``) materialises it:

1. **trace** the pending DAG behind it, in a canonical order, into a structural key: ops,
   attributes, shapes, dtypes and the role of each leaf;
2. **compile** on a cache miss: the whole DAG becomes one :class:`~ipfs_accelerate.webnn.MLGraphBuilder`
   graph, lowered to one ONNX model and one ONNX Runtime session (the context's execution
   provider). Compiled graphs live in a least-recently-used cache bounded by ``cache_size``
   entries and ``cache_bytes`` of estimated memory (a compiled model holds ONNX Runtime's
   prepacked copy of its matrix weights; the weights themselves are shared by every graph), so a forward pass compiles once per input signature (shapes
   and dtypes) and then only dispatches. Each new signature costs a compilation (for a MiniLM
   encoder about as much as a few forward passes): callers with many sequence lengths should
   pad to a few bucket lengths;
3. **dispatch** the graph on the current leaves' values and turn every computed node into a
   leaf in place: later computations read it instead of recomputing it.

Leaves and their roles
    A leaf is host data that never changes: ``from_numpy`` copies the caller's array unless
    nobody can write to it (see below), and this backend has no in-place ops (item assignment
    raises UnsupportedOpError, so the op layer says to move the tensor to "cpu"). A leaf is
    either a per-call **input** (a graph input, known to the cache only by dtype and shape) or a
    **parameter** (a graph constant, known by a serial number that is unique for the life of the
    process): ONNX Runtime prepacks constant matrix-multiplication weights and folds and fuses
    around constants, which is what makes a model's forward pass fast. Parameters are:

    * tensors marked with :func:`ipfs_accelerate.hal.mark_parameter` (the backend-neutral hint
      for long-lived weights; a pending tensor is computed first);
    * tensors made from a provably immutable host array: read-only, viewing only read-only
      arrays, over a read-only buffer (``numpy.memmap(mode="r")`` of a safetensors file,
      ``numpy.frombuffer(bytes)``); those are used without a copy;
    * results computed only from parameters (and constants): derived weights stay constant.

    Everything else is an input. Because leaf data never changes, a constant can never be
    stale; the price of a wrong guess is only speed (a parameter that changes every call
    compiles every call; an input weight is not prepacked).

Intermediates
    An op inside the traced DAG that something outside it still references (a live Tensor, or
    an op not yet computed; counted from reference counts) is computed as an extra output of
    the same graph, so reading it later costs nothing. Generators (``full``, ``arange``) are
    graph constants.

Checks
    Integer add/sub/mul/pow overflow, neg/abs of the minimum integer, integer division by zero,
    integer sums/products leaving int64, out-of-range gather indices (WebNN clamps them) and
    value-changing casts (fractions, NaN, infinities or out-of-range values into integers,
    non-0/1 values into bool, finite floats overflowing float16, out-of-range integer
    narrowing) are computed inside the graph as extra outputs and raise the CPU backend's
    typed errors at readback, before any result is stored.

Data types
    float16, float32, int32, int64, uint8 and bool (stored as uint8 0/1). WebNN has no float64:
    float64 tensors and casts raise UnsupportedDtypeError. float16 work that rounds more than
    once (transcendentals, reductions, matrix products, normalisations) runs in float32 and
    rounds once, like numpy's float16 loops.

Fused ops
    softmax, layer_norm (centred first: ONNX Runtime's kernel takes E[x^2] - E[x]^2), linear
    (one gemm with the weight transposed and the bias), attention (matmul, scale, mask,
    softmax, matmul as one subgraph) and clamp.

Limits
    Operands have at most 8 dimensions (WebNN's limit): an op on a larger tensor raises
    UnsupportedOpError, and the op layer runs it on the CPU backend with a
    BackendFallbackWarning. So does an integer matmul of more than 2**26 products (WebNN's
    matmul is float-only; integers multiply element-wise, then sum, exactly). Ops on empty tensors (WebNN has no empty dimensions) are computed on
    the host: there is nothing to run. Float ``floor_divide``/``remainder`` give numpy's
    results exactly while |a / b| < 2**24; beyond that the remainder is ``a - floor(a/b) * b``
    rounded in float32 (numpy's fmod-based remainder stays exact). A computation that is never
    read grows one graph: read (or ``mark_parameter``) long-lived results now and then.
    ``stats`` counts compilations, dispatches, cache hits and host ops.
"""

from __future__ import annotations

from ipfs_accelerate.hal.webnn._backend import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CACHE_SIZE,
    Stats,
    WebNNBackend,
)

__all__ = ["DEFAULT_CACHE_BYTES", "DEFAULT_CACHE_SIZE", "Stats", "WebNNBackend"]
