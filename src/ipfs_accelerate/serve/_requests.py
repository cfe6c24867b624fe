"""Reading a request: its JSON body and the fields the OpenAI, TEI and KServe routes share.

Every refusal is a :class:`ServeError`, worded so that the route's API family can answer it.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ._errors import ServeError

if TYPE_CHECKING:
    from starlette.requests import Request

__all__ = ["bool_field", "embedding_inputs", "json_object", "read_json"]


async def read_json(request: Request) -> Any:
    """The request body as JSON (the size limit applies while it is read)."""
    body = await request.body()
    try:
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServeError(
            "invalid_json",
            f"We could not parse the JSON body of your request ({exc}). The server expects a JSON "
            "payload.",
        ) from None


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
            "invalid_request", f"'{name}' must be true or false, got {value!r}", param=name
        )
    return value
