"""What an S3 attempt's exception means: a typed error, a transient failure, or cancellation."""

from __future__ import annotations

import asyncio
import builtins
from collections.abc import Mapping
from typing import Any

from ipfs_accelerate.errors import ObjectNotFoundError, StorageAuthError, StorageError
from ipfs_accelerate.resilience import parse_retry_after

from ._objects import LocalError, Transient, Truncated, location

__all__ = ["map_error"]

_AUTH_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidClientTokenId",
    "UnrecognizedClientException", "AllAccessDisabled", "AccountProblem", "403", "401",
})  # fmt: skip
_TRANSIENT_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling",
    "ThrottlingException", "RequestLimitExceeded", "RequestThrottled", "BandwidthLimitExceeded",
    "500", "502", "503", "504",
})  # fmt: skip
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion"})


def map_error(
    exc: BaseException, what: str, bucket: str | None, key: str | None, endpoint: str
) -> Exception | None:
    """Typed error for an attempt's exception; Transient for retryable; None for cancellation."""
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit | GeneratorExit):
        return None
    if isinstance(exc, LocalError):
        return exc.error if isinstance(exc.error, Exception) else None
    if isinstance(exc, StorageError | Transient):
        return exc
    if isinstance(exc, Truncated):
        return Transient(f"{what}: {exc}", exc)
    where = location(bucket, key)
    try:
        from botocore import exceptions as bex
    except ImportError:  # pragma: no cover - the client could not exist without it
        bex = None  # type: ignore[assignment]
    if bex is not None and isinstance(exc, bex.ClientError):
        return _client_error(exc, what, bucket, key, endpoint)
    transient_types: tuple[type[BaseException], ...] = (
        builtins.TimeoutError, builtins.ConnectionError, OSError,
    )  # fmt: skip
    if bex is not None:
        transient_types += (
            bex.EndpointConnectionError, bex.ConnectTimeoutError, bex.ReadTimeoutError,
            bex.ConnectionClosedError, bex.ResponseStreamingError, bex.IncompleteReadError,
        )  # fmt: skip
    try:
        import aiohttp

        transient_types += (aiohttp.ClientError,)
    except ImportError:  # pragma: no cover
        pass
    described = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, transient_types):
        return Transient(f"s3_kit: {what}{where} via {endpoint}: {described}", exc)
    if bex is not None and isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
        return StorageAuthError(f"s3_kit: {what}{where}: {exc}")
    if bex is not None and isinstance(exc, bex.BotoCoreError):
        return StorageError(f"s3_kit: {what}{where} via {endpoint}: {described}")
    return exc if isinstance(exc, Exception) else None


def _client_error(
    exc: Any, what: str, bucket: str | None, key: str | None, endpoint: str
) -> Exception:
    """An error response of S3 (botocore's ClientError), by its code and HTTP status."""
    response: Mapping[str, Any] = getattr(exc, "response", {}) or {}
    err = response.get("Error") or {}
    code = str(err.get("Code") or "")
    message = str(err.get("Message") or "")
    status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
    where = location(bucket, key)
    text = f"s3_kit: {what}{where} failed via {endpoint}: {code or status}: {message}".rstrip(": ")
    via = f"({what} via {endpoint})"
    if code == "NoSuchBucket" or (code in _MISSING_KEY_CODES and key is None):
        error: Exception = ObjectNotFoundError(f"s3_kit: bucket {bucket!r} does not exist {via}")
    elif code in _MISSING_KEY_CODES:
        error = ObjectNotFoundError(f"s3_kit: object s3://{bucket}/{key} does not exist {via}")
    elif code == "NoSuchUpload":
        error = ObjectNotFoundError(
            f"s3_kit: multipart upload of s3://{bucket}/{key} no longer exists ({what})"
        )
    elif code in _AUTH_CODES or status in (401, 403):
        error = StorageAuthError(text)
    elif code in _TRANSIENT_CODES or (
        isinstance(status, int) and (status >= 500 or status in (408, 429))
    ):
        headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
        retry_after = parse_retry_after(headers) if "retry-after" in headers else None
        return Transient(text, exc, retry_after)
    else:
        error = StorageError(text)
    error.code = code  # type: ignore[attr-defined]
    error.status = status  # type: ignore[attr-defined]
    return error
