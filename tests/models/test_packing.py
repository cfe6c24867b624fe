"""Packed batches (BERT's dense layers skip the padding), the shape policy that chooses them,
and row shards that run a batch on every core of the numpy backend."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.models import TextEmbedder, _parallel
from ipfs_accelerate.models._parallel import run_sharded, shard_bounds
from ipfs_accelerate.models._shapes import EXACT_SHAPES, Plan, ShapePolicy
from ipfs_accelerate.models.bert import PackedTokens

# ----------------------------------------------------------------------------- PackedTokens


def test_packed_tokens_index_the_real_tokens_both_ways() -> None:
    ids = np.array([[5, 6, 7, 0], [8, 9, 0, 0], [0, 3, 4, 2]])
    mask = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [0, 1, 1, 1]])  # the last row is left-padded
    types = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [0, 0, 0, 1]])
    batch = PackedTokens.from_batch(ids, mask, types)
    assert (batch.rows, batch.length, batch.tokens) == (3, 4, 8)
    np.testing.assert_array_equal(batch.keep, [0, 1, 2, 4, 5, 9, 10, 11])
    np.testing.assert_array_equal(batch.input_ids, [5, 6, 7, 8, 9, 3, 4, 2])
    np.testing.assert_array_equal(batch.token_type_ids, [0, 0, 1, 0, 1, 0, 0, 1])
    np.testing.assert_array_equal(
        batch.positions, [0, 1, 2, 0, 1, 1, 2, 3]
    )  # a token keeps its column
    # every real slot finds its packed row again; padding slots point at row 0
    np.testing.assert_array_equal(batch.place[batch.keep], np.arange(8))
    assert (batch.place[mask.reshape(-1) == 0] == 0).all()


def test_packed_tokens_reject_what_cannot_be_packed() -> None:
    ids = np.ones((2, 3), dtype=np.int64)
    with pytest.raises(InvalidArgumentError, match="row 1 has no token"):
        PackedTokens.from_batch(ids, np.array([[1, 1, 0], [0, 0, 0]]))
    with pytest.raises(InvalidArgumentError, match="one shape"):
        PackedTokens.from_batch(ids, np.ones((2, 4)))
    with pytest.raises(InvalidArgumentError, match="token_type_ids must have shape"):
        PackedTokens.from_batch(ids, np.ones((2, 3)), np.zeros((3, 3)))


# ----------------------------------------------------------------------------- ShapePolicy


def test_shape_policy_packs_padded_batches_except_in_buckets() -> None:
    eager = ShapePolicy("cpu", 512)
    assert not eager.enabled
    assert eager.plan(3, 13, 30) == Plan(3, 13, True)
    assert eager.plan(3, 13, 39) == Plan(3, 13, False)  # no padding: nothing to pack
    assert eager.plan(3, 13) == Plan(3, 13, False)

    graph = ShapePolicy("cpu", 512, "auto")
    graph.enabled = True  # as on a compile-per-shape backend
    plans = [graph.plan(3, 13, tokens) for tokens in range(20, 20 + EXACT_SHAPES)]
    assert (
        plans == [Plan(3, 13, True)] * EXACT_SHAPES
    )  # the first shapes of a row count run exactly
    assert graph.plan(3, 13, 35) == Plan(4, 16, False)  # then padded to a bucket, unpacked
    assert graph.plan(3, 13, 20) == Plan(3, 13, True)  # a shape met before keeps its plan
    assert graph.plan(5, 13, 30) == Plan(5, 13, True)  # another row count has its own exact shapes

    buckets = ShapePolicy("cpu", 512, "buckets")
    assert buckets.plan(3, 13, 30) == Plan(4, 16, False)
    assert buckets.plan(3, 510, 30) == Plan(4, 512, False)  # never past max_length
    assert ShapePolicy("webnn", 512, "exact").plan(3, 13, 30) == Plan(3, 13, True)


# ----------------------------------------------------------------------------- shards


def test_shard_bounds_split_rows_by_tokens_into_shards_of_enough_rows() -> None:
    assert shard_bounds([10] * 32, 2) == [(0, 16), (16, 32)]
    assert shard_bounds([10] * 32, 4) == [(0, 8), (8, 16), (16, 24), (24, 32)]
    assert shard_bounds([10] * 15, 2) == [(0, 15)]  # two shards would be under MIN_SHARD_ROWS
    assert shard_bounds([10] * 32, 1) == [(0, 32)]
    assert shard_bounds([], 2) == [(0, 0)]
    # longest first (as batches are sorted): the first shard gets fewer, longer rows
    lengths = [50] * 10 + [20] * 22
    assert shard_bounds(lengths, 2) == [(0, 10), (10, 32)]  # 500 and 440 tokens
    assert shard_bounds([100] * 2 + [1] * 30, 2) == [(0, 8), (8, 32)]  # at least 8 rows each


def _blas_threads() -> int:
    from threadpoolctl import threadpool_info

    return min(info["num_threads"] for info in threadpool_info() if info["user_api"] == "blas")


def test_run_sharded_runs_shards_at_once_with_blas_on_one_thread() -> None:
    pytest.importorskip("threadpoolctl")
    if _parallel._blas_controller() is None:
        pytest.skip("no BLAS library threadpoolctl can limit")
    before = _blas_threads()
    inside: list[tuple[int, int, str]] = []
    barrier = threading.Barrier(2, timeout=10)

    def work(start: int, stop: int) -> list[int]:
        barrier.wait()  # both shards are running at the same time, or this times out
        inside.append((start, _blas_threads(), threading.current_thread().name))
        return list(range(start, stop))

    assert run_sharded(work, [(0, 3), (3, 5)]) == [[0, 1, 2], [3, 4]]  # in shard order
    assert {threads for _, threads, _ in inside} == {1}
    assert len({name for _, _, name in inside}) == 2
    assert _blas_threads() == before  # restored


def test_run_sharded_restores_blas_only_after_every_overlapping_call_and_every_shard() -> None:
    pytest.importorskip("threadpoolctl")
    if _parallel._blas_controller() is None:
        pytest.skip("no BLAS library threadpoolctl can limit")
    before = _blas_threads()
    seen: list[int] = []

    def slow(start: int, stop: int) -> int:
        time.sleep(0.05 * (start + 1))
        seen.append(_blas_threads())
        return start

    callers = [
        threading.Thread(target=run_sharded, args=(slow, [(0, 1), (1, 2)])) for _ in range(3)
    ]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join()
    assert seen == [1] * 6  # no caller's exit lifted the limit while another's shards ran
    assert _blas_threads() == before

    finished: list[int] = []

    def failing(start: int, stop: int) -> int:
        if start == 0:
            raise ValueError("shard 0 failed")
        time.sleep(0.1)
        finished.append(_blas_threads())
        return start

    with pytest.raises(ValueError, match="shard 0 failed"):
        run_sharded(failing, [(0, 1), (1, 2)])
    assert finished == [
        1
    ]  # the other shard ran to its end under the limit before the error surfaced
    assert _blas_threads() == before


def test_text_embedder_on_cpu_shards_big_batches_and_gives_the_same_vectors(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of 40 mixed-length texts on two cores runs as two packed shards; its vectors equal
    each text embedded alone (no padding, no shard)."""
    embedder = TextEmbedder.from_pretrained(bert_dir, device="cpu", sharing=False)
    rng = np.random.default_rng(3)
    words = ["a", "photo", "of", "the", "cat", "quick", "brown", "fox", "dog", "lazy"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(40)]
    calls: list[list[tuple[int, int]]] = []
    original = _parallel.run_sharded

    def spy(fn, bounds):  # type: ignore[no-untyped-def]
        calls.append(bounds)
        return original(fn, bounds)

    monkeypatch.setattr("ipfs_accelerate.models.pipelines._text.run_sharded", spy)
    monkeypatch.setattr("ipfs_accelerate.models.pipelines._text.host_cores", lambda: 2)
    together = embedder.embed(texts, batch_size=40)
    assert len(calls) == 1 and len(calls[0]) == 2 and calls[0][-1][1] == 40
    alone = np.stack([embedder.embed(text) for text in texts])
    np.testing.assert_allclose(together, alone, atol=2e-6)
