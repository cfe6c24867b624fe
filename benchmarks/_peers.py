"""The peers benchmarks/models.py runs beside the sentence embedders: one torch.onnx export of
the encoder (all-MiniLM-L6-v2, and the MPNet / XLM-R shapes; mean pooling and normalisation
inside the graph, tokenization outside) run by onnxruntime in fp32 and after onnxruntime's
dynamic int8 quantization, and torch's own dynamic int8 quantization of a module's Linear
layers."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "Embed",
    "export_encoder",
    "export_minilm",
    "onnx_embedder",
    "quantize_onnx_int8",
    "torch_int8",
]

#: embed(texts, batch_size) -> (len(texts), width) float32
Embed = Callable[[list[str], int], np.ndarray]


def export_minilm(model_dir: Path, workdir: Path) -> Path:
    """MiniLM with pooling and normalisation, exported with torch.onnx to workdir."""
    return export_encoder(model_dir, workdir, "minilm")


def export_encoder(model_dir: Path, workdir: Path, name: str) -> Path:
    """The encoder of ``model_dir`` (any transformers AutoModel encoder) with mean pooling and
    normalisation, exported with torch.onnx to workdir/<name>.onnx."""
    import torch
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class Embedding(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: Any, mask: Any) -> Any:
            hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    path = workdir / f"{name}.onnx"
    dummy = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Embedding().eval(),
            dummy,
            str(path),
            input_names=["ids", "mask"],
            output_names=["embedding"],
            dynamic_axes={"ids": {0: "b", 1: "l"}, "mask": {0: "b", 1: "l"}, "embedding": {0: "b"}},
            opset_version=17,
            dynamo=False,
        )
    return path


def quantize_onnx_int8(path: Path) -> Path:
    """onnxruntime's dynamic int8 quantization of the export: int8 weights with a scale per
    output channel, activations quantized per tensor at run time (DynamicQuantizeLinear +
    MatMulInteger, which onnxruntime fuses into its integer GEMM)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    out = path.with_name(path.stem + ".int8.onnx")
    # it logs advice to pre-process first (quant_pre_process); on this export that changed
    # neither the vectors nor the speed, so the advice is only noise here
    logging.disable(logging.WARNING)
    try:
        quantize_dynamic(path, out, per_channel=True, weight_type=QuantType.QInt8)
    finally:
        logging.disable(logging.NOTSET)
    return out


def onnx_embedder(path: Path, model_dir: Path, max_length: int = 256) -> Embed:
    """onnxruntime (CPU provider) running an export: texts sorted by length, batched and
    padded as sentence-transformers does (truncated at ``max_length`` tokens, its
    ``max_seq_length``)."""
    import onnxruntime as ort
    from transformers import AutoTokenizer

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out: np.ndarray | None = None
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="np",
            )
            vectors = session.run(
                None, {"ids": batch["input_ids"], "mask": batch["attention_mask"]}
            )[0]
            if out is None:
                out = np.empty((len(texts), vectors.shape[-1]), dtype=np.float32)
            out[rows] = vectors
        assert out is not None, "no texts"
        return out

    return embed


def torch_int8(module: Any) -> Any:
    """A copy of ``module`` with every torch.nn.Linear replaced by torch's dynamic int8 one
    (per-tensor int8 weights, activations quantized per batch at run time, fbgemm/onednn
    integer GEMMs)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        # torch warns that its quantized tensor types are deprecated (torchao takes over);
        # they still run in the pinned torch
        warnings.simplefilter("ignore")
        return quantize_dynamic(module, {torch.nn.Linear}, dtype=torch.qint8)
