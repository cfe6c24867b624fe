"""The thread pools of the webnn backend's ONNX Runtime sessions: each session owns its pool,
which spins for more work only during a run ($IPFS_ACCELERATE_WEBNN_SPIN_US), and sessions of
different graphs run from several Python threads at once give what they give alone, the
flushing ones still flushing denormals on their own threads."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from tests.webnn.test_denormals import _attention, _inputs, _product_of_tiny_numbers

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.webnn

F32 = "float32"


def _square(ctx: Any, n: int = 256) -> Any:
    """a @ a + a over (n, n): large enough for a pool, no attention (does not flush)."""
    from ipfs_accelerate import webnn

    b = webnn.MLGraphBuilder(ctx)
    a = b.input("a", {"dataType": F32, "shape": [n, n]})
    return b.build({"y": b.add(b.matmul(a, a), a)})


def _in_threads(work: Any, count: int) -> None:
    """``work(0)`` ... ``work(count - 1)`` on as many Python threads at once, joined."""
    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a run hung"


def _config(graph: Any, key: str) -> str | None:
    options = graph._session.get_session_options()
    try:
        return str(options.get_session_config_entry(key))
    except RuntimeError:  # not set
        return None


def test_a_large_graph_pool_spins_only_during_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipfs_accelerate import webnn
    from ipfs_accelerate.webnn._runtime import DEFAULT_SPIN_US, SPIN_VARIABLE

    monkeypatch.delenv(SPIN_VARIABLE, raising=False)
    graph = _square(webnn.create_context())
    assert graph._session.get_session_options().intra_op_num_threads != 1
    assert _config(graph, "session.intra_op.allow_spinning") == "1"
    assert _config(graph, "session.intra_op.spin_duration_us") == str(DEFAULT_SPIN_US)
    assert _config(graph, "session.force_spinning_stop") == "1"

    monkeypatch.setenv(SPIN_VARIABLE, "250")
    assert _config(_square(webnn.create_context(), 192), "session.intra_op.spin_duration_us") == (
        "250"
    )
    monkeypatch.setenv(SPIN_VARIABLE, "0")
    sleeping = _square(webnn.create_context(), 160)
    assert _config(sleeping, "session.intra_op.allow_spinning") == "0"
    assert _config(sleeping, "session.force_spinning_stop") is None
    a = np.random.default_rng(0).standard_normal((160, 160)).astype(np.float32)
    np.testing.assert_allclose(
        sleeping._context.compute(sleeping, {"a": a})["y"], a @ a + a, rtol=1e-4, atol=1e-3
    )


@pytest.mark.parametrize("value", ["fast", "-1", "1000001", "1.5"])
def test_a_bad_spin_setting_is_a_typed_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    from ipfs_accelerate import webnn
    from ipfs_accelerate.errors import ConfigurationError
    from ipfs_accelerate.webnn._runtime import SPIN_VARIABLE

    monkeypatch.setenv(SPIN_VARIABLE, value)
    with pytest.raises(ConfigurationError, match=f"{SPIN_VARIABLE}='{value}'"):
        _square(webnn.create_context(), 128)


def test_graphs_run_from_several_threads_at_once_give_what_they_give_alone() -> None:
    """A flushing attention graph and a plain large graph, each from two Python threads at
    once, many times: every result is the one computed alone, the attention's denormal
    probability still flushed (0) and the callers' threads still computing IEEE denormals."""
    from ipfs_accelerate import webnn

    ctx = webnn.create_context()
    attention = _attention(ctx, 2, 4, 64, 16)
    square = _square(ctx)
    assert attention._flushing and not square._flushing
    rng = np.random.default_rng(1)
    feeds: list[tuple[Any, dict[str, np.ndarray]]] = [(attention, _inputs(2, 4, 64, 16))]
    for _ in range(3):
        feeds.append((square, {"a": rng.standard_normal((256, 256)).astype(np.float32)}))
    alone = [ctx.compute(graph, inputs)["y"] for graph, inputs in feeds]
    assert not alone[0].any()  # flushed
    failures: list[str] = []

    def work(worker: int) -> None:
        try:
            for turn in range(12):
                index = (worker + turn) % len(feeds)
                graph, inputs = feeds[index]
                got = ctx.compute(graph, inputs)["y"]
                if not np.array_equal(got, alone[index]):
                    failures.append(f"worker {worker} turn {turn}: graph {index} differs")
                if _product_of_tiny_numbers() == 0.0:
                    failures.append(f"worker {worker}: its thread flushes denormals")
        except Exception as error:  # reported below, with the thread that raised it
            failures.append(f"worker {worker}: {error!r}")

    _in_threads(work, 4)
    assert failures == []


