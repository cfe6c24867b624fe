"""Configuration: where a backend finds its key and URL, the resilience knobs, secrets.

Lookup order for every setting: ``metadata`` (generic key first, then the provider's own
keys), then ``resources`` (same keys), then environment variables. Empty strings count as
missing. API keys are wrapped in :class:`Secret` the moment they are read, so they never
show in a repr, a log line, an exception or the metrics.
"""

from __future__ import annotations

import dataclasses
import hmac
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ipfs_accelerate.errors import ConfigurationError

__all__ = [
    "BreakerConfig",
    "ResilienceConfig",
    "Secret",
    "hide_secrets",
    "normalise_base_url",
    "redact_url",
    "resolve_setting",
]


class Secret:
    """A string that refuses to be shown. ``reveal()`` returns it (for building headers only)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('********')"

    __str__ = __repr__

    def __format__(self, spec: str) -> str:
        return repr(self)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash(("Secret", self._value))

    def __reduce__(self) -> Any:
        # pickling would write the key to disk or a socket in clear; refuse
        raise TypeError("Secret values cannot be pickled")


_SECRET_SETTING_HINTS = ("key", "token", "secret", "password", "passwd")


def _looks_secret(name: str) -> bool:
    lowered = name.lower()
    return (
        lowered.endswith(_SECRET_SETTING_HINTS) or "api_key" in lowered or "credential" in lowered
    )


def hide_secrets(settings: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``settings`` with every key-like string value wrapped in a :class:`Secret`."""
    return {
        name: (Secret(value) if isinstance(value, str) and _looks_secret(str(name)) else value)
        for name, value in settings.items()
    }


def resolve_setting(
    metadata: Mapping[str, Any] | None,
    resources: Mapping[str, Any] | None,
    keys: Sequence[str],
    env: Sequence[str] = (),
) -> tuple[str | None, str | None]:
    """Return ``(value, source)`` for the first non-empty of ``keys`` then ``env``.

    ``source`` says where it came from (``"metadata['openai_api_key']"``, ``"$OPENAI_API_KEY"``)
    so configuration errors can say what was consulted, without showing the value.
    """
    for where, mapping in (("metadata", metadata), ("resources", resources)):
        if not mapping:
            continue
        for key in keys:
            value = mapping.get(key)
            if isinstance(value, Secret):
                value = value.reveal()
            if value is not None and str(value).strip():
                return str(value).strip(), f"{where}[{key!r}]"
    for name in env:
        value = os.environ.get(name)
        if value is not None and value.strip():
            return value.strip(), f"${name}"
    return None, None


def normalise_base_url(url: str, *, provider: str, default_port: int | None = None) -> str:
    """Validate a base URL (http/https with a host) and strip its trailing slash.

    A bare ``host:port`` (as ``OLLAMA_HOST`` is often written) gets ``http://``.
    """
    raw = url.strip()
    if "://" not in raw:
        raw = "http://" + raw
    parts = urlsplit(raw)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(
            f"{provider}: base URL must be http(s)://host[:port][/path], got {redact_url(url)!r}"
        )
    try:
        port = parts.port
    except ValueError:
        raise ConfigurationError(
            f"{provider}: base URL has an invalid port: {redact_url(url)!r}"
        ) from None
    netloc = parts.netloc
    if port is None and default_port is not None and "://" not in url.strip():
        netloc = f"{netloc}:{default_port}"
    return urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), parts.query, "")).rstrip("/")


def redact_url(url: str) -> str:
    """The URL without credentials or query string (either may carry a key)."""
    try:
        parts = urlsplit(url)
        port = parts.port  # ValueError for a port that is not a number in range
    except ValueError:
        return "<unparseable url>"
    host = parts.hostname or ""
    if port:
        host = f"{host}:{port}"
    if parts.username or parts.password:
        host = f"***@{host}"
    query = "***" if parts.query else ""
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """Circuit breaker thresholds.

    The circuit opens after ``failure_threshold`` consecutive failures, or when at least
    ``min_calls`` of the last ``window_size`` outcomes are recorded and the failure share
    among them reaches ``failure_rate_threshold``. It stays open ``cooldown`` seconds, then
    lets exactly one probe through (half-open): success closes it, failure reopens it.
    ``enabled=False`` turns the breaker off.
    """

    enabled: bool = True
    failure_threshold: int = 5
    failure_rate_threshold: float = 0.5
    window_size: int = 20
    min_calls: int = 10
    cooldown: float = 30.0

    def __post_init__(self) -> None:
        _check(
            self.failure_threshold >= 1, "failure_threshold must be >= 1", self.failure_threshold
        )
        _check(
            0.0 < self.failure_rate_threshold <= 1.0,
            "failure_rate_threshold must be in (0, 1]",
            self.failure_rate_threshold,
        )
        _check(self.window_size >= 1, "window_size must be >= 1", self.window_size)
        _check(
            1 <= self.min_calls <= self.window_size,
            "min_calls must be in [1, window_size]",
            self.min_calls,
        )
        _check(self.cooldown >= 0, "cooldown must be >= 0", self.cooldown)


