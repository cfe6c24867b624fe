"""The machinery shared by the Unified backends: several endpoints behind one backend, and an
optional managed server.

A Unified backend subclasses its plain backend (so it speaks exactly the same protocol, all
surfaces included) and puts :class:`UnifiedBackend` first in its bases; it declares its
``provider`` name, its ``plain`` class and its ``server_kind`` (the official server's
description in :mod:`ipfs_accelerate.servers.specs`), and adds a body only where several
endpoints change the protocol's meaning (vLLM's LoRA adapters, OVMS readiness).

It holds one *member* per endpoint: a plain backend instance with its own connection pool,
circuit breaker, concurrency limit and metrics. Every request the plain code builds goes
through the two pipeline entry points (``_request`` and ``_stream``), which this class hands to a
:class:`~ipfs_accelerate.api_backends.router.Router` over the members: strategy, per-endpoint
breaker and limit, cooldown, failover (streams only before their first chunk), health checks.
The call's ``max_retries`` becomes the router's attempt budget (``max_retries + 1`` attempts
spread over endpoints) and its ``deadline`` bounds the whole call.

Configuration (``metadata``), next to the plain backend's own keys:

* ``endpoints``: a list of URLs, or of dicts ``{"url", "name", "weight", "api_key",
  "max_concurrency"}``. Without it, the plain configuration (``base_url``, provider keys,
  environment) gives a single endpoint.
* ``strategy``: ``round_robin``, ``least_in_flight`` (default), ``lowest_latency``, ``weighted``.
* ``router``: further :class:`~ipfs_accelerate.api_backends.router.RouterConfig` settings
  (``cooldown``, ``health_interval``...). Backoffs default to the backend's resilience settings.
* ``managed_server``: a dict of the server builder's arguments (``model``/``model_id``...,
  ``runtime``: ``"docker"`` or ``"process"``) plus ``lifecycle`` (ManagedServer settings) and
  ``auto_start``; or pass ``server=`` a :class:`ServerSpec` or :class:`ManagedServer`.
  The managed server is one more endpoint (the first). It is started by
  :meth:`UnifiedBackend.start_server` (or on the first request with ``auto_start``), monitored
  and restarted by its ManagedServer, and stopped by :meth:`stop_server` / :meth:`aclose`.
  While it is not ready, requests go to the other endpoints.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any, ClassVar, TypeVar

from ipfs_accelerate.errors import ConfigurationError
from ipfs_accelerate.resilience import Secret, redact_url
from ipfs_accelerate.servers import DockerRuntime, LocalProcessRuntime, ManagedServer, ServerSpec
from ipfs_accelerate.servers.specs import ServerKind

from ._base import APIBackend, CallOptions, StreamParser
from ._transport import Endpoint, HTTPRequest, RawResponse
from ._types import HealthStatus, Usage
from .router import Router, RouterConfig, RouteTarget

__all__ = ["UnifiedBackend"]

T = TypeVar("T")

_ENDPOINT_KEYS = frozenset({"url", "base_url", "name", "weight", "api_key", "max_concurrency"})
_LIFECYCLE_KEYS = frozenset(
    {"ready_timeout", "probe_interval", "health_interval", "health_timeout", "unhealthy_after",
     "max_restarts", "restart_window", "restart_backoff", "max_restart_backoff", "stop_timeout",
     "log_tail"}
)  # fmt: skip


class UnifiedBackend(APIBackend):
    """Mixin for ``XUnifiedBackend(UnifiedBackend, XBackend)`` (see the module docstring)."""

    #: the plain protocol class each endpoint member is an instance of
    plain: ClassVar[type[APIBackend]]
    #: the official server that ``managed_server`` settings describe (None: none)
    server_kind: ClassVar[ServerKind | None] = None

    def __init__(
        self,
        resources: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        resilience: Any = None,
        server: ManagedServer | ServerSpec | Mapping[str, Any] | None = None,
        router: RouterConfig | Mapping[str, Any] | None = None,
        strategy: str | None = None,
        auto_start: bool | None = None,
    ) -> None:
        meta = dict(metadata or {})
        res = dict(resources or {})
        endpoint_specs = _endpoint_specs(meta.pop("endpoints", None), type(self).__name__)
        server_cfg = server if server is not None else meta.pop("managed_server", None)
        meta.pop("managed_server", None)
        router_cfg = router if router is not None else meta.pop("router", None)
        meta.pop("router", None)
        strategy = strategy or meta.pop("strategy", None)
        meta.pop("strategy", None)
        self.managed_server, cfg_auto_start = self._build_managed(server_cfg)
        self.auto_start = bool(auto_start if auto_start is not None else cfg_auto_start)
        if self.managed_server is not None:
            managed = self.managed_server
            endpoint_specs.insert(0, {"url": managed.url, "name": f"managed-{managed.spec.name}",
                                      "managed": managed})  # fmt: skip
        member_base = dict(meta)
        if endpoint_specs:
            meta["base_url"] = endpoint_specs[0]["url"]
        super().__init__(res, meta, resilience=resilience)
        if not endpoint_specs:
            endpoint_specs = [{"url": self.base_url}]
        self.members: list[APIBackend] = [
            self._member(res, member_base, spec) for spec in endpoint_specs
        ]
        self.endpoint = self.members[0].endpoint
        names = [m.endpoint.name for m in self.members]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"{self.provider}: endpoints listed twice: {names}")
        cfg = self.config
        router_defaults = {
            "backoff": cfg.initial_backoff,
            "max_backoff": cfg.max_backoff,
            "max_retry_after": cfg.max_retry_after,
            "jitter": cfg.jitter,
        }
        if isinstance(router_cfg, RouterConfig):
            config = router_cfg
        else:
            config = RouterConfig.from_value({**router_defaults, **dict(router_cfg or {})})
        if strategy is not None:
            config = dataclasses.replace(config, strategy=strategy)
        self.router = Router(
            [
                RouteTarget(
                    m,
                    weight=getattr(m, "route_weight", 1.0),
                    name=f"{self.provider}@{m.endpoint.name}",
                )
                for m in self.members
            ],
            config=config,
            name=f"{self.provider}-unified",
        )
        # the logical request counts of this backend are the router's (one per call)
        self.metrics = self.router.metrics
        self._start_lock: asyncio.Lock | None = None

    # ------------------------------------------------------------------ construction

    def _member(
        self, resources: dict[str, Any], base: dict[str, Any], spec: Mapping[str, Any]
    ) -> APIBackend:
        meta = dict(base)
        meta["base_url"] = spec["url"]
        if spec.get("api_key") is not None:
            key = spec["api_key"]
            meta["api_key"] = key.reveal() if isinstance(key, Secret) else key
        config = self.config
        if spec.get("max_concurrency") is not None:
            config = dataclasses.replace(config, max_concurrency=int(spec["max_concurrency"]))
        member = self.plain(resources, meta, resilience=config)
        if spec.get("name"):
            member.endpoint = Endpoint(
                member.base_url, provider=member.provider, config=config,
                headers=member._static_headers(), name=str(spec["name"]),
            )  # fmt: skip
        member.route_weight = float(spec.get("weight", 1.0))  # type: ignore[attr-defined]
        member.managed_server = spec.get("managed")  # type: ignore[attr-defined]
        return member

    def server_spec(self, **kwargs: Any) -> ServerSpec:
        """The ServerSpec of this backend's official server from its builder's arguments;
        ``model`` also names a single required argument called otherwise (TGI's
        ``model_id``)."""
        kind = self.server_kind
        if kind is None:
            raise ConfigurationError(f"{self.provider}: no managed server builder")
        names = [option.name for option in kind.required]
        if len(names) == 1 and names[0] != "model" and not kwargs.get(names[0]):
            kwargs[names[0]] = kwargs.pop("model", None)
        required = [kwargs.pop(name, None) for name in names]
        if not all(required):
            listed = " and ".join(repr(name) for name in names)
            article = "a " if len(names) == 1 else ""
            raise ConfigurationError(f"{self.provider}: managed_server needs {article}{listed}")
        return kind.make(*(str(value) for value in required), **kwargs)

    def _build_managed(self, cfg: Any) -> tuple[ManagedServer | None, bool]:
        if cfg is None:
            return None, False
        if isinstance(cfg, ManagedServer):
            return cfg, False
        if isinstance(cfg, ServerSpec):
            return ManagedServer(cfg), False
        if not isinstance(cfg, Mapping):
            raise ConfigurationError(
                f"{type(self).__name__}: managed_server must be a dict, a ServerSpec or a "
                f"ManagedServer, got {type(cfg).__name__}"
            )
        options = dict(cfg)
        auto_start = bool(options.pop("auto_start", False))
        lifecycle = dict(options.pop("lifecycle", None) or {})
        unknown = sorted(set(lifecycle) - _LIFECYCLE_KEYS)
        if unknown:
            raise ConfigurationError(
                f"unknown managed server lifecycle settings: {unknown}; "
                f"known: {sorted(_LIFECYCLE_KEYS)}"
            )
        runtime_name = options.get("runtime", "docker")
        spec = self.server_spec(**options)
        runtime = DockerRuntime() if runtime_name == "docker" else LocalProcessRuntime()
        return ManagedServer(spec, runtime, **lifecycle), auto_start

    # ------------------------------------------------------------------ lifecycle

    def _endpoints(self) -> list[Endpoint]:
        return [m.endpoint for m in getattr(self, "members", ())] or [self.endpoint]

    def managed_servers(self) -> list[ManagedServer]:
        return [self.managed_server] if self.managed_server is not None else []

    async def start_server(self) -> None:
        """Start the managed server and wait until it is ready (no-op without one, or running)."""
        if self.managed_server is None:
            raise ConfigurationError(f"{self.provider}: no managed server configured")
        await self.managed_server.start()

    async def stop_server(self) -> None:
        if self.managed_server is not None:
            await self.managed_server.stop()

    async def _autostart(self) -> None:
        server = self.managed_server
        if server is None or not self.auto_start or server.state.value != "stopped":
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if server.state.value == "stopped":
                await server.start()

    async def aclose(self) -> None:
        """Stop health checks and the managed server, close every endpoint's pool."""
        await self.router.aclose()
        await self.stop_server()
        await super().aclose()

    # ------------------------------------------------------------------ the pipeline, routed

    async def _request(
        self,
        request: HTTPRequest,
        opts: CallOptions,
        parse: Callable[[RawResponse], T],
        *,
        what: str,
        endpoint: Endpoint | None = None,
    ) -> T:
        if endpoint is not None:
            return await self._member_of(endpoint)._request(
                request, opts, parse, what=what, endpoint=endpoint
            )
        await self._autostart()

        def op(target: RouteTarget, attempt: dict[str, Any]) -> Any:
            return target.backend._request(request, _attempt(opts, attempt), parse, what=what)

        result: T = await self.router.call(
            op, what=what, deadline=opts.deadline, max_attempts=opts.max_retries + 1
        )
        return result

    def _stream(
        self,
        request: HTTPRequest,
        opts: CallOptions,
        make_parser: Callable[[], StreamParser[T]],
        *,
        what: str,
        content_types: tuple[str, ...] = ("text/event-stream",),
        endpoint: Endpoint | None = None,
        on_complete: Callable[[StreamParser[T]], Usage | None] | None = None,
    ) -> AsyncIterator[T]:
        if endpoint is not None:
            return self._member_of(endpoint)._stream(
                request,
                opts,
                make_parser,
                what=what,
                content_types=content_types,
                endpoint=endpoint,
                on_complete=on_complete,
            )

        def op(target: RouteTarget, attempt: dict[str, Any]) -> AsyncIterator[T]:
            return target.backend._stream(
                request,
                _attempt(opts, attempt),
                make_parser,
                what=what,
                content_types=content_types,
                on_complete=on_complete,
            )

        return self._started_stream(
            lambda: self.router.stream(
                op, what=what, deadline=opts.deadline, max_attempts=opts.max_retries + 1
            )
        )

    async def _started_stream(self, make: Callable[[], AsyncIterator[T]]) -> AsyncIterator[T]:
        await self._autostart()
        iterator = make()
        try:
            async for item in iterator:
                yield item
        finally:
            close = getattr(iterator, "aclose", None)
            if close is not None:
                await close()

    def _member_of(self, endpoint: Endpoint) -> APIBackend:
        for member in self.members:
            if member.endpoint is endpoint:
                return member
        raise ConfigurationError(
            f"{self.provider}: endpoint {endpoint.name} is not one of this backend's"
        )

    # ------------------------------------------------------------------ health and stats

    async def health(self, timeout: float = 5.0) -> HealthStatus:
        """Probe every endpoint; healthy when at least one is (the detail lists each)."""
        by_endpoint = await self.health_by_endpoint(timeout)
        results = list(by_endpoint.values())
        healthy = [r for r in results if r.healthy]
        detail = "; ".join(
            f"{name}: {'ok' if r.healthy else (r.detail or f'HTTP {r.status}')}"
            for name, r in by_endpoint.items()
        )
        best = min(healthy, key=lambda r: r.latency_s or 0.0) if healthy else results[0]
        return HealthStatus(bool(healthy), best.status, best.latency_s, detail)

    async def health_by_endpoint(self, timeout: float = 5.0) -> dict[str, HealthStatus]:
        """Probe every endpoint at once (no queue, no retry, no breaker): name -> its status,
        in the members' order (names are unique)."""
        results = await asyncio.gather(*(m.health(timeout) for m in self.members))
        return {m.endpoint.name: r for m, r in zip(self.members, results, strict=True)}

    async def check_health(self) -> dict[str, HealthStatus]:
        """Probe every endpoint and let the router avoid the failing ones until they pass."""
        return await self.router.check_health()

    def _pooled_endpoints(self) -> list[Endpoint]:
        return self._endpoints()

    def get_stats(self) -> dict[str, Any]:
        stats = super().get_stats()
        router = self.router.get_stats()
        stats["router"] = {k: router[k] for k in ("name", "strategy", "failovers", "targets")}
        stats["failovers"] = router["failovers"]
        if self.managed_server is not None:
            stats["managed_server"] = self.managed_server.stats()
        return stats

    def __repr__(self) -> str:
        urls = ", ".join(redact_url(m.base_url) for m in getattr(self, "members", ()))
        server = getattr(self, "managed_server", None)
        managed = f" managed={server.state.value}" if server is not None else ""
        return f"<{type(self).__name__} provider={self.provider!r} endpoints=[{urls}]{managed}>"


