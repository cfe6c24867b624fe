"""Weight-only quantized linear on the CPU: tiles of weight rows dequantized into a small
float buffer, each tile one BLAS product.

The int8 (or packed int4) weight stays as it is, so it costs a quarter (an eighth) of the
float weight's memory; the float copy never exceeds one tile (:data:`TILE_BYTES`), which stays
in cache between its dequantization and its product. Dequantizing costs two passes over
the tile (convert, scale), a few percent of the product for a batch of rows.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ipfs_accelerate.quantization import QuantizedTensor

Array = np.ndarray[Any, Any]

#: the float tile's size: one tile holds most layers' weight (a single GEMM, the fastest);
#: larger layers (LLM projections) go through in tiles of this size
TILE_BYTES = 8 << 20


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

    def _expand(self, groups: Array, start: int, stop: int) -> Array:
        """Per-group values for rows ``start:stop``, broadcastable to the tile."""
        out, inp = self.shape
        if groups.shape[0] == 1:
            rows = groups
        elif groups.shape[0] == out:
            rows = groups[start:stop]
        else:
            rows = groups[np.arange(start, stop) * groups.shape[0] // out]
        if rows.shape[1] in (1, inp):
            return rows
        return np.repeat(rows, inp // rows.shape[1], axis=1)

    def ints(self, start: int, stop: int) -> Array:
        """Rows ``start:stop`` as integers (int8 view, or int4 unpacked)."""
        out, inp = self.shape
        if self.bits == 8:
            return self.data.reshape(out, inp)[start:stop]
        first, last = start * inp, stop * inp
        chunk = self.data[first // 2 : (last + 1) // 2]
        both = np.empty((chunk.size, 2), dtype=np.int8)
        np.bitwise_and(chunk, 0x0F, out=both[:, 0], casting="unsafe")
        np.right_shift(chunk, 4, out=both[:, 1], casting="unsafe")
        flat = both.reshape(-1)
        if self.signed:  # sign-extend the nibbles: 8..15 are -8..-1
            flat[flat > 7] -= 16
        skip = first % 2
        return flat[skip : skip + last - first].reshape(stop - start, inp)

    def tile(self, start: int, stop: int, buf: Array) -> Array:
        """Rows ``start:stop`` dequantized into ``buf``."""
        tile = buf[: stop - start]
        np.copyto(tile, self.ints(start, stop), casting="unsafe")
        if self.zeros is not None:
            tile -= self._expand(self.zeros, start, stop)
        tile *= self._expand(self.scales, start, stop)
        return tile


def quantized_linear(x: Array, q: QuantizedTensor, bias: Array | None) -> Array:
    """``x @ dequantize(q).T + bias`` for a host float ``x`` (..., in)."""
    layout: _Layout = q.prepared("cpu", _Layout)
    out, inp = layout.shape
    rows = np.ascontiguousarray(x.reshape(-1, inp), dtype=np.float32)
    result = np.empty((rows.shape[0], out), dtype=np.float32)
    step = max(16, min(out, TILE_BYTES // (4 * inp)))
    buf = _scratch(step * inp).reshape(step, inp)
    for start in range(0, out, step):
        stop = min(out, start + step)
        tile = layout.tile(start, stop, buf)
        np.matmul(rows, tile.T, out=result if stop - start == out else result[:, start:stop])
    if bias is not None:
        result += bias
    return result.reshape(*x.shape[:-1], out).astype(x.dtype, copy=False)
