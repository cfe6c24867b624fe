"""Managed servers on a real Docker engine (see docker_engine.py for the engine and image).

Each test runs a protocol fake inside a container on the host's network and drives the whole
lifecycle through :class:`ManagedServer` and :class:`DockerRuntime`: create, start, wait for
health, logs, a crash of the container's process followed by the automatic restart, stop and
removal, a port already taken, an image that is not there. Every container a test created is
removed after it, even when it fails, and the tests check that nothing was left behind.

Without an engine, and where none can be started (no dockerd, not root), the tests skip saying
why; with IPFS_ACCELERATE_REQUIRE_DOCKER=1 (as in CI) that is a failure instead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.errors import ContainerError, ServerStartError
from ipfs_accelerate.resilience import Secret
from ipfs_accelerate.servers import (
    DockerRuntime,
    ManagedServer,
    ServerSpec,
    ServerState,
    free_port,
    probe_http,
)

from ..api_backends.conftest import fast, run
from .conftest import port_closed
from .docker_engine import REQUIRE_ENV, SESSION_LABEL, DockerEngine, EngineUnavailable
from .docker_engine import docker_engine as open_engine

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def engine() -> Iterator[DockerEngine]:
    pytest.importorskip("docker")
    try:
        context = open_engine()
        engine = context.__enter__()
    except EngineUnavailable as exc:
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(f"{REQUIRE_ENV}=1 but there is no Docker engine: {exc}")
        pytest.skip(f"no Docker engine: {exc}")
    try:
        yield engine
    finally:
        context.__exit__(None, None, None)


@pytest.fixture
def docker(engine: DockerEngine) -> Iterator[DockerEngine]:
    """The engine, and after the test (passed or failed) no container of this session left."""
    try:
        yield engine
    finally:
        engine.remove_containers()


def _server(engine: DockerEngine, spec: ServerSpec, **options: Any) -> ManagedServer:
    defaults: dict[str, Any] = {"ready_timeout": 60, "probe_interval": 0.05,
                                "health_interval": 0.2, "health_timeout": 2.0,
                                "restart_backoff": 0.1, "stop_timeout": 5}  # fmt: skip
    runtime = DockerRuntime(engine.client, pull="never")
    return ManagedServer(spec, runtime, **(defaults | options))


def _inspect(engine: DockerEngine, container_id: str) -> dict[str, Any] | None:
    import docker.errors

    try:
        attrs: dict[str, Any] = engine.client.api.inspect_container(container_id)
    except docker.errors.NotFound:
        return None
    return attrs


async def _chat(url: str, text: str) -> str:
    backend = create_api_backend("vllm", metadata={"base_url": url, "resilience": fast()})
    try:
        return (await backend.chat("meta-llama/Llama-3.1-8B-Instruct", text)).text
    finally:
        await backend.aclose()


def test_lifecycle_on_a_real_engine(docker: DockerEngine) -> None:
    """Create, start, health, logs, kill the container's process, automatic restart in a new
    container, stop and removal."""

    async def body() -> None:
        server = _server(docker, docker.fake_spec())
        port = server.spec.host_port
        assert port is not None
        await server.start()
        try:
            assert server.state == ServerState.READY
            first = server.handle
            assert first is not None
            attrs = _inspect(docker, first.id)
            assert attrs is not None and attrs["State"]["Running"]
            assert attrs["HostConfig"]["NetworkMode"] == "host"
            assert attrs["Config"]["Labels"][SESSION_LABEL] == docker.session
            assert attrs["Config"]["Labels"]["ipfs_accelerate.managed"] == "true"
            assert attrs["Config"]["Image"] == docker.image
            assert attrs["Name"] == f"/ipfs-accelerate-docker-vllm-{port}"
            assert all(not m["RW"] for m in attrs["Mounts"]) and attrs["Mounts"]
            # the container serves the real protocol on loopback
            assert await probe_http(server.health_url) == 200
            assert await _chat(server.url, "hi") == "Echo: hi"
            assert f"LISTENING {port}" in await server.logs()

            # follow the logs while the container's own process is killed from the host
            lines: list[str] = []

            async def follow() -> None:
                async for line in server.follow_logs():
                    lines.append(line)

            follower = asyncio.create_task(follow())
            deadline = time.monotonic() + 20
            while f"LISTENING {port}" not in lines:
                assert time.monotonic() < deadline, lines
                await asyncio.sleep(0.05)
            os.kill(attrs["State"]["Pid"], signal.SIGKILL)
            # the stream ends by itself once the container has exited
            await asyncio.wait_for(follower, 20)

            deadline = time.monotonic() + 60
            while server.restarts < 1 or not server.is_ready:
                assert time.monotonic() < deadline, list(server.events)
                await asyncio.sleep(0.05)
            second = server.handle
            assert second is not None and second.id != first.id
            assert _inspect(docker, first.id) is None  # the dead container was removed
            kinds = [e.kind for e in server.events]
            assert kinds[kinds.index("exited") :][:4] == ["exited", "restarting", "started",
                                                          "ready"]  # fmt: skip
            assert "exited with status 137" in " ".join(e.detail for e in server.events)
            assert await _chat(server.url, "again") == "Echo: again"
        finally:
            await server.stop()
        assert server.state == ServerState.STOPPED
        assert _inspect(docker, second.id) is None
        assert docker.containers() == []
        assert port_closed(port)

    run(body(), 150)


def test_port_already_taken(docker: DockerEngine) -> None:
    async def body() -> None:
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            server = _server(docker, docker.fake_spec(host_port=port))
            with pytest.raises(ServerStartError, match=f"port {port} on 127.0.0.1 is already"):
                await server.start()
            assert server.state == ServerState.FAILED
            assert docker.containers() == []

    run(body(), 30)


def test_image_that_does_not_exist(docker: DockerEngine) -> None:
    async def body() -> None:
        image = f"ipfs-accelerate-test/absent:{docker.session}"
        spec = ServerSpec(name="absent", image=image, command=("serve",), network_mode="host",
                          labels=docker.labels)  # fmt: skip
        server = _server(docker, spec)
        with pytest.raises(ServerStartError, match=f"image '{image}' is not on the Docker eng"):
            await server.start()
        assert server.state == ServerState.FAILED and server.handle is None
        assert docker.containers() == []

    run(body(), 30)


def test_container_that_cannot_start_is_removed(docker: DockerEngine) -> None:
    """The engine creates the container but cannot start its command: a typed error, and the
    created container does not stay behind."""

    async def body() -> None:
        spec = docker.fake_spec(name="noexec", command=("/nonexistent/server", "{port}"))
        server = _server(docker, spec)
        with pytest.raises(ServerStartError, match="cannot start .*/nonexistent/server"):
            await server.start()
        assert server.state == ServerState.FAILED
        assert docker.containers() == []

    run(body(), 30)


def test_exit_before_ready_shows_logs_without_secrets(docker: DockerEngine) -> None:
    async def body() -> None:
        script = ("import os, sys; print('loading weights'); "
                  "print('token', os.environ['HF_TOKEN']); sys.exit(3)")  # fmt: skip
        spec = docker.fake_spec(
            name="crashy", command=(sys.executable, "-c", script),
            secret_env={"HF_TOKEN": Secret("hf_container_secret")},
        )  # fmt: skip
        server = _server(docker, spec)
        with pytest.raises(ServerStartError) as caught:
            await server.start()
        message = str(caught.value)
        assert "exited with status 3 before becoming ready" in message
        assert "loading weights" in message and "token ***" in message
        assert "hf_container_secret" not in message
        assert docker.containers() == []  # the failed container was removed too

    run(body(), 60)


def test_cleanup_removes_containers_left_by_a_failing_test(docker: DockerEngine) -> None:
    """What the per-test cleanup does after a test that failed with its server running."""

    async def body() -> None:
        spec = docker.fake_spec(name="leaked")
        assert spec.host_port is None
        port = free_port()
        # started and then abandoned, as by a test that failed before stopping its server
        handle = await DockerRuntime(docker.client, pull="never").start(spec, port)
        assert [c.id for c in docker.containers()] == [handle.id]
        assert docker.remove_containers() == [f"ipfs-accelerate-leaked-{port}"]
        assert docker.containers() == [] and _inspect(docker, handle.id) is None

    run(body(), 60)


def test_follow_logs_needs_a_running_server(docker: DockerEngine) -> None:
    async def body() -> None:
        server = _server(docker, docker.fake_spec())
        with pytest.raises(ContainerError, match="is not running"):
            async for _ in server.follow_logs():
                pass
        assert await server.logs() == []

    run(body(), 10)


def _other_address() -> str | None:
    """A non-loopback IPv4 address of this machine (Linux: each interface's, by ioctl)."""
    import fcntl
    import struct

    siocgifaddr = 0x8915
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        for _, name in socket.if_nameindex():
            try:
                packed = fcntl.ioctl(
                    sock.fileno(), siocgifaddr, struct.pack("256s", name.encode()[:15])
                )
            except OSError:  # no IPv4 address on this interface
                continue
            address = socket.inet_ntoa(packed[20:24])
            if not address.startswith("127."):
                return address
    return None


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def test_builder_bind_on_the_host_network_is_loopback_only(docker: DockerEngine) -> None:
    """vllm_server_spec(network_mode="host") tells the server to listen on 127.0.0.1; run that
    address in a real container on the host's network (the protocol fake standing in for
    vLLM's entrypoint) and check that another interface of the machine does not reach it,
    while the published-port form's 0.0.0.0 would."""
    from ipfs_accelerate.servers import vllm_server_spec

    other = _other_address()
    if other is None:
        pytest.skip("this machine has no non-loopback IPv4 address to probe from")

    def fake_with(spec: ServerSpec) -> ServerSpec:
        argv = list(spec.command)
        bind, port = argv[argv.index("--host") + 1], argv[argv.index("--port") + 1]
        return docker.fake_spec(command=(
            sys.executable, "-m", "tests.fakes.serve", "vllm", "--host", bind, "--port", port,
        ))  # fmt: skip

    async def reached_from_outside(spec: ServerSpec) -> bool:
        server = _server(docker, fake_with(spec))
        port = server.spec.host_port
        assert port is not None and "{port}" not in server.describe()
        await server.start()
        try:
            assert await _chat(server.url, "hi") == "Echo: hi"  # loopback always answers
            return await asyncio.to_thread(_answers, other, port)
        finally:
            await server.stop()

    async def body() -> None:
        host = vllm_server_spec("m/m", network_mode="host", gpus=None)
        assert await reached_from_outside(host) is False
        published = vllm_server_spec("m/m", gpus=None)  # its 0.0.0.0, were it on the host's network
        assert await reached_from_outside(published) is True
        assert docker.containers() == []

    run(body(), 90)
