"""The ``quant`` matmul variant: ``x @ W.T`` with W (out, in) held as int8 or int4 in packed
``u32`` words, unpacked and dequantized inside the shader.

Each weight row is padded to a whole number of words (four int8 or eight int4 values, lowest
byte / nibble first, the order of QuantizedTensor's data), so a word never straddles two rows.
Its values are sign-extended (symmetric) or zero-extended (asymmetric, with zero points) by
shifts, turned into ``f32`` and scaled: ``(q - zero_point) * scale``, the exact float32 value
of the dequantized weight. Scales come in one of two forms:

* per word (``lanes=False``): every value of a word shares a scale, found at
  ``(n / RDIV) * SC + w / WDIV`` for output feature n and word w (per-tensor, per-output-
  channel and blockwise along the input features all fit this);
* per lane (``lanes=True``): scales expanded on the host to one per input feature (padded
  like the rows), read as vectors beside the words (per-input-channel scales, blocks along the
  output features).

Each invocation computes a (rows x cols) block of outputs as the ``rb`` kernel does: a word is
unpacked once and used for all its rows, an input vector once for all its columns. The
epilogue (bias, activation, dual output) is ``_matmul``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

from ipfs_accelerate.hal.webgpu._kernels._matmul import (
    MM_BASE,
    MM_BATCH,
    MM_K,
    MM_M,
    MM_N,
    epilogue,
)
from ipfs_accelerate.hal.webgpu._kernels._wgsl import WType, header

# parameter words of the weight layout (the product's own words leave 8..15 free)
Q_KW = 8  # u32 words per weight row
Q_SC = 9  # row stride of the scale (and zero point) arrays
Q_RDIV = 10  # output features per scale row
Q_WDIV = 11  # words per scale column (per-word scales)


@dataclass(frozen=True)
class WeightFormat:
    """How a quantized weight's words and scales are laid out (part of the kernel's key)."""

    bits: int
    #: symmetric: signed values and no zero points
    signed: bool
    #: one scale per input feature (True) or per word (False)
    lanes: bool

    @property
    def per_word(self) -> int:
        return 32 // self.bits

    @property
    def label(self) -> str:
        return f"q{self.bits}{'s' if self.signed else 'a'}{'.lanes' if self.lanes else ''}"


def _unpack(fmt: WeightFormat) -> list[str]:
    """WGSL expressions of the ``vec4<f32>`` quarters of word ``word`` (lowest values first)."""
    size = fmt.bits
    per = fmt.per_word
    out = []
    for half in range(per // 4):
        lanes = [half * 4 + j for j in range(4)]
        if fmt.signed:
            # move each value to the top of an i32, then shift back arithmetically
            lefts = ", ".join(f"{32 - size * (j + 1)}u" for j in lanes)
            out.append(
                f"vec4<f32>((vec4<i32>(bitcast<i32>(word)) << vec4<u32>({lefts})) "
                f">> vec4<u32>({32 - size}u))"
            )
        else:
            rights = ", ".join(f"{size * j}u" for j in lanes)
            mask = (1 << size) - 1
            out.append(f"vec4<f32>((vec4<u32>(word) >> vec4<u32>({rights})) & vec4<u32>({mask}u))")
    return out


def _helpers(fmt: WeightFormat) -> str:
    """``deq{h}(word, scale, zero)``: quarter h of a word dequantized."""
    scale_t = "vec4<f32>" if fmt.lanes else "f32"
    lines = []
    for h, expr in enumerate(_unpack(fmt)):
        shifted = expr if fmt.signed else f"({expr} - z)"
        lines.append(
            f"fn deq{h}(word: u32, s: {scale_t}, z: {scale_t}) -> vec4<f32> "
            f"{{ return {shifted} * s; }}"
        )
    return "\n".join(lines) + "\n"


def _bindings(wtype: WType, fmt: WeightFormat, bias: bool, dual: bool) -> tuple[str, int]:
    names = [f"A: array<{wtype.storage}>", "W: array<u32>", "S: array<f32>"]
    if not fmt.signed:
        names.append("Z: array<f32>")
    if bias:
        names.append(f"bias: array<{wtype.storage}>")
    lines = [
        f"@group(0) @binding({i + 1}) var<storage, read> {name};" for i, name in enumerate(names)
    ]
    outs = ["out0", "out1"] if dual else ["out0"]
    for j, name in enumerate(outs):
        lines.append(
            f"@group(0) @binding({len(names) + j + 1}) var<storage, read_write> "
            f"{name}: array<{wtype.storage}>;"
        )
    return "\n".join(lines), len(names)


def _step(
    wtype: WType, fmt: WeightFormat, rows: int, cols: int, masked: bool, indent: str
) -> list[str]:
    """One word along K for every row and column of the block (``masked``: the last word of
    a row whose length is not a whole number of words; inputs past K read as 0)."""
    quarters = fmt.per_word // 4
    lines = [f"{indent}let k = w * {fmt.per_word}u;"]
    for r in range(rows):
        for h in range(quarters):
            loads = []
            for j in range(4):
                lane = h * 4 + j
                if masked:
                    value = wtype.load(f"A[xa{r} + min(k + {lane}u, K - 1u)]")
                    loads.append(f"select(0.0, f32({value}), k + {lane}u < K)")
                else:
                    loads.append(f"f32({wtype.load(f'A[xa{r} + k + {lane}u]')})")
            lines.append(f"{indent}let x{r}_{h} = vec4<f32>({', '.join(loads)});")
    for c in range(cols):
        lines.append(f"{indent}let word{c} = W[wr{c} + w];")
        if fmt.lanes:
            for h in range(quarters):
                base = f"sr{c} + k + {4 * h}u"
                s = ", ".join(f"S[{base} + {j}u]" for j in range(4))
                z = ", ".join(f"Z[{base} + {j}u]" for j in range(4))
                zero = "vec4<f32>()" if fmt.signed else f"vec4<f32>({z})"
                lines.append(f"{indent}let w{c}_{h} = deq{h}(word{c}, vec4<f32>({s}), {zero});")
        else:
            lines.append(f"{indent}let si{c} = sr{c} + w / WDIV;")
            zero = "0.0" if fmt.signed else f"Z[si{c}]"
            for h in range(quarters):
                lines.append(f"{indent}let w{c}_{h} = deq{h}(word{c}, S[si{c}], {zero});")
        for r in range(rows):
            dots = " + ".join(f"dot(x{r}_{h}, w{c}_{h})" for h in range(quarters))
            acc = f"acc{r}_{c // 4}[{c % 4}]"
            lines.append(f"{indent}{acc} = {acc} + {dots};")
    return lines


def quantized_source(
    wtype: WType,
    fmt: WeightFormat,
    *,
    bias: bool,
    act: str | None,
    dual: bool,
    block: tuple[int, int],
    workgroup: tuple[int, int],
) -> tuple[str, tuple[int, int, bool]]:
    """WGSL of the quantized-weight product and its layout key."""
    rows, cols = block
    if cols % 4:
        raise ValueError(f"quant matmul: cols per invocation must be a multiple of 4, not {cols}")
    wx, wy = workgroup
    bindings, n_in = _bindings(wtype, fmt, bias, dual)
    common = epilogue(wtype, bias, act, dual)
    head = header({wtype.storage, "f32"}, code=common)
    lines = [
        f"@compute @workgroup_size({wx}, {wy}, 1)",
        "fn main(@builtin(global_invocation_id) gid: vec3<u32>) {",
        f"  let M = pu({MM_M}u);",
        f"  let N = pu({MM_N}u);",
        f"  let K = pu({MM_K}u);",
        f"  let KW = pu({Q_KW}u);",
        f"  let SC = pu({Q_SC}u);",
        f"  let RDIV = pu({Q_RDIV}u);",
        f"  let WDIV = pu({Q_WDIV}u);",
        f"  let z = gid.z + pu({MM_BASE}u);",
        f"  let row = gid.y * {rows}u;",
        f"  let col = gid.x * {cols}u;",
        f"  if (col >= N || row >= M || z >= pu({MM_BATCH}u)) {{ return; }}",
    ]
    for r in range(rows):
        lines.append(f"  let xa{r} = min(row + {r}u, M - 1u) * K;")
        for q in range(cols // 4):
            lines.append(f"  var acc{r}_{q} = vec4<f32>();")
    for c in range(cols):
        lines.append(f"  let n{c} = min(col + {c}u, N - 1u);")
        lines.append(f"  let wr{c} = n{c} * KW;")
        lines.append(f"  let sr{c} = (n{c} / RDIV) * SC;")
    lines.append(f"  let full = K / {fmt.per_word}u;")
    lines.append("  for (var w = 0u; w < full; w = w + 1u) {")
    lines.extend(_step(wtype, fmt, rows, cols, False, "    "))
    lines.append("  }")
    lines.append("  if (full < KW) {")
    lines.append("    let w = full;")
    lines.extend(_step(wtype, fmt, rows, cols, True, "    "))
    lines.append("  }")
    lines.append("  let base = z * M * N;")
    for r in range(rows):
        lines.append(f"  if (row + {r}u < M) {{")
        for c in range(cols):
            lines.append(
                f"    if (col + {c}u < N) {{ emit(base + (row + {r}u) * N + col + {c}u, "
                f"col + {c}u, {wtype.compute}(acc{r}_{c // 4}[{c % 4}])); }}"
            )
        lines.append("  }")
    lines.append("}")
    body = "\n".join(lines) + "\n"
    source = "\n".join([head, bindings, common, _helpers(fmt), body])
    return source, (n_in, 2 if dual else 1, False)


__all__ = ["Q_KW", "Q_RDIV", "Q_SC", "Q_WDIV", "WeightFormat", "quantized_source"]
