"""sentence-transformers module pipelines: TextEmbedder against ``SentenceTransformer.encode``
on checkpoints written by sentence-transformers' own ``save`` (a tiny seeded BERT)."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import (
    CheckpointError,
    InvalidArgumentError,
    UnsupportedArchitectureError,
)
from ipfs_accelerate.models import TextEmbedder

from ._checkpoints import CORPUS

pytest.importorskip("sentence_transformers")

TEXTS = [*CORPUS[:6], "hello", "a cat", "the dog runs on the mat and the cat eats bread"]


def _cosines(a: np.ndarray[Any, Any], b: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(axis=1))


def _save_st(
    bert_dir: Path,
    out: Path,
    pooling: str | tuple[str, ...],
    *,
    dense: list[tuple[int, Any]] | None = None,
    normalize: bool = False,
    include_prompt: bool = True,
    prompts: dict[str, str] | None = None,
    default_prompt_name: str | None = None,
    seed: int = 0,
) -> Any:
    """A SentenceTransformer of ``bert_dir`` with the given modules, saved to ``out``."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Dense, Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        transformer = Transformer(str(bert_dir), max_seq_length=32)
        modules: list[Any] = [
            transformer,
            Pooling(32, pooling_mode=pooling, include_prompt=include_prompt),
        ]
        width = 32 * (1 if isinstance(pooling, str) else len(pooling))
        for size, act in dense or []:
            layer = Dense(width, size, activation_function=act)
            with torch.no_grad():  # a scale that keeps tanh/sigmoid away from saturation
                layer.linear.weight.mul_(0.5)
            modules.append(layer)
            width = size
        if normalize:
            modules.append(Normalize())
        model = SentenceTransformer(
            modules=modules,
            device="cpu",
            prompts=prompts,
            default_prompt_name=default_prompt_name,
        )
        model.save(str(out))
    return model


def _encode(model: Any, texts: list[str], **kwargs: Any) -> np.ndarray[Any, Any]:
    return np.asarray(model.encode(texts, convert_to_numpy=True, **kwargs))


@pytest.mark.parametrize(
    "pooling",
    ["mean", "cls", "max", "lasttoken", "weightedmean", "mean_sqrt_len_tokens"],
)
def test_each_pooling_mode_with_dense_and_normalize(
    bert_dir: Path, tmp_path: Path, pooling: str
) -> None:
    import torch

    reference = _save_st(
        bert_dir, tmp_path / "st", pooling, dense=[(16, torch.nn.Tanh())], normalize=True
    )
    embedder = TextEmbedder.from_pretrained(tmp_path / "st", device="cpu", sharing=False)
    assert embedder.pooling == pooling and embedder.dimension == 16
    assert embedder.modules.normalize and len(embedder.modules.dense) == 1
    ours = embedder.embed(TEXTS, batch_size=4, normalize=False)
    theirs = _encode(reference, TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 16)
    assert _cosines(ours, theirs).min() >= 0.9999
    # Normalize ran inside the pipeline: unit rows without normalize=True
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_save_pretrained_keeps_the_module_pipeline(bert_dir: Path, tmp_path: Path) -> None:
    import torch

    _save_st(bert_dir, tmp_path / "st", "cls", dense=[(16, torch.nn.Tanh())], normalize=True)
    embedder = TextEmbedder.from_pretrained(tmp_path / "st", device="cpu", sharing=False)
    embedder.save_pretrained(tmp_path / "copy")
    again = TextEmbedder.from_pretrained(tmp_path / "copy", device="cpu", sharing=False)
    assert again.pooling == "cls" and again.dimension == 16
    np.testing.assert_allclose(again.embed(TEXTS), embedder.embed(TEXTS), atol=1e-6)


def test_concatenated_pooling_modes_and_two_dense_layers(bert_dir: Path, tmp_path: Path) -> None:
    import torch

    modes = ("cls", "mean", "max")
    reference = _save_st(
        bert_dir,
        tmp_path / "st",
        modes,
        dense=[(24, torch.nn.ReLU()), (8, torch.nn.Identity())],
    )
    embedder = TextEmbedder.from_pretrained(tmp_path / "st", device="cpu", sharing=False)
    assert embedder.pooling == "cls+mean+max" and embedder.dimension == 8
    ours = embedder.embed(TEXTS, normalize=False)
    theirs = _encode(reference, TEXTS)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    assert _cosines(ours, theirs).min() >= 0.9999


