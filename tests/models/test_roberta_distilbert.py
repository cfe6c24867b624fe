"""RoBERTa, XLM-RoBERTa and DistilBERT (and their sequence-classification heads) against
transformers on tiny seeded checkpoints, on every backend.

Tolerances (max abs diff, fp32): 1e-4 on cpu and webnn, 1e-3 on webgpu. The batches mix
lengths, carry padding and hold one row at the usable maximum (for RoBERTa that is
``max_position_embeddings - pad_token_id - 1``, the positions start after the padding index).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import (
    CheckpointError,
    InvalidArgumentError,
    UnsupportedArchitectureError,
)
from ipfs_accelerate.models.loading import load_model
from ipfs_accelerate.tensor import from_numpy
from tests.models import _encoder_checkpoints as ckpt
from tests.models.test_parity import assert_close

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="session")
def roberta_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ckpt.make_roberta(tmp_path_factory.mktemp("roberta"))


@pytest.fixture(scope="session")
def xlmr_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ckpt.make_roberta(tmp_path_factory.mktemp("xlmr"), model_type="xlm-roberta")


@pytest.fixture(scope="session")
def xlmr_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ckpt.make_roberta(
        tmp_path_factory.mktemp("xlmr-cls"), model_type="xlm-roberta", classifier=True
    )


@pytest.fixture(scope="session")
def distilbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ckpt.make_distilbert(tmp_path_factory.mktemp("distilbert"))


@pytest.fixture(scope="session")
def distilbert_classifier_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return ckpt.make_distilbert(tmp_path_factory.mktemp("distilbert-cls"), classifier=True)


def _reference(directory: Path) -> Any:
    from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

    config = AutoConfig.from_pretrained(directory)
    head = any(a.endswith("ForSequenceClassification") for a in config.architectures)
    loader = AutoModelForSequenceClassification if head else AutoModel
    return loader.from_pretrained(directory).eval()


def _batch(
    config: dict[str, Any], lengths: list[int], seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded rows of ``lengths`` random non-padding tokens (bos/eos-free: every id but
    the pad id may appear, so specials are exercised too) and their attention mask."""
    rng = np.random.default_rng(seed)
    pad = int(config.get("pad_token_id", 0))
    ids = np.full((len(lengths), max(lengths)), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for row, length in enumerate(lengths):
        tokens = rng.integers(0, config["vocab_size"] - 1, size=length)
        ids[row, :length] = np.where(tokens >= pad, tokens + 1, tokens)
        mask[row, :length] = 1
    return ids, mask


def _config(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((directory / "config.json").read_text())
    return data


# ----------------------------------------------------------------------------- hidden states


@pytest.mark.parametrize("family", ["roberta", "xlm-roberta", "distilbert"])
def test_hidden_states_match_transformers(
    device: str, family: str, request: pytest.FixtureRequest
) -> None:
    directory: Path = request.getfixturevalue(
        {"roberta": "roberta_dir", "xlm-roberta": "xlmr_dir", "distilbert": "distilbert_dir"}[
            family
        ]
    )
    model, _, _ = load_model(directory, device, sharing=False)
    limit = model.max_input_tokens
    assert limit == (ckpt.ROBERTA_TOKENS if family != "distilbert" else 40)
    ids, mask = _batch(_config(directory), [limit, 7, 1, limit - 3])
    out = model(from_numpy(ids, device), from_numpy(mask, device))
    with torch.no_grad():
        ref = _reference(directory)(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        )
    assert_close(out.last_hidden_state.numpy(), ref.last_hidden_state, device, family)
    if family == "distilbert":
        assert out.pooler_output is None
    else:
        assert_close(out.pooler_output.numpy(), ref.pooler_output, device, f"{family} pooler")


def test_the_bert_calling_convention(roberta_dir: Path, distilbert_dir: Path) -> None:
    """What TextEmbedder and Reranker rely on: BertModel's call and config fields, token
    types accepted (and ignored by DistilBERT, which has none), ``pool=False``."""
    for directory in (roberta_dir, distilbert_dir):
        model, _, _ = load_model(directory, "cpu", sharing=False)
        config = model.config
        assert (config.hidden_size, config.vocab_size) == (32, _config(directory)["vocab_size"])
        assert config.pad_token_id == _config(directory)["pad_token_id"]
        assert config.max_position_embeddings == _config(directory)["max_position_embeddings"]
        ids, mask = _batch(_config(directory), [6, 3])
        args = (from_numpy(ids, "cpu"), from_numpy(mask, "cpu"))
        plain = model(*args, pool=False)
        assert plain.pooler_output is None and plain.last_hidden_state.shape == (2, 6, 32)
        typed = model(*args, token_type_ids=from_numpy(np.zeros_like(ids), "cpu"))
        np.testing.assert_array_equal(
            typed.last_hidden_state.numpy(), plain.last_hidden_state.numpy()
        )
    distil, _, _ = load_model(distilbert_dir, "cpu", sharing=False)
    ones = from_numpy(np.ones_like(ids), "cpu")
    np.testing.assert_array_equal(
        distil(*args, ones).last_hidden_state.numpy(), distil(*args).last_hidden_state.numpy()
    )


def test_roberta_positions_follow_the_padding_index_not_the_mask(xlmr_dir: Path) -> None:
    """transformers numbers RoBERTa positions from the ids (a pad id inside a row is skipped,
    a masked-out real token still counts); so do we, with a pad id that is not 1."""
    from ipfs_accelerate.models.roberta import offset_positions

    config = _config(xlmr_dir)
    pad = config["pad_token_id"]
    assert pad == 3
    ids = np.array([[0, 7, pad, 9, 2, pad], [0, 5, 6, 2, pad, pad]], dtype=np.int64)
    positions = offset_positions(from_numpy(ids, "cpu"), pad).numpy()
    assert positions.tolist() == [[4, 5, 3, 6, 7, 3], [4, 5, 6, 7, 3, 3]]
    mask = np.ones_like(ids)
    mask[0, 3] = 0  # a real token masked out: still counted, only hidden as a key
    model, _, _ = load_model(xlmr_dir, "cpu", sharing=False)
    out = model(from_numpy(ids, "cpu"), from_numpy(mask, "cpu"))
    with torch.no_grad():
        ref = _reference(xlmr_dir)(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        )
    assert_close(out.last_hidden_state.numpy(), ref.last_hidden_state, "cpu", "positions")


@pytest.mark.parametrize("family", ["roberta", "distilbert"])
def test_packed_forward_matches_transformers_at_every_real_token(
    device: str, family: str, request: pytest.FixtureRequest
) -> None:
    from ipfs_accelerate.models.bert import PackedTokens

    directory: Path = request.getfixturevalue(f"{family}_dir")
    model, _, _ = load_model(directory, device, sharing=False)
    ids, mask = _batch(_config(directory), [5, model.max_input_tokens, 2, 11], seed=3)
    batch = PackedTokens.from_batch(ids, mask)
    with torch.no_grad():
        ref = _reference(directory)(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        ).last_hidden_state.numpy()
    real = mask.astype(bool)
    assert_close(model.packed(batch).numpy(), ref[real], device, f"{family} packed")
    padded = model.packed(batch, padded=True).numpy()
    assert_close(padded[real], ref[real], device, f"{family} packed, padded layout")


def test_distilbert_sinusoidal_positions(tmp_path: Path) -> None:
    from transformers.models.distilbert.modeling_distilbert import create_sinusoidal_embeddings

    directory = ckpt.make_distilbert(tmp_path / "sin", sinusoidal=True)
    assert _config(directory)["sinusoidal_pos_embds"] is True
    model, _, _ = load_model(directory, "cpu", sharing=False)
    table = model.embeddings.position_embeddings.weight.numpy()
    expected = create_sinusoidal_embeddings(40, 32, torch.empty(40, 32)).numpy()
    np.testing.assert_allclose(table, expected, atol=1e-6)
    ids, mask = _batch(_config(directory), [40, 4], seed=5)
    out = model(from_numpy(ids, "cpu"), from_numpy(mask, "cpu"))
    with torch.no_grad():
        ref = _reference(directory)(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        )
    assert_close(out.last_hidden_state.numpy(), ref.last_hidden_state, "cpu", "sinusoidal")


def test_texts_through_the_checkpoint_tokenizer(roberta_dir: Path) -> None:
    """The RoBERTa tokenizer pads with <pad> (id 1): padded rows equal unpadded ones."""
    from ipfs_accelerate.models.preprocessing.text import TextTokenizer

    tokenizer = TextTokenizer.from_checkpoint(roberta_dir)
    encoded = tokenizer(
        ["a photo of a cat", "hello", "the quick brown fox jumps over the lazy dog"]
    )
    assert tokenizer.pad_id == 1 and encoded.attention_mask.min() == 0
    model, _, _ = load_model(roberta_dir, "cpu", sharing=False)
    padded = model(from_numpy(encoded.input_ids, "cpu"), from_numpy(encoded.attention_mask, "cpu"))
    for row, count in enumerate(encoded.attention_mask.sum(axis=1)):
        alone = model(from_numpy(encoded.input_ids[row : row + 1, :count], "cpu"))
        np.testing.assert_allclose(
            padded.last_hidden_state.numpy()[row, :count],
            alone.last_hidden_state.numpy()[0],
            atol=1e-5,
        )


# ----------------------------------------------------------------------------- classification


@pytest.mark.parametrize("family", ["xlm-roberta", "distilbert"])
def test_classification_logits_match_transformers(
    device: str, family: str, request: pytest.FixtureRequest
) -> None:
    from ipfs_accelerate.models.distilbert import DistilBertForSequenceClassification
    from ipfs_accelerate.models.roberta import RobertaForSequenceClassification

    name = {"xlm-roberta": "xlmr_classifier_dir", "distilbert": "distilbert_classifier_dir"}
    directory: Path = request.getfixturevalue(name[family])
    model, _, report = load_model(directory, device, sharing=False)
    expected_class = (
        DistilBertForSequenceClassification
        if family == "distilbert"
        else RobertaForSequenceClassification
    )
    assert type(model) is expected_class
    assert model.config.num_labels == (2 if family == "distilbert" else 3)
    if family != "distilbert":
        assert report.removed == ["roberta.pooler"]
    ids, mask = _batch(_config(directory), [model.max_input_tokens, 3, 9], seed=7)
    logits = model(from_numpy(ids, device), from_numpy(mask, device))
    with torch.no_grad():
        ref = _reference(directory)(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        ).logits
    assert logits.shape == (3, model.config.num_labels)
    assert_close(logits.numpy(), ref, device, f"{family} logits")
    from ipfs_accelerate.models.bert import PackedTokens

    packed = model.packed(PackedTokens.from_batch(ids, mask))
    assert_close(packed.numpy(), ref, device, f"{family} packed logits")


def test_model_class_follows_architectures_and_keys(tmp_path: Path, roberta_dir: Path) -> None:
    from transformers import RobertaForMaskedLM

    from ipfs_accelerate.models import distilbert, loading, roberta

    # a masked-LM checkpoint (roberta-base's shape) loads as the base encoder, its head ignored
    masked = tmp_path / "mlm"
    RobertaForMaskedLM.from_pretrained(roberta_dir).save_pretrained(masked)
    model, _, report = load_model(masked, "cpu", sharing=False)
    assert type(model) is roberta.RobertaModel
    assert any(k.startswith("lm_head.") for k in report.ignored)
    # the head from the keys alone when architectures are missing
    cls_config = {"model_type": "roberta"}
    weights = {"classifier.out_proj.weight": None}
    assert loading.model_class_for(cls_config, weights) is roberta.RobertaForSequenceClassification
    assert loading.model_class_for(cls_config, {}) is roberta.RobertaModel
    assert (
        loading.model_class_for({"model_type": "distilbert"}, {"pre_classifier.weight": None})
        is distilbert.DistilBertForSequenceClassification
    )
    assert (
        loading.model_class_for(
            {"model_type": "distilbert", "architectures": ["DistilBertForSequenceClassification"]}
        )
        is distilbert.DistilBertForSequenceClassification
    )
    assert loading.model_class_for({"model_type": "distilbert"}) is distilbert.DistilBertModel
    # a base checkpoint has no classifier: asking for the head is a CheckpointError
    with pytest.raises(CheckpointError, match="classifier"):
        roberta.RobertaForSequenceClassification.from_pretrained(roberta_dir, "cpu")


def test_distilbert_config_answers_to_bert_names(distilbert_dir: Path) -> None:
    from ipfs_accelerate.models.distilbert import DistilBertConfig

    config = DistilBertConfig.from_dict(_config(distilbert_dir))
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (32, 4, 2)
    assert config.vocab_size == _config(distilbert_dir)["vocab_size"]
    assert config.max_position_embeddings == config.max_input_tokens == 40
    assert config.pad_token_id == 0
    aliased = DistilBertConfig.from_dict(
        {"model_type": "distilbert", "hidden_size": 64, "n_heads": 2}
    )
    assert aliased.dim == 64


# ----------------------------------------------------------------------------- refusals


def _edited(source: Path, tmp_path: Path, **changes: Any) -> Path:
    target = tmp_path / "edited"
    shutil.copytree(source, target)
    config = _config(source)
    config.update(changes)
    (target / "config.json").write_text(json.dumps(config))
    return target


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"position_embedding_type": "relative_key"}, "position_embedding_type"),
        ({"is_decoder": True}, "is_decoder"),
        ({"add_cross_attention": True, "is_decoder": False}, "add_cross_attention"),
        ({"hidden_act": "mish"}, "mish"),
        ({"num_attention_heads": 5}, "num_attention_heads"),
    ],
)
def test_roberta_unsupported_options_are_named(
    roberta_dir: Path, tmp_path: Path, changes: dict[str, Any], named: str
) -> None:
    with pytest.raises(UnsupportedArchitectureError, match=named):
        load_model(_edited(roberta_dir, tmp_path, **changes), "cpu", sharing=False)


