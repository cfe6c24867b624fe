"""WebNN API on ONNX Runtime, side by side with calling onnxruntime directly on the same model.

One transformer encoder block (pre-norm: layer_normalization, multi-head self-attention with
softmax, residual, layer_normalization, gelu MLP, residual), built with MLGraphBuilder:

* build + compile: MLGraphBuilder calls + build() (lowering to ONNX and session creation),
  beside creating an InferenceSession from the exported model bytes;
* dispatch: ``context.compute`` (numpy in, numpy out) beside ``session.run``, and
  write_tensor + dispatch + read_tensor beside ``session.run`` with the same arrays, and
  dispatch on resident tensors beside ``run_with_iobinding`` with bound OrtValues.

Ratios are ours / direct (lower is better; the target is <= 1.1x for dispatch).

    PYTHONPATH=src python benchmarks/webnn.py [--batch 8 --seq 128 --hidden 384 --heads 12]
"""

from __future__ import annotations

import argparse
import math
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ipfs_accelerate import webnn


def make_weights(hidden: int, seed: int = 0) -> list[np.ndarray[Any, Any]]:
    """The block's parameters in the order transformer_block uses them (read-only arrays,
    which builder.constant() shares with ONNX Runtime instead of copying)."""
    rng = np.random.default_rng(seed)
    shapes = [
        (hidden,), (hidden,),  # layer norm 1
        (hidden, hidden), (hidden,), (hidden, hidden), (hidden,), (hidden, hidden), (hidden,),  # q k v
        (hidden, hidden), (hidden,),  # attention output
        (hidden,), (hidden,),  # layer norm 2
        (hidden, 4 * hidden), (4 * hidden,), (4 * hidden, hidden), (hidden,),  # MLP
    ]  # fmt: skip
    weights = []
    for shape in shapes:
        array = (rng.standard_normal(shape) * 0.05).astype(np.float32)
        array.flags.writeable = False
        weights.append(array)
    return weights


def transformer_block(
    context: webnn.MLContext,
    weights: list[np.ndarray[Any, Any]],
    batch: int,
    seq: int,
    hidden: int,
    heads: int,
) -> webnn.MLGraph:
    builder = webnn.MLGraphBuilder(context)
    head = hidden // heads
    params = iter(weights)

    def weight() -> webnn.MLOperand:
        array = next(params)
        return builder.constant({"dataType": "float32", "shape": list(array.shape)}, array)

    def dense(x: webnn.MLOperand) -> webnn.MLOperand:
        return builder.add(builder.matmul(x, weight()), weight())

    def norm(x: webnn.MLOperand) -> webnn.MLOperand:
        return builder.layer_normalization(x, axes=[2], scale=weight(), bias=weight(), epsilon=1e-5)

    def split_heads(t: webnn.MLOperand, perm: list[int]) -> webnn.MLOperand:
        return builder.transpose(builder.reshape(t, [batch, seq, heads, head]), permutation=perm)

    x = builder.input("x", {"dataType": "float32", "shape": [batch, seq, hidden]})
    h = norm(x)
    q = split_heads(dense(h), [0, 2, 1, 3])
    k = split_heads(dense(h), [0, 2, 3, 1])
    v = split_heads(dense(h), [0, 2, 1, 3])
    scale = builder.constant("float32", 1.0 / math.sqrt(head))
    probs = builder.softmax(builder.mul(builder.matmul(q, k), scale), 3)
    attended = builder.transpose(builder.matmul(probs, v), permutation=[0, 2, 1, 3])
    x1 = builder.add(x, dense(builder.reshape(attended, [batch, seq, hidden])))
    mlp = dense(builder.gelu(dense(norm(x1))))
    return builder.build({"y": builder.add(x1, mlp)})


def timed(fn: Callable[[], Any], repeat: int) -> list[float]:
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - start)
    return samples


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, block: int = 5, warmup: int = 3
) -> dict[str, tuple[float, float]]:
    """(median, minimum) seconds per call. The contenders alternate in blocks of ``block``
    calls, so that load from other processes hits them alike while one session's idle
    thread pool (its workers spin after each run) does not slow the next contender's call."""
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(warmup):
                fn()
            samples[name].extend(timed(fn, block))
    return {name: (statistics.median(v), min(v)) for name, v in samples.items()}


