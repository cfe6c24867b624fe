"""Gemini's multimodal parts: inline image, audio and PDF data and fileData URIs, in the
shape of generateContent's ``Part``, checked by the fake as the API checks them and compared
with what Google's own SDK (google-genai) sends for the same media."""

from __future__ import annotations

import base64
import re
import struct
from typing import Any

import pytest

from ipfs_accelerate.api_backends import APIBackend, create_api_backend
from ipfs_accelerate.errors import BadRequestError, InvalidArgumentError

from ..fakes.gemini_fake import GeminiFake
from .conftest import fast, run, server_thread

pytestmark = pytest.mark.timeout(60)

GEMINI = "gemini-2.0-flash"
PNG = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + b"IHDR" + bytes(17)
WAV = b"RIFF" + struct.pack("<I", 36) + b"WAVEfmt " + bytes(28)
PDF = b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _backend(fake: GeminiFake) -> APIBackend:
    return create_api_backend(
        "gemini",
        metadata={"gemini_api_key": "AIza-test-123", "base_url": fake.url + "/v1beta",
                  "resilience": fast(max_retries=0)},
    )  # fmt: skip


MESSAGE = [
    {
        "role": "user",
        "content": [
            {"type": "text", "text": "Describe these."},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{_b64(PNG)}"}},
            {"type": "input_audio", "input_audio": {"data": _b64(WAV), "format": "wav"}},
            {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{_b64(PDF)}",
                                      "filename": "doc.pdf"}},
            {"type": "image_url", "image_url": {"url": "gs://bucket/photo.jpeg"}},
            {"type": "file", "file": {"file_uri": "https://generativelanguage.googleapis.com/"
                                      "v1beta/files/abc-123", "mime_type": "audio/mp3"}},
        ],
    }
]  # fmt: skip

EXPECTED_PARTS = [
    {"text": "Describe these."},
    {"inlineData": {"mimeType": "image/png", "data": _b64(PNG)}},
    {"inlineData": {"mimeType": "audio/wav", "data": _b64(WAV)}},
    {"inlineData": {"mimeType": "application/pdf", "data": _b64(PDF)}},
    {"fileData": {"fileUri": "gs://bucket/photo.jpeg", "mimeType": "image/jpeg"}},
    {"fileData": {"fileUri": "https://generativelanguage.googleapis.com/v1beta/files/abc-123",
                  "mimeType": "audio/mp3"}},
]  # fmt: skip


