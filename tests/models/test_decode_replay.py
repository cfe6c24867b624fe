"""Decode steps replayed from a captured webnn graph (no model Python, no trace per token).

Greedy tokens and logits of replayed steps equal the traced path's and transformers' (Llama,
Mistral with a sliding window, GPT-2; one row, and rows of different lengths; across window
buckets and cache growth); a replayed step creates no op node, compiles nothing and runs one
graph; capture refuses a function that reads an undeclared per-call value; the op layer's
checks (gather index range) still raise on replay.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate import ops
from ipfs_accelerate.errors import IndexOutOfRangeError, InvalidArgumentError
from ipfs_accelerate.models.generation import KVCache
from ipfs_accelerate.models.generation._cache import bucket, left_padded
from ipfs_accelerate.models.generation._replay import DecodeGraphs
from ipfs_accelerate.models.loading import load_model
from ipfs_accelerate.tensor import Tensor, from_numpy
from tests.conftest import start_backend
from tests.models._decoder_checkpoints import decoder_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(300)

PROMPTS = [[3, 17, 40, 22, 5], [9, 100, 120, 33, 7, 8, 9, 60, 61]]
#: decode steps: from 9 columns (window 16, capacity 16) past 32 (window 64, two growths)
STEPS = 26


def _drive(
    model: Any, prompts: list[list[int]], graphs: DecodeGraphs
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy decoding of left-padded ``prompts`` through ``graphs``, starting from the
    smallest cache (so that it grows twice): the tokens (B, STEPS + 1) and each step's logits."""
    ids, valid = left_padded(prompts)
    batch, width = ids.shape
    cache = KVCache(model.cache_shape(), batch, bucket(width, 1 << 62), model.device)
    logits = model(from_numpy(ids, model.device), cache.begin(valid)).numpy()
    steps = [logits]
    tokens = [logits.argmax(-1)]
    for _ in range(STEPS):
        logits = graphs.forward(cache, tokens[-1][:, None], np.ones((batch, 1), bool)).numpy()
        steps.append(logits)
        tokens.append(logits.argmax(-1))
    assert cache.capacity == 64, "the run must cross two cache growths"
    return np.stack(tokens, axis=1), steps


def _model(family: str) -> Any:
    model, _, _ = load_model(decoder_checkpoint(family), "webnn", sharing=False)
    return model


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt2"])
@pytest.mark.parametrize("rows", [1, 2], ids=["batch1", "ragged"])
def test_replayed_steps_equal_the_traced_path_and_transformers(family: str, rows: int) -> None:
    start_backend("webnn")
    prompts = PROMPTS[-rows:]
    model = _model(family)
    replay = DecodeGraphs(model)
    assert replay.enabled
    traced = DecodeGraphs(model)
    traced.enabled = False
    tokens, logits = _drive(model, prompts, replay)
    assert replay.captured >= 3, "one captured step per window bucket (16, 32, 64)"
    traced_tokens, traced_logits = _drive(model, prompts, traced)
    np.testing.assert_array_equal(tokens, traced_tokens)
    for ours, theirs in zip(logits, traced_logits, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)
    hf = transformers.AutoModelForCausalLM.from_pretrained(decoder_checkpoint(family)).eval()
    for row, prompt in enumerate(prompts):
        sequence = torch.tensor([prompt + tokens[row, :-1].tolist()])
        with torch.no_grad():
            reference = hf(sequence).logits[0, len(prompt) - 1 :].numpy()
        ours = np.stack([step[row] for step in logits])
        diff = float(np.max(np.abs(ours - reference)))
        assert diff <= 1e-4, f"{family}: replayed logits differ from transformers by {diff:.3g}"


