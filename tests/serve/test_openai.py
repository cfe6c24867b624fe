"""The OpenAI routes with the official ``openai`` SDK and this project's ``openai`` backend as
clients, against a real uvicorn server on loopback."""

from __future__ import annotations

import base64

import numpy as np
import openai
import pytest

from ipfs_accelerate.api_backends import create_api_backend

from .conftest import API_KEY, MINILM, Running, wav_bytes

pytestmark = pytest.mark.timeout(120)


@pytest.fixture()
def client(server: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0)


def test_sdk_embeddings_match_the_pipeline(server: Running, client: openai.OpenAI) -> None:
    texts = ["The cat sleeps on the windowsill.", "Interest rates stayed the same.", "a"]
    direct = server.pipeline(MINILM).embed(texts)
    counts = [server.pipeline(MINILM).tokenizer.token_count(t) for t in texts]
    # the SDK asks for base64 by default and decodes it itself
    response = client.embeddings.create(model=MINILM, input=texts)
    got = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert [d.index for d in response.data] == [0, 1, 2]
    np.testing.assert_allclose(got, direct, atol=2e-5)
    assert response.model == MINILM
    assert response.usage.prompt_tokens == response.usage.total_tokens == sum(counts)
    floats = client.embeddings.create(model=MINILM, input=texts[0], encoding_format="float")
    np.testing.assert_allclose(floats.data[0].embedding, direct[0], atol=2e-5)
    assert np.isclose(np.linalg.norm(floats.data[0].embedding), 1.0, atol=1e-5)


def test_base64_is_little_endian_float32(server: Running) -> None:
    import httpx

    body = {"model": MINILM, "input": "hello world", "encoding_format": "base64"}
    reply = httpx.post(
        server.url + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {API_KEY}"}
    )
    assert reply.status_code == 200
    vector = np.frombuffer(base64.b64decode(reply.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, server.pipeline(MINILM).embed("hello world"), atol=2e-5)


def test_token_arrays_are_this_models_ids(server: Running, client: openai.OpenAI) -> None:
    embedder = server.pipeline(MINILM)
    encoded = embedder.tokenizer(["hello world", "a much longer second sentence"])
    ids = [encoded.input_ids[i, :n].tolist() for i, n in enumerate(encoded.lengths)]
    one = client.embeddings.create(model=MINILM, input=ids[0], encoding_format="float")
    many = client.embeddings.create(model=MINILM, input=ids, encoding_format="float")
    expected = embedder.embed(["hello world", "a much longer second sentence"])
    np.testing.assert_allclose(one.data[0].embedding, expected[0], atol=2e-5)
    np.testing.assert_allclose([d.embedding for d in many.data], expected, atol=2e-5)
    assert many.usage.prompt_tokens == sum(len(i) for i in ids)
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MINILM, input=[101, 999_999, 102])
    assert "vocabulary" in info.value.message


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    listed = {m.id: m for m in client.models.list()}
    assert set(listed) == {MINILM, "tiny-vit", "tiny-clip", "tiny-whisper"}
    assert listed[MINILM].owned_by == "ipfs-accelerate" and listed[MINILM].created > 1_600_000_000
    assert client.models.retrieve(MINILM).id == MINILM
    with pytest.raises(openai.NotFoundError) as info:
        client.models.retrieve("no-such-model")
    assert info.value.code == "model_not_found"


def test_unknown_and_wrong_models_are_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.embeddings.create(model="text-embedding-3-small", input="x")
    assert info.value.code == "model_not_found" and info.value.body["param"] == "model"
    with pytest.raises(openai.BadRequestError) as wrong:
        client.embeddings.create(model="tiny-whisper", input="x")
    assert "speech-recognition" in wrong.value.message
    with pytest.raises(openai.BadRequestError) as dims:
        client.embeddings.create(model=MINILM, input="x", dimensions=385)
    assert dims.value.body["param"] == "dimensions"


