"""Unit rules of the resilience pieces: retry classification, Retry-After parsing, backoff,
circuit breaker state machine, priority limiter."""

from __future__ import annotations

import asyncio
import email.utils
import threading
import time

import pytest

from ipfs_accelerate.api_backends import (
    BreakerConfig,
    CircuitBreaker,
    CircuitState,
    Priority,
    PriorityLimiter,
    ResilienceConfig,
)
from ipfs_accelerate.api_backends._errors import error_for_status
from ipfs_accelerate.errors import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ConfigurationError,
    ConflictError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    QueueFullError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)
from ipfs_accelerate.resilience import (
    backoff_delay,
    counts_as_failure,
    is_retryable,
    parse_retry_after,
)

from .conftest import run

pytestmark = pytest.mark.timeout(60)


def _status(status: int, headers: dict[str, str] | None = None) -> Exception:
    return error_for_status(
        provider="p",
        status=status,
        headers=headers or {},
        body=b'{"error": {"message": "m"}}',
        content_type="application/json",
        request_id="r1",
        what="op",
    )


@pytest.mark.parametrize(
    ("status", "cls", "retryable"),
    [
        (400, BadRequestError, False), (401, AuthenticationError, False),
        (403, PermissionDeniedError, False), (404, NotFoundError, False),
        (422, BadRequestError, False), (408, None, True), (409, ConflictError, True),
        (429, RateLimitError, True), (500, ServerError, True), (502, ServerError, True),
        (503, ServerError, True), (504, ServerError, True), (529, ServerError, True),
    ],
)  # fmt: skip
def test_status_classes_and_retryability(status: int, cls: type | None, retryable: bool) -> None:
    error = _status(status)
    if cls is not None:
        assert type(error) is cls
    assert error.status == status and error.provider == "p" and error.request_id == "r1"
    assert is_retryable(error) is retryable


def test_transport_errors_are_retryable_protocol_errors_are_not() -> None:
    assert is_retryable(APIConnectionError("x"))
    assert is_retryable(APITimeoutError("x"))
    assert not is_retryable(ProtocolError("x"))
    assert not is_retryable(StreamInterruptedError("x"))
    assert not is_retryable(CircuitOpenError("x"))
    assert not is_retryable(QueueFullError("x"))


def test_x_should_retry_header_overrides() -> None:
    assert not is_retryable(_status(500, {"x-should-retry": "false"}))
    assert is_retryable(_status(400, {"x-should-retry": "true"}))


def test_breaker_accounting_of_outcomes() -> None:
    assert counts_as_failure(_status(500)) is True
    assert counts_as_failure(APIConnectionError("x")) is True
    assert counts_as_failure(ProtocolError("x")) is True
    assert counts_as_failure(_status(400)) is False
    assert counts_as_failure(_status(429)) is None


def test_parse_retry_after_forms() -> None:
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after": "0.5"}) == 0.5
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert 28 <= parse_retry_after({"retry-after": date}, now=now) <= 31  # type: ignore[operator]
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({"retry-after": "-4"}) is None
    assert parse_retry_after({"retry-after-ms": "nan"}) is None
    assert parse_retry_after({}) is None


def test_rate_limit_error_carries_retry_after() -> None:
    error = _status(429, {"retry-after": "7"})
    assert isinstance(error, RateLimitError) and error.retry_after == 7.0


def test_backoff_is_exponential_capped_and_jittered_down() -> None:
    cfg = ResilienceConfig(
        initial_backoff=0.5, backoff_multiplier=2.0, max_backoff=3.0, jitter=0.25
    )
    assert backoff_delay(0, cfg, None, rng=lambda: 0.0) == 0.5
    assert backoff_delay(1, cfg, None, rng=lambda: 0.0) == 1.0
    assert backoff_delay(5, cfg, None, rng=lambda: 0.0) == 3.0
    assert backoff_delay(1, cfg, None, rng=lambda: 1.0) == 0.75
    assert backoff_delay(3, cfg, 2.5, rng=lambda: 1.0) == 2.5  # the server's wait wins
    assert backoff_delay(0, cfg, 61.0) is None  # longer than max_retry_after: give up


