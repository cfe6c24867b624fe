"""Reranker against sentence-transformers' CrossEncoder on a tiny seeded
BertForSequenceClassification (written by transformers, saved again by CrossEncoder)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import InvalidArgumentError, UnsupportedArchitectureError
from ipfs_accelerate.models import Ranked, Reranker

from . import _checkpoints
from ._checkpoints import CORPUS

pytest.importorskip("sentence_transformers")

QUERY = "a photo of a cat"
DOCUMENTS = [*CORPUS, "cat", "the cat sat on the mat and the dog sat on the tree"]


def _cross_encoder(path: Path) -> Any:
    from sentence_transformers import CrossEncoder

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return CrossEncoder(str(path), device="cpu")


@pytest.fixture(scope="module")
def reranker(cross_encoder_dir: Path) -> Reranker:
    return Reranker.from_pretrained(cross_encoder_dir, device="cpu", sharing=False)


def test_predict_matches_cross_encoder(reranker: Reranker, cross_encoder_dir: Path) -> None:
    reference = _cross_encoder(cross_encoder_dir)
    pairs = [(QUERY, doc) for doc in DOCUMENTS] + [("hello world", "the sun is in the sky")]
    theirs = np.asarray(reference.predict(pairs, batch_size=4))
    ours = reranker.predict(pairs, batch_size=4)
    assert ours.shape == (len(pairs),) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert reranker.activation == "sigmoid" and ((ours > 0) & (ours < 1)).all()
    # the scores spread: a test that any constant would pass is no test
    assert ours.max() - ours.min() > 0.05
    logits = reranker.predict(pairs, raw=True)
    np.testing.assert_allclose(1 / (1 + np.exp(-logits)), ours, atol=1e-6)


def test_rerank_orders_by_score_like_cross_encoder_rank(
    reranker: Reranker, cross_encoder_dir: Path
) -> None:
    reference = _cross_encoder(cross_encoder_dir)
    theirs = reference.rank(QUERY, DOCUMENTS)
    ours = reranker.rerank(QUERY, DOCUMENTS, batch_size=3)
    assert [r.index for r in ours] == [int(r["corpus_id"]) for r in theirs]
    np.testing.assert_allclose(
        [r.score for r in ours], [float(r["score"]) for r in theirs], atol=1e-4
    )
    assert all(isinstance(r, Ranked) for r in ours)
    scores = [r.score for r in ours]
    assert scores == sorted(scores, reverse=True)
    top = reranker.rerank(QUERY, DOCUMENTS, top_k=3, batch_size=3)
    assert top == ours[:3]
    assert reranker.rerank(QUERY, DOCUMENTS, top_k=100, batch_size=3) == ours
    raw = reranker.rerank(QUERY, DOCUMENTS, raw_scores=True)
    assert [r.index for r in raw] == [r.index for r in ours]
    assert min(r.score for r in raw) < 0 or max(r.score for r in raw) > 1  # logits, unbounded


def test_equal_scores_keep_the_documents_order(reranker: Reranker) -> None:
    ranked = reranker.rerank(QUERY, ["hello world", "a cat", "hello world", "hello world"])
    same = [r.index for r in ranked if r.index != 1]
    assert same == [0, 2, 3]
    assert len({r.score for r in ranked if r.index != 1}) == 1  # bit for bit


@pytest.mark.parametrize(
    ("query", "documents", "top_k", "match"),
    [
        (QUERY, [], None, "documents is empty"),
        (QUERY, "a cat", None, "not one str"),
        (QUERY, ["a cat", 3], None, r"documents\[1\] is a int"),
        (3, ["a cat"], None, "query must be a str"),
        (QUERY, ["a cat"], 0, "top_k must be a positive int, got 0"),
        (QUERY, ["a cat"], -2, "top_k"),
        (QUERY, ["a cat"], True, "top_k"),
    ],
)
def test_bad_input(reranker: Reranker, query: Any, documents: Any, top_k: Any, match: str) -> None:
    with pytest.raises(InvalidArgumentError, match=match):
        reranker.rerank(query, documents, top_k=top_k)


def test_bad_pairs_and_batch_size(reranker: Reranker) -> None:
    with pytest.raises(InvalidArgumentError, match=r"pairs\[1\]"):
        reranker.predict([("a", "b"), ("a",)])  # type: ignore[list-item]
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        reranker.predict([("a", "b")], batch_size=0)


def test_ten_thousand_documents_run_in_bounded_batches(
    reranker: Reranker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """10,000 documents run batch_size pairs at a time (the memory held at once is one
    batch's), every document scored once, and the best equals scoring it alone. (All
    distinct: identical documents are scored once, see the test above.)"""
    documents = [f"{CORPUS[i % len(CORPUS)]} {'cat ' * (i % 7)}{i}" for i in range(10_000)]
    model = reranker.model
    rows: list[int] = []

    class Counting:
        """The model, counting the rows of each forward pass (packed or padded)."""

        config = model.config

        def __call__(self, ids: Any, *args: Any) -> Any:
            rows.append(int(ids.shape[0]))
            return model(ids, *args)

        def packed(self, batch: Any) -> Any:
            rows.append(batch.rows)
            return model.packed(batch)

    monkeypatch.setattr(reranker, "model", Counting())
    ranked = reranker.rerank(QUERY, documents, top_k=5, batch_size=500)
    # a batch may run in row shards (one per core), never more than batch_size rows at once
    assert len(ranked) == 5 and 0 < max(rows) <= 500 and sum(rows) == 10_000
    assert len(rows) >= 20
    monkeypatch.setattr(reranker, "model", model)
    alone = reranker.predict([(QUERY, documents[r.index]) for r in ranked])
    np.testing.assert_allclose(alone, [r.score for r in ranked], atol=1e-5)


def test_multi_label_checkpoint_predicts_all_labels(tmp_path: Path) -> None:
    path = _checkpoints.make_cross_encoder(tmp_path / "three", seed=9, num_labels=3)
    reference = _cross_encoder(path)
    reranker = Reranker.from_pretrained(path, device="cpu", sharing=False)
    pairs = [(QUERY, doc) for doc in DOCUMENTS[:5]]
    ours = reranker.predict(pairs)
    assert ours.shape == (5, 3) and reranker.activation == "identity"
    np.testing.assert_allclose(ours, np.asarray(reference.predict(pairs)), atol=1e-4)
    with pytest.raises(UnsupportedArchitectureError, match="3 labels.*predict"):
        reranker.rerank(QUERY, DOCUMENTS)


def test_legacy_activation_in_config_json(cross_encoder_dir: Path, tmp_path: Path) -> None:
    """3.x-5.x kept the activation under config.json's ``sentence_transformers``."""
    path = tmp_path / "legacy"
    shutil.copytree(cross_encoder_dir, path)
    (path / "config_sentence_transformers.json").unlink()
    config = json.loads((path / "config.json").read_text())
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.linear.Identity"}
    (path / "config.json").write_text(json.dumps(config))
    reranker = Reranker.from_pretrained(path, device="cpu", sharing=False)
    assert reranker.activation == "identity"
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.activation.Softsign"}
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError, match="Softsign"):
        Reranker.from_pretrained(path, device="cpu", sharing=False)


