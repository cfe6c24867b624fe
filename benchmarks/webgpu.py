"""The WebGPU backend beside numpy, in one run; prints webgpu/numpy ratios.

    python benchmarks/webgpu.py [--sizes 512 1024 2048] [--small-ops 2000] [--peak-gflops N]
                                [--peak-gflops-f16 N] [--skip-block]

* matmul GFLOP/s (float32, square) at each size; the webgpu time is the kernel's: the
  product runs after its inputs are on the device and the clock stops when the device has
  finished (no readback of the result);
* linear layers by weight dtype, same shapes ((n, n) input times an (n, n) weight): float32,
  float16 (where the adapter has shader-f16: f16 products), int8 (per output channel) and
  int4 (blocks of 32) weights unpacked in the shader, GFLOP/s side by side; with
  ``--peak-gflops`` (and ``--peak-gflops-f16``) also as a percentage of the GPU's peak;
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
from ipfs_accelerate import hal


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


def _percent(gflops: float, peak: float | None, info: Any) -> str:
    if info.adapter_type == "cpu":
        return "n/a"
    return f"{100 * gflops / peak:.1f}%" if peak else "-"


def linear_by_dtype(backend: Any, info: Any, args: Any, results: Any, rng: Any) -> None:
    """GFLOP/s of ``x @ W.T`` with float32, float16, int8 and int4 weights, same shapes."""
    from ipfs_accelerate import ops
    from ipfs_accelerate.quantization import quantize

    half = "float16" in info.dtypes
    kinds = ["fp32", *(["fp16"] if half else []), "int8", "int4"]
    print(f"\n{'linear n x n':14s}" + "".join(f"{k + ' GF/s':>12s}" for k in kinds), end="")
    print("".join(f"{k + ' %peak':>12s}" for k in kinds))
    for n in args.sizes:
        x_np = rng.standard_normal((n, n), dtype=np.float32)
        w_np = rng.standard_normal((n, n), dtype=np.float32)
        weights: dict[str, tuple[Any, Any, np.ndarray[Any, Any]]] = {
            "fp32": (ia.tensor(x_np, device="webgpu"), ia.tensor(w_np, device="webgpu"), w_np),
        }
        if half:
            x16, w16 = x_np.astype(np.float16), w_np.astype(np.float16)
            weights["fp16"] = (
                ia.tensor(x16, device="webgpu"),
                ia.tensor(w16, device="webgpu"),
                w16.astype(np.float32),
            )
        for kind, q in (
            ("int8", quantize(w_np, bits=8, axis=0)),
            ("int4", quantize(w_np, bits=4, axis=1, block_size=32)),
        ):
            q = q.to("webgpu")
            weights[kind] = (weights["fp32"][0], q, q.dequantize_numpy())
        rates, peaks = [], []
        reps = 2 if n >= 2048 else args.repeat
        for kind in kinds:
            x, w, dense = weights[kind]

            def product(x: Any = x, w: Any = w) -> None:
                y = ops.linear(x, w)
                backend.synchronize()
                del y

            seconds = timed(product, reps)
            got = ops.linear(x, w).numpy().astype(np.float32)
            expected = x.numpy().astype(np.float32) @ dense.T
            tolerance = (3e-2 if kind == "fp16" else 1e-3) * math.sqrt(n) * 4
            check = float(np.abs(got - expected).max())
            assert check < tolerance, f"linear {kind} {n}: differs from numpy by {check}"
            gflops = 2.0 * n**3 / seconds / 1e9
            rates.append(gflops)
            peak = args.peak_gflops_f16 if kind == "fp16" else args.peak_gflops
            peaks.append(_percent(gflops, peak, info))
            results.ratio(f"linear {n}: {kind}/fp32 GF/s", gflops / rates[0], seconds=seconds)
        print(f"{'  ' + str(n):14s}" + "".join(f"{r:12.2f}" for r in rates), end="")
        print("".join(f"{p:>12s}" for p in peaks))


# ----------------------------------------------------------------------------- main


def main() -> None:
    from _encoder import encoder_numpy, encoder_ops, encoder_weights  # beside this script
    from _results import Results, add_json_option

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 1024, 2048])
    parser.add_argument("--small-ops", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument(
        "--peak-gflops", type=float, default=None, help="the GPU's fp32 peak, for the % column"
    )
    parser.add_argument(
        "--peak-gflops-f16", type=float, default=None, help="the GPU's fp16 peak (non-tensor)"
    )
    parser.add_argument("--skip-block", action="store_true", help="leave out the transformer block")
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("webgpu")

    backend: Any = hal.get_backend("webgpu", fallback=False)
    info = backend.info()
    print(
        f"webgpu adapter: {info.device_name} ({info.vendor}, {info.adapter_type}, {info.api}); "
        f"numpy {np.__version__}"
    )
    rng = np.random.default_rng(0)

    # --- matmul
    print(
        f"\n{'matmul f32':14s} {'webgpu GF/s':>12s} {'numpy GF/s':>11s} {'webgpu/numpy':>13s} "
        f"{'% fp32 peak':>12s}"
    )
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
            peak = (
                "n/a (software adapter)" if info.adapter_type == "cpu" else "n/a (no --peak-gflops)"
            )
        print(
            f"{'  ' + str(n):14s} {ours_gf:12.2f} {theirs_gf:11.2f} {ours_gf / theirs_gf:12.3f}x "
            f"{peak:>12s}"
        )
        results.ratio(
            f"matmul {n}: webgpu/numpy GF/s", ours_gf / theirs_gf, webgpu_s=ours, numpy_s=theirs
        )
    print(f"  kernel: {backend.info().details.get('matmul_kernel')}")

    linear_by_dtype(backend, info, args, results, rng)

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
    print(
        f"  webgpu {ours * 1e6:8.2f} us/op   numpy {theirs * 1e6:6.2f} us/op   webgpu/numpy "
        f"{ours / theirs:7.1f}x"
    )
    results.ratio(
        f"queued small ops ({count}): webgpu/numpy",
        ours / theirs,
        higher_is_better=False,
        webgpu_s=ours,
        numpy_s=theirs,
    )

    if args.skip_block:
        results.write(args.json)
        return

    # --- transformer block
    batch, seq, hidden, heads, ffn = 8, 128, 384, 6, 1536
    layers_np = encoder_weights(hidden, ffn, 1)
    layers = [{k: ia.tensor(v, device="webgpu") for k, v in p.items()} for p in layers_np]
    hidden_np = rng.standard_normal((batch, seq, hidden), dtype=np.float32)
    mask_np = np.zeros((batch, 1, 1, seq), dtype=np.float32)
    mask_np[:, :, :, seq - 16 :] = -1e4  # padded tail, as a BERT attention mask
    hidden_t = ia.tensor(hidden_np, device="webgpu")
    mask_t = ia.tensor(mask_np, device="webgpu")
    expected = encoder_numpy(hidden_np, mask_np, layers_np, heads)
    got = encoder_ops(hidden_t, mask_t, layers, heads).numpy()
    error = float(np.abs(got - expected).max())
    assert error < 1e-3, f"transformer block: webgpu differs from numpy by {error}"
    before = backend.stats()
    ours = timed(lambda: encoder_ops(hidden_t, mask_t, layers, heads).numpy(), args.repeat)
    after = backend.stats()
    theirs = timed(lambda: encoder_numpy(hidden_np, mask_np, layers_np, heads), args.repeat)
    runs = args.repeat + 1  # timed() warms up once
    print(
        f"\ntransformer block forward (batch {batch}, seq {seq}, hidden {hidden}, {heads} heads, "
        f"ffn {ffn})"
    )
    print(
        f"  webgpu {ours * 1e3:9.1f} ms   numpy {theirs * 1e3:8.1f} ms   webgpu/numpy "
        f"{ours / theirs:6.2f}x   max |diff| {error:.1e}"
    )
    print(
        f"  per forward: {(after['submits'] - before['submits']) / runs:.0f} submit, "
        f"{(after['readbacks'] - before['readbacks']) / runs:.0f} readback, "
        f"{(after['dispatches'] - before['dispatches']) / runs:.0f} dispatches, "
        f"{(after['pipeline_compiles'] - before['pipeline_compiles'])} new pipelines"
    )
    results.ratio(
        "transformer block: webgpu/numpy",
        ours / theirs,
        higher_is_better=False,
        webgpu_s=ours,
        numpy_s=theirs,
    )
    results.write(args.json)


if __name__ == "__main__":
    main()
