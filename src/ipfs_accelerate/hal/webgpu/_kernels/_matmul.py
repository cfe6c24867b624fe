"""Batched matrix products with fused epilogues, in three variants:

* ``naive``: one invocation per output element; any dtype, any shape.
* ``rb``: register-blocked, a (rows x cols) block per invocation (4x4 up to 16x16) from
  vec4 loads (float32; K % 4 == 0, and N % 4 == 0 unless B is transposed). On CPU-like
  adapters (lavapipe) this wins by far: each invocation is a SIMD lane, big blocks reuse
  every load many times, and shared memory would only be more memory traffic.
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

#: (block, workgroup) of the variants whose kernel fixes its own shape: ``naive`` (8x8
#: invocations, one output each) and ``tiled`` (16x16 invocations, 4x4 outputs each). They are
#: the fallbacks where a tuned ``rb`` shape does not apply, and never vary when tuning.
FIXED_SHAPES: dict[str, tuple[tuple[int, int], tuple[int, int]]] = {
    "naive": ((1, 1), (8, 8)),
    "tiled": ((4, 4), (16, 16)),
}


def fixed_kernel(variant: str) -> tuple[str, tuple[int, int], tuple[int, int]]:
    """(variant, block, workgroup) of ``naive`` or ``tiled``."""
    block, workgroup = FIXED_SHAPES[variant]
    return variant, block, workgroup


def label(variant: str, block: tuple[int, int], workgroup: tuple[int, int]) -> str:
    """A kernel's name in kernel names, tuning results and ``$IPFS_ACCELERATE_WEBGPU_MATMUL``."""
    if variant != "rb":
        return variant
    return f"rb{block[0]}x{block[1]}:{workgroup[0]}x{workgroup[1]}"


def _activation(act: str, t: str) -> str:
    s = "d" if t == "f64" else "f"
    if act == "relu":
        return f"select(v, {t}(0), v < {t}(0))"
    return f"{act}_{s}(v)"


def _bindings(wtype: WType, variant: str, bias: bool, dual: bool) -> tuple[str, int]:
    vec = variant == "rb"
    a_type = "vec4<f32>" if vec else wtype.storage
    lines = [
        f"@group(0) @binding(1) var<storage, read> A: array<{a_type}>;",
        f"@group(0) @binding(2) var<storage, read> B: array<{a_type}>;",
    ]
    binding = 3
    if bias:
        lines.append(
            f"@group(0) @binding({binding}) var<storage, read> bias: array<{wtype.storage}>;"
        )
        binding += 1
    lines.append(
        f"@group(0) @binding({binding}) var<storage, read_write> out0: array<{wtype.storage}>;"
    )
    binding += 1
    if dual:
        lines.append(
            f"@group(0) @binding({binding}) var<storage, read_write> out1: array<{wtype.storage}>;"
        )
    return "\n".join(lines), 2 + int(bias)


def epilogue(wtype: WType, bias: bool, act: str | None, dual: bool) -> str:
    """The WGSL every product variant shares: ``batch_offsets(z)`` and ``emit(index, col,
    acc)``, which adds the bias, applies the activation and stores."""
    t = wtype.compute
    store_bias = f"v = v + {wtype.load('bias[col]')};" if bias else ""
    if act is None:
        finish = f"out0[index] = {wtype.store('v')};"
    elif dual:
        finish = (
            f"out0[index] = {wtype.store('v')};\n"
            f"  out1[index] = {wtype.store(_activation(act, t))};"
        )
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
    block: tuple[int, int] = (4, 4),
) -> tuple[str, tuple[int, int, bool]]:
    """WGSL of one matmul variant and its layout key."""
    t = wtype.compute
    used = {wtype.storage, t}
    # float16: f16 arithmetic (products and short partial sums), f32 for the long sums
    half = wtype.storage == "f16"
    bindings, n_in = _bindings(wtype, variant, bias, dual)
    common = epilogue(wtype, bias, act, dual)
    head = header(used, code=common)  # the epilogue's activation is the only helper call
    if variant == "naive":
        b_index = "b_off + col * K + k" if trans_b else "b_off + k * N + col"
        if half:  # the product in f16, the running sum in f32
            naive_term = f"f32(A[a_off + k] * B[{b_index}])"
        else:
            naive_term = f"{wtype.load('A[a_off + k]')} * {wtype.load(f'B[{b_index}]')}"
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
    acc = acc + {naive_term};
  }}
  emit(z * M * N + row * N + col, col, acc);
}}
"""
    elif variant == "rb":
        body = _register_blocked(trans_b, block, workgroup)
    elif variant == "tiled":
        b_load = "B[offs.y + gc * K + gkb]" if trans_b else "B[offs.y + gkb * N + gc]"
        # tiles and the products of one 16-deep step in ``h``; the steps add up in ``t``
        h = "f16" if half else t
        a_load = "A[offs.x + gr * K + gk]" if half else wtype.load("A[offs.x + gr * K + gk]")
        b_load = b_load if half else wtype.load(b_load)
        p = "p" if half else "c"  # float32 sums straight into the accumulators
        step_init = "\n".join(f"    var p{i} = vec4<{h}>();" for i in range(4) if half)
        step_sum = "\n".join(f"    c{i} = c{i} + vec4<{t}>(p{i});" for i in range(4) if half)
        body = f"""
