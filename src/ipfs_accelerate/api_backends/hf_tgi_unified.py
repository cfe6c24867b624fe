"""Hugging Face TGI, Unified: TGI's native routes (``/generate``, ``/generate_stream``,
``/info``) and its OpenAI Messages API over several endpoints, with an optional managed
``text-generation-inference`` server (``metadata["managed_server"] = {"model_id": ...,
"num_shard", "quantize", "max_input_tokens", "max_total_tokens", "hf_token", ...}``, see
:func:`~ipfs_accelerate.servers.tgi_server_spec`). A ``generate_stream`` fails over only
before its first token. See :mod:`ipfs_accelerate.api_backends._unified`.
"""

from __future__ import annotations

from typing import ClassVar

from ipfs_accelerate.servers.specs import TGI

from ._unified import UnifiedBackend
from .hf_tgi import HFTGIBackend

__all__ = ["HFTGIUnifiedBackend"]


class HFTGIUnifiedBackend(UnifiedBackend, HFTGIBackend):
    provider: ClassVar[str] = "hf_tgi_unified"
    summary: ClassVar[str] = "TGI over several endpoints, optional managed server"
    routes: ClassVar[str] = "as `hf_tgi`; managed `text-generation-inference`"
    plain = HFTGIBackend
    server_kind = TGI
