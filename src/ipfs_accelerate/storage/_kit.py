"""S3 Kit: S3-compatible object storage on aiobotocore, over one or several endpoints.

What it guarantees (atomic uploads and downloads, typed errors, which operations fail over
between endpoints) and how it is configured: docs/s3_kit.md.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, ClassVar

from ipfs_accelerate.errors import (
    InvalidArgumentError,
    ObjectNotFoundError,
    StorageError,
    UnsupportedOpError,
)
from ipfs_accelerate.resilience import HealthStatus

from ._errors import map_error
from ._objects import (
    MAX_PARTS,
    Progress,
    S3Object,
    S3ObjectInfo,
    bound_call,
    check_key,
    gather_or_cancel,
    report_progress,
)
from ._transfer import _S3Transfers

__all__ = ["S3Kit"]


class S3Kit(_S3Transfers):
    """S3-compatible storage over several endpoints (see docs/s3_kit.md).

    Every operation is async; ``kit.sync.<operation>`` is its blocking twin. Each endpoint
    has its own circuit breaker, concurrency limit and metrics; the strategy
    (``round_robin``, ``least_in_flight``, ``lowest_latency``, ``weighted``) picks one per
    operation among those whose circuit is not open. Reads fail over to another endpoint on
    connection errors, timeouts, 5xx and throttling; writes retry on their endpoint.
    """

    summary: ClassVar[str] = "S3-compatible object storage (aiobotocore)"
    routes: ClassVar[str] = (
        "S3 REST: `put_object`, multipart upload, `get_object` (resumed with `Range`), "
        "`list_objects_v2`, `head_object`, `delete_object`, `copy_object`, presigned URLs"
    )

    # ------------------------------------------------------------------ buckets

    async def create_bucket(self, bucket: str) -> None:
        ep = self._pick(set()) or self.s3_endpoints[0]
        params: dict[str, Any] = {"Bucket": bucket}
        if ep.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": ep.region}
        await self._run(
            "create_bucket", lambda c: c.create_bucket(**params), read=False, bucket=bucket
        )

    async def delete_bucket(self, bucket: str) -> None:
        await self._run(
            "delete_bucket", lambda c: c.delete_bucket(Bucket=bucket), read=False, bucket=bucket
        )

    async def bucket_exists(self, bucket: str) -> bool:
        try:
            await self._run(
                "head_bucket", lambda c: c.head_bucket(Bucket=bucket), read=True, bucket=bucket
            )
        except ObjectNotFoundError:
            return False
        return True

    # ------------------------------------------------------------------ listing, metadata

    async def list_objects(
        self,
        bucket: str | None,
        prefix: str = "",
        *,
        delimiter: str | None = None,
        page_size: int = 1000,
    ) -> AsyncIterator[S3Object]:
        """Every object under ``prefix`` (one ListObjectsV2 request per page, each with
        failover)."""
        bucket = self._bucket(bucket)
        if not 1 <= page_size <= 1000:
            raise InvalidArgumentError(f"s3_kit: page_size must be 1..1000, got {page_size}")
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
            if delimiter:
                params["Delimiter"] = delimiter
            if token:
                params["ContinuationToken"] = token
            page: dict[str, Any] = await self._run(
                "list_objects", bound_call("list_objects_v2", params), read=True, bucket=bucket
            )
            for item in page.get("Contents") or ():
                yield S3Object(
                    item["Key"],
                    int(item.get("Size", 0)),
                    item.get("ETag"),
                    item.get("LastModified"),
                    item.get("StorageClass"),
                )
            for common in page.get("CommonPrefixes") or ():
                yield S3Object(common["Prefix"], is_prefix=True)
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                raise StorageError(
                    f"s3_kit: list of s3://{bucket}/{prefix} was truncated "
                    "without a continuation token"
                )

    async def list_all(
        self, bucket: str | None, prefix: str = "", **options: Any
    ) -> list[S3Object]:
        return [obj async for obj in self.list_objects(bucket, prefix, **options)]

    async def head(self, bucket: str | None, key: str) -> S3ObjectInfo:
        bucket = self._bucket(bucket)
        r = await self._run(
            "head_object",
            lambda c: c.head_object(Bucket=bucket, Key=key),
            read=True,
            bucket=bucket,
            key=key,
        )
        return S3ObjectInfo(
            bucket,
            key,
            int(r.get("ContentLength", 0)),
            r.get("ETag"),
            r.get("ContentType"),
            r.get("LastModified"),
            dict(r.get("Metadata") or {}),
            r.get("VersionId"),
        )

    async def exists(self, bucket: str | None, key: str) -> bool:
        try:
            await self.head(bucket, key)
        except ObjectNotFoundError:
            return False
        return True

    async def delete(self, bucket: str | None, key: str) -> None:
        """Delete ``key`` (S3 answers success for a key that does not exist)."""
        bucket = self._bucket(bucket)
        await self._run(
            "delete_object",
            lambda c: c.delete_object(Bucket=bucket, Key=key),
            read=False,
            bucket=bucket,
            key=key,
        )

    async def copy(
        self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str
    ) -> S3ObjectInfo:
        """Server-side copy (multipart UploadPartCopy above ``multipart_copy_threshold``)."""
        check_key(dst_key)
        source = await self.head(src_bucket, src_key)
        copy_source = {"Bucket": src_bucket, "Key": src_key}
        if source.size <= self.transfer.multipart_copy_threshold:
            r = await self._run(
                "copy_object",
                lambda c: c.copy_object(Bucket=dst_bucket, Key=dst_key, CopySource=copy_source),
                read=False,
                bucket=dst_bucket,
                key=dst_key,
            )
            etag = (r.get("CopyObjectResult") or {}).get("ETag")
            return S3ObjectInfo(
                dst_bucket,
                dst_key,
                source.size,
                etag,
                source.content_type,
                None,
                dict(source.metadata),
            )
        ep = self._pick(set()) or self.s3_endpoints[0]
        created = await self._run(
            "create_multipart_upload",
            lambda c: c.create_multipart_upload(
                Bucket=dst_bucket,
                Key=dst_key,
                **({"ContentType": source.content_type} if source.content_type else {}),
                Metadata=dict(source.metadata),
            ),
            read=False,
            bucket=dst_bucket,
            key=dst_key,
            endpoint=ep,
        )
        upload_id = created["UploadId"]
        part = max(self.transfer.copy_part_size, math.ceil(source.size / MAX_PARTS))
        try:
            ranges = [
                (i + 1, start, min(start + part, source.size) - 1)
                for i, start in enumerate(range(0, source.size, part))
            ]
            semaphore = asyncio.Semaphore(self.transfer.max_part_concurrency)

            async def copy_part(number: int, first: int, last: int) -> dict[str, Any]:
                async with semaphore:
                    r = await self._run(
                        "upload_part_copy",
                        lambda c: c.upload_part_copy(
                            Bucket=dst_bucket,
                            Key=dst_key,
                            UploadId=upload_id,
                            PartNumber=number,
                            CopySource=copy_source,
                            CopySourceRange=f"bytes={first}-{last}",
                            **({"CopySourceIfMatch": source.etag} if source.etag else {}),
                        ),
                        read=False,
                        bucket=dst_bucket,
                        key=dst_key,
                        endpoint=ep,
                    )
                    return {"PartNumber": number, "ETag": r["CopyPartResult"]["ETag"]}

            done = await gather_or_cancel(copy_part(*r) for r in ranges)
            r = await self._run(
                "complete_multipart_upload",
                lambda c: c.complete_multipart_upload(
                    Bucket=dst_bucket,
                    Key=dst_key,
                    UploadId=upload_id,
                    MultipartUpload={"Parts": done},
                ),
                read=False,
                bucket=dst_bucket,
                key=dst_key,
                endpoint=ep,
                max_retries=0,
            )
        except BaseException as exc:
            await asyncio.shield(self._abort(ep, dst_bucket, dst_key, upload_id, exc))
            raise
        return S3ObjectInfo(
            dst_bucket,
            dst_key,
            source.size,
            r.get("ETag"),
            source.content_type,
            None,
            dict(source.metadata),
        )

    async def presigned_url(
        self,
        bucket: str | None,
        key: str,
        *,
        method: str = "get",
        expires_in: int = 3600,
        content_type: str | None = None,
    ) -> str:
        """A URL that lets its holder GET (or PUT) this object without credentials until it expires.
        Signed for the endpoint the strategy picks (computed locally, no request)."""
        if self._anonymous:
            raise UnsupportedOpError("s3_kit: anonymous access cannot sign URLs")
        bucket = self._bucket(bucket)
        operations = {
            "get": "get_object",
            "put": "put_object",
            "head": "head_object",
            "delete": "delete_object",
        }
        if method.lower() not in operations:
            raise InvalidArgumentError(
                f"s3_kit: presigned URL method must be one of {sorted(operations)}, got {method!r}"
            )
        if not (isinstance(expires_in, int) and 1 <= expires_in <= 604800):
            raise InvalidArgumentError(
                f"s3_kit: expires_in must be 1..604800 seconds, got {expires_in!r}"
            )
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if content_type and method.lower() == "put":
            params["ContentType"] = content_type

        async def sign(client: Any) -> str:
            url: str = await client.generate_presigned_url(
                operations[method.lower()], Params=params, ExpiresIn=expires_in
            )
            return url

        return await self._run("presign", sign, read=True, bucket=bucket, key=key)

    # ------------------------------------------------------------------ prefixes (checkpoints)

    async def download_prefix(
        self,
        bucket: str | None,
        prefix: str,
        dest: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
    ) -> Path:
        """Mirror every object under ``prefix`` into ``dest`` (keys relative to the prefix).

        Files already there with the size and ETag recorded in ``dest/.s3-manifest.json`` are
        not downloaded again. A prefix naming a single object gives that one file. Keys that
        would land outside ``dest`` (``..``) are refused. Raises ObjectNotFoundError when
        nothing is under the prefix (or an object vanished between listing and download).
        """
        bucket = self._bucket(bucket)
        root = Path(dest)
        root.mkdir(parents=True, exist_ok=True)
        base = prefix if (not prefix or prefix.endswith("/")) else prefix + "/"
        objects = [o for o in await self.list_all(bucket, base) if not o.key.endswith("/")]
        if not objects and prefix and not prefix.endswith("/"):
            try:
                info = await self.head(bucket, prefix)
            except ObjectNotFoundError:
                info = None
            if info is not None:
                objects = [S3Object(prefix, info.size, info.etag)]
                base = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        if not objects:
            raise ObjectNotFoundError(f"s3_kit: no objects under s3://{bucket}/{base}")
        manifest_path = root / ".s3-manifest.json"
        try:
            manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        resolved_root = root.resolve()
        plan: list[tuple[S3Object, str, Path]] = []
        for obj in objects:
            relative = obj.key[len(base) :]
            target = (root / relative).resolve()
            if not relative or resolved_root not in target.parents:
                raise StorageError(
                    f"s3_kit: key {obj.key!r} would be written outside {root}; refused"
                )
            plan.append((obj, relative, target))
        total = sum(o.size for o, _, _ in plan)
        done = 0
        semaphore = asyncio.Semaphore(self.transfer.download_concurrency)

        async def fetch(obj: S3Object, relative: str, target: Path) -> None:
            nonlocal done
            entry = manifest.get(relative)
            if (
                entry
                and entry.get("etag") == obj.etag
                and target.is_file()
                and target.stat().st_size == obj.size
            ):
                done += obj.size
                await report_progress(progress, done, total)
                return
            async with semaphore:
                info = await self.download_file(bucket, obj.key, target)
            manifest[relative] = {"etag": info.etag, "size": info.size}
            done += obj.size
            await report_progress(progress, done, total)

        try:
            await gather_or_cancel(fetch(*item) for item in plan)
        finally:
            tmp = manifest_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
            os.replace(tmp, manifest_path)
        return root

    # ------------------------------------------------------------------ health, stats

    async def health(self, timeout: float = 5.0) -> HealthStatus:
        """``ListBuckets`` on each endpoint (no retry); healthy when one answers."""
        start = time.monotonic()
        details = []
        healthy_latency: float | None = None
        for ep in self.s3_endpoints:
            t0 = time.monotonic()
            try:
                client = await self._client(ep)
                async with asyncio.timeout(timeout):
                    await client.list_buckets()
            except Exception as exc:
                mapped = map_error(exc, "health", None, None, ep.name)
                details.append(f"{ep.name}: {mapped or exc}")
                continue
            healthy_latency = healthy_latency or (time.monotonic() - t0)
            details.append(f"{ep.name}: ok")
        healthy = healthy_latency is not None
        return HealthStatus(
            healthy,
            200 if healthy else None,
            healthy_latency or time.monotonic() - start,
            "; ".join(details),
        )
