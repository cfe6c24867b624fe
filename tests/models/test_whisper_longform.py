"""Whisper timestamps, long-form decoding, fallback, prompts, language detection and word
timestamps against transformers on the same seeded checkpoint and audio.

The checkpoint is a tiny random Whisper whose vocabulary has the 1501 timestamp tokens
(``<|0.00|>`` .. ``<|30.00|>``) after ``<|notimestamps|>``, as the real ones do. A random model
emits timestamps readily under Whisper's rules (a window must open with one, and one is forced
whenever the timestamps together outweigh every single text token, which 1501 random logits do
often), so no weights are biased: seed 5 with the audio below gives many segments per window,
windows that end inside a segment (the next window starts at that segment's start) and
segments that end with a single timestamp. The audio is a 64 s warbling tone switched on and
off every few seconds over weak seeded noise, so that the windows' features differ.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import InvalidArgumentError, PreprocessingError
from ipfs_accelerate.models.pipelines import SpeechRecognizer
from tests.models import _checkpoints

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

RATE = 16000
MAX_TARGET_POSITIONS = 96


def make_timestamped_whisper(directory: Path, seed: int = 5) -> Path:
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    directory.mkdir(parents=True, exist_ok=True)
    stamps = [f"<|{i * 0.02:.2f}|>" for i in range(1501)]
    tok = _checkpoints.bpe_tokenizer(
        directory / "tokenizer.json", _checkpoints.WHISPER_SPECIALS + stamps, clip_style=False
    )
    ids = {s: tok.token_to_id(s) for s in _checkpoints.WHISPER_SPECIALS}
    torch.manual_seed(seed)
    config = WhisperConfig(
        vocab_size=tok.get_vocab_size(), num_mel_bins=80, d_model=32, encoder_layers=2,
        encoder_attention_heads=4, decoder_layers=2, decoder_attention_heads=4,
        encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=1500,
        max_target_positions=MAX_TARGET_POSITIONS,
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
        suppress_tokens=[], begin_suppress_tokens=[],
    )  # fmt: skip
    model = WhisperForConditionalGeneration(config).eval()
    _checkpoints._perturb(model, seed, gain=1.0)
    model.generation_config = GenerationConfig(
        decoder_start_token_id=ids["<|startoftranscript|>"], eos_token_id=ids["<|endoftext|>"],
        pad_token_id=ids["<|endoftext|>"], bos_token_id=ids["<|endoftext|>"],
        max_length=MAX_TARGET_POSITIONS,
        suppress_tokens=[ids["<|startoflm|>"], ids["<|startofprev|>"]],
        begin_suppress_tokens=[ids["<|endoftext|>"]],
        lang_to_id={"<|en|>": ids["<|en|>"], "<|fr|>": ids["<|fr|>"], "<|de|>": ids["<|de|>"]},
        task_to_id={"transcribe": ids["<|transcribe|>"], "translate": ids["<|translate|>"]},
        no_timestamps_token_id=ids["<|notimestamps|>"], prev_sot_token_id=ids["<|startofprev|>"],
        is_multilingual=True, alignment_heads=[[0, 1], [1, 2], [1, 3]],
    )  # fmt: skip
    model.save_pretrained(directory, safe_serialization=True)
    _checkpoints._write_json(
        directory / "preprocessor_config.json",
        {
            "feature_extractor_type": "WhisperFeatureExtractor", "feature_size": 80,
            "sampling_rate": 16000, "hop_length": 160, "chunk_length": 30, "n_fft": 400,
            "padding_value": 0.0,
        },
    )  # fmt: skip
    return directory


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tone = 0.3 * np.sin(2 * np.pi * 220 * t * (1 + 0.3 * np.sin(t))) * (np.sin(t * 0.7) > 0)
    return (tone + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


@pytest.fixture(scope="module")
def stamped_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_timestamped_whisper(tmp_path_factory.mktemp("whisper_ts"))


@pytest.fixture(scope="module")
def hf(stamped_dir: Path) -> Any:
    from transformers import WhisperForConditionalGeneration

    return WhisperForConditionalGeneration.from_pretrained(stamped_dir).eval()


@pytest.fixture(scope="module")
def ours(stamped_dir: Path) -> SpeechRecognizer:
    return SpeechRecognizer.from_pretrained(stamped_dir, device="cpu", sharing=False)


@pytest.fixture(scope="module")
def long_audio() -> np.ndarray:
    return speech_like(64.0)


@pytest.fixture(scope="module")
def two_windows() -> np.ndarray:
    """The shortest audio that takes two windows (the second resumed inside the first)."""
    return speech_like(35.0)


@pytest.fixture(scope="module")
def ours_two_windows(ours: SpeechRecognizer, two_windows: np.ndarray) -> list[Any]:
    """Our greedy English segments of ``two_windows``, previous text conditioned."""
    return ours.transcribe_segments(
        (two_windows, RATE), "en", return_timestamps=True, condition_on_prev_tokens=True
    )


@pytest.fixture(scope="module")
def ours_en(ours: SpeechRecognizer, long_audio: np.ndarray) -> list[Any]:
    """Our greedy English long-form segments with word timings (several tests read them)."""
    return ours.transcribe_segments((long_audio, RATE), "en", word_timestamps=True)


@pytest.fixture(scope="module")
def hf_en(hf: Any, long_audio: np.ndarray) -> list[dict[str, Any]]:
    return hf_long_form(hf, long_audio, language="en", return_token_timestamps=True)


def long_features(audio: np.ndarray) -> Any:
    from transformers import WhisperFeatureExtractor

    return WhisperFeatureExtractor()(
        audio, sampling_rate=RATE, truncation=False, padding="longest",
        return_attention_mask=True, return_tensors="pt",
    )  # fmt: skip


def hf_long_form(hf: Any, audio: np.ndarray, **kwargs: Any) -> list[dict[str, Any]]:
    features = long_features(audio)
    with torch.no_grad():
        out = hf.generate(
            features.input_features,
            attention_mask=features.attention_mask,
            return_timestamps=True,
            return_segments=True,
            **kwargs,
        )
    segments: list[dict[str, Any]] = out["segments"][0]
    return segments


def assert_same_segments(ours: list[Any], ref: list[dict[str, Any]]) -> None:
    assert [s.tokens for s in ours] == [r["tokens"].tolist() for r in ref]
    np.testing.assert_allclose([s.start for s in ours], [float(r["start"]) for r in ref])
    np.testing.assert_allclose([s.end for s in ours], [float(r["end"]) for r in ref])


def test_long_form_segments_equal_transformers_generate(
    ours: SpeechRecognizer, hf: Any, long_audio: np.ndarray
) -> None:
    """Language detected from the first window, previous segments fed to the next window."""
    # transformers adds no task token when neither language nor task is given; we always do
    ref = hf_long_form(
        hf, long_audio, language=None, task="transcribe", condition_on_prev_tokens=True
    )
    got = ours.transcribe_segments((long_audio, RATE), None, condition_on_prev_tokens=True)
    assert_same_segments(got, ref)
    # the input exercises what the test is about: several windows, > 60 s of timestamps,
    # windows resumed inside a segment (a window's first segment starts after its seek)
    assert len(got) > 8 and got[-1].end > 60.0
    assert len({s.avg_logprob for s in got}) >= 3
    stamp = ours.generation.no_timestamps + 1
    assert got[0].tokens[0] >= stamp and got[-1].tokens[-1] >= stamp
    assert {s.language for s in got} == {next(iter(ours.detect_language((long_audio, RATE))))}


def test_initial_prompt_equals_transformers_prompt_ids(
    ours: SpeechRecognizer, hf: Any, two_windows: np.ndarray, ours_two_windows: list[Any]
) -> None:
    prompt = ours._prompt_ids("the quick brown fox", None)
    assert prompt is not None and prompt[0] == ours.generation.prev_sot and len(prompt) > 3
    # conditioned: the prompt opens the text history of the second window too; not: it
    # precedes every window
    audio = two_windows
    for condition in (True, False):
        ref = hf_long_form(
            hf, audio, language="en", condition_on_prev_tokens=condition,
            prompt_ids=torch.tensor(prompt),
        )  # fmt: skip
        got = ours.transcribe_segments(
            (audio, RATE), "en", initial_prompt="the quick brown fox",
            condition_on_prev_tokens=condition,
        )  # fmt: skip
        assert_same_segments(got, ref)
        if condition:  # the prompt counts
            assert [s.tokens for s in ours_two_windows] != [s.tokens for s in got]


def test_short_form_timestamps_equal_transformers_pipeline(
    ours: SpeechRecognizer, hf: Any, stamped_dir: Path
) -> None:
    from transformers import AutoFeatureExtractor, AutoTokenizer, pipeline

    audio = speech_like(12.0)
    # the module's model, not a second load of the checkpoint
    asr = pipeline(
        "automatic-speech-recognition", model=hf,
        tokenizer=AutoTokenizer.from_pretrained(stamped_dir),
        feature_extractor=AutoFeatureExtractor.from_pretrained(stamped_dir), device="cpu",
    )  # fmt: skip
    # the pipeline defaults to 5 beams; greedy is what this compares
    ref = asr(
        {"raw": audio, "sampling_rate": RATE},
        return_timestamps=True,
        generate_kwargs={"language": "en", "num_beams": 1},
    )
    got = ours.transcribe((audio, RATE), "en", return_timestamps=True)
    assert len(got) >= 3
    # the pipeline rebuilds its chunks from the concatenated tokens, which loses the segment
    # boundaries where a second window resumes inside the first; up to there they must agree
    first_window = [(s.start, s.end) for s in got if s.avg_logprob == got[0].avg_logprob]
    assert len(first_window) >= 2
    ref_spans = [c["timestamp"] for c in ref["chunks"][: len(first_window)]]
    np.testing.assert_allclose(first_window, ref_spans)
    # and the segments are generate()'s on the pipeline's features
    features = asr.feature_extractor(audio, sampling_rate=RATE, return_tensors="pt")
    with torch.no_grad():
        segments = asr.model.generate(
            features.input_features, language="en", return_timestamps=True,
            return_segments=True,
        )["segments"][0]  # fmt: skip
    assert_same_segments(got, segments)
    stamp = ours.generation.no_timestamps + 1
    text_tokens = [t for s in got for t in s.tokens if t < stamp]
    assert ref["text"] == ours.tokenizer.decode(text_tokens)


def test_word_timestamps_within_a_frame_of_return_token_timestamps(
    ours_en: list[Any], hf_en: list[dict[str, Any]]
) -> None:
    got, ref = ours_en, hf_en
    assert_same_segments(got, ref)
    checked = 0
    for segment, reference in zip(got, ref, strict=True):
        times = reference["token_timestamps"].numpy()
        position = 0
        for word in segment.words:
            position = segment.tokens.index(word.tokens[0], position)
            assert abs(word.start - times[position]) <= 0.02 + 1e-6
            last = position + len(word.tokens)
            if last < len(times):
                assert abs(word.end - times[last]) <= 0.02 + 1e-6
            position = last
            checked += 1
    assert checked >= 10
    # the alignment is not trivial: words are spread over the audio
    starts = [w.start for s in got for w in s.words]
    assert len(set(np.round(starts, 2))) > 5


def test_language_probabilities_equal_transformers(
    ours: SpeechRecognizer, hf: Any, long_audio: np.ndarray
) -> None:
    features = long_features(long_audio).input_features[:, :, :3000]
    lang_to_id = hf.generation_config.lang_to_id
    with torch.no_grad():
        start = torch.tensor([[hf.generation_config.decoder_start_token_id]])
        logits = hf(input_features=features, decoder_input_ids=start).logits[0, -1]
        detected = hf.detect_language(input_features=features)
    ids = list(lang_to_id.values())
    expected = torch.softmax(logits[ids].double(), dim=-1).numpy()
    got = ours.detect_language((long_audio, RATE))
    assert list(got) == sorted(got, key=got.__getitem__, reverse=True)
    for (name, _), p in zip(lang_to_id.items(), expected, strict=True):
        assert abs(got[name.strip("<|>")] - p) < 1e-4
    best = next(iter(got))
    assert lang_to_id[f"<|{best}|>"] == int(detected[0])
    assert 0.01 < max(got.values()) < 0.99  # not a degenerate distribution
    short = ours.detect_language((long_audio[: 10 * RATE], RATE))
    assert short != got  # the first window of the 10 s clip is padded differently


def _spy_need_fallback(hf: Any, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    calls: list[tuple[Any, ...]] = []
    original: Callable[..., tuple[bool, bool]] = type(hf)._need_fallback

    def spy(self: Any, seek_sequence: Any, seek_outputs: Any, index: int, *rest: Any) -> Any:
        decision = original(self, seek_sequence, seek_outputs, index, *rest)
        calls.append((float(rest[-1] or 0.0), *decision))
        return decision

    monkeypatch.setattr(type(hf), "_need_fallback", spy)
    return calls


def test_fallback_decisions_equal_transformers(
    ours: SpeechRecognizer,
    hf: Any,
    long_audio: np.ndarray,
    ours_en: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Temperature > 0 samples with different generators here and in torch, so the tokens
    after the first fallback differ; what must agree is every decision up to it: the same
    windows decoded greedily, the same measures, the same window falling back at the same
    threshold, and the next temperature of the schedule tried."""
    logprobs = sorted({s.avg_logprob for s in ours_en})
    # a threshold between the windows' mean log-probabilities: some windows pass, some fall back
    threshold = (logprobs[0] + logprobs[1]) / 2
    schedule = (0.0, 0.4, 0.8)
    calls = _spy_need_fallback(hf, monkeypatch)
    hf_long_form(
        hf, long_audio, language="en", temperature=schedule, logprob_threshold=threshold,
        do_sample=False,
    )  # fmt: skip
    ours.transcribe_segments(
        (long_audio, RATE), "en", temperature=schedule, logprob_threshold=threshold
    )
    attempts = ours.last_attempts
    mine = [(a.temperature, a.needs_fallback, a.skip) for a in attempts]
    first_fallback = next(i for i, call in enumerate(calls) if call[1])
    assert mine[: first_fallback + 1] == calls[: first_fallback + 1]
    assert mine[first_fallback + 1][0] == calls[first_fallback + 1][0] == schedule[1]
    assert all(a.needs_fallback == (a.avg_logprob < threshold) for a in attempts)
    # a window whose every attempt fails keeps the last temperature's output
    last = ours.transcribe_segments(
        (long_audio[: 3 * RATE], RATE), "en", temperature=schedule, logprob_threshold=0.0
    )
    temperatures = [a.temperature for a in ours.last_attempts]
    assert temperatures[:3] == list(schedule) and len(temperatures) % 3 == 0
    assert {s.temperature for s in last} == {schedule[-1]}