var<workgroup> tile_a: array<{h}, 1024>;
var<workgroup> tile_b: array<{h}, 1024>;
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
      var va = {h}(0);
      if (gr < M && gk < K) {{ va = {a_load}; }}
      tile_a[m * 16u + kk] = va;
      let kb = idx / 64u;
      let n = idx % 64u;
      let gc = tile_col + n;
      let gkb = k0 + kb;
      var vb = {h}(0);
      if (gkb < K && gc < N) {{ vb = {b_load}; }}
      tile_b[kb * 64u + n] = vb;
    }}
    workgroupBarrier();
{step_init}
    for (var kk = 0u; kk < 16u; kk = kk + 1u) {{
      let ar = lid.y * 64u + kk;
      let a = vec4<{h}>(tile_a[ar], tile_a[ar + 16u], tile_a[ar + 32u], tile_a[ar + 48u]);
      let bc = kk * 64u + lid.x * 4u;
      let b = vec4<{h}>(tile_b[bc], tile_b[bc + 1u], tile_b[bc + 2u], tile_b[bc + 3u]);
      {p}0 = {p}0 + a.x * b;
      {p}1 = {p}1 + a.y * b;
      {p}2 = {p}2 + a.z * b;
      {p}3 = {p}3 + a.w * b;
    }}
{step_sum}
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


def tile_of(variant: str, workgroup: tuple[int, int], block: tuple[int, int]) -> tuple[int, int]:
    """Output columns and rows one workgroup covers."""
    if variant in FIXED_SHAPES:
        block, workgroup = FIXED_SHAPES[variant]
    wx, wy = workgroup
    rows, cols = block
    return (cols * wx, rows * wy)


def _register_blocked(trans_b: bool, block: tuple[int, int], workgroup: tuple[int, int]) -> str:
    """float32, (rows x cols) outputs per invocation from vec4 loads along K (A) and along N
    (B, or along K when B is transposed). Out-of-range rows/columns are clamped on load and
    skipped on store, so any M and N work; K must be a multiple of 4 (and N too for B (K, N))."""
    rows, cols = block
    wx, wy = workgroup
    lines = [
        f"@compute @workgroup_size({wx}, {wy}, 1)",
        "fn main(@builtin(global_invocation_id) gid: vec3<u32>) {",
        f"  let M = pu({MM_M}u);",
        f"  let N = pu({MM_N}u);",
        f"  let K4 = pu({MM_K}u) / 4u;",
        f"  let z = gid.z + pu({MM_BASE}u);",
        f"  let row = gid.y * {rows}u;",
        f"  let col = gid.x * {cols}u;",
        f"  if (col >= N || row >= M || z >= pu({MM_BATCH}u)) {{ return; }}",
        "  let offs = batch_offsets(z) / 4u;",
    ]
    for r in range(rows):
        lines.append(f"  let ra{r} = offs.x + min(row + {r}u, M - 1u) * K4;")
    quads = cols // 4
    for r in range(rows):
        for q in range(quads):
            lines.append(f"  var c{r}_{q} = vec4<f32>();")
    if trans_b:
        for c in range(cols):
            lines.append(f"  let rb{c} = offs.y + min(col + {c}u, N - 1u) * K4;")
        lines.append("  for (var k = 0u; k < K4; k = k + 1u) {")
        for r in range(rows):
            lines.append(f"    let a{r} = A[ra{r} + k];")
        for c in range(cols):
            lines.append(f"    let b{c} = B[rb{c} + k];")
        for r in range(rows):
            for q in range(quads):
                dots = ", ".join(f"dot(a{r}, b{4 * q + j})" for j in range(4))
                lines.append(f"    c{r}_{q} = c{r}_{q} + vec4<f32>({dots});")
    else:
        lines.append("  let N4 = N / 4u;")
        lines.append("  let col4 = col / 4u;")
        for q in range(quads):
            lines.append(f"  let cb{q} = min(col4 + {q}u, N4 - 1u);")
        lines.append("  for (var k = 0u; k < K4; k = k + 1u) {")
        for r in range(rows):
            lines.append(f"    let a{r} = A[ra{r} + k];")
        lines.append("    let kb = offs.y + k * 4u * N4;")
        for j in range(4):
            for q in range(quads):
                lines.append(f"    let b{j}_{q} = B[kb + {j}u * N4 + cb{q}];")
        for r in range(rows):
            for q in range(quads):
                lines.append(
                    f"    c{r}_{q} = c{r}_{q} + a{r}.x * b0_{q} + a{r}.y * b1_{q}"
                    f" + a{r}.z * b2_{q} + a{r}.w * b3_{q};"
                )
    lines.append("  }")
    lines.append("  let base = z * M * N;")
    for r in range(rows):
        lines.append(f"  if (row + {r}u < M) {{")
        lines.append(f"    let o{r} = base + (row + {r}u) * N;")
        for q in range(quads):
            for j in range(4):
                c = 4 * q + j
                lines.append(
                    f"    if (col + {c}u < N) "
                    f"{{ emit(o{r} + col + {c}u, col + {c}u, c{r}_{q}[{j}]); }}"
                )
        lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"
