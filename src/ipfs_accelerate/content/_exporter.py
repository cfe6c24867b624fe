"""Reading UnixFS back out of a blockstore: file bytes, directory listings, whole trees.

Every block comes from the blockstore (which verified it against its CID on the way in); on
top of that each File node's ``blocksizes`` must agree with what its children hold, so a DAG
whose structure lies about sizes is refused rather than read short or long.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final, Literal

from ipfs_accelerate.content._blockstore import Blockstore
from ipfs_accelerate.content._cid import CID, DAG_PB, RAW
from ipfs_accelerate.content._dagpb import (
    PBNode,
    UnixFSData,
    UnixFSType,
    decode_node,
    decode_unixfs,
)
from ipfs_accelerate.content._hamt import MURMUR3_X64_64
from ipfs_accelerate.errors import ContentError, DagFormatError

__all__ = ["iter_directory", "iter_file", "walk"]

_MAX_DEPTH: Final = 64  # far deeper than any balanced DAG or HAMT of a real tree
#: directories nested in one tree (each level is a frame of the walk's recursion); real
#: checkpoints nest a few levels, and the fetch's own max_depth limit is usually far lower
_MAX_WALK_DEPTH: Final = 256
#: HAMT fanouts in use are 256 (kubo, helia) and 1,024; a peer's 2**40 is refused
_MAX_FANOUT: Final = 1 << 16
_HEX: Final = frozenset("0123456789ABCDEF")


def _load(blocks: Blockstore, cid: CID) -> tuple[PBNode, UnixFSData]:
    node = decode_node(blocks.get(cid), f"block {cid}")
    if node.data is None:
        raise DagFormatError(f"block {cid}: dag-pb node without UnixFS Data")
    return node, decode_unixfs(node.data, f"block {cid}, UnixFS Data")


def iter_file(blocks: Blockstore, cid: CID) -> Iterator[bytes]:
    """The bytes of the UnixFS file ``cid``, chunk by chunk."""
    yield from _file(blocks, cid, 0)


def _file(blocks: Blockstore, cid: CID, depth: int) -> Iterator[bytes]:
    if depth > _MAX_DEPTH:
        raise DagFormatError(f"block {cid}: file DAG deeper than {_MAX_DEPTH} levels")
    if cid.codec == RAW:
        yield blocks.get(cid)
        return
    node, unixfs = _load(blocks, cid)
    if unixfs.type not in (UnixFSType.FILE, UnixFSType.RAW):
        raise ContentError(f"block {cid}: UnixFS type {unixfs.type} is not a file")
    if unixfs.data:
        yield unixfs.data
    if len(unixfs.blocksizes) != len(node.links):
        raise DagFormatError(
            f"block {cid}: {len(node.links)} links but {len(unixfs.blocksizes)} blocksizes"
        )
    for link, expected in zip(node.links, unixfs.blocksizes, strict=True):
        produced = 0
        for chunk in _file(blocks, link.cid, depth + 1):
            produced += len(chunk)
            if produced > expected:
                break
            yield chunk
        if produced != expected:
            held = produced if produced <= expected else "more"
            raise DagFormatError(
                f"block {cid}: child {link.cid} holds {held} bytes, "
                f"its parent's blocksize says {expected}"
            )


def iter_directory(blocks: Blockstore, cid: CID) -> Iterator[tuple[str, CID]]:
    """``(name, cid)`` of each entry of the UnixFS directory ``cid`` (flat or HAMT-sharded)."""
    node, unixfs = _load(blocks, cid)
    if unixfs.type == UnixFSType.DIRECTORY:
        for link in node.links:
            yield link.name or "", link.cid
    elif unixfs.type == UnixFSType.HAMT_SHARD:
        yield from _shard(blocks, cid, node, unixfs, 0)
    else:
        raise ContentError(f"block {cid}: UnixFS type {unixfs.type} is not a directory")


def _shard(
    blocks: Blockstore,
    cid: CID,
    node: PBNode,
    unixfs: UnixFSData,
    depth: int,
    seen: set[bytes] | None = None,
) -> Iterator[tuple[str, CID]]:
    if depth > _MAX_DEPTH:
        raise DagFormatError(f"block {cid}: HAMT deeper than {_MAX_DEPTH} levels")
    if unixfs.hash_type != MURMUR3_X64_64:
        raise DagFormatError(
            f"block {cid}: HAMT hash function {unixfs.hash_type} is not murmur3-x64-64 (0x22)"
        )
    fanout = unixfs.fanout or 0
    if fanout < 2 or fanout & (fanout - 1) or fanout > _MAX_FANOUT:
        raise DagFormatError(
            f"block {cid}: HAMT fanout {fanout} is not a power of two in [2, {_MAX_FANOUT}]"
        )
    bitfield = int.from_bytes(unixfs.data or b"", "big")
    if bitfield >> fanout or bitfield.bit_count() != len(node.links):
        raise DagFormatError(
            f"block {cid}: HAMT bitfield marks {bitfield.bit_count()} slot(s) (highest "
            f"{bitfield.bit_length() - 1}) for {len(node.links)} link(s) of fanout {fanout}"
        )
    # a sub-shard is a distinct set of names: one linked twice (from two slots or two levels)
    # would list its entries again for each link, fanout^depth entries from a few blocks
    seen = set() if seen is None else seen
    width = len(f"{fanout - 1:X}")
    used: set[int] = set()
    for link in node.links:
        name = link.name or ""
        label = name[:width]
        if len(label) < width or not all(c in _HEX for c in label):
            raise DagFormatError(f"block {cid}: HAMT link name {name!r} has no slot label")
        slot = int(label, 16)
        if slot >= fanout or not bitfield >> slot & 1 or slot in used:
            raise DagFormatError(
                f"block {cid}: HAMT link {name!r} is in slot {slot}, which the bitfield does "
                f"not mark, lies outside fanout {fanout} or another link holds"
            )
        used.add(slot)
        if len(name) == width:
            if link.cid.digest in seen:
                raise DagFormatError(
                    f"block {cid}: HAMT sub-shard {link.cid} is linked more than once"
                )
            seen.add(link.cid.digest)
            child, child_data = _load(blocks, link.cid)
            if child_data.type != UnixFSType.HAMT_SHARD:
                raise DagFormatError(f"block {link.cid}: HAMT sub-shard is not a HAMT node")
            yield from _shard(blocks, link.cid, child, child_data, depth + 1, seen)
        else:
            yield name[width:], link.cid


def walk(
    blocks: Blockstore, cid: CID, path: str = ""
) -> Iterator[tuple[str, CID, Literal["file", "directory"]]]:
    """Every entry under ``cid`` (depth first, the root first as ``""``)."""
    depth = path.count("/") + 1 if path else 0
    if depth > _MAX_WALK_DEPTH:
        raise DagFormatError(
            f"block {cid}: directory tree deeper than {_MAX_WALK_DEPTH} levels (at {path[:200]!r})"
        )
    kind: Literal["file", "directory"] = "file"
    if cid.codec == DAG_PB:
        _, unixfs = _load(blocks, cid)
        if unixfs.type in (UnixFSType.DIRECTORY, UnixFSType.HAMT_SHARD):
            kind = "directory"
    yield path, cid, kind
    if kind == "directory":
        seen: set[str] = set()
        for name, child in iter_directory(blocks, cid):
            if not name or "/" in name or "\0" in name or name in (".", ".."):
                raise DagFormatError(f"block {cid}: directory entry name {name!r} is unsafe")
            # a name twice would leave which entry ends up on disk to the order of writing
            if name in seen:
                raise DagFormatError(f"block {cid}: directory entry name {name!r} is repeated")
            seen.add(name)
            yield from walk(blocks, child, f"{path}/{name}" if path else name)