def test_config_validation() -> None:
    with pytest.raises(ConfigurationError, match="max_retries"):
        ResilienceConfig(max_retries=-1)
    with pytest.raises(ConfigurationError, match="unknown resilience settings"):
        ResilienceConfig.from_value({"retries": 3})
    with pytest.raises(ConfigurationError, match="min_calls"):
        BreakerConfig(window_size=5, min_calls=6)
    assert ResilienceConfig.from_value({"breaker": {"cooldown": 1}}).breaker.cooldown == 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_breaker_opens_after_consecutive_failures_and_probes_once() -> None:
    clock = Clock()
    breaker = CircuitBreaker(
        BreakerConfig(failure_threshold=3, min_calls=10, window_size=10, cooldown=5), clock=clock
    )
    for _ in range(2):
        breaker.record_failure(breaker.acquire())
    breaker.record_success(breaker.acquire())  # resets the consecutive count
    for _ in range(2):
        breaker.record_failure(breaker.acquire())
    assert breaker.state == CircuitState.CLOSED
    breaker.record_failure(breaker.acquire())
    assert breaker.state == CircuitState.OPEN
    with pytest.raises(CircuitOpenError, match="retry in 5"):
        breaker.acquire()
    clock.now += 5
    assert breaker.state == CircuitState.HALF_OPEN
    probe = breaker.acquire()
    assert probe.probe
    with pytest.raises(CircuitOpenError, match="probe"):
        breaker.acquire()  # only one probe at a time
    breaker.record_failure(probe)
    assert breaker.state == CircuitState.OPEN  # failed probe: open again, cooldown restarts
    clock.now += 4.9
    with pytest.raises(CircuitOpenError):
        breaker.acquire()
    clock.now += 0.1
    probe = breaker.acquire()
    breaker.record_success(probe)
    assert breaker.state == CircuitState.CLOSED
    assert breaker.times_opened == 2


def test_breaker_failure_rate_threshold() -> None:
    breaker = CircuitBreaker(
        BreakerConfig(
            failure_threshold=100, failure_rate_threshold=0.5, window_size=10, min_calls=10
        ),
        clock=Clock(),
    )
    outcomes = [True, False] * 4 + [True]  # 5 failures of 9: not enough calls yet
    for failed in outcomes:
        permit = breaker.acquire()
        (breaker.record_failure if failed else breaker.record_success)(permit)
    assert breaker.state == CircuitState.CLOSED
    breaker.record_success(breaker.acquire())  # 10 calls, 5 failures = 50%
    assert (
        breaker.state == CircuitState.CLOSED
    )  # the tenth call was a success, rate is checked on failure
    breaker.record_failure(breaker.acquire())  # window: 6 failures of 10
    assert breaker.state == CircuitState.OPEN


def test_breaker_neutral_outcome_frees_the_probe() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, cooldown=1), clock=clock)
    breaker.record_failure(breaker.acquire())
    clock.now += 1
    probe = breaker.acquire()
    breaker.release(probe)  # e.g. a 429 or a cancelled probe
    assert breaker.state == CircuitState.HALF_OPEN
    breaker.record_success(breaker.acquire())
    assert breaker.state == CircuitState.CLOSED


def test_breaker_ignores_late_results_from_before_it_opened() -> None:
    clock = Clock()
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=1, cooldown=1), clock=clock)
    slow = breaker.acquire()
    breaker.record_failure(breaker.acquire())
    assert breaker.state == CircuitState.OPEN
    breaker.record_success(slow)  # a success that started before the trip must not close it
    assert breaker.state == CircuitState.OPEN


