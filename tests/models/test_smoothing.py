"""SmoothQuant-style migration of int8 activations (``TextEmbedder.smooth_int8``, and by
default at an int8 load on webnn).

MiniLM migrated holds issue 16's accuracy gate (per-sentence cosine against fp32 >= 0.99
minimum, >= 0.998 mean over 256 varied sentences) on webnn and on cpu (the same rounding in
float), and on webnn its attention and FFN-input layers run ONNX Runtime's per-tensor
``DynamicQuantizeMatMul`` (the FFN output keeps the per-row ``MatMulIntegerToFloat``).
The migration itself leaves a layer's float product unchanged and shrinks the per-tensor
rounding error of an input with outlier channels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ipfs_accelerate import hal
from ipfs_accelerate.errors import DtypeError, InvalidArgumentError, ModelError
from ipfs_accelerate.models import TextEmbedder
from ipfs_accelerate.models._module import Linear
from ipfs_accelerate.models._precision import layer_kind
from ipfs_accelerate.models._smoothing import (
    SMOOTHED_INT8,
    record_input_ranges,
    smooth_int8_inputs,
)
from ipfs_accelerate.quantization import quantize
from ipfs_accelerate.tensor import from_numpy
from tests.models._sentences import varied_sentences
from tests.webnn.quantized_kernels import kernels, profiled

pytestmark = pytest.mark.timeout(300)

SENTENCES = varied_sentences(256)


@pytest.fixture(scope="module")
def reference(minilm_dir: Path) -> np.ndarray:
    return TextEmbedder.from_pretrained(minilm_dir, "cpu").embed(SENTENCES, batch_size=64)


def _gate(vectors: np.ndarray, reference: np.ndarray, what: str) -> None:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    cosines = (unit * reference).sum(axis=1)
    low, mean = float(cosines.min()), float(cosines.mean())
    print(f"{what}: cosine vs fp32 min {low:.4f} mean {mean:.5f}")
    assert low >= 0.99, f"{what}: minimum cosine {low:.4f} < 0.99"
    assert mean >= 0.998, f"{what}: mean cosine {mean:.5f} < 0.998"


def _modes(embedder: TextEmbedder) -> dict[str, str]:
    return {path: module.activations for path, module in embedder.model.named_modules()
            if isinstance(module, Linear) and module.activations != "float"}  # fmt: skip


def test_minilm_migrated_holds_the_gate_on_webnn_with_per_tensor_kernels(
    minilm_dir: Path, reference: np.ndarray, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On webnn an int8 load migrates by default (``smooth=None``: the backend multiplies
    per-tensor int8 inputs in integers), calibrated while loading."""
    backend = hal.get_backend("webnn")
    embedder = TextEmbedder.from_pretrained(minilm_dir, "webnn", dtype="int8", sharing=False)
    before = set(backend._cache)  # type: ignore[attr-defined]
    with profiled(monkeypatch, tmp_path):
        vectors = embedder.embed(SENTENCES, batch_size=64)
    migrated = [path for path, module in embedder.model.named_modules()
                if isinstance(module, Linear) and module.input_scale is not None]  # fmt: skip
    # q/k/v, attention output and FFN input of each of the six blocks
    assert len(migrated) == 6 * 5
    assert {layer_kind(path) for path in migrated} == {"attention_in", "attention_out", "ffn_in"}
    modes = _modes(embedder)
    assert len(modes) == 6 * 6
    assert modes == {path: SMOOTHED_INT8[layer_kind(path)] for path in modes}
    # one Tensor per group: q, k and v share their factors (one multiplication)
    layer = embedder.model.encoder.layer[0].attention.self
    assert layer.query.input_scale is layer.key.input_scale is layer.value.input_scale
    _gate(vectors, reference, "migrated int8 on webnn")
    ran: set[str] = set()
    for key, entry in backend._cache.items():  # type: ignore[attr-defined]
        if key not in before:
            ran |= kernels(entry.graph)
    assert {"DynamicQuantizeMatMul", "MatMulIntegerToFloat"} <= ran, ran
    assert "MatMul" not in ran, ran  # no layer fell back to a float product


