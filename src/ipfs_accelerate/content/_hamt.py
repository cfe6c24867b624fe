"""HAMT-sharded UnixFS directories (UnixFS spec, ``HAMTShard``; IPIP-499's v1 profile).

The hash is murmur3-x64-64 (multicodec 0x22): the first 64 bits (``h1``) of MurmurHash3
x64_128 with seed 0 over the entry name's UTF-8 bytes. Each level of the trie consumes
log2(fanout) bits of it, most significant first; past 64 bits the name is hashed again with
the depth appended as one byte (what go-unixfs and the JS importer do). A slot holds one entry
until a second name lands on it, then a sub-shard. Link names are the slot index in upper-case
hex (padded to the width of ``fanout - 1``), followed by the entry's name for entries; the
node's Data carries the occupied-slot bitfield as a minimal big-endian integer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Final

from ipfs_accelerate.content._cid import CID
from ipfs_accelerate.content._dagpb import PBLink, UnixFSData, UnixFSType, encode_unixfs

__all__ = ["MURMUR3_X64_64", "build_shard", "murmur3_x64_64"]

MURMUR3_X64_64: Final = 0x22
_MASK64: Final = (1 << 64) - 1
_C1: Final = 0x87C37B91114253D5
_C2: Final = 0x4CF5AD432745937F


def _rotl(value: int, shift: int) -> int:
    return ((value << shift) | (value >> (64 - shift))) & _MASK64


def _fmix(value: int) -> int:
    value ^= value >> 33
    value = (value * 0xFF51AFD7ED558CCD) & _MASK64
    value ^= value >> 33
    value = (value * 0xC4CEB9FE1A85EC53) & _MASK64
    return value ^ (value >> 33)


def murmur3_x64_64(data: bytes) -> int:
    """``h1`` of MurmurHash3 x64_128 (seed 0) as an unsigned 64-bit integer."""
    h1 = h2 = 0
    length = len(data)
    whole = length - length % 16
    for start in range(0, whole, 16):
        k1 = int.from_bytes(data[start : start + 8], "little")
        k2 = int.from_bytes(data[start + 8 : start + 16], "little")
        h1 ^= _rotl((k1 * _C1) & _MASK64, 31) * _C2 & _MASK64
        h1 = (_rotl(h1, 27) + h2) & _MASK64
        h1 = (h1 * 5 + 0x52DCE729) & _MASK64
        h2 ^= _rotl((k2 * _C2) & _MASK64, 33) * _C1 & _MASK64
        h2 = (_rotl(h2, 31) + h1) & _MASK64
        h2 = (h2 * 5 + 0x38495AB5) & _MASK64
    tail = data[whole:]
    if len(tail) > 8:
        k2 = int.from_bytes(tail[8:], "little")
        h2 ^= _rotl((k2 * _C2) & _MASK64, 33) * _C1 & _MASK64
    if tail:
        k1 = int.from_bytes(tail[:8], "little")
        h1 ^= _rotl((k1 * _C1) & _MASK64, 31) * _C2 & _MASK64
    h1 ^= length
    h2 ^= length
    h1 = (h1 + h2) & _MASK64
    h2 = (h2 + h1) & _MASK64
    h1 = _fmix(h1)
    h2 = _fmix(h2)
    return (h1 + h2) & _MASK64


class _HashBits:
    """The infinite bit stream of a name: h1(name), h1(name + b"\\x01"), ... MSB first."""

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.words: list[int] = []

    def take(self, level: int, bits: int) -> int:
        start = level * bits
        end = start + bits
        while len(self.words) * 64 < end:
            depth = len(self.words)
            value = self.name if depth == 0 else self.name + bytes((depth,))
            self.words.append(murmur3_x64_64(value))
        stream = 0
        first_word, last_word = start // 64, (end - 1) // 64
        for word in self.words[first_word : last_word + 1]:
            stream = (stream << 64) | word
        shift = (last_word + 1) * 64 - end
        return (stream >> shift) & ((1 << bits) - 1)


@dataclass(slots=True)
class ShardEntry:
    name: str
    cid: CID
    size: int
    hash: _HashBits


@dataclass(slots=True)
class _Bucket:
    slots: dict[int, ShardEntry | _Bucket] = field(default_factory=dict)


def _put(bucket: _Bucket, entry: ShardEntry, level: int, bits: int) -> None:
    index = entry.hash.take(level, bits)
    held = bucket.slots.get(index)
    if held is None:
        bucket.slots[index] = entry
    elif isinstance(held, _Bucket):
        _put(held, entry, level + 1, bits)
    else:
        child = _Bucket()
        bucket.slots[index] = child
        _put(child, held, level + 1, bits)
        _put(child, entry, level + 1, bits)


def build_shard(
    entries: list[tuple[str, CID, int]],
    fanout: int,
    store: Callable[[bytes, list[PBLink]], tuple[CID, int]],
) -> tuple[CID, int]:
    """The root of a HAMT over ``entries`` (name, cid, dag size); ``store`` writes one node
    (UnixFS data bytes, links) and returns its CID and cumulative DAG size."""
    bits = fanout.bit_length() - 1
    root = _Bucket()
    for name, cid, size in entries:
        _put(root, ShardEntry(name, cid, size, _HashBits(name.encode("utf-8"))), 0, bits)
    width = len(f"{fanout - 1:X}")
    return _flush(root, fanout, width, store)


def _flush(
    bucket: _Bucket,
    fanout: int,
    width: int,
    store: Callable[[bytes, list[PBLink]], tuple[CID, int]],
) -> tuple[CID, int]:
    links: list[PBLink] = []
    bitfield = 0
    for index in sorted(bucket.slots):
        bitfield |= 1 << index
        label = f"{index:0{width}X}"
        held = bucket.slots[index]
        if isinstance(held, _Bucket):
            cid, size = _flush(held, fanout, width, store)
            links.append(PBLink(cid, label, size))
        else:
            links.append(PBLink(held.cid, label + held.name, held.size))
    links.sort(key=lambda link: (link.name or "").encode("utf-8"))
    data = UnixFSData(
        type=UnixFSType.HAMT_SHARD,
        data=bitfield.to_bytes(max(1, (bitfield.bit_length() + 7) // 8), "big"),
        hash_type=MURMUR3_X64_64,
        fanout=fanout,
    )
    return store(encode_unixfs(data), links)
