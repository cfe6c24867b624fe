"""The WebGPU backend: WGSL compute kernels through wgpu-py (Vulkan, Metal, D3D12).

Importing this package does not import wgpu; the backend loads it when it starts.
"""

from __future__ import annotations

from ipfs_accelerate.hal.webgpu._backend import WebGPUBackend
from ipfs_accelerate.hal.webgpu._profiling import KernelTime, ProfileReport

__all__ = ["KernelTime", "ProfileReport", "WebGPUBackend"]
