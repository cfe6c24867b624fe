"""Managed inference servers: where they run (:class:`ContainerRuntime`) and their lifecycle
(:class:`ManagedServer`: start, wait until ready, monitor health, restart on failure with a
bounded number of restarts and exponential backoff, stop, clean up).

Two runtimes:

* :class:`DockerRuntime` runs the official images through the ``docker`` SDK (imported on
  first use): image, published port on 127.0.0.1, GPU device requests, volumes, environment,
  shared memory / IPC mode, and the server arguments the image expects. The exact arguments it
  hands to ``client.containers.run`` come from :meth:`DockerRuntime.run_kwargs`.
* :class:`LocalProcessRuntime` runs the same kind of server as a subprocess command (its own
  process group, so stopping it leaves no orphans; output kept in a ring buffer for errors).

Spec builders for the official servers: :func:`vllm_server_spec` (``vllm/vllm-openai``),
:func:`tgi_server_spec` (``text-generation-inference --model-id``), :func:`tei_server_spec`
(``text-embeddings-inference --model-id``) and :func:`ovms_server_spec`
(``openvino/model_server --model_name --model_path --rest_port``). Each builds the docker form
by default and the bare-command form with ``runtime="process"``.

Readiness and health are plain ``GET`` probes of the server's health route (``/health``, or
``/v2/health/ready`` for OVMS) over a fresh loopback connection; any 2xx is healthy. A server
that does not become ready within ``ready_timeout`` (or exits first) is stopped and raises
:class:`~ipfs_accelerate.errors.ServerStartError` naming its image/command and its last log
lines. Secrets meant for the server (``HF_TOKEN``, ``VLLM_API_KEY``) travel in
``ServerSpec.secret_env`` and never show in reprs, logs or errors.
"""

from __future__ import annotations

import abc
import asyncio
import collections
import contextlib
import enum
import logging
import os
import shlex
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

from ipfs_accelerate.errors import ConfigurationError, ContainerError, ServerStartError
from ipfs_accelerate.resilience import Secret

from ._observability import start_span

__all__ = [
    "ContainerRuntime",
    "DockerRuntime",
    "LocalProcessRuntime",
    "ManagedServer",
    "ServerHandle",
    "ServerSpec",
    "ServerState",
    "free_port",
    "ovms_server_spec",
    "probe_http",
    "tei_server_spec",
    "tgi_server_spec",
    "vllm_server_spec",
]

logger = logging.getLogger("ipfs_accelerate.api_backends.containers")

PORT_PLACEHOLDER = "{port}"
MANAGED_LABEL = "ipfs_accelerate.managed"


# --------------------------------------------------------------------------- specs


@dataclass(frozen=True)
class ServerSpec:
    """What to run and how to reach it.

    ``command``: for Docker, the arguments after the image (the image's entrypoint runs
    them); for a local process, the whole argv. ``{port}`` in any argument is replaced by the
    port the server must listen on: ``port`` inside a container, the host port for a process.
    ``volumes``: host path -> container path (``"path:ro"`` mounts read-only).
    ``host_port`` is the port on ``host`` (127.0.0.1) the server is reached at; None picks a
    free one when the :class:`ManagedServer` is created, so its URL is known before start.
    ``gpus``: None (no GPU), ``"all"``, a count, or a list of device ids (Docker device
    requests); ``devices``: host device nodes passed through (``/dev/dri`` for Intel GPUs).
    """

    name: str
    command: tuple[str, ...]
    image: str | None = None
    port: int = 8000
    host_port: int | None = None
    host: str = "127.0.0.1"
    health_path: str = "/health"
    env: Mapping[str, str] = field(default_factory=dict)
    secret_env: Mapping[str, Secret] = field(default_factory=dict, repr=False)
    volumes: Mapping[str, str] = field(default_factory=dict)
    gpus: int | str | tuple[str, ...] | None = None
    devices: tuple[str, ...] = ()
    shm_size: str | None = None
    ipc_mode: str | None = None
    cwd: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigurationError(f"server spec: name must be a non-empty string, got {self.name!r}")
        if isinstance(self.command, str):
            raise ConfigurationError(
                f"server spec {self.name!r}: command must be a sequence of arguments, got the string {self.command!r}"
            )
        object.__setattr__(self, "command", tuple(str(a) for a in self.command))
        if self.image is None and not self.command:
            raise ConfigurationError(f"server spec {self.name!r}: a local process needs a command")
        if not self.health_path.startswith("/"):
            raise ConfigurationError(f"server spec {self.name!r}: health_path must start with '/', got {self.health_path!r}")
        for key, value in self.secret_env.items():
            if not isinstance(value, Secret):
                raise ConfigurationError(f"server spec {self.name!r}: secret_env[{key!r}] must be a Secret")

    def describe(self) -> str:
        """The image and arguments (docker) or the command line (process), without secrets."""
        args = " ".join(shlex.quote(a) for a in self.command)
        if self.image:
            return f"image {self.image}" + (f" {args}" if args else "")
        return f"command {args}"

    def args_for(self, port: int) -> list[str]:
        return [a.replace(PORT_PLACEHOLDER, str(port)) for a in self.command]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class ServerHandle:
    """One started instance (a container or a process) of a spec."""

    spec: ServerSpec
    id: str
    host_port: int
    native: Any = field(repr=False)
    started_at: float = field(default_factory=time.monotonic)

    @property
    def url(self) -> str:
        return f"http://{self.spec.host}:{self.host_port}"


