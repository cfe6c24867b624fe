"""float16 products in f16 arithmetic where the adapter offers shader-f16 (lavapipe does)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.hal.webgpu._kernels import _matmul
from ipfs_accelerate.hal.webgpu._kernels._wgsl import WTYPES

KERNELS = ["naive", "tiled"]


@pytest.fixture
def half(gpu: Any) -> Any:
    if "shader-f16" not in gpu.device.features:
        pytest.skip(
            "adapter lacks shader-f16: float16 tensors are refused there (UnsupportedDtypeError),"
            " so there is no f16 arithmetic to test"
        )
    return gpu


@pytest.fixture
def forced(half: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    def force(variant: str) -> None:
        chosen = _matmul.fixed_kernel(variant)
        monkeypatch.setattr(half, "_choose_variant", lambda *args: chosen)

    return force


@pytest.mark.parametrize("variant", KERNELS)
def test_products_round_to_float16(forced: Any, variant: str) -> None:
    forced(variant)
    # (1 + 2^-10)^2 = 1 + 2^-9 + 2^-20: float16 keeps 1 + 2^-9, which the second product
    # cancels; f32 products would leave 2^-20 (a float16 subnormal, stored exactly)
    a = np.array([[1 + 2**-10, 1.0]], np.float16)
    b = np.array([[1 + 2**-10], [-(1 + 2**-9)]], np.float16)
    got = ops.matmul(ia.tensor(a, device="webgpu"), ia.tensor(b, device="webgpu")).numpy()
    assert got.dtype == np.float16
    assert got[0, 0] == 0.0
    wide = a.astype(np.float32) @ b.astype(np.float32)
    assert wide[0, 0] == np.float32(2**-20)  # what f32 arithmetic gives


@pytest.mark.parametrize("variant", KERNELS)
def test_float16_products_stay_close_to_float32(forced: Any, variant: str) -> None:
    forced(variant)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((2, 37, 70)).astype(np.float16)
    b = rng.standard_normal((70, 45)).astype(np.float16)
    bias = rng.standard_normal(45).astype(np.float16)
    got = ops.matmul(ia.tensor(a, device="webgpu"), ia.tensor(b, device="webgpu")).numpy()
    exact = a.astype(np.float32) @ b.astype(np.float32)
    # 16-term f16 partial sums, then f32: a few float16 steps of the row's magnitude
    scale = np.abs(a).astype(np.float32) @ np.abs(b).astype(np.float32)
    assert np.all(np.abs(got.astype(np.float32) - exact) <= 4e-3 * scale + 1e-3)
    w = np.ascontiguousarray(b.T)
    lin = ops.linear(
        ia.tensor(a, device="webgpu"),
        ia.tensor(w, device="webgpu"),
        ia.tensor(bias, device="webgpu"),
    ).numpy()
    assert lin.dtype == np.float16
    assert np.all(np.abs(lin.astype(np.float32) - exact - bias) <= 4e-3 * scale + 2e-3)


def test_only_float16_kernels_multiply_in_f16() -> None:
    half_math = {"naive": "f32(A[a_off + k] * B[", "tiled": "var<workgroup> tile_a: array<f16"}
    for variant, marker in half_math.items():
        source, _ = _matmul.matmul_source(variant, WTYPES["float32"], trans_b=False)
        assert "f16" not in source
        half_source, _ = _matmul.matmul_source(variant, WTYPES["float16"], trans_b=True)
        assert half_source.startswith("enable f16;") and marker in half_source
