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
from ipfs_accelerate.tensor import Tensor

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
        assert isinstance(q, QuantizedTensor), path
        assert (q.bits, q.axis, q.block_size, q.symmetric) == (8, 0, None, True), path
        assert q.scales.shape == (q.shape[0], 1)
        expected = quantize(_source_weight(directory, model, f"{path}.weight"), bits=8, axis=0)
        np.testing.assert_array_equal(q.int_values(), expected.int_values(), err_msg=path)
        if linear.has_bias:
            assert isinstance(linear.bias, Tensor) and linear.bias.dtype.name == "float32"
    for path, module in model.named_modules():
        if isinstance(module, LayerNorm):
            assert module.weight.dtype.name == "float32", path
        if isinstance(module, Embedding):
            key = f"{path}.weight"
            if key in model.quantizable_embeddings:
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
