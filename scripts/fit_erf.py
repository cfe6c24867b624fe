"""Fit the rational erf approximation used by the CPU backend (hal/cpu/_math.py).

erf(x) ~ x * P(x^2) / Q(x^2) on [0, 4] with deg P = 6, deg Q = 4, Q(0) = 1: weighted
linearised least squares (iteratively reweighted by 1/|Q|) on Chebyshev-spaced nodes against
math.erf; prints the coefficients and the float32 error. Run: python scripts/fit_erf.py
"""

import math

import numpy as np

DEG_P, DEG_Q = 6, 4

t = np.cos(np.linspace(0, np.pi, 4000)) * 0.5 + 0.5
x = t * 4.0
f = np.array([math.erf(v) / v if v > 0 else 2 / math.sqrt(math.pi) for v in x])
s = x * x
A = np.concatenate(
    [
        np.stack([s**i for i in range(DEG_P + 1)], 1),
        -np.stack([f * s**j for j in range(1, DEG_Q + 1)], 1),
    ],
    1,
)
w = 1.0 / np.maximum(np.abs(f), 1e-3)
for _ in range(6):
    coef, *_ = np.linalg.lstsq(A * w[:, None], f * w, rcond=None)
    p = coef[: DEG_P + 1]
    q = np.concatenate([[1.0], coef[DEG_P + 1 :]])
    w = 1.0 / np.abs(np.polyval(q[::-1], s)) / np.maximum(np.abs(f), 1e-3)

xs = np.linspace(0, 4.5, 200001).astype(np.float32)
ss = xs * xs
approx = np.clip(
    xs * np.polyval(p[::-1].astype(np.float32), ss) / np.polyval(q[::-1].astype(np.float32), ss),
    -1,
    1,
)
exact = np.array([math.erf(float(v)) for v in xs])
print("P =", p.tolist())
print("Q =", q.tolist())
print("max abs error (float32):", float(np.abs(approx - exact).max()))
