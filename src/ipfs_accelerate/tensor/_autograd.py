"""Reverse-mode automatic differentiation: grad mode, the recorded graph and ``backward``.

The op layer records a :class:`Node` for every backend primitive whose result is floating and
one of whose tensor operands requires grad (``ops._core.run`` calls :func:`record`). Each node
keeps the operands its backward rule needs and an edge per tensor operand: the operand's own
node, or the operand itself when it is a leaf that requires grad (its ``.grad`` accumulates).
The rules live beside the ops (``ops/_autograd.py``) and are written with the op set, so a
backward pass runs on the backend that holds the tensors.

Nothing here runs while no tensor has ever required grad: ``STATE.armed`` stays False and
``run`` skips :func:`record` after one attribute test.
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ipfs_accelerate.errors import (
    AutogradError,
    DeviceMismatchError,
    DtypeError,
    NonFiniteLossError,
    ShapeError,
    UnsupportedOpError,
)

if TYPE_CHECKING:
    from ipfs_accelerate.tensor._dtype import DType
    from ipfs_accelerate.tensor._tensor import Tensor

F = TypeVar("F", bound=Callable[..., Any])

#: a backward rule: (incoming gradient, node) -> one gradient (or None) per tensor operand
Rule = Callable[["Tensor", "Node"], Sequence["Tensor | None"]]


class _State:
    __slots__ = ("armed",)

    def __init__(self) -> None:
        self.armed = False  # becomes True the first time any tensor requires grad


STATE = _State()
#: backend method name -> (rule, saves operands, saves result); filled by ops/_autograd.py
RULES: dict[str, tuple[Rule, bool, bool]] = {}


class _Mode(threading.local):
    enabled: bool = True


_MODE = _Mode()


def is_grad_enabled() -> bool:
    """Whether ops record a graph in this thread (``no_grad`` turns it off)."""
    return _MODE.enabled


class _GradMode:
    """A context manager that is also a decorator, setting grad mode for its extent."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        self._saved: list[bool] = []

    def __enter__(self) -> None:
        self._saved.append(_MODE.enabled)
        _MODE.enabled = self._enabled

    def __exit__(self, *exc: object) -> None:
        _MODE.enabled = self._saved.pop()

    def __call__(self, fn: F) -> F:
        enabled = self._enabled

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _GradMode(enabled):
                return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]


def no_grad() -> _GradMode:
    """Ops inside record nothing (inference, optimizer updates): ``with ia.no_grad():`` or
    ``@ia.no_grad()``."""
    return _GradMode(False)


def enable_grad() -> _GradMode:
    """Recording back on inside a ``no_grad`` region (context manager or decorator)."""
    return _GradMode(True)


@contextmanager
def _recording_off() -> Iterator[None]:
    saved = _MODE.enabled
    _MODE.enabled = False
    try:
        yield
    finally:
        _MODE.enabled = saved


# ----------------------------------------------------------------------------- the graph


class Node:
    """One recorded op: its backward rule, what the rule needs, and where gradients go.

    ``name`` is the backend primitive and, for unary/binary/reduce, its op (``"binary.mul"``).
    ``args`` are the op's arguments; tensor operands are kept only when the rule reads their
    values (else placeholders: their shapes and dtypes live in ``shapes`` and ``dtypes``).
    ``edges`` has one entry per tensor operand: its node, the leaf itself, or None when it
    takes no gradient. ``result`` is a detached alias of the output when the rule reads it.
    """

    __slots__ = (
        "__weakref__",
        "args",
        "dtypes",
        "edges",
        "name",
        "released",
        "result",
        "result_ref",
        "result_version",
        "rule",
        "shapes",
        "versions",
    )

    def __init__(self, name: str, rule: Rule) -> None:
        self.name = name
        self.rule = rule
        self.args: tuple[Any, ...] = ()
        self.shapes: list[tuple[int, ...]] = []
        self.dtypes: list[DType] = []
        self.edges: list[Node | Tensor | None] = []
        self.versions: list[int] = []
        self.result: Tensor | None = None
        self.result_ref: weakref.ref[Tensor] | None = None
        self.result_version = 0
        self.released = False

    def __repr__(self) -> str:
        return f"<backward of {self.name}>"

    def needs(self, position: int) -> bool:
        """Whether tensor operand ``position`` wants a gradient (rules skip work for others)."""
        return self.edges[position] is not None

    def saved(self, position: int) -> Tensor:
        """Tensor operand ``position`` (counting tensors in argument order) as saved."""
        found = _tensor_operands(self.args)[position]
        if found is None:  # a rule read an operand it did not declare as saved
            raise AutogradError(f"{self.name}: backward rule reads operand {position}, not saved")
        return found


