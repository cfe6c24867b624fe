"""The key/value cache of a decoder, preallocated, and what one forward step needs from it.

Columns, not positions: the cache has ``capacity`` columns shared by the batch, written left
to right, one per token fed. Sequences of different lengths are left-padded, so a row may
have padding columns (never attended to); ``positions`` records each column's position in its
own sequence (what RoPE and learned position embeddings see).

A step attends to a window of the first ``bucket(length)`` columns (powers of two from 16,
at most ``capacity``), masked past the filled ones: a backend that compiles a graph per input
signature compiles one per bucket, not one per token. A replayed decode step (``_replay.py``)
reads the whole capacity, so the capacity itself is sized more tightly
(:func:`capacity_bucket`: quarter octaves from ``FINE_FROM`` columns on), which bounds the
masked columns read per token to a quarter of the filled ones, not as many again.
On a backend that assigns in place (the CPU: its tensors are host arrays) new keys/values
are written into the preallocated tensors; elsewhere the cache is replaced functionally by
a ``where`` over a one-hot column mask (one token) or a concatenation (a prompt), which
keeps the shapes fixed.

A cache can also live on the host (:meth:`KVCache.to_host`: the keys and the values, each one
array (layers, batch, kv_heads, capacity, head_dim)): what replayed decode steps use
(``_replay.py``).
The step graph reads the caches as inputs, attends to the new token's key/value separately
(:meth:`DecodeStep.attend`) and returns only them; the engine writes them into their column in
place. Nothing cache-sized is written or allocated per token; growth, rearrangement and
placement are numpy copies. A traced step on a host cache takes it back as tensors (a copy).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    "capacity_bucket",
    "left_padded",
]

Array = np.ndarray[Any, Any]

FULL_ATTENTION = "full_attention"
SLIDING_ATTENTION = "sliding_attention"
#: the smallest attended window (columns)
MIN_WINDOW = 16
#: capacities from this many columns on are quarter octaves (:func:`capacity_bucket`); below,
#: powers of two (there the cache reads little beside the weights, and a replayed step's graph
#: per capacity costs more than it saves)
FINE_FROM = 256
#: capacity sizes per doubling from ``FINE_FROM`` on
CAPACITY_STEPS = 4
#: queries a prompt attends with per product (:meth:`DecodeStep.attend`): a longer prompt's
#: attention is cut into chunks that each read the columns up to their own last query, not
#: the whole window. 64 (x the query heads of a key/value head) keeps a chunk's scores in
#: cache: ONNX Runtime's masked MultiHeadAttention over a 512-token prompt (9 heads, 3
#: key/value heads) ran 2.7x faster in chunks of 64 than as one product (docs/webnn.md)
PREFILL_QUERY_CHUNK = 64


def left_padded(prompts: Sequence[Sequence[int] | Array]) -> tuple[Array, Array]:
    """Token ids (B, width) of ``prompts`` padded on the left with 0 to the longest, and the
    mask (B, width) of the real tokens: the layout a prefill's :meth:`KVCache.begin` takes."""
    width = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), width), dtype=np.int64)
    valid = np.zeros((len(prompts), width), dtype=bool)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = prompt
        valid[row, width - len(prompt) :] = True
    return ids, valid


def bucket(n: int, limit: int) -> int:
    """The smallest power of two >= ``n`` (at least MIN_WINDOW), at most ``limit``."""
    size = MIN_WINDOW
    while size < n:
        size *= 2
    return min(size, limit)


