"""The precision a model is loaded in: what ``from_pretrained(dtype=...)`` does to each weight.

``"float32"`` (the default) widens every floating weight to float32. ``"float16"`` narrows them
to float16 where the backend holds float16. ``"auto"`` keeps a float16/bfloat16 checkpoint in
float16 where the backend holds it (float32 otherwise) and keeps a quantized checkpoint as it
was saved. ``"int8"``: every Linear weight ``quantize(w, bits=8, axis=0)`` (per output
channel, symmetric); ``"int4"``: ``quantize(w, bits=4, axis=1, block_size=32)`` (blocks along
in_features), int8 for a layer whose in_features 32 does not divide (a projection that
stores its weight (in, out), GPT-2's Conv1D, the same with the axes swapped). The token-embedding
tables a model names in ``quantizable_embeddings`` become int8 per row in both (they are most
of a small encoder's bytes); layer norms, biases, convolutions, position embeddings and the
layers in :data:`FLOAT_LAYERS` stay in float32. docs/models.md ("Precision") has the numbers
behind these choices.

Weights are converted one at a time while loading, so the float32 model is never held whole.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from ipfs_accelerate.errors import DtypeError, InvalidArgumentError
from ipfs_accelerate.models._defaults import MODEL_DTYPES
from ipfs_accelerate.models._module import Embedding, Linear, Module
from ipfs_accelerate.quantization import QuantizedTensor, quantize

__all__ = [
    "FLOAT_LAYERS",
    "INT4_BLOCK_SIZE",
    "INT8_ACTIVATIONS",
    "INT8_ACTIVATION_KINDS",
    "INT8_BLOCK_SIZE",
    "LAYER_KINDS",
    "MODEL_DTYPES",
    "Precision",
    "WeightConverter",
    "apply_activation_policy",
    "check_dtype",
    "layer_kind",
    "model_dtype",
    "quantized_keys",
    "resolve_precision",
    "set_int8_activations",
]

logger = logging.getLogger(__name__)

#: the block of an int4 weight, along in_features
INT4_BLOCK_SIZE = 32
#: the block (along in_features / the embedding dim) of the 8-bit weights a model names in
#: ``int8_block_weights``: Whisper's token table (its embedding and vocabulary projection) in
#: blocks of 32 kept whisper-tiny.en's transcript of real speech, the projection in blocks of
#: 128 did not; MatMulNBits multiplies a decode step's row by it in integers
INT8_BLOCK_SIZE = 32
#: Linear layers (dotted-name suffixes) kept in float32 by int8/int4; empty: the accuracy
#: tests pass with every Linear quantized, task heads and projections included
FLOAT_LAYERS: tuple[str, ...] = ()

_HALF = frozenset({"F16", "BF16"})


def check_dtype(dtype: Any, context: str = "from_pretrained") -> str:
    """``dtype`` when it is one of :data:`MODEL_DTYPES`, else InvalidArgumentError naming it."""
    if not isinstance(dtype, str) or dtype not in MODEL_DTYPES:
        raise InvalidArgumentError(
            f"{context}: dtype must be one of {', '.join(MODEL_DTYPES)}, got {dtype!r}"
        )
    return dtype


@dataclass(frozen=True)
class Precision:
    """What one load does: ``dtype`` is the resolved model dtype (never ``"auto"``),
    ``float_dtype`` what floating weights become, ``bits`` the bits of newly quantized Linear
    weights (None: none are quantized), ``dequantize_saved`` whether quantized weights of a
    saved quantized checkpoint are expanded back to float."""

    dtype: str
    float_dtype: str
    bits: int | None
    dequantize_saved: bool = False


def holds_float16(device: str) -> bool:
    from ipfs_accelerate import hal

    return any(d.name == "float16" for d in hal.get_backend(device).supported_dtypes)


def resolve_precision(
    requested: str, device: str, stored_dtypes: set[str], saved_dtype: str | None
) -> Precision:
    """The precision of a load of ``requested`` dtype on ``device`` from a checkpoint whose
    tensors have the safetensors dtypes ``stored_dtypes`` and, when it was saved quantized,
    the model dtype ``saved_dtype`` ("int8"/"int4")."""
    check_dtype(requested)
    if requested == "float16" and not holds_float16(device):
        raise DtypeError(
            f"from_pretrained: dtype='float16' but backend {device!r} does not hold float16 "
            "tensors (use 'auto', which falls back to float32 there)"
        )
    half = requested == "float16" or (
        requested == "auto" and bool(stored_dtypes & _HALF) and holds_float16(device)
    )
    float_dtype = "float16" if half else "float32"
    if saved_dtype is not None:
        if requested in ("int8", "int4") and requested != saved_dtype:
            raise DtypeError(
                f"from_pretrained: the checkpoint holds {saved_dtype} weights; load it with "
                f"dtype={saved_dtype!r} or 'auto' (or 'float32'/'float16' to expand them), "
                f"not {requested!r}"
            )
        if requested in ("float32", "float16"):
            return Precision(requested, float_dtype, None, dequantize_saved=True)
        return Precision(saved_dtype, float_dtype, None)
    if requested in ("int8", "int4"):
        return Precision(requested, "float32", 8 if requested == "int8" else 4)
    return Precision(float_dtype, float_dtype, None)


def _named_weights(model: Module) -> Iterator[tuple[str, Module]]:
    for path, module in model.named_modules():
        if isinstance(module, Linear | Embedding) or getattr(module, "weight_in_out", False):
            yield (f"{path}.weight" if path else "weight"), module


def quantized_keys(model: Module, bits: int = 8) -> dict[str, str]:
    """Model key -> ``"linear"``, ``"in_out"`` (a projection whose weight is stored
    (in_features, out_features), as GPT-2's Conv1D), ``"embedding"`` or ``"block"`` (8-bit in
    blocks of :data:`INT8_BLOCK_SIZE` along the second axis: the model's
    ``int8_block_weights``) for every weight a load in ``bits`` (8: int8, 4: int4) quantizes.
    With 8 bits the Linear layers under the model's ``int8_float_layers`` stay float."""
    embeddings = set(getattr(model, "quantizable_embeddings", ()))
    eight = bits == 8
    float_prefixes: tuple[str, ...] = getattr(model, "int8_float_layers", ()) if eight else ()
    blocked = set(getattr(model, "int8_block_weights", ())) if eight else set()
    out: dict[str, str] = {}
    for key, module in _named_weights(model):
        if key in blocked:
            out[key] = "block"
        elif isinstance(module, Embedding):
            if key in embeddings:
                out[key] = "embedding"
        elif not key[: -len(".weight")].endswith(FLOAT_LAYERS) and not key.startswith(
            float_prefixes
        ):
            out[key] = "linear" if isinstance(module, Linear) else "in_out"
    return out


