"""Batch, instance and layer normalization."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ipfs_accelerate.webnn._onnx._base import LoweringBase
from ipfs_accelerate.webnn._operand import MLOperand, Node
from ipfs_accelerate.webnn._types import numpy_dtype

__all__ = ["NormalizationLowering"]


class NormalizationLowering(LoweringBase):
    """The ``*_normalization`` ops, computed in float32 where they round more than once."""

    def _broadcast_param(self, operand: MLOperand, axes: Sequence[int], rank: int) -> str:
        """A parameter whose dimensions follow ``axes`` (in the given order), rearranged and
        reshaped so that it broadcasts against an operand of ``rank``."""
        order = sorted(range(len(axes)), key=lambda i: axes[i])
        identity = order == list(range(len(axes)))
        shape = [1] * rank
        for position, axis in enumerate(axes):
            shape[axis] = operand.shape[position]
        array = self.const_value(operand)
        if array is not None:
            arranged = array if identity else array.transpose(order)
            return self.e.const(np.ascontiguousarray(arranged).reshape(shape), share=True)
        value = self.value(operand)
        if not identity:
            value = self.e.one("Transpose", [value], perm=order)
        return self.e.one("Reshape", [value, self.e.ints(shape)])

    def _op_batch_normalization(self, node: Node) -> None:
        x, mean, variance, scale, bias = node.inputs
        assert x is not None and mean is not None and variance is not None
        axis, epsilon = node.attrs["axis"], node.attrs["epsilon"]
        rank = x.rank

        # computed in float32 with one rounding at the end, in the spec's order of operations
        def param(operand: MLOperand) -> str:
            value = self._broadcast_param(operand, [axis], rank)
            return value if operand.data_type == "float32" else self.e.cast(value, "float32")

        centered = self.e.one("Sub", [self.to_float32(x), param(mean)])
        spread = self.e.one(
            "Sqrt", [self.e.one("Add", [param(variance), self.e.scalar(epsilon, "float32")])]
        )
        value = self.e.one("Div", [centered, spread])
        if scale is not None:
            value = self.e.one("Mul", [value, param(scale)])
        if bias is not None:
            value = self.e.one("Add", [value, param(bias)])
        self.finish_float(value, x.data_type, self.out(node.outputs[0]))

    def _op_instance_normalization(self, node: Node) -> None:
        x, scale, bias = node.inputs
        assert x is not None
        layout = node.attrs["layout"]
        channels = x.shape[1] if layout == "nchw" else x.shape[3]
        dtype = numpy_dtype(x.data_type)
        scale_name = (
            self.value(scale) if scale is not None else self.e.const(np.ones(channels, dtype))
        )
        bias_name = (
            self.value(bias) if bias is not None else self.e.const(np.zeros(channels, dtype))
        )
        out = self.out(node.outputs[0])
        target = self.conv_output(layout, out)
        self.e.one(
            "InstanceNormalization",
            [self.to_nchw(x, layout), scale_name, bias_name],
            target,
            epsilon=node.attrs["epsilon"],
        )
        if target != out:
            self.from_nchw(target, layout, out)

    def _op_layer_normalization(self, node: Node) -> None:
        x, scale, bias = node.inputs
        assert x is not None
        axes: tuple[int, ...] = node.attrs["axes"]
        epsilon = node.attrs["epsilon"]
        out = self.out(node.outputs[0])
        rank = x.rank
        trailing = bool(axes) and tuple(axes) == tuple(range(rank - len(axes), rank))
        if trailing:
            shape = [x.shape[a] for a in axes]
            dtype = numpy_dtype(x.data_type)
            # centre first: ONNX Runtime's kernel takes the variance as E[x^2] - E[x]^2, which
            # cancels catastrophically (even below zero) when |mean| >> spread
            value = self.value(x)
            mean = self.e.one("ReduceMean", [value, self.e.ints(list(axes))], keepdims=1)
            names = [
                self.e.one("Sub", [value, mean]),
                self.value(scale) if scale is not None else self.e.const(np.ones(shape, dtype)),
            ]
            if bias is not None:
                names.append(self.value(bias))
            self.e.one("LayerNormalization", names, out, axis=axes[0], epsilon=epsilon)
            return
        value = self.to_float32(x)
        if axes:
            axes_name = self.e.ints(sorted(axes))
            mean = self.e.one("ReduceMean", [value, axes_name], keepdims=1)
            centered = self.e.one("Sub", [value, mean])
            variance = self.e.one(
                "ReduceMean", [self.e.one("Mul", [centered, centered]), axes_name], keepdims=1
            )
            spread = self.e.one(
                "Sqrt", [self.e.one("Add", [variance, self.e.scalar(epsilon, "float32")])]
            )
            value = self.e.one("Div", [centered, spread])
        else:
            # normalizing over no axis: every element is its own mean, with zero variance
            value = self.e.one("Sub", [value, value])
        for operand, op_type in ((scale, "Mul"), (bias, "Add")):
            if operand is not None:
                param = self._broadcast_param(operand, axes, rank)
                if operand.data_type != "float32":
                    param = self.e.cast(param, "float32")
                value = self.e.one(op_type, [value, param])
        self.finish_float(value, x.data_type, out)
