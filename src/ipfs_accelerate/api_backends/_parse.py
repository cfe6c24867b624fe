"""Helpers for reading provider JSON defensively and for the common message shapes.

Provider parsers read fields through :func:`need` / :func:`opt`, which raise
:class:`~ipfs_accelerate.errors.ProtocolError` (with the provider and an excerpt) on a missing
or mistyped field, so a malformed body never surfaces as ``KeyError`` or ``TypeError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from ipfs_accelerate.errors import InvalidArgumentError, ProtocolError

from ._streams import excerpt
from ._types import ChatChunk, ToolCall, ToolCallDelta, Usage

__all__ = [
    "ToolCallAccumulator",
    "as_int",
    "need",
    "normalise_messages",
    "opt",
    "parse_arguments",
]

T = TypeVar("T")

_MISSING = object()


def _describe(value: Any) -> str:
    try:
        return excerpt(json.dumps(value, default=str))
    except (TypeError, ValueError):
        return excerpt(repr(value))


def need(obj: Any, key: str | int, typ: type[T] | tuple[type, ...], provider: str, what: str) -> T:
    """``obj[key]``, which must exist and be of ``typ``; else ProtocolError."""
    try:
        value = obj[key]
    except (KeyError, IndexError, TypeError):
        raise ProtocolError(
            f"{what}: missing field {key!r} in {_describe(obj)}", provider=provider
        ) from None
    if not isinstance(value, typ) or (isinstance(value, bool) and typ in (int, float)):
        raise ProtocolError(
            f"{what}: field {key!r} should be {_type_name(typ)}, got {_describe(value)}",
            provider=provider,
        )
    return value  # type: ignore[return-value]


def opt(
    obj: Any,
    key: str,
    typ: type[T] | tuple[type, ...],
    provider: str,
    what: str,
    default: Any = None,
) -> Any:
    """``obj.get(key)`` when present and not null; it must then be of ``typ``."""
    if not isinstance(obj, Mapping):
        raise ProtocolError(f"{what}: expected an object, got {_describe(obj)}", provider=provider)
    value = obj.get(key, _MISSING)
    if value is _MISSING or value is None:
        return default
    if not isinstance(value, typ) or (isinstance(value, bool) and typ in (int, float)):
        raise ProtocolError(
            f"{what}: field {key!r} should be {_type_name(typ)}, got {_describe(value)}",
            provider=provider,
        )
    return value


def as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _type_name(typ: Any) -> str:
    if isinstance(typ, tuple):
        return " or ".join(t.__name__ for t in typ)
    return str(typ.__name__)


def parse_arguments(raw: Any) -> dict[str, Any] | str:
    """Tool-call arguments: decoded object when they are a JSON object, else kept as given."""
    if isinstance(raw, Mapping):
        return dict(raw)
    if isinstance(raw, str):
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except ValueError:
            return raw
        return value if isinstance(value, dict) else raw
    return "" if raw is None else json.dumps(raw)


def normalise_messages(messages: Any, provider: str) -> list[dict[str, Any]]:
    """Accept a string (one user message) or a sequence of OpenAI-style message dicts."""
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    if (
        type(messages) is list
        and messages
        and all(type(m) is dict and type(m.get("role")) is str for m in messages)
    ):
        return messages  # the common case, without abstract-base-class checks
    if not isinstance(messages, Sequence) or isinstance(messages, bytes | bytearray):
        raise InvalidArgumentError(
            f"{provider}: messages must be a string or a list of {{'role', 'content'}} dicts, "
            f"got {type(messages).__name__}"
        )
    out: list[dict[str, Any]] = list(messages)  # serialised at once: no need to copy each dict
    for i, message in enumerate(out):
        if not isinstance(message, Mapping) or not isinstance(message.get("role"), str):
            raise InvalidArgumentError(
                f"{provider}: messages[{i}] must be a dict with a string 'role', got {message!r}"
            )
    if not out:
        raise InvalidArgumentError(f"{provider}: messages must not be empty")
    return out


def content_text(content: Any) -> str:
    """Text of an OpenAI-style ``content`` (a string, or a list of ``{"type": "text"}`` parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        parts = []
        for part in content:
            if isinstance(part, Mapping) and part.get("type") == "text":
                parts.append(str(part.get("text", "")))
            elif isinstance(part, str):
                parts.append(part)
        return "".join(parts)
    return str(content)


def number_vector(vector: Any, provider: str, what: str) -> list[float]:
    """An embedding as floats; anything but a list of numbers is a ProtocolError."""
    if not isinstance(vector, list) or not all(
        isinstance(x, int | float) and not isinstance(x, bool) for x in vector
    ):
        raise ProtocolError(
            f"{what}: embedding is not a list of numbers: {excerpt(str(vector)[:200])!r}",
            provider=provider,
        )
    return [float(x) for x in vector]


def number_vectors(vectors: list[Any], count: int, provider: str, what: str) -> list[list[float]]:
    """``count`` embeddings (one per input: never fewer, never more) as floats."""
    if len(vectors) != count:
        raise ProtocolError(
            f"{what}: got {len(vectors)} embedding(s) for {count} input(s)", provider=provider
        )
    return [number_vector(vector, provider, what) for vector in vectors]


class ToolCallAccumulator:
    """Assembles streamed tool-call pieces into complete :class:`ToolCall` objects."""

    __slots__ = ("_calls",)

    def __init__(self) -> None:
        self._calls: dict[
            int, list[Any]
        ] = {}  # index -> [id, name, [argument pieces], complete obj]

    def add(self, delta: ToolCallDelta) -> None:
        entry = self._calls.setdefault(delta.index, [None, None, [], None])
        if delta.id:
            entry[0] = delta.id
        if delta.name and not entry[1]:
            entry[1] = delta.name
        if delta.arguments_delta:
            entry[2].append(delta.arguments_delta)

    def set_complete(self, index: int, call_id: str, name: str, arguments: dict[str, Any]) -> None:
        """For providers that send a call whole (Gemini, Ollama)."""
        self._calls[index] = [call_id, name, [], arguments]  # result() takes the arguments whole

    def result(self) -> list[ToolCall]:
        calls = []
        for index in sorted(self._calls):
            call_id, name, pieces, complete = self._calls[index]
            args = complete if complete is not None else parse_arguments("".join(pieces))
            calls.append(ToolCall(id=call_id or f"call_{index}", name=name or "", arguments=args))
        return calls

    def __bool__(self) -> bool:
        return bool(self._calls)


def final_chunk(
    finish_reason: str | None,
    usage: Usage | None,
    tools: ToolCallAccumulator,
    model: str | None = None,
    raw: Any = None,
    text: str = "",
) -> ChatChunk:
    tool_calls = tools.result()
    if tool_calls and finish_reason in (None, "stop"):
        finish_reason = "tool_calls"
    return ChatChunk(
        text=text, done=True, finish_reason=finish_reason, usage=usage or Usage(),
        tool_calls=tool_calls, model=model, raw=raw,
    )  # fmt: skip
