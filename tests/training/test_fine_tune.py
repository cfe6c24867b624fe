"""Fine-tuning all of MiniLM with MultipleNegativesRankingLoss: the first step's gradients
equal sentence-transformers' for the same batch (dropout off on both sides), and the loss
falls over a few steps."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import InvalidArgumentError, ModelError, ShapeError
from ipfs_accelerate.models import TextEmbedder, fine_tune
from ipfs_accelerate.models.training import contrastive_loss

pytestmark = pytest.mark.timeout(300)

# positives the pretrained model does not already rank first (a loss far from 0, so the
# gradients are large enough to compare and there is something to learn)
PAIRS = [
    ("how do I bake bread", "forecast: rain in the afternoon"),
    ("the weather tomorrow", "a beginner's guide to programming in Python"),
    ("best way to learn python", "why a pet refuses food and what to do"),
    ("my cat will not eat", "a simple recipe for a homemade loaf"),
]


def test_mnrl_loss_equals_sentence_transformers_on_embeddings() -> None:
    from sentence_transformers.util import cos_sim

    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((3, 8)), rng.standard_normal((5, 8))  # 2 hard negatives
    x = ia.tensor(a.astype(np.float32), requires_grad=True)
    y = ia.tensor(b.astype(np.float32), requires_grad=True)
    ops.multiple_negatives_ranking_loss(x, y).backward()
    ta = torch.tensor(a.astype(np.float32), requires_grad=True)
    tb = torch.tensor(b.astype(np.float32), requires_grad=True)
    ref = torch.nn.functional.cross_entropy(cos_sim(ta, tb) * 20.0, torch.arange(3))
    ref.backward()
    assert x.grad is not None and y.grad is not None
    np.testing.assert_allclose(x.grad.numpy(), ta.grad.numpy(), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(y.grad.numpy(), tb.grad.numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ShapeError, match="M >= N"):
        ops.multiple_negatives_ranking_loss(x, x[:2])
    with pytest.raises(InvalidArgumentError, match="scale"):
        ops.multiple_negatives_ranking_loss(x, y, scale=0.0)


def test_first_step_gradients_equal_sentence_transformers(minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    embedder = TextEmbedder.from_pretrained(minilm_dir, "cpu", sharing=False)
    embedder.model.requires_grad_()
    anchors, positives = [p[0] for p in PAIRS], [p[1] for p in PAIRS]
    loss = contrastive_loss(embedder, anchors, positives)
    loss.backward()

    st = SentenceTransformer(str(minilm_dir), device="cpu").eval()  # dropout off
    encode = getattr(st, "preprocess", st.tokenize)
    features = [encode(anchors), encode(positives)]
    ref = MultipleNegativesRankingLoss(st)(features, None)
    ref.backward()
    np.testing.assert_allclose(loss.item(), ref.item(), rtol=1e-5)

    ours = dict(embedder.model.named_parameters())
    compared = 0
    for name, param in st.named_parameters():
        key = name.split(".", 2)[2]  # "0.auto_model.<key>" (or "0.model.<key>")
        if key.startswith("pooler."):  # sentence embeddings never read the pooler
            assert param.grad is None or not param.grad.any()
            continue
        grad = ours[key].grad
        assert grad is not None and param.grad is not None, key
        expected = param.grad.numpy()
        scale = max(1e-3, float(np.abs(expected).max()))
        np.testing.assert_allclose(
            grad.numpy(), expected, rtol=1e-4, atol=1e-4 * scale, err_msg=key
        )
        compared += 1
    assert compared >= 100  # every encoder weight of MiniLM-L6


TINY_PAIRS = [
    ("a photo of a cat", "the bird sat on the tree"),
    ("hello world", "a red car and a blue house"),
    ("a man is eating food", "the sun is in the sky"),
    ("a woman is playing violin", "a photo of a dog"),
]


def test_fine_tune_lowers_the_loss_and_leaves_an_inference_model(bert_dir: Path) -> None:
    # a tiny seeded BERT keeps the steps fast; the MiniLM test above checks the gradients
    embedder = TextEmbedder.from_pretrained(bert_dir, "cpu", sharing=False)
    before = embedder.embed([p[0] for p in TINY_PAIRS])
    seen: list[tuple[int, int]] = []
    losses = fine_tune(
        embedder,
        TINY_PAIRS,
        epochs=6,
        batch_size=2,
        lr=3e-3,
        dropout=True,
        callback=lambda step, total, loss: seen.append((step, total)),
    )
    assert len(losses) == 12 and seen[-1] == (12, 12)
    assert np.mean(losses[-4:]) < np.mean(losses[:4]) * 0.8, losses
    model = embedder.model
    assert not model.training and all(not p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())
    after = embedder.embed([p[0] for p in TINY_PAIRS])
    assert not np.allclose(before, after)  # the weights changed in place
    trained = embedder.embed_tensor([p[0] for p in TINY_PAIRS]).numpy()
    unit = trained / np.linalg.norm(trained, axis=1, keepdims=True)
    np.testing.assert_allclose(unit, after, rtol=1e-4, atol=1e-5)


def test_fine_tune_refuses_shared_weights_and_bad_examples(minilm_dir: Path) -> None:
    shared = TextEmbedder.from_pretrained(minilm_dir, "cpu")
    with pytest.raises(ModelError, match="sharing=False"):
        fine_tune(shared, PAIRS)
    own = TextEmbedder.from_pretrained(minilm_dir, "cpu", sharing=False)
    with pytest.raises(InvalidArgumentError, match="example 1"):
        fine_tune(own, [("a", "b"), ("only one",)])
    with pytest.raises(InvalidArgumentError, match="example 0 holds ''"):
        fine_tune(own, [("", "b")])
    with pytest.raises(InvalidArgumentError, match="lr"):
        fine_tune(own, PAIRS, lr=-1.0)


def test_fine_tune_with_hard_negatives_matches_cpu_on_every_backend(
    device: str, bert_dir: Path
) -> None:
    triplets = [(a, p, TINY_PAIRS[(i + 1) % 4][0]) for i, (a, p) in enumerate(TINY_PAIRS)]

    def run(where: str) -> tuple[list[float], dict[str, np.ndarray]]:
        embedder = TextEmbedder.from_pretrained(bert_dir, where, sharing=False)
        losses = fine_tune(
            embedder, triplets, epochs=2, batch_size=4, lr=1e-3, dropout=False, shuffle=False
        )
        return losses, {k: v.numpy() for k, v in embedder.model.named_parameters()}

    losses, params = run(device)
    assert len(losses) == 2 and losses[1] < losses[0]
    if device == "cpu":
        return
    cpu_losses, cpu_params = run("cpu")
    np.testing.assert_allclose(losses, cpu_losses, rtol=1e-4)
    for key, value in cpu_params.items():
        # Adam moves a parameter by about lr * sign(gradient) at first, so an element whose
        # gradient is ~0 may move either way on another backend: nearly all must agree
        diff = np.abs(params[key] - value)
        assert np.mean(diff > 1e-4) < 0.02 and diff.max() <= 2 * 2 * 1e-3, key


def test_the_compiled_step_loss_equals_contrastive_loss_padded_or_not(bert_dir: Path) -> None:
    from ipfs_accelerate.models.training import (
        contrastive_inputs,
        contrastive_step_loss,
        pad_tokens,
    )

    embedder = TextEmbedder.from_pretrained(bert_dir, "cpu", sharing=False)
    anchors, candidates = [p[0] for p in TINY_PAIRS], [p[1] for p in TINY_PAIRS]
    expected = contrastive_loss(embedder, anchors, candidates).item()
    loss_fn = contrastive_step_loss(embedder)
    inputs = contrastive_inputs(embedder, anchors, candidates)
    padded = pad_tokens(inputs, 16)
    assert all(a.shape[1] % 16 == 0 for a in padded) and padded[0].shape != inputs[0].shape
    for arrays in (inputs, padded):
        got = loss_fn(*(ia.tensor(a) for a in arrays)).item()
        assert got == pytest.approx(expected, rel=1e-5)
