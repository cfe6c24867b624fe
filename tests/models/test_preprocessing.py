"""Preprocessing against the Hugging Face references, and what bad input raises."""

from __future__ import annotations

import io
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pytest

from ipfs_accelerate.errors import PreprocessingError, TruncationWarning
from ipfs_accelerate.models.preprocessing import (
    ImageProcessor,
    TextTokenizer,
    WhisperFeatureExtractor,
    load_audio,
    load_image,
    read_audio,
    resample,
)
from tests._hostile_media import flac_of_silence, png_claiming, wav_claiming

pytestmark = pytest.mark.timeout(120)

# ----------------------------------------------------------------------------- text


def test_batch_matches_transformers_tokenizer(bert_dir: Path) -> None:
    from transformers import PreTrainedTokenizerFast

    texts = ["Hello world!", "a photo of a cat on the mat", "Zebra"]
    ours = TextTokenizer.from_checkpoint(bert_dir)(texts)
    hf = PreTrainedTokenizerFast(tokenizer_file=str(bert_dir / "tokenizer.json"), pad_token="[PAD]")
    ref = hf(texts, padding="longest", return_tensors="np")
    np.testing.assert_array_equal(ours.input_ids, ref["input_ids"])
    np.testing.assert_array_equal(ours.attention_mask, ref["attention_mask"])
    # padded to the longest text, not to the fixed 48 saved in tokenizer.json
    assert ours.input_ids.shape[1] == max(ours.lengths) < 48
    assert ours.input_ids[2, ours.lengths[2] :].tolist() == [0] * (
        ours.input_ids.shape[1] - ours.lengths[2]
    )


def test_truncation_keeps_special_tokens_and_warns(bert_dir: Path) -> None:
    tokenizer = TextTokenizer.from_checkpoint(bert_dir, max_length=8)
    long_text = "the quick brown fox jumps over the lazy dog and the cat sat on the mat"
    with pytest.warns(
        TruncationWarning,
        match=r"1 text\(s\) longer than max_length=8 tokens: text 1 \(18 tokens\)",
    ):
        encoded = tokenizer(["hello", long_text])
    assert encoded.truncated == [1]
    assert encoded.lengths == [3, 8]
    full = TextTokenizer.from_checkpoint(bert_dir)([long_text]).input_ids[0]
    assert encoded.input_ids[1].tolist() == [
        *full[:7].tolist(),
        full[-1],
    ]  # [CLS] first 6 tokens [SEP]
    with pytest.raises(PreprocessingError, match="longer than max_length=8"):
        tokenizer([long_text], truncation="error")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tokenizer(["hello world"])  # no warning when nothing is cut


def test_silent_truncation_and_limits_used_from_many_threads(bert_dir: Path) -> None:
    """ "silent" cuts as "warn" does without warning; each limit keeps its own truncation, so
    threads encoding with different limits at once never see each other's setting."""
    from concurrent.futures import ThreadPoolExecutor

    tokenizer = TextTokenizer.from_checkpoint(bert_dir, max_length=8)
    long_text = "the quick brown fox jumps over the lazy dog and the cat sat on the mat"
    with pytest.warns(TruncationWarning):
        warned = tokenizer([long_text])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        quiet = tokenizer([long_text], truncation="silent")
    np.testing.assert_array_equal(quiet.input_ids, warned.input_ids)
    assert quiet.truncated == [0]

    def lengths(limit: int | None) -> tuple[int | None, int]:
        encoded = tokenizer([long_text], max_length=limit, truncation="silent")
        return limit, encoded.lengths[0]

    limits = [5, 9, None, 12, 1 << 40] * 40
    with ThreadPoolExecutor(8) as pool:
        for limit, length in pool.map(lengths, limits):
            assert length == (8 if limit is None else min(limit, 18)), limit  # None: the default 8
    assert tokenizer.token_count(long_text) == 18


