"""Connection hygiene for uvicorn: request read deadlines, a bound on open connections and a
graceful shutdown that drains, then closes what is left.

uvicorn bounds keep-alive idleness and can cancel tasks at shutdown, but it never times out
a client that trickles its request (its keep-alive timer is cancelled by every byte that
arrives) and, with no graceful timeout, waits forever on a client that stalls mid-request.
:class:`ConnectionHygiene` adds per-connection deadlines to uvicorn's own HTTP protocol
(httptools or h11, whichever uvicorn picked), watching only the state both implementations
share (``cycle``, ``transport``), and :class:`DrainingServer` replaces uvicorn's shutdown.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import uvicorn

from ipfs_accelerate.errors import ConfigurationError

__all__ = ["ConnectionHygiene", "ConnectionLimits", "DrainingServer", "protocol_class"]

logger = logging.getLogger("ipfs_accelerate.serve")

#: how long a shutdown waits, after the graceful timeout, for cancelled request tasks to end
_CANCEL_WAIT_S = 1.0


@dataclass(frozen=True)
class ConnectionLimits:
    """The ``ServerConfig`` settings that the connection layer enforces (seconds); their
    defaults are ServerConfig's."""

    header_timeout_s: float
    body_timeout_s: float
    keep_alive_timeout_s: float
    max_connections: int
    graceful_timeout_s: float

    @classmethod
    def of(cls, config: Any) -> ConnectionLimits:
        """The limits a ServerConfig sets (its fields of the same names)."""
        return cls(**{f.name: getattr(config, f.name) for f in dataclasses.fields(cls)})


