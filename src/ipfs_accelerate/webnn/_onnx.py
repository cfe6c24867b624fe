"""Lowering: one WebNN graph becomes one ONNX model (opset 21), built with the ``onnx`` package.

Each WebNN op maps to one ONNX node where ONNX has the same semantics, and to a short
composition otherwise (reverse = negative-step Slice, linear = Mul+Add, ...). Where ONNX
Runtime's CPU kernels lack a data type the spec allows, the op runs in a wider type and the
result is cast back (int8 -> int32, uint32 -> int64, ...); the chosen widenings preserve the
spec's results exactly (modular integer arithmetic, order for max/min).

Constants of at least ``EXTERNAL_BYTES`` bytes are not copied into the model: they are
declared as external initializers and handed to ONNX Runtime as OrtValues sharing the
numpy buffer (see ``_runtime``). ``embed_constants`` turns such a model into a
self-contained one (for export or for running it with onnxruntime directly).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from ipfs_accelerate.errors import WebNNOperationError
from ipfs_accelerate.webnn._operand import CONSTANT, INPUT, MLOperand, Node
from ipfs_accelerate.webnn._types import numpy_dtype, onnx_type

__all__ = ["EXTERNAL_BYTES", "OPSET", "LoweredModel", "embed_constants", "lower"]

OPSET: Final[int] = 21
IR_VERSION: Final[int] = 10
#: constants at least this large go to ONNX Runtime as shared OrtValues instead of model bytes
EXTERNAL_BYTES: Final[int] = 1024

_ALL: Final = frozenset(
    {"float32", "float16", "int32", "uint32", "int64", "uint64", "int8", "uint8"}
)
_FLOAT: Final = frozenset({"float32", "float16"})
_REDUCE: Final = frozenset({"float32", "float16", "int32", "int64"})
_REDUCE_ORDER: Final = frozenset({"float32", "float16", "int32", "int64", "int8", "uint8"})
# ONNX Runtime CPU kernels per ONNX op, where they do not cover every type the spec allows
_SUPPORTED: Final[dict[str, frozenset[str]]] = {
    "Neg": frozenset({"float32", "float16", "int32", "int64", "int8"}),
    "Relu": frozenset({"float32", "float16", "int32", "int8"}),
    # float16 Sign exists but turns NaN into 0: it runs widened
    "Sign": _ALL - {"float16"},
    "Pow": frozenset({"float32", "float16", "int32", "int64"}),
    "CumSum": _REDUCE,
    "Trilu": _REDUCE,
    "Where": _ALL - {"uint64"},
    "ReduceSum": _REDUCE,
    "ReduceMean": _REDUCE,
    "ReduceProd": _REDUCE,
    "ReduceL1": _REDUCE,
    "ReduceL2": _REDUCE,
    "ReduceLogSum": _REDUCE,
    "ReduceLogSumExp": _REDUCE,
    "ReduceSumSquare": _REDUCE,
    "ReduceMax": _REDUCE_ORDER,
    "ReduceMin": _REDUCE_ORDER,
    "ArgMax": _REDUCE_ORDER,
    "ArgMin": _REDUCE_ORDER,
    "MaxPool": frozenset({"float32", "float16", "int8", "uint8"}),
}
# the wider type an op runs in when its kernel lacks a type; uint64 goes through int64 by bit
# pattern, which is exact for modular arithmetic (sum, product, cumulative sum, select)
_WIDER: Final[dict[str, str]] = {
    "int8": "int32",
    "uint8": "int32",
    "int32": "int64",
    "uint32": "int64",
    "uint64": "int64",
    "float16": "float32",
}
_INT64_MIN: Final = -(2**63)
_EXACT_INTEGER_REDUCTIONS: Final = frozenset(
    {"reduce_sum", "reduce_l1", "reduce_sum_square", "reduce_product"}
)


@dataclass(slots=True)
class LoweredModel:
    """The ONNX model of a graph and what running it needs besides the model bytes."""

    model: Any  # onnx.ModelProto
    external: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    input_names: dict[str, str] = field(default_factory=dict)  # WebNN name -> ONNX name
    output_names: dict[str, str] = field(default_factory=dict)  # WebNN name -> ONNX name


class _Emitter:
    """Accumulates ONNX nodes and initializers with fresh value names."""

    def __init__(self, reserved: set[str]) -> None:
        import onnx
        from onnx import helper, numpy_helper

        self.onnx = onnx
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.external: dict[str, np.ndarray[Any, Any]] = {}
        self.names: dict[int, str] = {}
        self._reserved = reserved
        self._counter = 0
        self._small: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    def fresh(self) -> str:
        while True:
            self._counter += 1
            name = f"_v{self._counter}"
            if name not in self._reserved:
                return name

    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: Sequence[str] | int = 1,
        name: str = "",
        **attrs: Any,
    ) -> list[str]:
        outs = [self.fresh() for _ in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), outs, name=name or None, **attrs)
        )
        return outs

    def one(self, op_type: str, inputs: Sequence[str], out: str | None = None, **attrs: Any) -> str:
        return self.node(op_type, inputs, [out] if out else 1, **attrs)[0]

    def const(self, array: np.ndarray[Any, Any], *, share: bool = False) -> str:
        """An initializer holding ``array``; small ones are deduplicated by content."""
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn a scalar into 1-D)
            array = array.copy(order="C")
        if share and array.nbytes >= EXTERNAL_BYTES:
            name = self.fresh()
            tensor = self.onnx.TensorProto()
            tensor.name = name
            tensor.data_type = onnx_type(str(array.dtype))
            tensor.dims.extend(array.shape)
            tensor.data_location = self.onnx.TensorProto.EXTERNAL
            entry = tensor.external_data.add()
            entry.key, entry.value = "location", f"webnn-constant-{name}"
            self.initializers.append(tensor)
            self.external[name] = array
            return name
        key = (str(array.dtype), array.shape, array.tobytes())
        cached = self._small.get(key)
        if cached is not None:
            return cached
        name = self.fresh()
        self.initializers.append(self.numpy_helper.from_array(array, name))
        self._small[key] = name
        return name

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(values, dtype=np.int64))

    def scalar(self, value: Any, data_type: str) -> str:
        return self.const(np.asarray(value, dtype=numpy_dtype(data_type)))

    def cast(self, value: str, to: str, out: str | None = None) -> str:
        return self.one("Cast", [value], out, to=onnx_type(to))


class _Lowering:
    """Lowers the nodes of one graph, op by op (``_op_<name>`` methods)."""

    def __init__(self, emitter: _Emitter, output_names: dict[int, str]) -> None:
        self.e = emitter
        self.output_names = output_names  # operand id -> graph output value name

    # ------------------------------------------------------------------ names

    def value(self, operand: MLOperand) -> str:
        return self.e.names[operand._id]

    def out(self, operand: MLOperand) -> str:
        """The value name an op's result must be written to."""
        name = self.output_names.get(operand._id) or self.e.fresh()
        self.e.names[operand._id] = name
        return name

    def const_value(self, operand: MLOperand | None) -> np.ndarray[Any, Any] | None:
        """The array behind a constant operand, for folding work at build time."""
        if operand is None or operand._kind != CONSTANT:
            return None
        return operand._value

    # ------------------------------------------------------------------ typed helpers

    def compute(
        self,
        op_type: str,
        inputs: Sequence[str],
        data_type: str,
        out: str,
        *,
        n_data: int | None = None,
        out_type: str | None = None,
        **attrs: Any,
    ) -> str:
        """Emit ``op_type`` on values of ``data_type``, widening when the kernel lacks it.

        The first ``n_data`` inputs (all by default) carry data of ``data_type``; the result
        has ``out_type`` (default ``data_type``) and is written to ``out``.
        """
        supported = _SUPPORTED.get(op_type, _ALL)
        result_type = out_type or data_type
        if data_type in supported:
            return self.e.one(op_type, inputs, out, **attrs)
        wide = _WIDER[data_type]
        count = len(inputs) if n_data is None else n_data
        cast_in = [self.e.cast(v, wide) if i < count else v for i, v in enumerate(inputs)]
        if out_type is None:
            result = self.e.one(op_type, cast_in, **attrs)
            return self.e.cast(result, result_type, out)
        return self.e.one(op_type, cast_in, out, **attrs)

    def to_float32(self, operand: MLOperand) -> str:
        name = self.value(operand)
        return name if operand.data_type == "float32" else self.e.cast(name, "float32")

    def finish_float(self, value: str, data_type: str, out: str) -> str:
        """Write a float32 result to ``out`` in ``data_type``."""
        if data_type == "float32":
            return self.e.one("Identity", [value], out)
        return self.e.cast(value, data_type, out)

    def unsigned_order(self, value: str, data_type: str) -> str:
        """Map uint64 to int64 keeping the order (flip the top bit), for max/min/argmax."""
        as_signed = self.e.cast(value, "int64")
        return self.e.one("BitwiseXor", [as_signed, self.e.scalar(_INT64_MIN, "int64")])

    def reshape_const_or_node(self, operand: MLOperand, shape: Sequence[int]) -> str:
        array = self.const_value(operand)
        if array is not None:
            return self.e.const(array.reshape(shape), share=True)
        return self.e.one("Reshape", [self.value(operand), self.e.ints(shape)])

    def transpose_const_or_node(self, operand: MLOperand, perm: Sequence[int]) -> str:
        if list(perm) == list(range(len(perm))):
            return self.value(operand)
        array = self.const_value(operand)
        if array is not None:
            return self.e.const(np.ascontiguousarray(array.transpose(perm)), share=True)
        return self.e.one("Transpose", [self.value(operand)], perm=list(perm))

    # ================================================================== dispatch

    def lower(self, node: Node) -> None:
        handler: Callable[[Node], None] | None = getattr(self, f"_op_{node.op}", None)
        if handler is None:  # pragma: no cover - every builder op has a lowering
            raise NotImplementedError(f"no ONNX lowering for WebNN op {node.op!r}")
        handler(node)

    # ================================================================== element-wise

    def _simple_binary(self, node: Node, op_type: str) -> None:
        a, b = node.inputs
        assert a is not None and b is not None
        result = node.outputs[0]
        self.compute(op_type, [self.value(a), self.value(b)], a.data_type, self.out(result))

    def _op_add(self, node: Node) -> None:
        self._simple_binary(node, "Add")

    def _op_sub(self, node: Node) -> None:
        self._simple_binary(node, "Sub")

    def _op_mul(self, node: Node) -> None:
        self._simple_binary(node, "Mul")

    def _op_max(self, node: Node) -> None:
        self._simple_binary(node, "Max")

    def _op_min(self, node: Node) -> None:
        self._simple_binary(node, "Min")

    def _op_pow(self, node: Node) -> None:
        self._simple_binary(node, "Pow")

    def _op_div(self, node: Node) -> None:
        a, b = node.inputs
        assert a is not None and b is not None
        out = self.out(node.outputs[0])
        dtype = a.data_type
        if dtype in _FLOAT:
            self.e.one("Div", [self.value(a), self.value(b)], out)
            return
        # integer division by zero (and INT_MIN / -1) would trap inside the kernel: divide by
        # a safe divisor and fix those lanes up (x / 0 -> 0, x / -1 -> -x with wrap-around)
        zero = self.e.scalar(0, dtype)
        one = self.e.scalar(1, dtype)
        bv, av = self.value(b), self.value(a)
        is_zero = self.e.one("Equal", [bv, zero])
        unsafe = is_zero
        is_minus_one = None
        if numpy_dtype(dtype).kind == "i":
            is_minus_one = self.e.one("Equal", [bv, self.e.scalar(-1, dtype)])
            unsafe = self.e.one("Or", [is_zero, is_minus_one])
        safe = self._where(unsafe, one, bv, dtype)
        quotient = self.e.one("Div", [av, safe])
        if is_minus_one is not None:
            negated = self.compute("Neg", [av], dtype, self.e.fresh())
            quotient = self._where(is_minus_one, negated, quotient, dtype)
        self._where(is_zero, zero, quotient, dtype, out)

    def _where(self, condition: str, yes: str, no: str, dtype: str, out: str | None = None) -> str:
        """Where(condition, yes, no) for any data type (uint64 goes through int64 bits)."""
        target = out or self.e.fresh()
        if dtype in _SUPPORTED["Where"]:
            return self.e.one("Where", [condition, yes, no], target)
        picked = self.e.one(
            "Where", [condition, self.e.cast(yes, "int64"), self.e.cast(no, "int64")]
        )
        return self.e.cast(picked, dtype, target)

    def _comparison(self, node: Node, op_type: str, negate: bool = False) -> None:
        a, b = node.inputs
        assert a is not None and b is not None
        result = self.e.one(op_type, [self.value(a), self.value(b)])
        if negate:
            result = self.e.one("Not", [result])
        self.e.cast(result, "uint8", self.out(node.outputs[0]))

    def _op_equal(self, node: Node) -> None:
        self._comparison(node, "Equal")

    def _op_not_equal(self, node: Node) -> None:
        self._comparison(node, "Equal", negate=True)

    def _op_greater(self, node: Node) -> None:
        self._comparison(node, "Greater")

    def _op_greater_or_equal(self, node: Node) -> None:
        self._comparison(node, "GreaterOrEqual")

    def _op_lesser(self, node: Node) -> None:
        self._comparison(node, "Less")

    def _op_lesser_or_equal(self, node: Node) -> None:
        self._comparison(node, "LessOrEqual")

    def _logical(self, node: Node, op_type: str) -> None:
        a, b = node.inputs
        assert a is not None and b is not None
        result = self.e.one(
            op_type, [self.e.cast(self.value(a), "bool"), self.e.cast(self.value(b), "bool")]
        )
        self.e.cast(result, "uint8", self.out(node.outputs[0]))

    def _op_logical_and(self, node: Node) -> None:
        self._logical(node, "And")

    def _op_logical_or(self, node: Node) -> None:
        self._logical(node, "Or")

    def _op_logical_xor(self, node: Node) -> None:
        self._logical(node, "Xor")

    def _op_logical_not(self, node: Node) -> None:
        (a,) = node.inputs
        assert a is not None
        result = self.e.one("Equal", [self.value(a), self.e.scalar(0, "uint8")])
        self.e.cast(result, "uint8", self.out(node.outputs[0]))

    def _op_is_nan(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        self.e.cast(self.e.one("IsNaN", [self.value(x)]), "uint8", self.out(node.outputs[0]))

    def _op_is_infinite(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        self.e.cast(self.e.one("IsInf", [self.value(x)]), "uint8", self.out(node.outputs[0]))

    def _unary(self, node: Node, op_type: str, **attrs: Any) -> None:
        (x,) = node.inputs
        assert x is not None
        self.compute(op_type, [self.value(x)], x.data_type, self.out(node.outputs[0]), **attrs)

    def _op_abs(self, node: Node) -> None:
        self._unary(node, "Abs")

    def _op_ceil(self, node: Node) -> None:
        self._unary(node, "Ceil")

    def _op_cos(self, node: Node) -> None:
        self._unary(node, "Cos")

    def _op_erf(self, node: Node) -> None:
        self._unary(node, "Erf")

    def _op_exp(self, node: Node) -> None:
        self._unary(node, "Exp")

    def _op_floor(self, node: Node) -> None:
        self._unary(node, "Floor")

    def _op_identity(self, node: Node) -> None:
        self._unary(node, "Identity")

    def _op_log(self, node: Node) -> None:
        self._unary(node, "Log")

    def _op_neg(self, node: Node) -> None:
        self._unary(node, "Neg")

    def _op_reciprocal(self, node: Node) -> None:
        self._unary(node, "Reciprocal")

    def _op_round_even(self, node: Node) -> None:
        self._unary(node, "Round")

    def _op_sign(self, node: Node) -> None:
        self._unary(node, "Sign")

    def _op_sin(self, node: Node) -> None:
        self._unary(node, "Sin")

    def _op_sqrt(self, node: Node) -> None:
        self._unary(node, "Sqrt")

    def _op_tan(self, node: Node) -> None:
        self._unary(node, "Tan")

    def _op_cast(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        self.e.cast(self.value(x), node.attrs["to"], self.out(node.outputs[0]))

    # ================================================================== activations

    def _op_elu(self, node: Node) -> None:
        self._unary(node, "Elu", alpha=node.attrs["alpha"])

    def _op_gelu(self, node: Node) -> None:
        self._unary(node, "Gelu")

    def _op_hard_sigmoid(self, node: Node) -> None:
        self._unary(node, "HardSigmoid", alpha=node.attrs["alpha"], beta=node.attrs["beta"])

    def _op_hard_swish(self, node: Node) -> None:
        self._unary(node, "HardSwish")

    def _op_leaky_relu(self, node: Node) -> None:
        self._unary(node, "LeakyRelu", alpha=node.attrs["alpha"])

    def _op_sigmoid(self, node: Node) -> None:
        self._unary(node, "Sigmoid")

    def _op_softplus(self, node: Node) -> None:
        self._unary(node, "Softplus")

    def _op_softsign(self, node: Node) -> None:
        self._unary(node, "Softsign")

    def _op_tanh(self, node: Node) -> None:
        self._unary(node, "Tanh")

    def _op_softmax(self, node: Node) -> None:
        self._unary(node, "Softmax", axis=node.attrs["axis"])

    def _op_relu(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        out = self.out(node.outputs[0])
        if x.data_type in _SUPPORTED["Relu"]:
            self.e.one("Relu", [self.value(x)], out)
        else:
            self.e.one("Max", [self.value(x), self.e.scalar(0, x.data_type)], out)

    def _op_linear(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        # in float32 so that alpha and beta are not rounded to float16 before use
        value = self.to_float32(x)
        if node.attrs["alpha"] != 1.0:
            value = self.e.one("Mul", [value, self.e.scalar(node.attrs["alpha"], "float32")])
        if node.attrs["beta"] != 0.0:
            value = self.e.one("Add", [value, self.e.scalar(node.attrs["beta"], "float32")])
        self.finish_float(value, x.data_type, self.out(node.outputs[0]))

    def _op_prelu(self, node: Node) -> None:
        x, slope = node.inputs
        assert x is not None and slope is not None
        out = self.out(node.outputs[0])
        if x.data_type in _FLOAT:
            self.e.one("PRelu", [self.value(x), self.value(slope)], out)
            return
        negative = self.e.one("Less", [self.value(x), self.e.scalar(0, x.data_type)])
        scaled = self.e.one("Mul", [self.value(x), self.value(slope)])
        self._where(negative, scaled, self.value(x), x.data_type, out)

    def _op_clamp(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        low = self.e.scalar(node.attrs["min"], x.data_type)
        high = self.e.scalar(node.attrs["max"], x.data_type)
        self.e.one("Clip", [self.value(x), low, high], self.out(node.outputs[0]))

    # ================================================================== reductions

    _REDUCE_OPS: Final = {
        "reduce_l1": "ReduceL1",
        "reduce_l2": "ReduceL2",
        "reduce_log_sum": "ReduceLogSum",
        "reduce_log_sum_exp": "ReduceLogSumExp",
        "reduce_max": "ReduceMax",
        "reduce_mean": "ReduceMean",
        "reduce_min": "ReduceMin",
        "reduce_product": "ReduceProd",
        "reduce_sum": "ReduceSum",
        "reduce_sum_square": "ReduceSumSquare",
    }

    def _reduce(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        axes: tuple[int, ...] = node.attrs["axes"]
        out = self.out(node.outputs[0])
        dtype = x.data_type
        value = self.value(x)
        if not axes:
            # reducing over no axis leaves each element alone: only the element-wise part remains
            if node.op == "reduce_sum_square":
                self.e.one("Mul", [value, value], out)
            elif node.op in ("reduce_l1", "reduce_l2"):
                self.e.one("Abs", [value], out)
            elif node.op == "reduce_log_sum":
                self.e.one("Log", [value], out)
            else:
                self.e.one("Identity", [value], out)
            return
        if numpy_dtype(dtype).kind in "iu" and node.op in _EXACT_INTEGER_REDUCTIONS:
            self._integer_reduce(node, x, axes, out)
            return
        op_type = self._REDUCE_OPS[node.op]
        keep = int(node.attrs["keep_dimensions"])
        axes_name = self.e.ints(axes)
        if dtype == "uint64" and op_type in ("ReduceMax", "ReduceMin"):
            ordered = self.unsigned_order(value, dtype)
            reduced = self.e.one(op_type, [ordered, axes_name], keepdims=keep)
            flipped = self.e.one("BitwiseXor", [reduced, self.e.scalar(_INT64_MIN, "int64")])
            self.e.cast(flipped, dtype, out)
            return
        self.compute(op_type, [value, axes_name], dtype, out, n_data=1, keepdims=keep)

    def _integer_reduce(self, node: Node, x: MLOperand, axes: tuple[int, ...], out: str) -> None:
        """Integer sums and products, exact and wrapping like the type.

        ONNX Runtime's integer ReduceSum/ReduceProd accumulate in floating point (inexact past
        2**53, saturating on overflow); an integer MatMul with a ones vector and a tree of Muls
        are exact, with the modular wrap-around of integer arithmetic."""
        dtype = x.data_type
        value = self.value(x)
        if node.op == "reduce_l1" and numpy_dtype(dtype).kind == "i":
            value = self.e.one("Abs", [value])
        elif node.op == "reduce_sum_square":
            value = self.e.one("Mul", [value, value])
        kept = [a for a in range(x.rank) if a not in axes]
        perm = kept + list(axes)
        if perm != list(range(x.rank)):
            value = self.e.one("Transpose", [value], perm=perm)
        rows = math.prod(x.shape[a] for a in kept)
        count = math.prod(x.shape[a] for a in axes)
        value = self.e.one("Reshape", [value, self.e.ints([rows, count])])
        if node.op == "reduce_product":
            while count > 1:
                half = count // 2
                left = self._slice_last(value, 0, half)
                right = self._slice_last(value, half, 2 * half)
                product = self.e.one("Mul", [left, right])
                if count % 2:
                    product = self.e.one(
                        "Concat", [product, self._slice_last(value, 2 * half, count)], axis=1
                    )
                value, count = product, half + count % 2
        else:
            ones = self.e.const(np.ones((count, 1), dtype=numpy_dtype(dtype)), share=True)
            value = self.e.one("MatMul", [value, ones])
        self.e.one("Reshape", [value, self.e.ints(node.outputs[0].shape)], out)

    def _slice_last(self, value: str, start: int, end: int) -> str:
        return self.e.one(
            "Slice", [value, self.e.ints([start]), self.e.ints([end]), self.e.ints([1])]
        )

    _op_reduce_l1 = _reduce
    _op_reduce_l2 = _reduce
    _op_reduce_log_sum = _reduce
    _op_reduce_log_sum_exp = _reduce
    _op_reduce_max = _reduce
    _op_reduce_mean = _reduce
    _op_reduce_min = _reduce
    _op_reduce_product = _reduce
    _op_reduce_sum = _reduce
    _op_reduce_sum_square = _reduce

    def _arg(self, node: Node, op_type: str) -> None:
        (x,) = node.inputs
        assert x is not None
        value = self.value(x)
        dtype = x.data_type
        if dtype == "uint64":
            value, dtype = self.unsigned_order(value, dtype), "int64"
        attrs = {"axis": node.attrs["axis"], "keepdims": int(node.attrs["keep_dimensions"])}
        result = node.outputs[0]
        if result.data_type == "int64":
            self.compute(op_type, [value], dtype, self.out(result), out_type="int64", **attrs)
        else:
            indices = self.compute(
                op_type, [value], dtype, self.e.fresh(), out_type="int64", **attrs
            )
            self.e.cast(indices, "int32", self.out(result))

    def _op_arg_max(self, node: Node) -> None:
        self._arg(node, "ArgMax")

    def _op_arg_min(self, node: Node) -> None:
        self._arg(node, "ArgMin")

    def _op_cumulative_sum(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        self.compute(
            "CumSum",
            [self.value(x), self.e.scalar(node.attrs["axis"], "int64")],
            x.data_type,
            self.out(node.outputs[0]),
            n_data=1,
            exclusive=int(node.attrs["exclusive"]),
            reverse=int(node.attrs["reversed"]),
        )

    # ================================================================== data movement

    def _op_concat(self, node: Node) -> None:
        names = [self.value(x) for x in node.inputs if x is not None]
        self.e.one("Concat", names, self.out(node.outputs[0]), axis=node.attrs["axis"])

    def _op_reshape(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        shape = self.e.ints(node.attrs["shape"])
        self.e.one("Reshape", [self.value(x), shape], self.out(node.outputs[0]))

    def _op_expand(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        shape = self.e.ints(node.attrs["shape"])
        self.e.one("Expand", [self.value(x), shape], self.out(node.outputs[0]))

    def _op_transpose(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        perm = list(node.attrs["permutation"])
        if perm == list(range(len(perm))):
            self.e.one("Identity", [self.value(x)], self.out(node.outputs[0]))
            return
        self.e.one("Transpose", [self.value(x)], self.out(node.outputs[0]), perm=perm)

    def _op_slice(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        out = self.out(node.outputs[0])
        starts, sizes, strides = node.attrs["starts"], node.attrs["sizes"], node.attrs["strides"]
        axes = [
            i
            for i in range(x.rank)
            if not (starts[i] == 0 and sizes[i] == x.shape[i] and strides[i] == 1)
        ]
        if not axes:
            self.e.one("Identity", [self.value(x)], out)
            return
        self.e.one(
            "Slice",
            [
                self.value(x),
                self.e.ints([starts[i] for i in axes]),
                self.e.ints([starts[i] + sizes[i] for i in axes]),
                self.e.ints(axes),
                self.e.ints([strides[i] for i in axes]),
            ],
            out,
        )

    def _op_split(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        outs = [self.out(o) for o in node.outputs]
        if len(outs) == 1:
            self.e.one("Identity", [self.value(x)], outs[0])
            return
        self.e.node(
            "Split",
            [self.value(x), self.e.ints(node.attrs["splits"])],
            outs,
            axis=node.attrs["axis"],
        )

    def _op_pad(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        pads = self.e.ints([*node.attrs["begin"], *node.attrs["end"]])
        mode = {"constant": "constant", "edge": "edge", "reflection": "reflect"}[node.attrs["mode"]]
        inputs = [self.value(x), pads]
        if mode == "constant":
            inputs.append(self.e.scalar(node.attrs["value"], x.data_type))
        self.e.one("Pad", inputs, self.out(node.outputs[0]), mode=mode)

    def _op_tile(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        reps = self.e.ints(node.attrs["repetitions"])
        self.e.one("Tile", [self.value(x), reps], self.out(node.outputs[0]))

    def _op_reverse(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        out = self.out(node.outputs[0])
        axes = [a for a in node.attrs["axes"] if x.shape[a] > 1]
        if not axes:
            self.e.one("Identity", [self.value(x)], out)
            return
        count = len(axes)
        self.e.one(
            "Slice",
            [
                self.value(x),
                self.e.ints([-1] * count),
                self.e.ints([_INT64_MIN] * count),
                self.e.ints(axes),
                self.e.ints([-1] * count),
            ],
            out,
        )

    def _op_triangular(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        out = self.out(node.outputs[0])
        upper, diagonal = node.attrs["upper"], node.attrs["diagonal"]
        if x.data_type in _SUPPORTED["Trilu"]:
            k = self.e.scalar(diagonal, "int64")
            self.e.one("Trilu", [self.value(x), k], out, upper=int(upper))
            return
        # integers without a Trilu kernel: multiply by a 0/1 mask (exact for integers)
        rows, cols = x.shape[-2], x.shape[-1]
        mask = (
            np.triu(np.ones((rows, cols), dtype=bool), diagonal)
            if upper
            else np.tril(np.ones((rows, cols), dtype=bool), diagonal)
        )
        factor = self.e.const(mask.astype(numpy_dtype(x.data_type)), share=True)
        self.e.one("Mul", [self.value(x), factor], out)

    def _op_where(self, node: Node) -> None:
        condition, yes, no = node.inputs
        assert condition is not None and yes is not None and no is not None
        flag = self.e.cast(self.value(condition), "bool")
        self._where(flag, self.value(yes), self.value(no), yes.data_type, self.out(node.outputs[0]))

    # ------------------------------------------------------------------ gather / scatter

    def _clamped_indices(
        self, indices: MLOperand, sizes: Sequence[int], *, int64: bool = False
    ) -> str:
        """Indices clamped into [-size, size - 1] (one size per last-axis component when
        several are given), typed for ONNX's gather/scatter kernels: int32 stays int32 unless
        ``int64`` is required; uint32 becomes int64."""
        unsigned = indices.data_type == "uint32"
        lows = np.array([0 if unsigned else -s for s in sizes], dtype=np.int64)
        highs = np.array([s - 1 for s in sizes], dtype=np.int64)
        keep32 = indices.data_type == "int32" and not int64
        array = self.const_value(indices)
        if array is not None:
            clamped = np.clip(array.astype(np.int64), lows, highs)
            return self.e.const(clamped.astype(np.int32 if keep32 else np.int64), share=True)
        value = self.value(indices)
        dtype = indices.data_type
        if not keep32 and dtype != "int64":
            value, dtype = self.e.cast(value, "int64"), "int64"
        if len(sizes) == 1:
            low = self.e.scalar(int(lows[0]), dtype)
            high = self.e.scalar(int(highs[0]), dtype)
            return self.e.one("Clip", [value, low, high])
        capped = self.e.one("Min", [value, self.e.const(highs.astype(numpy_dtype(dtype)))])
        return self.e.one("Max", [capped, self.e.const(lows.astype(numpy_dtype(dtype)))])

    def _op_gather(self, node: Node) -> None:
        x, indices = node.inputs
        assert x is not None and indices is not None
        axis = node.attrs["axis"]
        idx = self._clamped_indices(indices, [x.shape[axis]])
        self.e.one("Gather", [self.value(x), idx], self.out(node.outputs[0]), axis=axis)

    def _op_gather_elements(self, node: Node) -> None:
        x, indices = node.inputs
        assert x is not None and indices is not None
        axis = node.attrs["axis"]
        idx = self._clamped_indices(indices, [x.shape[axis]])
        self.e.one("GatherElements", [self.value(x), idx], self.out(node.outputs[0]), axis=axis)

    def _op_gather_nd(self, node: Node) -> None:
        x, indices = node.inputs
        assert x is not None and indices is not None
        idx = self._nd_indices(indices, x)
        self.e.one("GatherND", [self.value(x), idx], self.out(node.outputs[0]))

    def _nd_indices(self, indices: MLOperand, x: MLOperand) -> str:
        depth = indices.shape[-1]
        return self._clamped_indices(indices, list(x.shape[:depth]), int64=True)

    def _op_scatter_elements(self, node: Node) -> None:
        x, indices, updates = node.inputs
        assert x is not None and indices is not None and updates is not None
        axis = node.attrs["axis"]
        idx = self._clamped_indices(indices, [x.shape[axis]])
        self.e.one(
            "ScatterElements",
            [self.value(x), idx, self.value(updates)],
            self.out(node.outputs[0]),
            axis=axis,
        )

    def _op_scatter_nd(self, node: Node) -> None:
        x, indices, updates = node.inputs
        assert x is not None and indices is not None and updates is not None
        idx = self._nd_indices(indices, x)
        self.e.one(
            "ScatterND", [self.value(x), idx, self.value(updates)], self.out(node.outputs[0])
        )

    # ================================================================== matrix

    def _op_matmul(self, node: Node) -> None:
        a, b = node.inputs
        assert a is not None and b is not None
        self.e.one("MatMul", [self.value(a), self.value(b)], self.out(node.outputs[0]))

    def _op_gemm(self, node: Node) -> None:
        a, b, c = node.inputs
        assert a is not None and b is not None
        names = [self.value(a), self.value(b)]
        if c is not None:
            names.append(self.value(c))
        attrs = node.attrs
        self.e.one(
            "Gemm",
            names,
            self.out(node.outputs[0]),
            alpha=attrs["alpha"],
            beta=attrs["beta"],
            transA=int(attrs["a_transpose"]),
            transB=int(attrs["b_transpose"]),
        )

    # ================================================================== convolution and pooling

    def _to_nchw(self, x: MLOperand, layout: str) -> str:
        if layout == "nchw":
            return self.value(x)
        return self.e.one("Transpose", [self.value(x)], perm=[0, 3, 1, 2])

    def _from_nchw(self, value: str, layout: str, out: str) -> None:
        if layout == "nchw":
            self.e.one("Identity", [value], out)
        else:
            self.e.one("Transpose", [value], out, perm=[0, 2, 3, 1])

    def _conv_output(self, layout: str, out: str) -> str:
        """Where the ONNX conv/pool node writes: the result itself for nchw."""
        return out if layout == "nchw" else self.e.fresh()

    def _op_conv2d(self, node: Node) -> None:
        x, w, bias = node.inputs
        assert x is not None and w is not None
        attrs = node.attrs
        to_oihw = {
            "oihw": (0, 1, 2, 3),
            "hwio": (3, 2, 0, 1),
            "ohwi": (0, 3, 1, 2),
            "ihwo": (3, 0, 1, 2),
        }
        weight = self.transpose_const_or_node(w, to_oihw[attrs["filter_layout"]])
        names = [self._to_nchw(x, attrs["input_layout"]), weight]
        if bias is not None:
            names.append(self.value(bias))
        pads = attrs["padding"]
        out = self.out(node.outputs[0])
        target = self._conv_output(attrs["input_layout"], out)
        self.e.one(
            "Conv",
            names,
            target,
            pads=[pads[0], pads[2], pads[1], pads[3]],
            strides=list(attrs["strides"]),
            dilations=list(attrs["dilations"]),
            group=attrs["groups"],
        )
        if target != out:
            self._from_nchw(target, attrs["input_layout"], out)

    def _op_conv_transpose2d(self, node: Node) -> None:
        x, w, bias = node.inputs
        assert x is not None and w is not None
        attrs = node.attrs
        to_iohw = {"iohw": (0, 1, 2, 3), "hwoi": (3, 2, 0, 1), "ohwi": (3, 0, 1, 2)}
        weight = self.transpose_const_or_node(w, to_iohw[attrs["filter_layout"]])
        names = [self._to_nchw(x, attrs["input_layout"]), weight]
        if bias is not None:
            names.append(self.value(bias))
        pads = attrs["padding"]
        out = self.out(node.outputs[0])
        target = self._conv_output(attrs["input_layout"], out)
        self.e.one(
            "ConvTranspose",
            names,
            target,
            pads=[pads[0], pads[2], pads[1], pads[3]],
            strides=list(attrs["strides"]),
            dilations=list(attrs["dilations"]),
            output_padding=list(attrs["output_padding"]),
            group=attrs["groups"],
        )
        if target != out:
            self._from_nchw(target, attrs["input_layout"], out)

    def _pool(self, node: Node, op_type: str, **extra: Any) -> None:
        (x,) = node.inputs
        assert x is not None
        attrs = node.attrs
        layout = attrs["layout"]
        window, pads, strides, dilations = (
            attrs["window"],
            attrs["padding"],
            attrs["strides"],
            attrs["dilations"],
        )
        spatial = (x.shape[2], x.shape[3]) if layout == "nchw" else (x.shape[1], x.shape[2])
        # The output size is fixed by the builder (floor, ceil or output_sizes); reach it in
        # ONNX's floor mode by growing the end padding, which needs no ceil_mode semantics.
        begin = [pads[0], pads[2]]
        end = [pads[1], pads[3]]
        for i in range(2):
            span = (window[i] - 1) * dilations[i] + 1
            needed = (attrs["output"][i] - 1) * strides[i] + span - spatial[i] - begin[i]
            end[i] = max(end[i], needed)
        value = self._to_nchw(x, layout)
        out = self.out(node.outputs[0])
        target = self._conv_output(layout, out)
        if all(p < k for p, k in zip(begin + end, list(window) * 2, strict=True)):
            self.e.one(
                op_type,
                [value],
                target,
                kernel_shape=list(window),
                pads=begin + end,
                strides=list(strides),
                dilations=list(dilations),
                **extra,
            )
        else:
            self._pool_with_explicit_padding(
                node, op_type, value, spatial, begin, end, target, extra
            )
        if target != out:
            self._from_nchw(target, layout, out)

    def _pool_with_explicit_padding(
        self,
        node: Node,
        op_type: str,
        value: str,
        spatial: tuple[int, int],
        begin: list[int],
        end: list[int],
        target: str,
        extra: dict[str, Any],
    ) -> None:
        """Pooling whose padding reaches a whole window (which ONNX Runtime refuses): pad first."""
        (x,) = node.inputs
        assert x is not None
        attrs = node.attrs
        window, strides, dilations = attrs["window"], attrs["strides"], attrs["dilations"]
        dtype = x.data_type
        pool_attrs: dict[str, Any] = {
            "kernel_shape": list(window),
            "strides": list(strides),
            "dilations": list(dilations),
        }
        if op_type == "AveragePool":
            # sum each window with a depthwise ones-convolution (Conv accepts any padding), then
            # divide by the number of real elements in it (static shapes: computed here).
            # An explicit Pad before AveragePool would be fused back into it by ONNX Runtime.
            channels = x.shape[1] if attrs["layout"] == "nchw" else x.shape[3]
            ones = self.e.const(np.ones((channels, 1, *window), numpy_dtype(dtype)), share=True)
            summed = self.e.one(
                "Conv", [value, ones], pads=begin + end, group=channels, **pool_attrs
            )
            plane = np.zeros((spatial[0] + begin[0] + end[0], spatial[1] + begin[1] + end[1]))
            plane[begin[0] : begin[0] + spatial[0], begin[1] : begin[1] + spatial[1]] = 1.0
            counts = _window_sums(plane, window, strides, dilations, attrs["output"])
            with np.errstate(divide="ignore"):
                factor = (1.0 / counts).astype(numpy_dtype(dtype))
            self.e.one("Mul", [summed, self.e.const(factor, share=True)], target)
            return
        pads = self.e.ints([0, 0, begin[0], begin[1], 0, 0, end[0], end[1]])
        fill = 0.0
        if op_type == "MaxPool":
            fill = -math.inf if dtype in _FLOAT else float(np.iinfo(numpy_dtype(dtype)).min)
        padded = self.e.one("Pad", [value, pads, self.e.scalar(fill, dtype)], mode="constant")
        self.e.one(op_type, [padded], target, **pool_attrs, **extra)

    def _op_average_pool2d(self, node: Node) -> None:
        self._pool(node, "AveragePool", count_include_pad=0)

    def _op_l2_pool2d(self, node: Node) -> None:
        self._pool(node, "LpPool", p=2)

    def _op_max_pool2d(self, node: Node) -> None:
        self._pool(node, "MaxPool")

    def _op_resample2d(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        attrs = node.attrs
        result = node.outputs[0]
        mode = "nearest" if attrs["mode"] == "nearest-neighbor" else "linear"
        extra: dict[str, Any] = {"coordinate_transformation_mode": "half_pixel"}
        if mode == "nearest":
            extra["nearest_mode"] = "round_prefer_floor"
        axes = list(attrs["axes"])
        factors = list(attrs["scales"]) if attrs["scales"] is not None else None
        sizes = [result.shape[a] for a in axes]
        value = self.value(x)
        out = self.out(result)
        # ONNX Runtime's linear Resize scales only the two inner (NCHW) or middle (NHWC) axes
        # of a 4-D tensor: move any other pair there and back
        perm = None
        if mode == "linear" and sorted(axes) not in ([2, 3], [1, 2]):
            perm = [a for a in range(x.rank) if a not in axes] + sorted(axes)
            value = self.e.one("Transpose", [value], perm=perm)
            order = sorted(range(2), key=lambda i: axes[i])
            axes = [x.rank - 2, x.rank - 1]
            sizes = [sizes[i] for i in order]
            factors = [factors[i] for i in order] if factors is not None else None
        shape = [x.shape[a] for a in perm] if perm else list(x.shape)
        if factors is not None:
            scales = [1.0] * x.rank
            for axis, factor in zip(axes, factors, strict=True):
                scales[axis] = factor
            inputs = [value, "", self.e.const(np.asarray(scales, dtype=np.float32))]
        else:
            for axis, size in zip(axes, sizes, strict=True):
                shape[axis] = size
            inputs = [value, "", "", self.e.ints(shape)]
        if perm is None:
            self.e.one("Resize", inputs, out, mode=mode, **extra)
            return
        resized = self.e.one("Resize", inputs, mode=mode, **extra)
        inverse = [perm.index(a) for a in range(x.rank)]
        self.e.one("Transpose", [resized], out, perm=inverse)

    # ================================================================== normalization

    def _broadcast_param(self, operand: MLOperand, axes: Sequence[int], rank: int) -> str:
        """A parameter whose dimensions follow ``axes`` (in the given order), rearranged and
        reshaped so that it broadcasts against an operand of ``rank``."""
        order = sorted(range(len(axes)), key=lambda i: axes[i])
        identity = order == list(range(len(axes)))
        shape = [1] * rank
        for position, axis in enumerate(axes):
            shape[axis] = operand.shape[position]
        array = self.const_value(operand)
        if array is not None:
            arranged = array if identity else array.transpose(order)
            return self.e.const(np.ascontiguousarray(arranged).reshape(shape), share=True)
        value = self.value(operand)
        if not identity:
            value = self.e.one("Transpose", [value], perm=order)
        return self.e.one("Reshape", [value, self.e.ints(shape)])

    def _op_batch_normalization(self, node: Node) -> None:
        x, mean, variance, scale, bias = node.inputs
        assert x is not None and mean is not None and variance is not None
        axis, epsilon = node.attrs["axis"], node.attrs["epsilon"]
        rank = x.rank

        # computed in float32 with one rounding at the end, in the spec's order of operations
        def param(operand: MLOperand) -> str:
            value = self._broadcast_param(operand, [axis], rank)
            return value if operand.data_type == "float32" else self.e.cast(value, "float32")

        centered = self.e.one("Sub", [self.to_float32(x), param(mean)])
        spread = self.e.one(
            "Sqrt", [self.e.one("Add", [param(variance), self.e.scalar(epsilon, "float32")])]
        )
        value = self.e.one("Div", [centered, spread])
        if scale is not None:
            value = self.e.one("Mul", [value, param(scale)])
        if bias is not None:
            value = self.e.one("Add", [value, param(bias)])
        self.finish_float(value, x.data_type, self.out(node.outputs[0]))

    def _op_instance_normalization(self, node: Node) -> None:
        x, scale, bias = node.inputs
        assert x is not None
        layout = node.attrs["layout"]
        channels = x.shape[1] if layout == "nchw" else x.shape[3]
        dtype = numpy_dtype(x.data_type)
        scale_name = (
            self.value(scale) if scale is not None else self.e.const(np.ones(channels, dtype))
        )
        bias_name = (
            self.value(bias) if bias is not None else self.e.const(np.zeros(channels, dtype))
        )
        out = self.out(node.outputs[0])
        target = self._conv_output(layout, out)
        self.e.one(
            "InstanceNormalization",
            [self._to_nchw(x, layout), scale_name, bias_name],
            target,
            epsilon=node.attrs["epsilon"],
        )
        if target != out:
            self._from_nchw(target, layout, out)

    def _op_layer_normalization(self, node: Node) -> None:
        x, scale, bias = node.inputs
        assert x is not None
        axes: tuple[int, ...] = node.attrs["axes"]
        epsilon = node.attrs["epsilon"]
        out = self.out(node.outputs[0])
        rank = x.rank
        trailing = bool(axes) and tuple(axes) == tuple(range(rank - len(axes), rank))
        if trailing:
            shape = [x.shape[a] for a in axes]
            dtype = numpy_dtype(x.data_type)
            # centre first: ONNX Runtime's kernel takes the variance as E[x^2] - E[x]^2, which
            # cancels catastrophically (even below zero) when |mean| >> spread
            value = self.value(x)
            mean = self.e.one("ReduceMean", [value, self.e.ints(list(axes))], keepdims=1)
            names = [
                self.e.one("Sub", [value, mean]),
                self.value(scale) if scale is not None else self.e.const(np.ones(shape, dtype)),
            ]
            if bias is not None:
                names.append(self.value(bias))
            self.e.one("LayerNormalization", names, out, axis=axes[0], epsilon=epsilon)
            return
        value = self.to_float32(x)
        if axes:
            axes_name = self.e.ints(sorted(axes))
            mean = self.e.one("ReduceMean", [value, axes_name], keepdims=1)
            centered = self.e.one("Sub", [value, mean])
            variance = self.e.one(
                "ReduceMean", [self.e.one("Mul", [centered, centered]), axes_name], keepdims=1
            )
            spread = self.e.one(
                "Sqrt", [self.e.one("Add", [variance, self.e.scalar(epsilon, "float32")])]
            )
            value = self.e.one("Div", [centered, spread])
        else:
            # normalizing over no axis: every element is its own mean, with zero variance
            value = self.e.one("Sub", [value, value])
        for operand, op_type in ((scale, "Mul"), (bias, "Add")):
            if operand is not None:
                param = self._broadcast_param(operand, axes, rank)
                if operand.data_type != "float32":
                    param = self.e.cast(param, "float32")
                value = self.e.one(op_type, [value, param])
        self.finish_float(value, x.data_type, out)

    # ================================================================== quantization

    def _blocked(self, operand: MLOperand, target: tuple[int, ...]) -> str:
        """A scale/zero point repeated over blocks so that it has the input's shape."""
        padded = (1,) * (len(target) - operand.rank) + operand.shape
        if padded == target:
            return (
                self.reshape_const_or_node(operand, target)
                if operand.shape != target
                else self.value(operand)
            )
        array = self.const_value(operand)
        if array is not None:
            expanded = array.reshape(padded)
            for axis, (size, block) in enumerate(zip(target, padded, strict=True)):
                if block not in (1, size):
                    expanded = np.repeat(expanded, size // block, axis=axis)
            return self.e.const(np.ascontiguousarray(expanded), share=True)
        interleaved: list[int] = []
        repeated: list[int] = []
        for size, block in zip(target, padded, strict=True):
            interleaved += [block, 1]
            repeated += [block, size // block if block != 1 else 1]
        value = self.e.one("Reshape", [self.value(operand), self.e.ints(interleaved)])
        value = self.e.one("Expand", [value, self.e.ints(repeated)])
        flat = [s if b != 1 else 1 for s, b in zip(target, padded, strict=True)]
        return self.e.one("Reshape", [value, self.e.ints(flat)])

    def _op_dequantize_linear(self, node: Node) -> None:
        x, scale, zero_point = node.inputs
        assert x is not None and scale is not None and zero_point is not None
        out = self.out(node.outputs[0])
        value = self.e.cast(self.value(x), "float32")
        zero = self.e.cast(self._blocked(zero_point, x.shape), "float32")
        factor = self._blocked(scale, x.shape)
        if scale.data_type != "float32":
            factor = self.e.cast(factor, "float32")
        result = self.e.one("Mul", [self.e.one("Sub", [value, zero]), factor])
        self.finish_float(result, scale.data_type, out)

    def _op_quantize_linear(self, node: Node) -> None:
        x, scale, zero_point = node.inputs
        assert x is not None and scale is not None and zero_point is not None
        out = self.out(node.outputs[0])
        target_type = zero_point.data_type
        info = np.iinfo(numpy_dtype(target_type))
        factor = self._blocked(scale, x.shape)
        if scale.data_type != "float32":
            factor = self.e.cast(factor, "float32")
        rounded = self.e.one("Round", [self.e.one("Div", [self.to_float32(x), factor])])
        if target_type == "int32":
            # int32 exceeds float32's exact range: add the zero point in float64
            shifted = self.e.one(
                "Add",
                [
                    self.e.cast(rounded, "float64"),
                    self.e.cast(self._blocked(zero_point, x.shape), "float64"),
                ],
            )
            bounds = (np.float64(info.min), np.float64(info.max))
            clipped = self.e.one(
                "Clip",
                [shifted, self.e.const(np.asarray(bounds[0])), self.e.const(np.asarray(bounds[1]))],
            )
        else:
            shifted = self.e.one(
                "Add", [rounded, self.e.cast(self._blocked(zero_point, x.shape), "float32")]
            )
            clipped = self.e.one(
                "Clip",
                [
                    shifted,
                    self.e.scalar(float(info.min), "float32"),
                    self.e.scalar(float(info.max), "float32"),
                ],
            )
        self.e.cast(clipped, target_type, out)

    # ================================================================== recurrent networks

    def _reorder_gates(
        self, operand: MLOperand, axis: int, order: Sequence[int], gates: int
    ) -> str:
        """Reorder the gate blocks of a weight or bias along ``axis`` into ONNX's order."""
        if list(order) == list(range(gates)):
            return self.value(operand)
        array = self.const_value(operand)
        if array is not None:
            blocks = np.split(array, gates, axis=axis)
            return self.e.const(
                np.ascontiguousarray(np.concatenate([blocks[i] for i in order], axis=axis)),
                share=True,
            )
        parts = self.e.node("Split", [self.value(operand)], gates, axis=axis, num_outputs=gates)
        return self.e.one("Concat", [parts[i] for i in order], axis=axis)

    def _recurrent_bias(
        self, bias: MLOperand | None, recurrent_bias: MLOperand | None, order: Sequence[int],
        gates: int, dirs: int, hidden: int, dtype: str, axis: int,
    ) -> str:  # fmt: skip
        """ONNX's B input: [input bias, recurrent bias] concatenated (zeros where absent)."""
        parts = []
        for operand in (bias, recurrent_bias):
            if operand is None:
                shape = (dirs, gates * hidden) if axis == 1 else (gates * hidden,)
                parts.append(self.e.const(np.zeros(shape, numpy_dtype(dtype))))
            else:
                parts.append(self._reorder_gates(operand, axis, order, gates))
        return self.e.one("Concat", parts, axis=axis)

    def _run_recurrent(
        self,
        op_type: str,
        node: Node,
        x: str,
        weights: tuple[str, str, str],
        initial: Sequence[str],
        dirs: int,
        extra_inputs: Sequence[str],
        outputs: Sequence[str],
        **attrs: Any,
    ) -> list[str]:
        activations = [name.capitalize() for name in node.attrs["activations"]] * dirs
        direction = {"forward": "forward", "backward": "reverse", "both": "bidirectional"}[
            node.attrs.get("direction", "forward")
        ]
        inputs = [x, *weights, "", *initial, *extra_inputs]
        while inputs and inputs[-1] == "":
            inputs.pop()
        return self.e.node(
            op_type,
            inputs,
            outputs,
            hidden_size=node.attrs["hidden_size"],
            direction=direction,
            activations=activations,
            **attrs,
        )

    def _sequence(self, sequence: str, direction: str, steps: int, out: str) -> None:
        """WebNN orders a backward direction's sequence by processing step (the spec's
        emulation): reverse ONNX's time-aligned output along the step axis for it."""
        if direction == "forward" or steps == 1:
            self.e.one("Identity", [sequence], out)
            return
        reverse = [
            self.e.ints([-1]),
            self.e.ints([_INT64_MIN]),
            self.e.ints([0]),
            self.e.ints([-1]),
        ]
        if direction == "backward":
            self.e.one("Slice", [sequence, *reverse], out)
            return
        forward, backward = self.e.node("Split", [sequence, self.e.ints([1, 1])], 2, axis=1)
        self.e.one("Concat", [forward, self.e.one("Slice", [backward, *reverse])], out, axis=1)

    def _op_gru(self, node: Node) -> None:
        x, w, r, bias, recurrent_bias, initial = node.inputs
        assert x is not None and w is not None and r is not None
        order = (0, 1, 2) if node.attrs["layout"] == "zrn" else (1, 0, 2)
        hidden, dirs = node.attrs["hidden_size"], w.shape[0]
        weights = (
            self._reorder_gates(w, 1, order, 3),
            self._reorder_gates(r, 1, order, 3),
            self._recurrent_bias(bias, recurrent_bias, order, 3, dirs, hidden, x.data_type, 1),
        )
        sequence = node.attrs["return_sequence"]
        outs = self._run_recurrent(
            "GRU", node, self.value(x), weights, [self.value(initial)] if initial else [], dirs, [],
            [self.e.fresh() if sequence else "", self.out(node.outputs[0])],
            linear_before_reset=int(node.attrs["reset_after"]),
        )  # fmt: skip
        if sequence:
            self._sequence(outs[0], node.attrs["direction"], x.shape[0], self.out(node.outputs[1]))

    def _op_gru_cell(self, node: Node) -> None:
        x, w, r, h, bias, recurrent_bias = node.inputs
        assert x is not None and w is not None and r is not None and h is not None
        order = (0, 1, 2) if node.attrs["layout"] == "zrn" else (1, 0, 2)
        hidden = node.attrs["hidden_size"]
        weights = (
            self.e.one("Unsqueeze", [self._reorder_gates(w, 0, order, 3), self.e.ints([0])]),
            self.e.one("Unsqueeze", [self._reorder_gates(r, 0, order, 3), self.e.ints([0])]),
            self.e.one(
                "Unsqueeze",
                [
                    self._recurrent_bias(bias, recurrent_bias, order, 3, 1, hidden, x.data_type, 0),
                    self.e.ints([0]),
                ],
            ),
        )
        step = self.e.one("Unsqueeze", [self.value(x), self.e.ints([0])])
        state = self.e.one("Unsqueeze", [self.value(h), self.e.ints([0])])
        outs = self._run_recurrent(
            "GRU", node, step, weights, [state], 1, [], ["", self.e.fresh()],
            linear_before_reset=int(node.attrs["reset_after"]),
        )  # fmt: skip
        self.e.one("Squeeze", [outs[1], self.e.ints([0])], self.out(node.outputs[0]))

    _LSTM_ORDER: Final = {"iofg": (0, 1, 2, 3), "ifgo": (0, 3, 1, 2)}

    def _op_lstm(self, node: Node) -> None:
        x, w, r, bias, recurrent_bias, peephole, initial_h, initial_c = node.inputs
        assert x is not None and w is not None and r is not None
        order = self._LSTM_ORDER[node.attrs["layout"]]
        hidden, dirs = node.attrs["hidden_size"], w.shape[0]
        weights = (
            self._reorder_gates(w, 1, order, 4),
            self._reorder_gates(r, 1, order, 4),
            self._recurrent_bias(bias, recurrent_bias, order, 4, dirs, hidden, x.data_type, 1),
        )
        initial = [
            self.value(initial_h) if initial_h else "",
            self.value(initial_c) if initial_c else "",
        ]
        extra = [self.value(peephole)] if peephole is not None else []
        sequence = node.attrs["return_sequence"]
        outs = self._run_recurrent(
            "LSTM", node, self.value(x), weights, initial, dirs, extra,
            [self.e.fresh() if sequence else "", self.out(node.outputs[0]), self.out(node.outputs[1])],
        )  # fmt: skip
        if sequence:
            self._sequence(outs[0], node.attrs["direction"], x.shape[0], self.out(node.outputs[2]))

    def _op_lstm_cell(self, node: Node) -> None:
        x, w, r, h, c, bias, recurrent_bias, peephole = node.inputs
        assert x is not None and w is not None and r is not None and h is not None and c is not None
        order = self._LSTM_ORDER[node.attrs["layout"]]
        hidden = node.attrs["hidden_size"]
        axis0 = self.e.ints([0])
        weights = (
            self.e.one("Unsqueeze", [self._reorder_gates(w, 0, order, 4), axis0]),
            self.e.one("Unsqueeze", [self._reorder_gates(r, 0, order, 4), axis0]),
            self.e.one(
                "Unsqueeze",
                [
                    self._recurrent_bias(bias, recurrent_bias, order, 4, 1, hidden, x.data_type, 0),
                    axis0,
                ],
            ),
        )
        step = self.e.one("Unsqueeze", [self.value(x), axis0])
        initial = [
            self.e.one("Unsqueeze", [self.value(h), axis0]),
            self.e.one("Unsqueeze", [self.value(c), axis0]),
        ]
        extra = (
            [self.e.one("Unsqueeze", [self.value(peephole), axis0])] if peephole is not None else []
        )
        outs = self._run_recurrent(
            "LSTM", node, step, weights, initial, 1, extra, ["", self.e.fresh(), self.e.fresh()]
        )
        self.e.one("Squeeze", [outs[1], axis0], self.out(node.outputs[0]))
        self.e.one("Squeeze", [outs[2], axis0], self.out(node.outputs[1]))


def _window_sums(
    plane: np.ndarray[Any, Any],
    window: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    output: Sequence[int],
) -> np.ndarray[Any, Any]:
    """Sum of ``plane`` under each (dilated, strided) pooling window, in float64."""
    result = np.zeros(tuple(output), dtype=np.float64)
    for i in range(output[0]):
        for j in range(output[1]):
            rows = i * strides[0] + dilations[0] * np.arange(window[0])
            cols = j * strides[1] + dilations[1] * np.arange(window[1])
            result[i, j] = plane[np.ix_(rows, cols)].sum()
    return result


def lower(
    nodes: Sequence[Node],
    inputs: Sequence[MLOperand],
    outputs: dict[str, MLOperand],
    name: str = "webnn",
) -> LoweredModel:
    """Build the ONNX model of ``nodes`` with graph ``inputs`` and named ``outputs``.

    Input value names are the WebNN input names; output value names are the WebNN output
    names unless one collides with an input name (then it gets a fresh name, recorded in
    ``LoweredModel.output_names``).
    """
    input_names = {operand._name: operand._name for operand in inputs if operand._name is not None}
    reserved = set(input_names) | set(outputs)
    emitter = _Emitter(reserved)
    output_value: dict[str, str] = {}
    by_operand: dict[int, str] = {}
    aliases: list[tuple[str, str]] = []  # (source output name, alias output name)
    for out_name, operand in outputs.items():
        value_name = out_name if out_name not in input_names else emitter.fresh()
        output_value[out_name] = value_name
        if operand._id in by_operand:
            aliases.append((by_operand[operand._id], value_name))
        else:
            by_operand[operand._id] = value_name
    lowering = _Lowering(emitter, by_operand)
    for operand in inputs:
        assert operand._name is not None
        emitter.names[operand._id] = operand._name
    constant_ids: set[int] = set()
    for node in nodes:
        for argument in node.inputs:
            if (
                argument is not None
                and argument._kind == CONSTANT
                and argument._id not in constant_ids
            ):
                constant_ids.add(argument._id)
                assert argument._value is not None
                emitter.names[argument._id] = emitter.const(argument._value, share=True)
        try:
            lowering.lower(node)
        except Exception as error:  # an internal failure still names the op it happened in
            label = f" [{node.label}]" if node.label else ""
            raise WebNNOperationError(
                f"build: {node.op}{label} could not be lowered to ONNX: {type(error).__name__}: {error}"
            ) from error
    for source, alias in aliases:
        emitter.one("Identity", [source], alias)

    helper = emitter.helper

    def info(value_name: str, operand: MLOperand) -> Any:
        return helper.make_tensor_value_info(
            value_name, onnx_type(operand.data_type), list(operand.shape)
        )

    graph = helper.make_graph(
        emitter.nodes,
        name,
        [info(operand._name or "", operand) for operand in inputs if operand._kind == INPUT],
        [info(output_value[n], operand) for n, operand in outputs.items()],
        initializer=emitter.initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        producer_name="ipfs_accelerate.webnn",
    )
    model.ir_version = IR_VERSION
    return LoweredModel(model, emitter.external, input_names, output_value)


def embed_constants(lowered: LoweredModel) -> Any:
    """A self-contained copy of the model: external constants written into it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(lowered.model)
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name in lowered.external:
            model.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(lowered.external[tensor.name], tensor.name)
            )
    return model
