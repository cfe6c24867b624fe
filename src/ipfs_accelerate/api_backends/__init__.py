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
}

__all__ = [
    "APIBackend",
    "BreakerConfig",
    "CallOptions",
    "ChatChunk",
    "ChatResponse",
    "CircuitBreaker",
    "CircuitState",
    "EmbeddingResponse",
    "Endpoint",
    "FileObject",
    "GeneratedImage",
    "HTTPRequest",
    "HealthStatus",
    "ImageResponse",
    "Metrics",
    "ModelInfo",
    "ModerationResponse",
    "ModerationResult",
    "NDJSONDecoder",
    "OpenAICompatibleBackend",
    "Priority",
    "PriorityLimiter",
    "PullProgress",
    "RawResponse",
    "RerankResult",
    "ResilienceConfig",
    "SSEDecoder",
    "Secret",
    "SyncFacade",
    "TGIDetails",
    "TGIGeneration",
    "TGIStreamToken",
    "TGIToken",
    "ToolCall",
    "ToolCallDelta",
    "TranscriptionResponse",
    "Usage",
    "create_api_backend",
    "find_compatible_backend",
    "get_available_backends",
    "get_backend_class",
    "register_backend",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ipfs_accelerate.api_backends' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ipfs_accelerate.api_backends.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from ._base import APIBackend, CallOptions
    from ._config import BreakerConfig, ResilienceConfig, Secret
    from ._metrics import Metrics
    from ._openai_compat import OpenAICompatibleBackend
    from ._resilience import CircuitBreaker, CircuitState, PriorityLimiter
    from ._streams import NDJSONDecoder, SSEDecoder
    from ._sync import SyncFacade
    from ._transport import Endpoint, HTTPRequest, RawResponse
