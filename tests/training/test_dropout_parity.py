"""Dropout in training mode sits where transformers puts it, in every encoder family.

Each case builds a tiny checkpoint with every dropout probability set (a different one per
kind, so a site that reads the wrong config field is caught), runs our model in training
mode while recording the masks it draws, then runs transformers' model in training mode with
``torch.nn.functional.dropout`` replaying those masks in the same order. The outputs agree
only if both models drop at the same sites, in the same order, on the same shapes, with the
same probabilities and the same scaling.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.models._module import Dropout
from ipfs_accelerate.models.loading import load_model

pytestmark = pytest.mark.timeout(300)

IDS = np.array([[2, 5, 6, 7, 9, 3], [2, 8, 9, 3, 0, 0]], np.int64)
SMALL = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4,
         "intermediate_size": 64}  # fmt: skip


def _bert(transformers: Any, head: bool) -> Any:
    config = transformers.BertConfig(
        vocab_size=40, **SMALL, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.3,
        classifier_dropout=0.4, num_labels=3,
    )  # fmt: skip
    return config, transformers.BertForSequenceClassification if head else transformers.BertModel


def _roberta(transformers: Any, head: bool) -> Any:
    config = transformers.RobertaConfig(
        vocab_size=40, **SMALL, max_position_embeddings=20, type_vocab_size=1,
        pad_token_id=1, hidden_dropout_prob=0.2, attention_probs_dropout_prob=0.3,
        classifier_dropout=0.4, num_labels=2,
    )  # fmt: skip
    model = transformers.RobertaForSequenceClassification if head else transformers.RobertaModel
    return config, model


def _distilbert(transformers: Any, head: bool) -> Any:
    config = transformers.DistilBertConfig(
        vocab_size=40, dim=32, n_layers=2, n_heads=4, hidden_dim=64, dropout=0.2,
        attention_dropout=0.3, seq_classif_dropout=0.4, num_labels=2,
    )  # fmt: skip
    model = (
        transformers.DistilBertForSequenceClassification if head else transformers.DistilBertModel
    )
    return config, model


def _mpnet(transformers: Any, head: bool) -> Any:
    config = transformers.MPNetConfig(
        vocab_size=40, **SMALL, max_position_embeddings=20, hidden_dropout_prob=0.2,
        attention_probs_dropout_prob=0.3, num_labels=2,
    )  # fmt: skip
    return config, transformers.MPNetForSequenceClassification if head else transformers.MPNetModel


def _modernbert(transformers: Any, head: bool) -> Any:
    config = transformers.ModernBertConfig(
        vocab_size=40, **SMALL, max_position_embeddings=32, pad_token_id=0, local_attention=4,
        global_attn_every_n_layers=2, embedding_dropout=0.1, attention_dropout=0.3,
        mlp_dropout=0.2, classifier_dropout=0.4, num_labels=2,
    )  # fmt: skip
    model = (
        transformers.ModernBertForSequenceClassification if head else transformers.ModernBertModel
    )
    return config, model


FAMILIES: dict[str, Callable[[Any, bool], Any]] = {
    "bert": _bert,
    "roberta": _roberta,
    "distilbert": _distilbert,
    "mpnet": _mpnet,
    "modernbert": _modernbert,
}


def _replaying(masks: list[tuple[float, np.ndarray]]) -> Callable[..., Any]:
    import torch

    queue = iter(masks)

    def dropout(x: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Any:
        if not training or p == 0.0:
            return x
        ours_p, keep = next(queue)
        assert ours_p == pytest.approx(p), "a dropout site with another probability"
        assert keep.shape == tuple(x.shape), "a dropout site on another shape"
        return x * torch.from_numpy(keep.astype(np.float32)) / (1.0 - p)

    return dropout


def _record(monkeypatch: pytest.MonkeyPatch) -> list[tuple[float, np.ndarray]]:
    masks: list[tuple[float, np.ndarray]] = []
    original = Dropout.__call__

    def recording(self: Dropout, x: Any) -> Any:
        if not self.active:
            return original(self, x)
        # the same draw Dropout makes (its generator's next seed), applied to ones
        seed = int(self.generator.integers(0, 2**63 - 1))
        out = ops.dropout(x, self.p, training=True, seed=seed)
        ones = ia.ones(*x.shape, device=x.device)
        masks.append((self.p, ops.dropout(ones, self.p, training=True, seed=seed).numpy() != 0))
        return out

    monkeypatch.setattr(Dropout, "__call__", recording)
    return masks


def _ours(output: Any) -> np.ndarray:
    hidden = getattr(output, "last_hidden_state", output)
    return np.asarray(hidden.numpy())


@pytest.mark.parametrize("head", [False, True], ids=["encoder", "classifier"])
@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_dropout_sites_match_transformers(
    family: str, head: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    import transformers

    config, model_class = FAMILIES[family](transformers, head)
    config._attn_implementation = "eager"  # dropout inside SDPA could not be replayed
    torch.manual_seed(0)
    reference = model_class(config).eval()
    reference.save_pretrained(tmp_path, safe_serialization=True)

    model, _, _ = load_model(tmp_path, "cpu", sharing=False)
    ids, mask = (ia.from_numpy(IDS), ia.from_numpy((IDS != 0).astype(np.int64)))
    evaluated = _ours(model(ids, mask))
    masks = _record(monkeypatch)
    model.train(seed=7)
    trained = _ours(model(ids, mask))
    model.eval()
    assert not np.allclose(trained, evaluated, atol=1e-3), "training mode changed nothing"
    expected_sites = sum(1 for _, m in model.named_modules() if isinstance(m, Dropout) and m.p)
    assert len(masks) >= expected_sites  # attention-probability sites run once per layer

    monkeypatch.setattr(torch.nn.functional, "dropout", _replaying(masks))
    reference.train()
    with torch.no_grad():
        out = reference(torch.from_numpy(IDS), attention_mask=torch.from_numpy(IDS != 0).long())
    expected = (out.logits if head else out.last_hidden_state).numpy()
    keep = IDS != 0  # padding positions' hidden states are not compared (they are unused)
    got, want = (trained, expected) if head else (trained[keep], expected[keep])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_vit_dropout_sites_match_transformers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import torch
    import transformers

    config = transformers.ViTConfig(
        **SMALL, image_size=8, patch_size=4, num_channels=3, hidden_dropout_prob=0.2,
        attention_probs_dropout_prob=0.3,
    )  # fmt: skip
    config._attn_implementation = "eager"
    torch.manual_seed(0)
    reference = transformers.ViTModel(config, add_pooling_layer=False).eval()
    reference.save_pretrained(tmp_path, safe_serialization=True)
    pixels = np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32)

    model, _, _ = load_model(tmp_path, "cpu", sharing=False)
    masks = _record(monkeypatch)
    model.train(seed=5)
    trained = _ours(model(ia.from_numpy(pixels)))
    assert len(masks) == 1 + 3 * config.num_hidden_layers

    monkeypatch.setattr(torch.nn.functional, "dropout", _replaying(masks))
    reference.train()
    with torch.no_grad():
        expected = reference(torch.from_numpy(pixels)).last_hidden_state.numpy()
    np.testing.assert_allclose(trained, expected, rtol=1e-4, atol=1e-5)
