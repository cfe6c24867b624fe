"""OpenVINO Model Server, Unified: the OpenAI ``/v3`` routes and KServe v2 (``infer``, model
metadata and readiness, ``/v1/config``) over several endpoints, with an optional managed
``openvino/model_server`` (``metadata["managed_server"] = {"model_name": ..., "model_path":
<host directory>, "target_device", ...}``, see :func:`~ipfs_accelerate.api_backends.ovms_server_spec`).

``server_ready()`` / ``model_ready()`` are True when at least one endpoint says so. See
:mod:`ipfs_accelerate.api_backends._unified`.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from ipfs_accelerate.errors import ConfigurationError

from ._containers import ServerSpec, ovms_server_spec
from ._unified import UnifiedBackend
from .ovms import OVMSBackend

__all__ = ["OVMSUnifiedBackend"]


class OVMSUnifiedBackend(UnifiedBackend, OVMSBackend):
    provider: ClassVar[str] = "ovms_unified"
    summary: ClassVar[str] = "OVMS over several endpoints, optional managed server"
    routes: ClassVar[str] = "as `ovms`; managed `openvino/model_server`"
    plain = OVMSBackend

    def server_spec(self, **kwargs: Any) -> ServerSpec:
        name, path = kwargs.pop("model_name", None), kwargs.pop("model_path", None)
        if not name or not path:
            raise ConfigurationError("ovms_unified: managed_server needs 'model_name' and 'model_path'")
        return ovms_server_spec(str(name), str(path), **kwargs)

    async def _probe(self, path: str) -> int | None:
        statuses = await asyncio.gather(*(m._probe(path) for m in self.members))  # type: ignore[attr-defined]
        if 200 in statuses:
            return 200
        return next((s for s in statuses if s is not None), None)
