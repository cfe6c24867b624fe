"""The one base class every API backend derives from.

:class:`APIBackend` owns configuration (key and URL lookup, secrets), the request pipeline
(priority queue -> circuit breaker -> HTTP attempt -> typed error -> retry with backoff) for
plain and streamed requests, metrics, the sync facade and the session lifecycle. A provider
module only builds requests and parses responses; it never handles retries or sockets.

Per-call options accepted by every method, next to the provider's own options:
``priority`` ("high" / "normal" / "low"), ``timeout``, ``connect_timeout``, ``max_retries``,
``deadline`` (seconds for the whole call) and ``extra_headers``. See
:class:`~ipfs_accelerate.api_backends.ResilienceConfig` for what each bounds. ``chat``,
``stream_chat``, ``complete`` and ``embed`` also take ``cache=`` and
``cache_nondeterministic=`` (see :mod:`ipfs_accelerate.api_backends.cache`).
"""

from __future__ import annotations

import asyncio
import builtins
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, TypeVar

from ipfs_accelerate.errors import (
    APIError,
    APITimeoutError,
    CircuitOpenError,
    ConfigurationError,
    ProtocolError,
    StreamInterruptedError,
    UnsupportedOpError,
)
from ipfs_accelerate.resilience import (
    Metrics,
    ResilienceConfig,
    Secret,
    StatsEndpoint,
    backoff_delay,
    counts_as_failure,
    hide_secrets,
    is_retryable,
    normalise_base_url,
    pool_stats,
    redact_url,
    resolve_setting,
)

from ._errors import error_for_status
from ._streams import excerpt, loads_json
from ._sync import SyncFacade, run_sync
from ._transport import Endpoint, HTTPRequest, RawResponse, map_transport_error, request_id_from
from ._types import (
    ChatChunk,
    ChatResponse,
    EmbeddingResponse,
    HealthStatus,
    ModelInfo,
    Priority,
    Usage,
)
from .cache import ResponseCache, cached_operation

__all__ = ["APIBackend", "CallOptions", "StreamParser"]

logger = logging.getLogger("ipfs_accelerate.api_backends")

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)

_CALL_OPTIONS = frozenset(
    {"priority", "timeout", "connect_timeout", "max_retries", "deadline", "extra_headers"}
)


class StreamParser(Protocol[T_co]):
    """Turns the bytes of one streamed response into items; ``finish`` raises if incomplete."""

    def feed(self, data: bytes) -> Sequence[T_co]: ...

    def finish(self) -> Sequence[T_co]: ...


@dataclass(frozen=True, slots=True)
class CallOptions:
    priority: Priority
    timeout: float
    connect_timeout: float
    max_retries: int
    deadline: float | None
    extra_headers: Mapping[str, str] | None


