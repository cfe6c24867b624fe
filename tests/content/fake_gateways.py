"""aiohttp servers on 127.0.0.1 for the fetch tests: a trustless gateway that can be told to
lie in each of the ways a real one could, and a fake of kubo's RPC API.

The kubo fake exists because no kubo binary is installed here; it speaks kubo's documented
RPC protocol for the calls used (``POST /api/v0/block/get?arg=``, ``POST
/api/v0/dag/export?arg=`` answering a CAR, ``POST /api/v0/dag/import`` taking the CAR as a
multipart/form-data ``file`` and answering JSON lines ``{"Root": {"Cid": {"/": ...},
"PinErrorMsg": ""}}``; any other method is refused with 405, as kubo does).
"""

from __future__ import annotations

import asyncio
import io
import json
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from ipfs_accelerate.content import (
    CID,
    DAG_PB,
    CarReader,
    MemoryBlockstore,
    decode_node,
)
from ipfs_accelerate.content._car import encode_header
from ipfs_accelerate.content._cid import encode_varint

LIES = (
    "flipped-block",  # a raw block answer with one byte flipped
    "other-dag-block",  # a raw block answer holding a block of another DAG
    "car-flipped",  # a CAR whose second block has a flipped byte
    "car-other-dag",  # a CAR whose leaves are replaced by blocks of another DAG
    "car-truncated",  # a CAR cut in the middle of a section
    "car-extra",  # a CAR with a valid block no block of the DAG links to
    "car-wrong-root",  # a CAR whose header names another root
    "stall",  # answers nothing within the client's timeout
    "html",  # status 200 with an HTML error page
)


def dfs_blocks(blocks: MemoryBlockstore, root: CID) -> Iterator[tuple[CID, bytes]]:
    seen: set[bytes] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid.digest in seen:
            continue
        seen.add(cid.digest)
        data = blocks.get(cid)
        yield cid, data
        if cid.codec == DAG_PB:
            stack.extend(reversed([link.cid for link in decode_node(data).links]))


def car_bytes(roots: list[CID], sections: list[tuple[CID, bytes]]) -> bytes:
    out = io.BytesIO()
    header = encode_header(roots)
    out.write(encode_varint(len(header)) + header)
    for cid, data in sections:
        body = cid.binary + data
        out.write(encode_varint(len(body)) + body)
    return out.getvalue()


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 0x01]) + data[1:]


class ServerThread:
    """An aiohttp application served from a thread with its own event loop."""

    def __init__(self, app: web.Application) -> None:
        self._loop = asyncio.new_event_loop()
        self._runner = web.AppRunner(app)
        started = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            self._loop.run_until_complete(site.start())
            sockets = self._runner.addresses
            self.port = sockets[0][1]
            started.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        started.wait(10)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        async def stop() -> None:
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


