"""Limits on the size of a directory tree: how many entries, how many bytes, how deep.

They bound what one import, publish or fetch takes on (a fetched DAG is untrusted: its root
CID may name a tree of millions of entries or terabytes), and are checked as the tree is
read, before its content is: an import stops before hashing the file that crosses a limit, a
fetch at the directory or file node that declares it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Final

from ipfs_accelerate.errors import ContentLimitError, InvalidArgumentError

__all__ = ["DEFAULT_LIMITS", "DirectoryLimits"]


@dataclass(frozen=True, slots=True)
class DirectoryLimits:
    """``max_entries``: files and directories in the whole tree (its root not counted);
    ``max_bytes``: the sum of its files' sizes; ``max_depth``: directories nested below the
    root (a file at the root's top level is at depth 1). Raise one by passing
    ``limits=DirectoryLimits(max_entries=...)`` (or ``dataclasses.replace(DEFAULT_LIMITS,
    ...)``) to :func:`import_directory`, :func:`publish` or :func:`fetch`."""

    max_entries: int = 100_000
    max_bytes: int = 1 << 40  # 1 TiB: above the largest published checkpoints
    max_depth: int = 32

    def __post_init__(self) -> None:
        for name in ("max_entries", "max_bytes", "max_depth"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InvalidArgumentError(
                    f"DirectoryLimits: {name} must be a positive int, got {value!r}"
                )


DEFAULT_LIMITS: Final = DirectoryLimits()


class LimitCounter:
    """Counts a tree's entries and bytes as they are met; raises ContentLimitError naming
    ``what`` (the directory, path or CID being read) at the first limit crossed."""

    def __init__(self, limits: DirectoryLimits, what: str) -> None:
        if not isinstance(limits, DirectoryLimits):
            raise InvalidArgumentError(
                f"limits: expected a DirectoryLimits, got {type(limits).__name__}"
            )
        self.limits = limits
        self.what = what
        self.entries = 0
        self.bytes = 0
        self._lock = threading.Lock()  # a fetch counts from several threads

    def _refuse(self, detail: str, name: str, limit: int) -> ContentLimitError:
        return ContentLimitError(
            f"{self.what}: {detail}, above the limit {name}={limit} (pass "
            f"limits=DirectoryLimits({name}=...) to allow more)"
        )

    def entry(self, path: str, depth: int) -> None:
        """One more entry, ``depth`` levels below the root, at ``path``."""
        with self._lock:
            self.entries += 1
            entries = self.entries
        if entries > self.limits.max_entries:
            raise self._refuse(
                f"more than {self.limits.max_entries} entries (at {path!r})", "max_entries",
                self.limits.max_entries,
            )  # fmt: skip
        if depth > self.limits.max_depth:
            raise self._refuse(
                f"{path!r} is {depth} levels deep", "max_depth", self.limits.max_depth
            )

    def file_bytes(self, path: str, size: int) -> None:
        """A file of ``size`` bytes at ``path``."""
        with self._lock:
            self.bytes += size
            total = self.bytes
        if total > self.limits.max_bytes:
            raise self._refuse(
                f"files of more than {self.limits.max_bytes} bytes in all (at {path!r}, "
                f"{total} bytes so far)", "max_bytes", self.limits.max_bytes,
            )  # fmt: skip
