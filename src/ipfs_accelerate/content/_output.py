"""The writing side of a fetch: how verified blocks become files at the destination.

A fetch works in a staging folder beside the destination, locked while it runs
(:func:`_claim_staging`) so a later fetch can sweep the folders of dead ones
(:func:`_sweep_dead_stagings`). In it, :class:`_Sink` writes verified leaves straight into
staged files at their offsets as they arrive (each :class:`_Place` says where a block
belongs), and :class:`_Exporter` lays every file out again from the verified DAG, writes the
pieces still missing and renames the tree into place; the listing helpers record what the
cache's copy of a CID looked like when written, so a copy changed since is rewritten rather
than served. Split out of :mod:`._fetch` (which fetches and verifies the blocks and hands
them here) so each module stays within the house's length; nothing here makes a request.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Generator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ipfs_accelerate.content._blockstore import FilesystemBlockstore
from ipfs_accelerate.content._cid import CID, RAW, verify_block
from ipfs_accelerate.content._dagpb import (
    PBNode,
    UnixFSData,
    UnixFSType,
    decode_node,
    decode_unixfs,
)
from ipfs_accelerate.content._exporter import walk
from ipfs_accelerate.content._limits import LimitCounter
from ipfs_accelerate.errors import BlockVerificationError, ContentError, DagFormatError

_COPY_FILE_RANGE: Final = hasattr(os, "copy_file_range")
#: pieces of a file laid out and written at a time (memory stays bounded whatever a DAG's
#: links multiply to)
_WRITE_BATCH: Final = 4096
_STAGING_PREFIX: Final = ".ipfs-fetch.partial-"
#: in each staging folder, locked by its fetch while it runs (see _sweep_dead_stagings)
_STAGING_LOCK: Final = ".owner.lock"
#: a staging folder without a lock file older than this is a fetch that died creating it
_UNLOCKED_STAGING_AGE: Final = 3600.0


def _claim_staging(staging: Path) -> int:
    """Hold a lock on ``staging`` for the fetch's lifetime: the kernel drops it when the
    process dies however it dies, which is how a later fetch tells the folder is orphaned."""
    # Locked under another name and renamed into place (a lock is the inode's, so it moves
    # with it): a sweeping fetch that found the lock file between its creation and its
    # locking would take the lock itself and delete a live fetch's folder.
    pending = staging / f"{_STAGING_LOCK}.new"
    owner = os.open(pending, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.rename(pending, staging / _STAGING_LOCK)
    except BaseException:
        os.close(owner)
        raise
    return owner


def _sweep_dead_stagings(parent: Path) -> None:
    """Remove the staging folders in ``parent`` that fetches killed mid-way left (a partial
    checkpoint can be gigabytes); a live fetch's lock keeps its own."""
    for staging in parent.glob(f"{_STAGING_PREFIX}*"):
        try:
            owner = os.open(staging / _STAGING_LOCK, os.O_RDWR)
        except FileNotFoundError:
            # just created and not locked yet, or its fetch died before locking: by age
            with suppress(OSError):
                if time.time() - staging.stat().st_mtime > _UNLOCKED_STAGING_AGE:
                    shutil.rmtree(staging, ignore_errors=True)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(owner)
            continue  # its fetch is running
        try:
            shutil.rmtree(staging, ignore_errors=True)
        finally:
            os.close(owner)


@dataclass(frozen=True, slots=True)
class _Place:
    """Where a block belongs in the output: the entry at ``path`` (relative to the target,
    ``""`` for the target itself) whose kind its own node will tell (``staged`` None), or
    ``size`` bytes at ``offset`` of the staged file ``staged``."""

    path: str
    staged: int | None = None
    offset: int = 0
    size: int | None = None


