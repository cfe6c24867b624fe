"""Servers as Docker containers: :class:`DockerRuntime`, over the ``docker`` SDK (imported on
first use)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, ClassVar, Literal

from ipfs_accelerate.errors import ConfigurationError, ContainerError, ServerStartError

from ._runtime import ContainerRuntime, ServerHandle, logger
from ._spec import ServerSpec, ensure_port_free

__all__ = ["MANAGED_LABEL", "DockerRuntime"]

MANAGED_LABEL = "ipfs_accelerate.managed"


class DockerRuntime(ContainerRuntime):
    """Servers as Docker containers through the ``docker`` SDK.

    ``client``: a ``docker.DockerClient`` (default: ``docker.from_env()`` on first use, which
    honours ``DOCKER_HOST``). Containers are named ``{name_prefix}{spec.name}-{host_port}``,
    labelled ``ipfs_accelerate.managed=true``, publish ``spec.port`` on ``spec.host`` only (or
    share the host's network with ``spec.network_mode="host"``, after checking that nothing
    listens on the port), and are kept after they exit (for their logs) until :meth:`stop`
    removes them. :meth:`start` creates the container, then starts it (a container that
    cannot start is removed). An image missing on the engine is pulled (``pull="missing"``)
    or is a ServerStartError (``pull="never"``). The container's arguments (those of
    ``client.containers.run``/``create``) come from :meth:`run_kwargs`.
    """

    kind: ClassVar[str] = "docker"

    def __init__(
        self,
        client: Any = None,
        *,
        name_prefix: str = "ipfs-accelerate-",
        stop_timeout: int = 10,
        pull: Literal["missing", "never"] = "missing",
    ) -> None:
        if pull not in ("missing", "never"):
            raise ConfigurationError(
                f"DockerRuntime: pull must be 'missing' or 'never', got {pull!r}"
            )
        self._client = client
        self.name_prefix = name_prefix
        self.pull = pull
        self.stop_timeout = stop_timeout
        self._lock = threading.Lock()

    def client(self) -> Any:
        if self._client is None:
            with self._lock:
                if self._client is None:
                    self._client = _connect()
        return self._client

    def run_kwargs(self, spec: ServerSpec, host_port: int) -> dict[str, Any]:
        """The exact keyword arguments handed to ``client.containers.run`` for ``spec``."""
        if not spec.image:
            raise ConfigurationError(
                f"server spec {spec.name!r}: the Docker runtime needs an image"
            )
        secrets = {k: v.reveal() for k, v in spec.secret_env.items()}
        host_network = spec.network_mode == "host"
        kwargs: dict[str, Any] = {
            "image": spec.image,
            "command": spec.args_for(spec.listen_port(host_port) or host_port),
            "detach": True,
            "name": f"{self.name_prefix}{spec.name}-{host_port}",
        }
        if spec.network_mode is not None:
            kwargs["network_mode"] = spec.network_mode
        if not host_network:
            kwargs["ports"] = {f"{spec.port}/tcp": (spec.host, host_port)}
        kwargs |= {
            "environment": {**spec.env, **secrets},
            "volumes": {os.path.expanduser(src): _bind(dst) for src, dst in spec.volumes.items()},
            "labels": {MANAGED_LABEL: "true", "ipfs_accelerate.server": spec.name, **spec.labels},
            "auto_remove": False,
        }
        if spec.gpus is not None:
            kwargs["device_requests"] = [_gpu_request(spec)]
        if spec.devices:
            kwargs["devices"] = [f"{d}:{d}:rwm" for d in spec.devices]
        if spec.shm_size:
            kwargs["shm_size"] = spec.shm_size
        if spec.ipc_mode:
            kwargs["ipc_mode"] = spec.ipc_mode
        return kwargs

    async def start(self, spec: ServerSpec, host_port: int) -> ServerHandle:
        kwargs = self.run_kwargs(spec, host_port)
        if spec.network_mode == "host":
            # nothing is published, so the engine cannot tell that the port is taken: the
            # server would fail to bind while the readiness probe reached the port's holder
            ensure_port_free(spec, host_port)
        client = self.client()
        container = await asyncio.to_thread(self._create_and_start, client, spec, kwargs, host_port)
        name = getattr(container, "name", "?")
        logger.info("started container %s (%s, port %d)", name, spec.describe(host_port), host_port)
        return ServerHandle(spec, str(container.id), host_port, container)

    def _create_and_start(
        self, client: Any, spec: ServerSpec, kwargs: dict[str, Any], host_port: int
    ) -> Any:
        create_kwargs = {k: v for k, v in kwargs.items() if k != "detach"}
        try:
            try:
                container = client.containers.create(**create_kwargs)
            except Exception as exc:
                if type(exc).__name__ != "ImageNotFound":
                    raise
                if self.pull == "never":
                    raise ServerStartError(
                        f"cannot start {spec.describe(host_port)}: image {spec.image!r} is not "
                        "on the Docker engine and this runtime does not pull (pull='never')"
                    ) from exc
                logger.info("pulling image %s", spec.image)
                client.images.pull(spec.image)
                container = client.containers.create(**create_kwargs)
        except ServerStartError:
            raise
        except Exception as exc:  # docker.errors.ImageNotFound, APIError, ...
            raise ServerStartError(
                f"cannot start {spec.describe(host_port)}: {_docker_message(exc)}"
            ) from exc
        try:
            container.start()
        except Exception as exc:
            # a container that was created but cannot start must not be left behind
            try:
                container.remove(force=True)
            except Exception as cleanup:
                if not _is_not_found(cleanup):
                    logger.warning(
                        "container %s: %s", str(container.id)[:12], _docker_message(cleanup)
                    )
            raise ServerStartError(
                f"cannot start {spec.describe(host_port)}: {_docker_message(exc)}"
            ) from exc
        return container

    async def exit_status(self, handle: ServerHandle) -> int | None:
        container = handle.native

        def inspect() -> int | None:
            try:
                container.reload()
            except Exception as exc:
                if _is_not_found(exc):
                    return -1  # removed behind our back: it is certainly not serving
                raise ContainerError(
                    f"cannot inspect container {handle.id[:12]}: {_docker_message(exc)}"
                ) from exc
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

    async def follow_logs(self, handle: ServerHandle) -> AsyncIterator[str]:
        container = handle.native
        try:
            stream = await asyncio.to_thread(container.logs, stream=True, follow=True)
        except Exception as exc:
            raise ContainerError(
                f"cannot follow the logs of container {handle.id[:12]}: {_docker_message(exc)}"
            ) from exc
        # a bounded hand-off: a slow reader holds the engine's stream back instead of
        # letting a chatty container fill this process's memory
        lines: queue.Queue[str | None] = queue.Queue(maxsize=256)
        closed = threading.Event()
        reader = threading.Thread(
            target=_pump_stream, args=(stream, lines, closed),
            name=f"docker-logs-{handle.id[:12]}", daemon=True,
        )  # fmt: skip
        reader.start()
        try:
            while True:
                line = await asyncio.to_thread(_next_line, lines, reader)
                if line is None:
                    return
                yield line
        finally:
            closed.set()
            with contextlib.suppress(Exception):
                stream.close()

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


_MAX_LINE = 64 * 1024


def _pump_stream(stream: Any, lines: queue.Queue[str | None], closed: threading.Event) -> None:
    """Splits the engine's log chunks into lines (a line longer than 64 KiB is cut into
    pieces of that size) and hands them over until the stream ends or the reader is gone."""

    def put(item: str | None) -> bool:
        while not closed.is_set():
            try:
                lines.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    pending = b""
    try:
        for chunk in stream:
            pending += chunk
            while True:
                cut = pending.find(b"\n")
                if cut < 0 and len(pending) < _MAX_LINE:
                    break
                end = cut if 0 <= cut < _MAX_LINE else _MAX_LINE
                line, pending = pending[:end], pending[end + (1 if end == cut else 0) :]
                if not put(line.decode("utf-8", "replace").rstrip("\r")):
                    return
    except Exception:  # the stream was closed under us, or the engine went away
        if closed.is_set():
            return
    if pending:
        put(pending.decode("utf-8", "replace"))
    put(None)


def _next_line(lines: queue.Queue[str | None], reader: threading.Thread) -> str | None:
    # wakes up now and then, so that a cancelled reader frees its worker thread promptly
    while True:
        try:
            return lines.get(timeout=0.5)
        except queue.Empty:
            if not reader.is_alive() and lines.empty():
                return None


def _connect() -> Any:
    try:
        import docker
    except ImportError as exc:
        raise ConfigurationError(
            "the Docker runtime needs the docker SDK: pip install 'ipfs-accelerate[docker]'"
        ) from exc
    try:
        return docker.from_env()
    except Exception as exc:  # docker.errors.DockerException and OS errors alike
        raise ContainerError(f"cannot reach the Docker Engine: {exc}") from exc


def _gpu_request(spec: ServerSpec) -> Any:
    from docker.types import DeviceRequest

    gpus = spec.gpus
    if gpus == "all" or gpus == -1:
        return DeviceRequest(count=-1, capabilities=[["gpu"]])
    if isinstance(gpus, int):
        if gpus < 1:
            raise ConfigurationError(
                f"server spec {spec.name!r}: gpus must be >= 1, 'all' or device ids, got {gpus!r}"
            )
        return DeviceRequest(count=gpus, capabilities=[["gpu"]])
    if isinstance(gpus, tuple | list) and gpus:
        return DeviceRequest(device_ids=[str(g) for g in gpus], capabilities=[["gpu"]])
    raise ConfigurationError(
        f"server spec {spec.name!r}: gpus must be 'all', a count or device ids, got {gpus!r}"
    )


def _bind(target: str) -> dict[str, str]:
    # "path:ro" mounts read-only; anything else read-write
    if target.endswith(":ro") or target.endswith(":rw"):
        return {"bind": target[:-3], "mode": target[-2:]}
    return {"bind": target, "mode": "rw"}


def _is_not_found(exc: BaseException) -> bool:
    status = getattr(getattr(exc, "response", None), "status_code", None)
    return type(exc).__name__ == "NotFound" or status == 404


def _docker_message(exc: BaseException) -> str:
    explanation = getattr(exc, "explanation", None)
    return f"{type(exc).__name__}: {explanation or exc}"
