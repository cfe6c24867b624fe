"""The scalar helpers and the exact integer and float arithmetic of the WebNN trace emitter
(:class:`._emit.TraceEmitter` builds on :class:`ArithmeticEmitter`): constants and casts,
check flags, overflow tests, 64-bit products and floor division composed exactly from ops
WebNN has. Split out of :mod:`._emit` so that each module stays within the house's length.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from ipfs_accelerate.hal.webnn._checks import INT_RANGE

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ipfs_accelerate.webnn import MLGraphBuilder, MLOperand

__all__ = ["ArithmeticEmitter", "scalar_token", "token_value", "webnn_type"]

_WEBNN_TYPE = {
    "float16": "float16",
    "float32": "float32",
    "int32": "int32",
    "int64": "int64",
    "int8": "int8",
    "uint8": "uint8",
    "bool": "uint8",
    # quantized weights' integers (the int4/uint4 extension, one value per byte)
    "int4": "int4",
    "uint4": "uint4",
}
# Dekker's splitter for float32 (2**12 + 1): splits a float32 into two 12-bit halves
_SPLITTER = 4097.0


def webnn_type(dtype: str) -> str:
    """The WebNN data type that holds a tensor dtype (bool is stored as uint8)."""
    return _WEBNN_TYPE[dtype]


def scalar_token(value: bool | int | float) -> tuple[str, Any]:
    """A Python scalar as a hashable key part that tells every value apart (0.0 from -0.0,
    1 from 1.0 from True) and equals itself (NaN)."""
    if isinstance(value, bool):
        return ("b", int(value))
    if isinstance(value, int):
        return ("i", value)
    return ("f", float(value).hex())


def token_value(token: tuple[str, Any]) -> bool | int | float:
    kind, raw = token
    if kind == "f":
        return float.fromhex(raw)
    if kind == "b":
        return bool(raw)
    return int(raw)


class ArithmeticEmitter:
    """Scalar constants, casts, check flags and exact arithmetic over one MLGraphBuilder."""

    def __init__(self, builder: MLGraphBuilder) -> None:
        self.b = builder
        #: flag/value operands computed beside a checked op's result, by the op's position
        self.aux: dict[int, list[MLOperand]] = {}
        self._constants: dict[tuple[Any, ...], MLOperand] = {}
        # operands that are graph inputs or constants rather than results of an op
        self._not_results: set[int] = set()
        self._index = -1

    def const(self, value: bool | int | float, dtype: str) -> MLOperand:
        """A scalar constant of ``dtype`` (reused within the graph)."""
        key = (dtype, scalar_token(value))
        found = self._constants.get(key)
        if found is None:
            number = int(value) if dtype == "bool" else value
            found = self.b.constant(webnn_type(dtype), number)
            self._constants[key] = found
            self._not_results.add(id(found))
        return found

    def const_like(
        self, token: tuple[str, Any] | None, operand: MLOperand | None, dtype: str
    ) -> MLOperand:
        """``operand``, or the scalar ``token`` as a constant of ``dtype``."""
        if operand is not None:
            return operand
        assert token is not None
        return self.const(token_value(token), dtype)

    def cast(self, x: MLOperand, dtype: str) -> MLOperand:
        target = webnn_type(dtype)
        return x if x.data_type == target else self.b.cast(x, target)

    def widen(self, x: MLOperand) -> MLOperand:
        """float16 -> float32 (other types unchanged)."""
        return self.b.cast(x, "float32") if x.data_type == "float16" else x

    def narrow(self, x: MLOperand, dtype: str) -> MLOperand:
        """A float32 result (of widened float16 work) back in ``dtype``."""
        return self.cast(x, dtype)

    def any(self, mask: MLOperand) -> MLOperand:
        """1 (uint8 scalar) when any element of the 0/1 ``mask`` is set."""
        return self.b.reduce_max(mask)

    def truth(self, x: MLOperand, dtype: str) -> MLOperand:
        """The truth value (0/1 uint8) of any value: non-zero is true, NaN too."""
        if dtype == "bool":
            return x
        return self.b.not_equal(x, self.const(0, dtype))

    def zeros_u8(self, shape: Sequence[int], value: int = 0) -> MLOperand:
        return self.b.expand(self.const(value, "uint8"), list(shape))

    def flags(self, *masks: MLOperand) -> None:
        """Record the check values of the op being emitted."""
        self.aux[self._index] = list(masks)

    # ------------------------------------------------------------------ integer arithmetic

    def _overflow(
        self, op: str, a: MLOperand, c: MLOperand, result: MLOperand, dtype: str
    ) -> MLOperand:
        """0/1 per element: ``a op c`` overflowed ``dtype`` (``result`` is the wrapped value)."""
        b = self.b
        zero = self.const(0, dtype)
        if dtype == "uint8":
            if op == "add":
                return b.lesser(result, a)
            if op == "sub":
                return b.lesser(a, c)
            wide = b.mul(b.cast(a, "int32"), b.cast(c, "int32"))
            return b.greater(wide, self.const(255, "int32"))
        if op in ("add", "sub"):
            sign_a, sign_c, sign_r = b.lesser(a, zero), b.lesser(c, zero), b.lesser(result, zero)
            operands_agree = b.equal(sign_a, sign_c) if op == "add" else b.not_equal(sign_a, sign_c)
            return b.logical_and(operands_agree, b.not_equal(sign_r, sign_a))
        if dtype in ("int8", "int32"):  # the exact product in the next wider integer
            wider = "int32" if dtype == "int8" else "int64"
            wide = b.mul(b.cast(a, wider), b.cast(c, wider))
            return self._outside(wide, wider, *INT_RANGE[dtype])
        return self._mul64_overflow(a, c, result)

    def _outside(self, x: MLOperand, dtype: str, low: int, high: int) -> MLOperand:
        b = self.b
        return b.logical_or(
            b.lesser(x, self.const(low, dtype)), b.greater(x, self.const(high, dtype))
        )

    def _mul64_overflow(self, a: MLOperand, c: MLOperand, product: MLOperand) -> MLOperand:
        """Exact overflow test of an int64 product: the wrapped product divided by a non-zero
        ``a`` gives back ``c`` exactly when nothing wrapped (plus the two -1 * MIN cases)."""
        b = self.b
        low = INT_RANGE["int64"][0]
        nonzero = b.not_equal(a, self.const(0, "int64"))
        divisor = b.where(nonzero, a, self.const(1, "int64"))
        bad = b.logical_and(nonzero, b.not_equal(b.div(product, divisor), c))
        minus_one, minimum = self.const(-1, "int64"), self.const(low, "int64")
        bad = b.logical_or(bad, b.logical_and(b.equal(a, minus_one), b.equal(c, minimum)))
        return b.logical_or(bad, b.logical_and(b.equal(c, minus_one), b.equal(a, minimum)))

    def _checked_mul64(self, a: MLOperand, c: MLOperand) -> tuple[MLOperand, MLOperand]:
        product = self.b.mul(a, c)
        return product, self._mul64_overflow(a, c, product)

    def _int_floor_divide(self, name: str, a: MLOperand, c: MLOperand, dtype: str) -> MLOperand:
        """numpy's floor division / remainder of integers (WebNN's div truncates, and gives 0
        for a zero divisor: the zero check raises at readback)."""
        b = self.b
        zero = self.const(0, dtype)
        self.flags(self.any(b.equal(c, zero)))
        quotient = b.div(a, c)
        rest = b.sub(a, b.mul(quotient, c))
        if dtype == "uint8":
            return quotient if name == "floor_divide" else rest
        adjust = b.logical_and(
            b.not_equal(rest, zero), b.not_equal(b.lesser(rest, zero), b.lesser(c, zero))
        )
        if name == "floor_divide":
            return b.sub(quotient, b.cast(adjust, dtype))
        return b.where(adjust, b.add(rest, c), rest)

    def _int_pow(self, a: MLOperand, c: MLOperand, dtype: str, shape: Sequence[int]) -> MLOperand:
        """Exact integer power by repeated squaring in int64, with exact overflow tracking
        (ONNX Runtime's integer Pow goes through double and is inexact past 2**53)."""
        b = self.b
        i64 = "int64"
        base = self.cast(a, i64)
        exponent = self.cast(c, i64)
        zero, one, two = self.const(0, i64), self.const(1, i64), self.const(2, i64)
        negative = self.any(b.lesser(exponent, zero))
        exponent = b.max(exponent, zero)
        # |base| >= 2 overflows from exponent 64 on; 64 or 65 keep the parity that -1 needs
        parity = b.sub(exponent, b.mul(b.div(exponent, two), two))
        exponent = b.where(
            b.greater(exponent, self.const(65, i64)), b.add(self.const(64, i64), parity), exponent
        )
        result = one
        overflow: MLOperand = self.const(0, "uint8")
        base_overflow: MLOperand = overflow
        for step in range(7):
            half = b.div(exponent, two)
            bit = b.equal(b.sub(exponent, b.mul(half, two)), one)
            exponent = half
            product, product_overflow = self._checked_mul64(result, base)
            overflow = b.logical_or(
                overflow, b.logical_and(bit, b.logical_or(base_overflow, product_overflow))
            )
            result = b.where(bit, product, result)
            if step < 6:
                squared, squared_overflow = self._checked_mul64(base, base)
                base_overflow = b.logical_or(base_overflow, squared_overflow)
                base = squared
        if list(result.shape) != list(shape):
            result = b.expand(result, list(shape))
        if dtype != i64:
            overflow = b.logical_or(overflow, self._outside(result, i64, *INT_RANGE[dtype]))
        self.flags(negative, self.any(overflow))
        return self.cast(result, dtype)

    # ------------------------------------------------------------------ float floor division

    def _two_product_error(self, x: MLOperand, y: MLOperand, product: MLOperand) -> MLOperand:
        """The exact rounding error of the float32 product ``x * y`` (Dekker):
        x*y = product + error."""
        b = self.b

        def split(v: MLOperand) -> tuple[MLOperand, MLOperand]:
            scaled = b.mul(v, self.const(_SPLITTER, "float32"))
            high = b.sub(scaled, b.sub(scaled, v))
            return high, b.sub(v, high)

        xh, xl = split(x)
        yh, yl = split(y)
        error = b.sub(b.mul(xh, yh), product)
        error = b.add(error, b.mul(xh, yl))
        error = b.add(error, b.mul(xl, yh))
        error = b.add(error, b.mul(xl, yl))
        # the splitter overflows for huge values; the error is then negligible beside them
        finite = b.logical_not(b.logical_or(b.is_nan(error), b.is_infinite(error)))
        return b.where(finite, error, self.const(0.0, "float32"))

    def _exact_residual(self, a: MLOperand, q: MLOperand, c: MLOperand) -> MLOperand:
        """``a - q * c`` with the product taken exactly (one rounding at the end)."""
        b = self.b
        product = b.mul(q, c)
        return b.sub(b.sub(a, product), self._two_product_error(q, c, product))

    def _float_floor_divide(self, name: str, a: MLOperand, c: MLOperand) -> MLOperand:
        """numpy's floor_divide / remainder of float32 values: the floor of the exact quotient
        and ``a - floor * c``, with numpy's results for zero divisors and infinities."""
        b = self.b
        f32 = "float32"
        zero, one, nan = self.const(0.0, f32), self.const(1.0, f32), self.const(math.nan, f32)
        quotient = b.floor(b.div(a, c))
        # a/c can round up onto an integer the exact quotient does not reach: then the exact
        # residual has the sign opposite to c's
        residual = self._exact_residual(a, quotient, c)
        too_big = b.logical_and(
            b.not_equal(residual, zero), b.not_equal(b.lesser(residual, zero), b.lesser(c, zero))
        )
        finite_quotient = b.logical_not(b.logical_or(b.is_nan(quotient), b.is_infinite(quotient)))
        floor = b.where(b.logical_and(too_big, finite_quotient), b.sub(quotient, one), quotient)
        c_zero = b.equal(c, zero)
        a_bad = b.logical_or(b.is_nan(a), b.is_infinite(a))
        c_inf = b.is_infinite(c)
        same_side = b.logical_or(b.equal(a, zero), b.equal(b.lesser(a, zero), b.lesser(c, zero)))
        if name == "floor_divide":
            value = b.where(c_inf, b.where(same_side, zero, self.const(-1.0, f32)), floor)
            value = b.where(a_bad, nan, value)
            return b.where(c_zero, b.div(a, c), value)
        rest = self._exact_residual(a, floor, c)
        rest = b.where(c_inf, b.where(same_side, a, c), rest)
        return b.where(b.logical_or(c_zero, a_bad), nan, rest)
