"""TEI's ``/rerank``, ``/predict``, ``/embed_all``, ``/tokenize``, ``/decode`` and the
``dimensions``/``prompt_name`` fields, against a real uvicorn server on loopback holding a
tiny sentence-transformers embedder (prompts, a Dense layer) and a tiny cross-encoder; clients
are this project's ``hf_tei`` backend, the ``openai`` SDK and plain HTTP. Shapes follow TEI's
OpenAPI document (1.7)."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.errors import APIStatusError
from tests.models import _checkpoints

pytestmark = pytest.mark.timeout(120)
pytest.importorskip("sentence_transformers")

QUERY = "a photo of a cat"
TEXTS = ["a photo of a dog", "hello world", "the cat sat on the mat", "a small green bird"]


def _st_embedder(root: Path) -> Path:
    """A tiny BERT saved by sentence-transformers with a Dense layer and two prompts."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    bert = _checkpoints.make_bert(root / "bert")
    torch.manual_seed(3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modules = [
            Transformer(str(bert), max_seq_length=32),
            Pooling(32, pooling_mode="mean"),
            Dense(32, 24, activation_function=torch.nn.Tanh()),
        ]
        SentenceTransformer(
            modules=modules, device="cpu", prompts={"query": "a photo of ", "document": ""}
        ).save(str(root / "st"))
    return root / "st"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from ipfs_accelerate.serve import (
        BackgroundServer,
        ModelRegistry,
        ModelSpec,
        ServerConfig,
        create_app,
    )

    root = tmp_path_factory.mktemp("rerank-serve")
    specs = [
        ModelSpec(str(_st_embedder(root)), name="tiny-st"),
        ModelSpec(str(_checkpoints.make_cross_encoder(root / "ce")), name="tiny-ce"),
    ]
    registry = ModelRegistry.load(specs, device="cpu")
    config = ServerConfig(device="cpu", max_client_batch_size=16, max_batch_size=4)
    with BackgroundServer(create_app(config, registry=registry)) as running:
        running.registry = registry
        yield running
    registry.close()


def _post(served: Any, path: str, body: Any) -> httpx.Response:
    return httpx.post(served.url + path, json=body, timeout=30)


def _cross_encoder(served: Any) -> Any:
    from sentence_transformers import CrossEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = served.registry.get("tiny-ce").pipeline.checkpoint.path
        return CrossEncoder(str(path), device="cpu")


def test_the_server_picks_the_pipeline_from_the_checkpoint(served: Any) -> None:
    from ipfs_accelerate.models import Reranker, TextEmbedder

    assert served.registry.get("tiny-ce").kind == "rerank"
    assert isinstance(served.registry.get("tiny-ce").pipeline, Reranker)
    assert served.registry.get("tiny-st").kind == "embedding"
    assert isinstance(served.registry.get("tiny-st").pipeline, TextEmbedder)
    index = httpx.get(served.url + "/").json()
    paths = {route["path"] for route in index["routes"]}
    assert {"/rerank", "/predict", "/embed_all", "/tokenize", "/decode"} <= paths


def test_hf_tei_client_rerank_equals_cross_encoder(served: Any) -> None:
    backend: Any = create_api_backend(
        "hf_tei", metadata={"base_url": served.url, "resilience": {"max_retries": 0}}
    )
    theirs = _cross_encoder(served).rank(QUERY, TEXTS)
    with backend.sync as client:
        ranked = client.rerank(QUERY, TEXTS, return_text=True)
        raw = client.rerank(QUERY, TEXTS, raw_scores=True)
    assert [r.index for r in ranked] == [int(r["corpus_id"]) for r in theirs]
    np.testing.assert_allclose(
        [r.score for r in ranked], [float(r["score"]) for r in theirs], atol=1e-4
    )
    assert [r.text for r in ranked] == [TEXTS[r.index] for r in ranked]
    np.testing.assert_allclose(
        [1 / (1 + np.exp(-r.score)) for r in raw], [r.score for r in ranked], atol=1e-5
    )


def test_rerank_response_is_teis_shape(served: Any) -> None:
    response = _post(served, "/rerank", {"query": QUERY, "texts": TEXTS})
    assert response.status_code == 200
    ranks = response.json()
    assert isinstance(ranks, list) and len(ranks) == len(TEXTS)
    assert all(set(rank) == {"index", "score"} for rank in ranks)
    assert sorted(r["index"] for r in ranks) == list(range(len(TEXTS)))
    scores = [r["score"] for r in ranks]
    assert scores == sorted(scores, reverse=True)
    with_text = _post(served, "/rerank", {"query": QUERY, "texts": TEXTS, "return_text": True})
    assert all(set(rank) == {"index", "score", "text"} for rank in with_text.json())


@pytest.mark.parametrize(
    ("body", "status", "error_type", "words"),
    [
        ({"query": QUERY, "texts": []}, 400, "Empty", "`texts` cannot be empty"),
        ({"query": QUERY, "texts": ["a"] * 17}, 413, "Validation", "batch size 17 > maximum"),
        ({"query": QUERY, "texts": [" ".join(["cat"] * 60)]}, 413, "Validation", "less than 40"),
        ({"texts": ["a"]}, 422, "Validation", "missing field `query`"),
        ({"query": QUERY, "texts": "a cat"}, 422, "Validation", "list of strings"),
        ({"query": QUERY, "texts": ["a"], "raw_scores": "yes"}, 422, "Validation", "raw_scores"),
    ],
)
def test_rerank_refusals_are_teis(
    served: Any, body: dict[str, Any], status: int, error_type: str, words: str
) -> None:
    response = _post(served, "/rerank", body)
    assert response.status_code == status, response.text
    assert response.json()["error_type"] == error_type
    assert words in response.json()["error"]


def test_rerank_truncates_when_asked(served: Any) -> None:
    long_text = " ".join(["cat"] * 60)
    response = _post(served, "/rerank", {"query": QUERY, "texts": [long_text], "truncate": True})
    assert response.status_code == 200
    expected = _cross_encoder(served).predict([(QUERY, long_text)])
    np.testing.assert_allclose(response.json()[0]["score"], float(expected[0]), atol=1e-4)


def test_predict_single_pair_and_batch(served: Any) -> None:
    reference = _cross_encoder(served)
    single = _post(served, "/predict", {"inputs": [QUERY, TEXTS[0]]}).json()
    assert isinstance(single, list) and set(single[0]) == {"score", "label"}
    assert single[0]["label"] == "LABEL_0"
    np.testing.assert_allclose(
        single[0]["score"], float(reference.predict([(QUERY, TEXTS[0])])[0]), atol=1e-4
    )
    batch = _post(served, "/predict", {"inputs": [[QUERY, t] for t in TEXTS] + [["hello"]]}).json()
    assert len(batch) == len(TEXTS) + 1 and all(len(row) == 1 for row in batch)
    np.testing.assert_allclose(
        [row[0]["score"] for row in batch[:-1]],
        reference.predict([(QUERY, t) for t in TEXTS]),
        atol=1e-4,
    )
    text_only = _post(served, "/predict", {"inputs": "hello", "raw_scores": True}).json()
    np.testing.assert_allclose(
        1 / (1 + np.exp(-text_only[0]["score"])), batch[-1][0]["score"], atol=1e-5
    )
    empty = _post(served, "/predict", {"inputs": []})
    assert empty.status_code == 400 and empty.json()["error_type"] == "Empty"
    bad = _post(served, "/predict", {"inputs": [["a", "b", "c"]]})
    assert bad.status_code == 422 and "inputs[0]" in bad.json()["error"]


def test_embed_all_returns_every_tokens_hidden_state(served: Any) -> None:
    import torch
    from transformers import BertModel

    embedder = served.registry.get("tiny-st").pipeline
    texts = ["hello world", "the quick brown fox jumps"]
    states = _post(served, "/embed_all", {"inputs": texts}).json()
    model = BertModel.from_pretrained(embedder.checkpoint.path).eval()
    for text, rows in zip(texts, states, strict=True):
        ids = embedder.tokenizer([text]).input_ids
        assert len(rows) == ids.shape[1] and len(rows[0]) == 32
        with torch.no_grad():
            expected = model(torch.tensor(ids)).last_hidden_state[0].numpy()
        np.testing.assert_allclose(np.asarray(rows), expected, atol=1e-4)
    long_text = " ".join(["cat"] * 60)
    refused = _post(served, "/embed_all", {"inputs": long_text})
    assert refused.status_code == 413 and refused.json()["error_type"] == "Validation"
    cut = _post(served, "/embed_all", {"inputs": long_text, "truncate": True}).json()
    assert len(cut[0]) == 32  # the checkpoint's max_seq_length


def test_tokenize_and_decode(served: Any) -> None:
    tokens = _post(served, "/tokenize", {"inputs": ["hello world", "a cat"]}).json()
    assert [t["text"] for t in tokens[0]] == ["[CLS]", "hello", "world", "[SEP]"]
    first = tokens[0]
    assert first[0] == {"id": 2, "text": "[CLS]", "special": True, "start": None, "stop": None}
    assert (first[1]["start"], first[1]["stop"]) == (0, 5) and not first[1]["special"]
    assert (first[2]["start"], first[2]["stop"]) == (6, 11)
    bare = _post(served, "/tokenize", {"inputs": "hello", "add_special_tokens": False}).json()
    assert [t["text"] for t in bare[0]] == ["hello"]
    prompted = _post(served, "/tokenize", {"inputs": "cat", "prompt_name": "query"}).json()
    assert [t["text"] for t in prompted[0]][1:-1] == ["a", "photo", "of", "cat"]
    ids = [t["id"] for t in tokens[0]]
    assert _post(served, "/decode", {"ids": ids}).json() == ["hello world"]
    kept = _post(served, "/decode", {"ids": [ids, ids], "skip_special_tokens": False}).json()
    assert kept == ["[CLS] hello world [SEP]"] * 2
    bad = _post(served, "/decode", {"ids": [1, 100000]})
    assert bad.status_code == 422 and "100000" in bad.json()["error"]


def test_embed_prompt_name_and_dimensions(served: Any) -> None:
    embedder = served.registry.get("tiny-st").pipeline
    texts = ["a cat", "hello world"]
    prompted = _post(served, "/embed", {"inputs": texts, "prompt_name": "query"}).json()
    np.testing.assert_allclose(prompted, embedder.embed(texts, prompt_name="query"), atol=2e-5)
    cut = _post(served, "/embed", {"inputs": texts, "dimensions": 8}).json()
    np.testing.assert_allclose(cut, embedder.embed(texts, truncate_dim=8), atol=2e-5)
    for bad in (0, 25, "8"):
        response = _post(served, "/embed", {"inputs": texts, "dimensions": bad})
        assert response.status_code == 422 and "dimensions" in response.json()["error"]
    unknown = _post(served, "/embed", {"inputs": texts, "prompt_name": "passage"})
    assert unknown.status_code == 422 and "query" in unknown.json()["error"]


def test_openai_sdk_dimensions(served: Any) -> None:
    import openai

    client = openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0)
    embedder = served.registry.get("tiny-st").pipeline
    texts = ["a cat", "hello world"]
    response = client.embeddings.create(model="tiny-st", input=texts, dimensions=8)
    vectors = np.asarray([d.embedding for d in response.data])
    assert vectors.shape == (2, 8)
    np.testing.assert_allclose(vectors, embedder.embed(texts, truncate_dim=8), atol=2e-5)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    full = client.embeddings.create(model="tiny-st", input=texts, dimensions=24)
    assert len(full.data[0].embedding) == 24
    for bad in (0, -3, 25):
        with pytest.raises(openai.BadRequestError) as info:
            client.embeddings.create(model="tiny-st", input=texts, dimensions=bad)
        assert info.value.body["param"] == "dimensions"  # type: ignore[index]
        assert "from 1 to 24" in info.value.message
    with pytest.raises(openai.BadRequestError) as wrong:
        client.embeddings.create(model="tiny-ce", input=texts)
    assert "rerank" in wrong.value.message


