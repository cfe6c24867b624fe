"""One S3 endpoint: its URL, credentials and the resilience pieces that guard it."""

from __future__ import annotations

import asyncio
import contextlib
import weakref
from typing import Any

from ipfs_accelerate.resilience import (
    CircuitBreaker,
    Metrics,
    PriorityLimiter,
    ResilienceConfig,
    Secret,
)
from ipfs_accelerate.resilience._sessions import drop_session_of_closed_loop

__all__ = ["S3Endpoint"]


class S3Endpoint:
    """One S3 endpoint: URL, credentials, breaker, limiter, metrics, a client per event loop.

    ``in_flight``, ``weight``, ``ewma_latency``, ``ewma_ttfc`` and ``wrr_current`` are what the
    balancing strategies read (:class:`~ipfs_accelerate.resilience.Candidate`)."""

    def __init__(
        self,
        *,
        url: str | None,
        region: str,
        name: str,
        access_key: Secret | None,
        secret_key: Secret | None,
        session_token: Secret | None,
        addressing_style: str,
        weight: float,
        config: ResilienceConfig,
    ) -> None:
        self.url = url
        self.region = region
        self.name = name
        self.access_key = access_key
        self.secret_key = secret_key
        self.session_token = session_token
        self.addressing_style = addressing_style
        self.weight = weight
        self.config = config
        self.breaker = CircuitBreaker(config.breaker, provider="s3_kit", name=name)
        self.limiter = PriorityLimiter(
            config.max_concurrency, config.max_queue, provider="s3_kit", name=name
        )
        self.metrics = Metrics()
        self.ewma_latency: float | None = None
        self.ewma_ttfc: float | None = None
        self.wrr_current = 0.0
        # event loop id -> (the loop, the client's context manager, the client)
        self.clients: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], Any, Any]] = {}
        self.locks: dict[int, asyncio.Lock] = {}

    @property
    def in_flight(self) -> int:
        return self.limiter.in_flight

    def __repr__(self) -> str:
        return f"<S3 endpoint {self.name} circuit={self.breaker.state}>"

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "region": self.region,
            "circuit_state": self.breaker.state,
            "circuit_opened": self.breaker.times_opened,
            **self.limiter.stats(),
            "attempts": self.metrics.snapshot(),
        }

    def forget_dead_clients(self) -> None:
        """Drop the clients of event loops that are gone (``asyncio.run`` called repeatedly)."""
        for key, (loop_ref, _context, client) in list(self.clients.items()):
            loop = loop_ref()
            if loop is None or loop.is_closed():
                release_sessions(client)
                del self.clients[key]
                self.locks.pop(key, None)

    async def aclose(self) -> None:
        """Close every client (the current loop's awaited, others' scheduled or released)."""
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        clients, self.clients = self.clients, {}
        self.locks = {}
        for loop_ref, context, client in clients.values():
            loop = loop_ref()
            if loop is current:
                with contextlib.suppress(Exception):
                    await context.__aexit__(None, None, None)
            elif loop is not None and loop.is_running():
                asyncio.run_coroutine_threadsafe(context.__aexit__(None, None, None), loop)
            else:
                release_sessions(client)


def release_sessions(client: Any) -> None:
    """Release the aiohttp sessions inside an aiobotocore client whose loop has closed."""
    http = getattr(getattr(client, "_endpoint", None), "http_session", None)
    sessions = getattr(http, "_sessions", None) or {}
    for session in [s for s in sessions.values() if hasattr(s, "connector")]:
        with contextlib.suppress(Exception):
            drop_session_of_closed_loop(session)
