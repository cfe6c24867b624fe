"""Streaming transcription (``SpeechRecognizer.transcribe_stream``): local agreement, commits
never retracted, bounded buffer, awkward chunking.

Two seeded checkpoints (tests/models/test_whisper_longform.py's timestamped tiny Whisper):

* ``ours``: random weights. Each decode of a longer prefix of the audio may say something
  else entirely (the encoder attends over the whole window), so what a stream commits is not
  the offline transcript; what must hold is that nothing committed is ever retracted, the
  final text is the committed events' text and the buffer stays bounded.
* ``deaf``: the same checkpoint with the decoder's cross-attention output projections zeroed,
  so every decode of every prefix is the same token sequence (timestamps included). There,
  for audio within one untrimmed buffer, "the committed text at the end equals the offline
  transcript" is a property of the streaming policy rather than of the weights: a policy that
  commits twice, commits before two decodes agree on a word that later changes, or drops the
  tail at the end fails it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import InvalidArgumentError, PreprocessingError
from ipfs_accelerate.models.pipelines import SpeechRecognizer, StreamEvent
from tests.models.test_whisper_longform import RATE, make_timestamped_whisper, speech_like

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def stamped_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_timestamped_whisper(tmp_path_factory.mktemp("whisper_stream"))


@pytest.fixture(scope="module")
def ours(stamped_dir: Path) -> SpeechRecognizer:
    return SpeechRecognizer.from_pretrained(stamped_dir, device="cpu", sharing=False)


@pytest.fixture(scope="module")
def deaf(stamped_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> SpeechRecognizer:
    import shutil

    from transformers import WhisperForConditionalGeneration

    directory = tmp_path_factory.mktemp("whisper_deaf")
    for item in stamped_dir.iterdir():
        shutil.copy(item, directory / item.name)
    model = WhisperForConditionalGeneration.from_pretrained(stamped_dir)
    with torch.no_grad():
        for layer in model.model.decoder.layers:
            layer.encoder_attn.out_proj.weight.zero_()
            layer.encoder_attn.out_proj.bias.zero_()
    model.save_pretrained(directory, safe_serialization=True)
    return SpeechRecognizer.from_pretrained(directory, device="cpu", sharing=False)


def chunks_of(audio: np.ndarray, sizes: list[int]) -> Iterator[np.ndarray]:
    position, index = 0, 0
    while position < len(audio):
        size = sizes[index % len(sizes)]
        yield audio[position : position + size]
        position += size
        index += 1


#: few tokens per decode keep each decode cheap; the policy is the same
FAST = {"max_new_tokens": 24}
STAMPS = {"return_timestamps": True}


def offline_tokens(recognizer: SpeechRecognizer, audio: Any, rate: int = RATE) -> list[int]:
    segments = recognizer.transcribe_segments((audio, rate), "en", return_timestamps=True, **FAST)
    return [t for s in segments for t in s.tokens if t < recognizer.generation.eos]


def check_never_retracted(events: list[StreamEvent]) -> list[int]:
    """Committed events only extend the transcript; ``done`` holds exactly what they
    committed, in order. Returns the committed tokens."""
    committed: list[int] = []
    last_end = 0.0
    for event in events:
        if event.type == "committed":
            assert event.words
            assert event.words[0].start >= last_end - 0.1 - 1e-9
            last_end = max(last_end, event.words[-1].end)
            committed.extend(t for w in event.words for t in w.tokens)
    assert events[-1].type == "done"
    assert [e.type for e in events].count("done") == 1
    assert [t for w in events[-1].words for t in w.tokens] == committed
    return committed


def test_committed_text_equals_offline_transcript_in_1s_chunks(deaf: SpeechRecognizer) -> None:
    audio = speech_like(8.0, seed=3)
    offline = offline_tokens(deaf, audio)
    assert len(offline) >= 5
    # the audio stays within trim_s: a trimmed buffer is new audio to a deaf decoder, which
    # says its one sentence again (trimming is checked on the random weights below)
    events = list(deaf.transcribe_stream(chunks_of(audio, [RATE]), "en", **FAST))
    assert check_never_retracted(events) == offline
    # the words were committed while audio arrived, not all by the end-of-stream flush
    committed = [e for e in events[:-2] if e.type == "committed"]
    assert committed


def _scripted_speaker(
    recognizer: SpeechRecognizer,
    forced: list[bool],
    *,
    end_after_prefix: bool,
    until: float = float("inf"),
) -> Any:
    """A stand-in for ``transcribe_segments`` that hears word i from 0.5 i to 0.5 i + 0.4 s
    (one segment per word, timestamps and a text token each), every word that ends 0.2 s
    before the end of the audio it is given; with ``end_after_prefix`` a decode forced to
    start with committed words writes those and then its end token, as a decoder led
    straight to its end by the forced tokens would; silent from ``until`` seconds on. Records
    in ``forced`` whether each decode was given a prefix."""
    from ipfs_accelerate.models.pipelines._speech import TranscriptSegment
    from ipfs_accelerate.models.pipelines._speech_decoding import WordTiming

    stamp = (recognizer.generation.no_timestamps or 0) + 1

    def transcribe_segments(audio: Any, *args: Any, **kwargs: Any) -> list[TranscriptSegment]:
        samples, rate = audio
        prefix = kwargs.get("prefix_tokens") or []
        forced.append(bool(prefix))
        segments = []
        for i in range(int(len(samples) / rate / 0.5) + 1):
            start, end = 0.5 * i, 0.5 * i + 0.4
            if end > min(len(samples) / rate - 0.2, until):
                break
            tokens = [stamp + round(start / 0.02), 400 + i, stamp + round(end / 0.02)]
            if end_after_prefix and prefix and tokens[1] not in prefix:
                break
            word = WordTiming(f" w{i}", start, end, [400 + i])
            segments.append(TranscriptSegment(start, end, f" w{i}", tokens, "en", words=[word]))
        return segments

    return transcribe_segments


@pytest.mark.parametrize("retry", [True, False])
def test_a_decode_empty_after_the_forced_words_is_made_again_without_them(
    deaf: SpeechRecognizer, monkeypatch: pytest.MonkeyPatch, retry: bool
) -> None:
    """A decode forced to start with the committed words that comes back without a new word
    over 2 s or more of audio after them (as when the forced tokens lead the decoder straight
    to its end token) is made again without the forced words, so nothing is lost; without
    the retry (RETRY_FRESH_S out of reach) the same stream commits its first word only."""
    from ipfs_accelerate.models.pipelines import _speech_stream

    if not retry:
        monkeypatch.setattr(_speech_stream, "RETRY_FRESH_S", 1e9)
    audio = speech_like(10.0, seed=3)
    forced: list[bool] = []
    honest = _scripted_speaker(deaf, [], end_after_prefix=False)
    expected = [t for s in honest((audio, RATE)) for t in s.tokens[1:2]]  # the text tokens
    monkeypatch.setattr(
        deaf, "transcribe_segments", _scripted_speaker(deaf, forced, end_after_prefix=True)
    )
    stream = deaf.transcribe_stream(chunks_of(audio, [RATE]), "en", min_chunk_s=1.0, **FAST)
    committed = check_never_retracted(list(stream))
    assert any(forced)  # forced decodes were made, and each came back without a new word
    if retry:
        assert committed == expected
    else:
        assert committed == expected[:1]


def test_beam_search_streams_force_no_words_and_make_no_decode_again(
    deaf: SpeechRecognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Beam search decodes the whole buffer (its beams start at the prompt): no decode is
    given the committed words, and none is made again for lack of a new word after them (the
    speaker is silent for the last 4 s)."""
    from ipfs_accelerate.models.pipelines._speech_stream import LocalAgreementStream

    audio = speech_like(10.0, seed=3)
    forced: list[bool] = []
    monkeypatch.setattr(
        deaf,
        "transcribe_segments",
        _scripted_speaker(deaf, forced, end_after_prefix=True, until=6.0),
    )
    state = LocalAgreementStream(
        deaf, RATE, "en", "transcribe", min_chunk_s=1.0, options={"num_beams": 2}
    )
    for chunk in chunks_of(audio, [RATE]):
        state.feed(chunk)
    done = state.finish()[-1]
    assert len(done.words) == 12 and state.prefix  # committed, with a prefix on record
    assert not any(forced) and state.retries == 0 and state.decodes == len(forced) == 10


