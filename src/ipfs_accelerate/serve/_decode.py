"""Decoding the media a request uploads: encoded images and audio files.

The routes decode on the model's thread (inside :meth:`ServerState.run`), so a large upload
never blocks the event loop; a file that does not decode is a ``bad_media`` error naming it.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

from ._errors import ServeError

__all__ = ["decode_audio", "decode_image"]

Array = np.ndarray[Any, Any]


def decode_image(data: bytes, index: int = 0) -> Any:
    """An encoded image file (PNG, JPEG, WebP... anything Pillow reads) as an RGB PIL image."""
    from PIL import Image, UnidentifiedImageError

    from ipfs_accelerate.models.preprocessing.image import load_image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            image = opened.copy()
    except (
        UnidentifiedImageError,
        OSError,
        ValueError,
        SyntaxError,
        Image.DecompressionBombError,
    ) as exc:
        raise ServeError(
            "bad_media", f"image {index} could not be decoded ({type(exc).__name__}: {exc})"
        ) from None
    return load_image(image, index=index)


def decode_audio(data: bytes, name: str = "audio") -> tuple[Array, int]:
    """An encoded audio file (WAV, FLAC, OGG, MP3: what libsndfile reads) as float32 samples
    (samples, channels) and its sampling rate."""
    import soundfile

    try:
        samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    except Exception as exc:  # soundfile raises LibsndfileError, RuntimeError, TypeError...
        raise ServeError(
            "bad_media",
            f"{name} could not be decoded as audio ({exc}); send WAV, FLAC, OGG or MP3",
            param="file",
        ) from None
    if samples.size == 0:
        raise ServeError("bad_media", f"{name} holds no audio samples", param="file")
    return samples, int(rate)
