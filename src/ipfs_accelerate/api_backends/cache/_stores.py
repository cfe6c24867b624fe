"""Where cached answers live: an in-process LRU, a sqlite file, Redis."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, Protocol, cast

from ipfs_accelerate.errors import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover
    import sqlite3

__all__ = [
    "CacheStore",
    "MemoryStore",
    "RedisStore",
    "SharedIndex",
    "SqliteStore",
    "StoreUnavailable",
    "positive_int",
    "store_from_url",
]

logger = logging.getLogger("ipfs_accelerate.api_backends.cache")


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


class SharedIndex(Protocol):
    """A store that also keeps the semantic layer's prompt index, so that every process using
    the store finds the prompts any of them cached. ``group`` names one model/parameters/
    embedder scope (it starts with the entries' namespace); ``vector`` is float32 bytes.
    ``index_load`` returns None when the group has not changed since version ``known``."""

    async def index_put(self, group: str, key: str, vector: bytes, max_entries: int) -> int: ...

    async def index_load(
        self, group: str, known: str | None
    ) -> tuple[str, dict[str, bytes]] | None: ...

    async def index_forget(self, keys: list[str]) -> None: ...


class StoreUnavailable(Exception):
    """A store could not answer (internal: the cache turns it into a miss)."""


def positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigurationError(f"cache: {what} must be an int > 0, got {value!r}")
    return value


class MemoryStore:
    """In-process LRU bounded by entry count and total bytes.

    A lock makes it safe to share between event loops on several threads (the sync facade
    runs its own loop thread); it is held for dictionary operations only."""

    def __init__(self, max_entries: int = 10_000, max_bytes: int = 64 << 20) -> None:
        self.max_entries = positive_int(max_entries, "max_entries")
        self.max_bytes = positive_int(max_bytes, "max_bytes")
        # key -> (namespace, value, expires_at or None)
        self._entries: OrderedDict[str, tuple[str, bytes, float | None]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    async def get(self, key: str) -> bytes | None:
        return self.get_now(key)

    def get_now(self, key: str) -> bytes | None:
        with self._lock:
            item = self._entries.get(key)
            if item is None:
                return None
            if item[2] is not None and item[2] <= time.time():
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return item[1]

    async def set(self, key: str, namespace: str, value: bytes, ttl: float | None) -> int:
        with self._lock:
            self._drop(key)
            self._entries[key] = (namespace, value, None if ttl is None else time.time() + ttl)
            self._bytes += len(value)
            evicted = 0
            while len(self._entries) > self.max_entries or self._bytes > self.max_bytes:
                self._drop(next(iter(self._entries)))
                evicted += 1
            return evicted

    def _drop(self, key: str) -> None:
        item = self._entries.pop(key, None)
        if item is not None:
            self._bytes -= len(item[1])

    async def delete(self, key: str) -> bool:
        with self._lock:
            present = key in self._entries
            self._drop(key)
            return present

    async def clear_namespace(self, namespace: str) -> int:
        with self._lock:
            doomed = [k for k, item in self._entries.items() if item[0] == namespace]
            for key in doomed:
                self._drop(key)
            return len(doomed)

    async def clear(self) -> int:
        with self._lock:
            count = len(self._entries)
            self._entries.clear()
            self._bytes = 0
            return count

    def usage(self) -> tuple[int | None, int | None]:
        with self._lock:
            return len(self._entries), self._bytes

    async def aclose(self) -> None:
        return None

    def __repr__(self) -> str:
        entries, size = self.usage()
        return f"<MemoryStore entries={entries} bytes={size}>"


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
        self.max_entries = positive_int(max_entries, "max_entries")
        self.max_bytes = positive_int(max_bytes, "max_bytes")
        self.busy_timeout = float(busy_timeout)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            import sqlite3

            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            self._use_wal(conn)
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS entries (key TEXT PRIMARY KEY, namespace TEXT NOT NULL,"
                " value BLOB NOT NULL, size INTEGER NOT NULL, expires REAL, used REAL NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS entries_used ON entries (used)")
            conn.execute("CREATE INDEX IF NOT EXISTS entries_ns ON entries (namespace)")
            # the semantic index: one row per cached prompt; a group's version comes from one
            # counter that only grows, so a version seen before a clear() is never seen again
            conn.execute(
                "CREATE TABLE IF NOT EXISTS semantic (key TEXT PRIMARY KEY, grp TEXT NOT NULL,"
                " vector BLOB NOT NULL, added INTEGER NOT NULL)"
            )
            conn.execute("CREATE INDEX IF NOT EXISTS semantic_grp ON semantic (grp)")
            conn.execute("CREATE INDEX IF NOT EXISTS semantic_added ON semantic (added)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS semantic_versions (grp TEXT PRIMARY KEY,"
                " version INTEGER NOT NULL)"
            )
            conn.execute("CREATE TABLE IF NOT EXISTS clock (id INTEGER PRIMARY KEY, n INTEGER)")
            conn.execute("INSERT OR IGNORE INTO clock VALUES (0, 0)")
            self._conn = conn
        return self._conn

    def _use_wal(self, conn: sqlite3.Connection) -> None:
        """Switch the file to WAL once. Switching needs the file to itself for a moment, and
        SQLite answers "database is locked" at once (no busy wait) when another process is
        opening it at the same time: retried until ``busy_timeout``; a file already in WAL
        (the mode persists) needs no switch."""
        import sqlite3

        deadline = time.monotonic() + self.busy_timeout
        while True:
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()
                if str(mode[0]).lower() != "wal":
                    conn.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError:
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.01)

    async def _run(self, fn: Callable[[sqlite3.Connection], Any]) -> Any:
        import sqlite3

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
        def delete(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                _sqlite_forget(conn, "key = ?", (key,))
                return int(conn.execute("DELETE FROM entries WHERE key = ?", (key,)).rowcount)

        return bool(await self._run(delete))

    async def clear_namespace(self, namespace: str) -> int:
        def clear(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                # keys are "namespace:digest"; the namespace has no LIKE wildcards (hex)
                _sqlite_forget(conn, "substr(key, 1, ?) = ?", (len(namespace) + 1, namespace + ":"))
                sql = "DELETE FROM entries WHERE namespace = ?"
                return int(conn.execute(sql, (namespace,)).rowcount)

        return int(await self._run(clear))

    async def clear(self) -> int:
        def clear(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                _sqlite_forget(conn, "1", ())
                return int(conn.execute("DELETE FROM entries").rowcount)

        return int(await self._run(clear))

    async def index_put(self, group: str, key: str, vector: bytes, max_entries: int) -> int:
        def put(conn: sqlite3.Connection) -> int:
            with _transaction(conn):
                _sqlite_forget(conn, "key = ?", (key,))
                conn.execute(
                    "INSERT INTO semantic VALUES (?, ?, ?, ?)", (key, group, vector, _tick(conn))
                )
                _bump(conn, [group])
                count = conn.execute("SELECT COUNT(*) FROM semantic").fetchone()[0]
                excess = max(0, int(count) - max_entries)
                if excess:
                    _sqlite_forget(
                        conn,
                        "key IN (SELECT key FROM semantic ORDER BY added LIMIT ?)",
                        (excess,),
                    )
                return excess

        return int(await self._run(put))

    async def index_load(
        self, group: str, known: str | None
    ) -> tuple[str, dict[str, bytes]] | None:
        def load(conn: sqlite3.Connection) -> tuple[str, dict[str, bytes]] | None:
            # one read transaction: the version and the rows it describes agree
            with _transaction(conn, "BEGIN"):
                row = conn.execute(
                    "SELECT version FROM semantic_versions WHERE grp = ?", (group,)
                ).fetchone()
                version = str(row[0]) if row is not None else "0"
                if version == known:
                    return None
                rows = conn.execute(
                    "SELECT key, vector FROM semantic WHERE grp = ? ORDER BY added", (group,)
                ).fetchall()
            return version, {str(k): bytes(v) for k, v in rows if isinstance(v, bytes)}

        return cast("tuple[str, dict[str, bytes]] | None", await self._run(load))

    async def index_forget(self, keys: list[str]) -> None:
        def forget(conn: sqlite3.Connection) -> None:
            with _transaction(conn):
                for key in keys:
                    _sqlite_forget(conn, "key = ?", (key,))

        await self._run(forget)

    def usage(self) -> tuple[int | None, int | None]:
        import sqlite3

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


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection, begin: str = "BEGIN IMMEDIATE") -> Iterator[None]:
    conn.execute(begin)
    try:
        yield
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def _tick(conn: sqlite3.Connection) -> int:
    conn.execute("UPDATE clock SET n = n + 1 WHERE id = 0")
    return int(conn.execute("SELECT n FROM clock WHERE id = 0").fetchone()[0])


def _bump(conn: sqlite3.Connection, groups: list[str]) -> None:
    for group in set(groups):
        conn.execute("INSERT OR REPLACE INTO semantic_versions VALUES (?, ?)", (group, _tick(conn)))


def _sqlite_forget(conn: sqlite3.Connection, where: str, params: tuple[Any, ...]) -> None:
    """Remove the semantic rows matching ``where``, and say their groups changed."""
    groups = [
        r[0] for r in conn.execute(f"SELECT DISTINCT grp FROM semantic WHERE {where}", params)
    ]
    if groups:
        conn.execute(f"DELETE FROM semantic WHERE {where}", params)
        _bump(conn, groups)


# Bookkeeping beside the entries, under the store's prefix ("#" never starts a namespace, which
# is a hex digest): a sorted set of entry names by last use (scores from a shared counter, so
# clients with skewed clocks agree on the order), a hash of each entry's size and the total.
# Every change to an entry and its bookkeeping happens in one Lua script, atomic in Redis, so
# several processes and machines writing at once keep the bounds and the accounting exact.
_LRU, _SIZES, _BYTES, _CLOCK = "#lru", "#sizes", "#bytes", "#clock"
# The semantic index: "#sem:g:GROUP" (a hash key -> float32 vector), "#sem:v:GROUP" (the
# group's version, a tick of the clock, which clear() keeps so versions never repeat),
# "#sem:of" (key -> group) and "#sem:age" (keys by when they were indexed).
_SEM_OF, _SEM_AGE = "#sem:of", "#sem:age"

# KEYS[1..3] of every script that calls it: sem:of, sem:age, clock; ARGV[1]: the prefix
_FORGET_LUA = """
local function forget(key)
  local group = redis.call('HGET', KEYS[1], key)
  if group then
    redis.call('HDEL', ARGV[1] .. '#sem:g:' .. group, key)
    redis.call('SET', ARGV[1] .. '#sem:v:' .. group, redis.call('INCR', KEYS[3]))
    redis.call('HDEL', KEYS[1], key)
  end
  redis.call('ZREM', KEYS[2], key)
end
"""

# ARGV: prefix, group, key, vector, max_entries. Returns how many prompts were dropped.
_INDEX_PUT_SCRIPT = (
    _FORGET_LUA
    + """
forget(ARGV[3])
redis.call('HSET', ARGV[1] .. '#sem:g:' .. ARGV[2], ARGV[3], ARGV[4])
redis.call('HSET', KEYS[1], ARGV[3], ARGV[2])
local now = redis.call('INCR', KEYS[3])
redis.call('ZADD', KEYS[2], now, ARGV[3])
redis.call('SET', ARGV[1] .. '#sem:v:' .. ARGV[2], now)
local excess = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[5])
local dropped = 0
if excess > 0 then
  for _, victim in ipairs(redis.call('ZRANGE', KEYS[2], 0, excess - 1)) do
    forget(victim)
    dropped = dropped + 1
  end
