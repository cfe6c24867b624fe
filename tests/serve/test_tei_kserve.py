"""The TEI routes with this project's ``hf_tei`` backend as client, and the KServe v2 routes
over plain HTTP, against a real uvicorn server on loopback."""

from __future__ import annotations

import base64

import httpx
import numpy as np
import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    TruncationWarning,
)

from .conftest import API_KEY, MINILM, Running, auth, png_bytes, wav_bytes

pytestmark = pytest.mark.timeout(120)


def tei(server: Running, key: str = API_KEY) -> object:
    return create_api_backend(
        "hf_tei",
        metadata={"base_url": server.url, "api_key": key, "resilience": {"max_retries": 0}},
    )


def test_hf_tei_backend_embeds_and_reads_info(server: Running) -> None:
    embedder = server.pipeline(MINILM)
    texts = ["a photo of a cat", "the quick brown fox"]
    with tei(server).sync as client:  # type: ignore[attr-defined]
        normalised = client.embed(None, texts)
        raw = client.embed(None, texts, normalize=False)
        info = client.info()
        models = client.list_models()
        assert client.health().healthy
    np.testing.assert_allclose(normalised.embeddings, embedder.embed(texts), atol=2e-5)
    # TEI leaves MiniLM's Normalize module out when normalize is false: the raw pooled vectors
    unit_free = embedder.embed(texts, normalize=False, normalize_module=False)
    np.testing.assert_allclose(raw.embeddings, unit_free, atol=2e-4)
    assert not np.allclose(np.linalg.norm(raw.embeddings, axis=1), 1.0)
    assert info["model_id"] == MINILM and info["max_input_length"] == 256
    assert info["model_type"] == {"embedding": {"pooling": "mean"}}
    assert [m.id for m in models] == [MINILM]


def test_tei_truncation_and_validation_statuses(server: Running) -> None:
    long_text = "word " * 400
    with tei(server).sync as client:  # type: ignore[attr-defined]
        with pytest.raises(APIStatusError) as too_long:
            client.embed(None, [long_text])
        assert too_long.value.status == 413
        assert "must have less than 256 tokens. Given: 402" in str(too_long.value)
        cut = client.embed(None, [long_text], truncate=True)
        with pytest.warns(TruncationWarning):
            expected = server.pipeline(MINILM).embed(long_text)
        np.testing.assert_allclose(cut.embeddings[0], expected, atol=2e-5)
        with pytest.raises(APIStatusError) as big:
            client.embed(None, ["x"] * 65)  # max_client_batch_size is 64 here
        assert big.value.status == 413 and "maximum allowed batch size 64" in str(big.value)
    empty = httpx.post(server.url + "/embed", json={"inputs": []}, headers=auth())
    assert empty.status_code == 400 and empty.json() == {
        "error": "`inputs` cannot be empty",
        "error_type": "Empty",
    }
    typed = httpx.post(
        server.url + "/embed", json={"inputs": "x", "normalize": "yes"}, headers=auth()
    )
    assert typed.status_code == 422 and typed.json()["error_type"] == "Validation"
    timing = httpx.post(server.url + "/embed", json={"inputs": "hello world"}, headers=auth())
    assert (
        timing.headers["x-compute-tokens"] == "4" and timing.headers["x-compute-characters"] == "11"
    )


def test_tei_wrong_key_is_a_bare_401_and_probes_are_public(server: Running) -> None:
    with tei(server, key="wrong-key").sync as client:  # type: ignore[attr-defined]
        with pytest.raises(AuthenticationError):
            client.embed(None, ["x"])
    bare = httpx.post(server.url + "/embed", json={"inputs": "x"})
    assert bare.status_code == 401 and bare.content == b""  # TEI's auth layer sends no body
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/v2/health/ready").json() == {"ready": True}
    assert httpx.get(server.url + "/metrics").status_code == 200


def _infer(server: Running, model: str, body: dict) -> httpx.Response:
    return httpx.post(
        f"{server.url}/v2/models/{model}/infer", json=body, headers=auth(), timeout=60
    )


def test_kserve_embedding_infer(server: Running) -> None:
    texts = ["hello world", "a second sentence"]
    body = {
        "id": "req-1",
        "inputs": [{"name": "text", "shape": [2], "datatype": "BYTES", "data": texts}],
    }
    reply = _infer(server, MINILM, body)
    assert reply.status_code == 200
    data = reply.json()
    assert data["model_name"] == MINILM and data["id"] == "req-1"
    (output,) = data["outputs"]
    assert (
        output["name"] == "embedding"
        and output["datatype"] == "FP32"
        and output["shape"] == [2, 384]
    )
    np.testing.assert_allclose(
        np.reshape(output["data"], (2, 384)), server.pipeline(MINILM).embed(texts), atol=2e-5
    )
    metadata = httpx.get(f"{server.url}/v2/models/{MINILM}", headers=auth()).json()
    assert metadata["inputs"][0]["name"] == "text" and metadata["outputs"][0]["shape"] == [-1, 384]