def _tensor_operands(args: tuple[Any, ...]) -> list[Any]:
    from ipfs_accelerate.tensor._tensor import Tensor

    found: list[Any] = []
    for a in args:
        if a.__class__ is Tensor:
            found.append(a)
        elif a.__class__ in (list, tuple) and a and a[0].__class__ is Tensor:
            found.extend(a)
        elif a.__class__ is _Dropped:
            found.append(None)
        elif a.__class__ in (list, tuple) and a and a[0].__class__ is _Dropped:
            found.extend(None for _ in a)
    return found


class _Dropped:
    """Stands for a tensor operand whose values the rule does not need."""

    __slots__ = ()


_DROPPED = _Dropped()


def arm() -> None:
    STATE.armed = True


def check_can_require_grad(t: Tensor, context: str) -> None:
    if not t.dtype.is_floating:
        raise DtypeError(
            f"{context}: only floating tensors can require grad, got {t.dtype.name} "
            f"(Tensor(shape={t.shape}, device={t.device!r}))"
        )


def record(name: str, args: tuple[Any, ...], result: Tensor) -> None:
    """Attach a node to ``result`` when grad mode is on and a tensor operand requires grad."""
    if not _MODE.enabled:
        return
    from ipfs_accelerate.tensor._tensor import Tensor

    operands: list[Tensor] = []
    needed = False
    for a in args:
        cls = a.__class__
        if cls is Tensor:
            operands.append(a)
            needed = needed or a._requires_grad
        elif (cls is list or cls is tuple) and a and a[0].__class__ is Tensor:
            for t in a:
                operands.append(t)
                needed = needed or t._requires_grad
    if not needed:
        return
    key = name if name not in ("unary", "binary", "reduce") else f"{name}.{args[0]}"
    entry = RULES.get(key)
    if entry is None:
        raise UnsupportedOpError(
            f"{key}: no backward rule; the op cannot be used on tensors that require grad "
            "(detach() them or run it under ia.no_grad())"
        )
    rule, saves_operands, saves_result = entry
    node = Node(key, rule)
    node.shapes = [t.shape for t in operands]
    node.dtypes = [t.dtype for t in operands]
    node.edges = [
        (t._grad_fn if t._grad_fn is not None else t) if t._requires_grad else None
        for t in operands
    ]
    if saves_operands:
        node.args = args
        node.versions = [version_of(t) for t in operands]
    else:
        node.args = tuple(_drop(a) for a in args)
    if saves_result:
        node.result = result.detach()
        node.result_ref = weakref.ref(result)
        node.result_version = version_of(result)
    result._grad_fn = node
    result._requires_grad = True


def _drop(a: Any) -> Any:
    from ipfs_accelerate.tensor._tensor import Tensor

    if a.__class__ is Tensor:
        return _DROPPED
    if (a.__class__ is list or a.__class__ is tuple) and a and a[0].__class__ is Tensor:
        return [_DROPPED] * len(a)
    return a


# ----------------------------------------------------------------------------- backward


def backward(
    root: Tensor,
    gradient: Tensor | None = None,
    retain_graph: bool = False,
    check_finite: bool | None = None,
) -> None:
    """Accumulate d(root)/d(leaf) into every leaf's ``.grad`` (see :meth:`Tensor.backward`)."""
    from ipfs_accelerate.tensor._tensor import Tensor

    if not root._requires_grad:
        raise AutogradError(
            f"backward: {_describe(root)} does not require grad and has no grad_fn "
            "(no operand of the ops that made it required grad)"
        )
    if gradient is None:
        if root.size != 1:
            raise AutogradError(
                f"backward: gradient can be implicit only for a one-element output; "
                f"{_describe(root)} has {root.size} elements: pass gradient="
            )
        from ipfs_accelerate.tensor._creation import full

        gradient = full(root.shape, 1.0, root.dtype, root.device)
    else:
        if not isinstance(gradient, Tensor):
            raise DtypeError(f"backward: gradient must be a Tensor, got {type(gradient).__name__}")
        if gradient.shape != root.shape:
            raise ShapeError(
                f"backward: gradient of shape {gradient.shape} does not match {_describe(root)}"
            )
        if gradient._backend is not root._backend:
            raise DeviceMismatchError(
                f"backward: gradient is on {gradient.device!r}, {_describe(root)} is on "
                f"{root.device!r}"
            )
        if gradient.dtype is not root.dtype:
            raise DtypeError(
                f"backward: gradient dtype {gradient.dtype.name} differs from {_describe(root)}"
            )
        gradient = gradient.detach()
    if check_finite is None:
        check_finite = root._backend.shares_host_memory and root.size == 1
    if check_finite:
        _check_finite(root)
    with _recording_off():
        _run_backward(root, gradient, retain_graph)