def test_build_threads_bounds_a_large_graph_pool() -> None:
    """``MLGraphBuilder.build(..., threads=n)`` (an extension): a graph the runtime would give
    a pool of every core runs on one thread (n = 1) or n, with the same results, flushing
    where the default does; anything but an int from 1 to MAX_THREADS or None is a typed
    error naming it."""
    from ipfs_accelerate import webnn
    from ipfs_accelerate.errors import WebNNValidationError
    from ipfs_accelerate.webnn._runtime import MAX_THREADS

    ctx = webnn.create_context()
    b = webnn.MLGraphBuilder(ctx)
    a = b.input("a", {"dataType": F32, "shape": [256, 256]})
    alone = b.build({"y": b.add(b.matmul(a, a), a)}, threads=1)
    pooled = _square(ctx)
    assert alone._session.get_session_options().intra_op_num_threads == 1
    assert pooled._session.get_session_options().intra_op_num_threads != 1
    x = np.random.default_rng(2).standard_normal((256, 256)).astype(np.float32)
    np.testing.assert_allclose(
        ctx.compute(alone, {"a": x})["y"], ctx.compute(pooled, {"a": x})["y"], rtol=1e-6
    )
    b = webnn.MLGraphBuilder(ctx)
    q = b.input("q", {"dataType": F32, "shape": [2, 4, 64, 16]})
    flushed = b.build({"y": b.softmax(q, axis=3)}, threads=1)
    assert flushed._session.get_session_options().intra_op_num_threads == 1
    b = webnn.MLGraphBuilder(ctx)
    a = b.input("a", {"dataType": F32, "shape": [256, 256]})
    pair = b.build({"y": b.add(b.matmul(a, a), a)}, threads=2)
    assert pair._session.get_session_options().intra_op_num_threads == 2
    np.testing.assert_allclose(
        ctx.compute(pair, {"a": x})["y"], ctx.compute(pooled, {"a": x})["y"], rtol=1e-6
    )
    for bad in (0, -1, MAX_THREADS + 1, True, 1.0, "1"):
        b = webnn.MLGraphBuilder(ctx)
        a = b.input("a", {"dataType": F32, "shape": [4, 4]})
        with pytest.raises(WebNNValidationError, match=f"threads must be .* got {bad!r}"):
            b.build({"y": b.matmul(a, a)}, threads=bad)


def test_single_thread_replays_run_side_by_side(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two captures of one function with ``threads=1`` (kept apart from the default's graph)
    replayed from two Python threads at once: their runs overlap (the backend's lock is not
    held while a graph runs) and each result is the one computed alone."""
    from ipfs_accelerate import hal, ops
    from ipfs_accelerate.tensor import from_numpy
    from ipfs_accelerate.webnn import _context

    backend = hal.get_backend("webnn")
    rng = np.random.default_rng(3)
    weight = from_numpy(rng.standard_normal((384, 384)).astype(np.float32), "webnn")
    hal.mark_parameter(weight)

    def forward(x: Any) -> list[Any]:
        for _ in range(12):
            x = ops.matmul(x, weight) * 0.05
        return [x]

    x = from_numpy(rng.standard_normal((512, 384)).astype(np.float32), "webnn")
    default = backend.capture(forward, [x])
    single = backend.capture(forward, [x], threads=1)
    assert default is not None and single is not None
    assert single._key != default._key
    graph = backend._compiled(single._key, single._trace, 1).graph
    assert graph._session.get_session_options().intra_op_num_threads == 1
    inputs = [rng.standard_normal((512, 384)).astype(np.float32) for _ in range(2)]
    expected = [default.replay(value)[0].numpy() for value in inputs]
    running = {"now": 0, "most": 0}
    count = threading.Lock()
    real = _context.MLContext.compute

    def counted(context: Any, graph: Any, feeds: Any) -> Any:
        with count:
            running["now"] += 1
            running["most"] = max(running["most"], running["now"])
        try:
            return real(context, graph, feeds)
        finally:
            with count:
                running["now"] -= 1

    monkeypatch.setattr(_context.MLContext, "compute", counted)
    failures: list[str] = []

    def work(index: int) -> None:
        for _ in range(8):
            got = single.replay(inputs[index])[0].numpy()
            if not np.allclose(got, expected[index], rtol=1e-5, atol=1e-6):
                failures.append(f"thread {index}: wrong result")

    _in_threads(work, 2)
    assert failures == []
    assert running["most"] == 2, "the replays ran one after the other"