def test_info_describes_a_reranker(tmp_path: Path) -> None:
    from ipfs_accelerate.serve import BackgroundServer, ModelRegistry, ServerConfig, create_app

    path = _checkpoints.make_cross_encoder(tmp_path / "ce", seed=11)
    registry = ModelRegistry.load([str(path)], device="cpu", warm_up=False)
    try:
        with BackgroundServer(create_app(ServerConfig(device="cpu"), registry=registry)) as srv:
            info = httpx.get(srv.url + "/info").json()
            missing = _post(srv, "/embed", {"inputs": "a cat"})
    finally:
        registry.close()
    assert info["model_type"] == {
        "reranker": {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}}
    }
    assert info["max_input_length"] == 40
    assert missing.status_code == 424 and "no embedding model" in missing.json()["error"]


def test_hf_tei_rerank_errors_reach_the_client(served: Any) -> None:
    backend: Any = create_api_backend(
        "hf_tei", metadata={"base_url": served.url, "resilience": {"max_retries": 0}}
    )
    with backend.sync as client, pytest.raises(APIStatusError) as info:
        client.rerank(QUERY, [" ".join(["cat"] * 60)])
    assert info.value.status == 413 and "less than 40 tokens" in str(info.value)


def _client(served: Any) -> Any:
    return create_api_backend(
        "hf_tei", metadata={"base_url": served.url, "resilience": {"max_retries": 0}}
    )


