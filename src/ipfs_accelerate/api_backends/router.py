"""Routing over the endpoints of one or several backends, with failover.

A :class:`Router` holds targets (one endpoint of one backend, plus an optional model) in
ordered tiers, later tiers being fallbacks; each request is sent one attempt at a time to
a target chosen by a balancing strategy (:mod:`ipfs_accelerate.resilience.balancing`),
failing over, cooling down failing targets and backing off between rounds. What happens to
a request, step by step, is in docs/router.md.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import math
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from ipfs_accelerate.errors import (
    APIError,
    APITimeoutError,
    AuthenticationError,
    CircuitOpenError,
    ConfigurationError,
    NotFoundError,
    PermissionDeniedError,
    QueueFullError,
    RateLimitError,
    UnsupportedOpError,
)
from ipfs_accelerate.resilience import (
    CircuitState,
    Metrics,
    ResilienceConfig,
    backoff_delay,
    counts_as_failure,
    is_retryable,
    start_span,
)
from ipfs_accelerate.resilience.balancing import STRATEGIES, make_strategy

from ._routing import RouterConfig, RouteTarget
from ._types import ChatChunk, ChatResponse, EmbeddingResponse, HealthStatus, Usage
from .cache import ResponseCache, cached_operation

if TYPE_CHECKING:  # pragma: no cover
    from ipfs_accelerate.servers import ManagedServer

__all__ = ["STRATEGIES", "RouteTarget", "Router", "RouterConfig", "make_strategy"]

T = TypeVar("T")
AttemptOptions = dict[str, Any]


class _Call:
    __slots__ = (
        "attempts",
        "deadline_at",
        "excluded",
        "last_error",
        "max_attempts",
        "rounds",
        "span",
        "start",
        "stream",
        "tried",
        "what",
    )

    def __init__(
        self, what: str, deadline: float | None, max_attempts: int, span: Any, stream: bool = False
    ) -> None:
        self.what = what
        self.stream = stream
        self.start = time.monotonic()
        self.deadline_at = self.start + deadline if deadline is not None else None
        self.max_attempts = max_attempts
        self.attempts = 0
        self.rounds = 0
        self.tried: set[int] = set()
        self.excluded: set[int] = set()
        self.last_error: Exception | None = None
        self.span = span

    def remaining(self) -> float | None:
        if self.deadline_at is None:
            return None
        return self.deadline_at - time.monotonic()


_FAIL_OVER = "fail_over"
_REFUSED = "refused"
_EXCLUDE = "exclude"


class Router:
    """Routes chat, streaming chat, embeddings (and any backend call through :meth:`call` /
    :meth:`stream`) over tiers of targets. The rules: docs/router.md.

    ``targets``: the first tier (backends and/or RouteTargets); ``fallbacks``: later tiers,
    each a backend/target or a list of them. Settings: ``config`` (a RouterConfig or dict)
    and keyword overrides (``strategy="weighted"``...). ``cache``: a response cache in
    front of chat, stream_chat and embed (True, a store URL, a dict of options or a
    :class:`~ipfs_accelerate.api_backends.cache.ResponseCache`; see docs/caching.md).
    """

    provider = "router"

    def __init__(
        self,
        targets: Iterable[Any] | Any,
        *,
        fallbacks: Iterable[Any] = (),
        config: RouterConfig | Mapping[str, Any] | None = None,
        name: str = "router",
        cache: Any = None,
        **overrides: Any,
    ) -> None:
        self.config = RouterConfig.from_value(config, **overrides)
        self.name = name
        self.response_cache: ResponseCache | None = ResponseCache.from_value(cache)
        tiers: list[list[RouteTarget]] = [self._tier(targets)]
        for tier in fallbacks:
            tiers.append(self._tier(tier))
        self.tiers = [t for t in tiers if t]
        if not self.tiers:
            raise ConfigurationError(f"router {name!r}: no targets")
        self.router_targets: list[RouteTarget] = [t for tier in self.tiers for t in tier]
        seen: set[int] = set()
        for target in self.router_targets:
            if id(target) in seen:
                raise ConfigurationError(f"router {name!r}: target {target.name} is listed twice")
            seen.add(id(target))
        self._strategies = [make_strategy(self.config.strategy) for _ in self.tiers]
        self.metrics = Metrics()
        self.failovers = 0
        self.panic_picks = 0
        self.waits: Counter[str] = Counter()  # sleeps for a backoff or a target's cooldown
        self.waited_s: dict[str, float] = {}
        self._health_task: asyncio.Task[None] | None = None
        self._sync: Any = None
        self._backoff_config = ResilienceConfig(
            initial_backoff=self.config.backoff, max_backoff=self.config.max_backoff,
            max_retry_after=self.config.max_retry_after, jitter=self.config.jitter,
        )  # fmt: skip

    @staticmethod
    def _tier(items: Any) -> list[RouteTarget]:
        if isinstance(items, str) or not isinstance(items, Iterable) or hasattr(items, "members"):
            items = [items]
        out: list[RouteTarget] = []
        for item in items:
            out.extend(RouteTarget.expand(item))
        return out

    def __repr__(self) -> str:
        return f"<Router {self.name} {self.config.strategy} tiers={[len(t) for t in self.tiers]}>"

    @property
    def targets(self) -> list[RouteTarget]:
        return list(self.router_targets)

    def _max_attempts(self, options: dict[str, Any]) -> int:
        retries = options.pop("max_retries", None)
        if retries is not None:
            if not (isinstance(retries, int) and retries >= 0):
                raise ConfigurationError(
                    f"router {self.name}: max_retries must be an int >= 0, got {retries!r}"
                )
            return retries + 1
        return self._default_attempts()

    def _default_attempts(self) -> int:
        return self.config.max_attempts or max(3, len(self.router_targets))

    def _deadline(self, options: dict[str, Any]) -> float | None:
        deadline = options.pop("deadline", self.config.deadline)
        if deadline is not None and not (isinstance(deadline, int | float) and deadline > 0):
            raise ConfigurationError(
                f"router {self.name}: deadline must be > 0 seconds, got {deadline!r}"
            )
        return float(deadline) if deadline is not None else None

    # ------------------------------------------------------------------ the common interface

    def _cache_namespace(self) -> str:
        return f"router {self.name}"

    @cached_operation("chat")
    async def chat(self, model: str | None, messages: Any, **options: Any) -> ChatResponse:
        """Chat through the first target that answers (each target may set its own model)."""
        attempts, deadline = self._max_attempts(options), self._deadline(options)

        def op(target: RouteTarget, attempt: AttemptOptions) -> Awaitable[ChatResponse]:
            return target.backend.chat(target.model or model, messages, **options, **attempt)

        return await self.call(op, what="chat", deadline=deadline, max_attempts=attempts)

    @cached_operation("stream_chat")
    def stream_chat(
        self, model: str | None, messages: Any, **options: Any
    ) -> AsyncIterator[ChatChunk]:
        """Streamed chat; fails over only before the first chunk."""
        attempts, deadline = self._max_attempts(options), self._deadline(options)

        def op(target: RouteTarget, attempt: AttemptOptions) -> AsyncIterator[ChatChunk]:
            return target.backend.stream_chat(target.model or model, messages, **options, **attempt)

        return self.stream(op, what="stream_chat", deadline=deadline, max_attempts=attempts)

    @cached_operation("embed")
    async def embed(
        self, model: str | None, inputs: str | Sequence[str], **options: Any
    ) -> EmbeddingResponse:
        attempts, deadline = self._max_attempts(options), self._deadline(options)

        def op(target: RouteTarget, attempt: AttemptOptions) -> Awaitable[EmbeddingResponse]:
            return target.backend.embed(target.model or model, inputs, **options, **attempt)

        return await self.call(op, what="embed", deadline=deadline, max_attempts=attempts)

    # ------------------------------------------------------------------ generic calls

    async def call(
        self,
        op: Callable[[RouteTarget, AttemptOptions], Awaitable[T]],
        *,
        what: str = "call",
        deadline: float | None = None,
        max_attempts: int | None = None,
    ) -> T:
        """Run ``await op(target, attempt_options)`` on targets until one succeeds.

        ``attempt_options`` holds ``max_retries`` (the backend's own retries for this attempt)
        and, under a deadline, ``deadline`` (the seconds left): pass them to the backend call.
        """
        self._ensure_health_checks()
        attempts = max_attempts or self._default_attempts()
        call = _Call(
            what,
            deadline,
            attempts,
            start_span(f"ipfs_accelerate.router.{what}", {"router": self.name}),
        )
        self.metrics.on_request()
        try:
            while True:
                target = await self._acquire(call)
                remaining = call.remaining()
                attempt_start = self._begin(call, target)
                try:
                    with start_span(
                        "ipfs_accelerate.router.attempt", self._span_attrs(target, call)
                    ) as span:
                        if remaining is None:
                            result = await op(target, self._attempt_options(None))
                        else:
                            async with asyncio.timeout(remaining):
                                result = await op(target, self._attempt_options(remaining))
                        span.set("outcome", "success")
                except BaseException as exc:
                    target.in_flight -= 1
                    self._on_error(call, target, exc, attempt_start)
                    continue
                target.in_flight -= 1
                latency = time.monotonic() - attempt_start
                self._on_success(target, latency)
                break
        except BaseException as exc:
            self.metrics.on_failure(exc)
            call.span.end(exc)
            raise
        usage = getattr(result, "usage", None)
        if isinstance(usage, Usage):
            self.metrics.on_success(
                time.monotonic() - call.start, usage.input_tokens, usage.output_tokens
            )
        else:
            self.metrics.on_success(time.monotonic() - call.start)
        call.span.set("router.attempts", call.attempts)
        call.span.set("router.target", target.name)
        call.span.end()
        return result

    async def stream(
        self,
        op: Callable[[RouteTarget, AttemptOptions], AsyncIterator[T]],
        *,
        what: str = "stream",
        deadline: float | None = None,
        max_attempts: int | None = None,
    ) -> AsyncIterator[T]:
        """Iterate ``op(target, attempt_options)`` (an async iterator) from the first target
        that delivers a first item; after that item, errors are raised, never failed over."""
        self._ensure_health_checks()
        attempts = max_attempts or self._default_attempts()
        call = _Call(
            what,
            deadline,
            attempts,
            start_span(f"ipfs_accelerate.router.{what}", {"router": self.name}),
            stream=True,
        )
        self.metrics.on_request()
        delivered = False
        target: RouteTarget | None = None
        iterator: AsyncIterator[T] | None = None
        try:
            while True:
                target = await self._acquire(call)
                remaining = call.remaining()
                attempt_start = self._begin(call, target)
                iterator = None
                try:
                    # inside the try: a backend may refuse synchronously (UnsupportedOpError...)
                    iterator = op(target, self._attempt_options(remaining))
                    if remaining is None:
                        first = await iterator.__anext__()
                    else:
                        async with asyncio.timeout(remaining):
                            first = await iterator.__anext__()
                except StopAsyncIteration:
                    # an empty but complete stream: nothing to fail over from
                    target.in_flight -= 1
                    first = None
                    await _aclose(iterator)
                    iterator = None
                    break
                except BaseException as exc:
                    target.in_flight -= 1
                    await _aclose(iterator)
                    iterator = None
                    self._on_error(call, target, exc, attempt_start)
                    continue
                ttfc = time.monotonic() - attempt_start
                self.metrics.on_first_chunk(time.monotonic() - call.start)
                self._observe_ttfc(target, ttfc)
                call.span.set("router.target", target.name)
                call.span.set("router.attempts", call.attempts)
                break
            if iterator is not None:
                delivered = True
                yield first  # type: ignore[misc]
                async for item in iterator:
                    yield item
        except BaseException as exc:
            if delivered and target is not None and isinstance(exc, Exception):
                self._count_failure(target, exc)
            self.metrics.on_failure(exc)
            call.span.end(exc)
            raise
        finally:
            if iterator is not None:
                await _aclose(iterator)
            if delivered and target is not None:
                target.in_flight -= 1
        assert target is not None
        self._on_success(target, None)
        self.metrics.on_success(time.monotonic() - call.start)
        call.span.end()

    # ------------------------------------------------------------------ picking

    def _availability(self, target: RouteTarget, now: float) -> float:
        """0 when the target can take a request now, else seconds until it may (inf: unknown)."""
        until = max(target.cooldown_until, target.hard_cooldown_until)
        wait = until - now if until > now else 0.0
        breaker = target.endpoint.breaker
        if breaker.is_open:
            return math.inf  # an open circuit fails fast; it is not waited for
        managed = target.managed
        if managed is not None and not managed.is_ready:
            return math.inf
        return wait

    def _pick(self, call: _Call, now: float) -> tuple[RouteTarget | None, float]:
        soonest = math.inf
        for strict in (True, False):
            for index, tier in enumerate(self.tiers):
                candidates = []
                for target in tier:
                    key = id(target)
                    if key in call.tried or key in call.excluded:
                        continue
                    if strict and target.healthy is False:
                        continue
                    wait = self._availability(target, now)
                    if wait <= 0:
                        candidates.append(target)
                    elif wait < soonest:
                        soonest = wait
                if candidates:
                    # an endpoint at its concurrency limit would queue the request: prefer
                    # one with a free slot while there is one
                    free = [
                        t
                        for t in candidates
                        if t.endpoint.limiter.in_flight < t.endpoint.limiter.max_concurrency
                    ]
                    chosen: RouteTarget = self._strategies[index].choose(
                        free or candidates, tier, call.stream
                    )
                    return chosen, 0.0
        return None, soonest

    async def _acquire(self, call: _Call) -> RouteTarget:
        """The next target for this call, waiting (within the deadline) for one if needed."""
        while True:
            if call.attempts >= call.max_attempts:
                raise self._exhausted(call, "no attempts left")
            now = time.monotonic()
            target, soonest = self._pick(call, now)
            if target is not None:
                return target
            pause = 0.0
            if soonest == math.inf:
                # everything left was tried in this round: start another after a backoff
                remaining = [t for t in self.router_targets if id(t) not in call.excluded]
                if not remaining:
                    raise self._exhausted(call, "no target can serve this request")
                if call.rounds + 1 >= call.max_attempts:
                    raise self._exhausted(call, f"{call.rounds + 1} round(s) over every target")
                soonest = min(self._availability(t, now) for t in remaining)
                retry_after = getattr(call.last_error, "retry_after", None)
                backoff = backoff_delay(call.rounds, self._backoff_config, retry_after)
                if backoff is None:
                    raise self._exhausted(call, f"the server asked to wait {retry_after:g} s")
                pause = backoff
                call.tried.clear()
                call.rounds += 1
            left = call.remaining()
            limit = self.config.max_wait if left is None else min(self.config.max_wait, left)
            if soonest > 0:
                # nothing is available: a target cooled only by our failure-streak heuristic
                # is better than waiting (never one the server asked to wait for, never an
                # open circuit); the one whose cooldown ends first
                fallback = self._panic_pick(call, now)
                if fallback is not None:
                    if pause >= limit:
                        raise self._exhausted(
                            call, f"a backoff of {pause:.3g} s would pass the deadline or max_wait"
                        )
                    if pause:
                        await self._wait(pause, "backoff")
                    self.panic_picks += 1
                    return fallback
            if pause >= limit:
                raise self._exhausted(
                    call, f"a backoff of {pause:.3g} s would pass the deadline or max_wait"
                )
            if soonest > limit:
                if soonest == math.inf:
                    raise self._exhausted(call, "no target is available")
                raise self._exhausted(
                    call,
                    f"the next target would be free in {soonest:.3g} s, "
                    "past the deadline or max_wait",
                )
            await self._wait(max(soonest, pause), "backoff" if pause >= soonest else "cooldown")

    async def _wait(self, seconds: float, why: str) -> None:
        self.waits[why] += 1
        self.waited_s[why] = self.waited_s.get(why, 0.0) + seconds
        await asyncio.sleep(seconds)

    def _panic_pick(self, call: _Call, now: float) -> RouteTarget | None:
        best: RouteTarget | None = None
        for target in self.router_targets:
            key = id(target)
            if (
                key in call.tried
                or key in call.excluded
                or target.hard_cooldown_until > now
                or target.cooldown_until <= now
            ):
                continue
            breaker = target.endpoint.breaker
            if breaker.is_open:
                continue
            if target.managed is not None and not target.managed.is_ready:
                continue
            if best is None or target.cooldown_until < best.cooldown_until:
                best = target
        return best

    def _exhausted(self, call: _Call, why: str) -> Exception:
        error = call.last_error
        tried = call.attempts
        if error is None:
            left = call.remaining()
            if left is not None and left <= 0.01:
                error = APITimeoutError(
                    f"router {self.name}: {call.what}: deadline reached before any attempt",
                    provider=self.provider,
                )
            else:
                states = "; ".join(self._state_line(t) for t in self.router_targets)
                error = CircuitOpenError(
                    f"router {self.name}: {call.what}: no target available ({why}): {states}",
                    provider=self.provider,
                )
        if isinstance(error, BaseException) and hasattr(error, "add_note"):
            error.add_note(
                f"router {self.name}: {call.what} gave up after {tried} attempt(s): {why}"
            )
        return error

    def _state_line(self, target: RouteTarget) -> str:
        now = time.monotonic()
        parts = []
        until = max(target.cooldown_until, target.hard_cooldown_until)
        if until > now:
            parts.append(f"cooling down {until - now:.3g} s")
        state = target.endpoint.breaker.state
        if state != CircuitState.CLOSED:
            parts.append(f"circuit {state}")
        if target.managed is not None and not target.managed.is_ready:
            parts.append(f"server {target.managed.state.value}")
        if target.healthy is False:
            parts.append("health check failed")
        return f"{target.name}: {', '.join(parts) or 'available'}"

    # ------------------------------------------------------------------ accounting

    def _begin(self, call: _Call, target: RouteTarget) -> float:
        call.tried.add(id(target))
        call.attempts += 1
        target.picks += 1
        target.in_flight += 1
        return time.monotonic()

    def _attempt_options(self, remaining: float | None) -> AttemptOptions:
        options: AttemptOptions = {"max_retries": self.config.attempt_retries}
        if remaining is not None:
            options["deadline"] = max(remaining, 1e-3)
        return options

    def _span_attrs(self, target: RouteTarget, call: _Call) -> dict[str, Any]:
        return {"router": self.name, "target": target.name, "provider": target.backend.provider,
                "endpoint": target.endpoint.name, "model": target.model,
                "attempt": call.attempts}  # fmt: skip

    def _classify(self, exc: Exception) -> str | None:
        if isinstance(exc, CircuitOpenError | QueueFullError):
            return _REFUSED
        if isinstance(
            exc, AuthenticationError | PermissionDeniedError | NotFoundError | UnsupportedOpError
        ):
            return _EXCLUDE
        if isinstance(exc, APIError) and is_retryable(exc):
            return _FAIL_OVER
        return None

    def _on_error(
        self, call: _Call, target: RouteTarget, exc: BaseException, attempt_start: float
    ) -> None:
        """Account a failed attempt; return to fail over, or raise what ends the call."""
        if isinstance(exc, builtins.TimeoutError) and not isinstance(exc, APIError):
            # our own deadline guard fired: the call has no time left
            timeout = APITimeoutError(
                f"router {self.name}: {call.what}: "
                f"deadline reached during an attempt on {target.name}",
                provider=self.provider,
            )
            self._count_failure(target, timeout)
            raise timeout from exc
        if not isinstance(exc, Exception):
            raise exc  # cancellation and the like: nothing to fail over
        kind = self._classify(exc)
        if kind is None:
            self._count_failure(target, exc)
            raise exc
        if kind == _REFUSED:
            call.attempts -= 1  # never sent: it does not use up an attempt
            target.picks -= 1
            if call.last_error is None:
                call.last_error = exc
            return
        self.failovers += 1
        self.metrics.on_retry()
        call.last_error = exc
        self._count_failure(target, exc)
        if kind == _EXCLUDE:
            call.excluded.add(id(target))
            if isinstance(exc, AuthenticationError | PermissionDeniedError):
                self._cool(target, self.config.auth_cooldown, cap=self.config.auth_cooldown)
        left = call.remaining()
        if left is not None and left <= 0:
            raise exc

    def _count_failure(self, target: RouteTarget, exc: Exception) -> None:
        target.failures[type(exc).__name__] += 1
        failure = counts_as_failure(exc)
        rate_limited = isinstance(exc, RateLimitError) or getattr(exc, "status", None) == 429
        if not failure and not rate_limited:
            return
        target.consecutive_failures += 1
        if target.consecutive_failures >= self.config.cooldown_after:
            retry_after = getattr(exc, "retry_after", None)
            if isinstance(retry_after, int | float) and retry_after >= 0:
                duration = float(retry_after)
            else:
                duration = self.config.cooldown * 2**target.cooldown_streak
            target.cooldown_streak += 1
            target.consecutive_failures = 0
            self._cool(target, duration, soft=not isinstance(retry_after, int | float))

    def _cool(
        self, target: RouteTarget, duration: float, *, soft: bool = False, cap: float | None = None
    ) -> None:
        """Keep ``target`` out for ``duration`` s (at most ``max_cooldown``, or ``cap``).

        A *soft* cooldown (the failure-streak heuristic) may be overridden when nothing else
        is left; a hard one (the server's Retry-After, rejected credentials) never is."""
        until = time.monotonic() + min(duration, self.config.max_cooldown if cap is None else cap)
        if until > max(target.cooldown_until, target.hard_cooldown_until):
            target.cooldowns += 1
        if soft:
            target.cooldown_until = max(target.cooldown_until, until)
        else:
            target.hard_cooldown_until = max(target.hard_cooldown_until, until)

    def _on_success(self, target: RouteTarget, latency: float | None) -> None:
        target.successes += 1
        target.consecutive_failures = 0
        target.cooldown_streak = 0
        if latency is not None:
            a = self.config.ewma_alpha
            target.ewma_latency = (
                latency
                if target.ewma_latency is None
                else a * latency + (1 - a) * target.ewma_latency
            )

    def _observe_ttfc(self, target: RouteTarget, ttfc: float) -> None:
        a = self.config.ewma_alpha
        target.ewma_ttfc = (
            ttfc if target.ewma_ttfc is None else a * ttfc + (1 - a) * target.ewma_ttfc
        )

    # ------------------------------------------------------------------ health

    async def check_health(self) -> dict[str, HealthStatus]:
        """Probe every target once (concurrently); failing targets are avoided until they pass."""

        async def probe(target: RouteTarget) -> HealthStatus:
            try:
                status = await target.backend.health(timeout=self.config.health_timeout)
            except Exception as exc:  # health() should not raise; a broken one counts as down
                status = HealthStatus(False, None, None, f"{type(exc).__name__}: {exc}")
            target.healthy = status.healthy
            target.last_health = status
            return status

        results = await asyncio.gather(*(probe(t) for t in self.router_targets))
        return {t.name: r for t, r in zip(self.router_targets, results, strict=True)}

    def _ensure_health_checks(self) -> None:
        if self.config.health_interval is None:
            return
        task = self._health_task
        if task is not None and not task.done():
            return
        self._health_task = asyncio.get_running_loop().create_task(
            self._health_loop(), name=f"health-{self.name}"
        )

    def start_health_checks(self) -> None:
        """Start the periodic health checks now (they otherwise start with the first request)."""
        if self.config.health_interval is None:
            raise ConfigurationError(
                f"router {self.name}: set health_interval to run periodic health checks"
            )
        self._ensure_health_checks()

    async def _health_loop(self) -> None:
        interval = self.config.health_interval
        assert interval is not None
        while True:
            await self.check_health()
            await asyncio.sleep(interval)

    async def aclose(self) -> None:
        """Stop the health checks. Backends stay open (the router does not own them)."""
        task, self._health_task = self._health_task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def __aenter__(self) -> Router:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ stats

    def get_stats(self) -> dict[str, Any]:
        stats = self.metrics.snapshot()
        now = time.monotonic()
        stats.update(
            provider=self.provider,
            name=self.name,
            strategy=self.config.strategy,
            failovers=self.failovers,
            panic_picks=self.panic_picks,
            waits=dict(self.waits),
            waited_s={k: round(v, 3) for k, v in self.waited_s.items()},
            tiers=[[t.name for t in tier] for tier in self.tiers],
            targets=[t.stats(now) for t in self.router_targets],
        )
        if self.response_cache is not None:
            stats["cache"] = self.response_cache.stats()
        return stats

    @property
    def sync(self) -> Any:
        """Blocking twin (``router.sync.chat(...)``), as for a backend."""
        from ._sync import SyncFacade

        if self._sync is None:
            self._sync = SyncFacade(self)  # type: ignore[arg-type]
        return self._sync

    def managed_servers(self) -> list[ManagedServer]:
        seen: dict[int, ManagedServer] = {}
        for target in self.router_targets:
            if target.managed is not None:
                seen[id(target.managed)] = target.managed
        return list(seen.values())


async def _aclose(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        with contextlib.suppress(Exception):
            await close()