def _check_finite(root: Tensor) -> None:
    import numpy as np

    values = root.numpy()
    if not np.isfinite(values).all():
        bad = float(values.reshape(-1)[~np.isfinite(values.reshape(-1))][0])
        made_by = root._grad_fn.name if root._grad_fn is not None else "a leaf"
        raise NonFiniteLossError(
            f"backward: {_describe(root)} (made by {made_by}) holds {bad}; "
            "its gradients would be NaN/inf"
        )


def _describe(t: Tensor) -> str:
    return f"Tensor(shape={t.shape}, dtype={t.dtype.name}, device={t.device!r})"


def _order(root: Node) -> list[Node]:
    """Nodes reachable from ``root``, each after every node that feeds it a gradient."""
    order: list[Node] = []
    seen: set[int] = {id(root)}
    stack: list[tuple[Node, int]] = [(root, 0)]
    while stack:
        node, i = stack.pop()
        if i < len(node.edges):
            stack.append((node, i + 1))
            edge = node.edges[i]
            if edge.__class__ is Node and id(edge) not in seen:
                seen.add(id(edge))
                stack.append((edge, 0))  # type: ignore[arg-type]
        else:
            order.append(node)
    order.reverse()
    return order


def _run_backward(root: Tensor, gradient: Tensor, retain_graph: bool) -> None:

    owned = _Ownership(gradient)
    if root._grad_fn is None:  # the root is itself a leaf
        _accumulate(root, gradient, owned)
        return
    nodes = _order(root._grad_fn)
    for node in nodes:
        _check_usable(node)
    pending: dict[int, Tensor] = {id(root._grad_fn): gradient}
    leaves: dict[int, tuple[Tensor, Tensor]] = {}
    sums = _Sums()
    for node in nodes:
        grad = pending.pop(id(node), None)
        if grad is None:
            continue
        sums.hand_out(grad)
        grads = node.rule(grad, node)
        for edge, shape, dtype, g in zip(node.edges, node.shapes, node.dtypes, grads, strict=True):
            if edge is None or g is None:
                continue
            if g.shape != shape:
                raise AutogradError(
                    f"{node.name}: backward rule gave a gradient of shape {g.shape} for an "
                    f"operand of shape {shape}"
                )
            if g.dtype is not dtype:  # a cast or promotion in the forward pass
                g = g.astype(dtype)
            if edge.__class__ is Node:
                key = id(edge)
                prev = pending.get(key)
                pending[key] = g if prev is None else sums.add(prev, g)
            else:
                leaf: Tensor = edge  # type: ignore[assignment]
                prior = leaves.get(id(leaf))
                leaves[id(leaf)] = (leaf, g if prior is None else sums.add(prior[1], g))
        if not retain_graph:
            _release(node)
    for leaf, g in leaves.values():
        _accumulate(leaf, g, owned)


class _Sums:
    """Gradient sums the engine itself allocated, which it may add further terms into.

    The first sum of two gradients is a new tensor (either term may be shared: a rule passes
    its incoming gradient on to several operands); later terms are added into it in place
    on host-memory backends, where a node or leaf with many consumers (a hidden state read by
    the query, key, value and residual paths) would otherwise allocate a sum per term. A sum
    leaves the engine's hands when it is given to a rule (which may pass it on)."""

    def __init__(self) -> None:
        self._owned: dict[int, Tensor] = {}  # keeps them alive: ids are never reused meanwhile

    def add(self, total: Tensor, g: Tensor) -> Tensor:
        if id(total) in self._owned and total._backend.shares_host_memory:
            data = total._data
            np.add(data, g._data, out=data)
            _sum_marks(data, data, g._data)
            return total
        out = total + g
        self._owned[id(out)] = out
        if out._backend.shares_host_memory:
            _sum_marks(out._data, total._data, g._data)
        return out

    def hand_out(self, grad: Tensor) -> None:
        self._owned.pop(id(grad), None)


