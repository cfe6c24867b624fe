"""What to run and how to reach it: :class:`ServerSpec`, and a free port to reach it on."""

from __future__ import annotations

import shlex
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

from ipfs_accelerate.errors import ConfigurationError, ServerStartError
from ipfs_accelerate.resilience import Secret

__all__ = ["PORT_PLACEHOLDER", "ServerSpec", "ensure_port_free", "free_port"]

PORT_PLACEHOLDER = "{port}"


@dataclass(frozen=True)
class ServerSpec:
    """What to run and how to reach it.

    ``command``: for Docker, the arguments after the image (the image's entrypoint runs
    them); for a local process, the whole argv. ``{port}`` in any argument is replaced by the
    port the server must listen on: ``port`` inside a container, the host port for a process.
    ``volumes``: host path -> container path (``"path:ro"`` mounts read-only).
    ``host_port`` is the port on ``host`` (127.0.0.1) the server is reached at; None picks a
    free one when the :class:`ManagedServer` is created, so its URL is known before start.
    ``network_mode``: Docker only; None publishes ``port`` on ``host:host_port``, ``"host"``
    shares the host's network (nothing is published, so the server itself must listen on
    ``host_port``: ``{port}`` becomes the host port, and it should bind ``host``).
    ``gpus``: None (no GPU), ``"all"``, a count, or a list of device ids (Docker device
    requests); ``devices``: host device nodes passed through (``/dev/dri`` for Intel GPUs).
    Secrets meant for the server (``HF_TOKEN``, ``VLLM_API_KEY``) travel in ``secret_env``
    and never show in reprs, logs or errors.
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
    network_mode: str | None = None
    cwd: str | None = None
    labels: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.name or not isinstance(self.name, str):
            raise ConfigurationError(
                f"server spec: name must be a non-empty string, got {self.name!r}"
            )
        if isinstance(self.command, str):
            raise ConfigurationError(
                f"server spec {self.name!r}: command must be a sequence of arguments, "
                f"got the string {self.command!r}"
            )
        object.__setattr__(self, "command", tuple(str(a) for a in self.command))
        if self.image is None and not self.command:
            raise ConfigurationError(f"server spec {self.name!r}: a local process needs a command")
        if not self.health_path.startswith("/"):
            raise ConfigurationError(
                f"server spec {self.name!r}: health_path must start with '/', "
                f"got {self.health_path!r}"
            )
        if self.network_mode is not None and (
            not isinstance(self.network_mode, str) or not self.network_mode
        ):
            raise ConfigurationError(
                f"server spec {self.name!r}: network_mode must be None or a Docker network "
                f"mode such as 'host', got {self.network_mode!r}"
            )
        for key, value in self.secret_env.items():
            if not isinstance(value, Secret):
                raise ConfigurationError(
                    f"server spec {self.name!r}: secret_env[{key!r}] must be a Secret"
                )

    def listen_port(self, host_port: int | None) -> int | None:
        """The port the server itself listens on (what ``{port}`` stands for): ``port`` in a
        container whose port is published, the host port otherwise (a process, or a
        container on the host's network)."""
        if self.image and self.network_mode != "host":
            return self.port
        return self.host_port if host_port is None else host_port

    def describe(self, host_port: int | None = None) -> str:
        """The image and arguments (docker) or the command line (process), without secrets,
        with ``{port}`` filled in (``<port>`` while no host port is chosen yet)."""
        port = self.listen_port(host_port)
        shown = "<port>" if port is None else str(port)
        args = " ".join(shlex.quote(a.replace(PORT_PLACEHOLDER, shown)) for a in self.command)
        if self.image:
            network = f" (network {self.network_mode})" if self.network_mode else ""
            return f"image {self.image}" + (f" {args}" if args else "") + network
        return f"command {args}"

    def args_for(self, port: int) -> list[str]:
        return [a.replace(PORT_PLACEHOLDER, str(port)) for a in self.command]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def ensure_port_free(spec: ServerSpec, port: int) -> None:
    """Raise ServerStartError when something already listens on ``spec.host:port``.

    Checked before a server that binds the port itself starts: otherwise the readiness probe
    could be answered by whatever holds the port while the new server fails to bind it.
    SO_REUSEADDR lets a port whose last connections linger in TIME_WAIT (a restart) pass.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((spec.host, port))
        except OSError as exc:
            raise ServerStartError(
                f"cannot start {spec.describe(port)}: port {port} on {spec.host} is already in use "
                f"({exc.strerror or exc})"
            ) from None
