"""A train-classifier directory served by a real server on loopback: TEI's /predict answers
with every label ranked (probabilities or raw scores), errors in TEI's shape, and the index
lists the route; KServe v2 refuses the classifier with a pointer to /predict."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from ipfs_accelerate.models import TextClassifier, TextEmbedder

pytestmark = pytest.mark.timeout(300)

TEXTS = [
    "the kitten chased a ball of yarn", "my dog loves to fetch sticks",
    "heavy rain is expected tonight", "a sunny and warm afternoon",
]  # fmt: skip
LABELS = ["pets", "pets", "weather", "weather"]


@pytest.fixture(scope="module")
def served(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from ipfs_accelerate.serve import BackgroundServer, ModelRegistry, ServerConfig, create_app

    clf = TextClassifier(TextEmbedder.from_pretrained(minilm_dir, "cpu"))
    clf.fit(TEXTS, LABELS, epochs=30, batch_size=2, lr=0.05)
    directory = clf.save(tmp_path_factory.mktemp("served") / "topics")
    registry = ModelRegistry.load([str(directory)], device="cpu")
    config = ServerConfig(device="cpu", max_client_batch_size=8)
    try:
        with BackgroundServer(create_app(config, registry=registry)) as running:
            yield running.url, TextClassifier.load(directory, "cpu")
    finally:
        registry.close()


def test_predict_ranks_every_label(served: Any) -> None:
    url, clf = served
    one = httpx.post(url + "/predict", json={"inputs": "a puppy asleep on the sofa"})
    assert one.status_code == 200, one.text
    ranked = one.json()
    assert ranked[0]["label"] == "pets" and len(ranked) == 2
    probs = clf.predict_proba("a puppy asleep on the sofa").tolist()
    expected = dict(zip(clf.labels, probs, strict=True))
    for row in ranked:
        assert row["score"] == pytest.approx(expected[row["label"]], rel=1e-5)

    batch = httpx.post(url + "/predict", json={"inputs": [["thunder tonight"], "my cat"]})
    assert batch.status_code == 200, batch.text
    assert [rows[0]["label"] for rows in batch.json()] == ["weather", "pets"]

    raw = httpx.post(url + "/predict", json={"inputs": "my cat", "raw_scores": True}).json()
    logits = dict(zip(clf.labels, clf.logits(["my cat"])[0].tolist(), strict=True))
    assert {r["label"]: r["score"] for r in raw} == pytest.approx(logits, rel=1e-5)
    assert not np.isclose(sum(r["score"] for r in raw), 1.0)

    index = httpx.get(url + "/").json()
    assert any(r["path"] == "/predict" for r in index["routes"])
    assert index["models"][0]["kind"] == "text-classification"


@pytest.mark.parametrize(
    ("body", "status", "error_type"),
    [
        ({}, 422, "Validation"),
        ({"inputs": []}, 400, "Empty"),
        ({"inputs": [""]}, 413, "Validation"),
        ({"inputs": [["a", "b"]]}, 422, "Validation"),
        ({"inputs": [1]}, 422, "Validation"),
        ({"inputs": ["x"] * 9}, 413, "Validation"),
        ({"inputs": "word " * 600, "truncate": False}, 413, "Validation"),
    ],
)
def test_predict_errors_in_tei_shape(served: Any, body: Any, status: int, error_type: str) -> None:
    url, _ = served
    response = httpx.post(url + "/predict", json=body)
    assert response.status_code == status, response.text
    assert response.json()["error_type"] == error_type


def test_embed_and_kserve_say_what_this_server_holds(served: Any) -> None:
    url, _ = served
    embed = httpx.post(url + "/embed", json={"inputs": "x"})
    assert embed.status_code == 424 and "no embedding model" in embed.json()["error"]
    v2 = httpx.post(url + "/v2/models/topics/infer", json={"inputs": []})
    assert v2.status_code == 400 and "/predict" in v2.text
