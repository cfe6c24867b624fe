"""Batched matrix products with fused epilogues, in three variants:

* ``naive``: one invocation per output element; any dtype, any shape.
* ``rb4``: register-blocked 4x4 per invocation with vec4 loads (float32; K % 4 == 0, and
  N % 4 == 0 unless B is transposed). On CPU-like adapters (lavapipe) this wins by far:
  each invocation is a SIMD lane and shared memory is just more memory traffic.
* ``tiled``: 64x64 output tiles staged through workgroup (shared) memory, 16x16 invocations
  each computing 4x4; the classic GPU kernel, float32/float16, any shape.

``trans_b`` reads B as (N, K) (``x @ W.T`` of a linear layer, ``q @ k.T`` of attention)
without a transposed copy. The epilogue adds a bias per column and may apply an activation;
with ``dual`` it writes both the pre-activation and the activated result (the activation of
a later op fused into the product: the pre-activation tensor stays valid for other users).
"""

from __future__ import annotations

from ipfs_accelerate.hal.webgpu._kernels._wgsl import WType, header

# parameter words
MM_M, MM_N, MM_K = 0, 1, 2
MM_BATCH = 4  # number of output matrices
MM_RANK = 5  # collapsed batch rank
MM_BASE = 6  # first batch index of this dispatch (batches beyond one dispatch's z range)
MM_SHAPE = 16  # batch shape (8 words)
MM_A_STRIDES = 24  # element offset of each batch coordinate in A
MM_B_STRIDES = 32  # ... in B

ACTIVATIONS = ("relu", "gelu", "gelu_tanh", "silu", "sigmoid", "tanh")


def _activation(act: str, t: str) -> str:
    s = "d" if t == "f64" else "f"
    if act == "relu":
        return f"select(v, {t}(0), v < {t}(0))"
    return f"{act}_{s}(v)"


def _bindings(wtype: WType, variant: str, bias: bool, dual: bool) -> tuple[str, int]:
    vec = variant == "rb4"
    a_type = "vec4<f32>" if vec else wtype.storage
    lines = [
        f"@group(0) @binding(1) var<storage, read> A: array<{a_type}>;",
        f"@group(0) @binding(2) var<storage, read> B: array<{a_type}>;",
    ]
    binding = 3
    if bias:
        lines.append(f"@group(0) @binding({binding}) var<storage, read> bias: array<{wtype.storage}>;")
        binding += 1
    lines.append(f"@group(0) @binding({binding}) var<storage, read_write> out0: array<{wtype.storage}>;")
    binding += 1
    if dual:
        lines.append(f"@group(0) @binding({binding}) var<storage, read_write> out1: array<{wtype.storage}>;")
    return "\n".join(lines), 2 + int(bias)


def _common(wtype: WType, bias: bool, act: str | None, dual: bool) -> str:
    t = wtype.compute
    store_bias = f"v = v + {wtype.load('bias[col]')};" if bias else ""
    if act is None:
        finish = f"out0[index] = {wtype.store('v')};"
    elif dual:
        finish = f"out0[index] = {wtype.store('v')};\n  out1[index] = {wtype.store(_activation(act, t))};"
    else:
        finish = f"out0[index] = {wtype.store(_activation(act, t))};"
    return f"""
fn batch_offsets(z: u32) -> vec2<u32> {{
  var rem = z;
  var a = 0u;
  var b = 0u;
  for (var d = pu({MM_RANK}u); d > 0u; d = d - 1u) {{
    let size = pu({MM_SHAPE - 1}u + d);
    let c = rem % size;
    rem = rem / size;
    a = a + c * pu({MM_A_STRIDES - 1}u + d);
    b = b + c * pu({MM_B_STRIDES - 1}u + d);
  }}
  return vec2<u32>(a, b);
}}
fn emit(index: u32, col: u32, acc: {t}) {{
  var v = acc;
  {store_bias}
  {finish}
}}
"""


