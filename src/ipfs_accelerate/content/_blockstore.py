"""Blockstores: where blocks live, keyed by CID, each verified against its CID on the way in.

The :class:`Blockstore` protocol is what importers, CAR readers/writers and (later) fetchers
share: ``put``, ``get``, ``has`` and iteration over the CIDs held. Two implementations:
:class:`MemoryBlockstore` for tests and small DAGs, :class:`FilesystemBlockstore` for caches
(one file per block, written atomically, so an interrupted write never leaves a block that
would be taken for verified).
"""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from contextlib import closing, suppress
from pathlib import Path
from typing import Protocol, runtime_checkable

from ipfs_accelerate.content._cid import CID, verify_block
from ipfs_accelerate.errors import BlockNotFoundError, BlockVerificationError, ContentError

__all__ = ["Blockstore", "FilesystemBlockstore", "MemoryBlockstore"]


def _read_range(path: str, offset: int, size: int) -> bytes:
    """``size`` bytes at ``offset`` of the regular file ``path``; OSError for anything else
    (a copy's file replaced by a named pipe or a device would block or never end)."""
    handle = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(handle).st_mode):
            raise OSError(f"{path!r} is not a regular file")
        return os.pread(handle, size, offset)
    finally:
        os.close(handle)


def _corrupt(error: sqlite3.Error) -> bool:
    """An error saying the file is not (or no longer) a database, as opposed to one that is
    busy or missing its table for a moment (OperationalError)."""
    return isinstance(error, sqlite3.DatabaseError) and not isinstance(
        error, sqlite3.OperationalError
    )


@runtime_checkable
class Blockstore(Protocol):
    """What holds blocks by CID for the importer, the exporter and the CAR code (see the
    module docstring); every implementation verifies a block against its CID in ``put``."""

    def put(self, cid: CID, data: bytes) -> None:
        """Store ``data`` under ``cid``; BlockVerificationError if it does not hash to it."""

    def get(self, cid: CID) -> bytes:
        """The block's bytes; BlockNotFoundError when it is not held."""

    def has(self, cid: CID) -> bool: ...

    def __iter__(self) -> Iterator[CID]: ...


class MemoryBlockstore:
    """Blocks in a dict, keyed by multihash (a CIDv0 and a CIDv1 of one block share it)."""

    def __init__(self) -> None:
        self._blocks: dict[bytes, tuple[CID, bytes]] = {}

    def put(self, cid: CID, data: bytes) -> None:
        verify_block(cid, data)
        self._blocks.setdefault(cid.digest, (cid, bytes(data)))

    def get(self, cid: CID) -> bytes:
        held = self._blocks.get(cid.digest)
        if held is None:
            raise BlockNotFoundError(f"block {cid} is not in the blockstore")
        return held[1]

    def has(self, cid: CID) -> bool:
        return cid.digest in self._blocks

    def __iter__(self) -> Iterator[CID]:
        return iter([cid for cid, _ in self._blocks.values()])

    def __len__(self) -> int:
        return len(self._blocks)


