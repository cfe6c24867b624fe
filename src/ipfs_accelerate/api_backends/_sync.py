"""The sync facade of an API backend: the shared blocking facade, typed for the common interface.

The loop thread it runs on is :mod:`ipfs_accelerate.resilience._sync` (shared with S3 Kit).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ipfs_accelerate.resilience._sync import BlockingFacade, iterate_sync, run_sync

if TYPE_CHECKING:  # pragma: no cover
    from ._base import APIBackend
    from ._types import ChatChunk, ChatResponse, EmbeddingResponse, HealthStatus, ModelInfo

__all__ = ["SyncFacade", "run_sync"]


class SyncFacade(BlockingFacade):
    """Blocking twin of a backend: ``backend.sync.chat(...)`` returns what
    ``await backend.chat(...)`` would; methods that return async iterators (``stream_chat``,
    ``generate_stream``, ``pull``...) return plain iterators. Every public async method of
    the backend is available.
    """

    _client: APIBackend

    def __init__(self, backend: APIBackend) -> None:
        super().__init__(backend)

    # typed versions of the common interface (the rest go through __getattr__)
    def chat(self, model: str | None, messages: Any, **options: Any) -> ChatResponse:
        return run_sync(self._client.chat(model, messages, **options))

    def stream_chat(self, model: str | None, messages: Any, **options: Any) -> Iterator[ChatChunk]:
        return iterate_sync(self._client.stream_chat(model, messages, **options))

    def embed(self, model: str | None, inputs: Any, **options: Any) -> EmbeddingResponse:
        return run_sync(self._client.embed(model, inputs, **options))

    def list_models(self, **options: Any) -> list[ModelInfo]:
        return run_sync(self._client.list_models(**options))

    def health(self) -> HealthStatus:
        return run_sync(self._client.health())
