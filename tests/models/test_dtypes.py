"""from_pretrained(dtype=...): which weights become what, on the seeded tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.models import (
    BertModel,
    CLIPModel,
    ImageClassifier,
    SpeechRecognizer,
    TextEmbedder,
    ViTForImageClassification,
    WhisperForConditionalGeneration,
    ZeroShotImageClassifier,
)
from ipfs_accelerate.models._module import Embedding, LayerNorm, Linear, Module
from ipfs_accelerate.models.loading import read_weights
from ipfs_accelerate.quantization import QuantizedTensor, quantize
from ipfs_accelerate.tensor import Tensor, from_numpy

FAMILIES = {
    "bert": BertModel,
    "vit": ViTForImageClassification,
    "clip": CLIPModel,
    "whisper": WhisperForConditionalGeneration,
}


def _checkpoint(request: pytest.FixtureRequest, family: str) -> Path:
    return Path(request.getfixturevalue(f"{family}_dir"))


def _linears(model: Module) -> list[tuple[str, Linear]]:
    return [(p, m) for p, m in model.named_modules() if isinstance(m, Linear)]


def _source_weight(directory: Path, model: Module, key: str) -> np.ndarray:
    weights = read_weights(directory)
    prefix = f"{model.base_model_prefix}."
    for candidate in (key, prefix + key, key.removeprefix(prefix)):
        if candidate in weights:
            return np.asarray(weights[candidate], dtype=np.float32)
    origin = model.tied_weights[key]
    return _source_weight(directory, model, origin)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_default_dtype_is_float32_everywhere(request: pytest.FixtureRequest, family: str) -> None:
    model = FAMILIES[family].from_pretrained(_checkpoint(request, family), "cpu", sharing=False)
    assert model.dtype == "float32"
    held = dict(model.named_weights())
    assert all(isinstance(v, Tensor) and v.dtype.name == "float32" for v in held.values())


def _assert_blocks_of_32(q: object, source: np.ndarray, key: str) -> None:
    """8-bit in blocks of 32 along the second axis (a model's ``int8_block_weights``)."""
    assert isinstance(q, QuantizedTensor), key
    assert (q.bits, q.axis, q.block_size, q.symmetric) == (8, 1, 32, True), key
    expected = quantize(source, bits=8, axis=1, block_size=32)
    np.testing.assert_array_equal(q.int_values(), expected.int_values(), err_msg=key)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_int8_quantizes_every_linear_per_output_channel(
    request: pytest.FixtureRequest, family: str
) -> None:
    directory = _checkpoint(request, family)
    model = FAMILIES[family].from_pretrained(directory, "cpu", dtype="int8", sharing=False)
    assert model.dtype == "int8"
    linears = _linears(model)
    assert linears
    for path, linear in linears:
        q = linear.weight
        source = _source_weight(directory, model, f"{path}.weight")
        if model.int8_float_layers and path.startswith(model.int8_float_layers):
            # kept float where int8 changes the model's output (Whisper's decoder blocks)
            assert isinstance(q, Tensor) and q.dtype.name == "float32", path
            np.testing.assert_array_equal(q.numpy(), source, err_msg=path)
            continue
        assert isinstance(q, QuantizedTensor), path
        if f"{path}.weight" in model.int8_block_weights:
            _assert_blocks_of_32(q, source, path)
            continue
        assert (q.bits, q.axis, q.block_size, q.symmetric) == (8, 0, None, True), path
        assert q.scales.shape == (q.shape[0], 1)
        expected = quantize(source, bits=8, axis=0)
        np.testing.assert_array_equal(q.int_values(), expected.int_values(), err_msg=path)
        if linear.has_bias:
            assert isinstance(linear.bias, Tensor) and linear.bias.dtype.name == "float32"
    for path, module in model.named_modules():
        if isinstance(module, LayerNorm):
            assert module.weight.dtype.name == "float32", path
        if isinstance(module, Embedding):
            key = f"{path}.weight"
            if key in model.int8_block_weights:
                _assert_blocks_of_32(module.weight, _source_weight(directory, model, key), key)
            elif key in model.quantizable_embeddings:
                assert isinstance(module.weight, QuantizedTensor), key
                assert (module.weight.bits, module.weight.axis) == (8, 0)
            else:
                assert isinstance(module.weight, Tensor), key


@pytest.mark.parametrize("family", list(FAMILIES))
def test_int4_blocks_along_in_features_and_int8_where_32_does_not_divide(
    request: pytest.FixtureRequest, family: str
) -> None:
    model = FAMILIES[family].from_pretrained(_checkpoint(request, family), "cpu", dtype="int4")
    assert model.dtype == "int4"
    seen = set()
    for path, linear in _linears(model):
        q = linear.weight
        assert isinstance(q, QuantizedTensor), path
        if linear.in_features % 32 == 0:
            assert (q.bits, q.axis, q.block_size) == (4, 1, 32), path
            assert q.scales.shape == (q.shape[0], q.shape[1] // 32)
            assert q.data.nbytes == q.shape[0] * q.shape[1] // 2
        else:
            assert (q.bits, q.axis, q.block_size) == (8, 0, None), path
        seen.add(q.bits)
    if family == "clip":  # its vision tower is 48 wide: both kinds occur
        assert seen == {4, 8}


def test_whisper_output_projection_shares_the_int8_token_table(whisper_dir: Path) -> None:
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir, "cpu", dtype="int8")
    table = model.model.decoder.embed_tokens.weight
    assert isinstance(table, QuantizedTensor)
    assert model.proj_out.weight is table


@pytest.mark.parametrize(
    ("pipeline", "family"),
    [
        (TextEmbedder, "bert"),
        (ImageClassifier, "vit"),
        (ZeroShotImageClassifier, "clip"),
        (SpeechRecognizer, "whisper"),
    ],
)
@pytest.mark.parametrize("dtype", ["int8", "int4", "float16"])
def test_every_pipeline_takes_dtype(
    request: pytest.FixtureRequest, pipeline: type, family: str, dtype: str
) -> None:
    loaded = pipeline.from_pretrained(_checkpoint(request, family), "cpu", dtype=dtype)
    assert loaded.dtype == dtype == loaded.model.dtype
    assert f"dtype={dtype!r}" in repr(loaded)
    loaded.close()


@pytest.mark.parametrize("bad", ["int2", "fp16", "", None, 8, "INT8"])
def test_bad_dtype_is_a_typed_error_naming_it(bert_dir: Path, bad: object) -> None:
    with pytest.raises(InvalidArgumentError, match=r"dtype must be one of .*got " + repr(bad)):
        TextEmbedder.from_pretrained(bert_dir, "cpu", dtype=bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- activations


def test_layer_kinds_of_the_four_families() -> None:
    from ipfs_accelerate.models._precision import layer_kind

    kinds = {
        "encoder.layer.0.attention.self.query": "attention_in",
        "vit.encoder.layer.1.attention.attention.value": "attention_in",
        "text_model.encoder.layers.0.self_attn.k_proj": "attention_in",
        "model.decoder.layers.0.encoder_attn.q_proj": "attention_in",
        "encoder.layer.0.attention.output.dense": "attention_out",
        "vision_model.encoder.layers.1.self_attn.out_proj": "attention_out",
        "encoder.layer.0.intermediate.dense": "ffn_in",
        "model.encoder.layers.0.fc1": "ffn_in",
        "encoder.layer.0.output.dense": "ffn_out",
        "text_model.encoder.layers.0.mlp.fc2": "ffn_out",
        "classifier": "head",
        "visual_projection": "head",
        "proj_out": "head",
        "pooler.dense": "head",
    }
    assert {path: layer_kind(path) for path in kinds} == kinds


def test_int8_activations_only_where_the_backend_has_the_integer_kernel(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipfs_accelerate import hal
    from ipfs_accelerate.hal.cpu import _mkl
    from ipfs_accelerate.models._precision import INT8_ACTIVATIONS, layer_kind

    cpu = type(hal.get_backend("cpu"))
    # cpu multiplies per-row int8 inputs in integers exactly where MKL's integer GEMM runs
    for name in ("dynamic_quantized_linear", "row_quantized_linear", "block_quantized_linear"):
        expected = name == "row_quantized_linear" and _mkl.int8_enabled()
        assert hal.get_backend("cpu").integer_kernel(name) is expected
    kernels: set[str] = set()
    monkeypatch.setattr(cpu, "integer_kernel", lambda self, name: name in kernels)
    plain = BertModel.from_pretrained(bert_dir, "cpu", dtype="int8")
    assert {m.activations for _, m in _linears(plain)} == {"float"}
    # the per-tensor kernel alone runs none of the default policy's (per-row) layers
    kernels.add("dynamic_quantized_linear")
    model = BertModel.from_pretrained(bert_dir, "cpu", dtype="int8")
    assert {m.activations for _, m in _linears(model)} == {"float"}
    kernels.add("row_quantized_linear")
    model = BertModel.from_pretrained(bert_dir, "cpu", dtype="int8")
    chosen = {p: m.activations for p, m in _linears(model) if m.activations != "float"}
    assert chosen == {
        p: INT8_ACTIVATIONS[layer_kind(p)]
        for p, _ in _linears(model)
        if layer_kind(p) in INT8_ACTIVATIONS
    }
    assert set(chosen.values()) == {"int8_row"}
    assert len(chosen) == 2 * 6  # q, k, v, the attention output and the FFN of both layers
    floats = BertModel.from_pretrained(bert_dir, "cpu", dtype="float32")
    assert {m.activations for _, m in _linears(floats)} == {"float"}
    # 4-bit weights keep float inputs by default (MatMulNBits computes in float), unless asked
    nibbles = BertModel.from_pretrained(bert_dir, "cpu", dtype="int4")
    assert {m.activations for _, m in _linears(nibbles)} == {"float"}
    assert nibbles.set_int8_activations("all")


def test_set_int8_activations_chooses_the_layers(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipfs_accelerate import hal
    from ipfs_accelerate.tensor import from_numpy

    # a cpu without the integer kernel (without MKL): weight-only after loading and "auto"
    cpu = type(hal.get_backend("cpu"))
    monkeypatch.setattr(cpu, "integer_kernel", lambda self, name: False)

    model = BertModel.from_pretrained(bert_dir, "cpu", dtype="int8")
    everything = {p for p, _ in _linears(model)}
    ids = from_numpy(np.array([[2, 7, 11, 5, 3]], dtype=np.int64))
    weight_only = model(ids).last_hidden_state.numpy()
    assert set(model.set_int8_activations("all")) == everything
    assert {m.activations for _, m in _linears(model)} == {"int8"}
    rounded = model(ids).last_hidden_state.numpy()
    # the inputs were really rounded: a visible, bounded change
    assert 1e-5 < np.abs(rounded - weight_only).max() < 0.1 * np.abs(weight_only).max()
    assert model.set_int8_activations("none") == []
    np.testing.assert_array_equal(model(ids).last_hidden_state.numpy(), weight_only)
    ffn = set(model.set_int8_activations(["ffn_in", "ffn_out"]))
    assert ffn and all(p.endswith(("intermediate.dense", "output.dense")) for p in ffn)
    assert model.set_int8_activations("auto") == []  # this cpu has no integer kernel
    rows = set(model.set_int8_activations("all", mode="int8_row"))
    assert rows == everything and {m.activations for _, m in _linears(model)} == {"int8_row"}
    per_row = model(ids).last_hidden_state.numpy()
    assert 1e-5 < np.abs(per_row - weight_only).max() < 0.1 * np.abs(weight_only).max()
    assert np.abs(per_row - rounded).max() > 1e-5  # another rounding than per tensor
    mixed = model.set_int8_activations({"ffn_in": "int8_row", "attention_in": "int8"})
    assert {m.activations for p, m in _linears(model) if p in mixed} == {"int8", "int8_row"}
    assert {m.activations for p, m in _linears(model) if p not in mixed} == {"float"}
    with pytest.raises(InvalidArgumentError, match="'mlp'"):
        model.set_int8_activations(["mlp"])
    with pytest.raises(InvalidArgumentError, match="'some'"):
        model.set_int8_activations("some")
    with pytest.raises(InvalidArgumentError, match="'mlp'"):
        model.set_int8_activations({"mlp": "int8"})
    with pytest.raises(InvalidArgumentError, match="mode of 'ffn_in'.*'int4'"):
        model.set_int8_activations({"ffn_in": "int4"})
    with pytest.raises(InvalidArgumentError, match="mode must be .*'float'"):
        model.set_int8_activations("all", mode="float")


# ----------------------------------------------------------------------------- float16


def _half_copy(source: Path, target: Path, torch_dtype: str) -> Path:
    """``source`` with every floating tensor stored as float16 or bfloat16."""
    import shutil

    import torch
    from safetensors.torch import save_file

    shutil.copytree(source, target)
    tensors = {
        k: torch.from_numpy(np.array(v)).to(getattr(torch, torch_dtype))
        for k, v in read_weights(source).items()
    }
    save_file(tensors, str(target / "model.safetensors"), metadata={"format": "pt"})
    return target


@pytest.fixture(scope="module", params=["float16", "bfloat16"])
def half_bert_dir(
    request: pytest.FixtureRequest, bert_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return _half_copy(bert_dir, tmp_path_factory.mktemp("half") / "bert", request.param)


def _float_bytes(model: Module) -> int:
    return sum(v.nbytes for _, v in model.named_parameters())


def test_auto_keeps_a_half_precision_checkpoint_in_float16(
    half_bert_dir: Path, bert_dir: Path
) -> None:
    wide = BertModel.from_pretrained(bert_dir, "cpu", sharing=False)
    model = BertModel.from_pretrained(half_bert_dir, "cpu", dtype="auto", sharing=False)
    assert model.dtype == "float16"
    assert {v.dtype.name for _, v in model.named_parameters()} == {"float16"}
    assert _float_bytes(model) * 2 == _float_bytes(wide)
    widened = BertModel.from_pretrained(half_bert_dir, "cpu", sharing=False)  # float32 default
    assert {v.dtype.name for _, v in widened.named_parameters()} == {"float32"}
    ids = np.array([[2, 5, 7, 9, 3]])
    from ipfs_accelerate.tensor import from_numpy

    out = model(from_numpy(ids, "cpu")).last_hidden_state.numpy().astype(np.float32)
    ref = widened(from_numpy(ids, "cpu")).last_hidden_state.numpy()
    np.testing.assert_allclose(out, ref, atol=0.05)


def test_auto_keeps_a_float32_checkpoint_in_float32(bert_dir: Path) -> None:
    model = BertModel.from_pretrained(bert_dir, "cpu", dtype="auto")
    assert model.dtype == "float32"
    assert {v.dtype.name for _, v in model.named_parameters()} == {"float32"}


def test_float16_narrows_a_float32_checkpoint(bert_dir: Path) -> None:
    embedder = TextEmbedder.from_pretrained(bert_dir, "cpu", dtype="float16", sharing=False)
    assert {v.dtype.name for _, v in embedder.model.named_parameters()} == {"float16"}
    ref = TextEmbedder.from_pretrained(bert_dir, "cpu").embed(["a cat sat on the mat"])
    out = embedder.embed(["a cat sat on the mat"])
    assert float((out * ref).sum()) > 0.999


def test_without_float16_on_the_backend_auto_is_float32_and_float16_an_error(
    half_bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipfs_accelerate.errors import DtypeError
    from ipfs_accelerate.models import _precision

    monkeypatch.setattr(_precision, "holds_float16", lambda device: False)
    model = BertModel.from_pretrained(half_bert_dir, "cpu", dtype="auto")
    assert {v.dtype.name for _, v in model.named_parameters()} == {"float32"}
    with pytest.raises(DtypeError, match="backend 'cpu' does not hold float16"):
        BertModel.from_pretrained(half_bert_dir, "cpu", dtype="float16")


@pytest.mark.parametrize("device", ["cpu", pytest.param("webnn", marks=pytest.mark.webnn)])
def test_blockwise_int8_table_lookup_equals_its_dequantized_rows(device: str) -> None:
    """Whisper's token table in 8-bit blocks of 32 serves its embedding too: a lookup gathers
    the rows' integers and their blocks' scales, the dequantized rows without expanding the
    table; a layout the lookup cannot take is a typed error."""
    rng = np.random.default_rng(4)
    values = rng.standard_normal((40, 64)).astype(np.float32)
    values[5, 40] = 30.0  # an outlier: only its own block's scale grows
    q = quantize(values, bits=8, axis=1, block_size=32)
    embedding = Embedding(40, 64)
    embedding.weight = q.to(device)
    ids = np.array([[3, 0, 39], [5, 5, 1]], dtype=np.int64)
    got = embedding(from_numpy(ids, device)).numpy()
    expected = q.dequantize_numpy()[ids]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-7)
    # finer than one scale per row where a row has an outlier
    per_row = quantize(values, bits=8, axis=0).dequantize_numpy()[ids]
    assert np.abs(got - values[ids]).max() < np.abs(per_row - values[ids]).max()
    embedding.weight = quantize(values, bits=4, axis=1, block_size=32).to(device)
    with pytest.raises(InvalidArgumentError, match="bits=4"):
        embedding(from_numpy(ids, device))
