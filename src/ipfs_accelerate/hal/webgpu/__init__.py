"""The WebGPU backend: the op set as WGSL compute shaders through wgpu-py.

One portable backend for NVIDIA, AMD, Intel and Apple GPUs (Vulkan, Metal or D3D12), with no
CUDA toolkit; it needs the ``webgpu`` extra. Without a GPU, Mesa's lavapipe is a software
Vulkan adapter it runs on (slower than the ``cpu`` backend, so ``select_backend`` never picks
it on its own). Importing this package does not import wgpu; the backend loads it on start.

How work runs: each op records dispatches and returns at once; nothing runs until data leaves
the device (``numpy()``, ``item()``, printing) or a batch grows large. Then every recorded
dispatch goes into one command encoder and one submit, and only the requested tensor is
copied back, through a reused staging buffer. Pipelines are cached by WGSL source (kernels
are shape-generic: sizes travel in a uniform ring buffer), bind groups by buffers, and
buffers come from a pool by size class. The matmul kernel is chosen per adapter by
measurement and cached in ``~/.cache/ipfs_accelerate/webgpu_tuning.json``
(``$IPFS_ACCELERATE_CACHE_DIR``; ``$IPFS_ACCELERATE_WEBGPU_MATMUL`` forces one). A linear
layer's bias and a following activation run in the product's epilogue; attention runs its
scale, mask and softmax in one kernel. ``WebGPUBackend.stats()`` shows the counters
(submits, readbacks, dispatches, compiles, bind groups, buffers) and ``profile()`` the GPU
time per kernel (timestamp queries).

Errors: integer overflow, out-of-range gather indices and value-changing casts are detected
by the kernels and raised, with the CPU backend's error types, at the next readback; values
computed from a failed kernel's output raise too. float16, float64 and int64 need the
adapter's shader-f16, shader-f64 and shader-int64 features (else UnsupportedDtypeError
naming the adapter); tensors beyond max_storage_buffer_binding_size raise BackendLimitError;
a lost device raises DeviceLostError and the next tensor starts a fresh device.
"""

from __future__ import annotations

from ipfs_accelerate.hal.webgpu._backend import WebGPUBackend
from ipfs_accelerate.hal.webgpu._profiling import KernelTime, ProfileReport

__all__ = ["KernelTime", "ProfileReport", "WebGPUBackend"]