def test_compression_ratio_and_no_speech_decisions_equal_transformers(
    ours: SpeechRecognizer,
    hf: Any,
    long_audio: np.ndarray,
    ours_en: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ratios = sorted({s.compression_ratio for s in ours_en})
    no_speech = sorted({s.no_speech_prob for s in ours_en})
    ratio_threshold = (ratios[0] + ratios[-1]) / 2
    # every window counts as low log-probability; the no-speech threshold splits them
    speech_threshold = (no_speech[0] + no_speech[-1]) / 2
    settings = {
        "compression_ratio_threshold": ratio_threshold,
        "logprob_threshold": 0.0,
        "no_speech_threshold": speech_threshold,
    }
    calls = _spy_need_fallback(hf, monkeypatch)
    ref = hf_long_form(hf, long_audio, language="en", temperature=0.0, **settings)
    got = ours.transcribe_segments((long_audio, RATE), "en", **settings)
    mine = [(a.temperature, a.needs_fallback, a.skip) for a in ours.last_attempts]
    assert mine == calls
    assert any(skip for _, _, skip in mine) and not all(skip for _, _, skip in mine)
    assert_same_segments(got, ref)


def test_beam_search_equals_transformers_num_beams(
    ours: SpeechRecognizer, hf: Any, two_windows: np.ndarray, ours_two_windows: list[Any]
) -> None:
    """Long-form beam search: two windows, previous text conditioned (two beams already
    exercise the beam bookkeeping, cache reordering and the per-window restart)."""
    audio = two_windows
    features = long_features(audio)
    with torch.no_grad():
        ref = hf.generate(
            features.input_features, attention_mask=features.attention_mask, language="en",
            num_beams=2, return_timestamps=True, return_segments=True,
            condition_on_prev_tokens=True,
        )["segments"][0]  # fmt: skip
    got = ours.transcribe_segments(
        (audio, RATE), "en", num_beams=2, return_timestamps=True, condition_on_prev_tokens=True
    )
    assert_same_segments(got, ref)
    greedy = ours_two_windows
    assert [s.tokens for s in greedy] != [s.tokens for s in got]  # the beams found another path


def test_stream_yields_each_window_as_it_is_decoded(
    ours: SpeechRecognizer, long_audio: np.ndarray, ours_en: list[Any]
) -> None:
    stream = ours.transcribe((long_audio, RATE), "en", stream=True)
    first = next(stream)
    windows_so_far = len(ours.last_attempts)
    rest = list(stream)
    assert [(s.tokens, s.start, s.end) for s in [first, *rest]] == [
        (s.tokens, s.start, s.end) for s in ours_en
    ]
    assert windows_so_far == 1 < len(ours.last_attempts)


@pytest.mark.parametrize("case", ["silence", "noise", "clipped", "8k", "96k", "stereo", "short"])
def test_awkward_audio_decodes_or_raises_typed(ours: SpeechRecognizer, case: str) -> None:
    rng = np.random.default_rng(1)
    # two windows where the content matters; the rate and channel conversions need only one
    audio, rate = speech_like(35.0 if case in ("silence", "noise", "clipped") else 8.0), RATE
    if case == "silence":
        audio = np.zeros(35 * RATE, dtype=np.float32)
    elif case == "noise":
        audio = rng.uniform(-1, 1, 35 * RATE).astype(np.float32)
    elif case == "clipped":
        audio = np.clip(audio * 40.0, -1.0, 1.0)
    elif case == "8k":
        audio, rate = audio[::2].copy(), 8000
    elif case == "96k":
        audio, rate = np.repeat(audio, 6), 96000
    elif case == "stereo":
        audio = np.stack([audio, -audio[::-1]], axis=1)
    elif case == "short":
        audio = audio[:100]
    segments = ours.transcribe_segments((audio, rate), "en", return_timestamps=True)
    for s in segments:
        assert 0.0 <= s.start <= s.end and np.isfinite(s.avg_logprob)
        assert 0.0 <= s.no_speech_prob <= 1.0


def test_bad_arguments_raise_typed_errors(ours: SpeechRecognizer, whisper_dir: Path) -> None:
    audio = (speech_like(5.0), RATE)
    with pytest.raises(PreprocessingError, match="empty"):
        ours.transcribe_segments((np.zeros(0, dtype=np.float32), RATE), return_timestamps=True)
    with pytest.raises(InvalidArgumentError, match="at most 16"):
        ours.transcribe_segments(audio, num_beams=17)
    with pytest.raises(InvalidArgumentError, match="num_beams"):
        ours.transcribe_segments(audio, num_beams=0)
    with pytest.raises(InvalidArgumentError, match="temperature"):
        ours.transcribe_segments(audio, temperature=(0.0, float("nan")))
    with pytest.raises(InvalidArgumentError, match="temperature"):
        ours.transcribe_segments(audio, temperature=())
    with pytest.raises(InvalidArgumentError, match="no_speech_threshold needs"):
        ours.transcribe_segments(audio, no_speech_threshold=0.6)
    with pytest.raises(InvalidArgumentError, match="prompt_ids"):
        ours.transcribe_segments(audio, prompt_ids=[10**9])
    with pytest.raises(InvalidArgumentError, match="max_target_positions"):
        ours.transcribe_segments(audio, "en", initial_prompt="the cat " * 60)
    with pytest.raises(InvalidArgumentError, match="seed"):
        ours.transcribe_segments(audio, seed=-1)
    plain = SpeechRecognizer.from_pretrained(whisper_dir, device="cpu", sharing=False)
    with pytest.raises(InvalidArgumentError, match="timestamp tokens"):
        plain.transcribe_segments(audio, return_timestamps=True)
    # a checkpoint without timestamp tokens still takes the fallback settings per window
    fallback = plain.transcribe_segments(audio, "en", temperature=(0.0, 0.5), logprob_threshold=0.0)
    assert len(fallback) == 1 and fallback[0].temperature == 0.5