def test_default_max_length_is_the_checkpoints_limit(bert_dir: Path, minilm_dir: Path) -> None:
    assert TextTokenizer.from_checkpoint(bert_dir).max_length == 40
    assert (
        TextTokenizer.from_checkpoint(minilm_dir).max_length == 256
    )  # sentence-transformers' max_seq_length


def test_max_length_too_short_for_the_special_tokens(bert_dir: Path) -> None:
    with pytest.raises(PreprocessingError, match="max_length=1"):
        TextTokenizer.from_checkpoint(bert_dir, max_length=1)(["hello world"])


@pytest.mark.parametrize("bad", [[1, 2], ["ok", None], b"bytes", 3.5])
def test_non_text_input_raises(bert_dir: Path, bad: object) -> None:
    with pytest.raises(PreprocessingError):
        TextTokenizer.from_checkpoint(bert_dir)(bad)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- images


def _images() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.integers(0, 256, (45, 61, 3), dtype=np.uint8),
        rng.integers(0, 256, (70, 33, 3), dtype=np.uint8),
        rng.integers(0, 256, (20, 24, 3), dtype=np.uint8),  # smaller than the crop: padded
    ]


@pytest.mark.parametrize("family", ["vit", "clip"])
def test_images_match_transformers_processor(family: str, vit_dir: Path, clip_dir: Path) -> None:
    from PIL import Image

    if family == "vit":
        from transformers.models.vit.image_processing_pil_vit import (
            ViTImageProcessorPil as Reference,
        )

        directory = vit_dir
    else:
        from transformers.models.clip.image_processing_pil_clip import (
            CLIPImageProcessorPil as Reference,
        )

        directory = clip_dir
    import json

    settings = json.loads((directory / "preprocessor_config.json").read_text())
    settings.pop("image_processor_type")
    reference = Reference(**settings)
    ours = ImageProcessor.from_checkpoint(directory)
    images = [Image.fromarray(a) for a in _images()]
    expected = np.stack(
        [np.asarray(reference(image, return_tensors="np")["pixel_values"][0]) for image in images]
    )
    np.testing.assert_allclose(ours(images), expected, atol=1e-5)


def test_image_sources_agree(vit_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    processor = ImageProcessor.from_checkpoint(vit_dir)
    array = _images()[0]
    path = tmp_path / "image.png"
    Image.fromarray(array).save(path)
    from_array = processor(array)
    np.testing.assert_array_equal(processor(str(path)), from_array)
    np.testing.assert_array_equal(processor(path), from_array)
    np.testing.assert_array_equal(processor(Image.fromarray(array)), from_array)
    np.testing.assert_array_equal(
        processor(array.astype(np.float32) / 255), from_array
    )  # floats in [0, 1]
    np.testing.assert_array_equal(
        processor(array.transpose(2, 0, 1).copy()), from_array
    )  # channels first
    gray = processor(array[..., 0])
    assert gray.shape == (1, 3, 32, 32)
    np.testing.assert_array_equal(gray[0, 0], gray[0, 1])
    rgba = np.dstack([array, np.zeros(array.shape[:2], np.uint8)])  # fully transparent: white
    np.testing.assert_allclose(processor(rgba), 1.0)


def test_undecodable_images_raise(vit_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    processor = ImageProcessor.from_checkpoint(vit_dir)
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not an image")
    with pytest.raises(PreprocessingError, match=r"image 0: cannot decode .*garbage\.jpg"):
        processor(garbage)
    truncated = tmp_path / "truncated.png"
    Image.fromarray(_images()[0]).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:200])
    with pytest.raises(PreprocessingError, match="cannot decode"):
        processor([_images()[1], truncated])
    with pytest.raises(PreprocessingError, match="does not exist"):
        processor(tmp_path / "missing.png")
    with pytest.raises(PreprocessingError, match=r"floating-point pixels must lie in \[0, 1\]"):
        processor(np.full((8, 8, 3), 2.0))
    with pytest.raises(PreprocessingError, match="shape"):
        processor(np.zeros((8, 8, 2), np.uint8))
    with pytest.raises(PreprocessingError, match="expected a path, a PIL image or a numpy array"):
        processor(12)