def report(
    label: str,
    mine: tuple[float, float],
    peer_label: str,
    peer: tuple[float, float],
    unit: float,
    suffix: str,
) -> None:
    print(
        f"  {label:<28} {mine[0] * unit:8.2f} {suffix} (min {mine[1] * unit:8.2f})   "
        f"{peer_label:<22} {peer[0] * unit:8.2f} {suffix} (min {peer[1] * unit:8.2f})   "
        f"ratio {mine[0] / peer[0]:5.3f}x (min {mine[1] / peer[1]:5.3f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--builds", type=int, default=5)
    args = parser.parse_args()

    import onnxruntime as ort

    context = webnn.create_context(power_preference="high-performance")
    print(
        f"onnxruntime {ort.__version__} on {platform.machine()} ({', '.join(context.execution_providers)}); "
        f"block: batch {args.batch}, seq {args.seq}, hidden {args.hidden}, heads {args.heads}"
    )

    # ---------------------------------------------------------------- build + compile
    weights = make_weights(args.hidden)
    shape = (args.batch, args.seq, args.hidden, args.heads)
    transformer_block(context, weights, *shape)  # warm the imports
    build_times = timed(lambda: transformer_block(context, weights, *shape), args.builds)
    graph = transformer_block(context, weights, *shape)
    model = graph.export_onnx()
    providers = context.execution_providers
    session_times = timed(lambda: ort.InferenceSession(model, providers=providers), args.builds)
    build = statistics.median(build_times)
    direct_session = statistics.median(session_times)
    print(f"\nbuild + compile (median of {args.builds})")
    print(f"  MLGraphBuilder + build()          {build * 1e3:9.2f} ms")
    print(f"  InferenceSession(model bytes)     {direct_session * 1e3:9.2f} ms")
    print(f"  ratio                             {build / direct_session:9.2f}x")

    # ---------------------------------------------------------------- dispatch
    session = ort.InferenceSession(model, providers=providers)
    x = (
        np.random.default_rng(1)
        .standard_normal((args.batch, args.seq, args.hidden))
        .astype(np.float32)
    )
    ours = context.compute(graph, {"x": x})["y"]
    theirs = session.run(["y"], {"x": x})[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-5)

    tx = context.create_tensor({"dataType": "float32", "shape": list(x.shape)}, writable=True)
    ty = context.create_tensor({"dataType": "float32", "shape": list(x.shape)}, readable=True)

    def webnn_tensors() -> None:
        context.write_tensor(tx, x)
        context.dispatch(graph, {"x": tx}, {"y": ty})
        context.read_tensor(ty)

    context.write_tensor(tx, x)
    bx = ort.OrtValue.ortvalue_from_numpy(x.copy())
    by = ort.OrtValue.ortvalue_from_numpy(np.empty_like(x))
    binding = session.io_binding()
    binding.bind_ortvalue_input("x", bx)
    binding.bind_ortvalue_output("y", by)

    medians = interleaved(
        {
            "compute": lambda: context.compute(graph, {"x": x}),
            "run": lambda: session.run(["y"], {"x": x}),
            "tensors": webnn_tensors,
            "dispatch": lambda: context.dispatch(graph, {"x": tx}, {"y": ty}),
            "iobinding": lambda: session.run_with_iobinding(binding),
        },
        args.rounds,
    )
    print(f"\ndispatch (median and min of {args.rounds} x 5 calls, alternating in blocks)")
    rows = [
        ("context.compute(graph, {x})", "compute", "session.run(['y'], {x})", "run"),
        ("write + dispatch + read", "tensors", "session.run(['y'], {x})", "run"),
        ("dispatch (resident tensors)", "dispatch", "run_with_iobinding", "iobinding"),
    ]
    for label, mine, peer_label, peer in rows:
        report(label, medians[mine], peer_label, medians[peer], 1e3, "ms")

    # ---------------------------------------------------------------- small graphs
    small_builds = timed(lambda: _small_graph(context), 50)
    print("\nsmall graph (3 element-wise ops on [4, 4]): per-call overhead, median of 2000 calls")
    print(f"  MLGraphBuilder + build()          {statistics.median(small_builds) * 1e6:9.1f} us")
    small = _small_graph(context)
    small_session = ort.InferenceSession(small.export_onnx(), providers=providers)
    sx = np.ones((4, 4), np.float32)
    stx = context.create_tensor({"dataType": "float32", "shape": [4, 4]}, writable=True)
    sty = context.create_tensor({"dataType": "float32", "shape": [4, 4]}, readable=True)
    small_binding = small_session.io_binding()
    small_binding.bind_ortvalue_input("x", ort.OrtValue.ortvalue_from_numpy(sx))
    small_binding.bind_ortvalue_output("y", ort.OrtValue.ortvalue_from_numpy(np.empty_like(sx)))
    tiny = interleaved(
        {
            "compute": lambda: context.compute(small, {"x": sx}),
            "run": lambda: small_session.run(["y"], {"x": sx}),
            "dispatch": lambda: context.dispatch(small, {"x": stx}, {"y": sty}),
            "iobinding": lambda: small_session.run_with_iobinding(small_binding),
        },
        200,
        block=10,
    )
    for label, mine, peer_label, peer in (
        ("context.compute", "compute", "session.run", "run"),
        ("context.dispatch", "dispatch", "run_with_iobinding", "iobinding"),
    ):
        report(label, tiny[mine], peer_label, tiny[peer], 1e6, "us")


def _small_graph(context: webnn.MLContext) -> webnn.MLGraph:
    builder = webnn.MLGraphBuilder(context)
    x = builder.input("x", {"dataType": "float32", "shape": [4, 4]})
    return builder.build({"y": builder.relu(builder.add(builder.mul(x, x), x))})


if __name__ == "__main__":
    main()
