"""Servers as Docker containers: :class:`DockerRuntime`, over the ``docker`` SDK (imported on
first use)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable
from typing import Any, ClassVar

from ipfs_accelerate.errors import ConfigurationError, ContainerError, ServerStartError

from ._runtime import ContainerRuntime, ServerHandle, logger
from ._spec import ServerSpec

__all__ = ["MANAGED_LABEL", "DockerRuntime"]

MANAGED_LABEL = "ipfs_accelerate.managed"


class DockerRuntime(ContainerRuntime):
    """Servers as Docker containers through the ``docker`` SDK.

    ``client``: a ``docker.DockerClient`` (default: ``docker.from_env()`` on first use, which
    honours ``DOCKER_HOST``). Containers are named ``{name_prefix}{spec.name}-{host_port}``,
    labelled ``ipfs_accelerate.managed=true``, publish ``spec.port`` on ``spec.host`` only, and
    are kept after they exit (for their logs) until :meth:`stop` removes them. The exact
    arguments handed to ``client.containers.run`` come from :meth:`run_kwargs`.
    """

    kind: ClassVar[str] = "docker"

    def __init__(
        self, client: Any = None, *, name_prefix: str = "ipfs-accelerate-", stop_timeout: int = 10
    ) -> None:
        self._client = client
        self.name_prefix = name_prefix
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
        kwargs: dict[str, Any] = {
            "image": spec.image,
            "command": spec.args_for(spec.port),
            "detach": True,
            "name": f"{self.name_prefix}{spec.name}-{host_port}",
            "ports": {f"{spec.port}/tcp": (spec.host, host_port)},
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
        client = self.client()

        def run() -> Any:
            try:
                return client.containers.run(**kwargs)
            except Exception as exc:  # docker.errors.ImageNotFound, APIError, ...
                raise ServerStartError(
                    f"cannot start {spec.describe()}: {_docker_message(exc)}"
                ) from exc

        container = await asyncio.to_thread(run)
        name = getattr(container, "name", "?")
        logger.info("started container %s (%s, port %d)", name, spec.describe(), host_port)
        return ServerHandle(spec, str(container.id), host_port, container)

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
