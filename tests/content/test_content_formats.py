"""CIDs, dag-pb/UnixFS protobuf, CAR files and blockstores: known vectors and bad input."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import pytest

from ipfs_accelerate.content import (
    CID,
    DAG_PB,
    RAW,
    CarReader,
    CarWriter,
    FilesystemBlockstore,
    MemoryBlockstore,
    PBLink,
    UnixFSData,
    UnixFSType,
    decode_node,
    decode_unixfs,
    encode_node,
    encode_unixfs,
    import_bytes,
    import_file,
    iter_file,
    resolve_profile,
    verify_block,
    write_car,
    write_car_of_path,
)
from ipfs_accelerate.content._hamt import murmur3_x64_64
from ipfs_accelerate.errors import (
    BlockNotFoundError,
    BlockVerificationError,
    CarFormatError,
    ContentError,
    DagFormatError,
    InvalidArgumentError,
    InvalidCIDError,
    UnsupportedCIDError,
)

# published by kubo / multiformats: the empty file and "hello world\n" under `ipfs add`
EMPTY_V0 = "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"
HELLO_V0 = "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
HELLO_RAW = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"  # b"hello world"


def test_known_cids_of_small_files() -> None:
    assert str(import_bytes(b"", profile="unixfs-v0-2015").cid) == EMPTY_V0
    assert str(import_bytes(b"hello world\n", profile="unixfs-v0-2015").cid) == HELLO_V0
    assert str(import_bytes(b"hello world").cid) == HELLO_RAW


def test_cid_text_round_trips_and_conversions() -> None:
    v0 = CID.parse(HELLO_V0)
    assert (v0.version, v0.codec, v0.codec_name) == (0, DAG_PB, "dag-pb")
    assert str(v0) == HELLO_V0 and len(v0.binary) == 34
    v1 = v0.to_v1()
    assert str(v1).startswith("bafybei") and CID.parse(str(v1)) == v1
    assert CID.parse(v1.encode("base58btc")) == v1
    assert CID.parse("B" + str(v1)[1:].upper()) == v1
    raw = CID.parse(HELLO_RAW)
    assert raw.codec == RAW and raw.digest == hashlib.sha256(b"hello world").digest()
    assert CID.decode(raw.binary) == raw
    assert CID.for_block(b"hello world", RAW) == raw
    assert repr(raw) == f"CID('{HELLO_RAW}')"


def _b32(binary: bytes) -> str:
    import base64

    return "b" + base64.b32encode(binary).decode().lower().rstrip("=")


@pytest.mark.parametrize(
    ("text", "error", "fragment"),
    [
        ("", InvalidCIDError, "length 0"),
        ("x" * 300, InvalidCIDError, "length 300"),
        ("Qm" + "0" * 44, InvalidCIDError, "base58btc"),
        ("mAXASIA", InvalidCIDError, "multibase prefix 'm'"),
        ("bafy!!!", InvalidCIDError, "base32"),
        ("bAFKREI", InvalidCIDError, "multibase prefix"),
        (HELLO_RAW[:-6], InvalidCIDError, "digest truncated"),
        (_b32(bytes([1, 0x71, 0x12, 0x20]) + bytes(32)), UnsupportedCIDError, "codec 0x71"),
        (_b32(bytes([1, 0x55, 0x13, 0x40]) + bytes(64)), UnsupportedCIDError, "multihash 0x13"),
        (_b32(bytes([2, 0x55, 0x12, 0x20]) + bytes(32)), UnsupportedCIDError, "version 2"),
        (_b32(bytes([1, 0x55, 0x12, 0x10]) + bytes(16)), InvalidCIDError, "digest length 16"),
        (_b32(bytes([1, 0x55, 0x12, 0x20]) + bytes(33)), InvalidCIDError, "1 bytes after"),
        (_b32(bytes([1, 0xFF])), InvalidCIDError, "codec varint"),
        (_b32(bytes([0x12, 0x20]) + bytes(32)), InvalidCIDError, "never multibase"),
    ],
)
def test_malformed_and_unsupported_cids_name_the_input(
    text: str, error: type[Exception], fragment: str
) -> None:
    with pytest.raises(error) as info:
        CID.parse(text)
    assert fragment in str(info.value)
    if 0 < len(text) <= 64:
        assert repr(text) in str(info.value)
    assert isinstance(info.value, ContentError) and isinstance(info.value, ValueError)


def test_cid_constructor_and_encode_refuse_bad_values() -> None:
    with pytest.raises(UnsupportedCIDError, match="always dag-pb"):
        CID(0, RAW, bytes(32))
    with pytest.raises(InvalidCIDError, match="32 bytes, got 5"):
        CID(1, RAW, b"short")
    with pytest.raises(InvalidCIDError, match="unknown multibase 'base64'"):
        CID.parse(HELLO_RAW).encode("base64")
    with pytest.raises(InvalidCIDError, match="a CID is text, got bytes"):
        CID.parse(b"bafy")  # type: ignore[arg-type]


def test_verify_block() -> None:
    cid = CID.parse(HELLO_RAW)
    verify_block(cid, b"hello world")
    with pytest.raises(BlockVerificationError, match=HELLO_RAW):
        verify_block(cid, b"hello worle")


def test_murmur3_x64_64_vectors_from_the_js_reference() -> None:
    # @multiformats/murmur3's murmur3128, first 8 bytes big-endian (what the HAMT uses)
    assert murmur3_x64_64(b"") == 0
    assert murmur3_x64_64(b"hello") == 0xCBD8A7B341BD9B02
    assert murmur3_x64_64(b"The quick brown fox jumps over the lazy dog") == 0xE34BBC7BBC071B6C


# ----------------------------------------------------------------------------- dag-pb, UnixFS


def test_dag_pb_and_unixfs_round_trip() -> None:
    child = CID.parse(HELLO_RAW)
    unixfs = UnixFSData(UnixFSType.FILE, filesize=22, blocksizes=(11, 11))
    block = encode_node(encode_unixfs(unixfs), [PBLink(child, "", 11), PBLink(child, "", 11)])
    node = decode_node(block)
    assert node.links == (PBLink(child, "", 11), PBLink(child, "", 11))
    assert node.data is not None and decode_unixfs(node.data) == unixfs
    shard = UnixFSData(UnixFSType.HAMT_SHARD, data=b"\x01", hash_type=0x22, fanout=256,
                       mode=0o644, mtime=(-5, 7))
    assert decode_unixfs(encode_unixfs(shard)) == shard


def _link(name: str) -> bytes:
    return encode_node(None, [PBLink(CID.parse(HELLO_RAW), name, 1)])


@pytest.mark.parametrize(
    ("block", "fragment"),
    [
        (b"\x0a\x05ab", "claims 5 bytes"),  # Data truncated
        (b"\x0a", "truncated length of field 1"),
        (b"\x1a\x00", "unknown field 3"),
        (b"\x08\x01", "wire type 0, expected 2"),
        (b"\x0a\x00" + _link("a"), "a link follows Data"),
        (b"\x0a\x00\x0a\x00", "Data repeated"),
        (_link("b") + _link("a"), "not sorted by name bytes"),
        (b"\x12\x02\x18\x01", "no Hash"),
        (b"\x12\x04\x0a\x02\x01\x55", "not a usable CID"),
        (b"\x0b", "unsupported wire type 3"),
        (b"\xff" * 12, "malformed or truncated field key"),
    ],
)
def test_corrupt_dag_pb_is_refused_by_name(block: bytes, fragment: str) -> None:
    with pytest.raises(DagFormatError, match="block bafytest") as info:
        decode_node(block, "block bafytest")
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"", "no Type"),
        (b"\x08\x09", "unknown Type 9"),
        (b"\x08\x02\x08\x02", "field 1 repeated"),
        (b"\x08\x02\x12", "truncated length of field 2"),
        (b"\x08\x02\x48\x01", "unknown field 9"),
        (b"\x08\x02\x1a\x01x", "wire type 2, expected 0"),
    ],
)
def test_corrupt_unixfs_is_refused(data: bytes, fragment: str) -> None:
    with pytest.raises(DagFormatError) as info:
        decode_unixfs(data)
    assert fragment in str(info.value)


# ----------------------------------------------------------------------------- profiles


def test_profile_overrides_are_validated() -> None:
    custom = resolve_profile("unixfs-v0-2015", chunk_size=1024, raw_leaves=True)
    assert (custom.chunk_size, custom.raw_leaves, custom.max_links) == (1024, True, 174)
    for kwargs, fragment in [
        ({"chunk_size": 0}, r"chunk_size must be an integer in \[1, 2097152\], got 0"),
        ({"chunk_size": 1 << 40}, "chunk_size"),
        ({"max_links": 1}, "max_links"),
        ({"cid_version": 2}, "cid_version must be 0 or 1, got 2"),
        ({"raw_leaves": "yes"}, "raw_leaves must be a bool"),
    ]:
        with pytest.raises(InvalidArgumentError, match=fragment):
            resolve_profile("unixfs-v1-2025", **kwargs)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="unknown UnixFS profile 'kubo'"):
        resolve_profile("kubo")


def test_import_streams_and_reads_back(tmp_path: Path) -> None:
    data = bytes(range(256)) * 5000  # 1.28 MB: two 1 MiB chunks
    path = tmp_path / "data.bin"
    path.write_bytes(data)
    blocks = MemoryBlockstore()
    from_path = import_file(path, blockstore=blocks.put)
    assert import_file(io.BytesIO(data)).cid == from_path.cid == import_bytes(data).cid
    assert b"".join(iter_file(blocks, from_path.cid)) == data
    assert len(blocks) == 3  # two raw leaves and the root
    with pytest.raises(ContentError, match="cannot read"):
        import_file(tmp_path / "missing")
    with pytest.raises(InvalidArgumentError, match="got int"):
        import_file(5)  # type: ignore[arg-type]


def test_exporter_refuses_a_dag_whose_sizes_lie() -> None:
    blocks = MemoryBlockstore()
    leaf = CID.for_block(b"abc", RAW)
    blocks.put(leaf, b"abc")
    unixfs = encode_unixfs(UnixFSData(UnixFSType.FILE, filesize=4, blocksizes=(4,)))
    block = encode_node(unixfs, [PBLink(leaf, "", 3)])
    root = CID.for_block(block, DAG_PB)
    blocks.put(root, block)
    with pytest.raises(DagFormatError, match="holds 3 bytes, its parent's blocksize says 4"):
        b"".join(iter_file(blocks, root))


# ----------------------------------------------------------------------------- blockstores


@pytest.mark.parametrize("kind", ["memory", "filesystem"])
def test_blockstores_verify_and_report_missing(kind: str, tmp_path: Path) -> None:
    store = MemoryBlockstore() if kind == "memory" else FilesystemBlockstore(tmp_path / "bs")
    cid = CID.parse(HELLO_RAW)
    with pytest.raises(BlockVerificationError):
        store.put(cid, b"not hello")
    assert not store.has(cid)
    with pytest.raises(BlockNotFoundError, match=HELLO_RAW):
        store.get(cid)
    store.put(cid, b"hello world")
    assert store.has(cid) and store.get(cid) == b"hello world" and list(store) == [cid]
    dag_pb = import_bytes(b"hello world\n", profile="unixfs-v0-2015").cid
    store.put(dag_pb, encode_node(encode_unixfs(UnixFSData(2, b"hello world\n", 12))))
    assert store.has(dag_pb.to_v1())  # a block is found by either CID version


def test_filesystem_blockstore_reverifies_on_read(tmp_path: Path) -> None:
    store = FilesystemBlockstore(tmp_path)
    cid = CID.parse(HELLO_RAW)
    store.put(cid, b"hello world")
    (next(tmp_path.glob("*/b*"))).write_bytes(b"tampered!!!")
    with pytest.raises(BlockVerificationError):
        store.get(cid)


# ----------------------------------------------------------------------------- CAR


def _car_bytes(tmp_path: Path) -> tuple[bytes, CID]:
    source = tmp_path / "f.bin"
    source.write_bytes(bytes(range(256)) * 10)
    out = tmp_path / "f.car"
    root = write_car_of_path(source, out, chunk_size=1000).cid
    return out.read_bytes(), root


def test_car_round_trip_and_non_seekable_output(tmp_path: Path) -> None:
    data, root = _car_bytes(tmp_path)
    with CarReader(io.BytesIO(data)) as car:  # type: ignore[arg-type]
        assert car.roots == (root,) and car.version == 1
        blocks = list(car)
    assert len(blocks) == 4  # three leaves and the root
    written = io.BytesIO()
    write_car(written, [root], blocks)
    assert written.getvalue() == data

    class NoSeek(io.RawIOBase):
        def __init__(self) -> None:
            self.parts: list[bytes] = []

        def writable(self) -> bool:
            return True

        def write(self, chunk: bytes) -> int:  # type: ignore[override]
            self.parts.append(bytes(chunk))
            return len(chunk)

    sink = NoSeek()
    assert write_car_of_path(tmp_path / "f.bin", sink, chunk_size=1000).cid == root  # type: ignore[arg-type]
    assert b"".join(sink.parts) == data
    with pytest.raises(ContentError, match="another length"):
        CarWriter(io.BytesIO(), [root]).update_roots([root, root])


def test_truncated_car_names_the_offset(tmp_path: Path) -> None:
    data, _ = _car_bytes(tmp_path)
    for cut in (1, 20, len(data) - 5):
        with pytest.raises(CarFormatError, match="truncated") as info:
            list(CarReader(io.BytesIO(data[:cut])))  # type: ignore[arg-type]
        assert "offset" in str(info.value) and "<stream>" in str(info.value)


def test_car_with_a_flipped_byte_fails_verification(tmp_path: Path) -> None:
    data, _ = _car_bytes(tmp_path)
    flipped = bytearray(data)
    flipped[-1] ^= 1
    with pytest.raises(BlockVerificationError, match="do not hash"):
        list(CarReader(io.BytesIO(bytes(flipped))))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        (b"\x03\xa1\x61x", "header is truncated"),  # the map's value is missing
        (b"\x05\xa1\x61x\x01\x00", "1 bytes after its map"),
        (b"\x01\x01", "header is not a map"),
        (b"\x0b\xa2\x65roots\x80\x61v\x01", "header has no version"),
        (b"\x11\xa2\x65roots\x80\x67version\x03", "version 3"),
        (b"\xff\xff\xff\xff\x0f", "header length"),
        (b"\x11\xa2\x65roots\x80\x67version\x01\xff\xff\xff\x7f", "claims"),
    ],
)
def test_malformed_car_headers_and_sections(data: bytes, fragment: str) -> None:
    with pytest.raises(CarFormatError) as info:
        list(CarReader(io.BytesIO(data)))  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_car_reader_of_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ContentError, match="cannot read CAR"):
        CarReader(tmp_path / "missing.car")


# ----------------------------------------------------------------------------- streaming


class _Zeros(io.RawIOBase):
    """A stream of ``size`` zero bytes that exists nowhere in memory at once."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        step = min(len(buffer), self.left, 300_000)  # short reads, as a pipe gives
        buffer[:step] = bytes(step)
        self.left -= step
        return step


