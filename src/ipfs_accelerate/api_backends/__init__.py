"""One resilient async client over many inference APIs.

>>> from ipfs_accelerate.api_backends import create_api_backend
>>> backend = create_api_backend("openai", metadata={"api_key": "..."})   # doctest: +SKIP
>>> reply = await backend.chat("gpt-4o-mini", "Hello")                    # doctest: +SKIP
>>> reply = backend.sync.chat("gpt-4o-mini", "Hello")    # from non-async code  # doctest: +SKIP

Every backend has the same interface (``chat``, ``stream_chat``, ``embed``, ``list_models``,
``health``, ``get_default_model``, ``is_compatible_model``, ``get_stats``) plus its provider's
own surfaces, and the same resilience (retries with backoff, timeouts, circuit breaker,
priority queue) configured per backend (``resilience=`` or ``metadata["resilience"]``) and
per call (``priority=``, ``timeout=``, ``max_retries=``, ``deadline=``...).

Multi-endpoint routing with failover (:class:`Router`), the Unified backends with managed
servers (``vllm_unified``, ``hf_tgi_unified``, ``hf_tei_unified``, ``ovms_unified``;
:class:`ManagedServer` on a :class:`DockerRuntime` or :class:`LocalProcessRuntime`, defined in
:mod:`ipfs_accelerate.servers`), object storage (:class:`S3Kit`, ``s3_kit``) and metrics
export (:func:`register_prometheus`) live here too.

Importing this package is cheap: aiohttp loads on the first request, provider modules on
first use through the registry.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._registry import (
    create_api_backend,
    find_compatible_backend,
    get_available_backends,
    get_backend_class,
    register_backend,
)
from ._types import (
    ChatChunk,
    ChatResponse,
    EmbeddingResponse,
    FileObject,
    GeneratedImage,
    HealthStatus,
    ImageResponse,
    ModelInfo,
    ModerationResponse,
    ModerationResult,
    Priority,
    PullProgress,
    RerankResult,
    TGIDetails,
    TGIGeneration,
    TGIStreamToken,
    TGIToken,
    ToolCall,
    ToolCallDelta,
    TranscriptionResponse,
    Usage,
)

# name -> private module defining it, loaded on first access
_LAZY = {
    "APIBackend": "_base",
    "CallOptions": "_base",
    "ResilienceConfig": "_config",
    "BreakerConfig": "_config",
    "Secret": "_config",
    "CircuitBreaker": "_resilience",
    "CircuitState": "_resilience",
    "PriorityLimiter": "_resilience",
    "Endpoint": "_transport",
    "HTTPRequest": "_transport",
    "RawResponse": "_transport",
    "Metrics": "_metrics",
    "SyncFacade": "_sync",
    "SSEDecoder": "_streams",
    "NDJSONDecoder": "_streams",
    "OpenAICompatibleBackend": "_openai_compat",
    # routing, managed servers, storage, observability (issue 7)
    "Router": "router",
    "RouteTarget": "router",
    "RouterConfig": "router",
    "UnifiedBackend": "_unified",
    "ContainerRuntime": "ipfs_accelerate.servers",
    "DockerRuntime": "ipfs_accelerate.servers",
    "LocalProcessRuntime": "ipfs_accelerate.servers",
    "ManagedServer": "ipfs_accelerate.servers",
    "ServerSpec": "ipfs_accelerate.servers",
    "ServerState": "ipfs_accelerate.servers",
    "vllm_server_spec": "ipfs_accelerate.servers",
    "tgi_server_spec": "ipfs_accelerate.servers",
    "tei_server_spec": "ipfs_accelerate.servers",
    "ovms_server_spec": "ipfs_accelerate.servers",
    "S3Kit": "s3_kit",
    "S3Object": "s3_kit",
    "S3ObjectInfo": "s3_kit",
    "TransferConfig": "s3_kit",
    "fetch_s3_prefix": "s3_kit",
    "fetch_s3_prefix_sync": "s3_kit",
    "PrometheusCollector": "_observability",
    "register_prometheus": "_observability",
    "exposition": "_observability",
    "start_span": "_observability",
}

__all__ = [
    "APIBackend",
    "BreakerConfig",
    "CallOptions",
    "ChatChunk",
    "ChatResponse",
    "CircuitBreaker",
    "CircuitState",
    "ContainerRuntime",
    "DockerRuntime",
    "EmbeddingResponse",
    "Endpoint",
    "FileObject",
    "GeneratedImage",
    "HTTPRequest",
    "HealthStatus",
    "ImageResponse",
    "LocalProcessRuntime",
    "ManagedServer",
    "Metrics",
    "ModelInfo",
    "ModerationResponse",
    "ModerationResult",
    "NDJSONDecoder",
    "OpenAICompatibleBackend",
    "Priority",
    "PriorityLimiter",
    "PrometheusCollector",
    "PullProgress",
    "RawResponse",
    "RerankResult",
    "ResilienceConfig",
    "RouteTarget",
    "Router",
    "RouterConfig",
    "S3Kit",
    "S3Object",
    "S3ObjectInfo",
    "SSEDecoder",
    "Secret",
    "ServerSpec",
    "ServerState",
    "SyncFacade",
    "TGIDetails",
    "TGIGeneration",
    "TGIStreamToken",
    "TGIToken",
    "ToolCall",
    "ToolCallDelta",
    "TranscriptionResponse",
    "TransferConfig",
    "UnifiedBackend",
    "Usage",
    "create_api_backend",
    "exposition",
    "fetch_s3_prefix",
    "fetch_s3_prefix_sync",
    "find_compatible_backend",
    "get_available_backends",
    "get_backend_class",
    "ovms_server_spec",
    "register_backend",
    "register_prometheus",
    "start_span",
    "tei_server_spec",
    "tgi_server_spec",
    "vllm_server_spec",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ipfs_accelerate.api_backends' has no attribute {name!r}")
    if not module.startswith("ipfs_accelerate."):  # most live here; managed servers do not
        module = f"ipfs_accelerate.api_backends.{module}"
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from ipfs_accelerate.servers import (
        ContainerRuntime,
        DockerRuntime,
        LocalProcessRuntime,
        ManagedServer,
        ServerSpec,
        ServerState,
        ovms_server_spec,
        tei_server_spec,
        tgi_server_spec,
        vllm_server_spec,
    )

    from ._base import APIBackend, CallOptions
    from ._config import BreakerConfig, ResilienceConfig, Secret
    from ._metrics import Metrics
    from ._observability import PrometheusCollector, exposition, register_prometheus, start_span
    from ._openai_compat import OpenAICompatibleBackend
    from ._resilience import CircuitBreaker, CircuitState, PriorityLimiter
    from ._streams import NDJSONDecoder, SSEDecoder
    from ._sync import SyncFacade
    from ._transport import Endpoint, HTTPRequest, RawResponse
    from ._unified import UnifiedBackend
    from .router import Router, RouterConfig, RouteTarget
    from .s3_kit import (
        S3Kit,
        S3Object,
        S3ObjectInfo,
        TransferConfig,
        fetch_s3_prefix,
        fetch_s3_prefix_sync,
    )