@pytest.mark.parametrize(
    ("changes", "named"),
    [({"activation": "mish"}, "mish"), ({"n_heads": 5}, "n_heads")],
)
def test_distilbert_unsupported_options_are_named(
    distilbert_dir: Path, tmp_path: Path, changes: dict[str, Any], named: str
) -> None:
    with pytest.raises(UnsupportedArchitectureError, match=named):
        load_model(_edited(distilbert_dir, tmp_path, **changes), "cpu", sharing=False)


def test_bad_configs_and_inputs_raise_typed_errors(roberta_dir: Path, distilbert_dir: Path) -> None:
    from ipfs_accelerate.models.distilbert import DistilBertConfig, DistilBertModel
    from ipfs_accelerate.models.loading import model_class_for
    from ipfs_accelerate.models.roberta import RobertaConfig, RobertaModel

    base = _config(roberta_dir)
    with pytest.raises(CheckpointError, match="pad_token_id 41"):
        RobertaConfig.from_dict({**base, "pad_token_id": 41})
    with pytest.raises(CheckpointError, match="num_labels 2 disagrees"):
        RobertaConfig.from_dict({**base, "num_labels": 2})  # id2label has 3
    with pytest.raises(CheckpointError, match="num_labels"):
        DistilBertConfig.from_dict({"model_type": "distilbert", "num_labels": 0})
    with pytest.raises(UnsupportedArchitectureError, match="'bert'"):
        RobertaConfig.from_dict({**base, "model_type": "bert"})
    with pytest.raises(UnsupportedArchitectureError, match="'xlm-roberta-xl'"):
        model_class_for({"model_type": "xlm-roberta-xl"})  # pre-layer-norm: another family
    roberta = RobertaModel.from_pretrained(roberta_dir, "cpu")
    too_long = np.full((1, ckpt.ROBERTA_TOKENS + 1), 5, dtype=np.int64)
    with pytest.raises(InvalidArgumentError, match="41 exceeds the 40 usable positions"):
        roberta(from_numpy(too_long, "cpu"))
    with pytest.raises(InvalidArgumentError, match="input_ids must be"):
        roberta(from_numpy(too_long[0], "cpu"))
    distil = DistilBertModel.from_pretrained(distilbert_dir, "cpu")
    with pytest.raises(InvalidArgumentError, match="41 exceeds max_position_embeddings 40"):
        distil(from_numpy(too_long, "cpu"))


