"""Autograd through a whole model: every parameter gradient of a tiny seeded BERT equals
transformers' on every backend, and an inference forward builds no graph."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import ipfs_accelerate as ia
from ipfs_accelerate.models.loading import load_model
from tests.models._checkpoints import make_bert

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_bert(tmp_path_factory.mktemp("bert"))


IDS = np.array([[2, 5, 6, 7, 3, 0], [2, 8, 9, 3, 0, 0]], np.int64)  # 0 is [PAD]


def test_bert_parameter_gradients_match_transformers(device: str, bert_dir: Path) -> None:
    from transformers import BertModel

    model, _, _ = load_model(bert_dir, device, sharing=False)
    params = dict(model.named_parameters())
    for p in params.values():
        p.requires_grad_()
    mask = (IDS != 0).astype(np.int64)
    types = np.zeros_like(IDS)
    types[0, 3:] = 1
    out = model(*(ia.from_numpy(a, device) for a in (IDS, mask, types)))
    rng = np.random.default_rng(0)
    w_hidden = rng.standard_normal(out.last_hidden_state.shape).astype(np.float32)
    w_pooled = rng.standard_normal(out.pooler_output.shape).astype(np.float32)
    loss = (out.last_hidden_state * ia.tensor(w_hidden, device=device)).sum() + (
        out.pooler_output * ia.tensor(w_pooled, device=device)
    ).sum()
    loss.backward()

    hf = BertModel.from_pretrained(bert_dir).eval()
    ref = hf(
        input_ids=torch.from_numpy(IDS),
        attention_mask=torch.from_numpy(mask),
        token_type_ids=torch.from_numpy(types),
    )
    ref_loss = (ref.last_hidden_state * torch.from_numpy(w_hidden)).sum() + (
        ref.pooler_output * torch.from_numpy(w_pooled)
    ).sum()
    ref_loss.backward()
    rtol = 1e-5 if device == "cpu" else 1e-4
    hf_params = dict(hf.named_parameters())
    assert set(hf_params) == set(params)
    for name, p in hf_params.items():
        grad = params[name].grad
        assert grad is not None and p.grad is not None, name
        expected = p.grad.numpy()
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(
            grad.numpy(), expected, rtol=rtol, atol=rtol * scale, err_msg=f"{name} on {device}"
        )
    # the [PAD] row of the word embeddings gets no gradient (nn.Embedding's padding_idx)
    word = params["embeddings.word_embeddings.weight"].grad
    assert word is not None and not np.any(word.numpy()[0])


def test_an_inference_forward_builds_no_graph(bert_dir: Path) -> None:
    ia.tensor([1.0], requires_grad=True)  # autograd is in use elsewhere in the process
    model, _, _ = load_model(bert_dir, "cpu", sharing=False)
    ids = ia.from_numpy(IDS[:1])
    out = model(ids, ia.ones(1, IDS.shape[1], dtype="int64"))
    assert not out.last_hidden_state.requires_grad
    assert out.last_hidden_state.grad_fn is None
    params = dict(model.named_parameters())
    params["encoder.layer.0.attention.self.query.weight"].requires_grad_()
    with ia.no_grad():
        out = model(ids, ia.ones(1, IDS.shape[1], dtype="int64"))
    assert out.last_hidden_state.grad_fn is None