def test_breaker_disabled() -> None:
    breaker = CircuitBreaker(BreakerConfig(enabled=False, failure_threshold=1))
    for _ in range(5):
        breaker.record_failure(breaker.acquire())
    breaker.acquire()


async def _limiter_order() -> list[str]:
    limiter = PriorityLimiter(1, 10)
    order: list[str] = []
    await limiter.acquire()

    async def worker(name: str, priority: Priority) -> None:
        await limiter.acquire(priority)
        order.append(name)
        limiter.release()

    tasks = [
        asyncio.create_task(worker(n, p))
        for n, p in [
            ("low1", Priority.LOW),
            ("normal1", Priority.NORMAL),
            ("high1", Priority.HIGH),
            ("normal2", Priority.NORMAL),
            ("high2", Priority.HIGH),
        ]
    ]
    await asyncio.sleep(0.01)
    assert limiter.queued == 5
    limiter.release()
    await asyncio.gather(*tasks)
    return order


def test_limiter_serves_by_priority_then_fifo() -> None:
    assert run(_limiter_order()) == ["high1", "high2", "normal1", "normal2", "low1"]


def test_limiter_bounded_queue_rejects() -> None:
    async def scenario() -> None:
        limiter = PriorityLimiter(2, 1, provider="p", name="ep")
        await limiter.acquire()
        await limiter.acquire()
        waiter = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0.01)
        with pytest.raises(QueueFullError, match="1 waiting, 2 in flight") as info:
            await limiter.acquire(Priority.HIGH)
        assert info.value.provider == "p"
        limiter.release()
        await waiter
        assert limiter.in_flight == 2 and limiter.queued == 0

    run(scenario())


def test_limiter_cancelled_waiter_frees_its_place_and_slot() -> None:
    async def scenario() -> None:
        limiter = PriorityLimiter(1, 5)
        await limiter.acquire()
        cancelled = asyncio.create_task(limiter.acquire(Priority.HIGH))
        behind = asyncio.create_task(limiter.acquire(Priority.LOW))
        await asyncio.sleep(0.01)
        cancelled.cancel()
        await asyncio.sleep(0)
        assert limiter.queued == 1
        limiter.release()
        await asyncio.wait_for(
            behind, 1
        )  # the slot went to the next waiter, not to the cancelled one
        limiter.release()
        assert limiter.in_flight == 0 and limiter.queued == 0

    run(scenario())


def test_limiter_slot_granted_to_a_waiter_cancelled_at_the_same_time_is_passed_on() -> None:
    async def scenario() -> None:
        limiter = PriorityLimiter(1, 5)
        await limiter.acquire()
        first = asyncio.create_task(limiter.acquire())
        second = asyncio.create_task(limiter.acquire())
        await asyncio.sleep(0.01)
        limiter.release()  # grants the slot to `first`...
        first.cancel()  # ...which is cancelled before it runs
        await asyncio.wait_for(second, 1)
        assert limiter.in_flight == 1 and limiter.queued == 0
        limiter.release()
        assert limiter.in_flight == 0

    run(scenario())


def test_limiter_wait_timeout_is_typed() -> None:
    async def scenario() -> None:
        limiter = PriorityLimiter(1, 5, provider="p")
        await limiter.acquire()
        with pytest.raises(APITimeoutError, match="request queue"):
            await limiter.acquire(timeout=0.02)
        assert limiter.queued == 0

    run(scenario())


def test_limiter_works_across_loops_and_threads() -> None:
    limiter = PriorityLimiter(1, 5)
    run(limiter.acquire())
    got = threading.Event()

    def other_thread() -> None:
        asyncio.run(limiter.acquire())
        got.set()

    thread = threading.Thread(target=other_thread)
    thread.start()
    time.sleep(0.05)
    assert not got.is_set() and limiter.queued == 1
    limiter.release()  # from this thread, with no loop running here
    thread.join(2)
    assert got.is_set() and limiter.in_flight == 1
