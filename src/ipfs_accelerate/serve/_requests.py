"""Reading a request: its JSON body and the fields the OpenAI, TEI and KServe routes share.

Every refusal is a :class:`ServeError`, worded so that the route's API family can answer it.
A body is checked before it is parsed (nesting depth, unpaired surrogate escapes); a large
body is parsed on the server's work pool, never on the event loop (docs/server.md, "The event
loop").
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ._errors import ServeError, brief
from ._state import state_of

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = [
    "MAX_JSON_DEPTH",
    "bool_field",
    "dimensions_field",
    "embedding_inputs",
    "json_object",
    "parse_json",
    "read_json",
]

T = TypeVar("T")

#: arrays and objects nested deeper than this are refused before parsing (the deepest body a
#: route takes is a KServe tensor: a few levels plus one per dimension)
MAX_JSON_DEPTH = 64
#: bodies up to this size are parsed on the event loop (well under a millisecond)
_PARSE_INLINE_BYTES = 64 * 1024
#: the depth scan's numpy steps: small enough that none holds the GIL for long
_SCAN_CHUNK = 1 << 20
#: every byte but JSON's brackets and quotes
_NOT_STRUCTURE = bytes(b for b in range(256) if b not in b'[]{}"')
_QUOTE, _OPEN_ARRAY, _OPEN_OBJECT = ord('"'), ord("["), ord("{")
#: a \u escape of a UTF-16 surrogate, and a high one followed by a low one (a valid pair)
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE_PAIR = re.compile(rb"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}")


async def read_json(request: Request, prepare: Callable[[Any], T] | None = None) -> Any:
    """The request body as JSON (the size limit applies while it is read), passed through
    ``prepare`` (a route's validation of it, whose cost grows with the body) when given. A
    body over 64 KiB is parsed and prepared on the server's work pool."""
    body = await request.body()
    state = state_of(request)
    depth = state.config.max_json_depth
    if len(body) <= _PARSE_INLINE_BYTES:
        value = parse_json(body, max_depth=depth)
        return prepare(value) if prepare is not None else value
    return await state.offload(_parse_and_prepare, body, prepare, depth)


def _parse_and_prepare(body: bytes, prepare: Callable[[Any], Any] | None, depth: int) -> Any:
    value = parse_json(body, yielding=True, max_depth=depth)
    return prepare(value) if prepare is not None else value


def parse_json(body: bytes, *, yielding: bool = False, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``body`` parsed as strict JSON (no NaN or Infinity), refused with ``invalid_json`` when
    it does not parse, nests deeper than ``max_depth`` or escapes a lone surrogate.
    ``yielding`` parses numbers through Python hooks, so that a worker thread parsing a large
    body lets the event loop run between numbers (the C parser holds the GIL to the end)."""
    _check_structure(body, max_depth)
    hooks: dict[str, Any] = {"parse_constant": _refuse_constant}
    if yielding:
        hooks.update(parse_float=_parse_float, parse_int=_parse_int)
    try:
        return json.loads(body, **hooks)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, UnicodeDecodeError, digits
        detail = str(exc) if isinstance(exc, json.JSONDecodeError) else "not valid UTF-8 JSON"
        raise _invalid(detail) from None


def _invalid(detail: str) -> ServeError:
    return ServeError(
        "invalid_json",
        f"We could not parse the JSON body of your request ({detail}). The server expects a JSON "
        "payload.",
    )


def _refuse_constant(name: str) -> Any:
    raise _invalid(f"{name} is not a JSON number")


def _parse_float(text: str) -> float:
    return float(text)


def _parse_int(text: str) -> int:
    return int(text)


def _check_structure(body: bytes, max_depth: int) -> None:
    """Refuse nesting deeper than ``max_depth`` and unpaired surrogate escapes, with
    byte-level passes only (no parsing): escaped backslashes and quotes are dropped, then what
    is left between quotes is string content."""
    unescaped = body.replace(b"\\\\", b"")
    if b"\\u" in unescaped and _SURROGATE.search(_SURROGATE_PAIR.sub(b"", unescaped)):
        raise _invalid("a string holds an unpaired UTF-16 surrogate escape; text must be Unicode")
    unescaped = unescaped.replace(b'\\"', b"")
    # slice by slice: one pass over a large body would hold the GIL for tens of milliseconds
    structure = b"".join(
        unescaped[start : start + _SCAN_CHUNK].translate(None, _NOT_STRUCTURE)
        for start in range(0, len(unescaped), _SCAN_CHUNK)
    )
    if structure.count(b"[") + structure.count(b"{") <= max_depth:
        return
    codes = np.frombuffer(structure, np.uint8)
    depth, in_string = 0, False
    for start in range(0, len(codes), _SCAN_CHUNK):
        chunk = codes[start : start + _SCAN_CHUNK]
        quotes = chunk == _QUOTE
        inside = (np.cumsum(quotes, dtype=np.int64) & 1).astype(bool) ^ in_string
        brackets = chunk[~inside & ~quotes]
        opening = (brackets == _OPEN_ARRAY) | (brackets == _OPEN_OBJECT)
        levels = np.cumsum(opening.astype(np.int64) * 2 - 1) + depth
        if levels.size:
            if int(levels.max()) > max_depth:
                raise _invalid(
                    f"arrays and objects nest deeper than {max_depth} levels, this server's limit"
                )
            depth = int(levels[-1])
        in_string = bool(inside[-1])


def json_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ServeError(
            "invalid_request", f"the request body must be a JSON object, got {type(value).__name__}"
        )
    return value


def embedding_inputs(value: Any, field: str) -> tuple[str, list[Any]]:
    """OpenAI/TEI input forms: a string, a list of strings, one token array (list of ints)
    or a list of token arrays -> ``("text", [...])`` or ``("ids", [[...]])``."""
    if isinstance(value, str):
        return "text", [value]
    if not isinstance(value, list):
        raise ServeError(
            "invalid_request",
            f"'{field}' must be a string, a list of strings or token arrays, got "
            f"{type(value).__name__}",
            param=field,
        )
    if not value:
        raise ServeError("empty_input", f"`{field}` cannot be empty", param=field)
    if all(isinstance(v, str) for v in value):
        return "text", value
    if all(_is_int(v) for v in value):
        return "ids", [value]
    if all(isinstance(v, list) and all(_is_int(t) for t in v) for v in value):
        return "ids", value
    raise ServeError(
        "invalid_request",
        f"'{field}' must be a string, a list of strings, a token array or a list of token arrays "
        "(one form throughout)",
        param=field,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def bool_field(body: dict[str, Any], name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise ServeError(
            "invalid_request", f"'{name}' must be true or false, got {brief(value)}", param=name
        )
    return value


def dimensions_field(
    body: dict[str, Any], dimension: int, name: str, kind: str = "invalid_request"
) -> int | None:
    """A request's ``dimensions`` (Matryoshka truncation): an int in [1, the model's
    dimension], or None when absent."""
    value = body.get("dimensions")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= dimension:
        raise ServeError(
            kind,
            f"dimensions must be an integer from 1 to {dimension} ({name} returns "
            f"{dimension}-dimensional vectors), got {brief(value)}",
            param="dimensions",
        )
    return value
