"""Vision Transformer (``model_type: vit``): ``ViTModel`` and ``ViTForImageClassification``.

Parameter names equal the Hugging Face checkpoint keys. Images must have the config's
``image_size`` (the preprocessor resizes them); position-embedding interpolation for other
sizes is not implemented and raises InvalidArgumentError.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ipfs_accelerate import ops
from ipfs_accelerate.errors import InvalidArgumentError, UnsupportedArchitectureError
from ipfs_accelerate.models._config import check_activation, from_dict, require_model_type
from ipfs_accelerate.models._module import (
    Conv2d,
    Dropout,
    LayerNorm,
    Linear,
    Module,
    ModuleList,
    activation,
    attend,
    merge_heads,
    split_heads,
)
from ipfs_accelerate.tensor import Tensor

__all__ = ["ViTConfig", "ViTForImageClassification", "ViTModel", "ViTOutput"]


@dataclass
class ViTConfig:
    """The fields of a ViT ``config.json`` the forward pass uses (Hugging Face defaults)."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.0
    attention_probs_dropout_prob: float = 0.0
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    id2label: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ViTConfig:
        require_model_type(data, ("vit",), "ViTModel")
        config = from_dict(cls, data, context="ViTConfig")
        if config.hidden_size % config.num_attention_heads:
            raise UnsupportedArchitectureError(
                f"ViTModel: hidden_size {config.hidden_size} is not divisible"
                f" by num_attention_heads {config.num_attention_heads}"
            )
        if config.image_size % config.patch_size:
            raise UnsupportedArchitectureError(
                f"ViTModel: image_size {config.image_size}"
                f" is not a multiple of patch_size {config.patch_size}"
            )
        check_activation(config.hidden_act, "ViTModel")
        return config

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def labels(self) -> list[str]:
        """Class names by index from ``id2label`` (``LABEL_i`` where the config has none)."""
        count = len(self.id2label)
        return [str(self.id2label.get(str(i), f"LABEL_{i}")) for i in range(count)]


@dataclass
class ViTOutput:
    last_hidden_state: Tensor
    pooler_output: Tensor | None


class ViTPatchEmbeddings(Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.projection = Conv2d(
            config.num_channels, config.hidden_size, config.patch_size, stride=config.patch_size
        )

    def __call__(self, pixels: Tensor) -> Tensor:
        x = self.projection(pixels)  # (B, H, grid, grid)
        batch, hidden = x.shape[:2]
        return x.reshape(batch, hidden, -1).permute(0, 2, 1)


class ViTEmbeddings(Module):
    cls_token: Tensor
    position_embeddings: Tensor

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.config = config
        self.declare("cls_token", (1, 1, config.hidden_size))
        self.patch_embeddings = ViTPatchEmbeddings(config)
        self.declare("position_embeddings", (1, config.num_patches + 1, config.hidden_size))
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, pixels: Tensor) -> Tensor:
        c = self.config
        expected = (c.num_channels, c.image_size, c.image_size)
        if pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise InvalidArgumentError(
                f"ViTModel: pixel_values must be (batch, {expected[0]}, {expected[1]},"
                f" {expected[2]}), got {pixels.shape}"
            )
        patches = self.patch_embeddings(pixels)
        cls = self.cls_token.expand(patches.shape[0], 1, c.hidden_size)
        return self.dropout(ops.concat([cls, patches], axis=1) + self.position_embeddings)