class WeightConverter:
    """Turns each checkpoint array into what the model holds at ``precision``: a float array
    of ``precision.float_dtype`` or a host :class:`QuantizedTensor`. A weight that two keys
    share (tied weights) is converted once when both get the same quantization."""

    def __init__(self, model: Module, precision: Precision) -> None:
        self.precision = precision
        self.kinds = quantized_keys(model, precision.bits) if precision.bits is not None else {}
        self._done: dict[tuple[int, int, int | None], QuantizedTensor] = {}

    @property
    def copies_floats(self) -> bool:
        """True when float weights must be copied out of the checkpoint's memory map, so that
        the map (the float32 model) is released once loading ends."""
        return self.precision.bits is not None or self.precision.dtype in ("int8", "int4")

    def __call__(self, key: str, value: Any) -> np.ndarray[Any, Any] | QuantizedTensor:
        if isinstance(value, QuantizedTensor):
            if self.precision.dequantize_saved:
                return value.dequantize_numpy().astype(self.precision.float_dtype)
            return value
        kind = self.kinds.get(key)
        if kind is not None:
            return self._quantize(key, value, kind)
        if value.dtype.kind != "f":
            raise DtypeError(f"tensor {key!r} has dtype {value.dtype}, a floating dtype is needed")
        wanted = np.dtype(self.precision.float_dtype)
        if value.dtype == wanted:
            return np.array(value, copy=True) if self.copies_floats else value
        return value.astype(wanted)

    def _quantize(self, key: str, array: np.ndarray[Any, Any], kind: str) -> QuantizedTensor:
        bits = self.precision.bits or 8
        # the axis of in_features: Linear weights are (out, in), "in_out" ones (in, out)
        inputs = 0 if kind == "in_out" else 1
        block = None
        projection = kind in ("linear", "in_out")
        if kind == "block":
            if array.shape[1] % INT8_BLOCK_SIZE == 0:
                block = INT8_BLOCK_SIZE
            else:
                size = array.shape[1]
                logger.info("%s: %d columns are not a multiple of 32: per row", key, size)
        elif projection and bits == 4 and array.shape[inputs] % INT4_BLOCK_SIZE == 0:
            block = INT4_BLOCK_SIZE
        elif projection and bits == 4:
            size = array.shape[inputs]
            logger.info("%s: in_features %d is not a multiple of 32: int8", key, size)
        bits = 4 if block is not None and kind != "block" else 8
        cache_key = (id(array), bits, block)
        if cache_key not in self._done:
            # blocks run along in_features; per-channel int8 has one scale per output feature
            axis = inputs if block is not None else 1 - inputs
            self._done[cache_key] = quantize(array, bits=bits, axis=axis, block_size=block)
        return self._done[cache_key]


