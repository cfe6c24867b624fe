"""WebNN API on ONNX Runtime, side by side with calling onnxruntime directly on the same model.

One transformer encoder block (pre-norm: layer_normalization, multi-head self-attention with
softmax, residual, layer_normalization, gelu MLP, residual), built with MLGraphBuilder:

* build + compile: MLGraphBuilder calls + build() (lowering to ONNX and session creation),
  beside creating an InferenceSession from the exported model bytes;
* dispatch: ``context.compute`` (numpy in, numpy out) beside ``session.run``, and
  write_tensor + dispatch + read_tensor beside ``session.run`` with the same arrays, and
  dispatch on resident tensors beside ``run_with_iobinding`` with bound OrtValues.

Ratios are ours / direct (lower is better; the target is <= 1.1x for dispatch).

Then the HAL backend: a BERT encoder (post-norm layers as in MiniLM: q/k/v linear, scaled
dot-product attention with a padding mask, output linear, residual, layer norm, gelu MLP,
residual, layer norm) written once with ``ipfs_accelerate.ops`` and run on device "webnn"
(traced, compiled once, dispatched; weights marked with ``hal.mark_parameter``) beside the
same code on the "cpu" backend and the same math in PyTorch (``torch.nn.functional``), with
the same weights and inputs; ratios are peer / webnn (higher is better for webnn). The first
webnn call (trace + compile + first run) is reported separately. ``--layers 6 --batch 32``
is MiniLM-L6's encoder at issue 5's target batch.

    PYTHONPATH=src python benchmarks/webnn.py [--batch 8 --seq 128 --hidden 384 --heads 12]
    PYTHONPATH=src python benchmarks/webnn.py --only tensor-api --layers 6 --batch 32
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
from _results import Results, add_json_option  # beside this script

from ipfs_accelerate import webnn

#: what this run measured, written by --json
RESULTS = Results("webnn")


def make_weights(hidden: int, seed: int = 0) -> list[np.ndarray[Any, Any]]:
    """The block's parameters in the order transformer_block uses them (read-only arrays,
    which builder.constant() shares with ONNX Runtime instead of copying)."""
    rng = np.random.default_rng(seed)
    shapes = [
        (hidden,), (hidden,),  # layer norm 1
        # q k v
        (hidden, hidden), (hidden,), (hidden, hidden), (hidden,), (hidden, hidden), (hidden,),
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
    section: str,
) -> None:
    print(
        f"  {label:<28} {mine[0] * unit:8.2f} {suffix} (min {mine[1] * unit:8.2f})   "
        f"{peer_label:<22} {peer[0] * unit:8.2f} {suffix} (min {peer[1] * unit:8.2f})   "
        f"ratio {mine[0] / peer[0]:5.3f}x (min {mine[1] / peer[1]:5.3f}x)"
    )
    for which, index in (("median", 0), ("min", 1)):
        RESULTS.ratio(
            f"{section}: {label} / {peer_label} ({which})",
            mine[index] / peer[index],
            higher_is_better=False,
            ours_s=mine[index],
            peer_s=peer[index],
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--builds", type=int, default=5)
    parser.add_argument(
        "--layers", type=int, default=1, help="encoder layers of the Tensor API section"
    )
    parser.add_argument("--only", choices=("webnn-api", "tensor-api"), default=None)
    add_json_option(parser)
    args = parser.parse_args()
    if args.only != "tensor-api":
        webnn_api(args)
    if args.only != "webnn-api":
        tensor_api(args)
    RESULTS.write(args.json)


def webnn_api(args: argparse.Namespace) -> None:
    import onnxruntime as ort

    context = webnn.create_context(power_preference="high-performance")
    print(
        f"onnxruntime {ort.__version__} on {platform.machine()} "
        f"({', '.join(context.execution_providers)}); "
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
    RESULTS.ratio(
        "build + compile / InferenceSession",
        build / direct_session,
        higher_is_better=False,
        ours_s=build,
        peer_s=direct_session,
    )

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
        report(label, medians[mine], peer_label, medians[peer], 1e3, "ms", "dispatch")

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
        report(label, tiny[mine], peer_label, tiny[peer], 1e6, "us", "small graph")


# ---------------------------------------------------------------------------- the HAL backend


def tensor_api(args: argparse.Namespace) -> None:
    from _encoder import encoder_ops, encoder_torch, encoder_weights  # beside this script

    import ipfs_accelerate as ia
    from ipfs_accelerate import hal

    batch, seq, hidden, heads, count = args.batch, args.seq, args.hidden, args.heads, args.layers
    weights = encoder_weights(hidden, 4 * hidden, count)
    rng = np.random.default_rng(2)
    x_host = rng.standard_normal((batch, seq, hidden)).astype(np.float32)
    mask_host = np.ones((batch, 1, 1, seq), dtype=bool)
    mask_host[batch // 2 :, ..., seq * 3 // 4 :] = False  # half the batch padded

    def on(device: str) -> list[dict[str, Any]]:
        layers = []
        for p in weights:
            tensors = {name: ia.tensor(array, device=device) for name, array in p.items()}
            hal.mark_parameter(*tensors.values())
            layers.append(tensors)
        return layers

    webnn_layers, cpu_layers = on("webnn"), on("cpu")
    backend = hal.get_backend("webnn")
    x_webnn, mask_webnn = ia.tensor(x_host, device="webnn"), ia.tensor(mask_host, device="webnn")
    x_cpu, mask_cpu = ia.tensor(x_host), ia.tensor(mask_host)

    def run_webnn() -> np.ndarray[Any, Any]:
        return encoder_ops(x_webnn, mask_webnn, webnn_layers, heads).numpy()

    def run_cpu() -> np.ndarray[Any, Any]:
        return encoder_ops(x_cpu, mask_cpu, cpu_layers, heads).numpy()

    before = dict(vars(backend.stats))
    start = time.perf_counter()
    first = run_webnn()
    first_call = time.perf_counter() - start
    compiled = backend.stats.compilations - before["compilations"]
    start = time.perf_counter()
    for _ in range(20):
        encoder_ops(x_webnn, mask_webnn, webnn_layers, heads)
    tracing = (time.perf_counter() - start) / 20

    contenders: dict[str, Callable[[], Any]] = {"webnn": run_webnn, "cpu": run_cpu}
    reference = run_cpu()
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a test dependency
        torch = None
    if torch is not None:
        torch_layers = [
            {name: torch.from_numpy(array) for name, array in p.items()} for p in weights
        ]
        x_torch, mask_torch = torch.from_numpy(x_host), torch.from_numpy(mask_host)

        def run_torch() -> Any:
            with torch.inference_mode():
                return encoder_torch(x_torch, mask_torch, torch_layers, heads).numpy()

        contenders["torch"] = run_torch
        reference = run_torch()
    error = float(np.max(np.abs(first - reference)))
    rounds = max(2, args.rounds // 2)
    timings = interleaved(contenders, rounds, block=2, warmup=1)
    print(
        f"\nTensor API on the HAL: {count}-layer BERT encoder, batch {batch}, seq {seq}, "
        f"hidden {hidden}, "
        f"heads {heads} ({backend.context.execution_providers[0]}, torch threads "
        f"{torch.get_num_threads() if torch is not None else '-'})"
    )
    print(
        f"  first webnn call (trace + compile + run)  {first_call * 1e3:9.1f} ms, "
        f"{compiled} graph compiled"
    )
    print(f"  tracing one forward pass (Python)         {tracing * 1e3:9.2f} ms")
    print(
        f"  max |webnn - {'torch' if torch is not None else 'cpu'}|                   {error:9.2e}"
    )
    dispatches = backend.stats.dispatches - before["dispatches"]
    compilations = backend.stats.compilations - before["compilations"]
    print(
        f"  graphs compiled in the whole run          {compilations:9d} (dispatches {dispatches})"
    )
    print(f"  per forward pass (median and min of {rounds} x 2 calls, alternating in blocks)")
    webnn_time = timings["webnn"]
    for name in contenders:
        median, least = timings[name]
        line = f"    {name:<6} {median * 1e3:10.1f} ms (min {least * 1e3:10.1f})"
        if name != "webnn":
            line += (
                f"   {name}/webnn {median / webnn_time[0]:5.2f}x "
                f"(min {least / webnn_time[1]:5.2f}x)"
            )
            for which, theirs, ours in (
                ("median", median, webnn_time[0]),
                ("min", least, webnn_time[1]),
            ):
                RESULTS.ratio(
                    f"encoder {name}/webnn ({which})", theirs / ours, webnn_s=ours, peer_s=theirs
                )
        print(line)


def _small_graph(context: webnn.MLContext) -> webnn.MLGraph:
    builder = webnn.MLGraphBuilder(context)
    x = builder.input("x", {"dataType": "float32", "shape": [4, 4]})
    return builder.build({"y": builder.relu(builder.add(builder.mul(x, x), x))})


if __name__ == "__main__":
    main()
