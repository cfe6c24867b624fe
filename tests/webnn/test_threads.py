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

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a run hung"
    assert failures == []