def _raw_response(status: int, reason: str, message: str) -> bytes:
    # written straight to the transport: the request is incomplete, so no ASGI cycle can answer
    body = message.encode()
    head = (
        f"HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class ConnectionHygiene(asyncio.Protocol):
    """Mixed into uvicorn's HTTP protocol class (see :func:`protocol_class`).

    A connection has one deadline at a time: the request headers must be complete within
    ``header_timeout_s`` of the connection opening or of the first byte of a later request,
    the body within ``body_timeout_s`` of the headers. Past it, the client gets 408 and the
    connection is closed (a connection that never sent a byte is closed without an answer).
    Idle keep-alive connections stay uvicorn's (``timeout_keep_alive``)."""

    limits: ClassVar[ConnectionLimits]
    # set by uvicorn's protocol classes
    cycle: Any
    transport: asyncio.Transport
    connections: set[Any]
    client: tuple[str, int] | None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self._tracked_cycle: Any = None
        self._request_bytes = False  # bytes of a request whose headers are incomplete
        self._draining = False

    # ------------------------------------------------------------------ protocol events

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.limits.max_connections:
            logger.warning(
                "refused a connection from %s: %d connections are open (the limit)",
                self._peer(),
                self.limits.max_connections,
            )
            message = "too many open connections; retry later"
            self.transport.write(_raw_response(503, "Service Unavailable", message))
            self.transport.close()
            return
        self._arm(self.limits.header_timeout_s, self._headers_late)

    def data_received(self, data: bytes) -> None:
        if not (self._reading_body() or self._request_bytes or self.transport.is_closing()):
            self._request_bytes = True
            self._arm(self.limits.header_timeout_s, self._headers_late)
        base: Any = super()
        base.data_received(data)
        self._track()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        base: Any = super()
        base.on_response_complete()
        self._track()  # h11 starts a pipelined request here

    # ------------------------------------------------------------------ request phases

    def _reading_body(self) -> bool:
        cycle = self.cycle
        return cycle is not None and cycle is self._tracked_cycle and bool(cycle.more_body)

    def _track(self) -> None:
        cycle = self.cycle
        if cycle is None:
            return
        if cycle is not self._tracked_cycle:  # the headers of a new request are complete
            self._tracked_cycle = cycle
            self._request_bytes = False
            if self._draining:
                cycle.keep_alive = False
            if cycle.more_body:
                self._arm(self.limits.body_timeout_s, self._body_late)
            else:
                self._disarm()
        elif not cycle.more_body and not self._request_bytes:
            self._disarm()

    @property
    def busy(self) -> bool:
        """A request is arriving or being answered on this connection."""
        if self.transport is None or self.transport.is_closing():
            return False
        cycle = self.cycle
        return self._request_bytes or (cycle is not None and not cycle.response_complete)

    # ------------------------------------------------------------------ deadlines

    def _arm(self, seconds: float, callback: Callable[[], None]) -> None:
        self._disarm()
        self._deadline = asyncio.get_running_loop().call_later(seconds, callback)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _headers_late(self) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self._request_bytes:
            limit = self.limits.header_timeout_s
            self._timed_out(f"the request headers did not arrive within {limit:g} s")
        else:  # never sent a byte: nobody to answer
            self.transport.close()

    def _body_late(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            limit = self.limits.body_timeout_s
            self._timed_out(f"the request body did not arrive within {limit:g} s")

    def _timed_out(self, why: str) -> None:
        logger.info("closed the connection from %s with 408: %s", self._peer(), why)
        cycle = self.cycle
        if cycle is None or not cycle.response_started or cycle.response_complete:
            self.transport.write(_raw_response(408, "Request Timeout", f"Request Timeout: {why}"))
        if cycle is not None and not cycle.response_complete:
            # the handler reading the body sees a disconnect; its answer goes nowhere
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "a client"

    # ------------------------------------------------------------------ shutdown

    def drain(self) -> None:
        """Answer what is in progress with ``Connection: close``; idle connections stay open
        (a pooled client may still ask ``/health``) until :class:`DrainingServer` closes
        them."""
        self._draining = True
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            cycle.keep_alive = False

    def close_now(self) -> None:
        if self.transport.is_closing():
            return
        if self.busy:  # stalled past the graceful timeout: drop what it has not read
            self.transport.abort()
        else:
            self.shutdown()  # type: ignore[attr-defined]  # uvicorn's: closes an idle one


def protocol_class(limits: ConnectionLimits, http: Any = "auto") -> type[asyncio.Protocol]:
    """uvicorn's HTTP protocol (``http``: ``"auto"``, ``"httptools"``, ``"h11"``) with
    :class:`ConnectionHygiene` enforcing ``limits``."""
    base: type[asyncio.Protocol]
    if http == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        base = H11Protocol
    elif http in ("auto", "httptools"):
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        base = AutoHTTPProtocol
    else:
        raise ConfigurationError(
            f"http={http!r}: the connection limits need uvicorn's 'httptools' or 'h11' protocol"
        )
    return type(f"Guarded{base.__name__}", (ConnectionHygiene, base), {"limits": limits})


class DrainingServer(uvicorn.Server):
    """uvicorn's server with a bounded, observable shutdown: it stops accepting, calls
    ``on_drain`` (the app answers ``/health`` 503 from then on), lets requests in progress
    finish for up to ``graceful_timeout_s``, then closes every connection, cancels what is
    still running and runs the app's shutdown. A second Ctrl-C skips the wait."""

    def __init__(
        self,
        config: uvicorn.Config,
        limits: ConnectionLimits,
        on_drain: Callable[[], None] = lambda: None,
    ) -> None:
        super().__init__(config)
        self.limits = limits
        self.on_drain = on_drain

    def _hygienic(self) -> list[ConnectionHygiene]:
        return [c for c in self.server_state.connections if isinstance(c, ConnectionHygiene)]

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.limits.graceful_timeout_s
        self.on_drain()
        for server in self.servers:
            server.close()
        for sock in sockets or []:
            sock.close()
        for connection in list(self.server_state.connections):
            if isinstance(connection, ConnectionHygiene):
                connection.drain()
            else:  # a websocket: uvicorn's own shutdown
                connection.shutdown()
        busy = [c for c in self._hygienic() if c.busy]
        if busy:
            logger.info(
                "draining: %d request(s) in progress get up to %g s to finish (Ctrl-C again "
                "to stop now)",
                len(busy),
                self.limits.graceful_timeout_s,
            )
        while not self.force_exit and loop.time() < deadline:
            if not any(c.busy for c in self._hygienic()) and not self.server_state.tasks:
                break
            await asyncio.sleep(0.05)
        stalled = [c for c in self._hygienic() if c.busy]
        if stalled:
            logger.warning(
                "closing %d connection(s) still busy after the %g s graceful timeout",
                len(stalled),
                self.limits.graceful_timeout_s,
            )
        for left in self._hygienic():
            left.close_now()
        tasks = list(self.server_state.tasks)
        for task in tasks:
            task.cancel(msg="graceful shutdown timeout exceeded")
        if tasks:
            await asyncio.wait(tasks, timeout=_CANCEL_WAIT_S)
        for server in self.servers:
            await asyncio.wait([asyncio.ensure_future(server.wait_closed())], timeout=1.0)
        if not self.force_exit:
            await self.lifespan.shutdown()
