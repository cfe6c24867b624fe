"""Element-wise ops and activations: one ONNX node each where ONNX Runtime has the type."""

from __future__ import annotations

from typing import Any

from ipfs_accelerate.webnn._onnx._base import FLOAT, SUPPORTED, LoweringBase
from ipfs_accelerate.webnn._operand import Node
from ipfs_accelerate.webnn._types import numpy_dtype

__all__ = ["ElementwiseLowering"]


class ElementwiseLowering(LoweringBase):
    """Arithmetic, comparisons, logic, unary functions, casts and activations."""

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
        if dtype in FLOAT:
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
        safe = self.where(unsafe, one, bv, dtype)
        quotient = self.e.one("Div", [av, safe])
        if is_minus_one is not None:
            negated = self.compute("Neg", [av], dtype, self.e.fresh())
            quotient = self.where(is_minus_one, negated, quotient, dtype)
        self.where(is_zero, zero, quotient, dtype, out)

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
        if x.data_type in SUPPORTED["Relu"]:
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
        if x.data_type in FLOAT:
            self.e.one("PRelu", [self.value(x), self.value(slope)], out)
            return
        negative = self.e.one("Less", [self.value(x), self.e.scalar(0, x.data_type)])
        scaled = self.e.one("Mul", [self.value(x), self.value(slope)])
        self.where(negative, scaled, self.value(x), x.data_type, out)

    def _op_clamp(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        low = self.e.scalar(node.attrs["min"], x.data_type)
        high = self.e.scalar(node.attrs["max"], x.data_type)
        self.e.one("Clip", [self.value(x), low, high], self.out(node.outputs[0]))