def test_who_migrates_at_load(minilm_dir: Path, tmp_path: Path) -> None:
    """``smooth=False`` keeps the per-row policy on webnn; cpu (no per-tensor integer kernel)
    does not migrate by default but does with ``smooth=True``; a checkpoint saved quantized
    without migration reloads as it was saved (its weights are not requantized); a float32
    load ignores ``smooth=None`` and refuses ``smooth=True``; ``smooth`` must be a bool."""
    plain = TextEmbedder.from_pretrained(minilm_dir, "webnn", dtype="int8", sharing=False,
                                         smooth=False)  # fmt: skip
    assert set(_modes(plain).values()) == {"int8_row"} and len(_modes(plain)) == 6 * 6
    saved = plain.save_pretrained(tmp_path / "per-row")
    again = TextEmbedder.from_pretrained(saved, "webnn", dtype="auto", sharing=False)
    assert again.dtype == "int8" and _modes(again) == _modes(plain)
    np.testing.assert_array_equal(again.embed(SENTENCES[:8]), plain.embed(SENTENCES[:8]))
    on_cpu = TextEmbedder.from_pretrained(minilm_dir, "cpu", dtype="int8", sharing=False)
    assert all(m.input_scale is None for _, m in on_cpu.model.named_modules()
               if isinstance(m, Linear))  # fmt: skip
    forced = TextEmbedder.from_pretrained(minilm_dir, "cpu", dtype="int8", sharing=False,
                                          smooth=True)  # fmt: skip
    assert _modes(forced) == {path: SMOOTHED_INT8[layer_kind(path)] for path in _modes(forced)}
    assert TextEmbedder.from_pretrained(minilm_dir, "webnn", sharing=False).dtype == "float32"
    with pytest.raises(DtypeError, match="dtype='int8'"):
        TextEmbedder.from_pretrained(minilm_dir, "cpu", sharing=False, smooth=True)
    with pytest.raises(InvalidArgumentError, match="smooth"):
        TextEmbedder.from_pretrained(minilm_dir, "cpu", dtype="int8", smooth="yes")  # type: ignore[arg-type]


def test_minilm_migrated_holds_the_gate_on_cpu(minilm_dir: Path, reference: np.ndarray) -> None:
    embedder = TextEmbedder.from_pretrained(minilm_dir, "cpu", dtype="int8", sharing=False)
    assert len(embedder.smooth_int8()) == 6 * 5
    _gate(embedder.embed(SENTENCES, batch_size=64), reference, "migrated int8 on cpu")


def _outlier_layer(rng: np.random.Generator) -> tuple[Linear, np.ndarray, np.ndarray]:
    """A Linear with int8 weights and inputs whose channel 3 is 60 times the others."""
    layer = Linear(32, 16)
    weight = (rng.standard_normal((16, 32)) * 0.1).astype(np.float32)
    layer.weight = quantize(weight, bits=8, axis=0)
    layer.bias = from_numpy((rng.standard_normal(16) * 0.1).astype(np.float32), "cpu")
    x = rng.standard_normal((64, 32)).astype(np.float32)
    x[:, 3] *= 60.0
    return layer, weight, x


def test_migration_keeps_the_product_and_shrinks_the_rounding_error() -> None:
    rng = np.random.default_rng(4)
    layer, weight, x = _outlier_layer(rng)
    exact = x @ weight.T + layer.bias.numpy()
    layer.activations = "int8"
    plain = layer(from_numpy(x, "cpu")).numpy()
    ranges, groups = record_input_ranges(layer, lambda: layer(from_numpy(x, "cpu")))
    assert groups == [[""]]
    np.testing.assert_allclose(ranges[""], np.abs(x).max(axis=0), rtol=1e-6)
    assert smooth_int8_inputs(layer, ranges, groups, modes={"head": "int8"}) == [""]
    assert layer.input_scale is not None and layer.activations == "int8"
    smoothed = layer(from_numpy(x, "cpu")).numpy()
    layer.activations = "float"
    # the factors cancel: only the weights' rounding (now with the outlier inside) moves the
    # float product; inverted or misplaced factors would change it entirely
    scale = float(np.abs(exact).max())
    np.testing.assert_allclose(layer(from_numpy(x, "cpu")).numpy(), exact, atol=0.02 * scale)
    err_plain = float(np.abs(plain - exact).max())
    err_smoothed = float(np.abs(smoothed - exact).max())
    print(f"per-tensor int8 error: {err_plain:.4f} plain, {err_smoothed:.4f} migrated")
    assert err_smoothed < 0.5 * err_plain, (err_smoothed, err_plain)


def test_bad_calls_raise_typed_errors(minilm_dir: Path, tmp_path: Path) -> None:
    fp32 = TextEmbedder.from_pretrained(minilm_dir, "cpu", sharing=False)
    with pytest.raises(DtypeError, match="dtype='int8'"):
        fp32.smooth_int8()
    embedder = TextEmbedder.from_pretrained(minilm_dir, "cpu", dtype="int8", sharing=False)
    with pytest.raises(InvalidArgumentError, match="alpha"):
        embedder.smooth_int8(["a short text"], alpha=1.5)
    embedder.smooth_int8(["a short calibration text", "and another one"])
    with pytest.raises(ModelError, match="migrated already"):
        embedder.smooth_int8(["again"])


