"""Lazy graph nodes and the trace of the computation behind a tensor.

A :class:`Node` is either a *leaf* (``op is None``: a host array, immutable for its whole life)
or a *pending* operation (``op``, ``attrs``, ``inputs``). Materialising a node turns it into a
leaf in place, so every other node that consumes it reads the computed value from then on.

:func:`trace` walks the pending DAG behind a node and returns the structural key of the
computation: the ops, attributes, shapes and dtypes in a canonical order, and for each leaf
its role (a per-call *input* known only by dtype and shape, or a *parameter* known by its
serial number). Two computations with equal keys lower to the same graph, so the key indexes
the compiled-graph cache.
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Node", "Trace", "leaf", "trace", "trace_roots"]

Array = np.ndarray[Any, Any]
Shape = tuple[int, ...]

#: serial numbers of parameter leaves: unique for the life of the process, so a cached graph
#: that embeds a parameter can never be matched by another parameter that reuses its memory
_SERIALS = itertools.count(1)


class Node:
    """A lazy tensor value: a leaf holding host data, or a pending op over other nodes.

    ``checks`` are pending nodes (op ``"check"``) that validate this op's result (integer
    overflow, index range, value-changing casts); they run in the same graph as the op and
    raise at readback.
    """

    __slots__ = ("attrs", "checks", "dtype", "inputs", "op", "param", "shape", "value")

    def __init__(
        self,
        op: str | None,
        attrs: tuple[Any, ...],
        inputs: tuple[Node, ...],
        shape: Shape,
        dtype: str,
        value: Array | None = None,
        param: int = 0,
    ) -> None:
        self.op = op
        self.attrs = attrs
        self.inputs = inputs
        self.shape = shape
        self.dtype = dtype
        self.value = value
        #: serial number when this leaf is a parameter (a graph constant), else 0
        self.param = param
        self.checks: tuple[Node, ...] = ()

    def __repr__(self) -> str:
        if self.op is None:
            role = f"param #{self.param}" if self.param else "input"
            return f"Node(leaf {self.dtype} {list(self.shape)}, {role})"
        return f"Node({self.op}{list(self.attrs)!r} -> {self.dtype} {list(self.shape)})"

    def become_leaf(self, value: Array, param: bool) -> None:
        """Replace the pending op by its computed value (dropping the references to its inputs)."""
        value.flags.writeable = False
        self.value = value
        self.op = None
        self.attrs = ()
        self.inputs = ()
        self.checks = ()
        self.param = next(_SERIALS) if param else 0

    def make_parameter(self) -> None:
        if self.op is None and not self.param:
            self.param = next(_SERIALS)


def leaf(value: Array, dtype: str, *, param: bool = False) -> Node:
    """A leaf over ``value`` (which the caller hands over: nobody may write to it again)."""
    value.flags.writeable = False
    node = Node(None, (), (), value.shape, dtype, value)
    if param:
        node.param = next(_SERIALS)
    return node


@dataclass(slots=True)
class Trace:
    """The computation behind some nodes, in topological order.

    ``nodes[i]`` is the node at position i; leaves appear where first reached. ``key`` is
    hashable and equal for structurally identical computations. ``outputs`` are the positions
    whose values the graph returns: the requested node, intermediates that something outside
    the trace still references (so they are not computed twice), and every check.
    """

    nodes: list[Node]
    key: tuple[Any, ...]
    outputs: tuple[int, ...]
    checks: tuple[int, ...]
    #: per position: whether the value depends on a per-call input (else only on parameters)
    variable: list[bool]


# references to a node that trace() itself holds when it counts them (see _external)
_OWN_REFERENCES = 3


def trace(root: Node) -> Trace:
    """Walk the pending DAG behind ``root`` (and the checks of every op in it)."""
    nodes, entries, variable, checks, consumers, roots = _walk((root,))
    # _walk's local variables are gone now: the reference counts below see only real holders
    extra = _external(nodes, consumers, roots[0])
    outputs = (roots[0], *extra, *checks)
    return Trace(nodes, (tuple(entries), outputs), outputs, tuple(checks), variable)


def trace_roots(roots: tuple[Node, ...]) -> tuple[Trace, list[int]]:
    """The DAG behind several nodes as one trace whose outputs are those nodes (each once)
    and every check, and each root's position. Unlike :func:`trace`, intermediates are never
    extra outputs: the caller (a captured function) returns only its results."""
    nodes, entries, variable, checks, _, positions = _walk(roots)
    distinct = tuple(dict.fromkeys(positions))
    outputs = (*distinct, *checks)
    return Trace(nodes, (tuple(entries), outputs), outputs, tuple(checks), variable), positions


def _walk(
    roots: tuple[Node, ...],
) -> tuple[list[Node], list[tuple[Any, ...]], list[bool], list[int], dict[int, int], list[int]]:
    """Post-order walk: nodes, key entries, variability, check positions, how often each node
    is an operand of the walked ops, and the roots' positions."""
    position: dict[int, int] = {}
    nodes: list[Node] = []
    entries: list[tuple[Any, ...]] = []
    variable: list[bool] = []
    checks: list[int] = []
    consumers: dict[int, int] = {}
    stack: list[tuple[Node, bool]] = [(root, False) for root in reversed(roots)]
    while stack:
        node, expanded = stack.pop()
        key = id(node)
        if key in position:
            continue
        if node.op is None:
            position[key] = len(nodes)
            nodes.append(node)
            if node.param:
                entries.append(("P", node.param, node.dtype, node.shape))
                variable.append(False)
            else:
                entries.append(("I", node.dtype, node.shape))
                variable.append(True)
            continue
        if not expanded:
            stack.append((node, True))
            for source in reversed(node.inputs):
                if id(source) not in position:
                    stack.append((source, False))
            continue
        varies = False
        operands = []
        for source in node.inputs:
            index = position[id(source)]
            operands.append(index)
            varies = varies or variable[index]
            consumers[id(source)] = consumers.get(id(source), 0) + 1
        position[key] = len(nodes)
        if node.op == "check":
            checks.append(len(nodes))
        nodes.append(node)
        entries.append((node.op, node.attrs, node.dtype, node.shape, tuple(operands)))
        variable.append(varies)
        for check in reversed(node.checks):
            stack.append((check, False))
    return nodes, entries, variable, checks, consumers, [position[id(root)] for root in roots]


def _external(nodes: list[Node], consumers: dict[int, int], root: int) -> list[int]:
    """Pending intermediates that something outside the trace references (a live Tensor, or
    an op not yet computed): computing them now as extra outputs saves recomputing them later.

    The count comes from the interpreter's reference counts: a node referenced only by the
    ops of this trace has exactly ``consumers`` references besides this function's own. Where
    the count is off the only cost is an extra output or a later recomputation, never a wrong
    value.
    """
    found = []
    for index in range(len(nodes)):
        node = nodes[index]
        if index == root or node.op is None or node.op == "check" or node.op in ("full", "arange"):
            continue
        # held here: the list, this loop's variable and getrefcount's argument
        if sys.getrefcount(node) - _OWN_REFERENCES > consumers.get(id(node), 0):
            found.append(index)
    return found
