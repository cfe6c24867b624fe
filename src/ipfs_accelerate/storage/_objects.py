"""S3 Kit's value types (transfer sizes, listed objects, object metadata), ``s3://`` URIs and
the small helpers its modules share."""

from __future__ import annotations

import asyncio
import dataclasses
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

from ipfs_accelerate.errors import ConfigurationError, InvalidArgumentError

__all__ = ["S3Object", "S3ObjectInfo", "TransferConfig", "parse_s3_uri"]

MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB  # S3: every part but the last
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
Progress = Callable[[int, int | None], Any]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """Sizes of transfers. ``part_size`` grows for objects that would need more than 10,000
    parts; parts must be 5 MiB..5 GiB (S3's limits)."""

    multipart_threshold: int = 8 * MiB
    part_size: int = 8 * MiB
    max_part_concurrency: int = 4
    multipart_copy_threshold: int = 5 * GiB
    copy_part_size: int = 512 * MiB
    download_chunk: int = 1 * MiB
    download_concurrency: int = 4

    def __post_init__(self) -> None:
        for name in ("part_size", "copy_part_size"):
            value = getattr(self, name)
            if not MIN_PART_SIZE <= value <= MAX_PART_SIZE:
                raise ConfigurationError(
                    f"s3_kit: {name} must be between 5 MiB and 5 GiB, got {value}"
                )
        if self.multipart_threshold < 1 or self.multipart_copy_threshold < 1:
            raise ConfigurationError("s3_kit: multipart thresholds must be >= 1 byte")
        for name in ("max_part_concurrency", "download_chunk", "download_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"s3_kit: {name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class S3Object:
    """A listed object (or, with a delimiter, a common prefix: ``is_prefix``)."""

    key: str
    size: int = 0
    etag: str | None = None
    last_modified: Any = None
    storage_class: str | None = None
    is_prefix: bool = False


@dataclass(frozen=True, slots=True)
class S3ObjectInfo:
    """What S3 reports about one object (``head``, or the result of an upload or copy)."""

    bucket: str
    key: str
    size: int
    etag: str | None
    content_type: str | None = None
    last_modified: Any = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    version_id: str | None = None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> ``(bucket, prefix)``."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidArgumentError(f"s3_kit: expected s3://bucket/prefix, got {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


class Transient(Exception):
    """An attempt failed in a way another attempt (or endpoint) may not."""

    def __init__(
        self, message: str, cause: BaseException | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.cause = cause
        self.retry_after = retry_after


class Truncated(Exception):
    """A download ended before ``Content-Length`` bytes arrived."""


class LocalError(Exception):
    """A failure on our side during a transfer (disk write, progress callback): never retried."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def bound_call(
    operation: str, params: dict[str, Any]
) -> Callable[[Any], Awaitable[dict[str, Any]]]:
    """``client.<operation>(**params)`` with the parameters bound now (not by a loop variable)."""

    async def call(client: Any) -> dict[str, Any]:
        page: dict[str, Any] = await getattr(client, operation)(**params)
        return page

    return call


def location(bucket: str | None, key: str | None) -> str:
    """`` of s3://bucket/key`` (or of the bucket) for error messages."""
    if bucket and key:
        return f" of s3://{bucket}/{key}"
    if bucket:
        return f" of bucket {bucket!r}"
    return ""


def check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"s3_kit: object key must be a non-empty string, got {key!r}")
    if len(key.encode()) > 1024:
        raise InvalidArgumentError(
            f"s3_kit: object key is {len(key.encode())} bytes; S3 allows 1024"
        )


async def report_progress(progress: Progress | None, done: int, total: int | None) -> None:
    if progress is None:
        return
    result = progress(done, total)
    if inspect.isawaitable(result):
        await result


async def gather_or_cancel(coroutines: Iterable[Coroutine[Any, Any, T]]) -> list[T]:
    """Run ``coroutines`` concurrently; on the first failure (or cancellation) cancel the
    others and wait for them, so that no transfer goes on behind the caller's back."""
    tasks = [asyncio.create_task(c) for c in coroutines]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
