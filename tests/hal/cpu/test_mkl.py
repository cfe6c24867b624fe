"""The numpy backend's products and GELU through Intel MKL (hal/cpu/_mkl.py): the same numbers
as numpy's path in every layout the ops hand it, split over the cores only outside sharded
runs, and the setting that turns it on and off."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import ConfigurationError
from ipfs_accelerate.hal.cpu import _blas, _math, _mkl

needs_mkl = pytest.mark.skipif(not _mkl._library_paths(), reason="the mkl extra is not installed")


@pytest.fixture
def product_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int, int]]:
    """The (rows, inner, cols) of every sgemm call MKL makes."""
    calls: list[tuple[int, int, int]] = []
    real = _mkl._product

    def counted(a: Any, b: Any, out: Any, beta: float) -> None:
        calls.append((a.shape[0], a.shape[1], b.shape[1]))
        real(a, b, out, beta)

    monkeypatch.setattr(_mkl, "_product", counted)
    return calls


def _close(actual: np.ndarray[Any, Any], expected: np.ndarray[Any, Any], tol: float) -> None:
    scale = np.abs(expected).max() or 1.0
    assert np.abs(actual.astype(np.float64) - expected).max() <= tol * scale


@needs_mkl
@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("accumulate", [False, True])
def test_gemm_reads_every_layout_in_place(
    blas_setting: Any, trans_a: bool, trans_b: bool, accumulate: bool
) -> None:
    blas_setting("mkl")
    rng = np.random.default_rng(0)
    for rows, inner, cols in [(1, 5, 3), (70, 33, 17), (128, 384, 96), (300, 64, 520)]:
        a = rng.standard_normal((inner, rows) if trans_a else (rows, inner), dtype=np.float32)
        b = rng.standard_normal((cols, inner) if trans_b else (inner, cols), dtype=np.float32)
        a_view, b_view = (a.T if trans_a else a), (b.T if trans_b else b)
        # the result lands in a column window of a wider array (a row stride of its own)
        wide = rng.standard_normal((rows, cols + 9), dtype=np.float32)
        before = wide.copy()
        out = wide[:, 4 : 4 + cols]
        assert _mkl.gemm(a_view, b_view, out, accumulate=accumulate)
        expected = a_view.astype(np.float64) @ b_view.astype(np.float64)
        if accumulate:
            expected += before[:, 4 : 4 + cols]
        _close(out, expected, 1e-5)
        # columns outside the window are not touched
        np.testing.assert_array_equal(wide[:, :4], before[:, :4])
        np.testing.assert_array_equal(wide[:, 4 + cols :], before[:, 4 + cols :])


@needs_mkl
def test_gemm_refuses_what_blas_cannot_read_and_writes_nothing(blas_setting: Any) -> None:
    blas_setting("mkl")
    rng = np.random.default_rng(1)
    a = rng.standard_normal((80, 40), dtype=np.float32)
    b = rng.standard_normal((40, 30), dtype=np.float32)
    out = np.full((80, 30), 7.0, dtype=np.float32)
    assert not _mkl.gemm(a.astype(np.float64), b, out)  # not float32
    assert not _mkl.gemm(a[::2, ::2], b[:20], out[:40])  # no unit stride on either axis
    assert not _mkl.gemm(a, b, out[:, :20])  # shapes disagree
    shared = np.zeros((80, 40), dtype=np.float32)
    assert not _mkl.gemm(shared, b, shared[:, :30])  # out overlaps an operand
    np.testing.assert_array_equal(out, 7.0)
    assert _mkl.gemm(a[:, :0], b[:0], out)  # an empty inner dimension: zeros
    np.testing.assert_array_equal(out, 0.0)


@needs_mkl
def test_big_products_split_over_the_cores_except_inside_sharded_runs(
    blas_setting: Any, product_calls: list[tuple[int, int, int]], monkeypatch: pytest.MonkeyPatch
) -> None:
    blas_setting("mkl")
    monkeypatch.setattr(_mkl, "host_cores", lambda: 2)
    monkeypatch.setattr(_blas, "oversubscribed", lambda: False)
    rng = np.random.default_rng(2)
    a = rng.standard_normal((256, 1024), dtype=np.float32)
    b = rng.standard_normal((1024, 512), dtype=np.float32)
    assert _mkl.SPLIT_MACS <= 256 * 1024 * 512
    split = np.empty((256, 512), dtype=np.float32)
    assert _mkl.gemm(a, b, split)
    assert product_calls == [(256, 1024, 256), (256, 1024, 256)]  # two column halves
    product_calls.clear()
    whole = np.empty_like(split)
    _blas.hold()  # as models/_parallel does while row shards run
    try:
        assert _mkl.gemm(a, b, whole)
    finally:
        _blas.release()
    assert product_calls == [(256, 1024, 512)]  # one part: the shards fill the cores
    np.testing.assert_allclose(split, whole, rtol=1e-5, atol=1e-4)
    tall = np.empty((512, 256), dtype=np.float32)
    product_calls.clear()
    assert _mkl.gemm(b.T, a.T, tall)  # transposed views, read in place
    assert product_calls == [(256, 1024, 256), (256, 1024, 256)]  # cut along the rows
    np.testing.assert_allclose(tall, whole.T, rtol=1e-5, atol=1e-4)


@contextmanager
def sharded() -> Iterator[None]:
    """BLAS held to one thread, as while a sharded batch runs (models/_parallel)."""
    _blas.hold()
    try:
        yield
    finally:
        _blas.release()


@needs_mkl
def test_cpu_products_go_through_mkl_from_64_rows_inside_sharded_batches(
    blas_setting: Any, product_calls: list[tuple[int, int, int]]
) -> None:
    blas_setting("mkl")
    rng = np.random.default_rng(3)
    w = rng.standard_normal((96, 48), dtype=np.float32)
    bias = rng.standard_normal(96, dtype=np.float32)
    many = rng.standard_normal((2, 40, 48), dtype=np.float32)  # 80 rows
    expected = many.astype(np.float64) @ w.T.astype(np.float64)
    with sharded():
        out = ops.linear(ia.tensor(many), ia.tensor(w), ia.tensor(bias)).numpy()
        assert product_calls == [(80, 48, 96)]
        _close(out, expected + bias, 1e-5)
        product_calls.clear()
        ops.linear(ia.tensor(many[:1, :8]), ia.tensor(w), ia.tensor(bias))
        assert product_calls == []  # 8 rows: OpenBLAS's few-row product is the faster
        mat = ops.matmul(ia.tensor(many), ia.tensor(w.T.copy())).numpy()
        assert product_calls == [(80, 48, 96)]
        _close(mat, expected, 1e-5)
    product_calls.clear()
    # outside a sharded batch OpenBLAS's own pool multiplies (its spinning threads would
    # compete with MKL cut over the cores)
    out = ops.linear(ia.tensor(many), ia.tensor(w), ia.tensor(bias)).numpy()
    assert product_calls == []
    _close(out, expected + bias, 1e-5)


def _forward_and_gradients(*arrays: np.ndarray[Any, Any]) -> list[np.ndarray[Any, Any]]:
    x, w, b, signal, kernel = arrays
    xt = ia.tensor(x, requires_grad=True)
    wt = ia.tensor(w, requires_grad=True)
    hidden = ops.gelu(ops.linear(xt, wt, ia.tensor(b)))
    ops.sum(hidden * hidden).backward()
    assert xt.grad is not None and wt.grad is not None
    gram = ops.matmul(ia.tensor(x.reshape(150, 64)).T, ia.tensor(x.reshape(150, 64)))
    conv = ops.conv1d(ia.tensor(signal), ia.tensor(kernel), padding=1)
    return [hidden.numpy(), xt.grad.numpy(), wt.grad.numpy(), gram.numpy(), conv.numpy()]


@needs_mkl
def test_mkl_and_numpy_give_the_same_forward_and_gradients(
    blas_setting: Any, product_calls: list[tuple[int, int, int]]
) -> None:
    """linear (+ backward), a transposed matmul, conv1d and GELU with MKL and without, in a
    sharded batch (where the products go through MKL)."""
    rng = np.random.default_rng(4)
    arrays = (
        rng.standard_normal((3, 50, 64), dtype=np.float32),
        rng.standard_normal((128, 64), dtype=np.float32),
        rng.standard_normal(128, dtype=np.float32),
        rng.standard_normal((2, 8, 120), dtype=np.float32),
        rng.standard_normal((16, 8, 3), dtype=np.float32),
    )
    results: dict[str, list[np.ndarray[Any, Any]]] = {}
    for setting in ("mkl", "numpy"):
        blas_setting(setting)
        assert _mkl.enabled() is (setting == "mkl")
        product_calls.clear()
        with sharded():
            results[setting] = _forward_and_gradients(*arrays)
        assert bool(product_calls) is (setting == "mkl")
    for fast, plain in zip(results["mkl"], results["numpy"], strict=True):
        _close(fast, plain.astype(np.float64), 2e-6)


@needs_mkl
def test_mkl_gelu_is_accurate_where_erf_cancels(blas_setting: Any) -> None:
    import math

    blas_setting("mkl")
    x32 = np.linspace(-12, 12, 200_001).astype(np.float32)
    reference = np.array([v * 0.5 * math.erfc(-v / math.sqrt(2)) for v in x32.astype(float)])
    got = _math.gelu(x32)
    assert np.abs(got - reference).max() < 1e-6
    negative = x32 < -3  # tiny values, where 0.5 x (1 + erf) loses every digit to cancellation
    relative = np.abs(got[negative] - reference[negative]) / np.abs(reference[negative])
    assert relative.max() < 1e-5


def test_the_setting_is_checked(blas_setting: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    blas_setting("fastest")
    with pytest.raises(ConfigurationError, match="IPFS_ACCELERATE_CPU_BLAS='fastest'"):
        _mkl.enabled()
    blas_setting("numpy")
    assert not _mkl.enabled() and _mkl.version() is None
    out = np.zeros((64, 2), dtype=np.float32)
    assert not _mkl.gemm(np.ones((64, 3), np.float32), np.ones((3, 2), np.float32), out)
    assert ia.get_backend("cpu").info().details["mkl"] == "not used"
    monkeypatch.setattr(_mkl, "_library_paths", lambda: [])
    blas_setting("mkl")
    for _ in range(2):  # every call, not only the first: nothing falls back silently
        with pytest.raises(ConfigurationError, match=r"mkl.*extra"):
            _mkl.enabled()
    blas_setting("auto")
    assert not _mkl.enabled()  # auto without the library: numpy's BLAS, no error


@needs_mkl
def test_backend_info_names_mkl(blas_setting: Any) -> None:
    blas_setting("mkl")
    assert "Math Kernel Library" in ia.get_backend("cpu").info().details["mkl"]
