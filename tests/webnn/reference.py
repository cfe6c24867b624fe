"""Independent numpy implementations of WebNN ops, written from the spec's definitions, to
check the ops the vendored WPT vectors do not cover."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

Array = np.ndarray[Any, Any]


def erf(x: Array) -> Array:
    return np.vectorize(math.erf)(x.astype(np.float64))


def gelu(x: Array) -> Array:
    x64 = x.astype(np.float64)
    return 0.5 * x64 * (1 + erf(x64 / math.sqrt(2)))


def conv2d_nchw(
    x: Array,
    w: Array,
    pads: tuple[int, ...],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    groups: int,
) -> Array:
    """Direct convolution: x [N, C, H, W], w [O, C/groups, kH, kW], pads [t, b, l, r]."""
    x = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[1]), (pads[2], pads[3])))
    n, _, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = (h - (kh - 1) * dilations[0] - 1) // strides[0] + 1
    ow = (wd - (kw - 1) * dilations[1] - 1) // strides[1] + 1
    out = np.zeros((n, o, oh, ow))
    per_group = o // groups
    for oc in range(o):
        g = oc // per_group
        for i in range(oh):
            for j in range(ow):
                rows = i * strides[0] + dilations[0] * np.arange(kh)
                cols = j * strides[1] + dilations[1] * np.arange(kw)
                patch = x[:, g * cg : (g + 1) * cg][:, :, rows][:, :, :, cols]
                out[:, oc, i, j] = (patch * w[oc]).sum(axis=(1, 2, 3))
    return out


def conv_transpose2d_nchw(
    x: Array,
    w: Array,
    pads: tuple[int, ...],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    output_padding: tuple[int, int],
    groups: int,
) -> Array:
    """Scatter-add transposed convolution: x [N, C, H, W], w [C, O/groups, kH, kW]."""
    n, c, h, wd = x.shape
    _, og, kh, kw = w.shape
    full_h = (h - 1) * strides[0] + (kh - 1) * dilations[0] + 1 + output_padding[0]
    full_w = (wd - 1) * strides[1] + (kw - 1) * dilations[1] + 1 + output_padding[1]
    full = np.zeros((n, og * groups, full_h + pads[1], full_w + pads[3]))
    per_group = c // groups
    for ic in range(c):
        g = ic // per_group
        for i in range(h):
            for j in range(wd):
                for a in range(kh):
                    for b in range(kw):
                        r = i * strides[0] + a * dilations[0]
                        s = j * strides[1] + b * dilations[1]
                        full[:, g * og : (g + 1) * og, r, s] += (
                            x[:, ic, i, j, None] * w[ic, :, a, b]
                        )
    return full[
        :,
        :,
        pads[0] : pads[0] + full_h - pads[0] - pads[1],
        pads[2] : pads[2] + full_w - pads[2] - pads[3],
    ]


def pool2d_nchw(
    x: Array,
    kind: str,
    window: tuple[int, int],
    pads: tuple[int, ...],
    strides: tuple[int, int],
    dilations: tuple[int, int],
    output: tuple[int, int],
) -> Array:
    """Pooling over the real (unpadded) elements of each window."""
    n, c, h, w = x.shape
    out = np.zeros((n, c, *output))
    x64 = x.astype(np.float64)
    for i in range(output[0]):
        for j in range(output[1]):
            rows = [i * strides[0] - pads[0] + dilations[0] * a for a in range(window[0])]
            cols = [j * strides[1] - pads[2] + dilations[1] * b for b in range(window[1])]
            rows = [r for r in rows if 0 <= r < h]
            cols = [s for s in cols if 0 <= s < w]
            patch = x64[:, :, rows][:, :, :, cols]
            if kind == "average":
                out[:, :, i, j] = patch.mean(axis=(2, 3))
            elif kind == "max":
                out[:, :, i, j] = patch.max(axis=(2, 3))
            else:
                out[:, :, i, j] = np.sqrt((patch**2).sum(axis=(2, 3)))
    return out


def resample_axis(x: Array, axis: int, size: int, scale: float, mode: str) -> Array:
    """Half-pixel resampling of one axis (linear, or nearest rounding half down)."""
    length = x.shape[axis]
    coords = (np.arange(size) + 0.5) / scale - 0.5
    if mode == "nearest":
        index = np.clip(np.ceil(coords - 0.5).astype(int), 0, length - 1)
        return np.take(x, index, axis=axis)
    coords = np.clip(coords, 0, length - 1)
    low = np.floor(coords).astype(int)
    high = np.minimum(low + 1, length - 1)
    frac = coords - low
    shape = [1] * x.ndim
    shape[axis] = size
    frac = frac.reshape(shape)
    return np.take(x, low, axis=axis) * (1 - frac) + np.take(x, high, axis=axis) * frac


_ACT = {
    "sigmoid": lambda v: 1 / (1 + np.exp(-v)),
    "tanh": np.tanh,
    "relu": lambda v: np.maximum(v, 0),
}


def gru_cell(
    x: Array,
    w: Array,
    r: Array,
    h: Array,
    hidden: int,
    bias: Array | None,
    recurrent_bias: Array | None,
    reset_after: bool,
    layout: str,
    activations: tuple[str, str],
) -> Array:
    """The spec's gruCell, gate blocks in ``layout`` order."""
    f, g = _ACT[activations[0]], _ACT[activations[1]]
    order = {"zrn": ("z", "r", "n"), "rzn": ("r", "z", "n")}[layout]
    block = {name: slice(i * hidden, (i + 1) * hidden) for i, name in enumerate(order)}
    b = np.zeros(3 * hidden) if bias is None else bias
    rb = np.zeros(3 * hidden) if recurrent_bias is None else recurrent_bias
    z = f(x @ w[block["z"]].T + b[block["z"]] + h @ r[block["z"]].T + rb[block["z"]])
    reset = f(x @ w[block["r"]].T + b[block["r"]] + h @ r[block["r"]].T + rb[block["r"]])
    if reset_after:
        n = g(x @ w[block["n"]].T + b[block["n"]] + reset * (h @ r[block["n"]].T + rb[block["n"]]))
    else:
        n = g(x @ w[block["n"]].T + b[block["n"]] + (reset * h) @ r[block["n"]].T + rb[block["n"]])
    return (1 - z) * n + z * h


