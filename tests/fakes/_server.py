"""Common machinery of the protocol fakes: an aiohttp.web server on 127.0.0.1 (random port)
that records every request and injects faults.

Faults are queued with :meth:`FakeServer.inject`; each applies to the next ``times``
matching requests (``path`` substring filter). Request-level faults (status with the
provider's own error body, Retry-After headers, delay, connection reset, HTML page, malformed
JSON, wrong content type, oversized body) are applied by the middleware; stream faults
(truncate, reset or stall after N events, in-stream error event) by :meth:`FakeServer.emit`,
which every streaming route writes through (slow streams too), so they apply to each.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import struct
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

__all__ = ["FakeServer", "Fault", "Recorded", "fake_embedding", "word_count"]

FAULT_KEY = web.RequestKey("fault", object)


@dataclass
class Fault:
    status: int | None = None
    body: Any = None  # error body; default: the provider's error shape
    message: str = "injected failure"
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    reset: bool = False  # abort the connection before responding
    html: bool = False  # answer an HTML error page (status default 502)
    malformed: bool = False  # 200 with broken JSON
    content_type: str | None = None  # 200 with this content type (and a text body)
    oversize: int | None = None  # 200 with a JSON body of at least this many bytes
    truncate_after: int | None = None  # stream: clean EOF after N events, no terminator
    reset_after: int | None = None  # stream: abort the connection after N events
    stall_after: int | None = None  # stream: stop sending (keep open) after N events
    error_event_after: int | None = None  # stream: provider's in-stream error event after N events
    partial_tail: bool = False  # with truncate_after: also send half of the next event
    times: int = 1
    path: str | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


def word_count(text: str) -> int:
    return len(text.split())


def fake_embedding(text: str, dims: int = 8) -> list[float]:
    """Deterministic unit vector derived from the text."""
    digest = hashlib.sha256(text.encode()).digest()
    raw = [struct.unpack_from(">h", digest, 2 * i)[0] / 32768.0 for i in range(dims)]
    norm = math.sqrt(sum(x * x for x in raw)) or 1.0
    return [round(x / norm, 6) for x in raw]


class FakeServer:
    """Base of every provider fake. Subclasses add routes in ``setup_routes``."""

    provider = "fake"
    request_id_header = "x-request-id"

    def __init__(self, api_key: str | None = None) -> None:
        self.api_key = api_key
        self.requests: list[Recorded] = []
        self.faults: deque[Fault] = deque()
        self.app = web.Application(middlewares=[self._middleware], client_max_size=64 * 1024 * 1024)
        self.setup_routes(self.app)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        self.open_streams = 0
        self._closing = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    def setup_routes(self, app: web.Application) -> None:
        raise NotImplementedError

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeServer:
        self._closing = asyncio.Event()
        self._runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=1.0
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        return self

    async def close(self) -> None:
        self._closing.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------ faults

    def inject(self, fault: Fault | None = None, /, **kwargs: Any) -> Fault:
        fault = fault or Fault(**kwargs)
        self.faults.append(fault)
        return fault

    def _take_fault(self, path: str) -> Fault | None:
        for fault in list(self.faults):
            if fault.path is None or fault.path in path:
                fault.times -= 1
                if fault.times <= 0:
                    self.faults.remove(fault)
                return fault
        return None

    def error_body(self, status: int, message: str, kind: str | None = None) -> Any:
        """The provider's error body for ``status`` (override per provider)."""
        return {
            "error": {
                "message": message,
                "type": kind or "server_error",
                "param": None,
                "code": None,
            }
        }

    def error_response(
        self,
        status: int,
        message: str,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        return web.json_response(
            self.error_body(status, message, kind), status=status, headers=self._headers(headers)
        )

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {self.request_id_header: f"req_{uuid.uuid4().hex[:16]}"}
        if extra:
            headers.update(extra)
        return headers

    def json_response(
        self, data: Any, status: int = 200, headers: dict[str, str] | None = None
    ) -> web.Response:
        return web.json_response(data, status=status, headers=self._headers(headers))

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        fault = self._take_fault(request.path)
        request[FAULT_KEY] = fault
        if fault is not None:
            if fault.delay:
                try:
                    await asyncio.wait_for(self._closing.wait(), fault.delay)
                except TimeoutError:
                    pass  # the delay elapsed; the server is still up
                else:
                    raise web.HTTPServiceUnavailable()  # shutting down: stop waiting
            if fault.reset:
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError  # aiohttp drops the handler quietly
            if fault.html:
                page = (
                    f"<html><head><title>{fault.status or 502} Bad Gateway</title></head>"
                    f"<body><center><h1>{fault.status or 502} Bad Gateway</h1></center>"
                    "<hr><center>nginx</center></body></html>"
                )
                return web.Response(
                    text=page,
                    status=fault.status or 502,
                    content_type="text/html",
                    headers=fault.headers,
                )
            if fault.status is not None:
                if fault.body is not None:
                    data = (
                        fault.body
                        if isinstance(fault.body, bytes | str)
                        else json.dumps(fault.body)
                    )
                    return web.Response(
                        text=data if isinstance(data, str) else data.decode(),
                        status=fault.status,
                        content_type="application/json",
                        headers=self._headers(fault.headers),
                    )
                return self.error_response(fault.status, fault.message, headers=fault.headers)
            if fault.malformed:
                return web.Response(
                    text='{"id": "x", "choices": [{"index": 0, "mess',
                    status=200,
                    content_type="application/json",
                    headers=self._headers(fault.headers),
                )
            if fault.content_type is not None:
                return web.Response(
                    text="<html><body>Login required</body></html>",
                    status=200,
                    content_type=fault.content_type,
                    headers=self._headers(fault.headers),
                )
            if fault.oversize is not None:
                blob = json.dumps({"data": "x" * fault.oversize})
                return web.Response(
                    text=blob, status=200, content_type="application/json", headers=self._headers()
                )
        return await handler(request)

    # ------------------------------------------------------------------ streams

    async def emit(
        self,
        request: web.Request,
        events: list[bytes],
        terminator: bytes | None,
        *,
        content_type: str = "text/event-stream",
        error_event: bytes | None = None,
        headers: dict[str, str] | None = None,
        charset: str | None = "utf-8",
        event_delay: float = 0.0,
    ) -> web.StreamResponse:
        """Write ``events`` (already framed) then ``terminator``, honouring stream faults;
        ``event_delay`` seconds pass after each event (a slow model)."""
        fault: Fault | None = request.get(FAULT_KEY)  # type: ignore[assignment]
        response = web.StreamResponse(status=200, headers=self._headers(headers))
        response.content_type = content_type
        if charset:
            response.charset = charset
        await response.prepare(request)
        self.open_streams += 1
        try:
            for i, event in enumerate(events):
                if (
                    fault is not None
                    and i
                    and i
                    in (
                        fault.error_event_after,
                        fault.truncate_after,
                        fault.reset_after,
                        fault.stall_after,
                    )
                ):
                    # let the client read what was sent, so the fault lands after delivered chunks
                    await asyncio.sleep(0.02)
                if fault is not None:
                    if fault.error_event_after == i and error_event is not None:
                        await response.write(error_event)
                        await response.write_eof()
                        return response
                    if fault.truncate_after == i:
                        if fault.partial_tail:
                            await response.write(event[: max(1, len(event) // 2)])
                        await response.write_eof()
                        return response
                    if fault.reset_after == i:
                        assert request.transport is not None
                        request.transport.abort()
                        return response
                    if fault.stall_after == i:
                        await self._closing.wait()  # hang until the server shuts down
                        return response
                await response.write(event)
                if event_delay:
                    await asyncio.sleep(event_delay)
            if (
                fault is not None
                and fault.error_event_after is not None
                and fault.error_event_after >= len(events)
                and error_event is not None
            ):
                await response.write(error_event)
            elif (
                fault is not None
                and fault.truncate_after is not None
                and fault.truncate_after >= len(events)
            ):
                pass  # every event, but not the terminator
            elif terminator:
                await response.write(terminator)
            await response.write_eof()
        finally:
            self.open_streams -= 1
        return response

    def last(self, path_part: str = "") -> Recorded:
        for recorded in reversed(self.requests):
            if path_part in recorded.path:
                return recorded
        raise AssertionError(f"no request to a path containing {path_part!r}")

    def bearer_ok(self, request: web.Request) -> bool:
        if self.api_key is None:
            return True
        return request.headers.get("Authorization") == f"Bearer {self.api_key}"


@contextmanager
def serve_on_thread(fake: Any) -> Iterator[Any]:
    """Serve ``fake`` (anything with async ``start()``/``close()``, such as a FakeServer) from
    an event loop on a background thread, for callers that block (sync facades, CLIs)."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(fake.start())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(fake.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
