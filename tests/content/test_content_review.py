"""Hostile DAGs (built block by block here) against the exporter and the fetcher: names that
could escape or collide, HAMTs that lie about their slots, files whose links repeat one
block into a bomb. Each is refused by name and writes nothing outside the destination."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from ipfs_accelerate.content import (
    CID,
    DAG_PB,
    RAW,
    DirectoryLimits,
    FilesystemBlockstore,
    MemoryBlockstore,
    PBLink,
    UnixFSData,
    UnixFSType,
    encode_node,
    encode_unixfs,
    fetch,
    iter_directory,
    walk,
)
from ipfs_accelerate.content._hamt import MURMUR3_X64_64
from ipfs_accelerate.errors import ContentLimitError, DagFormatError


class _Blocks:
    """Blocks written both to a MemoryBlockstore and to a fetch cache (so an offline fetch
    exports them)."""

    def __init__(self, cache: Path) -> None:
        self.memory = MemoryBlockstore()
        self.cache = cache
        self.disk = FilesystemBlockstore(cache / "blocks")

    def put(self, data: bytes, codec: int) -> CID:
        cid = CID.for_block(data, codec)
        self.memory.put(cid, data)
        self.disk.put(cid, data)
        return cid

    def raw(self, data: bytes) -> CID:
        return self.put(data, RAW)

    def directory(self, links: list[tuple[str, CID]]) -> CID:
        pb = [PBLink(cid, name, 1) for name, cid in links]
        return self.put(encode_node(encode_unixfs(UnixFSData(UnixFSType.DIRECTORY)), pb), DAG_PB)

    def shard(self, bitfield: int, links: list[tuple[str, CID]], fanout: int = 256) -> CID:
        data = UnixFSData(
            UnixFSType.HAMT_SHARD,
            data=bitfield.to_bytes(max(1, (bitfield.bit_length() + 7) // 8), "big"),
            hash_type=MURMUR3_X64_64,
            fanout=fanout,
        )
        pb = [PBLink(cid, name, 1) for name, cid in links]
        return self.put(encode_node(encode_unixfs(data), pb), DAG_PB)

    def file(self, links: list[tuple[CID, int]]) -> CID:
        data = UnixFSData(
            UnixFSType.FILE, filesize=sum(s for _, s in links),
            blocksizes=tuple(s for _, s in links),
        )  # fmt: skip
        pb = [PBLink(cid, "", size) for cid, size in links]
        return self.put(encode_node(encode_unixfs(data), pb), DAG_PB)


def _fetch_offline(blocks: _Blocks, root: CID, dest: Path, **kwargs: object) -> object:
    return fetch(root, dest, cache_dir=blocks.cache, offline=True, **kwargs)  # type: ignore[arg-type]


def _nothing_outside(tmp_path: Path, dest: Path) -> None:
    """Only the cache and (possibly) ``dest`` exist under tmp_path: no staging folder left,
    nothing written beside them."""
    names = {p.name for p in tmp_path.iterdir()}
    assert names <= {"cache", dest.name}, names


@pytest.mark.parametrize("name", ["a\0b", "\0"])
def test_a_directory_entry_name_with_a_nul_byte_is_a_dag_format_error(
    tmp_path: Path, name: str
) -> None:
    blocks = _Blocks(tmp_path / "cache")
    root = blocks.directory([(name, blocks.raw(b"x"))])
    with pytest.raises(DagFormatError, match="unsafe"):
        list(walk(blocks.memory, root))
    with pytest.raises(DagFormatError, match="unsafe"):
        _fetch_offline(blocks, root, tmp_path / "out")
    _nothing_outside(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("second", ["file", "directory"])
def test_a_directory_naming_one_entry_twice_is_refused(tmp_path: Path, second: str) -> None:
    blocks = _Blocks(tmp_path / "cache")
    first = blocks.raw(b"first")
    other = blocks.raw(b"second") if second == "file" else blocks.directory(
        [("inner", blocks.raw(b"inner"))]
    )
    root = blocks.directory([("model.bin", first), ("model.bin", other)])
    with pytest.raises(DagFormatError, match="model.bin"):
        list(walk(blocks.memory, root))
    with pytest.raises(DagFormatError, match="model.bin"):
        _fetch_offline(blocks, root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _nothing_outside(tmp_path, tmp_path / "out")


def _hamt_cases(blocks: _Blocks) -> dict[str, CID]:
    leaf = blocks.raw(b"weights")
    inner = blocks.shard(1 << 0x11, [("11inner.bin", leaf)])
    return {
        # a slot label that is not hex
        "not hex": blocks.shard(1, [("ZZmodel.bin", leaf)]),
        # a slot outside the node's fanout (fanout 8: slots 0-7)
        "outside the fanout": blocks.shard(1 << 1, [("9model.bin", leaf)], fanout=8),
        # an entry in a slot the bitfield says is empty
        "bitfield": blocks.shard(1 << 0x02, [("03model.bin", leaf)]),
        # one sub-shard linked from many slots: its entries listed once per slot, and nested
        # a few levels that is fanout^depth entries from a handful of blocks
        "repeated": blocks.shard(
            (1 << 0x10) | (1 << 0x20), [("10", inner), ("20", inner)]
        ),
        # a hash function other than murmur3-x64-64
        "hash": blocks.put(
            encode_node(
                encode_unixfs(UnixFSData(UnixFSType.HAMT_SHARD, data=b"\x01", hash_type=0x12,
                                         fanout=256)),
                [PBLink(leaf, "00model.bin", 1)],
            ),
            DAG_PB,
        ),
        # a fanout far beyond any real HAMT's
        "fanout": blocks.shard(1, [("0000000000model.bin", leaf)], fanout=1 << 40),
    }


@pytest.mark.parametrize(
    "case", ["not hex", "outside the fanout", "bitfield", "repeated", "hash", "fanout"]
)
def test_a_hamt_that_lies_about_its_slots_is_refused(tmp_path: Path, case: str) -> None:
    blocks = _Blocks(tmp_path / "cache")
    root = _hamt_cases(blocks)[case]
    with pytest.raises(DagFormatError, match=str(root)):
        list(iter_directory(blocks.memory, root))
    with pytest.raises(DagFormatError):
        _fetch_offline(blocks, root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _nothing_outside(tmp_path, tmp_path / "out")


def test_an_honest_hand_built_hamt_is_listed(tmp_path: Path) -> None:
    """The checks above refuse only what lies: the same shapes, told truthfully, list."""
    blocks = _Blocks(tmp_path / "cache")
    leaf = blocks.raw(b"weights")
    inner = blocks.shard(1 << 0x11, [("11inner.bin", leaf)])
    root = blocks.shard((1 << 0x02) | (1 << 0x10), [("02model.bin", leaf), ("10", inner)])
    assert list(iter_directory(blocks.memory, root)) == [("model.bin", leaf), ("inner.bin", leaf)]


def _file_bomb(blocks: _Blocks, fan: int, levels: int) -> tuple[CID, int]:
    """A file whose nodes link one child ``fan`` times, ``levels`` deep, over a 1-byte leaf:
    ``fan**levels`` bytes declared (and honestly held) by ``levels + 1`` blocks."""
    cid, size = blocks.raw(b"\x07"), 1
    for _ in range(levels):
        cid, size = blocks.file([(cid, size)] * fan), size * fan
    return cid, size


def test_a_file_declaring_more_than_the_limit_is_refused_before_it_is_laid_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A handful of blocks can declare a file of fan**levels pieces: the limit is checked on
    the root's declared size before any piece of it is laid out (which was a list of every
    piece, built before the limit was looked at)."""
    from ipfs_accelerate.content import _output as output_module

    blocks = _Blocks(tmp_path / "cache")
    root, size = _file_bomb(blocks, 40, 3)
    laid_out = 0
    real_piece = output_module._Piece

    def counting_piece(*args: object) -> object:
        nonlocal laid_out
        laid_out += 1
        return real_piece(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(output_module, "_Piece", counting_piece)
    with pytest.raises(ContentLimitError, match="max_bytes"):
        _fetch_offline(blocks, root, tmp_path / "out",
                       limits=DirectoryLimits(max_bytes=size - 1))  # fmt: skip
    assert laid_out == 0
    assert not (tmp_path / "out").exists()
    _nothing_outside(tmp_path, tmp_path / "out")


def test_a_deduplicated_file_within_the_limit_is_written_whole(tmp_path: Path) -> None:
    """Repeated links are legitimate UnixFS (deduplication): within the limits the file is
    written in bounded batches, byte for byte."""
    blocks = _Blocks(tmp_path / "cache")
    root, size = _file_bomb(blocks, 23, 3)
    result = _fetch_offline(blocks, root, tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == b"\x07" * size
    assert not result.is_directory  # type: ignore[attr-defined]


class _AuthGateway:
    """A trustless gateway on loopback behind HTTP basic auth, serving one raw block; it
    records the Authorization header and the Host it was asked with."""

    def __init__(self, cid: CID, data: bytes, credentials: str) -> None:
        import base64
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        expected = "Basic " + base64.b64encode(credentials.encode()).decode()
        self.seen: list[tuple[str | None, str | None]] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append((self.headers.get("Authorization"), self.headers.get("Host")))
                if self.headers.get("Authorization") != expected:
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = data if self.path.startswith(f"/ipfs/{cid}") else b""
                self.send_response(200 if body else 404)
                self.send_header("Content-Type", "application/vnd.ipld.raw")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_gateway_credentials_are_sent_as_basic_auth_and_never_shown(tmp_path: Path) -> None:
    """``https://user:pass@host`` is a gateway behind basic auth: the credentials go in an
    Authorization header (not into the host name, where they reached the DNS resolver and
    the exception text), and appear in no error, FetchResult or its repr."""
    from ipfs_accelerate.errors import FetchError

    data = b"checkpoint bytes"
    cid = CID.for_block(data, RAW)
    gateway = _AuthGateway(cid, data, "alice:s3cret-pw")
    try:
        good = f"http://alice:s3cret-pw@127.0.0.1:{gateway.port}"
        result = fetch(cid, tmp_path / "out", gateways=[good], cache_dir=tmp_path / "cache",
                       retries=0)  # fmt: skip
        assert (tmp_path / "out").read_bytes() == data
        assert "s3cret" not in repr(result) and "alice" not in repr(result)
        assert gateway.seen[-1][1] == f"127.0.0.1:{gateway.port}"

        bad = f"http://alice:wr0ng-s3cret@127.0.0.1:{gateway.port}"
        other = CID.for_block(b"not cached", RAW)
        with pytest.raises(FetchError) as caught:
            fetch(other, tmp_path / "out2", gateways=[bad], cache_dir=tmp_path / "cache",
                  retries=0)  # fmt: skip
        shown = str(caught.value) + repr(caught.value) + "".join(
            str(e) + repr(e) for e in caught.value.errors
        )
        assert "HTTP 401" in shown
        assert "s3cret" not in shown and "alice" not in shown
    finally:
        gateway.close()


def test_publish_to_a_kubo_rpc_url_with_credentials(tmp_path: Path) -> None:
    """``--rpc http://user:pass@host:5001`` reaches the node (credentials as basic auth,
    not as part of the host name)."""
    from ipfs_accelerate.content import import_directory, publish
    from tests.content.fake_gateways import FakeKubo

    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "bert"}')
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    kubo = FakeKubo(MemoryBlockstore())
    try:
        url = kubo.url.replace("http://", "http://alice:s3cret-pw@")
        result = publish(directory, rpc=url)
        assert result.imported and kubo.pinned == [import_directory(directory).root.cid]
        assert "s3cret" not in repr(result)
    finally:
        kubo.close()


def test_a_corrupt_copies_index_is_set_aside_not_fatal(tmp_path: Path) -> None:
    """The copies index is an optimisation (every copy is hashed when used), written without
    fsync: after a crash that leaves it unreadable a fetch still works, and records again."""
    import random

    from ipfs_accelerate.content import import_directory
    from tests.content.fake_gateways import FakeGateway

    source = tmp_path / "src"
    source.mkdir()
    (source / "a.bin").write_bytes(random.Random(5).randbytes(5000))
    blocks = MemoryBlockstore()
    root = import_directory(source, chunk_size=1024, blockstore=blocks.put).root.cid
    index = tmp_path / "cache" / "blocks" / "copies.sqlite"
    index.parent.mkdir(parents=True)
    index.write_bytes(b"this is not a database, a crash left it half written" * 100)
    gateway = FakeGateway(blocks)
    try:
        first = fetch(root, tmp_path / "out", gateways=[gateway.url], cache_dir=tmp_path / "cache")
        assert (first.path / "a.bin").read_bytes() == (source / "a.bin").read_bytes()
        # the leaves written into the output were recorded in a fresh index: a second fetch
        # into another place needs no request
        again = fetch(root, tmp_path / "out2", gateways=[gateway.url],
                      cache_dir=tmp_path / "cache")  # fmt: skip
        assert again.requests == 0
        assert (again.path / "a.bin").read_bytes() == (source / "a.bin").read_bytes()
    finally:
        gateway.close()


class _CarGateway:
    """A gateway on loopback answering every CAR request with ``car``, and raw requests
    with the blocks of ``raw``."""

    def __init__(self, car: bytes, raw: MemoryBlockstore) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                is_car = "format=car" in self.path
                cid = CID.parse(self.path.split("/")[2].split("?")[0])
                body = car if is_car else raw.get(cid) if raw.has(cid) else b""
                self.send_response(200 if body else 404)
                kind = "car" if is_car else "raw"
                self.send_header("Content-Type", f"application/vnd.ipld.{kind}")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_tiny_unclaimed_blocks_in_a_car_are_bounded_by_count_not_just_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Blocks that arrive before any parent claims them wait in memory; each costs far more
    than its bytes (its CID, the dict entry), so a CAR of millions of 1-byte blocks must hit
    the bound as surely as one of a few large ones. Here the bound is lowered to show it:
    2,000 blocks of 2 bytes (4 KB of data) exceed a 64 KB allowance."""
    from ipfs_accelerate.content import _fetch as fetch_module
    from ipfs_accelerate.errors import FetchError, UntrustedBlockError
    from tests.content.fake_gateways import car_bytes

    monkeypatch.setattr(fetch_module, "_MAX_PENDING_BYTES", 64 * 1024)
    blocks = _Blocks(tmp_path / "unused")
    leaf = blocks.raw(b"the file")
    sub = blocks.directory([("a", leaf)])
    root = blocks.directory([("sub", sub)])
    junk = [(CID.for_block(n.to_bytes(2, "big"), RAW), n.to_bytes(2, "big")) for n in range(2000)]
    gateway = _CarGateway(car_bytes([sub], junk), blocks.memory)
    try:
        with pytest.raises(FetchError) as caught:
            fetch(root, tmp_path / "out", gateways=[gateway.url], cache_dir=tmp_path / "cache",
                  retries=0)  # fmt: skip
    finally:
        gateway.close()
    (error,) = caught.value.errors
    assert isinstance(error, UntrustedBlockError)
    assert "no verified block links to" in str(error), str(error)


@pytest.mark.parametrize("change", ["edited", "added", "removed"])
def test_a_cached_copy_changed_on_disk_is_not_served_by_cid(tmp_path: Path, change: str) -> None:
    """``from_pretrained("ipfs://...")`` loads from the cache's copy of the CID. A copy
    changed since it was written from verified blocks (a model saved over the folder it
    was loaded from) is rewritten from verified blocks, not served as that CID."""
    import random

    from ipfs_accelerate.content import import_directory
    from tests.content.fake_gateways import FakeGateway

    source = tmp_path / "src"
    source.mkdir()
    (source / "model.safetensors").write_bytes(random.Random(3).randbytes(6000))
    (source / "config.json").write_text('{"model_type": "bert"}')
    blocks = MemoryBlockstore()
    root = import_directory(source, chunk_size=1024, blockstore=blocks.put).root.cid
    gateway = FakeGateway(blocks)
    try:
        first = fetch(root, gateways=[gateway.url], cache_dir=tmp_path / "cache")
        unchanged = fetch(root, gateways=[gateway.url], cache_dir=tmp_path / "cache")
        assert unchanged.requests == 0 and unchanged.path == first.path
        if change == "edited":
            with (first.path / "model.safetensors").open("r+b") as stream:
                stream.write(b"\xff\xff\xff\xff")
        elif change == "added":
            (first.path / "model.safetensors.index.json").write_text("{}")
        else:
            (first.path / "config.json").unlink()
        again = fetch(root, gateways=[gateway.url], cache_dir=tmp_path / "cache")
        assert again.path == first.path
        for name in ("model.safetensors", "config.json"):
            assert (again.path / name).read_bytes() == (source / name).read_bytes()
        assert sorted(p.name for p in again.path.iterdir()) == [
            "config.json", "model.safetensors"
        ]
        # and the rewritten copy is served again without a request
        assert fetch(root, gateways=[gateway.url], cache_dir=tmp_path / "cache").requests == 0
    finally:
        gateway.close()


@pytest.mark.parametrize("damage", ["changed", "emptied"])
def test_a_damaged_cached_block_is_reported_once_then_fetched_again(
    tmp_path: Path, damage: str
) -> None:
    """A block file damaged on disk (changed, or left empty by a crash before the data
    reached the disk: blocks are renamed into place without fsync) is reported, not served,
    and dropped, so the next fetch asks for it again instead of failing for ever."""
    import random

    from ipfs_accelerate.content import import_directory
    from ipfs_accelerate.errors import BlockVerificationError
    from tests.content.fake_gateways import FakeGateway

    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "sub" / "w.bin").write_bytes(random.Random(9).randbytes(5000))
    blocks = MemoryBlockstore()
    imported = import_directory(source, chunk_size=1024, blockstore=blocks.put)
    gateway = FakeGateway(blocks)
    try:
        fetch(imported.root.cid, tmp_path / "one", gateways=[gateway.url],
              cache_dir=tmp_path / "c")  # fmt: skip
        node = imported.cid_of("sub/w.bin")  # a dag-pb node, kept in the block cache
        path = FilesystemBlockstore(tmp_path / "c" / "blocks").path_of(node)
        path.write_bytes(b"" if damage == "emptied" else path.read_bytes()[:-1] + b"\0")
        with pytest.raises(BlockVerificationError, match=str(node)):
            fetch(imported.root.cid, tmp_path / "two", gateways=[gateway.url],
                  cache_dir=tmp_path / "c")  # fmt: skip
        assert not (tmp_path / "two").exists()
        third = fetch(imported.root.cid, tmp_path / "three", gateways=[gateway.url],
                      cache_dir=tmp_path / "c")  # fmt: skip
        assert third.requests >= 1
        assert (tmp_path / "three" / "sub" / "w.bin").read_bytes() == (
            source / "sub" / "w.bin"
        ).read_bytes()
    finally:
        gateway.close()


def test_a_path_through_a_malformed_hamt_names_the_fault_not_a_missing_directory(
    tmp_path: Path,
) -> None:
    """Resolving ``ipfs://<root>/name`` through a HAMT that breaks the rules reports the
    DagFormatError (naming the block), not "is not a directory"."""
    from ipfs_accelerate.errors import ContentPathError

    blocks = _Blocks(tmp_path / "cache")
    root = _hamt_cases(blocks)["bitfield"]
    with pytest.raises(DagFormatError, match=str(root)) as caught:
        fetch(f"ipfs://{root}/model.bin", tmp_path / "out", cache_dir=blocks.cache,
              offline=True)  # fmt: skip
    assert not isinstance(caught.value, ContentPathError)
    # a file on the way is still a path error
    leaf = blocks.raw(b"x")
    flat = blocks.directory([("f", leaf)])
    with pytest.raises(ContentPathError, match="is a file|not a directory"):
        fetch(f"ipfs://{flat}/f/g", tmp_path / "out", cache_dir=blocks.cache, offline=True)


def test_staging_folders_of_dead_fetches_are_swept_live_ones_kept(tmp_path: Path) -> None:
    """A fetch killed mid-way (SIGKILL, a crash) leaves its staging folder, which may hold
    most of a multi-GB checkpoint, beside the destination. The next fetch there removes
    those whose owner is gone (each fetch holds a lock on its own for its lifetime) and
    leaves those of fetches still running alone."""
    import fcntl
    import os

    blocks = _Blocks(tmp_path / "cache")
    root = blocks.directory([("f", blocks.raw(b"content"))])
    content = tmp_path / "cache" / "content"
    content.mkdir(parents=True)
    dead = content / ".ipfs-fetch.partial-dead"
    (dead / "files").mkdir(parents=True)
    (dead / "files" / "0").write_bytes(b"\0" * 4096)
    (dead / ".owner.lock").write_bytes(b"")
    alive = content / ".ipfs-fetch.partial-alive"
    alive.mkdir()
    (alive / ".owner.lock").write_bytes(b"")
    held = os.open(alive / ".owner.lock", os.O_RDWR)
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result = fetch(root, cache_dir=blocks.cache, offline=True)
        assert (result.path / "f").read_bytes() == b"content"
        assert not dead.exists()
        assert alive.exists()
    finally:
        os.close(held)
    assert sorted(p.name for p in content.iterdir() if p.name.startswith(".ipfs-fetch")) == [
        ".ipfs-fetch.partial-alive"
    ]


def test_a_sweep_between_a_lock_files_creation_and_its_locking_keeps_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two fetches into one cache: the second's sweep may run while the first has created
    its staging folder's lock file but not locked it yet. The lock file must not be
    visible unlocked, or the sweep takes the lock itself and deletes a live fetch's folder
    (CI saw the first fetch then fail with EAGAIN)."""
    import fcntl
    import os
    import tempfile

    from ipfs_accelerate.content import _output

    parent = tmp_path / "content"
    parent.mkdir()
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=_output._STAGING_PREFIX))
    real_flock = fcntl.flock
    swept: list[bool] = []

    def sweep_first(fd: int, op: int) -> None:
        if not swept:  # the other fetch's sweep runs in the window, once
            swept.append(True)
            _output._sweep_dead_stagings(parent)
        real_flock(fd, op)

    monkeypatch.setattr(_output.fcntl, "flock", sweep_first)
    owner = _output._claim_staging(staging)
    try:
        assert swept and staging.is_dir()
        monkeypatch.setattr(_output.fcntl, "flock", real_flock)
        _output._sweep_dead_stagings(parent)  # locked now: kept
        assert staging.is_dir()
    finally:
        os.close(owner)
    _output._sweep_dead_stagings(parent)  # its owner gone: swept
    assert not staging.exists()


