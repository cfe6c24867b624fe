"""CLIP (``model_type: clip``): text and vision towers, their projections and the logit scale.

Parameter names equal the keys of Hugging Face ``CLIPModel`` checkpoints. The pooled text
feature is the final-layer-norm output at the end-of-text token, found on the device from the
ids: the first ``eos_token_id`` (or, for old configs whose ``eos_token_id`` is 2, the highest
id, as Hugging Face does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, cast

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import InvalidArgumentError, UnsupportedArchitectureError
from ipfs_accelerate.models._config import check_activation, from_dict, require_model_type
from ipfs_accelerate.models._module import (
    Conv2d,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    ModuleList,
    activation,
    merge_heads,
    split_heads,
)
from ipfs_accelerate.tensor import Tensor, arange, from_numpy, int64

__all__ = ["CLIPConfig", "CLIPModel", "CLIPOutput", "CLIPTextConfig", "CLIPVisionConfig"]


@dataclass
class CLIPTextConfig:
    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    pad_token_id: int = 1
    bos_token_id: int = 49406
    eos_token_id: int = 49407


@dataclass
class CLIPVisionConfig:
    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclass
class CLIPConfig:
    text_config: CLIPTextConfig
    vision_config: CLIPVisionConfig
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> CLIPConfig:
        require_model_type(data, ("clip",), "CLIPModel")
        text = from_dict(
            CLIPTextConfig, data.get("text_config") or {}, context="CLIPConfig.text_config"
        )
        vision = from_dict(
            CLIPVisionConfig, data.get("vision_config") or {}, context="CLIPConfig.vision_config"
        )
        for name, tower in (("text", text), ("vision", vision)):
            if tower.hidden_size % tower.num_attention_heads:
                raise UnsupportedArchitectureError(
                    f"CLIPModel: {name} hidden_size {tower.hidden_size} is not divisible by "
                    f"num_attention_heads {tower.num_attention_heads}"
                )
            check_activation(tower.hidden_act, f"CLIPModel {name} tower")
        if vision.image_size % vision.patch_size:
            raise UnsupportedArchitectureError(
                f"CLIPModel: image_size {vision.image_size}"
                f" is not a multiple of patch_size {vision.patch_size}"
            )
        projection = data.get("projection_dim", 512)
        scale = data.get("logit_scale_init_value", 2.6592)
        return cls(text, vision, int(projection), float(scale))


@dataclass
class CLIPOutput:
    logits_per_image: Tensor
    logits_per_text: Tensor
    text_embeds: Tensor
    image_embeds: Tensor


class CLIPAttention(Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.q_proj = Linear(hidden, hidden)
        self.k_proj = Linear(hidden, hidden)
        self.v_proj = Linear(hidden, hidden)
        self.out_proj = Linear(hidden, hidden)

    def __call__(self, x: Tensor, mask: Tensor | None) -> Tensor:
        q = split_heads(self.q_proj(x), self.num_heads)
        k = split_heads(self.k_proj(x), self.num_heads)
        v = split_heads(self.v_proj(x), self.num_heads)
        return self.out_proj(merge_heads(ops.scaled_dot_product_attention(q, k, v, attn_mask=mask)))


class CLIPMLP(Module):
    def __init__(self, hidden: int, intermediate: int, act: str) -> None:
        super().__init__()
        self.act = act
        self.fc1 = Linear(hidden, intermediate)
        self.fc2 = Linear(intermediate, hidden)

    def __call__(self, x: Tensor) -> Tensor:
        return self.fc2(activation(self.act, self.fc1(x)))


class CLIPEncoderLayer(Module):
    def __init__(self, config: CLIPTextConfig | CLIPVisionConfig) -> None:
        super().__init__()
        self.self_attn = CLIPAttention(config.hidden_size, config.num_attention_heads)
        self.layer_norm1 = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.mlp = CLIPMLP(config.hidden_size, config.intermediate_size, config.hidden_act)
        self.layer_norm2 = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def __call__(self, x: Tensor, mask: Tensor | None) -> Tensor:
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(Module):
    def __init__(self, config: CLIPTextConfig | CLIPVisionConfig) -> None:
        super().__init__()
        self.layers = ModuleList(
            [CLIPEncoderLayer(config) for _ in range(config.num_hidden_layers)]
        )

    def __call__(self, x: Tensor, mask: Tensor | None) -> Tensor:
        for layer in self.layers:
            x = layer(x, mask)
        return x


class CLIPTextEmbeddings(Module):
    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.token_embedding = Embedding(config.vocab_size, config.hidden_size)
        self.position_embedding = Embedding(config.max_position_embeddings, config.hidden_size)

    def __call__(self, ids: Tensor) -> Tensor:
        return (
            self.token_embedding(ids)
            + cast("Tensor", self.position_embedding.weight)[: ids.shape[1]]
        )


class CLIPTextTransformer(Module):
    def __init__(self, config: CLIPTextConfig) -> None:
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = CLIPEncoder(config)
        self.final_layer_norm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def __call__(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        """The pooled (end-of-text) features, (B, hidden)."""
        batch, length = input_ids.shape
        if length > self.config.max_position_embeddings:
            raise InvalidArgumentError(
                f"CLIPModel: text length {length} exceeds"
                f" max_position_embeddings {self.config.max_position_embeddings}"
            )
        causal = from_numpy(np.tril(np.ones((length, length), dtype=bool)), input_ids.device)
        mask = causal.reshape(1, 1, length, length)
        if attention_mask is not None:
            mask = mask & (attention_mask != 0).reshape(batch, 1, 1, length)
        hidden = self.final_layer_norm(self.encoder(self.embeddings(input_ids), mask))
        if self.config.eos_token_id == 2:
            positions = ops.argmax(input_ids, axis=-1)
        else:
            positions = ops.argmax((input_ids == self.config.eos_token_id).astype("int32"), axis=-1)
        rows = arange(batch, dtype=int64, device=input_ids.device) * length + positions
        return ops.gather(hidden.reshape(batch * length, -1), rows, axis=0)


class CLIPVisionEmbeddings(Module):
    class_embedding: Tensor

    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.config = config
        self.declare("class_embedding", (config.hidden_size,))
        self.patch_embedding = Conv2d(
            config.num_channels,
            config.hidden_size,
            config.patch_size,
            stride=config.patch_size,
            bias=False,
        )
        self.position_embedding = Embedding(config.num_patches + 1, config.hidden_size)

    def __call__(self, pixels: Tensor) -> Tensor:
        c = self.config
        expected = (c.num_channels, c.image_size, c.image_size)
        if pixels.ndim != 4 or pixels.shape[1:] != expected:
            raise InvalidArgumentError(
                f"CLIPModel: pixel_values must be (batch, {expected[0]}, {expected[1]},"
                f" {expected[2]}), got {pixels.shape}"
            )
        x = self.patch_embedding(pixels)
        batch, hidden = x.shape[:2]
        patches = x.reshape(batch, hidden, -1).permute(0, 2, 1)
        cls = self.class_embedding.reshape(1, 1, hidden).expand(batch, 1, hidden)
        return ops.concat([cls, patches], axis=1) + self.position_embedding.weight


class CLIPVisionTransformer(Module):
    def __init__(self, config: CLIPVisionConfig) -> None:
        super().__init__()
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = LayerNorm(
            config.hidden_size, config.layer_norm_eps
        )  # sic: the checkpoint key
        self.encoder = CLIPEncoder(config)
        self.post_layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps)

    def __call__(self, pixels: Tensor) -> Tensor:
        """The pooled ([CLS]) features, (B, hidden)."""
        hidden = self.encoder(self.pre_layrnorm(self.embeddings(pixels)), None)
        return self.post_layernorm(hidden[:, 0])


def l2_normalize(x: Tensor) -> Tensor:
    """Rows of ``x`` divided by their Euclidean norm."""
    return x / ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True))


class CLIPModel(Module):
    """Both towers: ``get_text_features``, ``get_image_features``, and ``__call__`` for the
    scaled cosine-similarity logits."""

    config_class: ClassVar[type[CLIPConfig]] = CLIPConfig

    logit_scale: Tensor
    quantizable_embeddings: ClassVar[tuple[str, ...]] = (
        "text_model.embeddings.token_embedding.weight",
    )
    ignored_keys: ClassVar[tuple[str, ...]] = (
        "text_model.embeddings.position_ids",
        "vision_model.embeddings.position_ids",
    )

    def __init__(self, config: CLIPConfig) -> None:
        super().__init__()
        self.config = config
        self.text_model = CLIPTextTransformer(config.text_config)
        self.vision_model = CLIPVisionTransformer(config.vision_config)
        self.visual_projection = Linear(
            config.vision_config.hidden_size, config.projection_dim, bias=False
        )
        self.text_projection = Linear(
            config.text_config.hidden_size, config.projection_dim, bias=False
        )
        self.declare("logit_scale", ())

    def get_text_features(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Projected (unnormalised) text embeddings, (B, projection_dim)."""
        return self.text_projection(self.text_model(input_ids, attention_mask))

    def get_image_features(self, pixel_values: Tensor) -> Tensor:
        """Projected (unnormalised) image embeddings, (B, projection_dim)."""
        return self.visual_projection(self.vision_model(pixel_values))

    def logits(self, image_embeds: Tensor, text_embeds: Tensor) -> Tensor:
        """``exp(logit_scale) * cos(image, text)``: (images, texts) from projected embeddings."""
        scale = ops.exp(self.logit_scale)
        return ops.matmul(l2_normalize(image_embeds), l2_normalize(text_embeds).T) * scale

    def __call__(
        self, input_ids: Tensor, pixel_values: Tensor, attention_mask: Tensor | None = None
    ) -> CLIPOutput:
        text = self.get_text_features(input_ids, attention_mask)
        image = self.get_image_features(pixel_values)
        per_image = self.logits(image, text)
        return CLIPOutput(per_image, per_image.T, l2_normalize(text), l2_normalize(image))


def model_class_for(config: Mapping[str, Any], weights: Mapping[str, Any] | None) -> type[Module]:
    """The class a ``clip`` checkpoint loads into (see ``loading.MODEL_FAMILIES``)."""
    return CLIPModel
