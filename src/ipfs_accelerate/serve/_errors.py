"""Errors answered in the shape of the API a route imitates.

Every failure a handler detects is a :class:`ServeError` of one *kind* (a condition, such as
``input_too_long``); the kind decides the HTTP status and the body per API family, because
the imitated APIs disagree: TEI answers a too-long input with 413 ``Validation``, OpenAI with
400 ``invalid_request_error``. Families by path: ``/v1/...`` OpenAI
(``{"error": {"message", "type", "param", "code"}}``), ``/v2/...`` KServe v2
(``{"error": "..."}``), everything else TEI (``{"error", "error_type"}``).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "ServeError", "error_body", "family_for_path"]


@dataclass(frozen=True)
class _Kind:
    openai: tuple[int, str, str | None]  # status, type, default code
    tei: tuple[int, str | None]  # status, error_type (None: an empty body, as TEI's 401)
    kserve: int


KINDS: dict[str, _Kind] = {
    "invalid_json": _Kind((400, "invalid_request_error", None), (422, "Validation"), 400),
    "invalid_request": _Kind((400, "invalid_request_error", None), (422, "Validation"), 400),
    "empty_input": _Kind((400, "invalid_request_error", None), (400, "Empty"), 400),
    "too_many_inputs": _Kind((400, "invalid_request_error", None), (413, "Validation"), 400),
    "input_too_long": _Kind(
        (400, "invalid_request_error", "context_length_exceeded"), (413, "Validation"), 400
    ),
    "unsupported": _Kind((400, "invalid_request_error", None), (422, "Validation"), 400),
    "bad_media": _Kind((400, "invalid_request_error", "invalid_value"), (422, "Validation"), 400),
    "unknown_model": _Kind(
        (404, "invalid_request_error", "model_not_found"), (424, "Backend"), 404
    ),
    "wrong_model_kind": _Kind(
        (400, "invalid_request_error", "model_not_supported"), (424, "Backend"), 400
    ),
    "payload_too_large": _Kind(
        (413, "invalid_request_error", "request_too_large"), (413, "Validation"), 413
    ),
    "unauthorized": _Kind((401, "invalid_request_error", "invalid_api_key"), (401, None), 401),
    "overloaded": _Kind((503, "server_error", "overloaded"), (429, "Overloaded"), 503),
    "inference_failed": _Kind((500, "server_error", None), (424, "Backend"), 500),
    "unhealthy": _Kind((503, "server_error", None), (503, "Unhealthy"), 503),
    "route_not_found": _Kind((404, "invalid_request_error", None), (404, None), 404),
    "method_not_allowed": _Kind((405, "invalid_request_error", None), (405, None), 405),
    "internal": _Kind((500, "server_error", None), (500, "Backend"), 500),
}


class ServeError(Exception):
    """A request failed with condition ``kind`` (a key of :data:`KINDS`); ``message`` is
    shown to the client, so it never holds a secret or a traceback."""

    def __init__(
        self,
        kind: str,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if kind not in KINDS:  # pragma: no cover - a programming error
            raise ValueError(f"unknown ServeError kind {kind!r}")
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.param = param
        self.code = code
        self.headers = headers or {}

    def status(self, family: str) -> int:
        kind = KINDS[self.kind]
        if family == "openai":
            return kind.openai[0]
        if family == "kserve":
            return kind.kserve
        return kind.tei[0]


def family_for_path(path: str) -> str:
    if path == "/v1" or path.startswith("/v1/"):
        return "openai"
    if path == "/v2" or path.startswith("/v2/"):
        return "kserve"
    return "tei"


def error_body(error: ServeError, family: str) -> tuple[int, bytes]:
    """``(status, JSON body)`` of ``error`` for the API family; an empty body where the
    imitated API sends none (TEI's 401, 404 and 405 come from its HTTP framework bare)."""
    kind = KINDS[error.kind]
    payload: Any
    if family == "openai":
        status, type_, code = kind.openai
        payload = {
            "error": {
                "message": error.message,
                "type": type_,
                "param": error.param,
                "code": error.code or code,
            }
        }
    elif family == "kserve":
        status, payload = kind.kserve, {"error": error.message}
    else:
        status, tei_type = kind.tei
        if tei_type is None:
            return status, b""
        payload = {"error": error.message, "error_type": tei_type}
    return status, json.dumps(payload, ensure_ascii=False).encode()
