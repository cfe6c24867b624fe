"""The "webnn" backend: tensor ops traced into WebNN graphs, compiled once per signature.

Ops on a ``device="webnn"`` tensor build lazy nodes; reading a tensor traces the pending
computation, compiles it on a cache miss (one MLGraphBuilder graph, one ONNX Runtime session)
and dispatches it. Long-lived weights become graph constants (``hal.mark_parameter``, or a
read-only host array); everything else is a per-call input. How tracing, parameters, checks,
data types and limits work: docs/webnn.md.
"""

from __future__ import annotations

from ipfs_accelerate.hal.webnn._backend import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CACHE_SIZE,
    Stats,
    WebNNBackend,
)

__all__ = ["DEFAULT_CACHE_BYTES", "DEFAULT_CACHE_SIZE", "Stats", "WebNNBackend"]