def test_an_embedding_checkpoint_is_not_a_reranker(bert_dir: Path) -> None:
    with pytest.raises(UnsupportedArchitectureError, match="TextEmbedder"):
        Reranker.from_pretrained(bert_dir, device="cpu", sharing=False)


def test_long_pairs_are_truncated_with_a_warning(
    reranker: Reranker, cross_encoder_dir: Path
) -> None:
    from ipfs_accelerate.errors import TruncationWarning

    long_doc = " ".join(["the quick brown fox"] * 20)
    with pytest.warns(TruncationWarning):
        ours = reranker.predict([(QUERY, long_doc)])
    theirs = np.asarray(_cross_encoder(cross_encoder_dir).predict([(QUERY, long_doc)]))
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_packed_logits_equal_the_padded_forward(reranker: Reranker) -> None:
    """BertForSequenceClassification.packed (the dense layers skip the padding) gives the
    padded forward's logits; the reranker runs it whenever a batch has padding."""
    from ipfs_accelerate.models.bert import BertForSequenceClassification, PackedTokens
    from ipfs_accelerate.tensor import from_numpy

    model = reranker.model
    assert isinstance(model, BertForSequenceClassification)
    encoded = reranker.tokenizer.pairs([(QUERY, doc) for doc in DOCUMENTS])
    ids, mask, types = encoded.input_ids, encoded.attention_mask, encoded.token_type_ids
    assert (mask == 0).any()  # the batch has padding to skip
    padded = model(from_numpy(ids, "cpu"), from_numpy(mask, "cpu"), from_numpy(types, "cpu"))
    packed = model.packed(PackedTokens.from_batch(ids, mask, types))
    np.testing.assert_allclose(packed.numpy(), padded.numpy(), atol=1e-5)


def test_every_backend_scores_like_cross_encoder(cross_encoder_dir: Path, device: str) -> None:
    reranker = Reranker.from_pretrained(cross_encoder_dir, device=device, sharing=False)
    pairs = [(QUERY, doc) for doc in DOCUMENTS]
    theirs = np.asarray(_cross_encoder(cross_encoder_dir).predict(pairs))
    ours = reranker.predict(pairs, batch_size=5)
    np.testing.assert_allclose(ours, theirs, atol=1e-3 if device == "webgpu" else 1e-4)


def test_sharded_batches_score_in_the_callers_order(
    reranker: Reranker, monkeypatch: pytest.MonkeyPatch, shard_calls: list[list[tuple[int, int]]]
) -> None:
    """On two cores a batch of 24 pairs of shuffled lengths runs as two shards, longest pairs
    first; each score is still its own pair's (as scored one at a time)."""
    rng = np.random.default_rng(5)
    words = ["the", "cat", "sat", "on", "a", "mat", "while", "dog", "ran", "to", "tree"]
    documents = [" ".join(rng.choice(words, size=int(rng.integers(1, 20)))) for _ in range(24)]
    pairs = [(QUERY, doc) for doc in documents]
    monkeypatch.setattr("ipfs_accelerate.models.pipelines._rerank.host_cores", lambda: 2)
    together = reranker.predict(pairs, batch_size=24, raw=True)
    shards = shard_calls
    assert len(shards) == 1 and len(shards[0]) == 2
    alone = np.concatenate([reranker.predict([pair], raw=True) for pair in pairs])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    assert np.ptp(alone) > 0.01  # the pairs score differently: a mix-up would show
