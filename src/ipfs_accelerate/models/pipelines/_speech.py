"""Whisper speech recognition: greedy decoding, long audio cut at quiet points."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from ipfs_accelerate.errors import CheckpointError, InvalidArgumentError
from ipfs_accelerate.models._languages import language_token
from ipfs_accelerate.models.loading import Checkpoint, LoadReport, read_json
from ipfs_accelerate.models.pipelines._base import Array, _check_batch_size, _Pipeline
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
        max_length = gen.get("max_length")
        self.max_length = (
            min(int(max_length), config.max_target_positions)
            if max_length
            else config.max_target_positions
        )


@dataclass
class TranscriptSegment:
    """One window of a transcript (see :meth:`SpeechRecognizer.transcribe_segments`)."""

    start: float
    end: float
    text: str
    tokens: list[int]
    language: str

    @staticmethod
    def join(segments: Sequence[TranscriptSegment]) -> str:
        """The transcript of consecutive segments: their texts, stripped, joined by spaces."""
        return " ".join(t for t in (s.text.strip() for s in segments) if t)


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

    def transcribe(
        self,
        audio: Any,
        language: str | None = None,
        task: str = "transcribe",
        *,
        sampling_rate: int | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 8,
    ) -> str:
        """The transcript (or English translation with ``task="translate"``) of ``audio``: a
        WAV/FLAC path, a numpy array with ``sampling_rate``, an ``(array, rate)`` tuple or a
        ``{"array", "sampling_rate"}`` dict. See the class docstring for the decoding rules."""
        segments = self.transcribe_segments(
            audio,
            language,
            task,
            sampling_rate=sampling_rate,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
        )
        return TranscriptSegment.join(segments)

    def transcribe_segments(
        self,
        audio: Any,
        language: str | None = None,
        task: str = "transcribe",
        *,
        sampling_rate: int | None = None,
        max_new_tokens: int | None = None,
        batch_size: int = 8,
    ) -> list[TranscriptSegment]:
        """What :meth:`transcribe` joins: one :class:`TranscriptSegment` per window of at most
        30 s (its start and end in seconds, its text and generated tokens, and the language it
        was decoded in: the given one, the detected one, or ``"en"`` on English-only
        checkpoints). Whisper's timestamp tokens are not generated, so a segment's times are
        its window's, not the words'."""
        _check_batch_size(batch_size)
        rate = self.feature_extractor.sampling_rate
        samples = load_audio(audio, sampling_rate, target_rate=rate)
        windows = self.split_windows(samples)
        gen = self.generation
        id_to_language = {v: k.strip("<|>") for k, v in gen.lang_to_id.items()}
        segments: list[TranscriptSegment] = []
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
                segments.append(
                    TranscriptSegment(
                        offset / rate, end / rate, self._decode(row), generated, spoken
                    )
                )
                offset = end
        return segments

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