def test_a_replayed_step_runs_one_graph_and_no_op_layer() -> None:
    backend = start_backend("webnn")
    model = _model("llama")
    graphs = DecodeGraphs(model)
    cache = KVCache(model.cache_shape(), 1, 32, "webnn")
    prompt = np.array([PROMPTS[0]], dtype=np.int64)
    token = model(from_numpy(prompt, "webnn"), cache.begin(np.ones(prompt.shape, bool))).numpy()
    one = np.ones((1, 1), dtype=bool)
    # the first step of the window-16 signature captures it
    token = graphs.forward(cache, token.argmax(-1)[:, None], one).numpy()
    stats = backend.stats
    before = (stats.compilations, stats.traced_ops, stats.dispatches, stats.replays)
    steps = 8  # columns 6..13: all in the 16-column window
    for _ in range(steps):
        token = graphs.forward(cache, token.argmax(-1)[:, None], one).numpy()
    after = (stats.compilations, stats.traced_ops, stats.dispatches, stats.replays)
    assert after[0] == before[0], "a replayed step compiled a graph"
    assert after[1] == before[1], "a replayed step created op-layer nodes"
    assert after[2] - before[2] == steps, "one graph dispatch per step"
    assert after[3] - before[3] == steps
    # a replayed cache lives on the host: it grows there (a numpy copy, no graph run)
    assert cache.on_host
    cache._grow(64)
    dispatches = stats.dispatches
    graphs.forward(cache, token.argmax(-1)[:, None], one).numpy()
    assert stats.dispatches - dispatches == 1  # the step (captured for the new capacity)


def test_cpu_decodes_in_place_without_capture() -> None:
    model, _, _ = load_model(decoder_checkpoint("llama"), "cpu", sharing=False)
    assert not DecodeGraphs(model).enabled


def _webnn(array: np.ndarray) -> Tensor:
    return from_numpy(array, "webnn")


def test_capture_refuses_an_undeclared_per_call_leaf() -> None:
    backend = start_backend("webnn")
    x = _webnn(np.arange(4, dtype=np.float32))
    per_call = np.ones(4, dtype=np.float32)
    assert backend.capture(lambda a: [a + _webnn(per_call)], [x]) is None
    # a parameter (a weight) is not per call: it may be embedded
    weight = _webnn(np.full(4, 2.0, dtype=np.float32))
    from ipfs_accelerate import hal

    hal.mark_parameter(weight)
    captured = backend.capture(lambda a: [a * weight, a + 1.0], [x])
    assert captured is not None
    product, total = captured.replay(np.array([1, 2, 3, 4], dtype=np.float32))
    np.testing.assert_array_equal(product.numpy(), [2, 4, 6, 8])
    np.testing.assert_array_equal(total.numpy(), [2, 3, 4, 5])


def test_declared_parameters_are_inputs_and_replay_checks_its_inputs() -> None:
    backend = start_backend("webnn")
    from ipfs_accelerate import hal

    a = _webnn(np.ones((2, 3), dtype=np.float32))
    hal.mark_parameter(a)  # declared: fed on every replay, never frozen
    b = _webnn(np.ones((2, 3), dtype=np.float32))
    captured = backend.capture(lambda x, y: [x - y, x], [a, b])
    assert captured is not None
    new_a = np.arange(6, dtype=np.float32).reshape(2, 3)
    difference, same = captured.replay(new_a, b)
    np.testing.assert_array_equal(difference.numpy(), new_a - 1)
    np.testing.assert_array_equal(same.numpy(), new_a)
    # the graph lives in the backend's bounded cache: dropped, it is compiled again
    compilations = backend.stats.compilations
    backend.clear_cache()
    difference, _ = captured.replay(new_a, np.full((2, 3), 2.0, dtype=np.float32))
    np.testing.assert_array_equal(difference.numpy(), new_a - 2)
    assert backend.stats.compilations == compilations + 1
    with pytest.raises(InvalidArgumentError, match=r"input 1 is float32 \[3, 2\]"):
        captured.replay(new_a, np.ones((3, 2), dtype=np.float32))
    with pytest.raises(InvalidArgumentError, match="1 inputs given, the captured function takes 2"):
        captured.replay(new_a)


