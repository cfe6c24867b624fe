"""ONNX nodes and initializers with fresh value names: what every op lowering writes to."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from ipfs_accelerate.webnn._types import numpy_dtype, onnx_type

__all__ = ["EXTERNAL_BYTES", "Emitter"]

#: constants at least this large go to ONNX Runtime as shared OrtValues instead of model bytes
EXTERNAL_BYTES: Final[int] = 1024


class Emitter:
    """Accumulates ONNX nodes and initializers with fresh value names."""

    def __init__(self, reserved: set[str]) -> None:
        import onnx
        from onnx import helper, numpy_helper

        self.onnx = onnx
        self.helper = helper
        self.numpy_helper = numpy_helper
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []
        self.external: dict[str, np.ndarray[Any, Any]] = {}
        self.names: dict[int, str] = {}
        self._reserved = reserved
        self._counter = 0
        self._small: dict[tuple[str, tuple[int, ...], bytes], str] = {}

    def fresh(self) -> str:
        while True:
            self._counter += 1
            name = f"_v{self._counter}"
            if name not in self._reserved:
                return name

    def node(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: Sequence[str] | int = 1,
        name: str = "",
        **attrs: Any,
    ) -> list[str]:
        outs = [self.fresh() for _ in range(outputs)] if isinstance(outputs, int) else list(outputs)
        self.nodes.append(
            self.helper.make_node(op_type, list(inputs), outs, name=name or None, **attrs)
        )
        return outs

    def one(self, op_type: str, inputs: Sequence[str], out: str | None = None, **attrs: Any) -> str:
        return self.node(op_type, inputs, [out] if out else 1, **attrs)[0]

    def const(self, array: np.ndarray[Any, Any], *, share: bool = False) -> str:
        """An initializer holding ``array``; small ones are deduplicated by content."""
        if not array.flags.c_contiguous:  # (np.ascontiguousarray would turn a scalar into 1-D)
            array = array.copy(order="C")
        if share and array.nbytes >= EXTERNAL_BYTES:
            name = self.fresh()
            tensor = self.onnx.TensorProto()
            tensor.name = name
            tensor.data_type = onnx_type(str(array.dtype))
            tensor.dims.extend(array.shape)
            tensor.data_location = self.onnx.TensorProto.EXTERNAL
            entry = tensor.external_data.add()
            entry.key, entry.value = "location", f"webnn-constant-{name}"
            self.initializers.append(tensor)
            self.external[name] = array
            return name
        key = (str(array.dtype), array.shape, array.tobytes())
        cached = self._small.get(key)
        if cached is not None:
            return cached
        name = self.fresh()
        self.initializers.append(self.numpy_helper.from_array(array, name))
        self._small[key] = name
        return name

    def ints(self, values: Sequence[int]) -> str:
        return self.const(np.asarray(values, dtype=np.int64))

    def scalar(self, value: Any, data_type: str) -> str:
        return self.const(np.asarray(value, dtype=numpy_dtype(data_type)))

    def cast(self, value: str, to: str, out: str | None = None) -> str:
        return self.one("Cast", [value], out, to=onnx_type(to))
