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
and :class:`RedisStore` (redis-py's asyncio client; entries and bytes bounds kept across
every client by atomic Lua scripts, least recently used evicted). A store that fails (Redis
gone or slow, a locked or corrupt file) turns the lookup into a miss and the write into a
no-op, with one warning per outage and an ``errors`` count: the request itself never fails
because of the cache. An entry that does not decode as this module's format for the key
asked is a miss (and is deleted), never an answer.

The semantic layer (:class:`SemanticCache`, off by default) answers a chat or completion
whose last prompt's embedding is within ``threshold`` cosine similarity of a cached prompt's
with the same model, parameters and earlier messages; the answer's ``cache`` field says
``kind="semantic"`` and the similarity. With a sqlite or Redis store its prompt index
(embedding, exact key, scope) lives in the store too, so processes sharing the store share
semantic hits; with the in-process store it lives in the process.

Nothing here logs or counts a key, a prompt or an answer.
"""

from __future__ import annotations

from ._cache import ResponseCache, default_cache
from ._keys import is_deterministic
from ._semantic import SemanticCache
from ._stores import CacheStore, MemoryStore, RedisStore, SqliteStore, store_from_url
from ._wrap import CacheMode, cached_operation, replay

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
    "is_deterministic",
    "replay",
    "store_from_url",
]