def test_a_plain_transformers_checkpoint_is_mean_pooled(bert_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        reference = SentenceTransformer(str(bert_dir), device="cpu")
    embedder = TextEmbedder.from_pretrained(bert_dir, device="cpu", sharing=False)
    assert embedder.pooling == "mean" and not embedder.modules.dense
    ours = embedder.embed(TEXTS)
    theirs = _encode(reference, TEXTS, normalize_embeddings=True)
    assert _cosines(ours, theirs).min() >= 0.9999


def test_legacy_pooling_flags_read_as_the_same_modes(bert_dir: Path, tmp_path: Path) -> None:
    """3.x-5.x wrote one ``pooling_mode_*`` flag per mode and the Dense/Normalize types under
    ``sentence_transformers.models``; the same weights give the same vectors."""
    reference = _save_st(bert_dir, tmp_path / "st", ("cls", "weightedmean"))
    pooling_config = tmp_path / "st" / "1_Pooling" / "config.json"
    pooling_config.write_text(
        json.dumps(
            {
                "word_embedding_dimension": 32,
                "pooling_mode_cls_token": True,
                "pooling_mode_mean_tokens": False,
                "pooling_mode_max_tokens": False,
                "pooling_mode_mean_sqrt_len_tokens": False,
                "pooling_mode_weightedmean_tokens": True,
                "pooling_mode_lasttoken": False,
                "include_prompt": True,
            }
        )
    )
    modules_file = tmp_path / "st" / "modules.json"
    modules = json.loads(modules_file.read_text())
    for entry in modules:
        entry["type"] = "sentence_transformers.models." + entry["type"].rsplit(".", 1)[-1]
    modules_file.write_text(json.dumps(modules))
    embedder = TextEmbedder.from_pretrained(tmp_path / "st", device="cpu", sharing=False)
    assert embedder.modules.pooling == ("cls", "weightedmean")
    ours = embedder.embed(TEXTS, normalize=False)
    np.testing.assert_allclose(ours, _encode(reference, TEXTS), atol=1e-4)


@pytest.mark.parametrize("include_prompt", [True, False])
def test_prompts_by_name_default_and_text(
    bert_dir: Path, tmp_path: Path, include_prompt: bool
) -> None:
    prompts = {"query": "a photo of", "document": ""}
    reference = _save_st(
        bert_dir,
        tmp_path / "st",
        "mean",
        include_prompt=include_prompt,
        prompts=prompts,
        default_prompt_name="query",
    )
    embedder = TextEmbedder.from_pretrained(tmp_path / "st", device="cpu", sharing=False)
    assert embedder.prompts == prompts
    assert embedder.modules.include_prompt is include_prompt
    for kwargs in ({}, {"prompt_name": "query"}, {"prompt_name": "document"}, {"prompt": "the"}):
        ours = embedder.embed(TEXTS, normalize=False, **kwargs)  # type: ignore[arg-type]
        theirs = _encode(reference, TEXTS, **kwargs)
        assert _cosines(ours, theirs).min() >= 0.9999, kwargs
        np.testing.assert_allclose(ours, theirs, atol=1e-4)
    # the default prompt changes the vectors: it is really applied
    plain = embedder.embed(TEXTS, prompt_name="document")
    assert not np.allclose(embedder.embed(TEXTS), plain, atol=1e-3)
    with pytest.raises(InvalidArgumentError, match="'passage'.*query"):
        embedder.embed(TEXTS, prompt_name="passage")
    with pytest.raises(InvalidArgumentError, match="not both"):
        embedder.embed(TEXTS, prompt_name="query", prompt="x")


def test_truncate_dim_on_load_and_per_call(bert_dir: Path, tmp_path: Path) -> None:
    import torch

    reference = _save_st(bert_dir, tmp_path / "st", "mean", dense=[(16, torch.nn.Tanh())])
    embedder = TextEmbedder.from_pretrained(
        tmp_path / "st", device="cpu", sharing=False, truncate_dim=8
    )
    assert embedder.dimension == 8
    ours = embedder.embed(TEXTS)
    theirs = _encode(reference, TEXTS, truncate_dim=8, normalize_embeddings=True)
    assert ours.shape == theirs.shape == (len(TEXTS), 8)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    four = embedder.embed(TEXTS, truncate_dim=4, normalize=False)
    np.testing.assert_allclose(four, _encode(reference, TEXTS, truncate_dim=4), atol=1e-4)
    for bad in (0, -1, 17, 2.5, True):
        with pytest.raises(InvalidArgumentError, match="truncate_dim"):
            embedder.embed(TEXTS, truncate_dim=bad)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"truncate_dim.*\[1, 16\].*99"):
        TextEmbedder.from_pretrained(tmp_path / "st", device="cpu", sharing=False, truncate_dim=99)


