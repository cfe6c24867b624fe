"""The host form of the KV cache that replayed webnn decode steps write in place.

After replayed steps the host cache holds what the traced path's cache holds (Llama, Mistral
with its sliding window, GPT-2; ragged rows; across a growth); growth, rearrangement and
placement on the host equal the same operations on the tensor form; a replayed step allocates
nothing of the cache's size (counted with tracemalloc).
"""

from __future__ import annotations

import tracemalloc
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.models.generation import KVCache
from ipfs_accelerate.models.generation._cache import CacheShape, bucket, left_padded
from ipfs_accelerate.models.generation._replay import DecodeGraphs
from ipfs_accelerate.models.loading import load_model
from ipfs_accelerate.tensor import from_numpy
from tests.conftest import start_backend
from tests.models._decoder_checkpoints import decoder_checkpoint

pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(300)

PROMPTS = [[3, 17, 40, 22, 5], [9, 100, 120, 33, 7, 8, 9, 60, 61]]


def _prefilled(model: Any, prompts: list[list[int]], capacity: int) -> tuple[KVCache, np.ndarray]:
    ids, valid = left_padded(prompts)
    batch, width = ids.shape
    cache = KVCache(model.cache_shape(), batch, capacity, model.device)
    logits = model(from_numpy(ids, model.device), cache.begin(valid)).numpy()
    return cache, logits


def _tensor_form(tensors: list[Any]) -> np.ndarray:
    return np.stack([t.numpy() for t in tensors])


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt2"])
def test_replayed_steps_leave_the_traced_paths_cache_on_the_host(family: str) -> None:
    start_backend("webnn")
    model, _, _ = load_model(decoder_checkpoint(family), "webnn", sharing=False)
    caches = []
    for replayed in (True, False):
        graphs = DecodeGraphs(model)
        graphs.enabled = replayed
        cache, logits = _prefilled(model, PROMPTS, bucket(9, 1 << 62))
        # the second row finishes after 4 steps: its later columns are padding
        for step in range(12):
            valid = np.array([[True], [step < 4]])
            token = logits.argmax(-1)[:, None]
            logits = graphs.forward(cache, token, valid).numpy()
        assert cache.capacity == 32, "the run must cross a growth"
        caches.append(cache)
    replayed_cache, traced_cache = caches
    assert replayed_cache.on_host and not traced_cache.on_host
    filled = replayed_cache.length
    assert filled == traced_cache.length == 21
    host_keys, host_values = replayed_cache.to_host()
    for host, tensors in ((host_keys, traced_cache.keys), (host_values, traced_cache.values)):
        np.testing.assert_allclose(
            host[..., :filled, :], _tensor_form(tensors)[..., :filled, :], rtol=0, atol=1e-5
        )
    np.testing.assert_array_equal(replayed_cache.valid, traced_cache.valid)
    np.testing.assert_array_equal(replayed_cache.positions, traced_cache.positions)


def _random_cache(rng: np.random.Generator, on_host: bool) -> KVCache:
    shape = CacheShape(layers=2, kv_heads=2, head_dim=4)
    cache = KVCache(shape, 3, 16, "webnn")
    keys = rng.standard_normal((2, 3, 2, 16, 4)).astype(np.float32)
    values = rng.standard_normal((2, 3, 2, 16, 4)).astype(np.float32)
    cache.keys = [from_numpy(layer, "webnn") for layer in keys]
    cache.values = [from_numpy(layer, "webnn") for layer in values]
    valid = rng.random((3, 11)) < 0.8
    valid[:, -1] = True
    cache.begin(valid)
    if on_host:
        cache.to_host()
    return cache


def _contents(cache: KVCache) -> tuple[np.ndarray, ...]:
    keys, values = (
        cache.to_host() if cache.on_host else (_tensor_form(cache.keys), _tensor_form(cache.values))
    )
    return keys, values, cache.valid, cache.positions, cache._next


def _assert_same(host: KVCache, tensors: KVCache) -> None:
    assert host.on_host and not tensors.on_host
    assert (host.batch, host.capacity, host.length) == (
        tensors.batch,
        tensors.capacity,
        tensors.length,
    )
    for mine, theirs in zip(_contents(host), _contents(tensors), strict=True):
        np.testing.assert_array_equal(mine, theirs)