# ----------------------------------------------------------------------------- audio


@pytest.mark.parametrize("mels", [80, 128])
def test_log_mel_matches_whisper_feature_extractor(mels: int) -> None:
    from transformers import WhisperFeatureExtractor as Reference

    rng = np.random.default_rng(mels)
    audio = [
        (rng.standard_normal(16000 * 7) * 0.1).astype(np.float32),
        np.sin(np.arange(16000 * 30) / 9.0).astype(np.float32),
    ]
    ours = WhisperFeatureExtractor(feature_size=mels)(audio)
    ref = Reference(feature_size=mels)(
        audio, sampling_rate=16000, return_tensors="np"
    ).input_features
    assert ours.shape == ref.shape == (2, mels, 3000)
    np.testing.assert_allclose(ours, ref, atol=1e-4)


def test_longer_than_a_window_is_refused_by_the_extractor() -> None:
    with pytest.raises(PreprocessingError, match="exceed one 30 s window"):
        WhisperFeatureExtractor()(np.zeros(480001, np.float32))


def test_wav_and_flac_files(tmp_path: Path) -> None:
    import soundfile

    t = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    for fmt, subtype in (("WAV", "PCM_16"), ("FLAC", "PCM_24")):
        path = tmp_path / f"tone.{fmt.lower()}"
        soundfile.write(path, tone, 16000, format=fmt, subtype=subtype)
        np.testing.assert_allclose(load_audio(path), tone, atol=1e-4)


def test_stereo_is_downmixed_by_averaging(tmp_path: Path) -> None:
    import soundfile

    rng = np.random.default_rng(1)
    stereo = (rng.standard_normal((8000, 2)) * 0.2).astype(np.float32)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, stereo, 16000, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path), stereo.mean(axis=1), atol=1e-6)
    np.testing.assert_allclose(load_audio(stereo, 16000), stereo.mean(axis=1), atol=1e-6)
    pcm = (stereo * 32767).astype(np.int16)
    np.testing.assert_allclose(
        load_audio((pcm, 16000)), pcm.astype(np.float64).mean(axis=1) / 32768, atol=1e-6
    )


def test_other_sampling_rates_are_resampled_band_limited(tmp_path: Path) -> None:
    import soundfile

    rate = 44100
    t = np.arange(rate) / rate
    low = np.sin(2 * np.pi * 1000 * t)
    path = tmp_path / "cd.wav"
    soundfile.write(path, (0.5 * low).astype(np.float32), rate, subtype="FLOAT")
    audio = load_audio(path)
    assert len(audio) == 16000
    expected = 0.5 * np.sin(2 * np.pi * 1000 * np.arange(16000) / 16000)
    assert np.max(np.abs(audio - expected)[100:-100]) < 1e-3
    # 12 kHz is above the new Nyquist frequency (8 kHz): filtered out, not aliased to 4 kHz
    high = resample(np.sin(2 * np.pi * 12000 * t).astype(np.float32), rate, 16000)
    assert np.max(np.abs(high[100:-100])) < 1e-2
    up = resample(np.sin(2 * np.pi * 440 * np.arange(8000) / 8000).astype(np.float32), 8000, 16000)
    np.testing.assert_allclose(
        up[100:-100], np.sin(2 * np.pi * 440 * np.arange(16000) / 16000)[100:-100], atol=1e-3
    )


