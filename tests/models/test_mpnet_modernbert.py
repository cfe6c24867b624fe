"""MPNet and ModernBERT against transformers on tiny seeded checkpoints, on every backend.

Hidden states within 1e-4 (cpu, webnn) / 1e-3 (webgpu) of transformers with padding, mixed
lengths and sequences as long as the models hold (longer than ModernBERT's local window);
sequence-classification logits likewise; unsupported config options raise naming the option;
int8 loads stay within cosine 0.99 of float32.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate import hal
from ipfs_accelerate.errors import InvalidArgumentError, UnsupportedArchitectureError
from ipfs_accelerate.models import loading
from ipfs_accelerate.models._precision import layer_kind
from ipfs_accelerate.models.loading import load_model
from ipfs_accelerate.models.modernbert import (
    ModernBertConfig,
    ModernBertForSequenceClassification,
    ModernBertModel,
)
from ipfs_accelerate.models.mpnet import (
    MPNetConfig,
    MPNetForSequenceClassification,
    MPNetModel,
    relative_position_buckets,
)
from ipfs_accelerate.quantization import QuantizedTensor
from ipfs_accelerate.tensor import from_numpy
from tests.models._checkpoints import _perturb

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(300)

TOLERANCE = {"cpu": 1e-4, "webnn": 1e-4, "webgpu": 1e-3}
VOCAB = 60
MPNET_POSITIONS = 40  # 38 usable: positions start after the padding id 1
MODERNBERT_POSITIONS = 64
WINDOW = 8  # ModernBERT's local_attention: keys at most 4 positions away
MODERNBERT_PAD = 0


def _save(model: Any, directory: Path, seed: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    model.eval()
    _perturb(model, seed)
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def _mpnet_config(**extra: Any) -> Any:
    return transformers.MPNetConfig(
        vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=MPNET_POSITIONS, **extra,
    )  # fmt: skip


def _modernbert_config(**extra: Any) -> Any:
    options: dict[str, Any] = {
        "vocab_size": VOCAB, "hidden_size": 32, "num_hidden_layers": 4, "num_attention_heads": 4,
        "intermediate_size": 48, "max_position_embeddings": MODERNBERT_POSITIONS,
        "local_attention": WINDOW, "pad_token_id": MODERNBERT_PAD, "bos_token_id": 1,
        "eos_token_id": 2, "cls_token_id": 1, "sep_token_id": 2,
        "global_rope_theta": 1000.0, "local_rope_theta": 50.0,
    }  # fmt: skip
    options.update(extra)
    return transformers.ModernBertConfig(**options)


@pytest.fixture(scope="module")
def mpnet_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(10)
    model = transformers.MPNetModel(_mpnet_config())
    return _save(model, tmp_path_factory.mktemp("mpnet"), 10)


@pytest.fixture(scope="module")
def modernbert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Biases everywhere they may be, so the parity test checks that each is applied."""
    torch.manual_seed(11)
    config = _modernbert_config(norm_bias=True, attention_bias=True, mlp_bias=True)
    return _save(transformers.ModernBertModel(config), tmp_path_factory.mktemp("modernbert"), 11)


def _batch(
    length: int, lengths: list[int], pad: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Random ids (never the padding id) in rows of ``lengths`` real tokens, padded."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(3, VOCAB, size=(len(lengths), length))
    mask = np.zeros_like(ids)
    for row, n in enumerate(lengths):
        mask[row, :n] = 1
        ids[row, n:] = pad
    return ids, mask


def _close(ours: np.ndarray, reference: np.ndarray, device: str, what: str) -> None:
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} vs {reference.shape}"
    diff = float(np.max(np.abs(ours - reference)))
    assert diff <= TOLERANCE[device], f"{what} on {device}: max abs diff {diff:.3g}"


def _reference(model: Any, ids: np.ndarray, mask: np.ndarray) -> Any:
    with torch.no_grad():
        return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))


# ----------------------------------------------------------------------------- MPNet


