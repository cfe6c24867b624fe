"""sentence-transformers' module pipelines, read from the files sentence-transformers 3.x-6.x
write: ``modules.json`` (Transformer -> Pooling -> Dense... -> Normalize, run in its order),
each module's folder, and ``config_sentence_transformers.json`` (prompts).

Module types are matched by their class name, so that every version's spelling is the same
module (``sentence_transformers.models.Pooling``, 6.x's
``sentence_transformers.sentence_transformer.modules.pooling.Pooling``...). Pooling is
written as one ``pooling_mode`` (a name or a list: 6.x) or as ``pooling_mode_*`` flags
(3.x-5.x); several modes are concatenated in the order given, as sentence-transformers does.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import CheckpointError, UnsupportedArchitectureError
from ipfs_accelerate.models.loading import read_json, read_safetensors
from ipfs_accelerate.tensor import Tensor, from_numpy

__all__ = [
    "POOLING_MODES",
    "DenseLayer",
    "SentencePipeline",
    "pool",
    "pool_with",
    "pooling_inputs",
    "read_pipeline",
]

Array = np.ndarray[Any, Any]

#: the pooling modes sentence-transformers has, by their 6.x names
POOLING_MODES = ("cls", "max", "mean", "mean_sqrt_len_tokens", "weightedmean", "lasttoken")
#: 3.x-5.x flags, in the order their modes are concatenated
_LEGACY_POOLING = {
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len_tokens",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
#: Dense activations (torch class paths as saved) -> what runs them
_ACTIVATIONS = {
    "torch.nn.modules.activation.Tanh": "tanh",
    "torch.nn.modules.linear.Identity": "identity",
    "torch.nn.modules.activation.ReLU": "relu",
    "torch.nn.modules.activation.GELU": "gelu",
    "torch.nn.modules.activation.Sigmoid": "sigmoid",
    "torch.nn.modules.activation.SiLU": "silu",
}


@dataclass
class DenseLayer:
    """One Dense module: ``activation(x @ weight.T + bias)`` (+ a residual when saved so)."""

    weight: Tensor
    bias: Tensor | None
    activation: str
    residual: Tensor | None = None
    identity_residual: bool = False

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def __call__(self, x: Tensor) -> Tensor:
        out = _activate(self.activation, ops.linear(x, self.weight, self.bias))
        if self.residual is not None:
            out = out + ops.linear(x, self.residual)
        elif self.identity_residual:
            out = out + x
        return out


@dataclass
class SentencePipeline:
    """What runs after the encoder: pooling, Dense layers, normalisation; and the prompts."""

    pooling: tuple[str, ...] = ("mean",)
    include_prompt: bool = True
    dense: list[DenseLayer] = field(default_factory=list)
    normalize: bool = False
    prompts: dict[str, str] = field(default_factory=dict)
    default_prompt_name: str | None = None

    def dimension(self, hidden_size: int) -> int:
        """The size of the vectors this pipeline returns for an encoder of ``hidden_size``."""
        if self.dense:
            return self.dense[-1].out_features
        return hidden_size * len(self.pooling)


def read_pipeline(directory: Path, hidden_size: int, device: str) -> SentencePipeline:
    """The module pipeline of a checkpoint directory (mean pooling when it has no
    ``modules.json``: a plain transformers checkpoint). Dense weights go to ``device``."""
    pipeline = SentencePipeline()
    st_config = read_json(directory / "config_sentence_transformers.json")
    prompts = st_config.get("prompts") or {}
    if not isinstance(prompts, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in prompts.items()
    ):
        raise CheckpointError(
            f"{directory / 'config_sentence_transformers.json'}: prompts must map names to strings"
        )
    pipeline.prompts = dict(prompts)
    default = st_config.get("default_prompt_name")
    if default is not None and default not in pipeline.prompts:
        raise CheckpointError(
            f"{directory / 'config_sentence_transformers.json'}: default_prompt_name "
            f"{default!r} is not one of its prompts ({', '.join(pipeline.prompts) or 'none'})"
        )
    pipeline.default_prompt_name = default
    entries = _modules(directory)
    if entries is None:
        return pipeline
    dimension = hidden_size
    seen_pooling = False
    for index, entry in enumerate(entries):
        kind = str(entry.get("type", "")).rsplit(".", 1)[-1]
        folder = directory / str(entry.get("path") or "")
        where = f"{directory / 'modules.json'}: module {index} ({entry.get('type')!r})"
        if kind == "Transformer":
            if index != 0 or folder.resolve() != directory.resolve():
                raise UnsupportedArchitectureError(
                    f"{where}: only a Transformer first, stored in the checkpoint's root, is "
                    "implemented"
                )
            task = read_json(directory / "sentence_bert_config.json").get("transformer_task")
            if task not in (None, "feature-extraction"):
                raise UnsupportedArchitectureError(
                    f"{where}: transformer_task {task!r} is not an embedding model "
                    "(a sequence-classification checkpoint is a Reranker's)"
                )
        elif kind == "Pooling":
            config = read_json(folder / "config.json")
            pipeline.pooling = _pooling_modes(config, where)
            pipeline.include_prompt = bool(config.get("include_prompt", True))
            stated = config.get("word_embedding_dimension", config.get("embedding_dimension"))
            if stated is not None and stated != dimension:
                raise CheckpointError(
                    f"{where}: pools {stated}-dimensional token embeddings, the encoder "
                    f"gives {dimension}"
                )
            dimension *= len(pipeline.pooling)
            seen_pooling = True
        elif kind == "Dense":
            if not seen_pooling:
                raise UnsupportedArchitectureError(
                    f"{where}: a Dense layer on token embeddings (before Pooling) is not"
                    " implemented"
                )
            layer = _dense(folder, where, dimension, device)
            pipeline.dense.append(layer)
            dimension = layer.out_features
        elif kind == "Normalize":
            pipeline.normalize = True
        else:
            raise UnsupportedArchitectureError(
                f"{where}: module type {entry.get('type')!r} is not implemented (Transformer,"
                " Pooling, Dense and Normalize are)"
            )
    return pipeline


def _modules(directory: Path) -> list[dict[str, Any]] | None:
    path = directory / "modules.json"
    if not path.exists():
        return None
    import json

    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise CheckpointError(f"{path}: expected a list of module objects")
    return sorted(entries, key=lambda e: int(e.get("idx", 0)))


def _pooling_modes(config: Mapping[str, Any], where: str) -> tuple[str, ...]:
    mode = config.get("pooling_mode")
    if mode is None:
        modes = tuple(m for key, m in _LEGACY_POOLING.items() if config.get(key))
        return modes or ("mean",)
    modes = (mode,) if isinstance(mode, str) else tuple(mode) if isinstance(mode, list) else ()
    if not modes:
        raise CheckpointError(f"{where}: pooling_mode {mode!r} is not a name or list of names")
    for name in modes:
        if name not in POOLING_MODES:
            raise UnsupportedArchitectureError(
                f"{where}: pooling mode {name!r} is not implemented ({', '.join(POOLING_MODES)}"
                " are)"
            )
    return tuple(str(m) for m in modes)


def _dense(folder: Path, where: str, dimension: int, device: str) -> DenseLayer:
    config = read_json(folder / "config.json", required=True)
    in_features, out_features = config.get("in_features"), config.get("out_features")
    if in_features != dimension:
        raise CheckpointError(
            f"{where}: Dense in_features {in_features!r} disagrees with the"
            f" {dimension}-dimensional sentence embedding it receives"
        )
    name = str(config.get("activation_function", "torch.nn.modules.activation.Tanh"))
    if name not in _ACTIVATIONS:
        raise UnsupportedArchitectureError(
            f"{where}: Dense activation {name!r} is not implemented"
            f" ({', '.join(a.rsplit('.', 1)[-1] for a in _ACTIVATIONS)} are)"
        )
    weights_file = folder / "model.safetensors"
    if not weights_file.exists():
        raise CheckpointError(
            f"{folder}: no model.safetensors (pickled Dense weights are never unpickled here;"
            " re-save the model with safe_serialization)"
        )
    weights = read_safetensors(weights_file)
    weight = weights.get("linear.weight")
    if weight is None or tuple(weight.shape) != (out_features, in_features):
        raise CheckpointError(
            f"{weights_file}: linear.weight has shape "
            f"{None if weight is None else tuple(weight.shape)}, the config says "
            f"({out_features}, {in_features})"
        )
    bias = weights.get("linear.bias")
    if bool(config.get("bias", True)) != (bias is not None):
        raise CheckpointError(
            f"{weights_file}: linear.bias disagrees with bias={config.get('bias')}"
        )
    residual = weights.get("residual.weight")
    use_residual = bool(config.get("use_residual", False))

    def place(array: Array | None) -> Tensor | None:
        return None if array is None else from_numpy(np.asarray(array, dtype=np.float32), device)

    return DenseLayer(
        weight=from_numpy(np.asarray(weight, dtype=np.float32), device),
        bias=place(bias),
        activation=_ACTIVATIONS[name],
        residual=place(residual) if use_residual else None,
        identity_residual=use_residual and residual is None,
    )


def _activate(name: str, x: Tensor) -> Tensor:
    if name == "tanh":
        return ops.tanh(x)
    if name == "relu":
        return ops.relu(x)
    if name == "gelu":
        return ops.gelu(x)
    if name == "sigmoid":
        return ops.sigmoid(x)
    if name == "silu":
        return ops.silu(x)
    return x


# ----------------------------------------------------------------------------- pooling


def pool(
    hidden: Tensor, attention_mask: Array, modes: tuple[str, ...], prompt_length: int = 0
) -> Tensor:
    """Sentence embeddings (B, len(modes) * hidden) from token states (B, L, hidden) and the
    host mask (B, L), as sentence-transformers' Pooling: the first ``prompt_length`` tokens
    of each row are left out when it is given (``include_prompt: false``).

    Every mode but max is a weighted sum over the tokens; the weights are made on the host
    (they depend on the mask only), so one multiply-and-sum runs on the device per mode.
    """
    weights = pooling_inputs(attention_mask, modes, prompt_length)
    return pool_with(hidden, [from_numpy(w, hidden.device) for w in weights], modes)


def pooling_inputs(
    attention_mask: Array, modes: tuple[str, ...], prompt_length: int = 0
) -> list[Array]:
    """What :func:`pool` makes on the host from the mask, per mode: the tokens kept (B, L, 1)
    bool for max, the token weights (B, L, 1) float32 for the others (a compiled training
    step takes them as inputs)."""
    mask = (np.asarray(attention_mask) != 0).astype(np.float32)
    original = mask
    if prompt_length:
        mask = mask.copy()
        mask[:, :prompt_length] = 0.0
    rows, length = mask.shape
    out = []
    for mode in modes:
        if mode == "max":
            out.append(mask.reshape(rows, length, 1) > 0)
            continue
        # float32 always: a graph backend (webnn) has no float64
        weights = _pooling_weights(mode, mask, original).astype(np.float32, copy=False)
        out.append(weights.reshape(rows, length, 1))
    return out


def pool_with(hidden: Tensor, weights: list[Tensor], modes: tuple[str, ...]) -> Tensor:
    """:func:`pool` given :func:`pooling_inputs` as tensors."""
    outputs = []
    for mode, tensor in zip(modes, weights, strict=True):
        if mode == "max":
            outputs.append(ops.max(ops.where(tensor, hidden, -1e9), axis=1))
        else:
            outputs.append(ops.sum(hidden * tensor, axis=1))
    return outputs[0] if len(outputs) == 1 else ops.concatenate(outputs, axis=-1)


def _pooling_weights(mode: str, mask: Array, original: Array) -> Array:
    rows, length = mask.shape
    if mode in ("mean", "mean_sqrt_len_tokens"):
        counts = np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        return mask / (counts if mode == "mean" else np.sqrt(counts))
    if mode == "weightedmean":
        # position weights 1..L counted from each row's first real token (left padding)
        first = original.argmax(axis=1).reshape(rows, 1)
        weighted = mask * (np.arange(1, length + 1, dtype=np.float32).reshape(1, length) - first)
        return weighted / np.maximum(weighted.sum(axis=1, keepdims=True), 1e-9)
    picked = np.zeros_like(mask)
    if mode == "cls":  # the first token the mask keeps (the prompt's end without the prompt)
        picked[np.arange(rows), mask.argmax(axis=1)] = 1.0
    elif mode == "lasttoken":
        last = length - 1 - mask[:, ::-1].argmax(axis=1)
        last = np.where(mask.any(axis=1), last, length - 1)
        picked[np.arange(rows), last] = mask[np.arange(rows), last]
    else:  # pragma: no cover - modes are checked when the checkpoint is read
        raise UnsupportedArchitectureError(f"pooling mode {mode!r} is not implemented")
    return picked
