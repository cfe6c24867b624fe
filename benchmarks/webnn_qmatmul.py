"""Quantized Linear layers on the webnn backend against fp32 and ONNX Runtime's own dynamic
int8 (``quantize_dynamic(per_channel=True)`` on a one-MatMul model), at MiniLM's shapes.
"int8 dynamic" quantizes the activations with one scale per tensor (DynamicQuantizeMatMul),
"int8 per-row" with one per row (``activations="int8_row"``: QuantizeLinear +
MatMulIntegerToFloat + the row-scale Mul, docs/webnn.md).

Each variant's compiled graph (or session) runs the same input; rounds interleave the
variants and the median round is reported, so a busy machine slows them alike. Prints
milliseconds per call and the ratios against webnn fp32 and ORT dynamic int8.

    PYTHONPATH=src python benchmarks/webnn_qmatmul.py [--rows 512] [--rounds 7] [--json FILE]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _results import Results, add_json_option  # beside this script

SHAPES = ((384, 384), (384, 1536), (1536, 384))


def _graph_runner(x: np.ndarray, weight: Any, bias: np.ndarray, **kwargs: Any) -> Callable[[], Any]:
    """The compiled webnn graph of ``linear(x, weight, bias)``, run on ``x`` directly."""
    import ipfs_accelerate as ia
    from ipfs_accelerate import ops
    from ipfs_accelerate.hal import get_backend, mark_parameter

    backend: Any = get_backend("webnn")
    xt = ia.tensor(x, device="webnn")
    bias_tensor = ia.tensor(bias, device="webnn")
    mark_parameter(bias_tensor)  # a model's bias is a weight: a graph constant
    ops.linear(xt, weight, bias_tensor, **kwargs).numpy()
    compiled = next(reversed(backend._cache.values()))
    (name,) = compiled.inputs
    graph, context = compiled.graph, backend.context
    return lambda: context.compute(graph, {name: x})


def _ort_runner(
    x: np.ndarray, w: np.ndarray, bias: np.ndarray, quantized: bool
) -> Callable[[], Any]:
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from ipfs_accelerate.webnn._runtime import create_session

    rows, k = x.shape
    n = w.shape[0]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["p"]), helper.make_node("Add", ["p", "b"], ["y"])],
        "linear",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [rows, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [rows, n])],
        initializer=[
            numpy_helper.from_array(np.ascontiguousarray(w.T), "w"),
            numpy_helper.from_array(bias, "b"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    if quantized:
        with tempfile.TemporaryDirectory() as folder:
            source, target = Path(folder, "fp32.onnx"), Path(folder, "int8.onnx")
            onnx.save(model, source)
            quantize_dynamic(source, target, per_channel=True, weight_type=QuantType.QInt8)
            model = onnx.load(target)
    # the webnn backend's session options (threads, no spinning, ORT_ENABLE_ALL)
    session, _ = create_session(
        model.SerializeToString(), {}, ["CPUExecutionProvider"], "bench", 1 << 30
    )
    return lambda: session.run(None, {"x": x})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.3, help="per variant per round")
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("webnn_qmatmul")

    import ipfs_accelerate as ia
    from ipfs_accelerate.hal import mark_parameter
    from ipfs_accelerate.quantization import quantize

    rng = np.random.default_rng(0)
    for k, n in SHAPES:
        x = rng.standard_normal((args.rows, k)).astype(np.float32)
        w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(np.float32)
        bias = rng.standard_normal(n).astype(np.float32)
        dense = ia.tensor(w, device="webnn")
        mark_parameter(dense)
        q8 = quantize(w, bits=8, axis=0).to("webnn")
        q4 = quantize(w, bits=4, axis=1, block_size=32).to("webnn")
        variants = {
            "webnn fp32": _graph_runner(x, dense, bias),
            "webnn int8 dynamic": _graph_runner(x, q8, bias, activations="int8"),
            "webnn int8 per-row": _graph_runner(x, q8, bias, activations="int8_row"),
            "webnn int8 weight-only": _graph_runner(x, q8, bias),
            "webnn int4 weight-only": _graph_runner(x, q4, bias),
            "ort fp32": _ort_runner(x, w, bias, quantized=False),
            "ort quantize_dynamic": _ort_runner(x, w, bias, quantized=True),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, run in variants.items():
                run()
                count, start = 0, time.perf_counter()
                while time.perf_counter() - start < args.seconds:
                    run()
                    count += 1
                times[name].append((time.perf_counter() - start) / count * 1e3)
        fp32 = statistics.median(times["webnn fp32"])
        ort_int8 = statistics.median(times["ort quantize_dynamic"])
        print(f"x ({args.rows}, {k}) @ ({k}, {n}):")
        for name, values in times.items():
            ms = statistics.median(values)
            print(
                f"  {name:24s} {ms:7.3f} ms  {fp32 / ms:5.2f}x webnn fp32  "
                f"{ort_int8 / ms:5.2f}x ort int8"
            )
            shape = f"({args.rows}, {k}) @ ({k}, {n})"
            if name != "webnn fp32":
                results.ratio(f"{shape}: {name} vs webnn fp32", fp32 / ms, ms=ms, peer_ms=fp32)
            if name != "ort quantize_dynamic":
                results.ratio(
                    f"{shape}: {name} vs ort int8", ort_int8 / ms, ms=ms, peer_ms=ort_int8
                )
    results.write(args.json)


if __name__ == "__main__":
    main()
