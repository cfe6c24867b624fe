"""The main job run by ``make demo``: a hardware report and a small computation on every backend.

Run with ``python -m ipfs_accelerate.demo``.
"""

from __future__ import annotations

import time
import warnings

import numpy as np

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops
from ipfs_accelerate.errors import BackendFallbackWarning


def _report() -> None:
    print("Hardware backends")
    for info in hal.available_backends(include_unavailable=True):
        if info.available:
            print(f"  {info.name:7s} {info.device_name} [{info.adapter_type}, {info.api}] dtypes: {', '.join(info.dtypes)}")
        else:
            print(f"  {info.name:7s} unavailable: {info.reason}")
    print(f"select_backend(): {hal.select_backend()}")
    print(f"select_backend('bert'): {hal.select_backend('bert')}")


def _attention_block(device: str) -> np.ndarray:
    """One self-attention + MLP block (batch 2, seq 16, hidden 64) on ``device``."""
    x = ia.randn(2, 16, 64, seed=0, device=device)
    wq, wk, wv, wo = (ia.randn(64, 64, seed=s, device=device) * 0.1 for s in (1, 2, 3, 4))
    w1, w2 = ia.randn(256, 64, seed=5, device=device) * 0.1, ia.randn(64, 256, seed=6, device=device) * 0.1

    def heads(t: ia.Tensor) -> ia.Tensor:
        return t.reshape(2, 16, 4, 16).permute(0, 2, 1, 3)

    q, k, v = heads(ops.linear(x, wq)), heads(ops.linear(x, wk)), heads(ops.linear(x, wv))
    attended = ops.scaled_dot_product_attention(q, k, v).permute(0, 2, 1, 3).reshape(2, 16, 64)
    h = ops.layer_norm(x + ops.linear(attended, wo), 64)
    out = ops.layer_norm(h + ops.linear(ops.gelu(ops.linear(h, w1)), w2), 64)
    return out.numpy()


def main() -> None:
    _report()
    print("\nA transformer block on every available backend")
    reference = None
    for info in hal.available_backends():
        with warnings.catch_warnings():
            warnings.simplefilter("always", BackendFallbackWarning)
            start = time.perf_counter()
            result = _attention_block(info.name)
            elapsed = time.perf_counter() - start
        if reference is None:
            reference = result
        diff = float(np.max(np.abs(result - reference)))
        print(f"  {info.name:7s} {elapsed * 1e3:8.1f} ms   max |diff| vs first backend: {diff:.2e}")


if __name__ == "__main__":
    main()
