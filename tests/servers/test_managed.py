"""The ManagedServer lifecycle on the local-process runtime, against real server processes (a
protocol fake run as its own process): start, readiness, crash and restart, bounded restarts,
stop leaving nothing behind."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.errors import ContainerError, ServerStartError
from ipfs_accelerate.servers import (
    LocalProcessRuntime,
    ManagedServer,
    ServerSpec,
    ServerState,
    free_port,
    probe_http,
)

from ..api_backends.conftest import fast, run
from .conftest import ENV, REPO, fake_server_spec, group_members, port_closed, processes_with

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------- local processes, real servers


def test_local_process_start_kill_restart_stop() -> None:
    async def body() -> None:
        server = ManagedServer(fake_server_spec(), LocalProcessRuntime(), ready_timeout=30,
                               probe_interval=0.05, health_interval=0.2, health_timeout=1.0,
                               restart_backoff=0.1)  # fmt: skip
        runtime = server.runtime
        assert isinstance(runtime, LocalProcessRuntime)
        await server.start()
        try:
            assert server.state == ServerState.READY
            assert await probe_http(server.health_url) == 200
            first = server.handle
            assert first is not None
            first_pid = runtime.pid(first)
            # the endpoint answers the real protocol
            backend = create_api_backend(
                "vllm", metadata={"base_url": server.url, "resilience": fast()}
            )
            try:
                assert (
                    await backend.chat("meta-llama/Llama-3.1-8B-Instruct", "hi")
                ).text == "Echo: hi"
            finally:
                await backend.aclose()

            os.kill(first_pid, signal.SIGKILL)
            killed_at = time.monotonic()
            while not (server.restarts == 1 and server.is_ready):
                assert time.monotonic() - killed_at < 20, (
                    f"not restarted: {server.state}, events {list(server.events)}"
                )
                await asyncio.sleep(0.05)
            took = time.monotonic() - killed_at
            # bound: one health interval to notice, the backoff, then the new process' start-up
            assert took < 0.2 + 0.1 + 10
            kinds = [e.kind for e in server.events]
            assert kinds[kinds.index("exited") :][:4] == [
                "exited",
                "restarting",
                "started",
                "ready",
            ]
            second = server.handle
            assert second is not None and runtime.pid(second) != first_pid
            assert not Path(f"/proc/{first_pid}").exists()  # reaped, not a zombie
            assert await probe_http(server.health_url) == 200
            assert (
                server.url == f"http://127.0.0.1:{server.spec.host_port}"
            )  # same address after restart
        finally:
            await server.stop()
        pid = runtime.pid(second)
        assert server.state == ServerState.STOPPED
        assert not Path(f"/proc/{pid}").exists()
        assert group_members(pid) == [] and group_members(first_pid) == []
        assert port_closed(server.spec.host_port or 0)
        await server.stop()  # idempotent

    run(body(), 60)


def test_server_that_never_becomes_ready() -> None:
    marker = "--seed=424242"

    async def body() -> None:
        spec = fake_server_spec("vllm", "--unready", marker)
        server = ManagedServer(spec, LocalProcessRuntime(), ready_timeout=2.0, probe_interval=0.1)
        with pytest.raises(ServerStartError) as info:
            await server.start()
        message = str(info.value)
        assert "tests.fakes.serve vllm" in message and "did not become ready" in message
        assert "within 2 s" in message and "HTTP 503" in message
        assert "model weights not loaded yet" in message  # its last log lines
        assert server.state == ServerState.FAILED and server.last_error is info.value
        assert processes_with(marker) == []  # stopped, nothing left behind
        assert port_closed(server.spec.host_port or 0)

    run(body(), 30)


def test_process_that_exits_before_ready() -> None:
    async def body() -> None:
        spec = ServerSpec(
            name="crashy",
            command=(
                sys.executable,
                "-c",
                "import sys; print('loading'); "
                "print('fatal: CUDA out of memory', flush=True); sys.exit(3)",
            ),
        )
        server = ManagedServer(spec, ready_timeout=20, probe_interval=0.05)
        started = time.monotonic()
        with pytest.raises(ServerStartError, match="exited with status 3") as info:
            await server.start()
        assert time.monotonic() - started < 10  # noticed at once, not after the ready timeout
        assert "fatal: CUDA out of memory" in str(info.value)  # its last log lines
        assert sys.executable in str(info.value)  # names the command

    run(body(), 30)


def test_restarts_are_bounded(tmp_path: Path) -> None:
    """A server that cannot come back is restarted at most max_restarts times, then FAILED."""
    marker_file = tmp_path / "started-once"
    script = (
        "import os, runpy, sys\n"
        f"marker = {str(marker_file)!r}\n"
        "if os.path.exists(marker):\n"
        "    print('refusing to start twice', flush=True); sys.exit(7)\n"
        "open(marker, 'w').close()\n"
        "sys.argv = ['serve', 'vllm', '--port', sys.argv[1]]\n"
        "runpy.run_module('tests.fakes.serve', run_name='__main__')\n"
    )

    async def body() -> None:
        spec = ServerSpec(
            name="once", command=(sys.executable, "-c", script, "{port}"), cwd=str(REPO), env=ENV
        )
        server = ManagedServer(spec, ready_timeout=20, probe_interval=0.05, health_interval=0.1,
                               max_restarts=2, restart_backoff=0.05, restart_window=60)  # fmt: skip
        await server.start()
        try:
            handle = server.handle
            assert handle is not None and isinstance(server.runtime, LocalProcessRuntime)
            os.kill(server.runtime.pid(handle), signal.SIGKILL)
            deadline = time.monotonic() + 20
            while server.state != ServerState.FAILED:
                assert time.monotonic() < deadline, list(server.events)
                await asyncio.sleep(0.05)
            assert server.restarts == 0
            assert [e.kind for e in server.events].count("restarting") == 2
            assert isinstance(server.last_error, ContainerError)
            assert "gave up after 2 restart(s)" in str(server.last_error)
            gaps = [e.at for e in server.events if e.kind == "restarting"]
            assert gaps[1] - gaps[0] >= 0.1  # the backoff doubled: 0.05 s, then 0.1 s
        finally:
            await server.stop()
        assert server.state == ServerState.STOPPED

    run(body(), 40)


def test_local_process_follow_logs_and_taken_port() -> None:
    """Following a process' output ends when it exits; a port that something already listens
    on is refused before the process starts (the probe would reach the port's holder)."""

    async def body() -> None:
        script = (
            "import sys, time\n"
            "for i in range(300): print('line', i)\n"
            "sys.stdout.flush(); time.sleep(0.3); print('last'); sys.exit(4)\n"
        )
        runtime = LocalProcessRuntime(log_lines=50)
        spec = ServerSpec(name="chatty", command=(sys.executable, "-u", "-c", script))
        handle = await runtime.start(spec, free_port())
        try:
            lines = [line async for line in runtime.follow_logs(handle)]
        finally:
            await runtime.stop(handle)
        # lines the ring buffer dropped before the reader caught up are skipped, never repeated
        assert lines[-1] == "last" and lines[-2] == "line 299"
        numbers = [int(line.split()[1]) for line in lines[:-1]]
        assert numbers == sorted(set(numbers)) and len(lines) >= 50

        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            server = ManagedServer(fake_server_spec(), LocalProcessRuntime(), ready_timeout=5)
            server.spec = replace(server.spec, host_port=port)
            with pytest.raises(ServerStartError, match=f"port {port} on 127.0.0.1 is already in"):
                await server.start()
            assert server.state == ServerState.FAILED

    run(body(), 30)
