"""Numerical kernels numpy lacks: erf, gelu, sigmoid and checked integer arithmetic."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ipfs_accelerate.errors import TensorOverflowError
from ipfs_accelerate.hal.cpu import _mkl

Array = np.ndarray[Any, Any]

# float32 erf(x) ~ tanh(x * P(x^2)); x * P(x^2) rises monotonically from 4.5 on (16.2 there, where
# float32 tanh is already exactly 1), so erf and gelu saturate exactly for large |x| with no clip;
# at most 1.4e-7 off on the whole line (the fit: docs/tensors.md)
_ERF_TANH_P = (
    1.1283797054989104,
    0.10276548115281756,
    -0.00018438292513370984,
    -0.0006257202986031408,
    8.971288270622414e-05,
    -5.985742396954617e-06,
    1.5896336664915167e-07,
)
# the same polynomial for gelu's erf(x / sqrt 2) as a function of h = x / 2: erf(x / sqrt 2) =
# tanh(h * Q(h^2)), coefficient k of Q being that of P times 2 * 4**k / (sqrt(2) * 2**k), that is
# sqrt(2) * 2**k (powers of two apart from the sqrt(2) that x / sqrt 2 needs anyway)
_GELU_HALF_P = tuple(c * math.sqrt(2.0) * 2.0**k for k, c in enumerate(_ERF_TANH_P))


def _tanh_poly(x: Array, coefficients: tuple[float, ...], out: Array | None = None) -> Array:
    """tanh(z * P(z^2)) in float32 (NaN stays NaN), into ``out`` when given. No clip of z:
    past the fit's range the polynomial only grows, so tanh is the exact +-1 a clip to
    [-4.5, 4.5] gave, and the pass that clipped is saved (a GELU is about 17 such passes);
    past |z| ~ 6,000 the polynomial overflows to inf, whose tanh is the same +-1."""
    f = np.float32
    z = x if x.dtype == np.float32 else x.astype(np.float32)
    with np.errstate(over="ignore"):
        s = z * z
        p = np.multiply(s, f(coefficients[-1]), out=out)
        p += f(coefficients[-2])
        for c in reversed(coefficients[:-2]):
            p *= s
            p += f(c)
        p *= z
    np.tanh(p, out=p)
    return p


def _erf_f32(x: Array) -> Array:
    """erf for float32 arrays (float16 computes through this in float32)."""
    return _tanh_poly(x, _ERF_TANH_P)


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


#: elements per block of the multi-pass kernels below: 256 kB of float32 stays in the L2 cache
#: while a kernel's ten to thirty numpy passes run over it, instead of streaming the whole
#: tensor through memory once per pass (see docs/tensors.md)
BLOCK = 1 << 16


def _blocked(
    kernel: Callable[[Array], Array], into: Callable[[Array, Array], object] | None = None
) -> Callable[[Array], Array]:
    """``kernel`` applied to cache-sized blocks of a large array (same values, same dtype).
    ``into(block, out)``, where given, writes float32 blocks straight into the result: the
    same values without a copy of each block's result (one pass over the tensor fewer)."""

    def run(x: Array) -> Array:
        direct = into if x.dtype == np.float32 else None
        if x.size <= BLOCK and direct is None:
            return kernel(x)
        flat = np.ascontiguousarray(x).reshape(-1)
        out = np.empty(flat.shape, dtype=x.dtype)
        for start in range(0, flat.size, BLOCK):
            if direct is not None:
                direct(flat[start : start + BLOCK], out[start : start + BLOCK])
            else:
                out[start : start + BLOCK] = kernel(flat[start : start + BLOCK])
        return out.reshape(x.shape)

    run.__name__, run.__doc__ = kernel.__name__.lstrip("_"), kernel.__doc__
    return run


def _erf(x: Array) -> Array:
    if x.dtype == np.float64:
        return _erf_f64(x)
    if x.dtype == np.float16:
        return _erf_f32(x.astype(np.float32)).astype(np.float16)
    return _erf_f32(x)


def _gelu_f32(x: Array, out: Array | None = None) -> Array:
    """float32 GELU as h (1 + tanh(h Q(h^2))) with h = x / 2 (into ``out`` when given): the
    halving is the first pass instead of a separate one at the end, and 1 + tanh is exact
    where tanh is near -1 (Sterbenz), where 0.5x + 0.5x * erf cancelled. 17 passes and a tanh
    (torch's erf GELU is one vectorised pass; ours are numpy's)."""
    half = x * np.float32(0.5)
    p = _tanh_poly(half, _GELU_HALF_P, out)
    p += np.float32(1.0)
    p *= half
    return p


def _gelu(x: Array) -> Array:
    """x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2))."""
    if x.dtype == np.float32:
        return _gelu_f32(x)
    inner = _erf(x * x.dtype.type(1.0 / math.sqrt(2.0)))
    inner += 1
    inner *= x
    inner *= x.dtype.type(0.5)
    return inner


def _gelu_tanh(x: Array) -> Array:
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


def _sigmoid(x: Array) -> Array:
    """1 / (1 + exp(-x)) as 0.5 * (1 + tanh(x / 2)): no overflow for large |x|."""
    t = x * x.dtype.type(0.5)
    np.tanh(t, out=t)
    t += 1
    t *= x.dtype.type(0.5)
    return t


def _silu(x: Array) -> Array:
    """x * sigmoid(x)."""
    out = _sigmoid(x)
    out *= x
    return out


def _gelu_cdf(x: Array, out: Array) -> object:
    """float32 GELU as x * Phi(x) with MKL's normal CDF (hal/cpu/_mkl.py): two passes (the
    polynomial's where MKL does not take the block)."""
    if not _mkl.cdf_norm(x, out):
        return _gelu_f32(x, out)
    out *= x
    return out


erf = _blocked(_erf)
_gelu_numpy = _blocked(_gelu, _gelu_f32)
_gelu_mkl = _blocked(_gelu, _gelu_cdf)


def gelu(x: Array) -> Array:
    """x * Phi(x) = 0.5 x (1 + erf(x / sqrt 2)), float32 through MKL's normal CDF where MKL
    is in use."""
    return _gelu_mkl(x) if x.dtype == np.float32 and _mkl.enabled() else _gelu_numpy(x)


gelu_tanh = _blocked(_gelu_tanh)
sigmoid = _blocked(_sigmoid)
silu = _blocked(_silu)


def arange_values(start: Any, step: Any, size: int, dtype: np.dtype[Any]) -> Array:
    """``size`` values start, start + step, ... in ``dtype``: integer steps exactly in int64,
    others in float64, then cast (what every backend's ``arange`` computes)."""
    if dtype.kind in "iu" and isinstance(start, int) and isinstance(step, int):
        return (np.arange(size, dtype=np.int64) * step + start).astype(dtype)
    return (np.arange(size, dtype=np.float64) * step + start).astype(dtype)


# ----------------------------------------------------------------------------- checked integers


def _raise_overflow(op: str, dtype: np.dtype[Any]) -> None:
    info = np.iinfo(dtype)
    raise TensorOverflowError(
        f"{op}: integer result overflows {dtype} [{info.min}, {info.max}]; cast to a wider dtype "
        "first"
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
        raise TensorOverflowError(
            f"neg: negating non-zero {x.dtype} values wraps around; cast to a signed dtype first"
        )
