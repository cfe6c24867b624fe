"""Where a server runs: the :class:`ContainerRuntime` contract and one started instance."""

from __future__ import annotations

import abc
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ipfs_accelerate.errors import ContainerError

from ._spec import ServerSpec

__all__ = ["ContainerRuntime", "ServerHandle", "logger"]

# one logger for the runtimes and the lifecycle, so one setting silences or shows them all
logger = logging.getLogger("ipfs_accelerate.servers")


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

    def follow_logs(self, handle: ServerHandle) -> AsyncIterator[str]:
        """The instance's output line by line as it is written, from its start (as far as the
        runtime still holds it), ending once the instance has exited and its output is read.
        Closing the iterator early releases what it held."""
        raise ContainerError(f"the {self.kind} runtime cannot follow an instance's logs")

    @abc.abstractmethod
    async def stop(self, handle: ServerHandle, timeout: float = 10.0) -> None:
        """Stop the instance and release everything it held (idempotent)."""