def _sum_marks(out: Any, *terms: Any) -> None:
    """``out`` holds the sum of ``terms``: the rows it can be nonzero in are the union of
    theirs where each term's are known (two lookups of one embedding table), else unknown
    (hal/cpu/_rows.py: the optimizers update those rows only)."""
    from ipfs_accelerate.hal.cpu import _rows

    _rows.mark_sum(out, terms)


def _check_usable(node: Node) -> None:
    if node.released:
        raise AutogradError(
            f"backward: trying to go through the graph a second time ({node.name}): its saved "
            "tensors were freed by the first backward; pass retain_graph=True to the first call"
        )
    if node.versions:
        for t, version in zip(_tensor_operands(node.args), node.versions, strict=True):
            if t is not None and version_of(t) != version:
                raise AutogradError(
                    f"backward: {_describe(t)}, an operand saved by {node.name}, was modified "
                    f"in place (version {version_of(t)}, saved at version {version})"
                )
    if node.result_ref is not None:
        live = node.result_ref()
        if live is not None and version_of(live) != node.result_version:
            raise AutogradError(
                f"backward: the output of {node.name} ({_describe(live)}) was modified in "
                f"place after it was saved (version {version_of(live)}, saved at "
                f"{node.result_version})"
            )


def _release(node: Node) -> None:
    node.released = True
    node.args = ()
    node.result = None
    node.result_ref = None


class _Ownership:
    """Which host buffers the ``.grad`` tensors of one backward pass may take as they are.

    A rule may pass a gradient straight through (add, reshape, copy...), so a leaf's gradient
    can share memory with the caller's ``gradient`` or with another leaf's. Writing one in
    place (``x.grad[0] = 0``, ``copy_``) would then change the other: a buffer is given to
    one leaf at most, never the caller's, and copied otherwise. Device backends write no
    buffer in place (``copy_`` swaps a tensor's handle), so sharing there is harmless."""

    def __init__(self, gradient: Tensor) -> None:
        self._taken: set[int] = set()
        if gradient._backend.shares_host_memory:
            self._taken.add(id(_root_buffer(gradient._data)))

    def take(self, grad: Tensor) -> Tensor:
        if not grad._backend.shares_host_memory:
            return grad
        buffer = id(_root_buffer(grad._data))
        if buffer in self._taken:
            return grad.clone()
        self._taken.add(buffer)
        return grad


def _root_buffer(array: Any) -> Any:
    """The numpy array that owns the memory ``array`` views (itself if it owns it)."""
    while isinstance(getattr(array, "base", None), np.ndarray):
        array = array.base
    return array


# in-place writes per host buffer: on cpu, reshape/transpose/slice results are views of one
# buffer, so a write through any of them must show in the version of every other
_BUFFER_VERSIONS: dict[int, int] = {}


def version_of(t: Tensor) -> int:
    """How many in-place writes ``t`` has seen (through any view of its memory on cpu)."""
    if t._backend.shares_host_memory:
        return t._version + _BUFFER_VERSIONS.get(id(_root_buffer(t._data)), 0)
    return t._version


def bump_version(t: Tensor) -> None:
    """Count an in-place write into ``t``."""
    if not t._backend.shares_host_memory:
        t._version += 1
        return
    root = _root_buffer(t._data)
    key = id(root)
    if key not in _BUFFER_VERSIONS:
        _BUFFER_VERSIONS[key] = 0
        weakref.finalize(root, _BUFFER_VERSIONS.pop, key, None)  # ids are reused once freed
    _BUFFER_VERSIONS[key] += 1


def _accumulate(leaf: Tensor, grad: Tensor, owned: _Ownership) -> None:
    if grad.dtype is not leaf.dtype:
        grad = grad.astype(leaf.dtype)
    if leaf._grad is None:
        leaf._grad = owned.take(grad.detach())
    else:
        leaf._grad = leaf._grad + grad