def test_cli_publish_does_not_print_the_rpc_credentials(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from ipfs_accelerate.cli import app
    from tests.content.fake_gateways import FakeKubo

    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "bert"}')
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    kubo = FakeKubo(MemoryBlockstore())
    try:
        url = kubo.url.replace("http://", "http://alice:s3cret-pw@")
        answer = CliRunner().invoke(app, ["models", "publish", str(directory), "--rpc", url])
    finally:
        kubo.close()
    assert answer.exit_code == 0, answer.output
    assert "imported into" in answer.output
    assert "s3cret" not in answer.output and "alice" not in answer.output


def test_a_recorded_copy_replaced_by_a_fifo_does_not_hang_the_cache(tmp_path: Path) -> None:
    """A leaf held as a copy in an earlier output is read from that file; once the file is
    replaced by a named pipe, reading it would block for ever. Only regular files are
    read: the copy is forgotten and the leaf fetched again."""
    import os
    import random
    import threading

    from ipfs_accelerate.content import import_directory
    from tests.content.fake_gateways import FakeGateway

    source = tmp_path / "src"
    source.mkdir()
    (source / "w.bin").write_bytes(random.Random(4).randbytes(3000))
    blocks = MemoryBlockstore()
    root = import_directory(source, chunk_size=1024, blockstore=blocks.put).root.cid
    gateway = FakeGateway(blocks)
    outcome: list[object] = []
    try:
        fetch(root, tmp_path / "one", gateways=[gateway.url], cache_dir=tmp_path / "c")
        (tmp_path / "one" / "w.bin").unlink()
        os.mkfifo(tmp_path / "one" / "w.bin")

        def again() -> None:
            try:
                outcome.append(fetch(root, tmp_path / "two", gateways=[gateway.url],
                                     cache_dir=tmp_path / "c"))  # fmt: skip
            except Exception as exc:  # reported below
                outcome.append(exc)

        worker = threading.Thread(target=again, daemon=True)
        worker.start()
        worker.join(60)
        assert not worker.is_alive(), "the fetch blocked reading a named pipe"
    finally:
        gateway.close()
        # a reader blocked on the pipe (the failure this guards against) is released
        with contextlib.suppress(OSError):  # no reader: nothing blocked
            os.close(os.open(tmp_path / "one" / "w.bin", os.O_WRONLY | os.O_NONBLOCK))
    (result,) = outcome
    assert not isinstance(result, Exception), result
    assert (tmp_path / "two" / "w.bin").read_bytes() == (source / "w.bin").read_bytes()


