"""TextClassifier: a linear head trained with AdamW on frozen MiniLM embeddings reaches 100%
on a small separable set, trains exactly as torch would on the same embeddings, and saves
and loads back."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from ipfs_accelerate.errors import CheckpointError, InvalidArgumentError, ModelError
from ipfs_accelerate.models import TextClassifier, TextEmbedder

pytestmark = pytest.mark.timeout(300)

TEXTS = [
    "the kitten chased a ball of yarn", "my dog loves to fetch sticks",
    "a parrot can learn to talk", "the hamster runs on its wheel",
    "heavy rain is expected tonight", "a sunny and warm afternoon",
    "snow will cover the roads tomorrow", "strong winds and thunderstorms ahead",
    "bake the cake for forty minutes", "slice the onions and fry them in butter",
    "add salt and pepper to the soup", "whisk the eggs with sugar",
]  # fmt: skip
LABELS = ["pets"] * 4 + ["weather"] * 4 + ["cooking"] * 4


@pytest.fixture(scope="module")
def embedder(minilm_dir: Path) -> TextEmbedder:
    return TextEmbedder.from_pretrained(minilm_dir, "cpu")


def test_fit_reaches_100_percent_and_round_trips(embedder: TextEmbedder, tmp_path: Path) -> None:
    clf = TextClassifier(embedder)
    losses = clf.fit(TEXTS, LABELS, epochs=40, batch_size=4, lr=5e-2)
    assert losses[-1] < losses[0] / 4
    assert clf.labels == ["cooking", "pets", "weather"]
    assert clf.predict(TEXTS) == LABELS
    assert clf.predict("a cat sleeping on the sofa") == "pets"
    probs = clf.predict_proba(TEXTS)
    assert probs.shape == (12, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)

    saved = clf.save(tmp_path / "clf")
    meta = json.loads((saved / "classifier.json").read_text())
    assert meta["labels"] == clf.labels and meta["dimension"] == 384
    loaded = TextClassifier.from_pretrained(saved, "cpu")
    assert loaded.labels == clf.labels
    np.testing.assert_allclose(loaded.predict_proba(TEXTS), probs, rtol=1e-6)


def test_head_training_equals_torch(embedder: TextEmbedder) -> None:
    texts, labels = TEXTS[:8], LABELS[:8]
    clf = TextClassifier(embedder)
    epochs, batch, lr, decay, seed = 3, 3, 0.05, 0.01, 7
    clf.fit(texts, labels, epochs=epochs, batch_size=batch, lr=lr, weight_decay=decay, seed=seed)

    features = torch.from_numpy(embedder.embed(texts))
    y = torch.tensor([["pets", "weather"].index(v) for v in labels])
    rng = np.random.default_rng(seed)
    bound = 1.0 / math.sqrt(features.shape[1])
    weight = torch.tensor(
        rng.uniform(-bound, bound, (2, features.shape[1])).astype(np.float32), requires_grad=True
    )
    bias = torch.tensor(rng.uniform(-bound, bound, (2,)).astype(np.float32), requires_grad=True)
    opt = torch.optim.AdamW([weight, bias], lr=lr, weight_decay=decay)
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(texts)))
        for start in range(0, len(texts), batch):
            rows = order[start : start + batch]
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(
                torch.nn.functional.linear(features[rows], weight, bias), y[rows]
            )
            loss.backward()
            opt.step()
    assert clf.weight is not None and clf.bias is not None
    np.testing.assert_allclose(clf.weight.numpy(), weight.detach().numpy(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(clf.bias.numpy(), bias.detach().numpy(), rtol=1e-4, atol=1e-6)


def test_bad_input_is_named(embedder: TextEmbedder, tmp_path: Path) -> None:
    clf = TextClassifier(embedder)
    with pytest.raises(ModelError, match="not trained"):
        clf.predict("hello")
    with pytest.raises(InvalidArgumentError, match="2 text"):
        clf.fit(["a", "b"], ["x"])
    with pytest.raises(InvalidArgumentError, match="2 distinct labels"):
        clf.fit(["a", "b"], ["x", "x"])
    with pytest.raises(InvalidArgumentError, match="label 1 is"):
        clf.fit(["a", "b"], ["x", 1.5])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="epochs"):
        clf.fit(["a", "b"], ["x", "y"], epochs=0)
    with pytest.raises(CheckpointError, match="not found"):
        TextClassifier.load(tmp_path)
    (tmp_path / "classifier.json").write_text('{"format": 1, "labels": ["a"]}')
    with pytest.raises(CheckpointError, match="labels"):
        TextClassifier.load(tmp_path)


def test_fit_gives_cpu_losses_on_every_backend(device: str, bert_dir: Path) -> None:
    texts = ["a photo of a cat", "a small green bird", "hello world", "the sun is in the sky"]
    labels = [0, 0, 1, 1]  # int labels stay ints

    def run(where: str) -> tuple[list[float], TextClassifier]:
        clf = TextClassifier(TextEmbedder.from_pretrained(bert_dir, where))
        return clf.fit(texts, labels, epochs=4, batch_size=3, lr=0.05), clf

    losses, clf = run(device)
    assert clf.device == device and clf.labels == [0, 1]
    assert clf.weight is not None and clf.weight.device == device
    if device != "cpu":
        cpu_losses, cpu_clf = run("cpu")
        np.testing.assert_allclose(losses, cpu_losses, rtol=1e-4)
        np.testing.assert_allclose(
            clf.predict_proba(texts), cpu_clf.predict_proba(texts), rtol=1e-4, atol=1e-6
        )
