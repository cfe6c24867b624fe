"""Recurrent networks: WebNN's GRU and LSTM (and their cells) as ONNX's GRU and LSTM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from ipfs_accelerate.webnn._onnx._base import INT64_MIN, LoweringBase
from ipfs_accelerate.webnn._operand import MLOperand, Node
from ipfs_accelerate.webnn._types import numpy_dtype

__all__ = ["RecurrentLowering"]


class RecurrentLowering(LoweringBase):
    """``gru``, ``gru_cell``, ``lstm`` and ``lstm_cell`` with gates reordered to ONNX's order."""

    def _reorder_gates(
        self, operand: MLOperand, axis: int, order: Sequence[int], gates: int
    ) -> str:
        """Reorder the gate blocks of a weight or bias along ``axis`` into ONNX's order."""
        if list(order) == list(range(gates)):
            return self.value(operand)
        array = self.const_value(operand)
        if array is not None:
            blocks = np.split(array, gates, axis=axis)
            return self.e.const(
                np.ascontiguousarray(np.concatenate([blocks[i] for i in order], axis=axis)),
                share=True,
            )
        parts = self.e.node("Split", [self.value(operand)], gates, axis=axis, num_outputs=gates)
        return self.e.one("Concat", [parts[i] for i in order], axis=axis)

    def _recurrent_bias(
        self, bias: MLOperand | None, recurrent_bias: MLOperand | None, order: Sequence[int],
        gates: int, dirs: int, hidden: int, dtype: str, axis: int,
    ) -> str:  # fmt: skip
        """ONNX's B input: [input bias, recurrent bias] concatenated (zeros where absent)."""
        parts = []
        for operand in (bias, recurrent_bias):
            if operand is None:
                shape = (dirs, gates * hidden) if axis == 1 else (gates * hidden,)
                parts.append(self.e.const(np.zeros(shape, numpy_dtype(dtype))))
            else:
                parts.append(self._reorder_gates(operand, axis, order, gates))
        return self.e.one("Concat", parts, axis=axis)

    def _run_recurrent(
        self,
        op_type: str,
        node: Node,
        x: str,
        weights: tuple[str, str, str],
        initial: Sequence[str],
        dirs: int,
        extra_inputs: Sequence[str],
        outputs: Sequence[str],
        **attrs: Any,
    ) -> list[str]:
        activations = [name.capitalize() for name in node.attrs["activations"]] * dirs
        direction = {"forward": "forward", "backward": "reverse", "both": "bidirectional"}[
            node.attrs.get("direction", "forward")
        ]
        inputs = [x, *weights, "", *initial, *extra_inputs]
        while inputs and inputs[-1] == "":
            inputs.pop()
        return self.e.node(
            op_type,
            inputs,
            outputs,
            hidden_size=node.attrs["hidden_size"],
            direction=direction,
            activations=activations,
            **attrs,
        )

    def _sequence(self, sequence: str, direction: str, steps: int, out: str) -> None:
        """WebNN orders a backward direction's sequence by processing step (the spec's
        emulation): reverse ONNX's time-aligned output along the step axis for it."""
        if direction == "forward" or steps == 1:
            self.e.one("Identity", [sequence], out)
            return
        reverse = [
            self.e.ints([-1]),
            self.e.ints([INT64_MIN]),
            self.e.ints([0]),
            self.e.ints([-1]),
        ]
        if direction == "backward":
            self.e.one("Slice", [sequence, *reverse], out)
            return
        forward, backward = self.e.node("Split", [sequence, self.e.ints([1, 1])], 2, axis=1)
        self.e.one("Concat", [forward, self.e.one("Slice", [backward, *reverse])], out, axis=1)

    def _op_gru(self, node: Node) -> None:
        x, w, r, bias, recurrent_bias, initial = node.inputs
        assert x is not None and w is not None and r is not None
        order = (0, 1, 2) if node.attrs["layout"] == "zrn" else (1, 0, 2)
        hidden, dirs = node.attrs["hidden_size"], w.shape[0]
        weights = (
            self._reorder_gates(w, 1, order, 3),
            self._reorder_gates(r, 1, order, 3),
            self._recurrent_bias(bias, recurrent_bias, order, 3, dirs, hidden, x.data_type, 1),
        )
        sequence = node.attrs["return_sequence"]
        outs = self._run_recurrent(
            "GRU", node, self.value(x), weights, [self.value(initial)] if initial else [], dirs, [],
            [self.e.fresh() if sequence else "", self.out(node.outputs[0])],
            linear_before_reset=int(node.attrs["reset_after"]),
        )  # fmt: skip
        if sequence:
            self._sequence(outs[0], node.attrs["direction"], x.shape[0], self.out(node.outputs[1]))

    def _op_gru_cell(self, node: Node) -> None:
        x, w, r, h, bias, recurrent_bias = node.inputs
        assert x is not None and w is not None and r is not None and h is not None
        order = (0, 1, 2) if node.attrs["layout"] == "zrn" else (1, 0, 2)
        hidden = node.attrs["hidden_size"]
        weights = (
            self.e.one("Unsqueeze", [self._reorder_gates(w, 0, order, 3), self.e.ints([0])]),
            self.e.one("Unsqueeze", [self._reorder_gates(r, 0, order, 3), self.e.ints([0])]),
            self.e.one(
                "Unsqueeze",
                [
                    self._recurrent_bias(bias, recurrent_bias, order, 3, 1, hidden, x.data_type, 0),
                    self.e.ints([0]),
                ],
            ),
        )
        step = self.e.one("Unsqueeze", [self.value(x), self.e.ints([0])])
        state = self.e.one("Unsqueeze", [self.value(h), self.e.ints([0])])
        outs = self._run_recurrent(
            "GRU", node, step, weights, [state], 1, [], ["", self.e.fresh()],
            linear_before_reset=int(node.attrs["reset_after"]),
        )  # fmt: skip
        self.e.one("Squeeze", [outs[1], self.e.ints([0])], self.out(node.outputs[0]))

    _LSTM_ORDER: Final = {"iofg": (0, 1, 2, 3), "ifgo": (0, 3, 1, 2)}

    def _op_lstm(self, node: Node) -> None:
        x, w, r, bias, recurrent_bias, peephole, initial_h, initial_c = node.inputs
        assert x is not None and w is not None and r is not None
        order = self._LSTM_ORDER[node.attrs["layout"]]
        hidden, dirs = node.attrs["hidden_size"], w.shape[0]
        weights = (
            self._reorder_gates(w, 1, order, 4),
            self._reorder_gates(r, 1, order, 4),
            self._recurrent_bias(bias, recurrent_bias, order, 4, dirs, hidden, x.data_type, 1),
        )
        initial = [
            self.value(initial_h) if initial_h else "",
            self.value(initial_c) if initial_c else "",
        ]
        extra = [self.value(peephole)] if peephole is not None else []
        sequence = node.attrs["return_sequence"]
        outs = self._run_recurrent(
            "LSTM", node, self.value(x), weights, initial, dirs, extra,
            [
                self.e.fresh() if sequence else "",
                self.out(node.outputs[0]),
                self.out(node.outputs[1]),
            ],
        )  # fmt: skip
        if sequence:
            self._sequence(outs[0], node.attrs["direction"], x.shape[0], self.out(node.outputs[2]))

    def _op_lstm_cell(self, node: Node) -> None:
        x, w, r, h, c, bias, recurrent_bias, peephole = node.inputs
        assert x is not None and w is not None and r is not None and h is not None and c is not None
        order = self._LSTM_ORDER[node.attrs["layout"]]
        hidden = node.attrs["hidden_size"]
        axis0 = self.e.ints([0])
        weights = (
            self.e.one("Unsqueeze", [self._reorder_gates(w, 0, order, 4), axis0]),
            self.e.one("Unsqueeze", [self._reorder_gates(r, 0, order, 4), axis0]),
            self.e.one(
                "Unsqueeze",
                [
                    self._recurrent_bias(bias, recurrent_bias, order, 4, 1, hidden, x.data_type, 0),
                    axis0,
                ],
            ),
        )
        step = self.e.one("Unsqueeze", [self.value(x), axis0])
        initial = [
            self.e.one("Unsqueeze", [self.value(h), axis0]),
            self.e.one("Unsqueeze", [self.value(c), axis0]),
        ]
        extra = (
            [self.e.one("Unsqueeze", [self.value(peephole), axis0])] if peephole is not None else []
        )
        outs = self._run_recurrent(
            "LSTM", node, step, weights, initial, 1, extra, ["", self.e.fresh(), self.e.fresh()]
        )
        self.e.one("Squeeze", [outs[1], axis0], self.out(node.outputs[0]))
        self.e.one("Squeeze", [outs[2], axis0], self.out(node.outputs[1]))
