"""WebGPU's quantized linear: int8/int4 words unpacked in the matmul shader, every scale
layout against numpy on the dequantized weight, and the weight resident as packed bytes."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import ops
from ipfs_accelerate.quantization import QuantizedTensor, quantize

# (axis, block_size, out_features, in_features): in_features odd where no block runs along
# it, out_features never a multiple of the kernel's 32-column tile unless blocks need it
SCALE_LAYOUTS = [
    (None, None, 70, 45),  # per tensor
    (0, None, 70, 45),  # per output channel
    (1, None, 70, 45),  # per input channel: one scale per lane of a word
    (1, 32, 70, 96),  # blocks along the input features
    (1, 64, 70, 128),
    (0, 32, 96, 45),  # blocks along the output features: per-lane scales too
]


def _resident(q: QuantizedTensor) -> Any:
    def missing(_: QuantizedTensor) -> Any:
        raise AssertionError("the weight has no resident form yet")

    return q.prepared("webgpu", missing)


@pytest.mark.parametrize("symmetric", [True, False], ids=["sym", "asym"])
@pytest.mark.parametrize("bits", [8, 4])
@pytest.mark.parametrize(("axis", "block", "out", "inp"), SCALE_LAYOUTS)
def test_every_layout_matches_numpy_on_the_dequantized_weight(
    gpu: Any, bits: int, symmetric: bool, axis: int | None, block: int | None, out: int, inp: int
) -> None:
    rng = np.random.default_rng(bits * 100 + inp + out)
    w = rng.standard_normal((out, inp)).astype(np.float32)
    x = rng.standard_normal((2, 3, inp)).astype(np.float32)
    b = rng.standard_normal(out).astype(np.float32)
    q = quantize(w, bits=bits, axis=axis, block_size=block, symmetric=symmetric).to("webgpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no BackendFallbackWarning, no composed fallback
        got = ops.linear(ia.tensor(x, device="webgpu"), q, ia.tensor(b, device="webgpu"))
        values = got.numpy()
    assert got.device == "webgpu" and got.shape == (2, 3, out)
    np.testing.assert_allclose(values, x @ q.dequantize_numpy().T + b, rtol=1e-5, atol=1e-5)
    assert _resident(q).format.bits == bits  # the shader kernel ran, not a dequantized copy
    without_bias = ops.linear(ia.tensor(x, device="webgpu"), q).numpy()
    np.testing.assert_allclose(without_bias, x @ q.dequantize_numpy().T, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits", [8, 4])
def test_the_resident_weight_is_the_packed_bytes(gpu: Any, bits: int) -> None:
    rng = np.random.default_rng(7)
    w = rng.standard_normal((64, 256)).astype(np.float32)
    q = quantize(w, bits=bits, axis=0).to("webgpu")
    ops.linear(ia.tensor(np.ones((1, 256), np.float32), device="webgpu"), q).numpy()
    resident = _resident(q)
    dense = ia.tensor(w, device="webgpu")
    assert resident.words.nbytes == w.size * bits // 8 == dense._data.nbytes * bits // 32
    assert resident.words.buf.size <= dense._data.buf.size * bits // 32
    stored = gpu.dispatcher.download(resident.words, resident.words.nbytes)
    assert bytes(stored) == q.data.tobytes()
    assert resident.nbytes == resident.words.nbytes + 64 * 4  # one float32 scale per row


def test_rows_are_padded_to_whole_words(gpu: Any) -> None:
    w = np.arange(-33, 33, dtype=np.float32).reshape(2, 33)
    q = quantize(w, bits=4, axis=0, symmetric=True).to("webgpu")
    got = ops.linear(ia.tensor(np.eye(33, dtype=np.float32), device="webgpu"), q).numpy()
    np.testing.assert_allclose(got, q.dequantize_numpy().T, rtol=1e-6)
    resident = _resident(q)
    assert resident.words.nbytes == 2 * 5 * 4  # 33 int4 values need 5 words per row
    raw = np.frombuffer(gpu.dispatcher.download(resident.words, 40), np.uint8).reshape(2, 20)
    ints = q.int_values()
    low = (raw & 0x0F).astype(np.int8)
    high = (raw >> 4).astype(np.int8)
    nibbles = np.stack([low, high], axis=-1).reshape(2, 40)
    nibbles[nibbles > 7] -= 16
    np.testing.assert_array_equal(nibbles[:, :33], ints)
    assert not nibbles[:, 33:].any()  # the padding is zero


def test_the_weight_uploads_once_and_the_kernel_compiles_once(gpu: Any) -> None:
    rng = np.random.default_rng(3)
    q = quantize(rng.standard_normal((40, 64)).astype(np.float32), bits=8).to("webgpu")
    x = ia.tensor(rng.standard_normal((4, 64)).astype(np.float32), device="webgpu")
    ops.linear(x, q).numpy()
    resident = _resident(q)
    before = gpu.stats()
    ops.linear(x, q).numpy()
    after = gpu.stats()
    assert _resident(q) is resident
    assert after["pipeline_compiles"] == before["pipeline_compiles"]
    assert after["dispatches"] == before["dispatches"] + 1


def test_a_following_activation_joins_the_epilogue(gpu: Any) -> None:
    rng = np.random.default_rng(4)
    w = rng.standard_normal((24, 40)).astype(np.float32)
    x = rng.standard_normal((5, 40)).astype(np.float32)
    b = rng.standard_normal(24).astype(np.float32)
    q = quantize(w, bits=4, axis=1, block_size=None, symmetric=False).to("webgpu")
    xt, bt = ia.tensor(x, device="webgpu"), ia.tensor(b, device="webgpu")
    gpu.synchronize()
    before = gpu.stats()["dispatches"]
    pre = ops.linear(xt, q, bt)
    post = ops.relu(pre)
    assert gpu.stats()["dispatches"] == before + 1  # relu rode on the product's dispatch
    expected = x @ q.dequantize_numpy().T + b
    np.testing.assert_allclose(pre.numpy(), expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(post.numpy(), np.maximum(expected, 0), rtol=1e-5, atol=1e-5)


def test_float16_and_float64_inputs(gpu: Any) -> None:
    dtypes = {d.name for d in gpu.supported_dtypes}
    rng = np.random.default_rng(5)
    w = rng.standard_normal((20, 36)).astype(np.float32)
    x = rng.standard_normal((3, 36)).astype(np.float32)
    if "float16" in dtypes:
        q16 = quantize(w.astype(np.float16), bits=8, axis=0).to("webgpu")
        got = ops.linear(ia.tensor(x.astype(np.float16), device="webgpu"), q16)
        assert got.dtype is ia.float16
        expected = x.astype(np.float16).astype(np.float32) @ q16.dequantize_numpy().T
        np.testing.assert_allclose(got.numpy().astype(np.float32), expected, rtol=2e-3, atol=2e-2)
    if "float64" in dtypes:
        q = quantize(w, bits=4, axis=1, block_size=None).to("webgpu")
        got = ops.linear(ia.tensor(x.astype(np.float64), device="webgpu"), q)
        assert got.dtype is ia.float64
        dense = q.dequantize_numpy().astype(np.float64)
        np.testing.assert_allclose(got.numpy(), x.astype(np.float64) @ dense.T, rtol=1e-12)
