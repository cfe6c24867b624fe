"""Hardware abstraction layer: the Backend contract, the registry, discovery and selection.

Backends register by name; each is started on first use. ``available_backends()`` lists what
really works on this machine, ``select_backend()`` chooses one and says why, and a backend
that cannot start falls back (with a warning) to its registered fallback, normally "cpu".
Adding a backend is one package under ``hal/`` and one ``register_backend`` line below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipfs_accelerate.hal._backend import (
    ARG_REDUCE_OPS,
    BINARY_OPS,
    COMPARISON_OPS,
    FUSABLE_OPS,
    REDUCE_OPS,
    UNARY_OPS,
    Backend,
    BackendInfo,
)
from ipfs_accelerate.hal._limits import max_tensor_bytes, set_max_tensor_bytes
from ipfs_accelerate.hal._registry import (
    BackendSelection,
    available_backends,
    default_device,
    get_backend,
    register_backend,
    registered_backends,
    reset_backend,
    select_backend,
    set_default_device,
    unregister_backend,
)

__all__ = [
    "ARG_REDUCE_OPS",
    "BINARY_OPS",
    "COMPARISON_OPS",
    "FUSABLE_OPS",
    "REDUCE_OPS",
    "UNARY_OPS",
    "Backend",
    "BackendInfo",
    "BackendSelection",
    "available_backends",
    "default_device",
    "get_backend",
    "mark_parameter",
    "max_tensor_bytes",
    "register_backend",
    "registered_backends",
    "reset_backend",
    "select_backend",
    "set_default_device",
    "set_max_tensor_bytes",
    "unregister_backend",
]

if TYPE_CHECKING:
    from ipfs_accelerate.tensor._tensor import Tensor


def mark_parameter(*tensors: Tensor) -> None:
    """Mark tensors as model parameters: long-lived values that many computations read and
    nothing changes again (weights loaded from a checkpoint). Backend-neutral: a graph-compiling
    backend (webnn) embeds parameters in its compiled graphs as constants, so the runtime can
    prepack and fuse around them; eager backends (cpu) ignore the hint. Results never depend
    on it, only speed: marking a tensor that then changes every call costs a compilation per
    call on a graph backend."""
    for tensor in tensors:
        tensor._backend.mark_parameter(tensor)


register_backend("cpu", "ipfs_accelerate.hal.cpu:CPUBackend", fallback=None)
register_backend("webgpu", "ipfs_accelerate.hal.webgpu:WebGPUBackend", fallback="cpu")
register_backend("webnn", "ipfs_accelerate.hal.webnn:WebNNBackend", fallback="cpu")
