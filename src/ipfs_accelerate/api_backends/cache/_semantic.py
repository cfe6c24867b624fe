"""The semantic layer: nearest cached prompt by embedding, within a threshold."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from ipfs_accelerate.errors import ConfigurationError

from ._stores import positive_int

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["SemanticCache"]


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
        self.max_entries = positive_int(max_entries, "semantic max_entries")
        self.embedding_model = embedding_model
        self._embedder = embedder
        self._load_lock = threading.Lock()
        # exact key -> (group, unit vector); insertion order is age
        self._index: OrderedDict[str, tuple[str, np.ndarray]] = OrderedDict()
        self._groups: dict[str, dict[str, np.ndarray]] = {}
        self._stacked: dict[str, tuple[list[str], np.ndarray]] = {}

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
        self._index.clear()
        self._groups.clear()
        self._stacked.clear()

    def __len__(self) -> int:
        return len(self._index)