@pytest.mark.parametrize(
    "url", ["http://[::1", "http://127.0.0.1:99999999", "http://127.0.0.1:abc", "ftp://h"]
)
def test_a_malformed_gateway_url_is_a_configuration_error_naming_it(url: str) -> None:
    from ipfs_accelerate.content import configured_gateways
    from ipfs_accelerate.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="gateway"):
        configured_gateways([url])


def test_a_gateway_url_error_never_shows_its_credentials() -> None:
    from ipfs_accelerate.content import configured_gateways
    from ipfs_accelerate.errors import ConfigurationError

    for url in ["http://u:s3cret@[::1", "http://u:s3cret@h:99999999", "ftp://u:s3cret@h"]:
        with pytest.raises(ConfigurationError) as caught:
            configured_gateways([url])
        assert "s3cret" not in str(caught.value), caught.value


def test_a_directory_chain_deeper_than_the_walk_allows_is_a_dag_format_error(
    tmp_path: Path,
) -> None:
    """A chain of nested directories is a few dozen bytes a level: deep enough, walking it
    overflowed Python's stack (RecursionError) before any limit was looked at."""
    blocks = _Blocks(tmp_path / "cache")
    cid = blocks.raw(b"bottom")
    for _ in range(1500):
        cid = blocks.directory([("d", cid)])
    with pytest.raises(DagFormatError, match="deeper than"):
        list(walk(blocks.memory, cid))
    # the fetch's own limit (max_depth) still answers first when it is the lower one
    with pytest.raises(ContentLimitError, match="max_depth"):
        _fetch_offline(blocks, cid, tmp_path / "out")