end
return dropped
"""
)

# ARGV: prefix, group, the version the caller has ('' for none). Returns {version} when
# unchanged, else {version, {key, vector, ...}}, read together.
_INDEX_LOAD_SCRIPT = """
local version = redis.call('GET', ARGV[1] .. '#sem:v:' .. ARGV[2]) or '0'
if version == ARGV[3] then return {version} end
return {version, redis.call('HGETALL', ARGV[1] .. '#sem:g:' .. ARGV[2])}
"""

# ARGV: prefix, keys...
_INDEX_FORGET_SCRIPT = (
    _FORGET_LUA
    + """
for i = 2, #ARGV do forget(ARGV[i]) end
return 0
"""
)

# KEYS: entry, lru, sizes, bytes, clock. ARGV: name, value, px (0: no expiry), max_entries,
# max_bytes, prefix. Returns {entries evicted, entries, bytes}.
_SET_SCRIPT = """
local name = ARGV[1]
local old = redis.call('HGET', KEYS[3], name)
if old then redis.call('DECRBY', KEYS[4], old) end
local px = tonumber(ARGV[3])
if px > 0 then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', px)
else
  redis.call('SET', KEYS[1], ARGV[2])
end
local size = string.len(ARGV[2])
redis.call('HSET', KEYS[3], name, size)
local total = redis.call('INCRBY', KEYS[4], size)
redis.call('ZADD', KEYS[2], redis.call('INCR', KEYS[5]), name)
local count = redis.call('ZCARD', KEYS[2])
local max_entries, max_bytes = tonumber(ARGV[4]), tonumber(ARGV[5])
local evicted = 0
while count > max_entries or total > max_bytes do
  local victim = redis.call('ZRANGE', KEYS[2], 0, 0)[1]
  if not victim then break end
  redis.call('ZREM', KEYS[2], victim)
  local victim_size = redis.call('HGET', KEYS[3], victim)
  redis.call('HDEL', KEYS[3], victim)
  if victim_size then total = redis.call('DECRBY', KEYS[4], victim_size) end
  -- an entry that already expired is reclaimed here but was not evicted
  evicted = evicted + redis.call('DEL', ARGV[6] .. victim)
  count = count - 1
