"""Lazy fusion of element-wise chains.

A unary or binary element-wise op whose kernel cannot fail (floats; integer ops with overflow
checks run on their own) does not record a dispatch: it returns a *pending* handle holding
the op and its operands (computed handles, other pending handles, scalars). The first access
to the handle's buffer (a readback, or any op that is not element-wise) runs the whole
expression DAG as one generated kernel: one dispatch and one pass over memory instead of one
per op. An expression is cut (its pending operands computed first) beyond MAX_NODES ops,
MAX_LEAVES input tensors or MAX_SCALARS scalars, which bounds kernel size and bindings; the
kernel is cached by the expression's structure, so a loop compiles it once.

A pending value that is never read costs nothing; one read by several expressions is
recomputed in each (element-wise ops are cheaper than a memory round trip).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ipfs_accelerate.hal.webgpu._kernels import _elementwise as ew
from ipfs_accelerate.hal.webgpu._kernels._wgsl import P_N, PARAM_WORDS, WORKGROUP, WType
from ipfs_accelerate.hal.webgpu._memory import GPUArray

if TYPE_CHECKING:
    from ipfs_accelerate.hal.webgpu._dispatcher import Dispatcher

MAX_NODES = 12
MAX_LEAVES = 6
MAX_SCALARS = (PARAM_WORDS - 4) // 4
FIRST_SCALAR = 4

Scalar = bool | int | float


class Expr:
    """One pending op: ``op`` ("unary"/"binary", name) over ``operands`` computed in ``wtype``,
    producing ``out``; ``nodes``/``leaves``/``scalars`` bound the size of its whole DAG."""

    __slots__ = ("fuser", "leaves", "nodes", "op", "operands", "out", "scalars", "wtype")

    def __init__(
        self,
        fuser: Fuser,
        op: tuple[str, str],
        wtype: WType,
        out: WType,
        operands: tuple[Any, ...],
        counts: tuple[int, int, int],
    ) -> None:
        self.fuser = fuser
        self.op = op
        self.wtype = wtype
        self.out = out
        self.operands = operands
        self.nodes, self.leaves, self.scalars = counts

    def materialize(self, handle: GPUArray) -> None:
        self.fuser.materialize(handle)


class Fuser:
    """Builds pending handles and runs them as fused kernels on one dispatcher."""

    def __init__(self, dispatcher: Dispatcher) -> None:
        self._dispatcher = dispatcher
        self._bodies: dict[tuple[str, str, str], ew.Body] = {}

    def body(self, op: tuple[str, str], wtype: WType) -> ew.Body:
        key = (op[0], op[1], wtype.name)
        found = self._bodies.get(key)
        if found is None:
            found = (
                ew.unary_body(op[1], wtype) if op[0] == "unary" else ew.binary_body(op[1], wtype)
            )
            self._bodies[key] = found
        return found

    def defer(
        self,
        op: tuple[str, str],
        wtype: WType,
        out: WType,
        operands: Sequence[Any],
        scalar_words: Sequence[Any],
        n: int,
    ) -> GPUArray:
        """A pending handle for ``op`` over tensors/scalars ``operands`` (``scalar_words`` gives
        each scalar operand's parameter words, None for tensors)."""
        items, counts = self._items(operands, scalar_words)
        if counts[0] > MAX_NODES or counts[1] > MAX_LEAVES or counts[2] > MAX_SCALARS:
            for item in items:  # compute the pending operands first: they become inputs
                if item.__class__ is GPUArray and item.expr is not None:
                    _ = item.buf
            items, counts = self._items(operands, scalar_words)
        handle = self._dispatcher.pending(n * out.itemsize)
        handle.expr = Expr(self, op, wtype, out, tuple(items), counts)
        return handle

    @staticmethod
    def _items(
        operands: Sequence[Any], scalar_words: Sequence[Any]
    ) -> tuple[list[Any], tuple[int, int, int]]:
        nodes, leaves, scalars = 1, 0, 0
        items: list[Any] = []
        for operand, words in zip(operands, scalar_words, strict=True):
            if words is not None:
                items.append(words)
                scalars += 1
                continue
            handle: GPUArray = operand._data
            items.append(handle)
            expr = handle.expr
            if expr is None:
                leaves += 1
            else:
                nodes += expr.nodes
                leaves += expr.leaves
                scalars += expr.scalars
        return items, (nodes, leaves, scalars)

    # ------------------------------------------------------------------ running

    def materialize(self, root: GPUArray) -> None:
        """Run ``root``'s expression as one kernel into a new buffer."""
        dispatcher = self._dispatcher
        leaves: list[GPUArray] = []
        leaf_types: list[WType] = []
        nodes: list[tuple[Expr, tuple[tuple[str, int], ...]]] = []
        scalar_words: list[Any] = []
        scalar_types: list[WType] = []
        memo: dict[int, tuple[str, int]] = {}
        # depth-first, post-order, without a recursive closure (a closure calling itself is
        # a reference cycle that would keep every input alive until the garbage collector runs)
        stack: list[tuple[GPUArray, WType, bool]] = [(root, root.expr.out, False)]
        while stack:
            handle, as_type, expanded = stack.pop()
            if id(handle) in memo:
                continue
            expr = handle.expr
            if expr is None:  # a computed tensor: an input of the kernel
                memo[id(handle)] = ("l", len(leaves))
                leaves.append(handle)
                leaf_types.append(as_type)
                continue
            tensors = [item for item in expr.operands if item.__class__ is GPUArray]
            if not expanded:
                stack.append((handle, as_type, True))
                stack.extend((item, expr.wtype, False) for item in reversed(tensors))
                continue
            refs = []
            for item in expr.operands:
                if item.__class__ is GPUArray:
                    refs.append(memo[id(item)])
                else:
                    refs.append(("s", len(scalar_words)))
                    scalar_words.append(item)
                    scalar_types.append(expr.wtype)
            memo[id(handle)] = ("n", len(nodes))
            nodes.append((expr, tuple(refs)))
        signature = (
            tuple(t.name for t in leaf_types),
            tuple(t.name for t in scalar_types),
            tuple((e.op, e.wtype.name, e.out.name, refs) for e, refs in nodes),
        )
        key = ("fused", signature)
        entry = dispatcher.cached(key)
        if entry is None:

            def make() -> tuple[str, str, tuple[int, int, bool], Any, WType]:
                source = self._source(leaf_types, scalar_types, nodes)
                name = "fused[" + ",".join(e.op[1] for e, _ in nodes) + f"].{nodes[-1][0].out.name}"
                return name, source, (len(leaves), 1, False), (), nodes[-1][0].out

            entry = dispatcher.kernel(key, make)
        buffers = [leaf.buf for leaf in leaves]
        out_wtype: WType = root.expr.out
        count = root.nbytes // out_wtype.itemsize
        root.attach(dispatcher.pool.acquire(root.nbytes))
        root.expr = None
        words = [count, 0, 0, 0]
        for w in scalar_words:
            words.extend(w)
        dispatcher.dispatch_flat(entry, buffers, root, words, count)

    def _source(
        self,
        leaf_types: list[WType],
        scalar_types: list[WType],
        nodes: list[tuple[Expr, tuple[tuple[str, int], ...]]],
    ) -> str:
        out = nodes[-1][0].out
        types = [*leaf_types, *scalar_types]
        bodies = [self.body(e.op, e.wtype) for e, _ in nodes]
        for e, _ in nodes:
            types.extend((e.wtype, e.out))
        lines = [ew.preamble(types, "\n".join(b.code for b in bodies))]
        for j, t in enumerate(leaf_types):
            lines.append(
                f"@group(0) @binding({1 + j}) var<storage, read> in{j}: array<{t.storage}>;"
            )
        lines.append(
            f"@group(0) @binding({1 + len(leaf_types)}) "
            f"var<storage, read_write> out0: array<{out.storage}>;"
        )
        for k, ((expr, refs), body) in enumerate(zip(nodes, bodies, strict=True)):
            params = ", ".join(f"a{p}: {expr.wtype.compute}" for p in range(len(refs)))
            code = "\n  ".join(body.code.split("\n"))
            lines.append(
                f"fn node{k}({params}) -> {expr.out.compute} {{\n"
                f"  var r: {expr.out.compute};\n  {code}\n  return r;\n}}"
            )
        main = [
            f"@compute @workgroup_size({WORKGROUP})",
            "fn main(@builtin(global_invocation_id) gid: vec3<u32>, "
            "@builtin(num_workgroups) nwg: vec3<u32>) {",
            "  let i = flat_index(gid, nwg);",
            f"  if (i >= pu({P_N}u)) {{ return; }}",
        ]
        for j, t in enumerate(leaf_types):
            main.append(f"  let l{j} = {t.load(f'in{j}[i]')};")
        for j, t in enumerate(scalar_types):
            main.append(f"  let s{j} = {t.scalar(FIRST_SCALAR + 4 * j)};")
        names = {"l": "l", "s": "s", "n": "t"}
        last = len(nodes) - 1
        for k, (expr, refs) in enumerate(nodes):
            args = ", ".join(f"{names[kind]}{index}" for kind, index in refs)
            value = f"node{k}({args})"
            if expr.out.storage == "f16" and k != last:
                # float16 values round after every op, as numpy's float16 ops do
                value = f"f32(to_f16({value}))"
            main.append(f"  let t{k} = {value};")
        main.append(f"  out0[i] = {out.store(f't{len(nodes) - 1}')};")
        main.append("}")
        lines.extend(main)
        return "\n".join(lines)


__all__ = ["MAX_LEAVES", "MAX_NODES", "MAX_SCALARS", "Expr", "Fuser"]
