"""Shared head graphs: a graph that ends in a linear layer over large parameters (a vocabulary
projection) computes the layer's input, and one graph per input shape computes the layer for
all of them, so ONNX Runtime prepacks the weight once, not once per decode-step graph."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops
from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.tensor import Tensor

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.webnn

DEVICE = "webnn"
VOCAB, WIDTH = 300, 64


def on(array: np.ndarray[Any, Any]) -> Tensor:
    return ia.tensor(array, device=DEVICE)


@pytest.fixture
def backend() -> Iterator[Any]:
    found = hal.get_backend(DEVICE, fallback=False)
    bound = found.shared_head_bytes
    found.clear_cache()
    try:
        yield found
    finally:
        found.shared_head_bytes = bound
        found.clear_cache()


@pytest.fixture
def weight() -> Tensor:
    projection = on(np.random.default_rng(0).standard_normal((VOCAB, WIDTH)).astype(np.float32))
    hal.mark_parameter(projection)
    return projection


def multiplying_by(backend: Any, weight: Tensor) -> list[Any]:
    """The cached graphs whose matrix products read ``weight`` (each holds a prepacked copy)."""
    return [c for c in backend._cache.values() if any(p is weight._data for p in c.packed)]


def rows(count: int, seed: int) -> np.ndarray[Any, Any]:
    return np.random.default_rng(seed).standard_normal((count, WIDTH)).astype(np.float32)


def first_step(weight: Tensor) -> Callable[..., list[Tensor]]:
    return lambda x: [ops.linear(ops.layer_norm(x * 2.0, WIDTH), weight)]


def second_step(weight: Tensor) -> Callable[..., list[Tensor]]:
    return lambda x, y: [ops.linear(ops.gelu(x + y), weight), x + 1.0]


def test_captures_ending_in_one_projection_share_its_head_graph(
    backend: Any, weight: Tensor
) -> None:
    x, y = rows(2, 1), rows(2, 2)
    # reference: the same captures with the layer inside their graphs
    backend.shared_head_bytes = weight.size * 4 + 1
    whole = [
        backend.capture(first_step(weight), [on(x)]).replay(x)[0].numpy(),
        *(t.numpy() for t in backend.capture(second_step(weight), [on(x), on(y)]).replay(x, y)),
    ]
    assert len(multiplying_by(backend, weight)) == 2, "each graph multiplies by the weight"
    backend.clear_cache()
    backend.shared_head_bytes = weight.size * 4  # the bound is inclusive
    first = backend.capture(first_step(weight), [on(x)])
    second = backend.capture(second_step(weight), [on(x), on(y)])
    before = backend.stats.dispatches
    got = [first.replay(x)[0].numpy(), *(t.numpy() for t in second.replay(x, y))]
    assert backend.stats.dispatches - before == 4, "each replay runs its graph and the head"
    for ours, theirs in zip(got, whole, strict=True):
        np.testing.assert_array_equal(ours, theirs)  # the same products
    np.testing.assert_allclose(
        got[1], (ops.gelu(on(x + y)).numpy() @ weight.numpy().T), rtol=1e-5, atol=1e-5
    )
    (head,) = multiplying_by(backend, weight)
    assert [p is weight._data for p in head.packed] == [True], "the head multiplies by it alone"
    # up to 8 rows share the head graph of 8 (padded), one row has a graph of its own
    backend.clear_cache()
    split = {}
    for count in (3, 8, 1):
        x = rows(count, count)
        split[count] = backend.capture(first_step(weight), [on(x)]).replay(x)[0].numpy()
        read_back = first_step(weight)(on(x))[0].numpy()  # the same head graph
        np.testing.assert_array_equal(split[count], read_back)
    heads = [c for c in multiplying_by(backend, weight) if len(c.inputs) == 1]
    assert sorted(c.graph.input_descriptors["x0"].shape[0] for c in heads) == [1, 8]
    backend.shared_head_bytes = weight.size * 4 + 1
    for count, logits in split.items():
        x = rows(count, count)
        whole = backend.capture(first_step(weight), [on(x)]).replay(x)[0].numpy()
        np.testing.assert_array_equal(logits, whole)  # padding changes no row


def test_a_replay_compiles_a_dropped_head_graph_again(backend: Any, weight: Tensor) -> None:
    backend.shared_head_bytes = 0
    x = rows(1, 4)
    captured = backend.capture(first_step(weight), [on(x)])
    expected = captured.replay(x)[0].numpy()
    backend.clear_cache()
    compilations = backend.stats.compilations
    np.testing.assert_array_equal(captured.replay(x)[0].numpy(), expected)
    assert backend.stats.compilations - compilations == 2  # the step and its head
    assert len(multiplying_by(backend, weight)) == 1


def test_a_projection_that_another_result_reads_stays_in_the_graph(
    backend: Any, weight: Tensor
) -> None:
    backend.shared_head_bytes = 0
    x = rows(2, 5)

    def step(a: Tensor) -> list[Tensor]:
        logits = ops.linear(ops.gelu(a), weight)
        return [logits, ops.softmax(logits, -1)]

    captured = backend.capture(step, [on(x)])
    before = backend.stats.dispatches
    logits, probabilities = captured.replay(x)
    assert backend.stats.dispatches - before == 1, "one graph computes both"
    np.testing.assert_allclose(
        probabilities.numpy(), ops.softmax(on(logits.numpy()), -1).numpy(), rtol=1e-6, atol=1e-7
    )


def test_a_small_layer_stays_in_the_graph(backend: Any, weight: Tensor) -> None:
    backend.shared_head_bytes = weight.size * 4 + 1
    x = rows(2, 6)
    captured = backend.capture(first_step(weight), [on(x)])
    before = backend.stats.dispatches
    captured.replay(x)[0].numpy()
    assert backend.stats.dispatches - before == 1
    assert len(multiplying_by(backend, weight)) == 1
    assert len(backend._cache) == 1


def test_a_read_back_projection_runs_in_the_head_graph_captures_share(
    backend: Any, weight: Tensor
) -> None:
    """Prompts (traced, not captured) end in the same head graph as the replayed steps."""
    backend.shared_head_bytes = 0
    x, y = rows(1, 7), rows(1, 8)
    for body in (ops.gelu(on(x)), ops.tanh(on(y))):
        logits = ops.linear(body, weight)
        expected = body.numpy() @ weight.numpy().T
        np.testing.assert_allclose(logits.numpy(), expected, rtol=1e-5, atol=1e-5)
    backend.capture(first_step(weight), [on(x)]).replay(x)[0].numpy()
    assert len(multiplying_by(backend, weight)) == 1


@pytest.mark.parametrize("bad", [-1, 1.5, True, "4M"])
def test_a_bad_bound_is_a_typed_error(bad: Any) -> None:
    from ipfs_accelerate.hal.webnn import WebNNBackend

    with pytest.raises(InvalidArgumentError, match="shared_head_bytes"):
        WebNNBackend(shared_head_bytes=bad)
