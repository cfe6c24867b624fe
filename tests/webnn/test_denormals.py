"""Large WebNN graphs that run ONNX Runtime's attention kernel flush denormal floats to zero
(a softmax over trained encoders' scores gives probabilities below float32's normal range,
which the CPU computes many times slower), on threads of their own: the caller's thread, other
graphs and small graphs keep IEEE denormals."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import pytest

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.webnn

F32 = "float32"
#: the score of the one key whose probability is denormal: exp(-90) is about 8e-40
FAR = -90.0


def _attention(ctx: Any, b_: int, h: int, length: int, d: int) -> Any:
    """softmax(q k^T / 4) v over (B, H, L, d) inputs: MultiHeadAttention's pattern."""
    from ipfs_accelerate import webnn

    b = webnn.MLGraphBuilder(ctx)
    shape = [b_, h, length, d]
    q, k, v = (b.input(name, {"dataType": F32, "shape": shape}) for name in "qkv")
    scores = b.mul(b.matmul(q, b.transpose(k, permutation=[0, 1, 3, 2])), b.constant(F32, 0.25))
    return b.build({"y": b.matmul(b.softmax(scores, 3), v)})


def _inputs(b_: int, h: int, length: int, d: int) -> dict[str, np.ndarray]:
    """Every query scores 0 against every key but key 1 (FAR); v is 0 except key 1's, 1e38:
    the output is key 1's probability times 1e38 (about 1e-3), 0 where it was flushed."""
    shape = (b_, h, length, d)
    q = np.ones(shape, np.float32)
    k = np.zeros(shape, np.float32)
    k[:, :, 1, :] = FAR * 4 / d
    v = np.zeros(shape, np.float32)
    v[:, :, 1, :] = 1e38
    return {"q": q, "k": k, "v": v}


def _expected(length: int) -> float:
    return float(np.exp(np.float64(FAR)) / (length - 1) * 1e38)


def test_large_attention_graph_flushes_denormals_and_the_caller_keeps_them() -> None:
    from ipfs_accelerate import webnn

    ctx = webnn.create_context()
    large = _attention(ctx, 2, 4, 64, 16)
    assert large._flushing
    y = ctx.compute(large, _inputs(2, 4, 64, 16))["y"]
    # numpy (IEEE) gives about 1.3e-3 everywhere; the flushing kernel exactly 0
    assert _expected(64) > 1e-3
    assert not y.any()
    # the flags stayed on the graph's own threads
    assert _product_of_tiny_numbers() != 0.0


def _product_of_tiny_numbers() -> float:
    return float(np.float32(1e-20) * np.float32(1e-22))


def test_the_flushing_threads_flush_and_only_they() -> None:
    from ipfs_accelerate.webnn._runtime import can_flush_denormals, flushing_call

    assert can_flush_denormals()  # (x86-64 Linux, as the test machines)
    assert flushing_call(_product_of_tiny_numbers) == 0.0
    assert _product_of_tiny_numbers() != 0.0


def test_small_graphs_keep_ieee_denormals() -> None:
    from ipfs_accelerate import webnn

    ctx = webnn.create_context()
    _ = ctx.compute(_attention(ctx, 2, 4, 64, 16), _inputs(2, 4, 64, 16))  # a flushing one first
    small = _attention(ctx, 1, 1, 8, 4)
    assert not small._flushing
    y = ctx.compute(small, _inputs(1, 1, 8, 4))["y"]
    np.testing.assert_allclose(y, _expected(8), rtol=1e-3)


def test_dispatch_runs_a_flushing_graph_on_its_threads() -> None:
    from ipfs_accelerate import webnn

    ctx = webnn.create_context()
    graph = _attention(ctx, 2, 4, 64, 16)
    feeds = _inputs(2, 4, 64, 16)
    tensors = {}
    for name, value in feeds.items():
        tensors[name] = ctx.create_tensor(
            {"dataType": F32, "shape": list(value.shape), "writable": True}
        )
        ctx.write_tensor(tensors[name], value)
    out = ctx.create_tensor({"dataType": F32, "shape": [2, 4, 64, 16], "readable": True})
    for _ in range(2):  # the second dispatch replays the cached binding
        ctx.dispatch(graph, tensors, {"y": out})
        assert not ctx.read_tensor(out).any()
    assert _product_of_tiny_numbers() != 0.0


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_gets_flushing_threads_of_its_own() -> None:
    from ipfs_accelerate.webnn._runtime import flushing_call

    assert flushing_call(_product_of_tiny_numbers) == 0.0  # the parent's threads exist
    pid = os.fork()
    if pid == 0:  # the child: exit 0 only if a call runs (a stale pool would hang it)
        code = 2
        try:
            code = 0 if flushing_call(_product_of_tiny_numbers) == 0.0 else 1
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            assert os.waitstatus_to_exitcode(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    os.waitpid(pid, 0)
    pytest.fail("the forked child's flushing call hung")
