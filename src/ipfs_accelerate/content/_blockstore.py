"""Blockstores: where blocks live, keyed by CID, each verified against its CID on the way in.

The :class:`Blockstore` protocol is what importers, CAR readers/writers and (later) fetchers
share: ``put``, ``get``, ``has`` and iteration over the CIDs held. Two implementations:
:class:`MemoryBlockstore` for tests and small DAGs, :class:`FilesystemBlockstore` for caches
(one file per block, written atomically, so an interrupted write never leaves a block that
would be taken for verified).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol, runtime_checkable

from ipfs_accelerate.content._cid import CID, verify_block
from ipfs_accelerate.errors import BlockNotFoundError, ContentError

__all__ = ["Blockstore", "FilesystemBlockstore", "MemoryBlockstore"]


@runtime_checkable
class Blockstore(Protocol):
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
    """

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

    def put_hashed(self, cid: CID, data: bytes) -> None:
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
        wrote and verified itself moments ago)."""
        try:
            data = self._path(cid).read_bytes()
        except FileNotFoundError:
            raise BlockNotFoundError(f"block {cid} is not in {str(self.root)!r}") from None
        if verify:
            verify_block(cid, data)
        return data

    def has(self, cid: CID) -> bool:
        return self._path(cid).exists()

    def __iter__(self) -> Iterator[CID]:
        for path in sorted(self.root.glob("??/b*")):
            yield CID.parse(path.name)