def test_mpnet_relative_position_buckets_equal_transformers() -> None:
    from transformers.models.mpnet.modeling_mpnet import MPNetEncoder

    length = 300  # past the 128 maximum distance, so the clamped buckets are compared too
    positions = torch.arange(length)
    relative = positions[None, :] - positions[:, None]
    expected = MPNetEncoder.relative_position_bucket(relative).numpy()
    np.testing.assert_array_equal(relative_position_buckets(length), expected)


def test_mpnet_matches_transformers(device: str, mpnet_dir: Path) -> None:
    model, _, _ = load_model(mpnet_dir, device, sharing=False)
    assert isinstance(model, MPNetModel)
    assert model.max_input_tokens == MPNET_POSITIONS - 2
    # a full-length row (the last position of the table), a half and a short one
    ids, mask = _batch(model.max_input_tokens, [38, 20, 5], pad=1)
    out = model(from_numpy(ids, device), from_numpy(mask, device))
    ref = _reference(transformers.MPNetModel.from_pretrained(mpnet_dir).eval(), ids, mask)
    _close(out.last_hidden_state.numpy(), ref.last_hidden_state.numpy(), device, "hidden")
    _close(out.pooler_output.numpy(), ref.pooler_output.numpy(), device, "pooler_output")
    unpooled = model(from_numpy(ids, device), from_numpy(mask, device), pool=False)
    assert unpooled.pooler_output is None


def test_mpnet_positions_count_from_the_padding_id_not_the_mask(mpnet_dir: Path) -> None:
    """A padding id inside a sequence takes position 1, as in transformers (the position is
    derived from the ids); the mask only hides keys."""
    model, _, _ = load_model(mpnet_dir, "cpu", sharing=False)
    ids, mask = _batch(12, [12], pad=1)
    ids[0, 4] = 1
    out = model(from_numpy(ids, "cpu"), from_numpy(mask, "cpu")).last_hidden_state.numpy()
    ref = _reference(transformers.MPNetModel.from_pretrained(mpnet_dir).eval(), ids, mask)
    _close(out, ref.last_hidden_state.numpy(), "cpu", "hidden with an inner padding id")


def test_mpnet_refuses_sequences_past_its_positions(mpnet_dir: Path) -> None:
    model, _, _ = load_model(mpnet_dir, "cpu", sharing=False)
    ids, mask = _batch(MPNET_POSITIONS - 1, [MPNET_POSITIONS - 1], pad=1)
    with pytest.raises(InvalidArgumentError, match="sequence length 39 exceeds the 38"):
        model(from_numpy(ids, "cpu"), from_numpy(mask, "cpu"))


# ----------------------------------------------------------------------------- ModernBERT


def _legacy_config(directory: Path, target: Path) -> Path:
    """The checkpoint with its config in transformers 4's layout (flat rope thetas,
    ``global_attn_every_n_layers``), as older ModernBERT checkpoints on the Hub have it."""
    target.mkdir(parents=True, exist_ok=True)
    config = json.loads((directory / "config.json").read_text())
    rope = config.pop("rope_parameters")
    config.pop("layer_types")
    config["global_rope_theta"] = rope["full_attention"]["rope_theta"]
    config["local_rope_theta"] = rope["sliding_attention"]["rope_theta"]
    config["global_attn_every_n_layers"] = 3
    (target / "config.json").write_text(json.dumps(config))
    (target / "model.safetensors").symlink_to(directory / "model.safetensors")
    return target


