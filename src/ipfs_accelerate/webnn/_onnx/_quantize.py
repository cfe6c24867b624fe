"""Linear quantization and dequantization with per-tensor, per-axis or blocked scales.

int4/uint4 operands (an extension, see docs/webnn.md) are int8/uint8 tensors in the ONNX
graph: ONNX Runtime (1.31) runs INT4 Cast/QuantizeLinear/DequantizeLinear but cannot feed or
return a 4-bit tensor through numpy, so the values stay widened and quantization clips to the
4-bit range.
"""

from __future__ import annotations

import numpy as np

from ipfs_accelerate.webnn._onnx._base import LoweringBase
from ipfs_accelerate.webnn._operand import MLOperand, Node
from ipfs_accelerate.webnn._types import integer_bounds

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
        low, high = integer_bounds(target_type)
        # int32 exceeds float32's exact range: divide, round and add the zero point in
        # float64 (a float32 quotient near 2**25 is already off by one before rounding)
        wide = np.float64 if target_type == "int32" else np.float32
        wide_type = "float64" if wide is np.float64 else "float32"

        def widened(value: str, data_type: str) -> str:
            return value if data_type == wide_type else self.e.cast(value, wide_type)

        factor = widened(self._blocked(scale, x.shape), scale.data_type)
        quotient = self.e.one("Div", [widened(self.value(x), x.data_type), factor])
        zero = self.e.cast(self._blocked(zero_point, x.shape), wide_type)
        shifted = self.e.one("Add", [self.e.one("Round", [quotient]), zero])
        bounds = [self.e.const(np.asarray(bound, dtype=wide)) for bound in (low, high)]
        clipped = self.e.one("Clip", [shifted, *bounds])
        self.e.cast(clipped, target_type, out)