def test_growth_rearrangement_and_placement_on_the_host_equal_the_tensor_form() -> None:
    start_backend("webnn")
    host = _random_cache(np.random.default_rng(1), on_host=True)
    tensors = _random_cache(np.random.default_rng(1), on_host=False)
    _assert_same(host, tensors)
    before = host.to_host()[0].copy()
    # 11 filled columns + 8 new ones: the capacity doubles; the filled part is copied
    for cache in (host, tensors):
        cache.begin(np.ones((3, 8), dtype=bool))
    assert host.capacity == 32
    np.testing.assert_array_equal(host.to_host()[0][..., :16, :], before)
    assert not host.to_host()[0][..., 16:, :].any()
    _assert_same(host, tensors)
    # rows 2 and 0 kept, an empty row, the first 3 dead columns cut
    for cache in (host, tensors):
        cache.rearrange([2, None, 0, None], 3)
    _assert_same(host, tensors)
    # a longer row arriving: columns prepended on the left
    for cache in (host, tensors):
        cache.rearrange([0, 1, 2, 3], -5)
    _assert_same(host, tensors)
    # a prefilled prompt placed into an empty row, right-aligned
    source = _random_cache(np.random.default_rng(2), on_host=False)
    for cache in (host, tensors):
        cache.place(1, source, 2)
        cache.release(0)
    _assert_same(host, tensors)
    # the host form goes back to tensors for a traced step, with the same content
    keys = host.to_host()[0].copy()
    np.testing.assert_array_equal(_tensor_form(host.keys), keys)
    assert not host.on_host


def test_cached_biases_need_a_one_column_step() -> None:
    start_backend("webnn")
    cache = KVCache(CacheShape(layers=1, kv_heads=1, head_dim=2), 1, 16, "webnn")
    step = cache.begin(np.ones((1, 3), dtype=bool))
    with pytest.raises(InvalidArgumentError, match="one column is needed, got 3"):
        cache.cached_biases(step)


def test_a_replayed_step_allocates_nothing_of_the_caches_size(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Neither the graph's outputs (allocated by ONNX Runtime, which tracemalloc does not see)
    nor the host side (numpy, which it does) hold anything of a cache layer's size."""
    start_backend("webnn")
    model, _, _ = load_model(decoder_checkpoint("llama"), "webnn", sharing=False)
    graphs = DecodeGraphs(model)
    # a wide cache, so that one layer's keys (64 KiB) dwarf the logits and the new columns
    cache, logits = _prefilled(model, PROMPTS[:1], 1024)
    one = np.ones((1, 1), dtype=bool)
    token = logits.argmax(-1)[:, None]
    for _ in range(2):  # capture, then a first replay
        token = graphs.forward(cache, token, one).numpy().argmax(-1)[:, None]
    host_keys, _ = cache.to_host()
    layer_bytes = host_keys[0].nbytes
    assert layer_bytes >= 64 << 10
    (captured,) = [c for c in graphs._captured.values() if c is not None]
    outputs: list[int] = []
    replay = captured.replay

    def counted(*inputs: Any) -> Any:
        results = replay(*inputs)
        outputs.extend(int(np.prod(r.shape)) * r.dtype.itemsize for r in results)
        return results

    monkeypatch.setattr(captured, "replay", counted)
    tracemalloc.start()
    try:
        peaks = []
        for _ in range(4):
            tracemalloc.reset_peak()
            current, _ = tracemalloc.get_traced_memory()
            token = graphs.forward(cache, token, one).numpy().argmax(-1)[:, None]
            peaks.append(tracemalloc.get_traced_memory()[1] - current)
    finally:
        tracemalloc.stop()
    assert cache.to_host()[0] is host_keys, "the host cache was replaced, not written"
    assert len(outputs) == 4 * 3, "logits and the new keys and values of every layer"
    assert max(outputs) < layer_bytes // 8, f"the step graph returned {max(outputs)} bytes"
    assert max(peaks) < layer_bytes // 2, f"a step allocated {max(peaks)} bytes at its peak"


class _WritesItsCache:
    """A decoder that writes its cache itself (``step.update``) instead of attending through
    ``step.attend``: its steps cannot be captured in the appending form."""

    def __init__(self, model: Any) -> None:
        self._model = model

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, input_ids: Any, step: Any, *, last_only: bool = True) -> Any:
        step._appending = None
        return self._model(input_ids, step, last_only=last_only)


def test_a_model_that_writes_its_cache_runs_traced_with_the_same_tokens() -> None:
    start_backend("webnn")
    model, _, _ = load_model(decoder_checkpoint("llama"), "webnn", sharing=False)
    tokens = []
    for decoder in (model, _WritesItsCache(model)):
        graphs = DecodeGraphs(decoder)
        cache, logits = _prefilled(decoder, PROMPTS, 16)
        produced = [logits.argmax(-1)]
        for _ in range(6):
            logits = graphs.forward(cache, produced[-1][:, None], np.ones((2, 1), bool)).numpy()
            produced.append(logits.argmax(-1))
        tokens.append(np.stack(produced, axis=1))
        if decoder is model:
            assert graphs.captured == 1 and cache.on_host
        else:
            assert graphs.captured == 0 and not cache.on_host
    np.testing.assert_array_equal(tokens[0], tokens[1])
