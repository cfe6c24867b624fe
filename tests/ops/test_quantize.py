"""ops.quantize_linear / dequantize_linear on every backend: a numpy reference, the WPT
vectors (int8/uint8/int32 cases) and onnxruntime's QuantizeLinear/DequantizeLinear."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate import ops
from ipfs_accelerate.errors import DeviceMismatchError, DtypeError, ShapeError
from tests.ops._helpers import on, supported

WPT = Path(__file__).resolve().parent.parent / "webnn" / "wpt"


def _expand(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    param = param.reshape((1,) * (len(shape) - param.ndim) + param.shape)
    for axis, (size, full) in enumerate(zip(param.shape, shape, strict=True)):
        if size not in (1, full):
            param = np.repeat(param, full // size, axis=axis)
    return np.broadcast_to(param, shape)


def _quantize_ref(x: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    info = np.iinfo(zp.dtype)
    q = np.rint(x / _expand(scale, x.shape)) + _expand(zp, x.shape).astype(x.dtype)
    return np.clip(q, info.min, info.max).astype(zp.dtype)


def _dequantize_ref(x: np.ndarray, scale: np.ndarray, zp: np.ndarray) -> np.ndarray:
    diff = x.astype(np.float32) - _expand(zp, x.shape).astype(np.float32)
    return (diff * _expand(scale, x.shape).astype(np.float32)).astype(scale.dtype)


# (input shape, scale shape): per-tensor, per-axis (either axis), blockwise on one or two axes
LAYOUTS = [((4, 6), ()), ((4, 6), (1, 1)), ((4, 6), (4, 1)), ((4, 6), (6,)),
           ((4, 6), (4, 3)), ((4, 6), (2, 3)), ((2, 3, 8), (2, 1, 4))]  # fmt: skip


@pytest.mark.parametrize(("shape", "scale_shape"), LAYOUTS)
@pytest.mark.parametrize("zp_dtype", ["int8", "uint8"])
def test_round_trip_matches_numpy(
    device: str, shape: tuple[int, ...], scale_shape: tuple[int, ...], zp_dtype: str
) -> None:
    rng = np.random.default_rng(len(shape) + len(scale_shape))
    x = (rng.standard_normal(shape) * 40).astype(np.float32)
    scale = rng.uniform(0.25, 2.0, scale_shape).astype(np.float32)
    scale.flat[0] = 1.0
    zp = rng.integers(-3 if zp_dtype == "int8" else 100, 4 + 100 * (zp_dtype == "uint8"),
                      scale_shape).astype(zp_dtype)  # fmt: skip
    zp.flat[0] = 0
    q = ops.quantize_linear(on(device, x), on(device, scale), on(device, zp))
    expected = _quantize_ref(x, scale, zp)
    assert q.dtype.name == zp_dtype and q.shape == shape and q.device == device
    np.testing.assert_array_equal(q.numpy(), expected)
    back = ops.dequantize_linear(q, on(device, scale), on(device, zp))
    assert back.dtype.name == "float32"
    np.testing.assert_allclose(back.numpy(), _dequantize_ref(expected, scale, zp), rtol=1e-6)


def test_ties_round_half_to_even_and_saturate(device: str) -> None:
    x = np.array([0.5, 1.5, 2.5, -2.5, -0.5, 300.0, -300.0], dtype=np.float32)
    one = on(device, np.array(1.0, dtype=np.float32))
    q = ops.quantize_linear(on(device, x), one, on(device, np.array(0, dtype=np.int8)))
    assert q.numpy().tolist() == [0, 2, 2, -2, 0, 127, -128]
    u = ops.quantize_linear(on(device, x), one, on(device, np.array(10, dtype=np.uint8)))
    assert u.numpy().tolist() == [10, 12, 12, 8, 10, 255, 0]


def test_float16_scale(device: str) -> None:
    if "float16" not in supported(device):
        pytest.skip(f"{device} holds no float16")
    x = np.array([[-7, 3, 127, 0]], dtype=np.int8)
    scale = np.array([[0.1, 3.0]], dtype=np.float16)
    zp = np.array([[1, -2]], dtype=np.int8)
    out = ops.dequantize_linear(on(device, x), on(device, scale), on(device, zp))
    assert out.dtype.name == "float16"
    np.testing.assert_array_equal(out.numpy(), _dequantize_ref(x, scale, zp))


def _wpt_cases(name: str, skip: frozenset[str] = frozenset({"int4", "uint4"})) -> list[Any]:
    data = json.loads((WPT / f"{name}.json").read_text())
    cases = []
    for case in data["tests"]:
        graph = case["graph"]
        types = {v["descriptor"]["dataType"] for v in graph["inputs"].values()}
        if len(graph["operators"]) == 1 and not types & skip:
            cases.append(pytest.param(case, id=case["name"]))
    return cases


def _wpt_array(entry: dict[str, Any]) -> np.ndarray:
    descriptor = entry["descriptor"]
    return np.array(entry["data"], dtype=descriptor["dataType"]).reshape(descriptor["shape"])


def _replay(device: str, case: dict[str, Any], fn: Any) -> tuple[np.ndarray, np.ndarray]:
    graph = case["graph"]
    (operator,) = graph["operators"]
    args = [graph["inputs"][next(iter(a.values()))] for a in operator["arguments"]]
    arrays = [_wpt_array(a) for a in args]
    if not {a.dtype.name for a in arrays} <= set(supported(device)):
        pytest.skip(f"{device} lacks a dtype of {[a.dtype.name for a in arrays]}")
    out = fn(*(on(device, a) for a in arrays))
    (expected,) = graph["expectedOutputs"].values()
    assert out.dtype.name == expected["descriptor"]["dataType"]
    return out.numpy(), _wpt_array(expected)


@pytest.mark.parametrize(
    "case", _wpt_cases("quantize_linear", frozenset({"int4", "uint4", "int32"}))
)
def test_wpt_quantize_linear(device: str, case: dict[str, Any]) -> None:
    got, expected = _replay(device, case, ops.quantize_linear)
    # WPT's tolerance: 1 ULP of the integer result
    assert np.abs(got.astype(np.int64) - expected.astype(np.int64)).max(initial=0) <= 1


@pytest.mark.parametrize("case", _wpt_cases("dequantize_linear"))
def test_wpt_dequantize_linear(device: str, case: dict[str, Any]) -> None:
    got, expected = _replay(device, case, ops.dequantize_linear)
    np.testing.assert_allclose(got, expected, rtol=float(np.finfo(expected.dtype).eps))


def _onnx_run(op_type: str, x: np.ndarray, scale: np.ndarray, zp: np.ndarray, **attrs: int):  # type: ignore[no-untyped-def]
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from onnx import helper

    out_type = onnx.TensorProto.FLOAT if op_type == "DequantizeLinear" else (
        helper.np_dtype_to_tensor_dtype(zp.dtype))  # fmt: skip
    node = helper.make_node(op_type, ["x", "s", "z"], ["y"], **attrs)
    inputs = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
              for n, a in (("x", x), ("s", scale), ("z", zp))]  # fmt: skip
    graph = helper.make_graph([node], "q", inputs, [helper.make_tensor_value_info("y", out_type,
                              x.shape)])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    model.ir_version = 10
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x, "s": scale, "z": zp})[0]


@pytest.mark.parametrize("blockwise", [False, True])
@pytest.mark.parametrize("zp_dtype", ["int8", "uint8"])
def test_matches_onnxruntime(device: str, blockwise: bool, zp_dtype: str) -> None:
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((4, 8)) * 30).astype(np.float32)
    # ONNX: per-axis scales are 1-D along `axis`; blockwise have the input's rank
    onnx_scale = rng.uniform(0.3, 2.0, (4, 2) if blockwise else (8,)).astype(np.float32)
    onnx_zp = rng.integers(0, 5, onnx_scale.shape).astype(zp_dtype)
    attrs = {"axis": 1, "block_size": 4} if blockwise else {"axis": 1}
    scale = onnx_scale if blockwise else onnx_scale.reshape(1, 8)
    zp = onnx_zp if blockwise else onnx_zp.reshape(1, 8)
    q = ops.quantize_linear(on(device, x), on(device, scale), on(device, zp))
    np.testing.assert_array_equal(q.numpy(), _onnx_run("QuantizeLinear", x, onnx_scale, onnx_zp,
                                                       **attrs))  # fmt: skip
    back = ops.dequantize_linear(q, on(device, scale), on(device, zp))
    reference = _onnx_run("DequantizeLinear", q.numpy(), onnx_scale, onnx_zp, **attrs)
    np.testing.assert_allclose(back.numpy(), reference, rtol=1e-6)


def test_bad_operands_raise(device: str) -> None:
    x = on(device, np.ones((4, 6), dtype=np.float32))
    s = on(device, np.ones((1, 4), dtype=np.float32))
    z = on(device, np.zeros((1, 4), dtype=np.int8))
    with pytest.raises(ShapeError, match="scale size 4 on axis 1 does not divide .* 6"):
        ops.quantize_linear(x, s, z)
    good = on(device, np.ones((1, 3), dtype=np.float32))
    with pytest.raises(ShapeError, match="zero_point shape"):
        ops.quantize_linear(x, good, z)
    with pytest.raises(DtypeError, match="zero_point must be int8 or uint8"):
        ops.quantize_linear(x, good, on(device, np.zeros((1, 3), dtype=np.int32)))
    with pytest.raises(DtypeError, match="scale must be float32 or float16"):
        ops.quantize_linear(x, on(device, np.ones((1, 3), dtype=np.int32)), z)
    with pytest.raises(DtypeError, match="input must be int8, uint8 or int32"):
        ops.dequantize_linear(x, good, on(device, np.zeros((1, 3), dtype=np.int8)))
    ints = on(device, np.ones((4, 6), dtype=np.uint8))
    with pytest.raises(DtypeError, match="differ in dtype"):
        ops.dequantize_linear(ints, good, on(device, np.zeros((1, 3), dtype=np.int8)))
    with pytest.raises(ShapeError, match="exceeds the input's rank"):
        ops.dequantize_linear(ints, on(device, np.ones((1, 1, 1), dtype=np.float32)),
                              on(device, np.zeros((1, 1, 1), dtype=np.uint8)))  # fmt: skip
    if device != "cpu":
        with pytest.raises(DeviceMismatchError):
            ops.quantize_linear(x, on("cpu", np.ones((1, 3), dtype=np.float32)),
                                on(device, np.zeros((1, 3), dtype=np.int8)))  # fmt: skip