def test_concurrent_fetches_of_one_cid_into_one_cache_all_get_it(tmp_path: Path) -> None:
    """Four fetches of the same CID into the same cache at once (as four processes loading
    one ipfs:// checkpoint would): each returns the cache's copy, complete and verified, and
    a later fetch serves it without a request."""
    import random
    from concurrent.futures import ThreadPoolExecutor

    from ipfs_accelerate.content import FetchResult, import_directory
    from tests.content.fake_gateways import FakeGateway

    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    rng = random.Random(11)
    (source / "model.safetensors").write_bytes(rng.randbytes(40_000))
    (source / "sub" / "config.json").write_text('{"model_type": "bert"}')
    blocks = MemoryBlockstore()
    root = import_directory(source, chunk_size=1024, blockstore=blocks.put).root.cid
    gateway = FakeGateway(blocks)
    try:
        def one(_: int) -> FetchResult:
            return fetch(root, gateways=[gateway.url], cache_dir=tmp_path / "cache")

        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(one, range(4)))
        assert len({r.path for r in results}) == 1
        for name in ("model.safetensors", "sub/config.json"):
            assert (results[0].path / name).read_bytes() == (source / name).read_bytes()
        assert fetch(root, gateways=[gateway.url], cache_dir=tmp_path / "cache").requests == 0
    finally:
        gateway.close()
    leftovers = [p.name for p in (tmp_path / "cache" / "content").iterdir()
                 if p.name.startswith(".ipfs-fetch")]  # fmt: skip
    assert leftovers == []