class _Sink:
    """Where the output is assembled, in a staging folder beside its destination: each file
    of the DAG is first a staged file that verified blocks are written into at their offsets
    as they arrive; the export moves it into the tree, writes what is still missing and
    renames the tree into place once the whole DAG has checked out. So a leaf's bytes are
    written once, not into the block cache and then copied out of it again.

    Leaves written here are not in the block cache: :meth:`read_back` reads one back
    (hashed again), :meth:`keep` puts them in the cache when the fetch fails (so a resumed
    fetch has them) and :meth:`copies` says where they are once the output is in place (the
    cache records those places, see :meth:`FilesystemBlockstore.record_copies`)."""

    def __init__(self, staging: Path) -> None:
        self.root = staging / "root"
        self._staged_dir = staging / "files"
        self.staged: dict[tuple[str, bytes], int] = {}  # (path, file digest) -> staged id
        self.locations: list[Path] = []  # staged id -> where that file is now
        self.relative: list[str | None] = []  # staged id -> its path, once moved into the tree
        self.written: dict[tuple[int, int], CID] = {}  # (staged id, offset) -> block there
        self.leaves: dict[bytes, tuple[CID, int, int, int]] = {}  # cid, staged, offset, size
        self._handles: dict[int, int] = {}
        self._lock = threading.Lock()

    def target(self, path: str) -> Path:
        return self.root / path if path else self.root

    def stage(self, path: str, owner: bytes) -> int:
        """The staged file of the file ``owner`` at ``path`` (created on first use)."""
        with self._lock:
            held = self.staged.get((path, owner))
            if held is not None:
                return held
            number = len(self.locations)
            self._staged_dir.mkdir(parents=True, exist_ok=True)
            location = self._staged_dir / str(number)
            self._handles[number] = os.open(location, os.O_WRONLY | os.O_CREAT, 0o644)
            self.locations.append(location)
            self.relative.append(None)
            self.staged[(path, owner)] = number
            return number

    def write(self, staged: int, offset: int, cid: CID, data: bytes | memoryview) -> None:
        with self._lock:
            handle = self._handles[staged]
        os.pwrite(handle, data, offset)
        with self._lock:
            self.written[(staged, offset)] = cid
            if cid.codec == RAW:
                self.leaves.setdefault(cid.digest, (cid, staged, offset, len(data)))

    def holds(self, staged: int, offset: int, digest: bytes) -> bool:
        held = self.written.get((staged, offset))
        return held is not None and held.digest == digest

    def move(self, staged: int, relative: str) -> Path:
        """Move a staged file to its place in the tree."""
        target = self.target(relative)
        os.replace(self.locations[staged], target)
        self.locations[staged] = target
        self.relative[staged] = relative
        return target

    def read_back(self, cid: CID) -> bytes | None:
        """A leaf written here, hashed again (None when it is not, or no longer, here)."""
        held = self.leaves.get(cid.digest)
        if held is None:
            return None
        _, staged, offset, size = held
        try:
            with self.locations[staged].open("rb") as stream:
                stream.seek(offset)
                data = stream.read(size)
            verify_block(cid, data)
        except (OSError, BlockVerificationError):
            return None
        return data

    def keep(self, store: FilesystemBlockstore) -> None:
        """Put every leaf written here into the block cache (the fetch did not complete)."""
        self.close()
        for cid, *_ in list(self.leaves.values()):
            data = self.read_back(cid)
            if data is not None:
                store.put_hashed(cid, data)

    def copies(self, out: Path) -> list[tuple[CID, Path, int, int]]:
        """Where each leaf written here is once the tree is renamed to ``out``."""
        places = []
        for (staged, offset), cid in self.written.items():
            relative = self.relative[staged]
            if cid.codec == RAW and relative is not None:
                path = out / relative if relative else out
                places.append((cid, path, offset, self.leaves[cid.digest][3]))
        return places

    def close(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                os.close(handle)
            self._handles.clear()


def _wait_all(futures: list[Future[Any]]) -> None:
    """Wait for every future; the first failure (in order) is raised after the rest are
    cancelled or finished, so no request outlives the call."""
    error: BaseException | None = None
    for future in futures:
        if future.cancelled():
            continue
        try:
            future.result()
        except BaseException as exc:
            if error is None:
                error = exc
                for other in futures:
                    other.cancel()
    if error is not None:
        raise error


@dataclass(frozen=True, slots=True)
class _Piece:
    """Bytes of a file at ``offset``: a raw leaf, or the data inlined in a dag-pb node."""

    cid: CID
    offset: int
    size: int
    inline: bool


class _Exporter:
    """Writes UnixFS content from the blockstore. A file is laid out first (its dag-pb nodes
    read, each child's bytes checked against its parent's ``blocksizes``, as
    :func:`iter_file` does), then its pieces are written at their offsets in parallel. A
    block this run hashed and wrote itself is not hashed again; any other is."""

    def __init__(
        self,
        store: FilesystemBlockstore,
        verified: set[bytes],
        pool: ThreadPoolExecutor,
        sink: _Sink,
        counter: LimitCounter,
    ) -> None:
        self.store = store
        self.verified = verified
        self.pool = pool
        self.sink = sink
        self.counter = counter

    def read(self, cid: CID) -> bytes:
        if cid.digest in self.sink.leaves:
            data = self.sink.read_back(cid)
            if data is not None:
                return data
        return self.store.get(cid, verify=cid.digest not in self.verified)

    def read_size(self, cid: CID) -> int:
        """The size of a raw block held (without reading a cached block file)."""
        if cid.digest not in self.sink.leaves:
            try:
                return self.store.path_of(cid).stat().st_size
            except OSError:
                pass
        return len(self.read(cid))

    def _node(self, cid: CID) -> tuple[PBNode, UnixFSData]:
        node = decode_node(self.read(cid), f"block {cid}")
        if node.data is None:
            raise DagFormatError(f"block {cid}: dag-pb node without UnixFS Data")
        unixfs = decode_unixfs(node.data, f"block {cid}, UnixFS Data")
        if unixfs.type not in (UnixFSType.FILE, UnixFSType.RAW):
            raise ContentError(f"block {cid}: UnixFS type {unixfs.type} is not a file")
        if len(unixfs.blocksizes) != len(node.links):
            raise DagFormatError(
                f"block {cid}: {len(node.links)} links but {len(unixfs.blocksizes)} blocksizes"
            )
        return node, unixfs

    def _layout(self, cid: CID, offset: int, depth: int) -> Generator[_Piece, None, int]:
        """The file's pieces, lazily (a DAG may link one block many times, so a few blocks
        can declare any number of pieces); returns the bytes they hold."""
        if depth > 64:
            raise DagFormatError(f"block {cid}: file DAG deeper than 64 levels")
        node, unixfs = self._node(cid)
        size = 0
        if unixfs.data:
            yield _Piece(cid, offset, len(unixfs.data), True)
            size = len(unixfs.data)
        for link, expected in zip(node.links, unixfs.blocksizes, strict=True):
            if link.cid.codec == RAW:
                yield _Piece(link.cid, offset + size, expected, False)  # length checked
                produced = expected                                     # when written
            else:
                produced = yield from self._layout(link.cid, offset + size, depth + 1)
            if produced != expected:
                raise DagFormatError(
                    f"block {cid}: child {link.cid} holds {produced} bytes, "
                    f"its parent's blocksize says {expected}"
                )
            size += produced
        return size

    def _write_piece(self, handle: int, piece: _Piece) -> None:
        if (
            not piece.inline
            and piece.cid.digest in self.verified
            and piece.cid.digest not in self.sink.leaves
            and _COPY_FILE_RANGE
        ):
            # hashed by this run moments ago: copied file to file in the kernel, not read back
            self._copy_block(handle, piece)
            return
        data = self.read(piece.cid)
        if piece.inline:
            node = decode_node(data, f"block {piece.cid}")
            data = decode_unixfs(node.data or b"", f"block {piece.cid}, UnixFS Data").data or b""
        if len(data) != piece.size:
            raise DagFormatError(
                f"block {piece.cid} holds {len(data)} bytes, its parent's blocksize says "
                f"{piece.size}"
            )
        os.pwrite(handle, data, piece.offset)

    def _copy_block(self, handle: int, piece: _Piece) -> None:
        source = os.open(self.store.path_of(piece.cid), os.O_RDONLY)
        try:
            held = os.fstat(source).st_size
            if held != piece.size:
                raise DagFormatError(
                    f"block {piece.cid} holds {held} bytes, its parent's blocksize says "
                    f"{piece.size}"
                )
            done = 0
            while done < held:
                step = os.copy_file_range(source, handle, held - done, done, piece.offset + done)
                if step <= 0:
                    raise ContentError(f"block {piece.cid}: copy stopped at byte {done}")
                done += step
        finally:
            os.close(source)

    def write_file(self, cid: CID, relative: str) -> None:
        """Write the file ``cid`` at ``relative`` in the staging tree: its staged file, when
        the fetch wrote one, is moved there and keeps the pieces written into it (verified,
        at the offsets this layout gives); the rest come from the block cache."""
        staged = self.sink.staged.get((relative, cid.digest))
        if staged is not None and self.sink.relative[staged] is not None:
            staged = None  # the same name twice in one directory: written again
        if cid.codec == RAW:
            self.counter.file_bytes(relative, self.read_size(cid))
            if staged is not None and self.sink.holds(staged, 0, cid.digest):
                self.sink.move(staged, relative)
            else:
                self.sink.target(relative).write_bytes(self.read(cid))
            return
        # the root's declared size is counted before anything under it is laid out; the
        # layout then checks every level's blocksizes against what its children hold, so
        # what is written adds up to exactly this
        _, unixfs = self._node(cid)
        size = len(unixfs.data or b"") + sum(unixfs.blocksizes)
        self.counter.file_bytes(relative, size)
        if staged is not None:
            handle = os.open(self.sink.move(staged, relative), os.O_WRONLY)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            handle = os.open(self.sink.target(relative), flags, 0o644)
        try:
            os.ftruncate(handle, size)
            batch: list[_Piece] = []
            layout = self._layout(cid, 0, 0)
            while True:
                piece = next(layout, None)
                if piece is None or len(batch) >= _WRITE_BATCH:
                    _wait_all([self.pool.submit(self._write_piece, handle, p) for p in batch])
                    batch.clear()
                if piece is None:
                    break
                if staged is None or not self.sink.holds(staged, piece.offset, piece.cid.digest):
                    batch.append(piece)
        finally:
            os.close(handle)

    def write_tree(self, cid: CID, dest: Path, *, shared: bool = False) -> bool:
        """Write ``cid`` (file or directory) at ``dest``: completed in the sink's staging
        folder (a sibling of ``dest``), renamed into place when every file is. True for a
        directory. ``shared``: ``dest`` is the cache's copy of ``cid``, which a concurrent
        fetch may have written meanwhile."""
        self.sink.close()
        is_directory = False
        for relative, entry, kind in walk(self.store, cid):
            if relative:
                self.counter.entry(relative, relative.count("/") + 1)
            target = self.sink.target(relative)
            if kind == "directory":
                if target.exists() and not target.is_dir():  # a name held by a file before
                    target.unlink()
                target.mkdir(parents=True, exist_ok=True)
                is_directory = is_directory or not relative
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                shutil.rmtree(target)
            self.write_file(entry, relative)
        if shared:
            # recorded before the tree is in place (a rename keeps every entry's size and
            # mtime), so a concurrent fetch never finds the new copy without its record and
            # takes it for a changed one
            _record_listing(dest, _listing(self.sink.root))
        if dest.exists() or dest.is_symlink():
            # fetch(overwrite=True), or a cached copy changed since it was written (shared)
            with suppress(FileNotFoundError):  # a concurrent fetch moved it first
                os.replace(dest, self.sink.root.with_name("replaced"))
        try:
            os.replace(self.sink.root, dest)
        except OSError:
            if not (shared and dest.exists()):
                raise
            # another process put the same content in the cache first: theirs serves
        return is_directory


def _entry_of(error: OSError, staging_root: Path, out: Path) -> str:
    """The entry an OSError of the export is about, as a path in the output."""
    name = error.filename
    if not isinstance(name, str):
        return str(out)
    try:
        return str(out / Path(name).relative_to(staging_root))
    except ValueError:
        return name


def _listing(path: Path) -> list[list[object]] | None:
    """What a cached copy looks like on disk: every entry's relative path, kind, size and
    modification time (None when ``path`` is gone)."""
    if not path.exists() or path.is_symlink():
        return None
    if not path.is_dir():
        held = path.stat()
        return [["", "file", held.st_size, held.st_mtime_ns]]
    out: list[list[object]] = []
    for folder, folders, files in os.walk(path):
        for name in sorted(folders + files):
            entry = Path(folder) / name
            held = entry.lstat()
            kind = "link" if entry.is_symlink() else "dir" if entry.is_dir() else "file"
            size = held.st_size if kind == "file" else 0
            out.append([str(entry.relative_to(path)), kind, size, held.st_mtime_ns])
    out.sort()
    return out


def _listing_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.listing.json")


def _record_listing(path: Path, listing: list[list[object]] | None) -> None:
    """Remember how the cache's copy of a CID at ``path`` looks as written from verified
    blocks (atomically: a concurrent reader sees the old record or the new one)."""
    record = _listing_file(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".listing-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(listing, stream)
        os.replace(temporary, record)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _unchanged(path: Path) -> bool:
    """Whether the cache's copy of a CID is as it was written: a copy edited, extended or
    truncated since (a model saved over the folder it was loaded from, say) is not served
    by CID again but rewritten from verified blocks. A copy without a record (written by a
    concurrent fetch a moment ago, or by an older version) is rewritten too."""
    try:
        recorded = json.loads(_listing_file(path).read_text(encoding="utf-8"))
        return recorded is not None and recorded == _listing(path)
    except (OSError, ValueError):
        return False
