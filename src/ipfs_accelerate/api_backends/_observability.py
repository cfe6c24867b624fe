"""Observability: Prometheus exposition of every backend's, endpoint's, router's, storage kit's
and managed server's metrics, and OpenTelemetry spans.

Prometheus: :class:`PrometheusCollector` is a ``prometheus_client`` custom collector that
reads the sources' counters at scrape time (nothing is double-booked: the backends keep
counting in their own :class:`~ipfs_accelerate.api_backends.Metrics`). Register sources
with :func:`register_prometheus` (or :meth:`PrometheusCollector.add`) and expose them with
``prometheus_client.start_http_server`` or :func:`exposition`. Sources are held weakly: a
backend that is garbage collected disappears from the scrape.

Families (prefix ``ipfs_accelerate_``; labels in brackets):

* ``api_requests_total``, ``api_successes_total``, ``api_retries_total``,
  ``api_cancelled_total``, ``api_failures_total`` [``error``], ``api_tokens_total``
  [``direction``], ``api_request_latency_seconds``, ``api_time_to_first_chunk_seconds``,
  ``api_queue_wait_seconds`` (histograms) -- all with [``source``, ``kind``, ``provider``];
  ``kind`` is ``backend``, ``router`` or ``storage``.
* ``api_endpoint_attempts_total``, ``api_endpoint_attempt_failures_total`` [``error``],
  ``api_endpoint_attempt_latency_seconds``, ``api_endpoint_in_flight``, ``api_endpoint_queued``,
  ``api_endpoint_circuit_state`` (0 closed, 1 half-open, 2 open),
  ``api_endpoint_circuit_opened_total`` -- with [``source``, ``provider``, ``endpoint``].
* ``router_target_picks_total``, ``router_target_in_flight``, ``router_target_cooldowns_total``,
  ``router_target_cooling_down`` (0/1), ``router_target_healthy`` (1, 0, or -1 unknown),
  ``router_target_latency_ewma_seconds``, ``router_target_ttfc_ewma_seconds``,
  ``router_failovers_total`` -- with [``source``, ``target``].
* ``api_cache_hits_total`` [``match``: exact or semantic], ``api_cache_misses_total``,
  ``api_cache_stores_total``, ``api_cache_evictions_total``, ``api_cache_errors_total``
  [``reason``], ``api_cache_skipped_total`` [``reason``], ``api_cache_entries`` and
  ``api_cache_bytes`` (where the store can tell) -- with [``source``, ``kind``,
  ``provider``], for sources with a response cache (a cache shared by several sources shows
  its totals under each).
* ``managed_server_up`` (1 when ready), ``managed_server_restarts_total``,
  ``managed_server_state`` [``state``] -- with [``server``, ``runtime``].

No family carries a key, a URL's credentials or a payload (endpoint names are redacted URLs).

OpenTelemetry: :func:`start_span` returns a span of the ``opentelemetry-api`` tracer
``ipfs_accelerate`` when the package is installed (a no-op object otherwise); the router,
the Unified backends (through their router), S3 Kit and managed servers use it. Without an
SDK configured, ``opentelemetry-api`` itself records nothing.
"""

from __future__ import annotations

import math
import threading
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

# spans are shared with S3 Kit (storage/), which does not import this package's exporters
from ipfs_accelerate.resilience._tracing import Span, start_span

__all__ = ["PrometheusCollector", "Span", "exposition", "register_prometheus", "start_span"]

_CIRCUIT_VALUE = {"closed": 0, "half_open": 1, "open": 2}

# --------------------------------------------------------------------------- prometheus


def _source_kind(source: Any) -> str:
    from ._base import APIBackend

    if hasattr(source, "router_targets"):
        return "router"
    if type(source).__name__ == "ManagedServer":
        return "server"
    if getattr(source, "provider", None) == "s3_kit":
        return "storage"
    if isinstance(source, APIBackend):
        return "backend"
    raise TypeError(
        f"cannot export metrics of {type(source).__name__}: "
        "expected an API backend, a Router, S3Kit or a ManagedServer"
    )