class FakeGateway(ServerThread):
    """A trustless gateway over ``blocks``, honest unless ``lie`` names one of :data:`LIES`;
    ``die_after`` N blocks it resets every later connection; ``serves_cars=False`` answers
    406 to CAR requests, as a blocks-only gateway does; ``delay`` seconds before every
    answer make it slow but honest. ``requests`` counts
    ``"<raw|car> <cid>"``."""

    def __init__(
        self,
        blocks: MemoryBlockstore,
        *,
        lie: str | None = None,
        other: MemoryBlockstore | None = None,
        other_root: CID | None = None,
        die_after: int | None = None,
        stall_seconds: float = 5.0,
        serves_cars: bool = True,
        delay: float = 0.0,
    ) -> None:
        assert lie is None or lie in LIES
        self.delay = delay
        self.blocks = blocks
        self.lie = lie
        self.other = other
        self.other_root = other_root
        self.die_after = die_after
        self.stall_seconds = stall_seconds
        self.serves_cars = serves_cars
        self.served_blocks = 0
        self.requests: Counter[str] = Counter()
        app = web.Application()
        app.router.add_get("/ipfs/{cid}", self._handle)
        super().__init__(app)

    def _other_blocks(self) -> list[tuple[CID, bytes]]:
        assert self.other is not None and self.other_root is not None
        return list(dfs_blocks(self.other, self.other_root))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        cid = CID.parse(request.match_info["cid"])
        accept = request.headers.get("Accept", "")
        car = "application/vnd.ipld.car" in accept or request.query.get("format") == "car"
        self.requests[f"{'car' if car else 'raw'} {cid}"] += 1
        if self.delay:  # slow but honest
            await asyncio.sleep(self.delay)
        if self.lie == "stall":
            await asyncio.sleep(self.stall_seconds)
        if self.lie == "html":
            return web.Response(text="<html><body>502 Bad Gateway</body></html>",
                                content_type="text/html")  # fmt: skip
        if not self.blocks.has(cid):
            return web.Response(status=404, text="not found")
        if car and not self.serves_cars:  # a blocks-only trustless gateway
            return web.Response(status=406, text="only application/vnd.ipld.raw here")
        if car:
            return await self._car(request, cid)
        if self.die_after is not None and self.served_blocks >= self.die_after:
            assert request.transport is not None
            request.transport.close()
            return web.Response(status=503)
        self.served_blocks += 1
        data = self.blocks.get(cid)
        if self.lie == "flipped-block":
            data = _flip(data)
        elif self.lie == "other-dag-block":
            data = self._other_blocks()[-1][1]
        return web.Response(body=data, content_type="application/vnd.ipld.raw")

    async def _car(self, request: web.Request, cid: CID) -> web.StreamResponse:
        sections = list(dfs_blocks(self.blocks, cid))
        roots = [cid]
        if self.lie == "car-flipped" and len(sections) > 1:
            sections[1] = (sections[1][0], _flip(sections[1][1]))
        elif self.lie == "car-other-dag":
            sections = sections[:1] + self._other_blocks()[1:]
        elif self.lie == "car-extra":
            sections.insert(1, self._other_blocks()[-1])
        elif self.lie == "car-wrong-root":
            assert self.other_root is not None
            roots = [self.other_root]
        body = car_bytes(roots, sections)
        if self.lie == "car-truncated":
            body = body[: len(body) // 2]
        response = web.StreamResponse(
            headers={"Content-Type": "application/vnd.ipld.car; version=1; order=dfs; dups=n"}
        )
        await response.prepare(request)
        if self.die_after is not None:
            # the connection drops after the gateway's N-th block, in the middle of a section
            offset = len(car_bytes(roots, []))
            await response.write(body[:offset])
            for section_cid, data in sections:
                if self.served_blocks >= self.die_after:
                    await response.write(body[offset : offset + 3])
                    assert request.transport is not None
                    request.transport.close()
                    return response
                size = len(encode_varint(len(section_cid.binary) + len(data)))
                size += len(section_cid.binary) + len(data)
                await response.write(body[offset : offset + size])
                offset += size
                self.served_blocks += 1
            await response.write_eof()
            return response
        await response.write(body)
        await response.write_eof()
        return response


class FakeKubo(ServerThread):
    """kubo's RPC API for block/get, dag/export and dag/import over ``blocks`` (imported CARs
    are added to it); ``calls`` records ``(command, arg)``."""

    def __init__(self, blocks: MemoryBlockstore) -> None:
        self.blocks = blocks
        self.calls: list[tuple[str, str]] = []
        self.pinned: list[CID] = []
        app = web.Application(client_max_size=256 * 1024 * 1024)
        for command in ("block/get", "dag/export", "dag/import"):
            app.router.add_route("*", f"/api/v0/{command}", self._handle)
        super().__init__(app)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        command = request.path.removeprefix("/api/v0/")
        if request.method != "POST":
            return web.Response(status=405, text=f"{request.method} /api/v0/{command} not allowed")
        arg = request.query.get("arg", "")
        self.calls.append((command, arg))
        if command == "dag/import":
            return await self._import(request)
        try:
            cid = CID.parse(arg)
        except Exception:
            return web.json_response({"Message": "invalid cid", "Code": 0, "Type": "error"},
                                     status=500)  # fmt: skip
        if not self.blocks.has(cid):
            return web.json_response({"Message": "block was not found locally (offline)",
                                      "Code": 0, "Type": "error"}, status=500)  # fmt: skip
        if command == "block/get":
            return web.Response(body=self.blocks.get(cid), content_type="text/plain")
        body = car_bytes([cid], list(dfs_blocks(self.blocks, cid)))
        return web.Response(body=body, content_type="application/vnd.ipld.car")

    async def _import(self, request: web.Request) -> web.StreamResponse:
        # the multipart body is split here by hand: it also checks the framing byte for byte
        content_type = request.headers.get("Content-Type", "")
        if not content_type.startswith("multipart/form-data; boundary="):
            return web.json_response({"Message": "expected multipart/form-data", "Code": 0,
                                      "Type": "error"}, status=400)  # fmt: skip
        boundary = content_type.split("boundary=", 1)[1].encode()
        body = await request.read()
        parts = body.split(b"--" + boundary)
        assert parts[0] == b"" and parts[-1] == b"--\r\n", "malformed multipart framing"
        answers: list[dict[str, Any]] = []
        for part in parts[1:-1]:
            head, _, payload = part.partition(b"\r\n\r\n")
            if b'name="file"' not in head:
                continue
            assert payload.endswith(b"\r\n")
            with CarReader(io.BytesIO(payload[:-2])) as car:
                roots = car.roots
                for cid, data in car:
                    self.blocks.put(cid, data)
            for root in roots:
                self.pinned.append(root)
                answers.append({"Root": {"Cid": {"/": str(root)}, "PinErrorMsg": ""}})
        text = "".join(json.dumps(answer) + "\n" for answer in answers)
        return web.Response(text=text, content_type="application/json")
