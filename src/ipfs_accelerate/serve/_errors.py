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
import re
import reprlib
from dataclasses import dataclass
from typing import Any

__all__ = ["KINDS", "ServeError", "brief", "describe", "error_body", "family_for_path"]


@dataclass(frozen=True)
class _Kind:
    openai: tuple[int, str, str | None]  # status, type, default code
    tei: tuple[int, str | None]  # status, error_type (None: an empty body, as TEI's 401)
    kserve: int


KINDS: dict[str, _Kind] = {
    "invalid_json": _Kind((400, "invalid_request_error", None), (422, "Validation"), 400),
    "invalid_request": _Kind((400, "invalid_request_error", None), (422, "Validation"), 400),
    "empty_input": _Kind((400, "invalid_request_error", None), (400, "Empty"), 400),
    # TEI refuses an empty string in validation (413), unlike an empty list (400 Empty)
    "empty_text": _Kind((400, "invalid_request_error", None), (413, "Validation"), 400),
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
    # a message built from a library's exception may name an object in memory: never sent
    message = _OBJECT_REPR.sub("the data", error.message)
    payload: Any
    if family == "openai":
        status, type_, code = kind.openai
        payload = {
            "error": {
                "message": message,
                "type": type_,
                "param": error.param,
                "code": error.code or code,
            }
        }
    elif family == "kserve":
        status, payload = kind.kserve, {"error": message}
    else:
        status, tei_type = kind.tei
        if tei_type is None:
            return status, b""
        payload = {"error": message, "error_type": tei_type}
    return status, json.dumps(payload, ensure_ascii=False).encode()


# ----------------------------------------------------------------------------- client-safe text

_SHORT = reprlib.Repr()
_SHORT.maxlevel, _SHORT.maxstring, _SHORT.maxother = 2, 60, 60
_SHORT.maxlist = _SHORT.maxtuple = _SHORT.maxdict = _SHORT.maxset = 6

#: ``<_io.BytesIO object at 0x7f...>`` and kin: what an object is and where it lives in memory
_OBJECT_REPR = re.compile(r"<[^<>\n]{1,200}? at 0x[0-9a-fA-F]+>")
#: an absolute path on the server (POSIX, or a Windows drive) with at least one directory
_PATH = re.compile(r"(?<![\w.:/])(?:[A-Za-z]:)?[/\\](?:[^\s/\\:'\"<>|]+[/\\])+([^\s/\\:'\"<>|]*)")


def brief(value: Any) -> str:
    """A short repr of a value a client sent, for error messages: a huge or deeply nested value
    is shown abridged (a message never echoes megabytes, nor recurses without bound)."""
    return _SHORT.repr(value)


def describe(error: BaseException) -> str:
    """The message of a library exception, fit for a client: its first line, server file paths
    cut to their last component and object reprs dropped (they name server internals)."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    text = _OBJECT_REPR.sub("the data", text)
    text = _PATH.sub(lambda match: match.group(1) or "a directory", text)
    return text if len(text) <= 500 else text[:497] + "..."
