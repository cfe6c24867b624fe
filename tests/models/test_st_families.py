"""TextEmbedder and Reranker on every encoder family of loading.MODEL_FAMILIES: a
sentence-transformers pipeline (mean pooling, Dense, Normalize) and a cross-encoder of each,
against ``SentenceTransformer.encode`` and ``CrossEncoder.predict`` on the same directories."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.models import Reranker, TextEmbedder

from . import _encoder_checkpoints
from ._checkpoints import _perturb, wordpiece_tokenizer

pytest.importorskip("sentence_transformers")
pytestmark = pytest.mark.timeout(300)

TEXTS = ["a photo of a cat", "hello world", "the quick brown fox jumps over the lazy dog", "a"]
QUERY = "a photo of a cat"


def _wordpiece_model(directory: Path, family: str, classifier: bool, seed: int) -> Path:
    """An MPNet or ModernBERT checkpoint written by transformers, with the tests' WordPiece
    tokenizer ([PAD] 0, [CLS] 2, [SEP] 3: the configs name those ids)."""
    import torch
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    vocab = wordpiece_tokenizer(directory / "tokenizer.json")
    torch.manual_seed(seed)
    head = "ForSequenceClassification" if classifier else "Model"
    common = {"vocab_size": vocab, "hidden_size": 32, "num_attention_heads": 4, "num_labels": 1}
    if family == "mpnet":
        config: Any = transformers.MPNetConfig(
            num_hidden_layers=2, intermediate_size=64, max_position_embeddings=42,
            pad_token_id=0, **common,
        )  # fmt: skip
        model = getattr(transformers, f"MPNet{head}")(config)
    else:
        config = transformers.ModernBertConfig(
            num_hidden_layers=3, intermediate_size=48, max_position_embeddings=64,
            local_attention=8, pad_token_id=0, cls_token_id=2, sep_token_id=3, bos_token_id=2,
            eos_token_id=3, global_rope_theta=1000.0, local_rope_theta=50.0, **common,
        )  # fmt: skip
        model = getattr(transformers, f"ModernBert{head}")(config)
    model.eval()
    _perturb(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    (directory / "tokenizer_config.json").write_text(
        json.dumps({"model_max_length": 40, "pad_token": "[PAD]"}), encoding="utf-8"
    )
    return _plain_tokenizer(directory)


def _plain_tokenizer(directory: Path) -> Path:
    """transformers reads tokenizer.json as it is (a family's own tokenizer class would add
    the special tokens of the real vocabularies, which these tiny ones do not have)."""
    path = directory / "tokenizer_config.json"
    settings = json.loads(path.read_text(encoding="utf-8"))
    settings["tokenizer_class"] = "PreTrainedTokenizerFast"
    path.write_text(json.dumps(settings), encoding="utf-8")
    return directory


def _roberta(kind: str) -> Callable[[Path, bool], Path]:
    def make(directory: Path, classifier: bool) -> Path:
        return _plain_tokenizer(
            _encoder_checkpoints.make_roberta(
                directory, model_type=kind, classifier=classifier, num_labels=1
            )
        )

    return make


MAKERS: dict[str, Callable[[Path, bool], Path]] = {
    "roberta": _roberta("roberta"),
    "xlm-roberta": _roberta("xlm-roberta"),
    "distilbert": lambda d, c: _encoder_checkpoints.make_distilbert(d, classifier=c, num_labels=1),
    "mpnet": lambda d, c: _wordpiece_model(d, "mpnet", c, 21),
    "modernbert": lambda d, c: _wordpiece_model(d, "modernbert", c, 22),
}


@pytest.mark.parametrize("family", list(MAKERS))
def test_text_embedder_runs_each_family_like_sentence_transformers(
    family: str, tmp_path: Path
) -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    encoder = MAKERS[family](tmp_path / "encoder", False)
    torch.manual_seed(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformer = Transformer(str(encoder), max_seq_length=32)
        modules = [
            transformer,
            Pooling(32, pooling_mode="mean"),
            Dense(32, 16, activation_function=torch.nn.Tanh()),
            Normalize(),
        ]
        reference = SentenceTransformer(modules=modules, device="cpu")
        reference.save(str(tmp_path / "st"))
    embedder = TextEmbedder.from_pretrained(tmp_path / "st", device="cpu", sharing=False)
    assert embedder.dimension == 16
    ours = embedder.embed(TEXTS, batch_size=3, normalize=False)
    theirs = np.asarray(reference.encode(TEXTS, convert_to_numpy=True))
    cosines = (ours * theirs).sum(axis=1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(theirs, axis=1)
    )
    assert cosines.min() >= 0.9999, (family, cosines)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.parametrize("family", list(MAKERS))
def test_reranker_runs_each_familys_cross_encoder(family: str, tmp_path: Path) -> None:
    from sentence_transformers import CrossEncoder

    path = MAKERS[family](tmp_path / "cross", True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = CrossEncoder(str(path), device="cpu")
    reranker = Reranker.from_pretrained(path, device="cpu", sharing=False)
    assert type(reranker.model).__name__.endswith("ForSequenceClassification")
    pairs = [(QUERY, text) for text in TEXTS]
    np.testing.assert_allclose(
        reranker.predict(pairs, batch_size=3), np.asarray(reference.predict(pairs)), atol=1e-4
    )
    ranked = reranker.rerank(QUERY, TEXTS)
    assert [r.index for r in ranked] == [int(r["corpus_id"]) for r in reference.rank(QUERY, TEXTS)]