def test_kserve_image_classification_bytes_and_pixels(server: Running) -> None:
    from io import BytesIO

    from PIL import Image

    vit = server.pipeline("tiny-vit")
    png = png_bytes(seed=3)
    expected = vit.classify(Image.open(BytesIO(png)), top_k=2)
    encoded = base64.b64encode(png).decode()
    body = {
        "inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [encoded]}],
        "parameters": {"top_k": 2},
    }
    outputs = {o["name"]: o for o in _infer(server, "tiny-vit", body).json()["outputs"]}
    assert outputs["labels"]["data"] == [p["label"] for p in expected] and outputs["labels"][
        "shape"
    ] == [1, 2]
    np.testing.assert_allclose(outputs["scores"]["data"], [p["score"] for p in expected], rtol=1e-5)
    pixels = np.asarray(Image.open(BytesIO(png)).convert("RGB"))
    body = {"inputs": [{"name": "image", "shape": list(pixels.shape), "datatype": "UINT8",
                        "data": pixels.tolist()}],
            "parameters": {"top_k": 2}, "outputs": [{"name": "labels"}]}  # fmt: skip
    only_labels = _infer(server, "tiny-vit", body).json()["outputs"]
    assert [o["name"] for o in only_labels] == ["labels"] and only_labels[0]["data"] == outputs[
        "labels"
    ]["data"]


def test_kserve_zero_shot_and_speech(server: Running) -> None:
    from io import BytesIO

    from PIL import Image

    clip = server.pipeline("tiny-clip")
    png = png_bytes(seed=5)
    labels = ["a cat", "a dog", "a car"]
    expected = clip.classify(Image.open(BytesIO(png)), labels)
    body = {"inputs": [
        {"name": "image", "shape": [1], "datatype": "BYTES",
         "data": [base64.b64encode(png).decode()]},
        {"name": "labels", "shape": [3], "datatype": "BYTES", "data": labels},
    ]}  # fmt: skip
    outputs = {o["name"]: o for o in _infer(server, "tiny-clip", body).json()["outputs"]}
    assert outputs["labels"]["data"] == [p["label"] for p in expected]
    audio = wav_bytes(seed=2)
    body = {"inputs": [{"name": "audio", "shape": [1], "datatype": "BYTES",
                        "data": [base64.b64encode(audio).decode()]}],
            "parameters": {"language": "en"}}  # fmt: skip
    outputs = {o["name"]: o for o in _infer(server, "tiny-whisper", body).json()["outputs"]}
    import soundfile

    samples, rate = soundfile.read(BytesIO(audio), dtype="float32")
    assert outputs["text"]["data"] == [
        server.pipeline("tiny-whisper").transcribe((samples, rate), language="en")
    ]
    assert outputs["language"]["data"] == ["en"]
    raw = {"inputs": [{"name": "audio", "shape": [len(samples)], "datatype": "FP32",
                       "data": samples.tolist()}],
           "parameters": {"sampling_rate": rate, "language": "en"}}  # fmt: skip
    assert (
        _infer(server, "tiny-whisper", raw).json()["outputs"][0]["data"] == outputs["text"]["data"]
    )


def test_kserve_errors_are_kserve_bodies(server: Running) -> None:
    unknown = _infer(server, "nope", {"inputs": []})
    assert unknown.status_code == 404 and set(unknown.json()) == {"error"}
    shape = _infer(
        server,
        MINILM,
        {"inputs": [{"name": "text", "shape": [3], "datatype": "BYTES", "data": ["a"]}]},
    )
    assert shape.status_code == 400 and "needs 3 elements, data has 1" in shape.json()["error"]
    not_b64 = _infer(
        server,
        "tiny-vit",
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}]},
    )
    assert not_b64.status_code == 400 and "base64" in not_b64.json()["error"]
    garbage = base64.b64encode(b"not an image at all").decode()
    undecodable = _infer(
        server,
        "tiny-vit",
        {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES", "data": [garbage]}]},
    )
    assert undecodable.status_code == 400 and "could not be decoded" in undecodable.json()["error"]
    malformed = httpx.post(
        f"{server.url}/v2/models/{MINILM}/infer", content=b"{nope", headers=auth()
    )
    assert malformed.status_code == 400 and "JSON" in malformed.json()["error"]
    with tei(server).sync as client, pytest.raises(BadRequestError) as typed:  # type: ignore[attr-defined]
        client.embed(None, ["x"], truncation_direction="Left")
    assert typed.value.status == 422 and "truncation_direction" in str(typed.value)


def test_this_projects_ovms_backend_speaks_to_the_kserve_routes(server: Running) -> None:
    backend = create_api_backend("ovms", metadata={"base_url": server.url, "api_key": API_KEY})
    texts = np.array(["kserve from our own client", "second"], dtype=object)
    with backend.sync as client:  # type: ignore[attr-defined]
        outputs = client.infer(MINILM, {"text": texts}, request_id="ovms-1")
        assert client.model_ready(MINILM) and client.server_ready()
        metadata = client.model_metadata(MINILM)
    assert outputs["embedding"].shape == (2, 384) and outputs["embedding"].dtype == np.float32
    np.testing.assert_allclose(
        outputs["embedding"], server.pipeline(MINILM).embed(list(texts)), atol=2e-5
    )
    assert metadata["outputs"][0]["name"] == "embedding"
