"""Whisper (``model_type: whisper``): the log-mel encoder and the token decoder with a KV cache.

Parameter names equal the keys of Hugging Face ``WhisperForConditionalGeneration``
checkpoints; ``proj_out.weight`` may be absent (it is tied to the token embedding).

Decoding is incremental: :meth:`WhisperForConditionalGeneration.start_decoding` computes the
cross-attention keys/values of every decoder layer once from the encoder output, and each
:meth:`~WhisperForConditionalGeneration.decode_step` runs only the new tokens, adding their
self-attention keys/values to a fixed-shape cache (see :class:`DecoderCache`). Greedy search
over this (forced prompt tokens, suppressed tokens, language detection, long-audio chunking)
lives in :class:`ipfs_accelerate.models.pipelines.SpeechRecognizer`.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import InvalidArgumentError, UnsupportedArchitectureError
from ipfs_accelerate.hal._backend import Backend, CapturedFunction
from ipfs_accelerate.models._config import check_activation, from_dict, require_model_type
from ipfs_accelerate.models._module import (
    Conv1d,
    Embedding,
    LayerNorm,
    Linear,
    Module,
    ModuleList,
    activation,
    merge_heads,
    split_heads,
)
from ipfs_accelerate.tensor import Tensor, from_numpy, zeros

Array = np.ndarray[Any, Any]

__all__ = ["DecoderCache", "WhisperConfig", "WhisperForConditionalGeneration"]

#: self-attention slots of a fresh decoder cache (doubled whenever decoding fills them)
INITIAL_CACHE_SLOTS = 32
#: captured one-token decode steps kept per model (least recently used go first): one per
#: cache capacity (32, 64, 128, 256, 448) for each batch size (beams) in use
MAX_CAPTURED_STEPS = 16
#: teacher-forced tokens (a stream's committed text) are decoded in blocks of these sizes
#: (as many of the largest as fit, then at most one of each smaller, then one token), each
#: block a replayed step with every position's logits
FORCED_BLOCKS = (8, 4, 2)
#: on a backend that compiles a graph per shape, the alignment pass (word timestamps) pads
#: its tokens to a multiple of this, so that a stream's decodes reuse a few graphs instead of
#: compiling one per transcript length
ALIGNMENT_BUCKET = 32


@dataclass
class WhisperConfig:
    """The fields of a Whisper ``config.json`` the model uses (Hugging Face defaults)."""

    vocab_size: int = 51865
    num_mel_bins: int = 80
    d_model: int = 384
    encoder_layers: int = 4
    encoder_attention_heads: int = 6
    decoder_layers: int = 4
    decoder_attention_heads: int = 6
    encoder_ffn_dim: int = 1536
    decoder_ffn_dim: int = 1536
    activation_function: str = "gelu"
    max_source_positions: int = 1500
    max_target_positions: int = 448
    scale_embedding: bool = False
    decoder_start_token_id: int = 50257
    eos_token_id: int = 50256
    pad_token_id: int = 50256
    suppress_tokens: list[int] = field(default_factory=list)
    begin_suppress_tokens: list[int] = field(default_factory=list)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WhisperConfig:
        require_model_type(data, ("whisper",), "WhisperForConditionalGeneration")
        config = from_dict(cls, data, context="WhisperConfig")
        for name, heads in (
            ("encoder", config.encoder_attention_heads),
            ("decoder", config.decoder_attention_heads),
        ):
            if config.d_model % heads:
                raise UnsupportedArchitectureError(
                    f"Whisper: d_model {config.d_model}"
                    f" is not divisible by {name}_attention_heads {heads}"
                )
        check_activation(config.activation_function, "Whisper")
        return config

    @property
    def input_frames(self) -> int:
        """Mel frames per window the encoder takes (two per encoder position: conv2 has
        stride 2)."""
        return 2 * self.max_source_positions


class WhisperAttention(Module):
    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.k_proj = Linear(d_model, d_model, bias=False)
        self.v_proj = Linear(d_model, d_model)
        self.q_proj = Linear(d_model, d_model)
        self.out_proj = Linear(d_model, d_model)

    def keys_values(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return split_heads(self.k_proj(x), self.num_heads), split_heads(
            self.v_proj(x), self.num_heads
        )

    def attend(self, x: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
        q = split_heads(self.q_proj(x), self.num_heads)
        return self.out_proj(
            merge_heads(ops.scaled_dot_product_attention(q, keys, values, attn_mask=mask))
        )

    def __call__(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        keys, values = self.keys_values(x)
        return self.attend(x, keys, values, mask)


class WhisperEncoderLayer(Module):
    def __init__(self, config: WhisperConfig) -> None:
        super().__init__()
        d = config.d_model
        self.act = config.activation_function
        self.self_attn = WhisperAttention(d, config.encoder_attention_heads)
        self.self_attn_layer_norm = LayerNorm(d, 1e-5)
        self.fc1 = Linear(d, config.encoder_ffn_dim)
        self.fc2 = Linear(config.encoder_ffn_dim, d)
        self.final_layer_norm = LayerNorm(d, 1e-5)

    def __call__(self, x: Tensor) -> Tensor:
        x = x + self.self_attn(self.self_attn_layer_norm(x))
        return x + self.fc2(activation(self.act, self.fc1(self.final_layer_norm(x))))


class WhisperEncoder(Module):
    def __init__(self, config: WhisperConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.conv1 = Conv1d(config.num_mel_bins, d, 3, padding=1)
        self.conv2 = Conv1d(d, d, 3, stride=2, padding=1)
        self.embed_positions = Embedding(config.max_source_positions, d)
        self.layers = ModuleList(
            [WhisperEncoderLayer(config) for _ in range(config.encoder_layers)]
        )
        self.layer_norm = LayerNorm(d, 1e-5)

    def __call__(self, features: Tensor) -> Tensor:
        c = self.config
        if features.ndim != 3 or features.shape[1:] != (c.num_mel_bins, c.input_frames):
            raise InvalidArgumentError(
                f"Whisper encoder: input_features must be (batch, {c.num_mel_bins},"
                f" {c.input_frames}) (30 s of log-mel frames), got {features.shape}"
            )
        x = ops.gelu(self.conv1(features))
        x = ops.gelu(self.conv2(x)).permute(0, 2, 1)
        x = x + self.embed_positions.weight
        for layer in self.layers:
            x = layer(x)
        return self.layer_norm(x)


class WhisperDecoderLayer(Module):
    def __init__(self, config: WhisperConfig) -> None:
        super().__init__()
        d = config.d_model
        self.act = config.activation_function
        self.self_attn = WhisperAttention(d, config.decoder_attention_heads)
        self.self_attn_layer_norm = LayerNorm(d, 1e-5)
        self.encoder_attn = WhisperAttention(d, config.decoder_attention_heads)
        self.encoder_attn_layer_norm = LayerNorm(d, 1e-5)
        self.fc1 = Linear(d, config.decoder_ffn_dim)
        self.fc2 = Linear(config.decoder_ffn_dim, d)
        self.final_layer_norm = LayerNorm(d, 1e-5)


@dataclass
class DecoderCache:
    """Keys/values of every decoder layer: self-attention in ``capacity`` slots per layer and
    cross-attention (fixed, from the encoder output). ``length`` counts the tokens decoded.

    The self-attention slots have the shape (B, heads, capacity, head_dim): each step shifts
    the oldest (empty) slots out and the new tokens' keys/values in at the end, and a mask hides
    the slots not filled yet. The capacity starts at 32 tokens and doubles when full (up to
    ``max_target_positions``), so the one-token steps between doublings all have the same
    shapes: a backend that compiles a graph per input signature compiles a handful of step
    graphs per transcript, not one per token, while the CPU copies no more than about twice
    the filled cache per step.
    """

    cross: list[tuple[Tensor, Tensor]]
    self_attn: list[tuple[Tensor, Tensor]]
    capacity: int
    length: int = 0

    @property
    def batch_size(self) -> int:
        return self.cross[0][0].shape[0] if self.cross else 0


class WhisperDecoder(Module):
    def __init__(self, config: WhisperConfig) -> None:
        super().__init__()
        self.config = config
        d = config.d_model
        self.embed_tokens = Embedding(config.vocab_size, d)
        self.embed_positions = Embedding(config.max_target_positions, d)
        self.layers = ModuleList(
            [WhisperDecoderLayer(config) for _ in range(config.decoder_layers)]
        )
        self.layer_norm = LayerNorm(d, 1e-5)

    def __call__(
        self,
        ids: Tensor,
        cache: DecoderCache,
        cross_inputs: dict[int, Tensor] | None = None,
        *,
        positions: Tensor | None = None,
        mask: Tensor | None = None,
    ) -> Tensor:
        """Hidden states (B, L, d) of the new tokens ``ids``; adds their keys/values to
        ``cache``. ``cross_inputs`` (layer index -> None) receives each named layer's normalised
        input to its cross-attention (what word timestamps need to recompute its weights).
        ``positions`` and ``mask`` (from :func:`step_inputs`) are made here when not given; a
        captured step passes them in so that they are inputs of its graph, not constants."""
        length = ids.shape[1]
        past = cache.length
        limit = self.config.max_target_positions
        if past + length > limit:
            raise InvalidArgumentError(
                f"Whisper decoder: {past + length} tokens exceed max_target_positions {limit}"
            )
        if past + length > cache.capacity:
            _grow(cache, min(limit, max(2 * cache.capacity, past + length)))
        if positions is None or mask is None:
            position_ids, allowed = step_inputs(past, length, cache.capacity)
            positions = from_numpy(position_ids, ids.device)
            mask = from_numpy(allowed, ids.device)
        x = self.embed_tokens(ids)
        if self.config.scale_embedding:
            x = x * float(np.sqrt(self.config.d_model))
        x = x + self.embed_positions(positions)
        for n, layer in enumerate(self.layers):
            normed = layer.self_attn_layer_norm(x)
            new_keys, new_values = layer.self_attn.keys_values(normed)
            old_keys, old_values = cache.self_attn[n]
            keys = ops.concat([old_keys[:, :, length:], new_keys], axis=2)
            values = ops.concat([old_values[:, :, length:], new_values], axis=2)
            cache.self_attn[n] = (keys, values)
            x = x + layer.self_attn.attend(normed, keys, values, mask)
            cross_k, cross_v = cache.cross[n]
            cross_in = layer.encoder_attn_layer_norm(x)
            if cross_inputs is not None and n in cross_inputs:
                cross_inputs[n] = cross_in
            x = x + layer.encoder_attn.attend(cross_in, cross_k, cross_v, None)
            x = x + layer.fc2(activation(layer.act, layer.fc1(layer.final_layer_norm(x))))
        cache.length = past + length
        return self.layer_norm(x)


def step_inputs(past: int, length: int, slots: int) -> tuple[Array, Array]:
    """The position ids (length,) of ``length`` new tokens after ``past`` and the mask
    (length, slots) of the cache slots each may attend to."""
    # slot j holds absolute position past + length - slots + j; token i (position past + i)
    # sees the filled slots up to its own
    j = np.arange(slots)[None, :]
    i = np.arange(length)[:, None]
    allowed = (j >= slots - past - length) & (j <= slots - length + i)
    return np.arange(past, past + length, dtype=np.int64), allowed


def _grow(cache: DecoderCache, capacity: int) -> None:
    """Add empty slots in front of every layer's self-attention keys/values."""
    extra = capacity - cache.capacity
    for n, (keys, values) in enumerate(cache.self_attn):
        batch, heads, _, dim = keys.shape
        empty = zeros((batch, heads, extra, dim), device=keys.device)
        cache.self_attn[n] = (
            ops.concat([empty, keys], axis=2),
            ops.concat([empty, values], axis=2),
        )
    cache.capacity = capacity


