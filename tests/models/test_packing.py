"""Packed batches (BERT's dense layers skip the padding), the shape policy that chooses them,
and row shards that run a batch on every core of the numpy backend."""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path
from typing import Any

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
    # longest first (as batches are sorted): the first shard gets fewer, longer rows, cut
    # where the tokens split most evenly (450 and 490, not 500 and 440 past the half)
    lengths = [50] * 10 + [20] * 22
    assert shard_bounds(lengths, 2) == [(0, 9), (9, 32)]
    assert shard_bounds([30] * 11 + [20] * 21, 2) == [(0, 13), (13, 32)]  # 370 / 380 tokens
    assert shard_bounds([5] * 17, 2) == [(0, 9), (9, 17)]  # a tie keeps the cut past the half
    assert shard_bounds([100] * 2 + [1] * 30, 2) == [(0, 8), (8, 32)]  # at least 8 rows each
    assert shard_bounds([1] * 30 + [100] * 2, 2) == [(0, 24), (24, 32)]  # ... for the last too
    weights = [int(w) for w in np.random.default_rng(3).integers(1, 60, 203)]
    for cores in (2, 3, 5):
        bounds = shard_bounds(weights, cores)
        assert bounds[0][0] == 0 and bounds[-1][1] == 203 and len(bounds) == cores
        assert all(a[1] == b[0] for a, b in itertools.pairwise(bounds))
        loads = [sum(weights[start:stop]) for start, stop in bounds]
        # every cut is within one row of its share of the whole
        for shard in range(1, cores):
            cut = bounds[shard][0]
            share = sum(weights) * shard / cores
            assert abs(sum(weights[:cut]) - share) <= max(weights[cut - 1], weights[cut]) / 2 + 1
        assert max(loads) - min(loads) <= 2 * max(weights)


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
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch, shard_calls: list[list[tuple[int, int]]]
) -> None:
    """A batch of 40 mixed-length texts on two cores runs as two packed shards; its vectors equal
    each text embedded alone (no padding, no shard)."""
    embedder = TextEmbedder.from_pretrained(bert_dir, device="cpu", sharing=False)
    rng = np.random.default_rng(3)
    words = ["a", "photo", "of", "the", "cat", "quick", "brown", "fox", "dog", "lazy"]
    texts = [" ".join(rng.choice(words, size=int(rng.integers(1, 12)))) for _ in range(40)]
    monkeypatch.setattr("ipfs_accelerate.models.pipelines._text.host_cores", lambda: 2)
    together = embedder.embed(texts, batch_size=40)
    calls = shard_calls
    assert len(calls) == 1 and len(calls[0]) == 2 and calls[0][-1][1] == 40
    alone = np.stack([embedder.embed(text) for text in texts])
    np.testing.assert_allclose(together, alone, atol=2e-6)


