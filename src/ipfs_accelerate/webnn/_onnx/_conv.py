"""Matrix products, convolutions, pooling and resampling."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import numpy as np

from ipfs_accelerate.webnn._onnx._base import FLOAT, LoweringBase
from ipfs_accelerate.webnn._operand import Node
from ipfs_accelerate.webnn._types import numpy_dtype

__all__ = ["ConvLowering"]


class ConvLowering(LoweringBase):
    """``matmul``, ``gemm``, the 2-D convolutions and pools, and ``resample2d``."""

    # ================================================================== matrix

    def _op_matmul(self, node: Node) -> None:
        a, b = node.inputs
        assert a is not None and b is not None
        self.e.one("MatMul", [self.value(a), self.value(b)], self.out(node.outputs[0]))

    def _op_gemm(self, node: Node) -> None:
        a, b, c = node.inputs
        assert a is not None and b is not None
        names = [self.value(a), self.value(b)]
        if c is not None:
            names.append(self.value(c))
        attrs = node.attrs
        self.e.one(
            "Gemm",
            names,
            self.out(node.outputs[0]),
            alpha=attrs["alpha"],
            beta=attrs["beta"],
            transA=int(attrs["a_transpose"]),
            transB=int(attrs["b_transpose"]),
        )

    # ================================================================== convolution and pooling

    # each filter layout's permutation to ONNX's: OIHW for Conv, IOHW for ConvTranspose
    _TO_OIHW: Final = {
        "oihw": (0, 1, 2, 3),
        "hwio": (3, 2, 0, 1),
        "ohwi": (0, 3, 1, 2),
        "ihwo": (3, 0, 1, 2),
    }
    _TO_IOHW: Final = {"iohw": (0, 1, 2, 3), "hwoi": (3, 2, 0, 1), "ohwi": (3, 0, 1, 2)}

    def _op_conv2d(self, node: Node) -> None:
        self._convolution(node, "Conv", self._TO_OIHW)

    def _op_conv_transpose2d(self, node: Node) -> None:
        output_padding = list(node.attrs["output_padding"])
        self._convolution(node, "ConvTranspose", self._TO_IOHW, output_padding=output_padding)

    def _convolution(
        self,
        node: Node,
        op_type: str,
        filter_order: Mapping[str, Sequence[int]],
        **extra: Any,
    ) -> None:
        x, w, bias = node.inputs
        assert x is not None and w is not None
        attrs = node.attrs
        weight = self.transpose_const_or_node(w, filter_order[attrs["filter_layout"]])
        names = [self.to_nchw(x, attrs["input_layout"]), weight]
        if bias is not None:
            names.append(self.value(bias))
        pads = attrs["padding"]
        out = self.out(node.outputs[0])
        target = self.conv_output(attrs["input_layout"], out)
        self.e.one(
            op_type,
            names,
            target,
            pads=[pads[0], pads[2], pads[1], pads[3]],
            strides=list(attrs["strides"]),
            dilations=list(attrs["dilations"]),
            group=attrs["groups"],
            **extra,
        )
        if target != out:
            self.from_nchw(target, attrs["input_layout"], out)

    def _pool(self, node: Node, op_type: str, **extra: Any) -> None:
        (x,) = node.inputs
        assert x is not None
        attrs = node.attrs
        layout = attrs["layout"]
        window, pads, strides, dilations = (
            attrs["window"],
            attrs["padding"],
            attrs["strides"],
            attrs["dilations"],
        )
        spatial = (x.shape[2], x.shape[3]) if layout == "nchw" else (x.shape[1], x.shape[2])
        # The output size is fixed by the builder (floor, ceil or output_sizes); reach it in
        # ONNX's floor mode by growing the end padding, which needs no ceil_mode semantics.
        begin = [pads[0], pads[2]]
        end = [pads[1], pads[3]]
        for i in range(2):
            span = (window[i] - 1) * dilations[i] + 1
            needed = (attrs["output"][i] - 1) * strides[i] + span - spatial[i] - begin[i]
            end[i] = max(end[i], needed)
        value = self.to_nchw(x, layout)
        out = self.out(node.outputs[0])
        target = self.conv_output(layout, out)
        empty = None
        if op_type == "MaxPool":
            # a window holding only padding (ceil rounding) has no maximum: WPT expects 0
            plane = np.zeros((spatial[0] + begin[0] + end[0], spatial[1] + begin[1] + end[1]))
            plane[begin[0] : begin[0] + spatial[0], begin[1] : begin[1] + spatial[1]] = 1.0
            counts = _window_sums(plane, window, strides, dilations, attrs["output"])
            if np.any(counts == 0):
                empty = counts == 0
        pooled = target if empty is None else self.e.fresh()
        if all(p < k for p, k in zip(begin + end, list(window) * 2, strict=True)):
            self.e.one(
                op_type,
                [value],
                pooled,
                kernel_shape=list(window),
                pads=begin + end,
                strides=list(strides),
                dilations=list(dilations),
                **extra,
            )
        else:
            self._pool_with_explicit_padding(
                node, op_type, value, spatial, begin, end, pooled, extra
            )
        if empty is not None:
            zero = self.e.scalar(0, x.data_type)
            self.e.one("Where", [self.e.const(empty, share=True), zero, pooled], target)
        if target != out:
            self.from_nchw(target, layout, out)

    def _pool_with_explicit_padding(
        self,
        node: Node,
        op_type: str,
        value: str,
        spatial: tuple[int, int],
        begin: list[int],
        end: list[int],
        target: str,
        extra: dict[str, Any],
    ) -> None:
        """Pooling whose padding reaches a whole window (which ONNX Runtime refuses): pad first."""
        (x,) = node.inputs
        assert x is not None
        attrs = node.attrs
        window, strides, dilations = attrs["window"], attrs["strides"], attrs["dilations"]
        dtype = x.data_type
        pool_attrs: dict[str, Any] = {
            "kernel_shape": list(window),
            "strides": list(strides),
            "dilations": list(dilations),
        }
        if op_type == "AveragePool":
            # sum each window with a depthwise ones-convolution (Conv accepts any padding), then
            # divide by the number of real elements in it (static shapes: computed here).
            # An explicit Pad before AveragePool would be fused back into it by ONNX Runtime.
            channels = x.shape[1] if attrs["layout"] == "nchw" else x.shape[3]
            ones = self.e.const(np.ones((channels, 1, *window), numpy_dtype(dtype)), share=True)
            summed = self.e.one(
                "Conv", [value, ones], pads=begin + end, group=channels, **pool_attrs
            )
            plane = np.zeros((spatial[0] + begin[0] + end[0], spatial[1] + begin[1] + end[1]))
            plane[begin[0] : begin[0] + spatial[0], begin[1] : begin[1] + spatial[1]] = 1.0
            counts = _window_sums(plane, window, strides, dilations, attrs["output"])
            with np.errstate(divide="ignore"):
                factor = (1.0 / counts).astype(numpy_dtype(dtype))
            self.e.one("Mul", [summed, self.e.const(factor, share=True)], target)
            return
        pads = self.e.ints([0, 0, begin[0], begin[1], 0, 0, end[0], end[1]])
        fill = 0.0
        if op_type == "MaxPool":
            fill = -math.inf if dtype in FLOAT else float(np.iinfo(numpy_dtype(dtype)).min)
        padded = self.e.one("Pad", [value, pads, self.e.scalar(fill, dtype)], mode="constant")
        self.e.one(op_type, [padded], target, **pool_attrs, **extra)

    def _op_average_pool2d(self, node: Node) -> None:
        self._pool(node, "AveragePool", count_include_pad=0)

    def _op_l2_pool2d(self, node: Node) -> None:
        self._pool(node, "LpPool", p=2)

    def _op_max_pool2d(self, node: Node) -> None:
        self._pool(node, "MaxPool")

    def _op_resample2d(self, node: Node) -> None:
        (x,) = node.inputs
        assert x is not None
        attrs = node.attrs
        result = node.outputs[0]
        mode = "nearest" if attrs["mode"] == "nearest-neighbor" else "linear"
        extra: dict[str, Any] = {"coordinate_transformation_mode": "half_pixel"}
        if mode == "nearest":
            extra["nearest_mode"] = "round_prefer_floor"
        axes = list(attrs["axes"])
        factors = list(attrs["scales"]) if attrs["scales"] is not None else None
        sizes = [result.shape[a] for a in axes]
        value = self.value(x)
        out = self.out(result)
        # ONNX Runtime's linear Resize scales only the two inner (NCHW) or middle (NHWC) axes
        # of a 4-D tensor: move any other pair there and back
        perm = None
        if mode == "linear" and sorted(axes) not in ([2, 3], [1, 2]):
            perm = [a for a in range(x.rank) if a not in axes] + sorted(axes)
            value = self.e.one("Transpose", [value], perm=perm)
            order = sorted(range(2), key=lambda i: axes[i])
            axes = [x.rank - 2, x.rank - 1]
            sizes = [sizes[i] for i in order]
            factors = [factors[i] for i in order] if factors is not None else None
        shape = [x.shape[a] for a in perm] if perm else list(x.shape)
        if factors is not None:
            scales = [1.0] * x.rank
            for axis, factor in zip(axes, factors, strict=True):
                scales[axis] = factor
            inputs = [value, "", self.e.const(np.asarray(scales, dtype=np.float32))]
        else:
            for axis, size in zip(axes, sizes, strict=True):
                shape[axis] = size
            inputs = [value, "", "", self.e.ints(shape)]
        if perm is None:
            self.e.one("Resize", inputs, out, mode=mode, **extra)
            return
        resized = self.e.one("Resize", inputs, mode=mode, **extra)
        inverse = [perm.index(a) for a in range(x.rank)]
        self.e.one("Transpose", [resized], out, perm=inverse)


def _window_sums(
    plane: np.ndarray[Any, Any],
    window: Sequence[int],
    strides: Sequence[int],
    dilations: Sequence[int],
    output: Sequence[int],
) -> np.ndarray[Any, Any]:
    """Sum of ``plane`` under each (dilated, strided) pooling window, in float64."""
    result = np.zeros(tuple(output), dtype=np.float64)
    for i in range(output[0]):
        for j in range(output[1]):
            rows = i * strides[0] + dilations[0] * np.arange(window[0])
            cols = j * strides[1] + dilations[1] * np.arange(window[1])
            result[i, j] = plane[np.ix_(rows, cols)].sum()
    return result