def test_bad_audio_raises(tmp_path: Path) -> None:
    with pytest.raises(PreprocessingError, match="without its sampling rate"):
        load_audio(np.zeros(100, np.float32))
    with pytest.raises(PreprocessingError, match="NaN or infinite"):
        load_audio(np.array([0.0, np.nan]), 16000)
    with pytest.raises(PreprocessingError, match="empty"):
        load_audio(np.zeros(0, np.float32), 16000)
    with pytest.raises(PreprocessingError, match="transpose a \\(channels, samples\\) array"):
        load_audio(np.zeros((2, 16000), np.float32), 16000)
    with pytest.raises(PreprocessingError, match="sampling rate must be a positive int"):
        load_audio(np.zeros(10, np.float32), -5)
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(PreprocessingError, match="cannot decode audio file"):
        load_audio(broken)
    with pytest.raises(PreprocessingError, match="does not exist"):
        load_audio(tmp_path / "missing.flac")


# ----------------------------------------------------------------------------- audio bounds


@pytest.mark.timeout(10)
@pytest.mark.parametrize("rate", [1_000_003, 2_147_483_647])
def test_a_wav_claiming_an_absurd_rate_is_refused_from_its_header(
    tmp_path: Path, rate: int
) -> None:
    path = tmp_path / "claims.wav"
    path.write_bytes(wav_claiming(rate))
    assert path.stat().st_size == 52
    started = time.perf_counter()
    with pytest.raises(PreprocessingError, match=f"sampling rate {rate} Hz is outside .*384000"):
        load_audio(path)
    assert time.perf_counter() - started < 1.0


@pytest.mark.timeout(10)
def test_an_absurd_rate_for_an_array_or_a_target_is_refused() -> None:
    started = time.perf_counter()
    with pytest.raises(PreprocessingError, match="1000003 Hz is outside"):
        load_audio(np.zeros(100, np.float32), sampling_rate=1000003)
    with pytest.raises(PreprocessingError, match="1000000000000 Hz is outside"):
        load_audio((np.zeros(100, np.float32), 10**12))
    with pytest.raises(PreprocessingError, match="target_rate 500000 Hz is outside"):
        load_audio(np.zeros(100, np.float32), 16000, target_rate=500_000)
    with pytest.raises(PreprocessingError, match="orig_rate"):
        resample(np.zeros(100, np.float32), 2**31 - 1, 16000)
    assert time.perf_counter() - started < 1.0
    assert len(load_audio(np.zeros(384, np.float32), 384_000)) == 16  # the range's ends work
    assert len(load_audio(np.zeros(3, np.float32), 1)) == 48000


def test_duration_and_sample_bounds_are_checked_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "silence.flac"
    path.write_bytes(flac_of_silence(20.0))
    assert len(load_audio(path, max_seconds=20)) == 320_000
    with pytest.raises(PreprocessingError, match=r"20\.0 s of audio .* bound of 10 s"):
        load_audio(path, max_seconds=10)
    with pytest.raises(PreprocessingError, match="320000 samples .* bound of 100000"):
        load_audio(path, max_samples=100_000)
    samples, rate = read_audio(io.BytesIO(path.read_bytes()), name="upload", max_seconds=30)
    assert samples.shape == (320_000, 1) and rate == 16000
    with pytest.raises(PreprocessingError, match="upload: sampling rate 16000 Hz is outside"):
        read_audio(io.BytesIO(path.read_bytes()), name="upload", sampling_rates=(1, 8000))


def test_array_bounds_cover_duration_and_the_resampled_length() -> None:
    with pytest.raises(PreprocessingError, match="2.0 s of audio"):
        load_audio(np.zeros(16000, np.float32), 8000, max_seconds=1.5)
    with pytest.raises(PreprocessingError, match="resampling 1000 samples from 1 Hz"):
        load_audio(np.zeros(1000, np.float32), 1, max_samples=10**6)
    with pytest.raises(PreprocessingError, match="max_seconds must be a positive number"):
        load_audio(np.zeros(10, np.float32), 16000, max_seconds=0)
    with pytest.raises(PreprocessingError, match="max_samples must be a positive int"):
        load_audio(np.zeros(10, np.float32), 16000, max_samples=-1)


