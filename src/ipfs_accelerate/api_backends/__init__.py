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

A response cache (:class:`ResponseCache`, off by default; exact and semantic, in memory, sqlite
or Redis) answers repeated chat, completion and embedding requests without a request: see
:mod:`ipfs_accelerate.api_backends.cache`.

Multi-endpoint routing with failover (:class:`Router`), the Unified backends with managed
servers (``vllm_unified``, ``hf_tgi_unified``, ``hf_tei_unified``, ``ovms_unified``;
:class:`ManagedServer` on a :class:`DockerRuntime` or :class:`LocalProcessRuntime`, defined in
:mod:`ipfs_accelerate.servers`) and metrics export (:func:`register_prometheus`) live here
too. Object storage (:class:`S3Kit`) lives in :mod:`ipfs_accelerate.storage`; it is still
created by name (``s3_kit``) and its names are re-exported here.

Importing this package is cheap: aiohttp loads on the first request, provider modules on
first use through the registry.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipfs_accelerate._lazy import lazy_exports

# name -> module defining it (a bare name: a module of this package, or an absolute path),
# loaded on first access
_LAZY = {
    "create_api_backend": "_registry",
    "find_compatible_backend": "_registry",
    "get_available_backends": "_registry",
    "get_backend_class": "_registry",
    "register_api_backend": "_registry",
    "CacheHit": "_types",
    "ChatChunk": "_types",
    "ChatResponse": "_types",
    "EmbeddingResponse": "_types",
    "FileObject": "_types",
    "GeneratedImage": "_types",
    "HealthStatus": "_types",
    "ImageResponse": "_types",
    "ModelInfo": "_types",
    "ModerationResponse": "_types",
    "ModerationResult": "_types",
    "Priority": "_types",
    "PullProgress": "_types",
    "RerankResult": "_types",
    "TEIPrediction": "_types",
    "TEIToken": "_types",
    "TGIDetails": "_types",
    "TGIGeneration": "_types",
    "TGIStreamToken": "_types",
    "TGIToken": "_types",
    "ToolCall": "_types",
    "ToolCallDelta": "_types",
    "TranscriptionResponse": "_types",
    "Usage": "_types",
    "APIBackend": "_base",
    "CallOptions": "_base",
    "ResilienceConfig": "ipfs_accelerate.resilience",
    "BreakerConfig": "ipfs_accelerate.resilience",
    "Secret": "ipfs_accelerate.resilience",
    "CircuitBreaker": "ipfs_accelerate.resilience",
    "CircuitState": "ipfs_accelerate.resilience",
    "PriorityLimiter": "ipfs_accelerate.resilience",
    "Endpoint": "_transport",
    "HTTPRequest": "_transport",
    "RawResponse": "_transport",
    "Metrics": "ipfs_accelerate.resilience",
    "SyncFacade": "_sync",
    "SSEDecoder": "_streams",
    "NDJSONDecoder": "_streams",
    "OpenAICompatibleBackend": "_openai_compat",
    # routing, managed servers, storage, observability (issue 7)
    "Router": "router",
    "RouteTarget": "_routing",
    "RouterConfig": "_routing",
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
    "S3Kit": "ipfs_accelerate.storage",
    "S3Object": "ipfs_accelerate.storage",
    "S3ObjectInfo": "ipfs_accelerate.storage",
    "TransferConfig": "ipfs_accelerate.storage",
    "fetch_s3_prefix": "ipfs_accelerate.storage",
    "fetch_s3_prefix_sync": "ipfs_accelerate.storage",
    "PrometheusCollector": "_observability",
    "register_prometheus": "_observability",
    "exposition": "_observability",
    "start_span": "_observability",
    # response caching (issue 20)
    "ResponseCache": "cache",
    "SemanticCache": "cache",
    "MemoryStore": "cache",
    "SqliteStore": "cache",
    "RedisStore": "cache",
}

