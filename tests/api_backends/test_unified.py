"""The Unified backends: the plain protocols (all surfaces) over several endpoints, and a
managed server run as a real process (a protocol fake) that is killed and comes back."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.errors import (
    BadRequestError,
    CircuitOpenError,
    ConfigurationError,
    ServerError,
    StreamInterruptedError,
    UnsupportedOpError,
)
from ipfs_accelerate.servers import LocalProcessRuntime, ManagedServer

from ..fakes._server import FakeServer
from ..fakes.ovms_fake import OVMSFake
from ..fakes.tei_fake import TEIFake
from ..fakes.tgi_fake import TGIFake
from ..fakes.vllm_fake import BASE_MODEL, VLLMFake
from ..servers.conftest import fake_server_spec, group_members, port_closed
from .conftest import fast, run

pytestmark = pytest.mark.timeout(60)


def count(fake: FakeServer, part: str) -> int:
    return sum(1 for r in fake.requests if part in r.path)


def dead_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def serve_many(
    fakes: list[FakeServer],
    name: str,
    test: Callable[[list[Any], Any], Awaitable[None]],
    **metadata: Any,
) -> None:
    async def body() -> None:
        for fake in fakes:
            await fake.start()
        backend = create_api_backend(
            name, metadata={"endpoints": [f.url for f in fakes], "resilience": fast(), **metadata}
        )
        try:
            await test(fakes, backend)
        finally:
            await backend.aclose()
            for fake in fakes:
                await fake.close()

    run(body(), 50)


# ---------------------------------------------------------------- vLLM


def test_vllm_unified_spreads_every_surface() -> None:
    async def test(fakes: list[VLLMFake], b: Any) -> None:
        assert b.provider == "vllm_unified" and len(b.members) == 3
        for i in range(3):
            assert (await b.chat(BASE_MODEL, f"hi {i}")).text == f"Echo: hi {i}"
        assert [count(f, "/chat/completions") for f in fakes] == [1, 1, 1]
        chunks = [c async for c in b.stream_chat(BASE_MODEL, "stream me")]
        assert "".join(c.text for c in chunks) == "Echo: stream me" and chunks[-1].done
        assert len((await b.embed("BAAI/bge-small-en-v1.5", ["a", "b"])).embeddings) == 2
        assert BASE_MODEL in [m.id for m in await b.list_models()]
        tools = [
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        ]
        reply = await b.chat(BASE_MODEL, "find x", tools=tools)
        assert reply.tool_calls[0].name == "lookup"
        stats = b.get_stats()
        assert stats["requests"] == 7 and stats["successes"] == 7  # one per call, not per endpoint
        assert len(stats["endpoints"]) == 3 and stats["router"]["strategy"] == "round_robin"
        assert sum(e["attempts"]["requests"] for e in stats["endpoints"]) == 7

    serve_many([VLLMFake() for _ in range(3)], "vllm_unified", test, strategy="round_robin")


def test_vllm_unified_lora_on_every_endpoint_or_none() -> None:
    async def test(fakes: list[VLLMFake], b: Any) -> None:
        message = await b.load_lora_adapter("sql", "/adapters/sql")
        assert "added successfully" in message
        assert all(f.adapters == {"sql": "/adapters/sql"} for f in fakes)
        assert [m.id for m in await b.list_lora_adapters()] == ["sql"]
        for _ in range(3):  # whichever endpoint a chat reaches serves the adapter
            assert (await b.chat("sql", "q")).text == "Echo: q"
        await b.unload_lora_adapter("sql")
        assert all(f.adapters == {} for f in fakes) and b.adapters == {}
        fakes[1].adapters["dup"] = "/elsewhere"  # endpoint 1 refuses: already loaded there
        fakes[1].known_models.append("dup")
        with pytest.raises(BadRequestError, match="already been loaded") as info:
            await b.load_lora_adapter("dup", "/adapters/dup")
        assert fakes[0].adapters == {} and fakes[2].adapters == {}  # rolled back
        assert any("unloaded again from 2 endpoint(s)" in n for n in info.value.__notes__)
        assert "dup" not in b.adapters

    serve_many([VLLMFake() for _ in range(3)], "vllm_unified", test)


def test_unified_fails_over_dead_and_failing_endpoints() -> None:
    async def body() -> None:
        async with VLLMFake() as good, VLLMFake() as flaky:
            b = create_api_backend("vllm_unified", metadata={
                "endpoints": [dead_url(), {"url": flaky.url, "name": "flaky"},
                              {"url": good.url, "name": "good", "weight": 2}],
                "strategy": "round_robin", "resilience": fast(),
            })  # fmt: skip
            try:
                flaky.inject(status=502, times=2)
                for i in range(6):
                    assert (await b.chat(BASE_MODEL, f"m{i}")).text == f"Echo: m{i}"
                stats = b.get_stats()
                assert stats["successes"] == 6 and stats["failovers"] >= 3
                by_name = {t["endpoint"]: t for t in stats["router"]["targets"]}
                assert by_name["flaky"]["failures"] == {"ServerError": 2}
                assert (
                    sum(by_name[n]["failures"].get("APIConnectionError", 0) for n in by_name) >= 1
                )
                # the call's max_retries is its attempt budget over the endpoints
                flaky.inject(status=503, times=1)
                good.inject(status=503, times=1)
                b.router.targets[0].cooldown_until = time.monotonic() + 60  # keep the dead one out
                b.router._strategies[0]._next = 1
                with pytest.raises(ServerError):
                    await b.chat(BASE_MODEL, "no retries", max_retries=0)
                assert b.get_stats()["failures"] == {"ServerError": 1}
            finally:
                await b.aclose()

    run(body(), 30)


# ---------------------------------------------------------------- TGI, TEI, OVMS


def test_tgi_unified_native_routes_and_stream_failover() -> None:
    async def test(fakes: list[TGIFake], b: Any) -> None:
        generation = await b.generate("one two", max_new_tokens=5)
        assert generation.generated_text == "Echo: one two"
        fakes[0].inject(status=503, path="/generate_stream", times=5)
        fakes[1].inject(status=503, path="/generate_stream", times=5)
        b.router.targets[0].cooldown_until = 0
        tokens = [t async for t in b.generate_stream("a b c")]
        assert (
            tokens[-1].generated_text == "Echo: a b c"
        )  # the first token came from the third endpoint
        assert count(fakes[2], "/generate_stream") == 1
        fakes[2].inject(reset_after=2, path="/generate_stream")
        fakes[0].faults.clear()
        fakes[1].faults.clear()
        before = sum(count(f, "/generate_stream") for f in fakes)
        b.router._strategies[0]._next = 2
        with pytest.raises(StreamInterruptedError):
            _ = [t async for t in b.generate_stream("d e f g")]
        assert (
            sum(count(f, "/generate_stream") for f in fakes) == before + 1
        )  # not restarted elsewhere
        assert (await b.info())["model_id"]
        assert (await b.chat("tgi", "messages api")).text == "Echo: messages api"
        with pytest.raises(UnsupportedOpError):
            await b.embed(None, "x")

    serve_many([TGIFake() for _ in range(3)], "hf_tgi_unified", test, strategy="round_robin")


def test_tei_unified_embed_and_rerank() -> None:
    async def test(fakes: list[TEIFake], b: Any) -> None:
        await fakes[0].close()  # one endpoint is gone
        for _ in range(4):
            vectors = await b.embed(None, ["alpha", "beta"])
            assert len(vectors.embeddings) == 2 and len(vectors.embeddings[0]) == 16
        ranked = await b.rerank(
            "cheap flights", ["cheap hotels", "cheap flights to rome", "weather"], return_text=True
        )
        assert ranked[0].index == 1 and ranked[0].text == "cheap flights to rome"
        health = await b.health()
        assert (
            health.healthy
            and "ok" in health.detail
            and fakes[0].url.split("//")[1] in health.detail
        )

    serve_many([TEIFake(), TEIFake()], "hf_tei_unified", test)


def test_ovms_unified_kserve_and_readiness() -> None:
    async def test(fakes: list[OVMSFake], b: Any) -> None:
        out = await b.infer(
            "adder", {"a": np.ones((2, 2), np.float32), "b": np.full((2, 2), 2, np.float32)}
        )
        assert out["sum"].tolist() == [[3.0, 3.0], [3.0, 3.0]]
        assert "adder" in [m.id for m in await b.list_models()]
        await fakes[0].close()
        assert await b.server_ready() and await b.model_ready("adder")
        assert not await b.model_ready("nope")
        chunks = [
            c async for c in b.stream_chat("OpenVINO/Phi-3.5-mini-instruct-int4-ov", "hello ovms")
        ]
        assert "".join(c.text for c in chunks) == "Echo: hello ovms"

    serve_many([OVMSFake(), OVMSFake()], "ovms_unified", test)


# ---------------------------------------------------------------- a managed server


def test_unified_with_managed_process_server_survives_a_crash() -> None:
    async def body() -> None:
        async with VLLMFake() as remote:
            server = ManagedServer(fake_server_spec(), LocalProcessRuntime(), ready_timeout=30,
                                   probe_interval=0.05, health_interval=0.15, health_timeout=1.0,
                                   restart_backoff=0.1)  # fmt: skip
            metadata = {"endpoints": [remote.url], "resilience": fast()}
            b = create_api_backend(
                "vllm_unified", metadata=metadata, server=server, auto_start=True
            )
            try:
                assert server.state.value == "stopped"
                assert (
                    await b.chat(BASE_MODEL, "wake up")
                ).text == "Echo: wake up"  # auto-started first
                assert server.is_ready and b.members[0].managed_server is server
                managed = b.members[0]
                await b.load_lora_adapter("sql", "/adapters/sql")
                assert [m.id for m in await managed.list_lora_adapters()] == [
                    "sql"
                ] and remote.adapters == {"sql": "/adapters/sql"}
                handle = server.handle
                assert handle is not None and isinstance(server.runtime, LocalProcessRuntime)
                pid = server.runtime.pid(handle)
                os.kill(pid, signal.SIGKILL)
                # requests keep working while the managed server is down
                served = 0
                deadline = time.monotonic() + 20
                while not (server.restarts == 1 and server.is_ready):
                    assert time.monotonic() < deadline, list(server.events)
                    assert (await b.chat(BASE_MODEL, "still there?")).text == "Echo: still there?"
                    served += 1
                    await asyncio.sleep(0.02)
                assert served >= 1
                await asyncio.sleep(0.05)  # the on_ready hook reloads the adapters
                assert [m.id for m in await managed.list_lora_adapters()] == ["sql"]
                assert b.get_stats()["managed_server"]["restarts"] == 1
                new_pid = server.runtime.pid(server.handle)  # type: ignore[arg-type]
            finally:
                await b.aclose()
            assert server.state.value == "stopped"
            assert group_members(new_pid) == [] and not Path(f"/proc/{new_pid}").exists()
            assert port_closed(server.spec.host_port or 0)

    run(body(), 50)


def test_managed_server_not_started_is_not_an_endpoint_yet() -> None:
    async def body() -> None:
        server = ManagedServer(fake_server_spec())
        b = create_api_backend("vllm_unified", server=server)
        try:
            with pytest.raises(CircuitOpenError, match="server stopped"):
                await b.chat(BASE_MODEL, "nobody home")
        finally:
            await b.aclose()

    run(body(), 10)


# ---------------------------------------------------------------- configuration


def test_unified_configuration() -> None:
    single = create_api_backend("vllm_unified", metadata={"vllm_api_url": "http://h:8000/v1"})
    assert [m.base_url for m in single.members] == ["http://h:8000"] and single.is_configured
    keyed = create_api_backend(
        "hf_tgi_unified",
        metadata={"endpoints": [{"url": "http://a:1", "api_key": "tok-secret-1"}, "http://b:2"]},
    )
    assert "tok-secret-1" not in repr(keyed) and "tok-secret-1" not in str(keyed.get_stats())
    assert keyed.members[0]._auth_headers() == {"Authorization": "Bearer tok-secret-1"}
    with pytest.raises(ConfigurationError, match="unknown keys"):
        create_api_backend(
            "vllm_unified", metadata={"endpoints": [{"url": "http://a:1", "colour": "red"}]}
        )
    with pytest.raises(ConfigurationError, match="list of URLs"):
        create_api_backend("vllm_unified", metadata={"endpoints": "http://a:1"})
    with pytest.raises(ConfigurationError, match="listed twice"):
        create_api_backend("vllm_unified", metadata={"endpoints": ["http://a:1", "http://a:1"]})
    with pytest.raises(ConfigurationError, match="needs a 'model'"):
        create_api_backend("vllm_unified", metadata={"managed_server": {"runtime": "process"}})
    with pytest.raises(ConfigurationError, match="model_name"):
        create_api_backend("ovms_unified", metadata={"managed_server": {"model_name": "resnet"}})
    with pytest.raises(ConfigurationError, match="no server URL"):
        create_api_backend("hf_tei_unified")
    docker = create_api_backend("vllm_unified", metadata={"managed_server": {
        "model": "Qwen/Qwen2.5-0.5B-Instruct", "hf_token": "hf_zzz",
        "lifecycle": {"ready_timeout": 60}}})  # fmt: skip
    assert docker.managed_server is not None and docker.managed_server.runtime.kind == "docker"
    assert docker.managed_server.spec.image == "vllm/vllm-openai:latest" and "hf_zzz" not in repr(
        docker.managed_server.spec
    )
    assert docker.members[0].base_url == docker.managed_server.url