#: Linear layers by role, from their names in the families (MPNet: ``attn.q``..``attn.o``;
#: ModernBERT: ``attn.Wqkv``, ``attn.Wo``, ``mlp.Wi``, ``mlp.Wo``; DistilBERT: ``q_lin``..;
#: Llama-family decoders: ``self_attn.o_proj``, ``mlp.gate_proj``/``up_proj``/``down_proj``;
#: GPT-2's Conv1D projections: ``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``)
_KIND_SUFFIXES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("attention_in", ("query", "key", "value", "q_proj", "k_proj", "v_proj", "q_lin", "k_lin",
                      "v_lin", "attn.q", "attn.k", "attn.v", "attn.Wqkv", "attn.c_attn")),
    # "attn.out_proj", not "out_proj": RoBERTa's classifier head has an out_proj too
    ("attention_out", ("attention.output.dense", "attn.out_proj", "attention.out_lin", "attn.o",
                       "attn.Wo", "self_attn.o_proj", "attn.c_proj")),
    ("ffn_in", ("intermediate.dense", "fc1", "ffn.lin1", "mlp.Wi", "mlp.gate_proj",
                "mlp.up_proj", "mlp.c_fc")),
    ("ffn_out", ("output.dense", "fc2", "ffn.lin2", "mlp.Wo", "mlp.down_proj", "mlp.c_proj")),
)  # fmt: skip
#: the default int8 activation policy: layer kind -> ``ops.linear``'s ``activations`` mode,
#: used where the backend has that mode's integer kernel (weight-only elsewhere, and for the
#: kinds not listed). Every transformer-block Linear takes uint8 inputs with one scale per row
#: (token): MiniLM's cosine against fp32 over 256 sentences, min 0.9971 / mean 0.99866.
#: One scale per tensor ("int8") holds the gate on the attention projections only (0.9968 /
#: 0.99825): the FFN input (layer-norm output with a few outlier channels) and the FFN output
#: projection (GELU outputs) vary too much from token to token for one scale, and mixing
#: per-tensor attention with per-row FFN fails the mean gate (0.9958 / 0.99790). Per-row on
#: every block layer also measured as fast as per-tensor everywhere on webnn. Heads
#: (classifiers, projections, Whisper's vocabulary projection) keep float inputs.
#: docs/models.md ("Precision") has the measurements.
INT8_ACTIVATIONS: Mapping[str, str] = MappingProxyType(
    dict.fromkeys(("attention_in", "attention_out", "ffn_in", "ffn_out"), "int8_row")
)
#: the layer kinds whose inputs the default policy quantizes (any mode)
INT8_ACTIVATION_KINDS: frozenset[str] = frozenset(INT8_ACTIVATIONS)
#: the default policy for 4-bit (blockwise) weights of text decoders (a model class with
#: ``int4_block_activations``) where the backend has the kernel (webnn: MatMulNBits at
#: accuracy level 4): every block Linear rounds its input to int8 per row and weight block,
#: as onnxruntime-genai's CPU models do. That kernel wins for few rows (a decode step: one
#: row 2.2x, eight 1.75-2.1x faster products; K=576 or 384, N=1536) and loses from about 64
#: rows (0.65-0.8x), so encoders keep float inputs on their int4 weights. The vocabulary
#: projection too (genai's int4 models quantize it the same way): 1.06 -> 0.46 ms a token for
#: SmolLM2's tied head on one thread.
INT4_ACTIVATIONS: Mapping[str, str] = MappingProxyType(
    dict.fromkeys(("attention_in", "attention_out", "ffn_in", "ffn_out", "head"), "int8_block")
)
#: the fused backend op each integer activation mode needs to run as integers
_MODE_KERNELS: Mapping[str, str] = MappingProxyType(
    {
        "int8": "dynamic_quantized_linear",
        "int8_row": "row_quantized_linear",
        "int8_block": "block_quantized_linear",
    }
)


