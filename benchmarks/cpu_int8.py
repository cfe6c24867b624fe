"""The cpu backend's int8 Linear layers beside its float32 ones, on MiniLM's shapes.

    python benchmarks/cpu_int8.py [--rows 270] [--rounds 7] [--json FILE]

Per layer shape (in_features x out_features of all-MiniLM-L6-v2's block Linears) on one
thread (as inside a sharded batch: 270 rows is a batch of 32 sentences in two row shards),
alternating rounds, best of each: ``ops.linear`` in float32 (MKL's sgemm where it is in use),
the int8 weight with float inputs (weight-only: tiles cast to float, then sgemm) and with
per-row uint8 inputs (``activations="int8_row"``: MKL's integer GEMM where it is in use, else
the rows rounded in float and the weight-only product), and the bare integer GEMM
(``cblas_gemm_s8u8s32``) beside the bare sgemm. Prints milliseconds and the ratios against
float32; nothing is asserted.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from _results import Results, add_json_option  # beside this script

from ipfs_accelerate import ops
from ipfs_accelerate.hal.cpu import _blas, _mkl
from ipfs_accelerate.hal.cpu import _quantized as cpu_quantized
from ipfs_accelerate.quantization import quantize
from ipfs_accelerate.tensor import from_numpy

#: (in_features, out_features) of MiniLM's attention projections, FFN input and FFN output
SHAPES = ((384, 384), (384, 1536), (1536, 384))


def _best(fns: dict[str, Callable[[], Any]], rounds: int) -> dict[str, float]:
    best = dict.fromkeys(fns, float("inf"))
    for _ in range(rounds):
        for name, fn in fns.items():  # alternating: every engine sees the same minutes
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return {name: seconds * 1e3 for name, seconds in best.items()}


def _engines(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> dict[str, Callable[[], Any]]:
    """The products of one layer shape, each a call without arguments."""
    rows, (outs, inner) = x.shape[0], w.shape
    q = quantize(w, bits=8, axis=0)
    xt, wt, bt = from_numpy(x), from_numpy(w), from_numpy(b)
    engines: dict[str, Callable[[], Any]] = {
        "float32": lambda: ops.linear(xt, wt, bt),
        "int8 weight-only": lambda: ops.linear(xt, q, bt),
        "int8 row inputs": lambda: ops.linear(xt, q, bt, activations="int8_row"),
    }
    if _mkl.int8_enabled():
        codes, _, _ = cpu_quantized.quantize_rows(x)
        ints, floats = np.empty((rows, outs), np.int32), np.empty((rows, outs), np.float32)
        data = q.data.reshape(outs, inner)
        engines["bare sgemm"] = lambda: _mkl.gemm(x, w.T, floats)
        engines["bare s8u8s32"] = lambda: _mkl.int8_gemm(codes, data.T, ints)
    return engines


def run(rows: int, rounds: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(0)
    results = []
    _blas.hold()  # one thread, as each shard of a batch runs
    try:
        for inner, outs in SHAPES:
            x = rng.standard_normal((rows, inner)).astype(np.float32)
            w = (rng.standard_normal((outs, inner)) * 0.05).astype(np.float32)
            engines = _engines(x, w, rng.standard_normal(outs).astype(np.float32))
            for engine in engines.values():
                engine()  # warm: weights prepared, buffers faulted in
            results.append({"rows": rows, "in": inner, "out": outs, "ms": _best(engines, rounds)})
    finally:
        _blas.release()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=270)
    parser.add_argument("--rounds", type=int, default=7)
    add_json_option(parser)
    args = parser.parse_args()
    print(f"MKL: {_mkl.version() or 'not used'}; integer GEMM: {_mkl.int8_enabled()}")
    results = Results("cpu_int8")
    for result in run(args.rows, args.rounds):
        ms = result["ms"]
        shape = f"{result['rows']} x {result['in']} -> {result['out']}"
        print(f"{shape} (best of {args.rounds}, ms):")
        for name, value in ms.items():
            peer_name = "bare sgemm" if name == "bare s8u8s32" else "float32"
            peer = ms[peer_name]
            print(f"  {name:<18} {value:7.3f}   {peer / value:5.2f}x float32")
            if name != peer_name:
                results.ratio(
                    f"{shape}: {name} speed vs {peer_name}",
                    peer / value,
                    ms=value,
                    peer_ms=peer,
                )
    results.write(args.json)


if __name__ == "__main__":
    main()
