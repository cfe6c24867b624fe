"""Response caching for chat, completion and embedding calls (off by default).

A :class:`ResponseCache` sits in front of a backend's (or a router's) ``chat``,
``stream_chat``, ``complete`` and ``embed``. It is enabled per backend
(``metadata={"cache": True}`` or a :class:`ResponseCache`, or ``backend.response_cache =``),
per router (``Router(..., cache=...)``) or per call (``cache="use"``: the backend's cache,
else the process-wide :func:`default_cache`). Per call, ``cache=`` is ``"use"`` (answer from
the cache when possible, store misses), ``"refresh"`` (always ask the service, then store)
or ``"bypass"`` (neither read nor write).

The key is a SHA-256 of a canonical JSON form of the request: operation, model (the
backend's default filled in), the messages / prompt / inputs and every provider option,
but not the resilience options (``timeout``, ``priority``...), ``stream``,
``stream_options`` or request ids, and never the API key. Keys are namespaced per provider
and base URL (per router name for a router), so two services never share answers.

Sampled requests are not cached: a chat or completion is cached only with ``temperature=0``
or a ``seed`` (no ``temperature`` counts as sampling, since every provider here samples by
default); ``cache_nondeterministic=True`` (per cache or per call) opts in.

Stores: :class:`MemoryStore` (in-process LRU, bounded in entries and bytes),
:class:`SqliteStore` (one file shared by several processes: WAL, busy timeout, LRU bounds)
and :class:`RedisStore` (redis-py's asyncio client; bounds are Redis's own ``maxmemory``
policy, the per-entry byte bound is enforced here). A store that fails (Redis gone or slow,
a locked or corrupt file) turns the lookup into a miss and the write into a no-op, with one
warning per outage and an ``errors`` count: the request itself never fails because of the
cache. An entry that does not decode as this module's format for the key asked is a miss
(and is deleted), never an answer.

The semantic layer (:class:`SemanticCache`, off by default) answers a chat or completion
whose last prompt's embedding is within ``threshold`` cosine similarity of a cached prompt's
with the same model, parameters and earlier messages; the answer's ``cache`` field says
``kind="semantic"`` and the similarity. Its index lives in the process (the answers
themselves live in the store).

Nothing here logs or counts a key, a prompt or an answer.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar, cast

from ipfs_accelerate.errors import ConfigurationError

from ._types import CacheHit, ChatChunk, ChatResponse, EmbeddingResponse, ToolCall, Usage

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = [
    "CacheMode",
    "CacheStore",
    "MemoryStore",
    "RedisStore",
    "ResponseCache",
    "SemanticCache",
    "SqliteStore",
    "cached_operation",
    "default_cache",
]

logger = logging.getLogger("ipfs_accelerate.api_backends.cache")

CacheMode = Literal["use", "refresh", "bypass"]
_MODES: frozenset[str] = frozenset({"use", "refresh", "bypass"})

#: options that shape how a call is sent, not what it answers
_TRANSPORT_OPTIONS = frozenset(
    {"priority", "timeout", "connect_timeout", "max_retries", "deadline", "extra_headers"}
)
_NOT_IN_KEY = _TRANSPORT_OPTIONS | {"stream", "stream_options", "request_id", "idempotency_key"}
_FORMAT = 1
_NS_DIGEST = 16  # hex characters of the namespace digest that prefix every key


# ---------------------------------------------------------------------------- stores


class CacheStore(Protocol):
    """Where entries live: bytes under a key, grouped by namespace digest."""

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, namespace: str, value: bytes, ttl: float | None) -> int:
        """Store ``value``; return how many entries were evicted to make room."""
        ...

    async def delete(self, key: str) -> bool: ...

    async def clear_namespace(self, namespace: str) -> int: ...

    async def clear(self) -> int: ...

    def usage(self) -> tuple[int | None, int | None]:
        """(entries, bytes) held, where the store can tell cheaply."""
        ...

    async def aclose(self) -> None: ...


class StoreUnavailable(Exception):
    """A store could not answer (internal: the cache turns it into a miss)."""


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"cache: {what} must be an int > 0, got {value!r}")
    return value


class MemoryStore:
    """In-process LRU bounded by entry count and total bytes."""

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 << 20) -> None:
        self.max_entries = _positive_int(max_entries, "max_entries")
        self.max_bytes = _positive_int(max_bytes, "max_bytes")
        # key -> (namespace, value, expires_at or None)
        self._entries: OrderedDict[str, tuple[str, bytes, float | None]] = OrderedDict()
        self._bytes = 0

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def get_now(self, key: str) -> bytes | None:
        item = self._entries.get(key)
        if item is None:
            return None
        if item[2] is not None and item[2] <= time.time():
            self._drop(key)
            return None
        self._entries.move_to_end(key)
        return item[1]

    async def set(self, key: str, namespace: str, value: bytes, ttl: float | None) -> int:
        if key in self._entries:
            self._drop(key)
        self._entries[key] = (namespace, value, None if ttl is None else time.time() + ttl)
        self._bytes += len(value)
        evicted = 0
        while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
            oldest = next(iter(self._entries))
            self._drop(oldest)
            evicted += 1
        return evicted

    def _drop(self, key: str) -> None:
        item = self._entries.pop(key, None)
        if item is not None:
            self._bytes -= len(item[1])

    async def delete(self, key: str) -> bool:
        present = key in self._entries
        self._drop(key)
        return present

    async def clear_namespace(self, namespace: str) -> int:
        doomed = [k for k, item in self._entries.items() if item[0] == namespace]
        for key in doomed:
            self._drop(key)
        return len(doomed)

    async def clear(self) -> int:
        count = len(self._entries)
        self._entries.clear()
        self._bytes = 0
        return count

    def usage(self) -> tuple[int | None, int | None]:
        return len(self._entries), self._bytes

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        return f"<MemoryStore entries={len(self._entries)} bytes={self._bytes}>"


class SqliteStore:
    """Entries in one sqlite file that several processes may share.

    WAL journaling lets readers run beside a writer; writers take the lock up front
    (``BEGIN IMMEDIATE``) and wait up to ``busy_timeout`` for it. Bounds are enforced after
    each write by deleting the least recently used rows (a hit refreshes its row's use time).
    Calls run on a worker thread so that a slow disk never stalls the event loop.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_entries: int = 100_000,
        max_bytes: int = 512 << 20,
        busy_timeout: float = 5.0,
    ) -> None:
        self.path = os.fspath(path)
        self.max_entries = _positive_int(max_entries, "max_entries")
        self.max_bytes = _positive_int(max_bytes, "max_bytes")
        self.busy_timeout = float(busy_timeout)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, namespace TEXT NOT NULL,"
                " value BLOB NOT NULL, size INTEGER NOT NULL, expires REAL, used REAL NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS entries_used ON entries (used)")
            conn.execute("CREATE INDEX IF NOT EXISTS entries_ns ON entries (namespace)")
            self._conn = conn
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        def call() -> Any:
            with self._lock:
                try:
                    return fn(self._connection())
                except sqlite3.Error as exc:
                    raise StoreUnavailable(f"sqlite: {type(exc).__name__}") from exc

        return await asyncio.to_thread(call)

    async def get(self, key: str) -> bytes | None:
        def get(conn: sqlite3.Connection) -> bytes | None:
            row = conn.execute(
                "SELECT value, expires FROM entries WHERE key = ?", (key,)
            ).fetchone()
            now = time.time()
            if row is None:
                return None
            if row[1] is not None and row[1] <= now:
                conn.execute("DELETE FROM entries WHERE key = ?", (key,))
                return None
            conn.execute("UPDATE entries SET used = ? WHERE key = ?", (now, key))
            value = row[0]
            return bytes(value) if isinstance(value, bytes | memoryview) else None

        return cast("bytes | None", await self._run(get))

    async def set(self, key: str, namespace: str, value: bytes, ttl: float | None) -> int:
        def put(conn: sqlite3.Connection) -> int:
            now = time.time()
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?)",
                    (key, namespace, value, len(value), None if ttl is None else now + ttl, now),
                )
                conn.execute(
                    "DELETE FROM entries WHERE expires IS NOT NULL AND expires <= ?", (now,)
                )
                evicted = 0
                count, total = conn.execute(
                    "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries"
                ).fetchone()
                while count > self.max_entries or total > self.max_bytes:
                    row = conn.execute(
                        "SELECT key, size FROM entries ORDER BY used LIMIT 1"
                    ).fetchone()
                    if row is None:
                        break
                    conn.execute("DELETE FROM entries WHERE key = ?", (row[0],))
                    count, total, evicted = count - 1, total - row[1], evicted + 1
                conn.execute("COMMIT")
                return evicted
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        return int(await self._run(put))

    async def delete(self, key: str) -> bool:
        return bool(
            await self._run(
                lambda c: c.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount
            )
        )

    async def clear_namespace(self, namespace: str) -> int:
        sql = "DELETE FROM entries WHERE namespace = ?"
        return int(await self._run(lambda c: c.execute(sql, (namespace,)).rowcount))

    async def clear(self) -> int:
        return int(await self._run(lambda c: c.execute("DELETE FROM entries").rowcount))

    def usage(self) -> tuple[int | None, int | None]:
        with self._lock:
            try:
                row = (
                    self._connection()
                    .execute("SELECT COUNT(*), COALESCE(SUM(size), 0) FROM entries")
                    .fetchone()
                )
            except sqlite3.Error:
                return None, None
        return int(row[0]), int(row[1])

    async def aclose(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"<SqliteStore {os.path.basename(self.path)!r}>"


class RedisStore:
    """Entries in Redis (redis-py's asyncio client), shared by processes and machines.

    Every command is bounded by ``timeout``; a refused connection, a timeout or a Redis error
    raises :class:`StoreUnavailable`, which the cache turns into a miss. Entries expire with
    Redis's own TTL; total size is bounded by the server's ``maxmemory`` policy (the cache
    enforces its per-entry byte bound before writing). The client is made per event loop, so
    the store can be used from ``asyncio.run`` after ``asyncio.run`` and from the sync facade.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "ipfs-accelerate:cache:",
        timeout: float = 0.25,
        client: Any = None,
    ) -> None:
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(f"cache: Redis timeout must be > 0 seconds, got {timeout!r}")
        self._url = url
        self.prefix = prefix
        self.timeout = float(timeout)
        self._given = client
        self._clients: dict[int, Any] = {}

    def _client(self) -> Any:
        if self._given is not None:
            return self._given
        loop = asyncio.get_running_loop()
        client = self._clients.get(id(loop))
        if client is None:
            try:
                import redis.asyncio as aioredis
                from redis.asyncio.retry import Retry
                from redis.backoff import NoBackoff
            except ImportError as exc:
                raise ConfigurationError(
                    "the Redis cache store needs redis-py: pip install 'ipfs-accelerate[cache]'"
                ) from exc
            client = aioredis.Redis.from_url(
                self._url,
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=Retry(NoBackoff(), 0),  # the cache degrades to a miss instead of waiting
            )
            # a closed loop's client cannot be reused; forget those
            self._clients = {k: v for k, v in self._clients.items() if k == id(loop)}
            self._clients[id(loop)] = client
        return client

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        try:
            async with asyncio.timeout(self.timeout):
                return await getattr(self._client(), name)(*args, **kwargs)
        except ConfigurationError:
            raise
        except (TimeoutError, OSError) as exc:
            raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc
        except Exception as exc:
            if type(exc).__module__.startswith("redis"):
                raise StoreUnavailable(f"redis: {type(exc).__name__}") from exc
            raise

    async def get(self, key: str) -> bytes | None:
        value = await self._call("get", self.prefix + key)
        return value if isinstance(value, bytes) or value is None else str(value).encode()

    async def set(self, key: str, namespace: str, value: bytes, ttl: float | None) -> int:
        px = None if ttl is None else max(1, int(ttl * 1000))
        await self._call("set", self.prefix + key, value, px=px)
        return 0

    async def delete(self, key: str) -> bool:
        return bool(await self._call("delete", self.prefix + key))

    async def _unlink_matching(self, pattern: str) -> int:
        removed = 0
        cursor: Any = 0
        while True:
            cursor, keys = await self._call("scan", cursor, match=pattern, count=500)
            if keys:
                removed += int(await self._call("unlink", *keys))
            if not cursor:
                return removed

    async def clear_namespace(self, namespace: str) -> int:
        return await self._unlink_matching(f"{self.prefix}{namespace}:*")

    async def clear(self) -> int:
        return await self._unlink_matching(f"{self.prefix}*")

    def usage(self) -> tuple[int | None, int | None]:
        return None, None

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            try:
                await client.aclose()
            except Exception:  # a client of a loop that is gone: nothing left to close
                logger.debug("redis cache: closing a client failed", exc_info=True)

    def __repr__(self) -> str:
        return f"<RedisStore prefix={self.prefix!r}>"


def store_from_url(url: str) -> CacheStore:
    """``memory``, ``sqlite:///path/to/file.db`` or ``redis://host:port/db``."""
    if url == "memory":
        return MemoryStore()
    if url.startswith("sqlite:///"):
        return SqliteStore(url[len("sqlite:///") :])  # sqlite:////abs/path is absolute
    if url.startswith(("redis://", "rediss://", "unix://")):
        return RedisStore(url)
    raise ConfigurationError(
        "cache: store must be 'memory', 'sqlite:///PATH' or 'redis://HOST:PORT/DB', "
        f"got {url.split('://')[0]!r}"
    )


# ---------------------------------------------------------------------------- semantic


class SemanticCache:
    """Nearest-prompt lookup over the prompts this process cached (see the module docstring).

    ``embedder``: None (the local :class:`~ipfs_accelerate.models.TextEmbedder`, all-MiniLM-L6-v2,
    loaded on first use), a TextEmbedder-like object with a synchronous ``embed(text)``, an API
    backend (its async ``embed``; ``embedding_model`` names the model) or a function
    ``text -> vector``. ``threshold``: the cosine similarity at or above which a prompt
    counts as the same.
    """

    def __init__(
        self,
        embedder: Any = None,
        *,
        threshold: float = 0.95,
        max_entries: int = 10_000,
        embedding_model: str | None = None,
    ) -> None:
        if not isinstance(threshold, int | float) or not 0.0 < threshold <= 1.0:
            raise ConfigurationError(
                f"cache: semantic threshold must be in (0, 1], got {threshold!r}"
            )
        self.threshold = float(threshold)
        self.max_entries = _positive_int(max_entries, "semantic max_entries")
        self.embedding_model = embedding_model
        self._embedder = embedder
        # exact key -> (group, unit vector); insertion order is age
        self._index: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        self._groups: dict[str, dict[str, np.ndarray]] = {}

    async def _get_embedder(self) -> Any:
        if self._embedder is None:
            from ipfs_accelerate.models import TextEmbedder

            self._embedder = await asyncio.to_thread(
                TextEmbedder.from_pretrained, device="cpu", sharing=False
            )
        return self._embedder

    async def embed(self, text: str) -> np.ndarray:
        import numpy as np

        embedder = await self._get_embedder()
        method = getattr(embedder, "embed", None)
        if method is not None and asyncio.iscoroutinefunction(method):
            response = await method(self.embedding_model, [text], cache="bypass")
            vector = np.asarray(response.embeddings[0], dtype=np.float32)
        elif method is not None:
            vector = np.asarray(await asyncio.to_thread(method, text), dtype=np.float32)
        elif callable(embedder):
            vector = np.asarray(await asyncio.to_thread(embedder, text), dtype=np.float32)
        else:
            raise ConfigurationError(
                f"cache: semantic embedder {type(embedder).__name__} has no embed() and is not "
                "callable"
            )
        vector = vector.reshape(-1)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm > 0 else vector

    def nearest(self, group: str, vector: np.ndarray) -> tuple[str, float] | None:
        import numpy as np

        members = self._groups.get(group)
        if not members:
            return None
        keys = list(members)
        scores = np.stack([members[k] for k in keys]) @ vector
        best = int(np.argmax(scores))
        score = float(scores[best])
        return (keys[best], score) if score >= self.threshold else None

    def add(self, group: str, key: str, vector: np.ndarray) -> None:
        self.forget(key)
        self._index[key] = (group, vector)
        self._groups.setdefault(group, {})[key] = vector
        while len(self._index) > self.max_entries:
            self.forget(next(iter(self._index)))

    def forget(self, key: str) -> None:
        item = self._index.pop(key, None)
        if item is not None:
            members = self._groups.get(item[0])
            if members is not None:
                members.pop(key, None)
                if not members:
                    del self._groups[item[0]]

    def forget_namespace(self, namespace: str) -> None:
        for key in [k for k in self._index if k.startswith(namespace + ":")]:
            self.forget(key)

    def clear(self) -> None:
        self._index.clear()
        self._groups.clear()

    def __len__(self) -> int:
        return len(self._index)


# ---------------------------------------------------------------------------- the cache


@dataclass(slots=True)
class _Plan:
    """What one call will do with the cache, worked out before it is sent."""

    cache: ResponseCache
    mode: str
    op: str
    namespace: str
    key: str
    provider: str | None = None
    group: str | None = None  # semantic group (None: no semantic lookup for this call)
    prompt: str | None = None
    vector: Any = None


class ResponseCache:
    """Exact (and optionally semantic) cache of chat, completion and embedding answers.

    ``store``: a :class:`CacheStore`, or ``"memory"`` / ``"sqlite:///PATH"`` /
    ``"redis://HOST:PORT/DB"`` (default: an in-process :class:`MemoryStore`). ``ttl``:
    seconds an entry lives (None: until evicted). ``max_entry_bytes``: larger answers are not
    stored. ``cache_nondeterministic``: also cache sampled requests. ``semantic``: a
    :class:`SemanticCache`, True for the default one, or None.
    """

    def __init__(
        self,
        store: CacheStore | str | None = None,
        *,
        ttl: float | None = 3600.0,
        max_entry_bytes: int = 4 << 20,
        cache_nondeterministic: bool = False,
        semantic: SemanticCache | bool | None = None,
    ) -> None:
        if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float)
                                or ttl <= 0):  # fmt: skip
            raise ConfigurationError(f"cache: ttl must be > 0 seconds or None, got {ttl!r}")
        if not isinstance(cache_nondeterministic, bool):
            raise ConfigurationError(
                f"cache: cache_nondeterministic must be a bool, got {cache_nondeterministic!r}"
            )
        self.store: CacheStore = (
            MemoryStore() if store is None else store_from_url(store) if isinstance(store, str)
            else store
        )  # fmt: skip
        self.ttl = None if ttl is None else float(ttl)
        self.max_entry_bytes = _positive_int(max_entry_bytes, "max_entry_bytes")
        self.cache_nondeterministic = cache_nondeterministic
        if semantic is True:
            semantic = SemanticCache()
        elif semantic is False:
            semantic = None
        if semantic is not None and not isinstance(semantic, SemanticCache):
            raise ConfigurationError(
                f"cache: semantic must be a SemanticCache, True or None, got {semantic!r}"
            )
        self.semantic: SemanticCache | None = semantic
        self.counts: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.skipped: Counter[str] = Counter()
        self._warned: set[str] = set()
        self._store_down = False

    @classmethod
    def from_value(cls, value: Any) -> ResponseCache | None:
        """None/False: no cache; True: an in-process one; a dict: this class's arguments; a
        store URL; or a ResponseCache itself."""
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, ResponseCache):
            return value
        if isinstance(value, str):
            return cls(value)
        if isinstance(value, Mapping):
            options = dict(value)
            semantic = options.get("semantic")
            if isinstance(semantic, Mapping):
                options["semantic"] = SemanticCache(**semantic)
            try:
                return cls(**options)
            except TypeError as exc:
                raise ConfigurationError(f"cache: {exc}") from None
        raise ConfigurationError(
            "cache must be True, a store URL, a dict of ResponseCache options or a "
            f"ResponseCache, got {type(value).__name__}"
        )

    def __repr__(self) -> str:
        return f"<ResponseCache store={self.store!r} ttl={self.ttl}>"

    # ------------------------------------------------------------------ logging once

    def _warn_once(self, reason: str, message: str, *args: Any) -> None:
        if reason not in self._warned:
            self._warned.add(reason)
            logger.warning(message, *args)

    def _store_failed(self, exc: StoreUnavailable) -> None:
        self.errors["unavailable"] += 1
        if not self._store_down:
            self._store_down = True
            logger.warning(
                "response cache: the store is unavailable (%s); answering without it", exc
            )

    def _store_ok(self) -> None:
        if self._store_down:
            self._store_down = False
            logger.info("response cache: the store answers again")

    # ------------------------------------------------------------------ entries

    def _encode(self, plan: _Plan, result: Any, chunks: list[str] | None) -> bytes:
        if isinstance(result, EmbeddingResponse):
            data: dict[str, Any] = {
                "embeddings": result.embeddings,
                "model": result.model,
                "usage": [result.usage.input_tokens, result.usage.output_tokens],
                "raw": result.raw,
                "provider": result.provider,
                "request_id": result.request_id,
            }
        else:
            data = {
                "text": result.text,
                "role": result.role,
                "model": result.model,
                "finish_reason": result.finish_reason,
                "usage": [result.usage.input_tokens, result.usage.output_tokens],
                "tool_calls": [[t.id, t.name, t.arguments, t.type] for t in result.tool_calls],
                "raw": result.raw,
                "provider": result.provider,
                "request_id": result.request_id,
                "chunks": chunks,
            }
        entry = {"v": _FORMAT, "key": plan.key, "op": plan.op, "at": time.time(), "data": data}
        return json.dumps(entry, separators=(",", ":"), ensure_ascii=False).encode()

    def _decode(self, value: bytes, key: str, op: str, kind: str, similarity: float | None) -> Any:
        """The stored answer, or None (logged once) when the bytes are not ours for ``key``."""
        try:
            entry = json.loads(value)
            if not (
                isinstance(entry, dict) and entry.get("v") == _FORMAT and entry.get("key") == key
                and entry.get("op") == op
            ):  # fmt: skip
                raise ValueError("not an entry of this cache for this key")
            data = entry["data"]
            hit = CacheHit(kind, key, max(0.0, time.time() - float(entry["at"])), similarity)
            usage = Usage(*_token_pair(data["usage"]))
            if op == "embed":
                vectors = data["embeddings"]
                if not isinstance(vectors, list) or not all(
                    isinstance(v, list) and all(isinstance(x, int | float) for x in v)
                    for v in vectors
                ):
                    raise ValueError("embeddings are not lists of numbers")
                return EmbeddingResponse(
                    embeddings=vectors, model=_opt_str(data["model"]), usage=usage,
                    raw=data["raw"], provider=_opt_str(data["provider"]),
                    request_id=_opt_str(data["request_id"]), cache=hit,
                )  # fmt: skip
            chunks = data["chunks"]
            if chunks is not None and not (
                isinstance(chunks, list) and all(isinstance(c, str) for c in chunks)
            ):
                raise ValueError("chunks are not strings")
            text = data["text"]
            if not isinstance(text, str) or (chunks is not None and "".join(chunks) != text):
                raise ValueError("text does not match its chunks")
            return (
                ChatResponse(
                    text=text, role=str(data["role"]), model=_opt_str(data["model"]),
                    finish_reason=_opt_str(data["finish_reason"]), usage=usage,
                    tool_calls=[ToolCall(str(i), str(n), a, str(t))
                                for i, n, a, t in data["tool_calls"]],
                    raw=data["raw"], provider=_opt_str(data["provider"]),
                    request_id=_opt_str(data["request_id"]), cache=hit,
                ),
                chunks,
            )  # fmt: skip
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            self.errors["corrupt"] += 1
            self._warn_once("corrupt", "response cache: an entry did not decode; treated as a miss")
            return None

    async def _read(self, plan: _Plan, key: str, kind: str, similarity: float | None) -> Any:
        try:
            value = await self.store.get(key)
        except StoreUnavailable as exc:
            self._store_failed(exc)
            return None
        self._store_ok()
        if value is None:
            return None
        decoded = self._decode(value, key, plan.op, kind, similarity)
        if decoded is None:
            try:
                await self.store.delete(key)
            except StoreUnavailable as exc:
                self._store_failed(exc)
        return decoded

    async def lookup(self, plan: _Plan) -> Any:
        """The cached answer for ``plan`` (exact, then semantic), or None after counting a miss."""
        found = await self._read(plan, plan.key, "exact", None)
        if found is not None:
            self.counts["hits"] += 1
            return found
        if plan.group is not None and self.semantic is not None and plan.prompt is not None:
            try:
                plan.vector = await self.semantic.embed(plan.prompt)
            except Exception as exc:  # an embedder that fails must not fail the request
                self.errors["embedder"] += 1
                self._warn_once(
                    "embedder", "response cache: the semantic embedder failed (%s); exact "
                    "matching only", type(exc).__name__,
                )  # fmt: skip
                plan.group = None
            else:
                near = self.semantic.nearest(plan.group, plan.vector)
                if near is not None:
                    found = await self._read(plan, near[0], "semantic", near[1])
                    if found is not None:
                        self.counts["hits"] += 1
                        self.counts["semantic_hits"] += 1
                        return found
                    self.semantic.forget(near[0])
        self.counts["misses"] += 1
        return None

    async def save(self, plan: _Plan, result: Any, chunks: list[str] | None = None) -> bool:
        try:
            value = self._encode(plan, result, chunks)
        except (TypeError, ValueError):
            self.skipped["unencodable"] += 1
            self._warn_once(
                "unencodable", "response cache: an answer is not JSON-encodable; not cached"
            )
            return False
        if len(value) > self.max_entry_bytes:
            self.skipped["too_large"] += 1
            self._warn_once(
                "too_large", "response cache: an answer of %d bytes exceeds max_entry_bytes=%d; "
                "not cached", len(value), self.max_entry_bytes,
            )  # fmt: skip
            return False
        try:
            evicted = await self.store.set(plan.key, plan.namespace, value, self.ttl)
        except StoreUnavailable as exc:
            self._store_failed(exc)
            return False
        self._store_ok()
        self.counts["stores"] += 1
        self.counts["evictions"] += evicted
        if plan.group is not None and self.semantic is not None and plan.prompt is not None:
            try:
                vector = plan.vector
                if vector is None:
                    vector = await self.semantic.embed(plan.prompt)
                self.semantic.add(plan.group, plan.key, vector)
            except Exception as exc:
                self.errors["embedder"] += 1
                self._warn_once(
                    "embedder", "response cache: the semantic embedder failed (%s); exact "
                    "matching only", type(exc).__name__,
                )  # fmt: skip
        return True

    # ------------------------------------------------------------------ invalidation

    async def invalidate(self, key: str | None = None, *, namespace: str | None = None) -> int:
        """Remove one entry (``key``, as in a hit's ``cache.key`` or :meth:`key_for`), every
        entry of a namespace (:meth:`namespace_of`), or everything (no argument)."""
        if key is not None and namespace is not None:
            raise ConfigurationError("cache: invalidate takes a key or a namespace, not both")
        if key is not None:
            if self.semantic is not None:
                self.semantic.forget(key)
            return int(await self.store.delete(key))
        if namespace is not None:
            if self.semantic is not None:
                self.semantic.forget_namespace(namespace)
            return await self.store.clear_namespace(namespace)
        if self.semantic is not None:
            self.semantic.clear()
        return await self.store.clear()

    async def clear(self) -> int:
        return await self.invalidate()

    @staticmethod
    def namespace_of(source: Any) -> str:
        """The namespace (a digest of provider and base URL, or router name) of a backend."""
        return _namespace(source)

    def key_for(self, source: Any, op: str, model: str | None, payload: Any, **options: Any) -> str:
        """The key ``source.<op>(model, payload, **options)`` is cached under (for
        :meth:`invalidate`). ``op``: chat, stream_chat, complete or embed."""
        options.pop("cache", None)
        options.pop("cache_nondeterministic", None)
        plan = _plan(source, _op_of(op), self, "use", True, model, payload, options)
        if plan is None:
            raise ConfigurationError(f"cache: this {op} request cannot be cached")
        return plan.key

    async def aclose(self) -> None:
        await self.store.aclose()

    # ------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        entries, size = self.store.usage()
        return {
            "store": type(self.store).__name__,
            "hits": self.counts["hits"],
            "semantic_hits": self.counts["semantic_hits"],
            "misses": self.counts["misses"],
            "stores": self.counts["stores"],
            "evictions": self.counts["evictions"],
            "errors": dict(self.errors),
            "skipped": dict(self.skipped),
            "entries": entries,
            "bytes": size,
        }


