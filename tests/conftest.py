"""Shared fixtures: the hypothesis profile and the backend parametrisation.

Every op test takes the ``device`` fixture and runs once per backend in the HAL registry
(``hal.registered_backends()`` when the suite is collected), so a newly registered backend
gets the whole op suite without a test edit. A backend that cannot start here is skipped
with its reason, unless IPFS_ACCELERATE_REQUIRE_<NAME>=1 says it must run (CI sets it for
WebGPU on lavapipe), in which case the tests fail.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from ipfs_accelerate import hal
from ipfs_accelerate.errors import BackendUnavailableError

# session fixtures of the serve and CLI tests, registered here once so both folders share them
pytest_plugins = ["tests.serve.fixtures"]

settings.register_profile(
    "ci",
    max_examples=20,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile(
    "explore",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

#: the registry's backends as the suite is collected (hal/__init__.py registers the built-ins)
BACKEND_NAMES = tuple(hal.registered_backends())


def start_backend(name: str):  # type: ignore[no-untyped-def]
    try:
        return hal.get_backend(name, fallback=False)
    except BackendUnavailableError as exc:
        if os.environ.get(f"IPFS_ACCELERATE_REQUIRE_{name.upper()}") == "1":
            pytest.fail(f"backend {name!r} is required here but cannot start: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(params=BACKEND_NAMES, scope="session")
def device(request: pytest.FixtureRequest) -> str:
    """The name of a backend that runs on this machine (one test instance per backend)."""
    backend = start_backend(request.param)
    return str(backend.name)


@pytest.fixture(scope="session")
def backend(device: str):  # type: ignore[no-untyped-def]
    return hal.get_backend(device, fallback=False)
