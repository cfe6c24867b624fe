"""Decoder parity against transformers (torch, CPU) on tiny seeded checkpoints, every backend.

Per family (Llama, Llama with llama3 rope scaling, Mistral with a sliding window, Qwen2,
Qwen3, GPT-2): prompt logits within 1e-4 (cpu, webnn) / 1e-3 (webgpu); 32 greedy tokens equal
to ``generate(do_sample=False)``, for two prompts of different lengths decoded together;
the same tokens with and without the KV cache. Configs as transformers 4 writes them load to
the same model; unsupported options and config/weights disagreements raise typed errors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import CheckpointError, UnsupportedArchitectureError
from ipfs_accelerate.models.generation import (
    GenerationDefaults,
    GenerationEngine,
    KVCache,
    SamplingParams,
)
from ipfs_accelerate.models.loading import load_model, read_json
from ipfs_accelerate.tensor import from_numpy
from tests.models._decoder_checkpoints import FAMILIES, decoder_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(300)

TOLERANCE = {"cpu": 1e-4, "webnn": 1e-4, "webgpu": 1e-3}
PROMPT = [3, 17, 40, 22, 5, 9, 100, 120, 33, 7, 8, 9, 10, 11, 12, 13, 14, 15]
PROMPTS = [[3, 17, 40, 22, 5], [9, 100, 120, 33, 7, 8, 9, 60, 61]]


class _Decoder:
    def __init__(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(directory / "tokenizer.json"))

    def decode(self, ids: Any, *, skip_special_tokens: bool = True) -> str:
        return str(self._tokenizer.decode(list(ids), skip_special_tokens=skip_special_tokens))


def _logits(directory: Path, device: str, ids: list[int]) -> np.ndarray:
    model, _, _ = load_model(directory, device, sharing=False)
    cache = KVCache(model.cache_shape(), 1, 32, device)
    step = cache.begin(np.ones((1, len(ids)), dtype=bool))
    return model(from_numpy(np.array([ids]), device), step, last_only=False).numpy()


def _reference_logits(directory: Path, ids: list[int]) -> np.ndarray:
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits.numpy()


@pytest.mark.parametrize("family", FAMILIES)
def test_prompt_logits_match_transformers(device: str, family: str) -> None:
    directory = decoder_checkpoint(family)
    ours = _logits(directory, device, PROMPT)
    reference = _reference_logits(directory, PROMPT)
    assert ours.shape == reference.shape
    diff = float(np.max(np.abs(ours - reference)))
    assert diff <= TOLERANCE[device], f"{family} on {device}: max abs diff {diff:.3g}"


def _engine(directory: Path, device: str) -> GenerationEngine:
    model, checkpoint, _ = load_model(directory, device, sharing=False)
    defaults = GenerationDefaults.from_configs(
        read_json(directory / "generation_config.json"), checkpoint.config
    )
    return GenerationEngine(model, _Decoder(directory), defaults)


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_tokens_match_generate_with_and_without_cache(device: str, family: str) -> None:
    directory = decoder_checkpoint(family)
    engine = _engine(directory, device)
    params = [SamplingParams(max_new_tokens=32)] * len(PROMPTS)
    cached = engine.generate(PROMPTS, params)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    for prompt, result in zip(PROMPTS, cached, strict=True):
        expected = hf.generate(
            torch.tensor([prompt]), do_sample=False, max_new_tokens=32, pad_token_id=0
        )[0, len(prompt) :].tolist()
        assert result.token_ids == expected, f"{family} on {device}"
    assert any(len(r.token_ids) == 32 for r in cached), "the test needs one full-length run"
    if device == "cpu" or family in ("llama", "gpt2"):
        uncached = engine.generate(PROMPTS, params, use_cache=False)
        assert [r.token_ids for r in uncached] == [r.token_ids for r in cached]


def test_cache_grows_when_a_generation_outruns_it(
    device: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cache allocated for one new token doubles as decoding goes (in place on the CPU,
    functionally elsewhere) and gives the tokens of one allocated at full size."""
    from ipfs_accelerate.models.generation import _engine as engine_module

    engine = _engine(decoder_checkpoint("qwen2"), device)
    params = [SamplingParams(max_new_tokens=40, ignore_eos=True)] * 2
    expected = [r.token_ids for r in engine.generate(PROMPTS, params)]
    monkeypatch.setattr(engine_module, "INITIAL_NEW_COLUMNS", 1)
    assert [r.token_ids for r in engine.generate(PROMPTS, params)] == expected


