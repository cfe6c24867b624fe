"""Where the package keeps files between runs."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The package's cache root: ``$IPFS_ACCELERATE_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/ipfs_accelerate``, else ``~/.cache/ipfs_accelerate`` (not created here)."""
    explicit = os.environ.get("IPFS_ACCELERATE_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ipfs_accelerate"
