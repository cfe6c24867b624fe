"""Prometheus metrics of one server (its own registry, so two apps in a process stay apart).

Routes are labelled by their template (``/v2/models/{model}/infer``), never by the raw path,
and nothing a client sends besides a served model's name becomes a label value.
"""

from __future__ import annotations

import threading
from collections import Counter as _Counter
from typing import Any

__all__ = ["ServerMetrics", "count_model_load", "model_loads"]

_LOADS: _Counter[str] = _Counter()
_LOADS_LOCK = threading.Lock()


def count_model_load(name: str) -> None:
    """Record that this process loaded the model ``name`` (a replica should load each once)."""
    with _LOADS_LOCK:
        _LOADS[name] += 1


def model_loads() -> dict[str, int]:
    with _LOADS_LOCK:
        return dict(_LOADS)


_LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServerMetrics:
    """The server's counters, histograms and gauges, and their text exposition."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = CollectorRegistry(auto_describe=True)
        prefix = "ipfs_accelerate_serve"
        self.requests = Counter(
            f"{prefix}_requests", "HTTP requests answered, by route template and status",
            ["route", "method", "status"], registry=self.registry,
        )  # fmt: skip
        self.request_seconds = Histogram(
            f"{prefix}_request_duration_seconds",
            "Time from request to response, by route template",
            ["route"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.errors = Counter(
            f"{prefix}_errors",
            "Requests that failed, by error kind",
            ["kind"],
            registry=self.registry,
        )
        self.inputs = Counter(
            f"{prefix}_inputs", "Inputs processed (texts, images, audio files)", ["model", "task"],
            registry=self.registry,
        )  # fmt: skip
        self.prompt_tokens = Counter(
            f"{prefix}_prompt_tokens",
            "Tokens embedded (special tokens included)",
            ["model"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            f"{prefix}_embedding_batch_size", "Inputs per forward pass of the dynamic batcher",
            ["model"], buckets=_BATCH_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.queue_seconds = Histogram(
            f"{prefix}_embedding_queue_seconds", "Time an input waited for its forward pass",
            ["model"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.inference_seconds = Histogram(
            f"{prefix}_inference_seconds",
            "Time of one model call (a batch, an image set, an audio file)",
            ["model", "task"], buckets=_LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.pending = Gauge(
            f"{prefix}_embedding_pending_inputs", "Inputs waiting for a forward pass", ["model"],
            registry=self.registry,
        )  # fmt: skip
        self.in_progress = Gauge(
            f"{prefix}_requests_in_progress", "Model requests accepted and not yet answered",
            ["model"], registry=self.registry,
        )  # fmt: skip
        self.registry.register(_LoadsCollector())

    def exposition(self) -> tuple[bytes, str]:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LoadsCollector:
    """``ipfs_accelerate_serve_model_loads{model}``: how many times this process loaded each
    served model (1 in a healthy replica: models are loaded once, not per app or request)."""

    def collect(self) -> Any:
        from prometheus_client.core import GaugeMetricFamily

        family = GaugeMetricFamily(
            "ipfs_accelerate_serve_model_loads",
            "Times this process loaded each served model",
            labels=["model"],
        )
        for name, count in sorted(model_loads().items()):
            family.add_metric([name], count)
        yield family

    def describe(self) -> Any:
        return []
