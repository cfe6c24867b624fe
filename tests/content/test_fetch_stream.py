"""The receiving side of a fetch, byte by byte: CAR and block bodies framed every way HTTP/1.1
allows (chunked with odd chunk sizes, extensions and trailers; Content-Length; read until
close), cut off mid-chunk, malformed, or trickled. CAR leaves are received straight into
recycled buffers and the chunked framing is decoded by the fetch itself, so these check that
what lands on disk is exactly the DAG and that a broken or crawling body is a GatewayError
(the next gateway then serves), never a hang or a wrong byte."""

from __future__ import annotations

import random
import socketserver
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipfs_accelerate.content import (
    CID,
    RAW,
    MemoryBlockstore,
    PBLink,
    UnixFSData,
    UnixFSType,
    decode_node,
    decode_unixfs,
    encode_node,
    encode_unixfs,
    fetch,
    import_directory,
)
from ipfs_accelerate.errors import DagFormatError, FetchError, GatewayError
from tests.content.fake_gateways import FakeGateway, car_bytes, dfs_blocks

CHUNK = 1024
LEAVES = 70  # several times the leaves a fetch keeps in flight: the buffers are reused


class _Dag:
    """A folder holding one file of ``LEAVES`` raw leaves: a fetch asks for the folder's
    node as a block, then for the file's sub-DAG as a CAR."""

    def __init__(self, directory: Path) -> None:
        self.data = random.Random(7).randbytes(LEAVES * CHUNK - 3)
        (directory / "tree").mkdir()
        (directory / "tree" / "model.bin").write_bytes(self.data)
        self.blocks = MemoryBlockstore()
        imported = import_directory(directory / "tree", chunk_size=CHUNK,
                                    blockstore=self.blocks.put)  # fmt: skip
        self.root: CID = imported.root.cid
        self.file: CID = imported.cid_of("model.bin")

    def car(self, cid: CID) -> bytes:
        return car_bytes([cid], list(dfs_blocks(self.blocks, cid)))


def _chunked(body: bytes, sizes: list[int]) -> Iterator[bytes]:
    """``body`` as HTTP/1.1 chunks of the given sizes (cycled), with an extension on every
    third chunk, ending with a trailer."""
    offset = index = 0
    while offset < len(body):
        size = sizes[index % len(sizes)]
        part = body[offset : offset + size]
        extension = b";note=x" if index % 3 == 0 else b""
        yield b"%x%s\r\n%s\r\n" % (len(part), extension, part)
        offset += size
        index += 1
    yield b"0\r\nX-Checked: yes\r\n\r\n"


