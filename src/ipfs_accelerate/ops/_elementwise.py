"""Element-wise ops with numpy's broadcasting and type promotion.

Output dtypes follow numpy: arithmetic promotes (Python scalars are weak, NEP 50), except that
mixed integer/float operands give the float operand's dtype (float32 for an integer tensor
with a Python float; see tensor/_dtype.py ``result_type``); ``div`` of two integer tensors
gives numpy's float64; float functions (exp, sqrt, erf, sigmoid, gelu...) of integers give
numpy's float for that integer; comparisons and logical ops give bool. ``bool + bool`` is
logical or and ``bool * bool`` logical and, as in numpy. A Python scalar that does not fit
the tensor's dtype (``uint8_tensor + 300``, or a float beyond float16's range) raises
TensorOverflowError instead of wrapping.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ipfs_accelerate.errors import DtypeError, TensorOverflowError, UnsupportedOpError
from ipfs_accelerate.hal._limits import check_tensor_size
from ipfs_accelerate.ops._core import (
    Operand,
    Shape,
    as_tensor,
    broadcast_many,
    broadcast_shapes,
    cast_to,
    describe,
    is_scalar,
    promote,
    python_scalar,
    run,
    same_backend,
)
from ipfs_accelerate.tensor._autograd import STATE as _GRAD_STATE
from ipfs_accelerate.tensor._autograd import is_grad_enabled, no_grad
from ipfs_accelerate.tensor._autograd import record as _record
from ipfs_accelerate.tensor._dtype import (
    DType,
    bool_,
    float_result_dtype,
    int8,
    int32,
    result_type,
    uint8,
)
from ipfs_accelerate.tensor._tensor import Tensor

__all__ = [
    "abs",
    "add",
    "ceil",
    "clamp",
    "cos",
    "div",
    "equal",
    "erf",
    "exp",
    "floor",
    "floor_divide",
    "gelu",
    "greater",
    "greater_equal",
    "isfinite",
    "isinf",
    "isnan",
    "less",
    "less_equal",
    "log",
    "logical_and",
    "logical_not",
    "logical_or",
    "logical_xor",
    "maximum",
    "minimum",
    "mul",
    "neg",
    "not_equal",
    "pow",
    "reciprocal",
    "relu",
    "remainder",
    "round",
    "rsqrt",
    "sigmoid",
    "sign",
    "silu",
    "sin",
    "sqrt",
    "square",
    "sub",
    "tanh",
    "where",
]

_ARITH_UFUNCS: dict[str, Any] = {
    "add": np.add,
    "sub": np.subtract,
    "mul": np.multiply,
    "div": np.true_divide,
    "pow": np.power,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "floor_divide": np.floor_divide,
    "remainder": np.remainder,
}
_COMPARISONS = frozenset(
    {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal",
     "logical_and", "logical_or", "logical_xor"}
)  # fmt: skip
_BOOL_ALIASES = {"add": "logical_or", "mul": "logical_and"}
_ARITH_CACHE: dict[tuple[str, DType], DType | str] = {}


def _arith_dtype(op: str, dtype: DType) -> DType:
    """The dtype numpy computes ``op`` in for two operands of ``dtype`` (cached probe)."""
    key = (op, dtype)
    found = _ARITH_CACHE.get(key)
    if found is None:
        probe = np.ones(1, dtype=dtype.numpy)
        try:
            with np.errstate(all="ignore"):
                out_np = _ARITH_UFUNCS[op](probe, probe).dtype
            from ipfs_accelerate.tensor._dtype import _BY_NUMPY

            found = _BY_NUMPY.get(out_np) or f"gives numpy dtype {out_np}, which is not supported"
        except TypeError:
            found = "is not defined by numpy"
        _ARITH_CACHE[key] = found
    if isinstance(found, str):
        raise DtypeError(f"{op} on {dtype.name} operands {found}; cast with .astype() first")
    return found


def _check_scalar(op: str, value: Any, dtype: DType) -> None:
    """Refuse a Python scalar that the compute dtype cannot hold (numpy 2 raises here too)."""
    if dtype.is_floating:
        if (
            value.__class__ is float
            and not -dtype.max <= value <= dtype.max
            and math.isfinite(value)
        ):
            raise TensorOverflowError(
                f"{op}: scalar {value!r} overflows {dtype.name} (max {dtype.max})"
            )
        return
    if dtype.is_integer and value.__class__ is int and not dtype.min <= value <= dtype.max:
        raise TensorOverflowError(
            f"{op}: scalar {value} is out of range for {dtype.name} [{dtype.min}, {dtype.max}]"
        )


#: (op, compute dtype) -> output dtype, filled on first use of each pair
_BINARY_OUT: dict[tuple[str, DType], DType] = {}


def _binary_out_dtype(op: str, dtype: DType) -> tuple[str, DType, DType]:
    """(op to run, compute dtype, output dtype) for ``op`` on operands promoted to ``dtype``."""
    if op in _COMPARISONS:
        return op, dtype, bool_
    if dtype is bool_ and op in _BOOL_ALIASES:
        return _BOOL_ALIASES[op], dtype, bool_
    out = _arith_dtype(op, dtype)
    return op, out, out


def _binary(op: str, a: Any, b: Any) -> Tensor:
    a_is_tensor = a.__class__ is Tensor
    b_is_tensor = b.__class__ is Tensor
    if a_is_tensor and b_is_tensor:
        backend = a._backend
        if b._backend is not backend:
            same_backend(op, (a, b))
        dtype = a.dtype if a.dtype is b.dtype else _promote_pair(op, a, b)
        shape: Shape = a.shape if a.shape == b.shape else broadcast_shapes(a.shape, b.shape, op)
        grown = shape != a.shape and shape != b.shape
    elif a_is_tensor:
        grown = False
        if b.__class__ not in _PY_SCALARS:
            if not is_scalar(b):
                return _binary(op, a, as_tensor(b, op=op, like=a))
            b = python_scalar(b)
        backend = a._backend
        dtype = _scalar_promotion(a.dtype, b, op)
        shape = a.shape
    elif b_is_tensor:
        if a.__class__ not in _PY_SCALARS:
            if not is_scalar(a):
                return _binary(op, as_tensor(a, op=op, like=b), b)
            a = python_scalar(a)
        grown = False
        backend = b._backend
        dtype = _scalar_promotion(b.dtype, a, op)
        shape = b.shape
    else:
        return _binary(op, as_tensor(a, op=op), b)

    if (
        op in _COMPARISONS
        and dtype.is_floating
        and (_inexact(a, b, dtype) or _inexact(b, a, dtype))
    ):
        # a float and an integer compare exactly (as numpy does in float64), not in the
        # promoted float, which may not hold the integer: bool results need no common dtype
        from ipfs_accelerate.ops._mixed import exact_comparison

        return exact_comparison(op, a, b)
    key = (op, dtype)
    out_dtype = _BINARY_OUT.get(key)
    if out_dtype is None or (dtype is bool_ and op in _BOOL_ALIASES):
        op, dtype, out_dtype = _binary_out_dtype(op, dtype)
        _BINARY_OUT[key] = out_dtype
    elif out_dtype is not bool_:
        dtype = out_dtype
    if a_is_tensor:
        if a.dtype is not dtype:
            a = cast_to(a, dtype)
    else:
        _check_scalar(op, a, dtype)
    if b_is_tensor:
        if b.dtype is not dtype:
            b = cast_to(b, dtype)
    else:
        _check_scalar(op, b, dtype)
    if grown:  # broadcasting makes the result larger than both operands: bound it
        check_tensor_size(
            shape, out_dtype.itemsize, op=op, dtype=out_dtype.name, device=backend.name
        )
    try:
        result = Tensor(backend.binary(op, a, b, shape), shape, out_dtype, backend)
    except UnsupportedOpError:
        return run(backend, "binary", (op, a, b, shape), shape, out_dtype)
    if _GRAD_STATE.armed and out_dtype.is_floating:
        _record("binary", (op, a, b, shape), result)
    return result


_PY_SCALARS = frozenset({bool, int, float})


def _promote_pair(op: str, a: Tensor, b: Tensor) -> DType:
    if op in _COMPARISONS and {a.dtype, b.dtype} == {int8, uint8}:
        return int32  # numpy compares in int16, which is not supported; int32 holds both
    return promote(op, a, b)


#: significand bits of each float: the widest integers it holds exactly
_FLOAT_DIGITS = {"float16": 11, "float32": 24, "float64": 53}


def _inexact(value: Any, other: Any, dtype: DType) -> bool:
    """Whether comparing integer/bool tensor ``value`` with ``other`` in float ``dtype`` could
    round: its integers do not all fit ``dtype``, or ``other`` is a Python float (which
    ``dtype`` may not hold either)."""
    if value.__class__ is not Tensor or value.dtype.is_floating:
        return False
    if other.__class__ is float:
        return True
    return int(value.dtype.max).bit_length() > _FLOAT_DIGITS[dtype.name]


_SCALAR_PROMOTION: dict[tuple[DType, type], DType] = {}


def _scalar_promotion(dtype: DType, scalar: Any, op: str) -> DType:
    found = _SCALAR_PROMOTION.get((dtype, scalar.__class__))
    if found is None:
        found = result_type(dtype, scalar, op=op)
        _SCALAR_PROMOTION[(dtype, scalar.__class__)] = found
    return found


def add(a: Operand, b: Operand) -> Tensor:
    """``a + b`` with broadcasting."""
    return _binary("add", a, b)


def sub(a: Operand, b: Operand) -> Tensor:
    """``a - b`` with broadcasting (not defined for bool, as in numpy)."""
    return _binary("sub", a, b)


def mul(a: Operand, b: Operand) -> Tensor:
    """``a * b`` with broadcasting."""
    return _binary("mul", a, b)


def div(a: Operand, b: Operand) -> Tensor:
    """True division ``a / b``; integers divide as floats (numpy's dtype)."""
    return _binary("div", a, b)


def floor_divide(a: Operand, b: Operand) -> Tensor:
    """``a // b`` (numpy's floor division); integer division by zero raises."""
    return _binary("floor_divide", a, b)


def remainder(a: Operand, b: Operand) -> Tensor:
    """``a % b`` with the sign of the divisor (numpy's remainder); integer modulo by zero raises."""
    return _binary("remainder", a, b)


def pow(a: Operand, b: Operand) -> Tensor:
    """``a ** b``; integers to negative integer powers raise, as in numpy."""
    return _binary("pow", a, b)


def maximum(a: Operand, b: Operand) -> Tensor:
    """Element-wise maximum (NaN propagates)."""
    return _binary("maximum", a, b)


def minimum(a: Operand, b: Operand) -> Tensor:
    """Element-wise minimum (NaN propagates)."""
    return _binary("minimum", a, b)


def equal(a: Operand, b: Operand) -> Tensor:
    return _binary("equal", a, b)


def not_equal(a: Operand, b: Operand) -> Tensor:
    return _binary("not_equal", a, b)


def less(a: Operand, b: Operand) -> Tensor:
    return _binary("less", a, b)


def less_equal(a: Operand, b: Operand) -> Tensor:
    return _binary("less_equal", a, b)


def greater(a: Operand, b: Operand) -> Tensor:
    return _binary("greater", a, b)


def greater_equal(a: Operand, b: Operand) -> Tensor:
    return _binary("greater_equal", a, b)


def logical_and(a: Operand, b: Operand) -> Tensor:
    """Truth-value and (non-zero is true) -> bool."""
    return _binary("logical_and", a, b)


def logical_or(a: Operand, b: Operand) -> Tensor:
    return _binary("logical_or", a, b)


def logical_xor(a: Operand, b: Operand) -> Tensor:
    return _binary("logical_xor", a, b)


# ----------------------------------------------------------------------------- unary


def _unary(op: str, x: Any, out_dtype: DType | None = None) -> Tensor:
    x = as_tensor(x, op=op)
    return run(x._backend, "unary", (op, x), x.shape, out_dtype or x.dtype)


def _float_unary(op: str, x: Any) -> Tensor:
    """A floating-point function: integer/bool inputs become numpy's float for them first."""
    x = as_tensor(x, op=op)
    if not x.dtype.is_floating:
        x = cast_to(x, float_result_dtype(x.dtype, op))
    return run(x._backend, "unary", (op, x), x.shape, x.dtype)


def _numeric(op: str, x: Any) -> Tensor:
    x = as_tensor(x, op=op)
    if x.dtype is bool_:
        raise DtypeError(
            f"{op}: not defined for bool tensors ({describe(x)}); cast with .astype() first"
        )
    return x


def neg(x: Operand) -> Tensor:
    """``-x`` (not defined for bool; negating a non-zero uint8 or the minimum int raises)."""
    x = _numeric("neg", x)
    return _unary("neg", x)


def abs(x: Operand) -> Tensor:
    """``|x|`` (the minimum of a signed int dtype has no absolute value: raises)."""
    return _unary("abs", x)


def sign(x: Operand) -> Tensor:
    return _unary("sign", _numeric("sign", x))


def square(x: Operand) -> Tensor:
    return _unary("square", _numeric("square", x))


def exp(x: Operand) -> Tensor:
    return _float_unary("exp", x)


def log(x: Operand) -> Tensor:
    """Natural logarithm (log(0) = -inf, log of a negative number is NaN, as numpy)."""
    return _float_unary("log", x)


def sqrt(x: Operand) -> Tensor:
    return _float_unary("sqrt", x)


def rsqrt(x: Operand) -> Tensor:
    """``1 / sqrt(x)``."""
    return _float_unary("rsqrt", x)


def reciprocal(x: Operand) -> Tensor:
    """``1 / x`` as a float (integers become floats first, unlike numpy's integer reciprocal)."""
    return _float_unary("reciprocal", x)


def erf(x: Operand) -> Tensor:
    """The error function."""
    return _float_unary("erf", x)


def sin(x: Operand) -> Tensor:
    return _float_unary("sin", x)


def cos(x: Operand) -> Tensor:
    return _float_unary("cos", x)


def tanh(x: Operand) -> Tensor:
    return _float_unary("tanh", x)


def floor(x: Operand) -> Tensor:
    return _float_unary("floor", x)


def ceil(x: Operand) -> Tensor:
    return _float_unary("ceil", x)


def round(x: Operand) -> Tensor:
    """Round half to even (numpy's ``round``); integers are returned unchanged (a copy)."""
    x = as_tensor(x, op="round")
    if not x.dtype.is_floating:
        return run(x._backend, "copy", (x,), x.shape, x.dtype)
    return _unary("round", x)


def sigmoid(x: Operand) -> Tensor:
    """``1 / (1 + exp(-x))``, computed without overflow."""
    return _float_unary("sigmoid", x)


def silu(x: Operand) -> Tensor:
    """``x * sigmoid(x)`` (a.k.a. swish)."""
    return _float_unary("silu", x)


def relu(x: Operand) -> Tensor:
    """``max(x, 0)`` (NaN propagates)."""
    return _unary("relu", _numeric("relu", x))


def gelu(x: Operand, approximate: str = "none") -> Tensor:
    """Gaussian error linear unit: ``x * Phi(x)`` exactly (``approximate="none"``, with erf) or
    with the tanh approximation (``approximate="tanh"``), as PyTorch."""
    if approximate not in ("none", "tanh"):
        raise DtypeError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return _float_unary("gelu" if approximate == "none" else "gelu_tanh", x)


def logical_not(x: Operand) -> Tensor:
    return _unary("logical_not", x, bool_)


def isnan(x: Operand) -> Tensor:
    return _unary("isnan", x, bool_)


def isinf(x: Operand) -> Tensor:
    return _unary("isinf", x, bool_)


def isfinite(x: Operand) -> Tensor:
    return _unary("isfinite", x, bool_)


# ----------------------------------------------------------------------------- ternary


def where(condition: Operand, x: Operand, y: Operand) -> Tensor:
    """``x`` where ``condition`` is true (non-zero) else ``y``, all three broadcast together.

    ``x``/``y`` promote like a binary op; with two Python scalars the dtype follows tensor
    creation (float -> float32, int -> int64).
    """
    like = next((v for v in (condition, x, y) if isinstance(v, Tensor)), None)
    cond = as_tensor(condition, op="where", like=like)
    if cond.dtype is not bool_:
        cond = not_equal(cond, 0)
    values = []
    for v in (x, y):
        if isinstance(v, Tensor) or is_scalar(v):
            values.append(python_scalar(v) if not isinstance(v, Tensor) else v)
        else:
            values.append(as_tensor(v, op="where", like=cond))
    vx, vy = values
    tensors = [cond, *(v for v in values if isinstance(v, Tensor))]
    backend = same_backend("where", tensors)
    if isinstance(vx, Tensor) or isinstance(vy, Tensor):
        dtype = promote("where", vx, vy)
    else:
        from ipfs_accelerate.tensor._creation import _fill_dtype

        dtype = result_type(_fill_dtype(vx), _fill_dtype(vy), op="where")
    shape = broadcast_many([t.shape for t in tensors], "where")
    if not isinstance(vx, Tensor) and not isinstance(vy, Tensor):
        # the backend takes its dtype from a tensor operand: give it one
        from ipfs_accelerate.tensor._creation import full

        _check_scalar("where", vx, dtype)
        vx = full((), vx, dtype, cond.device)
    operands: list[Tensor | bool | int | float] = []
    for v in (vx, vy):
        if isinstance(v, Tensor):
            operands.append(cast_to(v, dtype))
        else:
            _check_scalar("where", v, dtype)
            operands.append(v)
    return run(backend, "where", (cond, operands[0], operands[1], shape), shape, dtype)


def clamp(x: Operand, min: Operand | None = None, max: Operand | None = None) -> Tensor:
    """Limit values to ``[min, max]`` (either may be None; bounds may be scalars or tensors).
    Same as numpy's ``clip``: ``minimum(maximum(x, min), max)``."""
    x = as_tensor(x, op="clamp")
    if min is None and max is None:
        raise DtypeError("clamp: at least one of min and max must be given")
    low = python_scalar(min) if min is not None and is_scalar(min) else min
    high = python_scalar(max) if max is not None and is_scalar(max) else max
    scalar_bounds = all(v is None or isinstance(v, bool | int | float) for v in (low, high))
    if scalar_bounds and "clamp" in x._backend.fused and x.dtype is not bool_:
        bounds = [v for v in (low, high) if v is not None]
        if promote("clamp", x, *bounds) is x.dtype:  # type: ignore[arg-type]
            for v in bounds:
                _check_scalar("clamp", v, x.dtype)
            return run(x._backend, "clamp", (x, low, high), x.shape, x.dtype)
    if _GRAD_STATE.armed and is_grad_enabled():
        low = as_tensor(low, op="clamp", like=x) if low is not None and not is_scalar(low) else low
        high = (
            as_tensor(high, op="clamp", like=x)
            if high is not None and not is_scalar(high)
            else high
        )
        if any(isinstance(v, Tensor) and v._requires_grad for v in (x, low, high)):
            # one node for the whole clamp: torch's gradient at the bounds (the input keeps
            # it), which maximum/minimum would split between input and bound
            with no_grad():
                result = _clamp_composed(x, low, high)
            if result.dtype.is_floating:
                _record("clamp", (x, low, high), result)
            return result
    return _clamp_composed(x, low, high)


def _clamp_composed(x: Tensor, low: Any, high: Any) -> Tensor:
    result = x
    if low is not None:
        result = maximum(result, low)
    if high is not None:
        result = minimum(result, high)
    return result
