"""SSE and NDJSON decoders: framing rules, arbitrary chunk boundaries, truncation, limits."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ipfs_accelerate.api_backends._streams import NDJSONDecoder, SSEDecoder
from ipfs_accelerate.errors import ProtocolError, StreamInterruptedError

pytestmark = pytest.mark.timeout(60)

STREAM = (
    b": keep-alive comment\n"
    b"event: message_start\n"
    b'data: {"a": 1}\n\n'
    b'data:{"b": "no space after the colon"}\r\n\r\n'
    b"id: 7\r"
    b"data: line one\r"
    b"data: line two\r\r"
    b"event: ping\n"
    b"data: \xc3\xa9t\xc3\xa9\n\n"
    b"retry: 100\n"
    b"event: ignored-without-data\n\n"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    ("message_start", '{"a": 1}', None),
    ("message", '{"b": "no space after the colon"}', None),
    ("message", "line one\nline two", "7"),
    ("ping", "été", "7"),  # the last event id sticks, as the spec says
    ("message", "[DONE]", "7"),
]


def _collect(chunks: list[bytes]) -> list[tuple[str, str, str | None]]:
    decoder = SSEDecoder("test")
    events = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    events += decoder.finish()
    return [(e.event, e.data, e.id) for e in events]


def test_sse_framing_rules() -> None:
    assert _collect([STREAM]) == EXPECTED


def test_sse_byte_by_byte() -> None:
    assert _collect([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(STREAM)), max_size=12))
def test_sse_any_chunk_boundaries(cuts: list[int]) -> None:
    points = sorted(set(cuts))
    pieces = [STREAM[a:b] for a, b in zip([0, *points], [*points, len(STREAM)], strict=True)]
    assert _collect(pieces) == EXPECTED


def test_sse_crlf_split_across_chunks_is_one_line_break() -> None:
    # "\r" at the end of one chunk and "\n" at the start of the next: one terminator, not two
    assert _collect([b"data: x\r", b"\ndata: y\r", b"\n\r\n"]) == [("message", "x\ny", None)]


def test_sse_final_cr_ends_the_stream_cleanly() -> None:
    assert _collect([b"data: x\r\r"]) == [("message", "x", None)]


@pytest.mark.parametrize(
    "tail",
    [b'data: {"half": ', b"data: complete line but no blank line\n", b"event: message_stop\n"],
)
def test_sse_truncated_event_raises(tail: bytes) -> None:
    decoder = SSEDecoder("prov")
    assert [e.data for e in decoder.feed(b"data: 1\n\n" + tail)] == ["1"]
    with pytest.raises(StreamInterruptedError) as info:
        decoder.finish()
    assert info.value.provider == "prov"


def test_sse_oversized_event_raises() -> None:
    decoder = SSEDecoder("prov", max_item_bytes=1000)
    with pytest.raises(ProtocolError, match="larger than 1000"):
        for _ in range(20):
            decoder.feed(b"data: " + b"x" * 100 + b"\n")


def test_sse_invalid_utf8_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="UTF-8"):
        SSEDecoder("p").feed(b"data: \xff\xfe\n\n")


def test_sse_event_json_errors_are_typed() -> None:
    (event,) = SSEDecoder("p").feed(b"data: {not json\n\n")
    with pytest.raises(ProtocolError, match="malformed JSON"):
        event.json("p")


def test_ndjson_lines_across_chunks() -> None:
    decoder = NDJSONDecoder("ollama")
    items = decoder.feed(b'{"a": 1}\n{"b"') + decoder.feed(b': 2}\n\n  \n{"c": 3}\n')
    assert items == [{"a": 1}, {"b": 2}, {"c": 3}]
    assert decoder.finish() == []


def test_ndjson_truncated_line_raises() -> None:
    decoder = NDJSONDecoder("ollama")
    decoder.feed(b'{"a": 1}\n{"done": tr')
    with pytest.raises(StreamInterruptedError, match="NDJSON"):
        decoder.finish()


def test_ndjson_malformed_line_is_protocol_error_with_excerpt() -> None:
    with pytest.raises(ProtocolError) as info:
        NDJSONDecoder("ollama").feed(b"<html>oops</html>\n")
    assert "<html>oops</html>" in str(info.value)
    assert not isinstance(info.value, StreamInterruptedError)


def test_ndjson_oversized_line() -> None:
    with pytest.raises(ProtocolError, match="longer than 64"):
        NDJSONDecoder("x", max_item_bytes=64).feed(b"{" + b'"k": 1, ' * 20)
