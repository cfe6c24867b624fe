"""Thread safety: concurrent acquire/release/register/views/eviction keep every count exact."""

from __future__ import annotations

import random
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import TensorNotFoundError
from ipfs_accelerate.sharing import SharedTensor, SharedTensorView, TensorSharingManager

THREADS = 8
OPS = 1000
CONTENDED_OPS = 20_000  # per thread on one counter: enough that an unlocked counter loses updates
KB = 1024

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(autouse=True)
def fast_switching() -> Iterator[None]:
    """Switch threads every microsecond, so unprotected read-modify-writes really interleave."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


def run_threads(target: Callable[[int], Any], count: int = THREADS) -> list[Any]:
    """Run ``target(i)`` in ``count`` threads; re-raise the first failure; return the results."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def wrapper(index: int) -> None:
        try:
            results[index] = target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=wrapper, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
        assert not thread.is_alive(), "a worker thread hung"
    if errors:
        raise errors[0]
    return results


def test_concurrent_acquire_release_of_one_model_loses_no_count() -> None:
    tensor = SharedTensor("w", (4,))
    view = tensor.create_view("v", 0, 2)
    acquired = threading.Barrier(THREADS + 1, timeout=30)
    checked = threading.Barrier(THREADS + 1, timeout=30)

    def worker(_: int) -> None:
        for _ in range(
            CONTENDED_OPS
        ):  # every thread uses the same model name: one counter, contended
            tensor.acquire("shared-model")
            view.acquire("shared-model")
        acquired.wait()
        checked.wait()
        for _ in range(CONTENDED_OPS):
            assert tensor.release("shared-model")
            assert view.release("shared-model")

    collector = threading.Thread(target=lambda: run_threads(worker), daemon=True)
    collector.start()
    acquired.wait()
    assert tensor.holders == {"shared-model": THREADS * CONTENDED_OPS}
    assert view.holders == {"shared-model": THREADS * CONTENDED_OPS}
    assert tensor.reference_count == 2 * THREADS * CONTENDED_OPS
    checked.wait()
    collector.join(timeout=50)
    assert not collector.is_alive()
    assert tensor.reference_count == 0 and view.reference_count == 0
    assert tensor.can_be_freed()
    assert tensor.release("shared-model") is False


@pytest.mark.parametrize("round_", range(10))
def test_concurrent_registration_of_identical_weights_keeps_one_copy(round_: int) -> None:
    manager = TensorSharingManager()
    weights = np.random.default_rng(round_).standard_normal(16 * KB).astype(np.float32)  # 64 KB
    start = threading.Barrier(THREADS, timeout=30)

    def worker(index: int) -> SharedTensor:
        start.wait()
        return manager.register_shared_tensor(
            f"pipeline{index}/embeddings",
            weights.shape,
            producer_model=f"model{index}",
            data=weights.copy(),
        )

    results = run_threads(worker)
    assert all(result is results[0] for result in results)
    held = results[0]
    assert held.holders == {f"model{i}": 1 for i in range(THREADS)}
    stats = manager.get_stats()
    assert stats["total_tensors"] == 1 and stats["total_aliases"] == THREADS - 1
    assert stats["memory_usage_bytes"] == weights.nbytes
    assert stats["dedup_hits"] == THREADS - 1
    np.testing.assert_array_equal(held.data.numpy(), weights)


POOL = [
    np.random.default_rng(100 + i).standard_normal(KB).astype(np.float32) for i in range(12)
]  # 4 KB each


def _check(entry: tuple[SharedTensor | SharedTensorView, int, int | None]) -> None:
    """A held tensor (or view) is alive and holds exactly its content."""
    obj, index, offset = entry
    data = obj.data.numpy()  # raises if it was freed while held
    expected = POOL[index] if offset is None else POOL[index][offset : offset + 16]
    assert np.array_equal(data, expected), f"{obj!r} does not hold pool entry {index}"


def test_stress_register_acquire_release_views_and_eviction() -> None:
    # room for the whole pool (48 KB) plus a few 8 KB scratch tensors, so that registrations
    # keep evicting the unheld scratch tensors while other threads hold and read the pool
    manager = TensorSharingManager(max_memory_mb=96 * KB / (1024 * KB))
    ready = threading.Barrier(THREADS, timeout=30)

    def worker(tid: int) -> list[tuple[SharedTensor | SharedTensorView, int, int | None]]:
        rng = random.Random(tid)
        ready.wait()
        model = f"model{tid}"
        held: list[tuple[SharedTensor | SharedTensorView, int, int | None]] = []
        for n in range(OPS):
            op = rng.random()
            if op < 0.25:  # register pool content under the shared name or a per-thread alias
                index = rng.randrange(len(POOL))
                name = f"w{index}" if rng.random() < 0.5 else f"w{index}/t{tid}"
                data = POOL[index] if rng.random() < 0.5 else POOL[index].copy()
                tensor = manager.register_shared_tensor(
                    name, (KB,), producer_model=model, data=data
                )
                held.append((tensor, index, None))
            elif op < 0.45 and held:
                entry = held.pop(rng.randrange(len(held)))
                assert entry[0].release(model)
            elif op < 0.55:
                index = rng.randrange(len(POOL))
                try:
                    tensor = manager.get_shared_tensor(f"w{index}", model_name=model)
                except TensorNotFoundError:
                    continue
                held.append((tensor, index, None))
            elif op < 0.65 and held:
                obj, index, offset = rng.choice(held)
                if offset is None:
                    assert isinstance(obj, SharedTensor)
                    start = rng.randrange(KB - 16)
                    view = manager.create_tensor_view(
                        obj.name, f"v{tid}_{n}", start, 16, model_name=model
                    )
                    held.append((view, index, start))
            elif op < 0.8:  # unheld scratch: evictable at once
                manager.register_shared_tensor(f"s{tid}_{n}", (2 * KB,))
            elif op < 0.85:
                manager.optimize_memory_usage()
            elif held:
                entry = rng.choice(held)
                entry[0].acquire(model)
                held.append(entry)
            if held:
                _check(rng.choice(held))
        return held

    results = run_threads(worker)

    for tid, held in enumerate(results):
        model = f"model{tid}"
        expected = Counter(id(entry[0]) for entry in held)
        objects = {id(entry[0]): entry[0] for entry in held}
        for key, count in expected.items():
            assert objects[key].holders.get(model, 0) == count, (
                f"{objects[key]!r} lost holds of {model}"
            )
        for entry in held:
            _check(entry)
    usage = manager.get_tensor_memory_usage()
    stats = manager.get_stats()
    tensors = {name: info for name, info in usage.items() if info["view_of"] is None}
    assert stats["memory_usage_bytes"] == sum(info["memory_bytes"] for info in tensors.values())
    assert stats["memory_usage_bytes"] <= stats["max_memory_bytes"]
    ids = [info["content_id"] for info in tensors.values() if info["content_id"] is not None]
    assert len(ids) == len(set(ids)), "two live tensors hold the same content"
    assert stats["evicted_tensors"] > 0  # the limit really was exercised

    for tid, held in enumerate(results):
        assert manager.release_model_tensors(f"model{tid}") == len({id(entry[0]) for entry in held})
    final = manager.optimize_memory_usage()
    assert final["current_memory_bytes"] == 0 and final["remaining_tensor_count"] == 0
    assert all(entry[0].is_freed for held in results for entry in held)
