"""Whisper's sequential (long-form) decoding with timestamp tokens, as transformers does it.

One recording is decoded window by window. Each window of 30 s of log-mel frames starts where
the previous one's last complete segment ended (two consecutive timestamp tokens close a
segment; a window whose decoding ends inside a segment is resumed from that segment's start).
Per window, decoding is retried at the next temperature of ``temperatures`` while the
compression ratio or the mean log-probability says the output is degenerate, and a window is
skipped as silence when the no-speech probability is high and the log-probability low. The
rules, thresholds and their order follow transformers' ``WhisperGenerationMixin.generate``
(``generation_whisper.py``) so that the segments are the same token for token; the places where
transformers' behaviour is an accident rather than a rule (the running ``max_length``) are
kept too and say so.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.tensor import from_numpy

if TYPE_CHECKING:
    from ipfs_accelerate.models.whisper import DecoderCache, WhisperForConditionalGeneration

Array = np.ndarray[Any, Any]

#: seconds per timestamp token step (``<|0.02|>`` - ``<|0.00|>``)
TIME_PRECISION = 0.02
#: seconds per log-mel frame (hop 160 at 16 kHz)
FRAME_SECONDS = 0.01
#: mel frames per encoder position (conv2 has stride 2)
INPUT_STRIDE = 2


@dataclass
class WordTiming:
    """One word of a segment with its start/end in seconds (from cross-attention alignment)."""

    word: str
    start: float
    end: float
    tokens: list[int]


@dataclass
class DecodingOptions:
    """The long-form settings of one transcription (validated by :func:`check_options`).

    The defaults are transformers' ``generate()`` defaults: greedy, no fallback, no
    conditioning on previous text. The values openai-whisper and transformers' documentation
    recommend for long recordings are ``temperature=(0.0, 0.2, 0.4, 0.6, 0.8, 1.0)``,
    ``compression_ratio_threshold=1.35`` (measured on token bytes; see
    :func:`compression_ratio`), ``logprob_threshold=-1.0``, ``no_speech_threshold=0.6`` and
    ``condition_on_prev_tokens=True``.
    """

    temperatures: tuple[float, ...] = (0.0,)
    compression_ratio_threshold: float | None = None
    logprob_threshold: float | None = None
    no_speech_threshold: float | None = None
    condition_on_prev_tokens: bool = False
    prompt_ids: list[int] | None = None
    return_timestamps: bool = True
    word_timestamps: bool = False
    max_new_tokens: int | None = None
    seed: int = 0
    num_beams: int = 1
    #: tokens (timestamps included) the first window's output is forced to start with: a
    #: stream's committed text, so that a decode writes only the uncommitted tail
    prefix_tokens: list[int] | None = None


def check_options(
    temperature: float | Sequence[float],
    compression_ratio_threshold: float | None,
    logprob_threshold: float | None,
    no_speech_threshold: float | None,
) -> tuple[float, ...]:
    """The temperature schedule, after checking every number a caller can pass."""
    raw = (temperature,) if isinstance(temperature, int | float) else tuple(temperature)
    if not raw:
        raise InvalidArgumentError("temperature: an empty schedule; pass 0.0 for greedy decoding")
    if len(raw) > 32:
        raise InvalidArgumentError(f"temperature: at most 32 fallback steps, got {len(raw)}")
    for value in raw:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgumentError(f"temperature must be numbers, got {value!r}")
        if not (math.isfinite(value) and 0.0 <= value <= 10.0):
            raise InvalidArgumentError(f"temperature must be within 0..10, got {value!r}")
    for name, threshold in (
        ("compression_ratio_threshold", compression_ratio_threshold),
        ("logprob_threshold", logprob_threshold),
        ("no_speech_threshold", no_speech_threshold),
    ):
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not math.isfinite(threshold)
        ):
            raise InvalidArgumentError(
                f"{name} must be a finite number or None, got {threshold!r}"
            )
    if no_speech_threshold is not None and logprob_threshold is None:
        raise InvalidArgumentError(
            "no_speech_threshold needs logprob_threshold: a window is skipped as silence only"
            " when its mean log-probability is also below logprob_threshold"
        )
    return tuple(float(v) for v in raw)


def compression_ratio(tokens: Sequence[int], vocab_size: int) -> float:
    """Raw over zlib-compressed length of the tokens' little-endian bytes, as transformers
    measures repetition (openai-whisper measures the text instead, hence its 2.4 threshold
    against transformers' recommended 1.35)."""
    width = int(math.log2(vocab_size) / 8) + 1
    raw = b"".join(int(t).to_bytes(width, "little") for t in tokens)
    return len(raw) / len(zlib.compress(raw)) if raw else 0.0


def _log_softmax(scores: Array) -> Array:
    top = scores.max()
    if not np.isfinite(top):
        # every score masked (or a non-finite one): shift by the largest finite score
        finite = scores[np.isfinite(scores)]
        top = finite.max() if finite.size else 0.0
    shifted = scores - top
    result: Array = shifted - np.log(np.exp(shifted).sum())
    return result


def _softmax(scores: Array) -> Array:
    result: Array = np.exp(_log_softmax(scores.astype(np.float64)))
    return result


@dataclass
class SpecialTokens:
    """The ids the timestamp rules and the decoder prompt use."""

    eos: int
    pad: int
    no_timestamps: int
    prev_sot: int | None
    suppress: list[int]
    begin_suppress: list[int]
    max_initial_timestamp_index: int | None = None

    @property
    def timestamp_begin(self) -> int:
        return self.no_timestamps + 1

    @property
    def no_speech(self) -> int:
        return self.no_timestamps - 1


def apply_timestamp_rules(
    scores: Array, generated: Sequence[int], special: SpecialTokens
) -> Array | None:
    """Mask ``scores`` (vocab,) in place by the rules of transformers'
    ``WhisperTimeStampLogitsProcessor``: timestamps come in pairs (except right before the end
    of text), never decrease, a window starts with a timestamp, and a timestamp is forced when
    the timestamps together are likelier than any single text token. Returns the log-softmax
    of the masked scores when the last rule left them as they were (the decoder's step needs
    it for the chosen token's log-probability), None when it masked the text tokens."""
    begin = special.timestamp_begin
    scores[special.no_timestamps] = -np.inf
    last_was_timestamp = len(generated) >= 1 and generated[-1] >= begin
    penultimate_was_timestamp = len(generated) < 2 or generated[-2] >= begin
    if last_was_timestamp:
        if penultimate_was_timestamp:
            scores[begin:] = -np.inf
        else:
            scores[: special.eos] = -np.inf
    stamps = [t for t in generated if t >= begin]
    if stamps:
        lowest = (
            stamps[-1] if last_was_timestamp and not penultimate_was_timestamp else stamps[-1] + 1
        )
        scores[begin:lowest] = -np.inf
    if not generated:
        scores[:begin] = -np.inf
        if special.max_initial_timestamp_index is not None:
            scores[begin + special.max_initial_timestamp_index + 1 :] = -np.inf
    logprobs = _log_softmax(scores.astype(np.float32))
    stamp_mass = np.logaddexp.reduce(logprobs[begin:].astype(np.float64))
    if stamp_mass > logprobs[:begin].max():
        scores[:begin] = -np.inf
        return None
    return logprobs


@dataclass
class WindowResult:
    """One decoding attempt of one window."""

    tokens: list[int]  # generated, end-of-text included when it was emitted
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    temperature: float
    needs_fallback: bool = False
    skip: bool = False
    attention: Array | None = None  # (heads, generated - 1, frames) for word timestamps


@dataclass
class Attempt:
    """What :class:`LongFormDecoder` records of each attempt (tests compare these with
    transformers' fallback decisions)."""

    seek: int
    temperature: float
    avg_logprob: float
    compression_ratio: float
    no_speech_prob: float
    needs_fallback: bool
    skip: bool


@dataclass
class RawSegment:
    """A segment before text decoding: times in seconds, tokens with their timestamps."""

    start: float
    end: float
    tokens: list[int]
    result: WindowResult
    token_times: list[float] = field(default_factory=list)


class LongFormDecoder:
    """Sequential decoding of one recording's log-mel ``features`` (mels, frames)."""

    def __init__(
        self,
        model: WhisperForConditionalGeneration,
        device: str,
        special: SpecialTokens,
        options: DecodingOptions,
        *,
        vocab_size: int,
        max_length: int,
        alignment_heads: list[tuple[int, int]] | None = None,
        median_filter_width: int = 7,
    ) -> None:
        self.model = model
        self.device = device
        self.special = special
        self.options = options
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.alignment_heads = alignment_heads or []
        self.median_filter_width = median_filter_width
        self.rng = np.random.default_rng(options.seed)
        self.init_length = 1
        self.attempts: list[Attempt] = []

    # ------------------------------------------------------------------ the window loop

    def segments(
        self, features: Array, init_tokens: list[int], *, frames: int, real_frames: int
    ) -> Iterator[RawSegment]:
        """Segments in order, each window's as soon as it is decoded. ``frames``: the mel
        frames to decode (3000 for audio padded to one window); ``real_frames``: the frames
        that hold audio (word timestamps crop the attention to them)."""
        opts = self.options
        special = self.special
        self.init_length = len(init_tokens)
        window = self.model.config.input_frames
        mtp = self.model.config.max_target_positions
        seek = 0
        condition = opts.condition_on_prev_tokens
        history: list[list[int]] = []
        if opts.prompt_ids is not None:
            prompt = opts.prompt_ids
            history.append(prompt[1:] if prompt and prompt[0] == special.prev_sot else prompt)
        running_max = self.max_length
        while seek < frames:
            count = min(frames - seek, window)
            piece = np.zeros((1, features.shape[0], window), dtype=np.float32)
            piece[0, :, :count] = features[:, seek : seek + count]
            decoder_ids = self._decoder_input(init_tokens, history, condition)
            if len(decoder_ids) >= mtp:
                raise InvalidArgumentError(
                    f"Whisper: the decoder prompt ({len(decoder_ids)} tokens with initial_prompt"
                    f" and previous text) leaves no room under max_target_positions {mtp}"
                )
            if opts.max_new_tokens is not None:
                limit = min(opts.max_new_tokens, mtp - len(decoder_ids))
            else:
                # transformers raises its max_length by the prompt length on every window
                # and keeps the raised value (capped at max_target_positions)
                running_max = min(running_max + min(mtp // 2 - 1, len(decoder_ids)), mtp)
                limit = running_max - len(decoder_ids)
            prefix = (opts.prefix_tokens or []) if seek == 0 else []
            result = self._with_fallback(
                piece, decoder_ids, limit, seek, real_frames - seek, prefix
            )
            condition = opts.condition_on_prev_tokens and result.temperature < 0.5
            if result.skip:
                seek += count
                continue
            found, offset = self._split(result, seek, count, len(decoder_ids))
            history.extend(s.tokens for s in found)
            seek += offset
            yield from found

    def _decoder_input(
        self, init_tokens: list[int], history: list[list[int]], condition: bool
    ) -> list[int]:
        special = self.special
        prompt = self.options.prompt_ids
        if condition and history:
            begin = special.timestamp_begin
            previous: list[int] = []
            for tokens in history:
                double_end = len(tokens) > 2 and tokens[-2] >= begin
                previous.extend(tokens[:-1] if double_end else tokens)
            previous = previous[-(self.model.config.max_target_positions // 2 - 1) :]
            head = [special.prev_sot] if special.prev_sot is not None else []
            return head + previous + init_tokens
        if prompt is not None:
            return list(prompt) + init_tokens
        return list(init_tokens)

    def _with_fallback(
        self,
        piece: Array,
        decoder_ids: list[int],
        limit: int,
        seek: int,
        audio_frames: int,
        prefix: list[int],
    ) -> WindowResult:
        opts = self.options
        encoded = self.model.encode(from_numpy(piece, self.device))
        base = self.model.start_decoding(encoded)
        result: WindowResult | None = None
        for index, temperature in enumerate(opts.temperatures):
            if opts.num_beams > 1 and temperature == 0.0:
                result = self._beam_search(base, decoder_ids, limit, opts.num_beams)
            else:  # sampling is never beamed (transformers sets num_beams=1 for it)
                result = self._decode(base, decoder_ids, limit, temperature, prefix)
            self._judge(result)
            self.attempts.append(
                Attempt(
                    seek,
                    temperature,
                    result.avg_logprob,
                    result.compression_ratio,
                    result.no_speech_prob,
                    result.needs_fallback,
                    result.skip,
                )
            )
            if not result.needs_fallback or index == len(opts.temperatures) - 1:
                break
        assert result is not None  # the schedule is never empty (check_options)
        if opts.word_timestamps and not result.skip:
            result.attention = self._attention(base, decoder_ids, result.tokens, audio_frames)
        return result

    def _judge(self, result: WindowResult) -> None:
        opts = self.options
        threshold = opts.compression_ratio_threshold
        if threshold is not None and result.compression_ratio > threshold:
            result.needs_fallback = True
        if opts.logprob_threshold is not None and result.avg_logprob < opts.logprob_threshold:
            result.needs_fallback = True
            if (
                opts.no_speech_threshold is not None
                and result.no_speech_prob > opts.no_speech_threshold
            ):
                result.needs_fallback = False
                result.skip = True

    # ------------------------------------------------------------------ one attempt

    def _decode(
        self,
        base: DecoderCache,
        decoder_ids: list[int],
        limit: int,
        temperature: float,
        prefix: Sequence[int] = (),
    ) -> WindowResult:
        """One attempt. ``prefix`` tokens are taken as the first generated tokens instead of
        being chosen (their log-probabilities still count, read under the same rules), then
        decoding goes on from them: when they are what the attempt would choose anyway, the
        result is the same, for a fraction of the steps."""
        from ipfs_accelerate.models.whisper import DecoderCache

        special = self.special
        cache = DecoderCache(
            cross=base.cross, self_attn=list(base.self_attn), capacity=base.capacity
        )
        ids = np.array([decoder_ids], dtype=np.int64)
        prefill = self.model.decode_step(from_numpy(ids, self.device), cache, last_only=False)
        prompt_logits = prefill.numpy()[0]
        # the no-speech probability is read where <|startoftranscript|> predicts the next token
        init_start = self._sot_index(decoder_ids)
        no_speech = float(_softmax(prompt_logits[init_start])[special.no_speech])
        logits = prompt_logits[-1]
        generated: list[int] = []
        logprob_sum = 0.0
        timestamps = self.options.return_timestamps
        forced = list(prefix[: max(0, limit)])
        # the logits after each forced token (after the last one only when decoding goes on)
        forced_rows = self._feed(forced[:-1] if len(forced) == limit else forced, cache)
        for step in range(max(0, limit)):
            scores = logits.astype(np.float32, copy=True)
            if step == 0 and special.begin_suppress:
                scores[special.begin_suppress] = -np.inf
            if special.suppress:
                scores[special.suppress] = -np.inf
            # the log-softmax of the masked scores, once per step (the timestamp rules'
            # last one computes it when it leaves the scores as they are)
            logprobs = apply_timestamp_rules(scores, generated, special) if timestamps else None
            if logprobs is None:
                logprobs = _log_softmax(scores)
            if step < len(forced):
                token = forced[step]
                chosen = float(logprobs[token])
                if not math.isfinite(chosen):
                    # the rules now bar the forced token: count it as the model scores it
                    chosen = float(_log_softmax(logits.astype(np.float32))[token])
                logprob_sum += chosen
            else:
                if temperature > 0.0:
                    probabilities = _softmax(scores / np.float32(temperature))
                    token = int(self.rng.choice(len(probabilities), p=probabilities))
                else:
                    token = int(np.argmax(scores))
                logprob_sum += float(logprobs[token])
            generated.append(token)
            if token == special.eos or step == limit - 1:
                break
            if step < len(forced_rows):
                logits = forced_rows[step]
                continue
            logits = self.model.decode_step(
                from_numpy(np.array([[token]], dtype=np.int64), self.device), cache
            ).numpy()[0]
        count = max(1, len(generated))
        return WindowResult(
            tokens=generated,
            avg_logprob=logprob_sum / count,
            compression_ratio=compression_ratio(generated, self.vocab_size),
            no_speech_prob=no_speech,
            temperature=temperature,
        )

    def _feed(self, tokens: list[int], cache: DecoderCache) -> list[Array]:
        """Decode the teacher-forced ``tokens`` into ``cache``: the logits (vocab,) after each,
        in blocks of the sizes FORCED_BLOCKS (shapes that a backend which compiles a graph per
        shape replays, rather than one graph per prefix length)."""
        from ipfs_accelerate.models.whisper import FORCED_BLOCKS

        rows: list[Array] = []
        position = 0
        while position < len(tokens):
            left = len(tokens) - position
            size = next((n for n in FORCED_BLOCKS if n <= left), 1)
            block = np.array([tokens[position : position + size]], dtype=np.int64)
            logits = self.model.decode_step(
                from_numpy(block, self.device), cache, last_only=size == 1
            ).numpy()[0]
            rows.extend(logits if size > 1 else [logits])
            position += size
        return rows

    def _beam_search(
        self, base: DecoderCache, decoder_ids: list[int], limit: int, beams: int
    ) -> WindowResult:
        """transformers' beam search (length_penalty 1, early_stopping False): each step keeps
        the 2 x ``beams`` likeliest continuations of the running beams; those that end (end of
        text, or the length limit) join the finished hypotheses, scored by their summed
        log-probabilities over their length, if they rank among the first ``beams``; the
        others, best first, are the next running beams. It stops when no running beam can
        beat the worst finished one (judged at the current length) or every candidate ended.
        Log-probabilities are the model's, masked by the rules but not renormalised, as
        transformers' beam search scores them."""
        from ipfs_accelerate.models.whisper import DecoderCache

        special = self.special
        cache = DecoderCache(
            cross=base.cross, self_attn=list(base.self_attn), capacity=base.capacity
        )
        ids = np.array([decoder_ids], dtype=np.int64)
        prompt_logits = self.model.decode_step(
            from_numpy(ids, self.device), cache, last_only=False
        ).numpy()[0]
        no_speech = float(_softmax(prompt_logits[self._sot_index(decoder_ids)])[special.no_speech])
        self._reorder(cache, np.zeros(beams, dtype=np.int64))
        logits = np.repeat(prompt_logits[-1:], beams, axis=0)
        keep = 2 * beams
        running: list[list[int]] = [[] for _ in range(beams)]
        running_scores = np.full(beams, -1e9, dtype=np.float32)
        running_scores[0] = 0.0
        finished: list[tuple[float, list[int], bool]] = [(-1e9, [], False)] * beams
        improvable = True
        for step in range(max(0, limit)):
            scores = np.stack([_log_softmax(row.astype(np.float32)) for row in logits])
            for row, generated in zip(scores, running, strict=True):
                if step == 0 and special.begin_suppress:
                    row[special.begin_suppress] = -np.inf
                if special.suppress:
                    row[special.suppress] = -np.inf
                if self.options.return_timestamps:
                    apply_timestamp_rules(row, generated, special)
            totals = (scores + running_scores[:, None]).astype(np.float32).reshape(-1)
            order = np.argsort(-totals, kind="stable")[:keep]
            vocab = scores.shape[1]
            sources, tokens, values = order // vocab, order % vocab, totals[order]
            ends = (tokens == special.eos) | (step + 1 >= limit)
            penalised = values + ends.astype(np.float32) * np.float32(-1e9)
            chosen = np.argsort(-penalised, kind="stable")[:beams]
            length = np.float32(step + 1)
            candidates = []
            for i in range(keep):
                just_finished = bool(i < beams and ends[i])
                score = float(values[i] / length)
                score -= 1e9 * ((not just_finished) + (not improvable))
                candidates.append((score, [*running[sources[i]], int(tokens[i])], just_finished))
            merged = finished + candidates
            ranked = np.argsort(-np.array([m[0] for m in merged], dtype=np.float32), kind="stable")
            finished = [merged[i] for i in ranked[:beams]]
            running = [[*running[sources[i]], int(tokens[i])] for i in chosen]
            running_scores = penalised[chosen].astype(np.float32)
            done = [f[2] for f in finished]
            worst = min(f[0] for f in finished)
            best_possible = running_scores[0] / length
            improvable = improvable and any(
                best_possible > (worst if is_done else -1e9) for is_done in done
            )
            if not improvable or bool(ends.all()):
                break
            self._reorder(cache, sources[chosen])
            step_ids = np.array([[t[-1]] for t in running], dtype=np.int64)
            logits = self.model.decode_step(from_numpy(step_ids, self.device), cache).numpy()
        score, generated, _ = finished[0]
        return WindowResult(
            tokens=generated,
            avg_logprob=score,
            compression_ratio=compression_ratio(generated, self.vocab_size),
            no_speech_prob=no_speech,
            temperature=0.0,
        )

    def _reorder(self, cache: DecoderCache, rows: Array) -> None:
        """Make the cache's batch rows the beams ``rows`` continue (the cross-attention ones
        too when the batch grows from the prompt's one row to the beams)."""
        from ipfs_accelerate import ops

        index = from_numpy(np.asarray(rows, dtype=np.int64), self.device)
        cache.self_attn = [
            (ops.gather(k, index, axis=0), ops.gather(v, index, axis=0))
            for k, v in cache.self_attn
        ]
        if cache.cross[0][0].shape[0] != len(rows):
            cache.cross = [
                (ops.gather(k, index, axis=0), ops.gather(v, index, axis=0))
                for k, v in cache.cross
            ]

    def _sot_index(self, decoder_ids: list[int]) -> int:
        # the decoder prompt ends with the init tokens (<|startoftranscript|> ...), after the
        # previous text or the initial prompt; with <|startoftranscript|> alone transformers
        # reads the first step's logits, the same row
        return len(decoder_ids) - max(1, self.init_length)

    # ------------------------------------------------------------------ segments

    def _split(
        self, result: WindowResult, seek: int, count: int, prompt_length: int
    ) -> tuple[list[RawSegment], int]:
        """The window's segments and how many frames to advance (transformers'
        ``_retrieve_segment``)."""
        begin = self.special.timestamp_begin
        sequence = list(result.tokens)
        if sequence and sequence[-1] == self.special.eos:
            sequence = sequence[:-1]
        is_stamp = [t >= begin for t in sequence]
        single_ending = is_stamp[-2:] == [False, True]
        cuts = [i + 1 for i in range(len(is_stamp) - 1) if is_stamp[i] and is_stamp[i + 1]]
        offset_s = seek * FRAME_SECONDS
        times = self._token_times(result, offset_s, len(sequence))
        segments: list[RawSegment] = []
        if cuts:
            if single_ending:
                cuts.append(len(sequence))
            else:
                cuts[-1] += 1
            last = 0
            for i, cut in enumerate(cuts):
                tokens = sequence[last:cut]
                end_index = -1 if i < len(cuts) - 1 or single_ending else -2
                segments.append(
                    RawSegment(
                        offset_s + (tokens[0] - begin) * TIME_PRECISION,
                        offset_s + (tokens[end_index] - begin) * TIME_PRECISION,
                        tokens,
                        result,
                        times[last:cut],
                    )
                )
                last = cut
            if single_ending:
                advance = count
            else:
                advance = (sequence[last - 2] - begin) * INPUT_STRIDE
        else:
            stamps = [i for i, stamp in enumerate(is_stamp) if stamp]
            end = float(int(count * FRAME_SECONDS / TIME_PRECISION))
            if stamps and sequence[stamps[-1]] != begin:
                end = float(sequence[stamps[-1]] - begin)
            segments.append(
                RawSegment(offset_s, offset_s + end * TIME_PRECISION, sequence, result, times)
            )
            advance = count
        if advance <= 0:
            # a segment closed at <|0.00|> (possible when the timestamp rules are off and the
            # model emits timestamps anyway) would decode the same window forever
            advance = count
        return segments, advance

    # ------------------------------------------------------------------ word timestamps

    def _attention(
        self, base: DecoderCache, decoder_ids: list[int], tokens: list[int], audio_frames: int
    ) -> Array | None:
        """The alignment heads' cross-attention over the generated tokens that were fed back
        (all but the last), cropped to the frames holding audio."""
        from ipfs_accelerate.models.whisper import DecoderCache

        if len(tokens) < 2:
            return None
        cache = DecoderCache(
            cross=base.cross, self_attn=list(base.self_attn), capacity=base.capacity
        )
        ids = np.array([decoder_ids + tokens[:-1]], dtype=np.int64)
        weights = self.model.cross_attention_weights(
            from_numpy(ids, self.device), cache, self.alignment_heads
        )
        return weights[:, len(decoder_ids) :, : max(0, audio_frames) // 2]

    def _token_times(self, result: WindowResult, offset_s: float, length: int) -> list[float]:
        """Per generated token, the time its alignment path reaches it (transformers'
        ``_extract_token_timestamps``: heads normalised over tokens, median-filtered over
        time, averaged, then dynamic time warping)."""
        if result.attention is None:
            if not self.options.word_timestamps:
                return []
            return [offset_s] * length
        weights = result.attention.astype(np.float32)
        if weights.shape[-1] == 0:
            return [offset_s] * length
        mean = weights.mean(axis=-2, keepdims=True)
        std = weights.std(axis=-2, keepdims=True)
        normalised = (weights - mean) / std
        matrix = median_filter(normalised, self.median_filter_width).mean(axis=0)
        text_index, time_index = dynamic_time_warping(-matrix.astype(np.float64))
        jumps = np.pad(np.diff(text_index), (1, 0), constant_values=1).astype(bool)
        jump_times = time_index[jumps] * TIME_PRECISION
        times = [float(t) + offset_s for t in jump_times]
        times.append(times[-1])
        return times[:length]


def median_filter(values: Array, width: int) -> Array:
    """Median of ``width`` neighbours along the last axis, edges reflected."""
    if width <= 0 or width % 2 != 1:
        raise InvalidArgumentError(f"median_filter_width must be a positive odd int, got {width}")
    half = width // 2
    if values.shape[-1] <= half:
        return values
    pad = [(0, 0)] * (values.ndim - 1) + [(half, half)]
    padded = np.pad(values, pad, mode="reflect")
    windows = np.lib.stride_tricks.sliding_window_view(padded, width, axis=-1)
    result: Array = np.sort(windows, axis=-1)[..., half]
    return result


def dynamic_time_warping(cost_matrix: Array) -> tuple[Array, Array]:
    """The monotonic path of least total cost through ``cost_matrix`` (tokens, frames): its
    token and frame indices. Ties prefer the horizontal move, as transformers' does."""
    rows, cols = cost_matrix.shape
    cost = np.full((rows + 1, cols + 1), np.inf, dtype=np.float32)
    trace = np.full((rows + 1, cols + 1), -1, dtype=np.int8)
    cost[0, 0] = 0
    for j in range(1, cols + 1):
        # the column update depends on cost[i, j - 1] and cost[i - 1, j - 1] (vectorised) and on
        # cost[i - 1, j] (the vertical move), which needs the sequential pass
        diagonal = cost[:-1, j - 1]
        left = cost[1:, j - 1]
        column = cost[:, j]
        values = cost_matrix[:, j - 1]
        for i in range(1, rows + 1):
            c0 = diagonal[i - 1]
            c1 = column[i - 1]
            c2 = left[i - 1]
            if c0 < c1 and c0 < c2:
                best, move = c0, 0
            elif c1 < c0 and c1 < c2:
                best, move = c1, 1
            else:
                best, move = c2, 2
            column[i] = values[i - 1] + best
            trace[i, j] = move
    trace[0, :] = 2
    trace[:, 0] = 1
    i, j = rows, cols
    text: list[int] = []
    time: list[int] = []
    while i > 0 or j > 0:
        text.append(i - 1)
        time.append(j - 1)
        move = trace[i, j]
        if move == 0:
            i -= 1
            j -= 1
        elif move == 1:
            i -= 1
        else:
            j -= 1
    return np.array(text[::-1]), np.array(time[::-1])