def layer_kind(path: str) -> str:
    """``"attention_in"``, ``"attention_out"``, ``"ffn_in"``, ``"ffn_out"`` or ``"head"`` for
    the Linear module at dotted ``path``."""
    if path.split(".", 1)[0] == "classifier":
        # a classification head's ``out_proj`` (MPNet, RoBERTa) is no attention projection
        return "head"
    for kind, suffixes in _KIND_SUFFIXES:
        if path.endswith(suffixes):
            return kind
    return "head"


def apply_activation_policy(
    model: Module, device: str, modes: Mapping[str, str] | None = None
) -> list[str]:
    """Set each quantized Linear layer's ``activations`` to ``modes[its kind]`` (``"float"``
    for kinds not in ``modes`` and for float weights). Without ``modes``: on 8-bit weights
    the kinds of :data:`INT8_ACTIVATIONS`, on a text decoder's 4-bit blockwise weights those
    of :data:`INT4_ACTIVATIONS`, where the backend multiplies the mode's kernel in integers
    (``Backend.integer_kernel``: webnn; cpu with MKL for ``int8_row``; elsewhere float
    inputs: rounding them in float would only cost time). Returns the paths of the layers
    with integer activations."""
    from ipfs_accelerate import hal

    if modes is None:
        backend = hal.get_backend(device)
        four = INT4_ACTIVATIONS if getattr(model, "int4_block_activations", False) else {}
        by_bits = {
            bits: {
                kind: mode
                for kind, mode in table.items()
                if backend.integer_kernel(_MODE_KERNELS[mode])
            }
            for bits, table in ((8, INT8_ACTIVATIONS), (4, four))
        }
    else:
        by_bits = {8: dict(modes), 4: dict(modes)}
    # the model's block-quantized 8-bit Linears take block-rounded inputs by default where
    # the backend multiplies them in integers (webnn: MatMulNBits at accuracy level 4)
    block_heads: set[str] = set()
    if modes is None and hal.get_backend(device).integer_kernel("block_quantized_linear"):
        block_heads = set(getattr(model, "int8_block_weights", ()))
    chosen = []
    for path, module in model.named_modules():
        # Linear, and GPT-2's Conv1D (its weight in the (in, out) layout)
        if isinstance(module, Linear) or getattr(module, "weight_in_out", False):
            weight = module.weight
            mode = "float"
            if (
                isinstance(weight, QuantizedTensor)
                and f"{path}.weight" in block_heads
                and weight.bits == 8
                and weight.block_size is not None
            ):
                mode = "int8_block"
            elif isinstance(weight, QuantizedTensor):
                mode = by_bits.get(weight.bits, {}).get(layer_kind(path), "float")
                if mode == "int8_block" and weight.block_size is None:
                    mode = "float"
            module.activations = mode
            if mode != "float":
                chosen.append(path)
    return chosen


