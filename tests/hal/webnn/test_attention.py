"""Attention on the webnn backend runs ONNX Runtime's fused MultiHeadAttention (checked with its
profiler: no Softmax, no head split/merge Transpose) and equals the cpu backend within 1e-5,
for every mask form, fully masked rows (NaN, as on the cpu backend), padded batches, batch 1,
a single token, cross attention and the causal case, and in a BERT encoder."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate import hal, ops
from ipfs_accelerate.models._module import merge_heads, split_heads
from ipfs_accelerate.tensor import from_numpy
from tests.webnn.quantized_kernels import kernels, profiled

pytest.importorskip("onnxruntime")
pytestmark = [
    pytest.mark.webnn,
    # the cpu backend's softmax of a fully masked row (NaN, as expected)
    pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning"),
]

HEADS, DEPTH = 4, 8


@pytest.fixture
def backend() -> Any:
    """The webnn backend, with its compiled graphs (the tests read the newest one)."""
    found = hal.get_backend("webnn", fallback=False)
    assert found.name == "webnn"
    return found


def _attend(
    device: str, x: tuple[np.ndarray, ...], mask: np.ndarray | None, causal: bool
) -> np.ndarray:
    """A model's attention: (B, L, H*d) projections split into heads, attended, merged."""
    q, k, v = (split_heads(from_numpy(a, device), HEADS) for a in x)
    m = None if mask is None else from_numpy(mask, device)
    return merge_heads(ops.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal))


def _compare(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp: Path, x: tuple[np.ndarray, ...],
    mask: np.ndarray | None = None, causal: bool = False,
) -> set[str]:  # fmt: skip
    """Checks webnn against cpu; returns the kernels the webnn graph ran."""
    expected = _attend("cpu", x, mask, causal).numpy()
    with profiled(monkeypatch, tmp), warnings.catch_warnings():
        warnings.simplefilter("error")  # no CPU fallback
        got = _attend("webnn", x, mask, causal).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    assert np.array_equal(np.isnan(got), np.isnan(expected))
    return kernels(next(reversed(backend._cache.values())).graph)


def _inputs(
    batch: int, length: int, source: int | None = None, value_depth: int = DEPTH, seed: int = 0
) -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(seed)
    source = length if source is None else source
    return (
        rng.standard_normal((batch, length, HEADS * DEPTH)).astype(np.float32),
        rng.standard_normal((batch, source, HEADS * DEPTH)).astype(np.float32),
        rng.standard_normal((batch, source, HEADS * value_depth)).astype(np.float32),
    )


def _padding(lengths: list[int], source: int) -> np.ndarray:
    """BERT's key padding mask (B, 1, 1, S): True where a sequence has a token."""
    return (np.arange(source) < np.array(lengths)[:, None]).reshape(len(lengths), 1, 1, source)


def _fused(ran: set[str]) -> None:
    assert "MultiHeadAttention" in ran, ran
    assert not ran & {"Softmax", "Transpose", "MatMul", "FusedMatMul"}, ran


