"""The WebGPU backend beside numpy, in one run; prints webgpu/numpy ratios.

    python benchmarks/webgpu.py [--sizes 512 1024 2048] [--small-ops 2000] [--peak-gflops N]

* matmul GFLOP/s (float32, square) at each size; the webgpu time is the kernel's: the
  product runs after its inputs are on the device and the clock stops when the device has
  finished (no readback of the result);
* queued small-op overhead: a chain of element-wise ops on an 8-element tensor recorded
  back to back and read once at the end, in microseconds per op (numpy runs the same chain);
* a transformer encoder block forward (batch 8, seq 128, hidden 384, 6 heads, FFN 1536,
  GELU, post-layer-norm as BERT) through ``ipfs_accelerate.ops`` on webgpu, against the
  same block written directly in numpy; the webgpu time includes reading the output.

Targets on lavapipe (issue 3): >= 6 GFLOP/s at 1024, <= 50 us per queued op. On a hardware
GPU, give its fp32 peak with ``--peak-gflops`` to print the matmul as a percentage of it
(target >= 30%); a software adapter has no GPU peak, so the percentage is not reported.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops


def timed(fn: Callable[[], object], repeat: int) -> float:
    """Best seconds of ``repeat`` calls after one warm-up call (both sides get the same
    treatment; the best run is the least disturbed by other work on a shared machine)."""
    fn()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return min(samples)


# ----------------------------------------------------------------------------- transformer block


def make_block(hidden: int, ffn: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    def w(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.05).astype(np.float32)

    return {
        "q_w": w(hidden, hidden), "q_b": w(hidden), "k_w": w(hidden, hidden), "k_b": w(hidden),
        "v_w": w(hidden, hidden), "v_b": w(hidden), "o_w": w(hidden, hidden), "o_b": w(hidden),
        "ln1_w": 1 + w(hidden), "ln1_b": w(hidden), "f1_w": w(ffn, hidden), "f1_b": w(ffn),
        "f2_w": w(hidden, ffn), "f2_b": w(hidden), "ln2_w": 1 + w(hidden), "ln2_b": w(hidden),
    }  # fmt: skip


def block_ops(x: Any, p: dict[str, Any], heads: int, mask: Any) -> Any:
    """A BERT encoder layer through ipfs_accelerate.ops (runs on x's device)."""
    batch, seq, hidden = x.shape
    dim = hidden // heads

    def split(t: Any) -> Any:
        return ops.permute(ops.reshape(t, (batch, seq, heads, dim)), (0, 2, 1, 3))

    q = split(ops.linear(x, p["q_w"], p["q_b"]))
    k = split(ops.linear(x, p["k_w"], p["k_b"]))
    v = split(ops.linear(x, p["v_w"], p["v_b"]))
    context = ops.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    context = ops.reshape(ops.permute(context, (0, 2, 1, 3)), (batch, seq, hidden))
    h = ops.layer_norm(ops.add(x, ops.linear(context, p["o_w"], p["o_b"])), hidden, p["ln1_w"], p["ln1_b"], 1e-12)
    f = ops.linear(ops.gelu(ops.linear(h, p["f1_w"], p["f1_b"])), p["f2_w"], p["f2_b"])
    return ops.layer_norm(ops.add(h, f), hidden, p["ln2_w"], p["ln2_b"], 1e-12)


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz-Stegun 7.1.26 is too coarse for a fair comparison: use the rational fit the
    # CPU backend uses (vectorised numpy, float32)
    from ipfs_accelerate.hal.cpu._math import erf

    return erf(x)


def block_numpy(x: np.ndarray, p: dict[str, np.ndarray], heads: int, mask: np.ndarray) -> np.ndarray:
    """The same layer written directly in numpy (float32)."""
    batch, seq, hidden = x.shape
    dim = hidden // heads

    def linear(t: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        return (t.reshape(-1, t.shape[-1]) @ w.T + b).reshape(*t.shape[:-1], w.shape[0])

    def split(t: np.ndarray) -> np.ndarray:
        return t.reshape(batch, seq, heads, dim).transpose(0, 2, 1, 3)

    def layer_norm(t: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
        mean = t.mean(-1, keepdims=True)
        var = ((t - mean) ** 2).mean(-1, keepdims=True)
        return (t - mean) / np.sqrt(var + 1e-12) * w + b

    q, k, v = (split(linear(x, p[f"{n}_w"], p[f"{n}_b"])) for n in "qkv")
    scores = q @ k.transpose(0, 1, 3, 2) * np.float32(1 / math.sqrt(dim)) + mask
    scores = np.exp(scores - scores.max(-1, keepdims=True))
    context = (scores / scores.sum(-1, keepdims=True)) @ v
    context = context.transpose(0, 2, 1, 3).reshape(batch, seq, hidden)
    h = layer_norm(x + linear(context, p["o_w"], p["o_b"]), p["ln1_w"], p["ln1_b"])
    f1 = linear(h, p["f1_w"], p["f1_b"])
    f = linear(0.5 * f1 * (1 + _erf(f1 * np.float32(1 / math.sqrt(2)))), p["f2_w"], p["f2_b"])
    return layer_norm(h + f, p["ln2_w"], p["ln2_b"])


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--small-ops", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--peak-gflops", type=float, default=None, help="the GPU's fp32 peak, for the % column")
    args = parser.parse_args()

    backend: Any = hal.get_backend("webgpu", fallback=False)
    info = backend.info()
    print(f"webgpu adapter: {info.device_name} ({info.vendor}, {info.adapter_type}, {info.api}); numpy {np.__version__}")
    rng = np.random.default_rng(0)

    # --- matmul
    print(f"\n{'matmul f32':14s} {'webgpu GF/s':>12s} {'numpy GF/s':>11s} {'webgpu/numpy':>13s} {'% fp32 peak':>12s}")
    for n in args.sizes:
        a_np = rng.standard_normal((n, n), dtype=np.float32)
        b_np = rng.standard_normal((n, n), dtype=np.float32)
        a, b = ia.tensor(a_np, device="webgpu"), ia.tensor(b_np, device="webgpu")
        flops = 2.0 * n**3
        reps = 2 if n >= 2048 else args.repeat

        def product(a: Any = a, b: Any = b) -> None:
            c = a @ b
            backend.synchronize()
            del c

        ours = timed(product, reps)
        theirs = timed(lambda a_np=a_np, b_np=b_np: a_np @ b_np, args.repeat)
        check = np.abs((a @ b).numpy() - a_np @ b_np).max()
        assert check < 1e-2 * math.sqrt(n), f"matmul {n}: webgpu differs from numpy by {check}"
        ours_gf, theirs_gf = flops / ours / 1e9, flops / theirs / 1e9
        if args.peak_gflops and info.adapter_type in ("discrete", "integrated"):
            peak = f"{100 * ours_gf / args.peak_gflops:11.1f}%"
        else:
            peak = "n/a (software adapter)" if info.adapter_type == "cpu" else "n/a (no --peak-gflops)"
        print(f"{'  ' + str(n):14s} {ours_gf:12.2f} {theirs_gf:11.2f} {ours_gf / theirs_gf:12.3f}x {peak:>12s}")
    print(f"  kernel: {backend.info().details.get('matmul_kernel')}")

    # --- queued small ops
    count = args.small_ops
    x_np = rng.standard_normal(8, dtype=np.float32)
    x = ia.tensor(x_np, device="webgpu")

    def chain_ours() -> None:
        y = x
        for i in range(count):
            y = y * 1.0001 if i % 2 else y + 0.5
        y.numpy()

    def chain_numpy() -> None:
        y = x_np
        for i in range(count):
            y = y * np.float32(1.0001) if i % 2 else y + np.float32(0.5)

    ours = timed(chain_ours, args.repeat) / count
    theirs = timed(chain_numpy, args.repeat) / count
    print(f"\nqueued small ops ({count} element-wise ops on 8 elements, one readback)")
    print(f"  webgpu {ours * 1e6:8.2f} us/op   numpy {theirs * 1e6:6.2f} us/op   webgpu/numpy {ours / theirs:7.1f}x")

    # --- transformer block
    batch, seq, hidden, heads, ffn = 8, 128, 384, 6, 1536
    params_np = make_block(hidden, ffn, rng)
    params = {k: ia.tensor(v, device="webgpu") for k, v in params_np.items()}
    hidden_np = rng.standard_normal((batch, seq, hidden), dtype=np.float32)
    mask_np = np.zeros((batch, 1, 1, seq), dtype=np.float32)
    mask_np[:, :, :, seq - 16 :] = -1e4  # padded tail, as a BERT attention mask
    hidden_t = ia.tensor(hidden_np, device="webgpu")
    mask_t = ia.tensor(mask_np, device="webgpu")
    expected = block_numpy(hidden_np, params_np, heads, mask_np)
    got = block_ops(hidden_t, params, heads, mask_t).numpy()
    error = float(np.abs(got - expected).max())
    assert error < 1e-3, f"transformer block: webgpu differs from numpy by {error}"
    before = backend.stats()
    ours = timed(lambda: block_ops(hidden_t, params, heads, mask_t).numpy(), args.repeat)
    after = backend.stats()
    theirs = timed(lambda: block_numpy(hidden_np, params_np, heads, mask_np), args.repeat)
    runs = args.repeat + 1  # timed() warms up once
    print(f"\ntransformer block forward (batch {batch}, seq {seq}, hidden {hidden}, {heads} heads, ffn {ffn})")
    print(f"  webgpu {ours * 1e3:9.1f} ms   numpy {theirs * 1e3:8.1f} ms   webgpu/numpy {ours / theirs:6.2f}x   max |diff| {error:.1e}")
    print(
        f"  per forward: {(after['submits'] - before['submits']) / runs:.0f} submit, "
        f"{(after['readbacks'] - before['readbacks']) / runs:.0f} readback, "
        f"{(after['dispatches'] - before['dispatches']) / runs:.0f} dispatches, "
        f"{(after['pipeline_compiles'] - before['pipeline_compiles'])} new pipelines"
    )


if __name__ == "__main__":
    main()
