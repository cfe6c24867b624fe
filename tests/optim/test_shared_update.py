"""The cpu optimizer kernels' full pass shared over the cores: bit for bit the serial update,
whichever thread takes which piece, and safe with optimizers stepping in several threads."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import optim
from ipfs_accelerate.hal._backend import AdamWHyper, SGDHyper
from ipfs_accelerate.hal.cpu import _optim

Array = np.ndarray[Any, Any]
PIECE = 4096  # small pieces (and threshold) so that small arrays take the shared path


@pytest.fixture
def shared(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Sharing forced on (whatever the machine's load and cores); returns the names of the
    threads that updated a piece, the callers slowed down so that a helper takes some."""
    monkeypatch.setattr(_optim, "SHARE_MIN", 2 * PIECE)
    monkeypatch.setattr(_optim, "SHARED_CHUNK", PIECE)
    monkeypatch.setattr(_optim, "oversubscribed", lambda: False)
    monkeypatch.setattr(_optim, "host_cores", lambda: 3)
    names: list[str] = []
    for name in ("_adamw_piece", "_sgd_piece"):
        original = getattr(_optim, name)

        def recording(piece: Any, hyper: Any, original: Any = original) -> None:
            thread = threading.current_thread()
            names.append(thread.name)
            if not thread.name.startswith("ia-optim"):
                time.sleep(0.002)
            original(piece, hyper)

        monkeypatch.setattr(_optim, name, recording)
    return names


def _adamw(amsgrad: bool) -> Callable[[list[Array], int], None]:
    def step(arrays: list[Array], t: int) -> None:
        p, g, m, v, v_max = arrays
        hyper = AdamWHyper(lr=0.01, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.1, step=t)
        assert _optim.adamw_step(p, g, m, v, v_max if amsgrad else None, hyper)

    return step


def _sgd(nesterov: bool) -> Callable[[list[Array], int], None]:
    def step(arrays: list[Array], t: int) -> None:
        p, g, b = arrays[:3]
        hyper = SGDHyper(
            lr=0.05,
            momentum=0.9,
            dampening=0.0 if nesterov else 0.3,
            weight_decay=0.02,
            nesterov=nesterov,
            first_step=t == 1,
        )
        assert _optim.sgd_step(p, g, b, hyper)

    return step


KERNELS = {
    "adamw": _adamw(False),
    "adamw-amsgrad": _adamw(True),
    "sgd-nesterov": _sgd(True),
    "sgd-dampening": _sgd(False),
}


def _run(kernel: str, shape: tuple[int, ...], view: Callable[[Array], Array]) -> list[Array]:
    rng = np.random.default_rng(7)
    arrays = [rng.standard_normal(shape).astype(np.float32) for _ in range(2)]
    arrays += [np.zeros(shape, np.float32) for _ in range(3)]
    views = [view(a) for a in arrays]
    for t in range(1, 4):
        views[1][...] = rng.standard_normal(views[1].shape).astype(np.float32)
        KERNELS[kernel](views, t)
    return arrays


def _bits(a: Array) -> Array:
    return a.view(np.int32)