@pytest.mark.parametrize("device", ["cpu", "webnn"])
def test_a_migrated_model_saves_and_reloads_without_calibrating(
    minilm_dir: Path, tmp_path: Path, device: str
) -> None:
    """The migrated weights, each layer's input scale and every layer's activation mode are
    saved; the reloaded model embeds as the migrated one did (bit for bit on the same
    backend), q, k and v share one scale tensor again, and it is not calibrated again (a
    second smooth_int8 raises). Loaded in float32, it still multiplies its inputs back: the
    float model of its migrated weights embeds as the original float model."""
    texts = SENTENCES[:40]
    embedder = TextEmbedder.from_pretrained(minilm_dir, device, dtype="int8", sharing=False,
                                            smooth=False)  # fmt: skip
    embedder.smooth_int8()
    migrated = embedder.embed(texts)
    modes = _modes(embedder)
    saved = embedder.save_pretrained(tmp_path / "smoothed")
    again = TextEmbedder.from_pretrained(saved, device, dtype="auto", sharing=False)
    assert again.dtype == "int8" and _modes(again) == modes
    layer = again.model.encoder.layer[0].attention.self
    assert layer.query.input_scale is not None
    assert layer.query.input_scale is layer.key.input_scale is layer.value.input_scale
    np.testing.assert_array_equal(again.embed(texts), migrated)
    with pytest.raises(ModelError, match="migrated already"):
        again.smooth_int8(["again"])
    if device == "cpu":
        as_float = TextEmbedder.from_pretrained(saved, "cpu", dtype="float32", sharing=False)
        original = TextEmbedder.from_pretrained(minilm_dir, "cpu", sharing=False)
        expected = original.embed(texts)
        cosines = (as_float.embed(texts) * expected).sum(axis=1)
        assert cosines.min() > 0.998, cosines.min()  # int8 weights' rounding only
        assert _modes(as_float) == {}
        for _, module in as_float.model.named_modules():  # the scales left out: far off
            if isinstance(module, Linear):
                module.input_scale = None
        unscaled = (as_float.embed(texts) * expected).sum(axis=1)
        assert unscaled.min() < 0.99, unscaled.min()


def test_a_tampered_smoothing_record_raises(minilm_dir: Path, tmp_path: Path) -> None:
    import json

    from ipfs_accelerate.errors import CheckpointError
    from ipfs_accelerate.models.loading import read_weights, read_weights_header
    from ipfs_accelerate.models.saving import SMOOTHING_KEY, write_safetensors

    embedder = TextEmbedder.from_pretrained(minilm_dir, "cpu", dtype="int8", sharing=False)
    embedder.smooth_int8(["a short calibration text", "and another one"])
    saved = embedder.save_pretrained(tmp_path / "smoothed")
    file = saved / "model.safetensors"
    tensors = {k: np.array(v) for k, v in read_weights(saved).items()}  # copies, not maps
    _, metadata = read_weights_header(saved)
    record = json.loads(metadata[SMOOTHING_KEY])
    key = record["scales"][0] + ".input_scale"
    cases = {
        "short": ({**tensors, key: tensors[key][:-1]}, metadata, "inputs"),
        "negative": ({**tensors, key: -tensors[key]}, metadata, "not finite and positive"),
        "missing": ({k: v for k, v in tensors.items() if k != key}, metadata, "is not stored"),
        "stranger": (
            tensors,
            {**metadata, SMOOTHING_KEY: json.dumps({**record, "scales": ["nowhere.dense"]})},
            "is not stored",
        ),
        "not json": (tensors, {**metadata, SMOOTHING_KEY: "{"}, "not JSON"),
    }
    for name, (arrays, meta, match) in cases.items():
        write_safetensors(file, arrays, meta)
        with pytest.raises(CheckpointError, match=match):
            TextEmbedder.from_pretrained(saved, "cpu", dtype="auto", sharing=False)
            pytest.fail(f"the {name} record loaded")


def test_calibration_graphs_are_not_kept(minilm_dir: Path) -> None:
    """The calibration's graphs (the input ranges as extra outputs) are dropped from the webnn
    backend's cache when it ends: on MiniLM their sessions held about 230 MiB."""
    backend = hal.get_backend("webnn")
    embedder = TextEmbedder.from_pretrained(minilm_dir, "webnn", dtype="int8", sharing=False,
                                            smooth=False)  # fmt: skip
    embedder.embed(["a graph that stays"])
    before = set(backend._cache)  # type: ignore[attr-defined]
    embedder.smooth_int8()
    assert set(backend._cache) <= before  # type: ignore[attr-defined]
    embedder.embed(["a graph that stays"])  # the migrated model compiles its own
    assert len(set(backend._cache) - before) == 1  # type: ignore[attr-defined]
