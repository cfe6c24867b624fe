"""Sampling parameters, their checks, and the logits processors (numpy, one row at a time).

The processors follow transformers' definitions: ``repetition_penalty`` as
RepetitionPenaltyLogitsProcessor (over the prompt and the generated tokens), then the warpers
in transformers' order: temperature, top-k, top-p, min-p. ``presence_penalty`` and
``frequency_penalty`` follow OpenAI's definition over the generated tokens
(``logit - frequency * count - presence * (count > 0)``), applied after the repetition
penalty. Greedy decoding applies the penalties and takes the argmax.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from ipfs_accelerate.errors import CheckpointError, InvalidArgumentError

__all__ = [
    "MAX_STOP_STRINGS",
    "GenerationDefaults",
    "SamplingParams",
    "apply_frequency_presence",
    "apply_min_p",
    "apply_repetition_penalty",
    "apply_temperature",
    "apply_top_k",
    "apply_top_p",
]

Array = np.ndarray[Any, Any]

#: the most stop strings one request may give (each checked against every new token)
MAX_STOP_STRINGS = 16
#: the longest stop string accepted (characters)
MAX_STOP_LENGTH = 256
#: the most alternatives ``logprobs`` may ask for
MAX_LOGPROBS = 20


@dataclass(frozen=True)
class SamplingParams:
    """What one sequence's generation may set; None leaves the checkpoint's default.

    ``temperature=0`` means greedy. ``do_sample`` forces sampling on or off (default: on
    when a positive ``temperature`` is given, else the checkpoint's ``do_sample``).
    ``logprobs``: None for none, N >= 0 for the chosen token's log-probability and N
    alternatives. ``stop`` strings end the text before them; ``stop_token_ids`` add to the
    checkpoint's end-of-sequence tokens, which ``ignore_eos`` drops (benchmarks: always
    ``max_new_tokens``).
    """

    max_new_tokens: int | None = None
    temperature: float | None = None
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    do_sample: bool | None = None
    stop: Sequence[str] | str | None = None
    stop_token_ids: Sequence[int] | None = None
    logprobs: int | None = None
    ignore_eos: bool = False

    @classmethod
    def from_kwargs(cls, params: Mapping[str, Any]) -> SamplingParams:
        """From keyword arguments; an unknown name raises InvalidArgumentError naming it."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise InvalidArgumentError(
                f"unknown generation parameter(s) {', '.join(unknown)};"
                f" known: {', '.join(sorted(known))}"
            )
        return cls(**params)


@dataclass(frozen=True)
class GenerationDefaults:
    """The checkpoint's defaults (``generation_config.json``, else ``config.json``)."""

    eos_token_ids: tuple[int, ...] = ()
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float = 1.0
    min_p: float | None = None
    repetition_penalty: float = 1.0
    max_new_tokens: int | None = None
    max_length: int | None = None

    @classmethod
    def from_configs(
        cls, generation: Mapping[str, Any], config: Mapping[str, Any]
    ) -> GenerationDefaults:
        eos = generation.get("eos_token_id", config.get("eos_token_id"))
        ids = eos if isinstance(eos, list) else [] if eos is None else [eos]
        values: dict[str, Any] = {"eos_token_ids": tuple(int(i) for i in ids)}
        for name in ("do_sample", "temperature", "top_k", "top_p", "min_p",
                     "repetition_penalty", "max_new_tokens", "max_length"):  # fmt: skip
            if generation.get(name) is not None:
                values[name] = generation[name]
        defaults = replace(cls(), **values)
        try:  # the checkpoint's own values must pass the checks a request's do
            resolve(SamplingParams(), defaults, prompt_length=0, context_length=1 << 30)
        except InvalidArgumentError as exc:
            raise CheckpointError(f"generation_config.json: {exc}") from None
        return defaults


@dataclass(frozen=True)
class Resolved:
    """A sequence's settings after defaults and checks (see :func:`resolve`)."""

    max_new_tokens: int
    greedy: bool
    temperature: float
    top_k: int | None
    top_p: float
    min_p: float | None
    repetition_penalty: float
    presence_penalty: float
    frequency_penalty: float
    seed: int | None
    stop: tuple[str, ...]
    stop_token_ids: frozenset[int]
    logprobs: int | None
    rng: np.random.Generator = field(repr=False, compare=False)


