"""The key/value cache of a decoder, preallocated, and what one forward step needs from it.

Columns, not positions: the cache has ``capacity`` columns shared by the batch, written left
to right, one per token fed. Sequences of different lengths are left-padded, so a row may
have padding columns (never attended to); ``positions`` records each column's position in its
own sequence (what RoPE and learned position embeddings see).

A step attends to a window of the first ``bucket(length)`` columns (powers of two from 16,
at most ``capacity``), masked past the filled ones: a backend that compiles a graph per input
signature compiles one per bucket, not one per token. On a backend that assigns in place
(the CPU: its tensors are host arrays) new keys/values are written into the preallocated
tensors; elsewhere the cache is replaced functionally by a ``where`` over a one-hot column
mask (one token) or a concatenation (a prompt), which keeps the shapes fixed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.tensor import Tensor, from_numpy, zeros

__all__ = [
    "FULL_ATTENTION",
    "SLIDING_ATTENTION",
    "CacheShape",
    "CausalLM",
    "DecodeStep",
    "KVCache",
    "bucket",
]

Array = np.ndarray[Any, Any]

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"
#: the smallest attended window (columns)
MIN_WINDOW = 16


def bucket(n: int, limit: int) -> int:
    """The smallest power of two >= ``n`` (at least MIN_WINDOW), at most ``limit``."""
    size = MIN_WINDOW
    while size < n:
        size *= 2
    return min(size, limit)


@dataclass(frozen=True)
class CacheShape:
    """What a model keeps per token: ``layers`` x (keys, values) of (kv_heads, head_dim)."""

    layers: int
    kv_heads: int
    head_dim: int
    #: the sliding window of the layers that use one (None: no layer does)
    sliding_window: int | None = None


class CausalLM(Protocol):
    """What the generation engine needs of a decoder model (Llama, GPT-2)."""

    @property
    def context_length(self) -> int:
        """The most positions a sequence may have."""
        ...

    @property
    def vocab_size(self) -> int: ...

    @property
    def device(self) -> str: ...

    def cache_shape(self) -> CacheShape: ...

    def __call__(self, input_ids: Tensor, step: DecodeStep, *, last_only: bool = True) -> Tensor:
        """Logits for the new tokens: (B, vocab) of the last column, or (B, L, vocab)."""
        ...


@dataclass
class DecodeStep:
    """One forward call: ``length`` new columns starting at column ``start``."""

    cache: KVCache
    start: int
    length: int
    #: attended columns (a bucket >= start + length)
    window: int
    #: (B, L) int64: each new column's position in its sequence
    positions: Array
    _allowed: dict[str, Array] = field(default_factory=dict)
    _masks: dict[tuple[str, int], Tensor] = field(default_factory=dict)
    #: the one-hot column (1, 1, capacity, 1) a one-token step writes
    _write: Tensor | None = None
    #: given tensors instead of host data (a captured decode step's inputs): the positions
    #: (B, L) and each kind's mask (B, 1, L, window)
    _position_ids: Tensor | None = None
    _given_masks: dict[str, Tensor] = field(default_factory=dict)

    def position_ids(self) -> Tensor:
        """``positions`` as an int64 tensor (B, L) on the cache's device."""
        if self._position_ids is None:
            self._position_ids = from_numpy(self.positions, self.cache.device)
        return self._position_ids

    def allowed(self) -> dict[str, Array]:
        """Each layer kind's bool mask (B, 1, L, window) as host data."""
        return dict(self._allowed)

    def mask(self, kind: str = FULL_ATTENTION, groups: int = 1) -> Tensor:
        """The bool attention mask (B, 1, groups * L, window) for layers of ``kind``; with
        ``groups`` > 1 the queries of a key/value head's ``groups`` query heads are stacked
        along the query axis (grouped-query attention as one product per key/value head)."""
        key = (kind, groups)
        found = self._masks.get(key)
        if found is None:
            if kind not in self._allowed:
                kind = FULL_ATTENTION
            given = self._given_masks.get(kind)
            if given is not None:
                found = _stacked(given, groups)
            else:
                allowed = self._allowed[kind]
                if groups > 1:
                    allowed = np.tile(allowed, (1, 1, groups, 1))
                found = from_numpy(np.ascontiguousarray(allowed), self.cache.device)
            self._masks[key] = found
        return found

    def update(self, layer: int, keys: Tensor, values: Tensor) -> tuple[Tensor, Tensor]:
        """Write this step's ``keys``/``values`` (B, kv_heads, L, head_dim) of ``layer`` and
        return the layer's attended window (B, kv_heads, window, head_dim) of each."""
        cache = self.cache
        end = self.start + self.length
        columns = (slice(None), slice(None), slice(self.start, end))
        if cache.in_place:
            ops.setitem(cache.keys[layer], columns, keys)
            ops.setitem(cache.values[layer], columns, values)
        elif self.length == 1:
            if self._write is None:
                onehot = np.zeros((1, 1, cache.capacity, 1), dtype=bool)
                onehot[0, 0, self.start, 0] = True
                self._write = from_numpy(onehot, cache.device)
            cache.keys[layer] = ops.where(self._write, keys, cache.keys[layer])
            cache.values[layer] = ops.where(self._write, values, cache.values[layer])
        else:
            cache.keys[layer] = _spliced(cache.keys[layer], keys, self.start, end)
            cache.values[layer] = _spliced(cache.values[layer], values, self.start, end)
        window = (slice(None), slice(None), slice(0, self.window))
        return cache.keys[layer][window], cache.values[layer][window]


