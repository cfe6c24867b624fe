"""GPTQ and AWQ int4 checkpoints (issue 17).

The packed tensors are written here by the formats' published definitions (AutoGPTQ's
QuantLinear.pack: eight input rows per int32 word from the lowest nibble up, zero points
stored minus one in v1; AutoAWQ's WQLinear_GEMM.from_linear: eight output columns per word in
the nibble order 0, 2, 4, 6, 1, 3, 5, 7) from known integers, independently of the loader's
unpacking. Checked: the dequantized weights equal scale * (q - zero) exactly; a tiny Llama
stored as GPTQ or AWQ gives the logits of the same model stored as those float weights (ours
and transformers'); bad or unsupported checkpoints raise typed errors naming the option.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import CheckpointError, UnsupportedArchitectureError
from ipfs_accelerate.models._packed_int4 import unpack_awq, unpack_gptq
from ipfs_accelerate.models.generation import KVCache
from ipfs_accelerate.models.loading import load_model, read_weights
from ipfs_accelerate.quantization import QuantizedTensor
from ipfs_accelerate.tensor import from_numpy
from tests.models._decoder_checkpoints import decoder_checkpoint

pytestmark = pytest.mark.timeout(120)

AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7]  # AutoAWQ: the column each successive nibble holds
PROMPT = [3, 17, 40, 22, 5, 9, 100, 120, 33, 7, 8, 9]


# ----------------------------------------------------------------------------- packing


def _words(nibbles: np.ndarray) -> np.ndarray:
    """int32 words from (..., 8) nibble values, the first in the lowest bits."""
    words = np.zeros(nibbles.shape[:-1], dtype=np.uint32)
    for j in range(8):
        words |= (nibbles[..., j].astype(np.uint32) & 0xF) << np.uint32(4 * j)
    return words.view(np.int32)


def pack_gptq(q: np.ndarray, zeros: np.ndarray, v1: bool = True) -> tuple[np.ndarray, ...]:
    """AutoGPTQ's layout of values ``q`` (in, out) and ``zeros`` (groups, out)."""
    n_in, n_out = q.shape
    qweight = _words(q.reshape(n_in // 8, 8, n_out).transpose(0, 2, 1))
    stored = (zeros.astype(np.int64) - (1 if v1 else 0)) & 0xF
    qzeros = _words(stored.reshape(len(zeros), n_out // 8, 8))
    return qweight, qzeros


def pack_awq(q: np.ndarray, zeros: np.ndarray) -> tuple[np.ndarray, ...]:
    """AutoAWQ's GEMM layout of values ``q`` (in, out) and ``zeros`` (groups, out)."""

    def pack(values: np.ndarray) -> np.ndarray:
        grouped = values.reshape(len(values), -1, 8)
        return _words(grouped[:, :, AWQ_ORDER])

    return pack(q), pack(zeros)


def test_one_word_unpacks_in_each_format_order() -> None:
    word = np.array([[0x76543210]], dtype=np.uint32).view(np.int32)
    zeros = np.array([[0x11111111]], dtype=np.uint32).view(np.int32)  # v1: every zero 2
    scales = np.ones((1, 8), dtype=np.float16)
    gptq = {"l.qweight": word.reshape(1, 1).repeat(8, axis=1), "l.qzeros": zeros,
            "l.scales": scales}  # fmt: skip
    tensor = unpack_gptq("l", gptq, {"group_size": -1}, "test")
    # GPTQ: word [r, o] holds input rows 8r..8r+7 of output o, lowest nibble first
    np.testing.assert_array_equal(tensor.int_values()[0], np.arange(8))
    np.testing.assert_array_equal(tensor.zero_points, np.full((8, 1), 2))
    awq = {"l.qweight": np.repeat(word, 8, axis=0), "l.qzeros": zeros, "l.scales": scales}
    tensor = unpack_awq("l", awq, {"group_size": -1}, "test")
    # AWQ: the nibbles hold output columns 0, 2, 4, 6, 1, 3, 5, 7
    np.testing.assert_array_equal(tensor.int_values()[:, 0], [0, 4, 1, 5, 2, 6, 3, 7])
    np.testing.assert_array_equal(tensor.zero_points, np.full((8, 1), 1))


@pytest.mark.parametrize("fmt", ["gptq", "gptq_v2", "awq"])
@pytest.mark.parametrize("group", [32, 64, -1])
def test_unpacked_weights_equal_scale_times_q_minus_zero(fmt: str, group: int) -> None:
    rng = np.random.default_rng(7)
    n_in, n_out = 128, 48
    size = n_in if group == -1 else group
    q = rng.integers(0, 16, (n_in, n_out))
    low = 1 if fmt == "gptq" else 0  # v1 cannot store a zero point of 0 (it reads 16)
    zeros = rng.integers(low, 16, (n_in // size, n_out))
    scales = rng.uniform(0.001, 0.05, (n_in // size, n_out)).astype(np.float16)
    config: dict[str, Any] = {"group_size": group}
    if fmt == "awq":
        qweight, qzeros = pack_awq(q, zeros)
        tensor = unpack_awq("l", {"l.qweight": qweight, "l.qzeros": qzeros, "l.scales": scales},
                            config, "test")  # fmt: skip
    else:
        config["checkpoint_format"] = fmt
        qweight, qzeros = pack_gptq(q, zeros, v1=fmt == "gptq")
        g_idx = (np.arange(n_in) // size).astype(np.int32)
        parts = {"l.qweight": qweight, "l.qzeros": qzeros, "l.scales": scales, "l.g_idx": g_idx}
        tensor = unpack_gptq("l", parts, config, "test")
    assert isinstance(tensor, QuantizedTensor) and tensor.shape == (n_out, n_in)
    assert tensor.bits == 4 and not tensor.symmetric
    per_row = np.repeat(np.arange(n_in // size), size)
    expected = scales.astype(np.float32)[per_row] * (q - zeros[per_row]).astype(np.float32)
    np.testing.assert_array_equal(tensor.int_values(), q.T)
    np.testing.assert_array_equal(tensor.dequantize_numpy(), expected.T)


# ----------------------------------------------------------------------------- checkpoints


def _quantize_groups(weight: np.ndarray, group: int) -> tuple[np.ndarray, ...]:
    """(q, zeros, scales) of an (out, in) weight, asymmetric over ``group`` inputs: the
    quantizer's own choices do not matter here, only the integers written."""
    w = weight.T.astype(np.float32)  # (in, out), the packed formats' orientation
    blocks = w.reshape(-1, group, w.shape[1])
    low, high = np.minimum(blocks.min(1), 0), np.maximum(blocks.max(1), 0)
    scales = ((high - low) / 15).astype(np.float16)
    wide = scales.astype(np.float32)
    zeros = np.clip(np.rint(-low / wide), 1, 15).astype(np.int64)  # 1..15 fits GPTQ v1
    q = np.clip(np.rint(blocks / wide[:, None]) + zeros[:, None], 0, 15).astype(np.int64)
    return q.reshape(w.shape), zeros, scales


def _write(target: Path, tensors: dict[str, np.ndarray], config: dict[str, Any]) -> None:
    from safetensors.numpy import save_file

    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()},
              str(target / "model.safetensors"), metadata={"format": "pt"})  # fmt: skip
    (target / "config.json").write_text(json.dumps(config), encoding="utf-8")


QUANTIZED = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_packed(root: Path, method: str, group: int = 32) -> tuple[Path, Path]:
    """The tiny Llama with its decoder-layer projections as ``method`` int4 (lm_head and
    embeddings float, as AutoGPTQ and AutoAWQ leave them), and the same model with those
    projections stored as their dequantized float32 weights."""
    source = decoder_checkpoint("llama")
    packed, floats = root / method, root / f"{method}-float"
    for target in (packed, floats):
        shutil.copytree(source, target)
    config = json.loads((source / "config.json").read_text())
    weights = {k: np.array(v) for k, v in read_weights(source).items()}
    packed_tensors: dict[str, np.ndarray] = {}
    float_tensors: dict[str, np.ndarray] = {}
    for key, value in weights.items():
        if not key.endswith(".weight") or key.split(".")[-2] not in QUANTIZED:
            packed_tensors[key] = float_tensors[key] = value
            continue
        prefix = key[: -len(".weight")]
        q, zeros, scales = _quantize_groups(value, group)
        per_row = np.repeat(np.arange(len(zeros)), group)
        values = (q - zeros[per_row]).astype(np.float32)
        float_tensors[key] = (scales.astype(np.float32)[per_row] * values).T
        if method == "awq":
            qweight, qzeros = pack_awq(q, zeros)
        else:
            qweight, qzeros = pack_gptq(q, zeros)
            packed_tensors[f"{prefix}.g_idx"] = (np.arange(q.shape[0]) // group).astype(np.int32)
        packed_tensors.update({f"{prefix}.qweight": qweight, f"{prefix}.qzeros": qzeros,
                               f"{prefix}.scales": scales})  # fmt: skip
    settings = {"quant_method": method, "bits": 4, "group_size": group}
    if method == "awq":
        settings.update(version="gemm", zero_point=True)
    else:
        settings.update(sym=False, desc_act=False, checkpoint_format="gptq")
    _write(packed, packed_tensors, {**config, "quantization_config": settings})
    _write(floats, float_tensors, config)
    return packed, floats


def _logits(directory: Path, dtype: str, device: str = "cpu") -> np.ndarray:
    model, _, report = load_model(directory, device, sharing=False, dtype=dtype)
    assert report.dtype == dtype
    cache = KVCache(model.cache_shape(), 1, 32, device)
    step = cache.begin(np.ones((1, len(PROMPT)), dtype=bool))
    return np.asarray(model(from_numpy(np.array([PROMPT]), device), step).numpy())


@pytest.mark.parametrize("method", ["gptq", "awq"])
def test_a_packed_checkpoint_equals_its_float_weights(tmp_path: Path, method: str) -> None:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    packed, floats = make_packed(tmp_path, method)
    model, _, _ = load_model(packed, "cpu", sharing=False, dtype="int4")
    layer = model.model.layers[0]
    down, query = layer.mlp.down_proj.weight, layer.self_attn.q_proj.weight
    assert isinstance(down, QuantizedTensor) and down.block_size == 32  # in_features 64
    assert isinstance(query, QuantizedTensor) and query.axis == 0  # one group: per channel
    ours = _logits(packed, "int4")
    reference = _logits(floats, "float32")
    scale = float(np.abs(reference).max())
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-5 * scale)
    np.testing.assert_allclose(_logits(packed, "float32"), reference, rtol=0, atol=1e-5 * scale)
    hf = transformers.AutoModelForCausalLM.from_pretrained(floats).eval()
    with torch.no_grad():
        expected = hf(torch.tensor([PROMPT])).logits.numpy()[:, -1]
    np.testing.assert_allclose(ours.reshape(expected.shape), expected, rtol=0, atol=1e-4)


def test_a_packed_checkpoint_runs_weight_only_on_every_backend(tmp_path: Path, device: str) -> None:
    """Each backend's int4 kernels with zero points (webnn: MatMulNBits) on the unpacked
    weights; int8 activations (webnn's default for attention) are turned off to compare the
    weights alone."""
    packed, floats = make_packed(tmp_path, "gptq")
    model, _, _ = load_model(packed, device, sharing=False, dtype="int4")
    model.set_int8_activations("none")
    cache = KVCache(model.cache_shape(), 1, 32, device)
    step = cache.begin(np.ones((1, len(PROMPT)), dtype=bool))
    ours = np.asarray(model(from_numpy(np.array([PROMPT]), device), step).numpy())
    reference = _logits(floats, "float32")
    tolerance = 1e-3 if device == "webgpu" else 1e-4
    np.testing.assert_allclose(ours, reference, rtol=0, atol=tolerance)


def _rewrite(directory: Path, change_config: Any = None, change_weights: Any = None) -> Path:
    from safetensors.numpy import save_file

    config = json.loads((directory / "config.json").read_text())
    if change_config is not None:
        change_config(config["quantization_config"])
        (directory / "config.json").write_text(json.dumps(config), encoding="utf-8")
    if change_weights is not None:
        weights = {k: np.array(v) for k, v in read_weights(directory).items()}
        change_weights(weights)
        save_file(weights, str(directory / "model.safetensors"))
    return directory


def _permuted_g_idx(weights: dict[str, np.ndarray]) -> None:
    key = "model.layers.0.mlp.down_proj.g_idx"  # in_features 64: two groups to mix
    weights[key] = np.random.default_rng(0).permutation(weights[key])


def _zero_of_sixteen(weights: dict[str, np.ndarray]) -> None:
    key = "model.layers.1.mlp.up_proj.qzeros"
    weights[key] = np.full_like(weights[key], -1)  # every nibble 15: zero point 16 in v1


@pytest.mark.parametrize(
    ("method", "config", "weights", "error", "named"),
    [
        ("gptq", None, _permuted_g_idx, UnsupportedArchitectureError, "desc_act"),
        ("gptq", lambda c: c.update(bits=8), None, UnsupportedArchitectureError, "bits 8"),
        ("gptq", lambda c: c.update(checkpoint_format="marlin"), None,
         UnsupportedArchitectureError, "marlin"),
        ("gptq", lambda c: c.update(quant_method="bitsandbytes"), None,
         UnsupportedArchitectureError, "bitsandbytes"),
        ("gptq", lambda c: c.update(group_size=48), None,
         CheckpointError, "group_size 48 does not divide"),
        ("gptq", None, _zero_of_sixteen, CheckpointError, "zero point of 16"),
        ("gptq", None, lambda w: w.pop("model.layers.0.mlp.down_proj.scales"),
         CheckpointError, "down_proj.scales"),
        ("awq", lambda c: c.update(version="gemv"), None, UnsupportedArchitectureError, "gemv"),
        ("awq", lambda c: c.update(zero_point=False), None,
         UnsupportedArchitectureError, "zero_point"),
        ("awq", lambda c: c.update(group_size=16), None, CheckpointError, "qzeros"),
    ],
)  # fmt: skip
def test_bad_or_unsupported_packed_checkpoints_raise_naming_it(
    tmp_path: Path, method: str, config: Any, weights: Any, error: type[Exception], named: str
) -> None:
    packed, _ = make_packed(tmp_path, method)
    _rewrite(packed, config, weights)
    with pytest.raises(error, match=named):
        load_model(packed, "cpu", sharing=False, dtype="int4")


def test_a_gpt2_packed_checkpoint_is_refused(tmp_path: Path) -> None:
    packed, _ = make_packed(tmp_path, "gptq")
    config = json.loads((packed / "config.json").read_text())
    (packed / "config.json").write_text(json.dumps({**config, "model_type": "gpt2"}))
    with pytest.raises(UnsupportedArchitectureError, match="'gpt2'"):
        load_model(packed, "cpu", sharing=False, dtype="int4")


def test_int8_is_refused_for_an_int4_checkpoint(tmp_path: Path) -> None:
    packed, _ = make_packed(tmp_path, "awq")
    from ipfs_accelerate.errors import DtypeError

    with pytest.raises(DtypeError, match="int4"):
        load_model(packed, "cpu", sharing=False, dtype="int8")
