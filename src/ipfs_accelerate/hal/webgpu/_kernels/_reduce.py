"""Reductions over the middle axis of an (outer, R, inner) view, and row-wise fused ops.

Two shapes of kernel:

* ``thread``: one invocation per output, looping over R (reads are coalesced over ``inner``);
  best when there are many outputs.
* ``group``: one workgroup per output, invocations striding over R and combining in shared
  memory; best for few outputs over long rows (and its tree order sums more accurately).

Integer sums and products accumulate in int64 and detect overflow exactly: sums count the
wrap-arounds (the result fits iff the count is zero), products remember an overflow and
whether a zero factor made it harmless.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipfs_accelerate.hal.webgpu._kernels._elementwise import INT64_HELPERS, INT_HELPERS
from ipfs_accelerate.hal.webgpu._kernels._wgsl import (
    P_N,
    P_SCALAR,
    WType,
    error_binding,
    header,
)

R_LEN = 4  # words: reduced length R
R_INNER = 5  # elements after the reduced block
GROUP = 64  # invocations per workgroup of the "group" kernels


@dataclass(frozen=True)
class Reducer:
    """WGSL pieces of one reduction: a state struct, its identity, one element as a state,
    the combination of two states, and the output written from the final state."""

    struct: str
    init: str
    elem: str  # uses x (compute value) and r (u32 position)
    join: str  # body of fn join(a: S, b: S) -> S
    finish: str  # assigns `res` (output compute type) from `s`; may call report()
    checked: bool = False


def _minmax_identity(wtype: WType, want_max: bool) -> str:
    t = wtype.compute
    if wtype.is_float:
        s = "d" if t == "f64" else "f"
        return f"-inf_{s}()" if want_max else f"inf_{s}()"
    if t == "i32":
        return "min_i32()" if want_max else "i32(2147483647)"
    if t == "i64":
        return "min_i64()" if want_max else "i64(9223372036854775807)"
    return "0u" if want_max else "4294967295u"


def reducer(op: str, src: WType, out: WType) -> Reducer:
    """The reduction ``op`` of ``src`` elements into ``out`` (see Backend.reduce)."""
    t = src.compute
    o = out.compute
    if op in ("max", "min"):
        fn = op
        if src.is_float:
            s = "d" if t == "f64" else "f"
            join = (
                f"if (isnan_{s}(a.v)) {{ return a; }} if (isnan_{s}(b.v)) {{ return b; }} "
                f"return S({fn}(a.v, b.v));"
            )
        else:
            join = f"return S({fn}(a.v, b.v));"
        return Reducer(
            f"struct S {{ v: {t} }}",
            f"S({_minmax_identity(src, op == 'max')})",
            "S(x)",
            join,
            "res = s.v;",
        )
    if op in ("argmax", "argmin"):
        better = ">" if op == "argmax" else "<"
        if src.is_float:
            s = "d" if t == "f64" else "f"
            nan = (
                f"let an = isnan_{s}(a.v); let bn = isnan_{s}(b.v);\n"
                "if (an || bn) { if (an && bn && b.i < a.i) { return b; } "
                "if (an) { return a; } return b; }\n"
            )
        else:
            nan = ""
        join = (
            nan + f"if (a.v {better} b.v) {{ return a; }}\nif (b.v {better} a.v) {{ return b; }}\n"
            "if (a.i < b.i) { return a; }\nreturn b;"
        )
        init = f"S({_minmax_identity(src, op == 'argmax')}, 4294967295u)"
        return Reducer(f"struct S {{ v: {t}, i: u32 }}", init, "S(x, r)", join, "res = i64(s.i);")
    if op == "sum" and out.is_int:
        join = (
            # a wrap-around shows as operands of one sign and a result of the other; it went up
            # (carry +1) when the result turned negative
            "let v = a.v + b.v;\nvar c = a.c + b.c;\n"
            "if (((a.v ^ v) & (b.v ^ v)) < i64(0)) { c = c + select(-1, 1, v < i64(0)); }\n"
            "return S(v, c);"
        )
        finish = "if (s.c != 0) { report(0u, vec3<u32>(0u, 0u, 0u)); }\nres = s.v;"
        return Reducer(
            "struct S { v: i64, c: i32 }",
            "S(i64(0), 0)",
            "S(i64(x), 0)",
            join,
            finish,
            checked=True,
        )
    if op == "prod" and out.is_int:
        join = (
            "let v = a.v * b.v;\n"
            "return S(v, a.bad | b.bad | select(0u, 1u, mul_ovf_i64(a.v, b.v, v)), "
            "a.zero | b.zero);"
        )
        finish = (
            "if (s.bad != 0u && s.zero == 0u) { report(0u, vec3<u32>(0u, 0u, 0u)); }\nres = s.v;"
        )
        elem = "S(i64(x), 0u, select(0u, 1u, x == " + src.zero() + "))"
        return Reducer(
            "struct S { v: i64, bad: u32, zero: u32 }",
            "S(i64(1), 0u, 0u)",
            elem,
            join,
            finish,
            checked=True,
        )
    if op in ("sum", "mean"):
        elem = f"S({o}(x))"
        finish = "res = s.v;" if op == "sum" else f"res = s.v / {out.scalar(P_SCALAR[1])};"
        return Reducer(f"struct S {{ v: {o} }}", f"S({o}(0))", elem, "return S(a.v + b.v);", finish)
    if op == "prod":
        return Reducer(
            f"struct S {{ v: {o} }}",
            f"S({o}(1))",
            f"S({o}(x))",
            "return S(a.v * b.v);",
            "res = s.v;",
        )
    raise KeyError(op)


def _prelude(src: WType, out: WType, extra: set[str]) -> str:
    used = {src.storage, src.compute, out.storage, out.compute} | extra
    parts = [header(used)]
    if "i32" in used or "i64" in used:
        parts.append(INT_HELPERS)
    if "i64" in used:
        parts.append(INT64_HELPERS)
    return "\n".join(parts)


def reduce_source(op: str, src: WType, out: WType, shape: str) -> tuple[str, tuple[int, int, bool]]:
    """A reduction kernel (``shape`` "thread" or "group") over (outer, R, inner)."""
    red = reducer(op, src, out)
    extra = (
        {"i64"} if op in ("argmax", "argmin") or (op in ("sum", "prod") and out.is_int) else set()
    )
    lines = [_prelude(src, out, extra), red.struct]
    lines.append(f"fn join(a: S, b: S) -> S {{\n  {red.join.replace(chr(10), chr(10) + '  ')}\n}}")
    lines.append(f"@group(0) @binding(1) var<storage, read> in0: array<{src.storage}>;")
    lines.append(f"@group(0) @binding(2) var<storage, read_write> out0: array<{out.storage}>;")
    if red.checked:
        lines.append(error_binding(3))
    load = src.load("in0[base + r * inner]")
    finish = red.finish.replace("\n", "\n  ")
    if shape == "thread":
        lines.append(f"""
