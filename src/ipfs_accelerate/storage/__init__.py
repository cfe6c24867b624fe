"""Object storage: :class:`S3Kit`, S3-compatible storage over one or several endpoints, and
:func:`fetch_s3_prefix`, which mirrors an ``s3://bucket/prefix`` into a local cache (model
checkpoints). See docs/s3_kit.md.

S3 Kit composes the resilience pieces the API clients use (:mod:`ipfs_accelerate.resilience`)
but is not an API backend; it is still created by name with
``create_api_backend("s3_kit", ...)``. Importing this package does not import aiobotocore.
"""

from __future__ import annotations

from ._fetch import default_cache_dir, fetch_s3_prefix, fetch_s3_prefix_sync
from ._kit import S3Kit
from ._objects import S3Object, S3ObjectInfo, TransferConfig, parse_s3_uri

__all__ = [
    "S3Kit",
    "S3Object",
    "S3ObjectInfo",
    "TransferConfig",
    "default_cache_dir",
    "fetch_s3_prefix",
    "fetch_s3_prefix_sync",
    "parse_s3_uri",
]