def matmul_source(
    variant: str,
    wtype: WType,
    *,
    trans_b: bool,
    bias: bool = False,
    act: str | None = None,
    dual: bool = False,
    workgroup: tuple[int, int] = (8, 8),
) -> tuple[str, tuple[int, int, bool]]:
    """WGSL of one matmul variant and its layout key."""
    t = wtype.compute
    used = {wtype.storage, t}
    head = header(used, math_f32=act is not None, math_f64=act is not None and t == "f64")
    bindings, n_in = _bindings(wtype, variant, bias, dual)
    common = _common(wtype, bias, act, dual)
    if variant == "naive":
        b_index = "b_off + col * K + k" if trans_b else "b_off + k * N + col"
        body = f"""
@compute @workgroup_size(8, 8, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
  let M = pu({MM_M}u);
  let N = pu({MM_N}u);
  let K = pu({MM_K}u);
  let col = gid.x;
  let row = gid.y;
  let z = gid.z + pu({MM_BASE}u);
  if (col >= N || row >= M || z >= pu({MM_BATCH}u)) {{ return; }}
  let offs = batch_offsets(z);
  let a_off = offs.x + row * K;
  let b_off = offs.y;
  var acc = {t}(0);
  for (var k = 0u; k < K; k = k + 1u) {{
    acc = acc + {wtype.load('A[a_off + k]')} * {wtype.load(f'B[{b_index}]')};
  }}
  emit(z * M * N + row * N + col, col, acc);
}}
"""
    elif variant == "rb4":
        wx, wy = workgroup
        if trans_b:
            body = f"""
@compute @workgroup_size({wx}, {wy}, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
  let M = pu({MM_M}u);
  let N = pu({MM_N}u);
  let K4 = pu({MM_K}u) / 4u;
  let col = gid.x * 4u;
  let row = gid.y * 4u;
  let z = gid.z + pu({MM_BASE}u);
  if (col >= N || row >= M || z >= pu({MM_BATCH}u)) {{ return; }}
  let offs = batch_offsets(z) / 4u;
  let ra0 = offs.x + row * K4;
  let ra1 = offs.x + min(row + 1u, M - 1u) * K4;
  let ra2 = offs.x + min(row + 2u, M - 1u) * K4;
  let ra3 = offs.x + min(row + 3u, M - 1u) * K4;
  let rb0 = offs.y + col * K4;
  let rb1 = offs.y + min(col + 1u, N - 1u) * K4;
  let rb2 = offs.y + min(col + 2u, N - 1u) * K4;
  let rb3 = offs.y + min(col + 3u, N - 1u) * K4;
  var c0 = vec4<f32>();
  var c1 = vec4<f32>();
  var c2 = vec4<f32>();
  var c3 = vec4<f32>();
  for (var k = 0u; k < K4; k = k + 1u) {{
    let a0 = A[ra0 + k]; let a1 = A[ra1 + k]; let a2 = A[ra2 + k]; let a3 = A[ra3 + k];
    let b0 = B[rb0 + k]; let b1 = B[rb1 + k]; let b2 = B[rb2 + k]; let b3 = B[rb3 + k];
    c0 = c0 + vec4<f32>(dot(a0, b0), dot(a0, b1), dot(a0, b2), dot(a0, b3));
    c1 = c1 + vec4<f32>(dot(a1, b0), dot(a1, b1), dot(a1, b2), dot(a1, b3));
    c2 = c2 + vec4<f32>(dot(a2, b0), dot(a2, b1), dot(a2, b2), dot(a2, b3));
    c3 = c3 + vec4<f32>(dot(a3, b0), dot(a3, b1), dot(a3, b2), dot(a3, b3));
  }}
  let base = z * M * N;
  let rows = array<vec4<f32>, 4>(c0, c1, c2, c3);
  for (var i = 0u; i < 4u; i = i + 1u) {{
    if (row + i < M) {{
      let c = rows[i];
      for (var j = 0u; j < 4u; j = j + 1u) {{
        if (col + j < N) {{ emit(base + (row + i) * N + col + j, col + j, c[j]); }}
      }}
    }}
  }}
}}
"""
        else:
            body = f"""
@compute @workgroup_size({wx}, {wy}, 1)
fn main(@builtin(global_invocation_id) gid: vec3<u32>) {{
  let M = pu({MM_M}u);
  let N = pu({MM_N}u);
  let N4 = N / 4u;
  let K4 = pu({MM_K}u) / 4u;
  let col4 = gid.x;
  let row = gid.y * 4u;
  let z = gid.z + pu({MM_BASE}u);
  if (col4 >= N4 || row >= M || z >= pu({MM_BATCH}u)) {{ return; }}
  let offs = batch_offsets(z) / 4u;
  let ra0 = offs.x + row * K4;
  let ra1 = offs.x + min(row + 1u, M - 1u) * K4;
  let ra2 = offs.x + min(row + 2u, M - 1u) * K4;
  let ra3 = offs.x + min(row + 3u, M - 1u) * K4;
  var c0 = vec4<f32>();
  var c1 = vec4<f32>();
  var c2 = vec4<f32>();
  var c3 = vec4<f32>();
  for (var k = 0u; k < K4; k = k + 1u) {{
    let a0 = A[ra0 + k]; let a1 = A[ra1 + k]; let a2 = A[ra2 + k]; let a3 = A[ra3 + k];
    let kb = offs.y + k * 4u * N4 + col4;
    let b0 = B[kb]; let b1 = B[kb + N4]; let b2 = B[kb + 2u * N4]; let b3 = B[kb + 3u * N4];
    c0 = c0 + a0.x * b0 + a0.y * b1 + a0.z * b2 + a0.w * b3;
    c1 = c1 + a1.x * b0 + a1.y * b1 + a1.z * b2 + a1.w * b3;
    c2 = c2 + a2.x * b0 + a2.y * b1 + a2.z * b2 + a2.w * b3;
    c3 = c3 + a3.x * b0 + a3.y * b1 + a3.z * b2 + a3.w * b3;
  }}
  let base = z * M * N;
  let col = col4 * 4u;
  let rows = array<vec4<f32>, 4>(c0, c1, c2, c3);
  for (var i = 0u; i < 4u; i = i + 1u) {{
    if (row + i < M) {{
      let c = rows[i];
      for (var j = 0u; j < 4u; j = j + 1u) {{ emit(base + (row + i) * N + col + j, col + j, c[j]); }}
    }}
  }}
}}
"""
    elif variant == "tiled":
        b_load = "B[offs.y + gc * K + gkb]" if trans_b else "B[offs.y + gkb * N + gc]"
        body = f"""
var<workgroup> tile_a: array<{t}, 1024>;
var<workgroup> tile_b: array<{t}, 1024>;
@compute @workgroup_size(16, 16, 1)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {{
  let M = pu({MM_M}u);
  let N = pu({MM_N}u);
  let K = pu({MM_K}u);
  let z = wid.z + pu({MM_BASE}u);
  let live = z < pu({MM_BATCH}u);
  let offs = batch_offsets(min(z, pu({MM_BATCH}u) - 1u));
  let tile_row = wid.y * 64u;
  let tile_col = wid.x * 64u;
  let tid = lid.y * 16u + lid.x;
  var c0 = vec4<{t}>();
  var c1 = vec4<{t}>();
  var c2 = vec4<{t}>();
  var c3 = vec4<{t}>();
  for (var k0 = 0u; k0 < K; k0 = k0 + 16u) {{
    for (var e = 0u; e < 4u; e = e + 1u) {{
      let idx = tid + e * 256u;
      let m = idx / 16u;
      let kk = idx % 16u;
      let gr = tile_row + m;
      let gk = k0 + kk;
      var va = {t}(0);
      if (gr < M && gk < K) {{ va = {wtype.load('A[offs.x + gr * K + gk]')}; }}
      tile_a[m * 16u + kk] = va;
      let kb = idx / 64u;
      let n = idx % 64u;
      let gc = tile_col + n;
      let gkb = k0 + kb;
      var vb = {t}(0);
      if (gkb < K && gc < N) {{ vb = {wtype.load(b_load)}; }}
      tile_b[kb * 64u + n] = vb;
    }}
    workgroupBarrier();
    for (var kk = 0u; kk < 16u; kk = kk + 1u) {{
      let ar = lid.y * 64u + kk;
      let a = vec4<{t}>(tile_a[ar], tile_a[ar + 16u], tile_a[ar + 32u], tile_a[ar + 48u]);
      let bc = kk * 64u + lid.x * 4u;
      let b = vec4<{t}>(tile_b[bc], tile_b[bc + 1u], tile_b[bc + 2u], tile_b[bc + 3u]);
      c0 = c0 + a.x * b;
      c1 = c1 + a.y * b;
      c2 = c2 + a.z * b;
      c3 = c3 + a.w * b;
    }}
    workgroupBarrier();
  }}
  if (!live) {{ return; }}
  let base = z * M * N;
  let row = tile_row + lid.y * 4u;
  let col = tile_col + lid.x * 4u;
  let rows = array<vec4<{t}>, 4>(c0, c1, c2, c3);
  for (var i = 0u; i < 4u; i = i + 1u) {{
    if (row + i < M) {{
      let c = rows[i];
      for (var j = 0u; j < 4u; j = j + 1u) {{
        if (col + j < N) {{ emit(base + (row + i) * N + col + j, col + j, c[j]); }}
      }}
    }}
  }}
}}
"""
    else:
        raise KeyError(variant)
    return head + "\n" + bindings + "\n" + common + "\n" + body, (n_in, 2 if dual else 1, False)


def tile_of(variant: str, trans_b: bool, workgroup: tuple[int, int]) -> tuple[int, int]:
    """Output columns and rows one workgroup covers."""
    if variant == "naive":
        return (8, 8)
    if variant == "tiled":
        return (64, 64)
    wx, wy = workgroup
    return (4 * wx, 4 * wy)