def test_webnn_compiles_one_decode_graph_per_cache_bucket() -> None:
    """A long generation on webnn reuses its step graph: compilations grow with the number
    of window buckets (16, 32, 64 columns), not with the tokens."""
    from tests.conftest import start_backend

    backend = start_backend("webnn")
    engine = _engine(decoder_checkpoint("llama"), "webnn")
    params = [SamplingParams(max_new_tokens=40, ignore_eos=True)]
    before = backend.stats.compilations
    result = engine.generate([PROMPTS[1]], params)
    assert len(result[0].token_ids) == 40
    # the prefill and one step graph per window bucket (16, 32, 64 columns)
    assert backend.stats.compilations - before <= 4
    before = backend.stats.compilations
    engine.generate([PROMPTS[1]], params)
    assert backend.stats.compilations == before


def _rewrite_config(source: Path, target: Path, change: Any) -> Path:
    shutil.copytree(source, target)
    config = json.loads((target / "config.json").read_text())
    change(config)
    (target / "config.json").write_text(json.dumps(config))
    return target


def test_transformers4_config_layout_loads_the_same_model(tmp_path: Path) -> None:
    """rope_theta at the top level and rope_scaling (transformers 4) == rope_parameters (5)."""
    source = decoder_checkpoint("llama3")

    def to_v4(config: dict[str, Any]) -> None:
        params = config.pop("rope_parameters")
        config["rope_theta"] = params.pop("rope_theta")
        config["rope_scaling"] = {"type" if "type" in params else "rope_type": "llama3", **params}

    v4 = _rewrite_config(source, tmp_path / "v4", to_v4)
    assert "rope_parameters" not in read_json(v4 / "config.json")
    np.testing.assert_array_equal(_logits(v4, "cpu", PROMPT), _logits(source, "cpu", PROMPT))

    def other_theta(config: dict[str, Any]) -> None:
        to_v4(config)
        config["rope_theta"] = 500.0

    changed = _rewrite_config(source, tmp_path / "theta", other_theta)
    assert np.abs(_logits(changed, "cpu", PROMPT) - _logits(source, "cpu", PROMPT)).max() > 1e-3


UNSUPPORTED, BAD = UnsupportedArchitectureError, CheckpointError


@pytest.mark.parametrize(
    ("family", "change", "error", "named"),
    [
        # options this package does not implement
        ("llama", lambda c: c.update(model_type="falcon"), UNSUPPORTED, "falcon"),
        ("llama", lambda c: c["rope_parameters"].update(rope_type="yarn"), UNSUPPORTED, "yarn"),
        ("llama", lambda c: c.update(partial_rotary_factor=0.5), UNSUPPORTED, "partial_rotary"),
        ("qwen2", lambda c: c.update(layer_types=["chunked"] * 2), UNSUPPORTED, "chunked"),
        ("gpt2", lambda c: c.update(add_cross_attention=True), UNSUPPORTED, "cross_attention"),
        (
            "gpt2",
            lambda c: c.update(scale_attn_by_inverse_layer_idx=True),
            UNSUPPORTED,
            "inverse_layer_idx",
        ),
        # config and weights disagreeing, or a config value that cannot be right
        ("llama", lambda c: c.update(intermediate_size=48), BAD, "mlp.gate_proj.weight"),
        ("qwen3", lambda c: c.update(tie_word_embeddings=False), BAD, "tie_word_embeddings"),
        ("mistral", lambda c: c.update(sliding_window=-3), BAD, "sliding_window"),
        ("llama3", lambda c: c["rope_parameters"].pop("low_freq_factor"), BAD, "low_freq_factor"),
    ],
)
def test_bad_configs_raise_naming_the_option(
    tmp_path: Path, family: str, change: Any, error: type[Exception], named: str
) -> None:
    directory = _rewrite_config(decoder_checkpoint(family), tmp_path / "ckpt", change)
    with pytest.raises(error, match=named):
        load_model(directory, "cpu", sharing=False)


def test_auto_device_treats_decoders_like_graph_friendly_encoders(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without a hardware GPU a decoder goes where BERT goes (webnn when it is available):
    its decode step is one compiled graph per cache bucket."""
    from ipfs_accelerate import hal
    from ipfs_accelerate.models import TextGenerator

    monkeypatch.delenv("IPFS_ACCELERATE_DEVICE", raising=False)
    expected = hal.select_backend("bert").name
    for family in ("llama", "mistral", "qwen2", "qwen3", "gpt2"):
        assert hal.select_backend(family).name == expected, family
    generator = TextGenerator.from_pretrained(decoder_checkpoint("gpt2"), sharing=False)
    assert generator.device == expected and generator.device_reason
