"""Prometheus exposition of backends, endpoints, routers, S3 Kit and managed servers, and
OpenTelemetry spans (recorded with the OpenTelemetry SDK's in-memory exporter)."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from ipfs_accelerate.api_backends import (
    ManagedServer,
    Router,
    S3Kit,
    create_api_backend,
    exposition,
    register_prometheus,
)
from ipfs_accelerate.errors import NotFoundError
from ipfs_accelerate.servers import LocalProcessRuntime

from ..fakes.vllm_fake import BASE_MODEL, VLLMFake
from ..servers.conftest import fake_server_spec
from .conftest import fast, run

pytestmark = pytest.mark.timeout(60)


def samples(text: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    found: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return found[(name, tuple(sorted(labels.items())))]


def test_prometheus_exposition_of_every_source() -> None:
    from prometheus_client import CollectorRegistry

    async def body() -> None:
        async with VLLMFake() as a, VLLMFake() as b:
            backend = create_api_backend(
                "vllm",
                metadata={"base_url": a.url, "api_key": "sk-prom-secret", "resilience": fast()},
            )
            other = create_api_backend("vllm", metadata={"base_url": b.url, "resilience": fast()})
            router = Router([backend, other], strategy="round_robin", name="edge")
            kit = S3Kit(
                metadata={
                    "s3cfg": {
                        "accessKey": "AKIA0000",
                        "secretKey": "s3-prom-secret",
                        "endpoint": "http://127.0.0.1:9",
                    }
                }
            )
            server = ManagedServer(fake_server_spec(), LocalProcessRuntime())
            registry = CollectorRegistry()
            collector = register_prometheus(backend, router, kit, server, registry=registry)
            try:
                for i in range(3):
                    await backend.chat(BASE_MODEL, f"p{i}")
                with pytest.raises(NotFoundError):
                    await backend.chat("no/such-model", "x")
                _ = [c async for c in backend.stream_chat(BASE_MODEL, "streamed words")]
                a.inject(status=503)
                await router.chat(BASE_MODEL, "routed")  # endpoint a fails, b answers
                text = exposition(registry)
                found = samples(text)
                call = {"source": "vllm", "kind": "backend", "provider": "vllm"}
                assert value(found, "ipfs_accelerate_api_requests_total", **call) == 6
                assert value(found, "ipfs_accelerate_api_successes_total", **call) == 4
                assert (
                    value(
                        found, "ipfs_accelerate_api_failures_total", **call, error="NotFoundError"
                    )
                    == 1
                )
                assert (
                    value(found, "ipfs_accelerate_api_failures_total", **call, error="ServerError")
                    == 1
                )
                assert value(found, "ipfs_accelerate_api_tokens_total", **call, direction="out") > 0
                assert (
                    value(found, "ipfs_accelerate_api_request_latency_seconds_count", **call) == 4
                )
                assert (
                    value(
                        found,
                        "ipfs_accelerate_api_request_latency_seconds_bucket",
                        **call,
                        le="+Inf",
                    )
                    == 4
                )
                assert (
                    value(found, "ipfs_accelerate_api_time_to_first_chunk_seconds_count", **call)
                    == 1
                )
                endpoint = {"source": "vllm", "provider": "vllm", "endpoint": a.url}
                assert value(found, "ipfs_accelerate_api_endpoint_attempts_total", **endpoint) == 6
                assert value(found, "ipfs_accelerate_api_endpoint_circuit_state", **endpoint) == 0
                assert value(found, "ipfs_accelerate_api_endpoint_in_flight", **endpoint) == 0
                routed = {"source": "edge", "kind": "router", "provider": "router"}
                assert value(found, "ipfs_accelerate_api_requests_total", **routed) == 1
                assert value(found, "ipfs_accelerate_api_retries_total", **routed) == 1
                assert value(found, "ipfs_accelerate_router_failovers_total", source="edge") == 1
                target_a = router.targets[0].name
                assert (
                    value(
                        found,
                        "ipfs_accelerate_router_target_picks_total",
                        source="edge",
                        target=target_a,
                    )
                    == 1
                )
                assert (
                    value(
                        found,
                        "ipfs_accelerate_router_target_healthy",
                        source="edge",
                        target=target_a,
                    )
                    == -1
                )
                storage = {"source": "s3_kit", "kind": "storage", "provider": "s3_kit"}
                assert value(found, "ipfs_accelerate_api_requests_total", **storage) == 0
                assert (
                    value(
                        found,
                        "ipfs_accelerate_api_endpoint_circuit_state",
                        source="s3_kit",
                        provider="s3_kit",
                        endpoint="http://127.0.0.1:9",
                    )
                    == 0
                )
                srv = {"server": "fake-vllm", "runtime": "process"}
                assert value(found, "ipfs_accelerate_managed_server_up", **srv) == 0
                assert (
                    value(found, "ipfs_accelerate_managed_server_state", **srv, state="stopped")
                    == 1
                )
                assert value(found, "ipfs_accelerate_managed_server_restarts_total", **srv) == 0
                for secret in (b"sk-prom-secret", b"s3-prom-secret"):
                    assert secret not in text
                # sources are held weakly: a dropped backend leaves the scrape
                name = collector.add(other)
                assert name == "vllm-2"
                assert (
                    "ipfs_accelerate_api_requests_total",
                    (("kind", "backend"), ("provider", "vllm"), ("source", "vllm-2")),
                ) in samples(exposition(registry))
                await other.aclose()
                router.router_targets.clear()
                router.tiers.clear()
                del other, router
                gc.collect()
                assert all(
                    labels != (("kind", "backend"), ("provider", "vllm"), ("source", "vllm-2"))
                    for _, labels in samples(exposition(registry))
                )
            finally:
                await backend.aclose()
                await kit.aclose()

    run(body(), 30)


def test_unified_backend_exports_its_endpoints_and_server() -> None:
    from prometheus_client import CollectorRegistry

    async def body() -> None:
        async with VLLMFake() as a, VLLMFake() as b:
            metadata = {"endpoints": [a.url, b.url], "resilience": fast()}
            managed = ManagedServer(fake_server_spec(name="managed"), LocalProcessRuntime())
            unified = create_api_backend("vllm_unified", metadata=metadata, server=managed)
            registry = CollectorRegistry()
            register_prometheus(unified, registry=registry)
            try:
                await unified.chat(BASE_MODEL, "x")
                found = samples(exposition(registry))
                call = {"source": "vllm_unified", "kind": "backend", "provider": "vllm_unified"}
                assert value(found, "ipfs_accelerate_api_requests_total", **call) == 1
                endpoints = {
                    labels
                    for name, labels in found
                    if name == "ipfs_accelerate_api_endpoint_attempts_total"
                }
                assert len(endpoints) == 3  # the managed server's endpoint and the two others
                assert (
                    value(
                        found,
                        "ipfs_accelerate_managed_server_up",
                        server="managed",
                        runtime="process",
                    )
                    == 0
                )
            finally:
                await unified.aclose()

    run(body(), 20)


@pytest.fixture(scope="module")
def spans() -> Iterator[Any]:
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    if trace.get_tracer_provider() is not provider:
        pytest.skip("another OpenTelemetry tracer provider was installed first in this process")
    yield exporter
    exporter.clear()


def test_opentelemetry_spans_for_router_attempts_and_servers(spans: Any) -> None:
    async def body() -> None:
        async with VLLMFake() as a, VLLMFake() as b:
            backends = [
                create_api_backend("vllm", metadata={"base_url": f.url, "resilience": fast()})
                for f in (a, b)
            ]
            router = Router(backends, strategy="round_robin", name="traced")
            try:
                spans.clear()
                a.inject(status=500)
                await router.chat(BASE_MODEL, "trace me")
                finished = spans.get_finished_spans()
                call = [s for s in finished if s.name == "ipfs_accelerate.router.chat"]
                attempts = [s for s in finished if s.name == "ipfs_accelerate.router.attempt"]
                assert len(call) == 1 and len(attempts) == 2
                assert (
                    call[0].attributes["router.attempts"] == 2
                    and call[0].attributes["router"] == "traced"
                )
                failed, succeeded = sorted(attempts, key=lambda s: s.start_time)
                assert (
                    failed.status.status_code.name == "ERROR"
                    and failed.attributes["error.type"] == "ServerError"
                )
                assert (
                    succeeded.attributes["outcome"] == "success"
                    and succeeded.attributes["provider"] == "vllm"
                )
                assert succeeded.attributes["endpoint"] == b.url
                spans.clear()
                server = ManagedServer(
                    fake_server_spec(), LocalProcessRuntime(), ready_timeout=20, probe_interval=0.05
                )
                await server.start()
                await server.stop()
                started = [
                    s
                    for s in spans.get_finished_spans()
                    if s.name == "ipfs_accelerate.server.start"
                ]
                assert len(started) == 1 and started[0].attributes["runtime"] == "process"
            finally:
                for backend in backends:
                    await backend.aclose()

    run(body(), 30)
