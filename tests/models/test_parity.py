"""Parity against transformers (torch, CPU) on tiny seeded random checkpoints, on every backend.

Tolerances (max abs diff, fp32): 1e-4 on cpu and webnn, 1e-3 on webgpu. Whisper's greedy
token ids must equal ``generate()``'s; the real MiniLM must reach cosine >= 0.9999 per
sentence against sentence-transformers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.models.loading import load_model
from ipfs_accelerate.tensor import from_numpy

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(300)

TOLERANCE = {"cpu": 1e-4, "webnn": 1e-4, "webgpu": 1e-3}


def assert_close(ours: Any, reference: Any, device: str, what: str) -> None:
    ours = np.asarray(ours)
    reference = (
        reference.detach().numpy() if hasattr(reference, "detach") else np.asarray(reference)
    )
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} vs {reference.shape}"
    diff = float(np.max(np.abs(ours - reference)))
    assert diff <= TOLERANCE[device], (
        f"{what} on {device}: max abs diff {diff:.3g} > {TOLERANCE[device]}"
    )


def _ids(tokenizer_dir: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    from ipfs_accelerate.models.preprocessing.text import TextTokenizer

    encoded = TextTokenizer.from_checkpoint(tokenizer_dir)(texts)
    return encoded.input_ids, encoded.attention_mask


TEXTS = ["a photo of a cat", "the quick brown fox jumps over the lazy dog", "hello"]


# ----------------------------------------------------------------------------- BERT


def test_bert_matches_transformers(device: str, bert_dir: Path) -> None:
    from transformers import BertModel

    model, _, _ = load_model(bert_dir, device, sharing=False)
    ids, mask = _ids(bert_dir, TEXTS)
    types = np.zeros_like(ids)
    types[1, 3:] = 1  # a second segment, so token-type embeddings are exercised
    out = model(from_numpy(ids, device), from_numpy(mask, device), from_numpy(types, device))
    hf = BertModel.from_pretrained(bert_dir).eval()
    with torch.no_grad():
        ref = hf(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=torch.from_numpy(types),
        )
    assert mask.min() == 0, "the batch must contain padding"
    assert_close(out.last_hidden_state.numpy(), ref.last_hidden_state, device, "last_hidden_state")
    assert_close(out.pooler_output.numpy(), ref.pooler_output, device, "pooler_output")


def test_bert_packed_forward_matches_transformers_at_every_real_token(
    device: str, bert_dir: Path
) -> None:
    """The packed forward (dense layers on the real tokens only) gives
    transformers' hidden states at every real token, also laid back out as the padded batch."""
    from transformers import BertModel

    from ipfs_accelerate.models.bert import PackedTokens

    model, _, _ = load_model(bert_dir, device, sharing=False)
    ids, mask = _ids(bert_dir, [*TEXTS, "a man"])
    types = np.zeros_like(ids)
    types[1, 3:] = 1
    hf = BertModel.from_pretrained(bert_dir).eval()
    with torch.no_grad():
        ref = hf(
            input_ids=torch.from_numpy(ids),
            attention_mask=torch.from_numpy(mask),
            token_type_ids=torch.from_numpy(types),
        )
    real = mask.astype(bool)
    expected = ref.last_hidden_state.numpy()[real]  # (tokens, hidden) in row-major order
    batch = PackedTokens.from_batch(ids, mask, types)
    assert batch.tokens == int(real.sum()) < ids.size
    packed = model.packed(batch).numpy()
    assert packed.shape == expected.shape
    assert_close(packed, expected, device, "packed hidden states")
    laid_out = model.packed(batch, padded=True).numpy()
    assert laid_out.shape == (*ids.shape, expected.shape[1])
    assert_close(laid_out[real], expected, device, "packed hidden states, padded layout")


# ----------------------------------------------------------------------------- ViT


def test_vit_matches_transformers(device: str, vit_dir: Path) -> None:
    from transformers import ViTForImageClassification

    model, _, _ = load_model(vit_dir, device, sharing=False)
    pixels = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    logits = model(from_numpy(pixels, device)).numpy()
    hf = ViTForImageClassification.from_pretrained(vit_dir).eval()
    with torch.no_grad():
        ref = hf(pixel_values=torch.from_numpy(pixels)).logits
    assert_close(logits, ref, device, "ViT logits")


# ----------------------------------------------------------------------------- CLIP


def test_clip_matches_transformers(device: str, clip_dir: Path) -> None:
    from transformers import CLIPModel

    model, _, _ = load_model(clip_dir, device, sharing=False)
    ids, mask = _ids(clip_dir, TEXTS)
    pixels = np.random.default_rng(1).standard_normal((2, 3, 32, 32)).astype(np.float32)
    out = model(from_numpy(ids, device), from_numpy(pixels, device), from_numpy(mask, device))
    hf = CLIPModel.from_pretrained(clip_dir).eval()
    t_ids, t_mask, t_pix = torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(pixels)
    with torch.no_grad():
        ref = hf(input_ids=t_ids, attention_mask=t_mask, pixel_values=t_pix)
        text_features = hf.get_text_features(input_ids=t_ids, attention_mask=t_mask).pooler_output
        image_features = hf.get_image_features(pixel_values=t_pix).pooler_output
    assert_close(
        model.get_text_features(from_numpy(ids, device), from_numpy(mask, device)).numpy(),
        text_features,
        device,
        "text features",
    )
    assert_close(
        model.get_image_features(from_numpy(pixels, device)).numpy(),
        image_features,
        device,
        "image features",
    )
    assert_close(out.logits_per_image.numpy(), ref.logits_per_image, device, "logits_per_image")
    assert_close(out.text_embeds.numpy(), ref.text_embeds, device, "text_embeds")


