"""The whole graph: every node lowered in order, then one ONNX ModelProto."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from ipfs_accelerate.errors import WebNNOperationError
from ipfs_accelerate.webnn._onnx._attention import AttentionFusion, AttentionLowering
from ipfs_accelerate.webnn._onnx._conv import ConvLowering
from ipfs_accelerate.webnn._onnx._elementwise import ElementwiseLowering
from ipfs_accelerate.webnn._onnx._emitter import Emitter
from ipfs_accelerate.webnn._onnx._fused import NormFusion, NormLowering, RotaryFusion
from ipfs_accelerate.webnn._onnx._layout import LayoutLowering
from ipfs_accelerate.webnn._onnx._normalization import NormalizationLowering
from ipfs_accelerate.webnn._onnx._plan import plan
from ipfs_accelerate.webnn._onnx._qmatmul import QuantizedMatMulLowering
from ipfs_accelerate.webnn._onnx._quantize import QuantizeLowering
from ipfs_accelerate.webnn._onnx._recurrent import RecurrentLowering
from ipfs_accelerate.webnn._onnx._reduce import ReduceLowering
from ipfs_accelerate.webnn._operand import CONSTANT, INPUT, MLOperand, Node
from ipfs_accelerate.webnn._types import onnx_type

__all__ = ["IR_VERSION", "OPSET", "LoweredModel", "embed_constants", "lower"]

OPSET: Final[int] = 21
IR_VERSION: Final[int] = 10


@dataclass(slots=True)
class LoweredModel:
    """The ONNX model of a graph and what running it needs besides the model bytes."""

    model: Any  # onnx.ModelProto
    external: dict[str, np.ndarray[Any, Any]] = field(default_factory=dict)
    input_names: dict[str, str] = field(default_factory=dict)  # WebNN name -> ONNX name
    output_names: dict[str, str] = field(default_factory=dict)  # WebNN name -> ONNX name


class Lowering(
    ElementwiseLowering,
    ReduceLowering,
    LayoutLowering,
    ConvLowering,
    NormalizationLowering,
    QuantizeLowering,
    QuantizedMatMulLowering,
    AttentionLowering,
    NormLowering,
    RecurrentLowering,
):
    """Every op family's ``_op_<name>`` methods on one object, so that ``lower(node)`` finds
    each op's lowering by name."""


def lower(
    nodes: Sequence[Node],
    inputs: Sequence[MLOperand],
    outputs: dict[str, MLOperand],
    name: str = "webnn",
) -> LoweredModel:
    """Build the ONNX model of ``nodes`` with graph ``inputs`` and named ``outputs``.

    Input value names are the WebNN input names; output value names are the WebNN output
    names unless one collides with an input name (then it gets a fresh name, recorded in
    ``LoweredModel.output_names``).
    """
    input_names = {operand._name: operand._name for operand in inputs if operand._name is not None}
    reserved = set(input_names) | set(outputs)
    emitter = Emitter(reserved)
    output_value: dict[str, str] = {}
    by_operand: dict[int, str] = {}
    aliases: list[tuple[str, str]] = []  # (source output name, alias output name)
    for out_name, operand in outputs.items():
        value_name = out_name if out_name not in input_names else emitter.fresh()
        output_value[out_name] = value_name
        if operand._id in by_operand:
            aliases.append((by_operand[operand._id], value_name))
        else:
            by_operand[operand._id] = value_name
    lowering = Lowering(emitter, by_operand)
    for operand in inputs:
        assert operand._name is not None
        emitter.names[operand._id] = operand._name
    constant_ids: set[int] = set()
    # quantized matmuls, attention, RMS norms and rotary embeddings become fused kernels;
    # what only fed them is not lowered
    fusions, nodes = plan(nodes, outputs)
    for node in nodes:
        fusion = fusions.get(id(node))
        for argument in node.inputs if fusion is None else fusion.reads():
            if (
                argument is not None
                and argument._kind == CONSTANT
                and argument._id not in constant_ids
            ):
                constant_ids.add(argument._id)
                assert argument._value is not None
                emitter.names[argument._id] = emitter.const(argument._value, share=True)
        try:
            if fusion is None:
                lowering.lower(node)
            elif isinstance(fusion, AttentionFusion):
                lowering.lower_attention(fusion)
            elif isinstance(fusion, NormFusion):
                lowering.lower_norm(fusion)
            elif isinstance(fusion, RotaryFusion):
                lowering.lower_rotary(fusion)
            else:
                lowering.lower_fusion(fusion)
        except Exception as error:  # an internal failure still names the op it happened in
            label = f" [{node.label}]" if node.label else ""
            raise WebNNOperationError(
                f"build: {node.op}{label} could not be lowered to ONNX: "
                f"{type(error).__name__}: {error}"
            ) from error
    for source, alias in aliases:
        emitter.one("Identity", [source], alias)
    _drop_unused_constants(emitter, set(output_value.values()))

    helper = emitter.helper

    def info(value_name: str, operand: MLOperand) -> Any:
        return helper.make_tensor_value_info(
            value_name, onnx_type(operand.data_type), list(operand.shape)
        )

    graph = helper.make_graph(
        emitter.nodes,
        name,
        [info(operand._name or "", operand) for operand in inputs if operand._kind == INPUT],
        [info(output_value[n], operand) for n, operand in outputs.items()],
        initializer=emitter.initializers,
    )
    opsets = [helper.make_opsetid("", OPSET)]
    if fusions:  # the fused kernels are ONNX Runtime contrib ops
        opsets.append(helper.make_opsetid("com.microsoft", 1))
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        producer_name="ipfs_accelerate.webnn",
    )
    model.ir_version = IR_VERSION
    return LoweredModel(model, emitter.external, input_names, output_value)


def _drop_unused_constants(emitter: Emitter, outputs: set[str]) -> None:
    """Remove initializers no node reads (a constant a lowering replaced by a derived one,
    such as a fused kernel's weight layout): ONNX Runtime drops them when it loads the model
    and then refuses the external values handed over under their names."""
    used = set(outputs)
    for node in emitter.nodes:
        used.update(node.input)
    kept = [tensor for tensor in emitter.initializers if tensor.name in used]
    if len(kept) != len(emitter.initializers):
        emitter.initializers = kept
        emitter.external = {k: v for k, v in emitter.external.items() if k in used}


def embed_constants(lowered: LoweredModel) -> Any:
    """A self-contained copy of the model: external constants written into it."""
    import onnx
    from onnx import numpy_helper

    model = onnx.ModelProto()
    model.CopyFrom(lowered.model)
    for index, tensor in enumerate(model.graph.initializer):
        if tensor.name in lowered.external:
            model.graph.initializer[index].CopyFrom(
                numpy_helper.from_array(lowered.external[tensor.name], tensor.name)
            )
    return model