@pytest.mark.parametrize("layout", ["transformers5", "transformers4"])
def test_modernbert_matches_transformers(
    device: str, modernbert_dir: Path, layout: str, tmp_path: Path
) -> None:
    directory = modernbert_dir
    if layout == "transformers4":
        directory = _legacy_config(modernbert_dir, tmp_path / "legacy")
    model, _, _ = load_model(directory, device, sharing=False)
    assert isinstance(model, ModernBertModel)
    config = model.config
    assert config.layer_types == ["full_attention", *["sliding_attention"] * 2, "full_attention"]
    assert config.rope_theta == {"full_attention": 1000.0, "sliding_attention": 50.0}
    # rows longer than the window, one of the full table's length, padding in all but one
    ids, mask = _batch(MODERNBERT_POSITIONS, [64, 30, 3], pad=MODERNBERT_PAD)
    hidden = model(from_numpy(ids, device), from_numpy(mask, device)).last_hidden_state.numpy()
    reference = transformers.ModernBertModel.from_pretrained(modernbert_dir).eval()
    expected = _reference(reference, ids, mask).last_hidden_state.numpy()
    real = mask.astype(bool)
    # padding positions hold no meaning (transformers' own differ between its attention
    # implementations); they must stay finite, or mean pooling would turn NaN
    assert np.isfinite(hidden).all()
    _close(hidden[real], expected[real], device, "hidden at the real tokens")


def test_modernbert_masked_lm_checkpoint_loads_as_the_encoder(tmp_path: Path) -> None:
    """ModernBERT checkpoints on the Hub are ``ModernBertForMaskedLM``: the encoder loads
    from its ``model.`` keys and the MLM head is left aside."""
    torch.manual_seed(12)
    mlm = transformers.ModernBertForMaskedLM(_modernbert_config())
    directory = _save(mlm, tmp_path / "mlm", 12)
    model, _, report = load_model(directory, "cpu", sharing=False)
    assert isinstance(model, ModernBertModel)
    assert "decoder.weight" in report.ignored or "decoder.bias" in report.ignored
    ids, mask = _batch(20, [20, 9], pad=MODERNBERT_PAD)
    hidden = model(from_numpy(ids, "cpu"), from_numpy(mask, "cpu")).last_hidden_state.numpy()
    expected = _reference(mlm.model, ids, mask).last_hidden_state.numpy()
    real = mask.astype(bool)
    _close(hidden[real], expected[real], "cpu", "encoder of a masked-LM checkpoint")


# ----------------------------------------------------------------------------- packed


@pytest.mark.parametrize("family", ["mpnet", "modernbert"])
def test_packed_forward_matches_transformers_at_every_real_token(
    device: str, family: str, mpnet_dir: Path, modernbert_dir: Path
) -> None:
    """``packed`` (dense layers on the real tokens only, BertModel's contract) gives
    transformers' hidden states at every real token, also laid back out as the padded batch;
    rows longer than ModernBERT's window, a full-length MPNet row."""
    from ipfs_accelerate.models.bert import PackedTokens

    if family == "mpnet":
        directory, pad, auto = mpnet_dir, 1, transformers.MPNetModel
        ids, mask = _batch(MPNET_POSITIONS - 2, [38, 20, 5, 1], pad=pad)
    else:
        directory, pad, auto = modernbert_dir, MODERNBERT_PAD, transformers.ModernBertModel
        ids, mask = _batch(MODERNBERT_POSITIONS, [64, 30, 3, 1], pad=pad)
    model, _, _ = load_model(directory, device, sharing=False)
    real = mask.astype(bool)
    expected = _reference(auto.from_pretrained(directory).eval(), ids, mask)
    expected = expected.last_hidden_state.numpy()[real]  # (tokens, hidden), row-major
    batch = PackedTokens.from_batch(ids, mask)
    assert batch.tokens == int(real.sum()) < ids.size
    _close(model.packed(batch).numpy(), expected, device, f"{family} packed hidden states")
    laid_out = model.packed(batch, padded=True).numpy()
    assert laid_out.shape == (*ids.shape, expected.shape[1])
    _close(laid_out[real], expected, device, f"{family} packed, padded layout")


def test_mpnet_packed_positions_skip_inner_padding_ids() -> None:
    """Positions in a packed batch are counted as the padded forward counts them, per row."""
    from ipfs_accelerate.models.bert import PackedTokens
    from ipfs_accelerate.models.mpnet import packed_positions

    ids = np.array([[5, 6, 1, 7, 1], [8, 9, 1, 1, 1]])
    mask = np.array([[1, 1, 1, 1, 0], [1, 1, 0, 0, 0]])
    positions = packed_positions(PackedTokens.from_batch(ids, mask))
    np.testing.assert_array_equal(positions, [2, 3, 1, 4, 2, 3])


