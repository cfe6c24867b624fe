"""Strategies, references and comparison helpers for the backend-parametrised op suite.

Tolerances are the same for every backend unless ``BACKEND_TOLERANCES`` names a looser bound
for a (backend, op, dtype), each with the reason (e.g. an accuracy limit of the WGSL spec).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import ipfs_accelerate as ia
from ipfs_accelerate.tensor import Tensor

FLOATS = ("float16", "float32", "float64")
INTS = ("int32", "int64", "int8", "uint8")
ALL_DTYPES = (*FLOATS, *INTS, "bool")

#: (backend, op, dtype) -> (rtol, atol, reason); looser bounds a backend is allowed
BACKEND_TOLERANCES: dict[tuple[str, str, str], tuple[float, float, str]] = {}

_DEFAULT_TOL = {"float64": (1e-10, 1e-12), "float32": (1e-5, 1e-6), "float16": (2e-3, 2e-3)}


def supported(device: str, names: tuple[str, ...] = ALL_DTYPES) -> list[str]:
    """The dtypes among ``names`` that ``device`` supports."""
    backend = ia.hal.get_backend(device, fallback=False)
    held = {d.name for d in backend.supported_dtypes}
    return [n for n in names if n in held]


def tolerance(dtype: str, op: str = "", device: str = "") -> tuple[float, float]:
    special = BACKEND_TOLERANCES.get((device, op, dtype))
    if special is not None:
        return special[0], special[1]
    return _DEFAULT_TOL.get(dtype, (0.0, 0.0))


def elements(
    dtype: str, low: float | None = None, high: float | None = None
) -> st.SearchStrategy[Any]:
    if dtype == "bool":
        return st.booleans()
    if dtype in FLOATS:
        width = {"float16": 16, "float32": 32, "float64": 64}[dtype]
        lo = -8.0 if low is None else low
        hi = 8.0 if high is None else high
        return st.floats(
            lo, hi, width=width, allow_nan=False, allow_infinity=False, allow_subnormal=False
        )
    lo_default, hi_default = (0, 100) if dtype == "uint8" else (-100, 100)
    lo_int = int(lo_default if low is None else low)
    if dtype == "uint8":
        lo_int = max(lo_int, 0)
    return st.integers(lo_int, max(lo_int, int(hi_default if high is None else high)))


def arrays(
    dtype: str, shape: Any, low: float | None = None, high: float | None = None
) -> st.SearchStrategy[np.ndarray]:
    return hnp.arrays(np.dtype(dtype), shape, elements=elements(dtype, low, high))


def shapes(
    min_dims: int = 0, max_dims: int = 4, min_side: int = 0, max_side: int = 5
) -> st.SearchStrategy[tuple[int, ...]]:
    return hnp.array_shapes(
        min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    )


def on(device: str, array: np.ndarray) -> Tensor:
    """A tensor on ``device`` holding a copy of ``array`` (dtype kept)."""
    return ia.tensor(
        array, dtype=array.dtype.name if array.dtype != np.bool_ else "bool", device=device
    )


def assert_close(
    actual: Tensor,
    expected: np.ndarray | float | int | bool,
    *,
    op: str = "",
    rtol: float | None = None,
    atol: float | None = None,
    check_dtype: bool = True,
) -> None:
    """``actual`` equals ``expected`` in shape, dtype and values (floats within tolerance,
    NaN where NaN is expected; integers and bools exactly)."""
    assert isinstance(actual, Tensor), f"expected a Tensor, got {type(actual).__name__}"
    expected_array = np.asarray(expected)
    got = actual.numpy()
    assert isinstance(got, np.ndarray)
    assert got.shape == expected_array.shape == actual.shape, (
        f"{op}: shape {got.shape} (tensor says {actual.shape}) != expected {expected_array.shape}"
    )
    if check_dtype:
        assert got.dtype == expected_array.dtype, (
            f"{op}: dtype {got.dtype} != expected {expected_array.dtype}"
        )
        assert actual.dtype == expected_array.dtype, (
            f"{op}: tensor dtype {actual.dtype} != {expected_array.dtype}"
        )
    if expected_array.dtype.kind == "f" or got.dtype.kind == "f":
        default_rtol, default_atol = tolerance(str(got.dtype), op, actual.device)
        np.testing.assert_allclose(
            got.astype(np.float64),
            expected_array.astype(np.float64),
            rtol=default_rtol if rtol is None else rtol,
            atol=default_atol if atol is None else atol,
            equal_nan=True,
            err_msg=f"{op} on {actual.device}",
        )
    else:
        np.testing.assert_array_equal(got, expected_array, err_msg=f"{op} on {actual.device}")


def eps(dtype: str) -> float:
    return float(np.finfo(np.dtype(dtype)).eps) if dtype in FLOATS else 0.0


def accumulation_atol(dtype: str, terms: int, magnitude: float) -> float:
    """Absolute error bound for a sum of ``terms`` values of at most ``magnitude`` in ``dtype``
    (any summation order): a few ulps of the running sum per term."""
    return 4.0 * eps(dtype) * max(terms, 1) * max(magnitude, 1.0)


# ----------------------------------------------------------------------------- references


def erf_ref(x: np.ndarray) -> np.ndarray:
    from scipy.special import erf

    return np.asarray(erf(x.astype(np.float64))).astype(x.dtype)


def gelu_ref(x: np.ndarray, approximate: str = "none") -> np.ndarray:
    x64 = x.astype(np.float64)
    if approximate == "tanh":
        out = 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64**3)))
    else:
        from scipy.special import erf

        out = 0.5 * x64 * (1 + erf(x64 / math.sqrt(2)))
    return out.astype(x.dtype)


def sigmoid_ref(x: np.ndarray) -> np.ndarray:
    return (1 / (1 + np.exp(-x.astype(np.float64)))).astype(x.dtype)


def promote_mixed(*operands: Any) -> list[Any]:
    """The operands as this library promotes them before numpy computes the reference: integer
    and bool arrays mixed with floats take the float arrays' dtype, or float32 when the only
    float is a Python scalar (torch's and JAX's rule; numpy would give float64)."""
    arrays_ = [o for o in operands if isinstance(o, np.ndarray)]
    floats = [a.dtype for a in arrays_ if a.dtype.kind == "f"]
    if not any(a.dtype.kind != "f" for a in arrays_):
        return list(operands)
    if floats:
        target = np.result_type(*floats)
    elif any(type(o) is float for o in operands):
        target = np.dtype(np.float32)
    else:
        return list(operands)
    return [
        o.astype(target) if isinstance(o, np.ndarray) and o.dtype.kind != "f" else o
        for o in operands
    ]


def float_result(dtype: str) -> str:
    """numpy's float dtype for a float function of ``dtype``."""
    return str(np.sqrt(np.zeros(1, dtype=dtype)).dtype)
