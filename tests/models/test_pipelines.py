"""Pipelines end to end on tiny checkpoints (and the bundled MiniLM), against transformers."""

from __future__ import annotations

import gc
import shutil
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import InvalidArgumentError, TruncationWarning
from ipfs_accelerate.models import (
    ImageClassifier,
    SpeechRecognizer,
    TextEmbedder,
    ZeroShotImageClassifier,
)

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.timeout(300)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


# ----------------------------------------------------------------------------- TextEmbedder


def test_text_embedder_mean_pools_like_sentence_transformers(bert_dir: Path) -> None:
    from transformers import BertModel, PreTrainedTokenizerFast

    texts = ["a photo of a cat", "hello", "the quick brown fox jumps over the lazy dog", "a man"]
    embedder = TextEmbedder.from_pretrained(bert_dir, device="cpu", sharing=False)
    ours = embedder.embed(texts, batch_size=3)
    raw = embedder.embed(texts, normalize=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(bert_dir / "tokenizer.json"), pad_token="[PAD]"
    )
    batch = tokenizer(texts, padding="longest", return_tensors="pt")
    with torch.no_grad():
        hidden = BertModel.from_pretrained(bert_dir)(**batch).last_hidden_state.numpy()
    mask = batch["attention_mask"].numpy()[..., None]
    pooled = (hidden * mask).sum(1) / mask.sum(1)
    np.testing.assert_allclose(raw, pooled, atol=1e-4)
    np.testing.assert_allclose(
        ours, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-4
    )
    np.testing.assert_allclose(
        embedder.embed(texts[1]), ours[1], atol=1e-6
    )  # one string -> one vector
    assert embedder.embed([]).shape == (0, 32)


