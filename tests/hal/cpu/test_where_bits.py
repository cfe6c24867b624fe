"""The cpu backend's branch-free where (bit masks for float arrays) against np.where, bit for
bit: NaN payloads, infinities, signed zeros, subnormals, broadcasting, scalar branches."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.hal.cpu import _backend

SPECIAL = [np.nan, -np.nan, np.inf, -np.inf, -0.0, 0.0, 1e-45, -3.5]


def _values(shape: tuple[int, ...], dtype: Any, rng: np.random.Generator) -> np.ndarray:
    values = rng.standard_normal(shape).astype(dtype)
    values.reshape(-1)[: len(SPECIAL)] = SPECIAL
    # a NaN with a payload of its own: a select must copy bits, not compute
    values.reshape(-1)[len(SPECIAL)] = np.array([0x7FC00123], np.uint32).view(np.float32)[0]
    return values


CASES = [
    # (condition shape, x: shape or scalar, y: shape or scalar)
    ((64, 128), (64, 128), 0.0),  # a ReLU's backward
    ((64, 128), 0.0, (64, 128)),
    ((64, 128), (64, 128), (64, 128)),
    ((64, 1), (1, 128), (64, 128)),  # every operand broadcast
    ((128,), (64, 128), 2.5),
    ((64, 128), -0.0, (64, 128)),  # -0.0 is not the zero fast path
    ((64, 128), (64, 128), 0),  # an int scalar beside floats
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_where_is_np_where_bit_for_bit(dtype: Any, case: Any) -> None:
    cond_shape, x_spec, y_spec = case
    rng = np.random.default_rng(len(str(case)))
    cond = rng.standard_normal(cond_shape) > 0
    x = _values(x_spec, dtype, rng) if isinstance(x_spec, tuple) else x_spec
    y = _values(y_spec, dtype, rng) if isinstance(y_spec, tuple) else y_spec
    expected = np.where(cond, x, y)
    assert np.prod(expected.shape) >= _backend._SELECT_BITS_MIN  # the bit path is the one tested
    got = ops.where(
        ia.tensor(cond),
        ia.tensor(x) if isinstance(x, np.ndarray) else x,
        ia.tensor(y) if isinstance(y, np.ndarray) else y,
    ).numpy()
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got.view(np.uint8), expected.view(np.uint8))


def test_relu_gradient_keeps_nan_and_inf_where_it_passes() -> None:
    """The relu rule is where(result > 0, g, 0): an inf or NaN gradient passes on the
    active lanes and becomes exactly +0.0 on the others (a product by the mask would give
    NaN there)."""
    x = np.ones((64, 128), np.float32)
    x[:, 1::2] = -1.0  # odd columns inactive
    g = np.full((64, 128), np.inf, np.float32)
    g[0, 0] = np.nan
    t = ia.tensor(x, requires_grad=True)
    ops.relu(t).backward(ia.tensor(g))
    assert t.grad is not None
    grad = t.grad.numpy()
    assert np.isnan(grad[0, 0]) and np.isinf(grad[1, 0])
    np.testing.assert_array_equal(grad[:, 1::2].view(np.uint32), 0)
