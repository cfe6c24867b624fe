"""What the op families of the WebGPU backend share; ``WebGPUBackend`` composes them."""

from __future__ import annotations

import weakref
from typing import Any

from ipfs_accelerate.hal._backend import Backend
from ipfs_accelerate.hal.webgpu._dispatcher import Dispatcher
from ipfs_accelerate.hal.webgpu._memory import GPUArray
from ipfs_accelerate.tensor._tensor import Tensor


class WebGPUOps(Backend):
    """The state every op family reads: the dispatcher, and the product whose epilogue may
    still take an activation (set by the matmul family, read by ``unary``)."""

    _dispatch: Dispatcher
    #: the output of the last product recorded, whose epilogue may still absorb an activation
    _fusable: weakref.ref[GPUArray] | None
    _fusable_info: tuple[Any, ...] | None

    def _fuse_activation(self, op: str, x: Tensor) -> GPUArray | None:
        """Fold ``op`` into the product that made ``x`` (the matmul family overrides this)."""
        return None


__all__ = ["WebGPUOps"]