class FilesystemBlockstore:
    """One file per block under ``root``, named by its CIDv1 (so a CIDv0 and the CIDv1 of one
    dag-pb block are one file), in sub-folders by the name's last two characters.

    Blocks are re-verified when read, so a file changed on disk is reported, not served.

    A block may also be held as a *copy*: a byte range of a file elsewhere (a fetch writes
    raw leaves straight into its output and records them here rather than writing each leaf
    twice, see :meth:`record_copies`). Those files belong to whoever fetched them and may
    change or go away, so a copy counts as held only while its bytes still hash to the CID
    (checked by :meth:`has` and again by :meth:`get`); one that does not is forgotten.
    """

    _COPIES = "copies.sqlite"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ContentError(
                f"blockstore {str(self.root)!r}: cannot create it ({exc.strerror or exc})"
            ) from None

    def _path(self, cid: CID) -> Path:
        name = str(cid.to_v1())
        return self.root / name[-2:] / name

    def path_of(self, cid: CID) -> Path:
        """Where the block ``cid`` is (or would be) kept; read it through :meth:`get`, which
        verifies, unless it was verified moments ago."""
        return self._path(cid)

    def put(self, cid: CID, data: bytes) -> None:
        verify_block(cid, data)
        self.put_hashed(cid, data)

    def put_hashed(self, cid: CID, data: bytes | memoryview) -> None:
        """:meth:`put` for a caller that has just checked ``data`` against ``cid`` itself
        (the fetcher hashes each block once, as it arrives, not twice)."""
        path = self._path(cid)
        if path.exists():
            return
        path.parent.mkdir(exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".partial-")
        try:
            with os.fdopen(handle, "wb") as stream:
                stream.write(data)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def get(self, cid: CID, *, verify: bool = True) -> bytes:
        """The block's bytes, hashed again unless ``verify=False`` (for a block the caller
        wrote and verified itself moments ago; a copy is always hashed)."""
        try:
            data = self._path(cid).read_bytes()
        except FileNotFoundError:
            copy = self._from_copies(cid)
            if copy is None:
                raise BlockNotFoundError(f"block {cid} is not in {str(self.root)!r}") from None
            return copy
        if verify:
            try:
                verify_block(cid, data)
            except BlockVerificationError:
                # reported, and dropped: held, it would fail every fetch that reaches it
                # (has() does not hash), where dropped it is simply fetched again
                self._path(cid).unlink(missing_ok=True)
                raise
        return data

    def has(self, cid: CID) -> bool:
        return self._path(cid).exists() or self._from_copies(cid) is not None

    # -- copies: blocks held as byte ranges of files outside the store ---------------------

    def _connect(self, create: bool) -> sqlite3.Connection | None:
        """A connection to the copies table (one per operation: nothing held open between
        calls, and several processes may share the cache)."""
        path = self.root / self._COPIES
        if not create and not path.exists():
            return None
        connection = sqlite3.connect(path, timeout=30)
        # no fsync per fetch: a record lost in a crash only means a leaf fetched again, and
        # every record is checked against its file's bytes when used
        connection.execute("PRAGMA synchronous = OFF")
        if create:
            with connection:
                connection.execute(
                    "CREATE TABLE IF NOT EXISTS copies (digest BLOB, path TEXT, offset INTEGER, "
                    "size INTEGER, PRIMARY KEY (digest, path, offset))"
                )
        return connection

    def record_copies(self, copies: list[tuple[CID, Path, int, int]]) -> None:
        """Remember that the block ``cid`` is the ``size`` bytes at ``offset`` of ``path``
        (a file just written from verified blocks)."""
        if not copies:
            return
        rows = [(cid.digest, str(Path(path).absolute()), offset, size)
                for cid, path, offset, size in copies]  # fmt: skip
        for attempt in range(2):
            try:
                connection = self._connect(create=True)
                assert connection is not None
                with closing(connection), connection:
                    connection.executemany(
                        "INSERT OR REPLACE INTO copies VALUES (?, ?, ?, ?)", rows
                    )
                return
            except sqlite3.Error as exc:
                if attempt == 0 and _corrupt(exc):
                    self._discard_copies()
                    continue
                raise ContentError(
                    f"blockstore {str(self.root)!r}: cannot record where fetched blocks are "
                    f"({exc})"
                ) from None

    def _discard_copies(self) -> None:
        """Set aside an index that is not a readable database (written without fsync, a
        crash can leave it so): it only saves refetching, and a fresh one replaces it."""
        path = self.root / self._COPIES
        with suppress(OSError):  # another process set it aside first
            os.replace(path, path.with_name(f"{self._COPIES}.corrupt"))

    def _from_copies(self, cid: CID) -> bytes | None:
        """The block's bytes from a recorded copy that still hashes to ``cid``; copies that
        do not (their file changed or is gone) are forgotten."""
        try:
            return self._read_copies(cid)
        except sqlite3.Error as exc:
            # busy or just created by another process: not held as far as this call knows
            if _corrupt(exc):
                self._discard_copies()
            return None

    def _read_copies(self, cid: CID) -> bytes | None:
        connection = self._connect(create=False)
        if connection is None:
            return None
        with closing(connection):
            rows = connection.execute(
                "SELECT path, offset, size FROM copies WHERE digest = ?", (cid.digest,)
            ).fetchall()
            for path, offset, size in rows:
                try:
                    data = _read_range(path, offset, size)
                    verify_block(cid, data)
                    return data
                except (OSError, BlockVerificationError):
                    with connection:
                        connection.execute(
                            "DELETE FROM copies WHERE digest = ? AND path = ? AND offset = ?",
                            (cid.digest, path, offset),
                        )
        return None

    def __iter__(self) -> Iterator[CID]:
        for path in sorted(self.root.glob("??/b*")):
            yield CID.parse(path.name)