def test_padded_batch_runs_multihead_attention(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ran = _compare(backend, monkeypatch, tmp_path, _inputs(3, 7), _padding([7, 4, 1], 7))
    _fused(ran)
    assert "Where" not in ran  # the mask is the kernel's key_padding_mask


def test_fully_masked_rows_are_nan_as_on_cpu(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    mask = _padding([5, 0, 2], 5)
    _fused(_compare(backend, monkeypatch, tmp_path, _inputs(3, 5), mask))
    # a query row with no allowed key among others that have some (a (B, 1, L, S) mask)
    rows = np.random.default_rng(3).random((2, 1, 5, 5)) > 0.4
    rows[0, 0, 2] = False
    rows[1, 0, 0] = True
    _fused(_compare(backend, monkeypatch, tmp_path, _inputs(2, 5, seed=1), rows))


@pytest.mark.parametrize(
    ("batch", "length", "source"),
    [(1, 9, None), (1, 1, None), (2, 1, None), (2, 3, 6), (2, 6, 3)],
    ids=["batch-1", "single-token", "single-token-batch", "cross-longer", "cross-shorter"],
)
def test_shapes(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
    batch: int, length: int, source: int | None,
) -> None:  # fmt: skip
    x = _inputs(batch, length, source)
    keys = x[1].shape[1]
    lengths = [keys - i for i in range(batch)]
    _fused(_compare(backend, monkeypatch, tmp_path, x, _padding(lengths, keys)))
    _fused(_compare(backend, monkeypatch, tmp_path, x))


@pytest.mark.parametrize(("length", "source"), [(6, 6), (3, 5)])
def test_causal(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, length: int, source: int
) -> None:
    """Top-left aligned as PyTorch's: an additive bias (the kernel's own ``unidirectional``
    is bottom-right aligned where L != S)."""
    _fused(_compare(backend, monkeypatch, tmp_path, _inputs(2, length, source), causal=True))


@pytest.mark.parametrize("form", ["queries", "per-head", "float", "float-per-batch"])
def test_mask_forms(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, form: str
) -> None:
    rng = np.random.default_rng(5)
    shape = {
        "queries": (2, 1, 4, 4),
        "per-head": (2, HEADS, 4, 4),
        "float": (HEADS, 4, 4),
        "float-per-batch": (2, 1, 1, 4),
    }[form]
    if form.startswith("float"):
        mask = rng.standard_normal(shape).astype(np.float32)
    else:
        mask = rng.random(shape) > 0.3
    _fused(_compare(backend, monkeypatch, tmp_path, _inputs(2, 4), mask))


def test_value_depth_differs_from_key_depth(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    x = _inputs(2, 5, value_depth=3)
    _fused(_compare(backend, monkeypatch, tmp_path, x, _padding([5, 2], 5)))


def test_heads_kept_split_and_single_head(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Attention whose inputs are not a head split of (B, L, H*d) tensors, or whose result is
    read per head, still runs the kernel (with the transposes it then needs)."""
    rng = np.random.default_rng(7)
    q, k, v = (rng.standard_normal((2, HEADS, 5, DEPTH)).astype(np.float32) for _ in range(3))
    mask = _padding([5, 3], 5)
    results = []
    for device in ("cpu", "webnn"):
        with profiled(monkeypatch, tmp_path):
            args = [from_numpy(a, device) for a in (q, k, v, mask)]
            results.append(ops.scaled_dot_product_attention(*args[:3], attn_mask=args[3]).numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-5)
    ran = kernels(next(reversed(hal.get_backend("webnn")._cache.values())).graph)
    assert "MultiHeadAttention" in ran and "Softmax" not in ran
    # rank 3: one head
    single = [rng.standard_normal((3, 4, DEPTH)).astype(np.float32) for _ in range(3)]
    results = []
    for device in ("cpu", "webnn"):
        with profiled(monkeypatch, tmp_path):
            args = [from_numpy(a, device) for a in single]
            results.append(ops.scaled_dot_product_attention(*args, is_causal=True).numpy())
    np.testing.assert_allclose(results[1], results[0], rtol=1e-5, atol=1e-5)
    ran = kernels(next(reversed(backend._cache.values())).graph)
    assert "MultiHeadAttention" in ran and "Softmax" not in ran


def test_float16(backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """float16 attention runs in float32 (as the plain lowering does) through the kernel."""
    x = tuple(a.astype(np.float16) for a in _inputs(2, 5))
    mask = _padding([5, 2], 5)
    expected = _attend("cpu", x, mask, False).numpy()
    with profiled(monkeypatch, tmp_path):
        got = _attend("webnn", x, mask, False).numpy()
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), expected.astype(np.float32), atol=2e-3)
    assert "MultiHeadAttention" in kernels(next(reversed(backend._cache.values())).graph)


def test_bert_encoder_runs_multihead_attention(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """The seeded tiny BERT (MiniLM's shape of attention) with a padded batch, on webnn and
    on cpu."""
    pytest.importorskip("transformers")
    from ipfs_accelerate.models.loading import load_model
    from tests.models._checkpoints import make_bert

    directory = make_bert(tmp_path_factory.mktemp("bert"))
    ids = np.array([[2, 5, 6, 7, 3, 0, 0], [2, 8, 9, 10, 11, 12, 3], [2, 13, 3, 0, 0, 0, 0]])
    mask = (ids != 0).astype(np.int64)
    outputs = {}
    for device in ("cpu", "webnn"):
        model, _, _ = load_model(directory, device, sharing=False)
        with profiled(monkeypatch, tmp_path_factory.mktemp("profile")):
            hidden = model(from_numpy(ids, device), from_numpy(mask, device)).last_hidden_state
            outputs[device] = hidden.numpy()
    np.testing.assert_allclose(outputs["webnn"], outputs["cpu"], rtol=1e-5, atol=1e-5)
    ran = kernels(next(reversed(backend._cache.values())).graph)
    assert "MultiHeadAttention" in ran and not ran & {"Softmax", "Where"}, ran
