"""The Router: strategies, failover under injected faults, cooldowns, circuit breakers,
ordered fallbacks across backends and models, streams, deadlines and health checks. Every
endpoint is a protocol fake on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.api_backends.router import Router, RouterConfig, RouteTarget
from ipfs_accelerate.errors import (
    APITimeoutError,
    BadRequestError,
    CircuitOpenError,
    ConfigurationError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)

from ..fakes.anthropic_fake import AnthropicFake
from ..fakes.ollama_fake import OllamaFake
from ..fakes.openai_fake import OpenAIFake
from ..fakes.vllm_fake import VLLMFake
from .conftest import fast, run, server_thread

pytestmark = pytest.mark.timeout(60)

MODEL = "meta-llama/Llama-3.1-8B-Instruct"


def chats(fake: VLLMFake) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))


@asynccontextmanager
async def cluster(n: int = 3, **resilience: Any) -> AsyncIterator[tuple[list[VLLMFake], list[Any]]]:
    fakes = [VLLMFake() for _ in range(n)]
    for fake in fakes:
        await fake.start()
    backends = [
        create_api_backend("vllm", metadata={"base_url": f.url, "resilience": fast(**resilience)})
        for f in fakes
    ]
    try:
        yield fakes, backends
    finally:
        for backend in backends:
            await backend.aclose()
        for fake in fakes:
            await fake.close()


def with_cluster(
    test: Callable[[list[VLLMFake], list[Any]], Awaitable[None]], n: int = 3, **resilience: Any
) -> None:
    async def body() -> None:
        async with cluster(n, **resilience) as (fakes, backends):
            await test(fakes, backends)

    run(body(), 50)


# ---------------------------------------------------------------- strategies


def test_round_robin_spreads_evenly() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends, strategy="round_robin")
        for i in range(9):
            assert (await router.chat(MODEL, f"m{i}")).text == f"Echo: m{i}"
        assert [chats(f) for f in fakes] == [3, 3, 3]
        assert [t["picks"] for t in router.get_stats()["targets"]] == [3, 3, 3]
        assert router.get_stats()["successes"] == 9

    with_cluster(test)


def test_weighted_follows_weights() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(
            [RouteTarget(backends[0], weight=3), RouteTarget(backends[1], weight=1)],
            strategy="weighted",
        )
        for i in range(8):
            await router.chat(MODEL, f"w{i}")
        assert [chats(fakes[0]), chats(fakes[1])] == [6, 2]

    with_cluster(test, n=2)


def test_least_in_flight_avoids_busy_endpoint() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends, strategy="least_in_flight")
        fakes[0].inject(delay=0.6)  # the first request (to endpoint 0) stays in flight
        slow = asyncio.create_task(router.chat(MODEL, "slow"))
        await asyncio.sleep(0.1)
        assert router.targets[0].in_flight == 1
        for i in range(6):
            await router.chat(MODEL, f"q{i}")
        assert [chats(f) for f in fakes] == [1, 3, 3]  # nothing more went to the busy one
        await slow
        assert router.targets[0].in_flight == 0

    with_cluster(test)


def test_endpoint_at_its_concurrency_limit_is_passed_over() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends, strategy="round_robin")
        fakes[0].inject(delay=0.5)
        slow = asyncio.create_task(
            backends[0].chat(MODEL, "holds the only slot")
        )  # max_concurrency 1
        await asyncio.sleep(0.1)
        assert backends[0].endpoint.limiter.in_flight == 1
        for i in range(4):
            await router.chat(MODEL, f"c{i}")
        assert [chats(f) for f in fakes] == [1, 4]  # round-robin skipped the full endpoint
        await slow
        assert router.sync is router.sync

    with_cluster(test, n=2, max_concurrency=1)


def test_lowest_latency_prefers_the_fast_endpoint_for_calls_and_streams() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends, strategy="lowest_latency", ewma_alpha=0.5)
        fakes[0].inject(delay=0.15, times=1000, path="/chat")
        for i in range(10):
            await router.chat(MODEL, f"l{i}")
        # one exploratory request each, then the fast one wins
        assert chats(fakes[0]) == 1 and chats(fakes[1]) == 9
        stats = {t["name"]: t for t in router.get_stats()["targets"]}
        slow, fast_ = stats[router.targets[0].name], stats[router.targets[1].name]
        assert slow["latency_ewma_s"] > 0.1 > fast_["latency_ewma_s"]
        # streams choose by time to first chunk, measured separately
        for _ in range(4):
            _ = [c async for c in router.stream_chat(MODEL, "s")]
        assert router.targets[1].ewma_ttfc is not None and router.targets[0].ewma_ttfc is not None
        assert router.targets[0].ewma_ttfc > router.targets[1].ewma_ttfc

    with_cluster(test, n=2)


# ---------------------------------------------------------------- failover


def test_failover_on_500_reset_timeout_and_429() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends, strategy="round_robin", cooldown_after=1, cooldown=0.05)

        def next_up() -> int:  # where round-robin sends the next request
            return int(router._strategies[0]._next)

        async def settle() -> None:
            await asyncio.sleep(0.06)  # the failed endpoint's short cooldown ends

        i = next_up()
        fakes[i].inject(status=500)
        reply = await router.chat(MODEL, "a")
        assert reply.text == "Echo: a" and router.failovers == 1
        assert router.targets[i].failures["ServerError"] == 1
        await settle()
        i = next_up()
        fakes[i].inject(reset=True)
        assert (await router.chat(MODEL, "b")).text == "Echo: b"
        assert router.targets[i].failures["APIConnectionError"] == 1
        # a stalled endpoint: its attempt times out and the call moves on
        await settle()
        i = next_up()
        fakes[i].inject(delay=2.0)
        started = time.monotonic()
        await router.chat(MODEL, "c", timeout=0.3)
        assert (
            time.monotonic() - started < 1.5 and router.targets[i].failures["APITimeoutError"] == 1
        )
        # 429 with Retry-After: that endpoint cools down for what the server asked
        await settle()
        i = next_up()
        fakes[i].inject(status=429, headers={"Retry-After": "3"})
        await router.chat(MODEL, "d")
        target = router.targets[i]
        assert target.failures["RateLimitError"] == 1
        assert 2.5 < target.hard_cooldown_until - time.monotonic() <= 3.0
        before = chats(fakes[i])
        for k in range(4):
            await router.chat(MODEL, f"e{k}")
        assert chats(fakes[i]) == before  # cooling down: not used
        assert router.get_stats()["failovers"] == 4

    with_cluster(test)


def test_soft_cooldowns_yield_when_nothing_else_is_left_but_retry_after_holds() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(
            backends, cooldown_after=1, cooldown=20.0, deadline=2.0, backoff=0.01, max_attempts=4
        )
        for fake in fakes:
            fake.inject(status=500)
        # every endpoint fails once and cools for 20 s (our heuristic, a soft cooldown) ...
        assert (await router.chat(MODEL, "after the storm")).text == "Echo: after the storm"
        assert router.panic_picks == 1 and all(
            t.cooldown_until - time.monotonic() > 10 for t in router.targets
        )
        # ... whereas a cooldown the server asked for (Retry-After) is never overridden
        hard = Router(backends[:1], cooldown_after=1, deadline=1.0)
        fakes[0].inject(status=429, headers={"Retry-After": "30"})
        sent = chats(fakes[0])
        with pytest.raises(RateLimitError):
            await hard.chat(MODEL, "rate limited")
        with pytest.raises(CircuitOpenError, match="cooling down"):
            await hard.chat(MODEL, "still rate limited")  # refused while cooling: nothing sent
        assert chats(fakes[0]) == sent + 1 and hard.panic_picks == 0

    with_cluster(test)


def test_non_retryable_errors_are_not_failed_over() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends, strategy="round_robin")
        fakes[0].inject(status=400, message="bad temperature")
        with pytest.raises(BadRequestError, match="bad temperature"):
            await router.chat(MODEL, "x")
        assert [chats(f) for f in fakes] == [1, 0, 0] and router.failovers == 0

    with_cluster(test)


def test_auth_failure_excludes_target_and_moves_on() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends[:2], strategy="round_robin", auth_cooldown=120)
        fakes[0].inject(status=401, message="bad key", times=10)
        assert (await router.chat(MODEL, "k")).text == "Echo: k"
        assert router.targets[0].hard_cooldown_until - time.monotonic() > 100
        for _ in range(3):
            await router.chat(MODEL, "k2")
        assert chats(fakes[0]) == 1  # never again while its credentials are rejected

    with_cluster(test, n=2)


def test_all_targets_failing_raises_the_last_typed_error() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends, max_attempts=5, backoff=0.01, cooldown_after=100)
        for fake in fakes:
            fake.inject(status=503, times=100, message="overloaded")
        started = time.monotonic()
        with pytest.raises(ServerError, match="overloaded") as info:
            await router.chat(MODEL, "x")
        assert time.monotonic() - started < 2
        assert sum(chats(f) for f in fakes) == 5  # the attempt budget, spread over a second round
        assert all(chats(f) >= 1 for f in fakes)
        assert any(
            "gave up after 5 attempt(s)" in note for note in getattr(info.value, "__notes__", [])
        )
        assert router.get_stats()["failures"] == {"ServerError": 1}

    with_cluster(test)


def test_open_circuit_is_skipped_and_fails_fast() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends, strategy="round_robin")
        fakes[0].inject(status=500)
        await router.chat(
            MODEL, "trip"
        )  # endpoint 0's breaker (threshold 1) opens, call fails over
        assert backends[0].endpoint.breaker.state == "open"
        for i in range(4):
            await router.chat(MODEL, f"o{i}")
        assert chats(fakes[0]) == 1
        # every circuit open: refused at once, nothing sent, no waiting for the 30 s cooldowns
        for backend in backends[1:]:
            backend.endpoint.breaker.record_failure(backend.endpoint.breaker.acquire())
        sent = sum(chats(f) for f in fakes)
        started = time.monotonic()
        with pytest.raises(CircuitOpenError, match="no target available"):
            await router.chat(MODEL, "none")
        assert time.monotonic() - started < 0.5 and sum(chats(f) for f in fakes) == sent

    with_cluster(test, breaker={"failure_threshold": 1, "cooldown": 30.0})


def test_deadline_bounds_the_whole_call() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends, deadline=0.5)
        for fake in fakes:
            fake.inject(delay=3.0, times=10)
        started = time.monotonic()
        with pytest.raises(APITimeoutError):
            await router.chat(MODEL, "slow")
        assert time.monotonic() - started < 1.0

    with_cluster(test)


def test_per_call_max_retries_and_validation() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends)
        fakes[0].inject(status=500)
        fakes[1].inject(status=500)
        fakes[2].inject(status=500)
        with pytest.raises(ServerError):
            await router.chat(MODEL, "once", max_retries=0)
        assert sum(chats(f) for f in fakes) == 1
        with pytest.raises(ConfigurationError):
            await router.chat(MODEL, "x", deadline=-1)
        with pytest.raises(ConfigurationError, match="strategy"):
            Router(backends, strategy="random")
        with pytest.raises(ConfigurationError, match="listed twice"):
            target = RouteTarget(backends[0])
            Router([target, target])

    with_cluster(test)


# ---------------------------------------------------------------- streams


def test_stream_fails_over_only_before_the_first_chunk() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends[:2], strategy="round_robin")
        fakes[0].inject(status=503, path="/chat")
        chunks = [c async for c in router.stream_chat(MODEL, "one two three")]
        assert "".join(c.text for c in chunks) == "Echo: one two three" and chunks[-1].done
        assert router.failovers == 1 and chats(fakes[1]) == 1
        # broken after chunks were delivered: raised, never restarted elsewhere
        before = [chats(f) for f in fakes[:2]]
        fakes[0].inject(reset_after=3, path="/chat")
        fakes[1].inject(reset_after=3, path="/chat")
        received = []
        with pytest.raises(StreamInterruptedError):
            async for chunk in router.stream_chat(MODEL, "four five six seven"):
                received.append(chunk.text)
        assert received and sum(chats(f) for f in fakes[:2]) == sum(before) + 1
        assert router.failovers == 1
        stats = router.get_stats()
        assert stats["failures"].get("StreamInterruptedError") == 1
        assert sum(t["in_flight"] for t in stats["targets"]) == 0

    with_cluster(test, n=2)


def test_stream_skips_a_backend_that_cannot_stream() -> None:
    async def body() -> None:
        from ..fakes.tei_fake import TEIFake

        async with TEIFake() as tei, VLLMFake() as vllm:
            embedder = create_api_backend(
                "hf_tei", metadata={"base_url": tei.url, "resilience": fast()}
            )
            chatter = create_api_backend(
                "vllm", metadata={"base_url": vllm.url, "resilience": fast()}
            )
            router = Router([embedder], fallbacks=[[RouteTarget(chatter, model=MODEL)]])
            try:
                chunks = [c async for c in router.stream_chat(None, "only vllm streams")]
                assert "".join(c.text for c in chunks) == "Echo: only vllm streams"
                assert (
                    router.targets[0].failures["UnsupportedOpError"] == 1
                    and router.targets[0].in_flight == 0
                )
            finally:
                await embedder.aclose()
                await chatter.aclose()

    run(body(), 20)


def test_abandoned_stream_releases_everything() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends)
        stream = router.stream_chat(MODEL, "a b c d e f")
        first = await stream.__anext__()
        assert first.text
        await stream.aclose()  # type: ignore[attr-defined]
        assert sum(t.in_flight for t in router.targets) == 0
        assert all(b.endpoint.limiter.in_flight == 0 for b in backends)
        assert router.get_stats()["cancelled"] == 1

    with_cluster(test)


# ---------------------------------------------------------------- fallbacks across providers


def test_ordered_fallbacks_across_backends_and_models() -> None:
    """openai -> claude -> ollama: chat, stream and embed each go as far as they must."""

    async def body() -> None:
        async with OpenAIFake() as oai, AnthropicFake() as ant, OllamaFake() as oll:
            openai = create_api_backend(
                "openai",
                metadata={
                    "api_key": "sk-test-123",
                    "base_url": oai.url + "/v1",
                    "resilience": fast(),
                },
            )
            claude = create_api_backend(
                "claude",
                metadata={"api_key": "sk-ant-test-123", "base_url": ant.url, "resilience": fast()},
            )
            ollama = create_api_backend(
                "ollama", metadata={"base_url": oll.url, "resilience": fast()}
            )
            router = Router(
                [RouteTarget(openai, model="gpt-4o-mini")],
                fallbacks=[
                    [RouteTarget(claude, model="claude-haiku-4-5")],
                    [RouteTarget(ollama, model="llama3.2")],
                ],
                backoff=0.01,
            )
            try:
                assert (await router.chat(None, "hi")).provider == "openai"
                oai.inject(status=503, times=100)
                reply = await router.chat(None, "fallback please")
                assert reply.provider == "claude" and reply.text == "Echo: fallback please"
                assert ant.last("/v1/messages").json["model"] == "claude-haiku-4-5"
                chunks = [c async for c in router.stream_chat(None, "streamed")]
                assert "".join(c.text for c in chunks) == "Echo: streamed"
                assert ant.last("/v1/messages").json["stream"] is True
                # claude has no embeddings: skipped for embed, ollama answers with its own model
                vectors = await router.embed(None, ["x", "y"])
                assert (
                    len(vectors.embeddings) == 2
                    and oll.last("/api/embed").json["model"] == "llama3.2"
                )
                ant.inject(status=529, times=100)
                assert (await router.chat(None, "last resort")).text == "Echo: last resort"
                assert oll.last("/api/chat").json["model"] == "llama3.2"
                tiers = router.get_stats()["tiers"]
                assert [len(t) for t in tiers] == [1, 1, 1]
            finally:
                for b in (openai, claude, ollama):
                    await b.aclose()

    run(body(), 40)


# ---------------------------------------------------------------- health checks


def test_health_checks_mark_and_restore_targets() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends, strategy="round_robin", health_interval=0.05, health_timeout=0.5)
        await fakes[0].close()  # endpoint 0 goes away
        await router.chat(MODEL, "start")  # starts the periodic checks
        deadline = time.monotonic() + 5
        while router.targets[0].healthy is not False:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        failures_before = sum(router.targets[0].failures.values())
        for i in range(6):
            await router.chat(MODEL, f"h{i}")
        assert sum(router.targets[0].failures.values()) == failures_before  # not even tried
        assert router.targets[1].healthy is True
        await router.aclose()
        assert router._health_task is None
        # explicit one-shot check
        results = await router.check_health()
        assert [r.healthy for r in results.values()] == [False, True, True]

    with_cluster(test)


def test_health_failed_targets_are_a_last_resort() -> None:
    async def test(fakes: list[VLLMFake], backends: list[Any]) -> None:
        router = Router(backends[:1])
        router.targets[0].healthy = False  # a stale verdict: still better than refusing
        assert (await router.chat(MODEL, "anyway")).text == "Echo: anyway"

    with_cluster(test, n=1)


def test_router_config_values() -> None:
    assert RouterConfig.from_value({"strategy": "weighted"}).strategy == "weighted"
    with pytest.raises(ConfigurationError, match="unknown router settings"):
        RouterConfig.from_value({"strategy": "weighted", "bogus": 1})
    with pytest.raises(ConfigurationError, match="cooldown_after"):
        RouterConfig(cooldown_after=0)


def test_router_sync_facade() -> None:
    with server_thread(VLLMFake()) as a, server_thread(VLLMFake()) as b:
        backends = [
            create_api_backend("vllm", metadata={"base_url": f.url, "resilience": fast()})
            for f in (a, b)
        ]
        router = Router(backends, strategy="round_robin")
        try:
            assert router.sync.chat(MODEL, "from plain code").text == "Echo: from plain code"
            assert (
                "".join(c.text for c in router.sync.stream_chat(MODEL, "plain stream"))
                == "Echo: plain stream"
            )
            assert len(router.sync.embed("BAAI/bge-small-en-v1.5", ["x"]).embeddings) == 1
        finally:
            router.sync.close()
            for backend in backends:
                backend.close()
