"""Tensor ops on a backend beside numpy, in one run; prints ours/numpy time ratios.

    python benchmarks/tensor_ops.py [--device cpu] [--repeat 7]

Targets (issue 2, CPU backend): <= 1.2x numpy for tensors of >= 64k elements; < 10 us of
overhead per small op. numpy's side of softmax and layer_norm is the straightforward numpy
formulation of the same math.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import numpy as np
from _results import Results, add_json_option  # beside this script

import ipfs_accelerate as ia
from ipfs_accelerate import ops


def best_time(fn: Callable[[], object], repeat: int, inner: int) -> float:
    """Median over ``repeat`` runs of the mean time of ``inner`` calls, in seconds."""
    fn()  # warm up (allocations, lazy imports, pipeline compiles)
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        samples.append((time.perf_counter() - start) / inner)
    return statistics.median(samples)


def np_softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def np_layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray, eps: float = 1e-5) -> np.ndarray:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * w + b


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=7)
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("tensor_ops")
    device, repeat = args.device, args.repeat
    sync = (lambda t: t.numpy()) if device != "cpu" else (lambda t: t)

    rng = np.random.default_rng(0)
    rows: list[tuple[str, float, float]] = []

    def compare(
        name: str, ours: Callable[[], object], theirs: Callable[[], object], inner: int = 10
    ) -> None:
        rows.append((name, best_time(ours, repeat, inner), best_time(theirs, repeat, inner)))

    n = 1 << 20
    a_np = rng.standard_normal(n, dtype=np.float32)
    b_np = rng.standard_normal(n, dtype=np.float32)
    a, b = ia.tensor(a_np, device=device), ia.tensor(b_np, device=device)
    compare("add 1M", lambda: sync(a + b), lambda: a_np + b_np)
    compare("mul 1M", lambda: sync(a * b), lambda: a_np * b_np)
    compare("exp 1M", lambda: sync(ops.exp(a)), lambda: np.exp(a_np))
    compare("maximum 1M", lambda: sync(ops.maximum(a, b)), lambda: np.maximum(a_np, b_np))
    compare("sum 1M", lambda: sync(ops.sum(a)), lambda: a_np.sum())
    m64 = rng.standard_normal((256, 256), dtype=np.float32)
    t64 = ia.tensor(m64, device=device)
    compare("add 64k (256x256)", lambda: sync(t64 + t64), lambda: m64 + m64, inner=50)

    for size in (256, 512, 1024):
        x_np = rng.standard_normal((size, size), dtype=np.float32)
        y_np = rng.standard_normal((size, size), dtype=np.float32)
        x, y = ia.tensor(x_np, device=device), ia.tensor(y_np, device=device)
        compare(
            f"matmul {size}",
            lambda x=x, y=y: sync(x @ y),
            lambda x_np=x_np, y_np=y_np: x_np @ y_np,
            inner=3 if size > 512 else 10,
        )

    s_np = rng.standard_normal((256, 1024), dtype=np.float32) * 4
    s = ia.tensor(s_np, device=device)
    compare("softmax 256x1024", lambda: sync(ops.softmax(s, -1)), lambda: np_softmax(s_np))
    w_np, bias_np = (
        rng.standard_normal(1024, dtype=np.float32),
        rng.standard_normal(1024, dtype=np.float32),
    )
    w, bias = ia.tensor(w_np, device=device), ia.tensor(bias_np, device=device)
    compare(
        "layer_norm 256x1024",
        lambda: sync(ops.layer_norm(s, 1024, w, bias)),
        lambda: np_layer_norm(s_np, w_np, bias_np),
    )

    small_np = rng.standard_normal(8, dtype=np.float32)
    small = ia.tensor(small_np, device=device)
    inner = 2000
    ours_small = best_time(lambda: small + small, repeat, inner)
    numpy_small = best_time(lambda: small_np + small_np, repeat, inner)

    print(
        f"ipfs_accelerate {ia.__version__} on {device!r} vs numpy {np.__version__} (median of "
        f"{repeat} runs)"
    )
    print(f"{'case':24s} {'ours':>11s} {'numpy':>11s} {'ours/numpy':>11s}")
    for name, ours, theirs in rows:
        print(f"{name:24s} {ours * 1e3:9.3f}ms {theirs * 1e3:9.3f}ms {ours / theirs:10.2f}x")
        results.ratio(
            f"{name}: ours/numpy",
            ours / theirs,
            higher_is_better=False,
            ours_s=ours,
            numpy_s=theirs,
        )
    print(
        f"{'small op (8 elems)':24s} {ours_small * 1e6:9.2f}us {numpy_small * 1e6:9.2f}us "
        f"{ours_small / numpy_small:10.2f}x   overhead {(ours_small - numpy_small) * 1e6:.2f} us/op"
    )
    results.ratio(
        "small op (8 elems): ours/numpy",
        ours_small / numpy_small,
        higher_is_better=False,
        ours_s=ours_small,
        numpy_s=numpy_small,
    )
    results.write(args.json)


if __name__ == "__main__":
    main()