class PrometheusCollector:
    """Collects the metrics of registered sources at scrape time (see the module docstring)."""

    def __init__(self, namespace: str = "ipfs_accelerate") -> None:
        self.namespace = namespace
        self._lock = threading.Lock()
        self._sources: dict[str, tuple[str, weakref.ref[Any]]] = {}

    def add(self, source: Any, name: str | None = None) -> str:
        """Export ``source`` under ``name`` (default: provider and a counter); return the name."""
        kind = _source_kind(source)
        with self._lock:
            if name is None:
                base = getattr(source, "name", None) if kind in ("router", "server") else None
                if kind == "server":
                    base = source.spec.name
                base = str(base or getattr(source, "provider", kind))
                name = base
                n = 1
                while name in self._sources and self._sources[name][1]() is not source:
                    n += 1
                    name = f"{base}-{n}"
            self._sources[name] = (kind, weakref.ref(source))
        return name

    def remove(self, name: str) -> None:
        with self._lock:
            self._sources.pop(name, None)

    def _live(self) -> list[tuple[str, str, Any]]:
        with self._lock:
            out = []
            for name, (kind, ref) in list(self._sources.items()):
                source = ref()
                if source is None:
                    del self._sources[name]
                else:
                    out.append((name, kind, source))
            return out

    def describe(self) -> list[Any]:
        return []  # families are dynamic; prometheus_client then calls collect() lazily

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import (
            CounterMetricFamily,
            GaugeMetricFamily,
            HistogramMetricFamily,
        )

        ns = self.namespace
        call_labels = ["source", "kind", "provider"]
        ep_labels = ["source", "provider", "endpoint"]
        tgt_labels = ["source", "target"]
        srv_labels = ["server", "runtime"]

        def counter(name: str, doc: str, labels: list[str]) -> Any:
            return CounterMetricFamily(f"{ns}_{name}", doc, labels=labels)

        def gauge(name: str, doc: str, labels: list[str]) -> Any:
            return GaugeMetricFamily(f"{ns}_{name}", doc, labels=labels)

        def histogram(name: str, doc: str, labels: list[str]) -> Any:
            return HistogramMetricFamily(f"{ns}_{name}", doc, labels=labels)

        f = {
            "requests": counter("api_requests", "Logical requests started", call_labels),
            "successes": counter("api_successes", "Requests that ended in a result", call_labels),
            "retries": counter(
                "api_retries", "Retries (and router failovers) after a failed attempt", call_labels
            ),
            "cancelled": counter(
                "api_cancelled", "Requests cancelled or abandoned by the caller", call_labels
            ),
            "failures": counter(
                "api_failures",
                "Requests that ended in an error, by error type",
                [*call_labels, "error"],
            ),
            "tokens": counter(
                "api_tokens", "Tokens reported by the provider", [*call_labels, "direction"]
            ),
            "latency": histogram(
                "api_request_latency_seconds", "Request latency (successes)", call_labels
            ),
            "ttfc": histogram(
                "api_time_to_first_chunk_seconds", "Time to the first streamed chunk", call_labels
            ),
            "queue": histogram(
                "api_queue_wait_seconds", "Time spent waiting for a concurrency slot", call_labels
            ),
            "ep_attempts": counter(
                "api_endpoint_attempts", "HTTP attempts sent to an endpoint", ep_labels
            ),
            "ep_failures": counter(
                "api_endpoint_attempt_failures",
                "Failed attempts, by error type",
                [*ep_labels, "error"],
            ),
            "ep_latency": histogram(
                "api_endpoint_attempt_latency_seconds", "Latency of successful attempts", ep_labels
            ),
            "ep_in_flight": gauge(
                "api_endpoint_in_flight", "Requests holding a concurrency slot", ep_labels
            ),
            "ep_queued": gauge(
                "api_endpoint_queued", "Requests waiting for a concurrency slot", ep_labels
            ),
            "ep_circuit": gauge(
                "api_endpoint_circuit_state",
                "Circuit breaker state: 0 closed, 1 half-open, 2 open",
                ep_labels,
            ),
            "ep_opened": counter(
                "api_endpoint_circuit_opened", "Times the circuit breaker opened", ep_labels
            ),
            "t_picks": counter(
                "router_target_picks", "Attempts the router sent to a target", tgt_labels
            ),
            "t_in_flight": gauge(
                "router_target_in_flight", "Router attempts in progress on a target", tgt_labels
            ),
            "t_cooldowns": counter(
                "router_target_cooldowns", "Times a target was put in cooldown", tgt_labels
            ),
            "t_cooling": gauge(
                "router_target_cooling_down", "1 while a target is in cooldown", tgt_labels
            ),
            "t_healthy": gauge(
                "router_target_healthy",
                "Last health check: 1 healthy, 0 unhealthy, -1 not checked",
                tgt_labels,
            ),
            "t_ewma": gauge(
                "router_target_latency_ewma_seconds",
                "EWMA of successful request latency",
                tgt_labels,
            ),
            "t_ttfc": gauge(
                "router_target_ttfc_ewma_seconds", "EWMA of stream time to first chunk", tgt_labels
            ),
            "failovers": counter(
                "router_failovers", "Attempts moved to another target after a failure", ["source"]
            ),
            "c_hits": counter(
                "api_cache_hits", "Answers served by the response cache", [*call_labels, "match"]
            ),
            "c_misses": counter(
                "api_cache_misses", "Response cache lookups that missed", call_labels
            ),
            "c_stores": counter(
                "api_cache_stores", "Answers written to the response cache", call_labels
            ),
            "c_evictions": counter(
                "api_cache_evictions", "Entries evicted to respect the cache's bounds", call_labels
            ),
            "c_errors": counter(
                "api_cache_errors",
                "Cache store failures and undecodable entries (each served as a miss), by reason",
                [*call_labels, "reason"],
            ),
            "c_skipped": counter(
                "api_cache_skipped",
                "Requests or answers not cached, by reason",
                [*call_labels, "reason"],
            ),
            "c_entries": gauge(
                "api_cache_entries", "Entries held by the cache's store", call_labels
            ),
            "c_bytes": gauge("api_cache_bytes", "Bytes held by the cache's store", call_labels),
            "srv_up": gauge("managed_server_up", "1 while the managed server is ready", srv_labels),
            "srv_restarts": counter(
                "managed_server_restarts",
                "Restarts after a crash or failed health checks",
                srv_labels,
            ),
            "srv_state": gauge(
                "managed_server_state",
                "1 for the server's current lifecycle state",
                [*srv_labels, "state"],
            ),
        }

        for name, kind, source in self._live():
            if kind == "server":
                self._server(f, source)
                continue
            stats = source.get_stats()
            provider = str(stats.get("provider", kind))
            labels = [name, kind, provider]
            self._calls(f, labels, stats)
            for ep in stats.get("endpoints", ()):
                self._endpoint(f, [name, str(ep.get("provider", provider)), str(ep["name"])], ep)
            if kind == "router":
                f["failovers"].add_metric([name], stats.get("failovers", 0))
                for target in stats.get("targets", ()):
                    self._target(f, [name, str(target["name"])], target)
                for server in getattr(source, "managed_servers", lambda: [])():
                    self._server(f, server)
            elif kind == "backend":
                for server in getattr(source, "managed_servers", lambda: [])():
                    self._server(f, server)
        yield from f.values()

    @staticmethod
    def _calls(f: dict[str, Any], labels: list[str], stats: Mapping[str, Any]) -> None:
        f["requests"].add_metric(labels, stats.get("requests", 0))
        f["successes"].add_metric(labels, stats.get("successes", 0))
        f["retries"].add_metric(labels, stats.get("retries", 0))
        f["cancelled"].add_metric(labels, stats.get("cancelled", 0))
        for error, count in sorted((stats.get("failures") or {}).items()):
            f["failures"].add_metric([*labels, error], count)
        f["tokens"].add_metric([*labels, "in"], stats.get("tokens_in", 0))
        f["tokens"].add_metric([*labels, "out"], stats.get("tokens_out", 0))
        for key, family in (
            ("latency_s", "latency"),
            ("time_to_first_chunk_s", "ttfc"),
            ("queue_wait_s", "queue"),
        ):
            hist = stats.get(key)
            if hist:
                _histogram(f[family], labels, hist)
        cache = stats.get("cache")
        if cache:
            exact = cache.get("hits", 0) - cache.get("semantic_hits", 0)
            f["c_hits"].add_metric([*labels, "exact"], exact)
            f["c_hits"].add_metric([*labels, "semantic"], cache.get("semantic_hits", 0))
            f["c_misses"].add_metric(labels, cache.get("misses", 0))
            f["c_stores"].add_metric(labels, cache.get("stores", 0))
            f["c_evictions"].add_metric(labels, cache.get("evictions", 0))
            for reason, count in sorted((cache.get("errors") or {}).items()):
                f["c_errors"].add_metric([*labels, reason], count)
            for reason, count in sorted((cache.get("skipped") or {}).items()):
                f["c_skipped"].add_metric([*labels, reason], count)
            if cache.get("entries") is not None:
                f["c_entries"].add_metric(labels, cache["entries"])
            if cache.get("bytes") is not None:
                f["c_bytes"].add_metric(labels, cache["bytes"])

    @staticmethod
    def _endpoint(f: dict[str, Any], labels: list[str], ep: Mapping[str, Any]) -> None:
        attempts = ep.get("attempts") or {}
        f["ep_attempts"].add_metric(labels, attempts.get("requests", 0))
        for error, count in sorted((attempts.get("failures") or {}).items()):
            f["ep_failures"].add_metric([*labels, error], count)
        if attempts.get("latency_s"):
            _histogram(f["ep_latency"], labels, attempts["latency_s"])
        f["ep_in_flight"].add_metric(labels, ep.get("in_flight", 0))
        f["ep_queued"].add_metric(labels, ep.get("queued", 0))
        f["ep_circuit"].add_metric(labels, _CIRCUIT_VALUE.get(str(ep.get("circuit_state")), 0))
        f["ep_opened"].add_metric(labels, ep.get("circuit_opened", 0))

    @staticmethod
    def _target(f: dict[str, Any], labels: list[str], target: Mapping[str, Any]) -> None:
        f["t_picks"].add_metric(labels, target.get("picks", 0))
        f["t_in_flight"].add_metric(labels, target.get("in_flight", 0))
        f["t_cooldowns"].add_metric(labels, target.get("cooldowns", 0))
        f["t_cooling"].add_metric(labels, 1 if target.get("cooling_down_s", 0) > 0 else 0)
        healthy = target.get("healthy")
        f["t_healthy"].add_metric(labels, -1 if healthy is None else int(bool(healthy)))
        if target.get("latency_ewma_s") is not None:
            f["t_ewma"].add_metric(labels, target["latency_ewma_s"])
        if target.get("ttfc_ewma_s") is not None:
            f["t_ttfc"].add_metric(labels, target["ttfc_ewma_s"])

    @staticmethod
    def _server(f: dict[str, Any], server: Any) -> None:
        stats = server.stats()
        labels = [str(stats["name"]), str(stats["runtime"])]
        f["srv_up"].add_metric(labels, 1 if stats["state"] == "ready" else 0)
        f["srv_restarts"].add_metric(labels, stats["restarts"])
        # every state the server's enum has, read from the server: the servers package imports
        # this module (for its spans), so this module must not import it back
        for state in type(server.state):
            current = 1 if stats["state"] == state.value else 0
            f["srv_state"].add_metric([*labels, state.value], current)