_StepKey = tuple[str, int, int, int, int]


class _DecodeStepGraphs:
    """One-token decode steps replayed from graphs captured per signature (device, batch,
    cache capacity, encoder positions) on a backend that can capture functions
    (:meth:`~ipfs_accelerate.hal.Backend.capture`: webnn). The token, its position, the slot
    mask and every cache tensor (self- and cross-attention) are inputs of the graph, so a
    later step of the same signature feeds them to the compiled graph and no op of the model
    runs in Python. Steps of other backends, prompts (several tokens) and steps that grow the
    cache run the model."""

    def __init__(self, model: WhisperForConditionalGeneration) -> None:
        self.model = model
        self._captured: OrderedDict[_StepKey, CapturedFunction | None] = OrderedDict()

    def step(self, ids: Tensor, cache: DecoderCache) -> Tensor | None:
        """The logits of the step ``ids``, replayed, with its keys/values written into
        ``cache``: (B, vocab) for a one-token step (B, 1), (B, L, vocab) for a block of
        forced tokens (B, L) (L in FORCED_BLOCKS); None (nothing done) when it cannot be
        replayed."""
        from ipfs_accelerate import hal

        length = ids.shape[1]
        if (length != 1 and length not in FORCED_BLOCKS) or cache.length + length > cache.capacity:
            return None
        backend = hal.get_backend(ids.device)
        # a backend offers capture by overriding the contract's default (which declines)
        if type(backend).capture is Backend.capture:
            return None
        positions, allowed = step_inputs(cache.length, length, cache.capacity)
        layers = len(cache.cross)
        tensors = [
            *(k for k, _ in cache.cross),
            *(v for _, v in cache.cross),
            *(k for k, _ in cache.self_attn),
            *(v for _, v in cache.self_attn),
        ]
        key: _StepKey = (ids.device, ids.shape[0], length, cache.capacity, tensors[0].shape[2])
        if key in self._captured:
            self._captured.move_to_end(key)
            captured = self._captured[key]
        else:
            captured = self._capture(backend, cache, ids, positions, allowed, tensors)
            self._captured[key] = captured
            while len(self._captured) > MAX_CAPTURED_STEPS:
                self._captured.popitem(last=False)
        if captured is None:  # the model read a per-step value it does not declare
            return None
        results = captured.replay(ids, positions, allowed, *tensors)
        cache.self_attn = list(zip(results[1 : 1 + layers], results[1 + layers :], strict=True))
        cache.length += length
        return results[0]

    def _capture(
        self,
        backend: Backend,
        cache: DecoderCache,
        ids: Tensor,
        positions: Array,
        allowed: Array,
        tensors: list[Tensor],
    ) -> CapturedFunction | None:
        model, layers = self.model, len(cache.cross)

        def decode(*inputs: Tensor) -> list[Tensor]:
            step_ids, step_positions, step_mask = inputs[:3]
            given = inputs[3:]
            # the step writes into a stand-in cache whose tensors are the captured inputs
            shadow = DecoderCache(
                cross=list(zip(given[:layers], given[layers : 2 * layers], strict=True)),
                self_attn=list(
                    zip(given[2 * layers : 3 * layers], given[3 * layers :], strict=True)
                ),
                capacity=cache.capacity,
                length=cache.length,
            )
            hidden = model.model.decoder(step_ids, shadow, positions=step_positions, mask=step_mask)
            logits = model.proj_out(hidden[:, -1] if hidden.shape[1] == 1 else hidden)
            return [logits, *(k for k, _ in shadow.self_attn), *(v for _, v in shadow.self_attn)]

        device = ids.device
        inputs = [ids, from_numpy(positions, device), from_numpy(allowed, device), *tensors]
        return backend.capture(decode, inputs)

    @property
    def captured(self) -> int:
        """How many step signatures have a captured graph."""
        return sum(found is not None for found in self._captured.values())