def test_hf_tei_client_predict_equals_cross_encoder(served: Any) -> None:
    from ipfs_accelerate.api_backends import TEIPrediction

    reference = _cross_encoder(served)
    pairs = [(QUERY, text) for text in TEXTS]
    with _client(served).sync as client:
        scored = client.predict([*pairs, "hello world"])
        one_pair = client.predict((QUERY, TEXTS[0]))
        raw = client.predict(pairs, raw_scores=True)
        # two texts are two inputs, not the one pair TEI reads a bare list of two strings as
        two_texts = client.predict(["hello world", "a cat"])
    assert len(scored) == len(TEXTS) + 1 and all(len(labels) == 1 for labels in scored)
    assert scored[0][0] == TEIPrediction(label="LABEL_0", score=scored[0][0].score)
    np.testing.assert_allclose(
        [labels[0].score for labels in scored[:-1]], reference.predict(pairs), atol=1e-4
    )
    alone = _post(served, "/predict", {"inputs": "hello world"}).json()
    assert scored[-1][0].score == pytest.approx(alone[0]["score"], abs=1e-6)
    np.testing.assert_allclose(one_pair[0][0].score, scored[0][0].score, atol=1e-6)
    np.testing.assert_allclose(
        [1 / (1 + np.exp(-labels[0].score)) for labels in raw],
        [labels[0].score for labels in scored[:-1]],
        atol=1e-5,
    )
    assert len(two_texts) == 2
    assert two_texts[0][0].score == pytest.approx(alone[0]["score"], abs=1e-6)
    cat = _post(served, "/predict", {"inputs": "a cat"}).json()
    assert two_texts[1][0].score == pytest.approx(cat[0]["score"], abs=1e-6)


