"""Pre-quantized int4 checkpoints made by GPTQ (AutoGPTQ / GPTQModel) and AWQ (AutoAWQ).

Both replace a Linear's ``weight`` (out_features, in_features) by three tensors, with one
scale and one zero point per ``group_size`` consecutive input features and output feature:
``qweight`` (int32 words of eight 4-bit values), ``qzeros`` (likewise) and ``scales``
(float16, (groups, out_features)); the weight is ``scales * (q - zero)``.

- **GPTQ** (``quant_method: gptq``): ``qweight`` is (in / 8, out), word ``[r, o]`` holding the
  values of input rows ``8r .. 8r + 7`` from its lowest nibble up; ``qzeros`` is
  (groups, out / 8), word ``[g, c]`` holding output columns ``8c .. 8c + 7`` the same way. In
  the original format (``checkpoint_format: gptq``, "v1") a zero point z is stored as
  ``z - 1``; ``gptq_v2`` stores z. ``g_idx`` (in,) names each input row's group; with
  ``desc_act`` (act-order) it may be any assignment, which the contiguous groups of
  :class:`QuantizedTensor` cannot hold, so such a ``g_idx`` is refused.
- **AWQ** (``quant_method: awq``, ``version: gemm``): ``qweight`` is (in, out / 8) and
  ``qzeros`` (groups, out / 8); a word holds eight output columns, but interleaved: its
  nibbles from the lowest up hold columns ``0, 2, 4, 6, 1, 3, 5, 7`` of its eight. Zero
  points are stored as they are.

Each becomes an asymmetric int4 :class:`QuantizedTensor` blocked along in_features (what this
package's own int4 weights are, with a zero point), so every backend runs it with its int4
kernels; ``dtype="float32"`` expands it to float as a saved int4 checkpoint would.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ipfs_accelerate.errors import CheckpointError, UnsupportedArchitectureError
from ipfs_accelerate.quantization import QuantizedTensor
from ipfs_accelerate.quantization._tensor import ErrorStats, pack_int4

__all__ = ["AWQ_NIBBLE_COLUMNS", "packed_int4_from_checkpoint", "unpack_awq", "unpack_gptq"]

Array = np.ndarray[Any, Any]

#: the column (of a word's eight) each AWQ nibble holds, from the lowest nibble up
AWQ_NIBBLE_COLUMNS = (0, 2, 4, 6, 1, 3, 5, 7)
#: the nibble holding each column: the inverse of AWQ_NIBBLE_COLUMNS
_AWQ_COLUMN_NIBBLES = tuple(AWQ_NIBBLE_COLUMNS.index(c) for c in range(8))
_SHIFTS = np.arange(8, dtype=np.uint32) * 4
_GPTQ_FORMATS = ("gptq", "gptq_v2")


def _nibbles(words: Array, axis: int) -> Array:
    """The eight 4-bit values of each int32 word, lowest nibble first, expanding ``axis``
    eightfold (value ``j`` of word ``w`` at index ``8w + j``)."""
    unsigned = np.ascontiguousarray(words).view(np.uint32)
    moved = np.moveaxis(unsigned, axis, -1)
    values = ((moved[..., None] >> _SHIFTS) & 0xF).astype(np.uint8)
    expanded = values.reshape(*moved.shape[:-1], moved.shape[-1] * 8)
    return np.moveaxis(expanded, -1, axis)


def _checked(
    name: str, array: Array | None, shape: tuple[int, ...], dtypes: tuple[str, ...], source: str
) -> Array:
    if array is None:
        raise CheckpointError(f"{source}: {name!r} is missing")
    if tuple(array.shape) != shape or array.dtype.name not in dtypes:
        raise CheckpointError(
            f"{source}: {name!r} is {array.dtype} {tuple(array.shape)}, expected "
            f"{' or '.join(dtypes)} {shape}"
        )
    return array


def _scales(name: str, array: Array) -> Array:
    scales = array if array.dtype.name in ("float16", "float32") else array.astype(np.float32)
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        bad = scales[~(np.isfinite(scales) & (scales > 0))].flat[0]
        raise CheckpointError(f"{name!r} holds a scale that is not finite and positive: {bad}")
    return scales


def _tensor(q: Array, zeros: Array, scales: Array, group: int) -> QuantizedTensor:
    """The (out, in) QuantizedTensor of values ``q`` (in, out) with per-group ``zeros`` and
    ``scales`` (groups, out)."""
    in_features, out_features = q.shape
    per_channel = group == in_features
    return QuantizedTensor(
        pack_int4(np.ascontiguousarray(q.T), signed=False),
        np.ascontiguousarray(scales.T),
        np.ascontiguousarray(zeros.T),
        shape=(out_features, in_features),
        bits=4,
        # one group over every input feature is the per-output-channel layout
        axis=0 if per_channel else 1,
        block_size=None if per_channel else group,
        dtype="float32",
        device="cpu",
        error=ErrorStats(float("nan"), float("nan")),  # the float weights are not known
    )


def _group_size(config: Mapping[str, Any], in_features: int, prefix: str, source: str) -> int:
    group = config.get("group_size", 128)
    if isinstance(group, bool) or not isinstance(group, int) or group == 0 or group < -1:
        raise CheckpointError(
            f"{source}: quantization_config.group_size {group!r} is not a positive int or -1"
        )
    group = in_features if group == -1 else group
    if in_features % group:
        raise CheckpointError(
            f"{source}: {prefix}: group_size {group} does not divide in_features {in_features}"
        )
    return group


def unpack_gptq(
    prefix: str, weights: dict[str, Any], config: Mapping[str, Any], source: str
) -> QuantizedTensor:
    """The QuantizedTensor of GPTQ layer ``prefix`` (its tensors are removed from
    ``weights``)."""
    qweight = weights.pop(f"{prefix}.qweight")
    if qweight.ndim != 2:
        raise CheckpointError(f"{source}: {prefix + '.qweight'!r} is not 2-D: {qweight.shape}")
    in_features, out_features = qweight.shape[0] * 8, qweight.shape[1]
    group = _group_size(config, in_features, prefix, source)
    groups = in_features // group
    if out_features % 8:
        raise CheckpointError(
            f"{source}: {prefix}: out_features {out_features} is not a multiple of 8"
        )
    qweight = _checked(f"{prefix}.qweight", qweight, qweight.shape, ("int32",), source)
    qzeros = _checked(f"{prefix}.qzeros", weights.pop(f"{prefix}.qzeros", None),
                      (groups, out_features // 8), ("int32",), source)  # fmt: skip
    scales = _checked(f"{prefix}.scales", weights.pop(f"{prefix}.scales", None),
                      (groups, out_features), ("float16", "float32"), source)  # fmt: skip
    g_idx = weights.pop(f"{prefix}.g_idx", None)
    if g_idx is not None:
        g_idx = _checked(f"{prefix}.g_idx", g_idx, (in_features,), ("int32", "int64"), source)
        if not np.array_equal(g_idx, np.arange(in_features) // group):
            raise UnsupportedArchitectureError(
                f"{source}: {prefix + '.g_idx'!r} assigns input features to groups out of "
                "order (GPTQ desc_act / act-order); only contiguous groups "
                "(g_idx[i] == i // group_size) are supported"
            )
    zeros = _nibbles(qzeros, axis=1).astype(np.int16)
    if config.get("checkpoint_format", "gptq") == "gptq":
        zeros = zeros + 1  # v1 stores each zero point minus one
        if np.any(zeros > 15):
            raise CheckpointError(
                f"{source}: {prefix + '.qzeros'!r} holds a zero point of 16 (stored as 15 in "
                "GPTQ v1's zero-minus-one form), outside the 4-bit range"
            )
    q = _nibbles(qweight, axis=0)
    return _tensor(q, zeros.astype(np.uint8), _scales(f"{prefix}.scales", scales), group)


def unpack_awq(
    prefix: str, weights: dict[str, Any], config: Mapping[str, Any], source: str
) -> QuantizedTensor:
    """The QuantizedTensor of AWQ (GEMM) layer ``prefix`` (its tensors are removed from
    ``weights``)."""
    qweight = weights.pop(f"{prefix}.qweight")
    if qweight.ndim != 2:
        raise CheckpointError(f"{source}: {prefix + '.qweight'!r} is not 2-D: {qweight.shape}")
    in_features, out_features = qweight.shape[0], qweight.shape[1] * 8
    group = _group_size(config, in_features, prefix, source)
    groups = in_features // group
    qweight = _checked(f"{prefix}.qweight", qweight, qweight.shape, ("int32",), source)
    qzeros = _checked(f"{prefix}.qzeros", weights.pop(f"{prefix}.qzeros", None),
                      (groups, out_features // 8), ("int32",), source)  # fmt: skip
    scales = _checked(f"{prefix}.scales", weights.pop(f"{prefix}.scales", None),
                      (groups, out_features), ("float16", "float32"), source)  # fmt: skip
    order = np.arange(out_features).reshape(-1, 8)[:, _AWQ_COLUMN_NIBBLES].reshape(-1)
    q = _nibbles(qweight, axis=1)[:, order]
    zeros = _nibbles(qzeros, axis=1)[:, order]
    return _tensor(q, zeros, _scales(f"{prefix}.scales", scales), group)


def _method(config: Mapping[str, Any], source: str) -> str:
    method = str(config.get("quant_method", "")).lower()
    if method not in ("gptq", "awq"):
        raise UnsupportedArchitectureError(
            f"{source}: quantization_config.quant_method {config.get('quant_method')!r} is not "
            "supported; pre-quantized checkpoints load from 'gptq' and 'awq' (gemm)"
        )
    bits = config.get("bits", config.get("w_bit"))
    if bits != 4:
        raise UnsupportedArchitectureError(
            f"{source}: quantization_config.bits {bits!r} ({method}) is not supported; only 4"
        )
    if method == "gptq" and config.get("checkpoint_format", "gptq") not in _GPTQ_FORMATS:
        raise UnsupportedArchitectureError(
            f"{source}: quantization_config.checkpoint_format "
            f"{config.get('checkpoint_format')!r} is not supported; only 'gptq' and 'gptq_v2'"
        )
    if method == "awq":
        version = str(config.get("version", "gemm")).lower()
        if version != "gemm":
            raise UnsupportedArchitectureError(
                f"{source}: quantization_config.version {config.get('version')!r} (awq) is not "
                "supported; only 'gemm'"
            )
        if config.get("zero_point", True) is not True:
            raise UnsupportedArchitectureError(
                f"{source}: quantization_config.zero_point {config.get('zero_point')!r} (awq) "
                "is not supported; only true"
            )
    return method


def packed_int4_from_checkpoint(
    weights: dict[str, Any], config: Mapping[str, Any], source: str
) -> str | None:
    """Replace every GPTQ/AWQ layer of ``weights`` (in place) by ``K.weight``, its
    QuantizedTensor; return ``"int4"``, or None when the config has no
    ``quantization_config``."""
    quantization = config.get("quantization_config")
    if quantization is None:
        return None
    if not isinstance(quantization, Mapping):
        raise CheckpointError(f"{source}: quantization_config is not a JSON object")
    method = _method(quantization, source)
    if str(config.get("model_type", "")).lower() == "gpt2":
        # GPT-2's Conv1D layers hold (in, out) float weights; no int4 form is built for them
        raise UnsupportedArchitectureError(
            f"{source}: {method} checkpoints of model_type 'gpt2' (Conv1D) are not supported"
        )
    unpack = unpack_gptq if method == "gptq" else unpack_awq
    prefixes = [key[: -len(".qweight")] for key in weights if key.endswith(".qweight")]
    if not prefixes:
        raise CheckpointError(
            f"{source}: quantization_config says {method!r} but no tensor is a '.qweight'"
        )
    for prefix in prefixes:
        weights[f"{prefix}.weight"] = unpack(prefix, weights, quantization, source)
    return "int4"
