"""How one matrix product is recorded: its kernel by variant, parameter words and grid.

Shared by the matmul op family (``_ops_matmul``) and the tuner, which records candidate
kernels into a private recorder with the same code the ops run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ipfs_accelerate.errors import UnsupportedOpError
from ipfs_accelerate.hal._backend import Shape
from ipfs_accelerate.hal.webgpu._dispatcher import Dispatcher, KernelEntry, collapse
from ipfs_accelerate.hal.webgpu._kernels import _matmul, _quantized
from ipfs_accelerate.hal.webgpu._kernels._wgsl import F32, MAX_RANK, WType
from ipfs_accelerate.hal.webgpu._memory import DeviceBuffer
from ipfs_accelerate.hal.webgpu._pipelines import LayoutKey
from ipfs_accelerate.hal.webgpu._recorder import ErrorBuilder, Recorder

#: records one product with a chosen kernel into a recorder: (recorder, a, b, out)
ProductRecording = Callable[[Recorder, DeviceBuffer, DeviceBuffer, DeviceBuffer], None]


def matmul_entry(
    dispatcher: Dispatcher,
    variant: str,
    wtype: WType,
    trans_b: bool,
    bias: bool,
    act: str | None,
    dual: bool,
    block: tuple[int, int],
    workgroup: tuple[int, int],
    weight: _quantized.WeightFormat | None = None,
) -> KernelEntry:
    """The product kernel of ``variant`` (compiled on first use); ``weight`` is the layout of
    a quantized B (variant ``quant``, B transposed), None for a float B."""
    key = ("matmul", variant, wtype.name, trans_b, bias, act, dual, block, workgroup, weight)
    entry = dispatcher.cached(key)
    if entry is None:

        def make() -> tuple[str, str, LayoutKey, ErrorBuilder, WType]:
            if weight is not None:
                source, layout = _quantized.quantized_source(
                    wtype, weight, bias=bias, act=act, dual=dual, block=block, workgroup=workgroup
                )
                label = f"quant.{weight.label}"
            else:
                source, layout = _matmul.matmul_source(
                    variant,
                    wtype,
                    trans_b=trans_b,
                    bias=bias,
                    act=act,
                    dual=dual,
                    workgroup=workgroup,
                    block=block,
                )
                label = _matmul.label(variant, block, workgroup)
            name = f"matmul.{label}.{'nt' if trans_b else 'nn'}.{wtype.name}"
            name += ("+bias" if bias else "") + (f"+{act}" if act else "")
            return name, source, layout, (), wtype

        entry = dispatcher.kernel(key, make)
    return entry


def matmul_words(
    m: int, n: int, k: int, batch: Shape, a_strides: Sequence[int], b_strides: Sequence[int]
) -> tuple[list[int], int]:
    """The parameter words of a batched product, and its number of output matrices."""
    dims = collapse(batch, [a_strides, b_strides])
    if len(dims) > MAX_RANK:
        raise UnsupportedOpError(
            f"webgpu: matmul with {len(dims)} non-mergeable batch axes exceeds {MAX_RANK}"
        )
    count = math.prod(batch)
    words = [m, n, k, 0, count, len(dims), 0, 0]
    words.extend([0] * 8)
    for column in (0, 1, 2):
        values = [d[0] for d in dims] if column == 0 else [d[1][column - 1] for d in dims]
        words.extend(values)
        words.extend([0] * (MAX_RANK - len(values)))
    return words, count


def record_matmul(
    dispatcher: Dispatcher,
    entry: KernelEntry,
    variant: str,
    block: tuple[int, int],
    workgroup: tuple[int, int],
    buffers: tuple[DeviceBuffer, ...],
    words: list[int],
    m: int,
    n: int,
    count: int,
    recorder: Recorder | None = None,
) -> None:
    """Record a product (several dispatches when the batch exceeds one grid's z range)."""
    tx, ty = _matmul.tile_of(variant, workgroup, block)
    gx, gy = -(-n // tx), -(-m // ty)
    max_groups = dispatcher.max_groups
    if gx > max_groups or gy > max_groups:
        raise UnsupportedOpError(
            f"webgpu: matmul of {m}x{n} outputs needs {gx}x{gy} workgroups, beyond adapter "
            f"{dispatcher.device.label}'s {max_groups} per dimension"
        )
    rec = recorder or dispatcher.recorder
    with rec.lock:
        for base in range(0, count, max_groups):
            part = list(words)
            part[_matmul.MM_BASE] = base
            rec.dispatch(entry[0], buffers, part, (gx, gy, min(max_groups, count - base)))


def matmul_recording(
    dispatcher: Dispatcher,
    variant: str,
    block: tuple[int, int],
    workgroup: tuple[int, int],
    m: int,
    n: int,
    k: int,
) -> ProductRecording:
    """A function recording one float32 (m, k) @ (k, n) product with a given kernel into a
    given recorder (the tuner times candidates with it)."""
    entry = matmul_entry(dispatcher, variant, F32, False, False, None, False, block, workgroup)
    words, count = matmul_words(m, n, k, (), [], [])

    def record(recorder: Recorder, a: DeviceBuffer, b: DeviceBuffer, out: DeviceBuffer) -> None:
        record_matmul(
            dispatcher, entry, variant, block, workgroup, (a, b, out), words, m, n, count, recorder
        )

    return record


__all__ = ["ProductRecording", "matmul_entry", "matmul_recording", "matmul_words", "record_matmul"]
