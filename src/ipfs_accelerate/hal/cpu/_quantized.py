"""Weight-only quantized linear on the CPU: tiles of weight rows dequantized into a small
float buffer, each tile one BLAS product.

The int8 (or packed int4) weight stays as it is, so it costs a quarter (an eighth) of the
float weight's memory; the float copies are one tile (:data:`TILE_BYTES`) per product running
at the moment, in buffers reused across calls (a few kept free). With one
symmetric scale per output row (``from_pretrained(dtype="int8")``'s weights) the scale factors
out of the product, ``x @ (q * s).T == (x @ q.T) * s``: a tile is then only the SIMD
int8-to-float cast of the weight, and the scale one pass over the product (fewer elements than
the weight for a batch of a few hundred rows). Other layouts (blockwise scales, zero points)
scale each tile before its product.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ipfs_accelerate.quantization import QuantizedTensor

Array = np.ndarray[Any, Any]

#: the float tile's size: one tile holds an encoder's layer (a BERT-base FFN weight is 9.4 MB)
#: and a single GEMM is the fastest; larger layers (LLM projections) go through in even tiles.
#: L2-sized tiles (1-2 MB) measured slower here: each is a GEMM of its own, of few columns
TILE_BYTES = 16 << 20


_LOCAL = threading.local()


def _scratch(size: int) -> Array:
    """A float32 buffer of ``size`` elements reused by this thread's calls: a fresh one per
    call would fault its pages in again every time (a tenth of a small layer's time)."""
    buf: Array | None = getattr(_LOCAL, "buf", None)
    if buf is None or buf.size < size:
        buf = _LOCAL.buf = np.empty(size, dtype=np.float32)
    return buf[:size]


class _Layout:
    """A weight's host arrays arranged for tiling (built once per weight, kept with it)."""

    __slots__ = ("bits", "data", "scales", "shape", "signed", "zeros")

    def __init__(self, q: QuantizedTensor) -> None:
        self.shape = q.shape
        self.bits = q.bits
        self.signed = q.symmetric
        self.data = q.data
        #: scales and zero points as (row groups, column groups), expanded per tile
        self.scales = q.scales.astype(np.float32).reshape(q.scales.shape[0], -1)
        self.zeros = (
            None
            if q.zero_points is None
            else q.zero_points.astype(np.float32).reshape(self.scales.shape)
        )

    def _rows(self, groups: Array, start: int, stop: int) -> Array:
        """Per-group values (row groups x column groups) for rows ``start:stop``."""
        out, count = self.shape[0], groups.shape[0]
        if count == 1:
            return groups
        if count == out:
            return groups[start:stop]
        return groups[np.arange(start, stop) * count // out]  # blocks along the rows

    def _apply(self, tile: Array, groups: Array, start: int, stop: int, op: Any) -> None:
        """``op(tile, values, out=tile)`` with the per-group values broadcast over their
        blocks of columns (a view of the tile, never an expanded copy of the values)."""
        rows = self._rows(groups, start, stop)
        count = rows.shape[1]
        if count in (1, self.shape[1]):
            op(tile, rows, out=tile)
        else:
            blocks = tile.reshape(tile.shape[0], count, -1)
            op(blocks, rows[:, :, None], out=blocks)

    def fill(self, tile: Array, start: int, stop: int) -> None:
        """Rows ``start:stop``'s integers converted into the float ``tile``."""
        out, inp = self.shape
        if self.bits == 8:
            np.copyto(tile, self.data.reshape(out, inp)[start:stop], casting="unsafe")
            return
        first, last = start * inp, stop * inp
        chunk = self.data[first // 2 : (last + 1) // 2]
        low, high = (chunk & 0x0F).view(np.int8), (chunk >> 4).view(np.int8)
        if self.signed:  # two's-complement nibbles: 8..15 are -8..-1
            for half in (low, high):
                half ^= 8
                half -= 8
        if first % 2 == 0 and last % 2 == 0:  # whole bytes: write the two halves in place
            pairs = tile.reshape(-1, 2)
            np.copyto(pairs[:, 0], low, casting="unsafe")
            np.copyto(pairs[:, 1], high, casting="unsafe")
            return
        both = np.empty((chunk.size, 2), dtype=np.int8)  # rows that start mid-byte
        both[:, 0], both[:, 1] = low, high
        flat = both.reshape(-1)[first % 2 : first % 2 + last - first]
        np.copyto(tile, flat.reshape(stop - start, inp), casting="unsafe")

    def output_scales(self) -> Array | None:
        """(out,) float32 when each output row has one scale and no zero point: then
        ``x @ (q * s).T == (x @ q.T) * s``, the scale moves to the product's (smaller) output
        and a tile needs only the integer-to-float cast; else None."""
        if self.zeros is not None or self.scales.shape[1] != 1:
            return None
        if self.scales.shape[0] == 1:
            return np.full(self.shape[0], self.scales[0, 0], dtype=np.float32)
        return np.ascontiguousarray(self._rows(self.scales, 0, self.shape[0])[:, 0])

    def tile(self, start: int, stop: int, buf: Array, *, scaled: bool = True) -> Array:
        """Rows ``start:stop`` dequantized into ``buf`` (only cast to float when not
        ``scaled``: the caller scales the product instead)."""
        tile = buf[: stop - start]
        self.fill(tile, start, stop)
        if not scaled:
            return tile
        if self.zeros is not None:
            self._apply(tile, self.zeros, start, stop, np.subtract)
        self._apply(tile, self.scales, start, stop, np.multiply)
        return tile


#: rows a thread casts at a time into a shared tile: about this many elements (512 kB of
#: float32; a chunk claimed is a lock taken, so not much smaller)
CHUNK_ELEMENTS = 1 << 17

_FREE: list[Array] = []  # float32 buffers no shared tile holds: a fresh one would fault its pages
_FREE_LOCK = threading.Lock()
_FREE_KEEP = 4


def _take_buffer(size: int) -> Array:
    with _FREE_LOCK:
        fits = [i for i, buf in enumerate(_FREE) if buf.size >= size]
        if fits:
            return _FREE.pop(min(fits, key=lambda i: _FREE[i].size))
    return np.empty(size, dtype=np.float32)


def _give_buffer(buf: Array) -> None:
    with _FREE_LOCK:
        _FREE.append(buf)
        if len(_FREE) > _FREE_KEEP:  # by position: list.remove would compare arrays
            del _FREE[min(range(len(_FREE)), key=lambda i: _FREE[i].size)]


class _SharedTile:
    """A weight's whole float tile, shared by the threads that run its product at the same
    moment (a batch's row shards, one per core, reach each layer together): they cast it
    together, chunk by chunk, and all read it, instead of each casting the whole weight
    into a buffer of its own. A thread that comes while others still use the tile finds it
    done."""

    __slots__ = ("base", "chunk", "claimed", "done", "error", "lock", "ready", "tile", "users")

    def __init__(self, base: Array, rows: int, columns: int) -> None:
        self.base = base
        self.tile = base[: rows * columns].reshape(rows, columns)
        self.chunk = max(1, CHUNK_ELEMENTS // max(1, columns))
        self.claimed = self.done = self.users = 0
        self.error: BaseException | None = None
        self.lock = threading.Lock()
        self.ready = threading.Event()

    def fill(self, layout: _Layout, scaled: bool) -> Array:
        """The tile, once every chunk is cast (this thread casts the chunks nobody took)."""
        rows = self.tile.shape[0]
        while True:
            with self.lock:
                start = self.claimed
                if start >= rows:
                    break
                stop = self.claimed = min(rows, start + self.chunk)
            try:
                layout.tile(start, stop, self.tile[start:], scaled=scaled)
            except BaseException as exc:
                self.error = exc
                raise
            finally:
                with self.lock:
                    self.done += stop - start
                    if self.done == rows:
                        self.ready.set()
        self.ready.wait()
        if self.error is not None:
            raise RuntimeError("cpu quantized_linear: another thread failed to dequantize") from (
                self.error
            )
        return self.tile


class _Prepared:
    """What a weight's tiled products need, built once per weight (kept with it)."""

    __slots__ = ("current", "layout", "lock", "output_scales")

    def __init__(self, q: QuantizedTensor) -> None:
        self.layout = _Layout(q)
        self.output_scales = self.layout.output_scales()
        self.lock = threading.Lock()
        self.current: _SharedTile | None = None

    def join(self) -> _SharedTile:
        """The shared whole-weight tile that threads now running this product use (a new one
        when none is)."""
        with self.lock:
            shared = self.current
            if shared is None:
                out, inp = self.layout.shape
                shared = self.current = _SharedTile(_take_buffer(out * inp), out, inp)
            shared.users += 1
            return shared

    def leave(self, shared: _SharedTile) -> None:
        with self.lock:
            shared.users -= 1
            if shared.users:
                return
            if self.current is shared:
                self.current = None
        _give_buffer(shared.base)


def tile_rows(out: int, inp: int) -> int:
    """Weight rows per tile: the fewest tiles of at most TILE_BYTES of float32, split evenly
    (a 9 MB weight in two halves, not 8 MB and a 1 MB sliver whose product runs slowly)."""
    tiles = -(-(out * inp * 4) // TILE_BYTES)
    return min(out, max(16, -(-out // tiles)))


def quantized_linear(x: Array, q: QuantizedTensor, bias: Array | None) -> Array:
    """``x @ dequantize(q).T + bias`` for a host float ``x`` (..., in)."""
    prepared: _Prepared = q.prepared("cpu-tiles", _Prepared)
    layout, scales = prepared.layout, prepared.output_scales
    out, inp = layout.shape
    rows = np.ascontiguousarray(x.reshape(-1, inp), dtype=np.float32)
    step = tile_rows(out, inp)
    if step == out:  # one tile, one product straight into the result
        shared = prepared.join()
        try:
            result = rows @ shared.fill(layout, scales is None).T
        finally:
            prepared.leave(shared)
        if scales is not None:
            result *= scales
    else:
        buf = _scratch(step * inp).reshape(step, inp)
        result = np.empty((rows.shape[0], out), dtype=np.float32)
        for start in range(0, out, step):
            stop = min(out, start + step)
            part = rows @ layout.tile(start, stop, buf, scaled=scales is None).T
            # the copy into the result's columns is the scaling pass itself when it applies
            if scales is None:
                result[:, start:stop] = part
            else:
                np.multiply(part, scales[start:stop], out=result[:, start:stop])
    if bias is not None:
        result += bias
    return result.reshape(*x.shape[:-1], out).astype(x.dtype, copy=False)
