"""HTTP transport: one endpoint = base URL + pooled aiohttp session + breaker + limiter + stats.

aiohttp is imported on first use (session creation), never at package import. A session
belongs to an event loop, so an endpoint keeps one session per loop it is used from (the
caller's loop, and the sync facade's loop thread); sessions of loops that have been closed
are discarded. Transport failures are mapped to the package's typed errors here, in one place.
"""

from __future__ import annotations

import asyncio
import math
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ipfs_accelerate.errors import (
    APIConnectionError,
    APIError,
    APITimeoutError,
    ProtocolError,
)
from ipfs_accelerate.resilience import (
    CircuitBreaker,
    Metrics,
    PriorityLimiter,
    ResilienceConfig,
    redact_url,
)
from ipfs_accelerate.resilience._sessions import drop_session_of_closed_loop

from ._streams import excerpt

__all__ = ["Endpoint", "HTTPRequest", "RawResponse", "request_id_from"]

USER_AGENT = "ipfs-accelerate/0.1 (python; aiohttp)"
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid", "x-goog-request-id")

_aiohttp_module: Any = None


def _aiohttp() -> Any:
    global _aiohttp_module
    if _aiohttp_module is None:
        try:
            import aiohttp
        except ImportError as exc:  # pragma: no cover - depends on the environment
            from ipfs_accelerate.errors import ConfigurationError

            raise ConfigurationError(
                "the API backends need aiohttp: pip install 'ipfs-accelerate[api]'"
            ) from exc
        _aiohttp_module = aiohttp
    return _aiohttp_module


def request_id_from(headers: Mapping[str, str]) -> str | None:
    for name in _REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


@dataclass(slots=True)
class HTTPRequest:
    """One logical request. ``body`` is sent as is on every attempt; ``body_factory`` builds a
    fresh body per attempt (multipart forms cannot be re-sent once consumed)."""

    method: str
    path: str
    json: Any = None
    body: bytes | None = None
    body_factory: Callable[[], Any] | None = None
    params: Mapping[str, str] | None = None
    headers: Mapping[str, str] | None = None
    expect: str = "json"  # json | text | bytes | sse | ndjson


@dataclass(slots=True)
class RawResponse:
    status: int
    headers: Mapping[str, str]
    body: bytes
    content_type: str
    request_id: str | None


class _Deadline:
    __slots__ = ("expired", "task", "when")

    def __init__(self, task: asyncio.Task[Any], when: float) -> None:
        self.task = task
        self.when = when
        self.expired = False


class _DeadlineWatch:
    """The total timeouts of every attempt in flight on one event loop, kept with a single
    timer: the loop's timer at the earliest deadline.

    aiohttp's own total timeout costs each request a timer handle of its own plus the timer
    contexts around each read; at thousands of requests a second that was several percent of
    the client's CPU time per request. Here an attempt costs a dict insert and delete; when
    the timer fires, the attempts past their deadline are cancelled (and report APITimeoutError,
    see Endpoint.send) and the timer moves to the next deadline.
    """

    __slots__ = ("_entries", "_handle", "_loop", "_next")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._entries: dict[int, _Deadline] = {}
        self._handle: asyncio.TimerHandle | None = None
        self._next = math.inf

    def add(self, task: asyncio.Task[Any], timeout: float) -> _Deadline:
        entry = _Deadline(task, self._loop.time() + timeout)
        self._entries[id(entry)] = entry
        if entry.when < self._next:
            if self._handle is not None:
                self._handle.cancel()
            self._next = entry.when
            self._handle = self._loop.call_at(entry.when, self._fire)
        return entry

    def remove(self, entry: _Deadline) -> None:
        # the timer stays: when it fires it only moves on to the deadlines still in flight
        self._entries.pop(id(entry), None)

    def _fire(self) -> None:
        self._handle = None
        now = self._loop.time()
        upcoming = math.inf
        for key, entry in list(self._entries.items()):
            if entry.when <= now:
                del self._entries[key]
                entry.expired = True
                entry.task.cancel()
            elif entry.when < upcoming:
                upcoming = entry.when
        self._next = upcoming
        if upcoming != math.inf:
            self._handle = self._loop.call_at(upcoming, self._fire)


_watches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _DeadlineWatch] = (
    weakref.WeakKeyDictionary()
)


def _watch(loop: asyncio.AbstractEventLoop) -> _DeadlineWatch:
    watch = _watches.get(loop)
    if watch is None:
        watch = _watches[loop] = _DeadlineWatch(loop)
    return watch