def test_hf_tei_client_tokenize_decode_and_embed_all(served: Any) -> None:
    import torch
    from transformers import BertModel

    from ipfs_accelerate.api_backends import TEIToken

    with _client(served).sync as client:
        tokens = client.tokenize(["hello world", "a cat"])
        bare = client.tokenize("hello", add_special_tokens=False)
        prompted = client.tokenize("cat", prompt_name="query")
        ids = [token.id for token in tokens[0]]
        texts = client.decode([ids, [t.id for t in tokens[1]]])
        flat = client.decode(ids, skip_special_tokens=False)
        states = client.embed_all(["hello world", "the quick brown fox jumps"])
        cut = client.embed_all(" ".join(["cat"] * 60), truncate=True)
    assert tokens[0][0] == TEIToken(id=2, text="[CLS]", special=True, start=None, stop=None)
    assert [(t.text, t.start, t.stop, t.special) for t in tokens[0][1:]] == [
        ("hello", 0, 5, False), ("world", 6, 11, False), ("[SEP]", None, None, True),
    ]  # fmt: skip
    assert [t.text for t in tokens[1]] == ["[CLS]", "a", "cat", "[SEP]"]
    assert [t.text for t in bare[0]] == ["hello"]
    assert [t.text for t in prompted[0]][1:-1] == ["a", "photo", "of", "cat"]
    assert texts == ["hello world", "a cat"]
    assert flat == ["[CLS] hello world [SEP]"]
    embedder = served.registry.get("tiny-st").pipeline
    model = BertModel.from_pretrained(embedder.checkpoint.path).eval()
    for text, rows in zip(["hello world", "the quick brown fox jumps"], states, strict=True):
        with torch.no_grad():
            expected = model(torch.tensor(embedder.tokenizer([text]).input_ids))
        np.testing.assert_allclose(
            np.asarray(rows), expected.last_hidden_state[0].numpy(), atol=1e-4
        )
    assert len(cut) == 1 and len(cut[0]) == 32


