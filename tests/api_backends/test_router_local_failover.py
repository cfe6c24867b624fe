"""Router failover from a remote provider to the local server (issue 17, docs/router.md "Failover
to a local model"): the remote is the OpenAI protocol fake answering 503s, the local target is
this package's ``openai`` backend pointed at ``serve`` (a real uvicorn on loopback) with a tiny
seeded decoder; the router's reply is the local model's greedy text."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.api_backends.router import Router, RouteTarget
from tests.models._decoder_checkpoints import decoder_checkpoint

from ..fakes._server import FakeServer
from ..fakes.openai_fake import OpenAIFake
from .conftest import fast, run

pytestmark = pytest.mark.timeout(180)

LOCAL_MODEL, REMOTE_MODEL = "tiny-llama", "gpt-4o-mini"
API_KEY = "sk-local-failover-key"
HELLO = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def local_server() -> Iterator[tuple[str, Any]]:
    """``serve`` with one tiny Llama decoder on loopback: (its URL, the pipeline it serves)."""
    from ipfs_accelerate.serve import (
        BackgroundServer,
        ModelRegistry,
        ModelSpec,
        ServerConfig,
        create_app,
    )

    models = ModelRegistry.load(
        [ModelSpec(str(decoder_checkpoint("llama")), name=LOCAL_MODEL)], device="cpu"
    )
    app = create_app(ServerConfig(device="cpu", api_key=API_KEY), registry=models)
    served = models.get(LOCAL_MODEL)
    assert served is not None
    try:
        with BackgroundServer(app) as running:
            yield running.url, served.pipeline
    finally:
        models.close()


@asynccontextmanager
async def remote_then_local(url: str) -> AsyncIterator[tuple[FakeServer, Router]]:
    """A router whose first tier is the OpenAI fake and whose fallback is the local server."""
    async with OpenAIFake() as remote_fake:
        remote = create_api_backend(
            "openai",
            metadata={
                "api_key": "sk-test-123",
                "base_url": remote_fake.url + "/v1",
                "resilience": fast(),
            },
        )
        local = create_api_backend(
            "openai",
            metadata={"api_key": API_KEY, "base_url": url + "/v1", "resilience": fast()},
        )
        try:
            yield (
                remote_fake,
                Router(
                    [RouteTarget(remote, model=REMOTE_MODEL)],
                    fallbacks=[[RouteTarget(local, model=LOCAL_MODEL)]],
                ),
            )
        finally:
            await remote.aclose()
            await local.aclose()


def _chats(fake: FakeServer) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))


def test_router_fails_over_from_a_failing_remote_to_the_local_model(
    local_server: tuple[str, Any],
) -> None:
    url, pipeline = local_server
    expected = pipeline.chat(HELLO, max_new_tokens=8, temperature=0)
    assert expected  # non-empty, so that the equalities below say something

    async def body() -> None:
        async with remote_then_local(url) as (remote_fake, router):
            remote_fake.inject(status=503, message="overloaded", times=1000, path="/chat")
            reply = await router.chat(None, HELLO, max_tokens=8, temperature=0)
            assert reply.text == expected
            assert reply.model == LOCAL_MODEL and reply.finish_reason == "length"
            assert _chats(remote_fake) >= 1 and router.failovers == 1
            tried = _chats(remote_fake)
            chunks = [c async for c in router.stream_chat(None, HELLO, max_tokens=8, temperature=0)]
            assert "".join(c.text or "" for c in chunks) == expected
            assert _chats(remote_fake) > tried and router.failovers == 2
            remote_stats, local_stats = router.get_stats()["targets"]
            assert remote_stats["successes"] == 0 and local_stats["successes"] == 2

    run(body(), 120)


def test_a_healthy_remote_is_used_before_the_local_model(local_server: tuple[str, Any]) -> None:
    """The local tier is a fallback, not a peer: while the remote answers, the local server
    gets no request."""
    url, _ = local_server

    async def body() -> None:
        async with remote_then_local(url) as (_, router):
            reply = await router.chat(None, "ping", max_tokens=8, temperature=0)
            assert reply.model == REMOTE_MODEL and reply.text == "Echo: ping"
            assert router.failovers == 0
            assert [t["successes"] for t in router.get_stats()["targets"]] == [1, 0]

    run(body(), 60)