# --------------------------------------------------------------------------- runtimes


class ContainerRuntime(abc.ABC):
    """Starts, inspects and stops server instances. Implementations are safe to call from
    any event loop; blocking client calls run in worker threads."""

    kind: ClassVar[str] = "runtime"

    @abc.abstractmethod
    async def start(self, spec: ServerSpec, host_port: int) -> ServerHandle:
        """Start one instance listening (as seen from the host) on ``host_port``."""

    @abc.abstractmethod
    async def exit_status(self, handle: ServerHandle) -> int | None:
        """None while the instance runs; its exit code (or -1 if unknown) once it stopped."""

    @abc.abstractmethod
    async def logs(self, handle: ServerHandle, tail: int = 20) -> list[str]:
        """The last ``tail`` lines of the instance's output."""

    @abc.abstractmethod
    async def stop(self, handle: ServerHandle, timeout: float = 10.0) -> None:
        """Stop the instance and release everything it held (idempotent)."""


class LocalProcessRuntime(ContainerRuntime):
    """Servers as local subprocesses.

    Each process gets its own session (process group), stdout and stderr merged into a ring
    buffer of the last ``log_lines`` lines read by a daemon thread. :meth:`stop` sends SIGTERM
    to the whole group, waits up to ``timeout``, then SIGKILLs what is left and reaps the
    process, so no child survives it.
    """

    kind: ClassVar[str] = "process"

    def __init__(self, *, log_lines: int = 200, inherit_env: bool = True) -> None:
        self.log_lines = log_lines
        self.inherit_env = inherit_env

    async def start(self, spec: ServerSpec, host_port: int) -> ServerHandle:
        argv = spec.args_for(host_port)
        env = dict(os.environ) if self.inherit_env else {}
        env.update(spec.env)
        env.update({k: v.reveal() for k, v in spec.secret_env.items()})
        try:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=spec.cwd,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise ServerStartError(f"cannot start {spec.describe()}: {exc}") from exc
        lines: collections.deque[str] = collections.deque(maxlen=self.log_lines)
        reader = threading.Thread(target=_pump, args=(proc, lines), name=f"logs-{spec.name}-{proc.pid}", daemon=True)
        reader.start()
        logger.info("started %s (pid %d, port %d)", spec.describe(), proc.pid, host_port)
        return ServerHandle(spec, str(proc.pid), host_port, _Process(proc, lines, reader))

    async def exit_status(self, handle: ServerHandle) -> int | None:
        code: int | None = handle.native.proc.poll()
        return code

    async def logs(self, handle: ServerHandle, tail: int = 20) -> list[str]:
        lines = list(handle.native.lines)
        return lines[-tail:] if tail else lines

    async def stop(self, handle: ServerHandle, timeout: float = 10.0) -> None:
        native: _Process = handle.native
        if native.stopped:
            return
        await asyncio.to_thread(native.terminate, timeout)

    def pid(self, handle: ServerHandle) -> int:
        pid: int = handle.native.proc.pid
        return pid


