"""vLLM, Unified: the vLLM protocol (OpenAI routes, tool calling, embeddings, LoRA adapter
management) over several endpoints, with an optional managed ``vllm/vllm-openai`` server.

LoRA adapters are loaded on and unloaded from *every* endpoint (a chat naming the adapter
may go to any of them). If one endpoint refuses, the adapter is unloaded again from those
that had accepted it and the error is raised: it is never left on some endpoints only.
Adapters loaded through this backend are loaded again on the managed server after each of
its restarts.

Managed server: ``metadata["managed_server"] = {"model": ..., "runtime": "docker" | "process",
"tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "quantization",
"lora_modules", "allow_runtime_lora", "hf_token", "api_key", ..., "lifecycle": {...},
"auto_start": bool}`` (see :func:`~ipfs_accelerate.servers.vllm_server_spec`).
See :mod:`ipfs_accelerate.api_backends._unified` for endpoints and routing.
"""

from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from ipfs_accelerate.errors import APIError
from ipfs_accelerate.servers import ServerSpec
from ipfs_accelerate.servers.specs import VLLM

from ._unified import UnifiedBackend
from .vllm import VLLMBackend

__all__ = ["VLLMUnifiedBackend"]


class VLLMUnifiedBackend(UnifiedBackend, VLLMBackend):
    provider: ClassVar[str] = "vllm_unified"
    summary: ClassVar[str] = "vLLM over several endpoints, optional managed server"
    routes: ClassVar[str] = (
        "as `vllm`; adapters loaded on every endpoint; managed `vllm/vllm-openai`"
    )
    plain = VLLMBackend
    server_kind = VLLM

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.adapters: dict[str, str] = {}
        if self.managed_server is not None:
            self.managed_server.on_ready(self._reload_adapters)

    def server_spec(self, **kwargs: Any) -> ServerSpec:
        lora = kwargs.get("enable_lora") or kwargs.get("lora_modules")
        if lora and "allow_runtime_lora" not in kwargs:
            # load_lora_adapter() needs runtime updates on the server
            kwargs["allow_runtime_lora"] = True
        return super().server_spec(**kwargs)

    async def load_lora_adapter(self, lora_name: str, lora_path: str, **options: Any) -> str:
        """Load the adapter on every endpoint; all or none (see the module docstring)."""
        members = self._lora_members()
        results = await asyncio.gather(
            *(m.load_lora_adapter(lora_name, lora_path, **dict(options)) for m in members),
            return_exceptions=True,
        )
        outcomes = list(zip(members, results, strict=True))
        failed = [(m, r) for m, r in outcomes if isinstance(r, BaseException)]
        if failed:
            loaded = [m for m, r in outcomes if not isinstance(r, BaseException)]
            await asyncio.gather(
                *(m.unload_lora_adapter(lora_name) for m in loaded), return_exceptions=True
            )
            _, error = failed[0]
            if isinstance(error, APIError) and hasattr(error, "add_note"):
                where = ", ".join(m.endpoint.name for m, _ in failed)
                error.add_note(
                    f"vllm_unified: loading adapter {lora_name!r} failed on {where}; "
                    f"unloaded again from {len(loaded)} endpoint(s) that had accepted it"
                )
            raise error
        self.adapters[lora_name] = lora_path
        return str(results[0])

    async def unload_lora_adapter(self, lora_name: str, **options: Any) -> str:
        """Unload the adapter from every endpoint; raises the first refusal after trying all."""
        results = await asyncio.gather(
            *(m.unload_lora_adapter(lora_name, **dict(options)) for m in self._lora_members()),
            return_exceptions=True,
        )
        self.adapters.pop(lora_name, None)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        return str(results[0])

    def _lora_members(self) -> list[VLLMBackend]:
        # a managed server that is down gets the adapters when it is ready again
        members: list[VLLMBackend] = self.members  # type: ignore[assignment]
        return [m for m in members if _managed(m) is None or _managed(m).is_ready]

    async def _reload_adapters(self) -> None:
        members: list[VLLMBackend] = self.members  # type: ignore[assignment]
        member = next(m for m in members if _managed(m) is self.managed_server)
        for name, path in list(self.adapters.items()):
            await member.load_lora_adapter(name, path)


def _managed(member: VLLMBackend) -> Any:
    # the Unified machinery sets it on each member (None: not the managed server's endpoint)
    return getattr(member, "managed_server", None)
