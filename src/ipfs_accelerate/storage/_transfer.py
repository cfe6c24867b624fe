"""S3 Kit's transfers: uploads (single request or multipart), downloads (resumed after a
broken connection), server-side copies, and the cleanup of unfinished multipart uploads."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import tempfile
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, BinaryIO

from ipfs_accelerate.errors import InvalidArgumentError, ObjectNotFoundError, StorageError
from ipfs_accelerate.resilience import start_span

from ._core import _S3Core
from ._endpoint import S3Endpoint
from ._objects import (
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    LocalError,
    Progress,
    S3ObjectInfo,
    Truncated,
    bound_call,
    check_key,
    report_progress,
)

logger = logging.getLogger("ipfs_accelerate.storage")


class _S3Transfers(_S3Core):
    """Uploads, downloads and copies of :class:`S3Kit`."""

    # ------------------------------------------------------------------ uploads

    async def upload_bytes(
        self,
        bucket: str | None,
        key: str,
        data: bytes | bytearray | memoryview,
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> S3ObjectInfo:
        """Upload ``data`` to ``bucket/key`` (multipart above the threshold)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgumentError(
                f"s3_kit: upload_bytes needs bytes, got {type(data).__name__}"
            )
        view = memoryview(data).cast("B")
        position = 0

        async def read(n: int) -> bytes:
            nonlocal position
            chunk = bytes(view[position : position + n])
            position += len(chunk)
            return chunk

        return await self._upload(
            self._bucket(bucket), key, read, len(view), content_type, metadata, progress
        )

    async def upload_file(
        self,
        bucket: str | None,
        key: str,
        path: str | os.PathLike[str],
        *,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> S3ObjectInfo:
        """Upload a local file (read part by part, never whole into memory)."""
        path = Path(path)
        try:
            size = path.stat().st_size
            handle = path.open("rb")
        except OSError as exc:
            raise StorageError(f"s3_kit: cannot read {path}: {exc}") from exc
        with handle:
            return await self.upload_fileobj(
                bucket,
                key,
                handle,
                size=size,
                content_type=content_type,
                metadata=metadata,
                progress=progress,
            )

    async def upload_fileobj(
        self,
        bucket: str | None,
        key: str,
        fileobj: BinaryIO,
        *,
        size: int | None = None,
        content_type: str | None = None,
        metadata: Mapping[str, str] | None = None,
        progress: Progress | None = None,
    ) -> S3ObjectInfo:
        """Upload from a binary reader (``read(n)``; size may be unknown: multipart then
        starts once more than ``multipart_threshold`` bytes were read)."""

        async def read(n: int) -> bytes:
            chunks: list[bytes] = []
            want = n
            while want > 0:  # a short read is not the end of a pipe or socket
                chunk = await asyncio.to_thread(fileobj.read, want)
                if not chunk:
                    break
                chunks.append(bytes(chunk))
                want -= len(chunk)
            return b"".join(chunks)

        return await self._upload(
            self._bucket(bucket), key, read, size, content_type, metadata, progress
        )

    async def _upload(
        self,
        bucket: str,
        key: str,
        read: Callable[[int], Awaitable[bytes]],
        size: int | None,
        content_type: str | None,
        metadata: Mapping[str, str] | None,
        progress: Progress | None,
    ) -> S3ObjectInfo:
        check_key(key)
        extra: dict[str, Any] = {}
        if content_type:
            extra["ContentType"] = content_type
        if metadata:
            extra["Metadata"] = {str(k): str(v) for k, v in metadata.items()}
        threshold = self.transfer.multipart_threshold
        with start_span("ipfs_accelerate.s3.upload", {"bucket": bucket, "key": key, "size": size}):
            if size is not None and size <= threshold:
                data = await read(size)
                if len(data) != size:
                    raise StorageError(
                        f"s3_kit: upload of s3://{bucket}/{key}: "
                        f"the source gave {len(data)} of {size} bytes"
                    )
                return await self._put(bucket, key, data, extra, progress)
            first = await read(threshold + 1)
            if len(first) <= threshold:
                return await self._put(bucket, key, first, extra, progress)
            return await self._multipart(bucket, key, first, read, size, extra, progress)

    async def _put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        extra: Mapping[str, Any],
        progress: Progress | None,
    ) -> S3ObjectInfo:
        response = await self._run(
            "put_object",
            lambda c: c.put_object(Bucket=bucket, Key=key, Body=data, **extra),
            read=False,
            bucket=bucket,
            key=key,
        )
        await report_progress(progress, len(data), len(data))
        return S3ObjectInfo(
            bucket,
            key,
            len(data),
            response.get("ETag"),
            extra.get("ContentType"),
            None,
            dict(extra.get("Metadata") or {}),
            response.get("VersionId"),
        )

    def _part_size(self, size: int | None) -> int:
        part = self.transfer.part_size
        if size is not None and math.ceil(size / part) > MAX_PARTS:
            part = math.ceil(size / MAX_PARTS)
            part = max(part, MIN_PART_SIZE)
        if part > MAX_PART_SIZE:
            raise InvalidArgumentError(
                f"s3_kit: object of {size} bytes exceeds S3's limit of 10,000 parts of 5 GiB"
            )
        return part

    async def _multipart(
        self,
        bucket: str,
        key: str,
        first: bytes,
        read: Callable[[int], Awaitable[bytes]],
        size: int | None,
        extra: Mapping[str, Any],
        progress: Progress | None,
    ) -> S3ObjectInfo:
        part_size = self._part_size(size)
        ep = self._pick(set())
        if ep is None:
            raise self._unavailable(
                "create_multipart_upload", bucket, key, None, "every circuit is open"
            )
        created = await self._run(
            "create_multipart_upload",
            lambda c: c.create_multipart_upload(Bucket=bucket, Key=key, **extra),
            read=False,
            bucket=bucket,
            key=key,
            endpoint=ep,
        )
        upload_id = created["UploadId"]
        parts: dict[int, str] = {}
        done = 0
        total = 0
        pending: set[asyncio.Task[None]] = set()
        buffer = first

        async def send(number: int, body: bytes) -> None:
            nonlocal done
            response = await self._run(
                "upload_part",
                lambda c: c.upload_part(
                    Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
                ),
                read=False,
                bucket=bucket,
                key=key,
                endpoint=ep,
            )
            parts[number] = response["ETag"]
            done += len(body)
            await report_progress(progress, done, size)

        try:
            number = 0
            while True:
                while len(buffer) < part_size:
                    more = await read(part_size - len(buffer))
                    if not more:
                        break
                    buffer += more
                if not buffer:
                    break
                body, buffer = buffer[:part_size], buffer[part_size:]
                number += 1
                if number > MAX_PARTS:
                    raise InvalidArgumentError(
                        f"s3_kit: upload of s3://{bucket}/{key} needs more than {MAX_PARTS} parts"
                    )
                total += len(body)
                pending.add(asyncio.create_task(send(number, body)))
                if len(pending) >= self.transfer.max_part_concurrency:
                    finished, pending = await asyncio.wait(
                        pending, return_when=asyncio.FIRST_COMPLETED
                    )
                    for task in finished:
                        task.result()  # raises the part's error
                if len(body) < part_size:
                    break
            while pending:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                for task in finished:
                    task.result()
            if size is not None and total != size:
                raise StorageError(
                    f"s3_kit: upload of s3://{bucket}/{key}: "
                    f"the source gave {total} of {size} bytes"
                )
            ordered = [{"PartNumber": n, "ETag": parts[n]} for n in sorted(parts)]
            response = await self._run(
                "complete_multipart_upload",
                lambda c: c.complete_multipart_upload(
                    Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": ordered}
                ),
                read=False,
                bucket=bucket,
                key=key,
                endpoint=ep,
                max_retries=0,
            )
        except BaseException as exc:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            await asyncio.shield(self._abort(ep, bucket, key, upload_id, exc))
            raise
        return S3ObjectInfo(
            bucket,
            key,
            total,
            response.get("ETag"),
            extra.get("ContentType"),
            None,
            dict(extra.get("Metadata") or {}),
            response.get("VersionId"),
        )

    async def incomplete_uploads(
        self, bucket: str | None, prefix: str = ""
    ) -> list[dict[str, Any]]:
        """Multipart uploads started but neither completed nor aborted (``key``, ``upload_id``,
        ``initiated``): storage that is held but not visible under any key."""
        bucket = self._bucket(bucket)
        uploads: list[dict[str, Any]] = []
        markers: dict[str, str] = {}
        while True:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, **markers}
            page: dict[str, Any] = await self._run(
                "list_multipart_uploads",
                bound_call("list_multipart_uploads", params),
                read=True,
                bucket=bucket,
            )
            for upload in page.get("Uploads") or ():
                uploads.append(
                    {
                        "key": upload["Key"],
                        "upload_id": upload["UploadId"],
                        "initiated": upload.get("Initiated"),
                    }
                )
            if not page.get("IsTruncated"):
                return uploads
            markers = {
                "KeyMarker": page.get("NextKeyMarker", ""),
                "UploadIdMarker": page.get("NextUploadIdMarker", ""),
            }

    async def _abort(
        self, ep: S3Endpoint, bucket: str, key: str, upload_id: str, cause: BaseException
    ) -> None:
        """Abort an unfinished multipart upload so that nothing appears under the key."""
        try:
            await self._run(
                "abort_multipart_upload",
                lambda c: c.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id),
                read=False,
                bucket=bucket,
                key=key,
                endpoint=ep,
                force=True,
            )
        except ObjectNotFoundError:
            pass  # already gone
        except Exception as exc:
            logger.warning(
                "s3_kit: could not abort multipart upload %s of s3://%s/%s: %s",
                upload_id,
                bucket,
                key,
                exc,
            )
            if hasattr(cause, "add_note"):
                cause.add_note(
                    f"s3_kit: the unfinished multipart upload {upload_id} could not be aborted "
                    f"({exc}); its parts are not visible under the key but hold storage until "
                    "aborted or expired by a lifecycle rule"
                )

    # ------------------------------------------------------------------ downloads

    async def download_bytes(
        self, bucket: str | None, key: str, *, progress: Progress | None = None
    ) -> bytes:
        chunks: list[bytes] = []

        async def write(chunk: bytes) -> None:
            chunks.append(chunk)

        await self._download(self._bucket(bucket), key, write, progress)
        return b"".join(chunks)

    async def download_file(
        self,
        bucket: str | None,
        key: str,
        path: str | os.PathLike[str],
        *,
        progress: Progress | None = None,
    ) -> S3ObjectInfo:
        """Download to ``path`` atomically (temporary file, renamed when complete)."""
        bucket = self._bucket(bucket)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{target.name}.", suffix=".part", dir=target.parent
        )
        handle = os.fdopen(fd, "wb")
        try:

            async def write(chunk: bytes) -> None:
                await asyncio.to_thread(handle.write, chunk)

            info = await self._download(bucket, key, write, progress)
            handle.close()
            os.replace(tmp_name, target)
        except BaseException:
            handle.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        return info

    async def _download(
        self,
        bucket: str,
        key: str,
        write: Callable[[bytes], Awaitable[None]],
        progress: Progress | None,
    ) -> S3ObjectInfo:
        offset = 0
        etag: str | None = None
        total: int | None = None
        head: dict[str, Any] = {}
        chunk_size = self.transfer.download_chunk

        async def attempt(client: Any) -> None:
            nonlocal offset, etag, total
            params: dict[str, Any] = {"Bucket": bucket, "Key": key}
            if offset:
                # resume where the broken transfer stopped, only if it is still the same object
                params["Range"] = f"bytes={offset}-"
                if etag:
                    params["IfMatch"] = etag
            response = await client.get_object(**params)
            if etag is None:
                etag = response.get("ETag")
                total = int(response.get("ContentLength", 0))
                head.update(response)
            async with response["Body"] as stream:
                while True:
                    chunk = await stream.read(chunk_size)
                    if not chunk:
                        break
                    try:
                        await write(chunk)
                        offset += len(chunk)
                        await report_progress(progress, offset, total)
                    except Exception as exc:
                        raise LocalError(exc) from exc
            if total is not None and offset != total:
                raise Truncated(f"s3://{bucket}/{key}: got {offset} of {total} bytes")

        try:
            await self._run("get_object", attempt, read=True, bucket=bucket, key=key)
        except StorageError as exc:
            if getattr(exc, "code", None) == "PreconditionFailed":
                raise StorageError(
                    f"s3_kit: s3://{bucket}/{key} changed while it was being downloaded"
                ) from exc
            raise
        return S3ObjectInfo(
            bucket,
            key,
            offset,
            etag,
            head.get("ContentType"),
            head.get("LastModified"),
            dict(head.get("Metadata") or {}),
            head.get("VersionId"),
        )