def _copy(bert_dir: Path, tmp_path: Path, pooling: str = "mean") -> Path:
    _save_st(bert_dir, tmp_path / "st", pooling)
    return tmp_path / "st"


def test_an_unknown_module_type_is_named(bert_dir: Path, tmp_path: Path) -> None:
    path = _copy(bert_dir, tmp_path)
    modules = json.loads((path / "modules.json").read_text())
    modules.append(
        {
            "idx": 2,
            "name": "2",
            "path": "2_LayerNorm",
            "type": "sentence_transformers.models.LayerNorm",
        }
    )
    (path / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(
        UnsupportedArchitectureError, match="sentence_transformers.models.LayerNorm"
    ):
        TextEmbedder.from_pretrained(path, device="cpu", sharing=False)


def test_an_unknown_pooling_mode_is_named(bert_dir: Path, tmp_path: Path) -> None:
    path = _copy(bert_dir, tmp_path)
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 32, "pooling_mode": "median"})
    )
    with pytest.raises(UnsupportedArchitectureError, match="'median'"):
        TextEmbedder.from_pretrained(path, device="cpu", sharing=False)


def test_a_dense_layer_of_the_wrong_size_is_refused(bert_dir: Path, tmp_path: Path) -> None:
    import torch

    _save_st(bert_dir, tmp_path / "st", ("cls", "mean"), dense=[(16, torch.nn.Tanh())])
    path = tmp_path / "st"
    # the encoder gives 64 (two modes of 32); make Pooling give 32: the Dense expects 64
    (path / "1_Pooling" / "config.json").write_text(
        json.dumps({"embedding_dimension": 32, "pooling_mode": "mean"})
    )
    with pytest.raises(CheckpointError, match="in_features 64.*32-dimensional"):
        TextEmbedder.from_pretrained(path, device="cpu", sharing=False)


def test_pickled_dense_weights_are_refused(bert_dir: Path, tmp_path: Path) -> None:
    import torch

    _save_st(bert_dir, tmp_path / "st", "mean", dense=[(16, torch.nn.Tanh())])
    dense = tmp_path / "st" / "2_Dense"
    (dense / "model.safetensors").unlink()
    (dense / "pytorch_model.bin").write_bytes(b"not read")
    with pytest.raises(CheckpointError, match="never unpickled"):
        TextEmbedder.from_pretrained(tmp_path / "st", device="cpu", sharing=False)


def test_a_cross_encoder_is_not_an_embedder(cross_encoder_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(cross_encoder_dir, tmp_path / "ce")
    with pytest.raises(UnsupportedArchitectureError, match="Reranker"):
        TextEmbedder.from_pretrained(tmp_path / "ce", device="cpu", sharing=False)


def test_every_backend_runs_the_module_pipeline(
    bert_dir: Path, tmp_path: Path, device: str
) -> None:
    """Concatenated modes, a Dense layer, Normalize and a prompt left out of the pooling, on
    each backend (the pooling weights reach a graph backend as float32)."""
    import torch

    modes = ("cls", "max", "weightedmean", "lasttoken", "mean_sqrt_len_tokens")
    reference = _save_st(
        bert_dir,
        tmp_path / "st",
        modes,
        dense=[(16, torch.nn.Tanh())],
        normalize=True,
        include_prompt=False,
        prompts={"query": "a photo of "},
    )
    embedder = TextEmbedder.from_pretrained(tmp_path / "st", device=device, sharing=False)
    ours = embedder.embed(TEXTS, normalize=False, prompt_name="query")
    theirs = _encode(reference, TEXTS, prompt_name="query")
    np.testing.assert_allclose(ours, theirs, atol=1e-3 if device == "webgpu" else 1e-4)


def test_an_encoder_without_packed_runs_padded_batches(
    bert_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The encoder contract makes ``packed`` optional (only BERT has it): without it, the
    embedder runs the padded forward and gets the same vectors."""
    embedder = TextEmbedder.from_pretrained(bert_dir, device="cpu", sharing=False)
    expected = embedder.embed(TEXTS, batch_size=4)
    model = embedder.model
    calls: list[tuple[int, ...]] = []

    class PaddedOnly:
        """An encoder with the contract's call and config, and no ``packed``."""

        config = model.config
        max_input_tokens = model.max_input_tokens

        def __call__(self, ids: Any, *args: Any, pool: bool = True) -> Any:
            calls.append(tuple(ids.shape))
            return model(ids, *args, pool=pool)

    monkeypatch.setattr(embedder, "model", PaddedOnly())
    np.testing.assert_allclose(embedder.embed(TEXTS, batch_size=4), expected, atol=1e-5)
    assert calls and all(rows <= 4 for rows, _ in calls)
