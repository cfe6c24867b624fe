"""Per-operation data type and rank limits: what the builder validates and
``op_support_limits()`` reports.

One table serves both, so the limits a context reports are exactly the limits its builder
enforces. Data types follow the spec's per-operation tables; ranks follow the spec's shape
rules (a convolution input is 4-D, a gemm operand 2-D, ...) within ``MAX_RANK``.
"""

from __future__ import annotations

from typing import Any, Final

from ipfs_accelerate.webnn._types import (
    DATA_TYPES,
    FLOAT_TYPES,
    FOUR_BIT_TYPES,
    MAX_RANK,
    MAX_TENSOR_BYTE_LENGTH,
)

__all__ = ["OPERAND_LIMITS", "TensorLimits", "op_support_limits"]

TensorLimits = tuple[tuple[str, ...], int, int]  # (data types, min rank, max rank)

# the spec's types; the 4-bit extension types only where listed (see docs/webnn.md)
_ANY: Final = tuple(t for t in DATA_TYPES if t not in FOUR_BIT_TYPES)
_QUANTIZED: Final = ("int8", "uint8", "int32", *FOUR_BIT_TYPES)
_MOVES_4BIT: Final = (*_ANY, *FOUR_BIT_TYPES)  # data movement keeps values in range
_FLOAT: Final = FLOAT_TYPES
_SIGNED: Final = ("float32", "float16", "int32", "int64", "int8")
_NUMERIC_NO_8BIT: Final = ("float32", "float16", "int32", "uint32", "int64", "uint64")
_INDICES: Final = ("int32", "uint32", "int64")
_UINT8: Final = ("uint8",)


def _lim(types: tuple[str, ...], lo: int = 0, hi: int = MAX_RANK) -> TensorLimits:
    return (types, lo, hi)


def _unary(types: tuple[str, ...], out: tuple[str, ...] | None = None) -> dict[str, TensorLimits]:
    return {"input": _lim(types), "output": _lim(out or types)}


def _binary(types: tuple[str, ...], out: tuple[str, ...] | None = None) -> dict[str, TensorLimits]:
    return {"a": _lim(types), "b": _lim(types), "output": _lim(out or types)}


def _pool(types: tuple[str, ...]) -> dict[str, TensorLimits]:
    return {"input": _lim(types, 4, 4), "output": _lim(types, 4, 4)}


_reduce_any = _unary(_NUMERIC_NO_8BIT)
_reduce_float = _unary(_FLOAT)

