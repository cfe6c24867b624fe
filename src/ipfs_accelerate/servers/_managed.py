"""The lifecycle of one managed inference server (:class:`ManagedServer`): start, wait until
ready, monitor health, restart on failure with a bounded number of restarts and exponential
backoff, stop, clean up.

Readiness and health are plain ``GET`` probes of the server's health route (``/health``, or
``/v2/health/ready`` for OVMS) over a fresh loopback connection; any 2xx is healthy. A server
that does not become ready within ``ready_timeout`` (or exits first) is stopped and raises
:class:`~ipfs_accelerate.errors.ServerStartError` naming its image/command and its last log
lines, with the spec's secrets masked.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import enum
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import urlsplit

from ipfs_accelerate.errors import ConfigurationError, ContainerError, ServerStartError
from ipfs_accelerate.resilience import start_span

from ._docker import DockerRuntime
from ._process import LocalProcessRuntime
from ._runtime import ContainerRuntime, ServerHandle, logger
from ._spec import ServerSpec, free_port

__all__ = ["ManagedServer", "ServerEvent", "ServerState", "probe_http"]


async def probe_http(url: str, timeout: float = 2.0) -> int | None:
    """``GET url`` over a fresh connection; the status code, or None when nothing answered."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    port = parts.port or (443 if parts.scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(timeout):
            tls = parts.scheme == "https" or None
            reader, writer = await asyncio.open_connection(host, port, ssl=tls)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
                "User-Agent: ipfs-accelerate-probe\r\n"
                "Accept: */*\r\nConnection: close\r\n\r\n".encode()
            )
            await writer.drain()
            line = await reader.readline()
    except (OSError, TimeoutError, ValueError):
        return None
    finally:
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
    fields = line.split()
    if len(fields) >= 2 and fields[0].startswith(b"HTTP/") and fields[1].isdigit():
        return int(fields[1])
    return None


# --------------------------------------------------------------------------- lifecycle


class ServerState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    UNHEALTHY = "unhealthy"  # failed probes, not yet restarted
    RESTARTING = "restarting"
    FAILED = "failed"  # gave up restarting; see last_error


@dataclass(frozen=True)
class ServerEvent:
    at: float  # time.monotonic()
    kind: str  # started | ready | unhealthy | exited | restarting | restarted | failed | stopped
    detail: str = ""


