"""Captured functions on the WebNN backend: a function traced once, compiled as one graph,
and replayed with new inputs (``WebNNBackend.capture``), so that a decode or training step
runs no op in Python. Split out of :mod:`._backend` so that each module stays within the
house's length.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.hal._backend import CapturedFunction
from ipfs_accelerate.hal.webnn._checks import check_failure
from ipfs_accelerate.hal.webnn._graph import Node, Trace, leaf
from ipfs_accelerate.tensor._dtype import as_dtype
from ipfs_accelerate.tensor._tensor import Tensor

if TYPE_CHECKING:
    from ipfs_accelerate.hal.webnn._backend import WebNNBackend, _Compiled

__all__ = ["CaptureKey", "Captured", "HeadGraph", "detached", "head_rows"]

Array = np.ndarray[Any, Any]


class CaptureKey:
    """A captured trace's key in the compiled-graph cache: its structural key (so that equal
    captures share a graph) with the hash computed once, as every replay looks it up."""

    __slots__ = ("_hash", "key")

    def __init__(self, key: tuple[Any, ...]) -> None:
        self.key = key
        self._hash = hash(("capture", key))

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CaptureKey) and (other is self or other.key == self.key)


def head_rows(rows: int) -> int:
    """The rows of the head graph that computes ``rows`` rows: one as it is (a decode step's),
    more rounded up to a multiple of 8, so that forced blocks, prompts and small batches share
    one graph (rows are independent products: padding changes none of them)."""
    return rows if rows == 1 else -(-rows // 8) * 8


@dataclass(frozen=True, slots=True)
class HeadGraph:
    """A shared head graph (``WebNNBackend._head_graph``) as one caller uses it: its cache key,
    the trace to compile it again from, the names of its one input and its result, and the
    caller's rows and result shape."""

    key: tuple[Any, ...]
    trace: Trace
    input: str
    output: str
    rows: int
    shape: tuple[int, ...]

    def run(self, backend: WebNNBackend, value: Array) -> Array:
        """The layer of ``value`` (the caller's input, any leading shape); hold the lock."""
        graph = backend._compiled(self.key, self.trace).graph
        flat = value.reshape(self.rows, value.shape[-1])
        padding = self.trace.nodes[0].shape[0] - self.rows
        if padding:
            # copies of the last row: a per-tensor statistic of the input (a dynamic
            # quantization's range) stays what it was
            flat = np.concatenate([flat, np.broadcast_to(flat[-1:], (padding, flat.shape[1]))])
        result = backend.context.compute(graph, {self.input: flat})[self.output]
        backend.stats.dispatches += 1
        return np.asarray(result[: self.rows]).reshape(self.shape)


def detached(found: Trace) -> Trace:
    """A copy of ``found`` to compile it again from (after the cache dropped its graph):
    new op nodes, so that nothing that materialises the traced nodes later changes it, and
    value-less input leaves, so that it does not keep the first call's arrays alive.
    Parameter leaves are shared (immutable; the graph embeds them)."""
    copies: dict[int, Node] = {}
    nodes = []
    for node in found.nodes:
        if node.op is None:
            copy = node if node.param else Node(None, (), (), node.shape, node.dtype)
        else:
            inputs = tuple(copies[id(source)] for source in node.inputs)
            copy = Node(node.op, node.attrs, inputs, node.shape, node.dtype)
        copies[id(node)] = copy
        nodes.append(copy)
    return Trace(nodes, found.key, found.outputs, found.checks, found.variable)


class Captured(CapturedFunction):
    """A captured function: its graph (in the backend's compiled-graph cache, so that the
    cache's bounds hold; compiled again if it was dropped) and how its inputs and results map
    to the graph's. A result that is a shared head (``heads``: result index -> head graph)
    is the head graph run on what the graph returns in its place (the layer's input)."""

    def __init__(
        self,
        backend: WebNNBackend,
        key: CaptureKey,
        found: Trace,
        compiled: _Compiled,
        positions: list[int],
        argument_at: dict[int, int],
        placeholders: list[Node],
        heads: dict[int, HeadGraph] | None = None,
        threads: int | None = None,
    ) -> None:
        self._backend = backend
        self._key = key
        self._trace = found
        self._threads = threads
        #: per argument: (shape, dtype name) it must have
        self.signature = [(node.shape, node.dtype) for node in placeholders]
        # numpy dtypes to compare with: a dtype's name is slow to build, and a decode step
        # checks dozens of inputs per token
        self._dtypes = [
            np.dtype(np.bool_ if dtype == "bool" else dtype) for _, dtype in self.signature
        ]
        #: graph input name -> argument index
        self._feeds = {name: argument_at[position] for name, position in compiled.inputs.items()}
        names: dict[int, str] = {}
        checks: dict[int, list[str]] = {}
        for output in compiled.outputs:
            if output.check:
                checks.setdefault(output.position, []).append(output.name)
            else:
                names[output.position] = output.name
        # readback needs only each check's attributes
        self._checks = [
            (Node("check", found.nodes[position].attrs, (), (), "uint8"), names_of)
            for position, names_of in checks.items()
        ]
        #: per result: (graph output name, shape, dtype name); a head's result is named by the
        #: head's index in self._heads (not a graph output name: those are strings)
        self._results: list[tuple[str | int, tuple[int, ...], str]] = [
            (names[p], found.nodes[p].shape, found.nodes[p].dtype) for p in positions
        ]
        #: per head: the head graph and the graph output it reads
        self._heads: list[tuple[HeadGraph, str]] = []
        for index, head in (heads or {}).items():
            self._results[index] = (len(self._heads), head.shape, head.trace.nodes[-1].dtype)
            self._heads.append((head, names[positions[index]]))

    def replay(self, *inputs: Tensor | Array) -> tuple[Tensor, ...]:
        backend = self._backend
        if len(inputs) != len(self.signature):
            raise InvalidArgumentError(
                f"webnn replay: {len(inputs)} inputs given, the captured function takes "
                f"{len(self.signature)}"
            )
        backend._materialise_all(
            [
                given._data
                for given in inputs
                if isinstance(given, Tensor) and given._backend is backend
            ]
        )
        values = [self._value(index, given) for index, given in enumerate(inputs)]
        feeds = {}
        for name, index in self._feeds.items():
            value = values[index]
            feeds[name] = value.view(np.uint8) if value.dtype == np.bool_ else value
        with backend._lock:
            compiled = backend._compiled(self._key, self._trace, self._threads)
            backend.stats.dispatches += 1
            backend.stats.replays += 1
        # the run itself outside the lock: replays of several graphs (or of one graph) run
        # side by side; a graph the cache drops meanwhile stays alive while it runs
        results = backend.context.compute(compiled.graph, feeds)
        if self._heads:
            with backend._lock:
                heads = [head.run(backend, results[source]) for head, source in self._heads]
        else:
            heads = []
        for node, names in self._checks:
            error = check_failure(node, [results[name] for name in names])
            if error is not None:
                raise error
        made: dict[str | int, Tensor] = {}
        for result, shape, dtype in self._results:
            if result not in made:
                if isinstance(result, int):
                    value = heads[result]
                else:
                    value = results[result]
                if dtype == "bool":
                    value = value.view(np.bool_)
                made[result] = Tensor(leaf(value, dtype), shape, as_dtype(dtype), backend)
        return tuple(made[result] for result, _, _ in self._results)

    def _value(self, index: int, given: Tensor | Array) -> Array:
        shape, dtype = self.signature[index]
        if isinstance(given, Tensor):
            if given._backend is not self._backend:
                raise InvalidArgumentError(
                    f"webnn replay: input {index} is on {given.device!r}, not webnn"
                )
            value = self._backend._materialise(given._data)
        elif isinstance(given, np.ndarray):
            value = given
        else:
            raise InvalidArgumentError(
                f"webnn replay: input {index} must be a tensor or a numpy array, "
                f"got {type(given).__name__}"
            )
        if value.shape != shape or value.dtype != self._dtypes[index]:
            found = "bool" if value.dtype == np.bool_ else value.dtype.name
            raise InvalidArgumentError(
                f"webnn replay: input {index} is {found} {list(value.shape)}; the captured "
                f"function takes {dtype} {list(shape)}"
            )
        if not value.flags.c_contiguous:
            value = np.ascontiguousarray(value)
        return value
