"""Element-wise ("map") kernels: unary and binary functions, where, clamp, casts, fills,
ranges and strided copies (permute, broadcast, slice, concat) all share one generator.

A map kernel computes one output element per invocation. Each input is read in one of three
modes: ``c`` contiguous (element ``i + offset``), ``s`` strided (offset from the output
coordinates and per-axis strides, 0 on broadcast axes) or ``k`` a scalar in the parameter
block. The rank lives in the parameters, so one pipeline serves every shape.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ipfs_accelerate.errors import (
    DtypeError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    TensorOverflowError,
)
from ipfs_accelerate.hal.webgpu._kernels._wgsl import (
    BOOL,
    MATH,
    P_N,
    P_OFFSET,
    P_OUT_OFFSET,
    P_OUT_STRIDES,
    P_RANK,
    P_SCALAR,
    P_SHAPE,
    P_STRIDES,
    WORKGROUP,
    WTYPES,
    WType,
    decode_value,
    error_binding,
    header,
    words_expr,
)

ErrorMaker = Callable[[tuple[int, int, int]], BaseException]

#: outputs per invocation of the strided kernels
STRIDED_ELEMS = 4

INT_HELPERS = """
fn min_i32() -> i32 { return bitcast<i32>(0x80000000u); }
fn mul_ovf_i32(a: i32, b: i32, p: i32) -> bool {
  return a != 0 && ((p / a) != b || (a == -1 && b == min_i32()));
}
"""
INT64_HELPERS = """
fn min_i64() -> i64 { return bitcast<i64>(u64(1) << 63u); }
fn mul_ovf_i64(a: i64, b: i64, p: i64) -> bool {
  return a != i64(0) && ((p / a) != b || (a == i64(-1) && b == min_i64()));
}
"""
DIVMOD = """
fn divmod_{s}(a: {t}, b: {t}) -> vec2<{t}> {{
  // numpy's npy_divmod: floor division and remainder with the divisor's sign
  if (b == {t}(0)) {{ return vec2<{t}>(a / b, {nan}); }}
  var m = fmod_{s}(a, b);
  var d = (a - m) / b;
  if (m != {t}(0)) {{
    if ((b < {t}(0)) != (m < {t}(0))) {{ m = m + b; d = d - {t}(1); }}
  }} else {{ m = {t}(0); }}
  var fd = {t}(0);
  if (d != {t}(0)) {{ fd = floor(d); if (d - fd > {t}(0.5)) {{ fd = fd + {t}(1); }} }}
  return vec2<{t}>(fd, m);
}}
"""
#: the helpers element-wise bodies may call: the math library, integer overflow tests, divmod
MAP_HELPERS = MATH.extended(
    INT_HELPERS,
    INT64_HELPERS,
    DIVMOD.format(s="f", t="f32", nan="nan_f()"),
    DIVMOD.format(s="d", t="f64", nan="nan_d()"),
)


@dataclass(frozen=True)
class Body:
    """WGSL computing ``r`` from ``a0``, ``a1``, ``a2`` (and ``i``, the output index), the output
    type, and the errors the body may report (kind index -> exception maker)."""

    code: str
    out: WType
    errors: tuple[ErrorMaker, ...] = ()


def _uses(types: Sequence[WType], out: WType) -> set[str]:
    names = {t.storage for t in types} | {t.compute for t in types} | {out.storage, out.compute}
    return names


def preamble(types: Sequence[WType], code: str) -> str:
    """Header for element-wise ``code`` over values of ``types``, with the helpers ``code``
    calls."""
    return header(_uses(types, types[0]), code=code, library=MAP_HELPERS)


def map_source(
    name: str,
    inputs: Sequence[tuple[WType, str]],
    body: Body,
    *,
    out_strided: bool = False,
) -> tuple[str, tuple[int, int, bool]]:
    """WGSL of a map kernel and its layout key (bound inputs, outputs, checked)."""
    out = body.out
    lines = [preamble([*(t for t, _ in inputs), out], body.code)]
    binding = 1
    for k, (wtype, mode) in enumerate(inputs):
        if mode != "k":
            lines.append(
                f"@group(0) @binding({binding}) var<storage, read> in{k}: array<{wtype.storage}>;"
            )
            binding += 1
    lines.append(
        f"@group(0) @binding({binding}) var<storage, read_write> out0: array<{out.storage}>;"
    )
    binding += 1
    checked = bool(body.errors)
    if checked:
        lines.append(error_binding(binding))
    strided = [k for k, (_, mode) in enumerate(inputs) if mode == "s"]
    loads = []
    for k, (wtype, mode) in enumerate(inputs):
        if mode == "c":
            loads.append(f"let a{k} = {wtype.load(f'in{k}[i + pu({P_OFFSET + k}u)]')};")
        elif mode == "s":
            loads.append(f"let a{k} = {wtype.load(f'in{k}[u32(o{k})]')};")
        else:
            loads.append(f"let a{k} = {wtype.scalar(P_SCALAR[k])};")
    target = "u32(oo)" if out_strided else f"i + pu({P_OUT_OFFSET}u)"
    element = [
        *loads,
        f"var r: {out.compute};",
        *body.code.split("\n"),
        f"out0[{target}] = {out.store('r')};",
    ]
    code = [
        f"@compute @workgroup_size({WORKGROUP})",
        "fn main(@builtin(global_invocation_id) gid: vec3<u32>, "
        "@builtin(num_workgroups) nwg: vec3<u32>) {",
    ]
    if not (strided or out_strided):
        code.append("  let i = flat_index(gid, nwg);")
        code.append(f"  if (i >= pu({P_N}u)) {{ return; }}")
        code.extend("  " + line for line in element)
    else:
        # STRIDED_ELEMS consecutive outputs per invocation: the coordinates are decomposed
        # (integer divisions, slow on SIMD hardware) once, then stepped along the last axis
        walkers = [f"o{k}" for k in strided] + (["oo"] if out_strided else [])
        stride_of = {f"o{k}": P_STRIDES[k] for k in strided}
        stride_of["oo"] = P_OUT_STRIDES
        offset_of = {f"o{k}": P_OFFSET + k for k in strided}
        offset_of["oo"] = P_OUT_OFFSET
        code.append(f"  let first = flat_index(gid, nwg) * {STRIDED_ELEMS}u;")
        code.append(f"  let n = pu({P_N}u);")
        code.append("  if (first >= n) { return; }")
        code.append(f"  let rank = pu({P_RANK}u);")
        code.append("  var last_size = 1u;")
        code.append(f"  if (rank > 0u) {{ last_size = pu({P_SHAPE - 1}u + rank); }}")
        for w in walkers:
            code.append(f"  var {w} = 0;")
            code.append(f"  var {w}_step = 0;")
            code.append(f"  if (rank > 0u) {{ {w}_step = pi({stride_of[w] - 1}u + rank); }}")
        code.append("  var last = last_size;")
        code.append(f"  for (var e = 0u; e < {STRIDED_ELEMS}u; e = e + 1u) {{")
        code.append("    let i = first + e;")
        code.append("    if (i >= n) { break; }")
        code.append("    if (last == last_size) {")
        for w in walkers:
            code.append(f"      {w} = pi({offset_of[w]}u);")
        code.append("      var rem = i;")
        code.append("      for (var d = rank; d > 0u; d = d - 1u) {")
        code.append(f"        let size = pu({P_SHAPE - 1}u + d);")
        code.append("        let c = i32(rem % size);")
        code.append("        rem = rem / size;")
        for w in walkers:
            code.append(f"        {w} = {w} + c * pi({stride_of[w] - 1}u + d);")
        code.append("      }")
        code.append("      last = i % last_size;")
        code.append("    }")
        code.extend("    " + line for line in element)
        code.append("    last = last + 1u;")
        for w in walkers:
            code.append(f"    {w} = {w} + {w}_step;")
        code.append("  }")
    code.append("}")
    lines.extend(code)
    n_in = sum(1 for _, mode in inputs if mode != "k")
    return "\n".join(lines), (n_in, 1, checked)


# ----------------------------------------------------------------------------- error makers


def _scalar_repr(wtype: WType, value: bool | int | float) -> str:
    return repr(np.dtype(wtype.name).type(value))


def overflow(op: str, dtype: str) -> ErrorMaker:
    info = np.iinfo(np.dtype(dtype))
    message = (
        f"{op}: integer result overflows {dtype} [{info.min}, {info.max}]; "
        "cast to a wider dtype first"
    )
    return lambda w: TensorOverflowError(message)


def _const_error(error: BaseException) -> ErrorMaker:
    return lambda w: error


def index_error(op: str, axis: int, size: int, wtype: WType) -> ErrorMaker:
    def make(w: tuple[int, int, int]) -> BaseException:
        bad = decode_value(wtype, *w)
        return IndexOutOfRangeError(
            f"{op}: index {bad} is out of range for axis {axis} of size {size}"
        )

    return make


# ----------------------------------------------------------------------------- unary


def _fsuffix(wtype: WType) -> str:
    return "d" if wtype.compute == "f64" else "f"


_FLOAT_LIB = {"erf", "sin", "cos", "tanh", "sigmoid", "silu", "gelu", "gelu_tanh"}


def unary_body(op: str, wtype: WType) -> Body:
    """The body of ``op`` on ``wtype`` (the op layer sends float functions floats only)."""
    t = wtype.compute
    if op in ("logical_not", "isnan", "isinf", "isfinite"):
        if wtype.is_float:
            s = _fsuffix(wtype)
            cond = {
                "logical_not": f"a0 == {t}(0)",
                "isnan": f"isnan_{s}(a0)",
                "isinf": f"isinf_{s}(a0)",
                "isfinite": f"!(isnan_{s}(a0) || isinf_{s}(a0))",
            }[op]
        else:
            cond = {
                "logical_not": f"a0 == {t}(0)",
                "isnan": "false",
                "isinf": "false",
                "isfinite": "true",
            }[op]
        return Body(f"r = select(0u, 1u, {cond});", BOOL)
    if wtype.is_float:
        s = _fsuffix(wtype)
        nan = f"nan_{s}()"
        inf = f"inf_{s}()"
        if op in _FLOAT_LIB:
            return Body(f"r = {op}_{s}(a0);", wtype)
        if s == "d" and op in ("exp", "log"):
            return Body(f"r = {op}_d(a0);", wtype)
        code = {
            "neg": "r = -a0;",
            "abs": "r = abs(a0);",
            "exp": "r = exp(a0);",
            "log": f"if (a0 > {t}(0)) {{ r = log(a0); }} "
            f"else if (a0 == {t}(0)) {{ r = -{inf}; }} else {{ r = {nan}; }}"
            f"\nif (isinf_{s}(a0) && a0 > {t}(0)) {{ r = a0; }}",
            "sqrt": f"r = select(sqrt(a0), {nan}, a0 < {t}(0));",
            "rsqrt": f"r = select({t}(1) / sqrt(a0), {nan}, a0 < {t}(0));",
            "relu": f"r = select(a0, {t}(0), a0 < {t}(0));",
            "floor": "r = floor(a0);",
            "ceil": "r = ceil(a0);",
            "round": "r = round(a0);",
            "sign": f"r = select(sign(a0), a0, isnan_{s}(a0));",
            "reciprocal": f"r = {t}(1) / a0;",
            "square": "r = a0 * a0;",
        }.get(op)
        if code is None:
            raise KeyError(op)
        return Body(code, wtype)
    # integers and bool
    if wtype.kind == "u" or wtype.kind == "b":
        if op == "neg":
            error = TensorOverflowError(
                f"neg: negating non-zero {wtype.name} values wraps around; "
                "cast to a signed dtype first"
            )
            return Body(
                "if (a0 != 0u) { report(0u, vec3<u32>(a0, 0u, 0u)); }\nr = (0u - a0) & 255u;",
                wtype,
                (_const_error(error),),
            )
        code = {
            "abs": "r = a0;",
            "relu": "r = a0;",
            "sign": "r = select(0u, 1u, a0 > 0u);",
            "square": "r = (a0 * a0) & 255u;",
        }.get(op)
        if code is None:
            raise KeyError(op)
        return Body(code, wtype)
    minimum = "i32(-128)" if wtype.name == "int8" else f"min_{t}()"
    if wtype.name == "int8" and op == "square":  # wraps to int8, as square does for i32
        return Body("r = ((a0 * a0) << 24u) >> 24u;", wtype)
    if op in ("neg", "abs"):
        expr = "-a0" if op == "neg" else f"select(a0, -a0, a0 < {t}(0))"
        code = f"if (a0 == {minimum}) {{ report(0u, {words_expr(wtype, 'a0')}); }}\nr = {expr};"
        return Body(code, wtype, (overflow(op, wtype.name),))
    code = {
        "sign": f"r = select(select({t}(0), {t}(1), a0 > {t}(0)), {t}(-1), a0 < {t}(0));",
        "relu": f"r = max(a0, {t}(0));",
        "square": "r = a0 * a0;",
    }.get(op)
    if code is None:
        raise KeyError(op)
    return Body(code, wtype)


# ----------------------------------------------------------------------------- binary

_COMPARE = {"equal": "==", "less": "<", "less_equal": "<=", "greater": ">", "greater_equal": ">="}


def binary_body(op: str, wtype: WType) -> Body:
    t = wtype.compute
    zero = f"{t}(0)"
    if op in _COMPARE:
        return Body(f"r = select(0u, 1u, a0 {_COMPARE[op]} a1);", BOOL)
    if op == "not_equal":  # written as !(==): WGSL's != on floats is ordered (NaN != NaN is false)
        return Body("r = select(0u, 1u, !(a0 == a1));", BOOL)
    if op in ("logical_and", "logical_or", "logical_xor"):
        joiner = {"logical_and": "&&", "logical_or": "||", "logical_xor": "!="}[op]
        return Body(f"r = select(0u, 1u, (!(a0 == {zero})) {joiner} (!(a1 == {zero})));", BOOL)
    if wtype.is_float:
        s = _fsuffix(wtype)
        code = {
            "add": "r = a0 + a1;",
            "sub": "r = a0 - a1;",
            "mul": "r = a0 * a1;",
            "div": "r = a0 / a1;",
            "pow": f"r = pow_{s}(a0, a1);",
            "maximum": f"r = select(select(max(a0, a1), a1, isnan_{s}(a1)), a0, isnan_{s}(a0));",
            "minimum": f"r = select(select(min(a0, a1), a1, isnan_{s}(a1)), a0, isnan_{s}(a0));",
            "floor_divide": f"r = divmod_{s}(a0, a1).x;",
            "remainder": f"r = divmod_{s}(a0, a1).y;",
        }[op]
        return Body(code, wtype)
    if op in ("maximum", "minimum"):
        return Body(f"r = {op[:3]}(a0, a1);", wtype)
    if op in ("floor_divide", "remainder"):
        error = InvalidArgumentError(f"{op}: integer division by zero")
        check = f"if (a1 == {zero}) {{ report(0u, vec3<u32>(0u, 0u, 0u)); r = {zero}; }} else {{\n"
        if wtype.kind in "ub":
            inner = "r = a0 / a1;" if op == "floor_divide" else "r = a0 % a1;"
        elif op == "floor_divide":
            inner = (
                f"r = a0 / a1;\nif ((a0 % a1) != {zero} && ((a0 < {zero}) != (a1 < {zero}))) "
                f"{{ r = r - {t}(1); }}"
            )
        else:
            inner = (
                f"r = a0 % a1;\nif (r != {zero} && ((r < {zero}) != (a1 < {zero}))) "
                "{ r = r + a1; }"
            )
        return Body(check + inner + "\n}", wtype, (_const_error(error),))
    over = overflow(op, wtype.name)
    words = words_expr(wtype, "a0")
    if wtype.kind in "ub":  # uint8 computed in u32: a result above 255 overflowed
        code = {
            "add": "r = a0 + a1;\nif (r > 255u) { report(0u, vec3<u32>(a0, 0u, 0u)); }\n"
            "r = r & 255u;",
            "sub": "if (a0 < a1) { report(0u, vec3<u32>(a0, 0u, 0u)); }\nr = (a0 - a1) & 255u;",
            "mul": "r = a0 * a1;\nif (r > 255u) { report(0u, vec3<u32>(a0, 0u, 0u)); }\n"
            "r = r & 255u;",
            "pow": (
                "var acc = 1u; var base = a0; var e = a1; var bad = false;\n"
                "loop { if ((e & 1u) != 0u) { acc = acc * base; if (acc > 255u) { bad = true; } }\n"
                "  e = e >> 1u; if (e == 0u) { break; }\n"
                "  base = base * base; if (base > 255u) { bad = true; base = 256u; } }\n"
                "if (bad) { report(0u, vec3<u32>(a0, 0u, 0u)); }\nr = acc & 255u;"
            ),
        }[op]
        return Body(code, wtype, (over,))
    if wtype.name == "int8":
        return _int8_arith(op, words, over)
    if op == "add":
        code = f"r = a0 + a1;\nif (((a0 ^ r) & (a1 ^ r)) < {zero}) {{ report(0u, {words}); }}"
        return Body(code, wtype, (over,))
    if op == "sub":
        code = f"r = a0 - a1;\nif (((a0 ^ a1) & (a0 ^ r)) < {zero}) {{ report(0u, {words}); }}"
        return Body(code, wtype, (over,))
    if op == "mul":
        code = f"r = a0 * a1;\nif (mul_ovf_{t}(a0, a1, r)) {{ report(0u, {words}); }}"
        return Body(code, wtype, (over,))
    if op == "pow":
        negative = InvalidArgumentError("pow: integers to negative integer powers are not allowed")
        code = (
            f"if (a1 < {zero}) {{ report(0u, {words}); r = {zero}; }} else {{\n"
            f"var acc = {t}(1); var base = a0; var e = a1; var bad = false;\n"
            f"loop {{ if ((e & {t}(1)) != {zero}) {{ let p = acc * base; "
            f"if (mul_ovf_{t}(acc, base, p)) {{ bad = true; }} acc = p; }}\n"
            f"  e = e >> 1u; if (e == {zero}) {{ break; }}\n"
            f"  let sq = base * base; "
            f"if (mul_ovf_{t}(base, base, sq)) {{ bad = true; }} base = sq; }}\n"
            f"if (bad) {{ report(1u, {words}); }}\nr = acc;\n}}"
        )
        return Body(code, wtype, (_const_error(negative), over))
    raise KeyError(op)


def _int8_arith(op: str, words: str, over: ErrorMaker) -> Body:
    """int8 add/sub/mul/pow computed in i32, where the exact result fits: outside [-128, 127]
    it overflowed int8 (reported; the stored value is then never read)."""
    outside = "(r < -128 || r > 127)"
    if op in ("add", "sub", "mul"):
        sign = {"add": "+", "sub": "-", "mul": "*"}[op]
        code = f"r = a0 {sign} a1;\nif {outside} {{ report(0u, {words}); }}"
        return Body(code, WTYPES["int8"], (over,))
    if op == "pow":
        negative = InvalidArgumentError("pow: integers to negative integer powers are not allowed")
        # a base beyond int8 overflows any product it enters (|acc| >= 1): saturate it at 256,
        # and restart acc after an overflow, so that nothing wraps back into range in i32
        code = (
            f"if (a1 < 0) {{ report(0u, {words}); r = 0; }} else {{\n"
            "var acc = 1; var base = a0; var e = a1; var bad = false;\n"
            "loop { if ((e & 1) != 0) { acc = acc * base; "
            "if (acc < -128 || acc > 127) { bad = true; acc = 1; } }\n"
            "  e = e >> 1u; if (e == 0) { break; }\n"
            "  base = base * base; if (base > 127) { base = 256; } }\n"
            f"if (bad) {{ report(1u, {words}); }}\nr = acc;\n}}"
        )
        return Body(code, WTYPES["int8"], (_const_error(negative), over))
    raise KeyError(op)


# ----------------------------------------------------------------------------- casts


def _float_max_plus(wtype: WType) -> float:
    """The smallest magnitude that rounds to infinity in ``wtype`` (numpy's overflow edge)."""
    info = np.finfo(np.dtype(wtype.name))
    return (
        float(info.max)
        + float(info.max - np.nextafter(info.max, np.float64(0), dtype=info.dtype)) / 2
    )


def cast_body(src: WType, dst: WType) -> Body:
    """``a0`` converted to ``dst``, reporting the conversions checked_cast refuses on the CPU."""
    ctx = "astype()"
    t_src, t_dst = src.compute, dst.compute
    words = words_expr(src, "a0")

    def value_error(kind: type[BaseException], template: str) -> ErrorMaker:
        def make(w: tuple[int, int, int]) -> BaseException:
            return kind(template.format(value=_scalar_repr(src, decode_value(src, *w))))

        return make

    if src.name == dst.name:
        return Body("r = a0;", dst)
    if dst.kind == "b":
        if src.kind == "b":
            return Body("r = a0;", dst)
        error = value_error(
            TensorOverflowError,
            f"{ctx}: only 0 and 1 convert to bool exactly; found value {{value}}",
        )
        code = (
            f"if (!(a0 == {t_src}(0) || a0 == {t_src}(1))) {{ report(0u, {words}); }}\n"
            f"r = select(0u, 1u, !(a0 == {t_src}(0)));"
        )
        return Body(code, dst, (error,))
    if src.kind == "b":
        return Body(f"r = {t_dst}(a0);", dst)
    if dst.is_float:
        if not src.is_float or src.itemsize <= dst.itemsize:
            convert = f"{t_dst}(a0)"
            return Body(f"r = {convert};", dst)
        # a narrower float: finite values beyond its range would become inf, which numpy refuses
        limit = _float_max_plus(dst)
        finite_max = float(np.finfo(np.dtype(dst.name)).max)
        s = "d" if t_src == "f64" else "f"
        error = value_error(
            TensorOverflowError,
            f"{ctx}: value {{value}} overflows {dst.name} (max {np.finfo(np.dtype(dst.name)).max})",
        )
        if dst.storage == "f16":
            convert = "f32(a0)" if t_src == "f64" else "a0"
            code = (
                f"if (!(isnan_{s}(a0) || isinf_{s}(a0)) && abs(a0) >= {t_src}({limit!r})) "
                f"{{ report(0u, {words}); }}\n"
                f"r = {convert};"
            )
        else:
            code = (
                f"if (!(isnan_{s}(a0) || isinf_{s}(a0)) && abs(a0) >= {t_src}({limit!r})) "
                f"{{ report(0u, {words}); }}\n"
                f"if (isnan_{s}(a0)) {{ r = nan_f(); }} else if (isinf_{s}(a0)) "
                f"{{ r = select(inf_f(), -inf_f(), a0 < {t_src}(0)); }}\n"
                f"else {{ r = f32(clamp(a0, {t_src}(-{finite_max!r}), {t_src}({finite_max!r}))); }}"
            )
        return Body(code, dst, (error,))
    # integer destinations
    info = np.iinfo(np.dtype(dst.name))
    low, high_excl = int(info.min), int(info.max) + 1
    if src.is_float:
        s = "d" if t_src == "f64" else "f"
        nonfinite = value_error(
            TensorOverflowError, f"{ctx}: value {{value}} cannot be represented as {dst.name}"
        )
        fraction = value_error(
            DtypeError,
            f"{ctx}: converting to {dst.name} would truncate value {{value}}; "
            "round explicitly first",
        )
        out_of_range = value_error(
            TensorOverflowError,
            f"{ctx}: value {{value}} is out of range for {dst.name} [{info.min}, {info.max}]",
        )
        code = (
            f"if (isnan_{s}(a0) || isinf_{s}(a0)) {{ report(0u, {words}); r = {t_dst}(0); }}\n"
            f"else {{\n"
            f"  if (trunc(a0) != a0) {{ report(1u, {words}); }}\n"
            f"  if (a0 < {t_src}({float(low)!r}) || a0 >= {t_src}({float(high_excl)!r})) "
            f"{{ report(2u, {words}); r = {t_dst}(0); }}\n"
            f"  else {{ r = {t_dst}(a0); }}\n"
            f"}}"
        )
        return Body(code, dst, (nonfinite, fraction, out_of_range))
    # integer -> integer
    src_info = np.iinfo(np.dtype(src.name))
    checks = []
    if src_info.min < info.min:
        checks.append(f"a0 < {_int_literal(low, t_src)}")
    if src_info.max > info.max:
        checks.append(f"a0 > {_int_literal(high_excl - 1, t_src)}")
    convert = f"{t_dst}(a0)" if t_src != t_dst else "a0"
    if not checks:
        return Body(f"r = {convert};", dst)
    error = value_error(
        TensorOverflowError,
        f"{ctx}: value {{value}} is out of range for {dst.name} [{info.min}, {info.max}]",
    )
    code = f"if ({' || '.join(checks)}) {{ report(0u, {words}); }}\nr = {convert};"
    return Body(code, dst, (error,))


def _int_literal(value: int, wgsl_type: str) -> str:
    if wgsl_type == "i32" and value == -(2**31):
        return "min_i32()"
    return f"{wgsl_type}({value})"


# ----------------------------------------------------------------------------- others


def where_body(wtype: WType) -> Body:
    return Body("r = select(a2, a1, a0 != 0u);", wtype)


def clamp_body(wtype: WType, has_low: bool, has_high: bool) -> Body:
    """``a0`` limited by scalars ``a1`` (low) and ``a2`` (high); NaN stays NaN."""
    lines = ["r = a0;"]
    if has_low:
        lines.append("r = select(r, a1, r < a1);")
    if has_high:
        lines.append("r = select(r, a2, r > a2);")
    return Body("\n".join(lines), wtype)


def arange_body(start: WType, out: WType) -> Body:
    """``start + i * step`` computed in ``start``'s type (f64 for floats where available, as
    numpy computes float ranges in float64), then converted."""
    value = f"a0 + {start.compute}(i) * a1"
    if start.compute == out.compute:
        return Body(f"r = {value};", out)
    return Body(f"r = {out.compute}({value});", out)


def identity_body(wtype: WType) -> Body:
    return Body("r = a0;", wtype)