# ----------------------------------------------------------------------------- precision, hal


@pytest.mark.parametrize("family", ["roberta", "distilbert", "xlm-roberta-classifier"])
def test_int8_and_int4_loads_stay_close_to_float32(
    device: str, family: str, request: pytest.FixtureRequest
) -> None:
    """On a backend with an integer kernel (WebNN) the attention linears also quantize their
    inputs (the loader's activation policy); the bounds hold there too."""
    from ipfs_accelerate.models._precision import quantized_keys
    from ipfs_accelerate.quantization import QuantizedTensor

    name = {"roberta": "roberta_dir", "distilbert": "distilbert_dir",
            "xlm-roberta-classifier": "xlmr_classifier_dir"}  # fmt: skip
    directory: Path = request.getfixturevalue(name[family])
    full, _, _ = load_model(directory, device, sharing=False)
    ids, mask = _batch(_config(directory), [full.max_input_tokens, 6, 13], seed=9)
    args = (from_numpy(ids, device), from_numpy(mask, device))

    def flat(out: Any) -> np.ndarray:
        if hasattr(out, "last_hidden_state"):
            return np.asarray(out.last_hidden_state.numpy())[mask.astype(bool)]
        return np.asarray(out.numpy())

    reference = flat(full(*args))
    for dtype in ("int8", "int4"):
        model, _, report = load_model(directory, device, sharing=False, dtype=dtype)
        assert report.dtype == dtype
        kinds = quantized_keys(model)
        assert "embedding" in kinds.values()
        assert all(isinstance(w, QuantizedTensor) for k, w in model.named_weights() if k in kinds)
        ours = flat(model(*args))
        if ours.ndim == 2 and ours.shape[1] > 3:  # hidden states: cosine per token
            cosine = np.sum(ours * reference, axis=1) / (
                np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
            )
            assert cosine.min() >= (0.99 if dtype == "int8" else 0.95), (dtype, cosine.min())
        else:  # logits
            assert np.max(np.abs(ours - reference)) <= (0.05 if dtype == "int8" else 0.2)