def test_replay_keeps_the_gather_index_check() -> None:
    backend = start_backend("webnn")
    from ipfs_accelerate import hal

    table = _webnn(np.arange(12, dtype=np.float32).reshape(6, 2))
    hal.mark_parameter(table)
    index = _webnn(np.array([0, 5], dtype=np.int64))
    captured = backend.capture(lambda i: [ops.gather(table, i, axis=0)], [index])
    assert captured is not None
    (rows,) = captured.replay(np.array([2, 3], dtype=np.int64))
    np.testing.assert_array_equal(rows.numpy(), [[4, 5], [6, 7]])
    with pytest.raises(IndexOutOfRangeError, match="index 6"):
        captured.replay(np.array([1, 6], dtype=np.int64))


def test_continuous_batching_replays_its_steps_with_the_tokens_of_solo_runs() -> None:
    """Rows join a running batch on webnn (new row counts, rearranged caches) and each
    sequence gets the tokens it gets alone; the steps are replayed."""
    from ipfs_accelerate.models.generation import SamplingParams
    from ipfs_accelerate.models.generation._batch import ContinuousBatch
    from tests.models.test_decoders import _engine

    backend = start_backend("webnn")
    engine = _engine(decoder_checkpoint("llama"), "webnn")
    lengths = [30, 12, 20]
    params = [SamplingParams(max_new_tokens=n, ignore_eos=True) for n in lengths]
    prompts = [PROMPTS[0], PROMPTS[1], [5, 6, 7]]
    alone = [engine.generate([p], [s])[0].token_ids for p, s in zip(prompts, params, strict=True)]
    batch = ContinuousBatch(engine, max_rows=4)
    produced: dict[Hashable, list[int]] = {0: [], 1: [], 2: []}
    replays = backend.stats.replays
    batch.add(0, [prompts[0]], [params[0]])
    for step in range(200):
        if step == 3:
            batch.add(1, [prompts[1]], [params[1]])
        if step == 6:
            batch.add(2, [prompts[2]], [params[2]])
        for owner, event in batch.step():
            produced[owner].append(event.token_id)
        if step > 6 and not batch.active and not batch.waiting:
            break
    assert [produced[i] for i in range(3)] == alone
    # every decode step replays (a signature's first step right after capturing it); the
    # longest sequence alone decodes lengths[0] - 1 times after its prefill
    assert backend.stats.replays - replays >= lengths[0] - 1


def test_capacities_are_quarter_octaves_from_fine_from() -> None:
    """Past FINE_FROM columns the capacity (what a replayed step reads) is at most a quarter
    more than the columns asked for, with four sizes per doubling; below, powers of two."""
    from ipfs_accelerate.models.generation._cache import FINE_FROM, capacity_bucket

    assert [capacity_bucket(n) for n in (1, 16, 17, 200, 256)] == [16, 16, 32, 256, 256]
    fine = [capacity_bucket(n) for n in (257, 320, 321, 512, 513, 640, 641, 1025)]
    assert fine == [320, 320, 384, 512, 640, 640, 768, 1280]
    previous = 0
    for n in range(1, 4097):
        size = capacity_bucket(n)
        assert size >= max(n, previous)
        assert size <= (1.25 * n if n > FINE_FROM else max(2 * n - 1, 16))
        previous = size
    assert {capacity_bucket(n) for n in range(1025, 2049)} == {1280, 1536, 1792, 2048}