class _RawGateway(socketserver.ThreadingTCPServer):
    """A trustless gateway written at the socket, so the framing of each answer is exactly
    as scripted: ``mode`` is "chunked", "length", "close" (no framing: the body ends when
    the connection does), "cut" (chunked, the connection closed inside a leaf's chunk),
    "bad-size" (a chunk size that is not hex), "trickle" (the CAR's leaves one byte at a
    time, 40 ms apart: one leaf takes 40 s) or "trickle-size" (chunked, the size line of the
    first leaf's chunk, zero-padded to 4,000 digits, one byte at a time: 160 s)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, dag: _Dag, mode: str) -> None:
        self.dag, self.mode = dag, mode
        self.asked: list[str] = []
        super().__init__(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server_address[1]}"

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Handler(socketserver.StreamRequestHandler):
    server: _RawGateway

    def handle(self) -> None:
        request = self.rfile.readline().decode("latin-1").split()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
            pass
        path = request[1]
        car = "format=car" in path
        cid = CID.parse(path.split("/ipfs/", 1)[1].split("?", 1)[0])
        self.server.asked.append(f"{'car' if car else 'raw'} {cid}")
        body = self.server.dag.car(cid) if car else self.server.dag.blocks.get(cid)
        media = "application/vnd.ipld.car" if car else "application/vnd.ipld.raw"
        mode = self.server.mode
        head = f"HTTP/1.1 200 OK\r\nContent-Type: {media}\r\nConnection: close\r\n"
        try:
            if mode == "length":
                self.wfile.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body)
            elif mode == "close":
                self.wfile.write(f"{head}\r\n".encode() + body)
            elif mode == "trickle" and car:
                self.wfile.write(f"{head}Content-Length: {len(body)}\r\n\r\n".encode())
                # fast up to a few bytes into the first leaf, which then trickles
                sections = list(dfs_blocks(self.server.dag.blocks, cid))
                cut = len(car_bytes([cid], sections[:1])) + 50
                self.wfile.write(body[:cut])
                for byte in body[cut:]:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.04)
            elif mode == "trickle-size" and car:
                self.wfile.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
                sections = list(dfs_blocks(self.server.dag.blocks, cid))
                cut = len(car_bytes([cid], sections[:1]))
                self.wfile.write(b"%x\r\n%s\r\n" % (cut, body[:cut]))
                self.wfile.flush()
                for byte in b"%04000x\r\n" % (len(body) - cut):
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.04)
            else:
                self.wfile.write(f"{head}Transfer-Encoding: chunked\r\n\r\n".encode())
                if mode == "bad-size" and car:
                    self.wfile.write(b"zz\r\n")
                    return
                framed = b"".join(_chunked(body, [1, 2, 3, 7, 500, 4000, 33333]))
                if mode == "cut" and car:
                    framed = framed[: len(framed) // 2]  # inside a chunk of a leaf
                self.wfile.write(framed)
        except OSError:
            pass  # the client gave up (trickle)


@pytest.fixture
def dag(tmp_path: Path) -> _Dag:
    return _Dag(tmp_path)


@pytest.mark.parametrize("mode", ["chunked", "length", "close"])
def test_every_framing_of_a_car_lands_exactly_the_file(
    dag: _Dag, tmp_path: Path, mode: str
) -> None:
    gateway = _RawGateway(dag, mode)
    try:
        result = fetch(dag.root, tmp_path / "out", gateways=[gateway.url],
                       cache_dir=tmp_path / "cache", retries=0)  # fmt: skip
    finally:
        gateway.close()
    assert result.errors == ()
    assert (tmp_path / "out").joinpath("model.bin").read_bytes() == dag.data
    # the folder as a block, the file's leaves in its CAR
    assert gateway.asked == [f"raw {dag.root}", f"car {dag.file}"]


@pytest.mark.parametrize("mode", ["cut", "bad-size"])
def test_a_broken_chunked_car_is_a_gateway_error_and_the_next_gateway_serves(
    dag: _Dag, tmp_path: Path, mode: str
) -> None:
    broken = _RawGateway(dag, mode)
    good = FakeGateway(dag.blocks)
    try:
        result = fetch(dag.root, tmp_path / "out", gateways=[broken.url, good.url],
                       cache_dir=tmp_path / "cache", retries=0, strategy="ordered")  # fmt: skip
    finally:
        broken.close()
        good.close()
    assert (tmp_path / "out").joinpath("model.bin").read_bytes() == dag.data
    (error,) = result.errors
    assert isinstance(error, GatewayError) and broken.url in str(error)
    assert f"CAR for {dag.file}" in str(error)
    assert result.sources == (f"gateway {broken.url}", f"gateway {good.url}")


@pytest.mark.parametrize("mode", ["trickle", "trickle-size"])
def test_a_car_whose_leaves_or_framing_trickle_is_given_up_on(
    dag: _Dag, tmp_path: Path, mode: str
) -> None:
    """A leaf received straight into a buffer, and the chunked framing around it, are read
    one socket read at a time, so the rate is still checked while they come: 25 bytes a
    second is 'too slow' after the timeout's span (1 s), not waited on for the 40 s a leaf
    or the 160 s a padded chunk-size line would take."""
    slow = _RawGateway(dag, mode)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(fetch(dag.root, tmp_path / "out", gateways=[slow.url],
                                 cache_dir=tmp_path / "cache", timeout=1.0, retries=0))  # fmt: skip
        except FetchError as exc:
            outcome.append(exc)

    worker = threading.Thread(target=run, daemon=True)
    try:
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "the fetch waited on a trickling CAR"
    finally:
        slow.close()
    (failure,) = outcome
    assert isinstance(failure, FetchError)
    assert "too slow" in str(failure) and not (tmp_path / "out").exists()


def test_decoded_nodes_are_remembered_by_their_exact_bytes_only() -> None:
    """A file's node is decoded several times by one fetch (1,024 links take milliseconds
    each time), so small nodes are remembered; never for other bytes, never a failure."""
    links = [PBLink(CID.for_block(bytes([n % 256, n // 256]), RAW), "", 2) for n in range(1024)]
    unixfs = encode_unixfs(UnixFSData(UnixFSType.FILE, blocksizes=(2,) * 1024))
    block = encode_node(unixfs, links)
    first = decode_node(block)
    assert decode_node(bytes(block)) is first  # equal bytes, another object: remembered
    assert decode_unixfs(first.data or b"") is decode_unixfs(bytes(first.data or b""))
    other = encode_node(unixfs, [*links[:-1], PBLink(CID.for_block(b"x", RAW), "", 2)])
    assert decode_node(other).links[-1].cid == CID.for_block(b"x", RAW)
    assert decode_node(block).links[-1].cid == links[-1].cid
    broken = block[:-1]
    for _ in range(2):  # a failure is raised every time, not remembered as anything
        with pytest.raises(DagFormatError):
            decode_node(broken)
    big = encode_node(encode_unixfs(UnixFSData(UnixFSType.FILE, data=bytes(70_000))))
    assert decode_node(big) == decode_node(big) and decode_node(big) is not decode_node(big)
