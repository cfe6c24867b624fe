"""Incremental decoders for the two stream framings the providers speak.

* :class:`SSEDecoder`: Server-Sent Events (the WHATWG event-stream format): lines ended by
  ``\\n``, ``\\r\\n`` or ``\\r``; ``field: value`` lines; one optional space after the colon;
  comments start with ``:``; an event is dispatched at a blank line. TGI writes ``data:{...}``
  without the space, Gemini ends lines with ``\\r\\n``: both are the same format.
* :class:`NDJSONDecoder`: one JSON document per ``\\n``-terminated line (Ollama).

Both are fed raw bytes as they arrive (chunk boundaries may fall anywhere, even inside a
UTF-8 sequence or between ``\\r`` and ``\\n``) and return complete items. ``finish()`` tells
whether the byte stream ended on an item boundary: an event without its terminating blank
line, or a JSON line without its newline, is a truncated stream and raises
:class:`~ipfs_accelerate.errors.StreamInterruptedError`, never a silently shorter result.
Items larger than ``max_item_bytes`` raise :class:`~ipfs_accelerate.errors.ProtocolError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ipfs_accelerate.errors import ProtocolError, StreamInterruptedError

__all__ = ["NDJSONDecoder", "SSEDecoder", "SSEEvent", "excerpt", "loads_json"]

DEFAULT_MAX_ITEM_BYTES = 16 * 1024 * 1024


def excerpt(data: bytes | str | None, limit: int = 200) -> str:
    """A short, single-line, printable excerpt of a body for error messages."""
    if data is None:
        return ""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes | bytearray) else str(data)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "..."


def loads_json(data: bytes | str, provider: str, what: str) -> Any:
    """Decode JSON or raise ProtocolError naming the provider and quoting an excerpt."""
    try:
        return json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(
            f"malformed JSON in {what}: {exc.__class__.__name__}: {excerpt(data)!r}",
            provider=provider,
        ) from None


@dataclass(slots=True)
class SSEEvent:
    """One dispatched event. ``event`` is ``"message"`` when the stream did not name it."""

    event: str
    data: str
    id: str | None = None

    def json(self, provider: str) -> Any:
        return loads_json(self.data, provider, f"SSE event {self.event!r}")


class SSEDecoder:
    """Incremental Server-Sent Events decoder (see module docstring)."""

    __slots__ = ("_buf", "_data", "_data_size", "_event", "_id", "_max", "_provider")

    def __init__(self, provider: str, max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES) -> None:
        self._provider = provider
        self._max = max_item_bytes
        self._buf = b""
        self._data: list[bytes] = []
        self._data_size = 0
        self._event: bytes | None = None
        self._id: bytes | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Consume ``chunk``; return the events it completed (possibly none)."""
        buf = self._buf + chunk if self._buf else chunk
        events: list[SSEEvent] = []
        start = 0
        size = len(buf)
        while start < size:
            nl = buf.find(b"\n", start)
            cr = buf.find(b"\r", start, nl if nl >= 0 else size)
            if cr >= 0:
                if cr == size - 1:
                    break  # a "\r" at the end may be the first half of "\r\n": wait
                line = buf[start:cr]
                start = cr + 2 if buf[cr + 1] == 0x0A else cr + 1
            elif nl >= 0:
                line = buf[start:nl]
                start = nl + 1
            else:
                break
            self._line(line, events)
        self._buf = buf[start:] if start < size else b""
        if len(self._buf) + self._data_size > self._max:
            raise ProtocolError(
                f"SSE event larger than {self._max} bytes: {excerpt(self._buf[:200])!r}",
                provider=self._provider,
            )
        return events

    def _line(self, line: bytes, events: list[SSEEvent]) -> None:
        if not line:
            if self._data:
                events.append(self._dispatch())
            else:  # per the spec, an event without data lines is not dispatched
                self._event = None
            return
        if line[0] == 0x3A:  # ":" comment (keep-alive)
            return
        colon = line.find(b":")
        if colon < 0:
            name, value = line, b""
        else:
            name = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == b" ":
                value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
        elif name == b"event":
            self._event = value
        elif name == b"id":
            self._id = value
        # "retry" and unknown fields are ignored, as the spec says

    def _dispatch(self) -> SSEEvent:
        try:
            data = b"\n".join(self._data).decode("utf-8")
            event = self._event.decode("utf-8") if self._event else "message"
            event_id = self._id.decode("utf-8") if self._id is not None else None
        except UnicodeDecodeError:
            raise ProtocolError(
                f"SSE event is not valid UTF-8: {excerpt(b''.join(self._data))!r}",
                provider=self._provider,
            ) from None
        self._data = []
        self._data_size = 0
        self._event = None
        return SSEEvent(event, data, event_id)

    @property
    def pending(self) -> bool:
        """True when bytes of an unfinished event are buffered."""
        return bool(self._buf.strip(b"\r\n")) or bool(self._data) or self._event is not None

    def finish(self) -> list[SSEEvent]:
        """The byte stream ended. Raise if it ended inside an event."""
        events: list[SSEEvent] = []
        if self._buf.endswith(b"\r"):  # a CR at the very end still ends its line
            line, self._buf = self._buf[:-1], b""
            self._line(line, events)
        if self.pending:
            raise StreamInterruptedError(
                "stream ended inside an SSE event (no terminating blank line): "
                f"{excerpt(b''.join(self._data) + self._buf)!r}",
                provider=self._provider,
            )
        return events


class NDJSONDecoder:
    """Incremental newline-delimited JSON decoder (see module docstring)."""

    __slots__ = ("_buf", "_max", "_provider")

    def __init__(self, provider: str, max_item_bytes: int = DEFAULT_MAX_ITEM_BYTES) -> None:
        self._provider = provider
        self._max = max_item_bytes
        self._buf = b""

    def feed(self, chunk: bytes) -> list[Any]:
        buf = self._buf + chunk if self._buf else chunk
        items: list[Any] = []
        start = 0
        while True:
            nl = buf.find(b"\n", start)
            if nl < 0:
                break
            line = buf[start:nl].strip()
            start = nl + 1
            if line:
                items.append(loads_json(line, self._provider, "NDJSON line"))
        self._buf = buf[start:]
        if len(self._buf) > self._max:
            raise ProtocolError(
                f"NDJSON line longer than {self._max} bytes: {excerpt(self._buf[:200])!r}",
                provider=self._provider,
            )
        return items

    def finish(self) -> list[Any]:
        """The byte stream ended. A trailing line without its newline is a truncation."""
        if self._buf.strip():
            raise StreamInterruptedError(
                f"stream ended inside an NDJSON line: {excerpt(self._buf)!r}",
                provider=self._provider,
            )
        return []
