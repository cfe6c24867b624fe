"""GPT-2 (``model_type: gpt2``) as ``GPT2LMHeadModel``: learned positions, tied output head.

Parameter names equal the keys of Hugging Face ``GPT2LMHeadModel`` checkpoints (``lm_head``
may be absent: it is the token embedding). GPT-2's ``Conv1D`` layers store their weight as
(in_features, out_features); each is transposed once, on first use, into the (out, in) layout
of :func:`ipfs_accelerate.ops.linear`, so the projections run like every other model's.
Not supported (UnsupportedArchitectureError): cross-attention, ``scale_attn_by_inverse_layer_idx``,
unscaled attention.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ipfs_accelerate import ops
from ipfs_accelerate.errors import UnsupportedArchitectureError
from ipfs_accelerate.models._config import check_activation, from_dict, require_model_type
from ipfs_accelerate.models._module import (
    Embedding,
    LayerNorm,
    Linear,
    Module,
    ModuleList,
    activation,
)
from ipfs_accelerate.models.generation._cache import CacheShape, DecodeStep
from ipfs_accelerate.models.llama import check_tied_head
from ipfs_accelerate.quantization import QuantizedTensor
from ipfs_accelerate.tensor import Tensor

__all__ = ["GPT2Config", "GPT2LMHeadModel"]

_CONTEXT = "GPT2LMHeadModel"


@dataclass
class GPT2Config:
    """The fields of a GPT-2 ``config.json`` the model uses (Hugging Face defaults)."""

    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int = 0
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    add_cross_attention: bool = False

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> GPT2Config:
        require_model_type(data, ("gpt2",), _CONTEXT)
        config = from_dict(cls, data, context="GPT2Config")
        config.n_inner = config.n_inner or 4 * config.n_embd
        for name in ("add_cross_attention", "scale_attn_by_inverse_layer_idx"):
            if getattr(config, name):
                raise UnsupportedArchitectureError(f"{_CONTEXT}: {name}=true is not implemented")
        if not config.scale_attn_weights:
            raise UnsupportedArchitectureError(
                f"{_CONTEXT}: scale_attn_weights=false is not implemented"
            )
        if config.n_embd % config.n_head:
            raise UnsupportedArchitectureError(
                f"{_CONTEXT}: n_embd {config.n_embd} is not divisible by n_head {config.n_head}"
            )
        check_activation(config.activation_function, _CONTEXT)
        return config


class Conv1D(Module):
    """GPT-2's projection: ``x @ weight + bias`` with ``weight`` (in_features, out_features),
    a Tensor or (int8/int4 models) a QuantizedTensor in the same layout."""

    weight: Tensor | QuantizedTensor
    bias: Tensor
    #: what the precision loader reads: quantize this weight as (in_features, out_features)
    weight_in_out = True
    #: ``ops.linear``'s ``activations`` for a quantized weight (set by the loader's policy)
    activations: str = "float"

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.declare("weight", (in_features, out_features))
        self.declare("bias", (out_features,))
        self._linear_weight: Tensor | None = None

    def __call__(self, x: Tensor) -> Tensor:
        if isinstance(self.weight, QuantizedTensor):
            # the (out, in) form is built once and kept with the weight (prepared)
            return ops.linear(x, self.weight.T, self.bias, activations=self.activations)
        if self._linear_weight is None:
            from ipfs_accelerate import hal

            # derived from a parameter once: a weight too (a graph backend keeps it constant)
            transposed = ops.contiguous(self.weight.T)
            hal.mark_parameter(transposed)
            self._linear_weight = transposed
        return ops.linear(x, self._linear_weight, self.bias)


class GPT2Attention(Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.heads, self.size = config.n_head, config.n_embd
        self.c_attn = Conv1D(config.n_embd, 3 * config.n_embd)
        self.c_proj = Conv1D(config.n_embd, config.n_embd)

    def __call__(self, x: Tensor, step: DecodeStep, layer: int) -> Tensor:
        batch, length, _ = x.shape
        d = self.size // self.heads
        q, k, v = (
            t.reshape(batch, length, self.heads, d).permute(0, 2, 1, 3)
            for t in ops.split(self.c_attn(x), 3, axis=-1)
        )
        out = step.attend(layer, q, k, v)
        return self.c_proj(out.permute(0, 2, 1, 3).reshape(batch, length, self.size))


class GPT2MLP(Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.act = config.activation_function
        self.c_fc = Conv1D(config.n_embd, config.n_inner)
        self.c_proj = Conv1D(config.n_inner, config.n_embd)

    def __call__(self, x: Tensor) -> Tensor:
        return self.c_proj(activation(self.act, self.c_fc(x)))


class GPT2Block(Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.attn = GPT2Attention(config)
        self.ln_2 = LayerNorm(config.n_embd, config.layer_norm_epsilon)
        self.mlp = GPT2MLP(config)

    def __call__(self, x: Tensor, step: DecodeStep, layer: int) -> Tensor:
        x = x + self.attn(self.ln_1(x), step, layer)
        return x + self.mlp(self.ln_2(x))


class GPT2Model(Module):
    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.wte = Embedding(config.vocab_size, config.n_embd)
        self.wpe = Embedding(config.n_positions, config.n_embd)
        self.h = ModuleList([GPT2Block(config) for _ in range(config.n_layer)])
        self.ln_f = LayerNorm(config.n_embd, config.layer_norm_epsilon)


class GPT2LMHeadModel(Module):
    """GPT-2 with its (tied) language-model head: ``model(input_ids, step) -> logits``."""

    config_class: ClassVar[type[GPT2Config]] = GPT2Config
    base_model_prefix: ClassVar[str] = "transformer"
    #: as LlamaForCausalLM's (models/_precision.py INT4_ACTIVATIONS)
    int4_block_activations: ClassVar[bool] = True
    is_head_model: ClassVar[bool] = True
    tied_weights: ClassVar[dict[str, str]] = {"lm_head.weight": "transformer.wte.weight"}
    #: as LlamaForCausalLM's
    int8_block_weights: ClassVar[tuple[str, ...]] = ("lm_head.weight",)
    # the causal-mask buffers of older checkpoints
    ignored_keys: ClassVar[tuple[str, ...]] = tuple(
        f"transformer.h.{i}.attn.{name}" for i in range(256) for name in ("bias", "masked_bias")
    )

    def __init__(self, config: GPT2Config) -> None:
        super().__init__()
        self.config = config
        self.transformer = GPT2Model(config)
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)

    @property
    def context_length(self) -> int:
        return self.config.n_positions

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def cache_shape(self) -> CacheShape:
        c = self.config
        return CacheShape(c.n_layer, c.n_head, c.n_embd // c.n_head)

    def __call__(self, input_ids: Tensor, step: DecodeStep, *, last_only: bool = True) -> Tensor:
        """Logits of the new tokens ``input_ids`` (B, L): (B, vocab) of the last column with
        ``last_only``, else (B, L, vocab)."""
        t = self.transformer
        x = t.wte(input_ids) + t.wpe(step.position_ids())
        for n, block in enumerate(t.h):
            x = block(x, step, n)
        if last_only:
            x = x[:, -1]
        return self.lm_head(t.ln_f(x))


def model_class_for(config: Mapping[str, Any], weights: Mapping[str, Any] | None) -> type[Module]:
    """The class a ``gpt2`` checkpoint loads into (see ``loading.MODEL_FAMILIES``)."""
    check_tied_head(config, weights, "lm_head.weight", tied_by_default=True)
    return GPT2LMHeadModel