class Endpoint:
    """A base URL with its own session(s), circuit breaker, concurrency limiter and metrics.

    The backend composes these per request; a router (several endpoints behind one backend)
    picks an endpoint per attempt and reuses the same objects.
    """

    def __init__(
        self,
        base_url: str,
        *,
        provider: str,
        config: ResilienceConfig,
        headers: Mapping[str, str] | None = None,
        name: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.provider = provider
        self.config = config
        self.name = name or redact_url(self.base_url)
        self.headers: dict[str, str] = {"User-Agent": USER_AGENT, **(headers or {})}
        self.breaker = CircuitBreaker(config.breaker, provider=provider, name=self.name)
        self.limiter = PriorityLimiter(
            config.max_concurrency, config.max_queue, provider=provider, name=self.name
        )
        self.metrics = Metrics()  # attempt-level: one entry per HTTP attempt on this endpoint
        self._sessions: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], Any]] = {}
        self._last: tuple[asyncio.AbstractEventLoop, Any] | None = None
        self._timeouts: dict[tuple[float | None, float | None, float | None], Any] = {}

    def __repr__(self) -> str:
        return f"<Endpoint {self.provider} {self.name} circuit={self.breaker.state}>"

    def url(self, path: str) -> str:
        if path.startswith(("http://", "https://")):
            return path
        return self.base_url + path

    # ------------------------------------------------------------------ sessions

    def session(self) -> Any:
        """The ``aiohttp.ClientSession`` of the running loop (created on first use)."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0] is loop and not last[1].closed:
            return last[1]
        entry = self._sessions.get(id(loop))
        if entry is not None and entry[0]() is loop and not entry[1].closed:
            session = entry[1]
        else:
            self._forget_dead_sessions()
            aiohttp = _aiohttp()
            connector = aiohttp.TCPConnector(
                limit=self.config.max_concurrency + 16,
                limit_per_host=0,
                ttl_dns_cache=300,
                keepalive_timeout=30,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                auto_decompress=True,
                raise_for_status=False,
                timeout=aiohttp.ClientTimeout(total=None),
            )
            # aiohttp silently re-sends idempotent requests once on a dropped connection;
            # the retry policy here must be the only one, so its counts and rules hold
            if hasattr(session, "_retry_connection"):
                session._retry_connection = False
            self._sessions[id(loop)] = (weakref.ref(loop), session)
        self._last = (loop, session)
        return session

    def _forget_dead_sessions(self) -> None:
        for key, (loop_ref, session) in list(self._sessions.items()):
            loop = loop_ref()
            if loop is None or loop.is_closed():
                drop_session_of_closed_loop(session)
                del self._sessions[key]

    async def aclose(self) -> None:
        """Close the sessions of this endpoint: the current loop's awaited, others scheduled."""
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        self._last = None
        sessions, self._sessions = self._sessions, {}
        for loop_ref, session in sessions.values():
            loop = loop_ref()
            if session.closed:
                continue
            if loop is current:
                await session.close()
            elif loop is not None and loop.is_running():
                asyncio.run_coroutine_threadsafe(session.close(), loop)
            else:
                drop_session_of_closed_loop(session)

    # ------------------------------------------------------------------ attempts

    def _timeout(self, total: float | None, connect: float | None, read: float | None) -> Any:
        key = (total, connect, read)
        timeout = self._timeouts.get(key)
        if timeout is None:
            aiohttp = _aiohttp()
            timeout = aiohttp.ClientTimeout(total=total, sock_connect=connect, sock_read=read)
            if (
                len(self._timeouts) < 64
            ):  # deadlines make many distinct totals; keep the cache small
                self._timeouts[key] = timeout
        return timeout

    def _body_kwargs(self, request: HTTPRequest) -> dict[str, Any]:
        if request.body_factory is not None:
            return {"data": request.body_factory()}
        if request.body is not None:
            return {"data": request.body}
        return {}

    async def send(
        self,
        request: HTTPRequest,
        headers: Mapping[str, str],
        *,
        total: float,
        connect: float,
    ) -> RawResponse:
        """One plain attempt: send, read the whole (bounded) body. Transport errors are typed.

        ``total`` bounds the whole attempt (connect, send, read) through the loop's deadline
        watch; ``connect`` bounds opening a connection (aiohttp's sock_connect)."""
        session = self.session()
        url = self.url(request.path)
        task = asyncio.current_task()
        watch = _watch(task.get_loop()) if task is not None else None
        deadline = watch.add(task, total) if watch is not None and task is not None else None
        uncancelled = False
        try:
            async with session.request(
                request.method,
                url,
                headers=headers,
                params=request.params,
                timeout=self._timeout(None, connect, None),
                **self._body_kwargs(request),
            ) as resp:
                body = await self.read_body(resp)
                return RawResponse(
                    resp.status,
                    resp.headers,
                    body,
                    resp.content_type,
                    request_id_from(resp.headers),
                )
        except APIError:
            raise
        except asyncio.CancelledError:
            if deadline is not None and deadline.expired and task is not None:
                uncancelled = True
                if task.uncancel() == 0:  # our deadline cancelled the task, nobody else did
                    raise APITimeoutError(
                        f"request to {redact_url(url)} timed out ({total:g} s)",
                        provider=self.provider,
                    ) from None
            raise
        except BaseException as exc:
            mapped = map_transport_error(exc, self.provider, url, total)
            if mapped is None:
                raise
            raise mapped from exc
        finally:
            if watch is not None and deadline is not None:
                watch.remove(deadline)
                if deadline.expired and not uncancelled and task is not None:
                    # the cancel came as the attempt ended some other way: withdraw it, as
                    # asyncio.timeout does, so the caller's task is not left cancelling
                    task.uncancel()

    async def open(
        self,
        request: HTTPRequest,
        headers: Mapping[str, str],
        *,
        connect: float,
        read: float,
        total: float | None,
    ) -> Any:
        """Start a streamed attempt; the caller reads ``resp.content`` and must release it."""
        session = self.session()
        url = self.url(request.path)
        try:
            return await session.request(
                request.method,
                url,
                headers=headers,
                params=request.params,
                timeout=self._timeout(total, connect, read),
                **self._body_kwargs(request),
            )
        except APIError:
            raise
        except BaseException as exc:
            mapped = map_transport_error(exc, self.provider, url, read)
            if mapped is None:
                raise
            raise mapped from exc

    async def read_body(self, resp: Any) -> bytes:
        limit = self.config.max_response_bytes
        length = resp.content_length
        if length is not None and length > limit:
            resp.close()
            raise ProtocolError(
                f"response body of {length} bytes exceeds the limit of {limit} bytes "
                f"(HTTP {resp.status}, {resp.content_type})",
                provider=self.provider,
                status=resp.status,
                request_id=request_id_from(resp.headers),
            )
        if length is not None and "content-encoding" not in resp.headers:
            return bytes(await resp.read())
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.content.iter_any():
            size += len(chunk)
            if size > limit:
                resp.close()
                raise ProtocolError(
                    f"response body exceeds the limit of {limit} bytes "
                    f"(HTTP {resp.status}, {resp.content_type}): "
                    f"{excerpt(b''.join(chunks)[:200])!r}",
                    provider=self.provider,
                    status=resp.status,
                    request_id=request_id_from(resp.headers),
                )
            chunks.append(chunk)
        return b"".join(chunks)

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "circuit_state": self.breaker.state,
            "circuit_opened": self.breaker.times_opened,
            **self.limiter.stats(),
            "attempts": self.metrics.snapshot(),
        }


