"""OpenAI's multipart routes beyond transcription: image edits (one image and a mask, or
several ``image[]``), image variations and audio translations, against the OpenAI fake
(which refuses what the API refuses) and side by side with the official ``openai`` SDK."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from ipfs_accelerate.api_backends import APIBackend, create_api_backend
from ipfs_accelerate.errors import BadRequestError, InvalidArgumentError

from ..fakes.openai_fake import FormPart, OpenAIFake, parse_form_parts
from .conftest import fast, run, server_thread

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test-123"
PNG = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + bytes(17) + b"first"
PNG2 = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + bytes(17) + b"second"
MASK = b"\x89PNG\r\n\x1a\n" + b"\x00\x00\x00\x0dIHDR" + bytes(17) + b"mask"
JPEG = b"\xff\xd8\xff\xe0" + bytes(12) + b"jpeg"
MP3 = b"ID3\x04\x00\x00" + bytes(20)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:12]


def _backend(fake: OpenAIFake) -> APIBackend:
    return create_api_backend(
        "openai", metadata={"api_key": KEY, "base_url": fake.url + "/v1",
                            "resilience": fast(max_retries=0)},
    )  # fmt: skip


def _parts(fake: OpenAIFake) -> list[FormPart]:
    """The multipart parts of the last request, as the fake parsed them."""
    last = fake.requests[-1]

    class Request:  # parse_form_parts reads only the content type
        headers = last.headers

    parts = parse_form_parts(Request(), last.body)  # type: ignore[arg-type]
    assert parts is not None, last.headers.get("Content-Type")
    return parts


def _decoded(response: Any) -> list[str]:
    return [base64.b64decode(image.b64_json).decode() for image in response.images]


def test_edits_variations_and_translations_travel_as_multipart(tmp_path: Path) -> None:
    async def body() -> None:
        async with OpenAIFake() as fake:
            b = _backend(fake)
            try:
                edited = await b.edit_image(PNG, "add a hat", mask=MASK, n=2,
                                            response_format="b64_json")  # fmt: skip
                assert _decoded(edited) == [f"edit:add a hat:{_sha(PNG)}:mask={_sha(MASK)}"] * 2
                parts = {p.name: p for p in _parts(fake)}
                assert (parts["image"].filename, parts["image"].content_type) == (
                    "image.png", "image/png",
                )  # fmt: skip
                assert parts["mask"].payload == MASK and parts["n"].payload == b"2"
                assert "model" not in parts  # the server's default model

                # several images (gpt-image-1) go as repeated image[] parts, in order
                path = tmp_path / "second.png"
                path.write_bytes(PNG2)
                several = await b.edit_image([PNG, path, JPEG], "merge", "gpt-image-1",
                                             response_format="b64_json")  # fmt: skip
                assert _decoded(several) == [f"edit:merge:{_sha(PNG)},{_sha(PNG2)},{_sha(JPEG)}"]
                sent = [(p.name, p.filename, p.content_type) for p in _parts(fake) if p.filename]
                assert sent == [("image[]", "image.png", "image/png"),
                                ("image[]", "second.png", "image/png"),
                                ("image[]", "image.jpg", "image/jpeg")]  # fmt: skip
                urls = await b.edit_image(PNG, "a hat")
                assert [i.url for i in urls.images] == ["https://images.example/edit-0.png"]

                varied = await b.create_image_variation(PNG, "dall-e-2", n=3,
                                                        response_format="b64_json")  # fmt: skip
                assert _decoded(varied) == [f"variation::{_sha(PNG)}"] * 3
                assert fake.requests[-1].path == "/v1/images/variations"

                translated = await b.translate(MP3, filename="talk.mp3", prompt="names",
                                               temperature=0.2)  # fmt: skip
                assert translated.text == (
                    f"translated {len(MP3)} bytes from talk.mp3 into English (prompt: names)"
                )
                parts = {p.name: p for p in _parts(fake)}
                assert parts["file"].content_type == "audio/mpeg"
                assert parts["model"].payload == b"whisper-1"
                assert parts["temperature"].payload == b"0.2"
                plain = await b.translate(MP3, response_format="text")
                assert plain.text.startswith("translated") and plain.language is None

                # what the API refuses, the fake refuses: an argument the route does not take,
                # a variation of a JPEG, dall-e-2 given two images
                with pytest.raises(BadRequestError, match="Unrecognized request argument"):
                    await b.translate(MP3, language="de")
                with pytest.raises(BadRequestError, match="must be a PNG"):
                    await b.create_image_variation(JPEG)
                with pytest.raises(BadRequestError, match="dall-e-2 takes one image"):
                    await b.edit_image([PNG, PNG2], "two")
            finally:
                await b.aclose()
            # a JSON body to a multipart route is refused as the API refuses it
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    fake.url + "/v1/images/edits", json={"prompt": "x"},
                    headers={"Authorization": f"Bearer {KEY}"},
                )  # fmt: skip
            assert response.status_code == 400
            assert "expected multipart/form-data" in response.json()["error"]["message"]

    run(body())


@pytest.mark.parametrize(
    ("call", "words"),
    [
        (lambda b: b.edit_image(PNG, "  "), "prompt must be non-empty"),
        (lambda b: b.edit_image([], "hat"), "at least one image"),
        (lambda b: b.edit_image(PNG, "hat", size={"w": 1}), "option 'size'"),
        (lambda b: b.edit_image(12, "hat"), "bytes or a file path, got int"),
        (lambda b: b.create_image_variation(b""), "must not be empty"),
        (lambda b: b.translate(MP3, prompt=["a", None]), "option 'prompt'"),
    ],
)
def test_bad_media_calls_are_refused_before_sending(call: Any, words: str) -> None:
    async def body() -> None:
        async with OpenAIFake() as fake:
            b = _backend(fake)
            try:
                with pytest.raises(InvalidArgumentError, match=words):
                    await call(b)
                assert not fake.requests
            finally:
                await b.aclose()

    run(body())


def _comparable(parts: list[FormPart]) -> list[tuple[str, str | None, str | None, bytes]]:
    # the SDK writes fields before files in its own order; the API reads them by name
    return sorted((p.name, p.filename, p.content_type, p.payload) for p in parts)


# the SDK marks images.create_variation and audio.translations deprecated; the API serves them
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_requests_equal_what_the_openai_sdk_sends() -> None:
    with server_thread(OpenAIFake()) as fake:
        sdk = openai.OpenAI(api_key=KEY, base_url=fake.url + "/v1", max_retries=0)
        b = _backend(fake)
        try:
            pairs = [
                (lambda: sdk.images.edit(
                    image=[("image.png", PNG, "image/png"), ("image.jpg", JPEG, "image/jpeg")],
                    prompt="merge", model="gpt-image-1", n=2, size="1024x1024"),
                 lambda: b.sync.edit_image([PNG, JPEG], "merge", "gpt-image-1", n=2,
                                           size="1024x1024")),
                (lambda: sdk.images.edit(
                    image=("image.png", PNG, "image/png"), mask=("image.png", MASK, "image/png"),
                    prompt="hat", model="dall-e-2", response_format="b64_json"),
                 lambda: b.sync.edit_image(PNG, "hat", "dall-e-2", mask=MASK,
                                           response_format="b64_json")),
                (lambda: sdk.images.create_variation(
                    image=("image.png", PNG, "image/png"), model="dall-e-2", n=2,
                    size="256x256"),
                 lambda: b.sync.create_image_variation(PNG, "dall-e-2", n=2, size="256x256")),
                (lambda: sdk.audio.translations.create(
                    file=("talk.mp3", MP3, "audio/mpeg"), model="whisper-1", prompt="p",
                    temperature=0.2),
                 lambda: b.sync.translate(MP3, filename="talk.mp3", prompt="p",
                                          temperature=0.2)),
            ]  # fmt: skip
            for theirs, ours in pairs:
                reference = theirs()
                expected = _comparable(_parts(fake))
                got = ours()
                assert _comparable(_parts(fake)) == expected
                if hasattr(reference, "data"):
                    assert [(i.url, i.b64_json) for i in reference.data] == [
                        (i.url, i.b64_json) for i in got.images
                    ]
                else:
                    assert reference.text == got.text
        finally:
            b.close()