def test_clip_legacy_eos_id_pools_at_the_highest_id(clip_dir: Path, tmp_path: Path) -> None:
    """Configs written before transformers#24773 say eos_token_id=2; the pooled token is then
    the highest id of each sequence (the end-of-text token), as in transformers."""
    import json
    import shutil

    from transformers import CLIPModel

    legacy = tmp_path / "legacy"
    shutil.copytree(clip_dir, legacy)
    config = json.loads((legacy / "config.json").read_text())
    config["text_config"]["eos_token_id"] = 2
    (legacy / "config.json").write_text(json.dumps(config))
    model, _, _ = load_model(legacy, "cpu", sharing=False)
    ids, mask = _ids(clip_dir, TEXTS)
    ours = model.get_text_features(from_numpy(ids), from_numpy(mask)).numpy()
    hf = CLIPModel.from_pretrained(legacy).eval()
    with torch.no_grad():
        ref = hf.get_text_features(
            input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)
        ).pooler_output
    assert_close(ours, ref, "cpu", "legacy text features")


# ----------------------------------------------------------------------------- Whisper


@pytest.fixture(scope="module")
def whisper_hf(whisper_dir: Path) -> Any:
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()


def _features(seed: int, batch: int = 2) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((batch, 80, 3000)).astype(np.float32)


def test_whisper_forward_matches_transformers(
    device: str, whisper_dir: Path, whisper_hf: Any
) -> None:
    model, _, report = load_model(whisper_dir, device, sharing=False)
    assert report.tied == ["proj_out.weight"]  # transformers saves the tied projection once
    features = _features(0)
    # prompt + 32 text tokens: more than the cache's first 32 slots, so decoding grows it
    text = np.random.default_rng(4).integers(0, 300, (2, 32))
    decoder_ids = np.concatenate(
        [[[301, 302, 306, 310], [301, 303, 305, 310]], text], axis=1
    ).astype(np.int64)
    encoded = model.encode(from_numpy(features, device))
    logits = model(from_numpy(features, device), from_numpy(decoder_ids, device)).numpy()
    with torch.no_grad():
        ref_encoded = whisper_hf.model.encoder(torch.from_numpy(features)).last_hidden_state
        ref_logits = whisper_hf(
            input_features=torch.from_numpy(features),
            decoder_input_ids=torch.from_numpy(decoder_ids),
        ).logits
    assert_close(encoded.numpy(), ref_encoded, device, "encoder output")
    assert_close(logits, ref_logits, device, "decoder logits")
    # the KV cache: the prompt at once, then one token at a time, gives the same logits
    cache = model.start_decoding(encoded)
    steps = [model.decode_step(from_numpy(decoder_ids[:, :3], device), cache).numpy()]
    for t in range(3, decoder_ids.shape[1]):
        steps.append(
            model.decode_step(from_numpy(decoder_ids[:, t : t + 1], device), cache).numpy()
        )
    assert cache.length == decoder_ids.shape[1] == 36
    assert cache.capacity == 40  # 32 slots doubled, capped at max_target_positions
    assert_close(np.stack(steps, axis=1), ref_logits[:, 2:], device, "cached decoding logits")


@pytest.mark.parametrize(
    ("language", "task"), [("en", "transcribe"), (None, "transcribe"), ("fr", "translate")]
)
def test_whisper_greedy_ids_equal_generate(
    device: str, whisper_dir: Path, whisper_hf: Any, language: str | None, task: str
) -> None:
    from ipfs_accelerate.models import SpeechRecognizer

    recognizer = SpeechRecognizer.from_pretrained(whisper_dir, device=device, sharing=False)
    features = _features(3)
    ours = recognizer.generate(features, language=language, task=task, max_new_tokens=24)
    with torch.no_grad():
        ref = whisper_hf.generate(
            torch.from_numpy(features), language=language, task=task, max_new_tokens=24
        ).numpy()
    prompt = ours.shape[1] - ref.shape[1]
    assert prompt == 4  # <|startoftranscript|> <|lang|> <|task|> <|notimestamps|>
    np.testing.assert_array_equal(ours[:, prompt:], ref)
    gen = recognizer.generation
    assert (ours[:, 2] == gen.task_to_id[task]).all()
    assert (ours[:, 3] == gen.no_timestamps).all()
    if language is not None:
        assert (ours[:, 1] == gen.lang_to_id[f"<|{language}|>"]).all()
    assert not np.isin(ours[:, prompt:], gen.suppress).any()
    assert len(np.unique(ref)) > 3, "the random checkpoint must not decode a constant sequence"


# ----------------------------------------------------------------------------- the real MiniLM


def test_minilm_cosine_against_sentence_transformers(device: str, minilm_dir: Path) -> None:
    from sentence_transformers import SentenceTransformer

    from ipfs_accelerate.models import TextEmbedder

    sentences = [
        "A man is eating food.",
        "A man is eating a piece of bread.",
        "The girl is carrying a baby.",
        "A man is riding a horse on a sunny beach while seagulls circle overhead.",
        "Two men pushed carts through the woods.",
        "x",
    ]
    ours = TextEmbedder.from_pretrained(minilm_dir, device=device, sharing=False).embed(
        sentences, batch_size=4
    )
    reference = SentenceTransformer(str(minilm_dir), device="cpu").encode(
        sentences, convert_to_numpy=True
    )
    cosine = (ours * reference).sum(1) / (
        np.linalg.norm(ours, axis=1) * np.linalg.norm(reference, axis=1)
    )
    assert cosine.min() >= 0.9999, cosine
