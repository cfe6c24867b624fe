"""CAR files (Content Addressable aRchives): v1 write and read, v2 read, streaming.

CAR v1 is ``varint(len) header`` then sections ``varint(len) CID block``; the header is the
dag-cbor map ``{"roots": [CID...], "version": 1}``. CAR v2 is an 11-byte pragma, a 40-byte
header (characteristics, data offset, data size, index offset: little-endian u64s) and a CAR
v1 payload at the data offset, which is what is read here (the index is not needed to stream).

Reading never holds more than one block: sections are read one at a time from the stream,
each bounded by ``MAX_BLOCK_SIZE`` before anything is allocated, and each block is verified
against its CID before it is yielded.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO, Final

from ipfs_accelerate.content._cid import CID, DAG_PB, encode_varint, verify_block
from ipfs_accelerate.content._importer import (
    DEFAULT_PROFILE,
    ImportedEntry,
    Profile,
    import_directory,
    import_file,
    resolve_profile,
)
from ipfs_accelerate.content._limits import DEFAULT_LIMITS, DirectoryLimits
from ipfs_accelerate.errors import CarFormatError, ContentError, InvalidCIDError

__all__ = ["MAX_BLOCK_SIZE", "CarReader", "CarWriter", "write_car", "write_car_of_path"]

MAX_BLOCK_SIZE: Final = 4 * 1024 * 1024  # twice bitswap's limit: room for any real block
MAX_HEADER_SIZE: Final = 1024 * 1024
_V2_PRAGMA: Final = bytes.fromhex("0aa16776657273696f6e02")
_V2_HEADER_SIZE: Final = 40


# ------------------------------------------------------------------------------- dag-cbor


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes((major << 5 | value,))
    for extra, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes((major << 5 | extra,)) + value.to_bytes(size, "big")
    raise ValueError(f"CBOR length {value} too large")


def encode_header(roots: Sequence[CID], version: int = 1) -> bytes:
    """The dag-cbor CAR v1 header (keys in dag-cbor's length-first order)."""
    out = bytearray(_cbor_head(5, 2))
    out += _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for root in roots:
        binary = b"\0" + root.binary  # dag-cbor's CID: tag 42 over the identity multibase
        out += b"\xd8\x2a" + _cbor_head(2, len(binary)) + binary
    out += _cbor_head(3, 7) + b"version" + _cbor_head(0, version)
    return bytes(out)


class _CborReader:
    """Just enough dag-cbor for a CAR header: maps, arrays, strings, ints, tag 42."""

    def __init__(self, data: bytes, what: str) -> None:
        self.data = data
        self.pos = 0
        self.what = what

    def fail(self, message: str) -> CarFormatError:
        return CarFormatError(f"{self.what}: header {message}")

    def _take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise self.fail("is truncated")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def _head(self) -> tuple[int, int]:
        first = self._take(1)[0]
        major, extra = first >> 5, first & 31
        if extra < 24:
            return major, extra
        if extra > 27:
            raise self.fail(f"has an unsupported CBOR item 0x{first:02x}")
        return major, int.from_bytes(self._take(1 << (extra - 24)), "big")

    def item(self, depth: int = 0) -> object:
        if depth > 8:
            raise self.fail("nests too deeply")
        major, value = self._head()
        if major == 0:
            return value
        if major in (2, 3):
            raw = self._take(value)
            if major == 2:
                return raw
            try:
                return raw.decode("utf-8")
            except UnicodeDecodeError:
                raise self.fail("has a string that is not UTF-8") from None
        if major == 4:
            if value > len(self.data):
                raise self.fail(f"claims an array of {value} items")
            return [self.item(depth + 1) for _ in range(value)]
        if major == 5:
            if value > len(self.data):
                raise self.fail(f"claims a map of {value} entries")
            result: dict[object, object] = {}
            for _ in range(value):
                key = self.item(depth + 1)
                if not isinstance(key, str):
                    raise self.fail("has a map key that is not a string")
                result[key] = self.item(depth + 1)
            return result
        if major == 6 and value == 42:
            tagged = self.item(depth + 1)
            if not isinstance(tagged, bytes) or not tagged.startswith(b"\0"):
                raise self.fail("has a malformed CID (tag 42)")
            try:
                return CID.decode(tagged[1:])
            except InvalidCIDError as exc:
                raise self.fail(f"root: {exc}") from None
        raise self.fail(f"has an unsupported CBOR item (major type {major})")


# ------------------------------------------------------------------------------- reading


class CarReader:
    """Streams the roots and the verified blocks of a CAR v1 or v2 file.

    ``CarReader(path_or_binary_stream)``; ``.version``, ``.roots``; iterate for
    ``(cid, bytes)`` pairs, each checked against its CID (BlockVerificationError otherwise).
    A malformed or truncated file raises CarFormatError naming it and the offset.
    """

    def __init__(
        self, source: str | os.PathLike[str] | BinaryIO, *, verify: bool = True
    ) -> None:
        self._stack = ExitStack()
        if isinstance(source, str | os.PathLike):
            self.name = str(source)
            try:
                self._stream: BinaryIO = self._stack.enter_context(open(source, "rb"))  # noqa: SIM115
            except OSError as exc:
                reason = exc.strerror or exc
                raise ContentError(f"cannot read CAR {self.name!r}: {reason}") from None
        else:
            self.name = getattr(source, "name", None) or "<stream>"
            self._stream = source
        self.verify = verify
        self._offset = 0
        self._limit: int | None = None
        try:
            self.version, self.roots = self._read_headers()
        except BaseException:
            self._stack.close()  # a bad header must not leak the file it was read from
            raise

    def __enter__(self) -> CarReader:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stack.close()

    def _read_exact(self, size: int, label: str) -> bytes:
        data = self._stream.read(size)
        while data is not None and len(data) < size:
            more = self._stream.read(size - len(data))
            if not more:
                break
            data += more
        if data is None or len(data) < size:
            got = 0 if data is None else len(data)
            raise CarFormatError(
                f"CAR {self.name!r}: truncated {label} at offset {self._offset} "
                f"({got} of {size} bytes)"
            )
        self._offset += size
        return data

    def _read_cid_bytes(self, length: int, label: str) -> bytes:
        """The bytes of the CID opening a section of ``length`` bytes (never more of the
        section than the CID, unless the CID is malformed: then what CID.read needs to say
        so). A sha2-256 CID is ``0x12 0x20`` + 32 bytes (v0), or version, codec, ``0x12``,
        ``0x20`` as varints + 32 bytes (v1)."""
        head = self._read_exact(min(2, length), label)
        if head == b"\x12\x20":  # CIDv0
            return head + self._read_exact(min(32, length - 2), label)
        # v1: complete the varints of version and codec, then hash code, length, digest
        varints_done = sum(1 for byte in head if not byte & 0x80)
        while varints_done < 2 and len(head) < min(length, 20):
            byte = self._read_exact(1, label)
            head += byte
            varints_done += not byte[0] & 0x80
        rest = min(34, length - len(head))
        return head + (self._read_exact(rest, label) if rest > 0 else b"")

    def _read_varint(self, label: str, *, eof_ok: bool = False) -> int | None:
        value = shift = 0
        for index in range(9):
            if self._limit is not None and self._offset >= self._limit:
                byte = b""
            else:
                byte = self._stream.read(1)
            if not byte:
                if index == 0 and eof_ok:
                    return None
                raise CarFormatError(
                    f"CAR {self.name!r}: truncated {label} at offset {self._offset}"
                )
            self._offset += 1
            value |= (byte[0] & 0x7F) << shift
            if not byte[0] & 0x80:
                return value
            shift += 7
        raise CarFormatError(f"CAR {self.name!r}: {label} varint too long at offset {self._offset}")

    def _read_headers(self) -> tuple[int, tuple[CID, ...]]:
        length = self._read_varint("header length")
        assert length is not None
        if length > MAX_HEADER_SIZE:
            raise CarFormatError(
                f"CAR {self.name!r}: header length {length} exceeds {MAX_HEADER_SIZE}"
            )
        raw = self._read_exact(length, "header")
        if bytes(encode_varint(length)) + raw == _V2_PRAGMA:
            return self._read_v2()
        version, roots = self._parse_header(raw)
        if version != 1:
            raise CarFormatError(f"CAR {self.name!r}: version {version} (1 or 2 supported)")
        return 1, roots

    def _parse_header(self, raw: bytes) -> tuple[int, tuple[CID, ...]]:
        reader = _CborReader(raw, f"CAR {self.name!r}")
        header = reader.item()
        if reader.pos != len(raw):
            raise CarFormatError(
                f"CAR {self.name!r}: header has {len(raw) - reader.pos} bytes after its map"
            )
        if not isinstance(header, dict):
            raise CarFormatError(f"CAR {self.name!r}: header is not a map")
        version = header.get("version")
        if not isinstance(version, int):
            raise CarFormatError(f"CAR {self.name!r}: header has no version")
        roots = header.get("roots", [])
        if version == 1 and (
            not isinstance(roots, list) or not all(isinstance(root, CID) for root in roots)
        ):
            raise CarFormatError(f"CAR {self.name!r}: header roots are not a list of CIDs")
        return version, tuple(roots) if isinstance(roots, list) else ()

    def _read_v2(self) -> tuple[int, tuple[CID, ...]]:
        header = self._read_exact(_V2_HEADER_SIZE, "CAR v2 header")
        data_offset = int.from_bytes(header[16:24], "little")
        data_size = int.from_bytes(header[24:32], "little")
        if data_offset < self._offset:
            raise CarFormatError(
                f"CAR {self.name!r}: v2 data offset {data_offset} lies inside the header"
            )
        skip = data_offset - self._offset
        if skip > MAX_HEADER_SIZE:  # real v2 files pad a few bytes, if any
            raise CarFormatError(
                f"CAR {self.name!r}: v2 data offset {data_offset} is more than "
                f"{MAX_HEADER_SIZE} bytes past the header"
            )
        while skip:  # streams need not be seekable
            chunk = self._read_exact(min(skip, 1 << 20), "CAR v2 padding")
            skip -= len(chunk)
        self._limit = data_offset + data_size
        length = self._read_varint("inner header length")
        assert length is not None
        if length > MAX_HEADER_SIZE:
            raise CarFormatError(f"CAR {self.name!r}: inner header length {length} too large")
        version, roots = self._parse_header(self._read_exact(length, "inner header"))
        if version != 1:
            raise CarFormatError(f"CAR {self.name!r}: inner CAR version {version}, expected 1")
        return 2, roots

    def __iter__(self) -> Iterator[tuple[CID, bytes]]:
        for cid, block in self.blocks():
            yield cid, bytes(block)

    def blocks(
        self, into: Callable[[CID, int], memoryview | None] | None = None
    ) -> Iterator[tuple[CID, bytes | memoryview]]:
        """The ``(cid, block)`` pairs, as iteration gives them; ``into(cid, size)`` may
        return a writable buffer of ``size`` bytes for a block, which is then received
        straight into it (the stream needs ``readinto``) and yielded as that buffer, so a
        caller recycling its buffers receives a large CAR without a new object per block.
        The buffer belongs to the caller from the moment ``into`` returns it, whether or not
        the block is then read in full."""
        while True:
            start = self._offset
            length = self._read_varint("section length", eof_ok=True)
            if length is None:
                return
            if length > MAX_BLOCK_SIZE + 64:
                raise CarFormatError(
                    f"CAR {self.name!r}: section at offset {start} claims {length} bytes "
                    f"(blocks are at most {MAX_BLOCK_SIZE})"
                )
            if self._limit is not None and self._offset + length > self._limit:
                raise CarFormatError(
                    f"CAR {self.name!r}: section at offset {start} runs past the v2 data size"
                )
            label = f"section at offset {start}"
            prefix = self._read_cid_bytes(length, label)
            try:
                cid, end = CID.read(prefix, 0)
            except InvalidCIDError as exc:
                raise CarFormatError(f"CAR {self.name!r}: {label}: {exc}") from None
            size = length - end
            target = into(cid, size) if into is not None and size > 0 else None
            block: bytes | memoryview
            if target is None:
                # the block is read on its own: slicing it off the section would copy it
                block = prefix[end:] + self._read_exact(length - len(prefix), label)
            else:
                head = len(prefix) - end
                target[:head] = prefix[end:]
                self._readinto_exact(target[head:size], label)
                block = target[:size]
            if self.verify:
                verify_block(cid, block)
            yield cid, block

    def _readinto_exact(self, view: memoryview, label: str) -> None:
        got = 0
        while got < len(view):
            count = self._stream.readinto(view[got:])  # type: ignore[attr-defined]
            if not count:
                raise CarFormatError(
                    f"CAR {self.name!r}: truncated {label} at offset {self._offset + got} "
                    f"({got} of {len(view)} bytes)"
                )
            got += count
        self._offset += got


# ------------------------------------------------------------------------------- writing


class CarWriter:
    """Writes a CAR v1 to a binary stream, one block at a time.

    When the roots are only known at the end (a streaming import), open with placeholder
    roots of the same CID version and codec and call :meth:`update_roots` on a seekable
    stream: the header's length does not change, so it is rewritten in place.
    """

    def __init__(self, stream: BinaryIO, roots: Sequence[CID]) -> None:
        self._stream = stream
        self._header = encode_header(roots)
        self._start = stream.tell() if stream.seekable() else None
        stream.write(encode_varint(len(self._header)) + self._header)
        self.blocks = 0
        self.bytes_written = len(self._header) + len(encode_varint(len(self._header)))

    def put(self, cid: CID, data: bytes) -> None:
        binary = cid.binary
        prefix = encode_varint(len(binary) + len(data)) + binary
        self._stream.write(prefix)
        self._stream.write(data)
        self.blocks += 1
        self.bytes_written += len(prefix) + len(data)

    def update_roots(self, roots: Sequence[CID]) -> None:
        header = encode_header(roots)
        if len(header) != len(self._header):
            raise ContentError(
                "CarWriter.update_roots: the new roots encode to a header of another length "
                f"({len(header)} vs {len(self._header)} bytes); use the same CID versions"
            )
        if self._start is None:
            raise ContentError("CarWriter.update_roots: the output stream is not seekable")
        end = self._stream.tell()
        self._stream.seek(self._start)
        self._stream.write(encode_varint(len(header)) + header)
        self._stream.seek(end)
        self._header = header


def write_car(
    out: str | os.PathLike[str] | BinaryIO,
    roots: Sequence[CID],
    blocks: Iterable[tuple[CID, bytes]],
) -> int:
    """Write a CAR v1 of ``blocks`` (streamed: one block in memory at a time); returns the
    number of bytes written."""
    with ExitStack() as stack:
        stream = (
            stack.enter_context(Path(out).open("wb"))
            if isinstance(out, str | os.PathLike)
            else out
        )
        writer = CarWriter(stream, roots)
        for cid, data in blocks:
            writer.put(cid, data)
        return writer.bytes_written


def write_car_of_path(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str] | BinaryIO,
    *,
    profile: str | Profile = DEFAULT_PROFILE,
    chunk_size: int | None = None,
    cid_version: int | None = None,
    raw_leaves: bool | None = None,
    max_links: int | None = None,
    shard_threshold: int | None = None,
    limits: DirectoryLimits = DEFAULT_LIMITS,
) -> ImportedEntry:
    """Import a file or directory and write its blocks as a CAR v1 with the root as its one
    root, in a single streaming pass: blocks go out as they are hashed (children before
    parents) and the header's root is filled in at the end. An output that cannot seek is
    written in two passes (the import is run once to learn the root). Returns the root entry.

    Blocks shared by several files are written once. The overrides are those of
    :func:`import_directory` (``shard_threshold`` and ``limits`` only matter for a
    directory).
    """
    path = Path(source)
    is_directory = path.is_dir()
    chosen = resolve_profile(
        profile, chunk_size=chunk_size, cid_version=cid_version, raw_leaves=raw_leaves,
        max_links=max_links, shard_threshold=shard_threshold,
    )

    def run(sink: CarWriter | None) -> ImportedEntry:
        seen: set[bytes] = set()

        def put(cid: CID, data: bytes) -> None:
            key = cid.binary
            if sink is not None and key not in seen:
                seen.add(key)
                sink.put(cid, data)

        if is_directory:
            return import_directory(path, profile=chosen, blockstore=put, limits=limits).root
        return import_file(path, profile=chosen, blockstore=put)

    with ExitStack() as stack:
        stream = (
            stack.enter_context(Path(out).open("w+b"))
            if isinstance(out, str | os.PathLike)
            else out
        )
        if not stream.seekable():
            root = run(None)
            writer = CarWriter(stream, [root.cid])
            run(writer)
            return root
        placeholder = _placeholder_root(chosen, path, is_directory)
        writer = CarWriter(stream, [placeholder])
        root = run(writer)
        if len(root.cid.binary) != len(placeholder.binary):
            raise ContentError(f"internal: root CID {root.cid} has an unexpected length")
        writer.update_roots([root.cid])
        return root


def _placeholder_root(chosen: Profile, path: Path, is_directory: bool) -> CID:
    """A CID of the root's eventual length: the root is dag-pb at the profile's version, or
    (a one-chunk file with raw leaves) a CIDv1 raw block; both v1 forms have one length."""
    single_raw = (
        not is_directory and chosen.raw_leaves and path.stat().st_size <= chosen.chunk_size
    )
    version = 1 if single_raw else chosen.cid_version
    return CID(version, DAG_PB, bytes(32))