def test_a_final_decode_that_hears_nothing_keeps_the_tentative_words(
    deaf: SpeechRecognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream ends; the decode of the audio after the last decode comes back empty where
    the previous decode heard words it had not agreed on yet: those are committed, the stream
    does not end short of its last tentative text."""
    audio = speech_like(10.3, seed=3)
    honest = _scripted_speaker(deaf, [], end_after_prefix=False)
    expected = [t for s in honest((audio[: 10 * RATE], RATE)) for t in s.tokens[1:2]]

    def deaf_to_the_last_decode(audio_in: Any, *args: Any, **kwargs: Any) -> Any:
        samples, rate = audio_in
        return [] if len(samples) > 10 * rate else honest(audio_in, *args, **kwargs)

    monkeypatch.setattr(deaf, "transcribe_segments", deaf_to_the_last_decode)
    stream = deaf.transcribe_stream(chunks_of(audio, [RATE]), "en", min_chunk_s=1.0, **FAST)
    events = list(stream)
    tentative = [e for e in events if e.type == "tentative"]
    assert len(tentative[-1].words) == 2  # heard by the 10 s decode only
    assert check_never_retracted(events) == expected


def test_random_weights_never_retract_and_end_with_everything_committed(
    ours: SpeechRecognizer,
) -> None:
    audio = speech_like(8.0)
    events = list(ours.transcribe_stream(chunks_of(audio, [RATE]), "en", min_chunk_s=1.0, **FAST))
    assert check_never_retracted(events)
    tentative = [e for e in events if e.type == "tentative"]
    assert len(tentative) == 8  # one decode per second of audio
    assert sum(e.type == "committed" for e in events) >= 2


def test_decode_budget_grows_with_the_buffer_unless_max_new_tokens_is_given(
    ours: SpeechRecognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A streaming decode without max_new_tokens writes at most decode_token_budget(buffered
    seconds) tokens per window (smaller constants here, so that the small random model's
    windows are cut); a given max_new_tokens is used as it is."""
    from ipfs_accelerate.models.pipelines import _speech_stream

    assert _speech_stream.decode_token_budget(1.0) == 38
    assert _speech_stream.decode_token_budget(28.0) == 200
    monkeypatch.setattr(_speech_stream, "DECODE_BASE_TOKENS", 2)
    monkeypatch.setattr(_speech_stream, "DECODE_TOKENS_PER_S", 3.0)
    seen: list[tuple[float, int | None, int]] = []
    transcribe = ours.transcribe_segments

    def spy(audio: Any, *args: Any, **kwargs: Any) -> Any:
        segments = transcribe(audio, *args, **kwargs)
        written = sum(len(s.tokens) for s in segments)
        seen.append((len(audio[0]) / audio[1], kwargs.get("max_new_tokens"), written))
        return segments

    monkeypatch.setattr(ours, "transcribe_segments", spy)
    audio = speech_like(3.0)
    list(ours.transcribe_stream(chunks_of(audio, [RATE]), "en", min_chunk_s=1.0))
    assert [(round(b), budget) for b, budget, _ in seen] == [(1, 5), (2, 8), (3, 11)]
    free = [
        sum(len(s.tokens) for s in transcribe((audio[: n * RATE], RATE), "en", **STAMPS))
        for n in (1, 2, 3)
    ]
    # cut: fewer tokens than the same decodes write unbounded (26 to 38 here)
    assert all(w < f for (_, _, w), f in zip(seen, free, strict=True)), (seen, free)
    seen.clear()
    list(
        ours.transcribe_stream(
            chunks_of(speech_like(1.0), [RATE]), "en", min_chunk_s=1.0, max_new_tokens=24
        )
    )
    assert [budget for _, budget, _ in seen] == [24]


def test_buffer_stays_bounded_over_a_long_stream(ours: SpeechRecognizer) -> None:
    """Four minutes fed in 20 s chunks, decoded every 8 s (few, short decodes keep the test
    fast; a chunk is taken min_chunk_s at a time): the buffer any decode sees stays within
    max_buffer_s + min_chunk_s while the stream moves on, and the memory the stream holds
    (numpy's buffers included, as tracemalloc counts them) does not grow from the second
    minute to the fourth: a stream that kept its fed chunks (1.3 MB each) would."""
    import tracemalloc

    seconds = 240.0
    audio = speech_like(seconds, seed=7)
    from ipfs_accelerate.models.pipelines._speech_stream import LocalAgreementStream

    state = LocalAgreementStream(
        ours, RATE, "en", "transcribe", min_chunk_s=8.0, trim_s=12.0, max_buffer_s=20.0,
        options={"max_new_tokens": 8},
    )  # fmt: skip
    events: list[StreamEvent] = []
    held: list[int] = []  # bytes traced after each chunk
    tracemalloc.start()
    try:
        for chunk in chunks_of(audio, [20 * RATE]):
            events.extend(state.feed(chunk))
            held.append(tracemalloc.get_traced_memory()[0])
    finally:
        tracemalloc.stop()
    events.extend(state.finish())
    assert len(held) == 12
    assert max(held[8:]) <= max(held[2:6]) + 256 * 1024, [round(h / 1e6, 2) for h in held]
    check_never_retracted(events)
    assert state.decodes == 30  # one per 8 s; the end adds none (no audio after the last)
    assert 12.0 < state.max_buffer_seen_s <= 28.0 + 1e-6
    assert max(e.buffer_s for e in events) <= 28.0 + 1e-6
    assert state.buffer_start > seconds - 28.0  # trimmed all along, not only at the end


def test_empty_varying_and_multichannel_chunks_equal_plain_1s_chunks(
    deaf: SpeechRecognizer,
) -> None:
    audio = speech_like(4.0, seed=3)
    plain = list(deaf.transcribe_stream(chunks_of(audio, [RATE]), "en", **FAST))
    # 0-length chunks, odd sizes: decodes still happen at each 1 s of audio
    odd = [0, 1234, 0, 7000, 1, 16000, 333, 0, 5432]
    varied = list(deaf.transcribe_stream(chunks_of(audio, odd), "en", **FAST))
    assert [(e.type, e.text) for e in varied] == [(e.type, e.text) for e in plain]
    # int16 stereo at 8 kHz with both channels equal: resampled and averaged like offline
    pcm = np.round(audio[::2] * 32767).astype(np.int16)
    stereo = np.stack([pcm, pcm], axis=1)
    got = list(deaf.transcribe_stream(chunks_of(stereo, [4000]), "en", sampling_rate=8000, **FAST))
    assert check_never_retracted(got) == offline_tokens(deaf, stereo, 8000)


def test_stream_that_stops_midway_and_async_chunks(deaf: SpeechRecognizer) -> None:
    audio = speech_like(3.5, seed=3)
    events = list(deaf.transcribe_stream(chunks_of(audio, [RATE]), "en", **FAST))
    assert check_never_retracted(events) == offline_tokens(deaf, audio)

    async def arriving() -> AsyncIterator[np.ndarray]:
        for chunk in chunks_of(audio, [RATE]):
            await asyncio.sleep(0)
            yield chunk

    async def collect() -> list[StreamEvent]:
        stream = deaf.transcribe_stream(arriving(), "en", **FAST)
        assert isinstance(stream, AsyncIterator)
        return [event async for event in stream]

    got = asyncio.run(collect())
    assert [(e.type, e.text) for e in got] == [(e.type, e.text) for e in events]
    # a consumer that stops early leaves nothing running: the generator just closes
    partial = deaf.transcribe_stream(chunks_of(audio, [RATE]), "en", **FAST)
    assert isinstance(partial, Iterator)
    next(partial)
    partial.close()  # type: ignore[attr-defined]
    # nothing at all: only "done", empty
    assert [(e.type, e.text) for e in deaf.transcribe_stream(iter([]), "en")] == [("done", "")]


@pytest.mark.parametrize(
    ("kwargs", "chunk", "error", "match"),
    [
        ({"trim_s": 40.0}, None, InvalidArgumentError, "trim_s"),
        ({"min_chunk_s": 0.0}, None, InvalidArgumentError, "min_chunk_s"),
        ({"max_buffer_s": float("nan")}, None, InvalidArgumentError, "max_buffer_s"),
        ({"word_timestamps": True}, None, InvalidArgumentError, "word_timestamps"),
        ({"language": "xx"}, None, InvalidArgumentError, "xx"),
        ({}, np.full(10, np.nan, dtype=np.float32), PreprocessingError, "NaN"),
        ({}, np.zeros((10, 2, 2), dtype=np.float32), PreprocessingError, "shape"),
        ({}, np.array(["a"]), PreprocessingError, "dtype"),
    ],
)
def test_bad_stream_arguments_raise_typed(
    ours: SpeechRecognizer, kwargs: dict[str, Any], chunk: Any, error: type, match: str
) -> None:
    with pytest.raises(error, match=match):
        list(ours.transcribe_stream(iter([chunk if chunk is not None else np.zeros(10)]), **kwargs))


def test_decodes_after_a_commit_are_forced_with_the_committed_tokens(
    deaf: SpeechRecognizer, monkeypatch: pytest.MonkeyPatch
) -> None:
    audio = speech_like(8.0, seed=3)
    prefixes: list[list[int]] = []
    plain = deaf.transcribe_segments

    def spy(*args: Any, **kwargs: Any) -> Any:
        prefixes.append(list(kwargs.get("prefix_tokens") or []))
        return plain(*args, **kwargs)

    monkeypatch.setattr(deaf, "transcribe_segments", spy)
    events = list(deaf.transcribe_stream(chunks_of(audio, [RATE]), "en", **FAST))
    # the same committed text as without forcing (the offline transcript)
    assert check_never_retracted(events) == offline_tokens(deaf, audio)
    stamp = (deaf.generation.no_timestamps or 0) + 1
    committed: list[int] = []
    forced = 0
    for event in events:
        if event.type == "committed":
            committed.extend(t for w in event.words for t in w.tokens)
        if event.type == "tentative" and committed:
            forced += 1
    # each decode after a commit starts from the committed text (timestamps included)
    later = [p for p in prefixes if p]
    assert len(later) >= 2
    assert forced >= len(later)
    for prefix in later:
        text = [t for t in prefix if t < stamp]
        assert text == committed[: len(text)]
        assert prefix[0] >= stamp
    assert [t for t in later[-1] if t < stamp] != []


def test_beam_search_streams_decode_the_whole_buffer(deaf: SpeechRecognizer) -> None:
    audio = speech_like(4.0, seed=3)
    options = {"max_new_tokens": 12, "num_beams": 2}
    events = list(deaf.transcribe_stream(chunks_of(audio, [RATE]), "en", **options))
    committed = check_never_retracted(events)
    offline = deaf.transcribe_segments((audio, RATE), "en", return_timestamps=True, **options)
    assert committed == [t for s in offline for t in s.tokens if t < deaf.generation.eos]


def test_agreement_sets_marks_and_case_aside_except_on_the_new_decodes_last_word() -> None:
    from ipfs_accelerate.models.pipelines._speech_stream import StreamWord, _agreement

    def words(*texts: str) -> list[StreamWord]:
        return [StreamWord(t, float(i), i + 1.0) for i, t in enumerate(texts)]

    # a decode that stopped at "over" wrote "over." (the buffer ended there); the next one
    # goes on: they agree on the word, and the new decode's "over" is the one committed
    assert (
        _agreement(words(" The", " quick", " over."), words(" the", " quick", " over", " it")) == 3
    )
    # the new decode's last word takes its mark from the buffer's end: not agreed on yet
    assert _agreement(words(" The", " over"), words(" The", " over.")) == 1
    assert _agreement(words(" The", " over."), words(" The", " over.")) == 2
    # other words are disagreements as before
    assert _agreement(words(" code's", " not"), words(" code", " and")) == 0
    assert _agreement(words(" a", " b", " c"), words(" a", " x", " c")) == 1
    assert _agreement([], words(" a")) == 0


def test_buffer_is_cut_where_the_committed_words_end_a_sentence(deaf: SpeechRecognizer) -> None:
    """Past trim_s the buffer is cut after the committed words when they end a sentence (a
    cut inside a sentence can fall into the next word's onset, which the next decode then
    leaves out); otherwise only once the buffer is halfway to max_buffer_s."""
    from ipfs_accelerate.models.pipelines._speech_stream import LocalAgreementStream, StreamWord

    state = LocalAgreementStream(deaf, RATE, "en", "transcribe")  # trim 15 s, max 28 s

    def buffered(seconds: float) -> None:
        state._pieces = [np.zeros(int(seconds * RATE), dtype=np.float32)]
        state._buffered = int(seconds * RATE)
        state.buffer_start = 0.0

    buffered(16.0)
    state.committed = [StreamWord(" It rained.", 1.0, 2.0), StreamWord(" The", 2.4, 2.6)]
    state._trim(16.0)
    assert state.buffer_start == 0.0  # "The" starts a sentence: wait
    state.committed.append(StreamWord(" weather was fine.", 2.6, 4.0))
    state._trim(16.0)
    assert state.buffer_start == 4.0 and state._buffered == 12 * RATE
    buffered(22.0)
    state.committed = [StreamWord(" and", 5.0, 5.5)]
    state._trim(22.0)  # no sentence end, but past (15 + 28) / 2 s: cut after the last word
    assert state.buffer_start == 5.5
    buffered(14.0)
    state.committed = [StreamWord(" Done.", 5.0, 5.5)]
    state._trim(14.0)  # within trim_s: nothing cut
    assert state.buffer_start == 0.0


class _DecodeClock:
    """A clock under which every decode takes ``cost`` seconds (the stream reads it before
    and after each decode)."""

    def __init__(self, cost: float) -> None:
        self.now, self.cost, self.calls = 0.0, cost, 0

    def __call__(self) -> float:
        self.calls += 1
        if self.calls % 2 == 0:  # the reading after a decode
            self.now += self.cost
        return self.now


@pytest.mark.parametrize(
    ("cost", "decodes", "step_s"),
    [
        (0.2, 20, 0.5),  # faster than the audio: a decode every min_chunk_s (0.5 s)
        (1.5, 7, 1.5),  # slower: at 0.5, 2, 3.5, 5, 6.5, 8 and 9.5 s
        (2.5, 5, 2.0),  # much slower: every 2 s, the room a 28 s buffer leaves in a window
    ],
)
def test_a_stream_whose_decodes_are_slower_than_its_audio_keeps_pace(
    ours: SpeechRecognizer, cost: float, decodes: int, step_s: float
) -> None:
    from ipfs_accelerate.models.pipelines._speech_stream import LocalAgreementStream

    audio = speech_like(10.0, seed=5)
    state = LocalAgreementStream(
        ours, RATE, "en", "transcribe", options={"max_new_tokens": 8}, clock=_DecodeClock(cost)
    )
    events: list[StreamEvent] = []
    for chunk in chunks_of(audio, [RATE]):
        events.extend(state.feed(chunk))
    assert state.decodes == decodes
    assert state.step == round(step_s * RATE)
    events.extend(state.finish())
    check_never_retracted(events)


def test_a_slow_decode_leaves_the_decodes_on_the_chunks_grid(ours: SpeechRecognizer) -> None:
    """Decodes of 0.58 s at a 0.5 s cadence wait for 1 s of new audio, not 0.58 s: the step
    is a whole number of min_chunk_s, so with 1 s chunks every decode hears all the audio
    that has arrived (at 0.58 s steps they would fall 0.08-0.42 s behind each arrival)."""
    from ipfs_accelerate.models.pipelines._speech_stream import LocalAgreementStream

    audio = speech_like(10.0, seed=5)
    state = LocalAgreementStream(
        ours, RATE, "en", "transcribe", options={"max_new_tokens": 8}, clock=_DecodeClock(0.58)
    )
    ends: list[int] = []
    decode = state._decode

    def spy(samples: np.ndarray) -> Any:
        ends.append(state._buffered)
        return decode(samples)

    state._decode = spy  # type: ignore[method-assign]
    for chunk in chunks_of(audio, [RATE]):
        state.feed(chunk)
    assert state.step == RATE
    assert ends == [RATE // 2 + n * RATE for n in range(10)]