def test_float16_load_where_the_backend_holds_it(device: str, roberta_dir: Path) -> None:
    from ipfs_accelerate.errors import DtypeError
    from ipfs_accelerate.models._precision import holds_float16

    if not holds_float16(device):
        with pytest.raises(DtypeError, match="float16"):
            load_model(roberta_dir, device, sharing=False, dtype="float16")
        return
    model, _, report = load_model(roberta_dir, device, sharing=False, dtype="float16")
    assert report.dtype == "float16"
    ids, mask = _batch(_config(roberta_dir), [9, 4], seed=2)
    args = (from_numpy(ids, device), from_numpy(mask, device))
    half = np.asarray(model(*args).last_hidden_state.numpy(), dtype=np.float32)
    full, _, _ = load_model(roberta_dir, device, sharing=False)
    ref = full(*args).last_hidden_state.numpy()
    assert np.max(np.abs(half - ref)[mask.astype(bool)]) < 0.05


def test_layer_kinds_mark_attention_linears_for_int8_activations() -> None:
    from ipfs_accelerate.models._precision import layer_kind

    kinds = {
        "transformer.layer.0.attention.q_lin": "attention_in",
        "distilbert.transformer.layer.1.attention.v_lin": "attention_in",
        "transformer.layer.0.attention.out_lin": "attention_out",
        "transformer.layer.0.ffn.lin1": "ffn_in",
        "transformer.layer.0.ffn.lin2": "ffn_out",
        "roberta.encoder.layer.0.attention.self.key": "attention_in",
        "roberta.encoder.layer.0.attention.output.dense": "attention_out",
        "classifier.out_proj": "head",
        "classifier.dense": "head",
        "pre_classifier": "head",
        "classifier": "head",
    }
    assert {path: layer_kind(path) for path in kinds} == kinds


