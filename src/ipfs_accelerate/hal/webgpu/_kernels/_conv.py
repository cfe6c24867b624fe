"""Direct convolution (PyTorch's conv1d/conv2d: cross-correlation, groups, dilation, zero
padding): one invocation per output element. conv1d runs as conv2d with height 1."""

from __future__ import annotations

from ipfs_accelerate.hal.webgpu._kernels._wgsl import P_N, WORKGROUP, WType, header

# parameter words
C_N, C_CIN, C_H, C_W, C_COUT, C_OH, C_OW, C_KH, C_KW = 4, 5, 6, 7, 8, 9, 10, 11, 12
C_SH, C_SW, C_PH, C_PW, C_DH, C_DW, C_GROUPS = 13, 14, 15, 16, 17, 18, 19


def conv_source(wtype: WType, bias: bool) -> tuple[str, tuple[int, int, bool]]:
    t = wtype.compute
    lines = [
        header({wtype.storage, t}),
        f"@group(0) @binding(1) var<storage, read> x: array<{wtype.storage}>;",
        f"@group(0) @binding(2) var<storage, read> w: array<{wtype.storage}>;",
    ]
    if bias:
        lines.append(f"@group(0) @binding(3) var<storage, read> bias: array<{wtype.storage}>;")
    lines.append(
        f"@group(0) @binding({3 + int(bias)}) "
        f"var<storage, read_write> out0: array<{wtype.storage}>;"
    )
    init = wtype.load("bias[co]") if bias else f"{t}(0)"
    lines.append(f"""
@compute @workgroup_size({WORKGROUP})
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {{
  let i = flat_index(gid, nwg);
  if (i >= pu({P_N}u)) {{ return; }}
  let cin = pu({C_CIN}u);
  let h = i32(pu({C_H}u));
  let wd = i32(pu({C_W}u));
  let cout = pu({C_COUT}u);
  let oh_n = pu({C_OH}u);
  let ow_n = pu({C_OW}u);
  let kh_n = pu({C_KH}u);
  let kw_n = pu({C_KW}u);
  let groups = pu({C_GROUPS}u);
  let ow = i % ow_n;
  let oh = (i / ow_n) % oh_n;
  let co = (i / (ow_n * oh_n)) % cout;
  let n = i / (ow_n * oh_n * cout);
  let cin_g = cin / groups;
  let g = co / (cout / groups);
  var acc = {init};
  for (var ci = 0u; ci < cin_g; ci = ci + 1u) {{
    let c = g * cin_g + ci;
    let x_base = (n * cin + c) * u32(h) * u32(wd);
    let w_base = (co * cin_g + ci) * kh_n * kw_n;
    for (var kh = 0u; kh < kh_n; kh = kh + 1u) {{
      let ih = i32(oh * pu({C_SH}u) + kh * pu({C_DH}u)) - pi({C_PH}u);
      if (ih < 0 || ih >= h) {{ continue; }}
      for (var kw = 0u; kw < kw_n; kw = kw + 1u) {{
        let iw = i32(ow * pu({C_SW}u) + kw * pu({C_DW}u)) - pi({C_PW}u);
        if (iw < 0 || iw >= wd) {{ continue; }}
        acc = acc + {wtype.load("x[x_base + u32(ih) * u32(wd) + u32(iw)]")}
          * {wtype.load("w[w_base + kh * kw_n + kw]")};
      }}
    }}
  }}
  out0[i] = {wtype.store("acc")};
}}
""")
    return "\n".join(lines), (2 + int(bias), 1, False)