def _histogram(family: Any, labels: list[str], hist: Mapping[str, Any]) -> None:
    buckets = [(_le(bound), count) for bound, count in hist.get("buckets", ())]
    if not buckets:
        return
    family.add_metric(labels, buckets, hist.get("sum", 0.0))


def _le(bound: float) -> str:
    if math.isinf(bound):
        return "+Inf"
    from prometheus_client.utils import floatToGoString

    return str(floatToGoString(bound))  # type: ignore[no-untyped-call]


def register_prometheus(
    *sources: Any, registry: Any = None, namespace: str = "ipfs_accelerate"
) -> PrometheusCollector:
    """Create a collector for ``sources`` and register it (default: prometheus_client's global
    ``REGISTRY``). Add more sources later with :meth:`PrometheusCollector.add`."""
    try:
        from prometheus_client import REGISTRY
    except ImportError as exc:
        from ipfs_accelerate.errors import ConfigurationError

        raise ConfigurationError(
            "Prometheus export needs prometheus-client: "
            "pip install 'ipfs-accelerate[observability]'"
        ) from exc
    collector = PrometheusCollector(namespace)
    for source in sources:
        collector.add(source)
    (registry if registry is not None else REGISTRY).register(collector)
    return collector


def exposition(registry: Any = None) -> bytes:
    """The text exposition format of ``registry`` (default: the global one)."""
    from prometheus_client import REGISTRY, generate_latest

    data: bytes = generate_latest(registry if registry is not None else REGISTRY)
    return data
