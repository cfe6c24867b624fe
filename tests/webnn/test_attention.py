"""WebNN graphs built by hand with the attention pattern run ONNX Runtime's MultiHeadAttention
(checked with its profiler) and give numpy's results; variants the kernel cannot take stay on
the plain lowering, with the same results."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.webnn.quantized_kernels import kernels, profiled

pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.webnn

B, L, H, D = 2, 5, 3, 4
F32 = "float32"


@pytest.fixture
def ctx() -> Any:
    from ipfs_accelerate import webnn

    return webnn.create_context()


def _data(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = {name: rng.standard_normal((B, L, H * D)).astype(np.float32) for name in "qkv"}
    x["m"] = (np.arange(L) < np.array([L, 2])[:, None]).astype(np.uint8).reshape(B, 1, 1, L)
    return x


def _heads(b: Any, x: Any) -> Any:
    return b.transpose(b.reshape(x, [B, L, H, D]), permutation=[0, 2, 1, 3])


def _reference(x: dict[str, np.ndarray], fill: float = -math.inf, axis: int = 3) -> np.ndarray:
    q, k, v = (x[n].reshape(B, L, H, D).transpose(0, 2, 1, 3) for n in "qkv")
    scores = np.where(x["m"] != 0, q @ k.transpose(0, 1, 3, 2) * np.float32(0.5), fill)
    with np.errstate(invalid="ignore"):  # a softmax over -inf only is NaN
        weights = np.exp(scores - scores.max(axis, keepdims=True))
        weights /= weights.sum(axis, keepdims=True)
    return (weights @ v).transpose(0, 2, 1, 3).reshape(B, L, H * D)


Scores = Callable[[Any, Any, Any], Any]


def _where(fill: float = -math.inf) -> Scores:
    return lambda b, scores, mask: b.where(mask, scores, b.constant(F32, fill))


def _build(
    ctx: Any, x: dict[str, np.ndarray], monkeypatch: pytest.MonkeyPatch, tmp: Path,
    masked: Scores, *, expose_scores: bool = False, axis: int = 3,
) -> tuple[dict[str, np.ndarray], set[str]]:  # fmt: skip
    from ipfs_accelerate import webnn

    b = webnn.MLGraphBuilder(ctx)
    q, k, v = (_heads(b, b.input(n, {"dataType": F32, "shape": [B, L, H * D]})) for n in "qkv")
    mask = b.input("m", {"dataType": "uint8", "shape": [B, 1, 1, L]})
    product = b.matmul(q, b.transpose(k, permutation=[0, 1, 3, 2]))
    scores = masked(b, b.mul(product, b.constant(F32, 0.5)), mask)
    out = b.matmul(b.softmax(scores, axis), v)
    outputs = {"y": b.reshape(b.transpose(out, permutation=[0, 2, 1, 3]), [B, L, H * D])}
    if expose_scores:
        outputs["scores"] = scores
    with profiled(monkeypatch, tmp):
        graph = b.build(outputs)
    return ctx.compute(graph, x), kernels(graph)


def test_hand_built_pattern_runs_multihead_attention(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    x = _data()
    got, ran = _build(ctx, x, monkeypatch, tmp_path, _where())
    np.testing.assert_allclose(got["y"], _reference(x), rtol=1e-5, atol=1e-5)
    assert "MultiHeadAttention" in ran and not ran & {"Softmax", "Where", "Transpose"}, ran


def test_additive_float_mask_is_the_kernels_attention_bias(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    x = _data(1)

    def masked(b: Any, scores: Any, mask: Any) -> Any:
        as_float = b.cast(mask, F32)  # 1 -> 0, 0 -> -30: a soft mask, no -inf
        return b.add(scores, b.mul(b.sub(as_float, b.constant(F32, 1.0)), b.constant(F32, 30.0)))

    got, ran = _build(ctx, x, monkeypatch, tmp_path, masked)
    np.testing.assert_allclose(got["y"], _reference(x, -30.0), rtol=1e-4, atol=1e-5)
    assert "MultiHeadAttention" in ran and "Softmax" not in ran, ran


@pytest.mark.parametrize(
    "variant", ["finite-fill", "scores-read-elsewhere", "softmax-other-axis", "vector-scale"]
)
def test_variants_the_kernel_cannot_take_stay_plain(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, variant: str
) -> None:
    """A finite fill replaces masked scores (the kernel adds its filter value to them); an
    intermediate that is a graph output, a softmax over another axis and a scale that is not
    one number do not fit the kernel either."""
    x = _data(2)
    masked, fill, axis, expose = _where(), -math.inf, 3, False
    if variant == "finite-fill":
        masked, fill = _where(-1e4), -1e4
    elif variant == "scores-read-elsewhere":
        expose = True
    elif variant == "softmax-other-axis":
        axis = 2
    else:
        weights = np.array([1.0, 1.0, 1.0], np.float32).reshape(1, H, 1, 1)

        def masked(b: Any, scores: Any, mask: Any) -> Any:
            scale = b.constant({"dataType": F32, "shape": [1, H, 1, 1]}, weights)
            return _where()(b, b.mul(scores, scale), mask)

    got, ran = _build(ctx, x, monkeypatch, tmp_path, masked, expose_scores=expose, axis=axis)
    assert "MultiHeadAttention" not in ran and "Softmax" in ran, ran
    np.testing.assert_allclose(got["y"], _reference(x, fill, axis), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("masked", "few"),
    [(True, True), (False, True), (False, False)],
    ids=["masked", "unmasked-few-queries", "unmasked-many-queries"],
)
def test_keys_already_split_into_heads(
    ctx: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, masked: bool, few: bool
) -> None:
    """Keys and values given as (B, H, S, d) (a decoder's cache): a masked kernel, and an
    unmasked one of at most SPLIT_HEADS_MAX_QUERIES queries (a decoder step's
    cross-attention), reads them as they are (no Transpose in the graph); an unmasked one of
    more queries takes them as (B, S, H*d), the layout of its flash path (the limit lowered
    below this test's 5 queries stands for it). All give numpy's result."""
    from ipfs_accelerate import webnn
    from ipfs_accelerate.webnn._onnx import _attention

    if not few:
        monkeypatch.setattr(_attention, "SPLIT_HEADS_MAX_QUERIES", L - 1)
    x = _data(3)
    if not masked:
        x["m"] = np.ones_like(x["m"])
    split = {n: x[n].reshape(B, L, H, D).transpose(0, 2, 1, 3).copy() for n in "kv"}
    b = webnn.MLGraphBuilder(ctx)
    q = _heads(b, b.input("q", {"dataType": F32, "shape": [B, L, H * D]}))
    k, v = (b.input(n, {"dataType": F32, "shape": [B, H, L, D]}) for n in "kv")
    scores = b.mul(b.matmul(q, b.transpose(k, permutation=[0, 1, 3, 2])), b.constant(F32, 0.5))
    if masked:
        scores = _where()(b, scores, b.input("m", {"dataType": "uint8", "shape": [B, 1, 1, L]}))
    out = b.matmul(b.softmax(scores, 3), v)
    with profiled(monkeypatch, tmp_path):
        graph = b.build({"y": b.reshape(b.transpose(out, permutation=[0, 2, 1, 3]), [B, L, H * D])})
    feeds = {"q": x["q"], **split, **({"m": x["m"]} if masked else {})}
    got = ctx.compute(graph, feeds)
    ran = kernels(graph)
    np.testing.assert_allclose(got["y"], _reference(x), rtol=1e-5, atol=1e-5)
    assert "MultiHeadAttention" in ran and "Softmax" not in ran, ran
    assert ("Transpose" in ran) is not (masked or few), ran


@pytest.mark.parametrize("masked", [False, True])
def test_split_heads_with_values_wider_than_keys(masked: bool) -> None:
    """The kernel takes (B, H, S, d) keys and values of one shape only: values of another
    head size than the keys' go through the (B, S, H*d) layout, and the result is still
    the attention's (ONNX Runtime refused the BNSH inputs: 'key' and 'value' shall have the
    same shape)."""
    import torch

    import ipfs_accelerate as ia
    from ipfs_accelerate import ops

    rng = np.random.default_rng(4)
    q = rng.standard_normal((1, 2, 3, 4)).astype(np.float32)
    k = rng.standard_normal((1, 2, 5, 4)).astype(np.float32)
    v = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    mask = np.ones((3, 5), dtype=bool) if masked else None
    if mask is not None:
        mask[:, 3:] = False
    got = ops.scaled_dot_product_attention(
        *(ia.tensor(a, device="webnn") for a in (q, k, v)),
        None if mask is None else ia.tensor(mask, device="webnn"),
    ).numpy()
    expected = torch.nn.functional.scaled_dot_product_attention(
        *(torch.from_numpy(a) for a in (q, k, v)),
        attn_mask=None if mask is None else torch.from_numpy(mask),
    ).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