# ----------------------------------------------------------------------------- classification


def _classifier(family: str, pooling: str, directory: Path) -> Path:
    torch.manual_seed(13)
    if family == "mpnet":
        model = transformers.MPNetForSequenceClassification(_mpnet_config(num_labels=3))
    else:
        config = _modernbert_config(num_labels=3, classifier_pooling=pooling, classifier_bias=True)
        model = transformers.ModernBertForSequenceClassification(config)
    # a strong classifier, so the logits depend on the inputs well beyond float32 noise
    return _save(model, directory, 13)


@pytest.mark.parametrize(
    ("family", "pooling"), [("mpnet", "cls"), ("modernbert", "cls"), ("modernbert", "mean")]
)
def test_sequence_classification_logits_equal_transformers(
    device: str, family: str, pooling: str, tmp_path: Path
) -> None:
    directory = _classifier(family, pooling, tmp_path / family)
    model, _, _ = load_model(directory, device, sharing=False)
    expected_class = (
        MPNetForSequenceClassification if family == "mpnet" else ModernBertForSequenceClassification
    )
    assert isinstance(model, expected_class)
    assert model.config.num_labels == 3
    pad = 1 if family == "mpnet" else MODERNBERT_PAD
    ids, mask = _batch(model.max_input_tokens, [model.max_input_tokens, 17, 4], pad=pad)
    types = np.zeros_like(ids)  # accepted and ignored, as TextEmbedder/Reranker pass them
    logits = model(
        from_numpy(ids, device), from_numpy(mask, device), from_numpy(types, device)
    ).numpy()
    auto = getattr(transformers, expected_class.__name__).from_pretrained(directory).eval()
    expected = _reference(auto, ids, mask).logits.numpy()
    _close(logits, expected, device, f"{family} ({pooling}) logits")


def test_model_class_for_picks_the_head_from_keys_and_architectures() -> None:
    assert loading.model_class_for({"model_type": "mpnet"}, {}) is MPNetModel
    assert (
        loading.model_class_for({"model_type": "mpnet"}, {"classifier.out_proj.weight": 0})
        is MPNetForSequenceClassification
    )
    named = {"model_type": "mpnet", "architectures": ["MPNetForSequenceClassification"]}
    assert loading.model_class_for(named) is MPNetForSequenceClassification
    head_keys = {"classifier.weight": 0, "head.dense.weight": 0}
    assert loading.model_class_for({"model_type": "modernbert"}, head_keys) is (
        ModernBertForSequenceClassification
    )
    token_task = {"model_type": "modernbert", "architectures": ["ModernBertForTokenClassification"]}
    assert loading.model_class_for(token_task, head_keys) is ModernBertModel
    assert loading.model_class_for({"model_type": "modernbert"}, {}) is ModernBertModel


# ----------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("family", "change", "named"),
    [
        ("mpnet", {"relative_attention_num_buckets": 16}, "relative_attention_num_buckets 16"),
        ("mpnet", {"hidden_act": "mish"}, "'mish'"),
        ("mpnet", {"num_attention_heads": 5}, "num_attention_heads 5"),
        ("modernbert", {"hidden_activation": "mish"}, "'mish'"),
        ("modernbert", {"classifier_pooling": "max"}, "classifier_pooling 'max'"),
        ("modernbert", {"layer_types": ["full_attention", "chunked_attention"]}, "chunked"),
        (
            "modernbert",
            {"rope_parameters": {"full_attention": {"rope_type": "yarn", "factor": 2.0}}},
            "rope_type 'yarn'",
        ),
        (
            "modernbert",
            {"rope_parameters": {"full_attention": {"partial_rotary_factor": 0.5}}},
            "partial_rotary_factor 0.5",
        ),
        ("modernbert", {"rope_scaling": {"rope_type": "linear", "factor": 2.0}}, "rope_scaling"),
        ("modernbert", {"local_attention": 1}, "local_attention 1"),
    ],
)
def test_unsupported_config_options_raise_naming_them(
    family: str, change: dict[str, Any], named: str
) -> None:
    base: dict[str, Any] = {"model_type": family, "hidden_size": 32, "num_attention_heads": 4}
    if family == "modernbert":
        base["num_hidden_layers"] = 2
    config_class = MPNetConfig if family == "mpnet" else ModernBertConfig
    with pytest.raises(UnsupportedArchitectureError, match=named.replace("(", r"\(")):
        config_class.from_dict({**base, **change})


