"""Input shapes for backends that compile one graph per input shape (webnn).

Such a backend pays a compile and a session's memory for every new (rows, length) it meets
(the costs: docs/models.md), and a stream of texts of every length would compile a graph per
length, so the pipelines run the first few shapes of each row count exactly (a repeated
workload keeps its exact, cheapest shapes) and pad later batches to shape buckets, of which a
few dozen cover everything.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

__all__ = [
    "EXACT_SHAPES",
    "Plan",
    "ShapePolicy",
    "bucket_length",
    "compiles_per_shape",
    "next_power_of_two",
]

#: distinct lengths a pipeline runs as they are, per row count, before it pads to buckets
EXACT_SHAPES = 8


def next_power_of_two(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


def bucket_length(n: int) -> int:
    """A sequence length padded to a multiple of 4 up to 32, of 8 up to 64, of 32 up to 256
    and of 64 beyond: fine where texts are common, coarse where they are rare."""
    step = 4 if n <= 32 else 8 if n <= 64 else 32 if n <= 256 else 64
    return max(step, -(-n // step) * step)


def compiles_per_shape(device: str) -> bool:
    """Whether ``device``'s backend compiles a graph per input shape."""
    from ipfs_accelerate import hal

    try:
        return "graph-compilation" in hal.get_backend(device).info().features
    except Exception:  # an info() failure only costs the padding optimisation
        return False


class Plan(NamedTuple):
    """How a batch runs: as (rows, length), and whether its real tokens are packed."""

    rows: int
    length: int
    packed: bool


class ShapePolicy:
    """How a batch of (rows, length) token slots, ``tokens`` of them real, runs.

    Packed (the dense layers see only the real tokens) wherever the batch has padding, except
    when padded to a bucket: a packed graph's shape depends on its token count too, so a
    compile-per-shape backend would meet a new shape at nearly every batch.
    ``mode`` "auto" (what a pipeline does by itself): as it is on eager backends; on a
    graph-compiling backend as it is for the first EXACT_SHAPES shapes of each row count,
    then padded to a power-of-two row count and a :func:`bucket_length` (at most
    ``max_length``). "buckets": always padded (a server, whose batches have any row count).
    "exact": never padded."""

    MODES = ("auto", "buckets", "exact")

    def __init__(self, device: str, max_length: int, mode: str = "auto") -> None:
        if mode not in self.MODES:
            raise ValueError(f"ShapePolicy: mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode
        self.enabled = mode == "buckets" or (mode == "auto" and compiles_per_shape(device))
        self.max_length = max_length
        #: row count -> the (length, real tokens) shapes it runs exactly (at most EXACT_SHAPES)
        self._exact: dict[int, set[tuple[int, int]]] = {}
        self._lock = threading.Lock()

    def plan(self, rows: int, length: int, tokens: int | None = None) -> Plan:
        """``tokens``: the batch's real tokens (None: nothing to pack)."""
        padding = tokens is not None and tokens < rows * length
        if not self.enabled or self.mode == "exact":
            return Plan(rows, length, padding)
        if self.mode == "auto":
            shape = (length, tokens if tokens is not None and padding else rows * length)
            with self._lock:
                exact = self._exact.setdefault(rows, set())
                if shape in exact or len(exact) < EXACT_SHAPES:
                    exact.add(shape)
                    return Plan(rows, length, padding)
        width = max(length, min(bucket_length(length), self.max_length))
        return Plan(next_power_of_two(rows), width, False)
