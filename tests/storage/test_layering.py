"""Where S3 Kit sits: object storage composing the shared resilience pieces, not an API
backend, and independent of the LLM router."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import ipfs_accelerate.api_backends as api_backends
import ipfs_accelerate.resilience as resilience
import ipfs_accelerate.storage as storage
from ipfs_accelerate.api_backends import APIBackend, create_api_backend

KEYS = {
    "accessKey": "AKIATESTKEY000000001",
    "secretKey": "layering-secret",
    "endpoint": "http://a:9",
}


def test_s3kit_is_not_an_api_backend() -> None:
    assert not issubclass(storage.S3Kit, APIBackend)
    kit = create_api_backend("s3_kit", metadata={"s3cfg": KEYS})
    assert type(kit) is storage.S3Kit
    # the resilience pieces are composed: each endpoint has its own breaker, limiter, metrics
    endpoint = kit.s3_endpoints[0]
    assert isinstance(endpoint.breaker, resilience.CircuitBreaker)
    assert isinstance(endpoint.limiter, resilience.PriorityLimiter)
    assert isinstance(kit.metrics, resilience.Metrics)
    assert isinstance(kit.config, resilience.ResilienceConfig)


def _modules_loaded_by(statement: str) -> list[str]:
    code = f"{statement}\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, timeout=60
    )
    loaded: list[str] = json.loads(out.stdout)
    return loaded


@pytest.mark.parametrize(
    "statement",
    [
        "import ipfs_accelerate.storage",
        "from ipfs_accelerate.storage import S3Kit, fetch_s3_prefix_sync\n"
        "S3Kit(metadata={'s3cfg': {'endpoint': 'http://a:9', 'anonymous': True}})",
    ],
)
def test_storage_does_not_import_the_router_or_the_api_backends(statement: str) -> None:
    loaded = _modules_loaded_by(statement)
    assert "ipfs_accelerate.api_backends.router" not in loaded
    assert not [m for m in loaded if m.startswith("ipfs_accelerate.api_backends")]
    assert "aiobotocore" not in loaded  # loaded on the first request only


def test_old_names_point_at_the_new_homes() -> None:
    for name in storage.__all__:
        if name in api_backends.__all__:
            assert getattr(api_backends, name) is getattr(storage, name)
    for name in ("CircuitBreaker", "CircuitState", "PriorityLimiter", "ResilienceConfig",
                 "BreakerConfig", "Secret", "Metrics", "Priority", "HealthStatus"):  # fmt: skip
        assert getattr(api_backends, name) is getattr(resilience, name)


def test_router_and_storage_share_one_balancing_module() -> None:
    from ipfs_accelerate.api_backends import router
    from ipfs_accelerate.resilience import balancing

    assert router.make_strategy is balancing.make_strategy
    assert router.STRATEGIES == balancing.STRATEGIES
    kit = storage.S3Kit(metadata={"s3cfg": {**KEYS, "strategy": "weighted"}})
    assert kit.strategy == "weighted"