def _stacked(mask: Tensor, groups: int) -> Tensor:
    """``mask`` (B, 1, L, W) repeated ``groups`` times along the query axis, in the graph."""
    if groups == 1:
        return mask
    batch, _, length, window = mask.shape
    spread = ops.broadcast_to(
        mask.reshape(batch, 1, 1, length, window), (batch, 1, groups, length, window)
    )
    return spread.reshape(batch, 1, groups * length, window)


def _spliced(cache: Tensor, new: Tensor, start: int, end: int) -> Tensor:
    parts = [cache[:, :, :start]] if start else []
    parts.append(new)
    if end < cache.shape[2]:
        parts.append(cache[:, :, end:])
    return ops.concat(parts, axis=2) if len(parts) > 1 else new


class KVCache:
    """Keys and values of every layer for ``batch`` rows and ``capacity`` columns; a step
    that needs more columns doubles the capacity first."""

    def __init__(self, shape: CacheShape, batch: int, capacity: int, device: str) -> None:
        from ipfs_accelerate import hal

        self.shape = shape
        self.batch = batch
        self.capacity = capacity
        self.device = device
        self.in_place = "item-assignment" in hal.get_backend(device).info().features
        dims = (batch, shape.kv_heads, capacity, shape.head_dim)
        self.keys = [zeros(dims, device=device) for _ in range(shape.layers)]
        self.values = [zeros(dims, device=device) for _ in range(shape.layers)]
        #: columns written so far
        self.length = 0
        self.valid = np.zeros((batch, capacity), dtype=bool)
        self.positions = np.zeros((batch, capacity), dtype=np.int64)
        self._next = np.zeros(batch, dtype=np.int64)

    def begin(self, valid: Array) -> DecodeStep:
        """The step feeding ``valid.shape[1]`` new columns; ``valid`` (B, L) is False where a
        row's column is padding (left padding of a shorter prompt, or a finished row)."""
        valid = np.asarray(valid, dtype=bool)
        if valid.ndim != 2 or valid.shape[0] != self.batch:
            raise InvalidArgumentError(
                f"KVCache.begin: valid must be (batch={self.batch}, length), got {valid.shape}"
            )
        start, length = self.length, valid.shape[1]
        end = start + length
        if end > self.capacity:
            self._grow(max(2 * self.capacity, bucket(end, 1 << 62)))
        counts = np.cumsum(valid, axis=1)
        positions = self._next[:, None] + np.maximum(counts - 1, 0)
        self._next = self._next + counts[:, -1]
        self.valid[:, start:end] = valid
        self.positions[:, start:end] = positions
        self.length = end
        window = bucket(end, self.capacity)
        column = np.arange(window)[None, None, :]
        query = np.arange(start, end)[None, :, None]
        allowed = self.valid[:, None, :window] & (column <= query)
        allowed |= column == query  # a padding query attends to itself: no empty softmax row
        masks = {FULL_ATTENTION: allowed[:, None]}
        if self.shape.sliding_window is not None:
            distance = positions[:, :, None] - self.positions[:, None, :window]
            masks[SLIDING_ATTENTION] = (allowed & (distance < self.shape.sliding_window))[:, None]
        return DecodeStep(self, start, length, window, positions, masks)

    # ------------------------------------------------------------------ continuous batching

    def rearrange(self, rows: Sequence[int | None], drop: int) -> None:
        """Make row i of the cache the current row ``rows[i]`` (None: an empty row) and keep
        the columns from ``drop`` on (a negative ``drop`` prepends that many empty columns):
        how rows join and leave a running batch and dead leading columns are cut. The
        capacity becomes the bucket of what remains plus one column."""
        old_start = max(drop, 0)
        length = self.length - drop
        capacity = bucket(length + 1, 1 << 62)
        index = np.array([0 if r is None else r for r in rows], dtype=np.int64)
        kept = np.array([r is not None for r in rows], dtype=bool)
        batch, heads, dim = len(rows), self.shape.kv_heads, self.shape.head_dim
        new_start = max(-drop, 0)
        picked = from_numpy(index, self.device)

        def moved(tensor: Tensor) -> Tensor:
            parts = []
            if new_start:
                parts.append(zeros((batch, heads, new_start, dim), device=self.device))
            if self.length > old_start:
                rows_of = ops.gather(tensor, picked, axis=0)
                parts.append(rows_of[:, :, old_start : self.length])
            parts.append(zeros((batch, heads, capacity - length, dim), device=self.device))
            return ops.concat(parts, axis=2)

        self.keys = [moved(t) for t in self.keys]
        self.values = [moved(t) for t in self.values]
        valid = np.zeros((batch, capacity), dtype=bool)
        positions = np.zeros((batch, capacity), dtype=np.int64)
        valid[:, new_start:length] = self.valid[index, old_start : self.length] & kept[:, None]
        positions[:, new_start:length] = self.positions[index, old_start : self.length]
        self.valid, self.positions = valid, positions
        self._next = np.where(kept, self._next[index], 0)
        self.batch, self.capacity, self.length = batch, capacity, length

    def place(self, row: int, source: KVCache, source_row: int) -> None:
        """Copy ``source_row`` of ``source`` (a prefilled prompt) into ``row``, right-aligned
        to this cache's last column, so that it decodes in step with the other rows."""
        count = source.length
        end = self.length
        start = end - count
        if start < 0:
            raise InvalidArgumentError(
                f"KVCache.place: {count} columns do not fit before column {end}"
            )
        columns = (slice(row, row + 1), slice(None), slice(start, end))
        for layer in range(self.shape.layers):
            for mine, theirs in ((self.keys, source.keys), (self.values, source.values)):
                piece = theirs[layer][source_row : source_row + 1, :, :count]
                if self.in_place:
                    ops.setitem(mine[layer], columns, piece)
                else:
                    mine[layer] = self._spliced_row(mine[layer], piece, row, start)
        self.valid[row] = False
        self.valid[row, start:end] = source.valid[source_row, :count]
        self.positions[row, start:end] = source.positions[source_row, :count]
        self._next[row] = source._next[source_row]

    def _spliced_row(self, tensor: Tensor, piece: Tensor, row: int, start: int) -> Tensor:
        """``tensor`` with ``piece`` (1, heads, n, dim) at ``row``, columns from ``start``."""
        batch, heads, capacity, dim = tensor.shape
        end = start + piece.shape[2]
        parts = [zeros((1, heads, start, dim), device=self.device)] if start else []
        parts.append(piece)
        if end < capacity:
            parts.append(zeros((1, heads, capacity - end, dim), device=self.device))
        padded = ops.concat(parts, axis=2) if len(parts) > 1 else piece
        where = np.zeros((batch, 1, capacity, 1), dtype=bool)
        where[row, 0, start:end, 0] = True
        return ops.where(from_numpy(where, self.device), padded, tensor)

    def release(self, row: int) -> None:
        """Row ``row`` holds no sequence any more: none of its columns is attended to."""
        self.valid[row] = False
        self._next[row] = 0

    def _grow(self, capacity: int) -> None:
        """Empty columns appended to every layer (a copy per doubling: amortised, and the
        shapes between doublings stay fixed)."""
        extra = capacity - self.capacity
        batch, heads, _, dim = self.keys[0].shape
        empty = zeros((batch, heads, extra, dim), device=self.device)
        for n in range(len(self.keys)):
            self.keys[n] = ops.concat([self.keys[n], empty], axis=2)
            self.values[n] = ops.concat([self.values[n], empty], axis=2)
        pad = ((0, 0), (0, extra))
        self.valid = np.pad(self.valid, pad)
        self.positions = np.pad(self.positions, pad)
        self.capacity = capacity
