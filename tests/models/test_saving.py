"""save_pretrained: quantized checkpoints in safetensors, and loading them without
re-quantizing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ipfs_accelerate.errors import CheckpointError, DtypeError, ModelError
from ipfs_accelerate.models import (
    BertModel,
    CLIPModel,
    TextEmbedder,
    WhisperForConditionalGeneration,
)
from ipfs_accelerate.models._module import Linear
from ipfs_accelerate.models.loading import read_safetensors
from ipfs_accelerate.models.saving import QUANTIZATION_KEY, write_safetensors
from ipfs_accelerate.quantization import QuantizedTensor
from ipfs_accelerate.tensor import Tensor
from tests.models._sentences import varied_sentences


def _header(path: Path) -> dict:
    raw = path.read_bytes()
    return json.loads(raw[8 : 8 + int.from_bytes(raw[:8], "little")])


def _no_quantize(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipfs_accelerate.models import _precision

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("quantize() was called while loading a quantized checkpoint")

    monkeypatch.setattr(_precision, "quantize", refuse)


@pytest.fixture(scope="module")
def minilm_int8(minilm_dir: Path) -> TextEmbedder:
    return TextEmbedder.from_pretrained(minilm_dir, "cpu", dtype="int8")


def test_saved_int8_minilm_reloads_without_requantizing(
    minilm_int8: TextEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    saved = minilm_int8.save_pretrained(tmp_path / "minilm-int8")
    for name in ("config.json", "tokenizer.json", "modules.json", "1_Pooling/config.json"):
        assert (saved / name).is_file(), name
    assert (saved / "model.safetensors").stat().st_size < 30_000_000  # fp32 is ~90 MB
    _no_quantize(monkeypatch)
    stored = read_safetensors(saved / "model.safetensors")
    for dtype in ("auto", "int8"):
        reloaded = TextEmbedder.from_pretrained(saved, "cpu", dtype=dtype)
        assert reloaded.dtype == "int8"
        original = dict(minilm_int8.model.named_weights())
        for key, value in reloaded.model.named_weights():
            if isinstance(value, QuantizedTensor):
                np.testing.assert_array_equal(value.int_values(), stored[key], err_msg=key)
                np.testing.assert_array_equal(value.int_values(), original[key].int_values())
                np.testing.assert_array_equal(value.scales, stored[f"{key}.scale"])
            else:
                np.testing.assert_array_equal(value.numpy(), original[key].numpy())
        texts = varied_sentences(16)
        np.testing.assert_array_equal(reloaded.embed(texts), minilm_int8.embed(texts))


def test_the_safetensors_layout(minilm_int8: TextEmbedder, tmp_path: Path) -> None:
    header = _header(minilm_int8.save_pretrained(tmp_path / "m") / "model.safetensors")
    metadata = header.pop("__metadata__")
    assert metadata["ipfs_accelerate.dtype"] == "int8"
    layouts = json.loads(metadata[QUANTIZATION_KEY])
    key = "encoder.layer.0.attention.self.query.weight"
    assert header[key]["dtype"] == "I8" and header[key]["shape"] == [384, 384]
    assert header[f"{key}.scale"] == {**header[f"{key}.scale"], "dtype": "F32", "shape": [384, 1]}
    assert f"{key}.zero_point" not in header
    assert {k: layouts[key][k] for k in ("bits", "axis", "block_size", "shape", "dtype")} == {
        "bits": 8, "axis": 0, "block_size": None, "shape": [384, 384], "dtype": "float32",
    }  # fmt: skip
    assert layouts["embeddings.word_embeddings.weight"]["shape"] == [30522, 384]
    assert header["embeddings.LayerNorm.weight"]["dtype"] == "F32"
    assert "embeddings.LayerNorm.weight" not in layouts


def test_int4_round_trip_packs_two_values_per_byte(
    clip_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    model = CLIPModel.from_pretrained(clip_dir, "cpu", dtype="int4")
    saved = model.save_pretrained(tmp_path / "clip-int4")
    header = _header(saved / "model.safetensors")
    key = "text_model.encoder.layers.0.mlp.fc1.weight"  # (64, 32): int4 blocks of 32
    assert header[key] == {**header[key], "dtype": "U8", "shape": [64 * 32 // 2]}
    assert header[f"{key}.scale"]["shape"] == [64, 1]
    vision = "vision_model.encoder.layers.0.mlp.fc1.weight"  # in_features 48: int8
    assert header[vision]["dtype"] == "I8"
    _no_quantize(monkeypatch)
    reloaded = CLIPModel.from_pretrained(saved, "cpu", dtype="auto")
    assert reloaded.dtype == "int4"
    before, after = dict(model.named_weights()), dict(reloaded.named_weights())
    assert before.keys() == after.keys()
    for name, value in after.items():
        if isinstance(value, QuantizedTensor):
            old = before[name]
            assert isinstance(old, QuantizedTensor)
            assert (value.bits, value.axis, value.block_size) == (
                old.bits, old.axis, old.block_size,
            )  # fmt: skip
            np.testing.assert_array_equal(value.data, old.data)


def test_whisper_keeps_its_output_projection_tied(whisper_dir: Path, tmp_path: Path) -> None:
    model = WhisperForConditionalGeneration.from_pretrained(whisper_dir, "cpu", dtype="int8")
    saved = model.save_pretrained(tmp_path / "whisper-int8")
    assert "proj_out.weight" not in _header(saved / "model.safetensors")
    reloaded = WhisperForConditionalGeneration.from_pretrained(saved, "cpu", dtype="auto")
    assert reloaded.proj_out.weight is reloaded.model.decoder.embed_tokens.weight


def test_float_dtypes_expand_a_quantized_checkpoint(bert_dir: Path, tmp_path: Path) -> None:
    model = BertModel.from_pretrained(bert_dir, "cpu", dtype="int8")
    saved = model.save_pretrained(tmp_path / "bert-int8")
    wide = BertModel.from_pretrained(saved, "cpu")  # the default, float32
    assert wide.dtype == "float32"
    for path, module in model.named_modules():
        if isinstance(module, Linear):
            target = dict(wide.named_weights())[f"{path}.weight"]
            assert isinstance(target, Tensor) and target.dtype.name == "float32"
            np.testing.assert_array_equal(target.numpy(), module.weight.dequantize_numpy())
    with pytest.raises(DtypeError, match="holds int8 weights.*not 'int4'"):
        BertModel.from_pretrained(saved, "cpu", dtype="int4")


def test_a_float_model_saves_as_a_plain_checkpoint(bert_dir: Path, tmp_path: Path) -> None:
    model = BertModel.from_pretrained(bert_dir, "cpu")
    saved = model.save_pretrained(tmp_path / "plain")
    header = _header(saved / "model.safetensors")
    assert QUANTIZATION_KEY not in header["__metadata__"]
    again = BertModel.from_pretrained(saved, "cpu")
    for (name, a), (_, b) in zip(model.named_weights(), again.named_weights(), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)


def test_a_model_saved_over_the_file_it_was_loaded_from_keeps_working(
    bert_dir: Path, tmp_path: Path
) -> None:
    """Float weights are views of the memory-mapped checkpoint; saving into the directory
    they came from writes a new file and puts it in place, so the loaded model's weights
    neither change nor vanish (truncating the mapped file in place ends the process with
    SIGBUS on the next read)."""
    directory = tmp_path / "model"
    shutil.copytree(bert_dir, directory)
    model = BertModel.from_pretrained(directory, "cpu", sharing=False)
    before = {name: w.numpy().copy() for name, w in model.named_weights()}
    half = BertModel.from_pretrained(directory, "cpu", sharing=False, dtype="float16")
    half.save_pretrained(directory)  # a file of half the size, over the mapped one
    for name, weight in model.named_weights():
        np.testing.assert_array_equal(weight.numpy(), before[name], err_msg=name)
    again = BertModel.from_pretrained(directory, "cpu", dtype="auto")
    assert again.dtype == "float16"
    assert not list(directory.glob(".*.tmp"))


def test_a_model_built_by_hand_cannot_be_saved(tmp_path: Path) -> None:
    from ipfs_accelerate.models.bert import BertConfig

    with pytest.raises(ModelError, match="not loaded from a checkpoint"):
        BertModel(BertConfig(hidden_size=8, num_attention_heads=2)).save_pretrained(tmp_path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda layouts, t, k: layouts[k].update(bits=3), "bits 3 is not 4 or 8"),
        (lambda layouts, t, k: layouts[k].update(shape=[7, 32]), "int8 x 224"),
        (lambda layouts, t, k: t.pop(f"{k}.scale"), "must both be stored"),
        (lambda layouts, t, k: t.update({f"{k}.scale": -t[f"{k}.scale"]}), "finite and positive"),
        (lambda layouts, t, k: layouts[k].update(block_size=48), "block_size 48 does not fit"),
    ],
)
def test_a_corrupt_quantized_layout_is_a_checkpoint_error(
    bert_dir: Path, tmp_path: Path, change: object, message: str
) -> None:
    saved = BertModel.from_pretrained(bert_dir, "cpu", dtype="int8").save_pretrained(tmp_path / "q")
    path = saved / "model.safetensors"
    metadata = _header(path)["__metadata__"]
    layouts = json.loads(metadata[QUANTIZATION_KEY])
    tensors = {k: np.array(v) for k, v in read_safetensors(path).items()}
    key = "encoder.layer.0.attention.self.query.weight"
    change(layouts, tensors, key)  # type: ignore[operator]
    metadata[QUANTIZATION_KEY] = json.dumps(layouts)
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    write_safetensors(broken / "model.safetensors", tensors, metadata)
    with pytest.raises(CheckpointError, match=message):
        BertModel.from_pretrained(broken, "cpu", dtype="auto")