class _Process:
    __slots__ = ("_lock", "lines", "proc", "reader", "stopped")

    def __init__(self, proc: subprocess.Popen[bytes], lines: collections.deque[str], reader: threading.Thread) -> None:
        self.proc = proc
        self.lines = lines
        self.reader = reader
        self.stopped = False
        self._lock = threading.Lock()

    def terminate(self, timeout: float) -> None:
        with self._lock:
            if self.stopped:
                return
            pgid = self.proc.pid  # start_new_session: the group id is the leader's pid
            _signal_group(pgid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                _signal_group(pgid, signal.SIGKILL)
                self.proc.wait()
            # children that ignored SIGTERM (or outlived the leader) must not survive it
            _signal_group(pgid, signal.SIGKILL)
            self.reader.join(timeout=2.0)
            if self.proc.stdout is not None:
                self.proc.stdout.close()
            self.stopped = True


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _pump(proc: subprocess.Popen[bytes], lines: collections.deque[str]) -> None:
    stream = proc.stdout
    if stream is None:  # pragma: no cover - always piped
        return
    try:
        for raw in iter(stream.readline, b""):
            lines.append(raw.decode("utf-8", "replace").rstrip())
    except (OSError, ValueError):  # closed under us during stop
        pass


class DockerRuntime(ContainerRuntime):
    """Servers as Docker containers through the ``docker`` SDK.

    ``client``: a ``docker.DockerClient`` (default: ``docker.from_env()`` on first use, which
    honours ``DOCKER_HOST``). Containers are named ``{name_prefix}{spec.name}-{host_port}``,
    labelled ``ipfs_accelerate.managed=true``, publish ``spec.port`` on ``spec.host`` only, and
    are kept after they exit (for their logs) until :meth:`stop` removes them.
    """

    kind: ClassVar[str] = "docker"

    def __init__(self, client: Any = None, *, name_prefix: str = "ipfs-accelerate-", stop_timeout: int = 10) -> None:
        self._client = client
        self.name_prefix = name_prefix
        self.stop_timeout = stop_timeout
        self._lock = threading.Lock()

    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    try:
                        import docker
                    except ImportError as exc:
                        raise ConfigurationError(
                            "the Docker runtime needs the docker SDK: pip install 'ipfs-accelerate[docker]'"
                        ) from exc
                    try:
                        self._client = docker.from_env()
                    except Exception as exc:  # docker.errors.DockerException and OS errors alike
                        raise ContainerError(f"cannot reach the Docker Engine: {exc}") from exc
        return self._client

    def run_kwargs(self, spec: ServerSpec, host_port: int) -> dict[str, Any]:
        """The exact keyword arguments handed to ``client.containers.run`` for ``spec``."""
        if not spec.image:
            raise ConfigurationError(f"server spec {spec.name!r}: the Docker runtime needs an image")
        from docker.types import DeviceRequest

        kwargs: dict[str, Any] = {
            "image": spec.image,
            "command": spec.args_for(spec.port),
            "detach": True,
            "name": f"{self.name_prefix}{spec.name}-{host_port}",
            "ports": {f"{spec.port}/tcp": (spec.host, host_port)},
            "environment": {**spec.env, **{k: v.reveal() for k, v in spec.secret_env.items()}},
            "volumes": {os.path.expanduser(src): _bind(dst) for src, dst in spec.volumes.items()},
            "labels": {MANAGED_LABEL: "true", "ipfs_accelerate.server": spec.name, **spec.labels},
            "auto_remove": False,
        }
        gpus = spec.gpus
        if gpus is not None:
            if gpus == "all" or gpus == -1:
                request = DeviceRequest(count=-1, capabilities=[["gpu"]])
            elif isinstance(gpus, int):
                if gpus < 1:
                    raise ConfigurationError(f"server spec {spec.name!r}: gpus must be >= 1, 'all' or device ids, got {gpus!r}")
                request = DeviceRequest(count=gpus, capabilities=[["gpu"]])
            elif isinstance(gpus, tuple | list) and gpus:
                request = DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])
            else:
                raise ConfigurationError(f"server spec {spec.name!r}: gpus must be 'all', a count or device ids, got {gpus!r}")
            kwargs["device_requests"] = [request]
        if spec.devices:
            kwargs["devices"] = [f"{d}:{d}:rwm" for d in spec.devices]
        if spec.shm_size:
            kwargs["shm_size"] = spec.shm_size
        if spec.ipc_mode:
            kwargs["ipc_mode"] = spec.ipc_mode
        return kwargs

    async def start(self, spec: ServerSpec, host_port: int) -> ServerHandle:
        kwargs = self.run_kwargs(spec, host_port)
        client = self.client()

        def run() -> Any:
            try:
                return client.containers.run(**kwargs)
            except Exception as exc:  # docker.errors.ImageNotFound, APIError, ...
                raise ServerStartError(f"cannot start {spec.describe()}: {_docker_message(exc)}") from exc

        container = await asyncio.to_thread(run)
        logger.info("started container %s (%s, port %d)", getattr(container, "name", "?"), spec.describe(), host_port)
        return ServerHandle(spec, str(container.id), host_port, container)

    async def exit_status(self, handle: ServerHandle) -> int | None:
        container = handle.native

        def inspect() -> int | None:
            try:
                container.reload()
            except Exception as exc:
                if _is_not_found(exc):
                    return -1  # removed behind our back: it is certainly not serving
                raise ContainerError(f"cannot inspect container {handle.id[:12]}: {_docker_message(exc)}") from exc
            if container.status in ("created", "running", "restarting"):
                return None
            state = (getattr(container, "attrs", None) or {}).get("State") or {}
            code = state.get("ExitCode")
            return int(code) if isinstance(code, int) else -1

        return await asyncio.to_thread(inspect)

    async def logs(self, handle: ServerHandle, tail: int = 20) -> list[str]:
        container = handle.native

        def read() -> list[str]:
            try:
                data = container.logs(tail=tail)
            except Exception as exc:
                return [f"(logs unavailable: {_docker_message(exc)})"]
            text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
            return text.splitlines()[-tail:]

        return await asyncio.to_thread(read)

    async def stop(self, handle: ServerHandle, timeout: float = 10.0) -> None:
        container = handle.native

        def stop() -> None:
            actions: tuple[Callable[[], Any], ...] = (
                lambda: container.stop(timeout=int(max(1, timeout))),
                lambda: container.remove(force=True),
            )
            for action in actions:
                try:
                    action()
                except Exception as exc:
                    if not _is_not_found(exc):
                        logger.warning("container %s: %s", handle.id[:12], _docker_message(exc))

        await asyncio.to_thread(stop)


