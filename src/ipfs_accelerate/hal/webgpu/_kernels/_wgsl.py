"""WGSL building blocks shared by every kernel generator.

* :class:`WType` maps a tensor dtype to its storage type in buffers and the type its math runs
  in (float16 is stored as ``f16`` and computed in ``f32``; uint8 and bool are stored one per
  ``u32`` word, because WGSL has no 8-bit storage type).
* The parameter block: every kernel reads its sizes, strides and scalar operands from a
  256-byte slice of one uniform ring buffer (bound with a dynamic offset), so a pipeline never
  depends on a shape and a dispatch never creates a buffer.
* Error reporting: kernels that can fail (integer overflow, out-of-range gather indices,
  value-changing casts) record the first failure of each kind in an error buffer that the host
  checks at the next readback.
* The math library: accurate ``f32`` versions of the functions whose WGSL builtins carry weak
  accuracy guarantees (sin, cos, tanh, erf...), and ``f64`` versions of every transcendental
  function, because Vulkan's GLSL.std.450 exp/log/sin/... do not accept 64-bit floats. A kernel
  gets only the library functions its code calls (see :class:`HelperLibrary`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

#: threads per workgroup of the one-dimensional kernels (the WebGPU default limit is 256)
WORKGROUP = 256
#: u32 words in one parameter block (256 bytes: the largest uniform offset alignment allowed)
PARAM_WORDS = 64
PARAM_BYTES = PARAM_WORDS * 4
#: most tensor dimensions a strided kernel handles after merging contiguous dimensions
MAX_RANK = 8

# parameter-block layout of the element-wise ("map") kernels, in u32 words; the words a
# contiguous kernel reads come first so that its dispatches pack only 20 words
P_N = 0  # number of output elements
P_RANK = 1  # rank of the (collapsed) index space
P_ERR_SLOT = 3  # error slot of this dispatch (all checked kernels)
P_SCALAR = (4, 8, 12)  # four words per scalar operand
P_OFFSET = 16  # element offsets of inputs 0..2 (i32), then the output's at 19
P_OUT_OFFSET = 19
P_SHAPE = 20  # output shape, MAX_RANK words
P_STRIDES = (28, 36, 44)  # element strides of inputs 0..2 (i32; 0 on broadcast axes)
P_OUT_STRIDES = 52  # output element strides (strided-output kernels: concat)

#: error kinds a checked kernel can report; the host raises the highest-priority one
ERR_KINDS = 4


@dataclass(frozen=True)
class WType:
    """How one tensor dtype lives on the device."""

    name: str
    #: WGSL type of the buffer elements
    storage: str
    #: WGSL type the math runs in
    compute: str
    #: bytes per element on the device
    itemsize: int
    #: numpy dtype of the device bytes (int8 arrives as int32, uint8/bool as uint32)
    device_numpy: np.dtype[Any]
    #: "f" float, "i" signed int, "u" unsigned int, "b" bool
    kind: str
    #: the adapter feature this dtype needs, if any
    feature: str | None = None

    @property
    def is_float(self) -> bool:
        return self.kind == "f"

    @property
    def is_int(self) -> bool:
        return self.kind in "iu"

    def zero(self) -> str:
        return f"{self.compute}(0)"

    def load(self, expr: str) -> str:
        """``expr`` (a storage element) as the compute type."""
        return expr if self.storage == self.compute else f"{self.compute}({expr})"

    def store(self, expr: str) -> str:
        """A compute value as a storage element (float16 rounds with numpy's overflow to inf)."""
        if self.storage == "f16":
            return f"to_f16({expr})"
        return expr if self.storage == self.compute else f"{self.storage}({expr})"

    def scalar(self, word: int) -> str:
        """The scalar operand stored at parameter word ``word`` (see :func:`encode_scalar`)."""
        if self.compute == "f32":
            return f"pf({word}u)"
        if self.compute == "f64":
            return f"pd({word}u)"
        if self.compute == "i32":
            return f"pi({word}u)"
        if self.compute == "i64":
            return f"pl({word}u)"
        return f"pu({word}u)"

    def value_words(self, expr: str) -> str:
        """WGSL for three u32 words describing a compute value (for error messages)."""
        if self.compute == "f32":
            return f"bitcast<u32>({expr}), 0u, 0u"
        if self.compute == "f64":
            return f"d_words({expr})"
        if self.compute == "i32":
            return f"bitcast<u32>({expr}), 0u, 0u"
        if self.compute == "i64":
            return f"u32(({expr}) & i64(0xffffffff)), u32((({expr}) >> 32u) & i64(0xffffffff)), 0u"
        return f"{expr}, 0u, 0u"


WTYPES: dict[str, WType] = {
    "float16": WType("float16", "f16", "f32", 2, np.dtype(np.float16), "f", "shader-f16"),
    "float32": WType("float32", "f32", "f32", 4, np.dtype(np.float32), "f"),
    "float64": WType("float64", "f64", "f64", 8, np.dtype(np.float64), "f", "shader-f64"),
    "int32": WType("int32", "i32", "i32", 4, np.dtype(np.int32), "i"),
    "int64": WType("int64", "i64", "i64", 8, np.dtype(np.int64), "i", "shader-int64"),
    # WGSL has no 8-bit type: int8 is one i32 per value, sign-extended by the upload's cast
    "int8": WType("int8", "i32", "i32", 4, np.dtype(np.int32), "i"),
    "uint8": WType("uint8", "u32", "u32", 4, np.dtype(np.uint32), "u"),
    "bool": WType("bool", "u32", "u32", 4, np.dtype(np.uint32), "b"),
}

F32 = WTYPES["float32"]
F64 = WTYPES["float64"]
BOOL = WTYPES["bool"]


# ----------------------------------------------------------------------------- host encoding


def f64_words(value: float) -> tuple[int, int, int, int]:
    """A float64 as four u32 words the shader rebuilds exactly: flags (1 sign, 2 inf, 4 nan),
    a binary exponent and a 53-bit integer mantissa (hi, lo); WGSL cannot bitcast to f64."""
    if math.isnan(value):
        return (4, 0, 0, 0)
    sign = 1 if math.copysign(1.0, value) < 0 else 0
    if math.isinf(value):
        return (sign | 2, 0, 0, 0)
    mantissa, exponent = math.frexp(abs(value))
    integer = int(mantissa * (1 << 53))
    return (sign, (exponent - 53) & 0xFFFFFFFF, integer >> 32, integer & 0xFFFFFFFF)


def decode_f64_words(w0: int, w1: int, w2: int) -> float:
    """Inverse of the shader's ``d_words`` (error reports of float64 values)."""
    flags = w0 & 0xFF
    if flags & 4:
        return math.nan
    sign = -1.0 if flags & 1 else 1.0
    if flags & 2:
        return sign * math.inf
    exponent = (w0 >> 8) - 4096
    return sign * math.ldexp(float((w1 << 32) | w2), exponent)


def encode_scalar(value: bool | int | float, wtype: WType) -> tuple[int, int, int, int]:
    """Four parameter words holding ``value`` converted to ``wtype`` the way numpy would."""
    if wtype.compute == "f64":
        return f64_words(float(value))
    if wtype.compute == "f32":
        # float16 tensors compute in f32 but their scalars round to float16 first, as in numpy
        as_float = np.array(
            value, dtype=wtype.device_numpy if wtype.storage == "f16" else np.float32
        )
        bits = int(np.asarray(as_float, dtype=np.float32).view(np.uint32))
        return (bits, 0, 0, 0)
    if wtype.compute == "i64":
        v = int(value) & 0xFFFFFFFFFFFFFFFF
        return (v & 0xFFFFFFFF, v >> 32, 0, 0)
    return (int(value) & 0xFFFFFFFF, 0, 0, 0)


def decode_value(wtype: WType, w0: int, w1: int, w2: int) -> bool | int | float:
    """The value a kernel reported with :meth:`WType.value_words`, as a Python scalar."""
    if wtype.compute == "f32":
        return float(np.array(w0, dtype=np.uint32).view(np.float32))
    if wtype.compute == "f64":
        return decode_f64_words(w0, w1, w2)
    if wtype.compute == "i32":
        return int(np.array(w0, dtype=np.uint32).view(np.int32))
    if wtype.compute == "i64":
        return int(np.array((w1 << 32) | w0, dtype=np.uint64).view(np.int64))
    return int(w0)


# ----------------------------------------------------------------------------- WGSL text


def literal(value: float) -> str:
    """A WGSL abstract-float literal that round-trips ``value`` exactly."""
    text = repr(float(value))
    return text if ("e" in text or "." in text) else text + ".0"


def horner(var: str, coefficients: list[float], wtype: str) -> str:
    """``c0 + var*(c1 + var*(c2 + ...))`` as WGSL of type ``wtype``."""
    expr = f"{wtype}({literal(coefficients[-1])})"
    for c in reversed(coefficients[:-1]):
        expr = f"fma({expr}, {var}, {wtype}({literal(c)}))"
    return expr


PRELUDE = f"""
struct Params {{ v: array<vec4<u32>, {PARAM_WORDS // 4}> }}
@group(0) @binding(0) var<uniform> params: Params;
fn pu(i: u32) -> u32 {{ return params.v[i >> 2u][i & 3u]; }}
fn pi(i: u32) -> i32 {{ return bitcast<i32>(pu(i)); }}
fn pf(i: u32) -> f32 {{ return bitcast<f32>(pu(i)); }}
fn inf_f() -> f32 {{ return bitcast<f32>(0x7f800000u); }}
fn nan_f() -> f32 {{ return bitcast<f32>(0x7fc00000u); }}
fn isnan_f(x: f32) -> bool {{ return (bitcast<u32>(x) & 0x7fffffffu) > 0x7f800000u; }}
fn isinf_f(x: f32) -> bool {{ return (bitcast<u32>(x) & 0x7fffffffu) == 0x7f800000u; }}
fn flat_index(gid: vec3<u32>, nwg: vec3<u32>) -> u32 {{
  return gid.x + gid.y * nwg.x * {WORKGROUP}u;
}}
"""

F16_HELPERS = """
fn to_f16(x: f32) -> f16 {
  // numpy rounds |x| >= 65520 to inf; WGSL leaves out-of-range conversions undefined
  let inf = f16(inf_f());
  if (isnan_f(x)) { return f16(nan_f()); }
  if (abs(x) >= 65520.0) { return select(inf, -inf, x < 0.0); }
  return f16(clamp(x, -65504.0, 65504.0));
}
"""

I64_HELPERS = """
fn pl(i: u32) -> i64 { return bitcast<i64>((u64(pu(i + 1u)) << 32u) | u64(pu(i))); }
"""

F64_BASE = """
fn inf_d() -> f64 { return f64(inf_f()); }
fn nan_d() -> f64 { return f64(nan_f()); }
fn isnan_d(x: f64) -> bool { return !(x == x); }
fn isinf_d(x: f64) -> bool { return abs(x) == inf_d(); }
fn scale2_d(x: f64, e: i32) -> f64 {
  // ldexp reaching the subnormal and top ranges through an exact second scaling
  if (e < -1000) { return ldexp(x, e + 1000) * ldexp(f64(1), -1000); }
  if (e > 1000) { return ldexp(x, e - 1000) * ldexp(f64(1), 1000); }
  return ldexp(x, e);
}
fn pd(i: u32) -> f64 {
  let flags = pu(i);
  if ((flags & 4u) != 0u) { return nan_d(); }
  var v: f64;
  if ((flags & 2u) != 0u) { v = inf_d(); }
  else { v = scale2_d(f64(pu(i + 2u)) * f64(4294967296.0) + f64(pu(i + 3u)), pi(i + 1u)); }
  return select(v, -v, (flags & 1u) != 0u);
}
fn exponent_d(ax: f64) -> i32 {
  // e with ax = m * 2^e, m in [0.5, 1), for finite ax > 0. frexp's exponent of an f64 crashes
  // lavapipe's LLVM backend, so the exponent comes from the f32 bits of a rescaled copy.
  var y = ax;
  var e = 0;
  for (var k = 0; k < 12 && y > f64(1e30); k++) { y = y * ldexp(f64(1), -100); e = e + 100; }
  for (var k = 0; k < 12 && y < f64(1e-30); k++) { y = y * ldexp(f64(1), 100); e = e - 100; }
  e = e + i32((bitcast<u32>(f32(y)) >> 23u) & 0xffu) - 126;
  let m = scale2_d(ax, -e);
  if (m >= f64(1)) { e = e + 1; } else if (m < f64(0.5)) { e = e - 1; }
  return e;
}
fn d_words(x: f64) -> vec3<u32> {
  let flags = select(0u, 1u, x < f64(0));
  if (isnan_d(x)) { return vec3<u32>(4u, 0u, 0u); }
  if (isinf_d(x)) { return vec3<u32>(flags | 2u, 0u, 0u); }
  if (x == f64(0)) { return vec3<u32>(flags | (4096u << 8u), 0u, 0u); }
  let e = exponent_d(abs(x));
  let m = scale2_d(abs(x), -e) * f64(9007199254740992.0);
  let hi = floor(m / f64(4294967296.0));
  let lo = m - hi * f64(4294967296.0);
  return vec3<u32>(flags | (u32(e - 53 + 4096) << 8u), u32(hi), u32(lo));
}
"""


def _factorials(count: int, start: int = 0, step: int = 1, alternate: bool = False) -> list[float]:
    out = []
    for k, n in enumerate(range(start, start + step * count, step)):
        sign = -1.0 if alternate and k % 2 else 1.0
        out.append(sign / math.factorial(n))
    return out


def _f64_library() -> str:
    """The float64 math functions (over :data:`F64_BASE`, which every float64 kernel has)."""
    exp_poly = horner("r", _factorials(14), "f64")
    expm1_poly = horner("x", _factorials(17, 1), "f64")  # 1/1! + x/2! + ... (times x below)
    sin_poly = horner("z", _factorials(9, 1, 2, alternate=True), "f64")
    cos_poly = horner("z", _factorials(9, 0, 2, alternate=True), "f64")
    log_poly = horner("z", [1.0 / (2 * k + 1) for k in range(12)], "f64")
    return f"""
fn exp_d(x: f64) -> f64 {{
  if (isnan_d(x)) {{ return x; }}
  if (x > f64(709.782712893384)) {{ return inf_d(); }}
  if (x < f64(-745.1332191019412)) {{ return f64(0); }}
  let k = round(x * f64(1.4426950408889634));
  let r = (x - k * f64(6.93147180369123816490e-01)) - k * f64(1.90821492927058770002e-10);
  return scale2_d({exp_poly}, i32(k));
}}
fn expm1_d(x: f64) -> f64 {{
  if (abs(x) < f64(0.5)) {{ return x * {expm1_poly}; }}
  return exp_d(x) - f64(1);
}}
fn log_d(x: f64) -> f64 {{
  if (isnan_d(x) || x < f64(0)) {{ return nan_d(); }}
  if (x == f64(0)) {{ return -inf_d(); }}
  if (isinf_d(x)) {{ return x; }}
  let ex = exponent_d(x);
  var m = scale2_d(x, -ex);
  var e = f64(ex);
  if (m < f64(0.7071067811865476)) {{ m = m * f64(2); e = e - f64(1); }}
  let f = m - f64(1);
  let s = f / (f64(2) + f);
  let z = s * s;
  return e * f64(6.93147180369123816490e-01)
    + (f64(2) * s * {log_poly} + e * f64(1.90821492927058770002e-10));
}}
fn trig_d(x: f64, quarter_turns: i32) -> f64 {{
  // sin(x + quarter_turns * pi/2); Cody-Waite reduction, accurate for |x| < 1e6
  if (isnan_d(x) || isinf_d(x)) {{ return nan_d(); }}
  let k = round(x * f64(0.6366197723675814));
  let r = ((x - k * f64(1.57079632673412561417e+00)) - k * f64(6.07710050630396597660e-11))
          - k * f64(2.02226624871116645580e-21);
  let q = (i32(k - f64(4) * floor(k * f64(0.25))) + quarter_turns) & 3;
  let z = r * r;
  if (q == 0) {{ return r * {sin_poly}; }}
  if (q == 1) {{ return {cos_poly}; }}
  if (q == 2) {{ return -(r * {sin_poly}); }}
  return -({cos_poly});
}}
fn sin_d(x: f64) -> f64 {{ return trig_d(x, 0); }}
fn cos_d(x: f64) -> f64 {{ return trig_d(x, 1); }}
fn tanh_d(x: f64) -> f64 {{
  if (isnan_d(x)) {{ return x; }}
  let a = abs(x);
  var r = f64(1);
  if (a < f64(22)) {{ let t = expm1_d(f64(-2) * a); r = -t / (f64(2) + t); }}
  return select(r, -r, x < f64(0));
}}
fn sigmoid_d(x: f64) -> f64 {{
  if (isnan_d(x)) {{ return x; }}
  let e = exp_d(-abs(x));
  let r = f64(1) / (f64(1) + e);
  return select(r, e * r, x < f64(0));
}}
fn erfc_cf_d(a: f64) -> f64 {{
  // continued fraction of erfc for a >= 2.5 (converges to full precision in 40 terms there)
  var f = a;
  for (var k = 40; k > 0; k--) {{ f = a + (f64(k) * f64(0.5)) / f; }}
  return exp_d(-a * a) * f64(0.5641895835477563) / f;
}}
fn erf_series_d(a: f64) -> f64 {{
  // erf(a) = 2/sqrt(pi) exp(-a^2) sum (2a^2)^n a / (1*3*...*(2n+1)):
  // positive terms, no cancellation
  let a2 = a * a;
  var t = a;
  var s = a;
  for (var n = 1; n < 80; n++) {{
    t = t * f64(2) * a2 / f64(2 * n + 1);
    s = s + t;
    if (t < f64(1e-17) * s) {{ break; }}
  }}
  return f64(1.1283791670955126) * exp_d(-a2) * s;
}}
fn erf_d(x: f64) -> f64 {{
  if (isnan_d(x)) {{ return x; }}
  let a = abs(x);
  var r = f64(1);
  if (a < f64(2.5)) {{ r = erf_series_d(a); }}
  else if (a < f64(6.5)) {{ r = f64(1) - erfc_cf_d(a); }}
  return select(r, -r, x < f64(0));
}}
fn erfc_d(x: f64) -> f64 {{
  if (isnan_d(x)) {{ return x; }}
  if (x < f64(2.5)) {{ return f64(1) - erf_d(x); }}
  if (x > f64(27.5)) {{ return f64(0); }}
  return erfc_cf_d(x);
}}
fn gelu_d(x: f64) -> f64 {{ return f64(0.5) * x * erfc_d(-x * f64(0.7071067811865476)); }}
fn gelu_tanh_d(x: f64) -> f64 {{
  let u = f64(0.7978845608028654) * (x + f64(0.044715) * x * x * x);
  return x * sigmoid_d(f64(2) * u);
}}
fn silu_d(x: f64) -> f64 {{ return x * sigmoid_d(x); }}
fn powi_d(b: f64, n: u32) -> f64 {{
  var r = f64(1);
  var base = b;
  var e = n;
  loop {{
    if ((e & 1u) != 0u) {{ r = r * base; }}
    e = e >> 1u;
    if (e == 0u) {{ break; }}
    base = base * base;
  }}
  return r;
}}
fn pow_d(x: f64, y: f64) -> f64 {{
  if (y == f64(0) || x == f64(1)) {{ return f64(1); }}
  if (isnan_d(x) || isnan_d(y)) {{ return nan_d(); }}
  let integral = abs(y) < f64(9007199254740992.0) && floor(y) == y;
  if (integral && abs(y) <= f64(64)) {{
    let r = powi_d(x, u32(abs(y)));
    return select(r, f64(1) / r, y < f64(0));
  }}
  if (x == f64(0)) {{ return select(f64(0), inf_d(), y < f64(0)); }}
  let ax = abs(x);
  var r: f64;
  if (isinf_d(ax)) {{ r = select(inf_d(), f64(0), y < f64(0)); }}
  else {{ r = exp_d(y * log_d(ax)); }}
  if (x < f64(0)) {{
    if (!integral) {{ return nan_d(); }}
    if (y - f64(2) * floor(y * f64(0.5)) == f64(1)) {{ r = -r; }}
  }}
  return r;
}}
fn two_product_err_d(x: f64, y: f64, p: f64) -> f64 {{
  // Dekker's exact error of p = x * y by Veltkamp splitting: drivers may compute fma()
  // unfused (lavapipe does for f64), so exactness cannot rest on it
  let cx = f64(134217729.0) * x;
  let xh = cx - (cx - x);
  let xl = x - xh;
  let cy = f64(134217729.0) * y;
  let yh = cy - (cy - y);
  let yl = y - yh;
  return ((xh * yh - p) + xh * yl + xl * yh) + xl * yl;
}}
fn fmod_d(a: f64, b: f64) -> f64 {{
  // exact C fmod while the quotient stays below 2^52; beyond, WGSL's %
  let q = trunc(a / b);
  if (abs(q) >= f64(4503599627370496.0) || abs(b) > f64(1e300)) {{ return a % b; }}
  let p = q * b;
  // a - p is exact (Sterbenz) and so is the true remainder, hence the two subtractions
  var r = (a - p) - two_product_err_d(q, b, p);
  if (r != f64(0) && (r < f64(0)) != (a < f64(0))) {{
    r = r + select(-abs(b), abs(b), a > f64(0));
  }}
  if (abs(r) >= abs(b)) {{ r = r - select(-abs(b), abs(b), a > f64(0)); }}
  return r;
}}
"""


F64_LIBRARY = _f64_library()


def _f32_library() -> str:
    sin_poly = horner("z", _factorials(6, 1, 2, alternate=True), "f32")
    cos_poly = horner("z", _factorials(7, 0, 2, alternate=True), "f32")
    tanh_small = horner("z", [1.0, -1.0 / 3.0, 2.0 / 15.0, -17.0 / 315.0], "f32")
    erf_p = horner(
        "s",
        [1.128379143871833, 0.20370029793160876, 0.05105785890582933, 0.0038401451741016295,
         0.00014337210977876354, -1.921956190657719e-06, 1.9098861073313544e-08],
        "f32",
    )  # fmt: skip
    erf_q = horner(
        "s",
        [1.0, 0.5138567412189466, 0.11654231265800762, 0.01465690610096237, 0.0009836404158340304],
        "f32",
    )
    return f"""
fn trig_f(x: f32, quarter_turns: i32) -> f32 {{
  // own sin/cos: WGSL only promises 2^-11 absolute error for the builtins
  if (isnan_f(x) || isinf_f(x)) {{ return nan_f(); }}
  let k = round(x * 0.6366197723675814);
  let r = ((x - k * 1.5703125) - k * 4.837512969970703125e-4) - k * 7.54978995489188216e-8;
  let q = (i32(k - 4.0 * floor(k * 0.25)) + quarter_turns) & 3;
  let z = r * r;
  if (q == 0) {{ return r * {sin_poly}; }}
  if (q == 1) {{ return {cos_poly}; }}
  if (q == 2) {{ return -(r * {sin_poly}); }}
  return -({cos_poly});
}}
fn sin_f(x: f32) -> f32 {{ return trig_f(x, 0); }}
fn cos_f(x: f32) -> f32 {{ return trig_f(x, 1); }}
fn tanh_f(x: f32) -> f32 {{
  if (isnan_f(x)) {{ return x; }}
  let a = abs(x);
  var r = 1.0;
  if (a < 0.1) {{ let z = a * a; r = a * {tanh_small}; }}
  else if (a < 9.0) {{ let t = exp(-2.0 * a); r = (1.0 - t) / (1.0 + t); }}
  return select(r, -r, x < 0.0);
}}
fn sigmoid_f(x: f32) -> f32 {{
  if (isnan_f(x)) {{ return x; }}
  let e = exp(-abs(x));
  let r = 1.0 / (1.0 + e);
  return select(r, e * r, x < 0.0);
}}
fn erf_f(x: f32) -> f32 {{
  // x P(x^2) / Q(x^2): one division is cheap in a shader (max abs error 4.4e-7 in f32). The
  // CPU backend uses tanh(x P(x^2)) instead, which costs numpy fewer passes over the data
  if (isnan_f(x)) {{ return x; }}
  let c = clamp(x, -4.0, 4.0);
  let s = c * c;
  return clamp(c * {erf_p} / {erf_q}, -1.0, 1.0);
}}
fn gelu_f(x: f32) -> f32 {{ return 0.5 * x * (1.0 + erf_f(x * 0.7071067811865476)); }}
fn gelu_tanh_f(x: f32) -> f32 {{
  let u = 0.7978845608028654 * (x + 0.044715 * x * x * x);
  return x * sigmoid_f(2.0 * u);
}}
fn silu_f(x: f32) -> f32 {{ return x * sigmoid_f(x); }}
fn powi_f(b: f32, n: u32) -> f32 {{
  var r = 1.0;
  var base = b;
  var e = n;
  loop {{
    if ((e & 1u) != 0u) {{ r = r * base; }}
    e = e >> 1u;
    if (e == 0u) {{ break; }}
    base = base * base;
  }}
  return r;
}}
fn pow_f(x: f32, y: f32) -> f32 {{
  if (y == 0.0 || x == 1.0) {{ return 1.0; }}
  if (isnan_f(x) || isnan_f(y)) {{ return nan_f(); }}
  let integral = abs(y) < 16777216.0 && floor(y) == y;
  if (integral && abs(y) <= 64.0) {{
    let r = powi_f(x, u32(abs(y)));
    return select(r, 1.0 / r, y < 0.0);
  }}
  if (x == 0.0) {{ return select(0.0, inf_f(), y < 0.0); }}
  var r = pow(abs(x), y);
  if (x < 0.0) {{
    if (!integral) {{ return nan_f(); }}
    if (y - 2.0 * floor(y * 0.5) == 1.0) {{ r = -r; }}
  }}
  return r;
}}
fn two_product_err_f(x: f32, y: f32, p: f32) -> f32 {{
  // Dekker's exact error of p = x * y by Veltkamp splitting (fma() may be unfused)
  let cx = 4097.0 * x;
  let xh = cx - (cx - x);
  let xl = x - xh;
  let cy = 4097.0 * y;
  let yh = cy - (cy - y);
  let yl = y - yh;
  return ((xh * yh - p) + xh * yl + xl * yh) + xl * yl;
}}
fn fmod_f(a: f32, b: f32) -> f32 {{
  // exact C fmod while the quotient stays below 2^23; beyond, WGSL's %
  let q = trunc(a / b);
  if (abs(q) >= 8388608.0 || abs(b) > 1e34) {{ return a % b; }}
  let p = q * b;
  var r = (a - p) - two_product_err_f(q, b, p);
  if (r != 0.0 && (r < 0.0) != (a < 0.0)) {{ r = r + select(-abs(b), abs(b), a > 0.0); }}
  if (abs(r) >= abs(b)) {{ r = r - select(-abs(b), abs(b), a > 0.0); }}
  return r;
}}
"""


F32_LIBRARY = _f32_library()

_FUNCTION_START = re.compile(r"^fn ([A-Za-z_]\w*)\s*\(", re.MULTILINE)
_CALL = re.compile(r"\b([A-Za-z_]\w*)\s*\(")
_LINE_COMMENT = re.compile(r"//[^\n]*")


def _split_functions(text: str) -> list[tuple[str, str]]:
    """(name, WGSL) of each module-scope function of ``text``, from its ``fn`` line to the next."""
    starts = list(_FUNCTION_START.finditer(text))
    if not starts or text[: starts[0].start()].strip():
        raise ValueError("a WGSL helper text must hold functions only")
    ends = [m.start() for m in starts[1:]] + [len(text)]
    return [(m.group(1), text[m.start() : end]) for m, end in zip(starts, ends, strict=True)]


class HelperLibrary:
    """WGSL helper functions of which a kernel gets only the ones its code calls, directly or
    through one another.

    An uncalled function is not free: WGSL parsing and validation, the SPIR-V translation and the
    driver's front end all process it, on every first use of a kernel (each op, dtype and operand
    layout; docs/webgpu.md has the cost). Calls are found by name (an identifier followed by
    ``(``) outside ``//`` comments, so a needed helper is never left out; at worst an unneeded
    one is kept.
    """

    def __init__(self, *texts: str) -> None:
        #: name -> WGSL of each function, in the order of ``texts``
        self.functions: dict[str, str] = {}
        for text in texts:
            for name, source in _split_functions(text):
                if name in self.functions:
                    raise ValueError(f"WGSL helper {name!r} is defined twice")
                self.functions[name] = source
        self._callees = {
            name: self._called_in(source) - {name} for name, source in self.functions.items()
        }

    def extended(self, *texts: str) -> HelperLibrary:
        """A library with this one's functions and those of ``texts``."""
        return HelperLibrary("".join(self.functions.values()), *texts)

    def _called_in(self, code: str) -> set[str]:
        return {
            name for name in _CALL.findall(_LINE_COMMENT.sub("", code)) if name in self.functions
        }

    def needed(self, code: str) -> list[str]:
        """The functions ``code`` calls, directly or not, in library order."""
        found: set[str] = set()
        pending = list(self._called_in(code))
        while pending:
            name = pending.pop()
            if name not in found:
                found.add(name)
                pending.extend(self._callees[name])
        return [name for name in self.functions if name in found]

    def select(self, code: str) -> str:
        """The WGSL of the functions ``code`` needs."""
        return "".join(self.functions[name] for name in self.needed(code))


#: the float32 and float64 math functions (the float64 ones need :data:`F64_BASE`)
MATH = HelperLibrary(F32_LIBRARY, F64_LIBRARY)

ERROR_HELPERS = f"""
fn report(kind: u32, w: vec3<u32>) {{
  // the first failure of each kind wins; later ones only read the flag (no atomic storm)
  let base = (pu({P_ERR_SLOT}u) * {ERR_KINDS}u + kind) * 4u;
  if (atomicLoad(&errs[base]) == 0u && atomicExchange(&errs[base], 1u) == 0u) {{
    atomicStore(&errs[base + 1u], w.x);
    atomicStore(&errs[base + 2u], w.y);
    atomicStore(&errs[base + 3u], w.z);
  }}
}}
"""


def header(types: set[str], *, code: str = "", library: HelperLibrary = MATH) -> str:
    """The common prelude, the helpers the given WGSL type names need, and the functions of
    ``library`` that ``code`` (the rest of the kernel, or the part of it that calls helpers)
    needs."""
    parts = []
    if "f16" in types:
        parts.append("enable f16;")
    parts.append(PRELUDE)
    if "f16" in types:
        parts.append(F16_HELPERS)
    if "i64" in types:
        parts.append(I64_HELPERS)
    if "f64" in types:
        parts.append(F64_BASE)
    helpers = library.select(code) if code else ""
    if helpers:
        parts.append(helpers)
    return "\n".join(parts)


def error_binding(binding: int) -> str:
    return (
        f"@group(0) @binding({binding}) var<storage, read_write> errs: array<atomic<u32>>;\n"
        + ERROR_HELPERS
    )


def words_expr(wtype: WType, expr: str) -> str:
    """A ``vec3<u32>`` WGSL expression describing ``expr`` for :func:`report`."""
    inner = wtype.value_words(expr)
    if wtype.compute == "f64":
        return inner
    return f"vec3<u32>({inner})"