def lstm_cell(
    x: Array,
    w: Array,
    r: Array,
    h: Array,
    c: Array,
    hidden: int,
    bias: Array | None,
    recurrent_bias: Array | None,
    peephole: Array | None,
    layout: str,
    activations: tuple[str, str, str],
) -> tuple[Array, Array]:
    """The spec's lstmCell; peephole weights are packed i, o, f."""
    f_act, g_act, h_act = (_ACT[a] for a in activations)
    order = {"iofg": ("i", "o", "f", "g"), "ifgo": ("i", "f", "g", "o")}[layout]
    block = {name: slice(i * hidden, (i + 1) * hidden) for i, name in enumerate(order)}
    b = np.zeros(4 * hidden) if bias is None else bias
    rb = np.zeros(4 * hidden) if recurrent_bias is None else recurrent_bias
    p = np.zeros(3 * hidden) if peephole is None else peephole
    p_i, p_o, p_f = p[:hidden], p[hidden : 2 * hidden], p[2 * hidden :]

    def gate(name: str) -> Array:
        return x @ w[block[name]].T + b[block[name]] + h @ r[block[name]].T + rb[block[name]]

    i = f_act(gate("i") + p_i * c)
    forget = f_act(gate("f") + p_f * c)
    cell = forget * c + i * g_act(gate("g"))
    o = f_act(gate("o") + p_o * cell)
    return o * h_act(cell), cell


def recurrent(
    kind: str,
    x: Array,
    w: Array,
    r: Array,
    hidden: int,
    direction: str,
    options: dict[str, Any],
) -> list[Array]:
    """The spec's gru/lstm emulation: per step, each direction runs one cell; the sequence
    output is indexed by processing step."""
    steps, batch, _ = x.shape
    dirs = 2 if direction == "both" else 1
    h = options.get("initial_hidden_state", np.zeros((dirs, batch, hidden)))
    c = options.get("initial_cell_state", np.zeros((dirs, batch, hidden)))
    h, c = h.astype(np.float64), c.astype(np.float64)
    sequence = []
    for step in range(steps):
        new_h, new_c = [], []
        for d in range(dirs):
            t = steps - step - 1 if (d == 1 or direction == "backward") else step
            bias = options.get("bias")
            rbias = options.get("recurrent_bias")
            if kind == "gru":
                out = gru_cell(
                    x[t], w[d], r[d], h[d], hidden,
                    None if bias is None else bias[d], None if rbias is None else rbias[d],
                    options.get("reset_after", True), options.get("layout", "zrn"),
                    options.get("activations", ("sigmoid", "tanh")),
                )  # fmt: skip
                new_h.append(out)
            else:
                peep = options.get("peephole_weight")
                out_h, out_c = lstm_cell(
                    x[t], w[d], r[d], h[d], c[d], hidden,
                    None if bias is None else bias[d], None if rbias is None else rbias[d],
                    None if peep is None else peep[d], options.get("layout", "iofg"),
                    options.get("activations", ("sigmoid", "tanh", "tanh")),
                )  # fmt: skip
                new_h.append(out_h)
                new_c.append(out_c)
        h = np.stack(new_h)
        if new_c:
            c = np.stack(new_c)
        sequence.append(h)
    results = [h] if kind == "gru" else [h, c]
    if options.get("return_sequence"):
        results.append(np.stack(sequence))
    return results