end
return {evicted, count, total}
"""

# KEYS: entry, lru, sizes, bytes, clock. ARGV: name. A hit becomes the most recently used;
# a tracked entry that Redis expired gives its size back.
_GET_SCRIPT = """
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('ZADD', KEYS[2], 'XX', redis.call('INCR', KEYS[5]), ARGV[1])
  return value
end
if redis.call('ZREM', KEYS[2], ARGV[1]) == 1 then
  local size = redis.call('HGET', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[3], ARGV[1])
  if size then redis.call('DECRBY', KEYS[4], size) end
end
return false
"""

# KEYS: sem:of, sem:age, clock, lru, sizes, bytes. ARGV: prefix, names... Returns {entries
# deleted, entries, bytes}; a name that is not tracked (a foreign key under the prefix) is
# deleted without touching the accounting. The names' semantic index entries go too.
_DELETE_SCRIPT = (
    _FORGET_LUA
    + """
local deleted = 0
for i = 2, #ARGV do
  local name = ARGV[i]
  forget(name)
  deleted = deleted + redis.call('DEL', ARGV[1] .. name)
  if redis.call('ZREM', KEYS[4], name) == 1 then
    local size = redis.call('HGET', KEYS[5], name)
    redis.call('HDEL', KEYS[5], name)
    if size then redis.call('DECRBY', KEYS[6], size) end
  end