@pytest.mark.parametrize("kernel", list(KERNELS))
@pytest.mark.parametrize(
    "shape",
    [(3, 5 * PIECE // 3 + 7), (5 * PIECE + 11,), (PIECE,)],
    ids=["not-a-multiple", "flat", "below-the-threshold"],
)
def test_the_shared_update_equals_the_serial_one_bit_for_bit(
    kernel: str, shape: tuple[int, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    serial = _run(kernel, shape, lambda a: a)
    names = []
    with monkeypatch.context() as m:
        m.setattr(_optim, "SHARE_MIN", 2 * PIECE)
        m.setattr(_optim, "SHARED_CHUNK", PIECE)
        m.setattr(_optim, "oversubscribed", lambda: False)
        m.setattr(_optim, "host_cores", lambda: 3)
        original = _optim._adamw_piece if kernel.startswith("adamw") else _optim._sgd_piece

        def recording(piece: Any, hyper: Any) -> None:
            names.append(threading.current_thread().name)
            if threading.current_thread() is threading.main_thread():
                time.sleep(0.002)  # a helper takes some pieces
            original(piece, hyper)

        m.setattr(_optim, original.__name__, recording)
        threaded = _run(kernel, shape, lambda a: a)
    for ours, reference in zip(threaded, serial, strict=True):
        np.testing.assert_array_equal(_bits(ours), _bits(reference))
    size = int(np.prod(shape))
    if size < 2 * PIECE:  # one thread, in CHUNK pieces
        assert names and all(n == threading.main_thread().name for n in names)
    else:
        assert len(names) == 3 * -(-size // PIECE)  # every piece once per step
        assert any(n.startswith("ia-optim") for n in names), names


@pytest.mark.parametrize("kernel", ["adamw-amsgrad", "sgd-nesterov"])
def test_non_contiguous_parameters_are_updated_by_the_caller_alone(
    kernel: str, shared: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def every_other_column(a: Array) -> Array:
        return a[:, ::2]

    shape = (4, 6 * PIECE)
    threaded = _run(kernel, shape, every_other_column)
    assert shared and all(n == threading.main_thread().name for n in shared)
    monkeypatch.setattr(_optim, "SHARE_MIN", 1 << 40)
    serial = _run(kernel, shape, every_other_column)
    for ours, reference in zip(threaded, serial, strict=True):
        np.testing.assert_array_equal(_bits(ours), _bits(reference))
    fresh = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    np.testing.assert_array_equal(threaded[0][:, 1::2], fresh[:, 1::2])  # between: untouched


def _train(seed: int, shape: tuple[int, ...]) -> Array:
    def data(offset: int) -> Array:
        return np.random.default_rng(seed + offset).standard_normal(shape).astype(np.float32)

    p = ia.tensor(data(0), requires_grad=True)
    opt = optim.AdamW([p], lr=0.01, weight_decay=0.1, amsgrad=True)
    for step in range(4):
        p.grad = ia.tensor(data(1 + step))
        opt.step()
    return p.numpy().copy()


def test_optimizers_stepping_in_two_threads_at_once_equal_the_serial_steps(
    shared: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    shape = (4, 3 * PIECE + 5)  # 13 pieces
    results: dict[int, Array] = {}
    start = threading.Barrier(2)

    def train(seed: int) -> None:
        start.wait()
        results[seed] = _train(seed, shape)

    threads = [threading.Thread(target=train, args=(s,)) for s in (10, 20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(results) == [10, 20]
    assert len(shared) == 2 * 4 * 13 and any(n.startswith("ia-optim") for n in shared)
    monkeypatch.setattr(_optim, "SHARE_MIN", 1 << 40)
    for seed, ours in results.items():
        np.testing.assert_array_equal(_bits(ours), _bits(_train(seed, shape)))


def test_an_error_in_a_helper_reaches_the_caller_after_every_helper_stopped(
    shared: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing(piece: Any, hyper: Any) -> None:
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.01)
            return
        raise FloatingPointError("helper piece")

    monkeypatch.setattr(_optim, "_sgd_piece", failing)
    p, g = np.ones(4 * PIECE, np.float32), np.ones(4 * PIECE, np.float32)
    hyper = SGDHyper(
        lr=0.1, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, first_step=True
    )
    with pytest.raises(FloatingPointError, match="helper piece"):
        _optim.sgd_step(p, g, None, hyper)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_shares_its_updates_over_helpers_of_its_own(shared: list[str]) -> None:
    size = 6 * PIECE
    p, g = np.ones(size, np.float32), np.full(size, 2.0, np.float32)
    hyper = SGDHyper(
        lr=0.5, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False, first_step=True
    )
    assert _optim.sgd_step(p, g, None, hyper)  # the parent's helper threads are started
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: every piece updated, by its own helpers too, then report
        try:
            names: list[str] = []
            original = _optim._sgd_piece

            def recording(piece: Any, h: Any) -> None:
                names.append(threading.current_thread().name)
                if threading.current_thread() is threading.main_thread():
                    time.sleep(0.002)
                original(piece, h)

            _optim._sgd_piece = recording  # type: ignore[assignment]
            _optim.sgd_step(p, g, None, hyper)
            ok = bool((p == -1.0).all()) and any(n.startswith("ia-optim") for n in names)
            os.write(write, b"ok" if ok else b"wrong")
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 16)
    os.waitpid(pid, 0)
    assert answer == b"ok"
    np.testing.assert_array_equal(p, np.zeros(size, np.float32))  # the parent's one step