class APIBackend:
    """Base of every provider backend (see the module docstring for the pipeline).

    Subclasses set the class attributes below and implement the operations they support;
    the others raise :class:`~ipfs_accelerate.errors.UnsupportedOpError` before any request.

    Construction reads configuration only (no I/O, no aiohttp import) and raises
    :class:`~ipfs_accelerate.errors.ConfigurationError` at once for a missing key or URL.
    """

    provider: ClassVar[str] = "base"
    #: base URL used when none is configured (None: a URL must be configured)
    default_base_url: ClassVar[str | None] = None
    #: provider-specific metadata keys naming the base URL (``base_url`` is always read first)
    base_url_keys: ClassVar[tuple[str, ...]] = ()
    base_url_env: ClassVar[tuple[str, ...]] = ()
    default_port: ClassVar[int | None] = None
    #: suffixes users often append that this backend adds itself (``/v1``)
    strip_url_suffixes: ClassVar[tuple[str, ...]] = ()
    api_key_keys: ClassVar[tuple[str, ...]] = ()
    api_key_env: ClassVar[tuple[str, ...]] = ()
    requires_api_key: ClassVar[bool] = False
    default_model: ClassVar[str | None] = None
    default_embedding_model: ClassVar[str | None] = None
    #: regular expressions (full match, case-insensitive) of model names this backend serves
    model_patterns: ClassVar[tuple[str, ...]] = ()
    #: the response cache in front of chat/stream_chat/complete/embed (None: off)
    response_cache: ResponseCache | None = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # every provider's own chat/stream_chat/complete/embed gets the response cache in
        # front of it, so a provider module never deals with caching
        super().__init_subclass__(**kwargs)
        for name in ("chat", "stream_chat", "complete", "embed"):
            method = cls.__dict__.get(name)
            if method is not None and callable(method):
                setattr(cls, name, cached_operation(name)(method))

    def __init__(
        self,
        resources: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        resilience: ResilienceConfig | Mapping[str, Any] | None = None,
    ) -> None:
        raw_metadata = dict(metadata or {})
        raw_resources = dict(resources or {})
        key, key_source = resolve_setting(
            raw_metadata, raw_resources, ("api_key", *self.api_key_keys), self.api_key_env
        )
        self._api_key: Secret | None = Secret(key) if key else None
        self._api_key_source = key_source
        # keep the settings for callers, with anything key-like wrapped so it never prints
        self.metadata: dict[str, Any] = hide_secrets(raw_metadata)
        self.resources: dict[str, Any] = hide_secrets(raw_resources)
        self.base_url = self._resolve_base_url(raw_metadata)
        if self.requires_api_key and self._needs_key() and not self._api_key:
            looked = ", ".join(
                [f"metadata[{k!r}]" for k in ("api_key", *self.api_key_keys)]
                + [f"${e}" for e in self.api_key_env]
            )
            raise ConfigurationError(f"{self.provider}: no API key configured (looked in {looked})")
        self.config = ResilienceConfig.from_value(
            resilience if resilience is not None else raw_metadata.get("resilience")
        )
        self.metrics = Metrics()
        self.endpoint = Endpoint(
            self.base_url,
            provider=self.provider,
            config=self.config,
            headers=self._static_headers(),
        )
        self._sync: SyncFacade | None = None
        self._default_options = CallOptions(
            priority=Priority.NORMAL,
            timeout=self.config.timeout,
            connect_timeout=self.config.connect_timeout,
            max_retries=self.config.max_retries,
            deadline=self.config.deadline,
            extra_headers=None,
        )
        models = raw_metadata.get("models")
        self._declared_models: frozenset[str] | None = (
            frozenset(str(m) for m in models)
            if isinstance(models, list | tuple | set | frozenset)
            else None
        )
        self._patterns = [re.compile(p, re.IGNORECASE) for p in self.model_patterns]
        self.response_cache = ResponseCache.from_value(raw_metadata.get("cache"))
        if isinstance(raw_metadata.get("cache"), str):
            # a store URL may carry a password (redis://:pw@host): keep the cache, not the URL
            self.metadata["cache"] = self.response_cache

    # ------------------------------------------------------------------ configuration

    def _resolve_base_url(self, metadata: Mapping[str, Any]) -> str:
        url, self._base_url_source = resolve_setting(
            metadata, self.resources, ("base_url", *self.base_url_keys), self.base_url_env
        )
        if url is None:
            url = self.default_base_url
        if url is None:
            looked = ", ".join(
                [f"metadata[{k!r}]" for k in ("base_url", *self.base_url_keys)]
                + [f"${e}" for e in self.base_url_env]
            )
            raise ConfigurationError(
                f"{self.provider}: no server URL configured (looked in {looked})"
            )
        url = normalise_base_url(url, provider=self.provider, default_port=self.default_port)
        for suffix in self.strip_url_suffixes:
            if url.endswith(suffix):
                url = url[: -len(suffix)]
                break
        return url

    def _cache_namespace(self) -> str:
        """What separates this backend's cached answers from others': provider and base URL."""
        return f"{self.provider} {self.base_url}"

    def _needs_key(self) -> bool:
        """Whether this configuration needs a key (OpenAI-compatible clients only on the cloud)."""
        return True

    def _static_headers(self) -> dict[str, str]:
        """Headers without secrets, sent with every request of this backend."""
        return {}

    def _auth_headers(self) -> dict[str, str]:
        """Headers carrying the credentials, built per call and never stored."""
        if self._api_key:
            return {"Authorization": f"Bearer {self._api_key.reveal()}"}
        return {}

    @property
    def has_api_key(self) -> bool:
        return bool(self._api_key)

    @property
    def is_configured(self) -> bool:
        """Whether this backend was pointed at a service: its key (for services that need one)
        or an explicit URL. A local server's default address (Ollama's localhost:11434) is
        only a guess, so a keyless backend on its default URL does not count."""
        if self.requires_api_key:
            return bool(self._api_key) or not self._needs_key()
        return self._base_url_source is not None

    def __repr__(self) -> str:
        key = "set" if self._api_key else "none"
        return (
            f"<{type(self).__name__} provider={self.provider!r} "
            f"base_url={redact_url(self.base_url)!r} api_key={key}>"
        )

    # ------------------------------------------------------------------ the common interface

    def get_default_model(self) -> str:
        """``metadata["model"]`` if set, else the provider's default model."""
        model = self.metadata.get("model") or self.default_model
        if not model:
            raise ConfigurationError(
                f"{self.provider}: no default model; pass a model or set metadata['model']"
            )
        return str(model)

    def get_default_embedding_model(self) -> str:
        model = (
            self.metadata.get("embedding_model")
            or self.default_embedding_model
            or self.metadata.get("model")
        )
        if not model:
            raise ConfigurationError(
                f"{self.provider}: no default embedding model; "
                "pass a model or set metadata['embedding_model']"
            )
        return str(model)

    @property
    def accepts_any_model(self) -> bool:
        """True when this backend claims every model name (a generic OpenAI-compatible server
        with no declared models); :func:`find_compatible_backend` tries such catch-alls last."""
        return False

    def is_compatible_model(self, model: str) -> bool:
        """Whether this backend serves ``model``: ``metadata["models"]`` when given, else the
        provider's naming rules."""
        if not isinstance(model, str) or not model:
            return False
        if self._declared_models is not None:
            return model in self._declared_models
        return any(p.fullmatch(model) for p in self._patterns)

    async def chat(self, model: str | None, messages: Any, **options: Any) -> ChatResponse:
        """One chat completion. ``messages``: a string or OpenAI-style message dicts."""
        raise UnsupportedOpError(f"{self.provider} does not support chat")

    def stream_chat(
        self, model: str | None, messages: Any, **options: Any
    ) -> AsyncIterator[ChatChunk]:
        """Streamed chat: an async iterator of :class:`ChatChunk`, the last one ``done``."""
        raise UnsupportedOpError(f"{self.provider} does not support streaming chat")

    async def embed(
        self, model: str | None, inputs: str | Sequence[str], **options: Any
    ) -> EmbeddingResponse:
        """Embeddings for one string or a list of strings (one vector each, in order)."""
        raise UnsupportedOpError(f"{self.provider} does not support embeddings")

    async def list_models(self, **options: Any) -> list[ModelInfo]:
        raise UnsupportedOpError(f"{self.provider} does not support listing models")

    def _health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", "/models", expect="json")

    async def health(self, timeout: float = 5.0) -> HealthStatus:
        """Probe the service once (no queue, no retry, no breaker); a down service never raises."""
        request = self._health_request()
        start = time.monotonic()
        headers = {**self.endpoint.headers, **self._auth_headers(), **(request.headers or {})}
        try:
            raw = await self.endpoint.send(
                request, headers, total=timeout, connect=min(timeout, self.config.connect_timeout)
            )
        except APIError as exc:
            return HealthStatus(False, None, time.monotonic() - start, self._scrub(str(exc)))
        latency = time.monotonic() - start
        if 200 <= raw.status < 300:
            return HealthStatus(True, raw.status, latency, "")
        detail = error_for_status(
            provider=self.provider, status=raw.status, headers=raw.headers, body=raw.body,
            content_type=raw.content_type, request_id=raw.request_id, what="health check",
            secret=self._api_key.reveal() if self._api_key else None,
        )  # fmt: skip
        return HealthStatus(False, raw.status, latency, str(detail))

    # ------------------------------------------------------------------ metrics, lifecycle

    def get_stats(self) -> dict[str, Any]:
        """Counters and latency percentiles of this backend (no secrets, no payloads).

        ``circuit_state``, ``in_flight`` and ``queued`` sum up the endpoints requests are
        spread over (:meth:`_pooled_endpoints`): the circuit counts as closed while any of
        them is closed, else half-open while any is. ``endpoints`` lists each one's stats."""
        stats = pool_stats(
            self.metrics, self.provider, self._pooled_endpoints(), self._reported_endpoints()
        )
        if self.response_cache is not None:
            stats["cache"] = self.response_cache.stats()
        return stats

    def _endpoints(self) -> list[Endpoint]:
        """Every endpoint this backend sends to (one here; several for multi-endpoint backends)."""
        return [self.endpoint]

    def _pooled_endpoints(self) -> Sequence[StatsEndpoint]:
        """The interchangeable endpoints a request may go to, whose states :meth:`get_stats`
        sums up: the main one here (OPEA's separate service endpoints are not alternatives to
        it); every member for the multi-endpoint backends."""
        return [self.endpoint]

    def _reported_endpoints(self) -> Sequence[StatsEndpoint]:
        """The endpoints :meth:`get_stats` lists one by one."""
        return self._endpoints()

    def _choose_endpoint(self, request: HTTPRequest) -> Endpoint:
        """The endpoint a request goes to when the operation does not name one.

        The single-endpoint backends always answer ``self.endpoint``; a router overrides this
        (each Endpoint carries its own breaker, limiter and metrics to choose by)."""
        return self.endpoint

    @property
    def sync(self) -> SyncFacade:
        """Blocking twin of this backend (see :class:`SyncFacade`)."""
        if self._sync is None:
            self._sync = SyncFacade(self)
        return self._sync

    async def aclose(self) -> None:
        """Close the connection pools. The backend reopens them if used again."""
        for ep in self._endpoints():
            await ep.aclose()

    def close(self) -> None:
        """Close from sync code (on the sync facade's loop; closes other loops' sessions too)."""
        run_sync(self.aclose())

    async def __aenter__(self: T) -> T:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ the pipeline

    def _options(self, options: dict[str, Any]) -> CallOptions:
        """Split the per-call resilience options out of ``options`` (mutates it)."""
        if _CALL_OPTIONS.isdisjoint(options):
            return self._default_options
        cfg = self.config
        priority = Priority.parse(options.pop("priority", None))
        timeout = options.pop("timeout", None)
        connect = options.pop("connect_timeout", None)
        retries = options.pop("max_retries", None)
        deadline = options.pop("deadline", cfg.deadline)
        headers = options.pop("extra_headers", None)
        if timeout is not None and not (isinstance(timeout, int | float) and timeout > 0):
            raise ConfigurationError(
                f"{self.provider}: timeout must be > 0 seconds, got {timeout!r}"
            )
        if connect is not None and not (isinstance(connect, int | float) and connect > 0):
            raise ConfigurationError(
                f"{self.provider}: connect_timeout must be > 0 seconds, got {connect!r}"
            )
        if retries is not None and not (isinstance(retries, int) and retries >= 0):
            raise ConfigurationError(
                f"{self.provider}: max_retries must be an int >= 0, got {retries!r}"
            )
        if deadline is not None and not (isinstance(deadline, int | float) and deadline > 0):
            raise ConfigurationError(
                f"{self.provider}: deadline must be > 0 seconds, got {deadline!r}"
            )
        return CallOptions(
            priority=priority,
            timeout=float(timeout if timeout is not None else cfg.timeout),
            connect_timeout=float(connect if connect is not None else cfg.connect_timeout),
            max_retries=int(retries if retries is not None else cfg.max_retries),
            deadline=float(deadline) if deadline is not None else None,
            extra_headers=headers,
        )

    def _headers(self, request: HTTPRequest, opts: CallOptions) -> dict[str, str]:
        """Static + credential + the request's own headers (serialising a JSON body on the way).

        Built per call rather than set on the session: aiohttp then skips merging session
        defaults, and the credentials are never stored on a long-lived object."""
        headers = {**self.endpoint.headers, **self._auth_headers()}
        if request.json is not None and request.body is None:
            request.body = _dumps(request.json)
            headers["Content-Type"] = "application/json"
        if request.headers:
            headers.update(request.headers)
        if opts.extra_headers:
            headers.update(opts.extra_headers)
        return headers

    def _scrub(self, text: str) -> str:
        if self._api_key:
            secret = self._api_key.reveal()
            if secret and secret in text:
                text = text.replace(secret, "***")
        return text

    def _status_error(self, raw: RawResponse, what: str) -> APIError:
        return error_for_status(
            provider=self.provider,
            status=raw.status,
            headers=raw.headers,
            body=raw.body,
            content_type=raw.content_type,
            request_id=raw.request_id,
            what=what,
            secret=self._api_key.reveal() if self._api_key else None,
            retry_after=self._retry_after_from_body(raw),
        )

    def _retry_after_from_body(self, raw: RawResponse) -> float | None:
        """Providers that put the wait in the body (Gemini's RetryInfo) override this."""
        return None

    def _retry_delay(
        self, error: APIError, attempt: int, opts: CallOptions, deadline_at: float | None
    ) -> float | None:
        if attempt >= opts.max_retries or not is_retryable(error):
            return None
        delay = backoff_delay(attempt, self.config, getattr(error, "retry_after", None))
        if delay is None:
            return None
        if deadline_at is not None and time.monotonic() + delay >= deadline_at:
            return None
        return delay

    async def _request(
        self,
        request: HTTPRequest,
        opts: CallOptions,
        parse: Callable[[RawResponse], T],
        *,
        what: str,
        endpoint: Endpoint | None = None,
    ) -> T:
        """Send a plain request through queue, breaker and retries; ``parse`` builds the result."""
        ep = endpoint or self._choose_endpoint(request)
        metrics = self.metrics
        start = time.monotonic()
        deadline_at = start + opts.deadline if opts.deadline is not None else None
        metrics.on_request()
        waited: float | None = None
        try:
            self._check_circuit(ep)
            headers = self._headers(request, opts)
            if ep.limiter.try_acquire():
                waited = 0.0
            else:
                waited = await ep.limiter.acquire(
                    opts.priority, _remaining(deadline_at, what, self.provider)
                )
            try:
                attempt = 0
                last_error: APIError | None = None
                while True:
                    permit = (
                        ep.breaker.acquire() if last_error is None else self._permit(ep, last_error)
                    )
                    attempt_start = time.monotonic()
                    try:
                        total = opts.timeout
                        if deadline_at is not None:
                            total = min(total, _remaining_s(deadline_at, what, self.provider))
                        raw = await ep.send(
                            request, headers, total=total, connect=min(opts.connect_timeout, total)
                        )
                        if not 200 <= raw.status < 300:
                            raise self._status_error(raw, what)
                        try:
                            result = parse(raw)
                        except APIError:
                            raise
                        except (KeyError, IndexError, TypeError, ValueError, AttributeError) as exc:
                            raise self._shape_error(exc, raw, what) from exc
                    except APIError as error:
                        ep.breaker.record(permit, counts_as_failure(error))
                        ep.metrics.on_attempt_failure(error)
                        delay = self._retry_delay(error, attempt, opts, deadline_at)
                        if delay is None:
                            raise
                        last_error = error
                        self._log_retry(what, error, attempt, delay)
                        metrics.on_retry()
                        await asyncio.sleep(delay)
                        attempt += 1
                        continue
                    except BaseException:
                        ep.breaker.release(permit)
                        raise
                    ep.breaker.record_success(permit)
                    ep.metrics.on_attempt(time.monotonic() - attempt_start)
                    break
            finally:
                ep.limiter.release()
        except BaseException as exc:
            metrics.on_failure(exc, waited)  # cancellations are counted apart from failures
            raise
        usage = getattr(result, "usage", None)
        if isinstance(usage, Usage):
            metrics.on_success(
                time.monotonic() - start, usage.input_tokens, usage.output_tokens, waited
            )
        else:
            metrics.on_success(time.monotonic() - start, queue_wait=waited)
        return result

    @staticmethod
    def _permit(ep: Endpoint, last_error: APIError | None) -> Any:
        try:
            return ep.breaker.acquire()
        except CircuitOpenError as exc:
            if last_error is not None:  # opened while we were retrying: say what tripped it
                raise exc from last_error
            raise

    def _check_circuit(self, ep: Endpoint) -> None:
        # refuse at once while open rather than queueing a request that cannot be sent
        if ep.breaker.is_open:  # (disabled breakers are always surely closed)
            ep.breaker.release(ep.breaker.acquire())  # raises CircuitOpenError with the wait

    def _shape_error(self, exc: Exception, raw: RawResponse, what: str) -> ProtocolError:
        # a parser missed a check: still a typed error with an excerpt, never a KeyError
        return ProtocolError(
            f"{what}: unexpected response shape ({type(exc).__name__}: {exc}): "
            f"{excerpt(raw.body)!r}",
            provider=self.provider, status=raw.status, request_id=raw.request_id,
        )  # fmt: skip

    def _log_retry(self, what: str, error: APIError, attempt: int, delay: float) -> None:
        if logger.isEnabledFor(logging.INFO):
            logger.info(
                "%s: %s attempt %d failed (%s, HTTP %s); retrying in %.3f s",
                self.provider, what, attempt + 1, type(error).__name__, error.status, delay,
            )  # fmt: skip

    def _json(self, raw: RawResponse, what: str) -> Any:
        """Decode a JSON success body; wrong content type or malformed JSON is a ProtocolError."""
        if "json" not in raw.content_type:
            raise ProtocolError(
                f"{what}: expected a JSON response, got {raw.content_type or 'no content type'}: "
                f"{excerpt(raw.body)!r}",
                provider=self.provider, status=raw.status, request_id=raw.request_id,
            )  # fmt: skip
        try:
            return json.loads(raw.body)
        except (ValueError, UnicodeDecodeError):
            pass
        try:
            return loads_json(raw.body, self.provider, what)  # raises the descriptive error
        except ProtocolError as exc:
            exc.status, exc.request_id = raw.status, raw.request_id
            raise

    def _json_object(self, raw: RawResponse, what: str) -> dict[str, Any]:
        """:meth:`_json` of a body that must be a JSON object."""
        data = self._json(raw, what)
        if not isinstance(data, dict):
            raise ProtocolError(
                f"{what}: expected an object: {excerpt(raw.body)!r}", provider=self.provider
            )
        return data

    async def _stream(
        self,
        request: HTTPRequest,
        opts: CallOptions,
        make_parser: Callable[[], StreamParser[T]],
        *,
        what: str,
        content_types: tuple[str, ...] = ("text/event-stream",),
        endpoint: Endpoint | None = None,
        on_complete: Callable[[StreamParser[T]], Usage | None] | None = None,
    ) -> AsyncIterator[T]:
        """Stream a response through queue, breaker and retries (only before the first item).

        A failure after the first item raises StreamInterruptedError (with the cause chained);
        the stream never ends early looking complete. The queue slot is held until the
        iterator finishes or is closed.
        """
        ep = endpoint or self._choose_endpoint(request)
        metrics = self.metrics
        start = time.monotonic()
        deadline_at = start + opts.deadline if opts.deadline is not None else None
        metrics.on_request()
        delivered = 0
        terminal_seen = False
        try:
            self._check_circuit(ep)
            headers = self._headers(request, opts)
            waited = await ep.limiter.acquire(
                opts.priority, _remaining(deadline_at, what, self.provider)
            )
            metrics.on_queue_wait(waited)
            try:
                attempt = 0
                last_error: APIError | None = None
                while True:
                    permit = self._permit(ep, last_error)
                    attempt_start = time.monotonic()
                    resp: Any = None
                    complete = False
                    parser = make_parser()
                    try:
                        resp, first = await self._open_stream(
                            ep, request, headers, opts, parser, what, deadline_at, content_types
                        )
                        for item in first:
                            if delivered == 0:
                                metrics.on_first_chunk(time.monotonic() - start)
                            delivered += 1
                            yield item
                        if resp is not None:
                            async for data in resp.content.iter_any():
                                for item in parser.feed(data):
                                    delivered += 1
                                    yield item
                            for item in parser.finish():
                                delivered += 1
                                yield item
                        complete = True
                    except BaseException as exc:
                        if isinstance(exc, APIError):
                            error: APIError | None = exc
                        elif isinstance(
                            exc, KeyError | IndexError | TypeError | ValueError | AttributeError
                        ):
                            # a parser missed a check: still typed, never a bare KeyError
                            error = ProtocolError(
                                f"{what}: unexpected stream content ({type(exc).__name__}: {exc})",
                                provider=self.provider,
                            )
                        else:
                            error = map_transport_error(
                                exc, self.provider, ep.url(request.path), opts.timeout
                            )
                        if error is None:  # cancelled, or the consumer closed the iterator
                            if getattr(parser, "complete", False):
                                # closed after the terminal event: a success, not an abandonment
                                ep.breaker.record_success(permit)
                                ep.metrics.on_attempt(time.monotonic() - attempt_start)
                                complete = terminal_seen = True
                            else:
                                ep.breaker.release(permit)
                            raise
                        ep.breaker.record(permit, counts_as_failure(error))
                        ep.metrics.on_attempt_failure(error)
                        if delivered:
                            if isinstance(error, ProtocolError):
                                raise error from (None if error is exc else exc)
                            raise StreamInterruptedError(
                                f"{what}: stream broke after {delivered} chunk(s): {error.message}",
                                provider=self.provider, status=error.status,
                                request_id=error.request_id,
                            ) from error  # fmt: skip
                        delay = self._retry_delay(error, attempt, opts, deadline_at)
                        if delay is None:
                            if error is exc:
                                raise
                            raise error from exc
                        last_error = error
                        self._log_retry(what, error, attempt, delay)
                        metrics.on_retry()
                        await asyncio.sleep(delay)
                        attempt += 1
                        continue
                    finally:
                        if resp is not None:
                            if complete:
                                resp.release()
                            else:
                                resp.close()  # never return a half-read connection to the pool
                    ep.breaker.record_success(permit)
                    ep.metrics.on_attempt(time.monotonic() - attempt_start)
                    usage = on_complete(parser) if on_complete is not None else None
                    if usage is not None:
                        metrics.on_success(
                            time.monotonic() - start, usage.input_tokens, usage.output_tokens
                        )
                    else:
                        metrics.on_success(time.monotonic() - start)
                    return
            finally:
                ep.limiter.release()
        except BaseException as exc:
            if terminal_seen:
                metrics.on_success(time.monotonic() - start)
            else:
                metrics.on_failure(exc)
            raise

    async def _open_stream(
        self,
        ep: Endpoint,
        request: HTTPRequest,
        headers: Mapping[str, str],
        opts: CallOptions,
        parser: StreamParser[T],
        what: str,
        deadline_at: float | None,
        content_types: tuple[str, ...],
    ) -> tuple[Any, Sequence[T]]:
        """Open the stream and read until the first item(s) arrive, within the deadline.

        Returns the response (None when the whole stream was consumed) and the first items.
        The deadline only bounds this part: it must not fire while the consumer holds a chunk.
        """
        remaining = _remaining(deadline_at, what, self.provider)
        deadline = asyncio.timeout(remaining)
        try:
            async with deadline:
                read = opts.timeout if remaining is None else min(opts.timeout, remaining)
                resp = await ep.open(
                    request,
                    headers,
                    connect=min(opts.connect_timeout, read),
                    read=opts.timeout,
                    total=None,
                )
                try:
                    if not 200 <= resp.status < 300:
                        body = await ep.read_body(resp)
                        raise self._status_error(
                            RawResponse(
                                resp.status,
                                resp.headers,
                                body,
                                resp.content_type,
                                request_id_from(resp.headers),
                            ),
                            what,
                        )
                    ctype = resp.content_type or ""
                    if not any(t in ctype for t in content_types):
                        body = await ep.read_body(resp)
                        raise ProtocolError(
                            f"{what}: expected a stream ({' or '.join(content_types)}), got "
                            f"{ctype or 'no content type'}: {excerpt(body)!r}",
                            provider=self.provider, status=resp.status,
                            request_id=request_id_from(resp.headers),
                        )  # fmt: skip
                    content = resp.content
                    while True:
                        data = await content.readany()
                        if not data:
                            items = parser.finish()
                            resp.release()
                            return None, items
                        items = parser.feed(data)
                        if items:
                            return resp, items
                except BaseException:
                    resp.close()
                    raise
        except builtins.TimeoutError as exc:
            if isinstance(exc, APIError) or not deadline.expired():
                raise  # not our deadline (e.g. aiohttp's read timeout): mapped by the caller
            raise APITimeoutError(
                f"{what}: no response chunk within the deadline of {opts.deadline:g} s",
                provider=self.provider,
            ) from None


# one encoder for every call: json.dumps with non-default arguments builds a new one each time
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def _dumps(value: Any) -> bytes:
    return _ENCODER.encode(value).encode()


def _remaining(deadline_at: float | None, what: str, provider: str) -> float | None:
    if deadline_at is None:
        return None
    return _remaining_s(deadline_at, what, provider)


def _remaining_s(deadline_at: float, what: str, provider: str) -> float:
    remaining = deadline_at - time.monotonic()
    if remaining <= 0:
        raise APITimeoutError(f"{what}: deadline reached", provider=provider)
    return remaining


def ensure_text_list(inputs: str | Sequence[str], provider: str) -> list[str]:
    """Validate embedding inputs: a string or a non-empty list of strings."""
    from ipfs_accelerate.errors import InvalidArgumentError

    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, Sequence) and not isinstance(inputs, bytes | bytearray):
        items = list(inputs)
        if items and all(isinstance(x, str) for x in items):
            return items
    raise InvalidArgumentError(
        f"{provider}: inputs must be a string or a non-empty list of strings, "
        f"got {excerpt(repr(inputs), 80)}"
    )
