"""Contexts, execution providers, tensors, dispatch, compute, export and error wrapping."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

import onnxruntime as ort

from ipfs_accelerate import webnn
from ipfs_accelerate.errors import (
    BackendUnavailableError,
    WebNNError,
    WebNNInvalidStateError,
    WebNNOperationError,
    WebNNValidationError,
)
from ipfs_accelerate.webnn import _runtime

pytestmark = pytest.mark.webnn


@pytest.fixture(scope="module")
def ctx() -> webnn.MLContext:
    return webnn.create_context(accelerated=False)


def affine_graph(ctx: webnn.MLContext) -> webnn.MLGraph:
    """y = x @ w + 1 (w a 2 KiB constant, shared with ONNX Runtime), z = sum(y) over axis 1."""
    b = webnn.MLGraphBuilder(ctx)
    x = b.input("x", {"dataType": "float32", "shape": [2, 16]})
    w = b.constant(
        {"dataType": "float32", "shape": [16, 32]},
        np.arange(512, dtype=np.float32).reshape(16, 32) / 512,
    )
    y = b.add(b.matmul(x, w), b.constant("float32", 1.0))
    return b.build({"y": y, "z": b.reduce_sum(y, axes=[1])})


def expected_affine(x: np.ndarray[Any, Any]) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    w = np.arange(512, dtype=np.float32).reshape(16, 32) / 512
    y = x.astype(np.float64) @ w + 1
    return y, y.sum(axis=1)


# ============================================================================ imports, providers


def test_importing_does_not_load_onnx() -> None:
    code = (
        "import sys, ipfs_accelerate, ipfs_accelerate.webnn as w; "
        "w.MLGraphBuilder; w.op_support_limits(); "
        "loaded = [m for m in sys.modules if m.split('.')[0] in ('onnx', 'onnxruntime')]; "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_provider_choice(monkeypatch: pytest.MonkeyPatch) -> None:
    class FakeOrt:
        @staticmethod
        def get_available_providers() -> list[str]:
            return [
                "TensorrtExecutionProvider",
                "CUDAExecutionProvider",
                "QNNExecutionProvider",
                "CPUExecutionProvider",
            ]

    monkeypatch.setattr(_runtime, "ort", lambda: FakeOrt)
    assert _runtime.choose_providers("high-performance", True) == [
        "CUDAExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert _runtime.choose_providers("low-power", True) == [
        "QNNExecutionProvider",
        "CPUExecutionProvider",
    ]
    assert _runtime.choose_providers("default", False) == ["CPUExecutionProvider"]
    assert _runtime.choose_providers("default", True, ["QNNExecutionProvider"]) == [
        "QNNExecutionProvider",
        "CPUExecutionProvider",
    ]
    with pytest.raises(BackendUnavailableError, match=r"DmlExecutionProvider.*available: Tensorrt"):
        _runtime.choose_providers("default", True, ["DmlExecutionProvider"])


def test_contexts_here() -> None:
    for preference in ("default", "high-performance", "low-power"):
        context = webnn.create_context(power_preference=preference)
        assert context.execution_providers[-1] == "CPUExecutionProvider"
        assert context.accelerated == (context.execution_providers[0] != "CPUExecutionProvider")
    with pytest.raises(WebNNValidationError, match="power_preference"):
        webnn.create_context(power_preference="fast")
    with pytest.raises(WebNNValidationError, match="accelerated"):
        webnn.create_context(accelerated="yes")  # type: ignore[arg-type]
    assert webnn.create_context(accelerated=False).device == "cpu"


# ============================================================================ compute and dispatch


def test_compute_and_dispatch_agree(ctx: webnn.MLContext) -> None:
    graph = affine_graph(ctx)
    assert set(graph.input_descriptors) == {"x"}
    assert graph.output_descriptors["z"].shape == (2,)
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
    want_y, want_z = expected_affine(x)
    out = ctx.compute(graph, {"x": x})
    np.testing.assert_allclose(out["y"], want_y, rtol=1e-6)
    np.testing.assert_allclose(out["z"], want_z, rtol=1e-6)
    tx = ctx.create_tensor({"dataType": "float32", "shape": [2, 16], "writable": True})
    ty = ctx.create_tensor({"dataType": "float32", "shape": [2, 32]}, readable=True)
    tz = ctx.create_tensor({"dataType": "float32", "shape": [2]}, readable=True)
    for scale in (1.0, -2.0, 0.5):  # repeated dispatches reuse one IO binding
        ctx.write_tensor(tx, x * scale)
        ctx.dispatch(graph, {"x": tx}, {"y": ty, "z": tz})
        y, z = expected_affine(x * scale)
        np.testing.assert_allclose(ctx.read_tensor(ty), y, rtol=1e-6)
        np.testing.assert_allclose(ctx.read_tensor(tz), z, rtol=1e-5)
    assert len(graph._bindings) == 1
    out_buffer = np.empty(2, np.float32)
    assert ctx.read_tensor(tz, out=out_buffer) is out_buffer
    np.testing.assert_allclose(out_buffer, expected_affine(x * 0.5)[1], rtol=1e-5)


def test_outputs_feed_later_dispatches(ctx: webnn.MLContext) -> None:
    b = webnn.MLGraphBuilder(ctx)
    x = b.input("x", {"dataType": "int32", "shape": [3]})
    graph = b.build({"y": b.add(x, b.constant("int32", 1))})
    ta = ctx.create_tensor({"dataType": "int32", "shape": [3]}, writable=True, readable=True)
    tb = ctx.create_tensor({"dataType": "int32", "shape": [3]}, readable=True)
    ctx.write_tensor(ta, [1, 2, 3])
    for _ in range(3):  # ping-pong: results stay in runtime memory between dispatches
        ctx.dispatch(graph, {"x": ta}, {"y": tb})
        ctx.dispatch(graph, {"x": tb}, {"y": ta})
    np.testing.assert_array_equal(ctx.read_tensor(ta), [7, 8, 9])


def test_dispatch_errors_name_the_operand(ctx: webnn.MLContext) -> None:
    graph = affine_graph(ctx)
    good_x = ctx.create_tensor({"dataType": "float32", "shape": [2, 16]}, writable=True)
    ty = ctx.create_tensor({"dataType": "float32", "shape": [2, 32]})
    tz = ctx.create_tensor({"dataType": "float32", "shape": [2]})
    with pytest.raises(
        WebNNValidationError, match=r"graph input 'x' \(float32 \[2, 16\]\) is missing"
    ):
        ctx.dispatch(graph, {}, {"y": ty, "z": tz})
    with pytest.raises(WebNNValidationError, match="'w' is not a graph input"):
        ctx.dispatch(graph, {"x": good_x, "w": good_x}, {"y": ty, "z": tz})
    wrong_shape = ctx.create_tensor({"dataType": "float32", "shape": [16, 2]})
    with pytest.raises(
        WebNNValidationError,
        match=r"input 'x' is float32 \[16, 2\], the graph expects float32 \[2, 16\]",
    ):
        ctx.dispatch(graph, {"x": wrong_shape}, {"y": ty, "z": tz})
    wrong_type = ctx.create_tensor({"dataType": "float16", "shape": [2, 16]})
    with pytest.raises(WebNNValidationError, match="input 'x' is float16"):
        ctx.dispatch(graph, {"x": wrong_type}, {"y": ty, "z": tz})
    b = webnn.MLGraphBuilder(ctx)
    v = b.input("v", {"dataType": "float32", "shape": [2]})
    pair = b.build({"p": b.neg(v), "q": b.abs(v)})
    tv = ctx.create_tensor({"dataType": "float32", "shape": [2]})
    tp = ctx.create_tensor({"dataType": "float32", "shape": [2]})
    with pytest.raises(WebNNValidationError, match="output 'q' reuses a tensor"):
        ctx.dispatch(pair, {"v": tv}, {"p": tp, "q": tp})
    with pytest.raises(WebNNValidationError, match="input 'v' is also an output tensor"):
        ctx.dispatch(pair, {"v": tv}, {"p": tp, "q": tv})
    other = webnn.create_context(accelerated=False)
    foreign = other.create_tensor({"dataType": "float32", "shape": [2, 16]})
    with pytest.raises(WebNNValidationError, match="input 'x' belongs to another MLContext"):
        ctx.dispatch(graph, {"x": foreign}, {"y": ty, "z": tz})
    with pytest.raises(WebNNValidationError, match="built for another MLContext"):
        other.dispatch(graph, {"x": foreign}, {"y": ty, "z": tz})
    constant = ctx.create_constant_tensor(
        {"dataType": "float32", "shape": [2, 16]}, np.zeros((2, 16), np.float32)
    )
    with pytest.raises(WebNNValidationError, match="input 'x' is a constant tensor"):
        ctx.dispatch(graph, {"x": constant}, {"y": ty, "z": tz})
    with pytest.raises(WebNNValidationError, match="input 'x' must be an MLTensor"):
        ctx.dispatch(graph, {"x": np.zeros((2, 16), np.float32)}, {"y": ty, "z": tz})  # type: ignore[dict-item]


def test_compute_errors_name_the_input(ctx: webnn.MLContext) -> None:
    graph = affine_graph(ctx)
    with pytest.raises(
        WebNNValidationError, match=r"input 'x'.*float64 does not match the data type float32"
    ):
        ctx.compute(graph, {"x": np.zeros((2, 16))})
    with pytest.raises(
        WebNNValidationError, match=r"input 'x'.*\(30 elements\) does not fit shape \[2, 16\]"
    ):
        ctx.compute(graph, {"x": np.zeros((2, 15), np.float32)})
    with pytest.raises(WebNNValidationError, match=r"graph input 'x'.*is missing"):
        ctx.compute(graph, {"y": np.zeros((2, 16), np.float32)})


def test_tensor_flags_and_lifetimes(ctx: webnn.MLContext) -> None:
    tensor = ctx.create_tensor({"dataType": "uint8", "shape": [4]})
    assert not tensor.readable and not tensor.writable and not tensor.constant
    with pytest.raises(WebNNValidationError, match=r"write_tensor.*writable=True"):
        ctx.write_tensor(tensor, np.zeros(4, np.uint8))
    with pytest.raises(WebNNValidationError, match=r"read_tensor.*readable=True"):
        ctx.read_tensor(tensor)
    rw = ctx.create_tensor({"dataType": "int64", "shape": [2, 2]}, readable=True, writable=True)
    np.testing.assert_array_equal(ctx.read_tensor(rw), np.zeros((2, 2)))  # zero-initialized
    with pytest.raises(WebNNValidationError, match="do not fit int64"):
        ctx.write_tensor(rw, [[2**63, 0], [0, 0]])
    ctx.write_tensor(rw, (np.arange(4) - 2).astype(np.int64).tobytes())
    np.testing.assert_array_equal(ctx.read_tensor(rw), [[-2, -1], [0, 1]])
    rw.destroy()
    with pytest.raises(WebNNInvalidStateError, match="read_tensor: the MLTensor was destroyed"):
        ctx.read_tensor(rw)


def test_destroyed_graph_and_context() -> None:
    context = webnn.create_context(accelerated=False)
    graph = affine_graph(context)
    graph.destroy()
    with pytest.raises(WebNNInvalidStateError, match="compute: the MLGraph was destroyed"):
        context.compute(graph, {"x": np.zeros((2, 16), np.float32)})
    graph2 = affine_graph(context)
    tensor = context.create_tensor({"dataType": "float32", "shape": [2, 16]})
    context.destroy()
    with pytest.raises(WebNNInvalidStateError, match="MLContext was destroyed"):
        context.compute(graph2, {"x": np.zeros((2, 16), np.float32)})
    with pytest.raises(WebNNInvalidStateError):
        webnn.MLGraphBuilder(context)
    assert tensor._destroyed


def test_runtime_failures_are_wrapped(
    ctx: webnn.MLContext, monkeypatch: pytest.MonkeyPatch
) -> None:
    graph = affine_graph(ctx)

    def exploding(*args: Any) -> Any:
        raise ort.capi.onnxruntime_pybind11_state.Fail("[ONNXRuntimeError] : 1 : FAIL : boom")

    monkeypatch.setattr(graph, "_run", exploding)
    with pytest.raises(
        WebNNOperationError, match=r"onnxruntime failed running the graph \(inputs \['x'\].*boom"
    ) as info:
        ctx.compute(graph, {"x": np.zeros((2, 16), np.float32)})
    assert isinstance(info.value, WebNNError) and info.value.__cause__ is not None


def test_session_creation_failures_are_wrapped(ctx: webnn.MLContext) -> None:
    with pytest.raises(
        WebNNOperationError,
        match="build: onnxruntime could not compile the graph with CPUExecutionProvider",
    ):
        _runtime.create_session(b"not a model", {}, ["CPUExecutionProvider"], "build")


# ============================================================================ graphs


def test_graph_keeps_only_what_outputs_need(ctx: webnn.MLContext) -> None:
    b = webnn.MLGraphBuilder(ctx)
    x = b.input("x", {"dataType": "float32", "shape": [2]})
    unused = b.input("unused", {"dataType": "float32", "shape": [2]})
    b.exp(unused)
    graph = b.build({"y": b.neg(x)})
    assert list(graph.input_descriptors) == ["x"]
    np.testing.assert_array_equal(
        ctx.compute(graph, {"x": np.array([1, -2], np.float32)})["y"], [-1, 2]
    )


def test_output_names_may_repeat_operands_and_shadow_inputs(ctx: webnn.MLContext) -> None:
    b = webnn.MLGraphBuilder(ctx)
    x = b.input("x", {"dataType": "float32", "shape": [2]})
    y = b.mul(x, x)
    graph = b.build({"x": y, "copy": y, "x/odd name:1": b.abs(x)})
    out = ctx.compute(graph, {"x": np.array([3, -1], np.float32)})
    np.testing.assert_array_equal(out["x"], [9, 1])
    np.testing.assert_array_equal(out["copy"], [9, 1])
    np.testing.assert_array_equal(out["x/odd name:1"], [3, 1])


def test_export_runs_with_onnxruntime_directly(ctx: webnn.MLContext) -> None:
    graph = affine_graph(ctx)
    session = ort.InferenceSession(graph.export_onnx(), providers=["CPUExecutionProvider"])
    x = np.linspace(-1, 1, 32, dtype=np.float32).reshape(2, 16)
    y, _ = session.run(["y", "z"], {"x": x})
    np.testing.assert_allclose(y, expected_affine(x)[0], rtol=1e-6)
    assert (
        len(graph._lowered.external) == 1
    )  # the 2 KiB weight was shared, not copied into the model


def test_constants_snapshot_writable_arrays_and_share_read_only_ones(ctx: webnn.MLContext) -> None:
    weights = np.ones((32, 32), np.float32)
    frozen = np.full((32, 32), 2.0, np.float32)
    frozen.flags.writeable = False
    b = webnn.MLGraphBuilder(ctx)
    x = b.input("x", {"dataType": "float32", "shape": [1, 32]})
    w = b.constant({"dataType": "float32", "shape": [32, 32]}, weights)
    f = b.constant({"dataType": "float32", "shape": [32, 32]}, frozen)
    assert not np.shares_memory(w._value, weights)
    assert np.shares_memory(f._value, frozen)
    weights[:] = 100.0  # after constant(): must not change the graph
    graph = b.build({"y": b.matmul(b.matmul(x, w), f)})
    out = ctx.compute(graph, {"x": np.ones((1, 32), np.float32)})["y"]
    np.testing.assert_array_equal(out, np.full((1, 32), 32 * 32 * 2, np.float32))


@pytest.mark.skipif(
    not Path("/proc/self/statm").exists(), reason="reads resident memory from /proc"
)
def test_graphs_over_one_read_only_constant_share_it_in_memory(ctx: webnn.MLContext) -> None:
    """Each graph's session uses a large read-only constant in place: four graphs gathering
    from one 64 MiB table add far less than a copy of it (onnxruntime copies external
    initializers into every session unless they are also shared: 4 x 64 MiB here)."""

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    table = np.random.default_rng(0).standard_normal((16384, 1024)).astype(np.float32)
    table.flags.writeable = False
    graphs = []
    before = resident()
    for rows in (1, 2, 3, 4):
        b = webnn.MLGraphBuilder(ctx)
        ids = b.input("ids", {"dataType": "int32", "shape": [rows]})
        constant = b.constant({"dataType": "float32", "shape": [16384, 1024]}, table)
        graphs.append(b.build({"y": b.gather(constant, ids)}))
        picked = ctx.compute(graphs[-1], {"ids": np.arange(rows, dtype=np.int32) * 5000})["y"]
        np.testing.assert_array_equal(picked, table[np.arange(rows) * 5000])
    grown = resident() - before
    assert grown < table.nbytes, (
        f"four graphs over a {table.nbytes >> 20} MiB constant added {grown >> 20} MiB"
    )


def test_constant_tensors(ctx: webnn.MLContext) -> None:
    tensor = ctx.create_constant_tensor({"dataType": "int32", "shape": [3]}, [1, 2, 3])
    b = webnn.MLGraphBuilder(ctx)
    x = b.input("x", {"dataType": "int32", "shape": [3]})
    graph = b.build({"y": b.mul(x, b.constant(tensor))})
    np.testing.assert_array_equal(
        ctx.compute(graph, {"x": np.array([2, 2, 2], np.int32)})["y"], [2, 4, 6]
    )
    plain = ctx.create_tensor({"dataType": "int32", "shape": [3]})
    with pytest.raises(WebNNValidationError, match="create_constant_tensor"):
        webnn.MLGraphBuilder(ctx).constant(plain)


# ============================================================================ honest limits

_RUNNERS: dict[str, Any] = {
    "cast": lambda b, x: b.cast(x, "float32"),
    "softmax": lambda b, x: b.softmax(x, 1),
    "arg_min": lambda b, x: b.arg_min(x, 0),
    "arg_max": lambda b, x: b.arg_max(x, 0),
    "cumulative_sum": lambda b, x: b.cumulative_sum(x, 1),
    "expand": lambda b, x: b.expand(x, [3, 2, 4]),
    "pad": lambda b, x: b.pad(x, [1, 0], [0, 1], value=1),
    "reshape": lambda b, x: b.reshape(x, [4, 2]),
    "slice": lambda b, x: b.slice(x, [0, 1], [2, 2]),
    "tile": lambda b, x: b.tile(x, [2, 1]),
    "transpose": lambda b, x: b.transpose(x),
    "reverse": lambda b, x: b.reverse(x),
    "triangular": lambda b, x: b.triangular(x, upper=False),
    "clamp": lambda b, x: b.clamp(x, min_value=1, max_value=3),
    "identity": lambda b, x: b.identity(x),
    "matmul": lambda b, x: b.matmul(x, b.transpose(x)),
}


def _unary_ops(limits: dict[str, Any]) -> list[tuple[str, str]]:
    cases = []
    for op, operands in limits.items():
        if not isinstance(operands, dict) or set(operands) not in (
            {"input", "output"},
            {"a", "b", "output"},
            {"a", "output"},
        ):
            continue
        first = "input" if "input" in operands else "a"
        if operands[first]["rank_range"]["min"] > 2 or operands[first]["rank_range"]["max"] < 2:
            continue
        cases.extend((op, data_type) for data_type in operands[first]["data_types"])
    return cases


@pytest.mark.parametrize(("op", "data_type"), _unary_ops(webnn.op_support_limits()))
def test_every_listed_data_type_runs(ctx: webnn.MLContext, op: str, data_type: str) -> None:
    """op_support_limits() must not promise a type that ONNX Runtime then refuses."""
    b = webnn.MLGraphBuilder(ctx)
    x = b.input("x", {"dataType": data_type, "shape": [2, 4]})
    method = getattr(b, op)
    if op in _RUNNERS:
        result = _RUNNERS[op](b, x)
    elif "b" in webnn.op_support_limits()[op]:
        result = method(x, x)
    else:
        result = method(x)
    graph = b.build({"out": result})
    held = webnn.MLOperandDescriptor(data_type, ()).numpy_dtype  # int4 is held in int8
    values = (np.arange(8) % 5 + 1).astype(held).reshape(2, 4)
    out = ctx.compute(graph, {"x": values})["out"]
    expected = webnn.MLOperandDescriptor(result.data_type, ()).numpy_dtype
    assert out.dtype == expected and out.shape == result.shape


def test_cached_dispatch_still_checks_names_and_lifetimes(ctx: webnn.MLContext) -> None:
    graph = affine_graph(ctx)
    tx = ctx.create_tensor({"dataType": "float32", "shape": [2, 16]}, writable=True)
    ty = ctx.create_tensor({"dataType": "float32", "shape": [2, 32]}, readable=True)
    tz = ctx.create_tensor({"dataType": "float32", "shape": [2]}, readable=True)
    ctx.dispatch(graph, {"x": tx}, {"y": ty, "z": tz})  # validated and bound
    with pytest.raises(WebNNValidationError, match="'extra' is not a graph input"):
        ctx.dispatch(graph, {"x": tx, "extra": tx}, {"y": ty, "z": tz})
    tz.destroy()
    with pytest.raises(WebNNInvalidStateError, match=r"output 'z'.*MLTensor was destroyed"):
        ctx.dispatch(graph, {"x": tx}, {"y": ty, "z": tz})
    graph.destroy()
    with pytest.raises(WebNNInvalidStateError, match="MLGraph was destroyed"):
        ctx.dispatch(graph, {"x": tx}, {"y": ty, "z": tz})


def test_identical_small_builds_share_a_session(ctx: webnn.MLContext) -> None:
    weights = np.ones((32, 32), np.float32)
    weights.flags.writeable = False

    def build(w: np.ndarray[Any, Any]) -> webnn.MLGraph:
        b = webnn.MLGraphBuilder(ctx)
        x = b.input("x", {"dataType": "float32", "shape": [1, 32]})
        c = b.constant({"dataType": "float32", "shape": [32, 32]}, w)
        return b.build({"y": b.matmul(x, c)})

    first, second = build(weights), build(weights)
    assert first._session is second._session
    assert first._session.get_session_options().intra_op_num_threads == 1
    other = np.full((32, 32), 2.0, np.float32)  # same bytes layout, another array: not shared
    third = build(other)
    assert third._session is not first._session
    x = np.ones((1, 32), np.float32)
    np.testing.assert_array_equal(ctx.compute(third, {"x": x})["y"], np.full((1, 32), 64.0))
    first.destroy()  # destroying one graph leaves the shared session to the other
    np.testing.assert_array_equal(ctx.compute(second, {"x": x})["y"], np.full((1, 32), 32.0))


def test_large_graphs_use_the_thread_pool(ctx: webnn.MLContext) -> None:
    b = webnn.MLGraphBuilder(ctx)
    a = b.input("a", {"dataType": "float32", "shape": [256, 256]})
    graph = b.build({"y": b.matmul(a, a)})
    assert graph._session.get_session_options().intra_op_num_threads != 1


def test_device_resident_tensor_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The code path of CUDA/ROCm contexts (OrtValues allocated by onnxruntime, written and
    read through it) exercised with onnxruntime's CPU device, since no GPU is present."""
    context = webnn.create_context(accelerated=False)
    monkeypatch.setattr(context, "_device", "cpu_device")  # anything but "cpu"
    monkeypatch.setattr(
        ort.OrtValue,
        "ortvalue_from_shape_and_type",
        staticmethod(lambda shape, element, device, index: _cpu_value(shape, element)),
    )
    tensor = context.create_tensor(
        {"dataType": "float16", "shape": [2, 2]}, readable=True, writable=True
    )
    assert tensor._host is None
    context.write_tensor(tensor, np.array([[1, 2], [3, 4]], np.float16))
    b = webnn.MLGraphBuilder(context)
    x = b.input("x", {"dataType": "float16", "shape": [2, 2]})
    graph = b.build({"y": b.mul(x, x)})
    out = context.create_tensor({"dataType": "float16", "shape": [2, 2]}, readable=True)
    context.dispatch(graph, {"x": tensor}, {"y": out})
    np.testing.assert_array_equal(context.read_tensor(out), [[1, 4], [9, 16]])


def _cpu_value(shape: list[int], element: type) -> Any:
    return ort.OrtValue.ortvalue_from_numpy(np.zeros(shape, dtype=element))
