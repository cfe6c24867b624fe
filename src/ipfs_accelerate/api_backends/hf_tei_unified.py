"""Hugging Face TEI, Unified: ``/embed``, ``/rerank``, ``/info`` over several endpoints, with
an optional managed ``text-embeddings-inference`` server (``metadata["managed_server"] =
{"model_id": ..., "gpus", "max_client_batch_size", "pooling", ...}``, see
:func:`~ipfs_accelerate.servers.tei_server_spec`). See
:mod:`ipfs_accelerate.api_backends._unified`.
"""

from __future__ import annotations

from typing import ClassVar

from ipfs_accelerate.servers.specs import TEI

from ._unified import UnifiedBackend
from .hf_tei import HFTEIBackend

__all__ = ["HFTEIUnifiedBackend"]


class HFTEIUnifiedBackend(UnifiedBackend, HFTEIBackend):
    provider: ClassVar[str] = "hf_tei_unified"
    summary: ClassVar[str] = "TEI over several endpoints, optional managed server"
    routes: ClassVar[str] = "as `hf_tei`; managed `text-embeddings-inference`"
    plain = HFTEIBackend
    server_kind = TEI
