"""A prompt's attention in query chunks (``PREFILL_QUERY_CHUNK``): each chunk attends only the
columns up to its last query. Logits within the decoders' tolerance of transformers, for
grouped-query heads (Llama), a sliding window (Mistral) and plain heads (GPT-2), for a prompt
fed in one step and in two (the second step's chunks start past cached columns), and greedy
tokens of left-padded prompts decoded together equal to ``generate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate import ops
from ipfs_accelerate.models.generation import KVCache, SamplingParams, _cache
from ipfs_accelerate.models.loading import load_model
from ipfs_accelerate.tensor import from_numpy
from tests.models._decoder_checkpoints import decoder_checkpoint
from tests.models.test_decoders import TOLERANCE, _engine, _reference_logits

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(300)

PROMPT = [3, 17, 40, 22, 5, 9, 100, 120, 33, 7, 8, 9, 10, 11, 12, 13, 14, 15, 61, 62, 70]
CHUNK = 4


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Chunks of CHUNK queries; returns the query lengths every attention product saw."""
    monkeypatch.setattr(_cache, "PREFILL_QUERY_CHUNK", CHUNK)
    seen: list[int] = []
    real = ops.scaled_dot_product_attention

    def spy(query: Any, *args: Any, **kwargs: Any) -> Any:
        seen.append(int(query.shape[-2]))
        return real(query, *args, **kwargs)

    monkeypatch.setattr(ops, "scaled_dot_product_attention", spy)
    return seen


def _prompt_logits(directory: Path, device: str, pieces: list[list[int]]) -> np.ndarray:
    model, _, _ = load_model(directory, device, sharing=False)
    cache = KVCache(model.cache_shape(), 1, 32, device)
    logits = []
    for piece in pieces:
        step = cache.begin(np.ones((1, len(piece)), dtype=bool))
        ids = from_numpy(np.array([piece]), device)
        logits.append(model(ids, step, last_only=False).numpy())
    return np.concatenate(logits, axis=1)


@pytest.mark.parametrize("family", ["llama", "mistral", "gpt2"])
@pytest.mark.parametrize("split", [None, 7], ids=["one-step", "two-steps"])
def test_chunked_prompt_logits_match_transformers(
    device: str, family: str, split: int | None, small_chunks: list[int]
) -> None:
    directory = decoder_checkpoint(family)
    pieces = [PROMPT] if split is None else [PROMPT[:split], PROMPT[split:]]
    ours = _prompt_logits(directory, device, pieces)
    reference = _reference_logits(directory, PROMPT)
    assert ours.shape == reference.shape
    diff = float(np.max(np.abs(ours - reference)))
    assert diff <= TOLERANCE[device], f"{family} on {device}: max abs diff {diff:.3g}"
    # every product holds at most CHUNK queries of each query head of a key/value head
    groups = {"llama": 2, "mistral": 2, "gpt2": 1}[family]
    assert small_chunks and max(small_chunks) <= groups * CHUNK, small_chunks
    assert len(small_chunks) > len(pieces), "the prompt was not cut into chunks"


def test_chunked_padded_batch_greedy_tokens_match_generate(
    device: str, small_chunks: list[int]
) -> None:
    directory = decoder_checkpoint("llama")
    prompts = [PROMPT[:6], PROMPT]
    engine = _engine(directory, device)
    results = engine.generate(prompts, [SamplingParams(max_new_tokens=8)] * 2)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    for prompt, result in zip(prompts, results, strict=True):
        expected = hf.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=8, pad_token_id=0
        )[0, len(prompt) :].tolist()
        assert result.token_ids == expected
