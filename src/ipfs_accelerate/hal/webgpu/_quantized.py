"""A quantized weight's resident form on a WebGPU device: its integers as packed ``u32``
words (rows padded to whole words), its scales and zero points as float32, and the parameter
words telling the ``quant`` matmul kernel how to find a value's scale.

Built once per weight (``QuantizedTensor.prepared("webgpu", ...)``) and kept with it, so the
weight crosses the bus once and stays int8 / int4 in GPU memory.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.hal.webgpu._dispatcher import Dispatcher
from ipfs_accelerate.hal.webgpu._kernels._quantized import (
    Q_KW,
    Q_RDIV,
    Q_SC,
    Q_WDIV,
    WeightFormat,
)
from ipfs_accelerate.hal.webgpu._memory import GPUArray

if TYPE_CHECKING:
    from ipfs_accelerate.quantization import QuantizedTensor

Array = np.ndarray[Any, Any]


def _packed_rows(q: QuantizedTensor, words_per_row: int) -> Array:
    """The weight's bytes with each row padded to ``words_per_row`` u32 words."""
    out, inp = q.shape
    row_bytes = words_per_row * 4
    if q.bits == 8 and inp == row_bytes:
        return q.data.reshape(-1).view(np.uint8)
    if q.bits == 4 and inp == 2 * row_bytes:
        return q.data.reshape(-1)
    ints = q.int_values().astype(np.int16)
    per_row = row_bytes * (8 // q.bits)
    padded = np.zeros((out, per_row), dtype=np.int16)
    padded[:, :inp] = ints
    if q.bits == 8:
        return (padded & 0xFF).astype(np.uint8)
    nibbles = (padded & 0x0F).astype(np.uint8)  # two's complement nibbles when signed
    return nibbles[:, 0::2] | (nibbles[:, 1::2] << 4)


class ResidentWeight:
    """The device buffers of one quantized (out, in) weight and how the kernel reads them."""

    __slots__ = ("dispatcher", "format", "params", "scales", "words", "zero_points")

    def __init__(self, dispatcher: Dispatcher, q: QuantizedTensor) -> None:
        out, inp = q.shape
        per_word = 32 // q.bits
        words_per_row = -(-inp // per_word)
        scales = q.scales.astype(np.float32).reshape(q.scales.shape[0], -1)
        zeros = None if q.zero_points is None else q.zero_points.astype(np.float32)
        if zeros is not None:
            zeros = zeros.reshape(scales.shape)
        row_groups, col_groups = scales.shape
        features_per_group = inp // col_groups
        # a scale per word unless several scales share one word: then one per input feature
        lanes = col_groups > 1 and features_per_group % per_word != 0
        if lanes:
            width = words_per_row * per_word

            def expand(groups: Array) -> Array:
                wide = np.zeros((row_groups, width), dtype=np.float32)
                wide[:, :inp] = np.repeat(groups, features_per_group, axis=1)
                return wide

            scales = expand(scales)
            zeros = None if zeros is None else expand(zeros)
            stride, words_per_group = width, 1
        else:
            stride = col_groups
            words_per_group = words_per_row if col_groups == 1 else features_per_group // per_word
        self.dispatcher = dispatcher
        self.format = WeightFormat(q.bits, q.symmetric, lanes)
        self.words: GPUArray = dispatcher.upload(
            np.ascontiguousarray(_packed_rows(q, words_per_row))
        )
        self.scales: GPUArray = dispatcher.upload(np.ascontiguousarray(scales))
        self.zero_points: GPUArray | None = (
            None if zeros is None else dispatcher.upload(np.ascontiguousarray(zeros))
        )
        #: (word index, value) of the kernel's layout parameters
        self.params = (
            (Q_KW, words_per_row),
            (Q_SC, stride),
            (Q_RDIV, out // row_groups),
            (Q_WDIV, words_per_group),
        )

    @property
    def nbytes(self) -> int:
        """Bytes the weight holds on the device (words, scales, zero points)."""
        extra = 0 if self.zero_points is None else self.zero_points.nbytes
        return self.words.nbytes + self.scales.nbytes + extra


__all__ = ["ResidentWeight"]
