"""Continuous batching: sequences join a running batch at the next step and leave it when
they finish, each with its own parameters and stop conditions.

A joining prompt is prefilled on its own (with the others joining at the same step), then its
cache columns are copied into a free row of the batch cache, right-aligned to the batch's last
column: the columns to its left are padding, masked as a shorter prompt's are in a batch
decoded from the start. A finished or cancelled sequence frees its row at once (its columns are
no longer attended to) and the row is reused by the next joiner. The rows come in powers of two
(free rows run as padding) and the cache is rebuilt, smaller, when half of its rows are free or
its dead leading columns would shrink its capacity bucket: the shapes a step sees stay in a few
buckets, so a backend that compiles a graph per shape (webnn) compiles a few graphs, not one
per join. At most ``max_rows`` sequences decode at once; the others wait, in order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import numpy as np

from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.models.generation._cache import (
    KVCache,
    bucket,
    capacity_bucket,
    left_padded,
)
from ipfs_accelerate.models.generation._engine import (
    GenerationEngine,
    GenerationEvent,
    _Sequence,
)
from ipfs_accelerate.models.generation._sampling import SamplingParams
from ipfs_accelerate.tensor import from_numpy

__all__ = ["ContinuousBatch"]


@dataclass(eq=False)
class _Entry:
    owner: Hashable
    sequence: _Sequence


def _row_bucket(count: int) -> int:
    """The smallest power of two >= ``count`` (rows of the batch cache)."""
    rows = 1
    while rows < count:
        rows *= 2
    return rows


class ContinuousBatch:
    """Sequences of several owners (requests) decoded together, one token per :meth:`step`.

    Not thread-safe: every call must come from one thread (the server's model thread)."""

    def __init__(self, engine: GenerationEngine, max_rows: int) -> None:
        if max_rows < 1:
            raise InvalidArgumentError(f"max_rows must be >= 1, got {max_rows}")
        self.engine = engine
        self.max_rows = max_rows
        self._cache: KVCache | None = None
        self._rows: list[_Entry | None] = []
        self._waiting: deque[_Entry] = deque()

    @property
    def active(self) -> int:
        """Sequences decoding now (each holds a row)."""
        return sum(entry is not None for entry in self._rows)

    @property
    def waiting(self) -> int:
        """Sequences waiting for a row."""
        return len(self._waiting)

    @property
    def rows(self) -> int:
        """Rows of the batch cache (active ones and padding)."""
        return len(self._rows)

    def add(
        self, owner: Hashable, prompts: Sequence[Sequence[int]], params: Sequence[SamplingParams]
    ) -> None:
        """Queue ``owner``'s sequences (events carry their index in ``prompts``); they join
        at the next step with room for them. Arguments are checked here."""
        for sequence in self.engine._start(prompts, params):
            self._waiting.append(_Entry(owner, sequence))

    def cancel(self, owner: Hashable) -> None:
        """Drop ``owner``'s sequences: waiting ones, and the rows of running ones (the next
        step runs without them)."""
        self._waiting = deque(e for e in self._waiting if e.owner != owner)
        for row, entry in enumerate(self._rows):
            if entry is not None and entry.owner == owner:
                self._release(row)
        self._compact()

    def clear(self) -> None:
        """Drop every sequence (after a failed step: the cache may be half written)."""
        self._waiting.clear()
        self._rows = []
        self._cache = None

    def step(self) -> list[tuple[Hashable, GenerationEvent]]:
        """Admit waiting sequences (prefill: their first token), then one token for every
        running sequence; each event with its owner. A finished sequence leaves its row."""
        events = self._admit()
        events += self._decode()
        self._compact()
        return events

    # ------------------------------------------------------------------ internals

    def _admit(self) -> list[tuple[Hashable, GenerationEvent]]:
        room = self.max_rows - self.active
        joining = [self._waiting.popleft() for _ in range(min(room, len(self._waiting)))]
        if not joining:
            return []
        model = self.engine.model
        ids, valid = left_padded([e.sequence.prompt for e in joining])
        width = ids.shape[1]
        prefill = KVCache(model.cache_shape(), len(joining), bucket(width, 1 << 62), model.device)
        logits = model(from_numpy(ids, model.device), prefill.begin(valid)).numpy()
        events = []
        staying = []
        for row, entry in enumerate(joining):
            events.append((entry.owner, self.engine._advance(entry.sequence, logits[row])))
            if entry.sequence.finish_reason is None:
                staying.append((row, entry))
        if staying:
            self._make_room(len(staying), width)
            assert self._cache is not None
            free = (row for row, entry in enumerate(self._rows) if entry is None)
            for (source_row, entry), row in zip(staying, free, strict=False):
                self._cache.place(row, prefill, source_row)
                self._rows[row] = entry
        return events

    def _make_room(self, joining: int, width: int) -> None:
        """A cache with ``joining`` free rows and at least ``width`` columns."""
        model = self.engine.model
        if self._cache is None:
            self._cache = KVCache(model.cache_shape(), 1, bucket(width, 1 << 62), model.device)
            if self.engine.decode_graphs.host_cache:
                self._cache.to_host()  # joins and compactions become numpy copies, no graphs
            self._rows = [None]
        cache = self._cache
        rows = max(len(self._rows), _row_bucket(self.active + joining))
        if rows > len(self._rows) or width > cache.length:
            order: list[int | None] = list(range(len(self._rows)))
            order += [None] * (rows - len(self._rows))
            cache.rearrange(order, min(0, cache.length - width))
            self._rows += [None] * (rows - len(self._rows))

    def _decode(self) -> list[tuple[Hashable, GenerationEvent]]:
        cache = self._cache
        if cache is None or not self.active:
            return []
        ids = np.zeros((len(self._rows), 1), dtype=np.int64)
        valid = np.zeros((len(self._rows), 1), dtype=bool)
        for row, entry in enumerate(self._rows):
            if entry is not None:
                ids[row, 0] = entry.sequence.generated[-1]
                valid[row, 0] = True
        logits = self.engine.decode_graphs.forward(cache, ids, valid).numpy()
        events = []
        for row, entry in enumerate(self._rows):
            if entry is None:
                continue
            events.append((entry.owner, self.engine._advance(entry.sequence, logits[row])))
            if entry.sequence.finish_reason is not None:
                self._release(row)
        return events

    def _release(self, row: int) -> None:
        assert self._cache is not None
        self._cache.release(row)
        self._rows[row] = None

    def _compact(self) -> None:
        """A smaller cache when half the rows are free or the dead leading columns would
        shrink the attended window (rare: a rebuild copies the cache)."""
        cache = self._cache
        if cache is None:
            return
        running = [row for row, entry in enumerate(self._rows) if entry is not None]
        if not running:
            self._cache, self._rows = None, []
            return
        rows = _row_bucket(len(running))
        dead = int(np.argmax(cache.valid[running, : cache.length].any(axis=0)))
        shrinks = capacity_bucket(cache.length - dead + 1) < capacity_bucket(cache.length + 1)
        if rows >= len(self._rows) and not shrinks:
            return
        order: list[int | None] = [*running, *([None] * (rows - len(running)))]
        cache.rearrange(order, dead)
        self._rows = [self._rows[row] if row is not None else None for row in order]
