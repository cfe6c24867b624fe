"""A scripted multi-model run that shows what a TensorSharingManager saves.

Two pipelines of one checkpoint, as a retrieval service runs them: a document encoder and a
query encoder (the same sentence-embedding model, the query one with a shorter token limit).
Loaded with one manager, the second registers its weights by content id and finds every one
already held, so the process keeps one copy. The demo ranks a few documents for a query
with them and returns the manager's statistics beside what the sharing saved."""

from __future__ import annotations

import os
from typing import Any

__all__ = ["create_tensor_sharing_demo"]

_DOCUMENTS = (
    "IPFS addresses content by its hash, so identical blocks are stored once.",
    "A circuit breaker stops calling a service that keeps failing.",
    "Mean pooling averages the token embeddings of a sentence.",
)
_QUERY = "How does content addressing deduplicate data?"


def create_tensor_sharing_demo(
    checkpoint: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    *,
    query_max_length: int = 16,
) -> dict[str, Any]:
    """Load two embedding pipelines of ``checkpoint`` (default: the bundled all-MiniLM-L6-v2)
    with one fresh :class:`~ipfs_accelerate.sharing.TensorSharingManager`, rank three
    documents for a query with them, and return the manager's :meth:`get_stats` with:

    * ``pipelines``: per pipeline its manager name, role, and the bytes it holds in total,
      exclusively and shared (each distinct tensor counted once per model);
    * ``bytes_without_sharing``: what the pipelines would hold each on its own (the sum of
      their totals), ``bytes_held``: what the manager holds, and ``bytes_saved``: the
      difference, which is the bytes of the tensors both pipelines hold;
    * ``ranking``: the documents, best match first, with their cosine to the query.

    The pipelines are released before returning; the statistics are taken while both hold
    their weights."""
    from ipfs_accelerate.errors import InvalidArgumentError
    from ipfs_accelerate.models import TextEmbedder
    from ipfs_accelerate.models._defaults import DEFAULT_TEXT_MODEL
    from ipfs_accelerate.sharing._manager import TensorSharingManager

    if isinstance(query_max_length, bool) or not isinstance(query_max_length, int):
        raise InvalidArgumentError(
            f"create_tensor_sharing_demo: query_max_length must be an int, got {query_max_length!r}"
        )
    if query_max_length < 2:  # room for the [CLS] and [SEP] tokens around any text
        raise InvalidArgumentError(
            f"create_tensor_sharing_demo: query_max_length must be >= 2, got {query_max_length}"
        )
    source = DEFAULT_TEXT_MODEL if checkpoint is None else checkpoint
    manager = TensorSharingManager()
    documents = TextEmbedder.from_pretrained(source, device, sharing=manager)
    queries = TextEmbedder.from_pretrained(
        source, device, sharing=manager, max_length=query_max_length
    )
    try:
        doc_vectors = documents.embed(list(_DOCUMENTS))
        query_vector = queries.embed(_QUERY)
        scores = doc_vectors @ query_vector  # both L2-normalised: cosines
        order = sorted(range(len(_DOCUMENTS)), key=lambda i: -float(scores[i]))
        stats = manager.get_stats()
        usage = manager.get_model_memory_usage()
        pipelines = []
        for pipeline, role in ((documents, "documents"), (queries, "queries")):
            held = usage.get(str(pipeline.model_name), {})
            pipelines.append(
                {
                    "name": pipeline.model_name,
                    "role": role,
                    "total_memory_bytes": held.get("total_memory_bytes", 0),
                    "exclusive_memory_bytes": held.get("exclusive_memory_bytes", 0),
                    "shared_memory_bytes": held.get("shared_memory_bytes", 0),
                }
            )
    finally:
        for pipeline in (documents, queries):
            if pipeline.model_name is not None:
                manager.release_model_tensors(pipeline.model_name)
    without = sum(p["total_memory_bytes"] for p in pipelines)
    return {
        **stats,
        "checkpoint": str(source),
        "device": documents.device,
        "pipelines": pipelines,
        "bytes_without_sharing": without,
        "bytes_held": stats["memory_usage_bytes"],
        "bytes_saved": without - stats["memory_usage_bytes"],
        "query": _QUERY,
        "ranking": [{"document": _DOCUMENTS[i], "cosine": float(scores[i])} for i in order],
    }
