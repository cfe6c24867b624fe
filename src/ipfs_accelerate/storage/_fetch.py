"""``s3://bucket/prefix`` mirrored into a local cache directory: how model checkpoints are
loaded from object storage."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ipfs_accelerate.errors import ObjectNotFoundError
from ipfs_accelerate.resilience import run_sync

from ._kit import S3Kit
from ._objects import Progress, parse_s3_uri

__all__ = ["default_cache_dir", "fetch_s3_prefix", "fetch_s3_prefix_sync"]


def default_cache_dir() -> Path:
    """Where ``s3://`` prefixes are mirrored by default: ``$IPFS_ACCELERATE_CACHE_DIR/s3``."""
    from ipfs_accelerate._paths import cache_dir

    return cache_dir() / "s3"


async def fetch_s3_prefix(
    uri: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    kit: S3Kit | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    local_files_only: bool = False,
) -> Path:
    """Download ``s3://bucket/prefix`` into a local cache directory and return it.

    The directory is ``cache_dir/<bucket>/<prefix>`` (``cache_dir`` defaults to
    ``$IPFS_ACCELERATE_CACHE_DIR/s3``, by default ``~/.cache/ipfs_accelerate/s3``); unchanged
    files are not downloaded again. ``kit`` (or one built from ``metadata``, e.g.
    ``{"s3cfg": {...}}``, else from the AWS environment variables) does the transfers.
    ``local_files_only``: no request at all; the cached copy (every file its manifest lists)
    or ObjectNotFoundError.
    """
    bucket, prefix = parse_s3_uri(uri)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = root / bucket / (prefix.strip("/") or "_root")
    if local_files_only:
        try:
            manifest = json.loads((dest / ".s3-manifest.json").read_text())
        except (OSError, ValueError):
            manifest = None
        if not manifest or not all(
            (dest / name).is_file() and (dest / name).stat().st_size == entry.get("size")
            for name, entry in manifest.items()
        ):
            raise ObjectNotFoundError(
                f"s3_kit: {uri} is not (completely) in the cache at {dest} "
                "and local_files_only is set"
            )
        return dest
    own = kit is None
    storage = kit if kit is not None else S3Kit(metadata=metadata)
    try:
        return await storage.download_prefix(bucket, prefix, dest, progress=progress)
    finally:
        if own:
            await storage.aclose()


def fetch_s3_prefix_sync(
    uri: str, cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any
) -> Path:
    """:func:`fetch_s3_prefix` from plain code (runs on the sync facade's loop thread)."""
    return run_sync(fetch_s3_prefix(uri, cache_dir, **kwargs))