def _attempt(opts: CallOptions, attempt: Mapping[str, Any]) -> CallOptions:
    return dataclasses.replace(
        opts, max_retries=int(attempt["max_retries"]), deadline=attempt.get("deadline")
    )


def _endpoint_specs(value: Any, owner: str) -> list[dict[str, Any]]:
    if value is None:
        return []
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise ConfigurationError(
            f"{owner}: metadata['endpoints'] must be a list of URLs or dicts, "
            f"got {type(value).__name__}"
        )
    specs: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        if isinstance(item, str):
            spec: dict[str, Any] = {"url": item}
        elif isinstance(item, Mapping):
            unknown = sorted(set(item) - _ENDPOINT_KEYS)
            if unknown:
                raise ConfigurationError(
                    f"{owner}: endpoints[{i}] has unknown keys {unknown}; "
                    f"known: {sorted(_ENDPOINT_KEYS)}"
                )
            spec = dict(item)
            if "url" not in spec and "base_url" in spec:
                spec["url"] = spec.pop("base_url")
            if not isinstance(spec.get("url"), str) or not spec["url"]:
                raise ConfigurationError(f"{owner}: endpoints[{i}] needs a 'url'")
        else:
            raise ConfigurationError(
                f"{owner}: endpoints[{i}] must be a URL or a dict, got {type(item).__name__}"
            )
        weight = spec.get("weight", 1.0)
        if not (isinstance(weight, int | float) and weight > 0):
            raise ConfigurationError(f"{owner}: endpoints[{i}] weight must be > 0, got {weight!r}")
        specs.append(spec)
    if not specs:
        raise ConfigurationError(f"{owner}: metadata['endpoints'] is empty")
    return specs