#: every layer kind :func:`layer_kind` names
LAYER_KINDS: frozenset[str] = frozenset({"attention_in", "attention_out", "ffn_in", "ffn_out",
                                         "head"})  # fmt: skip


def _check_kinds(kinds: Iterable[str]) -> None:
    unknown = sorted(k for k in kinds if k not in LAYER_KINDS)
    if unknown:
        raise InvalidArgumentError(
            f"int8 activations: unknown layer kind(s) {', '.join(map(repr, unknown))}; "
            f"known: {', '.join(sorted(LAYER_KINDS))}"
        )


def _check_mode(mode: Any, what: str) -> str:
    if not isinstance(mode, str) or mode not in _MODE_KERNELS:
        raise InvalidArgumentError(
            f"int8 activations: {what} must be one of "
            f"{', '.join(map(repr, _MODE_KERNELS))}, got {mode!r}"
        )
    return mode


def set_int8_activations(
    model: Module,
    layers: str | Iterable[str] | Mapping[str, str] = "auto",
    mode: str = "int8",
) -> list[str]:
    """Choose which quantized Linear layers quantize their inputs at run time, and how:
    ``"auto"`` (the default policy: :data:`INT8_ACTIVATIONS` where the backend has the
    integer kernels, none elsewhere), ``"all"``, ``"none"`` (weight-only everywhere), layer
    kinds from :data:`LAYER_KINDS`, or a mapping kind -> mode. ``mode`` is the
    ``activations`` mode of ``"all"`` and of listed kinds: ``"int8"`` (one scale per tensor)
    or ``"int8_row"`` (one per row). On a backend without the integer kernel the rounding is
    applied in float (same results, slower). Returns the chosen layers' paths."""
    if layers == "auto":
        return apply_activation_policy(model, model.device)
    if isinstance(layers, Mapping):
        _check_kinds(layers)
        modes = {kind: _check_mode(m, f"the mode of {kind!r}") for kind, m in layers.items()}
        return apply_activation_policy(model, model.device, modes)
    _check_mode(mode, "mode")
    if layers == "all":
        kinds: frozenset[str] = LAYER_KINDS
    elif layers == "none":
        kinds = frozenset()
    elif isinstance(layers, str):
        raise InvalidArgumentError(
            f"int8 activations: layers must be 'auto', 'all', 'none', layer kinds "
            f"({', '.join(sorted(LAYER_KINDS))}) or a mapping kind -> mode, got {layers!r}"
        )
    else:
        kinds = frozenset(layers)
        _check_kinds(kinds)
    return apply_activation_policy(model, model.device, dict.fromkeys(kinds, mode))


@functools.cache
def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or None; looked up once (``find_library`` runs a process)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(name), "malloc_trim", None) if name else None
    except OSError:  # pragma: no cover - not a glibc system
        return None


def release_freed_memory() -> None:
    """Hand the heap's free pages back to the OS (glibc's ``malloc_trim``). Quantizing
    allocates and frees a layer's temporaries at a time; glibc raises its trim threshold
    after large frees and would keep tens of MB the process no longer uses."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


def model_dtype(model: Module) -> str:
    """The dtype a loaded model was loaded in (``"float32"`` when it was not recorded)."""
    return str(model.__dict__.get("dtype", "float32"))