def map_transport_error(
    exc: BaseException, provider: str, url: str, timeout: float | None
) -> APIError | None:
    """Map an aiohttp/asyncio/OS exception to a typed error; None for cancellation and the like."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit | GeneratorExit):
        return None
    aiohttp = _aiohttp()
    where = redact_url(url)
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return APITimeoutError(f"connect timeout to {where}", provider=provider)
    if isinstance(
        exc, asyncio.TimeoutError
    ):  # also aiohttp's ServerTimeoutError / SocketTimeoutError
        limit = f" ({timeout:g} s)" if timeout else ""
        return APITimeoutError(f"request to {where} timed out{limit}", provider=provider)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return APIConnectionError(f"cannot connect to {where}: {exc.os_error}", provider=provider)
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return APIConnectionError(f"server disconnected ({where})", provider=provider)
    if isinstance(exc, aiohttp.ClientPayloadError):
        return APIConnectionError(f"response body broke off ({where}): {exc}", provider=provider)
    if isinstance(exc, aiohttp.ClientResponseError):
        return ProtocolError(
            f"malformed HTTP response from {where}: {exc.message}", provider=provider
        )
    if isinstance(exc, aiohttp.ClientError | OSError):
        return APIConnectionError(
            f"connection to {where} failed: {type(exc).__name__}: {exc}", provider=provider
        )
    return None
