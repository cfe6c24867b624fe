"""Weight-only quantized linear on the CPU: tiles of weight rows dequantized into a small
float buffer, each tile one BLAS product.

The int8 (or packed int4) weight stays as it is, so it costs a quarter (an eighth) of the
float weight's memory; the float copy never exceeds one tile (:data:`TILE_BYTES`), which stays
in cache between its dequantization and its product.

With one scale per output row and no zero point (what ``from_pretrained(dtype="int8")``
holds), the scale factors out of the product, ``x @ (q * s).T == (x @ q.T) * s``: a tile is
then only the integer-to-float cast (numpy's SIMD cast, the cheaper of the two passes), and
the scale one pass over the product's output, which is contiguous along the scales and, for a
batch of a few hundred rows, no larger than the weight. Measured on MiniLM's six block
layers at 270 rows (a batch of 32 split in two row shards), one thread, two runs: the int8
layers cost 1.04-1.06x the float32 ones with the tile scaled and 1.02-1.03x with the output
scaled (at 135 rows 1.14-1.17x and 1.05x). Blockwise scales along the columns and zero
points scale the tile.

Each row shard casts the whole weight for itself (the shards run the model side by side,
models/_parallel.py): the cast is 3-4% of a shard's products at MiniLM's sizes, and a
tile shared by the shards needs them to meet at every layer (tried, measured slower).

:func:`row_quantized_linear` (``activations="int8_row"``) multiplies in integers where MKL's
integer GEMM is in use (hal/cpu/_mkl.py) and the weight is int8 with one scale per output
row and no zero point: each row of ``x`` is rounded to uint8 with its own scale ``s_i`` and
zero point ``z_i`` (the rule in ops/_quantized.py, the same as WebNN's), and with ``q`` the
uint8 rows, ``w`` the int8 weight and ``t_j`` its output scales::

    y_ij = s_i * t_j * (sum_k q_ik w_jk - z_i * sum_k w_jk) + bias_j

The integer sum is MKL's exact int32 product; ``sum_k w_jk`` is computed once per weight
(kept with it, ``out`` int32s: the weight itself stays the int8 array it is). The float
epilogue is one pass converting the int32 sums to float, one scaling columns by ``t_j``, one
rows by ``s_i``, and one rank-2 sgemm update adding ``-(z_i s_i)(t_j sum_k w_jk) + bias_j``.
Elsewhere (no MKL, int4/blockwise/zero-point weights) the rows are rounded the same way in
float and go through the weight-only product: the same numbers up to float rounding.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.hal.cpu import _mkl
from ipfs_accelerate.hal.cpu._blas import one_thread_for

if TYPE_CHECKING:
    from ipfs_accelerate.quantization import QuantizedTensor

Array = np.ndarray[Any, Any]

#: the float tile's largest size: one tile holds most layers' weight (a single GEMM, the
#: fastest); larger ones (a base encoder's 9.4 MB FFN weights, LLM projections) go through in
#: even tiles (the int8 3072 x 768 weight at 270 rows, one thread: 0.85-0.88x its float32
#: product as 2730 + 342 rows, 0.89x as 2 x 1536; the thin remainder is a slow GEMM of its own)
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

    __slots__ = ("bits", "data", "output_scales", "scales", "shape", "signed", "zeros")

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
        #: (out,) when every output row has one scale and no zero point: the product's
        #: columns are scaled instead of the tile (out floats, nothing the size of the weight)
        self.output_scales: Array | None = None
        if self.zeros is None and self.scales.shape[1] == 1:
            per_row = self._rows(self.scales, 0, self.shape[0])[:, 0]
            self.output_scales = np.ascontiguousarray(
                np.broadcast_to(per_row, (self.shape[0],)), dtype=np.float32
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

    def tile(self, start: int, stop: int, buf: Array) -> Array:
        """Rows ``start:stop`` dequantized into ``buf``; only cast to float where
        :attr:`output_scales` is set (the caller scales the product)."""
        tile = buf[: stop - start]
        self.fill(tile, start, stop)
        if self.output_scales is not None:
            return tile
        if self.zeros is not None:
            self._apply(tile, self.zeros, start, stop, np.subtract)
        self._apply(tile, self.scales, start, stop, np.multiply)
        return tile


def quantized_linear(x: Array, q: QuantizedTensor, bias: Array | None) -> Array:
    """``x @ dequantize(q).T + bias`` for a host float ``x`` (..., in)."""
    layout: _Layout = q.prepared("cpu", _Layout)
    out, inp = layout.shape
    rows = np.ascontiguousarray(x.reshape(-1, inp), dtype=np.float32)
    result = np.empty((rows.shape[0], out), dtype=np.float32)
    most = max(16, min(out, TILE_BYTES // (4 * inp)))
    step = -(-out // -(-out // most))  # rows per tile, the tiles as even as whole rows allow
    buf = _scratch(step * inp).reshape(step, inp)
    for start in range(0, out, step):
        stop = min(out, start + step)
        tile = layout.tile(start, stop, buf)
        target = result if stop - start == out else result[:, start:stop]
        if _mkl.takes_product(rows.shape[0]) and _mkl.gemm(rows, tile.T, target):
            continue  # through MKL, as the float linear's products (hal/cpu/_mkl.py)
        # a small product on one BLAS thread, as the float linear's (hal/cpu/_blas.py): woken
        # workers cost more than a short sentence's product, tens of times more under load
        with one_thread_for(rows.shape[0] * (stop - start) * inp):
            np.matmul(rows, tile.T, out=target)
    if layout.output_scales is not None:
        result *= layout.output_scales
    if bias is not None:
        result += bias
    return result.reshape(*x.shape[:-1], out).astype(x.dtype, copy=False)


#: the smallest normal float32: the scale of an all-zero row (as ops/_quantized.py)
_TINY = np.float32(1.1754943508222875e-38)


def quantize_rows(rows: Array) -> tuple[Array, Array, Array]:
    """(q, scales, zero points) of 2-D float32 ``rows`` rounded to uint8 per row, as
    ``activations="int8_row"`` defines it: ``q`` uint8, the others float32 (one per row).
    A row holding NaN or infinity gets a non-finite scale (its q is meaningless)."""
    low = np.minimum(rows.min(axis=1), np.float32(0))
    high = np.maximum(rows.max(axis=1), np.float32(0))
    with np.errstate(invalid="ignore", over="ignore"):
        scales = np.maximum((high - low) / np.float32(255), _TINY)
        zeros = np.clip(np.rint(-low / scales), 0, 255)
        work = np.divide(rows, scales[:, None])  # fresh: a batch-sized buffer is not kept
        np.rint(work, out=work)
        work += zeros[:, None]
        np.clip(work, 0, 255, out=work)
        q = np.empty(rows.shape, dtype=np.uint8)
        np.copyto(q, work, casting="unsafe")
    return q, scales, zeros


class _IntegerWeight:
    """An int8 per-output-row weight as the integer product reads it (built once per weight):
    the int8 data itself (no copy), its output scales and its scaled column sums."""

    __slots__ = ("data", "sums", "t")

    def __init__(self, q: QuantizedTensor) -> None:
        out, inp = q.shape
        self.data = q.data.reshape(out, inp)
        self.t = np.ascontiguousarray(
            np.broadcast_to(q.scales.astype(np.float32).reshape(-1), (out,))
        )
        # t_j * sum_k w_jk: the zero-point correction's column factor
        self.sums = (self.data.sum(axis=1, dtype=np.int64) * self.t).astype(np.float32)


def integer_ready(q: QuantizedTensor) -> bool:
    """Whether ``q`` is a weight the integer product takes (and MKL's is in use)."""
    return (
        q.bits == 8
        and q.zero_points is None
        and q.block_size is None
        and len(q.shape) == 2
        and q.scales.shape[1] == 1
        and q.shape[1] <= 1 << 16
        and _mkl.int8_enabled()
    )


def row_quantized_linear(x: Array, q: QuantizedTensor, bias: Array | None) -> Array:
    """``x`` rounded per row to uint8 (``activations="int8_row"``) times ``dequantize(q).T``
    plus ``bias``, in integers through MKL where :func:`integer_ready`, else in float."""
    out, inp = q.shape
    rows = np.ascontiguousarray(x.reshape(-1, inp), dtype=np.float32)
    if not rows.size:
        return quantized_linear(x, q, bias)
    codes, scales, zeros = quantize_rows(rows)
    bad = ~np.isfinite(scales)
    if bad.any():  # NaN/inf in a row: NaN out (set below), as the float product gives
        scales[bad], zeros[bad] = 1.0, 0.0
    sums = np.empty((rows.shape[0], out), dtype=np.int32)
    weight: _IntegerWeight | None = (
        q.prepared("cpu-int8-rows", _IntegerWeight) if integer_ready(q) else None
    )
    if weight is None or not _mkl.int8_gemm(codes, weight.data.T, sums):
        rounded = (codes - zeros[:, None]) * scales[:, None]  # float32: the fallback's rows
        rounded[bad] = np.nan
        return quantized_linear(rounded.astype(x.dtype, copy=False).reshape(x.shape), q, bias)
    # numpy's plain int32 -> float32 cast, then two scaling passes: a multiply that casts as
    # it goes (or one converting in place) runs through numpy's buffered loops, 2-3x slower
    result = np.empty((rows.shape[0], out), dtype=np.float32)
    np.copyto(result, sums, casting="unsafe")
    result *= weight.t
    result *= scales[:, None]
    # + (-z_i s_i) (t_j sum_k w_jk) + 1 * bias_j, as one rank-2 update of the result
    left = np.empty((rows.shape[0], 2), dtype=np.float32)
    np.multiply(zeros, scales, out=left[:, 0])
    np.negative(left[:, 0], out=left[:, 0])
    left[:, 1] = 1.0 if bias is not None else 0.0
    right = np.empty((2, out), dtype=np.float32)
    right[0] = weight.sums
    right[1] = 0.0 if bias is None else bias
    if not _mkl.gemm(left, right, result, accumulate=True):  # pragma: no cover
        result += left @ right
    if bad.any():
        result[bad] = np.nan
    return result.reshape(*x.shape[:-1], out).astype(x.dtype, copy=False)
