"""The generation loop shared by every decoder family: prefill, then one token per step.

Prompts of different lengths are left-padded into one batch; each sequence keeps its own
settings, random generator, stop conditions and detokenizer, and a finished sequence stops
contributing text (its row keeps running until the batch ends; :class:`ContinuousBatch` in
``_batch.py`` is the batch that sequences join and leave).
Logits come back to the host once per step (the sampling runs in numpy).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.models.generation._cache import (
    CausalLM,
    KVCache,
    capacity_bucket,
    left_padded,
)
from ipfs_accelerate.models.generation._replay import DecodeGraphs
from ipfs_accelerate.models.generation._sampling import (
    GenerationDefaults,
    Resolved,
    SamplingParams,
    log_softmax,
    next_token,
    resolve,
)
from ipfs_accelerate.models.generation._text import (
    IncrementalDetokenizer,
    StopStrings,
    TokenDecoder,
)
from ipfs_accelerate.tensor import from_numpy

__all__ = ["GenerationEngine", "GenerationEvent", "GenerationResult", "TokenLogprob"]

Array = np.ndarray[Any, Any]

#: cache columns allocated for new tokens before the cache first grows
INITIAL_NEW_COLUMNS = 256


@dataclass(frozen=True)
class TopLogprob:
    token_id: int
    token: str
    logprob: float


@dataclass(frozen=True)
class TokenLogprob:
    """A generated token's log-probability under the model (before sampling settings) and
    the ``logprobs`` most likely alternatives."""

    token_id: int
    token: str
    logprob: float
    top: tuple[TopLogprob, ...] = ()


@dataclass(frozen=True)
class GenerationEvent:
    """What one sequence produced in one step: its new text (may be "") and token."""

    index: int
    delta: str
    token_id: int
    logprob: TokenLogprob | None = None
    #: "stop" (a stop token or string) or "length" (max_new_tokens) once finished
    finish_reason: str | None = None


@dataclass
class GenerationResult:
    """One finished sequence. ``token_ids``: every generated token (a stop token included);
    ``text``: their decode, cut before a stop string, without a stop token."""

    text: str
    token_ids: list[int]
    finish_reason: str
    prompt_tokens: int
    logprobs: list[TokenLogprob] | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


@dataclass
class _Sequence:
    index: int
    prompt: Array
    settings: Resolved
    detokenizer: IncrementalDetokenizer
    stops: StopStrings
    generated: list[int] = field(default_factory=list)
    emitted: int = 0
    finish_reason: str | None = None
    logprobs: list[TokenLogprob] | None = None


class GenerationEngine:
    """Drives a :class:`~ipfs_accelerate.models.generation.CausalLM` over token prompts."""

    def __init__(
        self, model: CausalLM, tokenizer: TokenDecoder, defaults: GenerationDefaults
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.defaults = defaults
        #: decode steps replayed from captured graphs where the backend offers it (webnn)
        self.decode_graphs = DecodeGraphs(model)

    def generate(
        self,
        prompts: Sequence[Sequence[int]],
        params: Sequence[SamplingParams],
        *,
        use_cache: bool = True,
    ) -> list[GenerationResult]:
        """Every prompt's completion (see :meth:`run`)."""
        sequences = self._start(prompts, params)
        for _ in self._steps(sequences, use_cache=use_cache):
            pass
        return [
            GenerationResult(
                s.detokenizer.text[: s.emitted],
                s.generated,
                s.finish_reason or "length",
                len(s.prompt),
                s.logprobs,
            )
            for s in sequences
        ]

    def run(
        self,
        prompts: Sequence[Sequence[int]],
        params: Sequence[SamplingParams],
        *,
        use_cache: bool = True,
    ) -> Iterator[list[GenerationEvent]]:
        """The events of each step, in order, until every sequence has finished. Arguments
        are checked before the first step runs (a bad one raises here, not mid-stream)."""
        sequences = self._start(prompts, params)
        return self._steps(sequences, use_cache=use_cache)

    # ------------------------------------------------------------------ internals

    def _start(
        self, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams]
    ) -> list[_Sequence]:
        if len(prompts) != len(params):
            raise InvalidArgumentError(
                f"{len(prompts)} prompts but {len(params)} parameter sets; give one per prompt"
            )
        if not prompts:
            raise InvalidArgumentError("no prompts given")
        context, vocab = self.model.context_length, self.model.vocab_size
        sequences = []
        for i, prompt in enumerate(prompts):
            ids = np.asarray(list(prompt), dtype=np.int64)
            if ids.size == 0:
                raise InvalidArgumentError(f"prompt {i} is empty (it encodes to no tokens)")
            if ids.min() < 0 or ids.max() >= vocab:
                raise InvalidArgumentError(
                    f"prompt {i} has token ids outside the vocabulary [0, {vocab})"
                )
            if ids.size >= context:
                raise InvalidArgumentError(
                    f"prompt {i} has {ids.size} tokens; the model's context is {context}"
                    " positions, which leaves no room for a new token"
                )
            settings = resolve(
                params[i], self.defaults, prompt_length=int(ids.size), context_length=context
            )
            sequences.append(
                _Sequence(
                    i,
                    ids,
                    settings,
                    IncrementalDetokenizer(self.tokenizer),
                    StopStrings(settings.stop),
                    logprobs=[] if settings.logprobs is not None else None,
                )
            )
        return sequences

    def _steps(
        self, sequences: list[_Sequence], *, use_cache: bool
    ) -> Iterator[list[GenerationEvent]]:
        model, device = self.model, self.model.device
        batch = len(sequences)
        ids, valid = left_padded([s.prompt for s in sequences])
        width = ids.shape[1]
        longest = max(s.settings.max_new_tokens for s in sequences)
        # a long max_new_tokens (by default the rest of the context) is not allocated up front;
        # a short one sizes the capacity that replayed steps read to what will be filled
        capacity = capacity_bucket(width + min(longest, INITIAL_NEW_COLUMNS))
        cache = KVCache(model.cache_shape(), batch, capacity, device)
        history_ids, history_valid = [ids], [valid]
        logits = model(from_numpy(ids, device), cache.begin(valid)).numpy()
        while True:
            events = [
                self._advance(s, logits[row])
                for row, s in enumerate(sequences)
                if s.finish_reason is None
            ]
            yield events
            active = np.array([s.finish_reason is None for s in sequences])
            if not active.any():
                return
            step_ids = np.array([[s.generated[-1]] for s in sequences], dtype=np.int64)
            step_valid = active[:, None]
            if use_cache:
                logits = self.decode_graphs.forward(cache, step_ids, step_valid).numpy()
            else:  # the whole sequence again through a fresh cache (a reference path)
                history_ids.append(step_ids)
                history_valid.append(step_valid)
                all_ids = np.concatenate(history_ids, axis=1)
                all_valid = np.concatenate(history_valid, axis=1)
                fresh = KVCache(model.cache_shape(), batch, all_ids.shape[1], device)
                step = fresh.begin(all_valid)
                logits = model(from_numpy(all_ids, device), step).numpy()

    def _advance(self, s: _Sequence, logits: Array) -> GenerationEvent:
        settings = s.settings
        token = next_token(logits, settings, s.prompt, np.asarray(s.generated, dtype=np.int64))
        s.generated.append(token)
        logprob = None
        if s.logprobs is not None and settings.logprobs is not None:
            logprob = self._logprob(logits, token, settings.logprobs)
            s.logprobs.append(logprob)
        detok = s.detokenizer
        if token in settings.stop_token_ids:
            detok.finish()
            s.finish_reason = "stop"
        else:
            detok.push(token)
            if len(s.generated) >= settings.max_new_tokens:
                detok.finish()
                s.finish_reason = "length"
        text = detok.text
        cut = s.stops.find(text, s.emitted)
        if cut >= 0:
            end = cut
            s.finish_reason = "stop"
        elif s.finish_reason is not None:
            end = len(text)
        else:
            end = max(s.emitted, s.stops.safe_length(text))
        delta = text[s.emitted : end]
        s.emitted = end
        return GenerationEvent(s.index, delta, token, logprob, s.finish_reason)

    def _logprob(self, logits: Array, token: int, top: int) -> TokenLogprob:
        scores = log_softmax(np.asarray(logits, dtype=np.float32))
        top = min(top, len(scores))
        candidates = np.argpartition(-scores, top - 1)[:top] if top else np.arange(0)
        best = candidates[np.argsort(-scores[candidates], kind="stable")]
        return TokenLogprob(
            token,
            self._token_text(token),
            float(scores[token]),
            tuple(TopLogprob(int(i), self._token_text(int(i)), float(scores[i])) for i in best),
        )

    def _token_text(self, token: int) -> str:
        return self.tokenizer.decode([token], skip_special_tokens=False)
