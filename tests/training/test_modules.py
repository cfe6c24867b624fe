"""Trainable modules: parameters, train()/eval() switching BERT's dropout, requires_grad_,
zero_grad; a model trained a step saves to safetensors and loads back with from_pretrained."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import ops, optim
from ipfs_accelerate.errors import ModelError
from ipfs_accelerate.models import BertModel
from ipfs_accelerate.models._module import Dropout
from ipfs_accelerate.models.loading import load_model

pytestmark = pytest.mark.timeout(300)

IDS = np.array([[2, 5, 6, 7, 3, 0], [2, 8, 9, 3, 0, 0]], np.int64)


def _forward(model: BertModel, device: str) -> np.ndarray:
    ids = ia.from_numpy(IDS, device)
    mask = ia.from_numpy((IDS != 0).astype(np.int64), device)
    return model(ids, mask).last_hidden_state.numpy()


def test_loading_gives_eval_mode_and_frozen_parameters(bert_dir: Path) -> None:
    model, _, _ = load_model(bert_dir, "cpu", sharing=False)
    names = [name for name, _ in model.named_parameters()]
    assert "encoder.layer.0.attention.self.query.weight" in names
    assert len(model.parameters()) == len(names)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    dropouts = [m for _, m in model.named_modules() if isinstance(m, Dropout)]
    # embeddings + per layer: attention probabilities, attention output, feed-forward output
    assert len(dropouts) == 1 + 3 * model.config.num_hidden_layers
    assert {m.p for m in dropouts} == {0.1}


def test_train_mode_applies_seeded_dropout_and_eval_removes_it(device: str, bert_dir: Path) -> None:
    model, _, _ = load_model(bert_dir, device, sharing=False)
    reference = _forward(model, device)
    model.train(seed=3)
    assert model.training and model.encoder.layer[1].attention.self.dropout.training
    first = _forward(model, device)
    second = _forward(model, device)
    assert not np.allclose(first, reference, atol=1e-3)
    assert not np.allclose(first, second, atol=1e-3)  # a new mask per call
    model.train(seed=3)
    np.testing.assert_allclose(_forward(model, device), first, rtol=1e-5, atol=1e-5)
    if device != "cpu":  # the same seed draws the same masks as on cpu
        cpu_model, _, _ = load_model(bert_dir, "cpu", sharing=False)
        cpu_model.train(seed=3)
        np.testing.assert_allclose(_forward(cpu_model, "cpu"), first, rtol=1e-4, atol=1e-4)
    model.eval()
    np.testing.assert_allclose(_forward(model, device), reference, rtol=1e-6, atol=1e-6)


def test_requires_grad_and_zero_grad(bert_dir: Path) -> None:
    model, _, _ = load_model(bert_dir, "cpu", sharing=False)
    assert model.requires_grad_() is model
    assert all(p.requires_grad and p.is_leaf for p in model.parameters())
    ops.sum(model(ia.from_numpy(IDS)).last_hidden_state).backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if "pooler" not in n)
    model.zero_grad(set_to_none=False)
    grad = model.parameters()[3].grad
    assert grad is not None and not grad.numpy().any()
    model.zero_grad()
    assert all(p.grad is None for p in model.parameters())
    model.requires_grad_(False)
    assert not any(p.requires_grad for p in model.parameters())


def test_a_quantized_model_refuses_requires_grad(bert_dir: Path) -> None:
    model, _, _ = load_model(bert_dir, "cpu", sharing=False, dtype="int8")
    with pytest.raises(ModelError, match="quantized"):
        model.requires_grad_()


def test_a_trained_model_saves_and_loads_back(bert_dir: Path, tmp_path: Path) -> None:
    model = BertModel.from_pretrained(bert_dir, "cpu", sharing=False)
    model.requires_grad_().train(seed=0)
    opt = optim.AdamW(model.named_parameters(), lr=1e-2)
    loss = ops.mean(model(ia.from_numpy(IDS)).last_hidden_state ** 2)
    loss.backward()
    opt.step()
    model.eval()
    trained = {k: v.numpy().copy() for k, v in model.named_parameters()}
    # the checkpoint under the memory-mapped weights was not written: a fresh load differs
    original = BertModel.from_pretrained(bert_dir, "cpu", sharing=False)
    changed = [
        k for k, v in original.named_parameters() if not np.array_equal(v.numpy(), trained[k])
    ]
    assert "encoder.layer.0.attention.self.query.weight" in changed
    model.save_pretrained(tmp_path / "trained")
    again = BertModel.from_pretrained(tmp_path / "trained", "cpu")
    for key, value in again.named_parameters():
        np.testing.assert_array_equal(value.numpy(), trained[key], err_msg=key)
    np.testing.assert_allclose(_forward(again, "cpu"), _forward(model, "cpu"), rtol=1e-6)


def test_roberta_has_the_same_dropout_sites(tmp_path: Path) -> None:
    from tests.models._encoder_checkpoints import make_roberta

    model, _, _ = load_model(make_roberta(tmp_path / "roberta"), "cpu", sharing=False)
    dropouts = [m for _, m in model.named_modules() if isinstance(m, Dropout)]
    assert len(dropouts) == 1 + 3 * model.config.num_hidden_layers
    ids = ia.from_numpy(np.array([[0, 5, 6, 7, 2]], np.int64))
    reference = model(ids).last_hidden_state.numpy()
    model.train(seed=1)
    assert not np.allclose(model(ids).last_hidden_state.numpy(), reference, atol=1e-3)
    model.eval()
    np.testing.assert_allclose(model(ids).last_hidden_state.numpy(), reference, rtol=1e-6)


@pytest.mark.parametrize("exponent", [2, 0, -1.5])
def test_a_python_exponent_differentiates_on_every_backend(device: str, exponent: float) -> None:
    import torch

    values = [[0.5, 1.5, 2.0]]
    x = ia.tensor(values, device=device, requires_grad=True)
    ops.sum(x**exponent).backward()
    ref = torch.tensor(values, requires_grad=True)
    (ref**exponent).sum().backward()
    assert x.grad is not None and ref.grad is not None
    np.testing.assert_allclose(x.grad.numpy(), ref.grad.numpy(), rtol=1e-5)
