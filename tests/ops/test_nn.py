"""Matrix, neural-network and loss ops against numpy and PyTorch, on every backend."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.errors import (
    DtypeError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    ShapeError,
)

from ._helpers import FLOATS, INTS, accumulation_atol, arrays, assert_close, on, supported


def _floats(device: str) -> list[str]:
    # float16 matmul/conv references would need float16 accumulation semantics; the nn ops
    # are checked in float32 and float64
    return supported(device, ("float32", "float64"))


def _t(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(x, copy=True))  # ascontiguousarray would make 0-d arrays 1-d


# ----------------------------------------------------------------------------- matmul


@given(data=st.data())
def test_matmul_matches_numpy(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(supported(device, (*FLOATS, "int32", "int64"))))
    m, k, n = (data.draw(st.integers(1, 6)) for _ in range(3))
    batch_a, batch_b = data.draw(
        hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=2, max_side=3)
    ).input_shapes
    a_vec, b_vec = data.draw(st.booleans()), data.draw(st.booleans())
    shape_a = (k,) if a_vec else (*batch_a, m, k)
    shape_b = (k,) if b_vec else (*batch_b, k, n)
    low, high = (-3, 3)
    a = data.draw(arrays(dtype, shape_a, low, high))
    b = data.draw(arrays(dtype, shape_b, low, high))
    expected = np.matmul(a, b)
    atol = accumulation_atol(dtype, k, 9.0) if dtype in FLOATS else None
    assert_close(ops.matmul(on(device, a), on(device, b)), expected, op="matmul", atol=atol)
    assert_close(on(device, a) @ on(device, b), expected, op="@", atol=atol)


def test_matmul_shape_errors(device: str) -> None:
    with pytest.raises(ShapeError, match=r"matmul: inner dimensions differ: \(2, 3\) @ \(4, 5\)"):
        ops.matmul(ia.zeros(2, 3, device=device), ia.zeros(4, 5, device=device))
    with pytest.raises(ShapeError, match="batch|broadcast"):
        ops.matmul(ia.zeros(2, 2, 3, device=device), ia.zeros(3, 3, 4, device=device))
    with pytest.raises(ShapeError, match="at least 1-D"):
        ops.matmul(ia.zeros((), device=device), ia.zeros(3, device=device))


@given(data=st.data())
def test_linear_matches_torch(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(_floats(device)))
    lead = data.draw(hnp.array_shapes(min_dims=0, max_dims=3, max_side=4))
    fan_in, fan_out = data.draw(st.integers(1, 8)), data.draw(st.integers(1, 8))
    x = data.draw(arrays(dtype, (*lead, fan_in), -2, 2))
    w = data.draw(arrays(dtype, (fan_out, fan_in), -2, 2))
    b = data.draw(st.none() | arrays(dtype, (fan_out,), -2, 2))
    expected = F.linear(_t(x), _t(w), None if b is None else _t(b)).numpy()
    actual = ops.linear(on(device, x), on(device, w), None if b is None else on(device, b))
    assert_close(actual, expected, op="linear", atol=accumulation_atol(dtype, fan_in + 1, 4.0))


# ----------------------------------------------------------------------------- convolution


@given(data=st.data())
def test_conv2d_matches_torch(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(_floats(device)))
    groups = data.draw(st.sampled_from([1, 2]))
    c_in = groups * data.draw(st.integers(1, 3))
    c_out = groups * data.draw(st.integers(1, 3))
    kh, kw = data.draw(st.integers(1, 3)), data.draw(st.integers(1, 3))
    stride = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    dilation = (data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2)))
    padding = (data.draw(st.integers(0, 2)), data.draw(st.integers(0, 2)))
    h = data.draw(st.integers(dilation[0] * (kh - 1) + 1, 7))
    w = data.draw(st.integers(dilation[1] * (kw - 1) + 1, 7))
    n = data.draw(st.integers(1, 2))
    x = data.draw(arrays(dtype, (n, c_in, h, w), -2, 2))
    weight = data.draw(arrays(dtype, (c_out, c_in // groups, kh, kw), -2, 2))
    bias = data.draw(st.none() | arrays(dtype, (c_out,), -2, 2))
    expected = F.conv2d(
        _t(x), _t(weight), None if bias is None else _t(bias), stride, padding, dilation, groups
    ).numpy()
    actual = ops.conv2d(
        on(device, x),
        on(device, weight),
        None if bias is None else on(device, bias),
        stride,
        padding,
        dilation,
        groups,
    )
    assert_close(
        actual, expected, op="conv2d", atol=accumulation_atol(dtype, c_in * kh * kw + 1, 4.0)
    )


@given(data=st.data())
def test_conv1d_matches_torch(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(_floats(device)))
    c_in, c_out, k = (
        data.draw(st.integers(1, 4)),
        data.draw(st.integers(1, 4)),
        data.draw(st.integers(1, 3)),
    )
    stride, dilation = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 2))
    padding = data.draw(st.sampled_from([0, 1, 2, "same", "valid"]))
    if padding == "same":
        stride = 1
    length = data.draw(st.integers(dilation * (k - 1) + 1, 9))
    x = data.draw(arrays(dtype, (2, c_in, length), -2, 2))
    weight = data.draw(arrays(dtype, (c_out, c_in, k), -2, 2))
    bias = data.draw(arrays(dtype, (c_out,), -2, 2))
    expected = F.conv1d(_t(x), _t(weight), _t(bias), stride, padding, dilation).numpy()
    actual = ops.conv1d(
        on(device, x), on(device, weight), on(device, bias), stride, padding, dilation
    )
    assert_close(actual, expected, op="conv1d", atol=accumulation_atol(dtype, c_in * k + 1, 4.0))
    unbatched = ops.conv1d(
        on(device, x[0]), on(device, weight), on(device, bias), stride, padding, dilation
    )
    assert_close(
        unbatched,
        expected[0],
        op="conv1d unbatched",
        atol=accumulation_atol(dtype, c_in * k + 1, 4.0),
    )


def test_conv_argument_errors(device: str) -> None:
    x = ia.zeros(1, 3, 5, 5, device=device)
    with pytest.raises(ShapeError, match="expects 4 input channels, input has 3"):
        ops.conv2d(x, ia.zeros(2, 4, 3, 3, device=device))
    with pytest.raises(ShapeError, match="divisible by groups=2"):
        ops.conv2d(x, ia.zeros(2, 1, 3, 3, device=device), groups=2)
    with pytest.raises(ShapeError, match="larger than the padded input"):
        ops.conv2d(x, ia.zeros(2, 3, 7, 7, device=device))
    with pytest.raises(InvalidArgumentError, match="stride 1"):
        ops.conv2d(x, ia.zeros(2, 3, 3, 3, device=device), stride=2, padding="same")
    with pytest.raises(ShapeError, match="bias"):
        ops.conv2d(x, ia.zeros(2, 3, 3, 3, device=device), ia.zeros(3, device=device))


# ----------------------------------------------------------------------------- softmax, norms


@given(data=st.data())
def test_softmax_and_log_softmax_match_torch(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(_floats(device)))
    x = data.draw(arrays(dtype, hnp.array_shapes(min_dims=1, max_dims=4, max_side=5), -30, 30))
    axis = data.draw(st.integers(-x.ndim, x.ndim - 1))
    assert_close(ops.softmax(on(device, x), axis), F.softmax(_t(x), axis).numpy(), op="softmax")
    assert_close(
        ops.log_softmax(on(device, x), axis),
        F.log_softmax(_t(x), axis).numpy(),
        op="log_softmax",
        atol=1e-5,
    )
    assert_close(on(device, x).softmax(axis), F.softmax(_t(x), axis).numpy(), op="Tensor.softmax")


def test_softmax_is_stable_for_large_inputs(device: str) -> None:
    x = np.array([[1000.0, 1001.0, 1002.0], [-1000.0, -1000.0, -1000.0]], dtype=np.float32)
    assert_close(ops.softmax(on(device, x)), F.softmax(_t(x), -1).numpy(), op="softmax")
    assert_close(ops.log_softmax(on(device, x)), F.log_softmax(_t(x), -1).numpy(), op="log_softmax")


@pytest.mark.parametrize("width", [2, 17, 64, 65])
def test_softmax_of_many_short_rows_matches_torch(device: str, width: int) -> None:
    """Attention-shaped inputs (thousands of rows of a few dozen keys, where the CPU backend
    reduces differently): large and tiny logits, -inf entries, a row of -inf only (NaN)."""
    rng = np.random.default_rng(width)
    x = rng.normal(0, 20, size=(9, max(80, 4096 // width), width)).astype(
        np.float32
    )  # >= 4096 elements
    x[0, 0] += 1e4
    x[1, :, 0] = -np.inf
    x[2, 3] = -np.inf
    for axis in (-1, 1):
        assert_close(ops.softmax(on(device, x), axis), F.softmax(_t(x), axis).numpy(), op="softmax")
        assert_close(
            ops.log_softmax(on(device, x), axis),
            F.log_softmax(_t(x), axis).numpy(),
            op="log_softmax",
            atol=1e-4,
        )


@pytest.mark.parametrize("eps", [1e-12, 1e-5])
def test_layer_norm_of_transformer_sized_rows(device: str, eps: float) -> None:
    """Thousands of rows (where the CPU backend reduces with BLAS): ordinary rows, rows far from
    zero (|mean| >> spread), rows of one repeated value (exactly the bias, even with BERT's
    eps of 1e-12), and a 2-axis normalisation, against torch in float64."""
    rng = np.random.default_rng(7)
    x = rng.normal(0, 1, size=(40, 30, 96)).astype(np.float32)
    x[1] += 1000.0
    x[2, :7] = 3.3
    weight = rng.normal(0, 1, 96).astype(np.float32)
    bias = rng.normal(0, 1, 96).astype(np.float32)
    expected = (
        F.layer_norm(_t(x).double(), (96,), _t(weight).double(), _t(bias).double(), eps)
        .float()
        .numpy()
    )
    got = ops.layer_norm(on(device, x), (96,), on(device, weight), on(device, bias), eps=eps)
    assert_close(got, expected, op="layer_norm", atol=1e-4)
    np.testing.assert_allclose(got.numpy()[2, :7], np.broadcast_to(bias, (7, 96)), atol=1e-6)
    expected2 = F.layer_norm(_t(x).double(), (30, 96), None, None, eps).float().numpy()
    assert_close(
        ops.layer_norm(on(device, x), (30, 96), eps=eps), expected2, op="layer_norm 2 axes"
    )


@given(data=st.data())
def test_layer_norm_matches_torch(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(_floats(device)))
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=6))
    k = data.draw(st.integers(1, len(shape)))
    norm_shape = shape[len(shape) - k :]
    x = data.draw(arrays(dtype, shape, -5, 5))
    weight = data.draw(st.none() | arrays(dtype, norm_shape, -2, 2))
    bias = data.draw(st.none() | arrays(dtype, norm_shape, -2, 2))
    eps = data.draw(st.sampled_from([1e-5, 1e-12, 1e-3]))
    expected = F.layer_norm(
        _t(x),
        norm_shape,
        None if weight is None else _t(weight),
        None if bias is None else _t(bias),
        eps,
    ).numpy()
    actual = ops.layer_norm(
        on(device, x),
        norm_shape,
        None if weight is None else on(device, weight),
        None if bias is None else on(device, bias),
        eps,
    )
    assert_close(
        actual, expected, op="layer_norm", rtol=1e-4, atol=1e-4 if dtype == "float32" else 1e-9
    )


def test_layer_norm_shape_errors(device: str) -> None:
    x = ia.zeros(2, 4, device=device)
    with pytest.raises(ShapeError, match=r"normalized_shape \(3,\)"):
        ops.layer_norm(x, 3)
    with pytest.raises(ShapeError, match="weight must have shape"):
        ops.layer_norm(x, 4, ia.ones(3, device=device))


# ----------------------------------------------------------------------------- attention


@given(data=st.data())
def test_scaled_dot_product_attention_matches_torch(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(_floats(device)))
    batch = data.draw(hnp.array_shapes(min_dims=0, max_dims=2, min_side=1, max_side=3))
    length, source, e, ev = (data.draw(st.integers(1, 5)) for _ in range(4))
    q = data.draw(arrays(dtype, (*batch, length, e), -2, 2))
    k = data.draw(arrays(dtype, (*batch, source, e), -2, 2))
    v = data.draw(arrays(dtype, (*batch, source, ev), -2, 2))
    mode = data.draw(st.sampled_from(["none", "bool", "float", "causal"]))
    scale = data.draw(st.none() | st.sampled_from([0.5, 1.0]))
    mask = None
    if mode == "bool":
        mask = data.draw(arrays("bool", (length, source)))
        mask[:, 0] = True  # every query may attend to something (else the row is NaN, as in torch)
    elif mode == "float":
        mask = data.draw(arrays(dtype, (1, source), -3, 0))
    expected = F.scaled_dot_product_attention(
        _t(q),
        _t(k),
        _t(v),
        attn_mask=None if mask is None else _t(mask),
        is_causal=mode == "causal",
        scale=scale,
    ).numpy()
    actual = ops.scaled_dot_product_attention(
        on(device, q),
        on(device, k),
        on(device, v),
        None if mask is None else on(device, mask),
        mode == "causal",
        scale,
    )
    assert_close(actual, expected, op=f"sdpa {mode}", rtol=1e-4, atol=1e-5)


def test_attention_float_mask_wider_than_the_scores(device: str) -> None:
    # the cpu kernel adds a float mask in place where it fits q @ k^T; where value and mask
    # bring a batch axis that query and key lack, the result must widen instead
    rng = np.random.default_rng(3)
    q, k = (rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2))
    v = rng.standard_normal((2, 4, 3)).astype(np.float32)
    for bias in (
        rng.uniform(-3, 0, (2, 4, 4)).astype(np.float32),
        rng.uniform(-3, 0, (4, 4)).astype(np.float32),
    ):
        scores = q @ k.T / np.sqrt(3) + bias
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        expected = ((weights / weights.sum(-1, keepdims=True)) @ v).astype(np.float32)
        actual = ops.scaled_dot_product_attention(
            on(device, q), on(device, k), on(device, v), on(device, bias)
        )
        assert actual.shape == (2, 4, 3)
        assert_close(actual, expected, op="sdpa float mask", rtol=1e-4, atol=1e-5)


def test_attention_argument_errors(device: str) -> None:
    q = ia.zeros(2, 3, 4, device=device)
    with pytest.raises(ShapeError, match="embedding sizes differ"):
        ops.scaled_dot_product_attention(
            q, ia.zeros(2, 3, 5, device=device), ia.zeros(2, 3, 4, device=device)
        )
    with pytest.raises(InvalidArgumentError, match="not both"):
        ops.scaled_dot_product_attention(
            q, q, q, attn_mask=ia.ones(3, 3, device=device), is_causal=True
        )
    with pytest.raises(ShapeError, match="attn_mask"):
        ops.scaled_dot_product_attention(q, q, q, attn_mask=ia.ones(4, 3, device=device))


# ----------------------------------------------------------------------------- activations


@given(data=st.data())
def test_activations_match_torch(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(_floats(device)))
    x = data.draw(arrays(dtype, hnp.array_shapes(min_dims=0, max_dims=3, max_side=6), -10, 10))
    tx = _t(x)
    assert_close(ops.gelu(on(device, x)), F.gelu(tx).numpy(), op="gelu")
    assert_close(
        ops.gelu(on(device, x), "tanh"), F.gelu(tx, approximate="tanh").numpy(), op="gelu tanh"
    )
    assert_close(ops.silu(on(device, x)), F.silu(tx).numpy(), op="silu")
    assert_close(ops.sigmoid(on(device, x)), torch.sigmoid(tx).numpy(), op="sigmoid")
    assert_close(ops.relu(on(device, x)), F.relu(tx).numpy(), op="relu")
    assert_close(ops.tanh(on(device, x)), torch.tanh(tx).numpy(), op="tanh")


def test_nn_ops_refuse_bool(device: str) -> None:
    if "bool" not in supported(device):
        pytest.skip("no bool")
    with pytest.raises(DtypeError, match="softmax: not defined for bool"):
        ops.softmax(ia.tensor([True, False], device=device))


# ----------------------------------------------------------------------------- losses


@given(data=st.data())
def test_mse_loss_matches_torch(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(_floats(device)))
    shape = data.draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=5))
    a, b = data.draw(arrays(dtype, shape)), data.draw(arrays(dtype, shape))
    for reduction in ("mean", "sum", "none"):
        expected = F.mse_loss(_t(a), _t(b), reduction=reduction).numpy()
        actual = ops.mse_loss(on(device, a), on(device, b), reduction)
        assert_close(
            actual,
            expected,
            op=f"mse_loss {reduction}",
            atol=accumulation_atol(dtype, a.size, 256.0),
        )


def test_mse_loss_refuses_broadcasting(device: str) -> None:
    with pytest.raises(ShapeError, match="same shape"):
        ops.mse_loss(ia.zeros(3, 1, device=device), ia.zeros(3, device=device))


@given(data=st.data())
def test_cross_entropy_with_class_indices_matches_torch(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(_floats(device)))
    index_dtype = data.draw(st.sampled_from(supported(device, ("int64", "int32"))))
    n, c = data.draw(st.integers(1, 5)), data.draw(st.integers(2, 6))
    extra = data.draw(hnp.array_shapes(min_dims=0, max_dims=1, min_side=1, max_side=3))
    logits = data.draw(arrays(dtype, (n, c, *extra), -5, 5))
    target = data.draw(arrays(index_dtype, (n, *extra), 0, c - 1))
    if data.draw(st.booleans()):
        target.flat[0] = -100
    smoothing = data.draw(st.sampled_from([0.0, 0.1]))
    for reduction in ("mean", "sum", "none"):
        expected = F.cross_entropy(
            _t(logits), _t(target.astype(np.int64)), reduction=reduction, label_smoothing=smoothing
        ).numpy()
        actual = ops.cross_entropy(
            on(device, logits), on(device, target), reduction, label_smoothing=smoothing
        )
        assert_close(actual, expected, op=f"cross_entropy {reduction}", rtol=1e-4, atol=1e-5)


@given(data=st.data())
def test_cross_entropy_with_probabilities_matches_torch(device: str, data: st.DataObject) -> None:
    dtype = data.draw(st.sampled_from(_floats(device)))
    n, c = data.draw(st.integers(1, 4)), data.draw(st.integers(2, 5))
    logits = data.draw(arrays(dtype, (n, c), -5, 5))
    probs = data.draw(arrays(dtype, (n, c), 0.0, 1.0))
    expected = F.cross_entropy(_t(logits), _t(probs)).numpy()
    assert_close(
        ops.cross_entropy(on(device, logits), on(device, probs)),
        expected,
        op="cross_entropy probs",
        rtol=1e-4,
        atol=1e-5,
    )


def test_cross_entropy_unbatched_and_errors(device: str) -> None:
    logits = np.array([0.5, 2.0, -1.0], dtype=np.float32)
    expected = F.cross_entropy(_t(logits), torch.tensor(1)).numpy()
    assert_close(
        ops.cross_entropy(on(device, logits), ia.tensor(1, device=device)), expected, op="ce 1-d"
    )
    with pytest.raises(IndexOutOfRangeError, match="target class 3 is out of range for 3 classes"):
        ops.cross_entropy(on(device, logits[None]), ia.tensor([3], device=device))
    with pytest.raises(ShapeError, match="class-index target must have shape"):
        ops.cross_entropy(on(device, logits[None]), ia.tensor([1, 2], device=device))
    with pytest.raises(InvalidArgumentError, match="reduction"):
        ops.cross_entropy(on(device, logits[None]), ia.tensor([1], device=device), reduction="avg")


def test_all_targets_ignored_gives_nan_like_torch(device: str) -> None:
    logits = np.zeros((2, 3), dtype=np.float32)
    expected = F.cross_entropy(_t(logits), torch.tensor([-100, -100])).numpy()
    assert math.isnan(float(expected))
    with np.errstate(invalid="ignore"):
        got = ops.cross_entropy(on(device, logits), ia.tensor([-100, -100], device=device)).numpy()
    assert math.isnan(float(got))


def test_integer_inputs_to_float_functions_follow_numpy(device: str) -> None:
    if "int32" not in supported(device) or "float64" not in supported(device):
        pytest.skip("needs int32 and float64")
    x = np.array([[1, 2], [3, 4]], dtype=np.int32)
    got = ops.softmax(on(device, x))
    assert got.dtype == "float64"
    assert_close(got, F.softmax(_t(x.astype(np.float64)), -1).numpy(), op="softmax int")
    assert INTS  # the helper constant stays in use
