"""Turning raw inputs into model inputs: text (tokenizers), images (Pillow + numpy) and audio
(soundfile + numpy), each configured from the checkpoint's own files."""

from __future__ import annotations

from ipfs_accelerate.models.preprocessing.audio import (
    WhisperFeatureExtractor,
    load_audio,
    mel_filter_bank,
    read_audio,
    resample,
)
from ipfs_accelerate.models.preprocessing.image import ImageProcessor, load_image
from ipfs_accelerate.models.preprocessing.text import BatchEncoding, TextTokenizer

__all__ = [
    "BatchEncoding",
    "ImageProcessor",
    "TextTokenizer",
    "WhisperFeatureExtractor",
    "load_audio",
    "load_image",
    "mel_filter_bank",
    "read_audio",
    "resample",
]
