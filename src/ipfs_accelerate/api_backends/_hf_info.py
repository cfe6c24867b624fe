"""``GET /info``, which Hugging Face's TGI and TEI servers share, and the model list it gives."""

from __future__ import annotations

from typing import Any

from ipfs_accelerate.errors import ProtocolError

from ._base import APIBackend
from ._streams import excerpt
from ._transport import HTTPRequest
from ._types import ModelInfo


class HFInfoBackend(APIBackend):
    """A server with TGI/TEI's ``/info`` route: it serves exactly one model, named there."""

    async def info(self, **options: Any) -> dict[str, Any]:
        """``GET /info``: the served model's id, its limits and the server's version (TGI adds
        the dtype, TEI the model type: embedding or reranker)."""
        opts = self._options(options)
        return await self._request(
            HTTPRequest("GET", "/info"),
            opts,
            lambda raw: self._json_object(raw, "info"),
            what="info",
        )

    async def list_models(self, **options: Any) -> list[ModelInfo]:
        info = await self.info(**options)
        model_id = info.get("model_id")
        if not isinstance(model_id, str):
            raise ProtocolError(
                f"info: no model_id in {excerpt(str(info))!r}", provider=self.provider
            )
        return [ModelInfo(id=model_id, raw=info)]
