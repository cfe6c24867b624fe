"""The dynamic batcher on its own (a deterministic forward pass) and through HTTP."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

from ipfs_accelerate.serve import EmbeddingBatcher
from ipfs_accelerate.serve._batching import Overloaded

from .conftest import MINILM, Running, auth

pytestmark = pytest.mark.timeout(60)

DIM = 4


def signature(tokens: list[int]) -> list[float]:
    """What the fake model returns for a token list: it identifies the list."""
    return [float(sum(tokens)), float(len(tokens)), float(tokens[0]), float(tokens[-1])]


class FakeModel:
    def __init__(self, delay: float = 0.0, poison: int | None = None) -> None:
        self.delay = delay
        self.poison = poison
        self.batches: list[list[list[int]]] = []
        self.executor = ThreadPoolExecutor(max_workers=1)
        self.lock = threading.Lock()

    def forward(self, sequences: list[list[int]]) -> np.ndarray:
        with self.lock:
            self.batches.append([list(s) for s in sequences])
        time.sleep(self.delay)
        if self.poison is not None and any(self.poison in s for s in sequences):
            raise ValueError(f"poisoned by token {self.poison}")
        return np.array([signature(s) for s in sequences], dtype=np.float32)

    async def run(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def batcher(self, **options: Any) -> EmbeddingBatcher:
        return EmbeddingBatcher(self.forward, self.run, DIM, **options)


def run(coro: Any, timeout: float = 20.0) -> Any:
    async def guarded() -> Any:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(guarded())


def test_concurrent_requests_get_their_own_rows() -> None:
    model = FakeModel(delay=0.002)
    batcher = model.batcher(max_batch_size=8, max_wait=0.01)
    rng = np.random.default_rng(0)
    requests = [
        [list(rng.integers(1, 1000, rng.integers(1, 9))) for _ in range(rng.integers(1, 6))]
        for _ in range(60)
    ]

    async def main() -> list[Any]:
        return await asyncio.gather(*(batcher.embed(r) for r in requests))

    results = run(main())
    for request, (vectors, queue_s, inference_s) in zip(requests, results, strict=True):
        np.testing.assert_array_equal(
            vectors, np.array([signature(s) for s in request], dtype=np.float32)
        )
        assert queue_s >= 0 and inference_s > 0
    sizes = [len(b) for b in model.batches]
    assert sum(sizes) == sum(len(r) for r in requests)  # every input ran exactly once
    assert max(sizes) == 8 and min(sizes) >= 1 and len(sizes) < sum(sizes)  # inputs were batched


def test_a_full_batch_does_not_wait_and_a_lone_input_waits_at_most_max_wait() -> None:
    model = FakeModel()
    patient = model.batcher(max_batch_size=4, max_wait=30.0)

    async def full() -> float:
        start = time.perf_counter()
        await asyncio.gather(*(patient.embed([[i + 1]]) for i in range(4)))
        return time.perf_counter() - start

    assert run(full()) < 10.0  # 4 inputs fill the batch: no 30 s wait
    assert [len(b) for b in model.batches] == [4]
    quick = FakeModel().batcher(max_batch_size=64, max_wait=0.05)

    async def lone() -> float:
        start = time.perf_counter()
        await quick.embed([[7, 8]])
        return time.perf_counter() - start

    assert run(lone()) < 5.0


def test_a_request_larger_than_a_batch_spans_several_in_order() -> None:
    model = FakeModel()
    batcher = model.batcher(max_batch_size=4, max_wait=0.001)
    request = [[i, i + 1] for i in range(1, 11)]
    vectors, _, _ = run(batcher.embed(request))
    np.testing.assert_array_equal(
        vectors, np.array([signature(s) for s in request], dtype=np.float32)
    )
    assert [len(b) for b in model.batches] == [4, 4, 2]


def test_a_failing_input_fails_only_its_request() -> None:
    model = FakeModel(delay=0.005, poison=666)
    batcher = model.batcher(max_batch_size=16, max_wait=0.05)
    good = [[[i, 1]] for i in range(1, 9)]

    async def main() -> list[Any]:
        return await asyncio.gather(
            *(batcher.embed(r) for r in good[:4]), batcher.embed([[5, 666]]),
            *(batcher.embed(r) for r in good[4:]), return_exceptions=True,
        )  # fmt: skip

    results = run(main())
    failed = results[4]
    assert isinstance(failed, ValueError) and "666" in str(failed)
    for request, result in zip(good, results[:4] + results[5:], strict=True):
        assert not isinstance(result, BaseException)
        np.testing.assert_array_equal(result[0], [signature(request[0])])
    assert any(len(b) > 1 for b in model.batches)  # the poison really shared a batch first


def test_overload_and_cancellation() -> None:
    model = FakeModel(delay=0.3)
    batcher = model.batcher(max_batch_size=1, max_wait=0.0, max_pending=2)

    async def main() -> None:
        first = asyncio.create_task(batcher.embed([[1]]))
        await asyncio.sleep(0.05)  # the first runs now
        second = asyncio.create_task(batcher.embed([[2]]))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded):
            await batcher.embed([[3]])
        second.cancel()  # its input is still queued behind the first: it must never run
        await first
        with pytest.raises(asyncio.CancelledError):
            await second
        vectors, _, _ = await batcher.embed([[4]])
        np.testing.assert_array_equal(vectors, [signature([4])])
        await batcher.close()

    run(main())
    assert [b[0][0] for b in model.batches] == [1, 4]


def test_concurrent_http_requests_are_batched_and_never_mixed(server: Running) -> None:
    embedder = server.pipeline(MINILM)
    texts = [
        f"sentence number {i} about {'cats' if i % 2 else 'the stock market'}" for i in range(48)
    ]
    expected = embedder.embed(texts)
    before = _batches(server)

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=server.url, headers=auth(), timeout=60) as client:
            return await asyncio.gather(*(client.post("/embed", json={"inputs": t}) for t in texts))

    replies = run(main(), timeout=60)
    for reply, vector in zip(replies, expected, strict=True):
        assert reply.status_code == 200
        np.testing.assert_allclose(reply.json()[0], vector, atol=2e-5)
    count, total = (a - b for a, b in zip(_batches(server), before, strict=True))
    assert total == 48 and count < 48  # fewer forward passes than requests


def _batches(server: Running) -> tuple[float, float]:
    text = httpx.get(server.url + "/metrics").text
    count = total = 0.0
    for line in text.splitlines():
        if line.startswith("ipfs_accelerate_serve_embedding_batch_size_count"):
            count += float(line.rsplit(" ", 1)[1])
        if line.startswith("ipfs_accelerate_serve_embedding_batch_size_sum"):
            total += float(line.rsplit(" ", 1)[1])
    return count, total


def test_batches_group_inputs_of_like_length_and_always_take_the_oldest() -> None:
    model = FakeModel(delay=0.02)
    batcher = model.batcher(max_batch_size=4, max_wait=0.001, window_batches=4)
    lengths = [1, 9, 2, 8, 3, 7, 4, 6, 5, 9, 1, 8, 2, 7, 3, 6]  # alternating short and long
    requests = [[[index + 1] * length] for index, length in enumerate(lengths)]

    async def main() -> list[Any]:
        blocker = asyncio.create_task(
            batcher.embed([[99]])
        )  # occupies the worker while the rest queue
        while (
            not model.batches
        ):  # until the blocker's forward pass has started (a loaded machine is slow)
            await asyncio.sleep(0.001)
        results = await asyncio.gather(*(batcher.embed(r) for r in requests))
        await blocker
        return results

    results = run(main())
    for request, (vectors, _, _) in zip(requests, results, strict=True):
        np.testing.assert_array_equal(vectors, [signature(request[0])])
    batches = model.batches[1:]
    assert sorted(len(s) for b in batches for s in b) == sorted(lengths)  # each input ran once
    assert batches[0][0] == [1]  # the oldest waiting input is always in the next batch
    spread = [max(len(s) for s in b) - min(len(s) for s in b) for b in batches]
    assert max(spread) <= 3  # FIFO batches of this queue would mix lengths 1..9
