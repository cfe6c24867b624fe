"""The semantic layer: nearest cached prompt by embedding, within a threshold."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ipfs_accelerate.errors import ConfigurationError

from ._stores import positive_int

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["SemanticCache"]


class SemanticCache:
    """Nearest-prompt lookup over the cached prompts (see the package docstring).

    With a store that keeps a shared index (:class:`SqliteStore`, :class:`RedisStore`) the
    prompts' embeddings live in the store beside the answers, so every process using the store
    finds the prompts any of them cached, and a restarted process finds them again; the
    process keeps a copy of each group it asked about and reloads it only when the group's
    version in the store changed. ``max_entries`` then bounds the store's index (oldest
    prompts dropped first), across every process. With an in-process store the index is this
    process's alone.

    ``embedder``: None (the local :class:`~ipfs_accelerate.models.TextEmbedder`, all-MiniLM-L6-v2,
    loaded on first use), a TextEmbedder-like object with a synchronous ``embed(text)``, an API
    backend (its async ``embed``; ``embedding_model`` names the model) or a function
    ``text -> vector``. ``threshold``: the cosine similarity at or above which a prompt
    counts as the same. ``embedding_model`` also names the vectors in a shared index (else
    the embedder's type or function name does): vectors of two embedders are never compared.
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
        self.max_entries = positive_int(max_entries, "semantic max_entries")
        self.embedding_model = embedding_model
        self._embedder = embedder
        self._load_lock = threading.Lock()
        # exact key -> (group, unit vector); insertion order is age
        self._index: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        self._groups: dict[str, dict[str, np.ndarray]] = {}
        self._stacked: dict[str, tuple[list[str], np.ndarray]] = {}
        self._shared: Any = None  # the store keeping the shared index, when it can
        self._versions: dict[str, str] = {}  # group -> the store's version of our copy

    def attach(self, store: Any) -> None:
        """Keep the index in ``store`` too, when the store can (see the class docstring)."""
        if all(hasattr(store, n) for n in ("index_put", "index_load", "index_forget")):
            self._shared = store

    @property
    def shared(self) -> Any:
        return self._shared

    def scope(self) -> str:
        """Which embedder's vectors these are: vectors of two embedders are never compared
        (processes sharing a store may use different ones)."""
        embedder = self._embedder
        if self.embedding_model:
            name = self.embedding_model
        elif embedder is None or type(embedder).__name__ == "TextEmbedder":
            name = "TextEmbedder"
        else:
            name = getattr(embedder, "__qualname__", None) or type(embedder).__qualname__
        return name

    def group_of(self, namespace: str, group: str) -> str:
        """The index group of a request: its namespace (so that two services never answer for
        each other), its model/parameters/earlier messages and the embedder."""
        digest = hashlib.sha256(f"{group}\0{self.scope()}".encode()).hexdigest()[:32]
        return f"{namespace}:{digest}"

    async def sync(self, group: str, dim: int) -> int:
        """Refresh this process's copy of ``group`` from the shared index when it changed;
        returns how many stored vectors were unusable (wrong size, not finite) and skipped.
        Raises the store's StoreUnavailable."""
        import numpy as np

        store = self._shared
        if store is None:
            return 0
        loaded = await store.index_load(group, self._versions.get(group))
        if loaded is None:
            return 0
        version, members = loaded
        for key in list(self._groups.get(group, {})):
            self.forget(key)
        bad = 0
        for key, raw in members.items():
            if len(raw) != dim * 4:
                bad += 1
                continue
            vector = np.frombuffer(raw, dtype=np.float32).copy()
            norm = float(np.linalg.norm(vector))
            if not np.isfinite(norm) or norm == 0.0:
                bad += 1
                continue
            self.add(group, key, vector / norm)
        self._versions[group] = version
        return bad

    async def _get_embedder(self) -> Any:
        if self._embedder is None:
            await asyncio.to_thread(self._load_default)
        return self._embedder

    def _load_default(self) -> None:
        # concurrent first misses wait for one load instead of each loading the model
        with self._load_lock:
            if self._embedder is None:
                from ipfs_accelerate.models import TextEmbedder

                self._embedder = TextEmbedder.from_pretrained(device="cpu", sharing=False)

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
        stacked = self._stacked.get(group)
        if stacked is None:  # rebuilt only after the group changed, not on every lookup
            keys = list(members)
            stacked = self._stacked[group] = (keys, np.stack([members[k] for k in keys]))
        keys, matrix = stacked
        scores = matrix @ vector
        best = int(np.argmax(scores))
        score = float(scores[best])
        return (keys[best], score) if score >= self.threshold else None

    def add(self, group: str, key: str, vector: np.ndarray) -> None:
        self.forget(key)
        self._index[key] = (group, vector)
        self._groups.setdefault(group, {})[key] = vector
        self._stacked.pop(group, None)
        while len(self._index) > self.max_entries:
            self.forget(next(iter(self._index)))

    def forget(self, key: str) -> None:
        item = self._index.pop(key, None)
        if item is not None:
            members = self._groups.get(item[0])
            self._stacked.pop(item[0], None)
            if members is not None:
                members.pop(key, None)
                if not members:
                    del self._groups[item[0]]

    def forget_namespace(self, namespace: str) -> None:
        for key in [k for k in self._index if k.startswith(namespace + ":")]:
            self.forget(key)

    def clear(self) -> None:
        self._versions.clear()
        self._index.clear()
        self._groups.clear()
        self._stacked.clear()

    def __len__(self) -> int:
        return len(self._index)
