"""Lowering: one WebNN graph becomes one ONNX model (opset 21), built with the ``onnx`` package.

Each WebNN op maps to one ONNX node where ONNX has the same semantics, and to a short
composition otherwise (reverse = negative-step Slice, linear = Mul+Add, ...). Where ONNX
Runtime's CPU kernels lack a data type the spec allows, the op runs in a wider type and the
result is cast back (int8 -> int32, uint32 -> int64, ...); the chosen widenings preserve the
spec's results exactly (modular integer arithmetic, order for max/min).

Constants of at least ``EXTERNAL_BYTES`` bytes are not copied into the model: they are
declared as external initializers and handed to ONNX Runtime as OrtValues sharing the
numpy buffer (see ``_runtime``). ``embed_constants`` turns such a model into a
self-contained one (for export or for running it with onnxruntime directly).

One module per op family (``_elementwise``, ``_reduce``, ``_layout``, ``_conv``,
``_normalization``, ``_quantize``, ``_recurrent``), each a subclass of ``_base.LoweringBase``
with one ``_op_<name>`` method per WebNN op; ``_model`` joins them and builds the model.
"""

from __future__ import annotations

from ipfs_accelerate.webnn._onnx._emitter import EXTERNAL_BYTES
from ipfs_accelerate.webnn._onnx._model import OPSET, LoweredModel, embed_constants, lower

__all__ = ["EXTERNAL_BYTES", "OPSET", "LoweredModel", "embed_constants", "lower"]
