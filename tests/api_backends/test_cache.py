"""The response cache in front of the backends and the router, with the in-process store,
against the OpenAI protocol fake on loopback (the fake's request log proves a hit sent
nothing): keys, sampling, TTL, bounds, modes, invalidation, streaming replay, bad input and
the metrics export."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from ipfs_accelerate.api_backends import ChatResponse, Router, create_api_backend
from ipfs_accelerate.api_backends._base import APIBackend
from ipfs_accelerate.api_backends.cache import MemoryStore, ResponseCache, replay
from ipfs_accelerate.errors import ConfigurationError, StreamInterruptedError

from ..fakes._server import Fault
from ..fakes.openai_fake import OpenAIFake
from .conftest import fast, run

pytestmark = pytest.mark.timeout(60)

MODEL = "gpt-4o-mini"
EMBED = "text-embedding-3-small"


def make(fake: OpenAIFake, cache: Any = True, key: str = "sk-a", **metadata: Any) -> APIBackend:
    return create_api_backend(
        "openai",
        metadata={
            "api_key": key,
            "base_url": fake.url + "/v1",
            "resilience": fast(max_retries=0),
            "cache": cache,
            **metadata,
        },
    )


def scenario(test: Callable[[OpenAIFake], Awaitable[Any]]) -> Any:
    async def body() -> Any:
        async with OpenAIFake(api_key=None) as fake:
            return await test(fake)

    return run(body())


def chats(fake: OpenAIFake) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))


# ----------------------------------------------------------------------------- hits and keys


def test_exact_hit_sends_nothing_and_says_so() -> None:
    async def test(fake: OpenAIFake) -> None:
        backend = make(fake)
        first = await backend.chat(MODEL, "hello there", temperature=0)
        second = await backend.chat(MODEL, "hello there", temperature=0)
        assert chats(fake) == 1
        assert first.cache is None
        assert second.cache is not None and second.cache.kind == "exact"
        assert second.cache.similarity is None
        assert (second.text, second.usage, second.finish_reason, second.model) == (
            first.text, first.usage, first.finish_reason, first.model,
        )  # fmt: skip
        assert second.raw == first.raw
        stats = backend.get_stats()["cache"]
        assert (stats["hits"], stats["misses"], stats["stores"]) == (1, 1, 1)
        assert stats["entries"] == 1 and stats["bytes"] > 0
        # the caller may change the answer it got; the cache keeps its own copy
        second.text = "mutated"
        third = await backend.chat(MODEL, "hello there", temperature=0)
        assert third.text == first.text
        await backend.aclose()

    scenario(test)


def test_what_does_not_change_the_key() -> None:
    async def test(fake: OpenAIFake) -> None:
        shared = ResponseCache()
        a, b = make(fake, shared, key="sk-first"), make(fake, shared, key="sk-second")
        await a.chat(MODEL, "same question", temperature=0)
        # another API key, resilience options, request ids, stream flags, a str vs a list
        await b.chat(MODEL, "same question", temperature=0)
        await a.chat(
            MODEL, [{"role": "user", "content": "same question"}], temperature=0,
            timeout=7.0, priority="high", max_retries=2, deadline=30.0,
            extra_headers={"X-Request-Id": "abc"}, stream=False,
        )  # fmt: skip
        await a.chat(None, "same question", temperature=0)  # the default model filled in
        assert chats(fake) == 1
        assert shared.counts["hits"] == 3
        await a.aclose()
        await b.aclose()

    scenario(test)


def test_what_changes_the_key() -> None:
    async def test(fake: OpenAIFake) -> None:
        async with OpenAIFake(api_key=None) as other:
            shared = ResponseCache()
            backend = make(fake, shared)
            await backend.chat(MODEL, "q", temperature=0)
            variants: list[tuple[Any, Any, dict[str, Any]]] = [
                (backend, "q2", {"temperature": 0}),
                (backend, "q", {"temperature": 0, "max_tokens": 5}),
                (backend, "q", {"seed": 1}),
                (backend, "q", {"temperature": 0, "stop": ["x"]}),
                (backend, [{"role": "system", "content": "s"}, {"role": "user", "content": "q"}],
                 {"temperature": 0}),
            ]  # fmt: skip
            for target, messages, options in variants:
                await target.chat(MODEL, messages, **options)
            assert chats(fake) == 1 + len(variants)
            # another base URL is another namespace, even with the same cache object
            elsewhere = make(other, shared)
            await elsewhere.chat(MODEL, "q", temperature=0)
            assert chats(other) == 1
            # another model
            fake.known_models.append("gpt-other")
            await backend.chat("gpt-other", "q", temperature=0)
            assert chats(fake) == 2 + len(variants)
            # chat and embed never share entries
            await backend.embed(EMBED, "q")
            await backend.embed(EMBED, ["q"])
            assert sum(1 for r in fake.requests if r.path.endswith("/embeddings")) == 1
            for b in (backend, elsewhere):
                await b.aclose()

    scenario(test)


def test_embeddings_are_cached() -> None:
    async def test(fake: OpenAIFake) -> None:
        backend = make(fake)
        first = await backend.embed(EMBED, ["a", "b"])
        second = await backend.embed(EMBED, ["a", "b"])
        other = await backend.embed(EMBED, ["b", "a"])
        assert sum(1 for r in fake.requests if r.path.endswith("/embeddings")) == 2
        assert second.embeddings == first.embeddings and second.cache is not None
        assert other.embeddings == first.embeddings[::-1] and other.cache is None
        assert second.usage == first.usage
        await backend.aclose()

    scenario(test)


def test_key_for_matches_the_hit_and_invalidation() -> None:
    async def test(fake: OpenAIFake) -> None:
        cache = ResponseCache()
        backend = make(fake, cache)
        await backend.chat(MODEL, "one", temperature=0)
        await backend.chat(MODEL, "two", temperature=0)
        await backend.embed(EMBED, "three")
        hit = await backend.chat(MODEL, "one", temperature=0)
        assert hit.cache is not None
        assert hit.cache.key == cache.key_for(backend, "chat", MODEL, "one", temperature=0)
        assert cache.key_for(backend, "stream_chat", MODEL, "one", temperature=0) == hit.cache.key
        assert await cache.invalidate(hit.cache.key) == 1
        await backend.chat(MODEL, "one", temperature=0)
        assert chats(fake) == 3
        await backend.chat(MODEL, "two", temperature=0)
        assert chats(fake) == 3  # the other entry is still there
        assert await cache.invalidate(namespace=cache.namespace_of(backend)) == 3
        await backend.chat(MODEL, "two", temperature=0)
        assert chats(fake) == 4
        assert await cache.invalidate() == 1
        assert cache.stats()["entries"] == 0
        with pytest.raises(ConfigurationError, match="not both"):
            await cache.invalidate("k", namespace="n")
        await backend.aclose()

    scenario(test)


# ----------------------------------------------------------------------------- sampling


def test_sampled_requests_are_not_cached_unless_asked() -> None:
    async def test(fake: OpenAIFake) -> None:
        backend = make(fake)
        for options in ({}, {"temperature": 0.7}, {"temperature": 0.7, "n": 1}):
            await backend.chat(MODEL, "roll", **options)
            await backend.chat(MODEL, "roll", **options)
        assert chats(fake) == 6
        cache = backend.response_cache
        assert cache is not None and cache.stats()["stores"] == 0
        assert cache.skipped["nondeterministic"] == 6
        # a seed makes sampling reproducible; temperature 0 is greedy
        await backend.chat(MODEL, "roll", temperature=0.7, seed=3)
        await backend.chat(MODEL, "roll", temperature=0.7, seed=3)
        assert chats(fake) == 7
        # the caller opts in per call...
        await backend.chat(MODEL, "dice", temperature=1.0, cache_nondeterministic=True)
        await backend.chat(MODEL, "dice", temperature=1.0, cache_nondeterministic=True)
        assert chats(fake) == 8
        # ...or per cache
        opted = make(fake, ResponseCache(cache_nondeterministic=True))
        await opted.chat(MODEL, "coin")
        await opted.chat(MODEL, "coin")
        assert chats(fake) == 9
        with pytest.raises(ConfigurationError, match="cache_nondeterministic"):
            await backend.chat(MODEL, "x", cache_nondeterministic="yes")
        for b in (backend, opted):
            await b.aclose()

    scenario(test)


def test_sampling_settings_inside_provider_option_blocks() -> None:
    from ipfs_accelerate.api_backends.cache import is_deterministic

    assert is_deterministic({"temperature": 0})
    assert is_deterministic({"temperature": 0.0, "n": 3})
    assert is_deterministic({"seed": 7, "temperature": 1.2})
    assert is_deterministic({"options": {"temperature": 0}})  # Ollama
    assert is_deterministic({"generation_config": {"seed": 1}})  # Gemini
    assert not is_deterministic({})
    assert not is_deterministic({"temperature": 0.2, "n": 2})
    assert not is_deterministic({"temperature": False})
    assert not is_deterministic({"options": {"temperature": 0.5}})


# ----------------------------------------------------------------------------- TTL and bounds


def test_ttl_expires_entries() -> None:
    async def test(fake: OpenAIFake) -> None:
        backend = make(fake, ResponseCache(ttl=1.0))
        await backend.chat(MODEL, "ttl", temperature=0)
        await backend.chat(MODEL, "ttl", temperature=0)
        assert chats(fake) == 1
        await asyncio.sleep(1.1)
        again = await backend.chat(MODEL, "ttl", temperature=0)
        assert chats(fake) == 2 and again.cache is None
        await backend.aclose()

    scenario(test)


def test_bounds_evict_least_recently_used() -> None:
    async def test(fake: OpenAIFake) -> None:
        cache = ResponseCache(MemoryStore(max_entries=2))
        backend = make(fake, cache)
        for prompt in ("a", "b", "a", "c"):  # "a" was used after "b": "b" goes
            await backend.chat(MODEL, prompt, temperature=0)
        assert chats(fake) == 3 and cache.counts["evictions"] == 1
        await backend.chat(MODEL, "a", temperature=0)
        assert chats(fake) == 3
        await backend.chat(MODEL, "b", temperature=0)
        assert chats(fake) == 4
        # a byte bound: each entry is a few hundred bytes, so 1 KiB holds two or three
        small = ResponseCache(MemoryStore(max_bytes=1024))
        tight = make(fake, small)
        for prompt in "pqrstu":
            await tight.chat(MODEL, prompt, temperature=0)
        entries, size = small.store.usage()
        assert size is not None and 0 < size <= 1024
        assert entries is not None and 1 <= entries < 6
        assert small.counts["evictions"] == 6 - entries
        for b in (backend, tight):
            await b.aclose()

    scenario(test)


def test_an_answer_over_the_entry_bound_is_not_stored(caplog: pytest.LogCaptureFixture) -> None:
    async def test(fake: OpenAIFake) -> None:
        cache = ResponseCache(max_entry_bytes=200)
        backend = make(fake, cache)
        with caplog.at_level(logging.WARNING, "ipfs_accelerate.api_backends.cache"):
            for _ in range(3):
                answer = await backend.chat(MODEL, "a long enough question", temperature=0)
                assert answer.text == "Echo: a long enough question"
        assert chats(fake) == 3
        assert cache.skipped["too_large"] == 3 and cache.stats()["entries"] == 0
        warnings = [r for r in caplog.records if "max_entry_bytes" in r.getMessage()]
        assert len(warnings) == 1  # logged once
        assert "long enough" not in caplog.text
        await backend.aclose()

    scenario(test)


# ----------------------------------------------------------------------------- modes


def test_cache_modes_per_call() -> None:
    async def test(fake: OpenAIFake) -> None:
        backend = make(fake)
        await backend.chat(MODEL, "m", temperature=0)
        hit = await backend.chat(MODEL, "m", temperature=0, cache="use")
        assert hit.cache is not None and chats(fake) == 1
        fresh = await backend.chat(MODEL, "m", temperature=0, cache="refresh")
        assert fresh.cache is None and chats(fake) == 2
        refreshed = await backend.chat(MODEL, "m", temperature=0)
        # the refreshed answer replaced the old entry (each answer has its own request id)
        assert refreshed.cache is not None and fresh.request_id is not None
        assert refreshed.request_id == fresh.request_id != hit.request_id
        assert chats(fake) == 2
        bypassed = await backend.chat(MODEL, "n", temperature=0, cache="bypass")
        assert bypassed.cache is None
        await backend.chat(MODEL, "n", temperature=0)
        assert chats(fake) == 4  # bypass neither read nor wrote
        with pytest.raises(ConfigurationError, match="'sometimes'"):
            await backend.chat(MODEL, "n", temperature=0, cache="sometimes")
        await backend.aclose()

    scenario(test)


def test_enabled_per_call_on_a_backend_without_a_cache() -> None:
    async def test(fake: OpenAIFake) -> None:
        backend = make(fake, cache=None)
        assert backend.response_cache is None
        await backend.chat(MODEL, "pc", temperature=0)
        await backend.chat(MODEL, "pc", temperature=0)
        assert chats(fake) == 2  # off by default
        mine = ResponseCache()
        await backend.chat(MODEL, "pc", temperature=0, cache=mine)
        again = await backend.chat(MODEL, "pc", temperature=0, cache=mine)
        assert chats(fake) == 3 and again.cache is not None
        await backend.chat(MODEL, "pd", temperature=0, cache="use")  # the process default
        await backend.chat(MODEL, "pd", temperature=0, cache="use")
        assert chats(fake) == 4
        await backend.aclose()

    scenario(test)


def test_configuration_errors_name_the_value() -> None:
    with pytest.raises(ConfigurationError, match="ttl"):
        ResponseCache(ttl=-1)
    with pytest.raises(ConfigurationError, match="max_entries"):
        MemoryStore(max_entries=0)
    with pytest.raises(ConfigurationError, match="'ftp'"):
        ResponseCache("ftp://x")
    with pytest.raises(ConfigurationError, match="int"):
        ResponseCache.from_value(3)
    with pytest.raises(ConfigurationError, match="threshold"):
        ResponseCache.from_value({"semantic": {"threshold": 1.5}})


# ----------------------------------------------------------------------------- streaming


def test_stream_replay_and_cross_replay() -> None:
    async def test(fake: OpenAIFake) -> None:
        backend = make(fake)
        live = [c async for c in backend.stream_chat(MODEL, "stream me please", temperature=0)]
        replayed = [c async for c in backend.stream_chat(MODEL, "stream me please", temperature=0)]
        assert chats(fake) == 1
        assert [c.text for c in replayed] == [c.text for c in live]
        assert [c.done for c in replayed] == [c.done for c in live]
        assert replayed[-1].usage == live[-1].usage and live[-1].usage is not None
        assert replayed[-1].finish_reason == live[-1].finish_reason == "stop"
        assert all(c.cache is not None for c in replayed) and live[-1].cache is None
        # a streamed answer serves chat, and a chat answer streams
        answer = await backend.chat(MODEL, "stream me please", temperature=0)
        assert answer.text == "".join(c.text for c in live) and answer.cache is not None
        plain = await backend.chat(MODEL, "plain first", temperature=0)
        streamed = [c async for c in backend.stream_chat(MODEL, "plain first", temperature=0)]
        assert chats(fake) == 2
        assert "".join(c.text for c in streamed) == plain.text
        assert streamed[-1].done and streamed[-1].usage == plain.usage
        await backend.aclose()

    scenario(test)


def test_an_interrupted_stream_is_not_stored() -> None:
    async def test(fake: OpenAIFake) -> None:
        backend = make(fake)
        fake.inject(Fault(reset_after=2, path="/chat/completions"))
        with pytest.raises(StreamInterruptedError):
            async for _ in backend.stream_chat(MODEL, "one two three four", temperature=0):
                pass
        # the consumer walks away before the end: not stored either
        stream = backend.stream_chat(MODEL, "one two three four", temperature=0)
        async for _ in stream:
            break
        await stream.aclose()  # type: ignore[attr-defined]
        assert backend.response_cache is not None
        assert backend.response_cache.stats()["stores"] == 0
        full = [c async for c in backend.stream_chat(MODEL, "one two three four", temperature=0)]
        assert chats(fake) == 3 and full[-1].done and full[-1].cache is None
        again = [c async for c in backend.stream_chat(MODEL, "one two three four", temperature=0)]
        assert chats(fake) == 3 and again[-1].cache is not None
        await backend.aclose()

    scenario(test)


def test_a_stream_closed_after_its_last_chunk_is_stored() -> None:
    async def test(fake: OpenAIFake) -> None:
        backend = make(fake)
        stream = backend.stream_chat(MODEL, "stop at done", temperature=0)
        async for chunk in stream:
            if chunk.done:
                break
        await stream.aclose()  # type: ignore[attr-defined]
        again = [c async for c in backend.stream_chat(MODEL, "stop at done", temperature=0)]
        assert chats(fake) == 1 and again[-1].cache is not None
        await backend.aclose()

    scenario(test)


def test_bad_arguments_raise_at_call_time_with_a_cache() -> None:
    async def test(fake: OpenAIFake) -> None:
        backend = make(fake)
        from ipfs_accelerate.errors import InvalidArgumentError

        with pytest.raises(InvalidArgumentError, match="n=2"):
            backend.stream_chat(MODEL, "x", temperature=0, n=2)
        await backend.aclose()

    scenario(test)


def test_replay_of_a_plain_answer() -> None:
    answer = ChatResponse(text="whole", finish_reason="stop")
    chunks = replay(answer, None)
    assert [c.text for c in chunks] == ["whole", ""] and chunks[-1].done
    assert not chunks[0].done


# ----------------------------------------------------------------------------- bad input


def test_unkeyable_parameters_are_a_logged_miss(caplog: pytest.LogCaptureFixture) -> None:
    async def test(fake: OpenAIFake) -> None:
        cache = ResponseCache()
        backend = make(fake, cache)
        with caplog.at_level(logging.WARNING, "ipfs_accelerate.api_backends.cache"):
            for _ in range(2):  # NaN has no canonical JSON form; the request itself still goes
                await backend.chat(MODEL, "secret prompt", temperature=0, top_p=float("nan"))
        assert chats(fake) == 2 and cache.skipped["unkeyable"] == 2
        assert sum("cannot key" in r.getMessage() for r in caplog.records) == 1
        assert "secret prompt" not in caplog.text
        with pytest.raises(ConfigurationError, match="cannot be cached"):
            cache.key_for(backend, "chat", MODEL, "x", temperature=0, logit_bias={1, 2})
        await backend.aclose()

    scenario(test)


def test_corrupt_and_foreign_entries_are_misses(caplog: pytest.LogCaptureFixture) -> None:
    async def test(fake: OpenAIFake) -> None:
        cache = ResponseCache()
        backend = make(fake, cache)
        first = await backend.chat(MODEL, "c1", temperature=0)
        key = cache.key_for(backend, "chat", MODEL, "c1", temperature=0)
        other_key = cache.key_for(backend, "chat", MODEL, "c2", temperature=0)
        store = cache.store
        assert isinstance(store, MemoryStore)
        good = store.get_now(key)
        assert good is not None
        bad_values = [
            b"\x00\xffnot json",
            b'{"v": 1}',
            good.replace(key.encode(), other_key.encode()),  # an entry of another request
            good.replace(b'"v":1', b'"v":99'),  # a future format
            good.replace(b'"text":"Echo: c1"', b'"text":42'),
        ]
        with caplog.at_level(logging.WARNING, "ipfs_accelerate.api_backends.cache"):
            for value in bad_values:
                await store.set(key, cache.namespace_of(backend), value, None)
                answer = await backend.chat(MODEL, "c1", temperature=0)
                assert answer.cache is None and answer.text == first.text
        assert chats(fake) == 1 + len(bad_values)
        assert cache.errors["corrupt"] == len(bad_values)
        assert sum("did not decode" in r.getMessage() for r in caplog.records) == 1
        # the good answer stored after the last miss is served again
        assert (await backend.chat(MODEL, "c1", temperature=0)).cache is not None
        await backend.aclose()

    scenario(test)


# ----------------------------------------------------------------------------- router, metrics


def test_router_cache() -> None:
    async def test(fake: OpenAIFake) -> None:
        backend = make(fake, cache=None)
        router = Router([backend], cache=True, name="cached")
        await router.chat(MODEL, "routed", temperature=0)
        hit = await router.chat(MODEL, "routed", temperature=0)
        assert chats(fake) == 1 and hit.cache is not None
        chunks = [c async for c in router.stream_chat(MODEL, "routed", temperature=0)]
        assert chats(fake) == 1 and "".join(c.text for c in chunks) == hit.text
        await router.embed(EMBED, "e")
        await router.embed(EMBED, "e")
        assert sum(1 for r in fake.requests if r.path.endswith("/embeddings")) == 1
        assert router.get_stats()["cache"]["hits"] == 3
        await router.aclose()

    scenario(test)


def test_prometheus_export_has_the_cache_counters_and_no_keys() -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from ipfs_accelerate.api_backends import exposition, register_prometheus

    async def test(fake: OpenAIFake) -> None:
        backend = make(fake, ResponseCache(MemoryStore(max_entries=1)))
        for prompt in ("private words", "private words", "other words"):
            await backend.chat(MODEL, prompt, temperature=0)
        registry = prometheus_client.CollectorRegistry()
        register_prometheus(backend, registry=registry)
        text = exposition(registry).decode()
        assert 'ipfs_accelerate_api_cache_hits_total{kind="backend",match="exact"' in text
        lines = {line.split("{")[0]: line for line in text.splitlines() if "api_cache" in line}
        assert lines["ipfs_accelerate_api_cache_misses_total"].endswith(" 2.0")
        assert lines["ipfs_accelerate_api_cache_stores_total"].endswith(" 2.0")
        assert lines["ipfs_accelerate_api_cache_evictions_total"].endswith(" 1.0")
        assert lines["ipfs_accelerate_api_cache_entries"].endswith(" 1.0")
        assert "private" not in text
        key = backend.response_cache.key_for(backend, "chat", MODEL, "other words", temperature=0)  # type: ignore[union-attr]
        assert key.split(":")[1] not in text and key.split(":")[0] not in text
        await backend.aclose()

    scenario(test)


def test_sync_facade_uses_the_cache() -> None:
    from .conftest import server_thread

    fake = OpenAIFake(api_key=None)
    with server_thread(fake):
        backend = make(fake)
        first = backend.sync.chat(MODEL, "sync", temperature=0)
        second = backend.sync.chat(MODEL, "sync", temperature=0)
        chunks = list(backend.sync.stream_chat(MODEL, "sync", temperature=0))
        assert chats(fake) == 1 and second.cache is not None and first.cache is None
        assert "".join(c.text for c in chunks) == first.text
        backend.close()


# ----------------------------------------------------------------------------- other providers


def test_every_provider_gets_the_cache_ollama_and_mlc() -> None:
    from ..fakes.mlc_fake import MODEL as MLC_MODEL
    from ..fakes.mlc_fake import MLCFake
    from ..fakes.ollama_fake import OllamaFake

    async def body() -> None:
        async with OllamaFake() as ollama_fake, MLCFake() as mlc_fake:
            ollama = create_api_backend(
                "ollama", metadata={"ollama_api_url": ollama_fake.url, "cache": True}
            )
            # Ollama's own option block carries the sampling settings; the stream is NDJSON
            for _ in range(2):
                await ollama.chat("llama3.2", "hi", options={"temperature": 0})
            live = [c async for c in ollama.stream_chat("llama3.2", "one two", seed=5)]
            again = [c async for c in ollama.stream_chat("llama3.2", "one two", seed=5)]
            assert [c.text for c in again] == [c.text for c in live]
            assert again[-1].usage == live[-1].usage and again[-1].cache is not None
            assert sum(1 for r in ollama_fake.requests if r.path == "/api/chat") == 2
            mlc = create_api_backend(
                "llvm", metadata={"llvm_api_url": mlc_fake.url + "/v1", "cache": True}
            )
            first = await mlc.complete(MLC_MODEL, "Once upon", temperature=0, max_tokens=4)
            second = await mlc.complete(MLC_MODEL, "Once upon", temperature=0, max_tokens=4)
            other = await mlc.complete(MLC_MODEL, "Once upon", temperature=0, max_tokens=5)
            assert second.text == first.text and second.cache is not None
            assert other.cache is None
            assert sum(1 for r in mlc_fake.requests if r.path == "/v1/completions") == 2
            # a completion and a chat with the same text are different requests
            chat = await mlc.chat(MLC_MODEL, "Once upon", temperature=0)
            assert chat.cache is None
            for b in (ollama, mlc):
                await b.aclose()

    run(body())


def test_a_store_url_with_a_password_is_not_kept_in_metadata() -> None:
    backend = create_api_backend(
        "openai",
        metadata={"api_key": "sk-a", "cache": "redis://:hunter2-secret@127.0.0.1:1/0"},
    )
    assert "hunter2" not in repr(backend.metadata) and "hunter2" not in repr(backend)
    assert "hunter2" not in repr(backend.response_cache)
    assert "hunter2" not in str(backend.get_stats())