@dataclass(frozen=True, slots=True)
class ResilienceConfig:
    """Retry, timeout, queue and breaker settings of a backend (overridable per call).

    * ``max_retries``: retries after the first attempt, for retryable failures only.
    * backoff before retry ``n`` (0-based): ``min(initial_backoff * multiplier**n, max_backoff)``
      scaled by a random factor in ``[1 - jitter, 1]``; a server's ``retry-after-ms`` /
      ``retry-after`` replaces it when given, unless larger than ``max_retry_after``, in which
      case the error is raised at once (retrying earlier than asked would be refused anyway).
    * ``connect_timeout``: establishing a connection; ``timeout``: one attempt of a plain
      request, or the longest silence allowed within a stream; ``deadline``: the whole call
      (queue wait, attempts, backoff) for plain requests and until the first chunk for streams.
    * ``max_concurrency`` requests in flight per endpoint; up to ``max_queue`` more wait
      (by priority); beyond that :class:`~ipfs_accelerate.errors.QueueFullError`.
    * ``max_response_bytes``: larger bodies (or stream events) raise ProtocolError.
    """

    max_retries: int = 2
    initial_backoff: float = 0.5
    max_backoff: float = 8.0
    backoff_multiplier: float = 2.0
    jitter: float = 0.25
    max_retry_after: float = 60.0
    connect_timeout: float = 10.0
    timeout: float = 600.0
    deadline: float | None = None
    max_concurrency: int = 64
    max_queue: int = 1024
    max_response_bytes: int = 32 * 1024 * 1024
    breaker: BreakerConfig = field(default_factory=BreakerConfig)

    def __post_init__(self) -> None:
        _check(self.max_retries >= 0, "max_retries must be >= 0", self.max_retries)
        _check(self.initial_backoff >= 0, "initial_backoff must be >= 0", self.initial_backoff)
        _check(self.max_backoff >= 0, "max_backoff must be >= 0", self.max_backoff)
        _check(
            self.backoff_multiplier >= 1, "backoff_multiplier must be >= 1", self.backoff_multiplier
        )
        _check(0.0 <= self.jitter <= 1.0, "jitter must be in [0, 1]", self.jitter)
        _check(self.max_retry_after >= 0, "max_retry_after must be >= 0", self.max_retry_after)
        _check(_positive(self.connect_timeout), "connect_timeout must be > 0", self.connect_timeout)
        _check(_positive(self.timeout), "timeout must be > 0", self.timeout)
        _check(
            self.deadline is None or _positive(self.deadline),
            "deadline must be > 0 or None",
            self.deadline,
        )
        _check(self.max_concurrency >= 1, "max_concurrency must be >= 1", self.max_concurrency)
        _check(self.max_queue >= 0, "max_queue must be >= 0", self.max_queue)
        _check(
            self.max_response_bytes >= 1, "max_response_bytes must be >= 1", self.max_response_bytes
        )

    @classmethod
    def from_value(cls, value: Any) -> ResilienceConfig:
        """Accept a ResilienceConfig, a dict of its fields (``breaker`` may be a dict), or None."""
        if value is None:
            return cls()
        if isinstance(value, ResilienceConfig):
            return value
        if isinstance(value, Mapping):
            data = dict(value)
            known = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(data) - known)
            if unknown:
                raise ConfigurationError(
                    f"unknown resilience settings: {unknown}; known: {sorted(known)}"
                )
            breaker = data.get("breaker")
            if isinstance(breaker, Mapping):
                bknown = {f.name for f in dataclasses.fields(BreakerConfig)}
                bunknown = sorted(set(breaker) - bknown)
                if bunknown:
                    raise ConfigurationError(
                        f"unknown breaker settings: {bunknown}; known: {sorted(bknown)}"
                    )
                data["breaker"] = BreakerConfig(**breaker)
            return cls(**data)
        raise ConfigurationError(
            f"resilience settings must be a ResilienceConfig or a dict, got {type(value).__name__}"
        )


def _positive(value: float) -> bool:
    return isinstance(value, int | float) and value > 0 and not math.isnan(value)


def _check(ok: bool, message: str, value: Any) -> None:
    if not ok:
        raise ConfigurationError(f"{message}, got {value!r}")
