"""Data-movement kernels that are not plain strided copies: gather (``take``) and pad."""

from __future__ import annotations

from ipfs_accelerate.hal.webgpu._kernels._wgsl import (
    P_N,
    P_RANK,
    P_SCALAR,
    P_SHAPE,
    P_STRIDES,
    WORKGROUP,
    WType,
    error_binding,
    header,
    words_expr,
)

# gather parameters
G_COUNT = 4  # number of indices
G_AXIS = 5  # size of the gathered axis
G_INNER = 6  # elements after the axis


def gather_source(x: WType, index: WType) -> tuple[str, tuple[int, int, bool]]:
    """out[o, j, r] = x[o, idx[j], r]; an index outside [-n, n) is reported, never read."""
    t = index.compute
    used = {x.storage, x.compute, index.storage, t}
    src = f"""{header(used)}
@group(0) @binding(1) var<storage, read> in0: array<{x.storage}>;
@group(0) @binding(2) var<storage, read> in1: array<{index.storage}>;
@group(0) @binding(3) var<storage, read_write> out0: array<{x.storage}>;
{error_binding(4)}
@compute @workgroup_size({WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
  let i = flat_index(gid, nwg);
  if (i >= pu({P_N}u)) {{ return; }}
  let inner = pu({G_INNER}u);
  let count = pu({G_COUNT}u);
  let n = pu({G_AXIS}u);
  let r = i % inner;
  let t = i / inner;
  let j = t % count;
  let o = t / count;
  var idx = in1[j];
  if (idx < -{t}(n) || idx >= {t}(n)) {{
    report(0u, {words_expr(index, "idx")});
    out0[i] = {x.storage}(0);
    return;
  }}
  if (idx < {t}(0)) {{ idx = idx + {t}(n); }}
  out0[i] = in0[(o * n + u32(idx)) * inner + r];
}}
"""
    return src, (2, 1, True)


def pad_source(x: WType, mode: str) -> tuple[str, tuple[int, int, bool]]:
    """numpy's pad in ``mode`` ("constant", "edge", "reflect"); the fill value is scalar 0."""
    used = {x.storage, x.compute}
    if mode == "constant":
        resolve = "if (s < 0 || s >= size_in) { outside = true; }"
    elif mode == "edge":
        resolve = "s = clamp(s, 0, size_in - 1);"
    else:  # reflect (the op layer guarantees pads smaller than the axis)
        resolve = "if (s < 0) { s = -s; }\n    if (s >= size_in) { s = 2 * (size_in - 1) - s; }"
    src = f"""{header(used)}
@group(0) @binding(1) var<storage, read> in0: array<{x.storage}>;
@group(0) @binding(2) var<storage, read_write> out0: array<{x.storage}>;
@compute @workgroup_size({WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
  let i = flat_index(gid, nwg);
  if (i >= pu({P_N}u)) {{ return; }}
  var rem = i;
  var src = 0;
  var stride = 1;
  var outside = false;
  for (var d = pu({P_RANK}u); d > 0u; d = d - 1u) {{
    let size_out = pu({P_SHAPE - 1}u + d);
    let size_in = pi({P_STRIDES[0] - 1}u + d);
    var s = i32(rem % size_out) - pi({P_STRIDES[1] - 1}u + d);
    rem = rem / size_out;
    {resolve}
    src = src + s * stride;
    stride = stride * size_in;
  }}
  if (outside) {{ out0[i] = {x.storage}({x.scalar(P_SCALAR[0])}); }}
  else {{ out0[i] = in0[u32(src)]; }}
}}
"""
    return src, (1, 1, False)