def test_import_and_car_writing_hold_one_chunk_not_the_file(tmp_path: Path) -> None:
    import tracemalloc

    size = 48 * 1024 * 1024
    tracemalloc.start()
    try:
        entry = import_file(_Zeros(size))  # type: ignore[arg-type]
        _, import_peak = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        source = tmp_path / "stripes.bin"
        with source.open("wb") as stream:
            for index in range(48):  # 48 different 1 MiB chunks
                stream.write(bytes([index]) * (1024 * 1024))
        tracemalloc.reset_peak()
        car_root = write_car_of_path(source, tmp_path / "stripes.car").cid
        _, car_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert entry.file_size == size
    assert import_peak < 4 * 1024 * 1024, import_peak  # one 1 MiB chunk buffer and change
    assert car_peak < 6 * 1024 * 1024, car_peak
    assert car_root == import_file(source).cid
    with CarReader(tmp_path / "stripes.car") as car:
        assert sum(len(data) for _, data in car) > size  # every leaf went to the CAR
    assert len(list(CarReader(tmp_path / "stripes.car"))) == 49  # 48 leaves and the root


def test_directory_import_bad_inputs(tmp_path: Path) -> None:
    from ipfs_accelerate.content import import_directory

    (tmp_path / "file").write_bytes(b"x")
    with pytest.raises(ContentError, match="is not a directory"):
        import_directory(tmp_path / "file")
    with pytest.raises(ContentError, match="cannot read"):
        import_directory(tmp_path / "missing")
    loop = tmp_path / "loop"
    (loop / "inner").mkdir(parents=True)
    (loop / "inner" / "back").symlink_to(loop)
    with pytest.raises(ContentError, match="symbolic link loop"):
        import_directory(loop)
    linked = tmp_path / "linked"
    linked.mkdir()
    (linked / "to-file").symlink_to(tmp_path / "file")  # followed, as in a HF snapshot
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "to-file").write_bytes(b"x")
    assert import_directory(linked).root.cid == import_directory(plain).root.cid


def test_a_car_holds_each_block_once(tmp_path: Path) -> None:
    folder = tmp_path / "twins"
    folder.mkdir()
    for name in ("a.bin", "b.bin"):
        (folder / name).write_bytes(bytes(range(200)) * 10)  # two equal 1,000-byte chunks
    root = write_car_of_path(folder, tmp_path / "twins.car", chunk_size=1000).cid
    with CarReader(tmp_path / "twins.car") as car:
        cids = [cid for cid, _ in car]
    assert car.roots == (root,)
    assert len(cids) == len(set(cids)) == 3  # one leaf, one file root, the directory
