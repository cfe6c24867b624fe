"""Emitting a trace of lazy nodes as one WebNN graph (MLGraphBuilder calls).

Every node op of :mod:`._backend` has a ``_op_<name>`` method here that emits builder calls
for it, given the operands of its inputs. Conventions:

* bool values are uint8 operands holding 0 or 1 (WebNN has no bool); every op that produces
  a bool produces only 0 and 1;
* float16 work that rounds more than once (transcendental functions, reductions, matrix
  products, normalisations, floor division) runs in float32 and rounds once at the end, as
  numpy's float16 loops do;
* ops whose WebNN counterpart lacks a dtype (integer matmul, uint8 reductions, exact integer
  powers...) are composed from ops that have it, exactly;
* checked ops (integer overflow, gather indices, value-changing casts) compute flag operands
  beside their result; the op's ``check`` node returns them as graph outputs, and
  :func:`._checks.check_failure` turns their values into the CPU backend's typed errors at readback.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from ipfs_accelerate.hal.webnn._arith import (
    ArithmeticEmitter,
    scalar_token,
    token_value,
    webnn_type,
)
from ipfs_accelerate.hal.webnn._checks import FLOAT, INT_RANGE, INTEGER, fits
from ipfs_accelerate.hal.webnn._graph import Node, Trace

if TYPE_CHECKING:
    from ipfs_accelerate.webnn import MLGraphBuilder, MLOperand

__all__ = [
    "GraphOutput",
    "TraceEmitter",
    "scalar_token",
    "token_value",
    "webnn_type",
]

# functions of one float value that round more than once: float16 computes them in float32
_WIDEN_UNARY = frozenset(
    {
        "exp",
        "log",
        "sqrt",
        "rsqrt",
        "erf",
        "sin",
        "cos",
        "tanh",
        "sigmoid",
        "silu",
        "gelu",
        "gelu_tanh",
        "reciprocal",
    }
)


class GraphOutput(NamedTuple):
    """Where one graph output belongs in the trace: the value of the node at ``position``, or,
    when ``check`` is set, one of the values the check node at ``position`` reads (a check's
    outputs follow each other in the order :func:`check_failure` takes them)."""

    name: str
    position: int
    check: bool


@dataclass(frozen=True, slots=True)
class _Scatter:
    """An index_add into a table of ``shape``: its ``indices`` (int64, (k, 1)) and ``rows``
    (outer, len(indices), inner) along ``axis``, and the table it scatters into (``base``)."""

    axis: int
    shape: tuple[int, ...]
    dtype: str
    base: MLOperand
    indices: MLOperand
    rows: MLOperand


class TraceEmitter(ArithmeticEmitter):
    """Emits one trace into an MLGraphBuilder; ``operands[i]`` is the operand of position i."""

    def __init__(self, builder: MLGraphBuilder) -> None:
        super().__init__(builder)
        self._position_of: dict[int, int] = {}
        #: index_add nodes into zeros, by position: (node, indices, source) operands, so that
        #: an add of their result scatters into the other addend instead (see _op_binary)
        self._scatters: dict[int, _Scatter] = {}
        #: the (min, max) of each index operand a gather or index_add checked, by operand id:
        #: an encoder gathers through the same indices in every layer, checked once
        self._index_ranges: dict[int, tuple[MLOperand, MLOperand]] = {}

    # ------------------------------------------------------------------ whole trace

    def emit(self, trace: Trace) -> tuple[dict[str, int], list[tuple[GraphOutput, MLOperand]]]:
        """Emit every node; return (graph input name -> position, the graph outputs in order,
        each with its operand). Parameter leaves become constants, the other leaves inputs."""
        operands: list[MLOperand | None] = []
        inputs: dict[str, int] = {}
        position_of = {id(node): i for i, node in enumerate(trace.nodes)}
        self._position_of = position_of
        for index, node in enumerate(trace.nodes):
            if node.op is None:
                operands.append(self._leaf(node, index, inputs))
                continue
            args = [operands[position_of[id(source)]] for source in node.inputs]
            if node.op == "check":
                parent = position_of[id(node.inputs[0])]
                self.aux[index] = self.aux.pop(parent)
                operands.append(None)
                continue
            self._index = index
            handler: Callable[[Node, list[Any]], MLOperand] = getattr(self, f"_op_{node.op}")
            result = handler(node, args)
            if result.shape != node.shape or result.data_type != webnn_type(node.dtype):
                raise AssertionError(  # pragma: no cover - an emitter bug, never user input
                    f"webnn emitter: {node.op}{node.attrs} gave {result.data_type} "
                    f"{list(result.shape)}, expected {node.dtype} {list(node.shape)}"
                )
            operands.append(result)
        outputs: list[tuple[GraphOutput, MLOperand]] = []
        used: set[int] = set()
        #: check values already among the outputs (several checks of one index range read
        #: one graph output), by operand id: (output name, the operand it returns)
        checked: dict[int, tuple[str, MLOperand]] = {}
        for position in trace.outputs:
            if trace.nodes[position].op == "check":
                for k, operand in enumerate(self.aux[position]):
                    name, returned = checked.get(id(operand), (f"c{position}_{k}", None))
                    if returned is None:
                        returned = self._distinct(operand, used)
                        checked[id(operand)] = (name, returned)
                    outputs.append((GraphOutput(name, position, True), returned))
            else:
                value = operands[position]
                assert value is not None
                outputs.append(
                    (GraphOutput(f"o{position}", position, False), self._distinct(value, used))
                )
        return inputs, outputs

    def _leaf(self, node: Node, index: int, inputs: dict[str, int]) -> MLOperand:
        desc = {"dataType": webnn_type(node.dtype), "shape": list(node.shape)}
        if node.param:
            assert node.value is not None
            value = node.value.view(np.uint8) if node.dtype == "bool" else node.value
            operand = self.b.constant(desc, value)
        else:
            name = f"x{index}"
            inputs[name] = index
            operand = self.b.input(name, desc)
        self._not_results.add(id(operand))
        return operand

    def _distinct(self, operand: MLOperand, used: set[int]) -> MLOperand:
        """A graph output must be an op's result, and each output its own operand."""
        if id(operand) in self._not_results or id(operand) in used:
            operand = self.b.identity(operand)
        used.add(id(operand))
        return operand

    # ------------------------------------------------------------------ helpers

    # ================================================================== generators

    def _op_full(self, node: Node, args: list[MLOperand]) -> MLOperand:
        value = token_value(node.attrs[0])
        return self.b.expand(self.const(value, node.dtype), list(node.shape))

    def _op_arange(self, node: Node, args: list[MLOperand]) -> MLOperand:
        start, step, size = token_value(node.attrs[0]), token_value(node.attrs[1]), node.attrs[2]
        values = arange_values(start, step, size, node.dtype)
        desc = {"dataType": webnn_type(node.dtype), "shape": [size]}
        constant = self.b.constant(desc, values.view(np.uint8) if node.dtype == "bool" else values)
        self._not_results.add(id(constant))
        return constant

    # ================================================================== element-wise

    def _op_unary(self, node: Node, args: list[MLOperand]) -> MLOperand:
        (name,) = node.attrs
        (x,) = args
        source = node.inputs[0].dtype
        b = self.b
        if name in _WIDEN_UNARY and source == "float16":
            return self.narrow(self._float_unary(name, self.widen(x)), "float16")
        if name in _WIDEN_UNARY:
            return self._float_unary(name, x)
        if name == "neg":
            if source == "uint8":
                self.flags(self.any(b.not_equal(x, self.const(0, "uint8"))))
                return b.sub(self.const(0, "uint8"), x)
            if source in INTEGER:
                self.flags(self.any(b.equal(x, self.const(INT_RANGE[source][0], source))))
            return b.neg(x)
        if name == "abs":
            if source in ("uint8", "bool"):
                return x
            if source in INTEGER:
                self.flags(self.any(b.equal(x, self.const(INT_RANGE[source][0], source))))
            return b.abs(x)
        if name == "relu":
            return x if source == "uint8" else b.relu(x)
        if name == "sign":
            if source == "uint8":
                return b.greater(x, self.const(0, "uint8"))
            return b.sign(x)
        if name == "square":
            return b.mul(x, x)
        if name == "floor":
            return b.floor(x)
        if name == "ceil":
            return b.ceil(x)
        if name == "round":
            return b.round_even(x)
        if name == "logical_not":
            return b.equal(x, self.const(0, source))
        if name in ("isnan", "isinf", "isfinite"):
            if source not in FLOAT:
                return self.zeros_u8(node.shape, 1 if name == "isfinite" else 0)
            if name == "isnan":
                return b.is_nan(x)
            if name == "isinf":
                return b.is_infinite(x)
            return b.logical_not(b.logical_or(b.is_nan(x), b.is_infinite(x)))
        raise AssertionError(f"unknown unary op {name!r}")  # pragma: no cover

    def _float_unary(self, name: str, x: MLOperand) -> MLOperand:
        b = self.b
        dtype = x.data_type
        if name == "rsqrt":
            return b.reciprocal(b.sqrt(x))
        if name == "silu":
            return b.mul(x, b.sigmoid(x))
        if name == "gelu_tanh":
            inner = b.mul(b.mul(b.mul(x, x), x), self.const(0.044715, dtype))
            inner = b.mul(b.add(inner, x), self.const(math.sqrt(2.0 / math.pi), dtype))
            half = b.mul(x, self.const(0.5, dtype))
            return b.mul(half, b.add(b.tanh(inner), self.const(1.0, dtype)))
        method: Callable[[MLOperand], MLOperand] = getattr(b, name)
        return method(x)

    def _op_binary(self, node: Node, args: list[MLOperand]) -> MLOperand:
        name, token_a, token_b = node.attrs
        it = iter(args)
        tensor_a = next(it) if token_a is None else None
        tensor_b = next(it) if token_b is None else None
        source = next(s.dtype for s in node.inputs)
        a = self.const_like(token_a, tensor_a, source)
        c = self.const_like(token_b, tensor_b, source)
        b = self.b
        if name in ("equal", "not_equal", "less", "less_equal", "greater", "greater_equal"):
            method = {
                "less": "lesser",
                "less_equal": "lesser_or_equal",
                "greater_equal": "greater_or_equal",
            }
            return getattr(b, method.get(name, name))(a, c)
        if name in ("logical_and", "logical_or", "logical_xor"):
            return getattr(b, name)(self.truth(a, source), self.truth(c, source))
        if name == "maximum":
            return b.max(a, c)
        if name == "minimum":
            return b.min(a, c)
        if name == "div":
            return b.div(a, c)
        if name in ("floor_divide", "remainder"):
            if source in FLOAT:
                result = self._float_floor_divide(name, self.widen(a), self.widen(c))
                return self.narrow(result, source)
            return self._int_floor_divide(name, a, c, source)
        if name == "pow":
            if source in FLOAT:
                return self.narrow(b.pow(self.widen(a), self.widen(c)), source)
            return self._int_pow(a, c, source, node.shape)
        if name == "add" and tensor_a is not None and tensor_b is not None:
            merged = self._add_scatter(node, args)
            if merged is not None:
                return merged
        result = getattr(b, name)(a, c)
        if source in INTEGER:
            self.flags(self.any(self._overflow(name, a, c, result, source)))
        return result

    # ------------------------------------------------------------------ where, clamp, cast

    def _op_where(self, node: Node, args: list[MLOperand]) -> MLOperand:
        token_a, token_b = node.attrs
        it = iter(args)
        condition = next(it)
        tensor_a = next(it) if token_a is None else None
        tensor_b = next(it) if token_b is None else None
        a = self.const_like(token_a, tensor_a, node.dtype)
        c = self.const_like(token_b, tensor_b, node.dtype)
        result = self.b.where(condition, a, c)
        if list(result.shape) != list(node.shape):
            result = self.b.expand(result, list(node.shape))
        return result

    def _op_clamp(self, node: Node, args: list[MLOperand]) -> MLOperand:
        low, high = node.attrs
        (x,) = args
        options: dict[str, Any] = {}
        if low is not None:
            options["min_value"] = token_value(low)
        if high is not None:
            options["max_value"] = token_value(high)
        if low is not None and high is not None and token_value(low) > token_value(high):
            # numpy's clip: minimum(maximum(x, low), high) gives high everywhere but NaN
            return self.b.min(
                self.b.max(x, self.const(token_value(low), node.dtype)),
                self.const(token_value(high), node.dtype),
            )
        return self.b.clamp(x, **options)

    def _op_cast(self, node: Node, args: list[MLOperand]) -> MLOperand:
        (x,) = args
        source, target = node.inputs[0].dtype, node.dtype
        b = self.b
        if source == "bool":
            return self.cast(x, target)
        if target == "bool":
            not_bit = b.logical_and(
                b.not_equal(x, self.const(0, source)), b.not_equal(x, self.const(1, source))
            )
            self.flags(self.any(not_bit), *self._extremes(x))
            return b.not_equal(x, self.const(0, source))
        if source in FLOAT and target in INTEGER:
            low, high = INT_RANGE[target]
            nan = self.any(b.is_nan(x))
            inf = self.any(b.is_infinite(x))
            fraction = self.any(b.not_equal(b.floor(x), x))
            # the range ends as exact powers of two: x < low or x >= high + 1
            limit_low = self.const(float(low), source)
            limit_high = self.const(float(high + 1), source)
            outside = self.any(
                b.logical_or(b.lesser(x, limit_low), b.greater_or_equal(x, limit_high))
            )
            self.flags(
                b.concat([b.reshape(f, [1]) for f in (nan, inf, fraction, outside)], 0),
                *self._extremes(x),
            )
            return b.cast(x, webnn_type(target))
        if source in INTEGER and target in INTEGER and not fits(source, target):
            self.flags(self.any(self._outside(x, source, *INT_RANGE[target])), *self._extremes(x))
            return b.cast(x, webnn_type(target))
        result = b.cast(x, webnn_type(target))
        if source == "float32" and target == "float16":
            grew = b.logical_and(
                b.is_infinite(result), b.logical_not(b.logical_or(b.is_infinite(x), b.is_nan(x)))
            )
            self.flags(self.any(grew), *self._extremes(x))
        return result

    def _extremes(self, x: MLOperand) -> tuple[MLOperand, MLOperand]:
        return self.b.reduce_min(x), self.b.reduce_max(x)

    # ================================================================== reductions

    def _op_reduce(self, node: Node, args: list[MLOperand]) -> MLOperand:
        op, axes, keepdims, correction = node.attrs
        (x,) = args
        source = node.inputs[0].dtype
        out = node.dtype
        b = self.b
        options: dict[str, Any] = {"axes": list(axes), "keep_dimensions": keepdims}
        if op in ("max", "min"):
            found = getattr(b, f"reduce_{op}")(x, **options)
            if source not in FLOAT:
                return found
            # ONNX Runtime's vectorised max/min reductions skip NaN; numpy's propagate it
            any_nan = b.reduce_max(b.is_nan(x), **options)
            return b.where(any_nan, self.const(math.nan, source), found)
        if out in INTEGER:
            wide = self.cast(x, "int64")
            if op == "prod":
                return self._int_product(wide, axes, node.shape)
            result = b.reduce_sum(wide, **options)
            if source == "int64":
                self.flags(self._sum_overflow(wide, axes))
            return result
        value = self.widen(x)
        if op == "sum":
            result = b.reduce_sum(value, **options)
        elif op == "prod":
            result = b.reduce_product(value, **options)
        elif op == "mean":
            result = b.reduce_mean(value, **options)
        else:  # var: two passes, as numpy
            count = math.prod(node.inputs[0].shape[a] for a in axes)
            centred = b.sub(value, b.reduce_mean(value, axes=list(axes), keep_dimensions=True))
            total = b.reduce_sum(b.mul(centred, centred), **options)
            divisor = max(count - float.fromhex(correction), 0.0)
            result = b.div(total, self.const(divisor, "float32"))
        return self.narrow(result, out)

    def _floor_div_const(self, x: MLOperand, divisor: int) -> MLOperand:
        """floor(x / divisor) for int64 ``x`` and a positive constant divisor."""
        b = self.b
        d = self.const(divisor, "int64")
        quotient = b.div(x, d)
        below = b.lesser(x, b.mul(quotient, d))
        return b.sub(quotient, b.cast(below, "int64"))

    def _sum_overflow(self, x: MLOperand, axes: tuple[int, ...]) -> MLOperand:
        """Whether an int64 sum leaves int64, exactly: each value splits into 32-bit halves,
        whose sums cannot overflow; the total fits when the high half's sum (with the carry of
        the low half's) lies in [-2**31, 2**31)."""
        b = self.b
        shift = 2**32
        high = self._floor_div_const(x, shift)
        low = b.sub(x, b.mul(high, self.const(shift, "int64")))
        options: dict[str, Any] = {"axes": list(axes), "keep_dimensions": False}
        high_sum = b.reduce_sum(high, **options)
        low_sum = b.reduce_sum(low, **options)
        total_high = b.add(high_sum, b.div(low_sum, self.const(shift, "int64")))
        return self.any(self._outside(total_high, "int64", -(2**31), 2**31 - 1))

    def _int_product(self, x: MLOperand, axes: tuple[int, ...], shape: Sequence[int]) -> MLOperand:
        """An exact int64 product over ``axes`` as a tree of checked multiplications. A group
        overflows when a partial product overflowed and no factor is zero."""
        b = self.b
        rank = len(x.shape)
        kept = [a for a in range(rank) if a not in axes]
        if kept + list(axes) != list(range(rank)):
            x = b.transpose(x, permutation=kept + list(axes))
        rows = math.prod(x.shape[: len(kept)])
        count = math.prod(x.shape[len(kept) :])
        value = b.reshape(x, [rows, count])
        overflow: MLOperand | None = None
        while count > 1:
            half = count // 2
            left = b.slice(value, [0, 0], [rows, half])
            right = b.slice(value, [0, half], [rows, half])
            product, product_overflow = self._checked_mul64(left, right)
            if overflow is not None:
                product_overflow = b.logical_or(
                    product_overflow,
                    b.logical_or(
                        b.slice(overflow, [0, 0], [rows, half]),
                        b.slice(overflow, [0, half], [rows, half]),
                    ),
                )
            if count % 2:
                product = b.concat([product, b.slice(value, [0, count - 1], [rows, 1])], 1)
                tail = (
                    b.slice(overflow, [0, count - 1], [rows, 1])
                    if overflow is not None
                    else self.zeros_u8([rows, 1])
                )
                product_overflow = b.concat([product_overflow, tail], 1)
            value, overflow, count = product, product_overflow, half + count % 2
        if overflow is not None:
            has_zero = b.reduce_max(
                b.equal(x, self.const(0, "int64")), axes=list(range(len(kept), rank))
            )
            group = b.reshape(overflow, list(has_zero.shape) or [])
            self.flags(self.any(b.logical_and(group, b.logical_not(has_zero))))
        else:
            self.flags(self.const(0, "uint8"))
        return b.reshape(value, list(shape))

    def _op_arg(self, node: Node, args: list[MLOperand]) -> MLOperand:
        op, axis, keepdims = node.attrs
        (x,) = args
        b = self.b
        method = b.arg_max if op == "argmax" else b.arg_min
        found = method(x, axis, keep_dimensions=keepdims, output_data_type="int64")
        if node.inputs[0].dtype not in FLOAT:
            return found
        # numpy returns the first NaN; ONNX Runtime's vectorised kernels do not see NaN
        nans = b.is_nan(x)
        first_nan = b.arg_max(nans, axis, keep_dimensions=keepdims, output_data_type="int64")
        any_nan = b.reduce_max(nans, axes=[axis], keep_dimensions=keepdims)
        return b.where(any_nan, first_nan, found)

    # ================================================================== shape, data movement

    def _op_reshape(self, node: Node, args: list[MLOperand]) -> MLOperand:
        return self.b.reshape(args[0], list(node.shape))

    def _op_permute(self, node: Node, args: list[MLOperand]) -> MLOperand:
        return self.b.transpose(args[0], permutation=list(node.attrs[0]))

    def _op_expand(self, node: Node, args: list[MLOperand]) -> MLOperand:
        return self.b.expand(args[0], list(node.shape))

    def _op_slice(self, node: Node, args: list[MLOperand]) -> MLOperand:
        starts, steps, sizes = node.attrs
        (x,) = args
        dims = node.inputs[0].shape
        backwards = [axis for axis, step in enumerate(steps) if step < 0]
        if backwards:
            # a negative step walks the reversed axis forwards
            x = self.b.reverse(x, axes=backwards)
            starts = tuple(dims[i] - 1 - s if steps[i] < 0 else s for i, s in enumerate(starts))
            steps = tuple(abs(s) for s in steps)
        spans = [(size - 1) * step + 1 for size, step in zip(sizes, steps, strict=True)]
        return self.b.slice(x, list(starts), spans, strides=list(steps))

    def _op_concat(self, node: Node, args: list[MLOperand]) -> MLOperand:
        return self.b.concat(args, node.attrs[0])

    def _op_gather(self, node: Node, args: list[MLOperand]) -> MLOperand:
        x, indices = args
        # WebNN clamps out-of-range indices: the range check raises at readback instead
        self.flags(*self._index_range(indices))
        return self.b.gather(x, indices, axis=node.attrs[0])

    def _index_range(self, indices: MLOperand) -> tuple[MLOperand, MLOperand]:
        """The (min, max) of ``indices`` that a range check reads, computed once per operand."""
        found = self._index_ranges.get(id(indices))
        if found is None:
            found = self.b.reduce_min(indices), self.b.reduce_max(indices)
            self._index_ranges[id(indices)] = found
        return found

    def _op_index_add(self, node: Node, args: list[MLOperand]) -> MLOperand:
        base, indices, source = args
        self.flags(*self._index_range(indices))
        axis, shape = node.attrs[0], list(node.shape)
        outer, inner = math.prod(shape[:axis]), math.prod(shape[axis + 1 :])
        k = math.prod(node.inputs[1].shape)
        scatter = _Scatter(
            axis,
            node.shape,
            node.dtype,
            base,
            self.b.reshape(self.cast(indices, "int64"), [k, 1]),
            self.b.reshape(source, [outer, k, inner]),
        )
        table = node.inputs[0]
        if table.op == "full" and token_value(table.attrs[0]) == 0 and node.dtype in FLOAT:
            self._scatters[self._index] = scatter
        return self._scatter_add(scatter, base)

    def _scatter_add(self, scatter: _Scatter, base: MLOperand) -> MLOperand:
        """``base`` with ``scatter``'s rows added along its axis where its indices say: one
        ScatterND (reduction add) over the table seen as (n, outer, inner)."""
        b = self.b
        shape = list(scatter.shape)
        n, outer = shape[scatter.axis], math.prod(shape[: scatter.axis])
        inner, k = math.prod(shape[scatter.axis + 1 :]), scatter.rows.shape[1]
        # ScatterND adds in neither float16 nor bool: float32 (rounding once) and int32
        work = {"float16": "float32", "bool": "int32"}.get(scatter.dtype, scatter.dtype)
        table, rows = self.cast(base, work), self.cast(scatter.rows, work)
        where = scatter.indices
        if outer == 1:
            table, rows = b.reshape(table, [n, inner]), b.reshape(rows, [k, inner])
            out = b.scatter_nd(table, where, rows, reduction="add")
        else:
            swap = [1, 0, 2]
            table = b.transpose(b.reshape(table, [outer, n, inner]), permutation=swap)
            rows = b.transpose(rows, permutation=swap)
            out = b.transpose(b.scatter_nd(table, where, rows, reduction="add"), permutation=swap)
        out = b.reshape(out, shape)
        if scatter.dtype == "bool":
            return b.greater(out, self.const(0, "int32"))
        return self.cast(out, scatter.dtype)

    def _add_scatter(self, node: Node, args: list[MLOperand]) -> MLOperand | None:
        """``x + index_add(zeros, i, s)`` as ``index_add(x, i, s)``: a gradient summed over
        several lookups of one table (an embedding used twice) scatters each lookup's rows
        into the running sum, instead of a zero table per lookup and a dense add per sum;
        where ``x`` is itself a scatter into zeros, the two become one scatter of both
        lookups' rows (each ScatterND copies the whole table once)."""
        found = [self._scatters.get(self._position_of[id(x)]) for x in node.inputs]
        first, second = found
        if (
            first is not None
            and second is not None
            and first.axis == second.axis
            and first.shape == second.shape == node.shape
            and first.dtype == second.dtype == node.dtype
        ):
            b = self.b
            merged = _Scatter(
                first.axis,
                first.shape,
                first.dtype,
                first.base,
                b.concat([first.indices, second.indices], 0),
                b.concat([first.rows, second.rows], 1),
            )
            self._scatters[self._index] = merged  # a third lookup joins it too
            return self._scatter_add(merged, first.base)
        for mine, other in ((0, 1), (1, 0)):
            scatter = found[mine]
            addend = node.inputs[other]
            if (
                scatter is not None
                and scatter.shape == addend.shape == node.shape  # neither side broadcast
                and addend.dtype == node.dtype
            ):
                return self._scatter_add(scatter, args[other])
        return None

    def _op_pad(self, node: Node, args: list[MLOperand]) -> MLOperand:
        pads, mode, value = node.attrs
        fill = token_value(value)
        return self.b.pad(
            args[0],
            [p[0] for p in pads],
            [p[1] for p in pads],
            mode={"reflect": "reflection"}.get(mode, mode),
            value=int(fill) if node.dtype == "bool" else fill,
        )

    # ================================================================== matrix, nn

    def _op_matmul(self, node: Node, args: list[MLOperand]) -> MLOperand:
        a, c = args
        b = self.b
        dtype = node.dtype
        if dtype in FLOAT:
            return self.narrow(b.matmul(self.widen(a), self.widen(c)), dtype)
        # integers: WebNN's matmul is float-only; multiply and sum exactly (wrapping, as numpy)
        work = "int32" if dtype in ("int8", "uint8", "bool") else dtype
        left = b.reshape(self.cast(a, work), [*a.shape, 1])
        right = b.reshape(self.cast(c, work), [*c.shape[:-2], 1, *c.shape[-2:]])
        # (..., M, K, 1) * (..., 1, K, N) summed over K
        contracted = max(len(left.shape), len(right.shape)) - 2
        total = b.reduce_sum(b.mul(left, right), axes=[contracted])
        if list(total.shape) != list(node.shape):
            total = b.expand(total, list(node.shape))
        if dtype == "bool":
            return b.greater(total, self.const(0, "int32"))
        return self.cast(total, dtype)

    def _op_linear(self, node: Node, args: list[MLOperand]) -> MLOperand:
        x, weight = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        b = self.b
        features = x.shape[-1]
        rows = math.prod(x.shape[:-1])
        flat = b.reshape(self.widen(x), [rows, features])
        out = b.gemm(
            flat, self.widen(weight), c=None if bias is None else self.widen(bias), b_transpose=True
        )
        return self.narrow(b.reshape(out, list(node.shape)), node.dtype)

    def _op_quantized_linear(self, node: Node, args: list[MLOperand]) -> MLOperand:
        from ipfs_accelerate.hal.webnn._quantized import emit_quantized_linear

        return emit_quantized_linear(self, node, args)

    def _op_conv(self, node: Node, args: list[MLOperand]) -> MLOperand:
        stride, padding, dilation, groups, _ = node.attrs
        x, weight = args[0], args[1]
        bias = args[2] if len(args) > 2 else None
        b = self.b
        x, weight = self.widen(x), self.widen(weight)
        bias = self.widen(bias) if bias is not None else None
        if len(stride) == 1:  # 1-D: a 2-D convolution over a height of 1
            x = b.reshape(x, [x.shape[0], x.shape[1], 1, x.shape[2]])
            weight = b.reshape(weight, [weight.shape[0], weight.shape[1], 1, weight.shape[2]])
            stride, dilation, padding = (1, *stride), (1, *dilation), ((0, 0), *padding)
        out = b.conv2d(
            x,
            weight,
            padding=[padding[0][0], padding[0][1], padding[1][0], padding[1][1]],
            strides=list(stride),
            dilations=list(dilation),
            groups=groups,
            bias=bias,
        )
        if list(out.shape) != list(node.shape):
            out = b.reshape(out, list(node.shape))
        return self.narrow(out, node.dtype)

    def _op_softmax(self, node: Node, args: list[MLOperand]) -> MLOperand:
        axis, log = node.attrs
        b = self.b
        x = self.widen(args[0])
        if not log:
            return self.narrow(b.softmax(x, axis), node.dtype)
        shifted = b.sub(x, b.reduce_max(x, axes=[axis], keep_dimensions=True))
        total = b.reduce_sum(b.exp(shifted), axes=[axis], keep_dimensions=True)
        return self.narrow(b.sub(shifted, b.log(total)), node.dtype)

    def _op_layer_norm(self, node: Node, args: list[MLOperand]) -> MLOperand:
        num_axes, eps, has_weight, has_bias = node.attrs
        b = self.b
        it = iter(args)
        x = self.widen(next(it))
        weight = self.widen(next(it)) if has_weight else None
        bias = self.widen(next(it)) if has_bias else None
        axes = list(range(len(x.shape) - num_axes, len(x.shape)))
        out = b.layer_normalization(
            x, scale=weight, bias=bias, axes=axes, epsilon=float.fromhex(eps)
        )
        return self.narrow(out, node.dtype)

    def _op_attention(self, node: Node, args: list[MLOperand]) -> MLOperand:
        mask_kind, causal, scale = node.attrs
        b = self.b
        q, k, v = (self.widen(t) for t in args[:3])
        scores = b.matmul(
            q,
            b.transpose(
                k, permutation=[*range(len(k.shape) - 2), len(k.shape) - 1, len(k.shape) - 2]
            ),
        )
        scores = b.mul(scores, self.const(float.fromhex(scale), "float32"))
        length, source = q.shape[-2], k.shape[-2]
        # bool masks become additive (0 / -inf) at the mask's own shape: ONNX Runtime's Add
        # broadcasting it over the scores is cheaper than its Where; the webnn compiler lowers
        # the pattern to MultiHeadAttention where that takes it (docs/webnn.md, "Attention")
        if causal:
            allowed = np.tril(np.ones((length, source), dtype=bool))
            additive = np.where(allowed, np.float32(0.0), np.float32(-np.inf))
            bias = b.constant({"dataType": "float32", "shape": [length, source]}, additive)
            scores = b.add(scores, bias)
        elif mask_kind == "bool":
            minus_inf = self.const(-math.inf, "float32")
            scores = b.add(scores, b.where(args[3], self.const(0.0, "float32"), minus_inf))
        elif mask_kind == "float":
            scores = b.add(scores, self.widen(args[3]))
        out = b.matmul(b.softmax(scores, len(scores.shape) - 1), v)
        if list(out.shape) != list(node.shape):
            out = b.expand(out, list(node.shape))
        return self.narrow(out, node.dtype)


def arange_values(
    start: bool | int | float, step: bool | int | float, size: int, dtype: str
) -> np.ndarray[Any, Any]:
    """The arange values every backend computes (see hal.cpu._math.arange_values)."""
    from ipfs_accelerate.hal.cpu._math import arange_values as values

    return values(start, step, size, np.dtype(dtype))
