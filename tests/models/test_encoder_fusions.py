"""Which kernels ONNX Runtime's optimizer leaves in MiniLM's compiled webnn graph (the model it
writes with ``optimized_model_filepath``), as docs/webnn.md ("Where an encoder's time goes")
says: float32, every Linear one Gemm with its bias, GELU one Gelu, attention one
MultiHeadAttention, layer norms LayerNormalization, and no MatMul, Softmax, Transpose or Erf
left over; int8 migrated by ``smooth_int8``: q, k and v quantize their one input once (one
DynamicQuantizeLinear and three MatMulIntegerToFloat per block), the attention output and FFN
input are DynamicQuantizeMatMul, the FFN output the per-row MatMulIntegerToFloat; int8 per
tensor everywhere (``set_int8_activations("all")``, onnxruntime's ``quantize_dynamic``
policy) the same with the FFN output a DynamicQuantizeMatMul too. The int8 graphs run with
denormals flushed (their attention kernel)."""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest

from ipfs_accelerate import hal
from ipfs_accelerate.models import TextEmbedder

pytestmark = pytest.mark.timeout(300)

TEXTS = [
    "A short sentence.",
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Which kernels run?",
    "Layer norms, attention and feed-forward layers, six times over.",
]


def _optimized_node_types(
    embedder: TextEmbedder, folder: Path
) -> tuple[collections.Counter[str], bool]:
    """The node types of the largest graph one embed compiles, after ONNX Runtime's
    optimizer at the level the runtime uses, and whether it runs with denormals flushed."""
    import onnx
    import onnxruntime as ort

    from ipfs_accelerate.webnn._onnx._model import embed_constants

    backend = hal.get_backend("webnn")
    cache: dict[Any, Any] = backend._cache  # type: ignore[attr-defined]
    before = set(cache)
    embedder.embed(TEXTS, batch_size=len(TEXTS))
    fresh = [entry.graph for key, entry in cache.items() if key not in before]
    graph = max(fresh, key=lambda g: len(g._lowered.model.graph.node))
    source, target = folder / "compiled.onnx", folder / "optimized.onnx"
    onnx.save(embed_constants(graph._lowered), str(source))
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.optimized_model_filepath = str(target)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    optimized = onnx.load(str(target), load_external_data=False)
    return collections.Counter(node.op_type for node in optimized.graph.node), graph._flushing


def test_float32_encoder_runs_fused_kernels(minilm_dir: Path, tmp_path: Path) -> None:
    embedder = TextEmbedder.from_pretrained(minilm_dir, "webnn", sharing=False)
    nodes, _ = _optimized_node_types(embedder, tmp_path)
    assert nodes["Gemm"] == 6 * 6, nodes
    assert nodes["MultiHeadAttention"] == 6, nodes
    assert nodes["Gelu"] == 6, nodes
    assert nodes["LayerNormalization"] == 1 + 6 * 2, nodes  # embeddings, then two per layer
    leftovers = {op: nodes[op] for op in ("MatMul", "Softmax", "Transpose", "Erf") if nodes[op]}
    assert not leftovers, nodes


def test_migrated_int8_encoder_runs_integer_kernels(minilm_dir: Path, tmp_path: Path) -> None:
    # an int8 load on webnn migrates by default (calibrated while loading)
    embedder = TextEmbedder.from_pretrained(minilm_dir, "webnn", dtype="int8", sharing=False)
    nodes, flushing = _optimized_node_types(embedder, tmp_path)
    assert nodes["DynamicQuantizeLinear"] == 6, nodes  # q/k/v's shared input
    assert nodes["DynamicQuantizeMatMul"] == 6 * 2, nodes
    assert nodes["MatMulIntegerToFloat"] == 6 * 3 + 6, nodes  # q/k/v, FFN output per row
    assert nodes["MultiHeadAttention"] == 6, nodes
    assert not nodes["MatMul"] and not nodes["Gemm"], nodes  # no Linear fell back to float
    assert flushing


def test_per_tensor_int8_encoder_quantizes_each_input_once(
    minilm_dir: Path, tmp_path: Path
) -> None:
    embedder = TextEmbedder.from_pretrained(
        minilm_dir, "webnn", dtype="int8", sharing=False, smooth=False
    )
    embedder.model.set_int8_activations("all")
    nodes, flushing = _optimized_node_types(embedder, tmp_path)
    assert nodes["DynamicQuantizeLinear"] == 6, nodes
    assert nodes["MatMulIntegerToFloat"] == 6 * 3, nodes
    assert nodes["DynamicQuantizeMatMul"] == 6 * 3, nodes
    assert nodes["MultiHeadAttention"] == 6, nodes
    # the per-tensor scales are the kernels' own: no reduction over an activation is left
    assert not nodes["MatMul"] and not nodes["Gemm"] and not nodes["QuantizeLinear"], nodes
    assert flushing