def _bind(target: str) -> dict[str, str]:
    # "path:ro" mounts read-only; anything else read-write
    if target.endswith(":ro") or target.endswith(":rw"):
        return {"bind": target[:-3], "mode": target[-2:]}
    return {"bind": target, "mode": "rw"}


def _is_not_found(exc: BaseException) -> bool:
    return type(exc).__name__ == "NotFound" or getattr(getattr(exc, "response", None), "status_code", None) == 404


def _docker_message(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return f"{type(exc).__name__}: {explanation or exc}"


# --------------------------------------------------------------------------- probes


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
            reader, writer = await asyncio.open_connection(host, port, ssl=parts.scheme == "https" or None)
            writer.write(
                f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: ipfs-accelerate-probe\r\n"
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
        for name, value in (("ready_timeout", ready_timeout), ("probe_interval", probe_interval),
                            ("health_interval", health_interval), ("health_timeout", health_timeout)):  # fmt: skip
            if not (isinstance(value, int | float) and value > 0):
                raise ConfigurationError(f"managed server {spec.name!r}: {name} must be > 0, got {value!r}")
        if not (isinstance(unhealthy_after, int) and unhealthy_after >= 1):
            raise ConfigurationError(f"managed server {spec.name!r}: unhealthy_after must be >= 1, got {unhealthy_after!r}")
        if not (isinstance(max_restarts, int) and max_restarts >= 0):
            raise ConfigurationError(f"managed server {spec.name!r}: max_restarts must be >= 0, got {max_restarts!r}")
        if restart_backoff < 0 or max_restart_backoff < 0:
            raise ConfigurationError(f"managed server {spec.name!r}: restart backoffs must be >= 0")
        if runtime is None:
            runtime = DockerRuntime() if spec.image else LocalProcessRuntime()
        if isinstance(runtime, DockerRuntime) and not spec.image:
            raise ConfigurationError(f"managed server {spec.name!r}: the Docker runtime needs an image")
        self.spec = spec if spec.host_port is not None else replace(spec, host_port=free_port(spec.host))
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
        return self.spec.describe()

    def on_ready(self, callback: Callable[[], Awaitable[None]]) -> None:
        """Run ``await callback()`` after every successful (re)start."""
        self._on_ready.append(callback)

    def _event(self, kind: str, detail: str = "") -> None:
        self.events.append(ServerEvent(time.monotonic(), kind, detail))
        log = logger.warning if kind in ("exited", "unhealthy", "failed", "restarting") else logger.info
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
                self.state = ServerState.FAILED if isinstance(exc, ContainerError) else ServerState.STOPPED
                if isinstance(exc, ContainerError):
                    self.last_error = exc
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
        attributes = {"server": self.spec.name, "runtime": self.runtime.kind, "url": self.url, "restarts": self.restarts}
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
                    f"{self.describe()} exited with status {code} before becoming ready at {self.health_url}"
                    + await self._log_excerpt(handle)
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                seen = f"HTTP {last_status}" if last_status is not None else "no answer"
                raise ServerStartError(
                    f"{self.describe()} did not become ready at {self.health_url} within "
                    f"{self.ready_timeout:g} s (last probe: {seen})" + await self._log_excerpt(handle)
                )
            last_status = await probe_http(self.health_url, min(self.health_timeout, max(remaining, 0.05)))
            if last_status is not None and 200 <= last_status < 300:
                return
            await asyncio.sleep(min(self.probe_interval, max(deadline - time.monotonic(), 0.0)))

    async def _log_excerpt(self, handle: ServerHandle) -> str:
        lines = await self.runtime.logs(handle, self.log_tail)
        if not lines:
            return "; no log output"
        return f"; last {len(lines)} log line(s):\n" + "\n".join(_scrub(line, self.spec) for line in lines)

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
            except ContainerError as exc:  # the runtime cannot tell (a Docker daemon hiccup): probe anyway
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
                self._event("unhealthy", f"probe {failures}/{self.unhealthy_after}: {status or 'no answer'}")
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
                self.last_error = ContainerError(f"{self.describe()}: restart after '{reason}' failed: {type(exc).__name__}: {exc}")
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
                    f"{self.describe()}: {reason}; gave up after {len(self._restart_times)} restart(s) "
                    f"within {self.restart_window:g} s" + excerpt
                )
                self._event("failed", reason)
                return False
            delay = min(self.restart_backoff * 2 ** len(self._restart_times), self.max_restart_backoff)
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
        return {
            "name": self.spec.name,
            "runtime": self.runtime.kind,
            "url": self.url,
            "state": self.state.value,
            "restarts": self.restarts,
            "uptime_s": time.monotonic() - handle.started_at if handle is not None and self.is_ready else 0.0,
            "last_error": str(self.last_error).split("\n", 1)[0] if self.last_error else None,
        }


def _scrub(line: str, spec: ServerSpec) -> str:
    for secret in spec.secret_env.values():
        value = secret.reveal()
        if value and value in line:
            line = line.replace(value, "***")
    return line


# --------------------------------------------------------------------------- official servers


def _secret_env(**values: str | Secret | None) -> dict[str, Secret]:
    out: dict[str, Secret] = {}
    for name, value in values.items():
        if value:
            out[name] = value if isinstance(value, Secret) else Secret(str(value))
    return out


def _flag(args: list[str], name: str, value: Any) -> None:
    if value is not None and value is not False:
        args.append(name)
        if value is not True:
            args.append(str(value))


def _process_or_docker(runtime: str, what: str) -> bool:
    if runtime not in ("docker", "process"):
        raise ConfigurationError(f"{what}: runtime must be 'docker' or 'process', got {runtime!r}")
    return runtime == "docker"


def vllm_server_spec(
    model: str,
    *,
    runtime: str = "docker",
    image: str = "vllm/vllm-openai:latest",
    port: int = 8000,
    host_port: int | None = None,
    tensor_parallel_size: int | None = None,
    gpu_memory_utilization: float | None = None,
    max_model_len: int | None = None,
    quantization: str | None = None,
    dtype: str | None = None,
    served_model_name: str | None = None,
    enable_lora: bool = False,
    lora_modules: Mapping[str, str] | None = None,
    max_loras: int | None = None,
    max_lora_rank: int | None = None,
    allow_runtime_lora: bool = False,
    api_key: str | Secret | None = None,
    hf_token: str | Secret | None = None,
    gpus: int | str | tuple[str, ...] | None = "all",
    hf_cache: str | None = "~/.cache/huggingface",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ServerSpec:
    """vLLM's OpenAI-compatible server: ``vllm/vllm-openai`` (its entrypoint takes the serve
    arguments) or ``vllm serve`` as a process. The API key goes in ``VLLM_API_KEY`` (not on the
    command line, where ``docker inspect``/``ps`` would show it)."""
    docker = _process_or_docker(runtime, "vllm_server_spec")
    args: list[str] = ["--model", model] if docker else ["vllm", "serve", model]
    args += ["--host", "0.0.0.0" if docker else "127.0.0.1", "--port", PORT_PLACEHOLDER]
    _flag(args, "--tensor-parallel-size", tensor_parallel_size)
    _flag(args, "--gpu-memory-utilization", gpu_memory_utilization)
    _flag(args, "--max-model-len", max_model_len)
    _flag(args, "--quantization", quantization)
    _flag(args, "--dtype", dtype)
    _flag(args, "--served-model-name", served_model_name)
    if enable_lora or lora_modules or allow_runtime_lora:
        args.append("--enable-lora")
    if lora_modules:
        args.append("--lora-modules")
        args += [f"{name}={path}" for name, path in lora_modules.items()]
    _flag(args, "--max-loras", max_loras)
    _flag(args, "--max-lora-rank", max_lora_rank)
    args += list(extra_args)
    environment = dict(env or {})
    if allow_runtime_lora:
        environment["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    return ServerSpec(
        name="vllm",
        command=tuple(args),
        image=image if docker else None,
        port=port,
        host_port=host_port,
        health_path="/health",
        env=environment,
        secret_env=_secret_env(VLLM_API_KEY=api_key, HF_TOKEN=hf_token),
        volumes={hf_cache: "/root/.cache/huggingface"} if docker and hf_cache else {},
        gpus=gpus if docker else None,
        ipc_mode="host" if docker else None,
    )


def tgi_server_spec(
    model_id: str,
    *,
    runtime: str = "docker",
    image: str = "ghcr.io/huggingface/text-generation-inference:latest",
    port: int = 80,
    host_port: int | None = None,
    num_shard: int | None = None,
    quantize: str | None = None,
    max_input_tokens: int | None = None,
    max_total_tokens: int | None = None,
    max_concurrent_requests: int | None = None,
    hf_token: str | Secret | None = None,
    gpus: int | str | tuple[str, ...] | None = "all",
    data_dir: str | None = "~/.cache/huggingface/tgi",
    shm_size: str = "1g",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ServerSpec:
    """Hugging Face Text Generation Inference: the image's launcher (``--model-id``), or
    ``text-generation-launcher`` as a process. Weights are cached in ``/data``."""
    docker = _process_or_docker(runtime, "tgi_server_spec")
    args: list[str] = [] if docker else ["text-generation-launcher"]
    args += ["--model-id", model_id, "--hostname", "0.0.0.0" if docker else "127.0.0.1", "--port", PORT_PLACEHOLDER]
    _flag(args, "--num-shard", num_shard)
    _flag(args, "--quantize", quantize)
    _flag(args, "--max-input-tokens", max_input_tokens)
    _flag(args, "--max-total-tokens", max_total_tokens)
    _flag(args, "--max-concurrent-requests", max_concurrent_requests)
    args += list(extra_args)
    return ServerSpec(
        name="tgi",
        command=tuple(args),
        image=image if docker else None,
        port=port,
        host_port=host_port,
        health_path="/health",
        env=dict(env or {}),
        secret_env=_secret_env(HF_TOKEN=hf_token),
        volumes={data_dir: "/data"} if docker and data_dir else {},
        gpus=gpus if docker else None,
        shm_size=shm_size if docker else None,
    )


def tei_server_spec(
    model_id: str,
    *,
    runtime: str = "docker",
    image: str | None = None,
    port: int = 80,
    host_port: int | None = None,
    max_client_batch_size: int | None = None,
    max_batch_tokens: int | None = None,
    pooling: str | None = None,
    hf_token: str | Secret | None = None,
    gpus: int | str | tuple[str, ...] | None = None,
    data_dir: str | None = "~/.cache/huggingface/tei",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ServerSpec:
    """Hugging Face Text Embeddings Inference (``--model-id``): the CPU image by default, the
    CUDA image when ``gpus`` is set; ``text-embeddings-router`` as a process."""
    docker = _process_or_docker(runtime, "tei_server_spec")
    if image is None:
        tag = "1.5" if gpus is not None else "cpu-1.5"
        image = f"ghcr.io/huggingface/text-embeddings-inference:{tag}"
    args: list[str] = [] if docker else ["text-embeddings-router"]
    args += ["--model-id", model_id, "--hostname", "0.0.0.0" if docker else "127.0.0.1", "--port", PORT_PLACEHOLDER]
    _flag(args, "--max-client-batch-size", max_client_batch_size)
    _flag(args, "--max-batch-tokens", max_batch_tokens)
    _flag(args, "--pooling", pooling)
    args += list(extra_args)
    return ServerSpec(
        name="tei",
        command=tuple(args),
        image=image if docker else None,
        port=port,
        host_port=host_port,
        health_path="/health",
        env=dict(env or {}),
        secret_env=_secret_env(HF_TOKEN=hf_token),
        volumes={data_dir: "/data"} if docker and data_dir else {},
        gpus=gpus if docker else None,
    )


def ovms_server_spec(
    model_name: str,
    model_path: str,
    *,
    runtime: str = "docker",
    image: str = "openvino/model_server:latest",
    rest_port: int = 8000,
    host_port: int | None = None,
    target_device: str | None = None,
    container_models_dir: str = "/models",
    extra_args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
) -> ServerSpec:
    """OpenVINO Model Server serving one model (``--model_name --model_path --rest_port``).

    With Docker, the host directory ``model_path`` is mounted read-only at
    ``{container_models_dir}/{model_name}``; ``target_device="GPU"`` passes ``/dev/dri``
    through (Intel GPUs are device nodes, not NVIDIA device requests)."""
    docker = _process_or_docker(runtime, "ovms_server_spec")
    served_path = f"{container_models_dir.rstrip('/')}/{model_name}" if docker else model_path
    args: list[str] = [] if docker else ["ovms"]
    args += ["--model_name", model_name, "--model_path", served_path, "--rest_port", PORT_PLACEHOLDER]
    if not docker:
        args += ["--rest_bind_address", "127.0.0.1"]
    _flag(args, "--target_device", target_device)
    args += list(extra_args)
    return ServerSpec(
        name="ovms",
        command=tuple(args),
        image=image if docker else None,
        port=rest_port,
        host_port=host_port,
        health_path="/v2/health/ready",
        env=dict(env or {}),
        volumes={model_path: f"{served_path}:ro"} if docker else {},
        devices=("/dev/dri",) if docker and target_device and target_device.upper().startswith("GPU") else (),
    )
