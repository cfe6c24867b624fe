"""Which model families can share which kinds of tensors.

The table says which families produce or consume a representation of each kind (e.g. BERT,
RoBERTa and T5 all build text embeddings), so a manager holding tensors for two such models
can point out that they might share one. Model names are matched to families by
:func:`model_family` ("openai/whisper-tiny" -> "whisper", "whisper_text" stays "whisper_text").
"""

from __future__ import annotations

import re
from types import MappingProxyType
from typing import Final

from ipfs_accelerate.errors import InvalidArgumentError, UnknownTensorTypeError

__all__ = ["SHARING_PATTERNS", "get_compatible_models_for_tensor", "model_family"]

SHARING_PATTERNS: Final = MappingProxyType(
    {
        "text_embedding": ("bert", "roberta", "t5", "llama", "bart", "gpt2"),
        "vision_embedding": ("vit", "clip", "detr", "swin", "dino"),
        "audio_embedding": ("whisper", "wav2vec2", "hubert", "clap"),
        "vision_text_joint": ("clip", "llava", "blip", "xclip"),
        "audio_text_joint": ("clap", "whisper_text", "wav2vec2_text"),
    }
)

# longest first, so "whisper_text" is tried before "whisper" and "xclip" before "clip"
_FAMILIES: Final = tuple(
    sorted(
        {family for models in SHARING_PATTERNS.values() for family in models}, key=len, reverse=True
    )
)
# a family name, an optional version ("llama2", "dinov2", "blip-2" via the separator), then a
# separator or the end: "bert-base-uncased" is BERT, "bertology" is not
_PATTERNS: Final = tuple(
    (family, re.compile(re.escape(family) + r"(?:v?\d+(?:\.\d+)?)?(?:[-_.:\s]|$)"))
    for family in _FAMILIES
)


def get_compatible_models_for_tensor(tensor_type: str) -> list[str]:
    """The model families that can share a tensor of ``tensor_type`` (a new list each call).

    Types: text_embedding, vision_embedding, audio_embedding, vision_text_joint,
    audio_text_joint. Any other name raises UnknownTensorTypeError listing these.
    """
    models = SHARING_PATTERNS.get(tensor_type) if isinstance(tensor_type, str) else None
    if models is None:
        raise UnknownTensorTypeError(
            f"get_compatible_models_for_tensor: unknown tensor type {tensor_type!r}; "
            f"known types: {', '.join(SHARING_PATTERNS)}"
        )
    return list(models)


def model_family(model_name: str) -> str | None:
    """The family in :data:`SHARING_PATTERNS` that ``model_name`` belongs to, or None.

    Case-insensitive; an organisation prefix ("openai/") is ignored; the name must equal a
    family or start with it, optionally followed by a version, then a separator
    ("bert-base-uncased" -> "bert", "dinov2-small" -> "dino", "bertology" -> None). The
    longest matching family wins.
    """
    if not isinstance(model_name, str) or not model_name:
        raise InvalidArgumentError(
            f"model_family: model name must be a non-empty string, got {model_name!r}"
        )
    name = model_name.rsplit("/", 1)[-1].lower()
    for family, pattern in _PATTERNS:
        if pattern.match(name):
            return family
    return None