def test_a_name_the_filesystem_cannot_hold_is_a_content_error_naming_it(tmp_path: Path) -> None:
    """An entry name longer than the filesystem allows (255 bytes here) fails the write:
    a ContentError naming the fetch and the entry, not a bare OSError."""
    from ipfs_accelerate.errors import ContentError

    blocks = _Blocks(tmp_path / "cache")
    long_name = "w" * 300
    root = blocks.directory([(long_name, blocks.raw(b"x"))])
    with pytest.raises(ContentError, match=f"{long_name[:40]}.*File name too long"):
        _fetch_offline(blocks, root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _nothing_outside(tmp_path, tmp_path / "out")


def test_a_car_repeating_blocks_without_end_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Duplicates in a CAR are skipped unhashed, so a gateway repeating a valid block for
    ever kept a fetch reading for ever (no read ever times out). Repeated bytes now count
    against the same bound as unclaimed ones (lowered here to show it)."""
    from ipfs_accelerate.content import _fetch as fetch_module
    from ipfs_accelerate.errors import FetchError, UntrustedBlockError
    from tests.content.fake_gateways import car_bytes

    monkeypatch.setattr(fetch_module, "_MAX_PENDING_BYTES", 64 * 1024)
    blocks = _Blocks(tmp_path / "unused")
    leaf = blocks.raw(b"the weights" * 10)
    sub = blocks.directory([("a", leaf)])
    root = blocks.directory([("sub", sub)])
    sections = [(sub, blocks.memory.get(sub))] + [(leaf, blocks.memory.get(leaf))] * 2000
    gateway = _CarGateway(car_bytes([sub], sections), blocks.memory)
    try:
        with pytest.raises(FetchError) as caught:
            fetch(root, tmp_path / "out", gateways=[gateway.url], cache_dir=tmp_path / "cache",
                  retries=0)  # fmt: skip
    finally:
        gateway.close()
    (error,) = caught.value.errors
    assert isinstance(error, UntrustedBlockError)
    assert "repeated" in str(error), str(error)


def test_a_car_v2_whose_data_offset_is_far_away_is_refused_at_once() -> None:
    """A CAR v2 header's data offset comes from the peer; skipping to 2**40 read a stream
    (a gateway's answer need not end) for ever. Padding beyond 1 MiB is refused."""
    import struct

    from ipfs_accelerate.content import CarReader
    from ipfs_accelerate.errors import CarFormatError

    class Endless:
        name = "endless gateway answer"

        def __init__(self, head: bytes) -> None:
            self.head = head
            self.served = 0

        def read(self, size: int = -1) -> bytes:
            if self.head:
                out, self.head = self.head[:size], self.head[size:]
                return out
            self.served += size
            assert self.served < 64 * 1024 * 1024, "read padding without bound"
            return b"\0" * size

    pragma = bytes.fromhex("0aa16776657273696f6e02")
    header = bytes(16) + struct.pack("<QQQ", 1 << 40, 100, 0)
    with pytest.raises(CarFormatError, match="data offset"):
        CarReader(Endless(pragma + header))  # type: ignore[arg-type]


def test_a_gateway_trickling_its_answer_is_given_up_on(tmp_path: Path) -> None:
    """A read timeout only catches silence: a gateway sending one byte every fraction of
    the timeout kept a fetch waiting for days. Less than a minimal rate over a timeout's
    span is a retryable GatewayError, and the next gateway is used."""
    import threading
    import time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from tests.content.fake_gateways import FakeGateway

    data = bytes(range(256)) * 64  # 16 KiB
    cid = CID.for_block(data, RAW)

    class Trickle(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/vnd.ipld.raw")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            try:
                for byte in data:
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    time.sleep(0.05)
            except OSError:
                pass  # the client gave up

        def log_message(self, *args: object) -> None:
            pass

    slow = ThreadingHTTPServer(("127.0.0.1", 0), Trickle)
    threading.Thread(target=slow.serve_forever, daemon=True).start()
    honest = MemoryBlockstore()
    honest.put(cid, data)
    good = FakeGateway(honest)
    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(fetch(cid, tmp_path / "out", gateways=[
                f"http://127.0.0.1:{slow.server_address[1]}", good.url],
                cache_dir=tmp_path / "cache", timeout=1.0, retries=0, strategy="ordered"))
        except Exception as exc:  # reported below
            outcome.append(exc)

    try:
        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(30)
        assert not worker.is_alive(), "the fetch waited on a trickling gateway"
    finally:
        slow.shutdown()
        slow.server_close()
        good.close()
    (result,) = outcome
    assert not isinstance(result, Exception), result
    assert (tmp_path / "out").read_bytes() == data
    assert any("too slow" in str(e) for e in result.errors)  # type: ignore[attr-defined]