class WhisperModel(Module):
    def __init__(self, config: WhisperConfig) -> None:
        super().__init__()
        self.encoder = WhisperEncoder(config)
        self.decoder = WhisperDecoder(config)


class WhisperForConditionalGeneration(Module):
    """Whisper encoder-decoder with the output projection (tied to the token embedding)."""

    config_class: ClassVar[type[WhisperConfig]] = WhisperConfig

    base_model_prefix: ClassVar[str] = "model"
    is_head_model: ClassVar[bool] = True
    tied_weights: ClassVar[dict[str, str]] = {
        "proj_out.weight": "model.decoder.embed_tokens.weight"
    }
    quantizable_embeddings: ClassVar[tuple[str, ...]] = ("model.decoder.embed_tokens.weight",)
    # int8 decoder blocks (weights per channel, with or without int8 inputs) and a head in
    # blocks of 128 changed words of whisper-tiny.en's transcript of espeak-ng speech; the
    # encoder in int8 and the token table (embedding and tied head) in 8-bit blocks of 32,
    # the head with block-rounded inputs, did not (docs/models.md, "Precision")
    int8_float_layers: ClassVar[tuple[str, ...]] = ("model.decoder.layers.",)
    int8_block_weights: ClassVar[tuple[str, ...]] = (
        "model.decoder.embed_tokens.weight",
        "proj_out.weight",
    )

    def __init__(self, config: WhisperConfig) -> None:
        super().__init__()
        self.config = config
        self.model = WhisperModel(config)
        self.proj_out = Linear(config.d_model, config.vocab_size, bias=False)
        #: the captured one-token decode steps (see :class:`_DecodeStepGraphs`)
        self.decode_graphs = _DecodeStepGraphs(self)

    def encode(self, input_features: Tensor) -> Tensor:
        """Encoder output (B, max_source_positions, d_model) from log-mel features
        (B, mels, frames)."""
        return self.model.encoder(input_features)

    def start_decoding(self, encoder_hidden: Tensor) -> DecoderCache:
        """A fresh cache: every layer's cross-attention keys/values for ``encoder_hidden`` and
        empty self-attention slots (see :class:`DecoderCache`)."""
        c = self.config
        cross = [
            layer.encoder_attn.keys_values(encoder_hidden) for layer in self.model.decoder.layers
        ]
        heads = c.decoder_attention_heads
        capacity = min(INITIAL_CACHE_SLOTS, c.max_target_positions)
        empty = zeros(
            (encoder_hidden.shape[0], heads, capacity, c.d_model // heads),
            device=encoder_hidden.device,
        )
        return DecoderCache(cross=cross, self_attn=[(empty, empty)] * len(cross), capacity=capacity)

    def decode_step(self, ids: Tensor, cache: DecoderCache, *, last_only: bool = True) -> Tensor:
        """Logits for the new tokens ``ids`` (B, L): (B, vocab) for the last one, or
        (B, L, vocab)."""
        if ids.ndim != 2 or ids.shape[0] != cache.batch_size:
            raise InvalidArgumentError(
                f"Whisper decode_step: ids must be (batch={cache.batch_size}, length),"
                f" got {ids.shape}"
            )
        if last_only == (ids.shape[1] == 1):
            # a one-token step, or a block of forced tokens with every position's logits
            replayed = self.decode_graphs.step(ids, cache)
            if replayed is not None:
                return replayed
        hidden = self.model.decoder(ids, cache)
        if last_only:
            hidden = hidden[:, -1]
        return self.proj_out(hidden)

    def cross_attention_weights(
        self, ids: Tensor, cache: DecoderCache, heads: Sequence[tuple[int, int]]
    ) -> Array:
        """Cross-attention probabilities (len(heads), L, source positions) of the decoder heads
        ``heads`` ((layer, head) pairs) for the teacher-forced tokens ``ids`` (1, L), decoded
        into ``cache`` (a fresh one from :meth:`start_decoding`; on a backend that compiles per
        shape it also holds padding after them, see ALIGNMENT_BUCKET). Word timestamps align
        tokens with audio by the checkpoint's ``alignment_heads``."""
        c = self.config
        for layer, head in heads:
            if not (0 <= layer < c.decoder_layers and 0 <= head < c.decoder_attention_heads):
                raise InvalidArgumentError(
                    f"Whisper alignment head ({layer}, {head}) is outside the decoder's"
                    f" {c.decoder_layers} layers x {c.decoder_attention_heads} heads"
                )
        if ids.ndim != 2 or ids.shape[0] != 1 or cache.batch_size != 1:
            raise InvalidArgumentError(
                f"Whisper cross_attention_weights: ids must be (1, length), got {ids.shape}"
            )
        length = ids.shape[1]
        padded = self._alignment_length(ids.device, length, cache.length)
        if padded > length:
            # tokens after the last one change nothing before it (the decoder is causal); the
            # padded rows are dropped below
            # padded on the host: one graph input of the bucket's shape
            full = np.full((1, padded), self.config.eos_token_id, dtype=np.int64)
            full[0, :length] = ids.numpy()[0]
            ids = from_numpy(full, ids.device)
        inputs: dict[int, Tensor] = {layer: ids for layer, _ in heads}
        self.model.decoder(ids, cache, inputs)
        scale = float(c.d_model // c.decoder_attention_heads) ** -0.5
        layers = sorted(inputs)
        per_layer: list[Tensor] = []
        for n in layers:
            attention = self.model.decoder.layers[n].encoder_attn
            queries = split_heads(attention.q_proj(inputs[n]), attention.num_heads)
            keys = cache.cross[n][0]
            scores = ops.matmul(queries * scale, keys.permute(0, 1, 3, 2))
            per_layer.append(ops.softmax(scores, axis=-1))
        # read back together: one graph (and one run) on a backend that compiles them
        stacked = (ops.concat(per_layer, axis=1) if len(per_layer) > 1 else per_layer[0]).numpy()
        at = {n: i * c.decoder_attention_heads for i, n in enumerate(layers)}
        return np.stack([stacked[0, at[layer] + head, :length] for layer, head in heads])

    def _alignment_length(self, device: str, length: int, past: int) -> int:
        """The tokens the alignment pass decodes: ``length``, or on a backend that compiles
        per shape (one that captures graphs) the next multiple of ALIGNMENT_BUCKET that fits
        under max_target_positions."""
        from ipfs_accelerate import hal

        backend = hal.get_backend(device)
        if type(backend).capture is Backend.capture:
            return length
        room = self.config.max_target_positions - past
        return max(length, min(room, -(-length // ALIGNMENT_BUCKET) * ALIGNMENT_BUCKET))

    def __call__(self, input_features: Tensor, decoder_input_ids: Tensor) -> Tensor:
        """Logits (B, L, vocab) of a full teacher-forced pass (no cache kept)."""
        cache = self.start_decoding(self.encode(input_features))
        return self.decode_step(decoder_input_ids, cache, last_only=False)


def model_class_for(config: Mapping[str, Any], weights: Mapping[str, Any] | None) -> type[Module]:
    """The class a ``whisper`` checkpoint loads into (see ``loading.MODEL_FAMILIES``)."""
    return WhisperForConditionalGeneration
