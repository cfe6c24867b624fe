"""S3 Kit's core: configuration, endpoints, aiobotocore clients and the request pipeline.

Every S3 operation goes through :meth:`_S3Core._run` (breaker, limiter, retries with backoff
and, for reads, failover between endpoints). Each endpoint composes the shared resilience
pieces (:mod:`ipfs_accelerate.resilience`); nothing here is an API backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, ClassVar, Self, TypeVar

from ipfs_accelerate.errors import (
    CircuitOpenError,
    ConfigurationError,
    InvalidArgumentError,
    StorageUnavailableError,
)
from ipfs_accelerate.resilience import (
    STRATEGIES,
    BlockingFacade,
    BreakerPermit,
    Metrics,
    Priority,
    ResilienceConfig,
    Secret,
    backoff_delay,
    hide_secrets,
    make_strategy,
    normalise_base_url,
    pool_stats,
    redact_url,
    resolve_setting,
    run_sync,
    start_span,
)

from ._endpoint import S3Endpoint
from ._errors import map_error
from ._objects import TransferConfig, Transient, location

T = TypeVar("T")
_UNCOUNTED = BreakerPermit(False, -1)  # a permit the breaker ignores when it is recorded


def _first(mapping: Mapping[str, Any] | None, *names: str, env: Sequence[str] = ()) -> str | None:
    """The first non-empty of ``names`` in ``mapping``, then of the ``env`` variables."""
    return resolve_setting(mapping, None, names, env)[0]


class _S3Core:
    """Configuration, clients, the pipeline and the lifecycle of :class:`S3Kit`."""

    provider: ClassVar[str] = "s3_kit"

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
            raise ConfigurationError(
                f"s3_kit: metadata['s3cfg'] must be a dict, got {type(cfg).__name__}"
            )
        cfg = {k: (v.reveal() if isinstance(v, Secret) else v) for k, v in cfg.items()}
        self._anonymous = bool(cfg.get("anonymous", False))
        self._credential_chain = bool(cfg.get("credential_chain", False))
        entries = self._endpoint_entries(cfg)
        for settings in (raw_meta, raw_res):
            if "s3cfg" in settings:
                settings["s3cfg"] = hide_secrets(settings["s3cfg"])
        # kept for callers, with anything key-like wrapped so that it never prints
        self.metadata: dict[str, Any] = hide_secrets(raw_meta)
        self.resources: dict[str, Any] = hide_secrets(raw_res)
        self.config = ResilienceConfig.from_value(
            resilience if resilience is not None else raw_meta.get("resilience")
        )
        self.metrics = Metrics()
        self._sync: BlockingFacade | None = None
        if isinstance(transfer, Mapping):
            transfer = TransferConfig(**dict(transfer))
        self.transfer = transfer or TransferConfig(**dict(cfg.get("transfer") or {}))
        self.s3_endpoints = [self._make_endpoint(e) for e in entries]
        names = [e.name for e in self.s3_endpoints]
        if len(set(names)) != len(names):
            raise ConfigurationError(f"s3_kit: endpoints listed twice: {names}")
        strategy = strategy or cfg.get("strategy") or "round_robin"
        if strategy not in STRATEGIES:
            raise ConfigurationError(
                f"s3_kit: strategy must be one of {', '.join(STRATEGIES)}, got {strategy!r}"
            )
        self.strategy = strategy
        self._strategy = make_strategy(strategy)
        self._session: Any = None
        self.default_bucket: str | None = cfg.get("bucket")

    # ------------------------------------------------------------------ configuration

    def _endpoint_entries(self, cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
        top_key = _first(
            cfg, "accessKey", "access_key", "aws_access_key_id", env=("AWS_ACCESS_KEY_ID",)
        )
        top_secret = _first(
            cfg, "secretKey", "secret_key", "aws_secret_access_key", env=("AWS_SECRET_ACCESS_KEY",)
        )
        top_token = _first(
            cfg, "sessionToken", "session_token", "aws_session_token", env=("AWS_SESSION_TOKEN",)
        )
        top_region = (
            _first(cfg, "region", "region_name", env=("AWS_REGION", "AWS_DEFAULT_REGION"))
            or "us-east-1"
        )
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
                "addressing_style": spec.get("addressing_style")
                or cfg.get("addressing_style")
                or ("path" if url else "auto"),
            }
            if (
                not self._anonymous
                and not self._credential_chain
                and not (entry["access_key"] and entry["secret_key"])
            ):
                raise ConfigurationError(
                    f"s3_kit: no credentials for endpoint {i} (looked in metadata['s3cfg'] "
                    "accessKey/secretKey and $AWS_ACCESS_KEY_ID/$AWS_SECRET_ACCESS_KEY); set "
                    "s3cfg['credential_chain'] to use botocore's profiles or instance roles, "
                    "or s3cfg['anonymous'] for public buckets"
                )
            if not (isinstance(entry["weight"], int | float) and entry["weight"] > 0):
                raise ConfigurationError(
                    f"s3_kit: endpoint {i} weight must be > 0, got {entry['weight']!r}"
                )
            if entry["addressing_style"] not in ("path", "virtual", "auto"):
                raise ConfigurationError(
                    "s3_kit: addressing_style must be path, virtual or auto, "
                    f"got {entry['addressing_style']!r}"
                )
            entries.append(entry)
        return entries

    def _make_endpoint(self, entry: Mapping[str, Any]) -> S3Endpoint:
        config = self.config
        if entry.get("max_concurrency") is not None:
            config = dataclasses.replace(config, max_concurrency=int(entry["max_concurrency"]))
        url = entry["url"]
        name = entry.get("name") or (redact_url(url) if url else f"aws:{entry['region']}")
        return S3Endpoint(
            url=url,
            region=entry["region"],
            name=str(name),
            access_key=Secret(entry["access_key"]) if entry["access_key"] else None,
            secret_key=Secret(entry["secret_key"]) if entry["secret_key"] else None,
            session_token=Secret(entry["session_token"]) if entry["session_token"] else None,
            addressing_style=entry["addressing_style"],
            weight=float(entry["weight"]),
            config=config,
        )

    # ------------------------------------------------------------------ what the registry asks

    @property
    def is_configured(self) -> bool:
        return True  # construction already refused a configuration without credentials

    @property
    def accepts_any_model(self) -> bool:
        return False

    def is_compatible_model(self, model: str) -> bool:
        return False  # storage serves no models

    # ------------------------------------------------------------------ lifecycle, stats

    @property
    def sync(self) -> BlockingFacade:
        """Blocking twin of this kit: ``kit.sync.upload_bytes(...)`` from plain code."""
        if self._sync is None:
            self._sync = BlockingFacade(self)
        return self._sync

    async def aclose(self) -> None:
        """Close every endpoint's client (the current loop's awaited, others' scheduled)."""
        for ep in self.s3_endpoints:
            await ep.aclose()

    def close(self) -> None:
        """Close from sync code (on the sync facade's loop; closes other loops' clients too)."""
        run_sync(self.aclose())

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def get_stats(self) -> dict[str, Any]:
        """Counters and latency percentiles (no secrets, no payloads), summed over the
        endpoints, each listed in ``endpoints``, and the ``strategy``."""
        stats = pool_stats(self.metrics, self.provider, self.s3_endpoints, self.s3_endpoints)
        stats["strategy"] = self.strategy
        return stats

    # ------------------------------------------------------------------ clients

    async def _client(self, ep: S3Endpoint) -> Any:
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
            ep.forget_dead_clients()
            try:
                import botocore
                from aiobotocore.config import AioConfig
                from aiobotocore.session import get_session
            except ImportError as exc:
                raise ConfigurationError(
                    "S3 Kit needs aiobotocore: pip install 'ipfs-accelerate[s3]'"
                ) from exc
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
                credentials = {
                    "aws_access_key_id": ep.access_key.reveal(),
                    "aws_secret_access_key": ep.secret_key.reveal(),
                }
                if ep.session_token:
                    credentials["aws_session_token"] = ep.session_token.reveal()
            context = self._session.create_client(
                "s3", endpoint_url=ep.url, region_name=ep.region, config=config, **credentials
            )
            client = await context.__aenter__()
            ep.clients[id(loop)] = (weakref.ref(loop), context, client)
            return client

    def _pick(self, exclude: set[int]) -> S3Endpoint | None:
        candidates = [
            e for e in self.s3_endpoints if id(e) not in exclude and not e.breaker.is_open
        ]
        if not candidates:
            return None
        chosen: S3Endpoint = self._strategy.choose(candidates, self.s3_endpoints, False)
        return chosen

    async def _run(
        self,
        what: str,
        call: Callable[[Any], Awaitable[T]],
        *,
        read: bool,
        bucket: str | None = None,
        key: str | None = None,
        endpoint: S3Endpoint | None = None,
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
                        error = map_error(exc, what, bucket, key, ep.name)
                        if error is None:  # cancellation
                            ep.breaker.release(permit)
                            raise
                        if not isinstance(error, Transient):
                            ep.breaker.record_success(
                                permit
                            )  # it answered: the request was the problem
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
                        if delay is None or (
                            deadline_at is not None and time.monotonic() + delay >= deadline_at
                        ):
                            raise self._unavailable(
                                what, bucket, key, error, "no time left to retry"
                            ) from exc
                        await asyncio.sleep(delay)
                        ep = (self._pick(set()) if read and endpoint is None else None) or failed
                        continue
                    ep.breaker.record_success(permit)
                    latency = time.monotonic() - attempt_start
                    ep.metrics.on_attempt(latency)
                    ep.ewma_latency = (
                        latency
                        if ep.ewma_latency is None
                        else 0.3 * latency + 0.7 * ep.ewma_latency
                    )
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
        self,
        what: str,
        bucket: str | None,
        key: str | None,
        last: BaseException | None,
        why: str = "",
    ) -> StorageUnavailableError:
        where = location(bucket, key)
        detail = f": {last}" if last is not None else ""
        states = ", ".join(f"{e.name} ({e.breaker.state})" for e in self.s3_endpoints)
        reason = f" ({why})" if why else ""
        error = StorageUnavailableError(
            f"s3_kit: {what}{where} failed on every attempt{reason}{detail}; endpoints: {states}"
        )
        cause = getattr(last, "cause", None) or last
        error.__cause__ = cause
        return error

    def _bucket(self, bucket: str | None) -> str:
        bucket = bucket or self.default_bucket
        if not bucket or not isinstance(bucket, str):
            raise InvalidArgumentError("s3_kit: no bucket given (and no s3cfg['bucket'] default)")
        return bucket
