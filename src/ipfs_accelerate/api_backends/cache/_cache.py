"""ResponseCache: lookups, stores, entries' format, invalidation and counters."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

from ipfs_accelerate.errors import ConfigurationError

from .._types import CacheHit, ChatResponse, EmbeddingResponse, ToolCall, Usage
from ._keys import Plan, make_plan, namespace_of, op_of
from ._semantic import SemanticCache
from ._stores import CacheStore, MemoryStore, StoreUnavailable, positive_int, store_from_url

__all__ = ["ResponseCache", "default_cache"]

logger = logging.getLogger("ipfs_accelerate.api_backends.cache")

_FORMAT = 1  # the entries' format version: an entry of another version is a miss


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
        self.max_entry_bytes = positive_int(max_entry_bytes, "max_entry_bytes")
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
        if semantic is not None:
            semantic.attach(self.store)
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

    def warn_once(self, reason: str, message: str, *args: Any) -> None:
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

    def _encode(self, plan: Plan, result: Any, chunks: list[str] | None) -> bytes:
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
            self.warn_once("corrupt", "response cache: an entry did not decode; treated as a miss")
            return None

    async def _read(self, plan: Plan, key: str, kind: str, similarity: float | None) -> Any:
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

    async def lookup(self, plan: Plan) -> Any:
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
                self.warn_once(
                    "embedder", "response cache: the semantic embedder failed (%s); exact "
                    "matching only", type(exc).__name__,
                )  # fmt: skip
                plan.group = None
            else:
                group = self.semantic.group_of(plan.namespace, plan.group)
                await self._semantic_sync(group, int(plan.vector.shape[0]))
                near = self.semantic.nearest(group, plan.vector)
                if near is not None:
                    found = await self._read(plan, near[0], "semantic", near[1])
                    if found is not None:
                        self.counts["hits"] += 1
                        self.counts["semantic_hits"] += 1
                        return found
                    # the answer it pointed to expired or was evicted: the prompt goes too
                    self.semantic.forget(near[0])
                    await self._semantic_forget(near[0])
        self.counts["misses"] += 1
        return None

    async def save(self, plan: Plan, result: Any, chunks: list[str] | None = None) -> bool:
        try:
            value = self._encode(plan, result, chunks)
        except (TypeError, ValueError):
            self.skipped["unencodable"] += 1
            self.warn_once(
                "unencodable", "response cache: an answer is not JSON-encodable; not cached"
            )
            return False
        if len(value) > self.max_entry_bytes:
            self.skipped["too_large"] += 1
            self.warn_once(
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
                group = self.semantic.group_of(plan.namespace, plan.group)
                self.semantic.add(group, plan.key, vector)
            except Exception as exc:
                self.errors["embedder"] += 1
                self.warn_once(
                    "embedder", "response cache: the semantic embedder failed (%s); exact "
                    "matching only", type(exc).__name__,
                )  # fmt: skip
            else:
                await self._semantic_share(group, plan.key, vector)
        return True

    # ------------------------------------------------------------------ shared semantic index

    async def _semantic_sync(self, group: str, dim: int) -> None:
        assert self.semantic is not None
        try:
            bad = await self.semantic.sync(group, dim)
        except StoreUnavailable as exc:  # the prompts this process knows still answer
            self._store_failed(exc)
            return
        if bad:
            self.errors["corrupt"] += bad
            self.warn_once(
                "corrupt_index", "response cache: a semantic index entry did not decode; skipped"
            )

    async def _semantic_share(self, group: str, key: str, vector: Any) -> None:
        import numpy as np

        semantic = self.semantic
        if semantic is None or semantic.shared is None:
            return
        raw = np.asarray(vector, dtype=np.float32).tobytes()
        try:
            dropped = await semantic.shared.index_put(group, key, raw, semantic.max_entries)
        except StoreUnavailable as exc:
            self._store_failed(exc)
            return
        self.counts["semantic_evictions"] += int(dropped)

    async def _semantic_forget(self, key: str) -> None:
        if self.semantic is None or self.semantic.shared is None:
            return
        try:
            await self.semantic.shared.index_forget([key])
        except StoreUnavailable as exc:
            self._store_failed(exc)

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
        return namespace_of(source)

    def key_for(self, source: Any, op: str, model: str | None, payload: Any, **options: Any) -> str:
        """The key ``source.<op>(model, payload, **options)`` is cached under (for
        :meth:`invalidate`). ``op``: chat, stream_chat, complete or embed."""
        options.pop("cache", None)
        options.pop("cache_nondeterministic", None)
        plan = make_plan(source, op_of(op), self, "use", True, model, payload, options)
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
            "semantic_evictions": self.counts["semantic_evictions"],
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