def test_media_parts_travel_in_generate_contents_shape() -> None:
    async def body() -> None:
        async with GeminiFake() as fake:
            backend = _backend(fake)
            try:
                reply = await backend.chat(GEMINI, MESSAGE)
                sent = fake.requests[-1].json["contents"]
                assert sent == [{"role": "user", "parts": EXPECTED_PARTS}]
                # the fake decoded what arrived: the bytes are the bytes sent
                inline = [m["bytes"] for m in fake.media if "bytes" in m]
                assert inline == [PNG, WAV, PDF]
                assert reply.text == (
                    f"Echo: Describe these. [image/png {len(PNG)} bytes] [audio/wav "
                    f"{len(WAV)} bytes] [application/pdf {len(PDF)} bytes] [image/jpeg "
                    "gs://bucket/photo.jpeg] [audio/mp3 https://generativelanguage.googleapis"
                    ".com/v1beta/files/abc-123]"
                )
                # streaming sends the same parts
                chunks = [c async for c in backend.stream_chat(GEMINI, MESSAGE)]
                assert "".join(c.text for c in chunks) == reply.text
                assert fake.requests[-1].json["contents"][0]["parts"] == EXPECTED_PARTS
                # a Gemini part passes through as given, and the fake holds it to the API's rules
                native = [{"role": "user", "content": [
                    {"fileData": {"fileUri": "gs://b/clip.mp4", "mimeType": "video/mp4"}},
                    {"text": "and this?"}]}]  # fmt: skip
                assert (await backend.chat(GEMINI, native)).text.endswith("gs://b/clip.mp4]")
                blob = {"mimeType": "image/png", "data": _b64(PNG), "size": 3}
                wrong = [{"role": "user", "content": [{"inlineData": blob}]}]
                with pytest.raises(BadRequestError, match='Unknown name "size"'):
                    await backend.chat(GEMINI, wrong)
                bmp = {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AAAA"}}
                unsupported = [{"role": "user", "content": [bmp]}]
                with pytest.raises(BadRequestError, match="Unsupported MIME type: image/bmp"):
                    await backend.chat(GEMINI, unsupported)
            finally:
                await backend.aclose()

    run(body())


@pytest.mark.parametrize(
    ("part", "words"),
    [
        ({"type": "image_url", "image_url": {"url": "data:image/png,rawtext"}}, "base64"),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,@@@"}}, "not valid"),
        ({"type": "input_audio", "input_audio": {"data": "AAAA", "format": "opus"}}, "'opus'"),
        ({"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}, "non-empty"),
        ({"type": "file", "file": {"filename": "x.pdf"}}, "needs a URL"),
        ({"type": "file", "file": {"file_uri": "gs://b/x", "mime_type": "pdf"}}, "not a MIME type"),
        ({"type": "video_url", "video_url": "x"}, "unsupported content part type 'video_url'"),
        ({"text": "a", "fileData": {"fileUri": "gs://b/x"}}, "exactly one of"),
        (7, "a content part is an object"),
    ],
)  # fmt: skip
def test_bad_media_parts_are_refused_before_sending(part: Any, words: str) -> None:
    async def body() -> None:
        async with GeminiFake() as fake:
            backend = _backend(fake)
            try:
                with pytest.raises(InvalidArgumentError, match=re.escape(words)) as caught:
                    await backend.chat(GEMINI, [{"role": "user", "content": ["look", part]}])
                assert "messages[0].content[1]" in str(caught.value)
                assert not fake.requests  # nothing was sent
            finally:
                await backend.aclose()

    run(body())


def _camel(value: Any) -> Any:
    """What the API reads, in one spelling: proto3 JSON takes snake_case or lowerCamelCase
    names (the SDK writes inline fields in snake_case) and standard or URL-safe base64 bytes
    (the SDK writes URL-safe), so names become lowerCamelCase and inline data its bytes."""
    if isinstance(value, list):
        return [_camel(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {re.sub(r"_(\w)", lambda m: m.group(1).upper(), k): _camel(v) for k, v in value.items()}
    if isinstance(out.get("inlineData"), dict):
        data = out["inlineData"]["data"].replace("+", "-").replace("/", "_")
        out["inlineData"]["data"] = base64.urlsafe_b64decode(data)
    return out


def test_parts_equal_what_google_genai_sends() -> None:
    genai = pytest.importorskip("google.genai")
    from google.genai import types

    with server_thread(GeminiFake()) as fake:
        client = genai.Client(
            api_key="AIza-test-123",
            http_options=types.HttpOptions(base_url=fake.url, api_version="v1beta"),
        )
        reference = client.models.generate_content(
            model=GEMINI,
            contents=[
                types.Content(role="user", parts=[
                    types.Part.from_text(text="Describe these."),
                    types.Part.from_bytes(data=PNG, mime_type="image/png"),
                    types.Part.from_bytes(data=WAV, mime_type="audio/wav"),
                    types.Part.from_bytes(data=PDF, mime_type="application/pdf"),
                    types.Part.from_uri(file_uri="gs://bucket/photo.jpeg", mime_type="image/jpeg"),
                    types.Part.from_uri(
                        file_uri="https://generativelanguage.googleapis.com/v1beta/files/abc-123",
                        mime_type="audio/mp3"),
                ])
            ],
        )  # fmt: skip
        theirs = _camel(fake.requests[-1].json["contents"])
        backend = _backend(fake)
        try:
            ours = backend.sync.chat(GEMINI, MESSAGE)
        finally:
            backend.close()
        assert _camel(fake.requests[-1].json["contents"]) == theirs
        assert ours.text == reference.text
