"""Small products run on one OpenBLAS thread (hal/cpu/_blas.py): the thread count is held
and restored through one depth count, shared with models/_parallel's sharded batches."""

from __future__ import annotations

import threading

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.hal.cpu import _blas


def _threads() -> int:
    get, _ = _blas._libraries()[0]
    return int(get())


@pytest.fixture(autouse=True)
def _needs_openblas() -> None:
    if not _blas.available():
        pytest.skip("numpy's BLAS is not an OpenBLAS whose thread count can be held")


@pytest.fixture
def two_threads() -> object:
    """OpenBLAS on 2 threads for the test (the machine may have set it to 1)."""
    _, put = _blas._libraries()[0]
    before = _threads()
    put(2)
    yield
    put(before)


def test_a_small_product_runs_on_one_thread_and_a_big_one_keeps_the_pool(
    two_threads: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[int] = []
    real = np.matmul

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(_threads())
        return real(*args, **kwargs)  # type: ignore[call-overload]

    monkeypatch.setattr(np, "matmul", spy)
    small = ia.randn(2, 3, 4, 5, seed=0)
    ops.matmul(small, ia.randn(2, 3, 5, 6, seed=1))  # batched: np.matmul
    assert seen == [1]
    assert _threads() == 2  # restored
    monkeypatch.setattr(_blas, "oversubscribed", lambda: False)
    with _blas.one_thread_for(_blas.SMALL_PRODUCT_MACS):
        assert _threads() == 2
    with _blas.one_thread_for(_blas.SMALL_PRODUCT_MACS - 1):
        assert _threads() == 1
    assert _threads() == 2
    monkeypatch.setattr(_blas, "oversubscribed", lambda: True)
    with _blas.one_thread_for(_blas.SMALL_PRODUCT_MACS * 4):
        assert _threads() == 1
    assert _threads() == 2


def test_a_small_int8_product_runs_on_one_thread_and_a_big_one_keeps_the_pool(
    two_threads: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The quantized linear's tile products follow the float linear's rule: a short
    sentence's int8 MiniLM embedding ran 7x slower than float32 under load with them on two
    threads."""
    from ipfs_accelerate.quantization import quantize

    seen: list[int] = []
    real = np.matmul

    def spy(*args: object, **kwargs: object) -> object:
        seen.append(_threads())
        return real(*args, **kwargs)  # type: ignore[call-overload]

    from ipfs_accelerate.hal.cpu import _mkl

    monkeypatch.setattr(_blas, "oversubscribed", lambda: False)
    # numpy's BLAS for every product (with MKL in use, those of 64 rows and more go there)
    monkeypatch.setenv(_mkl.BLAS_VARIABLE, "numpy")
    monkeypatch.setattr(_mkl, "_state", {})
    monkeypatch.setattr(_mkl, "_loaded", False)
    weight = quantize(ia.randn(96, 64, seed=0), bits=8, axis=0)
    monkeypatch.setattr(np, "matmul", spy)
    ops.linear(ia.randn(3, 64, seed=1), weight)  # 3 * 96 * 64 multiply-adds
    assert seen == [1]
    assert _threads() == 2  # restored
    rows = _blas.SMALL_PRODUCT_MACS // (96 * 64) + 1
    ops.linear(ia.randn(rows, 64, seed=2), weight)
    assert seen == [1, 2]


@pytest.mark.parametrize(("load", "expected"), [(0.1, False), (1e6, True)])
def test_oversubscribed_reads_the_load_average_per_usable_core(
    monkeypatch: pytest.MonkeyPatch, load: float, expected: bool
) -> None:
    monkeypatch.setattr(_blas.os, "getloadavg", lambda: (load, load, load))
    monkeypatch.setattr(_blas, "_load_checked", -_blas._LOAD_TTL)  # no cached reading
    assert _blas.oversubscribed() is expected
    monkeypatch.setattr(_blas.os, "getloadavg", lambda: (1e6 - load, 0.0, 0.0))
    assert _blas.oversubscribed() is expected  # reused for a second


def test_holds_nest_and_the_last_one_out_restores(two_threads: object) -> None:
    assert _blas.hold()
    assert _blas.hold()
    _blas.release()
    assert _threads() == 1
    _blas.release()
    assert _threads() == 2


def test_concurrent_small_products_leave_the_count_as_found(two_threads: object) -> None:
    a = ia.randn(64, 64, seed=0)
    b = ia.randn(64, 64, seed=1)
    expected = a.numpy() @ b.numpy()
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(200):
                np.testing.assert_allclose(ops.matmul(a, b).numpy(), expected, rtol=1e-5)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert _threads() == 2


def test_index_add_into_zeros_equals_a_copy_and_keeps_negative_zero() -> None:
    idx = ia.tensor([2, 0, 2], dtype="int64")
    src = ia.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    out = ops.index_add(ia.zeros(4, 2), 0, idx, src).numpy()
    np.testing.assert_array_equal(out, [[3, 4], [0, 0], [6, 8], [0, 0]])
    base = ia.tensor([[-0.0, 0.0]] * 4)  # not all +0.0 bits: copied, signs kept
    kept = ops.index_add(base, 0, idx, src).numpy()
    assert np.signbit(kept[1, 0]) and not np.signbit(kept[1, 1])