__all__, __getattr__, __dir__ = lazy_exports(__name__, _LAZY)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ipfs_accelerate.resilience import BreakerConfig as BreakerConfig
    from ipfs_accelerate.resilience import CircuitBreaker as CircuitBreaker
    from ipfs_accelerate.resilience import CircuitState as CircuitState
    from ipfs_accelerate.resilience import Metrics as Metrics
    from ipfs_accelerate.resilience import PriorityLimiter as PriorityLimiter
    from ipfs_accelerate.resilience import ResilienceConfig as ResilienceConfig
    from ipfs_accelerate.resilience import Secret as Secret
    from ipfs_accelerate.servers import ContainerRuntime as ContainerRuntime
    from ipfs_accelerate.servers import DockerRuntime as DockerRuntime
    from ipfs_accelerate.servers import LocalProcessRuntime as LocalProcessRuntime
    from ipfs_accelerate.servers import ManagedServer as ManagedServer
    from ipfs_accelerate.servers import ServerSpec as ServerSpec
    from ipfs_accelerate.servers import ServerState as ServerState
    from ipfs_accelerate.servers import ovms_server_spec as ovms_server_spec
    from ipfs_accelerate.servers import tei_server_spec as tei_server_spec
    from ipfs_accelerate.servers import tgi_server_spec as tgi_server_spec
    from ipfs_accelerate.servers import vllm_server_spec as vllm_server_spec
    from ipfs_accelerate.storage import S3Kit as S3Kit
    from ipfs_accelerate.storage import S3Object as S3Object
    from ipfs_accelerate.storage import S3ObjectInfo as S3ObjectInfo
    from ipfs_accelerate.storage import TransferConfig as TransferConfig
    from ipfs_accelerate.storage import fetch_s3_prefix as fetch_s3_prefix
    from ipfs_accelerate.storage import fetch_s3_prefix_sync as fetch_s3_prefix_sync

    from ._base import APIBackend as APIBackend
    from ._base import CallOptions as CallOptions
    from ._observability import PrometheusCollector as PrometheusCollector
    from ._observability import exposition as exposition
    from ._observability import register_prometheus as register_prometheus
    from ._observability import start_span as start_span
    from ._openai_compat import OpenAICompatibleBackend as OpenAICompatibleBackend
    from ._registry import create_api_backend as create_api_backend
    from ._registry import find_compatible_backend as find_compatible_backend
    from ._registry import get_available_backends as get_available_backends
    from ._registry import get_backend_class as get_backend_class
    from ._registry import register_api_backend as register_api_backend
    from ._routing import RouterConfig as RouterConfig
    from ._routing import RouteTarget as RouteTarget
    from ._streams import NDJSONDecoder as NDJSONDecoder
    from ._streams import SSEDecoder as SSEDecoder
    from ._sync import SyncFacade as SyncFacade
    from ._transport import Endpoint as Endpoint
    from ._transport import HTTPRequest as HTTPRequest
    from ._transport import RawResponse as RawResponse
    from ._types import CacheHit as CacheHit
    from ._types import ChatChunk as ChatChunk
    from ._types import ChatResponse as ChatResponse
    from ._types import EmbeddingResponse as EmbeddingResponse
    from ._types import FileObject as FileObject
    from ._types import GeneratedImage as GeneratedImage
    from ._types import HealthStatus as HealthStatus
    from ._types import ImageResponse as ImageResponse
    from ._types import ModelInfo as ModelInfo
    from ._types import ModerationResponse as ModerationResponse
    from ._types import ModerationResult as ModerationResult
    from ._types import Priority as Priority
    from ._types import PullProgress as PullProgress
    from ._types import RerankResult as RerankResult
    from ._types import TEIPrediction as TEIPrediction
    from ._types import TEIToken as TEIToken
    from ._types import TGIDetails as TGIDetails
    from ._types import TGIGeneration as TGIGeneration
    from ._types import TGIStreamToken as TGIStreamToken
    from ._types import TGIToken as TGIToken
    from ._types import ToolCall as ToolCall
    from ._types import ToolCallDelta as ToolCallDelta
    from ._types import TranscriptionResponse as TranscriptionResponse
    from ._types import Usage as Usage
    from ._unified import UnifiedBackend as UnifiedBackend
    from .cache import MemoryStore as MemoryStore
    from .cache import RedisStore as RedisStore
    from .cache import ResponseCache as ResponseCache
    from .cache import SemanticCache as SemanticCache
    from .cache import SqliteStore as SqliteStore
    from .router import Router as Router