@compute @workgroup_size({GROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
  let o = gid.x + gid.y * nwg.x * {GROUP}u;
  if (o >= pu({P_N}u)) {{ return; }}
  let count = pu({R_LEN}u);
  let inner = pu({R_INNER}u);
  let base = (o / inner) * count * inner + o % inner;
  var s = {red.init};
  for (var r = 0u; r < count; r = r + 1u) {{
    let x = {load};
    s = join(s, {red.elem});
  }}
  var res: {out.compute};
  {finish}
  out0[o] = {out.store("res")};
}}
""")
    else:
        lines.append(f"""
var<workgroup> shared_s: array<S, {GROUP}>;
@compute @workgroup_size({GROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {{
  let o = wid.x + wid.y * nwg.x;
  let count = pu({R_LEN}u);
  let inner = pu({R_INNER}u);
  let live = o < pu({P_N}u);
  let base = (o / inner) * count * inner + o % inner;
  var s = {red.init};
  if (live) {{
    for (var r = lid; r < count; r = r + {GROUP}u) {{
      let x = {load};
      s = join(s, {red.elem});
    }}
  }}
  shared_s[lid] = s;
  workgroupBarrier();
  for (var step = {GROUP // 2}u; step > 0u; step = step >> 1u) {{
    if (lid < step) {{ shared_s[lid] = join(shared_s[lid], shared_s[lid + step]); }}
    workgroupBarrier();
  }}
  if (live && lid == 0u) {{
    s = shared_s[0];
    var res: {out.compute};
    {finish}
    out0[o] = {out.store("res")};
  }}
}}
""")
    return "\n".join(lines), (1, 1, red.checked)


def var_source(src: WType, out: WType, shape: str) -> tuple[str, tuple[int, int, bool]]:
    """Two-pass variance (mean, then squared deviations) divided by a host-given divisor."""
    o = out.compute
    lines = [_prelude(src, out, set())]
    lines.append(f"@group(0) @binding(1) var<storage, read> in0: array<{src.storage}>;")
    lines.append(f"@group(0) @binding(2) var<storage, read_write> out0: array<{out.storage}>;")
    load = f"{o}({src.load('in0[base + r * inner]')})"
    count_as = f"{o}(count)"
    divisor = out.scalar(P_SCALAR[1])
    if shape == "thread":
        lines.append(f"""
@compute @workgroup_size({GROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
  let o = gid.x + gid.y * nwg.x * {GROUP}u;
  if (o >= pu({P_N}u)) {{ return; }}
  let count = pu({R_LEN}u);
  let inner = pu({R_INNER}u);
  let base = (o / inner) * count * inner + o % inner;
  // sums of x - x[0]: a constant row has exactly zero variance, and the shift keeps the
  // deviations accurate when the mean is large compared with the spread
  var shift = {o}(0);
  if (count > 0u) {{ let r = 0u; shift = {load}; }}
  var total = {o}(0);
  for (var r = 0u; r < count; r = r + 1u) {{ total = total + ({load} - shift); }}
  let mean = total / {count_as};
  var squares = {o}(0);
  for (var r = 0u; r < count; r = r + 1u) {{
    let d = ({load} - shift) - mean; squares = squares + d * d;
  }}
  let res = squares / {divisor};
  out0[o] = {out.store("res")};
}}
""")
    else:
        lines.append(f"""
var<workgroup> part: array<{o}, {GROUP}>;
fn tree(lid: u32) {{
  workgroupBarrier();
  for (var step = {GROUP // 2}u; step > 0u; step = step >> 1u) {{
    if (lid < step) {{ part[lid] = part[lid] + part[lid + step]; }}
    workgroupBarrier();
  }}
}}
@compute @workgroup_size({GROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {{
  let o = wid.x + wid.y * nwg.x;
  let count = pu({R_LEN}u);
  let inner = pu({R_INNER}u);
  let live = o < pu({P_N}u);
  let base = (o / inner) * count * inner + o % inner;
  var shift = {o}(0);
  if (live && count > 0u) {{ let r = 0u; shift = {load}; }}
  var acc = {o}(0);
  if (live) {{ for (var r = lid; r < count; r = r + {GROUP}u) {{ acc = acc + ({load} - shift); }} }}
  part[lid] = acc;
  tree(lid);
  let mean = part[0] / {count_as};
  workgroupBarrier();
  acc = {o}(0);
  if (live) {{
    for (var r = lid; r < count; r = r + {GROUP}u) {{
      let d = ({load} - shift) - mean; acc = acc + d * d;
    }}
  }}
  part[lid] = acc;
  tree(lid);
  if (live && lid == 0u) {{
    let res = part[0] / {divisor};
    out0[o] = {out.store("res")};
  }}
}}
""")
    return "\n".join(lines), (1, 1, False)


# ----------------------------------------------------------------------------- row-wise fused ops


def softmax_source(x: WType, log: bool, shape: str) -> tuple[str, tuple[int, int, bool]]:
    """(log-)softmax over the middle axis of (outer, R, inner), numerically stable."""
    t = x.compute
    s = "d" if t == "f64" else "f"
    exp = "exp_d" if t == "f64" else "exp"
    ln = "log_d" if t == "f64" else "log"
    used = {x.storage, t}
    load = x.load("in0[base + r * inner]")
    if log:
        write = f"out0[base + r * inner] = {x.store(f'({load} - m) - {ln}(total)')};"
    else:
        write = f"out0[base + r * inner] = {x.store(f'{exp}({load} - m) / total')};"
    maxj = f"select(select(max(a, b), b, isnan_{s}(b)), a, isnan_{s}(a))"
    if shape == "thread":
        body = f"""
@compute @workgroup_size({GROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
  let o = gid.x + gid.y * nwg.x * {GROUP}u;
  if (o >= pu({P_N}u)) {{ return; }}
  let count = pu({R_LEN}u);
  let inner = pu({R_INNER}u);
  let base = (o / inner) * count * inner + o % inner;
  var m = -inf_{s}();
  for (var r = 0u; r < count; r = r + 1u) {{ m = maxj(m, {load}); }}
  var total = {t}(0);
  for (var r = 0u; r < count; r = r + 1u) {{ total = total + {exp}({load} - m); }}
  for (var r = 0u; r < count; r = r + 1u) {{ {write} }}
}}
"""
    else:
        body = f"""
var<workgroup> part: array<{t}, {GROUP}>;
@compute @workgroup_size({GROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {{
  let o = wid.x + wid.y * nwg.x;
  let count = pu({R_LEN}u);
  let inner = pu({R_INNER}u);
  let live = o < pu({P_N}u);
  let base = (o / inner) * count * inner + o % inner;
  var acc = -inf_{s}();
  if (live) {{ for (var r = lid; r < count; r = r + {GROUP}u) {{ acc = maxj(acc, {load}); }} }}
  part[lid] = acc;
  workgroupBarrier();
  for (var step = {GROUP // 2}u; step > 0u; step = step >> 1u) {{
    if (lid < step) {{ part[lid] = maxj(part[lid], part[lid + step]); }}
    workgroupBarrier();
  }}
  let m = part[0];
  workgroupBarrier();
  acc = {t}(0);
  if (live) {{
    for (var r = lid; r < count; r = r + {GROUP}u) {{ acc = acc + {exp}({load} - m); }}
  }}
  part[lid] = acc;
  workgroupBarrier();
  for (var step = {GROUP // 2}u; step > 0u; step = step >> 1u) {{
    if (lid < step) {{ part[lid] = part[lid] + part[lid + step]; }}
    workgroupBarrier();
  }}
  let total = part[0];
  if (live) {{ for (var r = lid; r < count; r = r + {GROUP}u) {{ {write} }} }}
}}
"""
    src = f"""{header(used, code=body)}
fn maxj(a: {t}, b: {t}) -> {t} {{ return {maxj}; }}
@group(0) @binding(1) var<storage, read> in0: array<{x.storage}>;
@group(0) @binding(2) var<storage, read_write> out0: array<{x.storage}>;
{body}"""
    return src, (1, 1, False)


def layer_norm_source(
    x: WType, has_weight: bool, has_bias: bool, shape: str
) -> tuple[str, tuple[int, int, bool]]:
    """Normalise contiguous rows of R elements (biased variance), then scale and shift."""
    t = x.compute
    used = {x.storage, t}
    bindings = [f"@group(0) @binding(1) var<storage, read> in0: array<{x.storage}>;"]
    binding = 2
    post = "y"
    if has_weight:
        bindings.append(
            f"@group(0) @binding({binding}) var<storage, read> weight: array<{x.storage}>;"
        )
        post = f"{post} * {x.load('weight[r]')}"
        binding += 1
    if has_bias:
        bindings.append(
            f"@group(0) @binding({binding}) var<storage, read> bias: array<{x.storage}>;"
        )
        post = f"{post} + {x.load('bias[r]')}"
        binding += 1
    bindings.append(
        f"@group(0) @binding({binding}) var<storage, read_write> out0: array<{x.storage}>;"
    )
    load = x.load("in0[base + r]")
    eps = x.scalar(P_SCALAR[1])
    write = f"let y = (({load} - shift) - mean) * inv; out0[base + r] = {x.store(post)};"
    if shape == "thread":
        body = f"""
@compute @workgroup_size({GROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
  let o = gid.x + gid.y * nwg.x * {GROUP}u;
  if (o >= pu({P_N}u)) {{ return; }}
  let count = pu({R_LEN}u);
  let base = o * count;
  let shift = {x.load("in0[base]")};
  var total = {t}(0);
  for (var r = 0u; r < count; r = r + 1u) {{ total = total + ({load} - shift); }}
  let mean = total / {t}(count);
  var squares = {t}(0);
  for (var r = 0u; r < count; r = r + 1u) {{
    let d = ({load} - shift) - mean; squares = squares + d * d;
  }}
  let inv = {t}(1) / sqrt(squares / {t}(count) + {eps});
  for (var r = 0u; r < count; r = r + 1u) {{ {write} }}
}}
"""
    else:
        body = f"""
var<workgroup> part: array<{t}, {GROUP}>;
fn tree(lid: u32) {{
  workgroupBarrier();
  for (var step = {GROUP // 2}u; step > 0u; step = step >> 1u) {{
    if (lid < step) {{ part[lid] = part[lid] + part[lid + step]; }}
    workgroupBarrier();
  }}
}}
@compute @workgroup_size({GROUP})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32,
        @builtin(num_workgroups) nwg: vec3<u32>) {{
  let o = wid.x + wid.y * nwg.x;
  let count = pu({R_LEN}u);
  let live = o < pu({P_N}u);
  let base = o * count;
  var shift = {t}(0);
  if (live) {{ shift = {x.load("in0[base]")}; }}
  var acc = {t}(0);
  if (live) {{ for (var r = lid; r < count; r = r + {GROUP}u) {{ acc = acc + ({load} - shift); }} }}
  part[lid] = acc;
  tree(lid);
  let mean = part[0] / {t}(count);
  workgroupBarrier();
  acc = {t}(0);
  if (live) {{
    for (var r = lid; r < count; r = r + {GROUP}u) {{
      let d = ({load} - shift) - mean; acc = acc + d * d;
    }}
  }}
  part[lid] = acc;
  tree(lid);
  let inv = {t}(1) / sqrt(part[0] / {t}(count) + {eps});
  if (live) {{ for (var r = lid; r < count; r = r + {GROUP}u) {{ {write} }} }}
}}
"""
    n_in = 1 + int(has_weight) + int(has_bias)
    return header(used, code=body) + "\n" + "\n".join(bindings) + "\n" + body, (n_in, 1, False)


# masked softmax parameters (attention): rows of the scores are (batch..., L) coordinates
M_RANK = 6  # number of row axes (batch axes + L)
M_SHAPE = 20  # row-axis sizes (MAX_RANK words)
M_STRIDES = 28  # mask strides over the row axes
M_STRIDE_S = 36  # mask stride along S
M_LENGTH_L = 37  # L (for the causal test)


def masked_softmax_source(
    x: WType, mask: WType | None, causal: bool
) -> tuple[str, tuple[int, int, bool]]:
    """softmax(scores * scale + mask) along the last axis in one kernel (attention's epilogue).

    The mask is bool (True = attend) or additive, read through broadcast strides; ``causal``
    masks column j > row i (top-left aligned, as PyTorch). A row with nothing to attend is NaN.
    """
    t = x.compute
    s = "d" if t == "f64" else "f"
    exp = "exp_d" if t == "f64" else "exp"
    used = {x.storage, t} | ({mask.storage} if mask is not None else set())
    scale = x.scalar(P_SCALAR[1])
    bindings = [f"@group(0) @binding(1) var<storage, read> in0: array<{x.storage}>;"]
    if mask is not None:
        bindings.append(f"@group(0) @binding(2) var<storage, read> mask: array<{mask.storage}>;")
    bindings.append(
        f"@group(0) @binding({2 + (mask is not None)}) "
        f"var<storage, read_write> out0: array<{x.storage}>;"
    )
    value = f"{x.load('in0[base + j]')} * scale"
    if mask is not None and mask.kind == "b":
        value = f"select(-inf_{s}(), {value}, mask[moff + j * mstride] != 0u)"
    elif mask is not None:
        value = f"{value} + {mask.load('mask[moff + j * mstride]')}"
    if causal:
        value = f"select({value}, -inf_{s}(), j > row_l)"
    body = f"""
@compute @workgroup_size({GROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
  let o = gid.x + gid.y * nwg.x * {GROUP}u;
  if (o >= pu({P_N}u)) {{ return; }}
  let count = pu({R_LEN}u);
  let scale = {scale};
  let base = o * count;
  let row_l = o % pu({M_LENGTH_L}u);
  var moff = 0u;
  var rem = o;
  for (var d = pu({M_RANK}u); d > 0u; d = d - 1u) {{
    let size = pu({M_SHAPE - 1}u + d);
    moff = moff + (rem % size) * pu({M_STRIDES - 1}u + d);
    rem = rem / size;
  }}
  let mstride = pu({M_STRIDE_S}u);
  var m = -inf_{s}();
  for (var j = 0u; j < count; j = j + 1u) {{
    let v = {value};
    m = select(select(max(m, v), v, isnan_{s}(v)), m, isnan_{s}(m));
  }}
  var total = {t}(0);
  for (var j = 0u; j < count; j = j + 1u) {{ total = total + {exp}(({value}) - m); }}
  for (var j = 0u; j < count; j = j + 1u) {{
    out0[base + j] = {x.store(f"{exp}(({value}) - m) / total")};
  }}
}}
"""
    n_in = 1 + (mask is not None)
    return header(used, code=body) + "\n" + "\n".join(bindings) + "\n" + body, (n_in, 1, False)