def _replayed(model: Any, capacity: int, steps: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Greedy replayed steps of the two ragged PROMPTS from a cache of ``capacity``."""
    ids, valid = left_padded(PROMPTS)
    batch, width = ids.shape
    graphs = DecodeGraphs(model)
    cache = KVCache(model.cache_shape(), batch, capacity, model.device)
    logits = model(from_numpy(ids, model.device), cache.begin(valid)).numpy()
    tokens, seen = [logits.argmax(-1)], [logits]
    for _ in range(steps):
        logits = graphs.forward(cache, tokens[-1][:, None], np.ones((batch, 1), bool)).numpy()
        tokens.append(logits.argmax(-1))
        seen.append(logits)
    assert cache.capacity == capacity and graphs.captured == 1
    return np.stack(tokens, axis=1), seen


@pytest.mark.parametrize("family", ["llama", "mistral"])
def test_a_cache_filled_to_its_capacity_replays_the_logits_of_a_wider_one(family: str) -> None:
    """A replayed step attends over every column of the capacity, the unfilled ones masked:
    a capacity the prompt and the new tokens fill exactly (20, not a power of two) gives the
    tokens and logits of one with 44 masked columns more (64); sliding windows included."""
    start_backend("webnn")
    model = _model(family)
    tight_tokens, tight = _replayed(model, 20, 11)  # 9 prompt columns + 11 steps = 20
    wide_tokens, wide = _replayed(model, 64, 11)
    np.testing.assert_array_equal(tight_tokens, wide_tokens)
    for ours, theirs in zip(tight, wide, strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-5)


def test_quarter_octave_capacities_generate_transformers_tokens_across_growth(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With quarter octaves from 16 columns (the tiny model's context is 64), the engine's
    first capacity is 24 (9 + 12 new columns asked for), the cache then doubles to 48 and 96:
    the greedy tokens are transformers' and each replayed signature is one of those
    capacities."""
    from ipfs_accelerate.models.generation import SamplingParams
    from ipfs_accelerate.models.generation import _cache as cache_module
    from ipfs_accelerate.models.generation import _engine as engine_module
    from tests.models.test_decoders import _engine

    start_backend("webnn")
    monkeypatch.setattr(cache_module, "FINE_FROM", 16)
    monkeypatch.setattr(engine_module, "INITIAL_NEW_COLUMNS", 12)
    directory = decoder_checkpoint("llama")
    engine = _engine(directory, "webnn")
    prompt = PROMPTS[1]
    new = 64 - len(prompt) - 1
    result = engine.generate([prompt], [SamplingParams(max_new_tokens=new, ignore_eos=True)])
    capacities = {key[1] for key in engine.decode_graphs._captured}
    assert capacities == {24, 48, 96}
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(new):
            ids.append(int(hf(torch.tensor([ids])).logits[0, -1].argmax()))
    assert result[0].token_ids == ids[len(prompt) :]


@pytest.mark.parametrize(("family", "norms_per_layer"), [("llama", 2), ("qwen3", 4)])
def test_the_decode_step_graph_runs_fused_norm_and_rotary_kernels(
    family: str, norms_per_layer: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The captured step's ONNX model has one (Skip)SimplifiedLayerNormalization per RMSNorm
    (Qwen3: q/k norms too) and one RotaryEmbedding per rotated q and k, and none of the ops
    they replace (docs/webnn.md, "Fused normalization and rotary")."""
    from collections import Counter

    from ipfs_accelerate.webnn import _context

    start_backend("webnn")
    compiled: list[Any] = []
    real = _context.MLGraph._compile.__func__  # type: ignore[attr-defined]

    def spy(cls: Any, context: Any, outputs: Any, nodes: Any, threads: Any = None) -> Any:
        graph = real(cls, context, outputs, nodes, threads)
        compiled.append(graph)
        return graph

    monkeypatch.setattr(_context.MLGraph, "_compile", classmethod(spy))
    model = _model(family)
    _replayed(model, 32, 2)
    layers = model.cache_shape().layers
    step = max(compiled, key=lambda graph: len(graph._lowered.model.graph.input))
    ops_in = Counter(node.op_type for node in step._lowered.model.graph.node)
    # a layer's norms read residual sums, which the Skip kernel computes too, but the first
    # (it reads the embeddings) and the final one (the last column of the sum)
    assert ops_in["SkipSimplifiedLayerNormalization"] == 2 * layers - 1
    assert ops_in["SimplifiedLayerNormalization"] == (norms_per_layer - 2) * layers + 2
    assert ops_in["RotaryEmbedding"] == 2 * layers
    assert not {"ReduceMean", "Sqrt", "Reciprocal", "Neg"} & set(ops_in)