def test_int8_activations_follow_the_policy(
    distilbert_dir: Path, xlmr_classifier_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ipfs_accelerate import hal
    from ipfs_accelerate.models._module import Linear

    # the policy rounds the activations to int8 where the backend multiplies them in integers
    # (the cpu backend: with MKL on a CPU with VNNI or AMX; said here, whatever this host has)
    cpu = type(hal.get_backend("cpu"))
    monkeypatch.setattr(cpu, "integer_kernel", lambda self, name: name == "row_quantized_linear")
    cases = (
        (distilbert_dir, ("q_lin", "k_lin", "v_lin", "out_lin", "ffn.lin1", "ffn.lin2")),
        (xlmr_classifier_dir, ("query", "key", "value", "output.dense", "intermediate.dense")),
    )
    for directory, per_layer in cases:
        model, _, _ = load_model(directory, "cpu", sharing=False, dtype="int8")
        linears = [(p, m) for p, m in model.named_modules() if isinstance(m, Linear)]
        chosen = sorted(p for p, m in linears if m.activations == "int8_row")
        assert len(chosen) == 2 * 6, chosen
        assert all(p.endswith(per_layer) for p in chosen)
        # the classification heads keep float inputs
        assert all(m.activations == "float" for p, m in linears if p.startswith("classifier"))


def test_select_backend_treats_the_new_families_like_bert() -> None:
    from ipfs_accelerate import hal
    from ipfs_accelerate.hal._registry import _GRAPH_FRIENDLY

    assert {"roberta", "xlm-roberta", "distilbert"} <= _GRAPH_FRIENDLY
    bert = hal.select_backend("bert").name
    for family in ("roberta", "xlm-roberta", "distilbert", "XLM-RoBERTa"):
        assert hal.select_backend(family).name == bert


def test_quantized_save_and_reload(
    xlmr_classifier_dir: Path, distilbert_dir: Path, tmp_path: Path
) -> None:
    for directory in (xlmr_classifier_dir, distilbert_dir):
        model, _, _ = load_model(directory, "cpu", sharing=False, dtype="int8")
        saved = model.save_pretrained(tmp_path / directory.name)
        again, _, report = load_model(saved, "cpu", sharing=False, dtype="auto")
        assert type(again) is type(model) and report.dtype == "int8"
        ids, mask = _batch(_config(directory), [8, 3], seed=4)
        args = (from_numpy(ids, "cpu"), from_numpy(mask, "cpu"))
        first, second = model(*args), again(*args)
        first = getattr(first, "last_hidden_state", first)
        second = getattr(second, "last_hidden_state", second)
        np.testing.assert_array_equal(first.numpy(), second.numpy())
