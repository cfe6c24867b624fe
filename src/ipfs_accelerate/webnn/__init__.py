"""The W3C Web Neural Network API (WebNN) in Python, executed by ONNX Runtime.

    from ipfs_accelerate import webnn
    import numpy as np

    context = webnn.create_context(power_preference="high-performance")
    builder = webnn.MLGraphBuilder(context)
    x = builder.input("x", {"dataType": "float32", "shape": [2, 3]})
    w = builder.constant({"dataType": "float32", "shape": [3, 4]}, np.ones((3, 4), np.float32))
    graph = builder.build({"y": builder.relu(builder.matmul(x, w))})
    print(context.compute(graph, {"x": np.ones((2, 3), np.float32)})["y"])

Names follow the spec in snake_case: methods (``reduce_sum``, ``conv_transpose2d``), options
as keyword arguments (``keep_dimensions=True``, ``input_layout="nhwc"``); descriptors are the
spec's ``{"dataType": ..., "shape": [...]}`` dictionaries. One built graph becomes one ONNX
model and one InferenceSession; execution providers follow the context's options and what
onnxruntime offers (``context.execution_providers``). Validation errors are
:class:`~ipfs_accelerate.errors.WebNNValidationError` (a TypeError), runtime failures
:class:`~ipfs_accelerate.errors.WebNNOperationError`, use after destroy/build
:class:`~ipfs_accelerate.errors.WebNNInvalidStateError`.

Importing this package loads numpy only; onnx and onnxruntime load on the first
``create_context()`` / ``build()``.
"""

from __future__ import annotations

from ipfs_accelerate.webnn._builder import MLGraphBuilder
from ipfs_accelerate.webnn._context import MLContext, MLGraph, MLTensor, create_context
from ipfs_accelerate.webnn._limits import op_support_limits
from ipfs_accelerate.webnn._operand import MLOperand
from ipfs_accelerate.webnn._types import DATA_TYPES, MLOperandDescriptor

__all__ = [
    "DATA_TYPES",
    "MLContext",
    "MLGraph",
    "MLGraphBuilder",
    "MLOperand",
    "MLOperandDescriptor",
    "MLTensor",
    "create_context",
    "op_support_limits",
]