def test_too_long_input_is_a_context_length_error(server: Running, client: openai.OpenAI) -> None:
    text = "word " * 400  # MiniLM takes 256 tokens
    with pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model=MINILM, input=["short", text])
    assert info.value.code == "context_length_exceeded"
    assert (
        "maximum context length is 256 tokens" in info.value.message
        and "input 1" in info.value.message
    )


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
def test_transcriptions_in_every_format(server: Running, client: openai.OpenAI) -> None:
    audio = wav_bytes()
    whisper = server.pipeline("tiny-whisper")
    samples, rate = _decoded(audio)
    expected = whisper.transcribe((samples, rate))
    assert expected  # the seeded model says something, so equality below means something
    result = client.audio.transcriptions.create(
        model="tiny-whisper", file=("speech.wav", audio, "audio/wav")
    )
    assert result.text == expected
    text = client.audio.transcriptions.create(
        model="tiny-whisper", file=("speech.wav", audio), response_format="text"
    )
    assert text.strip() == expected
    verbose = client.audio.transcriptions.create(
        model="tiny-whisper",
        file=("speech.wav", audio),
        response_format="verbose_json",
        language="fr",
    )
    assert verbose.language == "french" and verbose.text == whisper.transcribe(
        (samples, rate), language="fr"
    )
    assert verbose.duration == pytest.approx(1.5)
    segment = verbose.segments[0]
    assert segment.start == 0.0 and segment.end == pytest.approx(1.5) and segment.tokens
    srt = client.audio.transcriptions.create(
        model="tiny-whisper", file=("a.wav", audio), response_format="srt"
    )
    assert srt.startswith("1\n00:00:00,000 --> 00:00:01,500\n")
    translated = client.audio.translations.create(model="tiny-whisper", file=("a.wav", audio))
    assert translated.text == whisper.transcribe((samples, rate), task="translate")


def test_transcription_errors_are_openai_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as bad:
        client.audio.transcriptions.create(
            model="tiny-whisper", file=("speech.wav", b"RIFF not really a wav file")
        )
    assert bad.value.code == "invalid_value" and bad.value.body["param"] == "file"
    assert "could not be decoded" in bad.value.message
    with pytest.raises(openai.BadRequestError) as words:
        client.audio.transcriptions.create(
            model="tiny-whisper", file=("a.wav", wav_bytes()), response_format="verbose_json",
            timestamp_granularities=["word"],
        )  # fmt: skip
    assert "timestamp tokens" in words.value.message
    with pytest.raises(openai.BadRequestError) as language:
        client.audio.transcriptions.create(
            model="tiny-whisper", file=("a.wav", wav_bytes()), language="xx"
        )
    assert "language" in language.value.message
    with pytest.raises(openai.BadRequestError):
        client.audio.transcriptions.create(model=MINILM, file=("a.wav", wav_bytes()))


def test_wrong_or_missing_key_is_openais_401(server: Running) -> None:
    wrong = openai.OpenAI(base_url=server.url + "/v1", api_key="sk-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        wrong.models.list()
    assert info.value.code == "invalid_api_key"
    assert "sk-wrong" not in str(info.value.body) and API_KEY not in str(info.value.body)
    import httpx

    bare = httpx.get(server.url + "/v1/models")
    assert bare.status_code == 401 and bare.json()["error"]["code"] == "missing_api_key"


def test_this_projects_openai_backend(server: Running) -> None:
    backend = create_api_backend(
        "openai", metadata={"base_url": server.url + "/v1", "api_key": API_KEY}
    )
    with backend.sync as client:
        response = client.embed(MINILM, ["first", "second"])
        assert response.dimensions == 384 and len(response.embeddings) == 2
        np.testing.assert_allclose(
            response.embeddings, server.pipeline(MINILM).embed(["first", "second"]), atol=2e-5
        )
        assert {m.id for m in client.list_models()} >= {MINILM, "tiny-whisper"}
        transcript = client.transcribe(wav_bytes(), "tiny-whisper", filename="a.wav")
        assert transcript.text == server.pipeline("tiny-whisper").transcribe(_decoded(wav_bytes()))


def _decoded(data: bytes) -> tuple[np.ndarray, int]:
    import io

    import soundfile

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32")
    return samples, rate