class ManagedServer:
    """One inference server kept alive: start, wait until ready, monitor, restart, stop.

    * Readiness: ``GET {url}{health_path}`` every ``probe_interval`` until 2xx, at most
      ``ready_timeout`` seconds; an exit before that, or the timeout, stops the instance and
      raises ServerStartError with its image/command and last ``log_tail`` log lines.
    * Monitoring (a task on the loop that called :meth:`start`): every ``health_interval``
      the instance must still run and answer its health route; an exit, or
      ``unhealthy_after`` failed probes in a row, triggers a restart.
    * Restarts: the old instance is stopped and reaped, then after a backoff of
      ``restart_backoff * 2**k`` (capped at ``max_restart_backoff``; ``k`` = restarts within
      ``restart_window`` seconds) a new one starts on the same port and must become ready.
      After ``max_restarts`` restarts within the window the server is FAILED and stays down
      (``last_error`` says why).
    * ``on_ready`` callbacks run after every (re)start, e.g. to reload LoRA adapters.
    """

    def __init__(
        self,
        spec: ServerSpec,
        runtime: ContainerRuntime | None = None,
        *,
        ready_timeout: float = 900.0,
        probe_interval: float = 0.5,
        health_interval: float = 10.0,
        health_timeout: float = 5.0,
        unhealthy_after: int = 3,
        max_restarts: int = 5,
        restart_window: float = 600.0,
        restart_backoff: float = 2.0,
        max_restart_backoff: float = 60.0,
        stop_timeout: float = 10.0,
        log_tail: int = 20,
    ) -> None:
        where = f"managed server {spec.name!r}"
        for name, value in (("ready_timeout", ready_timeout), ("probe_interval", probe_interval),
                            ("health_interval", health_interval),
                            ("health_timeout", health_timeout)):  # fmt: skip
            if not (isinstance(value, int | float) and value > 0):
                raise ConfigurationError(f"{where}: {name} must be > 0, got {value!r}")
        if not (isinstance(unhealthy_after, int) and unhealthy_after >= 1):
            raise ConfigurationError(
                f"{where}: unhealthy_after must be >= 1, got {unhealthy_after!r}"
            )
        if not (isinstance(max_restarts, int) and max_restarts >= 0):
            raise ConfigurationError(f"{where}: max_restarts must be >= 0, got {max_restarts!r}")
        if restart_backoff < 0 or max_restart_backoff < 0:
            raise ConfigurationError(f"{where}: restart backoffs must be >= 0")
        if runtime is None:
            runtime = DockerRuntime() if spec.image else LocalProcessRuntime()
        if isinstance(runtime, DockerRuntime) and not spec.image:
            raise ConfigurationError(f"{where}: the Docker runtime needs an image")
        if spec.host_port is None:
            spec = replace(spec, host_port=free_port(spec.host))
        self.spec = spec
        self.runtime = runtime
        self.ready_timeout = float(ready_timeout)
        self.probe_interval = float(probe_interval)
        self.health_interval = float(health_interval)
        self.health_timeout = float(health_timeout)
        self.unhealthy_after = unhealthy_after
        self.max_restarts = max_restarts
        self.restart_window = float(restart_window)
        self.restart_backoff = float(restart_backoff)
        self.max_restart_backoff = float(max_restart_backoff)
        self.stop_timeout = float(stop_timeout)
        self.log_tail = log_tail
        self.state = ServerState.STOPPED
        self.restarts = 0
        self.last_error: ContainerError | None = None
        self.events: collections.deque[ServerEvent] = collections.deque(maxlen=256)
        self._on_ready: list[Callable[[], Awaitable[None]]] = []
        self._handle: ServerHandle | None = None
        self._monitor: asyncio.Task[None] | None = None
        self._restart_times: collections.deque[float] = collections.deque()
        self._lock: asyncio.Lock | None = None
        self._ready_event: asyncio.Event | None = None

    def __repr__(self) -> str:
        return f"<ManagedServer {self.spec.name} {self.runtime.kind} {self.url} {self.state.value}>"

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.spec.host_port}"

    @property
    def health_url(self) -> str:
        return self.url + self.spec.health_path

    @property
    def handle(self) -> ServerHandle | None:
        return self._handle

    @property
    def is_ready(self) -> bool:
        return self.state == ServerState.READY

    def describe(self) -> str:
        return self.spec.describe(self.spec.host_port)

    async def logs(self, tail: int = 20) -> list[str]:
        """The last ``tail`` lines of the running instance's output (empty when none runs)."""
        handle = self._handle
        if handle is None:
            return []
        return [_scrub(line, self.spec) for line in await self.runtime.logs(handle, tail)]

    async def follow_logs(self) -> AsyncIterator[str]:
        """The current instance's output line by line as it is written (from its start, as
        far as the runtime holds it); ends when that instance exits. Secrets are masked.
        ContainerError when no instance runs."""
        handle = self._handle
        if handle is None:
            raise ContainerError(f"managed server {self.spec.name!r} is not running")
        lines = self.runtime.follow_logs(handle)
        try:
            async for line in lines:
                yield _scrub(line, self.spec)
        finally:
            close = getattr(lines, "aclose", None)
            if close is not None:
                await close()

    def on_ready(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``await callback()`` after every successful (re)start."""
        self._on_ready.append(callback)

    def _event(self, kind: str, detail: str = "") -> None:
        self.events.append(ServerEvent(time.monotonic(), kind, detail))
        alarming = kind in ("exited", "unhealthy", "failed", "restarting")
        log = logger.warning if alarming else logger.info
        log("managed server %s: %s %s", self.spec.name, kind, detail)

    # ------------------------------------------------------------------ start / stop

    async def start(self) -> None:
        """Start the server and wait until it is ready (no-op when it already runs)."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self.state in (ServerState.READY, ServerState.UNHEALTHY, ServerState.RESTARTING):
                return
            self.state = ServerState.STARTING
            self.last_error = None
            self._restart_times.clear()
            try:
                await self._launch()
            except BaseException as exc:
                self.state = ServerState.STOPPED
                if isinstance(exc, ContainerError):
                    self.state, self.last_error = ServerState.FAILED, exc
                raise
            self._set_ready()
            self._monitor = asyncio.create_task(self._watch(), name=f"monitor-{self.spec.name}")
        await self._run_on_ready()

    async def stop(self) -> None:
        """Stop monitoring, stop the instance and release it (idempotent)."""
        monitor, self._monitor = self._monitor, None
        if monitor is not None and monitor is not asyncio.current_task():
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await monitor
        handle, self._handle = self._handle, None
        if handle is not None:
            await self.runtime.stop(handle, self.stop_timeout)
        if self.state != ServerState.STOPPED:
            self._event("stopped")
        self.state = ServerState.STOPPED
        if self._ready_event is not None:
            self._ready_event.clear()

    async def __aenter__(self) -> ManagedServer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def wait_ready(self, timeout: float) -> bool:
        """Wait up to ``timeout`` s for the server to be READY (e.g. during a restart)."""
        if self.state == ServerState.READY:
            return True
        if self.state in (ServerState.STOPPED, ServerState.FAILED):
            return False
        if self._ready_event is None:
            self._ready_event = asyncio.Event()
        try:
            async with asyncio.timeout(timeout):
                await self._ready_event.wait()
        except TimeoutError:
            return False
        return self.is_ready

    def _set_ready(self) -> None:
        self.state = ServerState.READY
        if self._ready_event is None:
            self._ready_event = asyncio.Event()
        self._ready_event.set()

    async def _launch(self) -> None:
        """Start one instance (guarded against cancellation leaks) and wait until it is ready."""
        attributes = {"server": self.spec.name, "runtime": self.runtime.kind, "url": self.url,
                      "restarts": self.restarts}  # fmt: skip
        with start_span("ipfs_accelerate.server.start", attributes):
            await self._launch_instance()

    async def _launch_instance(self) -> None:
        port = self.spec.host_port
        assert port is not None
        task = asyncio.ensure_future(self.runtime.start(self.spec, port))
        try:
            handle = await asyncio.shield(task)
        except asyncio.CancelledError:
            # the instance may come up after we were cancelled: it must not be left running
            try:
                orphan = await task
            except BaseException:
                raise asyncio.CancelledError from None
            await self.runtime.stop(orphan, self.stop_timeout)
            raise
        self._handle = handle
        self._event("started", f"{self.describe()} at {self.url}")
        try:
            await self._wait_ready(handle)
        except BaseException:
            self._handle = None
            await asyncio.shield(self.runtime.stop(handle, self.stop_timeout))
            raise
        self._event("ready", f"after {time.monotonic() - handle.started_at:.2f} s")

    async def _wait_ready(self, handle: ServerHandle) -> None:
        deadline = time.monotonic() + self.ready_timeout
        last_status: int | None = None
        while True:
            code = await self.runtime.exit_status(handle)
            if code is not None:
                raise ServerStartError(
                    f"{self.describe()} exited with status {code} before becoming ready at "
                    f"{self.health_url}" + await self._log_excerpt(handle)
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = f"HTTP {last_status}" if last_status is not None else "no answer"
                raise ServerStartError(
                    f"{self.describe()} did not become ready at {self.health_url} within "
                    f"{self.ready_timeout:g} s (last probe: {seen})"
                    + await self._log_excerpt(handle)
                )
            probe_timeout = min(self.health_timeout, max(remaining, 0.05))
            last_status = await probe_http(self.health_url, probe_timeout)
            if last_status is not None and 200 <= last_status < 300:
                return
            await asyncio.sleep(min(self.probe_interval, max(deadline - time.monotonic(), 0.0)))

    async def _log_excerpt(self, handle: ServerHandle) -> str:
        lines = await self.runtime.logs(handle, self.log_tail)
        if not lines:
            return "; no log output"
        scrubbed = "\n".join(_scrub(line, self.spec) for line in lines)
        return f"; last {len(lines)} log line(s):\n" + scrubbed

    async def _run_on_ready(self) -> None:
        for callback in list(self._on_ready):
            try:
                await callback()
            except Exception as exc:  # a failing hook must not take the server down
                logger.warning("managed server %s: on_ready hook failed: %s", self.spec.name, exc)

    # ------------------------------------------------------------------ monitoring

    async def _watch(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(self.health_interval)
            handle = self._handle
            if handle is None:
                return
            try:
                code = await self.runtime.exit_status(handle)
            except ContainerError as exc:  # the runtime cannot tell (a Docker hiccup): probe anyway
                logger.warning("managed server %s: %s", self.spec.name, exc)
                code = None
            if code is None:
                status = await probe_http(self.health_url, self.health_timeout)
                if status is not None and 200 <= status < 300:
                    if self.state == ServerState.UNHEALTHY:
                        self._set_ready()
                    failures = 0
                    continue
                failures += 1
                seen = status or "no answer"
                self._event("unhealthy", f"probe {failures}/{self.unhealthy_after}: {seen}")
                if failures < self.unhealthy_after:
                    self.state = ServerState.UNHEALTHY
                    if self._ready_event is not None:
                        self._ready_event.clear()
                    continue
                reason = f"failed {failures} health checks in a row"
            else:
                reason = f"exited with status {code}"
                self._event("exited", reason)
            failures = 0
            try:
                restarted = await self._restart(handle, reason)
            except Exception as exc:  # the runtime failed us while restarting: stay down, say why
                self.state = ServerState.FAILED
                self.last_error = ContainerError(
                    f"{self.describe()}: restart after '{reason}' failed: "
                    f"{type(exc).__name__}: {exc}"
                )
                self._event("failed", str(self.last_error))
                return
            if not restarted:
                return

    async def _restart(self, old: ServerHandle, reason: str) -> bool:
        if self._ready_event is not None:
            self._ready_event.clear()
        excerpt = await self._log_excerpt(old)
        self._handle = None
        await self.runtime.stop(old, self.stop_timeout)
        while True:
            now = time.monotonic()
            while self._restart_times and now - self._restart_times[0] > self.restart_window:
                self._restart_times.popleft()
            if len(self._restart_times) >= self.max_restarts:
                self.state = ServerState.FAILED
                self.last_error = ContainerError(
                    f"{self.describe()}: {reason}; gave up after "
                    f"{len(self._restart_times)} restart(s) "
                    f"within {self.restart_window:g} s" + excerpt
                )
                self._event("failed", reason)
                return False
            backoff = self.restart_backoff * 2 ** len(self._restart_times)
            delay = min(backoff, self.max_restart_backoff)
            self.state = ServerState.RESTARTING
            self._restart_times.append(now)
            self._event("restarting", f"{reason}; in {delay:.3g} s")
            await asyncio.sleep(delay)
            try:
                await self._launch()
            except ContainerError as exc:
                self.last_error = exc
                reason = str(exc).split("\n", 1)[0]
                excerpt = ""
                continue
            self.restarts += 1
            self._set_ready()
            self._event("restarted", f"restart #{self.restarts}")
            await self._run_on_ready()
            return True

    def stats(self) -> dict[str, Any]:
        handle = self._handle
        up = time.monotonic() - handle.started_at if handle is not None and self.is_ready else 0.0
        return {
            "name": self.spec.name,
            "runtime": self.runtime.kind,
            "url": self.url,
            "state": self.state.value,
            "restarts": self.restarts,
            "uptime_s": up,
            "last_error": str(self.last_error).split("\n", 1)[0] if self.last_error else None,
        }


def _scrub(line: str, spec: ServerSpec) -> str:
    for secret in spec.secret_env.values():
        value = secret.reveal()
        if value and value in line:
            line = line.replace(value, "***")
    return line