def test_an_undecodable_file_object_is_not_echoed() -> None:
    with pytest.raises(PreprocessingError) as info:
        read_audio(io.BytesIO(b"not audio at all"))
    assert "BytesIO" not in str(info.value) and "0x" not in str(info.value)


# ----------------------------------------------------------------------------- image bounds


@pytest.mark.timeout(10)
def test_an_image_header_claiming_too_many_pixels_is_refused_before_decoding(
    tmp_path: Path,
) -> None:
    from PIL import Image

    path = tmp_path / "bomb.png"
    path.write_bytes(png_claiming(60_000, 60_000))  # 3.6 billion pixels in ~100 bytes
    started = time.perf_counter()
    with pytest.raises(PreprocessingError, match="decompression bomb|over the bound"):
        load_image(path)  # Pillow's own DecompressionBombError, turned into ours
    path.write_bytes(png_claiming(9000, 9000))  # 81 M: under Pillow's limit, over ours
    with pytest.raises(PreprocessingError, match="9000x9000 is 81000000 pixels, over the bound"):
        load_image(path)
    with pytest.raises(PreprocessingError, match="over the bound of 1000"):
        load_image(Image.open(path), max_pixels=1000)  # opened, not yet decoded
    assert time.perf_counter() - started < 1.0
    with pytest.raises(PreprocessingError, match="max_pixels must be a positive int"):
        load_image(path, max_pixels=0)


def test_a_pillow_bomb_warning_raised_as_an_error_becomes_ours(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "wide.png"
    path.write_bytes(png_claiming(2000, 50))
    with (
        warnings.catch_warnings(),
        pytest.MonkeyPatch.context() as patch,
    ):
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        patch.setattr(Image, "MAX_IMAGE_PIXELS", 60_000)  # warns above 60 k, errors above 120 k
        with pytest.raises(PreprocessingError, match="decompression bomb"):
            load_image(path)


def test_resizing_is_bounded_too(tmp_path: Path) -> None:
    thin = np.zeros((1, 4000, 3), np.uint8)  # shortest edge 1 -> 224 x 896000 after resizing
    processor = ImageProcessor(size={"shortest_edge": 224}, do_center_crop=True)
    with pytest.raises(PreprocessingError, match="gives 896000x224 pixels, over the bound"):
        processor(thin)
    assert processor(np.zeros((224, 300, 3), np.uint8)).shape == (1, 3, 224, 224)


def test_awkward_rates_resample_in_bounded_memory_and_stay_accurate() -> None:
    """383,999 -> 16,000 Hz has 16,000 exact filter phases of 769 taps (a gigabyte of table
    and windows before); the table is capped and the phase rounded to a tabulated one."""
    import tracemalloc

    rate = 383_999
    x = np.sin(2 * np.pi * 440 * np.arange(2 * rate) / rate).astype(np.float32)
    tracemalloc.start()
    try:
        y = resample(x, rate, 16000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert y.dtype == np.float32 and len(y) == math.ceil(len(x) * 16000 / rate)
    assert peak < 160 * 2**20, f"peak {peak / 2**20:.0f} MiB"
    expected = np.sin(2 * np.pi * 440 * np.arange(len(y)) / 16000)
    assert np.abs(y[200:-200] - expected[200:-200]).max() < 1e-3


def test_rounded_phases_agree_with_the_exact_filter(monkeypatch: pytest.MonkeyPatch) -> None:
    from ipfs_accelerate.models.preprocessing import audio

    rng = np.random.default_rng(0)
    x = rng.standard_normal(44100).astype(np.float32)
    exact = resample(x, 44100, 16000)  # 160 phases: all tabulated
    monkeypatch.setattr(audio, "_MAX_PHASES", 64)
    rounded = resample(x, 44100, 16000)
    assert len(rounded) == len(exact)
    assert 0 < np.abs(rounded - exact).max() < 0.05 * np.abs(exact).max()