def test_hf_tei_client_refuses_bad_input_and_reports_server_refusals(served: Any) -> None:
    from ipfs_accelerate.errors import InvalidArgumentError

    with _client(served).sync as client:
        for bad in ([], [("a", "b", "c")], [3], b"bytes"):
            with pytest.raises(InvalidArgumentError, match="hf_tei"):
                client.predict(bad)
        for ids in ([], [1, True], [[1], [-2]], "12"):
            with pytest.raises(InvalidArgumentError, match="ids"):
                client.decode(ids)
        with pytest.raises(InvalidArgumentError):
            client.tokenize([])
        with pytest.raises(APIStatusError) as vocab:
            client.decode([1, 100000])
        with pytest.raises(APIStatusError) as long_input:
            client.embed_all(" ".join(["cat"] * 60))
    assert vocab.value.status == 422 and "100000" in str(vocab.value)
    assert long_input.value.status == 413


def test_info_names_pooling_as_tei_does(tmp_path: Path) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from ipfs_accelerate.serve import BackgroundServer, ModelRegistry, ServerConfig, create_app
    from ipfs_accelerate.serve._tei import tei_pooling

    assert tei_pooling("lasttoken") == "last_token"
    assert tei_pooling("cls") == "cls" and tei_pooling("mean") == "mean"
    assert tei_pooling("mean+lasttoken") == "mean+last_token"
    assert tei_pooling("weightedmean") == "weightedmean"  # TEI has no name for it
    bert = _checkpoints.make_bert(tmp_path / "bert")
    torch.manual_seed(4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modules = [Transformer(str(bert), max_seq_length=32), Pooling(32, "lasttoken")]
        SentenceTransformer(modules=modules, device="cpu").save(str(tmp_path / "st"))
    registry = ModelRegistry.load([str(tmp_path / "st")], device="cpu", warm_up=False)
    try:
        with BackgroundServer(create_app(ServerConfig(device="cpu"), registry=registry)) as srv:
            info = httpx.get(srv.url + "/info").json()
            with _client(srv).sync as client:
                via_client = client.info()
    finally:
        registry.close()
    assert info["model_type"] == {"embedding": {"pooling": "last_token"}}
    assert via_client["model_type"] == info["model_type"]
