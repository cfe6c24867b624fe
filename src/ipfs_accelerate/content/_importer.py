"""UnixFS import: files and directories into dag-pb DAGs, as ``ipfs add`` builds them.

The two profiles are IPIP-499's. Files are cut in fixed-size chunks and laid out balanced:
leaves are grouped ``max_links`` at a time under a UnixFS ``File`` node, those nodes again
``max_links`` at a time, until one root remains; a file of one chunk is that chunk's leaf
itself. Directories are flat dag-pb nodes until their links would exceed the profile's shard
threshold, then HAMT shards (see _hamt.py).

Everything streams: a file is read one chunk at a time into one reused buffer, and each block
is handed to the blockstore (or dropped when only the CID is wanted) as soon as it is hashed,
so memory stays at one chunk plus one list of link records per tree level.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import BinaryIO, Final, Literal

from ipfs_accelerate.content._cid import CID, DAG_PB, RAW
from ipfs_accelerate.content._dagpb import (
    PBLink,
    UnixFSData,
    UnixFSType,
    encode_node,
    encode_unixfs,
)
from ipfs_accelerate.content._hamt import build_shard
from ipfs_accelerate.content._limits import DEFAULT_LIMITS, DirectoryLimits, LimitCounter
from ipfs_accelerate.errors import ContentError, InvalidArgumentError

__all__ = [
    "PROFILES",
    "DirectoryImport",
    "ImportedEntry",
    "Profile",
    "import_bytes",
    "import_directory",
    "import_file",
    "resolve_profile",
]

MAX_CHUNK_SIZE: Final = 2 * 1024 * 1024  # bitswap's largest block: bigger chunks cannot travel
MAX_LINKS: Final = 65_536
BlockSink = Callable[[CID, bytes], None]


@dataclass(frozen=True, slots=True)
class Profile:
    """The DAG-building parameters a CID depends on.

    ``shard_split_strategy`` is how a directory's size is measured against
    ``shard_threshold``: ``links-bytes`` sums each file link's name and CID byte lengths
    (kubo's historical estimate), ``block-bytes`` is the exact encoded size of the flat node.
    As in the reference importer, links to sub-directories that hold entries count for 0.
    """

    name: str
    cid_version: int
    raw_leaves: bool
    chunk_size: int
    max_links: int
    shard_split_strategy: Literal["links-bytes", "block-bytes"]
    shard_threshold: int = 262_144
    shard_fanout: int = 256


PROFILES: Final[dict[str, Profile]] = {
    "unixfs-v0-2015": Profile("unixfs-v0-2015", 0, False, 262_144, 174, "links-bytes"),
    "unixfs-v1-2025": Profile("unixfs-v1-2025", 1, True, 1_048_576, 1_024, "block-bytes"),
}
DEFAULT_PROFILE: Final = "unixfs-v1-2025"


def resolve_profile(
    profile: str | Profile = DEFAULT_PROFILE,
    *,
    chunk_size: int | None = None,
    cid_version: int | None = None,
    raw_leaves: bool | None = None,
    max_links: int | None = None,
    shard_threshold: int | None = None,
) -> Profile:
    """``profile`` (a name in PROFILES or a Profile) with the given overrides, validated."""
    if isinstance(profile, Profile):
        base = profile
    elif isinstance(profile, str) and profile in PROFILES:
        base = PROFILES[profile]
    else:
        raise InvalidArgumentError(
            f"unknown UnixFS profile {profile!r}; expected one of {sorted(PROFILES)}"
        )
    overrides: dict[str, object] = {}
    if chunk_size is not None:
        _check_int("chunk_size", chunk_size, 1, MAX_CHUNK_SIZE)
        overrides["chunk_size"] = chunk_size
    if cid_version is not None:
        if cid_version not in (0, 1) or isinstance(cid_version, bool):
            raise InvalidArgumentError(f"cid_version must be 0 or 1, got {cid_version!r}")
        overrides["cid_version"] = cid_version
    if raw_leaves is not None:
        if not isinstance(raw_leaves, bool):
            raise InvalidArgumentError(f"raw_leaves must be a bool, got {raw_leaves!r}")
        overrides["raw_leaves"] = raw_leaves
    if max_links is not None:
        _check_int("max_links", max_links, 2, MAX_LINKS)
        overrides["max_links"] = max_links
    if shard_threshold is not None:
        _check_int("shard_threshold", shard_threshold, 0, 1 << 40)
        overrides["shard_threshold"] = shard_threshold
    if not overrides:
        return base
    return replace(base, name=f"{base.name}+custom", **overrides)  # type: ignore[arg-type]


def _check_int(name: str, value: object, low: int, high: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise InvalidArgumentError(f"{name} must be an integer in [{low}, {high}], got {value!r}")


@dataclass(frozen=True, slots=True)
class ImportedEntry:
    """One imported file or directory.

    ``path`` is relative to the imported root (``""`` for the root itself, ``/``-separated);
    ``dag_size`` is the cumulative size of its DAG (what a parent link's Tsize says);
    ``file_size`` the file's byte length (None for directories).
    """

    path: str
    cid: CID
    kind: Literal["file", "directory"]
    dag_size: int
    file_size: int | None = None


@dataclass(frozen=True, slots=True)
class DirectoryImport:
    """A directory import: its root and every file and sub-directory beneath it."""

    root: ImportedEntry
    entries: tuple[ImportedEntry, ...]

    def cid_of(self, path: str) -> CID:
        for entry in self.entries:
            if entry.path == path:
                return entry.cid
        raise ContentError(f"path {path!r} is not in the imported directory {self.root.cid}")


class _Builder:
    """Hashes blocks into CIDs and hands them to the sink."""

    def __init__(self, profile: Profile, sink: BlockSink | None) -> None:
        self.profile = profile
        self.sink = sink

    def put(self, block: bytes | memoryview, codec: int, version: int) -> CID:
        cid = CID(version, codec, hashlib.sha256(block).digest())
        if self.sink is not None:
            self.sink(cid, bytes(block))  # the chunk buffer is reused: the store gets a copy
        return cid

    def node(self, unixfs: bytes, links: list[PBLink]) -> tuple[CID, int]:
        block = encode_node(unixfs, links)
        cid = self.put(block, DAG_PB, self.profile.cid_version)
        return cid, len(block) + sum(link.tsize or 0 for link in links)


@dataclass(slots=True)
class _Child:
    """A file DAG node as its parent needs it: the link, its dag size, its file bytes."""

    cid: CID
    dag_size: int
    file_size: int


def _leaf(builder: _Builder, chunk: memoryview) -> _Child:
    if builder.profile.raw_leaves:
        cid = builder.put(chunk, RAW, 1)  # raw leaves are CIDv1 even under a CIDv0 root
        return _Child(cid, len(chunk), len(chunk))
    unixfs = encode_unixfs(UnixFSData(UnixFSType.FILE, bytes(chunk), filesize=len(chunk)))
    block = encode_node(unixfs)
    cid = builder.put(block, DAG_PB, builder.profile.cid_version)
    return _Child(cid, len(block), len(chunk))


def _parent(builder: _Builder, children: list[_Child]) -> _Child:
    links = [PBLink(child.cid, "", child.dag_size) for child in children if child.file_size]
    sizes = tuple(child.file_size for child in children if child.file_size)
    unixfs = encode_unixfs(UnixFSData(UnixFSType.FILE, filesize=sum(sizes), blocksizes=sizes))
    cid, dag_size = builder.node(unixfs, links)
    return _Child(cid, dag_size, sum(sizes))


def _read_chunks(stream: BinaryIO, chunk_size: int) -> Iterator[memoryview]:
    """Fixed-size chunks of ``stream`` in one reused buffer (consume each before the next);
    an empty stream gives one empty chunk, as the reference chunker does."""
    buffer = bytearray(chunk_size)
    view = memoryview(buffer)
    readinto = getattr(stream, "readinto", None)
    emitted = False
    while True:
        filled = 0
        while filled < chunk_size:
            if readinto is not None:
                got = readinto(view[filled:])
            else:
                data = stream.read(chunk_size - filled)
                got = len(data)
                view[filled : filled + got] = data
            if not got:
                break
            filled += got
        if filled or not emitted:
            yield view[:filled]
            emitted = True
        if filled < chunk_size:
            return


def _import_stream(stream: BinaryIO, builder: _Builder) -> _Child:
    return _import_chunks(_read_chunks(stream, builder.profile.chunk_size), builder)


def _memory_chunks(view: memoryview, chunk_size: int) -> Iterator[memoryview]:
    """Slices of ``view`` (no copies); an empty view is one empty chunk."""
    yield view[:chunk_size]
    for start in range(chunk_size, len(view), chunk_size):
        yield view[start : start + chunk_size]


def _import_chunks(chunks: Iterable[memoryview], builder: _Builder) -> _Child:
    max_links = builder.profile.max_links
    level: list[_Child] = []  # finished level-1 parents (or the lone first leaf)
    batch: list[_Child] = []
    count = 0
    for chunk in chunks:
        count += 1
        batch.append(_leaf(builder, chunk))
        if len(batch) == max_links:
            level.append(_parent(builder, batch))
            batch = []
    if count == 1:
        return batch[0]  # a one-chunk file is its leaf (the reference's reduceSingleLeafToSelf)
    if batch:
        level.append(_parent(builder, batch))
    while len(level) > 1:
        level = [
            _parent(builder, level[start : start + max_links])
            for start in range(0, len(level), max_links)
        ]
    return level[0]


def import_file(
    source: str | os.PathLike[str] | BinaryIO,
    *,
    profile: str | Profile = DEFAULT_PROFILE,
    blockstore: BlockSink | None = None,
    chunk_size: int | None = None,
    cid_version: int | None = None,
    raw_leaves: bool | None = None,
    max_links: int | None = None,
) -> ImportedEntry:
    """Import one file (a path or a binary stream read to its end) as ``ipfs add`` would
    with ``profile``; its blocks go to ``blockstore`` (a callable ``(cid, bytes)``, e.g.
    ``MemoryBlockstore().put``) when given. Returns the file's root entry."""
    chosen = resolve_profile(
        profile, chunk_size=chunk_size, cid_version=cid_version, raw_leaves=raw_leaves,
        max_links=max_links,
    )
    builder = _Builder(chosen, blockstore)
    if isinstance(source, str | os.PathLike):
        path = Path(source)
        try:
            with path.open("rb", buffering=0) as stream:
                root = _import_stream(stream, builder)  # type: ignore[arg-type]
        except OSError as exc:
            raise ContentError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
    elif hasattr(source, "read"):
        root = _import_stream(source, builder)
    else:
        raise InvalidArgumentError(
            f"import_file: expected a path or a binary stream, got {type(source).__name__}"
        )
    return ImportedEntry("", root.cid, "file", root.dag_size, root.file_size)


def import_bytes(
    data: bytes | bytearray | memoryview,
    *,
    profile: str | Profile = DEFAULT_PROFILE,
    blockstore: BlockSink | None = None,
    chunk_size: int | None = None,
    cid_version: int | None = None,
    raw_leaves: bool | None = None,
    max_links: int | None = None,
) -> ImportedEntry:
    """:func:`import_file` of bytes already in memory (hashed in place, without copies)."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidArgumentError(
            f"import_bytes: expected bytes, got {type(data).__name__}"
        )
    chosen = resolve_profile(
        profile, chunk_size=chunk_size, cid_version=cid_version, raw_leaves=raw_leaves,
        max_links=max_links,
    )
    view = memoryview(data).cast("B")
    root = _import_chunks(_memory_chunks(view, chosen.chunk_size), _Builder(chosen, blockstore))
    return ImportedEntry("", root.cid, "file", root.dag_size, root.file_size)


# ------------------------------------------------------------------------------ directories


@dataclass(slots=True)
class _DirChild:
    name: str
    entry: ImportedEntry
    counts_for_shard: bool  # the reference's size estimate skips directories with entries


def _varint_size(value: int) -> int:
    return max(1, (value.bit_length() + 6) // 7)


def _link_block_bytes(name_size: int, cid_size: int, tsize: int) -> int:
    inner = 1 + _varint_size(cid_size) + cid_size
    inner += 1 + _varint_size(name_size) + name_size
    inner += 1 + _varint_size(tsize)
    return 1 + _varint_size(inner) + inner


def _should_shard(profile: Profile, children: list[_DirChild]) -> bool:
    counted = [child for child in children if child.counts_for_shard]
    if profile.shard_split_strategy == "links-bytes":
        size = sum(
            len(child.name.encode("utf-8")) + len(child.entry.cid.binary) for child in counted
        )
    else:
        size = 4 + sum(  # 4: the Data field of a plain directory, 0a 02 08 01
            _link_block_bytes(
                len(child.name.encode("utf-8")), len(child.entry.cid.binary), child.entry.dag_size
            )
            for child in counted
        )
    return size > profile.shard_threshold


def _directory_node(
    builder: _Builder, path: str, children: list[_DirChild]
) -> ImportedEntry:
    if children and _should_shard(builder.profile, children):
        cid, size = build_shard(
            [(child.name, child.entry.cid, child.entry.dag_size) for child in children],
            builder.profile.shard_fanout,
            builder.node,
        )
        return ImportedEntry(path, cid, "directory", size)
    links = sorted(
        (PBLink(child.entry.cid, child.name, child.entry.dag_size) for child in children),
        key=lambda link: (link.name or "").encode("utf-8"),
    )
    cid, size = builder.node(encode_unixfs(UnixFSData(UnixFSType.DIRECTORY)), links)
    return ImportedEntry(path, cid, "directory", size)


def import_directory(
    source: str | os.PathLike[str],
    *,
    profile: str | Profile = DEFAULT_PROFILE,
    blockstore: BlockSink | None = None,
    chunk_size: int | None = None,
    cid_version: int | None = None,
    raw_leaves: bool | None = None,
    max_links: int | None = None,
    shard_threshold: int | None = None,
    limits: DirectoryLimits = DEFAULT_LIMITS,
) -> DirectoryImport:
    """Import a directory tree as ``ipfs add -r`` would with ``profile``.

    Every entry is included (hidden files too); symbolic links are followed, so a Hugging
    Face snapshot (a directory of links to blobs) imports as the files it shows. Names must
    be valid UTF-8; a link loop, a special file or an unreadable entry raises ContentError
    naming the path. A tree above ``limits`` (entries, total file bytes, depth) raises
    ContentLimitError naming the directory, before the file that crosses it is read.
    """
    counter = LimitCounter(limits, f"directory {str(source)!r}")
    chosen = resolve_profile(
        profile, chunk_size=chunk_size, cid_version=cid_version, raw_leaves=raw_leaves,
        max_links=max_links, shard_threshold=shard_threshold,
    )
    root_path = Path(source)
    try:
        root_stat = root_path.stat()
    except OSError as exc:
        raise ContentError(f"cannot read {str(root_path)!r}: {exc.strerror or exc}") from None
    if not stat.S_ISDIR(root_stat.st_mode):
        raise ContentError(f"{str(root_path)!r} is not a directory")
    builder = _Builder(chosen, blockstore)
    entries: list[ImportedEntry] = []
    root, _ = _import_tree(
        builder, root_path, "", {(root_stat.st_dev, root_stat.st_ino)}, entries, counter
    )
    return DirectoryImport(root, tuple(entries))


def _import_tree(
    builder: _Builder,
    directory: Path,
    relative: str,
    ancestors: set[tuple[int, int]],
    entries: list[ImportedEntry],
    counter: LimitCounter,
) -> tuple[ImportedEntry, int]:
    """The directory's entry and how many children it has."""
    try:
        names = sorted(os.listdir(directory))
    except OSError as exc:
        raise ContentError(f"cannot list {str(directory)!r}: {exc.strerror or exc}") from None
    children: list[_DirChild] = []
    for name in names:
        path = directory / name
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            raise ContentError(f"{str(path)!r}: the name is not valid UTF-8") from None
        child_relative = f"{relative}/{name}" if relative else name
        try:
            info = path.stat()
        except OSError as exc:
            raise ContentError(f"cannot read {str(path)!r}: {exc.strerror or exc}") from None
        counter.entry(child_relative, child_relative.count("/") + 1)
        if stat.S_ISDIR(info.st_mode):
            key = (info.st_dev, info.st_ino)
            if key in ancestors:
                raise ContentError(f"{str(path)!r}: symbolic link loop back to an ancestor")
            entry, count = _import_tree(
                builder, path, child_relative, ancestors | {key}, entries, counter
            )
            children.append(_DirChild(name, entry, count == 0))
        elif stat.S_ISREG(info.st_mode):
            counter.file_bytes(child_relative, info.st_size)
            try:
                with path.open("rb", buffering=0) as stream:
                    node = _import_stream(stream, builder)  # type: ignore[arg-type]
            except OSError as exc:
                reason = exc.strerror or exc
                raise ContentError(f"cannot read {str(path)!r}: {reason}") from None
            entry = ImportedEntry(child_relative, node.cid, "file", node.dag_size, node.file_size)
            entries.append(entry)
            children.append(_DirChild(name, entry, True))
        else:
            raise ContentError(f"{str(path)!r} is neither a regular file nor a directory")
    directory_entry = _directory_node(builder, relative, children)
    entries.append(directory_entry)
    return directory_entry, len(children)
