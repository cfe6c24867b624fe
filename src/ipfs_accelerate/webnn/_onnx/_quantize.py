"""Linear quantization and dequantization with per-tensor, per-axis or blocked scales."""

from __future__ import annotations

import numpy as np

from ipfs_accelerate.webnn._onnx._base import LoweringBase
from ipfs_accelerate.webnn._operand import MLOperand, Node
from ipfs_accelerate.webnn._types import numpy_dtype

__all__ = ["QuantizeLowering"]


class QuantizeLowering(LoweringBase):
    """``quantize_linear`` and ``dequantize_linear``."""

    def _blocked(self, operand: MLOperand, target: tuple[int, ...]) -> str:
        """A scale/zero point repeated over blocks so that it has the input's shape."""
        padded = (1,) * (len(target) - operand.rank) + operand.shape
        if padded == target:
            return (
                self.reshape_const_or_node(operand, target)
                if operand.shape != target
                else self.value(operand)
            )
        array = self.const_value(operand)
        if array is not None:
            expanded = array.reshape(padded)
            for axis, (size, block) in enumerate(zip(target, padded, strict=True)):
                if block not in (1, size):
                    expanded = np.repeat(expanded, size // block, axis=axis)
            return self.e.const(np.ascontiguousarray(expanded), share=True)
        interleaved: list[int] = []
        repeated: list[int] = []
        for size, block in zip(target, padded, strict=True):
            interleaved += [block, 1]
            repeated += [block, size // block if block != 1 else 1]
        value = self.e.one("Reshape", [self.value(operand), self.e.ints(interleaved)])
        value = self.e.one("Expand", [value, self.e.ints(repeated)])
        flat = [s if b != 1 else 1 for s, b in zip(target, padded, strict=True)]
        return self.e.one("Reshape", [value, self.e.ints(flat)])

    def _op_dequantize_linear(self, node: Node) -> None:
        x, scale, zero_point = node.inputs
        assert x is not None and scale is not None and zero_point is not None
        out = self.out(node.outputs[0])
        value = self.e.cast(self.value(x), "float32")
        zero = self.e.cast(self._blocked(zero_point, x.shape), "float32")
        factor = self._blocked(scale, x.shape)
        if scale.data_type != "float32":
            factor = self.e.cast(factor, "float32")
        result = self.e.one("Mul", [self.e.one("Sub", [value, zero]), factor])
        self.finish_float(result, scale.data_type, out)

    def _op_quantize_linear(self, node: Node) -> None:
        x, scale, zero_point = node.inputs
        assert x is not None and scale is not None and zero_point is not None
        out = self.out(node.outputs[0])
        target_type = zero_point.data_type
        info = np.iinfo(numpy_dtype(target_type))
        factor = self._blocked(scale, x.shape)
        if scale.data_type != "float32":
            factor = self.e.cast(factor, "float32")
        rounded = self.e.one("Round", [self.e.one("Div", [self.to_float32(x), factor])])
        if target_type == "int32":
            # int32 exceeds float32's exact range: add the zero point in float64
            shifted = self.e.one(
                "Add",
                [
                    self.e.cast(rounded, "float64"),
                    self.e.cast(self._blocked(zero_point, x.shape), "float64"),
                ],
            )
            bounds = (np.float64(info.min), np.float64(info.max))
            clipped = self.e.one(
                "Clip",
                [shifted, self.e.const(np.asarray(bounds[0])), self.e.const(np.asarray(bounds[1]))],
            )
        else:
            shifted = self.e.one(
                "Add", [rounded, self.e.cast(self._blocked(zero_point, x.shape), "float32")]
            )
            clipped = self.e.one(
                "Clip",
                [
                    shifted,
                    self.e.scalar(float(info.min), "float32"),
                    self.e.scalar(float(info.max), "float32"),
                ],
            )
        self.e.cast(clipped, target_type, out)
