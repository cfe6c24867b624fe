"""The tensor backend's large (model) graphs compute float32 denormals as zero (ONNX Runtime's
``session.set_denormal_as_zero``: the CPU handles them slowly, attention probabilities are
often such values); its small graphs and graphs built through the W3C API keep IEEE results.
Each graph is a product (normal values) scaled into the denormal range."""

from __future__ import annotations

import numpy as np

from ipfs_accelerate import ops, webnn
from ipfs_accelerate.tensor import from_numpy

SIZE = 256  # 256**3 multiply-adds: above the runtime's single-thread (small graph) bound
A = np.full((SIZE, SIZE), 1e-5, np.float32)  # A @ A: 2.56e-8 everywhere
SCALE = np.float32(1e-32)  # scaled: 2.56e-40, below float32's normal range


def _expected(size: int) -> np.ndarray:
    a = A[:size, :size].astype(np.float64)
    return (a @ a * float(SCALE)).astype(np.float32)


def test_backend_model_graphs_flush_denormals() -> None:
    expected = _expected(SIZE)
    assert 0 < expected.min() and expected.max() < np.finfo(np.float32).tiny
    x = from_numpy(A, "webnn")
    assert not (ops.matmul(x, x) * float(SCALE)).numpy().any()


def test_small_backend_graphs_keep_denormals() -> None:
    x = from_numpy(A[:4, :4].copy(), "webnn")
    product = (ops.matmul(x, x) * float(SCALE)).numpy()
    np.testing.assert_allclose(product, _expected(4), rtol=1e-3)


def test_w3c_api_graphs_keep_denormals() -> None:
    context = webnn.create_context()
    builder = webnn.MLGraphBuilder(context)
    a = builder.input("a", {"dataType": "float32", "shape": [SIZE, SIZE]})
    scale = builder.constant("float32", float(SCALE))
    graph = builder.build({"y": builder.mul(builder.matmul(a, a), scale)})
    y = context.compute(graph, {"a": A})["y"]
    np.testing.assert_allclose(y, _expected(SIZE), rtol=1e-3)
