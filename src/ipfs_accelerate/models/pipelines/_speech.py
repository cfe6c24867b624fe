"""Whisper speech recognition: greedy decoding, long audio cut at quiet points."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Self, overload

import numpy as np

from ipfs_accelerate.errors import CheckpointError, InvalidArgumentError
from ipfs_accelerate.models._languages import language_token
from ipfs_accelerate.models.loading import Checkpoint, LoadReport, read_json
from ipfs_accelerate.models.pipelines._base import Array, _check_batch_size, _Pipeline
from ipfs_accelerate.models.pipelines._speech_decoding import (
    Attempt,
    DecodingOptions,
    LongFormDecoder,
    RawSegment,
    SpecialTokens,
    WordTiming,
    check_options,
)
from ipfs_accelerate.models.pipelines._speech_stream import (
    LocalAgreementStream,
    StreamEvent,
    astream_events,
    stream_events,
)
from ipfs_accelerate.models.preprocessing.audio import WhisperFeatureExtractor, load_audio
from ipfs_accelerate.models.preprocessing.text import TextTokenizer
from ipfs_accelerate.tensor import from_numpy

if TYPE_CHECKING:
    from ipfs_accelerate.models.whisper import WhisperForConditionalGeneration


class _GenerationSettings:
    """Decoding settings from ``generation_config.json`` (or config.json + tokenizer)."""

    def __init__(self, checkpoint: Checkpoint, config: Any, tokenizer: TextTokenizer) -> None:
        gen = read_json(checkpoint.path / "generation_config.json")

        def token(name: str) -> int | None:
            return tokenizer.token_to_id(name)

        self.decoder_start = int(gen.get("decoder_start_token_id", config.decoder_start_token_id))
        eos = gen.get("eos_token_id", config.eos_token_id)
        self.eos = int(eos[0] if isinstance(eos, list) else eos)
        pad = gen.get("pad_token_id", config.pad_token_id)
        self.pad = int(pad if pad is not None else self.eos)
        self.suppress = [int(t) for t in gen.get("suppress_tokens") or config.suppress_tokens or []]
        self.begin_suppress = [
            int(t) for t in gen.get("begin_suppress_tokens") or config.begin_suppress_tokens or []
        ]
        lang_to_id = gen.get("lang_to_id")
        if lang_to_id is None:
            from ipfs_accelerate.models._languages import LANGUAGES

            lang_to_id = {
                f"<|{c}|>": token(f"<|{c}|>") for c in LANGUAGES if token(f"<|{c}|>") is not None
            }
        self.lang_to_id: dict[str, int] = {str(k): int(v) for k, v in lang_to_id.items()}
        task_to_id = gen.get("task_to_id")
        if task_to_id is None:
            task_to_id = {
                t: token(f"<|{t}|>")
                for t in ("transcribe", "translate")
                if token(f"<|{t}|>") is not None
            }
        self.task_to_id: dict[str, int] = {str(k): int(v) for k, v in task_to_id.items()}
        no_ts = gen.get("no_timestamps_token_id", token("<|notimestamps|>"))
        self.no_timestamps: int | None = int(no_ts) if no_ts is not None else None
        multilingual = gen.get("is_multilingual")
        self.multilingual = bool(self.lang_to_id) if multilingual is None else bool(multilingual)
        prev_sot = gen.get("prev_sot_token_id", token("<|startofprev|>"))
        self.prev_sot: int | None = int(prev_sot) if prev_sot is not None else None
        heads = gen.get("alignment_heads") or []
        self.alignment_heads: list[tuple[int, int]] = [(int(a), int(b)) for a, b in heads]
        initial = gen.get("max_initial_timestamp_index")
        self.max_initial_timestamp_index: int | None = int(initial) if initial is not None else None
        self.median_filter_width = int(
            read_json(checkpoint.path / "config.json").get("median_filter_width") or 7
        )
        self.vocab_size = int(config.vocab_size)
        #: the checkpoint's vocabulary has <|0.00|>..: timestamp tokens after <|notimestamps|>
        self.has_timestamps = self.no_timestamps is not None and self.vocab_size > (
            self.no_timestamps + 1
        )
        max_length = gen.get("max_length")
        self.max_length = (
            min(int(max_length), config.max_target_positions)
            if max_length
            else config.max_target_positions
        )


@dataclass
class TranscriptSegment:
    """One segment of a transcript (see :meth:`SpeechRecognizer.transcribe_segments`): its
    start and end in seconds from the start of the audio, its text, its tokens (timestamp
    tokens included when timestamps were decoded), the language it was decoded in, and the
    decoding measures of its window: mean log-probability of the window's tokens, their
    compression ratio (token bytes, see ``compression_ratio``), the probability of
    ``<|nospeech|>`` and the temperature of the attempt that was kept. ``words`` holds the
    words with their times when ``word_timestamps=True`` was asked for."""

    start: float
    end: float
    text: str
    tokens: list[int]
    language: str
    avg_logprob: float = 0.0
    compression_ratio: float = 0.0
    no_speech_prob: float = 0.0
    temperature: float = 0.0
    words: list[WordTiming] = field(default_factory=list)

    @staticmethod
    def join(segments: Sequence[TranscriptSegment]) -> str:
        """The transcript of consecutive segments: their texts, stripped, joined by spaces."""
        return " ".join(t for t in (s.text.strip() for s in segments) if t)


def _timestamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def subtitles(segments: Sequence[TranscriptSegment], fmt: str) -> str:
    """``segments`` as SubRip (``fmt="srt"``) or WebVTT (``"vtt"``) subtitles."""
    if fmt not in ("srt", "vtt"):
        raise InvalidArgumentError(f"subtitle format must be 'srt' or 'vtt', got {fmt!r}")
    separator = "," if fmt == "srt" else "."
    lines = [] if fmt == "srt" else ["WEBVTT", ""]
    for number, segment in enumerate(segments, start=1):
        if fmt == "srt":
            lines.append(str(number))
        lines.append(
            f"{_timestamp(segment.start, separator)} --> {_timestamp(segment.end, separator)}"
        )
        lines.append(segment.text.strip())
        lines.append("")
    return "\n".join(lines) + "\n"


class SpeechRecognizer(_Pipeline):
    """Whisper speech recognition: greedy decoding with a KV cache.

    The decoder prompt is ``<|startoftranscript|> <|language|> <|task|> <|notimestamps|>``
    (English-only checkpoints: ``<|startoftranscript|> <|notimestamps|>``). ``language=None``
    on a multilingual checkpoint detects the language of each 30 s window from the decoder's
    first step, as Hugging Face does. The checkpoint's ``suppress_tokens`` are never emitted
    and ``begin_suppress_tokens`` not as the first token. Audio longer than 30 s is cut into
    windows of at most 30 s, each cut placed at the quietest 20 ms within the last 5 s of a
    window (so words are rarely split); the windows' transcripts are joined with spaces.
    """

    model: WhisperForConditionalGeneration

    #: each window's cut is searched in this many seconds before its 30 s limit
    cut_search_s = 5.0
    #: the RMS frame used to find a quiet place to cut
    cut_frame_s = 0.02

    def __init__(
        self,
        model: WhisperForConditionalGeneration,
        tokenizer: TextTokenizer,
        features: WhisperFeatureExtractor,
        checkpoint: Checkpoint,
        report: LoadReport,
    ) -> None:
        super().__init__(model, checkpoint, report)
        self.tokenizer = tokenizer
        self.feature_extractor = features
        self.generation = _GenerationSettings(checkpoint, model.config, tokenizer)
        #: every decoding attempt of the last sequential transcription (window start, its
        #: temperature, measures and fallback/skip decision), for diagnostics and tests
        self.last_attempts: list[Attempt] = []
        if features.feature_size != model.config.num_mel_bins:
            raise CheckpointError(
                f"{checkpoint.path}: preprocessor feature_size {features.feature_size}"
                f" != num_mel_bins {model.config.num_mel_bins}"
            )

    @classmethod
    def _model_class(cls) -> type[WhisperForConditionalGeneration]:
        from ipfs_accelerate.models.whisper import WhisperForConditionalGeneration

        return WhisperForConditionalGeneration

    @classmethod
    def _from_loaded(
        cls, model: WhisperForConditionalGeneration, checkpoint: Checkpoint, report: LoadReport
    ) -> Self:
        tokenizer = TextTokenizer.from_file(checkpoint.path / "tokenizer.json")
        return cls(
            model,
            tokenizer,
            WhisperFeatureExtractor.from_checkpoint(checkpoint.path),
            checkpoint,
            report,
        )

    # ------------------------------------------------------------------ prompt

    def _language_id(self, language: str) -> int:
        gen = self.generation
        if not gen.multilingual:
            if language_token(language) == "<|en|>":
                return -1  # English-only checkpoints take no language token
            raise InvalidArgumentError(
                f"{self.checkpoint.path.name}: an English-only checkpoint cannot take"
                f" language={language!r}"
            )
        tok = language_token(language)
        if tok not in gen.lang_to_id:
            known = ", ".join(sorted(t.strip("<|>") for t in gen.lang_to_id))
            raise InvalidArgumentError(
                f"language {language!r} is not supported by this checkpoint; known: {known}"
            )
        return gen.lang_to_id[tok]

    def _task_id(self, task: str) -> int | None:
        gen = self.generation
        if task not in ("transcribe", "translate"):
            raise InvalidArgumentError(f"task must be 'transcribe' or 'translate', got {task!r}")
        if not gen.multilingual:
            if task == "translate":
                raise InvalidArgumentError("an English-only checkpoint cannot translate")
            return None
        if task not in gen.task_to_id:
            raise InvalidArgumentError(f"this checkpoint has no <|{task}|> token")
        return gen.task_to_id[task]

    # ------------------------------------------------------------------ decoding

    def generate(
        self,
        input_features: Array,
        language: str | None = None,
        task: str = "transcribe",
        max_new_tokens: int | None = None,
    ) -> Array:
        """Greedy token ids (B, prompt + generated) for log-mel ``input_features`` (B, mels,
        frames): the prompt, then the generated tokens, sequences that ended early padded
        with the pad token after their end-of-text, as ``generate()`` returns them."""
        return self._generate(input_features, language, task, max_new_tokens)[0]

    def _generate(
        self, input_features: Array, language: str | None, task: str, max_new_tokens: int | None
    ) -> tuple[Array, int]:
        """:meth:`generate`'s rows, and how many of their leading tokens are the prompt."""
        gen = self.generation
        task_id = self._task_id(task)
        lang_id = self._language_id(language) if language is not None else None
        features = np.asarray(input_features, dtype=np.float32)
        batch = features.shape[0]
        cache = self.model.start_decoding(
            self.model.encode(from_numpy(np.ascontiguousarray(features), self.device))
        )
        prompt = np.full((batch, 1), gen.decoder_start, dtype=np.int64)
        rest: list[int] = []
        if gen.multilingual and lang_id is None:
            logits = self.model.decode_step(from_numpy(prompt, self.device), cache).numpy()
            detected = self._detect(logits)
            tail = [[int(d)] for d in detected]
        else:
            logits = None
            tail = [[lang_id]] * batch if lang_id is not None and lang_id >= 0 else [[]] * batch
        if task_id is not None:
            rest.append(task_id)
        if gen.no_timestamps is not None:
            rest.append(gen.no_timestamps)
        suffix = np.array([t + rest for t in tail], dtype=np.int64).reshape(batch, -1)
        if logits is None:
            prompt = np.concatenate([prompt, suffix], axis=1)
            logits = self.model.decode_step(from_numpy(prompt, self.device), cache).numpy()
        else:
            if suffix.shape[1]:
                logits = self.model.decode_step(from_numpy(suffix, self.device), cache).numpy()
            prompt = np.concatenate([prompt, suffix], axis=1)
        limit = gen.max_length - prompt.shape[1]
        if max_new_tokens is not None:
            if (
                isinstance(max_new_tokens, bool)
                or not isinstance(max_new_tokens, int)
                or max_new_tokens < 1
            ):
                raise InvalidArgumentError(
                    f"max_new_tokens must be a positive int, got {max_new_tokens!r}"
                )
            limit = min(limit, max_new_tokens)
        return np.concatenate([prompt, self._greedy(logits, cache, limit)], axis=1), prompt.shape[1]

    def _detect(self, logits: Array) -> Array:
        ids = np.array(sorted(self.generation.lang_to_id.values()), dtype=np.int64)
        return ids[np.argmax(logits[:, ids], axis=1)]

    def _greedy(self, logits: Array, cache: Any, limit: int) -> Array:
        gen = self.generation
        batch = logits.shape[0]
        finished = np.zeros(batch, dtype=bool)
        tokens: list[Array] = []
        for step in range(max(0, limit)):
            scores = logits.astype(np.float32, copy=True)
            if gen.suppress:
                scores[:, gen.suppress] = -np.inf
            if step == 0 and gen.begin_suppress:
                scores[:, gen.begin_suppress] = -np.inf
            chosen = np.argmax(scores, axis=1).astype(np.int64)
            chosen[finished] = gen.pad
            tokens.append(chosen)
            finished |= chosen == gen.eos
            if finished.all() or step == limit - 1:
                break
            logits = self.model.decode_step(
                from_numpy(chosen.reshape(batch, 1), self.device), cache
            ).numpy()
        return np.stack(tokens, axis=1) if tokens else np.zeros((batch, 0), dtype=np.int64)

    # ------------------------------------------------------------------ audio in, text out

    def split_windows(self, samples: Array) -> list[Array]:
        """Mono 16 kHz ``samples`` cut into windows of at most 30 s at quiet points."""
        window = self.feature_extractor.n_samples
        rate = self.feature_extractor.sampling_rate
        frame = max(1, int(self.cut_frame_s * rate))
        search = int(self.cut_search_s * rate)
        pieces = []
        start = 0
        while len(samples) - start > window:
            region = samples[start + window - search : start + window]
            frames = len(region) // frame
            energy = (
                (region[: frames * frame].astype(np.float64) ** 2)
                .reshape(frames, frame)
                .mean(axis=1)
            )
            cut = start + window - search + int(np.argmin(energy)) * frame + frame // 2
            pieces.append(samples[start:cut])
            start = cut
        pieces.append(samples[start:])
        return pieces

    @overload
    def transcribe(
        self,
        audio: Any,
        language: str | None = ...,
        task: str = ...,
        *,
        stream: Literal[False] = ...,
        return_timestamps: Literal[False, None] = ...,
        **options: Any,
    ) -> str: ...

    @overload
    def transcribe(
        self,
        audio: Any,
        language: str | None = ...,
        task: str = ...,
        *,
        stream: Literal[True],
        return_timestamps: bool | None = ...,
        **options: Any,
    ) -> Iterator[TranscriptSegment]: ...

    @overload
    def transcribe(
        self,
        audio: Any,
        language: str | None = ...,
        task: str = ...,
        *,
        stream: Literal[False] = ...,
        return_timestamps: Literal[True],
        **options: Any,
    ) -> list[TranscriptSegment]: ...

    def transcribe(
        self,
        audio: Any,
        language: str | None = None,
        task: str = "transcribe",
        *,
        stream: bool = False,
        return_timestamps: bool | None = None,
        **options: Any,
    ) -> str | list[TranscriptSegment] | Iterator[TranscriptSegment]:
        """The transcript (or English translation with ``task="translate"``) of ``audio``: a
        WAV/FLAC path, a numpy array with ``sampling_rate``, an ``(array, rate)`` tuple or a
        ``{"array", "sampling_rate"}`` dict.

        Returns the text; with ``return_timestamps=True`` the segments
        (:meth:`transcribe_segments`); with ``stream=True`` an iterator that yields the
        segments as each 30 s window is decoded (:meth:`iter_segments`). ``options`` are
        :meth:`iter_segments`'s keyword arguments."""
        if stream:
            return self.iter_segments(
                audio, language, task, return_timestamps=return_timestamps, **options
            )
        segments = self.transcribe_segments(
            audio, language, task, return_timestamps=return_timestamps, **options
        )
        if return_timestamps:
            return segments
        return TranscriptSegment.join(segments)

    def transcribe_segments(
        self, audio: Any, language: str | None = None, task: str = "transcribe", **options: Any
    ) -> list[TranscriptSegment]:
        """The segments of :meth:`iter_segments`, as a list."""
        return list(self.iter_segments(audio, language, task, **options))

    def iter_segments(
        self,
        audio: Any,
        language: str | None = None,
        task: str = "transcribe",
        *,
        sampling_rate: int | None = None,
        return_timestamps: bool | None = None,
        word_timestamps: bool = False,
        temperature: float | Sequence[float] = 0.0,
        compression_ratio_threshold: float | None = None,
        logprob_threshold: float | None = None,
        no_speech_threshold: float | None = None,
        condition_on_prev_tokens: bool = False,
        initial_prompt: str | None = None,
        prompt_ids: Sequence[int] | None = None,
        num_beams: int = 1,
        max_new_tokens: int | None = None,
        seed: int = 0,
        batch_size: int = 8,
        prefix_tokens: Sequence[int] | None = None,
    ) -> Iterator[TranscriptSegment]:
        """Decode ``audio`` and yield its :class:`TranscriptSegment` s, each window's as soon
        as the window is decoded.

        On a checkpoint with timestamp tokens (``<|0.00|>`` ... after ``<|notimestamps|>``),
        audio longer than 30 s, ``return_timestamps=True``, ``word_timestamps=True`` or any
        fallback/prompt option decode sequentially as transformers' long-form ``generate``
        does: segments start and end at Whisper's timestamp tokens, each 30 s window starts at
        the end of the previous window's last complete segment, and the window is retried at
        the next of the ``temperature`` schedule while its compression ratio exceeds
        ``compression_ratio_threshold`` or its mean log-probability is below
        ``logprob_threshold`` (a window whose ``<|nospeech|>`` probability exceeds
        ``no_speech_threshold`` with a low log-probability is skipped as silence).
        ``condition_on_prev_tokens`` feeds the previous segments' tokens (after
        ``<|startofprev|>``) to the next window while the kept temperature is below 0.5;
        ``initial_prompt`` (text) or ``prompt_ids`` (``<|startofprev|>`` and tokens) prime the
        first window. Sampling at temperature > 0 draws from a generator seeded with ``seed``.
        ``prefix_tokens`` (text and timestamp tokens, no specials) are taken as the start of
        the first window's output rather than chosen, and decoding goes on after them (greedy
        or sampled; not with beams): a stream passes its committed text so that each decode
        writes only the uncommitted tail.
        ``word_timestamps=True`` times each word by dynamic time warping over the
        cross-attention of the checkpoint's ``alignment_heads``.

        Otherwise (30 s or less, default options, or a checkpoint without timestamp tokens)
        windows are decoded greedily in batches of ``batch_size``, long audio cut at quiet
        points, one segment per window. ``language=None`` on a multilingual checkpoint detects
        the language from the first window (see :meth:`detect_language`).
        """
        _check_batch_size(batch_size)
        if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
            raise InvalidArgumentError(f"num_beams must be a positive int, got {num_beams!r}")
        if num_beams > 16:
            raise InvalidArgumentError(f"num_beams must be at most 16, got {num_beams}")
        if max_new_tokens is not None and (
            isinstance(max_new_tokens, bool)
            or not isinstance(max_new_tokens, int)
            or max_new_tokens < 1
        ):
            raise InvalidArgumentError(
                f"max_new_tokens must be a positive int, got {max_new_tokens!r}"
            )
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise InvalidArgumentError(f"seed must be a non-negative int, got {seed!r}")
        temperatures = check_options(
            temperature, compression_ratio_threshold, logprob_threshold, no_speech_threshold
        )
        prefix = self._prefix_tokens(prefix_tokens, num_beams, bool(return_timestamps))
        prompt = self._prompt_ids(initial_prompt, prompt_ids)
        task_id = self._task_id(task)
        lang_id = self._language_id(language) if language is not None else None
        rate = self.feature_extractor.sampling_rate
        samples = load_audio(audio, sampling_rate, target_rate=rate)
        long = len(samples) > self.feature_extractor.n_samples
        plain = (
            temperatures == (0.0,)
            and compression_ratio_threshold is None
            and logprob_threshold is None
            and not condition_on_prev_tokens
            and prompt is None
            and not word_timestamps
            and not return_timestamps
            and num_beams == 1
            and prefix is None
        )
        gen = self.generation
        if not gen.has_timestamps and (return_timestamps or word_timestamps):
            raise InvalidArgumentError(
                f"{self.checkpoint.path.name}: return_timestamps/word_timestamps need Whisper's"
                " timestamp tokens (<|0.00|> ... after <|notimestamps|>), which this"
                " checkpoint's vocabulary lacks"
            )
        if word_timestamps and not gen.alignment_heads:
            raise InvalidArgumentError(
                f"{self.checkpoint.path.name}: word_timestamps need alignment_heads in"
                " generation_config.json"
            )
        if plain and (not long or not gen.has_timestamps):
            yield from self._windows_greedy(samples, language, task, max_new_tokens, batch_size)
            return
        options = DecodingOptions(
            temperatures=temperatures,
            compression_ratio_threshold=compression_ratio_threshold,
            logprob_threshold=logprob_threshold,
            no_speech_threshold=no_speech_threshold,
            condition_on_prev_tokens=bool(condition_on_prev_tokens),
            prompt_ids=prompt,
            return_timestamps=gen.has_timestamps and (long or bool(return_timestamps)),
            word_timestamps=word_timestamps,
            max_new_tokens=max_new_tokens,
            seed=seed,
            num_beams=num_beams,
            prefix_tokens=prefix,
        )
        if gen.has_timestamps:
            yield from self._sequential(samples, long, lang_id, task_id, options)
            return
        offset = 0
        for window in self.split_windows(samples):
            features = self.feature_extractor(window)[0]
            for segment in self._sequential_features(
                features, lang_id, task_id, options, frames=features.shape[1], real=len(window)
            ):
                segment.start += offset / rate
                segment.end = segment.start + len(window) / rate
                yield segment
            offset += len(window)

    def transcribe_stream(
        self,
        chunks: Iterable[Any] | AsyncIterable[Any],
        language: str | None = None,
        task: str = "transcribe",
        *,
        sampling_rate: int = 16000,
        min_chunk_s: float = 0.5,
        trim_s: float = 15.0,
        max_buffer_s: float = 28.0,
        **options: Any,
    ) -> Iterator[StreamEvent] | AsyncIterator[StreamEvent]:
        """Transcribe audio as it arrives: ``chunks`` is an iterable (or async iterable) of
        PCM arrays at ``sampling_rate`` Hz, each ``(samples,)`` or ``(samples, channels)``
        (float in [-1, 1] or integer PCM), of any length, 0 included.

        Yields :class:`StreamEvent` s (an async iterator for an async iterable, decoding in
        a worker thread): after each ``min_chunk_s`` of new audio the unconfirmed buffer is
        decoded with timestamps and the words two consecutive decodes agree on are
        ``"committed"`` (never retracted); the rest is ``"tentative"``; a decode slower than
        ``min_chunk_s`` makes the next one wait for as much new audio as it took (the stream
        keeps pace). When the chunks end, the remaining buffer is decoded once more and
        committed in full, then ``"done"`` carries the whole committed text. The buffer is
        cut at the last committed word once longer than ``trim_s`` and never exceeds
        ``max_buffer_s`` plus one step, within one window (see :mod:`._speech_stream`).
        ``options`` are :meth:`iter_segments`' decoding options (temperature schedule,
        thresholds, ``num_beams``, ...); without ``max_new_tokens`` each decode writes
        at most 32 + 6 tokens per second of buffered audio per window
        (``decode_token_budget``), so that a model that rambles cannot make one decode take
        longer than the audio it holds warrants."""
        state = LocalAgreementStream(
            self, sampling_rate, language, task, min_chunk_s=min_chunk_s, trim_s=trim_s,
            max_buffer_s=max_buffer_s, options=options,
        )  # fmt: skip
        if language is not None:
            self._language_id(language)
        self._task_id(task)
        if isinstance(chunks, AsyncIterable):
            return astream_events(state, chunks)
        if not isinstance(chunks, Iterable):
            raise InvalidArgumentError(
                f"chunks must be an iterable of audio arrays, got {type(chunks).__name__}"
            )
        return stream_events(state, chunks)

    def detect_language(self, audio: Any, *, sampling_rate: int | None = None) -> dict[str, float]:
        """The probability of each of the checkpoint's languages (code -> probability, most
        likely first) for the first 30 s of ``audio``: the softmax over the language tokens
        of the decoder's first step after ``<|startoftranscript|>``, as transformers'
        ``detect_language`` scores them. English-only checkpoints answer ``{"en": 1.0}``."""
        gen = self.generation
        if not gen.multilingual:
            return {"en": 1.0}
        rate = self.feature_extractor.sampling_rate
        samples = load_audio(audio, sampling_rate, target_rate=rate)
        features = self._first_window(samples)
        return self._language_probabilities(features)

    # ------------------------------------------------------------------ sequential decoding

    def _first_window(self, samples: Array) -> Array:
        """Log-mel features (mels, 3000) of the first window, as long-form decoding sees it."""
        extractor = self.feature_extractor
        if len(samples) <= extractor.n_samples:
            return extractor(samples)[0]
        window = self.model.config.input_frames
        # normalisation is over the whole recording: the first window is cut out of the
        # whole recording's features
        full = extractor.whole(samples)
        first = np.zeros((full.shape[0], window), dtype=np.float32)
        first[:, : min(window, full.shape[1])] = full[:, :window]
        return first

    def _language_probabilities(self, features: Array) -> dict[str, float]:
        gen = self.generation
        cache = self.model.start_decoding(
            self.model.encode(from_numpy(features[None].astype(np.float32), self.device))
        )
        start = np.full((1, 1), gen.decoder_start, dtype=np.int64)
        logits = self.model.decode_step(from_numpy(start, self.device), cache).numpy()[0]
        names = sorted(gen.lang_to_id, key=gen.lang_to_id.__getitem__)
        ids = np.array([gen.lang_to_id[n] for n in names], dtype=np.int64)
        chosen = logits[ids].astype(np.float64)
        probabilities = np.exp(chosen - chosen.max())
        probabilities /= probabilities.sum()
        order = np.argsort(-probabilities, kind="stable")
        return {names[i].strip("<|>"): float(probabilities[i]) for i in order}

    def _prefix_tokens(
        self, tokens: Sequence[int] | None, num_beams: int, timestamps: bool
    ) -> list[int] | None:
        if tokens is None:
            return None
        if num_beams > 1:
            raise InvalidArgumentError("prefix_tokens cannot be combined with num_beams > 1")
        if not self.generation.has_timestamps or not timestamps:
            raise InvalidArgumentError("prefix_tokens need return_timestamps=True")
        # text tokens and timestamps; the specials between them (end of text, task, language,
        # <|notimestamps|>) would end or restart the decode
        first_special = self.generation.eos
        stamps = (self.generation.no_timestamps or 0) + 1
        prefix: list[int] = []
        for token in tokens:
            if isinstance(token, bool) or not isinstance(token, int | np.integer):
                raise InvalidArgumentError(f"prefix_tokens must be ints, got {token!r}")
            if not (0 <= token < first_special or stamps <= token < self.generation.vocab_size):
                raise InvalidArgumentError(
                    f"prefix_tokens: {token} is not a text or timestamp token"
                )
            prefix.append(int(token))
        return prefix

    def _prompt_ids(self, text: str | None, ids: Sequence[int] | None) -> list[int] | None:
        gen = self.generation
        if text is not None and ids is not None:
            raise InvalidArgumentError("pass initial_prompt or prompt_ids, not both")
        if ids is not None:
            checked = []
            for token in ids:
                if isinstance(token, bool) or not isinstance(token, int | np.integer):
                    raise InvalidArgumentError(f"prompt_ids must be ints, got {token!r}")
                if not 0 <= int(token) < gen.vocab_size:
                    raise InvalidArgumentError(
                        f"prompt_ids: token {int(token)} is outside the vocabulary"
                        f" (0..{gen.vocab_size - 1})"
                    )
                checked.append(int(token))
            return checked
        if text is None:
            return None
        if not isinstance(text, str):
            raise InvalidArgumentError(f"initial_prompt must be a str, got {type(text).__name__}")
        if gen.prev_sot is None:
            raise InvalidArgumentError(
                f"{self.checkpoint.path.name}: initial_prompt needs a <|startofprev|> token"
            )
        encoded = self.tokenizer._tokenizer.encode(" " + text.strip(), add_special_tokens=False)
        tokens = [int(t) for t in encoded.ids]
        if gen.no_timestamps is not None and any(t >= gen.eos for t in tokens):
            raise InvalidArgumentError(
                "initial_prompt contains text that encodes to Whisper's special tokens"
            )
        return [gen.prev_sot, *tokens]

    def _init_tokens(
        self, features: Array, lang_id: int | None, task_id: int | None, timestamps: bool
    ) -> tuple[list[int], str]:
        gen = self.generation
        tokens = [gen.decoder_start]
        id_to_language = {v: k.strip("<|>") for k, v in gen.lang_to_id.items()}
        if not gen.multilingual:
            spoken = "en"
        elif lang_id is None:
            probabilities = self._language_probabilities(features)
            spoken = next(iter(probabilities))
            tokens.append(gen.lang_to_id[f"<|{spoken}|>"])
        else:
            tokens.append(lang_id)
            spoken = id_to_language[lang_id]
        if task_id is not None:
            tokens.append(task_id)
        if not timestamps and gen.no_timestamps is not None:
            tokens.append(gen.no_timestamps)
        return tokens, spoken

    def _decoder(self, options: DecodingOptions) -> LongFormDecoder:
        gen = self.generation
        special = SpecialTokens(
            eos=gen.eos,
            pad=gen.pad,
            no_timestamps=gen.no_timestamps if gen.no_timestamps is not None else gen.vocab_size,
            prev_sot=gen.prev_sot,
            suppress=gen.suppress,
            begin_suppress=gen.begin_suppress,
            max_initial_timestamp_index=gen.max_initial_timestamp_index,
        )
        return LongFormDecoder(
            self.model,
            self.device,
            special,
            options,
            vocab_size=gen.vocab_size,
            max_length=gen.max_length,
            alignment_heads=gen.alignment_heads,
            median_filter_width=gen.median_filter_width,
        )

    def _sequential(
        self,
        samples: Array,
        long: bool,
        lang_id: int | None,
        task_id: int | None,
        options: DecodingOptions,
    ) -> Iterator[TranscriptSegment]:
        extractor = self.feature_extractor
        if long:
            # one normalisation over the whole recording, windows sliced out of it, as
            # transformers' long-form generate takes its features
            features = extractor.whole(samples)
            frames = real = features.shape[1]
        else:
            features = extractor(samples)[0]
            frames = features.shape[1]
            real = -(-len(samples) // extractor.hop_length)
        yield from self._sequential_features(
            features, lang_id, task_id, options, frames=frames, real=real
        )

    def _sequential_features(
        self,
        features: Array,
        lang_id: int | None,
        task_id: int | None,
        options: DecodingOptions,
        *,
        frames: int,
        real: int,
    ) -> Iterator[TranscriptSegment]:
        window = self.model.config.input_frames
        first = np.zeros((features.shape[0], window), dtype=np.float32)
        first[:, : min(window, features.shape[1])] = features[:, :window]
        init, spoken = self._init_tokens(first, lang_id, task_id, options.return_timestamps)
        decoder = self._decoder(options)
        self.last_attempts = decoder.attempts
        for raw in decoder.segments(features, init, frames=frames, real_frames=real):
            yield self._segment(raw, spoken, options.word_timestamps)

    def _segment(self, raw: RawSegment, spoken: str, words: bool) -> TranscriptSegment:
        result = raw.result
        return TranscriptSegment(
            start=float(raw.start),
            end=float(raw.end),
            text=self._decode(np.array(raw.tokens, dtype=np.int64)),
            tokens=list(raw.tokens),
            language=spoken,
            avg_logprob=result.avg_logprob,
            compression_ratio=result.compression_ratio,
            no_speech_prob=result.no_speech_prob,
            temperature=result.temperature,
            words=self._words(raw) if words else [],
        )

    def _words(self, raw: RawSegment) -> list[WordTiming]:
        """Tokens grouped into words (a word starts at a token whose text starts with a space
        or after a timestamp); a word lasts from its first token's time to the next token's
        time (the segment's end after the last word)."""
        gen = self.generation
        words: list[WordTiming] = []
        text_tokens = [(i, t) for i, t in enumerate(raw.tokens) if t < gen.eos]
        for position, (index, token) in enumerate(text_tokens):
            piece = self.tokenizer.decode([token], skip_special_tokens=True)
            time = raw.token_times[index] if index < len(raw.token_times) else raw.start
            if not words or piece.startswith(" ") or text_tokens[position - 1][0] != index - 1:
                words.append(WordTiming(piece, time, time, [token]))
            else:
                words[-1].word += piece
                words[-1].tokens.append(token)
            after = index + 1
            words[-1].end = (
                raw.token_times[after] if after < len(raw.token_times) else float(raw.end)
            )
        return words

    def _windows_greedy(
        self,
        samples: Array,
        language: str | None,
        task: str,
        max_new_tokens: int | None,
        batch_size: int,
    ) -> Iterator[TranscriptSegment]:
        """Greedy decoding without timestamps of the quiet-cut windows, ``batch_size`` at a
        time: one segment per window, its times the window's."""
        rate = self.feature_extractor.sampling_rate
        windows = self.split_windows(samples)
        gen = self.generation
        id_to_language = {v: k.strip("<|>") for k, v in gen.lang_to_id.items()}
        offset = 0
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            rows, prompt = self._generate(
                self.feature_extractor(chunk), language, task, max_new_tokens
            )
            for window, row in zip(chunk, rows, strict=True):
                if language is not None:
                    spoken = language_token(language).strip("<|>")
                else:  # multilingual: the detected language token follows <|startoftranscript|>
                    spoken = id_to_language.get(int(row[1]), "en") if gen.multilingual else "en"
                generated = [int(t) for t in row[prompt:]]
                if gen.eos in generated:
                    generated = generated[: generated.index(gen.eos)]
                end = offset + len(window)
                yield TranscriptSegment(
                    offset / rate, end / rate, self._decode(row), generated, spoken
                )
                offset = end

    def _decode(self, ids: Array) -> str:
        gen = self.generation
        kept = []
        for token in ids.tolist():
            if token == gen.eos:
                break
            if gen.no_timestamps is not None and token > gen.no_timestamps:
                continue  # timestamp tokens carry no text
            kept.append(token)
        return self.tokenizer.decode(kept, skip_special_tokens=True)