def test_cpu_shards_take_the_longest_rows_first_and_return_the_batch_order(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows of shuffled lengths (padding on the right, one row without any) are sharded
    longest first, so the second shard is padded only to its own longest row; the vectors
    come back in the caller's row order, equal to each row embedded alone."""
    embedder = TextEmbedder.from_pretrained(bert_dir, device="cpu", sharing=False)
    rng = np.random.default_rng(11)
    lengths = rng.permutation([19, *rng.integers(2, 19, 20)])
    ids = rng.integers(5, 90, (21, 19))
    mask = (np.arange(19)[None, :] < lengths[:, None]).astype(np.int64)
    ids *= mask
    widths: list[int] = []
    original = embedder._forward_rows

    def spy(input_ids, *args):  # type: ignore[no-untyped-def]
        widths.append(input_ids.shape[1])
        return original(input_ids, *args)

    monkeypatch.setattr(embedder, "_forward_rows", spy)
    monkeypatch.setattr("ipfs_accelerate.models.pipelines._text.host_cores", lambda: 2)
    together = embedder.embed_tokens(ids, mask)
    assert len(widths) == 2 and max(widths) == 19
    # the shard of short rows is as wide as its longest row (shorter than the batch's)
    second = sorted(lengths, reverse=True)
    assert min(widths) < 19 and min(widths) in second[8:]
    alone = np.concatenate(
        [embedder.embed_tokens(ids[r : r + 1, : lengths[r]], mask[r : r + 1, : lengths[r]])
         for r in range(21)]
    )  # fmt: skip
    np.testing.assert_allclose(together, alone, atol=2e-6)


# ----------------------------------------------------------------------------- captured forwards


@pytest.mark.webnn
def test_webnn_embedder_replays_a_captured_packed_forward(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On webnn a packed batch's forward is captured once per batch shape and replayed: the
    model's Python does not run again, the vectors are those of the traced forward bit for
    bit, and a model changed since (int8 activations, new weights) is captured again."""
    pytest.importorskip("onnxruntime")
    from ipfs_accelerate import hal
    from ipfs_accelerate.models.pipelines import _text

    embedder = TextEmbedder.from_pretrained(bert_dir, device="webnn", sharing=False, dtype="int8")
    texts = ["a photo of the cat", "the quick brown fox jumps", "dog", "a lazy dog sleeps"]
    model = embedder.model
    first = embedder.embed(texts, batch_size=4)
    assert len(embedder._captures) == 1
    stats = hal.get_backend("webnn").stats
    replays, calls = stats.replays, []
    real = type(model).packed_from
    monkeypatch.setattr(
        type(model), "packed_from", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    again = embedder.embed(texts, batch_size=4)
    assert calls == [] and stats.replays == replays + 1  # no op traced: the graph replayed
    np.testing.assert_array_equal(again, first)
    monkeypatch.setattr(_text, "_capture_state", lambda _: None)  # the traced forward
    traced = embedder.embed(texts, batch_size=4)
    assert calls == [1]
    np.testing.assert_array_equal(traced, first)
    monkeypatch.undo()
    model.set_int8_activations("none")  # weight-only: another graph, captured again
    np.testing.assert_array_equal(
        embedder.embed(texts, batch_size=4), _traced(embedder, texts, monkeypatch)
    )
    assert len(embedder._captures) == 2
    name, weight = next((n, w) for n, w in model.named_parameters() if n.endswith("bias"))
    model.assign(name, weight * 2.0)  # new weights
    changed = embedder.embed(texts, batch_size=4)
    assert len(embedder._captures) == 3
    np.testing.assert_array_equal(changed, _traced(embedder, texts, monkeypatch))
    # a sub-module replaced by another (the kept module list is made again)
    from ipfs_accelerate.models._module import Linear

    output = model.encoder.layer[0].output
    replacement = Linear(output.dense.in_features, output.dense.out_features)
    replacement.weight = output.dense.weight
    replacement.bias = output.dense.bias * 0.5
    output.dense = replacement
    assert any(module is replacement for module in model.all_modules())
    swapped = embedder.embed(texts, batch_size=4)
    assert len(embedder._captures) == 4
    np.testing.assert_array_equal(swapped, _traced(embedder, texts, monkeypatch))


def _traced(
    embedder: TextEmbedder, texts: list[str], monkeypatch: pytest.MonkeyPatch
) -> np.ndarray:
    from ipfs_accelerate.models.pipelines import _text

    with monkeypatch.context() as patched:
        patched.setattr(_text, "_capture_state", lambda _: None)
        return embedder.embed(texts, batch_size=4)


@pytest.mark.webnn
def test_webnn_embedder_runs_batches_side_by_side(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Several batches on webnn run one per core, each replaying a graph captured to run on
    its thread alone (on more cores than batches, on its share of them): the vectors are
    those of one batch after the other, in the order the texts were given, and an error in
    one batch reaches the caller."""
    pytest.importorskip("onnxruntime")
    from ipfs_accelerate.models.pipelines import _captures

    monkeypatch.setattr(_captures, "host_cores", lambda: 2)
    embedder = TextEmbedder.from_pretrained(bert_dir, device="webnn", sharing=False)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "near"]
    texts = [" ".join(words[: 1 + (i * 7) % len(words)]) for i in range(22)]
    ran_on: set[str] = set()
    real = TextEmbedder._forward

    def forward(self: TextEmbedder, *args: object, **kwargs: object) -> np.ndarray:
        ran_on.add(threading.current_thread().name.split("_")[0])
        return real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(TextEmbedder, "_forward", forward)
    side = embedder.embed(texts, batch_size=4)  # 6 batches
    assert ran_on == {"ia-batches"}
    assert {key[-1] for key in embedder._captures} == {1}  # single-thread graphs
    monkeypatch.setattr(_captures, "host_cores", lambda: 12)  # 3 batches share 12 cores: 4 each
    np.testing.assert_allclose(embedder.embed(texts, batch_size=8), side, rtol=1e-5, atol=1e-6)
    assert 4 in {key[-1] for key in embedder._captures}
    monkeypatch.setattr(_captures, "host_cores", lambda: 1)  # one core: one batch at a time
    ran_on.clear()
    one = embedder.embed(texts, batch_size=4)
    assert ran_on == {"MainThread"}
    np.testing.assert_allclose(side, one, rtol=1e-5, atol=1e-6)
    monkeypatch.undo()
    monkeypatch.setattr(_captures, "host_cores", lambda: 2)

    def failing(self: TextEmbedder, input_ids: np.ndarray, *args: object, **kw: object) -> None:
        if input_ids.shape[0] == 2:  # the last batch (22 = 5 x 4 + 2)
            raise RuntimeError("batch failed")
        return real(self, input_ids, *args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(TextEmbedder, "_forward", failing)
    with pytest.raises(RuntimeError, match="batch failed"):
        embedder.embed(texts, batch_size=4)


@pytest.mark.webnn
def test_webnn_embedder_captures_the_padded_forward_too(
    bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches that run padded replay a captured forward as packed ones do: one text (nothing
    to pack), lengths past the policy's exact shapes (a bucket), and a family without
    ``packed_from`` (DistilBERT); each the traced forward's vectors bit for bit, the model's
    Python not run on the replay."""
    pytest.importorskip("onnxruntime")
    from ipfs_accelerate import hal
    from ipfs_accelerate.models.pipelines import _text
    from tests.models import _encoder_checkpoints as ckpt

    stats = hal.get_backend("webnn").stats
    bert = TextEmbedder.from_pretrained(bert_dir, device="webnn", sharing=False)
    distil = TextEmbedder.from_pretrained(
        ckpt.make_distilbert(tmp_path / "distilbert"), device="webnn", sharing=False
    )
    words = [str(n) for n in range(1, 13)]
    single = ["one two three"]
    bucketed = [[" ".join(words[:n])] for n in range(1, EXACT_SHAPES + 3)]
    padded = ["one", "one two three four five", "one two"]
    cases = [(bert, single), *((bert, texts) for texts in bucketed), (distil, padded)]
    for embedder, texts in cases:
        first = embedder.embed(texts)
        model = embedder.model
        calls: list[int] = []
        with monkeypatch.context() as patched:
            for name in ("__call__", "packed"):  # the traced forwards, padded and packed
                if hasattr(type(model), name):
                    patched.setattr(type(model), name, _counting(getattr(type(model), name), calls))
            replays = stats.replays
            again = embedder.embed(texts)
            assert calls == [] and stats.replays == replays + 1, texts
            patched.setattr(_text, "_capture_state", lambda _: None)
            traced = embedder.embed(texts)
            assert calls == [1], texts
        np.testing.assert_array_equal(again, first)
        np.testing.assert_array_equal(traced, first)
    tokens = int(bert.tokenizer(bucketed[-1]).lengths[0])
    plan = bert.shape_policy().plan(1, tokens, tokens)  # past the exact shapes: a bucket
    assert not plan.packed and ("padded", plan.rows, plan.length) in {k[1] for k in bert._captures}
    assert {key[1][0] for key in distil._captures} == {"padded"}


def _counting(method: Any, calls: list[int]) -> Any:
    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return method(*args, **kwargs)

    return counted


@pytest.mark.webnn
def test_embed_calls_from_several_threads_share_the_batch_pool(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three threads embedding at once through one embedder (as a server's request threads
    do), each call's batches on the shared pool: every call gets its own texts' vectors."""
    pytest.importorskip("onnxruntime")
    from ipfs_accelerate.models.pipelines import _captures

    monkeypatch.setattr(_captures, "host_cores", lambda: 2)
    embedder = TextEmbedder.from_pretrained(bert_dir, device="webnn", sharing=False)
    words = ["red", "green", "blue", "cyan", "black", "white", "grey", "pink", "gold", "tan"]
    calls = [[" ".join(words[k : k + 1 + (i + k) % 7]) for i in range(10)] for k in range(3)]
    expected = [embedder.embed(texts, batch_size=3) for texts in calls]
    results: dict[int, list[np.ndarray]] = {k: [] for k in range(3)}

    def work(k: int) -> None:
        for _ in range(4):
            results[k].append(embedder.embed(calls[k], batch_size=3))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "an embed call hung"
    for k in range(3):
        assert len(results[k]) == 4
        for got in results[k]:
            np.testing.assert_allclose(got, expected[k], rtol=1e-5, atol=1e-6)
