"""S3 Kit: S3-compatible object storage on aiobotocore, over one or several endpoints.

Operations (all async; ``kit.sync.<op>`` from plain code): :meth:`S3Kit.upload_bytes`,
:meth:`S3Kit.upload_file`, :meth:`S3Kit.upload_fileobj` (multipart above
``multipart_threshold``, parts uploaded concurrently, a progress callback), downloads to
bytes or a file (:meth:`S3Kit.download_bytes`, :meth:`S3Kit.download_file`; resumed with a
``Range`` + ``If-Match`` request after a broken transfer), :meth:`S3Kit.list_objects`
(paginated, an async iterator), :meth:`S3Kit.head`, :meth:`S3Kit.delete`, :meth:`S3Kit.copy`
(multipart copy above ``multipart_copy_threshold``), :meth:`S3Kit.presigned_url`, bucket
create/delete/exists, and :meth:`S3Kit.download_prefix` / :func:`fetch_s3_prefix` (a whole
``s3://bucket/prefix`` into a local cache directory: model checkpoints).

Guarantees:

* An upload that fails midway (a part that cannot be sent, a reader error, a failing
  progress callback, cancellation) aborts its multipart upload: nothing becomes visible under
  the key. The abort is sent even when the endpoint's circuit has opened meanwhile. A
  single-request upload is atomic in S3 itself.
* A download writes to a temporary file next to the target and renames it only when every
  byte (``Content-Length``) arrived: no partial file under the final name.
* Errors are typed: :class:`~ipfs_accelerate.errors.ObjectNotFoundError` (missing bucket or
  object, also one that vanished between listing and download),
  :class:`~ipfs_accelerate.errors.StorageAuthError` (bad credentials, access denied),
  :class:`~ipfs_accelerate.errors.StorageUnavailableError` (no endpoint could serve it),
  :class:`~ipfs_accelerate.errors.StorageError` (anything else S3 refused).

Endpoints are assumed to serve the same data (gateways or replicas of one store). Each has
its own circuit breaker, concurrency limit and metrics; the strategy (``round_robin``,
``least_in_flight``, ``lowest_latency``, ``weighted``) picks one per operation among those
whose circuit is not open. Reads (download, head, list, presign) fail over to another
endpoint on connection errors, timeouts, 5xx and throttling; writes retry on their endpoint
with backoff (S3 writes are idempotent) but never move, and a 404 or 403 is an answer, never
failed over. botocore's own retries are off: the resilience settings
(``metadata["resilience"]``) are the only retry policy.

Configuration: ``metadata["s3cfg"]`` = ``{"accessKey", "secretKey", "endpoint", "region"}``
(``endpoint`` may be a list; ``"endpoints": [{"endpoint", "accessKey", "secretKey", "region",
"name", "weight", "max_concurrency"}, ...]`` for per-endpoint settings; ``"sessionToken"``,
``"addressing_style"``, ``"strategy"``, ``"anonymous"`` (unsigned requests) and
``"credential_chain"`` (let botocore find credentials: profiles, instance roles) are
accepted), else the usual environment: ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_REGION`` / ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL``. No credentials at all is a ConfigurationError before any request.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import dataclasses
import inspect
import json
import logging
import math
import os
import tempfile
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar, TypeVar
from urllib.parse import urlsplit

from ipfs_accelerate.errors import (
    CircuitOpenError,
    ConfigurationError,
    InvalidArgumentError,
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
    StorageUnavailableError,
    UnsupportedOpError,
)

from ._base import APIBackend, _hide_secrets
from ._config import ResilienceConfig, Secret, normalise_base_url, redact_url, resolve_setting
from ._metrics import Metrics
from ._observability import start_span
from ._resilience import BreakerPermit, CircuitBreaker, PriorityLimiter, backoff_delay
from ._types import HealthStatus, Priority
from .router import STRATEGIES, make_strategy

__all__ = ["S3Kit", "S3Object", "S3ObjectInfo", "TransferConfig", "fetch_s3_prefix", "fetch_s3_prefix_sync", "parse_s3_uri"]

logger = logging.getLogger("ipfs_accelerate.api_backends.s3_kit")

T = TypeVar("T")
MiB = 1024 * 1024
GiB = 1024 * MiB
MIN_PART_SIZE = 5 * MiB  # S3: every part but the last
MAX_PART_SIZE = 5 * GiB
MAX_PARTS = 10_000
_UNCOUNTED = BreakerPermit(False, -1)  # a permit the breaker ignores when it is recorded
Progress = Callable[[int, int | None], Any]

_AUTH_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "ExpiredToken", "InvalidToken",
    "TokenRefreshRequired", "AuthorizationHeaderMalformed", "InvalidClientTokenId", "UnrecognizedClientException",
    "AllAccessDisabled", "AccountProblem", "403", "401",
})  # fmt: skip
_TRANSIENT_CODES = frozenset({
    "SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "Throttling", "ThrottlingException",
    "RequestLimitExceeded", "RequestThrottled", "BandwidthLimitExceeded", "500", "502", "503", "504",
})  # fmt: skip
_MISSING_KEY_CODES = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchVersion"})


@dataclass(frozen=True, slots=True)
class TransferConfig:
    """Sizes of transfers. ``part_size`` grows for objects that would need more than 10,000
    parts; parts must be 5 MiB..5 GiB (S3's limits)."""

    multipart_threshold: int = 8 * MiB
    part_size: int = 8 * MiB
    max_part_concurrency: int = 4
    multipart_copy_threshold: int = 5 * GiB
    copy_part_size: int = 512 * MiB
    download_chunk: int = 1 * MiB
    download_concurrency: int = 4

    def __post_init__(self) -> None:
        for name in ("part_size", "copy_part_size"):
            value = getattr(self, name)
            if not MIN_PART_SIZE <= value <= MAX_PART_SIZE:
                raise ConfigurationError(f"s3_kit: {name} must be between 5 MiB and 5 GiB, got {value}")
        if self.multipart_threshold < 1 or self.multipart_copy_threshold < 1:
            raise ConfigurationError("s3_kit: multipart thresholds must be >= 1 byte")
        for name in ("max_part_concurrency", "download_chunk", "download_concurrency"):
            if getattr(self, name) < 1:
                raise ConfigurationError(f"s3_kit: {name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class S3Object:
    """A listed object (or, with a delimiter, a common prefix: ``is_prefix``)."""

    key: str
    size: int = 0
    etag: str | None = None
    last_modified: Any = None
    storage_class: str | None = None
    is_prefix: bool = False


@dataclass(frozen=True, slots=True)
class S3ObjectInfo:
    bucket: str
    key: str
    size: int
    etag: str | None
    content_type: str | None = None
    last_modified: Any = None
    metadata: Mapping[str, str] = dataclasses.field(default_factory=dict)
    version_id: str | None = None


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` -> ``(bucket, prefix)``."""
    parts = urlsplit(uri)
    if parts.scheme != "s3" or not parts.netloc:
        raise InvalidArgumentError(f"s3_kit: expected s3://bucket/prefix, got {uri!r}")
    return parts.netloc, parts.path.lstrip("/")


class _Transient(Exception):
    """An attempt failed in a way another attempt (or endpoint) may not."""

    def __init__(self, message: str, cause: BaseException | None = None, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.cause = cause
        self.retry_after = retry_after


class _Truncated(Exception):
    pass


class _LocalError(Exception):
    """A failure on our side during a transfer (disk write, progress callback): never retried."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


# --------------------------------------------------------------------------- endpoints


class _S3Endpoint:
    """One S3 endpoint: URL, credentials, breaker, limiter, metrics, a client per event loop."""

    def __init__(
        self,
        *,
        url: str | None,
        region: str,
        name: str,
        access_key: Secret | None,
        secret_key: Secret | None,
        session_token: Secret | None,
        addressing_style: str,
        weight: float,
        config: ResilienceConfig,
    ) -> None:
        self.url = url
        self.region = region
        self.name = name
        self.access_key = access_key
        self.secret_key = secret_key
        self.session_token = session_token
        self.addressing_style = addressing_style
        self.weight = weight
        self.config = config
        self.breaker = CircuitBreaker(config.breaker, provider="s3_kit", name=name)
        self.limiter = PriorityLimiter(config.max_concurrency, config.max_queue, provider="s3_kit", name=name)
        self.metrics = Metrics()
        self.ewma_latency: float | None = None
        self.ewma_ttfc: float | None = None
        self.wrr_current = 0.0
        self.clients: dict[int, tuple[weakref.ref[asyncio.AbstractEventLoop], Any, Any]] = {}
        self.locks: dict[int, asyncio.Lock] = {}

    @property
    def in_flight(self) -> int:
        return self.limiter.in_flight

    def __repr__(self) -> str:
        return f"<S3 endpoint {self.name} circuit={self.breaker.state}>"

    def stats(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "region": self.region,
            "circuit_state": self.breaker.state,
            "circuit_opened": self.breaker.times_opened,
            **self.limiter.stats(),
            "attempts": self.metrics.snapshot(),
        }


def _first(mapping: Mapping[str, Any] | None, *names: str, env: Sequence[str] = ()) -> str | None:
    """The first non-empty of ``names`` in ``mapping``, then of the ``env`` variables."""
    return resolve_setting(mapping, None, names, env)[0]


# --------------------------------------------------------------------------- the kit


class S3Kit(APIBackend):
    """S3-compatible storage over several endpoints (see the module docstring)."""

    provider: ClassVar[str] = "s3_kit"
    summary: ClassVar[str] = "S3-compatible object storage (aiobotocore)"
    routes: ClassVar[str] = (
        "S3 REST: `put_object`, multipart upload, `get_object` (resumed with `Range`), "
        "`list_objects_v2`, `head_object`, `delete_object`, `copy_object`, presigned URLs"
    )

    def __init__(
        self,
        resources: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        *,
        resilience: ResilienceConfig | Mapping[str, Any] | None = None,
        transfer: TransferConfig | Mapping[str, Any] | None = None,
        strategy: str | None = None,
    ) -> None:
        raw_meta = dict(metadata or {})
        raw_res = dict(resources or {})
        cfg = raw_meta.get("s3cfg") or raw_res.get("s3cfg") or {}
        if not isinstance(cfg, Mapping):
            raise ConfigurationError(f"s3_kit: metadata['s3cfg'] must be a dict, got {type(cfg).__name__}")
        cfg = {k: (v.reveal() if isinstance(v, Secret) else v) for k, v in cfg.items()}
        self._s3cfg = cfg
        self._anonymous = bool(cfg.get("anonymous", False))
        self._credential_chain = bool(cfg.get("credential_chain", False))
        entries = self._endpoint_entries(cfg)
        self._first_url = entries[0].get("url") or f"https://s3.{entries[0]['region']}.amazonaws.com"
        if "s3cfg" in raw_meta:
            raw_meta["s3cfg"] = _hide_secrets(raw_meta["s3cfg"])
        if "s3cfg" in raw_res:
            raw_res["s3cfg"] = _hide_secrets(raw_res["s3cfg"])
        super().__init__(raw_res, raw_meta, resilience=resilience)
        if isinstance(transfer, Mapping):
            transfer = TransferConfig(**dict(transfer))
        self.transfer = transfer or TransferConfig(**dict(cfg.get("transfer") or {}))
        self.s3_endpoints = [self._make_endpoint(e, i) for i, e in enumerate(entries)]
        names = [e.name for e in self.s3_endpoints]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"s3_kit: endpoints listed twice: {names}")
        strategy = strategy or cfg.get("strategy") or "round_robin"
        if strategy not in STRATEGIES:
            raise ConfigurationError(f"s3_kit: strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}")
        self.strategy = strategy
        self._strategy = make_strategy(strategy)
        self._session: Any = None
        self.default_bucket: str | None = cfg.get("bucket")

    # ------------------------------------------------------------------ configuration

    def _endpoint_entries(self, cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
        top_key = _first(cfg, "accessKey", "access_key", "aws_access_key_id", env=("AWS_ACCESS_KEY_ID",))
        top_secret = _first(cfg, "secretKey", "secret_key", "aws_secret_access_key", env=("AWS_SECRET_ACCESS_KEY",))
        top_token = _first(cfg, "sessionToken", "session_token", "aws_session_token", env=("AWS_SESSION_TOKEN",))
        top_region = _first(cfg, "region", "region_name", env=("AWS_REGION", "AWS_DEFAULT_REGION")) or "us-east-1"
        raw = cfg.get("endpoints")
        if raw is None:
            endpoint = cfg.get("endpoint", cfg.get("endpoint_url"))
            if endpoint is None:
                endpoint = _first(None, env=("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"))
            raw = list(endpoint) if isinstance(endpoint, list | tuple) else [endpoint]
        if isinstance(raw, str) or not isinstance(raw, Sequence) or not raw:
            raise ConfigurationError("s3_kit: s3cfg['endpoints'] must be a non-empty list")
        entries = []
        for i, item in enumerate(raw):
            spec = dict(item) if isinstance(item, Mapping) else {"endpoint": item}
            url = spec.get("endpoint", spec.get("url"))
            entry = {
                "url": normalise_base_url(str(url), provider="s3_kit") if url else None,
                "region": _first(spec, "region", "region_name") or top_region,
                "access_key": _first(spec, "accessKey", "access_key") or top_key,
                "secret_key": _first(spec, "secretKey", "secret_key") or top_secret,
                "session_token": _first(spec, "sessionToken", "session_token") or top_token,
                "name": spec.get("name"),
                "weight": spec.get("weight", 1.0),
                "max_concurrency": spec.get("max_concurrency"),
                "addressing_style": spec.get("addressing_style") or cfg.get("addressing_style") or ("path" if url else "auto"),
            }
            if not self._anonymous and not self._credential_chain and not (entry["access_key"] and entry["secret_key"]):
                raise ConfigurationError(
                    f"s3_kit: no credentials for endpoint {i} (looked in metadata['s3cfg'] accessKey/secretKey "
                    "and $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY); set s3cfg['credential_chain'] to use "
                    "botocore's profiles or instance roles, or s3cfg['anonymous'] for public buckets"
                )
            if not (isinstance(entry["weight"], int | float) and entry["weight"] > 0):
                raise ConfigurationError(f"s3_kit: endpoint {i} weight must be > 0, got {entry['weight']!r}")
            if entry["addressing_style"] not in ("path", "virtual", "auto"):
                raise ConfigurationError(f"s3_kit: addressing_style must be path, virtual or auto, got {entry['addressing_style']!r}")
            entries.append(entry)
        return entries

    def _make_endpoint(self, entry: Mapping[str, Any], index: int) -> _S3Endpoint:
        config = self.config
        if entry.get("max_concurrency") is not None:
            config = dataclasses.replace(config, max_concurrency=int(entry["max_concurrency"]))
        url = entry["url"]
        name = entry.get("name") or (redact_url(url) if url else f"aws:{entry['region']}")
        return _S3Endpoint(
            url=url, region=entry["region"], name=str(name),
            access_key=Secret(entry["access_key"]) if entry["access_key"] else None,
            secret_key=Secret(entry["secret_key"]) if entry["secret_key"] else None,
            session_token=Secret(entry["session_token"]) if entry["session_token"] else None,
            addressing_style=entry["addressing_style"], weight=float(entry["weight"]), config=config,
        )  # fmt: skip

    def _resolve_base_url(self, metadata: Mapping[str, Any]) -> str:
        self._base_url_source = "metadata['s3cfg']"
        return self._first_url

    @property
    def is_configured(self) -> bool:
        return True  # construction already refused a configuration without credentials

    def is_compatible_model(self, model: str) -> bool:
        return False  # storage serves no models

    def __repr__(self) -> str:
        names = ", ".join(e.name for e in self.s3_endpoints)
        return f"<S3Kit endpoints=[{names}] strategy={self.strategy!r}>"

    # ------------------------------------------------------------------ clients

    async def _client(self, ep: _S3Endpoint) -> Any:
        loop = asyncio.get_running_loop()
        entry = ep.clients.get(id(loop))
        if entry is not None and entry[0]() is loop:
            return entry[2]
        lock = ep.locks.get(id(loop))
        if lock is None:
            lock = ep.locks[id(loop)] = asyncio.Lock()
        async with lock:
            entry = ep.clients.get(id(loop))
            if entry is not None and entry[0]() is loop:
                return entry[2]
            self._forget_dead_clients(ep)
            try:
                import botocore
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session
            except ImportError as exc:
                raise ConfigurationError("S3 Kit needs aiobotocore: pip install 'ipfs-accelerate[s3]'") from exc
            if self._session is None:
                self._session = get_session()
            config = AioConfig(
                signature_version=botocore.UNSIGNED if self._anonymous else "s3v4",
                s3={"addressing_style": ep.addressing_style},
                retries={"total_max_attempts": 1, "mode": "standard"},
                connect_timeout=self.config.connect_timeout,
                read_timeout=self.config.timeout,
                max_pool_connections=ep.limiter.max_concurrency,
            )
            credentials: dict[str, Any] = {}
            if not self._anonymous and ep.access_key and ep.secret_key:
                credentials = {"aws_access_key_id": ep.access_key.reveal(), "aws_secret_access_key": ep.secret_key.reveal()}
                if ep.session_token:
                    credentials["aws_session_token"] = ep.session_token.reveal()
            context = self._session.create_client("s3", endpoint_url=ep.url, region_name=ep.region, config=config, **credentials)
            client = await context.__aenter__()
            ep.clients[id(loop)] = (weakref.ref(loop), context, client)
            return client

    @staticmethod
    def _forget_dead_clients(ep: _S3Endpoint) -> None:
        from ._transport import _drop_session_of_closed_loop

        for key, (loop_ref, _context, client) in list(ep.clients.items()):
            loop = loop_ref()
            if loop is None or loop.is_closed():
                for session in list(_http_sessions(client)):
                    with contextlib.suppress(Exception):
                        _drop_session_of_closed_loop(session)
                del ep.clients[key]
                ep.locks.pop(key, None)

    async def aclose(self) -> None:
        """Close every endpoint's client (the current loop's awaited, others' scheduled)."""
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        for ep in self.s3_endpoints:
            clients, ep.clients = ep.clients, {}
            ep.locks = {}
            for loop_ref, context, client in clients.values():
                loop = loop_ref()
                if loop is current:
                    with contextlib.suppress(Exception):
                        await context.__aexit__(None, None, None)
                elif loop is not None and loop.is_running():
                    asyncio.run_coroutine_threadsafe(context.__aexit__(None, None, None), loop)
                else:
                    from ._transport import _drop_session_of_closed_loop

                    for session in list(_http_sessions(client)):
                        with contextlib.suppress(Exception):
                            _drop_session_of_closed_loop(session)
        await super().aclose()

    def _endpoints(self) -> list[Any]:
        return []  # no HTTP Endpoint objects: get_stats reads the S3 endpoints (_pooled_endpoints)

    # ------------------------------------------------------------------ the pipeline

    def _pick(self, exclude: set[int]) -> _S3Endpoint | None:
        candidates = [
            e for e in self.s3_endpoints
            if id(e) not in exclude and not e.breaker.is_open
        ]  # fmt: skip
        if not candidates:
            return None
        chosen: _S3Endpoint = self._strategy.choose(candidates, self.s3_endpoints, False)
        return chosen

    async def _run(
        self,
        what: str,
        call: Callable[[Any], Awaitable[T]],
        *,
        read: bool,
        bucket: str | None = None,
        key: str | None = None,
        endpoint: _S3Endpoint | None = None,
        max_retries: int | None = None,
        force: bool = False,
    ) -> T:
        """One operation through breaker, limiter, retries and (reads only) endpoint failover.

        ``force`` sends even through an open circuit (cleanup that must be tried: aborting a
        multipart upload) and leaves the breaker's counts alone."""
        retries = self.config.max_retries if max_retries is None else max_retries
        deadline_at = time.monotonic() + self.config.deadline if self.config.deadline else None
        start = time.monotonic()
        self.metrics.on_request()
        tried: set[int] = set()
        ep = endpoint or self._pick(tried)
        attempt = 0
        last: BaseException | None = None
        span = start_span(f"ipfs_accelerate.s3.{what}", {"bucket": bucket, "key": key})
        try:
            while True:
                if ep is None:
                    raise self._unavailable(what, bucket, key, last)
                remaining = None if deadline_at is None else deadline_at - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise self._unavailable(what, bucket, key, last, "deadline reached")
                held = ep
                await held.limiter.acquire(Priority.NORMAL, remaining)
                try:
                    try:
                        permit = _UNCOUNTED if force else ep.breaker.acquire()
                    except CircuitOpenError as exc:
                        # refused without sending: any endpoint may take it instead
                        last = last or exc
                        tried.add(id(ep))
                        ep = self._pick(tried) if endpoint is None else None
                        continue
                    span.set("endpoint", ep.name)
                    attempt_start = time.monotonic()
                    try:
                        client = await self._client(ep)
                        result = await call(client)
                    except BaseException as exc:
                        error = self._map_error(exc, what, bucket, key, ep)
                        if error is None:  # cancellation
                            ep.breaker.release(permit)
                            raise
                        if not isinstance(error, _Transient):
                            ep.breaker.record_success(permit)  # it answered: the request was the problem
                            ep.metrics.on_attempt(time.monotonic() - attempt_start)
                            raise error from (exc if error is not exc else None)
                        ep.breaker.record_failure(permit)
                        ep.metrics.on_attempt_failure(exc if isinstance(exc, Exception) else error)
                        last = error
                        attempt += 1
                        if attempt > retries:
                            raise self._unavailable(what, bucket, key, error) from exc
                        self.metrics.on_retry()
                        failed = ep
                        if read and endpoint is None:
                            tried.add(id(failed))
                            ep = self._pick(tried)
                            if ep is not None:
                                continue  # another endpoint at once
                            tried.clear()
                        delay = backoff_delay(attempt - 1, self.config, error.retry_after)
                        if delay is None or (deadline_at is not None and time.monotonic() + delay >= deadline_at):
                            raise self._unavailable(what, bucket, key, error, "no time left to retry") from exc
                        await asyncio.sleep(delay)
                        ep = (self._pick(set()) if read and endpoint is None else None) or failed
                        continue
                    ep.breaker.record_success(permit)
                    latency = time.monotonic() - attempt_start
                    ep.metrics.on_attempt(latency)
                    ep.ewma_latency = latency if ep.ewma_latency is None else 0.3 * latency + 0.7 * ep.ewma_latency
                    break
                finally:
                    held.limiter.release()
        except BaseException as exc:
            self.metrics.on_failure(exc)
            span.end(exc)
            raise
        self.metrics.on_success(time.monotonic() - start)
        span.end()
        return result

    def _unavailable(
        self, what: str, bucket: str | None, key: str | None, last: BaseException | None, why: str = ""
    ) -> StorageUnavailableError:
        where = _where(bucket, key)
        detail = f": {last}" if last is not None else ""
        states = ", ".join(f"{e.name} ({e.breaker.state})" for e in self.s3_endpoints)
        error = StorageUnavailableError(
            f"s3_kit: {what}{where} failed on every attempt{' (' + why + ')' if why else ''}{detail}; endpoints: {states}"
        )
        cause = getattr(last, "cause", None) or last
        error.__cause__ = cause
        return error

    def _map_error(
        self, exc: BaseException, what: str, bucket: str | None, key: str | None, ep: _S3Endpoint
    ) -> Exception | None:
        """Typed error for an attempt's exception; _Transient for retryable; None for cancellation."""
        if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt | SystemExit | GeneratorExit):
            return None
        if isinstance(exc, _LocalError):
            return exc.error if isinstance(exc.error, Exception) else None
        if isinstance(exc, StorageError | _Transient):
            return exc
        if isinstance(exc, _Truncated):
            return _Transient(f"{what}: {exc}", exc)
        where = _where(bucket, key)
        try:
            from botocore import exceptions as bex
        except ImportError:  # pragma: no cover - the client could not exist without it
            bex = None  # type: ignore[assignment]
        if bex is not None and isinstance(exc, bex.ClientError):
            response = getattr(exc, "response", {}) or {}
            err = response.get("Error") or {}
            code = str(err.get("Code") or "")
            message = str(err.get("Message") or "")
            status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
            text = f"s3_kit: {what}{where} failed via {ep.name}: {code or status}: {message}".rstrip(": ")
            if code == "NoSuchBucket" or (code in _MISSING_KEY_CODES and key is None):
                error: Exception = ObjectNotFoundError(f"s3_kit: bucket {bucket!r} does not exist ({what} via {ep.name})")
            elif code in _MISSING_KEY_CODES:
                error = ObjectNotFoundError(f"s3_kit: object s3://{bucket}/{key} does not exist ({what} via {ep.name})")
            elif code == "NoSuchUpload":
                error = ObjectNotFoundError(f"s3_kit: multipart upload of s3://{bucket}/{key} no longer exists ({what})")
            elif code in _AUTH_CODES or status in (401, 403):
                error = StorageAuthError(text)
            elif code in _TRANSIENT_CODES or (isinstance(status, int) and (status >= 500 or status in (408, 429))):
                retry_after = None
                headers = (response.get("ResponseMetadata") or {}).get("HTTPHeaders") or {}
                if "retry-after" in headers:
                    from ._resilience import parse_retry_after

                    retry_after = parse_retry_after(headers)
                return _Transient(text, exc, retry_after)
            else:
                error = StorageError(text)
            error.code = code  # type: ignore[attr-defined]
            error.status = status  # type: ignore[attr-defined]
            return error
        transient_types: tuple[type[BaseException], ...] = (builtins.TimeoutError, builtins.ConnectionError, OSError)
        if bex is not None:
            transient_types += (bex.EndpointConnectionError, bex.ConnectTimeoutError, bex.ReadTimeoutError,
                                bex.ConnectionClosedError, bex.ResponseStreamingError, bex.IncompleteReadError)  # fmt: skip
        try:
            import aiohttp

            transient_types += (aiohttp.ClientError,)
        except ImportError:  # pragma: no cover
            pass
        if isinstance(exc, transient_types):
            return _Transient(f"s3_kit: {what}{where} via {ep.name}: {type(exc).__name__}: {exc}", exc)
        if bex is not None and isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
            return StorageAuthError(f"s3_kit: {what}{where}: {exc}")
        if bex is not None and isinstance(exc, bex.BotoCoreError):
            return StorageError(f"s3_kit: {what}{where} via {ep.name}: {type(exc).__name__}: {exc}")
        return exc if isinstance(exc, Exception) else None

    def _bucket(self, bucket: str | None) -> str:
        bucket = bucket or self.default_bucket
        if not bucket or not isinstance(bucket, str):
            raise InvalidArgumentError("s3_kit: no bucket given (and no s3cfg['bucket'] default)")
        return bucket

    # ------------------------------------------------------------------ buckets

    async def create_bucket(self, bucket: str) -> None:
        ep = self._pick(set()) or self.s3_endpoints[0]
        params: dict[str, Any] = {"Bucket": bucket}
        if ep.region != "us-east-1":
            params["CreateBucketConfiguration"] = {"LocationConstraint": ep.region}
        await self._run("create_bucket", lambda c: c.create_bucket(**params), read=False, bucket=bucket)

    async def delete_bucket(self, bucket: str) -> None:
        await self._run("delete_bucket", lambda c: c.delete_bucket(Bucket=bucket), read=False, bucket=bucket)

    async def bucket_exists(self, bucket: str) -> bool:
        try:
            await self._run("head_bucket", lambda c: c.head_bucket(Bucket=bucket), read=True, bucket=bucket)
        except ObjectNotFoundError:
            return False
        return True

    # ------------------------------------------------------------------ uploads

    async def upload_bytes(
        self, bucket: str | None, key: str, data: bytes | bytearray | memoryview, *,
        content_type: str | None = None, metadata: Mapping[str, str] | None = None, progress: Progress | None = None,
    ) -> S3ObjectInfo:  # fmt: skip
        """Upload ``data`` to ``bucket/key`` (multipart above the threshold)."""
        if not isinstance(data, bytes | bytearray | memoryview):
            raise InvalidArgumentError(f"s3_kit: upload_bytes needs bytes, got {type(data).__name__}")
        view = memoryview(data).cast("B")
        position = 0

        async def read(n: int) -> bytes:
            nonlocal position
            chunk = bytes(view[position : position + n])
            position += len(chunk)
            return chunk

        return await self._upload(self._bucket(bucket), key, read, len(view), content_type, metadata, progress)

    async def upload_file(
        self, bucket: str | None, key: str, path: str | os.PathLike[str], *,
        content_type: str | None = None, metadata: Mapping[str, str] | None = None, progress: Progress | None = None,
    ) -> S3ObjectInfo:  # fmt: skip
        """Upload a local file (read part by part, never whole into memory)."""
        path = Path(path)
        try:
            size = path.stat().st_size
            handle = path.open("rb")
        except OSError as exc:
            raise StorageError(f"s3_kit: cannot read {path}: {exc}") from exc
        with handle:
            return await self.upload_fileobj(bucket, key, handle, size=size, content_type=content_type, metadata=metadata, progress=progress)

    async def upload_fileobj(
        self, bucket: str | None, key: str, fileobj: BinaryIO, *, size: int | None = None,
        content_type: str | None = None, metadata: Mapping[str, str] | None = None, progress: Progress | None = None,
    ) -> S3ObjectInfo:  # fmt: skip
        """Upload from a binary reader (``read(n)``; size may be unknown: multipart then
        starts once more than ``multipart_threshold`` bytes were read)."""

        async def read(n: int) -> bytes:
            chunks: list[bytes] = []
            want = n
            while want > 0:  # a short read is not the end of a pipe or socket
                chunk = await asyncio.to_thread(fileobj.read, want)
                if not chunk:
                    break
                chunks.append(bytes(chunk))
                want -= len(chunk)
            return b"".join(chunks)

        return await self._upload(self._bucket(bucket), key, read, size, content_type, metadata, progress)

    async def _upload(
        self, bucket: str, key: str, read: Callable[[int], Awaitable[bytes]], size: int | None,
        content_type: str | None, metadata: Mapping[str, str] | None, progress: Progress | None,
    ) -> S3ObjectInfo:  # fmt: skip
        _check_key(key)
        extra: dict[str, Any] = {}
        if content_type:
            extra["ContentType"] = content_type
        if metadata:
            extra["Metadata"] = {str(k): str(v) for k, v in metadata.items()}
        threshold = self.transfer.multipart_threshold
        with start_span("ipfs_accelerate.s3.upload", {"bucket": bucket, "key": key, "size": size}):
            if size is not None and size <= threshold:
                data = await read(size)
                if len(data) != size:
                    raise StorageError(f"s3_kit: upload of s3://{bucket}/{key}: the source gave {len(data)} of {size} bytes")
                return await self._put(bucket, key, data, extra, progress)
            first = await read(threshold + 1)
            if len(first) <= threshold:
                return await self._put(bucket, key, first, extra, progress)
            return await self._multipart(bucket, key, first, read, size, extra, progress)

    async def _put(
        self, bucket: str, key: str, data: bytes, extra: Mapping[str, Any], progress: Progress | None
    ) -> S3ObjectInfo:
        response = await self._run(
            "put_object", lambda c: c.put_object(Bucket=bucket, Key=key, Body=data, **extra), read=False, bucket=bucket, key=key
        )
        await _report(progress, len(data), len(data))
        return S3ObjectInfo(bucket, key, len(data), response.get("ETag"), extra.get("ContentType"), None,
                            dict(extra.get("Metadata") or {}), response.get("VersionId"))  # fmt: skip

    def _part_size(self, size: int | None) -> int:
        part = self.transfer.part_size
        if size is not None and math.ceil(size / part) > MAX_PARTS:
            part = math.ceil(size / MAX_PARTS)
            part = max(part, MIN_PART_SIZE)
        if part > MAX_PART_SIZE:
            raise InvalidArgumentError(f"s3_kit: object of {size} bytes exceeds S3's limit of 10,000 parts of 5 GiB")
        return part

    async def _multipart(
        self, bucket: str, key: str, first: bytes, read: Callable[[int], Awaitable[bytes]], size: int | None,
        extra: Mapping[str, Any], progress: Progress | None,
    ) -> S3ObjectInfo:  # fmt: skip
        part_size = self._part_size(size)
        ep = self._pick(set())
        if ep is None:
            raise self._unavailable("create_multipart_upload", bucket, key, None, "every circuit is open")
        created = await self._run(
            "create_multipart_upload", lambda c: c.create_multipart_upload(Bucket=bucket, Key=key, **extra),
            read=False, bucket=bucket, key=key, endpoint=ep,
        )  # fmt: skip
        upload_id = created["UploadId"]
        parts: dict[int, str] = {}
        done = 0
        total = 0
        pending: set[asyncio.Task[None]] = set()
        buffer = first

        async def send(number: int, body: bytes) -> None:
            nonlocal done
            response = await self._run(
                "upload_part",
                lambda c: c.upload_part(Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body),
                read=False, bucket=bucket, key=key, endpoint=ep,
            )  # fmt: skip
            parts[number] = response["ETag"]
            done += len(body)
            await _report(progress, done, size)

        try:
            number = 0
            while True:
                while len(buffer) < part_size:
                    more = await read(part_size - len(buffer))
                    if not more:
                        break
                    buffer += more
                if not buffer:
                    break
                body, buffer = buffer[:part_size], buffer[part_size:]
                number += 1
                if number > MAX_PARTS:
                    raise InvalidArgumentError(f"s3_kit: upload of s3://{bucket}/{key} needs more than {MAX_PARTS} parts")
                total += len(body)
                pending.add(asyncio.create_task(send(number, body)))
                if len(pending) >= self.transfer.max_part_concurrency:
                    finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in finished:
                        task.result()  # raises the part's error
                if len(body) < part_size:
                    break
            while pending:
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_EXCEPTION)
                for task in finished:
                    task.result()
            if size is not None and total != size:
                raise StorageError(f"s3_kit: upload of s3://{bucket}/{key}: the source gave {total} of {size} bytes")
            ordered = [{"PartNumber": n, "ETag": parts[n]} for n in sorted(parts)]
            response = await self._run(
                "complete_multipart_upload",
                lambda c: c.complete_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": ordered}),
                read=False, bucket=bucket, key=key, endpoint=ep, max_retries=0,
            )  # fmt: skip
        except BaseException as exc:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            await asyncio.shield(self._abort(ep, bucket, key, upload_id, exc))
            raise
        return S3ObjectInfo(bucket, key, total, response.get("ETag"), extra.get("ContentType"), None,
                            dict(extra.get("Metadata") or {}), response.get("VersionId"))  # fmt: skip

    async def incomplete_uploads(self, bucket: str | None, prefix: str = "") -> list[dict[str, Any]]:
        """Multipart uploads started but neither completed nor aborted (``key``, ``upload_id``,
        ``initiated``): storage that is held but not visible under any key."""
        bucket = self._bucket(bucket)
        uploads: list[dict[str, Any]] = []
        markers: dict[str, str] = {}
        while True:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, **markers}
            page: dict[str, Any] = await self._run("list_multipart_uploads", _caller("list_multipart_uploads", params), read=True, bucket=bucket)
            for upload in page.get("Uploads") or ():
                uploads.append({"key": upload["Key"], "upload_id": upload["UploadId"], "initiated": upload.get("Initiated")})
            if not page.get("IsTruncated"):
                return uploads
            markers = {"KeyMarker": page.get("NextKeyMarker", ""), "UploadIdMarker": page.get("NextUploadIdMarker", "")}

    async def _abort(self, ep: _S3Endpoint, bucket: str, key: str, upload_id: str, cause: BaseException) -> None:
        """Abort an unfinished multipart upload so that nothing appears under the key."""
        try:
            await self._run(
                "abort_multipart_upload", lambda c: c.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id),
                read=False, bucket=bucket, key=key, endpoint=ep, force=True,
            )  # fmt: skip
        except ObjectNotFoundError:
            pass  # already gone
        except Exception as exc:
            logger.warning("s3_kit: could not abort multipart upload %s of s3://%s/%s: %s", upload_id, bucket, key, exc)
            if hasattr(cause, "add_note"):
                cause.add_note(
                    f"s3_kit: the unfinished multipart upload {upload_id} could not be aborted ({exc}); its parts are "
                    "not visible under the key but hold storage until aborted or expired by a lifecycle rule"
                )

    # ------------------------------------------------------------------ downloads

    async def download_bytes(self, bucket: str | None, key: str, *, progress: Progress | None = None) -> bytes:
        chunks: list[bytes] = []

        async def write(chunk: bytes) -> None:
            chunks.append(chunk)

        await self._download(self._bucket(bucket), key, write, progress)
        return b"".join(chunks)

    async def download_file(
        self, bucket: str | None, key: str, path: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> S3ObjectInfo:
        """Download to ``path`` atomically (temporary file, renamed when complete)."""
        bucket = self._bucket(bucket)
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
        handle = os.fdopen(fd, "wb")
        try:
            async def write(chunk: bytes) -> None:
                await asyncio.to_thread(handle.write, chunk)

            info = await self._download(bucket, key, write, progress)
            handle.close()
            os.replace(tmp_name, target)
        except BaseException:
            handle.close()
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
        return info

    async def _download(
        self, bucket: str, key: str, write: Callable[[bytes], Awaitable[None]], progress: Progress | None
    ) -> S3ObjectInfo:
        offset = 0
        etag: str | None = None
        total: int | None = None
        head: dict[str, Any] = {}
        chunk_size = self.transfer.download_chunk

        async def attempt(client: Any) -> None:
            nonlocal offset, etag, total
            params: dict[str, Any] = {"Bucket": bucket, "Key": key}
            if offset:
                # resume where the broken transfer stopped, only if it is still the same object
                params["Range"] = f"bytes={offset}-"
                if etag:
                    params["IfMatch"] = etag
            response = await client.get_object(**params)
            if etag is None:
                etag = response.get("ETag")
                total = int(response.get("ContentLength", 0))
                head.update(response)
            async with response["Body"] as stream:
                while True:
                    chunk = await stream.read(chunk_size)
                    if not chunk:
                        break
                    try:
                        await write(chunk)
                        offset += len(chunk)
                        await _report(progress, offset, total)
                    except Exception as exc:
                        raise _LocalError(exc) from exc
            if total is not None and offset != total:
                raise _Truncated(f"s3://{bucket}/{key}: got {offset} of {total} bytes")

        try:
            await self._run("get_object", attempt, read=True, bucket=bucket, key=key)
        except StorageError as exc:
            if getattr(exc, "code", None) == "PreconditionFailed":
                raise StorageError(f"s3_kit: s3://{bucket}/{key} changed while it was being downloaded") from exc
            raise
        return S3ObjectInfo(bucket, key, offset, etag, head.get("ContentType"), head.get("LastModified"),
                            dict(head.get("Metadata") or {}), head.get("VersionId"))  # fmt: skip

    # ------------------------------------------------------------------ listing, metadata

    async def list_objects(
        self, bucket: str | None, prefix: str = "", *, delimiter: str | None = None, page_size: int = 1000
    ) -> AsyncIterator[S3Object]:
        """Every object under ``prefix`` (one ListObjectsV2 request per page, each with failover)."""
        bucket = self._bucket(bucket)
        if not 1 <= page_size <= 1000:
            raise InvalidArgumentError(f"s3_kit: page_size must be 1..1000, got {page_size}")
        token: str | None = None
        while True:
            params: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": page_size}
            if delimiter:
                params["Delimiter"] = delimiter
            if token:
                params["ContinuationToken"] = token
            page: dict[str, Any] = await self._run("list_objects", _caller("list_objects_v2", params), read=True, bucket=bucket)
            for item in page.get("Contents") or ():
                yield S3Object(item["Key"], int(item.get("Size", 0)), item.get("ETag"), item.get("LastModified"), item.get("StorageClass"))
            for common in page.get("CommonPrefixes") or ():
                yield S3Object(common["Prefix"], is_prefix=True)
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
            if not token:
                raise StorageError(f"s3_kit: list of s3://{bucket}/{prefix} was truncated without a continuation token")

    async def list_all(self, bucket: str | None, prefix: str = "", **options: Any) -> list[S3Object]:
        return [obj async for obj in self.list_objects(bucket, prefix, **options)]

    async def head(self, bucket: str | None, key: str) -> S3ObjectInfo:
        bucket = self._bucket(bucket)
        r = await self._run("head_object", lambda c: c.head_object(Bucket=bucket, Key=key), read=True, bucket=bucket, key=key)
        return S3ObjectInfo(bucket, key, int(r.get("ContentLength", 0)), r.get("ETag"), r.get("ContentType"),
                            r.get("LastModified"), dict(r.get("Metadata") or {}), r.get("VersionId"))  # fmt: skip

    async def exists(self, bucket: str | None, key: str) -> bool:
        try:
            await self.head(bucket, key)
        except ObjectNotFoundError:
            return False
        return True

    async def delete(self, bucket: str | None, key: str) -> None:
        """Delete ``key`` (S3 answers success for a key that does not exist)."""
        bucket = self._bucket(bucket)
        await self._run("delete_object", lambda c: c.delete_object(Bucket=bucket, Key=key), read=False, bucket=bucket, key=key)

    async def copy(self, src_bucket: str, src_key: str, dst_bucket: str, dst_key: str) -> S3ObjectInfo:
        """Server-side copy (multipart UploadPartCopy above ``multipart_copy_threshold``)."""
        _check_key(dst_key)
        source = await self.head(src_bucket, src_key)
        copy_source = {"Bucket": src_bucket, "Key": src_key}
        if source.size <= self.transfer.multipart_copy_threshold:
            r = await self._run(
                "copy_object", lambda c: c.copy_object(Bucket=dst_bucket, Key=dst_key, CopySource=copy_source),
                read=False, bucket=dst_bucket, key=dst_key,
            )  # fmt: skip
            etag = (r.get("CopyObjectResult") or {}).get("ETag")
            return S3ObjectInfo(dst_bucket, dst_key, source.size, etag, source.content_type, None, dict(source.metadata))
        ep = self._pick(set()) or self.s3_endpoints[0]
        created = await self._run(
            "create_multipart_upload",
            lambda c: c.create_multipart_upload(Bucket=dst_bucket, Key=dst_key, **({"ContentType": source.content_type} if source.content_type else {}),
                                                Metadata=dict(source.metadata)),
            read=False, bucket=dst_bucket, key=dst_key, endpoint=ep,
        )  # fmt: skip
        upload_id = created["UploadId"]
        part = max(self.transfer.copy_part_size, math.ceil(source.size / MAX_PARTS))
        try:
            ranges = [(i + 1, start, min(start + part, source.size) - 1) for i, start in enumerate(range(0, source.size, part))]
            semaphore = asyncio.Semaphore(self.transfer.max_part_concurrency)

            async def copy_part(number: int, first: int, last: int) -> dict[str, Any]:
                async with semaphore:
                    r = await self._run(
                        "upload_part_copy",
                        lambda c: c.upload_part_copy(Bucket=dst_bucket, Key=dst_key, UploadId=upload_id, PartNumber=number,
                                                     CopySource=copy_source, CopySourceRange=f"bytes={first}-{last}",
                                                     **({"CopySourceIfMatch": source.etag} if source.etag else {})),
                        read=False, bucket=dst_bucket, key=dst_key, endpoint=ep,
                    )  # fmt: skip
                    return {"PartNumber": number, "ETag": r["CopyPartResult"]["ETag"]}

            tasks = [asyncio.create_task(copy_part(*r)) for r in ranges]
            try:
                done = await asyncio.gather(*tasks)
            except BaseException:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
                raise
            r = await self._run(
                "complete_multipart_upload",
                lambda c: c.complete_multipart_upload(Bucket=dst_bucket, Key=dst_key, UploadId=upload_id, MultipartUpload={"Parts": done}),
                read=False, bucket=dst_bucket, key=dst_key, endpoint=ep, max_retries=0,
            )  # fmt: skip
        except BaseException as exc:
            await asyncio.shield(self._abort(ep, dst_bucket, dst_key, upload_id, exc))
            raise
        return S3ObjectInfo(dst_bucket, dst_key, source.size, r.get("ETag"), source.content_type, None, dict(source.metadata))

    async def presigned_url(
        self, bucket: str | None, key: str, *, method: str = "get", expires_in: int = 3600, content_type: str | None = None
    ) -> str:
        """A URL that lets its holder GET (or PUT) this object without credentials until it expires.
        Signed for the endpoint the strategy picks (computed locally, no request)."""
        if self._anonymous:
            raise UnsupportedOpError("s3_kit: anonymous access cannot sign URLs")
        bucket = self._bucket(bucket)
        operations = {"get": "get_object", "put": "put_object", "head": "head_object", "delete": "delete_object"}
        if method.lower() not in operations:
            raise InvalidArgumentError(f"s3_kit: presigned URL method must be one of {sorted(operations)}, got {method!r}")
        if not (isinstance(expires_in, int) and 1 <= expires_in <= 604800):
            raise InvalidArgumentError(f"s3_kit: expires_in must be 1..604800 seconds, got {expires_in!r}")
        params: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if content_type and method.lower() == "put":
            params["ContentType"] = content_type

        async def sign(client: Any) -> str:
            url: str = await client.generate_presigned_url(operations[method.lower()], Params=params, ExpiresIn=expires_in)
            return url

        return await self._run("presign", sign, read=True, bucket=bucket, key=key)

    # ------------------------------------------------------------------ prefixes (checkpoints)

    async def download_prefix(
        self, bucket: str | None, prefix: str, dest: str | os.PathLike[str], *, progress: Progress | None = None
    ) -> Path:
        """Mirror every object under ``prefix`` into ``dest`` (keys relative to the prefix).

        Files already there with the size and ETag recorded in ``dest/.s3-manifest.json`` are
        not downloaded again. A prefix naming a single object gives that one file. Keys that
        would land outside ``dest`` (``..``) are refused. Raises ObjectNotFoundError when
        nothing is under the prefix (or an object vanished between listing and download).
        """
        bucket = self._bucket(bucket)
        root = Path(dest)
        root.mkdir(parents=True, exist_ok=True)
        base = prefix if (not prefix or prefix.endswith("/")) else prefix + "/"
        objects = [o for o in await self.list_all(bucket, base) if not o.key.endswith("/")]
        if not objects and prefix and not prefix.endswith("/"):
            try:
                info = await self.head(bucket, prefix)
            except ObjectNotFoundError:
                info = None
            if info is not None:
                objects = [S3Object(prefix, info.size, info.etag)]
                base = prefix.rsplit("/", 1)[0] + "/" if "/" in prefix else ""
        if not objects:
            raise ObjectNotFoundError(f"s3_kit: no objects under s3://{bucket}/{base}")
        manifest_path = root / ".s3-manifest.json"
        try:
            manifest: dict[str, Any] = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            manifest = {}
        resolved_root = root.resolve()
        plan: list[tuple[S3Object, str, Path]] = []
        for obj in objects:
            relative = obj.key[len(base):]
            target = (root / relative).resolve()
            if not relative or resolved_root not in target.parents:
                raise StorageError(f"s3_kit: key {obj.key!r} would be written outside {root}; refused")
            plan.append((obj, relative, target))
        total = sum(o.size for o, _, _ in plan)
        done = 0
        semaphore = asyncio.Semaphore(self.transfer.download_concurrency)

        async def fetch(obj: S3Object, relative: str, target: Path) -> None:
            nonlocal done
            entry = manifest.get(relative)
            if entry and entry.get("etag") == obj.etag and target.is_file() and target.stat().st_size == obj.size:
                done += obj.size
                await _report(progress, done, total)
                return
            async with semaphore:
                info = await self.download_file(bucket, obj.key, target)
            manifest[relative] = {"etag": info.etag, "size": info.size}
            done += obj.size
            await _report(progress, done, total)

        tasks = [asyncio.create_task(fetch(*item)) for item in plan]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        finally:
            tmp = manifest_path.with_suffix(".json.tmp")
            tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True))
            os.replace(tmp, manifest_path)
        return root

    # ------------------------------------------------------------------ health, stats

    async def health(self, timeout: float = 5.0) -> HealthStatus:
        """``ListBuckets`` on each endpoint (no retry); healthy when one answers."""
        start = time.monotonic()
        details = []
        healthy_latency: float | None = None
        for ep in self.s3_endpoints:
            t0 = time.monotonic()
            try:
                client = await self._client(ep)
                async with asyncio.timeout(timeout):
                    await client.list_buckets()
            except Exception as exc:
                mapped = self._map_error(exc, "health", None, None, ep)
                details.append(f"{ep.name}: {mapped or exc}")
                continue
            healthy_latency = healthy_latency or (time.monotonic() - t0)
            details.append(f"{ep.name}: ok")
        healthy = healthy_latency is not None
        return HealthStatus(healthy, 200 if healthy else None, healthy_latency or time.monotonic() - start, "; ".join(details))

    def _pooled_endpoints(self) -> list[_S3Endpoint]:
        return self.s3_endpoints

    def _reported_endpoints(self) -> list[_S3Endpoint]:
        return self.s3_endpoints

    def get_stats(self) -> dict[str, Any]:
        stats = super().get_stats()
        stats["strategy"] = self.strategy
        return stats


def _caller(operation: str, params: dict[str, Any]) -> Callable[[Any], Awaitable[dict[str, Any]]]:
    """``client.<operation>(**params)`` with the parameters bound now (not by a loop variable)."""

    async def call(client: Any) -> dict[str, Any]:
        page: dict[str, Any] = await getattr(client, operation)(**params)
        return page

    return call


def _where(bucket: str | None, key: str | None) -> str:
    if bucket and key:
        return f" of s3://{bucket}/{key}"
    if bucket:
        return f" of bucket {bucket!r}"
    return ""


def _check_key(key: str) -> None:
    if not isinstance(key, str) or not key:
        raise InvalidArgumentError(f"s3_kit: object key must be a non-empty string, got {key!r}")
    if len(key.encode()) > 1024:
        raise InvalidArgumentError(f"s3_kit: object key is {len(key.encode())} bytes; S3 allows 1024")


async def _report(progress: Progress | None, done: int, total: int | None) -> None:
    if progress is None:
        return
    result = progress(done, total)
    if inspect.isawaitable(result):
        await result


def _http_sessions(client: Any) -> list[Any]:
    """The aiohttp sessions inside an aiobotocore client (to release them after their loop closed)."""
    http = getattr(getattr(client, "_endpoint", None), "http_session", None)
    sessions = getattr(http, "_sessions", None) or {}
    return [s for s in sessions.values() if hasattr(s, "connector")]


# --------------------------------------------------------------------------- s3:// checkpoints


def default_cache_dir() -> Path:
    from ipfs_accelerate._paths import cache_dir

    return cache_dir() / "s3"


async def fetch_s3_prefix(
    uri: str,
    cache_dir: str | os.PathLike[str] | None = None,
    *,
    kit: S3Kit | None = None,
    metadata: Mapping[str, Any] | None = None,
    progress: Progress | None = None,
    local_files_only: bool = False,
) -> Path:
    """Download ``s3://bucket/prefix`` into a local cache directory and return it.

    The directory is ``cache_dir/<bucket>/<prefix>`` (``cache_dir`` defaults to
    ``$IPFS_ACCELERATE_CACHE_DIR/s3``, by default ``~/.cache/ipfs_accelerate/s3``); unchanged files are not
    downloaded again. ``kit`` (or one built from ``metadata``, e.g. ``{"s3cfg": {...}}``, else
    from the AWS environment variables) does the transfers. ``local_files_only``: no request
    at all; the cached copy (every file its manifest lists) or ObjectNotFoundError.
    """
    bucket, prefix = parse_s3_uri(uri)
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dest = root / bucket / (prefix.strip("/") or "_root")
    if local_files_only:
        try:
            manifest = json.loads((dest / ".s3-manifest.json").read_text())
        except (OSError, ValueError):
            manifest = None
        if not manifest or not all((dest / name).is_file() and (dest / name).stat().st_size == entry.get("size")
                                   for name, entry in manifest.items()):  # fmt: skip
            raise ObjectNotFoundError(f"s3_kit: {uri} is not (completely) in the cache at {dest} and local_files_only is set")
        return dest
    own = kit is None
    storage = kit if kit is not None else S3Kit(metadata=metadata)
    try:
        return await storage.download_prefix(bucket, prefix, dest, progress=progress)
    finally:
        if own:
            await storage.aclose()


def fetch_s3_prefix_sync(uri: str, cache_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> Path:
    """:func:`fetch_s3_prefix` from plain code (runs on the sync facade's loop thread)."""
    from ._sync import run_sync

    return run_sync(fetch_s3_prefix(uri, cache_dir, **kwargs))
