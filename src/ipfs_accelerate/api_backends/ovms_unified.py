"""OpenVINO Model Server, Unified: the OpenAI ``/v3`` routes and KServe v2 (``infer``, model
metadata and readiness, ``/v1/config``) over several endpoints, with an optional managed
``openvino/model_server`` (``metadata["managed_server"] = {"model_name": ..., "model_path":
<host directory>, "target_device", ...}``, see
:func:`~ipfs_accelerate.servers.ovms_server_spec`).

``server_ready()`` / ``model_ready()`` are True when at least one endpoint says so. See
:mod:`ipfs_accelerate.api_backends._unified`.
"""

from __future__ import annotations

import asyncio
from typing import ClassVar

from ipfs_accelerate.servers.specs import OVMS

from ._unified import UnifiedBackend
from .ovms import OVMSBackend

__all__ = ["OVMSUnifiedBackend"]


class OVMSUnifiedBackend(UnifiedBackend, OVMSBackend):
    provider: ClassVar[str] = "ovms_unified"
    summary: ClassVar[str] = "OVMS over several endpoints, optional managed server"
    routes: ClassVar[str] = "as `ovms`; managed `openvino/model_server`"
    plain = OVMSBackend
    server_kind = OVMS

    async def _probe(self, path: str) -> int | None:
        members: list[OVMSBackend] = self.members  # type: ignore[assignment]
        statuses = await asyncio.gather(*(m._probe(path) for m in members))
        if 200 in statuses:
            return 200
        return next((s for s in statuses if s is not None), None)