def test_text_embedder_on_a_graph_backend_pads_new_shapes_to_a_few_buckets(bert_dir: Path) -> None:
    """webnn compiles a graph (and holds a session) per input shape: after the first few
    shapes, batches are padded to shape buckets, so 36 lengths compile a handful of graphs,
    and the vectors do not change."""
    pytest.importorskip("onnxruntime")
    from ipfs_accelerate import hal
    from ipfs_accelerate.models._shapes import EXACT_SHAPES

    graph = TextEmbedder.from_pretrained(bert_dir, device="webnn", sharing=False)
    eager = TextEmbedder.from_pretrained(bert_dir, device="cpu", sharing=False)
    stats = hal.get_backend("webnn").stats  # type: ignore[attr-defined]
    rng = np.random.default_rng(0)
    vocab = graph.model.config.vocab_size

    def check(n: int) -> int:
        before = stats.compilations
        ids = rng.integers(0, vocab, size=(3, n))
        mask = np.ones_like(ids)
        mask[1, max(1, n // 2) :] = 0
        np.testing.assert_allclose(
            graph.embed_tokens(ids, mask), eager.embed_tokens(ids, mask), atol=2e-5
        )
        return stats.compilations - before

    per_shape = check(3)
    assert per_shape >= 1
    compiled = per_shape + sum(check(n) for n in range(4, 39))
    # 8 exact lengths of 3 rows, then 4 rows (the next power of two) by lengths 12, 16, 20,
    # 24, 28, 32, 40
    assert compiled <= per_shape * (EXACT_SHAPES + 7)
    assert check(3) == 0 and check(38) == 0  # shapes met before compile nothing


def test_text_embedder_truncates_long_texts_with_a_warning(bert_dir: Path) -> None:
    embedder = TextEmbedder.from_pretrained(bert_dir, device="cpu", max_length=6, sharing=False)
    with pytest.warns(TruncationWarning, match="max_length=6"):
        long_vector = embedder.embed("the quick brown fox jumps over the lazy dog")
    np.testing.assert_allclose(long_vector, embedder.embed("the quick brown fox"), atol=1e-6)


def test_text_embedder_rejects_bad_arguments(bert_dir: Path) -> None:
    embedder = TextEmbedder.from_pretrained(bert_dir, device="cpu", sharing=False)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        embedder.embed(["x"], batch_size=0)


def test_minilm_semantic_search_ranks_the_paraphrase_first(minilm_dir: Path) -> None:
    embedder = TextEmbedder.from_pretrained(device="cpu")  # the embedded default
    assert embedder.checkpoint.path == minilm_dir
    corpus = [
        "A man is eating a piece of bread.",
        "A woman is playing violin.",
        "A monkey is playing drums.",
    ]
    scores = embedder.embed(corpus) @ embedder.embed("Someone is having a meal.")
    assert int(np.argmax(scores)) == 0
    assert embedder.pooling == "mean" and embedder.dimension == 384


# ----------------------------------------------------------------------------- sharing


def test_two_pipelines_of_one_checkpoint_hold_one_copy(bert_dir: Path, tmp_path: Path) -> None:
    """Measured twice: the manager's byte count, and the host memory the second load allocates
    (a float16 checkpoint, whose float32 conversion is a real allocation per load)."""
    import torch
    from transformers import BertConfig, BertModel

    from ipfs_accelerate.sharing import TensorSharingManager

    # wide enough that the weights dwarf the fixed cost of a pipeline object (~40 kB)
    config = BertConfig.from_pretrained(bert_dir)
    config.update({"hidden_size": 128, "intermediate_size": 512, "num_attention_heads": 4})
    half = tmp_path / "half"
    BertModel(config).to(torch.float16).save_pretrained(half, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(bert_dir / name, half)
    manager = TensorSharingManager()
    gc.collect()
    tracemalloc.start()
    try:
        first = TextEmbedder.from_pretrained(half, device="cpu", sharing=manager)
        after_first = tracemalloc.get_traced_memory()[0]
        held_after_first = manager.get_stats()
        second = TextEmbedder.from_pretrained(half, device="cpu", sharing=manager)
        after_second = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    weight_bytes = sum(t.nbytes for _, t in first.model.named_parameters())
    stats = manager.get_stats()
    # identical tensors within one model (zero biases, unit norms) are already one copy
    assert stats["memory_usage_bytes"] == held_after_first["memory_usage_bytes"] <= weight_bytes
    assert stats["dedup_saved_bytes"] - held_after_first["dedup_saved_bytes"] == weight_bytes
    assert after_first >= weight_bytes
    assert after_second - after_first < 0.1 * weight_bytes, (
        after_first,
        after_second,
        weight_bytes,
    )
    for (name_a, a), (name_b, b) in zip(
        first.model.named_parameters(), second.model.named_parameters(), strict=True
    ):
        assert name_a == name_b and a is b
    np.testing.assert_array_equal(first.embed(["hello world"]), second.embed(["hello world"]))
    assert set(stats["models"]) == {first.model_name, second.model_name}
    first.close()
    second.close()
    assert manager.optimize_memory_usage()["freed_memory_bytes"] == stats["memory_usage_bytes"]


def test_pipelines_share_the_default_manager(bert_dir: Path) -> None:
    from ipfs_accelerate.models import default_sharing_manager

    a = TextEmbedder.from_pretrained(bert_dir, device="cpu")
    b = TextEmbedder.from_pretrained(bert_dir, device="cpu")
    assert a.model.embeddings.word_embeddings.weight is b.model.embeddings.word_embeddings.weight
    assert a.model_name in default_sharing_manager().get_stats()["models"]


# ----------------------------------------------------------------------------- ImageClassifier


def _pil_images() -> list[Any]:
    from PIL import Image

    rng = np.random.default_rng(7)
    return [
        Image.fromarray(rng.integers(0, 256, (40 + 9 * i, 50, 3), dtype=np.uint8)) for i in range(3)
    ]


def test_image_classifier_labels_and_scores(vit_dir: Path) -> None:
    from transformers import ViTForImageClassification
    from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

    classifier = ImageClassifier.from_pretrained(vit_dir, device="cpu", sharing=False)
    images = _pil_images()
    results = classifier.classify(images, top_k=2)
    pixels = ViTImageProcessorPil(size={"height": 32, "width": 32})(images, return_tensors="pt")[
        "pixel_values"
    ]
    with torch.no_grad():
        probs = _softmax(
            ViTForImageClassification.from_pretrained(vit_dir)(pixel_values=pixels).logits.numpy()
        )
    names = ["cat", "dog", "bird", "car"]
    assert len(results) == 3
    for row, result in zip(probs, results, strict=True):
        order = np.argsort(-row)[:2]
        assert [r["label"] for r in result] == [names[i] for i in order]
        np.testing.assert_allclose([r["score"] for r in result], row[order], atol=1e-5)
    single = classifier.classify(images[0], top_k=10)
    assert len(single) == 4 and sorted(r["label"] for r in single) == sorted(names)
    assert abs(sum(r["score"] for r in single) - 1) < 1e-5
    with pytest.raises(InvalidArgumentError, match="top_k"):
        classifier.classify(images[0], top_k=0)


# ------------------------------------------------------------------------- ZeroShotImageClassifier


def test_zero_shot_classifier_matches_clip(clip_dir: Path) -> None:
    from transformers import CLIPModel, PreTrainedTokenizerFast
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    classifier = ZeroShotImageClassifier.from_pretrained(clip_dir, device="cpu", sharing=False)
    images = _pil_images()[:2]
    labels = ["cat", "dog", "red car"]
    results = classifier.classify(images, labels)
    prompts = [f"This is a photo of {label}." for label in labels]
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(clip_dir / "tokenizer.json"), pad_token="<|endoftext|>"
    )
    text = tokenizer(prompts, padding="longest", return_tensors="pt")
    pixels = CLIPImageProcessorPil(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    )(images, return_tensors="pt")["pixel_values"]
    hf = CLIPModel.from_pretrained(clip_dir).eval()
    with torch.no_grad():
        ref = hf(
            input_ids=text["input_ids"], attention_mask=text["attention_mask"], pixel_values=pixels
        )
    probs = _softmax(ref.logits_per_image.numpy())
    for row, result in zip(probs, results, strict=True):
        assert [r["label"] for r in result] == [labels[i] for i in np.argsort(-row)]
        np.testing.assert_allclose(
            sorted((r["score"] for r in result), reverse=True), np.sort(row)[::-1], atol=1e-5
        )
    np.testing.assert_allclose(classifier.embed_texts(prompts), ref.text_embeds.numpy(), atol=1e-5)
    np.testing.assert_allclose(classifier.embed_images(images), ref.image_embeds.numpy(), atol=1e-5)
    assert classifier.embed_images(images[0]).shape == (16,)
    with pytest.raises(InvalidArgumentError, match="at least one label"):
        classifier.classify(images[0], [])


# ----------------------------------------------------------------------------- SpeechRecognizer


@pytest.fixture(scope="module")
def recognizer(whisper_dir: Path) -> SpeechRecognizer:
    return SpeechRecognizer.from_pretrained(whisper_dir, device="cpu", sharing=False)


def _noise(seconds: float, seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(16000 * seconds)) * 0.1).astype(
        np.float32
    )


def test_transcribe_matches_transformers(
    recognizer: SpeechRecognizer, whisper_dir: Path, tmp_path: Path
) -> None:
    import soundfile
    from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

    audio = _noise(3, 0)
    hf = WhisperForConditionalGeneration.from_pretrained(whisper_dir).eval()
    features = WhisperFeatureExtractor()(
        audio, sampling_rate=16000, return_tensors="pt"
    ).input_features
    with torch.no_grad():
        ids = hf.generate(features, language="en", task="transcribe", max_new_tokens=12)[0].tolist()
    eos = recognizer.generation.eos
    expected = recognizer.tokenizer.decode(ids[: ids.index(eos)] if eos in ids else ids).strip()
    text = recognizer.transcribe(audio, language="en", sampling_rate=16000, max_new_tokens=12)
    assert text == expected and text
    path = tmp_path / "speech.flac"
    soundfile.write(path, audio, 16000, format="FLAC", subtype="PCM_24")
    assert recognizer.transcribe(path, language="english", max_new_tokens=12) == text


def test_long_audio_is_cut_at_quiet_points(recognizer: SpeechRecognizer) -> None:
    audio = _noise(70, 1)
    quiet = slice(int(16000 * 27.5), int(16000 * 27.8))
    audio[quiet] = 0  # a pause in the last 5 s of the first window
    windows = recognizer.split_windows(audio)
    assert [len(w) <= 480000 for w in windows] == [True] * 3
    assert sum(len(w) for w in windows) == len(audio)  # nothing dropped, nothing repeated
    assert quiet.start <= len(windows[0]) <= quiet.stop
    joined = recognizer.transcribe(audio, language="en", sampling_rate=16000, max_new_tokens=6)
    separately = [
        recognizer.transcribe(w, language="en", sampling_rate=16000, max_new_tokens=6)
        for w in windows
    ]
    assert joined == " ".join(t for t in separately if t)


def test_transcribe_rejects_bad_arguments(recognizer: SpeechRecognizer) -> None:
    audio = _noise(1, 2)
    with pytest.raises(
        InvalidArgumentError, match="language 'klingon' is not supported.*known: de, en, fr"
    ):
        recognizer.transcribe(audio, language="klingon", sampling_rate=16000)
    with pytest.raises(InvalidArgumentError, match="task must be 'transcribe' or 'translate'"):
        recognizer.transcribe(audio, task="summarize", sampling_rate=16000)
