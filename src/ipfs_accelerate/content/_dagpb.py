"""dag-pb nodes and their UnixFS ``Data``: protobuf encoding and strict decoding.

Written here rather than through a protobuf library: the two schemas have eight fields in all,
and dag-pb's canonical form (links before data, links sorted by name bytes, fields in number
order, no unknown fields) is a constraint on the byte layout that generated code does not
enforce. Decoding is strict so that a block which is not canonical dag-pb is refused by name
instead of being re-encoded to different bytes (and so a different CID).
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar, cast

from ipfs_accelerate.content._cid import CID, decode_varint, encode_varint
from ipfs_accelerate.errors import DagFormatError, InvalidCIDError

__all__ = [
    "PBLink",
    "PBNode",
    "UnixFSData",
    "UnixFSType",
    "decode_node",
    "decode_unixfs",
    "encode_node",
    "encode_unixfs",
]

_VARINT: Final = 0
_LENGTH_DELIMITED: Final = 2
_FIXED32: Final = 5
#: decoded nodes and UnixFS messages remembered by their bytes: a fetch reads a file's node
#: several times (the fetch, the completeness walk, the export's walk and layout), and one
#: of 1,024 links takes milliseconds to decode in Python. Only blocks up to this size, and
#: the last few, so what is held stays small (a v0 leaf, all data, is never kept; 16 nodes
#: of ~1,400 links, the most 64 KiB holds, are a few MiB of objects).
_MEMO_MAX_BYTES: Final = 64 * 1024
_MEMO_ENTRIES: Final = 16
_Decoded = TypeVar("_Decoded")


class _Memo:
    """The last ``_MEMO_ENTRIES`` results of a strict decoder, keyed by the exact bytes
    decoded (decoding is a pure function of them; failures are not remembered)."""

    def __init__(self) -> None:
        self._held: OrderedDict[bytes, object] = OrderedDict()
        self._lock = threading.Lock()

    def decode(
        self,
        raw: bytes | memoryview,
        what: str,
        decoder: Callable[[bytes | memoryview, str], _Decoded],
    ) -> _Decoded:
        if not isinstance(raw, bytes) or len(raw) > _MEMO_MAX_BYTES:
            return decoder(raw, what)
        with self._lock:
            held = self._held.get(raw)
            if held is not None:
                self._held.move_to_end(raw)
                return cast(_Decoded, held)
        decoded = decoder(raw, what)
        with self._lock:
            self._held[raw] = decoded
            if len(self._held) > _MEMO_ENTRIES:
                self._held.popitem(last=False)
        return decoded


_NODES = _Memo()
_UNIXFS = _Memo()


class UnixFSType:
    """UnixFS ``Data.Type`` values (the UnixFS spec's enum)."""

    RAW: Final = 0
    DIRECTORY: Final = 1
    FILE: Final = 2
    METADATA: Final = 3
    SYMLINK: Final = 4
    HAMT_SHARD: Final = 5


@dataclass(frozen=True, slots=True)
class PBLink:
    """A dag-pb link: the child's CID, its name (``""`` for file chunks) and ``Tsize``, the
    cumulative size of the child's DAG in bytes."""

    cid: CID
    name: str | None = ""
    tsize: int | None = None


@dataclass(frozen=True, slots=True)
class PBNode:
    """A dag-pb node: its ``Data`` (UnixFS bytes, None when absent) and its links."""

    data: bytes | None
    links: tuple[PBLink, ...] = ()


@dataclass(frozen=True, slots=True)
class UnixFSData:
    """The UnixFS protobuf carried in a dag-pb node's ``Data`` (mode and mtime are decoded
    but never written by this package's importer, as neither profile sets them)."""

    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = field(default_factory=tuple)
    hash_type: int | None = None
    fanout: int | None = None
    mode: int | None = None
    mtime: tuple[int, int | None] | None = None


# ------------------------------------------------------------------------------- encoding


def _key(number: int, wire_type: int) -> bytes:
    return encode_varint(number << 3 | wire_type)


def _length_delimited(number: int, payload: bytes) -> bytes:
    return _key(number, _LENGTH_DELIMITED) + encode_varint(len(payload)) + payload


def encode_link(link: PBLink) -> bytes:
    out = _length_delimited(1, link.cid.binary)
    if link.name is not None:
        out += _length_delimited(2, link.name.encode("utf-8"))
    if link.tsize is not None:
        out += _key(3, _VARINT) + encode_varint(link.tsize)
    return out


def encode_node(data: bytes | None, links: Sequence[PBLink] = ()) -> bytes:
    """Canonical dag-pb bytes: links (already in name order) first, then ``Data``."""
    parts = [_length_delimited(2, encode_link(link)) for link in links]
    if data is not None:
        parts.append(_length_delimited(1, data))
    return b"".join(parts)


def encode_unixfs(unixfs: UnixFSData) -> bytes:
    """The UnixFS protobuf bytes of ``unixfs`` (a dag-pb node's ``Data``), fields in number
    order as the reference writes them."""
    out = bytearray(_key(1, _VARINT) + encode_varint(unixfs.type))
    if unixfs.data:  # an empty Data is left out, as the reference does
        out += _length_delimited(2, unixfs.data)
    if unixfs.filesize is not None:
        out += _key(3, _VARINT) + encode_varint(unixfs.filesize)
    for size in unixfs.blocksizes:
        out += _key(4, _VARINT) + encode_varint(size)
    if unixfs.hash_type is not None:
        out += _key(5, _VARINT) + encode_varint(unixfs.hash_type)
    if unixfs.fanout is not None:
        out += _key(6, _VARINT) + encode_varint(unixfs.fanout)
    if unixfs.mode is not None:
        out += _key(7, _VARINT) + encode_varint(unixfs.mode)
    if unixfs.mtime is not None:
        seconds, nanoseconds = unixfs.mtime
        inner = _key(1, _VARINT) + encode_varint(seconds & (2**64 - 1))
        if nanoseconds is not None:
            inner += _key(2, _FIXED32) + nanoseconds.to_bytes(4, "little")
        out += _length_delimited(8, inner)
    return bytes(out)


# ------------------------------------------------------------------------------- decoding


class _Fields:
    """Iterates ``(field number, wire type, value)`` over one protobuf message."""

    def __init__(self, data: bytes | memoryview, what: str) -> None:
        self.data = data
        self.what = what
        self.pos = 0

    def fail(self, message: str) -> DagFormatError:
        return DagFormatError(f"{self.what}: {message}")

    def __iter__(self) -> _Fields:
        return self

    def __next__(self) -> tuple[int, int, int | bytes]:
        if self.pos >= len(self.data):
            raise StopIteration
        start = self.pos
        key = self._varint(f"field key at byte {start}")
        number, wire_type = key >> 3, key & 7
        if number == 0:
            raise self.fail(f"field number 0 at byte {start}")
        if wire_type == _VARINT:
            return number, wire_type, self._varint(f"varint of field {number}")
        if wire_type == _LENGTH_DELIMITED:
            size = self._varint(f"length of field {number}")
            end = self.pos + size
            if end > len(self.data):
                raise self.fail(
                    f"field {number} claims {size} bytes at byte {self.pos}, "
                    f"only {len(self.data) - self.pos} remain (truncated)"
                )
            value = bytes(self.data[self.pos : end])
            self.pos = end
            return number, wire_type, value
        if wire_type == _FIXED32:
            end = self.pos + 4
            if end > len(self.data):
                raise self.fail(f"fixed32 field {number} truncated")
            value_int = int.from_bytes(self.data[self.pos : end], "little")
            self.pos = end
            return number, wire_type, value_int
        raise self.fail(f"field {number} has unsupported wire type {wire_type} at byte {start}")

    def _varint(self, label: str) -> int:
        decoded = decode_varint(self.data, self.pos, 10)
        if decoded is None or decoded[0] >= 1 << 64:
            raise self.fail(f"malformed or truncated {label}")
        value, self.pos = decoded
        return value


def _expect(fields: _Fields, number: int, wire_type: int, expected: int) -> None:
    if wire_type != expected:
        raise fields.fail(f"field {number} has wire type {wire_type}, expected {expected}")


def _decode_link(payload: bytes, what: str) -> PBLink:
    fields = _Fields(payload, what)
    cid: CID | None = None
    name: str | None = None
    tsize: int | None = None
    last = 0
    for number, wire_type, value in fields:
        if number <= last:
            raise fields.fail(f"field {number} out of order or repeated")
        last = number
        if number == 1:
            _expect(fields, number, wire_type, _LENGTH_DELIMITED)
            assert isinstance(value, bytes)
            try:
                cid = CID.decode(value)
            except InvalidCIDError as exc:
                raise fields.fail(f"Hash is not a usable CID ({exc})") from None
        elif number == 2:
            _expect(fields, number, wire_type, _LENGTH_DELIMITED)
            assert isinstance(value, bytes)
            try:
                name = value.decode("utf-8")
            except UnicodeDecodeError:
                raise fields.fail("Name is not valid UTF-8") from None
        elif number == 3:
            _expect(fields, number, wire_type, _VARINT)
            assert isinstance(value, int)
            tsize = value
        else:
            raise fields.fail(f"unknown field {number}")
    if cid is None:
        raise fields.fail("no Hash")
    return PBLink(cid, name, tsize)


def decode_node(block: bytes | memoryview, what: str = "dag-pb block") -> PBNode:
    """A dag-pb node from its bytes, strictly: links before data, no unknown or repeated
    fields, links sorted by name bytes. Raises DagFormatError naming ``what``."""
    return _NODES.decode(block, what, _decode_node)


def _decode_node(block: bytes | memoryview, what: str) -> PBNode:
    fields = _Fields(block, what)
    links: list[PBLink] = []
    data: bytes | None = None
    for number, wire_type, value in fields:
        if number == 2:
            _expect(fields, number, wire_type, _LENGTH_DELIMITED)
            if data is not None:
                raise fields.fail("a link follows Data (not canonical dag-pb)")
            assert isinstance(value, bytes)
            links.append(_decode_link(value, f"{what}, link {len(links)}"))
        elif number == 1:
            _expect(fields, number, wire_type, _LENGTH_DELIMITED)
            if data is not None:
                raise fields.fail("Data repeated")
            assert isinstance(value, bytes)
            data = value
        else:
            raise fields.fail(f"unknown field {number}")
    names = [(link.name or "").encode("utf-8") for link in links]
    if any(later < earlier for earlier, later in itertools.pairwise(names)):
        raise DagFormatError(f"{what}: links are not sorted by name bytes")
    return PBNode(data, tuple(links))


def decode_unixfs(data: bytes | memoryview, what: str = "UnixFS Data") -> UnixFSData:
    """The UnixFS message of a dag-pb node's Data; DagFormatError when it is not one."""
    return _UNIXFS.decode(data, what, _decode_unixfs)


def _decode_unixfs(data: bytes | memoryview, what: str) -> UnixFSData:
    fields = _Fields(data, what)
    values: dict[int, int | bytes] = {}
    blocksizes: list[int] = []
    mtime: tuple[int, int | None] | None = None
    wire_types = {1: _VARINT, 2: _LENGTH_DELIMITED, 3: _VARINT, 4: _VARINT, 5: _VARINT,
                  6: _VARINT, 7: _VARINT, 8: _LENGTH_DELIMITED}
    for number, wire_type, value in fields:
        if number not in wire_types:
            raise fields.fail(f"unknown field {number}")
        _expect(fields, number, wire_type, wire_types[number])
        if number == 4:
            assert isinstance(value, int)
            blocksizes.append(value)
        elif number in values:
            raise fields.fail(f"field {number} repeated")
        elif number == 8:
            assert isinstance(value, bytes)
            mtime = _decode_mtime(value, what)
            values[number] = value
        else:
            values[number] = value
    kind = values.get(1)
    if not isinstance(kind, int):
        raise fields.fail("no Type")
    if kind > UnixFSType.HAMT_SHARD:
        raise fields.fail(f"unknown Type {kind}")

    def number_field(number: int) -> int | None:
        value = values.get(number)
        return value if isinstance(value, int) else None

    payload = values.get(2)
    return UnixFSData(
        type=kind,
        data=payload if isinstance(payload, bytes) else None,
        filesize=number_field(3),
        blocksizes=tuple(blocksizes),
        hash_type=number_field(5),
        fanout=number_field(6),
        mode=number_field(7),
        mtime=mtime,
    )


def _decode_mtime(payload: bytes, what: str) -> tuple[int, int | None]:
    fields = _Fields(payload, f"{what}, mtime")
    seconds = 0
    nanoseconds: int | None = None
    for number, wire_type, value in fields:
        assert isinstance(value, int | bytes)
        if number == 1 and wire_type == _VARINT and isinstance(value, int):
            seconds = value - 2**64 if value >= 2**63 else value
        elif number == 2 and wire_type == _FIXED32 and isinstance(value, int):
            nanoseconds = value
        else:
            raise fields.fail(f"unexpected field {number} (wire type {wire_type})")
    return seconds, nanoseconds
