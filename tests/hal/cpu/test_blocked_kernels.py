"""The CPU backend's multi-pass element-wise kernels run in cache-sized blocks on large
tensors; the blocked path must give exactly the values of the one-block path."""

from __future__ import annotations

import numpy as np
import pytest

from ipfs_accelerate.hal.cpu import _math, _mkl


@pytest.mark.parametrize("name", ["erf", "gelu", "gelu_tanh", "sigmoid", "silu"])
@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_blocked_kernels_equal_the_unblocked_kernel(name: str, dtype: str) -> None:
    rng = np.random.default_rng(0)
    # larger than one block, not a multiple of it, and a strided (transposed) view
    x = (rng.standard_normal((3 * _math.BLOCK // 256 + 7, 256)) * 4).astype(dtype).T
    blocked = getattr(_math, name)(x)
    reference = getattr(_math, f"_{name}")(np.ascontiguousarray(x))
    if name == "gelu" and dtype == "float32" and _mkl.enabled():
        # float32 GELU through MKL's normal CDF (hal/cpu/_mkl.py) in blocks: the same values
        # as one call over the whole array
        reference = np.empty_like(np.ascontiguousarray(x))
        _math._gelu_cdf(np.ascontiguousarray(x), reference)
    assert blocked.shape == x.shape and blocked.dtype == x.dtype
    np.testing.assert_array_equal(blocked, reference)


def test_float32_erf_and_gelu_are_accurate_and_saturate_exactly() -> None:
    import math

    tiny = np.logspace(-30, 1, 500)
    x32 = np.concatenate([np.linspace(-12, 12, 200_001), tiny, -tiny]).astype(np.float32)
    x64 = x32.astype(np.float64)
    reference = np.array([math.erf(v) for v in x64])
    assert np.max(np.abs(_math.erf(x32) - reference)) < 2e-7
    gelu_reference = 0.5 * x32 * (1 + np.array([math.erf(v / math.sqrt(2)) for v in x64]))
    assert np.max(np.abs(_math.gelu(x32) - gelu_reference)) < 1e-6
    big = np.array([np.inf, -np.inf, 1e30, -1e30, 40.0, -40.0], dtype=np.float32)
    np.testing.assert_array_equal(_math.erf(big), [1, -1, 1, -1, 1, -1])
    np.testing.assert_array_equal(_math.gelu(big[2:]), [big[2], 0, big[4], 0])  # x, or exactly 0
    assert np.isnan(_math.erf(np.array([np.nan], np.float32)))[0]


@pytest.mark.parametrize(
    ("q_shape", "kv_shape", "dtype"),
    [
        ((1, 6, 1500, 64), (1, 6, 1500, 64), "float32"),  # Whisper-tiny's encoder
        ((2, 3, 700, 32), (2, 3, 600, 32), "float32"),  # several batches, rows not a block
        ((2, 4, 600, 16), (1, 1, 600, 16), "float32"),  # keys and values broadcast
        ((1, 2, 520, 8), (1, 2, 520, 8), "float64"),
    ],
)
def test_long_unmasked_attention_in_query_blocks_matches_torch(
    q_shape: tuple[int, ...],
    kv_shape: tuple[int, ...],
    dtype: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Unmasked attention over long sources runs a block of queries of one head at a time
    (hal/cpu/_backend.py _attention_by_rows): the same values as torch's, and as this
    backend's whole-array path, for every batch, head and block."""
    torch = pytest.importorskip("torch")
    from ipfs_accelerate import ops
    from ipfs_accelerate.hal.cpu import _backend
    from ipfs_accelerate.tensor import from_numpy

    rng = np.random.default_rng(1)
    q, k, v = (
        (rng.standard_normal(shape) * 2).astype(dtype) for shape in (q_shape, kv_shape, kv_shape)
    )
    source = kv_shape[-2]
    assert source >= _backend._LONG_SOURCE and q_shape[-2] * source >= _backend._LONG_SCORES
    assert q_shape[-2] % _backend._score_rows(source) != 0  # a last, shorter block
    calls: list[int] = []
    by_rows = _backend._attention_by_rows

    def spy(*args: object) -> object:
        calls.append(1)
        return by_rows(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(_backend, "_attention_by_rows", spy)
    ours = ops.scaled_dot_product_attention(
        from_numpy(q, "cpu"), from_numpy(k, "cpu"), from_numpy(v, "cpu")
    ).numpy()
    assert calls  # the blocked path ran
    expected = torch.nn.functional.scaled_dot_product_attention(
        torch.from_numpy(q), torch.from_numpy(k).expand(*q_shape[:2], *kv_shape[2:]),
        torch.from_numpy(v).expand(*q_shape[:2], *kv_shape[2:]),
    ).numpy()  # fmt: skip
    tolerance = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(ours, expected, rtol=tolerance, atol=tolerance)
