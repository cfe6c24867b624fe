"""The resilience pieces shared by the API clients (``api_backends``) and object storage
(``storage``): configuration and secrets, retry decisions and backoff, the circuit breaker,
the priority limiter, metrics, pool statistics, balancing strategies, tracing spans and the
sync facade's loop thread. Each client composes them; none of them knows a protocol.

Importing this package loads the standard library only.
"""

from __future__ import annotations

from ._breaker import BreakerPermit, CircuitBreaker, CircuitState
from ._config import (
    BreakerConfig,
    ResilienceConfig,
    Secret,
    hide_secrets,
    normalise_base_url,
    redact_url,
    resolve_setting,
)
from ._limiter import PriorityLimiter
from ._metrics import Metrics
from ._retry import (
    RETRYABLE_STATUS,
    backoff_delay,
    counts_as_failure,
    is_retryable,
    parse_retry_after,
)
from ._stats import StatsEndpoint, pool_stats, pooled_circuit_state
from ._sync import BlockingFacade, iterate_sync, run_sync
from ._tracing import Span, start_span
from ._types import HealthStatus, Priority
from .balancing import STRATEGIES, Candidate, make_strategy

__all__ = [
    "RETRYABLE_STATUS",
    "STRATEGIES",
    "BlockingFacade",
    "BreakerConfig",
    "BreakerPermit",
    "Candidate",
    "CircuitBreaker",
    "CircuitState",
    "HealthStatus",
    "Metrics",
    "Priority",
    "PriorityLimiter",
    "ResilienceConfig",
    "Secret",
    "Span",
    "StatsEndpoint",
    "backoff_delay",
    "counts_as_failure",
    "hide_secrets",
    "is_retryable",
    "iterate_sync",
    "make_strategy",
    "normalise_base_url",
    "parse_retry_after",
    "pool_stats",
    "pooled_circuit_state",
    "redact_url",
    "resolve_setting",
    "run_sync",
    "start_span",
]
