"""Weight quantization: int8 and int4 integers with float scales (and zero points).

``quantize(weight, bits=8, axis=0)`` returns a :class:`QuantizedTensor`; its ``dequantize()``
gives the float tensor back. Layout and ranges are described in docs/tensors.md
("Quantization"); the integer ops themselves are ``ops.quantize_linear`` and
``ops.dequantize_linear``.
"""

from __future__ import annotations

from ipfs_accelerate.quantization._quantize import quantize
from ipfs_accelerate.quantization._tensor import ErrorStats, QuantizedTensor

__all__ = ["ErrorStats", "QuantizedTensor", "quantize"]
