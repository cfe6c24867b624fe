"""A fault-injecting HTTP proxy in front of a real S3-protocol server (moto's server mode).

Every request is forwarded byte for byte (raw path and query, headers, body) to the
upstream and its answer passed back, unless a queued :class:`~tests.fakes._server.Fault`
matches the request's path *and query* (``path="partNumber=2"`` hits the second part of a
multipart upload): then the proxy answers S3's XML error body with the fault's status,
resets the connection, or stalls first. Requests are recorded like every fake's.
"""

from __future__ import annotations

import asyncio
import io
from typing import Any
from xml.sax.saxutils import escape

import aiohttp
from aiohttp import web
from yarl import URL

from ._server import FakeServer, Recorded

__all__ = ["S3FaultProxy"]

_HOP = {"host", "connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
        "proxy-authorization", "proxy-connection", "content-length", "expect"}  # fmt: skip
_S3_CODES = {
    500: "InternalError",
    503: "SlowDown",
    403: "AccessDenied",
    404: "NoSuchKey",
    429: "SlowDown",
}


class S3FaultProxy(FakeServer):
    provider = "s3"
    request_id_header = "x-amz-request-id"

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self._session: aiohttp.ClientSession | None = None
        super().__init__(None)

    def setup_routes(self, app: web.Application) -> None:
        app.router.add_route("*", "/{tail:.*}", self.forward)

    def error_response(
        self,
        status: int,
        message: str,
        kind: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> web.Response:
        code = kind or _S3_CODES.get(status, "InternalError")
        xml = ('<?xml version="1.0" encoding="UTF-8"?>\n'
               f"<Error><Code>{code}</Code><Message>{escape(message)}</Message>"
               "<RequestId>proxy</RequestId></Error>")  # fmt: skip
        return web.Response(
            text=xml, status=status, content_type="application/xml", headers=self._headers(headers)
        )

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        body = await request.read()
        self.requests.append(
            Recorded(request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        fault = self._take_fault(request.path_qs)
        if fault is not None:
            if fault.delay:
                await asyncio.sleep(fault.delay)
            if fault.reset:
                assert request.transport is not None
                request.transport.abort()
                raise asyncio.CancelledError
            if fault.status is not None:
                return self.error_response(fault.status, fault.message, headers=fault.headers)
        return await handler(request)

    async def forward(self, request: web.Request) -> web.StreamResponse:
        if self._session is None:
            self._session = aiohttp.ClientSession(auto_decompress=False)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        url = URL(self.upstream + request.raw_path, encoded=True)
        body = await request.read()
        data = io.BytesIO(body) if body else None  # a stream: aiohttp warns about large raw bytes
        async with self._session.request(
            request.method, url, headers=headers, data=data, allow_redirects=False
        ) as resp:
            data = await resp.read()
            out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP}
            if request.method == "HEAD":
                # no body, but the object's length must reach the client as the server said it
                head = web.StreamResponse(status=resp.status, headers=out)
                if "Content-Length" in resp.headers:
                    head.content_length = int(resp.headers["Content-Length"])
                await head.prepare(request)
                await head.write_eof()
                return head
            return web.Response(body=data, status=resp.status, headers=out)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        await super().close()
