"""Retry decisions and backoff: which failures may be sent again, and after how long.

Transport-free and shared by the API backends, the router and S3 Kit; the server's own
advice (``Retry-After``, ``x-should-retry``) wins over our defaults.
"""

from __future__ import annotations

import email.utils
import random
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from ipfs_accelerate.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    ProtocolError,
    RateLimitError,
    StreamInterruptedError,
)

if TYPE_CHECKING:  # pragma: no cover
    from ._config import ResilienceConfig

__all__ = [
    "RETRYABLE_STATUS",
    "backoff_delay",
    "counts_as_failure",
    "is_retryable",
    "parse_retry_after",
]

RETRYABLE_STATUS = frozenset({408, 409, 429})


def is_retryable(error: BaseException) -> bool:
    """Whether a failed attempt may be sent again.

    Connection failures and timeouts, and HTTP 408/409/429/5xx/529 are retryable (also when
    the error came as an HTML page from a proxy); every other status (400, 401, 403, 404,
    422...) and malformed responses are not. A server's
    ``x-should-retry`` header, when present, has the last word (OpenAI and Anthropic send it).
    """
    if isinstance(error, StreamInterruptedError):
        return False
    if isinstance(error, APIConnectionError | APITimeoutError):
        return True
    if isinstance(error, ProtocolError):
        # only an HTML error page from a proxy with a transient status (502, 503...);
        # a malformed answer (status 2xx) is not fixed by asking again
        status = error.status or 0
        return status in RETRYABLE_STATUS or status >= 500
    if isinstance(error, APIStatusError):
        advice = getattr(error, "should_retry", None)
        if advice is not None:
            return bool(advice)
        status = error.status or 0
        return status in RETRYABLE_STATUS or status >= 500
    return False


def counts_as_failure(error: BaseException) -> bool | None:
    """How an attempt's error counts for the circuit breaker.

    ``True``: the endpoint is unhealthy (connection, timeout, 5xx, 408, malformed response).
    ``False``: it answered sanely (a 4xx about the request is the caller's fault).
    ``None``: neutral: 429 says "slow down", not "broken", and must not open the circuit.
    """
    if isinstance(error, RateLimitError) or (
        isinstance(error, APIStatusError) and error.status == 429
    ):
        return None
    if isinstance(error, APIConnectionError | APITimeoutError | ProtocolError):
        return True
    if isinstance(error, APIStatusError):
        status = error.status or 0
        return status >= 500 or status == 408
    return None


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds the server asks us to wait: ``retry-after-ms``, else ``retry-after``.

    ``retry-after`` may be seconds (possibly fractional) or an HTTP date. Unparseable or
    negative values are ignored (None), never guessed.
    """
    value = headers.get("retry-after-ms")
    if value is not None:
        try:
            ms = float(value)
        except ValueError:
            ms = -1.0
        if ms >= 0 and ms == ms:
            return ms / 1000.0
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
        return max(seconds, 0.0)
    if seconds != seconds or seconds < 0:
        return None
    return seconds


def backoff_delay(
    attempt: int,
    config: ResilienceConfig,
    retry_after: float | None,
    rng: Callable[[], float] = random.random,
) -> float | None:
    """Delay before retry number ``attempt`` (0-based); None when the server's wait is too long."""
    if retry_after is not None:
        if retry_after > config.max_retry_after:
            return None
        return retry_after
    base = min(config.initial_backoff * config.backoff_multiplier**attempt, config.max_backoff)
    return base * (1.0 - config.jitter * rng())