def _token_pair(value: Any) -> tuple[int | None, int | None]:
    first, second = value
    for item in (first, second):
        if item is not None and (isinstance(item, bool) or not isinstance(item, int)):
            raise ValueError("token counts are not ints")
    return first, second


def _opt_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError("expected a string")


_DEFAULT: ResponseCache | None = None


def default_cache() -> ResponseCache:
    """The process-wide in-memory cache used by ``cache="use"`` on a backend without one."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = ResponseCache()
    return _DEFAULT


# ---------------------------------------------------------------------------- keys


def _namespace(source: Any) -> str:
    describe = getattr(source, "_cache_namespace", None)
    label = describe() if describe is not None else f"{type(source).__name__}"
    return hashlib.sha256(label.encode()).hexdigest()[:_NS_DIGEST]


def _op_of(op: str) -> str:
    if op == "stream_chat":
        return "chat"
    if op not in ("chat", "complete", "embed"):
        raise ConfigurationError(
            f"cache: op must be chat, stream_chat, complete or embed, got {op!r}"
        )
    return op


class _Unkeyable(TypeError):
    pass


def _reject(value: Any) -> Any:
    # a set has no canonical order and an object no canonical form: such a request is not
    # cached rather than keyed on a repr that may differ between equal requests
    raise _Unkeyable(type(value).__name__)


_KEY_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_reject
)


def _sampling_setting(options: Mapping[str, Any], name: str) -> Any:
    if options.get(name) is not None:
        return options[name]
    for nested in ("options", "generation_config", "generationConfig", "extra_body"):
        inner = options.get(nested)
        if isinstance(inner, Mapping) and inner.get(name) is not None:
            return inner[name]
    return None


def is_deterministic(options: Mapping[str, Any]) -> bool:
    """Whether a chat/completion request asks for one reproducible answer: ``temperature=0``
    or a ``seed`` (no temperature means the provider's default, which samples)."""
    if _sampling_setting(options, "seed") is not None:
        return True
    temperature = _sampling_setting(options, "temperature")
    return (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and (temperature == 0)
    )


def _canonical_messages(messages: Any) -> Any:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return messages


def _last_prompt(messages: Any) -> tuple[Any, str] | None:
    """(earlier messages, the last user message's text) for semantic matching."""
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role", "user") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list):
        if not all(isinstance(p, Mapping) and p.get("type", "text") == "text" for p in content):
            return None  # images and audio are not compared by text
        content = "".join(str(p.get("text", "")) for p in content)
    if not isinstance(content, str) or not content.strip():
        return None
    return messages[:-1], content


def _plan(
    source: Any,
    op: str,
    cache: ResponseCache,
    mode: str,
    nondeterministic: bool,
    model: str | None,
    payload: Any,
    options: Mapping[str, Any],
) -> _Plan | None:
    """The key and semantic group of a call, or None when it cannot or must not be cached."""
    if model is None:
        default = getattr(
            source, "get_default_embedding_model" if op == "embed" else "get_default_model", None
        )
        if default is not None:
            try:
                model = default()
            except Exception:  # no default model: the call itself will say so
                return None
    if op != "embed" and not (nondeterministic or is_deterministic(options)):
        cache.skipped["nondeterministic"] += 1
        return None
    params = {k: v for k, v in options.items() if k not in _NOT_IN_KEY}
    if op == "embed":
        body: Any = [payload] if isinstance(payload, str) else payload
    elif op == "chat":
        body = _canonical_messages(payload)
    else:
        body = payload
    namespace = _namespace(source)
    try:
        canonical = _KEY_ENCODER.encode({"op": op, "model": model, "in": body, "params": params})
    except (TypeError, ValueError) as exc:
        cache.skipped["unkeyable"] += 1
        cache._warn_once(
            "unkeyable", "response cache: a %s request has a value the cache cannot key (%s); "
            "not cached", op, exc if isinstance(exc, _Unkeyable) else type(exc).__name__,
        )  # fmt: skip
        return None
    key = namespace + ":" + hashlib.sha256(canonical.encode()).hexdigest()
    plan = _Plan(cache, mode, op, namespace, key, getattr(source, "provider", None))
    if cache.semantic is not None and op in ("chat", "complete"):
        split = _last_prompt(body) if op == "chat" else (
            (None, body) if isinstance(body, str) and body.strip() else None
        )  # fmt: skip
        if split is not None:
            group_canonical = _KEY_ENCODER.encode(
                {"op": op, "model": model, "before": split[0], "params": params}
            )
            plan.group = hashlib.sha256(group_canonical.encode()).hexdigest()
            plan.prompt = split[1]
    return plan


# ---------------------------------------------------------------------------- the wrappers

#: the object whose cache layer is serving the current call: an override that calls
#: ``super().chat`` reaches a second wrapper of the same object, which must pass through
_serving: contextvars.ContextVar[Any] = contextvars.ContextVar("ipfs_accelerate_cache_serving",
                                                               default=None)  # fmt: skip

_PAYLOAD = {"chat": "messages", "stream_chat": "messages", "complete": "prompt", "embed": "inputs"}

F = TypeVar("F", bound=Callable[..., Any])


def _resolve(source: Any, options: dict[str, Any]) -> tuple[ResponseCache, str, bool] | None:
    """Pop the cache options of a call; (cache, mode, nondeterministic) or None for none."""
    requested = options.pop("cache", None)
    nondet = options.pop("cache_nondeterministic", None)
    configured: ResponseCache | None = getattr(source, "response_cache", None)
    if requested is None and configured is None:
        return None
    if _serving.get() is source:
        return None
    if nondet is not None and not isinstance(nondet, bool):
        raise ConfigurationError(f"cache_nondeterministic must be a bool, got {nondet!r}")
    if isinstance(requested, ResponseCache):
        cache, mode = requested, "use"
    elif requested is None or requested is True:
        cache, mode = configured or default_cache(), "use"
    elif requested is False or requested == "bypass":
        return None
    elif isinstance(requested, str) and requested in _MODES:
        cache, mode = configured or default_cache(), requested
    else:
        raise ConfigurationError(
            f"cache must be 'use', 'refresh', 'bypass' or a ResponseCache, got {requested!r}"
        )
    return cache, mode, cache.cache_nondeterministic if nondet is None else nondet


def _split_args(op: str, args: tuple[Any, ...], options: dict[str, Any]) -> tuple[Any, Any]:
    model = args[0] if args else options.pop("model", None)
    payload = args[1] if len(args) > 1 else options.pop(_PAYLOAD[op], None)
    return model, payload


def cached_operation(op: str) -> Callable[[F], F]:
    """Put the response cache in front of ``chat``, ``stream_chat``, ``complete`` or ``embed``."""

    def wrap(fn: F) -> F:
        if getattr(fn, "__response_cache__", False):
            return fn
        if op == "stream_chat":
            wrapper: Any = _stream_wrapper(fn)
        else:
            wrapper = _call_wrapper(fn, op)
        wrapper.__response_cache__ = True
        return cast(F, wrapper)

    return wrap


def _call_wrapper(fn: Callable[..., Any], op: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def call(self: Any, *args: Any, **options: Any) -> Any:
        resolved = _resolve(self, options)
        if resolved is None:
            return await fn(self, *args, **options)
        cache, mode, nondet = resolved
        model, payload = _split_args(op, args, options)
        plan = _plan(self, op, cache, mode, nondet, model, payload, options)
        if plan is not None and mode == "use":
            found = await cache.lookup(plan)
            if found is not None:
                return found if op == "embed" else found[0]
        token = _serving.set(self)
        try:
            result = await fn(self, model, payload, **options)
        finally:
            _serving.reset(token)
        if plan is not None:
            await cache.save(plan, result)
        return result

    return call


def _stream_wrapper(fn: Callable[..., AsyncIterator[ChatChunk]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def stream_chat(self: Any, *args: Any, **options: Any) -> AsyncIterator[ChatChunk]:
        resolved = _resolve(self, options)
        if resolved is None:
            return fn(self, *args, **options)
        cache, mode, nondet = resolved
        model, payload = _split_args("stream_chat", args, options)
        plan = _plan(self, "chat", cache, mode, nondet, model, payload, options)
        token = _serving.set(self)
        try:  # built now so that bad arguments raise here, as without a cache; sends nothing yet
            live = fn(self, model, payload, **options)
        finally:
            _serving.reset(token)
        if plan is None:
            return live
        return _cached_stream(plan, live)

    return stream_chat


async def _cached_stream(plan: _Plan, live: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
    cache = plan.cache
    if plan.mode == "use":
        try:
            found = await cache.lookup(plan)
        except BaseException:
            await _aclose(live)
            raise
        if found is not None:
            await _aclose(live)
            for chunk in replay(*found):
                yield chunk
            return
    texts: list[str] = []
    last: ChatChunk | None = None
    try:
        async for chunk in live:
            if chunk.done:
                last = chunk
            texts.append(chunk.text)
            yield chunk
    except GeneratorExit:
        # closed by the consumer: a complete answer (its last chunk seen) is still worth keeping
        await _aclose(live)
        if last is not None:
            await _save_stream(plan, texts, last)
        raise
    except BaseException:
        await _aclose(live)
        raise
    if last is not None:
        await _save_stream(plan, texts, last)


async def _save_stream(plan: _Plan, texts: list[str], last: ChatChunk) -> None:
    answer = ChatResponse(
        text="".join(texts),
        model=last.model,
        finish_reason=last.finish_reason,
        usage=last.usage or Usage(),
        tool_calls=list(last.tool_calls),
        provider=plan.provider,
    )
    await plan.cache.save(plan, answer, texts)


def replay(answer: ChatResponse, chunks: Sequence[str] | None) -> list[ChatChunk]:
    """The chunks a cached answer streams as: the stored chunks' text when it was streamed
    (else the whole text in one chunk), the last one ``done`` with finish reason, usage and
    tool calls."""
    texts = list(chunks) if chunks else [answer.text, ""]
    out = [ChatChunk(text=t, model=answer.model, cache=answer.cache) for t in texts[:-1]]
    done = ChatChunk(
        text=texts[-1], done=True, finish_reason=answer.finish_reason, usage=answer.usage,
        tool_calls=list(answer.tool_calls), model=answer.model, cache=answer.cache,
    )  # fmt: skip
    out.append(done)
    return out


async def _aclose(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing an unstarted or broken stream must not mask the real outcome
            logger.debug("response cache: closing a stream failed", exc_info=True)
