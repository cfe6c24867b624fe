"""Device memory: a buffer pool by size class and the tensor handle that returns its buffer.

Freed buffers are kept by size class and handed out again instead of allocating. A buffer
released while a batch of recorded commands is still open may still be read by those commands,
so until the batch is submitted it is reused only as the *output* of a later command in the
same batch (commands run in order), never as the target of a host upload (uploads run before
the whole batch).
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
from collections.abc import Callable
from typing import Any

#: smallest buffer handed out (also what a zero-element tensor holds)
MIN_BYTES = 256


def size_class(nbytes: int) -> int:
    """``nbytes`` rounded up to its size class: quarter steps between powers of two (at most
    25% waste), never below MIN_BYTES, always a multiple of 4."""
    if nbytes <= MIN_BYTES:
        return MIN_BYTES
    top = 1 << (nbytes - 1).bit_length()
    quarter = top // 8  # quarter steps of the lower power of two
    return -(-nbytes // quarter) * quarter


class DeviceBuffer:
    """One device buffer with a process-unique id (bind groups are cached by these ids)."""

    __slots__ = ("buffer", "size", "uid")
    _ids = itertools.count(1)

    def __init__(self, buffer: Any, size: int) -> None:
        self.buffer = buffer
        self.size = size
        self.uid = next(self._ids)


class BufferPool:
    """Storage buffers recycled by size class.

    ``max_cached_bytes`` bounds the bytes kept in free lists; beyond it a released buffer is
    destroyed (and ``on_destroy`` tells the bind-group cache to forget it).
    """

    def __init__(
        self,
        device: Any,
        usage: int,
        max_cached_bytes: int,
        on_destroy: Callable[[DeviceBuffer], None],
        max_buffer_bytes: int,
    ) -> None:
        self._device = device
        self._usage = usage
        self._max_cached = max_cached_bytes
        self._max_buffer = max_buffer_bytes
        self._on_destroy = on_destroy
        # per size class, heaps of (uid, buffer): the lowest free uid is handed out first, so
        # which buffer a repeated computation gets depends only on *which* buffers are free,
        # not on the order they were released in -- its bind groups then repeat exactly
        self._free: dict[int, list[tuple[int, DeviceBuffer]]] = {}
        self._dirty: dict[int, list[tuple[int, DeviceBuffer]]] = {}
        # every live buffer stays reachable from the pool: a handle collected as part of a
        # reference cycle (a traceback holding tensors) is finalized together with the rest of
        # the cycle, and wgpu's buffer wrapper must not be finalized with it while the handle's
        # finalizer hands the buffer back to the pool
        self._all: dict[int, DeviceBuffer] = {}
        self.batch_open = False
        #: bytes in buffers created and not destroyed
        self.allocated_bytes = 0
        #: bytes in buffers held by live handles
        self.in_use_bytes = 0
        self.cached_bytes = 0
        self.created = 0

    def acquire(self, nbytes: int, *, upload: bool = False) -> DeviceBuffer:
        size = size_class(nbytes)
        if size > self._max_buffer >= nbytes:
            size = -(-nbytes // 4) * 4
        free = self._free.get(size)
        if free:
            buf = heapq.heappop(free)[1]
        else:
            dirty = None if upload else self._dirty.get(size)
            if dirty:
                buf = heapq.heappop(dirty)[1]
            else:
                buf = DeviceBuffer(self._device.create_buffer(size=size, usage=self._usage), size)
                self._all[buf.uid] = buf
                self.allocated_bytes += size
                self.created += 1
                self.in_use_bytes += size
                return buf
        self.cached_bytes -= size
        self.in_use_bytes += size
        return buf

    def release(self, buf: DeviceBuffer) -> None:
        self.in_use_bytes -= buf.size
        if self.cached_bytes + buf.size > self._max_cached:
            self._destroy(buf)
            return
        self.cached_bytes += buf.size
        target = self._dirty if self.batch_open else self._free
        heapq.heappush(target.setdefault(buf.size, []), (buf.uid, buf))

    def end_batch(self) -> None:
        """The open batch was submitted: buffers released during it are safe for uploads."""
        for size, bufs in self._dirty.items():
            if bufs:
                free = self._free.setdefault(size, [])
                free.extend(bufs)
                heapq.heapify(free)
                bufs.clear()
        self.batch_open = False

    def trim(self) -> int:
        """Destroy every cached free buffer; returns the bytes given back."""
        freed = 0
        for lists in (self._free, self._dirty):
            for bufs in lists.values():
                for _, buf in bufs:
                    freed += buf.size
                    self._destroy(buf)
                bufs.clear()
        self.cached_bytes = 0
        return freed

    def _destroy(self, buf: DeviceBuffer) -> None:
        self._all.pop(buf.uid, None)
        self.allocated_bytes -= buf.size
        self._on_destroy(buf)
        with contextlib.suppress(Exception):  # the device may already be gone
            buf.buffer.destroy()


class Taint:
    """The checked kernels (by error-slot id) a handle's value depends on, as a DAG.

    ``latest`` is the newest id in the DAG: once every id up to it has been checked clean,
    the whole DAG is clean and is dropped from new handles.
    """

    __slots__ = ("latest", "parents", "uid")
    latest: int

    def __init__(self, uid: int, parents: tuple[Taint, ...]) -> None:
        self.uid = uid
        self.parents = parents
        latest: int = uid
        for parent in parents:
            latest = max(latest, parent.latest)
        self.latest = latest

    def find(self, failures: dict[int, BaseException]) -> BaseException | None:
        """The error of a failed kernel this value depends on, if any."""
        stack: list[Taint] = [self]
        seen: set[int] = set()
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            found = failures.get(node.uid)
            if found is not None:
                return found
            stack.extend(node.parents)
        return None


class GPUArray:
    """A tensor's data on the device: a pooled buffer, row-major and contiguous.

    Several tensors may share one handle (``reshape`` returns the same handle); the buffer goes
    back to the pool when the last of them is gone. ``error`` poisons a handle whose producing
    kernel failed, so reading it raises that error again; ``taint`` names the checked kernels
    its value depends on, so that a value computed from a failed kernel's output raises too.

    A handle may be *pending*: an element-wise expression (``expr``) not yet computed. Its
    buffer is made, and the expression run as one fused kernel, on first access to ``buf``.
    """

    __slots__ = ("__weakref__", "_buf", "error", "expr", "nbytes", "pool", "taint")

    def __init__(self, buf: DeviceBuffer | None, nbytes: int, pool: BufferPool) -> None:
        self._buf = buf
        self.nbytes = nbytes
        self.pool: BufferPool | None = pool
        self.error: BaseException | None = None
        self.taint: Taint | None = None
        self.expr: Any = None

    @property
    def buf(self) -> DeviceBuffer:
        """The device buffer (computing a pending expression first)."""
        buf = self._buf
        if buf is None:
            self.expr.materialize(self)
            buf = self._buf
        return buf  # type: ignore[return-value]

    def attach(self, buf: DeviceBuffer) -> None:
        """Give a pending handle its buffer (the fused kernel writes it)."""
        self._buf = buf

    def __del__(self) -> None:
        pool = self.pool
        if pool is not None and self._buf is not None:
            self.pool = None
            try:  # noqa: SIM105 - try is cheaper than contextlib.suppress on this hot path
                pool.release(self._buf)
            except Exception:  # interpreter shutdown: the pool may be half torn down
                pass
