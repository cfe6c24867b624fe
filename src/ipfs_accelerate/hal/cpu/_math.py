"""Numerical kernels numpy lacks: erf, gelu, sigmoid and checked integer arithmetic."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ipfs_accelerate.errors import TensorOverflowError

Array = np.ndarray[Any, Any]

# erf(x) ~ x * P(x^2) / Q(x^2) on [-4, 4] (saturating to +-1 beyond, where float32 erf is
# exactly +-1). Coefficients fitted by this project with weighted linearised least squares
# against math.erf on Chebyshev-spaced nodes (scripts/fit_erf.py); in float32 arithmetic
# the maximum absolute error is 4.4e-7 (at most 7 ulp).
_ERF_P = (
    1.128379143871833,
    0.20370029793160876,
    0.05105785890582933,
    0.0038401451741016295,
    0.00014337210977876354,
    -1.921956190657719e-06,
    1.9098861073313544e-08,
)
_ERF_Q = (1.0, 0.5138567412189466, 0.11654231265800762, 0.01465690610096237, 0.0009836404158340304)


def _horner(coefficients: tuple[float, ...], s: Array, dtype: Any) -> Array:
    result = np.full_like(s, coefficients[-1], dtype=dtype)
    for c in reversed(coefficients[:-1]):
        result *= s
        result += dtype.type(c)
    return result


def _erf_f32(x: Array) -> Array:
    """erf for float32 arrays (float16 computes through this in float32)."""
    dtype = np.dtype(np.float32)
    clipped = np.clip(x, -4.0, 4.0, dtype=dtype)
    s = clipped * clipped
    out = _horner(_ERF_P, s, dtype)
    out /= _horner(_ERF_Q, s, dtype)
    out *= clipped
    np.clip(out, -1.0, 1.0, out=out)
    nan = np.isnan(x)
    if nan.any():
        out[nan] = np.nan
    return out


_scipy_erf: Any = None
_vectorised_erf = np.frompyfunc(math.erf, 1, 1)


def _erf_f64(x: Array) -> Array:
    """erf for float64: scipy's when it is installed, else math.erf element by element."""
    global _scipy_erf
    if _scipy_erf is None:
        try:
            from scipy.special import erf as scipy_erf

            _scipy_erf = scipy_erf
        except ImportError:
            _scipy_erf = False
    if _scipy_erf is not False:
        return np.asarray(_scipy_erf(x), dtype=np.float64)
    return np.asarray(_vectorised_erf(x), dtype=np.float64)


def erf(x: Array) -> Array:
    if x.dtype == np.float64:
        return _erf_f64(x)
    if x.dtype == np.float16:
        return _erf_f32(x.astype(np.float32)).astype(np.float16)
    return _erf_f32(x)


def gelu(x: Array) -> Array:
    """x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))."""
    inner = erf(x * x.dtype.type(1.0 / math.sqrt(2.0)))
    inner += 1
    inner *= x
    inner *= x.dtype.type(0.5)
    return inner


def gelu_tanh(x: Array) -> Array:
    """0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    t = x * x
    t *= x
    t *= x.dtype.type(0.044715)
    t += x
    t *= x.dtype.type(math.sqrt(2.0 / math.pi))
    np.tanh(t, out=t)
    t += 1
    t *= x
    t *= x.dtype.type(0.5)
    return t


def sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)) as 0.5 * (1 + tanh(x / 2)): no overflow for large |x|."""
    t = x * x.dtype.type(0.5)
    np.tanh(t, out=t)
    t += 1
    t *= x.dtype.type(0.5)
    return t


def silu(x: Array) -> Array:
    out = sigmoid(x)
    out *= x
    return out


# ----------------------------------------------------------------------------- checked integers


def _raise_overflow(op: str, dtype: np.dtype[Any]) -> None:
    info = np.iinfo(dtype)
    raise TensorOverflowError(
        f"{op}: integer result overflows {dtype} [{info.min}, {info.max}]; cast to a wider dtype first"
    )


def checked_int_binary(op: str, a: Any, b: Any, result: Array) -> None:
    """Raise TensorOverflowError when ``result`` (numpy's wrapped integer result) overflowed."""
    dtype = result.dtype
    if op in ("add", "sub"):
        if dtype.kind == "u":
            bad = (result < a) if op == "add" else (np.asarray(a) < np.asarray(b))
        elif op == "add":
            bad = ((a ^ result) & (b ^ result)) < 0
        else:
            bad = ((a ^ b) & (a ^ result)) < 0
        if np.any(bad):
            _raise_overflow(op, dtype)
    elif op in ("mul", "pow"):
        info = np.iinfo(dtype)
        with np.errstate(all="ignore"):
            approx = (np.multiply if op == "mul" else np.power)(
                np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
            )
        # float64 is exact below 2**53, so a wrapped product is far from the float product
        if np.any((approx > info.max) | (approx < info.min)):
            _raise_overflow(op, dtype)


def checked_unary(op: str, x: Array) -> None:
    """neg/abs of the minimum signed int, and neg of a non-zero unsigned int, overflow."""
    if x.dtype.kind == "i":
        if x.size and np.any(x == np.iinfo(x.dtype).min):
            _raise_overflow(op, x.dtype)
    elif x.dtype.kind == "u" and op == "neg" and np.any(x):
        raise TensorOverflowError(f"neg: negating non-zero {x.dtype} values wraps around; cast to a signed dtype first")