#: op name (snake_case) -> operand name -> (data types, min rank, max rank)
OPERAND_LIMITS: Final[dict[str, dict[str, TensorLimits]]] = {
    "arg_min": {"input": _lim(_ANY), "output": _lim(("int32", "int64"))},
    "arg_max": {"input": _lim(_ANY), "output": _lim(("int32", "int64"))},
    "batch_normalization": {
        "input": _lim(_FLOAT, 1),
        "mean": _lim(_FLOAT, 1, 1),
        "variance": _lim(_FLOAT, 1, 1),
        "scale": _lim(_FLOAT, 1, 1),
        "bias": _lim(_FLOAT, 1, 1),
        "output": _lim(_FLOAT, 1),
    },
    "cast": _unary(_ANY),
    "clamp": _unary(_ANY),
    "concat": {"inputs": _lim(_ANY, 1), "output": _lim(_ANY, 1)},
    "conv2d": {
        "input": _lim(_FLOAT, 4, 4),
        "filter": _lim(_FLOAT, 4, 4),
        "bias": _lim(_FLOAT, 1, 1),
        "output": _lim(_FLOAT, 4, 4),
    },
    "conv_transpose2d": {
        "input": _lim(_FLOAT, 4, 4),
        "filter": _lim(_FLOAT, 4, 4),
        "bias": _lim(_FLOAT, 1, 1),
        "output": _lim(_FLOAT, 4, 4),
    },
    "cumulative_sum": _unary(_NUMERIC_NO_8BIT) | {"input": _lim(_NUMERIC_NO_8BIT, 1)},
    "dequantize_linear": {
        "input": _lim(_QUANTIZED),
        "scale": _lim(_FLOAT),
        "zero_point": _lim(_QUANTIZED),
        "output": _lim(_FLOAT),
    },
    "quantize_linear": {
        "input": _lim(_FLOAT),
        "scale": _lim(_FLOAT),
        "zero_point": _lim(_QUANTIZED),
        "output": _lim(_QUANTIZED),
    },
    # element-wise binary
    "add": _binary(_ANY),
    "sub": _binary(_ANY),
    "mul": _binary(_ANY),
    "div": _binary(_ANY),
    "max": _binary(_ANY),
    "min": _binary(_ANY),
    "pow": _binary(("float32", "float16", "int32", "int64")),
    # element-wise logical
    "equal": _binary(_ANY, _UINT8),
    "not_equal": _binary(_ANY, _UINT8),
    "greater": _binary(_ANY, _UINT8),
    "greater_or_equal": _binary(_ANY, _UINT8),
    "lesser": _binary(_ANY, _UINT8),
    "lesser_or_equal": _binary(_ANY, _UINT8),
    "logical_not": {"a": _lim(_UINT8), "output": _lim(_UINT8)},
    "logical_and": _binary(_UINT8),
    "logical_or": _binary(_UINT8),
    "logical_xor": _binary(_UINT8),
    "is_nan": _unary(_FLOAT, _UINT8),
    "is_infinite": _unary(_FLOAT, _UINT8),
    # element-wise unary
    "abs": _unary(_SIGNED),
    "ceil": _unary(_FLOAT),
    "cos": _unary(_FLOAT),
    "erf": _unary(_FLOAT),
    "exp": _unary(_FLOAT),
    "floor": _unary(_FLOAT),
    "identity": _unary(_MOVES_4BIT),
    "log": _unary(_FLOAT),
    "neg": _unary(_SIGNED),
    "reciprocal": _unary(_FLOAT),
    "round_even": _unary(_FLOAT),
    "sign": _unary(_SIGNED),
    "sin": _unary(_FLOAT),
    "sqrt": _unary(_FLOAT),
    "tan": _unary(_FLOAT),
    # activations
    "elu": _unary(_FLOAT),
    "gelu": _unary(_FLOAT),
    "hard_sigmoid": _unary(_FLOAT),
    "hard_swish": _unary(_FLOAT),
    "leaky_relu": _unary(_FLOAT),
    "linear": _unary(_FLOAT),
    "prelu": {"input": _lim(_SIGNED), "slope": _lim(_SIGNED), "output": _lim(_SIGNED)},
    "relu": _unary(_SIGNED),
    "sigmoid": _unary(_FLOAT),
    "softmax": {"input": _lim(_FLOAT, 1), "output": _lim(_FLOAT, 1)},
    "softplus": _unary(_FLOAT),
    "softsign": _unary(_FLOAT),
    "tanh": _unary(_FLOAT),
    # data movement
    "expand": _unary(_ANY),
    "gather": {"input": _lim(_ANY, 1), "indices": _lim(_INDICES), "output": _lim(_ANY)},
    "gather_elements": {
        "input": _lim(_ANY, 1),
        "indices": _lim(_INDICES, 1),
        "output": _lim(_ANY, 1),
    },
    "gather_nd": {"input": _lim(_ANY, 1), "indices": _lim(_INDICES, 1), "output": _lim(_ANY)},
    "scatter_elements": {
        "input": _lim(_ANY, 1),
        "indices": _lim(_INDICES, 1),
        "updates": _lim(_ANY, 1),
        "output": _lim(_ANY, 1),
    },
    "scatter_nd": {
        "input": _lim(_ANY, 1),
        "indices": _lim(_INDICES, 1),
        "updates": _lim(_ANY),
        "output": _lim(_ANY, 1),
    },
    "pad": _unary(_ANY),
    "reshape": _unary(_MOVES_4BIT),
    "reverse": _unary(_ANY),
    "slice": _unary(_ANY),
    "split": {"input": _lim(_ANY, 1), "outputs": _lim(_ANY, 1)},
    "tile": _unary(_ANY),
    "transpose": _unary(_MOVES_4BIT),
    "triangular": {"input": _lim(_ANY, 2), "output": _lim(_ANY, 2)},
    "where": {
        "condition": _lim(_UINT8),
        "true_value": _lim(_ANY),
        "false_value": _lim(_ANY),
        "output": _lim(_ANY),
    },
    # matrix
    "gemm": {
        "a": _lim(_FLOAT, 2, 2),
        "b": _lim(_FLOAT, 2, 2),
        "c": _lim(_FLOAT, 0, 2),
        "output": _lim(_FLOAT, 2, 2),
    },
    "matmul": {"a": _lim(_FLOAT, 2), "b": _lim(_FLOAT, 2), "output": _lim(_FLOAT, 2)},
    # recurrent
    "gru": {
        "input": _lim(_FLOAT, 3, 3),
        "weight": _lim(_FLOAT, 3, 3),
        "recurrent_weight": _lim(_FLOAT, 3, 3),
        "bias": _lim(_FLOAT, 2, 2),
        "recurrent_bias": _lim(_FLOAT, 2, 2),
        "initial_hidden_state": _lim(_FLOAT, 3, 3),
        "output0": _lim(_FLOAT, 3, 3),
        "output1": _lim(_FLOAT, 4, 4),
    },
    "gru_cell": {
        "input": _lim(_FLOAT, 2, 2),
        "weight": _lim(_FLOAT, 2, 2),
        "recurrent_weight": _lim(_FLOAT, 2, 2),
        "hidden_state": _lim(_FLOAT, 2, 2),
        "bias": _lim(_FLOAT, 1, 1),
        "recurrent_bias": _lim(_FLOAT, 1, 1),
        "output": _lim(_FLOAT, 2, 2),
    },
    "lstm": {
        "input": _lim(_FLOAT, 3, 3),
        "weight": _lim(_FLOAT, 3, 3),
        "recurrent_weight": _lim(_FLOAT, 3, 3),
        "bias": _lim(_FLOAT, 2, 2),
        "recurrent_bias": _lim(_FLOAT, 2, 2),
        "peephole_weight": _lim(_FLOAT, 2, 2),
        "initial_hidden_state": _lim(_FLOAT, 3, 3),
        "initial_cell_state": _lim(_FLOAT, 3, 3),
        "output0": _lim(_FLOAT, 3, 3),
        "output1": _lim(_FLOAT, 3, 3),
        "output2": _lim(_FLOAT, 4, 4),
    },
    "lstm_cell": {
        "input": _lim(_FLOAT, 2, 2),
        "weight": _lim(_FLOAT, 2, 2),
        "recurrent_weight": _lim(_FLOAT, 2, 2),
        "hidden_state": _lim(_FLOAT, 2, 2),
        "cell_state": _lim(_FLOAT, 2, 2),
        "bias": _lim(_FLOAT, 1, 1),
        "recurrent_bias": _lim(_FLOAT, 1, 1),
        "peephole_weight": _lim(_FLOAT, 1, 1),
        "output0": _lim(_FLOAT, 2, 2),
        "output1": _lim(_FLOAT, 2, 2),
    },
    # normalization
    "instance_normalization": {
        "input": _lim(_FLOAT, 4, 4),
        "scale": _lim(_FLOAT, 1, 1),
        "bias": _lim(_FLOAT, 1, 1),
        "output": _lim(_FLOAT, 4, 4),
    },
    "layer_normalization": {
        "input": _lim(_FLOAT),
        "scale": _lim(_FLOAT),
        "bias": _lim(_FLOAT),
        "output": _lim(_FLOAT),
    },
    # pooling
    "average_pool2d": _pool(_FLOAT),
    "l2_pool2d": _pool(_FLOAT),
    "max_pool2d": _pool(("float32", "float16", "int8", "uint8")),
    # reduction
    "reduce_l1": _reduce_any,
    "reduce_l2": _reduce_float,
    "reduce_log_sum": _reduce_float,
    "reduce_log_sum_exp": _reduce_float,
    "reduce_max": _unary(_ANY),
    "reduce_mean": _reduce_float,
    "reduce_min": _unary(_ANY),
    "reduce_product": _reduce_any,
    "reduce_sum": _reduce_any,
    "reduce_sum_square": _reduce_any,
    # resampling
    "resample2d": {"input": _lim(_FLOAT, 4, 4), "output": _lim(_FLOAT, 4, 4)},
}


def _tensor_limits(limits: TensorLimits) -> dict[str, Any]:
    types, lo, hi = limits
    return {"data_types": list(types), "rank_range": {"min": lo, "max": hi}}


def op_support_limits() -> dict[str, Any]:
    """The spec's ``MLOpSupportLimits`` with snake_case keys, built from OPERAND_LIMITS."""
    result: dict[str, Any] = {
        "preferred_input_layout": "nchw",
        "max_tensor_byte_length": MAX_TENSOR_BYTE_LENGTH,
        "input": _tensor_limits(_lim(DATA_TYPES)),
        "constant": _tensor_limits(_lim(DATA_TYPES)),
        "output": _tensor_limits(_lim(DATA_TYPES)),
    }
    for op, operands in OPERAND_LIMITS.items():
        result[op] = {name: _tensor_limits(limits) for name, limits in operands.items()}
    return result
