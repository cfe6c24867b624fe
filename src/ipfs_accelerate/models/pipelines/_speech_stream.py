"""Streaming transcription: audio arrives in chunks, text is committed by local agreement.

The policy is the one of Macháček, Dabre and Bojar, "Turning Whisper into Real-Time
Transcription System" (2023, the whisper_streaming project): the unconfirmed audio buffer is
decoded again each time enough new audio has arrived; the words on which two consecutive
decodes agree (their longest common prefix, after the words already committed; marks and case
aside, except on the new decode's last word) are committed, as the new decode wrote them, and
never retracted; the rest is shown as tentative text. The buffer is trimmed once it grows past
``trim_s``, where the committed words end a sentence (as whisper_streaming trims at segment
ends; after any committed word once it has waited long), so each decode sees at most about
``trim_s`` plus the audio not yet agreed on, and a hard bound (``max_buffer_s``) commits the
oldest words of the latest decode when the decodes keep disagreeing. Each decode writes at
most :func:`decode_token_budget` tokens per window (in proportion to the buffered audio)
unless the caller gives ``max_new_tokens``.

The committed words still in the buffer are not decoded again: the next decode is forced to
start with the tokens (timestamps included) that the decode which agreed on them wrote, and
chooses only the tokens after them (``prefix_tokens`` of
:meth:`~ipfs_accelerate.models.pipelines.SpeechRecognizer.iter_segments`). Committed words are
final anyway; forcing them saves a decoder step per token (the forced tokens go through the
decoder in blocks), and where the model would have written them again, which is what two
agreeing decodes suggest, the decode is the same as without the prefix. Where it is not (the
forced tokens lead the decoder straight to its end token, and the decode writes no new word
although ``RETRY_FRESH_S`` or more of audio follows the committed words), the decode is made
again without them, so that no speech after them is skipped.

A stream keeps pace with its audio: the next decode waits for at least as much new audio as
the last decode took time (and at least ``min_chunk_s``; at most the window's room left after
``max_buffer_s``), as whisper_streaming processes whatever arrived while it was busy, rounded
up to a whole number of ``min_chunk_s`` so that decodes stay on the grid the chunks arrive on
(a 0.58 s decode at a 0.5 s cadence waits for 1 s, not 0.58 s: with 1 s chunks every later
decode would otherwise stop 0.08-0.42 s short of the audio that had arrived). Where
decodes are faster than ``min_chunk_s`` nothing changes; where they are slower (a loaded or
slow machine, a bigger checkpoint), decoding every ``min_chunk_s`` regardless would fall
further behind the audio with every decode, and the lag would grow without bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from ipfs_accelerate.errors import InvalidArgumentError, PreprocessingError
from ipfs_accelerate.models.preprocessing.audio import load_audio

if TYPE_CHECKING:
    from ipfs_accelerate.models.pipelines._speech import SpeechRecognizer, TranscriptSegment

Array = np.ndarray[Any, Any]

#: words that start this close before the committed end count as already heard
_OVERLAP_S = 0.1
#: the tokens one streaming decode may write per window, unless ``max_new_tokens`` is given:
#: DECODE_BASE_TOKENS + DECODE_TOKENS_PER_S per second of buffered audio. Fast speech is about
#: 4 words (5 tokens) a second plus a timestamp pair per segment, so real speech stays well
#: inside it; a model that rambles (random weights, a hallucination loop writing up to 448
#: tokens a window) is cut off, so the work of a decode grows with the audio it holds
DECODE_BASE_TOKENS = 32
DECODE_TOKENS_PER_S = 6.0
#: a decode forced to start with the committed words that writes no new word although this
#: much audio (seconds) follows them is made again without the forced words
RETRY_FRESH_S = 2.0


def decode_token_budget(buffer_s: float) -> int:
    """The new tokens a streaming decode of ``buffer_s`` seconds may write per window."""
    return DECODE_BASE_TOKENS + math.ceil(DECODE_TOKENS_PER_S * buffer_s)


@dataclass
class StreamWord:
    """One unit of a streamed transcript: a word (or a segment on checkpoints without
    alignment heads) with its start/end in seconds from the start of the stream."""

    text: str
    start: float
    end: float
    tokens: list[int] = field(default_factory=list)


@dataclass
class StreamEvent:
    """What :meth:`SpeechRecognizer.transcribe_stream` yields.

    ``type`` is ``"committed"`` (``words`` are final: they are never retracted and the next
    committed event continues after them; ``text`` is their text), ``"tentative"`` (the
    current guess for the audio after the committed words; the next tentative event replaces
    it) or ``"done"`` (the stream ended; ``text`` and ``words`` are the whole committed
    transcript).
    ``start``/``end`` are the seconds from the start of the stream that ``words`` cover.
    ``buffer_s`` is how many seconds of audio the decoder held when the event was made."""

    type: Literal["committed", "tentative", "done"]
    text: str
    start: float
    end: float
    words: list[StreamWord] = field(default_factory=list)
    buffer_s: float = 0.0


def _key(word: StreamWord) -> str:
    return word.text.strip()


#: what two decodes may write differently around the same spoken word: the sentence marks
#: that a decode ending at the buffer's end adds ("over." before "over the lazy dog") and case
_MARKS = ".,!?;:\"'()[]-\u2026\u3002\uff0c\uff01\uff1f"


#: the marks that end a sentence, where a stream's buffer is cut
_SENTENCE_ENDS = (".", "?", "!", "\u2026", "\u3002", "\uff01", "\uff1f")


def _heard(word: StreamWord) -> str:
    """The word as heard: without the marks around it, in lower case."""
    return word.text.strip().strip(_MARKS).casefold()


def _agreement(previous: list[StreamWord], words: list[StreamWord]) -> int:
    """How many of ``words`` (the new decode's, after the committed ones) two consecutive
    decodes agree on: the longest common prefix of the words as heard (marks and case aside,
    which follow from what comes after a word, not from the word), except that the new
    decode's last word must be written the same: its marks come from the buffer's end, where
    the new decode stops, and the new decode's version is the one committed."""
    count = 0
    for old, new in zip(previous, words, strict=False):
        if _heard(old) != _heard(new):
            break
        if new is words[-1] and _key(old) != _key(new):
            break
        count += 1
    return count


class LocalAgreementStream:
    """The state of one stream (see the module docstring); feed it with :meth:`feed` and end
    it with :meth:`finish`. Not thread-safe: one stream, one consumer."""

    def __init__(
        self,
        recognizer: SpeechRecognizer,
        sampling_rate: int,
        language: str | None,
        task: str,
        *,
        min_chunk_s: float = 0.5,
        trim_s: float = 15.0,
        max_buffer_s: float = 28.0,
        options: dict[str, Any] | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        for name, value in (
            ("min_chunk_s", min_chunk_s),
            ("trim_s", trim_s),
            ("max_buffer_s", max_buffer_s),
        ):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidArgumentError(f"{name} must be a number, got {value!r}")
            if not (math.isfinite(value) and value > 0):
                raise InvalidArgumentError(f"{name} must be positive and finite, got {value!r}")
        window_s = (
            recognizer.feature_extractor.n_samples / recognizer.feature_extractor.sampling_rate
        )
        if not (min_chunk_s < trim_s < max_buffer_s and max_buffer_s + min_chunk_s <= window_s):
            raise InvalidArgumentError(
                "need min_chunk_s < trim_s < max_buffer_s and max_buffer_s + min_chunk_s <="
                f" {window_s:g} (one window), got "
                f"{min_chunk_s:g}, {trim_s:g}, {max_buffer_s:g}"
            )
        if isinstance(sampling_rate, bool) or not isinstance(sampling_rate, int):
            raise InvalidArgumentError(f"sampling_rate must be an int, got {sampling_rate!r}")
        for reserved in (
            "return_timestamps",
            "word_timestamps",
            "stream",
            "sampling_rate",
            "prefix_tokens",
        ):
            if options and reserved in options:
                raise InvalidArgumentError(f"transcribe_stream sets {reserved} itself")
        gen = recognizer.generation
        if not gen.has_timestamps:
            raise InvalidArgumentError(
                f"{recognizer.checkpoint.path.name}: streaming needs Whisper's timestamp tokens"
                " (<|0.00|> ... after <|notimestamps|>) to know where committed text ends"
            )
        self.recognizer = recognizer
        self.rate = sampling_rate
        self.language = language
        self.task = task
        self.min_chunk = round(min_chunk_s * sampling_rate)
        #: new audio (samples) the next decode waits for: min_chunk, or as long as the last
        #: decode took when that was longer, up to the window's room after max_buffer_s
        self.step = self.min_chunk
        self._max_step = max(self.min_chunk, math.floor((window_s - max_buffer_s) * sampling_rate))
        self._clock = clock
        self.trim_s = float(trim_s)
        self.max_buffer_s = float(max_buffer_s)
        self.options = dict(options or {})
        self.words_mode = bool(gen.alignment_heads)
        # the buffer holds input-rate samples; it is resampled as a whole at each decode so
        # that a chunk boundary never leaves a resampling seam
        self._pieces: list[Array] = []
        self._channels: int | None = None
        self.buffer_start = 0.0  # seconds from the stream start of the buffer's first sample
        self._buffered = 0
        self._since_decode = 0
        self.committed: list[StreamWord] = []
        self._previous: list[StreamWord] = []  # the last decode's words not yet committed
        # the last decode's tokens (timestamps included, first window only) and where each of
        # its words ends in them, by id(word)
        self._sequence: list[int] = []
        self._ends: dict[int, int] = {}
        #: the tokens the next decode is forced to start with: committed words still in the
        #: buffer (those of its first window), as the decode that agreed on them wrote them
        #: (empty after a trim)
        self.prefix: list[int] = []
        #: the largest buffer any decode saw, in seconds (for tests and monitoring)
        self.max_buffer_seen_s = 0.0
        self.decodes = 0
        #: decodes made again without the forced prefix because they came back with no new
        #: word over at least RETRY_FRESH_S of audio after the committed words
        self.retries = 0

    # ------------------------------------------------------------------ input

    def _check_chunk(self, chunk: Any) -> Array:
        array = np.asarray(chunk)
        if array.dtype.kind not in "fiu":
            raise PreprocessingError(f"audio chunk must hold numbers, got dtype {array.dtype}")
        if array.ndim not in (1, 2):
            raise PreprocessingError(
                f"audio chunk must be (samples,) or (samples, channels), got shape {array.shape}"
            )
        channels = 1 if array.ndim == 1 else array.shape[1]
        if self._channels is None and array.size:
            self._channels = channels
        elif array.size and channels != self._channels:
            raise PreprocessingError(
                f"audio chunk has {channels} channel(s), the stream started with {self._channels}"
            )
        if array.dtype.kind in "iu":
            # integer PCM scaled as load_audio does for arrays (full scale of the type)
            info = np.iinfo(array.dtype)
            array = array.astype(np.float32) / float(max(abs(info.min), info.max))
        array = array.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            raise PreprocessingError("audio chunk holds NaN or infinite samples")
        return array

    def feed(self, chunk: Any) -> list[StreamEvent]:
        """Add a chunk; decode each time :attr:`step` of new audio is buffered (``min_chunk_s``
        while decodes are faster than that; a long chunk is taken a step at a time, so the
        buffer stays bounded)."""
        array = self._check_chunk(chunk)
        events: list[StreamEvent] = []
        position = 0
        while position < len(array):
            take = min(len(array) - position, self.step - self._since_decode)
            self._pieces.append(array[position : position + take])
            position += take
            self._buffered += take
            self._since_decode += take
            if self._since_decode >= self.step:
                began = self._clock()
                events.extend(self._step(final=False))
                took = round((self._clock() - began) * self.rate)
                # whole multiples of min_chunk: decodes stay on the grid the chunks arrive on
                steps = min(self._max_step // self.min_chunk, -(-took // self.min_chunk))
                self.step = self.min_chunk * max(1, steps)
        return events

    def finish(self) -> list[StreamEvent]:
        """The stream ended: decode the audio that came after the last decode, if any, and
        commit everything not yet committed."""
        if self._since_decode:
            events = self._step(final=True)
        elif self._previous:
            # nothing arrived since the last decode: its tentative words are the final ones
            rest, self._previous = self._previous, []
            self.committed.extend(rest)
            text, start, end = self._text(rest), rest[0].start, rest[-1].end
            buffer_s = self._buffered / self.rate
            events = [StreamEvent("committed", text, start, end, rest, buffer_s)]
        else:
            events = []
        text = self._text(self.committed)
        end = self.committed[-1].end if self.committed else self.buffer_start
        events.append(
            StreamEvent("done", text, 0.0, end, list(self.committed), self._buffered / self.rate)
        )
        return events

    # ------------------------------------------------------------------ decoding

    def _text(self, words: list[StreamWord]) -> str:
        # decoded together: a byte-level token may hold part of a character that the next
        # word's first token completes
        tokens = np.array([t for w in words for t in w.tokens], dtype=np.int64)
        return self.recognizer._decode(tokens).strip()

    def _buffer(self) -> Array:
        if len(self._pieces) > 1:
            self._pieces = [np.concatenate(self._pieces)]
        return self._pieces[0] if self._pieces else np.zeros(0, dtype=np.float32)

    def _forced(self) -> list[int]:
        """The tokens the next decode is forced to start with: :attr:`prefix`, except under
        beam search, which keeps its beams from the prompt on and decodes the whole buffer."""
        return self.prefix if self.options.get("num_beams", 1) == 1 else []

    def _decode(self, samples: Array) -> list[StreamWord]:
        recognizer = self.recognizer
        target = recognizer.feature_extractor.sampling_rate
        mono = load_audio((samples, self.rate), target_rate=target)
        options = dict(self.options)
        if options.get("max_new_tokens") is None:
            options["max_new_tokens"] = decode_token_budget(len(samples) / self.rate)
        segments: list[TranscriptSegment] = recognizer.transcribe_segments(
            (mono, target),
            self.language,
            self.task,
            return_timestamps=True,
            word_timestamps=self.words_mode,
            prefix_tokens=self._forced() or None,
            **options,
        )
        self.decodes += 1
        offset = self.buffer_start
        stamp = (recognizer.generation.no_timestamps or 0) + 1
        words: list[StreamWord] = []
        for segment in segments:
            if self.words_mode:
                words.extend(
                    StreamWord(w.word, w.start + offset, w.end + offset, list(w.tokens))
                    for w in segment.words
                )
            elif segment.text.strip():
                tokens = [t for t in segment.tokens if t < stamp]
                words.append(
                    StreamWord(segment.text, segment.start + offset, segment.end + offset, tokens)
                )
        self._locate(segments, words, stamp)
        return words

    def _locate(
        self, segments: list[TranscriptSegment], words: list[StreamWord], stamp: int
    ) -> None:
        """Keep the decode's first-window tokens and where each word ends in them (a later
        window's timestamps count from its own start, so they cannot be forced as a prefix
        of the first)."""
        sequence: list[int] = []
        for segment in segments:
            first = segment.tokens[0] if segment.tokens else -1
            if first < stamp or abs((first - stamp) * 0.02 - segment.start) > 1e-6:
                break
            sequence.extend(segment.tokens)
        self._sequence, self._ends = sequence, {}
        position = 0
        for word in words:
            for token in word.tokens:
                while position < len(sequence) and sequence[position] != token:
                    if sequence[position] < stamp:  # a text token the words skipped: lost track
                        return
                    position += 1
                if position == len(sequence):
                    return
                position += 1
            self._ends[id(word)] = position

    def _new_words(self, words: list[StreamWord]) -> list[StreamWord]:
        """The decode's words after what is committed: those starting after the committed
        end, without a repeat of the committed tail (a word heard across a trim)."""
        if not self.committed:
            return words
        last = self.committed[-1].end
        fresh = [w for w in words if w.start >= last - _OVERLAP_S]
        if fresh and abs(fresh[0].start - last) < 1.0:
            tail = [_heard(w) for w in self.committed[-5:]]
            for n in range(min(len(tail), len(fresh)), 0, -1):
                if tail[-n:] == [_heard(w) for w in fresh[:n]]:
                    return fresh[n:]
        return fresh

    def _step(self, *, final: bool) -> list[StreamEvent]:
        samples = self._buffer()
        self._since_decode = 0
        buffer_s = len(samples) / self.rate
        self.max_buffer_seen_s = max(self.max_buffer_seen_s, buffer_s)
        stream_end = self.buffer_start + buffer_s
        words = self._new_words(self._decode(samples)) if len(samples) else []
        heard_to = self.committed[-1].end if self.committed else self.buffer_start
        if not words and self._forced() and stream_end - heard_to >= RETRY_FRESH_S:
            # the forced committed tokens may lead the decoder straight to its end token:
            # the decode goes again without them
            self.prefix = []
            self.retries += 1
            words = self._new_words(self._decode(samples))
        if final and not words and self._previous:
            # the last decode heard nothing where the previous one heard words: those stay
            # (the stream must not end short of what it showed as tentative)
            words = self._previous
        if final:
            agreed = words
        else:
            agreed = words[: _agreement(self._previous, words)]
        rest = words[len(agreed) :]
        if not final and stream_end - self.buffer_start > self.max_buffer_s:
            # the decodes keep disagreeing: commit the latest decode's words that end before
            # the part of the buffer that trimming would keep
            limit = stream_end - self.trim_s
            overdue = [w for w in rest if w.end <= limit]
            agreed, rest = agreed + overdue, rest[len(overdue) :]
        self._previous = rest
        events: list[StreamEvent] = []
        if agreed:
            # through the last agreed word found in the decode's first-window tokens (the
            # words after it, in a later window or not traced, are decoded again); none found:
            # the forced prefix so far still holds
            traced = [self._ends[id(w)] for w in agreed if id(w) in self._ends]
            if traced:
                self.prefix = self._sequence[: max(traced)]
            self.committed.extend(agreed)
            events.append(
                StreamEvent(
                    "committed",
                    self._text(agreed),
                    agreed[0].start,
                    agreed[-1].end,
                    agreed,
                    buffer_s,
                )
            )
        if not final:
            start = rest[0].start if rest else stream_end
            end = rest[-1].end if rest else stream_end
            events.append(StreamEvent("tentative", self._text(rest), start, end, rest, buffer_s))
            self._trim(stream_end)
        return events

    def _trim(self, stream_end: float) -> None:
        """Once the buffer is longer than ``trim_s``, drop the audio up to the committed
        words' end when they end a sentence; where they do not, wait for one until the buffer
        passes halfway from ``trim_s`` to ``max_buffer_s``, then cut after the last committed
        word; past ``max_buffer_s`` with nothing to cut at, keep ``trim_s``.

        A sentence end is where the speaker pauses: a cut after a word inside a sentence can
        fall into the next word's onset (a word's end time is an estimate), and a decode of
        audio that starts inside a word leaves that word out. Cutting where the committed
        words end leaves none of them in the buffer to be recognised again."""
        length = stream_end - self.buffer_start
        if length <= self.trim_s:
            return
        cut = self.buffer_start
        if self.committed:
            closes = self.committed[-1].text.rstrip().endswith(_SENTENCE_ENDS)
            if closes or length > (self.trim_s + self.max_buffer_s) / 2:
                cut = self.committed[-1].end
        if stream_end - cut > self.max_buffer_s:
            cut = stream_end - self.trim_s
            self._previous = [w for w in self._previous if w.start >= cut]
        if cut <= self.buffer_start:
            return
        drop = min(self._buffered, round((cut - self.buffer_start) * self.rate))
        # the forced tokens' timestamps count from the old buffer start
        self.prefix = []
        samples = self._buffer()
        self._pieces = [samples[drop:]]
        self._buffered -= drop
        self.buffer_start += drop / self.rate


def stream_events(state: LocalAgreementStream, chunks: Iterable[Any]) -> Iterator[StreamEvent]:
    for chunk in chunks:
        yield from state.feed(chunk)
    yield from state.finish()


async def astream_events(
    state: LocalAgreementStream, chunks: AsyncIterable[Any]
) -> AsyncIterator[StreamEvent]:
    """The async form: each decode runs in a worker thread so the event loop stays free."""
    import asyncio

    async for chunk in chunks:
        for event in await asyncio.to_thread(state.feed, chunk):
            yield event
    for event in await asyncio.to_thread(state.finish):
        yield event