# ----------------------------------------------------------------------------- precision


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def _low_precision_cosines(family: str, directory: Path, device: str, dtype: str) -> np.ndarray:
    """Per real token, the cosine between the hidden states of a ``dtype`` load and float32."""
    pad = 1 if family == "mpnet" else MODERNBERT_PAD
    full, _, _ = load_model(directory, device, sharing=False)
    low, _, _ = load_model(directory, device, sharing=False, dtype=dtype)
    assert low.dtype == dtype
    if dtype in ("int8", "int4"):  # the token table is most of an encoder's bytes
        (table,) = low.quantizable_embeddings
        assert isinstance(dict(low.named_weights())[table], QuantizedTensor)
    ids, mask = _batch(30, [30, 12], pad=pad)
    real = mask.astype(bool)
    reference = full(from_numpy(ids, device), from_numpy(mask, device)).last_hidden_state
    hidden = low(from_numpy(ids, device), from_numpy(mask, device)).last_hidden_state
    return _cosines(hidden.numpy().astype(np.float32)[real], reference.numpy()[real])


@pytest.mark.parametrize("family", ["mpnet", "modernbert"])
def test_int8_load_stays_within_cosine_099_of_float32(
    device: str, family: str, mpnet_dir: Path, modernbert_dir: Path
) -> None:
    """On WebNN the attention projections also take int8 inputs (the BERT policy), so the
    gate covers that path too."""
    directory = mpnet_dir if family == "mpnet" else modernbert_dir
    cosines = _low_precision_cosines(family, directory, device, "int8")
    assert cosines.min() >= 0.99, f"{family} int8 on {device}: minimum cosine {cosines.min()}"


@pytest.mark.parametrize("family", ["mpnet", "modernbert"])
@pytest.mark.parametrize(("dtype", "gate"), [("int4", 0.99), ("float16", 0.9999)])
def test_int4_and_float16_loads_stay_close_to_float32(
    family: str, dtype: str, gate: float, mpnet_dir: Path, modernbert_dir: Path
) -> None:
    directory = mpnet_dir if family == "mpnet" else modernbert_dir
    cosines = _low_precision_cosines(family, directory, "cpu", dtype)
    assert cosines.min() >= gate, f"{family} {dtype}: minimum cosine {cosines.min():.4f}"


@pytest.mark.parametrize(
    ("path", "kind"),
    [
        ("encoder.layer.0.attention.attn.q", "attention_in"),
        ("encoder.layer.0.attention.attn.o", "attention_out"),
        ("encoder.layer.0.intermediate.dense", "ffn_in"),
        ("encoder.layer.0.output.dense", "ffn_out"),
        ("model.layers.2.attn.Wqkv", "attention_in"),
        ("model.layers.2.attn.Wo", "attention_out"),
        ("model.layers.2.mlp.Wi", "ffn_in"),
        ("model.layers.2.mlp.Wo", "ffn_out"),
        ("classifier.out_proj", "head"),
        ("head.dense", "head"),
    ],
)
def test_int8_activation_policy_knows_the_layers_of_both_families(path: str, kind: str) -> None:
    assert layer_kind(path) == kind


def test_select_backend_treats_the_new_families_as_bert() -> None:
    expected = hal.select_backend("bert")
    for family in ("mpnet", "modernbert"):
        chosen = hal.select_backend(family)
        assert (chosen.name, chosen.reason.replace(family, "bert")) == (
            expected.name,
            expected.reason,
        )
