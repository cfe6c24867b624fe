"""Servers as local subprocesses: :class:`LocalProcessRuntime`."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import signal
import subprocess
import threading
from collections.abc import AsyncIterator
from typing import ClassVar

from ipfs_accelerate.errors import ServerStartError

from ._runtime import ContainerRuntime, ServerHandle, logger
from ._spec import ServerSpec, ensure_port_free

__all__ = ["LocalProcessRuntime"]


class LocalProcessRuntime(ContainerRuntime):
    """Servers as local subprocesses.

    Each process gets its own session (process group), stdout and stderr merged into a ring
    buffer of the last ``log_lines`` lines read by a daemon thread. :meth:`stop` sends SIGTERM
    to the whole group, waits up to ``timeout``, then SIGKILLs what is left and reaps the
    process, so no child survives it. A port on which something already listens is a
    ServerStartError before the process starts.
    """

    kind: ClassVar[str] = "process"

    def __init__(self, *, log_lines: int = 200, inherit_env: bool = True) -> None:
        self.log_lines = log_lines
        self.inherit_env = inherit_env

    async def start(self, spec: ServerSpec, host_port: int) -> ServerHandle:
        # the probe must not be answered by whatever already holds the port
        ensure_port_free(spec, host_port)
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
            raise ServerStartError(f"cannot start {spec.describe(host_port)}: {exc}") from exc
        lines: collections.deque[str] = collections.deque(maxlen=self.log_lines)
        native = _Process(proc, lines)
        native.reader.start()
        logger.info("started %s (pid %d, port %d)", spec.describe(host_port), proc.pid, host_port)
        return ServerHandle(spec, str(proc.pid), host_port, native)

    async def exit_status(self, handle: ServerHandle) -> int | None:
        code: int | None = handle.native.proc.poll()
        return code

    async def logs(self, handle: ServerHandle, tail: int = 20) -> list[str]:
        lines = list(handle.native.lines)
        return lines[-tail:] if tail else lines

    async def follow_logs(self, handle: ServerHandle) -> AsyncIterator[str]:
        native: _Process = handle.native
        seen = -1
        while True:
            with native.lines_lock:
                total, buffered = native.total, list(native.lines)
            first = total - len(buffered)  # the number of the oldest line still held
            seen = max(seen, first)
            if total > seen:
                for line in buffered[seen - first :]:
                    yield line
                seen = total
                continue
            if not native.reader.is_alive():  # the process closed its output: all is read
                return
            await asyncio.sleep(_FOLLOW_POLL)

    async def stop(self, handle: ServerHandle, timeout: float = 10.0) -> None:
        native: _Process = handle.native
        if native.stopped:
            return
        await asyncio.to_thread(native.terminate, timeout)

    def pid(self, handle: ServerHandle) -> int:
        pid: int = handle.native.proc.pid
        return pid


_FOLLOW_POLL = 0.05


class _Process:
    __slots__ = ("_lock", "lines", "lines_lock", "proc", "reader", "stopped", "total")

    def __init__(
        self,
        proc: subprocess.Popen[bytes],
        lines: collections.deque[str],
    ) -> None:
        self.proc = proc
        self.lines = lines
        self.lines_lock = threading.Lock()
        self.total = 0  # lines read so far, including those the ring buffer dropped
        self.reader = threading.Thread(
            target=_pump, args=(self,), name=f"logs-{proc.pid}", daemon=True
        )
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


def _pump(native: _Process) -> None:
    stream = native.proc.stdout
    if stream is None:  # pragma: no cover - always piped
        return
    try:
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            with native.lines_lock:
                native.lines.append(line)
                native.total += 1
    except (OSError, ValueError):  # closed under us during stop
        pass
