"""Hugging Face TEI, Unified: ``/embed``, ``/rerank``, ``/info`` over several endpoints, with
an optional managed ``text-embeddings-inference`` server (``metadata["managed_server"] =
{"model_id": ..., "gpus", "max_client_batch_size", "pooling", ...}``, see
:func:`~ipfs_accelerate.api_backends.tei_server_spec`). See
:mod:`ipfs_accelerate.api_backends._unified`.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ipfs_accelerate.errors import ConfigurationError

from ._containers import ServerSpec, tei_server_spec
from ._unified import UnifiedBackend
from .hf_tei import HFTEIBackend

__all__ = ["HFTEIUnifiedBackend"]


class HFTEIUnifiedBackend(UnifiedBackend, HFTEIBackend):
    provider: ClassVar[str] = "hf_tei_unified"
    summary: ClassVar[str] = "TEI over several endpoints, optional managed server"
    routes: ClassVar[str] = "as `hf_tei`; managed `text-embeddings-inference`"
    plain = HFTEIBackend

    def server_spec(self, **kwargs: Any) -> ServerSpec:
        model_id = kwargs.pop("model_id", None) or kwargs.pop("model", None)
        if not model_id:
            raise ConfigurationError("hf_tei_unified: managed_server needs a 'model_id'")
        return tei_server_spec(str(model_id), **kwargs)
