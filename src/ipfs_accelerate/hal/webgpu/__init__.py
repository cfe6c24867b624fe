"""The WebGPU backend: the op set as WGSL compute shaders through wgpu-py.

One portable backend for NVIDIA, AMD, Intel and Apple GPUs (Vulkan, Metal or D3D12), with no
CUDA toolkit; it needs the ``webgpu`` extra, and runs on Mesa's lavapipe without a GPU.
Importing this package does not import wgpu; the backend loads it on start.

Ops record dispatches and return at once; the batch is submitted when data leaves the device.
``WebGPUBackend.stats()`` shows the counters and ``profile()`` the GPU time per kernel.
docs/webgpu.md describes the batching, caches, fusion, tuning, errors and limits, and how the
modules divide the work (device, dispatcher, op families, kernels).
"""

from __future__ import annotations

from ipfs_accelerate.hal.webgpu._backend import WebGPUBackend
from ipfs_accelerate.hal.webgpu._profiling import KernelTime, ProfileReport

__all__ = ["KernelTime", "ProfileReport", "WebGPUBackend"]
