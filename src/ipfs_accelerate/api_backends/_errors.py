"""Turning HTTP error responses into the package's typed errors.

Every provider's error body is read through one tolerant extractor (OpenAI/Groq/vLLM
``{"error": {"message", "type"}}``, vLLM's flat ``{"object": "error", "message"}``, Anthropic
``{"type": "error", "error": {...}}``, Gemini ``{"error": {"code", "message", "status"}}``,
TGI/TEI/Ollama/OVMS ``{"error": "...", "error_type"}``, FastAPI ``{"detail": ...}``); a body
that is not JSON (an HTML page from a proxy, plain text) is quoted as a short excerpt.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ipfs_accelerate.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    RateLimitError,
    ServerError,
)
from ipfs_accelerate.resilience import parse_retry_after

from ._streams import excerpt

__all__ = ["error_for_status", "extract_error_message", "status_error_class"]

_BY_STATUS: dict[int, type[APIStatusError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    422: BadRequestError,
    429: RateLimitError,
}


def status_error_class(status: int) -> type[APIStatusError]:
    cls = _BY_STATUS.get(status)
    if cls is not None:
        return cls
    if status >= 500:
        return ServerError
    return APIStatusError


def extract_error_message(body: bytes, content_type: str) -> tuple[str, Any]:
    """Return ``(message, decoded_body)``; never raises whatever the body holds."""
    if not body.strip():
        return "empty response body", None
    data: Any = None
    if "json" in content_type or body.lstrip()[:1] in (b"{", b"["):
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError):
            data = None
    if data is None:
        kind = (
            "HTML error page" if ("html" in content_type or body.lstrip()[:1] == b"<") else "body"
        )
        return f"{kind}: {excerpt(body)!r}", excerpt(body, 1000)
    return _message_from_json(data) or excerpt(body), data


def _message_from_json(data: Any) -> str | None:
    if isinstance(data, list) and data:
        return _message_from_json(data[0])
    if not isinstance(data, Mapping):
        return None
    err = data.get("error")
    if isinstance(err, Mapping):
        message = err.get("message")
        kind = err.get("type") or err.get("status") or err.get("code")
        if message is not None:
            return f"{kind}: {message}" if kind and not isinstance(kind, bool) else str(message)
        return excerpt(json.dumps(err))
    if isinstance(err, str):
        kind = data.get("error_type")
        return f"{kind}: {err}" if kind else err
    if "message" in data:
        kind = data.get("type")
        return (
            f"{kind}: {data['message']}"
            if isinstance(kind, str) and kind != "error"
            else str(data["message"])
        )
    detail = data.get("detail")
    if detail is not None:
        return excerpt(detail if isinstance(detail, str) else json.dumps(detail))
    return None


def error_for_status(
    *,
    provider: str,
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    content_type: str,
    request_id: str | None,
    what: str,
    secret: str | None = None,
    retry_after: float | None = None,
) -> APIStatusError | ProtocolError:
    """Build the typed error for an HTTP error response (secret scrubbed from message and body).

    A JSON (or plain) error body gives the status's class (400 -> BadRequestError...); an HTML
    page gives a ProtocolError carrying the status."""
    if secret:
        body = body.replace(secret.encode(), b"***")
    message, decoded = extract_error_message(body, content_type)
    text = f"{what} failed: {message}"
    if retry_after is None:
        retry_after = parse_retry_after(headers)
    if "html" in content_type or body.lstrip()[:1] == b"<":
        # an HTML page is not the API talking (a proxy, a gateway, a login wall): a protocol
        # error, which keeps its status so a transient one (502, 503...) is still retried
        page = ProtocolError(
            text, provider=provider, status=status, request_id=request_id, body=decoded
        )
        page.__dict__["retry_after"] = retry_after
        return page
    cls = status_error_class(status)
    if cls is RateLimitError:
        error: APIStatusError = RateLimitError(
            text, retry_after=retry_after, provider=provider, status=status,
            request_id=request_id, body=decoded,
        )  # fmt: skip
    else:
        error = cls(text, provider=provider, status=status, request_id=request_id, body=decoded)
        # a 503 may carry Retry-After too; the backoff honours it for any retryable status
        error.__dict__["retry_after"] = retry_after
    should_retry = headers.get("x-should-retry")
    if should_retry in ("true", "false"):
        error.__dict__["should_retry"] = should_retry == "true"
    return error