end
return {deleted, redis.call('ZCARD', KEYS[4]), tonumber(redis.call('GET', KEYS[6]) or '0')}
"""
)


class RedisStore:
    """Entries in Redis (redis-py's asyncio client), shared by processes and machines.

    Every command is bounded by ``timeout``; a refused connection, a timeout or a Redis error
    raises :class:`StoreUnavailable`, which the cache turns into a miss. Entries expire with
    Redis's own TTL. ``max_entries`` and ``max_bytes`` bound what this store's prefix holds
    across every client sharing it: each write runs one Lua script (EVALSHA) that records the
    entry's size and use in bookkeeping keys under the prefix and evicts the least recently
    used entries past either bound, atomically. The client is made per event loop, so the
    store can be used from ``asyncio.run`` after ``asyncio.run`` and from the sync facade.
    The scripts name entries from the prefix, so a Redis Cluster is not supported.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "ipfs-accelerate:cache:",
        timeout: float = 0.25,
        max_entries: int = 100_000,
        max_bytes: int = 512 << 20,
        client: Any = None,
    ) -> None:
        if not isinstance(timeout, int | float) or timeout <= 0:
            raise ConfigurationError(f"cache: Redis timeout must be > 0 seconds, got {timeout!r}")
        self._url = url
        self.prefix = prefix
        self.timeout = float(timeout)
        self.max_entries = positive_int(max_entries, "max_entries")
        self.max_bytes = positive_int(max_bytes, "max_bytes")
        self._given = client
        self._meta = [prefix + name for name in (_LRU, _SIZES, _BYTES, _CLOCK)]
        self._sem = [prefix + name for name in (_SEM_OF, _SEM_AGE, _CLOCK)]
        self._scripts = {
            name: (text, hashlib.sha1(text.encode()).hexdigest())
            for name, text in (
                ("set", _SET_SCRIPT), ("get", _GET_SCRIPT), ("delete", _DELETE_SCRIPT),
                ("index_put", _INDEX_PUT_SCRIPT), ("index_load", _INDEX_LOAD_SCRIPT),
                ("index_forget", _INDEX_FORGET_SCRIPT),
            )
        }  # fmt: skip
        # (entries, bytes) as the last script this process ran saw them
        self._usage: tuple[int | None, int | None] = (None, None)
        # one client per event loop (a client's connections belong to the loop that made them)
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def _client(self) -> Any:
        if self._given is not None:
            return self._given
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
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
            self._clients[loop] = client
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

    async def _script(self, name: str, keys: list[str], args: list[Any]) -> Any:
        text, sha = self._scripts[name]
        try:
            return await self._call("evalsha", sha, len(keys), *keys, *args)
        except StoreUnavailable as exc:
            # a server that restarted or flushed its scripts: load it once and run it again
            if type(exc.__cause__).__name__ != "NoScriptError":
                raise
        await self._call("script_load", text)
        return await self._call("evalsha", sha, len(keys), *keys, *args)

    def _note_usage(self, reply: Any) -> None:
        try:
            self._usage = (int(reply[1]), int(reply[2]))
        except (TypeError, ValueError, IndexError):
            self._usage = (None, None)

    async def get(self, key: str) -> bytes | None:
        value = await self._script("get", [self.prefix + key, *self._meta], [key])
        return value if isinstance(value, bytes) or value is None else str(value).encode()

    async def set(self, key: str, namespace: str, value: bytes, ttl: float | None) -> int:
        px = 0 if ttl is None else max(1, int(ttl * 1000))
        reply = await self._script(
            "set",
            [self.prefix + key, *self._meta],
            [key, value, px, self.max_entries, self.max_bytes, self.prefix],
        )
        self._note_usage(reply)
        return int(reply[0])

    async def _delete_names(self, names: list[str]) -> int:
        if not names:
            return 0
        reply = await self._script("delete", [*self._sem, *self._meta[:3]], [self.prefix, *names])
        self._note_usage(reply)
        return int(reply[0])

    async def delete(self, key: str) -> bool:
        return bool(await self._delete_names([key]))

    async def clear_namespace(self, namespace: str) -> int:
        # the live entries (SCAN) and the tracked ones (ZSCAN: also those Redis expired, whose
        # sizes must be given back)
        names: set[str] = set()
        cursor: Any = 0
        while True:
            cursor, keys = await self._call(
                "scan", cursor, match=f"{_glob_escape(self.prefix)}{namespace}:*", count=500
            )
            names.update(_text(k)[len(self.prefix) :] for k in keys)
            if not cursor:
                break
        for tracked in (self._meta[0], self._sem[1]):  # the entries', the semantic index's
            cursor = 0
            while True:
                cursor, pairs = await self._call(
                    "zscan", tracked, cursor, match=f"{namespace}:*", count=500
                )
                names.update(_text(name) for name, _ in pairs)
                if not cursor:
                    break
        removed, ordered = 0, sorted(names)
        for start in range(0, len(ordered), 500):
            removed += await self._delete_names(ordered[start : start + 500])
        return removed

    async def clear(self) -> int:
        removed = 0
        cursor: Any = 0
        clock = (self.prefix + _CLOCK).encode()
        while True:
            cursor, keys = await self._call(
                "scan", cursor, match=f"{_glob_escape(self.prefix)}*", count=500
            )
            keys = [k for k in keys if k != clock]  # versions must never repeat
            if keys:
                await self._call("unlink", *keys)
                removed += sum(1 for k in keys if not k.startswith((self.prefix + "#").encode()))
            if not cursor:
                break
        self._usage = (0, 0)
        return removed

    def usage(self) -> tuple[int | None, int | None]:
        """(entries, bytes) under the prefix as of this process's last write or deletion."""
        return self._usage

    async def index_put(self, group: str, key: str, vector: bytes, max_entries: int) -> int:
        args = [self.prefix, group, key, vector, max_entries]
        return int(await self._script("index_put", self._sem, args))

    async def index_load(
        self, group: str, known: str | None
    ) -> tuple[str, dict[str, bytes]] | None:
        reply = await self._script("index_load", [], [self.prefix, group, known or ""])
        version = _text(reply[0])
        if len(reply) < 2:
            return None
        flat = reply[1]
        return version, {_text(flat[i]): bytes(flat[i + 1]) for i in range(0, len(flat) - 1, 2)}

    async def index_forget(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 500):
            await self._script("index_forget", self._sem, [self.prefix, *keys[start : start + 500]])

    async def aclose(self) -> None:
        """Close this loop's client (other loops' clients go with their loops)."""
        client = self._clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            try:
                await client.aclose()
            except Exception:  # a connection that already broke: nothing left to close
                logger.debug("redis cache: closing the client failed", exc_info=True)

    def __repr__(self) -> str:
        return f"<RedisStore prefix={self.prefix!r}>"


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


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
