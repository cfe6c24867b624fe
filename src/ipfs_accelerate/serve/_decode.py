"""Decoding the media a request uploads: encoded images and audio files.

The routes decode on the model's thread (inside :meth:`ServerState.run`), so a large upload
never blocks the event loop; a file that does not decode, or whose header claims more than
the server's limits (pixels, seconds, sampling rate), is a ``bad_media`` error naming it,
refused before its pixels or samples are decoded.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ipfs_accelerate.errors import PreprocessingError

from ._config import ServerConfig
from ._errors import ServeError

__all__ = ["decode_audio", "decode_image"]

Array = np.ndarray[Any, Any]


def decode_image(data: bytes, index: int, config: ServerConfig) -> Any:
    """An encoded image file (PNG, JPEG, WebP... anything Pillow reads) as an RGB PIL image,
    refused from its header when it has more than ``config.max_image_pixels`` pixels."""
    from PIL import Image, UnidentifiedImageError

    from ipfs_accelerate.models.preprocessing.image import load_image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            image = load_image(opened, index=index, max_pixels=config.max_image_pixels)
            return image.copy() if image is opened else image  # closing frees ``opened``
    except PreprocessingError as exc:
        raise ServeError("bad_media", str(exc)) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ServeError(
            "bad_media", f"image {index} claims more pixels than any image this server decodes"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        raise ServeError(
            "bad_media", f"image {index} could not be decoded; send PNG, JPEG, WebP or GIF"
        ) from None


def decode_audio(data: bytes, config: ServerConfig, name: str = "audio") -> tuple[Array, int]:
    """An encoded audio file (WAV, FLAC, OGG, MP3: what libsndfile reads) as float32 samples
    (samples, channels) and its sampling rate; its header's rate must lie in the server's
    range and its length within ``config.max_audio_seconds`` before anything is decoded."""
    from ipfs_accelerate.models.preprocessing.audio import read_audio

    try:
        samples, rate = read_audio(
            io.BytesIO(data),
            name=repr(name),
            max_seconds=config.max_audio_seconds,
            sampling_rates=(config.min_sampling_rate, config.max_sampling_rate),
        )
    except PreprocessingError as exc:
        raise ServeError("bad_media", str(exc), param="file") from None
    if samples.size == 0:
        raise ServeError("bad_media", f"{name} holds no audio samples", param="file")
    return samples, rate


def check_audio_samples(count: int, rate: Any, config: ServerConfig) -> None:
    """Raw samples (KServe FP32 audio): the rate in the server's range and ``count`` samples
    within ``config.max_audio_seconds``, before any array is built."""
    low, high = config.min_sampling_rate, config.max_sampling_rate
    if isinstance(rate, bool) or not isinstance(rate, int) or not low <= rate <= high:
        raise ServeError(
            "invalid_request",
            f"parameter 'sampling_rate' must be an int within {low}..{high} Hz, got {rate!r}",
            param="sampling_rate",
        )
    if count > config.max_audio_seconds * rate:
        raise ServeError(
            "bad_media",
            f"{count} samples at {rate} Hz are {count / rate:.1f} s of audio, longer than this "
            f"server's bound of {config.max_audio_seconds:g} s",
        )
