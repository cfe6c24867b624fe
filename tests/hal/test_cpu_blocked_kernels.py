"""The CPU backend's multi-pass element-wise kernels run in cache-sized blocks on large
tensors; the blocked path must give exactly the values of the one-block path."""

from __future__ import annotations

import numpy as np
import pytest

from ipfs_accelerate.hal.cpu import _math


@pytest.mark.parametrize("name", ["erf", "gelu", "gelu_tanh", "sigmoid", "silu"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_blocked_kernels_equal_the_unblocked_kernel(name: str, dtype: str) -> None:
    rng = np.random.default_rng(0)
    # larger than one block, not a multiple of it, and a strided (transposed) view
    x = (rng.standard_normal((3 * _math.BLOCK // 256 + 7, 256)) * 4).astype(dtype).T
    blocked = getattr(_math, name)(x)
    reference = getattr(_math, f"_{name}")(np.ascontiguousarray(x))
    assert blocked.shape == x.shape and blocked.dtype == x.dtype
    np.testing.assert_array_equal(blocked, reference)
