"""Server configuration, model loading and naming, the background server, and the pipeline
surface the server relies on (TextEmbedder.embed_tokens, SpeechRecognizer.transcribe_segments)."""

from __future__ import annotations

import pickle
import socket
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import (
    ConfigurationError,
    InvalidArgumentError,
    ServerStartError,
    UnsupportedArchitectureError,
)
from ipfs_accelerate.serve import ModelRegistry, ModelSpec, ServerConfig

from .conftest import MINILM, Running

pytestmark = pytest.mark.timeout(60)


def test_model_specs_and_config_validation(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ModelSpec.parse("org/model") == ModelSpec("org/model")
    assert ModelSpec.parse("minilm=org/model") == ModelSpec("org/model", name="minilm")
    for bad in ("=org/model", "name=", ""):
        with pytest.raises(ConfigurationError):
            ModelSpec.parse(bad)
    with pytest.raises(ConfigurationError, match="kind"):
        ModelSpec("x", kind="translation")
    for field, value in (
        ("max_batch_size", 0),
        ("max_wait_ms", -1),
        ("max_body_bytes", True),
        ("models", ()),
    ):
        with pytest.raises(ConfigurationError, match=field):
            ServerConfig(**{field: value})
    config = ServerConfig(models=("a", "b=c"), api_key="sk-secret-value")
    assert config.models == (ModelSpec("a"), ModelSpec("c", name="b"))
    assert "sk-secret-value" not in repr(config) and "sk-secret-value" not in repr(config.api_key)
    with pytest.raises(TypeError):
        pickle.dumps(config)  # the key never travels in pickles (Ray stores deployment arguments)
    monkeypatch.setenv("MY_SERVER_KEY", "from-the-environment")
    assert (
        ServerConfig(api_key_env="MY_SERVER_KEY").resolved_api_key().reveal()
        == "from-the-environment"
    )
    with pytest.raises(ConfigurationError, match="NOT_SET_ANYWHERE"):
        ServerConfig(api_key_env="NOT_SET_ANYWHERE").resolved_api_key()


def test_registry_names_kinds_and_failures(
    checkpoints: dict[str, Path], tmp_path: Path, registry: Any
) -> None:
    assert [(m.name, m.kind) for m in registry] == [
        (MINILM, "embedding"), ("tiny-vit", "image-classification"),
        ("tiny-clip", "zero-shot-image-classification"), ("tiny-whisper", "speech-recognition"),
    ]  # fmt: skip
    loaded = ModelRegistry.load([str(checkpoints["vit"])], device="cpu")
    assert [m.name for m in loaded] == [checkpoints["vit"].name]
    loaded.close()
    with pytest.raises(ConfigurationError, match="two served models"):
        ModelRegistry([*registry, registry.get("tiny-vit")])
    odd = tmp_path / "t5"
    odd.mkdir()
    (odd / "config.json").write_text('{"model_type": "t5"}')
    with pytest.raises(UnsupportedArchitectureError, match="cannot be served"):
        ModelRegistry.load([str(odd)], device="cpu")


def test_background_server_reports_a_port_in_use() -> None:
    from starlette.applications import Starlette

    from ipfs_accelerate.serve import BackgroundServer

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(ServerStartError, match=str(port)):
            BackgroundServer(Starlette(), port=port).start(timeout=10)


def test_embed_tokens_matches_embed_and_checks_its_input(server: Running) -> None:
    embedder = server.pipeline(MINILM)
    texts = ["short", "a somewhat longer sentence here"]
    encoded = embedder.tokenizer(texts)
    from_tokens = embedder.embed_tokens(encoded.input_ids, encoded.attention_mask)
    np.testing.assert_allclose(from_tokens, embedder.embed(texts), atol=1e-5)
    # MiniLM's modules.json ends in Normalize: sentence-transformers' vectors are unit rows
    # even unasked; a server leaves that module out as TEI does
    kept = embedder.embed_tokens(encoded.input_ids, encoded.attention_mask, normalize=False)
    np.testing.assert_allclose(np.linalg.norm(kept, axis=1), 1.0, atol=1e-5)
    raw = embedder.embed_tokens(
        encoded.input_ids, encoded.attention_mask, normalize=False, normalize_module=False
    )
    assert not np.allclose(np.linalg.norm(raw, axis=1), 1.0)
    for bad in (np.array([[101, 40000, 102]]), np.array([[101, -1, 102]]),
                np.zeros((1, 600), dtype=np.int64), np.array([[0.5, 1.0]]),
                np.zeros((0, 3), dtype=np.int64)):  # fmt: skip
        with pytest.raises(InvalidArgumentError):
            embedder.embed_tokens(bad)
    with pytest.raises(InvalidArgumentError, match="attention_mask"):
        embedder.embed_tokens(encoded.input_ids, np.ones((1, 2), dtype=np.int64))


def test_transcribe_segments_are_the_transcript_in_windows(server: Running) -> None:
    whisper = server.pipeline("tiny-whisper")
    rng = np.random.default_rng(1)
    samples = (0.1 * rng.standard_normal(16000 * 40)).astype(np.float32)  # 40 s: two windows
    segments = whisper.transcribe_segments((samples, 16000), language="de")
    assert len(segments) == 2 and segments[0].start == 0.0
    assert segments[0].end == segments[1].start and segments[1].end == pytest.approx(40.0)
    assert {s.language for s in segments} == {"de"}
    assert " ".join(t for t in (s.text.strip() for s in segments) if t) == whisper.transcribe(
        (samples, 16000), language="de"
    )
    detected = whisper.transcribe_segments((samples[:16000], 16000))
    assert detected[0].language in {"en", "fr", "de"}
    tokens = detected[0].tokens
    assert tokens and whisper.generation.eos not in tokens
    assert whisper.tokenizer.decode(tokens, skip_special_tokens=True) == detected[0].text
    # a segment's tokens are the generated ones only: no prompt token leaks in
    gen = whisper.generation
    prompt_ids = {gen.decoder_start, gen.no_timestamps, *gen.lang_to_id.values()}
    prompt_ids |= {whisper._task_id(t) for t in ("transcribe", "translate")}
    for segment in (*segments, *detected):
        assert not prompt_ids & set(segment.tokens), segment.tokens
    row = whisper.generate(whisper.feature_extractor([samples[:16000]]))[0].tolist()
    assert (
        row[4 : 4 + len(tokens)] == tokens
    )  # after <|startoftranscript|> <|lang|> <|task|> <|notimestamps|>


@pytest.mark.parametrize(
    ("shape_buckets", "device", "mode"),
    [
        (None, "cpu", "exact"),
        (None, "webnn", "buckets"),
        (True, "cpu", "buckets"),
        (False, "webnn", "exact"),
    ],
)
def test_shape_buckets_set_the_embedders_one_padding_policy(
    shape_buckets: bool | None, device: str, mode: str
) -> None:
    """The server's setting is the embedder's shape policy (no second padding on top): None
    pads exactly on graph-compiling backends; padded batches still give the same vectors."""
    pytest.importorskip("onnxruntime")
    # its own name: the served-model load counter of the shared MiniLM stays as other tests expect
    registry = ModelRegistry.load(
        (ModelSpec(MINILM, name=f"padding-{mode}-{device}"),), device, shape_buckets=shape_buckets
    )
    try:
        (served,) = list(registry)
        policy = served.pipeline.shape_policy()
        assert policy.mode == mode
        assert policy.plan(3, 13, 30) == ((4, 16, False) if mode == "buckets" else (3, 13, True))
        engine = served.embedding
        sequences = [[101, 7592, 102], [101, 7592, 2088, 2003, 2307, 102]]
        vectors = engine.forward(sequences)
        alone = [engine.forward([s])[0] for s in sequences]
        np.testing.assert_allclose(vectors, np.stack(alone), atol=2e-5)
    finally:
        registry.close()