class ViTSelfAttention(Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.query = Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.key = Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.value = Linear(config.hidden_size, config.hidden_size, bias=config.qkv_bias)
        self.dropout = Dropout(config.attention_probs_dropout_prob)

    def __call__(self, x: Tensor) -> Tensor:
        q = split_heads(self.query(x), self.num_heads)
        k = split_heads(self.key(x), self.num_heads)
        v = split_heads(self.value(x), self.num_heads)
        return merge_heads(attend(q, k, v, None, self.dropout))


class ViTSelfOutput(Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, x: Tensor) -> Tensor:
        return self.dropout(self.dense(x))


class ViTAttention(Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.attention = ViTSelfAttention(config)
        self.output = ViTSelfOutput(config)

    def __call__(self, x: Tensor) -> Tensor:
        return self.output(self.attention(x))


class ViTIntermediate(Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.act = config.hidden_act
        self.dense = Linear(config.hidden_size, config.intermediate_size)

    def __call__(self, x: Tensor) -> Tensor:
        return activation(self.act, self.dense(x))


class ViTOutputLayer(Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def __call__(self, x: Tensor, residual: Tensor) -> Tensor:
        return self.dropout(self.dense(x)) + residual


class ViTLayer(Module):
    """Pre-norm transformer block."""

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layernorm_before = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.attention = ViTAttention(config)
        self.layernorm_after = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.intermediate = ViTIntermediate(config)
        self.output = ViTOutputLayer(config)

    def __call__(self, x: Tensor) -> Tensor:
        x = self.attention(self.layernorm_before(x)) + x
        return self.output(self.intermediate(self.layernorm_after(x)), x)


class ViTEncoder(Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.layer = ModuleList([ViTLayer(config) for _ in range(config.num_hidden_layers)])

    def __call__(self, x: Tensor) -> Tensor:
        for layer in self.layer:
            x = layer(x)
        return x


class ViTPooler(Module):
    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def __call__(self, hidden: Tensor) -> Tensor:
        return ops.tanh(self.dense(hidden[:, 0]))


class ViTModel(Module):
    """``model(pixel_values) -> ViTOutput``; ``pixel_values`` (B, C, image_size, image_size)
    float32."""

    config_class: ClassVar[type[ViTConfig]] = ViTConfig

    base_model_prefix: ClassVar[str] = "vit"
    optional_prefixes: ClassVar[tuple[str, ...]] = ("pooler.",)
    ignored_keys: ClassVar[tuple[str, ...]] = ("embeddings.mask_token",)

    def __init__(self, config: ViTConfig, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.config = config
        self.embeddings = ViTEmbeddings(config)
        self.encoder = ViTEncoder(config)
        self.layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.pooler: ViTPooler | None = ViTPooler(config) if add_pooling_layer else None

    def __call__(self, pixel_values: Tensor) -> ViTOutput:
        hidden = self.layernorm(self.encoder(self.embeddings(pixel_values)))
        return ViTOutput(hidden, self.pooler(hidden) if self.pooler is not None else None)


class ViTForImageClassification(Module):
    """ViT with a linear classifier on the [CLS] token: ``model(pixel_values) -> logits``."""

    config_class: ClassVar[type[ViTConfig]] = ViTConfig

    base_model_prefix: ClassVar[str] = "vit"
    # the classifier reads the [CLS] hidden state, not the pooler: a saved pooler is unused
    ignored_keys: ClassVar[tuple[str, ...]] = (
        "vit.embeddings.mask_token",
        "vit.pooler.dense.weight",
        "vit.pooler.dense.bias",
    )
    is_head_model: ClassVar[bool] = True

    def __init__(self, config: ViTConfig) -> None:
        super().__init__()
        if not config.id2label:
            raise UnsupportedArchitectureError(
                "ViTForImageClassification: config.json has no id2label,"
                " so the checkpoint has no classifier labels"
            )
        self.config = config
        self.vit = ViTModel(config, add_pooling_layer=False)
        self.classifier = Linear(config.hidden_size, len(config.id2label))

    def __call__(self, pixel_values: Tensor) -> Tensor:
        hidden = self.vit(pixel_values).last_hidden_state
        return self.classifier(hidden[:, 0])


def model_class_for(config: Mapping[str, Any], weights: Mapping[str, Any] | None) -> type[Module]:
    """The classifier when the checkpoint has one (labels and, where the keys are known, a
    ``classifier.weight``), else the base model (see ``loading.MODEL_FAMILIES``)."""
    has_head = weights is None or "classifier.weight" in weights
    return ViTForImageClassification if has_head and config.get("id2label") else ViTModel
