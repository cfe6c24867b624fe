"""For the quantized-matmul tests: which ONNX Runtime kernels a compiled graph runs (sessions
made while ``profiled`` is active record a profile, ``kernels`` reads the op types of the
nodes that ran), and the numpy model of int8 activations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest


@contextmanager
def profiled(monkeypatch: pytest.MonkeyPatch, folder: Path) -> Iterator[None]:
    """Every session the webnn runtime creates meanwhile has profiling on."""
    from ipfs_accelerate.webnn._runtime import ort

    runtime = ort()
    real = runtime.SessionOptions

    def options() -> Any:
        made = real()
        made.enable_profiling = True
        made.profile_file_prefix = str(folder / "ort")
        return made

    with monkeypatch.context() as patch:
        patch.setattr(runtime, "SessionOptions", options)
        yield


def kernels(graph: Any) -> set[str]:
    """The op types of the nodes an MLGraph's session ran (it must have run at least once)."""
    path = graph._session.end_profiling()
    events = json.loads(Path(path).read_text())
    return {
        event["args"]["op_name"]
        for event in events
        if event.get("cat") == "Node" and "op_name" in event.get("args", {})
    }


def fake_quant(x: np.ndarray) -> np.ndarray:
    """What DynamicQuantizeLinear then DequantizeLinear give back (uint8, per tensor)."""
    low, high = min(float(x.min()), 0.0), max(float(x.max()), 0.0)
    scale = np.float32((high - low) / 255)
    zero = np.clip(np.rint(-low / scale), 0, 255)
    return ((np.clip(np.rint(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def row_fake_quant(x: np.ndarray) -> np.ndarray:
    """The same per row of ``x`` (``activations="int8_row"``; every index of the leading axes)."""
    low = np.minimum(x.min(axis=-1, keepdims=True), 0.0)
    high = np.maximum(x.max(axis=-1, keepdims=True), 0.0)
    scale = ((high - low) / 255).astype(np.float32)
    zero = np.clip(np.rint(-low / scale), 0, 255)
    return ((np.clip(np.rint(x / scale) + zero, 0, 255) - zero) * scale).astype(np.float32)


def block_fake_quant(x: np.ndarray, block: int) -> np.ndarray:
    """Symmetric int8 per row and block of ``block`` values (``activations="int8_block"``)."""
    blocks = x.reshape(*x.shape[:-1], x.shape[-1] // block, block)
    scale = np.maximum(np.abs(blocks).max(axis=-1, keepdims=True) / np.float32(127), 1e-38)
    return (np.clip(np.rint(blocks / scale), -127, 127) * scale).reshape(x.shape)