def capacity_bucket(n: int) -> int:
    """The cache capacity for ``n`` columns: :func:`bucket` up to ``FINE_FROM``, past it the
    smallest ``2^k + j 2^k / CAPACITY_STEPS >= n`` (j = 1..CAPACITY_STEPS). A replayed decode
    step reads every column of the capacity, filled or not: at most a quarter more than the
    filled ones (a power of two reads up to twice as many), with a graph per size, at most
    ``CAPACITY_STEPS`` per doubling."""
    size = bucket(n, 1 << 62)
    if size <= FINE_FROM:
        return size
    half = size // 2
    step = half // CAPACITY_STEPS
    return half + step * -(-(n - half) // step)


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
    _chunk_masks: dict[tuple[str, int, int], Tensor] = field(default_factory=dict)
    #: the one-hot column (1, 1, capacity, 1) a one-token step writes
    _write: Tensor | None = None
    #: given tensors instead of host data (a captured decode step's input): the positions (B, L)
    _position_ids: Tensor | None = None
    #: set when the step reads a host cache instead of writing it (a captured decode step)
    _appending: Appending | None = None

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
            allowed = self._allowed[kind]
            if groups > 1:
                allowed = np.tile(allowed, (1, 1, groups, 1))
            found = from_numpy(np.ascontiguousarray(allowed), self.cache.device)
            self._masks[key] = found
        return found

    def _chunk_mask(self, kind: str, groups: int, first: int, last: int, columns: int) -> Tensor:
        """The bool mask (B, 1, groups * (last - first), columns) of queries ``first:last``,
        made once per step on the host (every layer of a kind reads the same)."""
        key = (kind, groups, first)
        found = self._chunk_masks.get(key)
        if found is None:
            allowed = self._allowed.get(kind, self._allowed[FULL_ATTENTION])
            allowed = allowed[:, :, first:last, :columns]
            if groups > 1:
                allowed = np.tile(allowed, (1, 1, groups, 1))
            found = from_numpy(np.ascontiguousarray(allowed), self.cache.device)
            self._chunk_masks[key] = found
        return found

    def attend(
        self,
        layer: int,
        queries: Tensor,
        keys: Tensor,
        values: Tensor,
        kind: str = FULL_ATTENTION,
        groups: int = 1,
    ) -> Tensor:
        """Write this step's ``keys``/``values`` (B, kv_heads, L, head_dim) of ``layer`` and
        attend ``queries`` (B, kv_heads, groups * L, head_dim) to the layer's window: the
        attention output, shaped as the queries."""
        if self._appending is not None:
            return self._appending.attend(layer, queries, keys, values, kind)
        window_keys, window_values = self.update(layer, keys, values)
        if self.length > PREFILL_QUERY_CHUNK:
            return self._attend_in_chunks(queries, window_keys, window_values, kind, groups)
        return ops.scaled_dot_product_attention(
            queries, window_keys, window_values, attn_mask=self.mask(kind, groups)
        )

    def _attend_in_chunks(
        self, queries: Tensor, keys: Tensor, values: Tensor, kind: str, groups: int
    ) -> Tensor:
        """A prompt's attention as one product per chunk of :data:`PREFILL_QUERY_CHUNK`
        queries over the columns up to the chunk's last one: every later column is masked for
        all of the chunk's queries (causality), so leaving it out changes no result and skips
        the masked upper triangle (half the scores of a prefill). ``queries`` (B, kv_heads,
        groups * L, d) stack each key/value head's ``groups`` query heads along the query
        axis, so a chunk is cut from each group's rows."""
        batch, kv_heads, _, depth = queries.shape
        length = self.length
        per_group = queries.reshape(batch, kv_heads, groups, length, depth)
        outputs = []
        for first in range(0, length, PREFILL_QUERY_CHUNK):
            last = min(first + PREFILL_QUERY_CHUNK, length)
            columns = self.start + last  # the keys any of the chunk's queries may attend
            chunk = per_group[:, :, :, first:last].reshape(
                batch, kv_heads, groups * (last - first), depth
            )
            out = ops.scaled_dot_product_attention(
                chunk,
                keys[:, :, :columns],
                values[:, :, :columns],
                attn_mask=self._chunk_mask(kind, groups, first, last, columns),
            )
            outputs.append(out.reshape(batch, kv_heads, groups, last - first, out.shape[-1]))
        merged = ops.concat(outputs, axis=3)
        return merged.reshape(batch, kv_heads, groups * length, merged.shape[-1])

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


@dataclass
class Appending:
    """How a one-token step attends without writing the cache (a captured decode step): the
    cached keys/values of every layer (B, kv_heads, capacity, head_dim) are read as they are,
    the new token's are attended separately and kept in ``new_keys``/``new_values`` for the
    caller to write into the cache afterwards."""

    keys: Sequence[Tensor]
    values: Sequence[Tensor]
    #: per layer kind, the additive mask (B, 1, 1, capacity) of the cached columns: 0 where a
    #: column is attended, -inf elsewhere (the new token's own column included: it is not
    #: written yet)
    biases: Mapping[str, Tensor]
    new_keys: dict[int, Tensor] = field(default_factory=dict)
    new_values: dict[int, Tensor] = field(default_factory=dict)

    def attend(
        self, layer: int, queries: Tensor, keys: Tensor, values: Tensor, kind: str
    ) -> Tensor:
        """``softmax([q K^T, q k]) [V; v]`` over the cached columns and the new one, split so
        that the cache is only read: the scores of both go through one softmax."""
        self.new_keys[layer], self.new_values[layer] = keys, values
        bias = self.biases.get(kind, self.biases[FULL_ATTENTION])
        scaled = queries * (1.0 / math.sqrt(queries.shape[-1]))
        cached = ops.matmul(scaled, self.keys[layer].mT) + bias
        # one new column: its score is an elementwise product summed (keys broadcast over the
        # groups of query heads of a key/value head)
        own = ops.sum(scaled * keys, axis=-1, keepdims=True)
        capacity = cached.shape[-1]
        weights = ops.softmax(ops.concat([cached, own], axis=-1), axis=-1)
        return ops.matmul(weights[..., :capacity], self.values[layer]) + (
            weights[..., capacity:] * values
        )


def _spliced(cache: Tensor, new: Tensor, start: int, end: int) -> Tensor:
    parts = [cache[:, :, :start]] if start else []
    parts.append(new)
    if end < cache.shape[2]:
        parts.append(cache[:, :, end:])
    return ops.concat(parts, axis=2) if len(parts) > 1 else new


class KVCache:
    """Keys and values of every layer for ``batch`` rows and ``capacity`` columns; a step
    that needs more columns doubles the capacity first.

    The cache holds its keys and values either as tensors of its device (``keys``/``values``,
    one per layer) or on the host (``host_keys``/``host_values`` after :meth:`to_host`); each
    form is made from the other on demand, by a copy."""

    def __init__(self, shape: CacheShape, batch: int, capacity: int, device: str) -> None:
        from ipfs_accelerate import hal

        self.shape = shape
        self.batch = batch
        self.capacity = capacity
        self.device = device
        self.in_place = "item-assignment" in hal.get_backend(device).info().features
        dims = (batch, shape.kv_heads, capacity, shape.head_dim)
        self._keys: list[Tensor] | None = [zeros(dims, device=device) for _ in range(shape.layers)]
        self._values: list[Tensor] | None = [
            zeros(dims, device=device) for _ in range(shape.layers)
        ]
        #: the host form: (layers, batch, kv_heads, capacity, head_dim) each, or None
        self.host_keys: Array | None = None
        self.host_values: Array | None = None
        #: columns written so far
        self.length = 0
        self.valid = np.zeros((batch, capacity), dtype=bool)
        self.positions = np.zeros((batch, capacity), dtype=np.int64)
        self._next = np.zeros(batch, dtype=np.int64)

    # ------------------------------------------------------------------ the two forms

    @property
    def keys(self) -> list[Tensor]:
        """Each layer's keys (batch, kv_heads, capacity, head_dim) as tensors of the device."""
        self._to_tensors()
        assert self._keys is not None
        return self._keys

    @keys.setter
    def keys(self, tensors: list[Tensor]) -> None:
        self._to_tensors()
        self._keys = tensors

    @property
    def values(self) -> list[Tensor]:
        """Each layer's values, as :attr:`keys`."""
        self._to_tensors()
        assert self._values is not None
        return self._values

    @values.setter
    def values(self, tensors: list[Tensor]) -> None:
        self._to_tensors()
        self._values = tensors

    @property
    def on_host(self) -> bool:
        """Whether the cache is in its host form (``host_keys``/``host_values``)."""
        return self.host_keys is not None

    def to_host(self) -> tuple[Array, Array]:
        """The host form (keys, values), each (layers, batch, kv_heads, capacity, head_dim),
        made from the tensors (a copy) unless the cache is in it already. Writes into these
        arrays are the cache's content."""
        if self.host_keys is None or self.host_values is None:
            assert self._keys is not None and self._values is not None
            self.host_keys = _stacked(self._keys)
            self.host_values = _stacked(self._values)
            self._keys = self._values = None
        return self.host_keys, self.host_values

    def _to_tensors(self) -> None:
        if self.host_keys is None or self.host_values is None:
            return
        self._keys = [from_numpy(layer, self.device) for layer in self.host_keys]
        self._values = [from_numpy(layer, self.device) for layer in self.host_values]
        self.host_keys = self.host_values = None

    # ------------------------------------------------------------------ steps

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
            # doubling: a growing generation compiles a replayed step per doubling, not per
            # quarter (the engine sizes the first capacity to what it knows it will fill)
            self._grow(max(2 * self.capacity, capacity_bucket(end)))
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

    def cached_biases(self, step: DecodeStep) -> dict[str, Array]:
        """For a one-token ``step``: each layer kind's additive mask (batch, 1, 1, capacity)
        float32 over the cached columns (0 attended, -inf not), as :meth:`begin`'s masks
        allow them, without the step's own column (attended separately, see
        :class:`Appending`)."""
        if step.length != 1:
            raise InvalidArgumentError(
                f"KVCache.cached_biases: a step of one column is needed, got {step.length}"
            )
        column = np.arange(self.capacity)[None, :]
        allowed = self.valid & (column < step.start)
        kinds = {FULL_ATTENTION: allowed}
        if self.shape.sliding_window is not None:
            distance = step.positions[:, :1] - self.positions
            kinds[SLIDING_ATTENTION] = allowed & (distance < self.shape.sliding_window)
        minus_inf = np.float32(-np.inf)
        return {
            kind: np.where(mask, np.float32(0.0), minus_inf)[:, None, None, :]
            for kind, mask in kinds.items()
        }

    def append(self, column: int, keys: Array, values: Array) -> None:
        """Write one column of every layer in the host form: ``keys``/``values`` (layers,
        batch, kv_heads, head_dim), as a replayed step returns them."""
        host_keys, host_values = self.to_host()
        host_keys[:, :, :, column] = keys
        host_values[:, :, :, column] = values

    # ------------------------------------------------------------------ continuous batching

    def rearrange(self, rows: Sequence[int | None], drop: int) -> None:
        """Make row i of the cache the current row ``rows[i]`` (None: an empty row) and keep
        the columns from ``drop`` on (a negative ``drop`` prepends that many empty columns):
        how rows join and leave a running batch and dead leading columns are cut. The
        capacity becomes the :func:`capacity_bucket` of what remains plus one column."""
        old_start = max(drop, 0)
        length = self.length - drop
        capacity = capacity_bucket(length + 1)
        index = np.array([0 if r is None else r for r in rows], dtype=np.int64)
        kept = np.array([r is not None for r in rows], dtype=bool)
        batch, heads, dim = len(rows), self.shape.kv_heads, self.shape.head_dim
        new_start = max(-drop, 0)
        if self.on_host:
            assert self.host_keys is not None and self.host_values is not None
            dims = (self.shape.layers, batch, heads, capacity, dim)

            def moved_on_host(array: Array) -> Array:
                result = np.zeros(dims, dtype=array.dtype)
                if self.length > old_start:
                    live = array[:, index, :, old_start : self.length]
                    result[:, :, :, new_start:length] = live
                return result

            self.host_keys = moved_on_host(self.host_keys)
            self.host_values = moved_on_host(self.host_values)
        else:
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
        if self.on_host:
            theirs_keys, theirs_values = source.to_host()
            assert self.host_keys is not None and self.host_values is not None
            self.host_keys[:, row, :, start:end] = theirs_keys[:, source_row, :, :count]
            self.host_values[:, row, :, start:end] = theirs_values[:, source_row, :, :count]
        else:
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
        if self.on_host:
            assert self.host_keys is not None and self.host_values is not None
            self.host_keys = _widened(self.host_keys, capacity)
            self.host_values = _widened(self.host_values, capacity)
        else:
            keys, values = self.keys, self.values
            batch, heads, _, dim = keys[0].shape
            empty = zeros((batch, heads, extra, dim), device=self.device)
            for n in range(len(keys)):
                keys[n] = ops.concat([keys[n], empty], axis=2)
                values[n] = ops.concat([values[n], empty], axis=2)
        pad = ((0, 0), (0, extra))
        self.valid = np.pad(self.valid, pad)
        self.positions = np.pad(self.positions, pad)
        self.capacity = capacity


def _stacked(layers: Sequence[Tensor]) -> Array:
    """Per-layer tensors (B, H, C, D) as one writable host array (layers, B, H, C, D)."""
    first = layers[0]
    result = np.empty((len(layers), *first.shape), dtype=np.dtype(first.dtype.name))
    for n, tensor in enumerate(layers):
        result[n] = tensor.numpy()
    return result


def _widened(array: Array, capacity: int) -> Array:
    """``array`` (layers, B, H, C, D) with empty columns up to ``capacity``."""
    result = np.zeros((*array.shape[:3], capacity, array.shape[4]), dtype=array.dtype)
    result[:, :, :, : array.shape[3]] = array
    return result
