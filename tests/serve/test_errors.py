"""Bad input gets the imitated API's status and error body, never a 500 with a traceback;
what the server cannot foresee becomes a 500 in the same shape, and one request's failure
stays that request's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest

from ipfs_accelerate.errors import BackendError

from .conftest import MINILM, Running, auth

pytestmark = pytest.mark.timeout(60)

OPENAI_KEYS = {"message", "type", "param", "code"}


def _openai_error(reply: httpx.Response, status: int) -> dict[str, Any]:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error"} and set(body["error"]) == OPENAI_KEYS
    assert "Traceback" not in reply.text
    return body["error"]  # type: ignore[no-any-return]


def _tei_error(reply: httpx.Response, status: int, error_type: str) -> str:
    assert reply.status_code == status, reply.text
    body = reply.json()
    assert set(body) == {"error", "error_type"} and body["error_type"] == error_type
    return body["error"]  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"[1, 2, 3]", b'{"input": {"a": 1}, "model": "M"}',
     b'{"input": [1.5], "model": "M"}', b'{"input": [["a"]], "model": "M"}',
     b'{"input": ["a", 1], "model": "M"}', b'{"input": [], "model": "M"}',
     b'{"input": "x", "model": "M", "encoding_format": "int8"}', b'{"model": "M"}',
     b'{"input": "x"}', b'{"input": "x", "model": 7}', "\u00ff".encode("latin-1"),
     b'{"input": [[]], "model": "M"}'],
)  # fmt: skip
def test_malformed_openai_bodies_are_400s(server: Running, body: bytes) -> None:
    body = body.replace(b'"M"', json.dumps(MINILM).encode())
    reply = httpx.post(server.url + "/v1/embeddings", content=body, headers=auth())
    error = _openai_error(reply, 400)
    assert error["type"] == "invalid_request_error" and error["message"]


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [(b"{not json", 422, "Validation"), (b'{"inputs": 5}', 422, "Validation"),
     (b"{}", 422, "Validation"), (b'{"inputs": []}', 400, "Empty"),
     (b'{"inputs": "x", "truncate": 1}', 422, "Validation"), (b'{"inputs": [[]]}', 400, "Empty")],
)  # fmt: skip
def test_malformed_tei_bodies(server: Running, body: bytes, status: int, error_type: str) -> None:
    _tei_error(httpx.post(server.url + "/embed", content=body, headers=auth()), status, error_type)


def test_oversize_bodies_are_413_in_each_shape(server: Running) -> None:
    big = b"x" * (2 * 1024 * 1024 + 1)
    error = _openai_error(
        httpx.post(server.url + "/v1/embeddings", content=big, headers=auth()), 413
    )
    assert "exceeds this server's limit of 2097152 bytes" in error["message"]
    _tei_error(httpx.post(server.url + "/embed", content=big, headers=auth()), 413, "Validation")
    kserve = httpx.post(f"{server.url}/v2/models/{MINILM}/infer", content=big, headers=auth())
    assert kserve.status_code == 413 and "limit" in kserve.json()["error"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit trips while reading
        for _ in range(40):
            yield b"y" * 65536

    streamed = httpx.post(server.url + "/v1/embeddings", content=chunks(), headers=auth())
    assert "more than" in _openai_error(streamed, 413)["message"]
    upload = httpx.post(
        server.url + "/v1/audio/transcriptions", headers=auth(),
        files={"file": ("a.wav", big)}, data={"model": "tiny-whisper"},
    )  # fmt: skip
    _openai_error(upload, 413)


def test_unknown_routes_and_methods(server: Running) -> None:
    error = _openai_error(httpx.get(server.url + "/v1/nope", headers=auth()), 404)
    assert error["message"] == "Invalid URL (GET /v1/nope)"
    assert _openai_error(httpx.get(server.url + "/v1/embeddings", headers=auth()), 405)[
        "message"
    ].startswith("Invalid method")
    tei = httpx.get(server.url + "/embed", headers=auth())
    assert tei.status_code == 405 and tei.content == b""
    assert httpx.post(server.url + "/v2/nothing", headers=auth()).json().keys() == {"error"}


class _FlakyEmbedder:
    """The MiniLM pipeline, except that a batch holding token id 2000 fails with an unexpected
    error (whose message must not reach the client) and one holding 2001 with a backend error."""

    def __init__(self, real: Any) -> None:
        self._real = real

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)

    def embed_tokens(self, ids: np.ndarray, *args: Any, **kwargs: Any) -> Any:
        if (ids == 2000).any():
            raise RuntimeError("an unexpected bug with a secret path /root/secret in its message")
        if (ids == 2001).any():
            raise BackendError("cpu: the device fell over")
        return self._real.embed_tokens(ids, *args, **kwargs)


@pytest.fixture(scope="module")
def flaky(registry: Any) -> Iterator[str]:
    from ipfs_accelerate.serve import (
        BackgroundServer,
        ModelRegistry,
        ServedModel,
        ServerConfig,
        create_app,
    )

    model = ServedModel(
        name="flaky",
        kind="embedding",
        source="test",
        pipeline=_FlakyEmbedder(registry.get(MINILM).pipeline),
    )
    models = ModelRegistry([model])
    app = create_app(ServerConfig(device="cpu", max_batch_size=16, max_wait_ms=50), registry=models)
    with BackgroundServer(app) as running:
        yield running.url
    model.executor.shutdown(wait=False)


def test_unexpected_failures_are_500s_in_shape_and_stay_per_request(flaky: str) -> None:
    good = ["fine one", "fine two", "fine three"]

    async def main() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=flaky, timeout=30) as client:
            bodies = [{"model": "flaky", "input": t} for t in good[:2]]
            bodies.append({"model": "flaky", "input": [101, 2000, 102]})
            bodies.append({"model": "flaky", "input": good[2]})
            return await asyncio.gather(*(client.post("/v1/embeddings", json=b) for b in bodies))

    replies = asyncio.run(main())
    crashed = _openai_error(replies[2], 500)
    assert (
        crashed["type"] == "server_error"
        and "secret" not in replies[2].text
        and "Traceback" not in replies[2].text
    )
    for reply in (replies[0], replies[1], replies[3]):
        assert reply.status_code == 200 and len(reply.json()["data"][0]["embedding"]) == 384
    backend = httpx.post(flaky + "/embed", json={"inputs": [[101, 2001, 102]]})
    assert "the device fell over" in _tei_error(backend, 424, "Backend")
    again = httpx.post(flaky + "/v1/embeddings", json={"model": "flaky", "input": "still alive"})
    assert again.status_code == 200


def test_metrics_count_requests_and_errors(server: Running) -> None:
    httpx.post(
        server.url + "/v1/embeddings", json={"model": MINILM, "input": "metrics"}, headers=auth()
    )
    httpx.post(
        server.url + "/v1/embeddings", json={"model": "nope", "input": "metrics"}, headers=auth()
    )
    text = httpx.get(server.url + "/metrics").text
    assert (
        'ipfs_accelerate_serve_requests_total{method="POST",route="/v1/embeddings",status="200"}'
        in text
    )
    assert 'ipfs_accelerate_serve_errors_total{kind="unknown_model"}' in text
    assert f'ipfs_accelerate_serve_model_loads{{model="{MINILM}"}} 1.0' in text
    assert (
        "ipfs_accelerate_serve_embedding_batch_size_bucket" in text
        and "sk-serve-test-key" not in text
    )
    reply = httpx.get(server.url + "/v1/models", headers=auth())
    assert reply.headers["x-replica-id"] and len(reply.headers["x-request-id"]) == 32