def _number(name: str, value: Any, *, integer: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        kind = "an int" if integer else "a number"
        raise InvalidArgumentError(f"{name} must be {kind}, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidArgumentError(f"{name} must be finite, got {value!r}")
    if integer and not number.is_integer():
        raise InvalidArgumentError(f"{name} must be an int, got {value!r}")
    return number


def resolve(
    params: SamplingParams,
    defaults: GenerationDefaults,
    *,
    prompt_length: int,
    context_length: int,
) -> Resolved:
    """``params`` over ``defaults``, checked. An explicit ``max_new_tokens`` beyond the
    context left after the prompt raises; the default is clamped to it."""

    def pick(name: str) -> Any:
        value = getattr(params, name)
        return getattr(defaults, name) if value is None else value

    temperature = _number("temperature", pick("temperature"))
    if temperature < 0:
        raise InvalidArgumentError(f"temperature must be >= 0, got {temperature}")
    if params.do_sample is not None:
        do_sample = bool(params.do_sample)
    elif params.temperature is not None:
        do_sample = temperature > 0
    else:
        do_sample = defaults.do_sample
    top_k = pick("top_k")
    if top_k is not None:
        top_k = int(_number("top_k", top_k, integer=True))
        if top_k < 0:
            raise InvalidArgumentError(f"top_k must be >= 0 (0: no limit), got {top_k}")
        top_k = top_k or None
    top_p = _number("top_p", pick("top_p"))
    if not 0 < top_p <= 1:
        raise InvalidArgumentError(f"top_p must be in (0, 1], got {top_p}")
    min_p = pick("min_p")
    if min_p is not None:
        min_p = _number("min_p", min_p)
        if not 0 <= min_p <= 1:
            raise InvalidArgumentError(f"min_p must be in [0, 1], got {min_p}")
        min_p = min_p or None
    repetition = _number("repetition_penalty", pick("repetition_penalty"))
    if repetition <= 0:
        raise InvalidArgumentError(f"repetition_penalty must be > 0, got {repetition}")
    penalties = {}
    for name in ("presence_penalty", "frequency_penalty"):
        value = _number(name, getattr(params, name) or 0.0)
        if not -2 <= value <= 2:
            raise InvalidArgumentError(f"{name} must be in [-2, 2], got {value}")
        penalties[name] = value
    return Resolved(
        max_new_tokens=_max_new_tokens(params, defaults, prompt_length, context_length),
        greedy=not do_sample or temperature == 0,
        temperature=temperature,
        top_k=top_k,
        top_p=top_p,
        min_p=min_p,
        repetition_penalty=repetition,
        presence_penalty=penalties["presence_penalty"],
        frequency_penalty=penalties["frequency_penalty"],
        seed=_seed(params.seed),
        stop=_stop_strings(params.stop),
        stop_token_ids=_token_ids(params.stop_token_ids)
        | frozenset(() if params.ignore_eos else defaults.eos_token_ids),
        logprobs=_logprobs(params.logprobs),
        rng=np.random.default_rng(params.seed),
    )


def _max_new_tokens(
    params: SamplingParams, defaults: GenerationDefaults, prompt: int, context: int
) -> int:
    left = context - prompt
    if params.max_new_tokens is not None:
        value = int(_number("max_new_tokens", params.max_new_tokens, integer=True))
        if value <= 0:
            raise InvalidArgumentError(f"max_new_tokens must be > 0, got {value}")
        if value > left:
            raise InvalidArgumentError(
                f"max_new_tokens {value} exceeds the context: a prompt of {prompt} tokens"
                f" leaves {left} of the {context} positions"
            )
        return value
    if defaults.max_new_tokens is not None:
        value = int(defaults.max_new_tokens)
    elif defaults.max_length is not None:  # transformers' max_length counts the prompt
        value = int(defaults.max_length) - prompt
    else:
        value = left
    return max(1, min(value, left))


def _seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidArgumentError(f"seed must be a non-negative int, got {seed!r}")
    return seed


def _stop_strings(stop: Any) -> tuple[str, ...]:
    if stop is None:
        return ()
    items = [stop] if isinstance(stop, str) else stop
    if not isinstance(items, Sequence):
        raise InvalidArgumentError(f"stop must be a string or a list of strings, got {stop!r}")
    if len(items) > MAX_STOP_STRINGS:
        raise InvalidArgumentError(
            f"stop: {len(items)} stop strings given, at most {MAX_STOP_STRINGS} are accepted"
        )
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise InvalidArgumentError(f"stop[{i}] must be a non-empty string, got {item!r}")
        if len(item) > MAX_STOP_LENGTH:
            raise InvalidArgumentError(
                f"stop[{i}] has {len(item)} characters, at most {MAX_STOP_LENGTH} are accepted"
            )
    return tuple(items)


def _token_ids(ids: Any) -> frozenset[int]:
    if ids is None:
        return frozenset()
    out = set()
    for i, value in enumerate(ids):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
            raise InvalidArgumentError(
                f"stop_token_ids[{i}] must be a non-negative int, got {value!r}"
            )
        out.add(int(value))
    return frozenset(out)


def _logprobs(n: Any) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= MAX_LOGPROBS:
        raise InvalidArgumentError(f"logprobs must be an int in [0, {MAX_LOGPROBS}], got {n!r}")
    return n


# ----------------------------------------------------------------------------- processors


def apply_repetition_penalty(scores: Array, seen: Array, penalty: float) -> Array:
    """Scores of the tokens in ``seen`` divided by ``penalty`` (multiplied when negative)."""
    if penalty == 1.0 or not len(seen):
        return scores
    out = scores.copy()
    tokens = np.unique(seen)
    picked = out[tokens]
    out[tokens] = np.where(picked < 0, picked * penalty, picked / penalty)
    return out


def apply_frequency_presence(
    scores: Array, generated: Array, frequency: float, presence: float
) -> Array:
    """OpenAI's penalties over the generated tokens."""
    if (frequency == 0 and presence == 0) or not len(generated):
        return scores
    counts = np.bincount(generated, minlength=scores.shape[-1])[: scores.shape[-1]]
    penalty = frequency * counts + presence * (counts > 0)
    return (scores - penalty).astype(scores.dtype)


def apply_temperature(scores: Array, temperature: float) -> Array:
    return scores if temperature == 1.0 else (scores / np.float32(temperature))


def apply_top_k(scores: Array, k: int | None) -> Array:
    """Keep the ``k`` highest scores (and every score tied with the k-th)."""
    if k is None or k >= scores.shape[-1]:
        return scores
    threshold = np.partition(scores, -k)[-k]
    return np.where(scores < threshold, -np.inf, scores).astype(scores.dtype)


def apply_top_p(scores: Array, p: float) -> Array:
    """Keep the smallest set of most probable tokens whose probability reaches ``p``."""
    if p >= 1.0:
        return scores
    order = np.argsort(scores, kind="stable")
    cumulative = np.cumsum(_softmax(scores[order]))
    remove = cumulative <= (1 - p)
    remove[-1] = False
    out = scores.copy()
    out[order[remove]] = -np.inf
    return out


def apply_min_p(scores: Array, min_p: float | None) -> Array:
    """Drop tokens less probable than ``min_p`` times the most probable one."""
    if min_p is None:
        return scores
    probs = _softmax(scores)
    remove = probs < min_p * probs.max()
    remove[int(np.argmax(probs))] = False
    return np.where(remove, -np.inf, scores).astype(scores.dtype)


def _softmax(scores: Array) -> Array:
    shifted = scores.astype(np.float32) - np.max(scores)
    e = np.exp(shifted)
    result: Array = e / e.sum()
    return result


def log_softmax(scores: Array) -> Array:
    shifted = scores.astype(np.float64) - np.max(scores)
    result: Array = shifted - np.log(np.exp(shifted).sum())
    return result


def next_token(scores: Array, settings: Resolved, prompt: Array, generated: Array) -> int:
    """The next token of one sequence from its raw logits ``scores`` (vocab,)."""
    scores = np.asarray(scores, dtype=np.float32)
    seen = np.concatenate([prompt, generated]) if len(generated) else prompt
    scores = apply_repetition_penalty(scores, seen, settings.repetition_penalty)
    scores = apply_frequency_presence(
        scores, generated, settings.frequency_penalty, settings.presence_penalty
    )
    if settings.greedy:
        return int(np.argmax(scores))
    scores = apply_temperature(scores, settings.temperature)
    scores = apply_top_k(scores, settings.top_k)
    scores = apply_top_p(scores, settings.top_p)
    scores = apply_min_p(scores, settings.min_p)
    probs = np.exp(log_softmax(scores))
    cumulative = np.cumsum(probs)
    draw = settings.rng.random() * cumulative[-1]
    return int(min(np.searchsorted(cumulative, draw, side="right"), len(probs) - 1))
