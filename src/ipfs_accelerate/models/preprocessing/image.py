"""Image preprocessing per a checkpoint's ``preprocessor_config.json`` (Pillow + numpy).

The steps and their order follow Hugging Face's image processors (ViT, CLIP): convert to
RGB (transparent pixels composited on white), resize with Pillow (to ``height``x``width``, or
the shortest edge to ``shortest_edge`` keeping the aspect ratio), center crop (zero padding an
image smaller than the crop), rescale (``* rescale_factor``), normalize
(``(x - mean) / std``), channels first.

Accepted images: a path (str or ``pathlib.Path``), a ``PIL.Image.Image``, or a numpy array
(H, W), (H, W, C) or (C, H, W) with C in 1, 3, 4; uint8 arrays hold 0..255, floating arrays
hold 0..1 (converted to 0..255 and rounded, as Hugging Face does before resizing). An image
that cannot be opened or decoded raises PreprocessingError naming it, and so does one whose
header claims more than ``max_pixels`` pixels (checked before decoding: a decompression bomb
costs nothing) or whose resized size would (a 1 x 50,000,000 image resized by its shortest
edge). Pillow's own ``DecompressionBombError`` becomes a PreprocessingError too.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ipfs_accelerate.errors import CheckpointError, PreprocessingError

__all__ = ["DEFAULT_MAX_IMAGE_PIXELS", "ImageProcessor", "load_image"]

Array = np.ndarray[Any, Any]

#: default bound on an image's pixels (2**26: 8192 x 8192), below Pillow's own warning
#: threshold (``PIL.Image.MAX_IMAGE_PIXELS``, about 89.5 million)
DEFAULT_MAX_IMAGE_PIXELS = 1 << 26

_RESAMPLE_NAMES = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


@dataclass
class ImageProcessor:
    """The preprocessing of one checkpoint; ``processor(images) -> (B, 3, H, W) float32``."""

    do_resize: bool = True
    size: dict[str, int] = field(default_factory=lambda: {"height": 224, "width": 224})
    resample: int = 2
    do_center_crop: bool = False
    crop_size: dict[str, int] = field(default_factory=lambda: {"height": 224, "width": 224})
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    image_std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    #: the most pixels an image may have when decoded, and after resizing
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], *, source: str = "preprocessor_config.json"
    ) -> ImageProcessor:
        """Read the Hugging Face keys; unknown keys are ignored, bad values raise
        CheckpointError."""
        proc = cls()
        for key in ("do_resize", "do_center_crop", "do_rescale", "do_normalize"):
            if data.get(key) is not None:
                setattr(proc, key, bool(data[key]))
        if data.get("resample") is not None:
            resample = data["resample"]
            if not isinstance(resample, int) or resample not in _RESAMPLE_NAMES:
                raise CheckpointError(
                    f"{source}: resample {resample!r} is not a Pillow filter number (0-5)"
                )
            proc.resample = resample
        if data.get("size") is not None:
            proc.size = _size_dict(data["size"], source, "size", allow_shortest=True)
        if data.get("crop_size") is not None:
            proc.crop_size = _size_dict(
                data["crop_size"], source, "crop_size", allow_shortest=False
            )
        if data.get("rescale_factor") is not None:
            proc.rescale_factor = float(data["rescale_factor"])
        for key in ("image_mean", "image_std"):
            value = data.get(key)
            if value is None:
                continue
            values = (
                [float(value)] * 3 if isinstance(value, int | float) else [float(v) for v in value]
            )
            if len(values) != 3:
                raise CheckpointError(f"{source}: {key} must have 3 values (RGB), got {value!r}")
            setattr(proc, key, values)
        if any(s == 0 for s in proc.image_std):
            raise CheckpointError(f"{source}: image_std {proc.image_std} contains 0")
        return proc

    @classmethod
    def from_checkpoint(cls, directory: Path) -> ImageProcessor:
        from ipfs_accelerate.models.loading import read_json

        path = directory / "preprocessor_config.json"
        if not path.exists():
            raise CheckpointError(
                f"{path}: missing; image pipelines need the checkpoint's preprocessor_config.json"
            )
        return cls.from_dict(read_json(path), source=str(path))

    def __call__(self, images: Any) -> Array:
        """Preprocess one image or a sequence of images into (B, 3, H, W) float32."""
        batch = list(images) if isinstance(images, list | tuple) else [images]
        if not batch:
            raise PreprocessingError("ImageProcessor: no images given")
        out = [self._one(image, i) for i, image in enumerate(batch)]
        shapes = {a.shape for a in out}
        if len(shapes) > 1:
            raise PreprocessingError(
                f"ImageProcessor: images came out in different sizes {sorted(shapes)}; add a "
                "center crop"
            )
        return np.stack(out).astype(np.float32, copy=False)

    def _one(self, image: Any, index: int) -> Array:
        pil = load_image(image, index=index, max_pixels=self.max_pixels)
        if self.do_resize:
            height, width = self._resize_target(pil.width, pil.height)
            if height * width > self.max_pixels:
                raise PreprocessingError(
                    f"image {index}: resizing {pil.width}x{pil.height} gives {width}x{height} "
                    f"pixels, over the bound of {self.max_pixels} (max_pixels)"
                )
            pil = pil.resize((width, height), resample=self.resample)
        pixels = np.asarray(pil, dtype=np.uint8).transpose(2, 0, 1)  # (3, H, W)
        if self.do_center_crop:
            pixels = _center_crop(pixels, self.crop_size["height"], self.crop_size["width"])
        values = pixels.astype(np.float32)
        if self.do_rescale:
            values *= np.float32(self.rescale_factor)
        if self.do_normalize:
            mean = np.asarray(self.image_mean, dtype=np.float32)[:, None, None]
            std = np.asarray(self.image_std, dtype=np.float32)[:, None, None]
            values = (values - mean) / std
        return values

    def _resize_target(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) after resizing, as Hugging Face computes it."""
        if "shortest_edge" in self.size:
            edge = self.size["shortest_edge"]
            short, long = (width, height) if width <= height else (height, width)
            new_long = int(edge * long / short)
            return (new_long, edge) if width <= height else (edge, new_long)
        return self.size["height"], self.size["width"]


def _size_dict(value: Any, source: str, key: str, *, allow_shortest: bool) -> dict[str, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        return {"shortest_edge": value} if allow_shortest else {"height": value, "width": value}
    if isinstance(value, dict):
        if "height" in value and "width" in value:
            return {"height": int(value["height"]), "width": int(value["width"])}
        if allow_shortest and "shortest_edge" in value:
            return {"shortest_edge": int(value["shortest_edge"])}
    raise CheckpointError(
        f"{source}: {key} {value!r} is not supported (height/width or shortest_edge)"
    )


def _center_crop(pixels: Array, height: int, width: int) -> Array:
    _, h, w = pixels.shape
    if h < height or w < width:  # pad with zeros around the image first, as Hugging Face does
        new_h, new_w = max(h, height), max(w, width)
        padded = np.zeros((pixels.shape[0], new_h, new_w), dtype=pixels.dtype)
        top, left = math.ceil((new_h - h) / 2), math.ceil((new_w - w) / 2)
        padded[:, top : top + h, left : left + w] = pixels
        pixels, h, w = padded, new_h, new_w
    top, left = (h - height) // 2, (w - width) // 2
    return pixels[:, top : top + height, left : left + width]


def load_image(image: Any, *, index: int = 0, max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS) -> Any:
    """``image`` (path, PIL image or array) as an RGB ``PIL.Image.Image``. A path, or a PIL
    image opened but not yet decoded, is refused when its header claims more than
    ``max_pixels`` pixels, before it is decoded."""
    from PIL import Image, ImageFile, UnidentifiedImageError

    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise PreprocessingError(f"max_pixels must be a positive int, got {max_pixels!r}")
    if isinstance(image, str | os.PathLike):
        path = Path(image)
        try:
            with Image.open(path) as opened:
                _check_pixels(opened, index, max_pixels)
                opened.load()
                pil = opened.copy()
        except FileNotFoundError:
            raise PreprocessingError(f"image {index}: file {str(path)!r} does not exist") from None
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PreprocessingError(f"image {index}: {str(path)!r}: {exc}") from None
        except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
            raise PreprocessingError(
                f"image {index}: cannot decode {str(path)!r} ({exc})"
            ) from None
    elif isinstance(image, Image.Image):
        pil = image
        if isinstance(pil, ImageFile.ImageFile) and pil.fp is not None:  # not decoded yet
            _check_pixels(pil, index, max_pixels)
        try:
            pil.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise PreprocessingError(f"image {index}: {exc}") from None
        except (OSError, ValueError) as exc:
            raise PreprocessingError(
                f"image {index}: cannot decode the PIL image ({exc})"
            ) from None
    elif isinstance(image, np.ndarray):
        pil = Image.fromarray(_array_to_uint8(image, index))
    elif isinstance(image, bytes | bytearray):
        raise PreprocessingError(
            f"image {index}: raw bytes are not accepted; wrap them in io.BytesIO and PIL.Image.open"
        )
    else:
        raise PreprocessingError(
            f"image {index}: expected a path, a PIL image or a numpy array, got "
            f"{type(image).__name__}"
        )
    return _to_rgb(pil)


def _check_pixels(pil: Any, index: int, max_pixels: int) -> None:
    width, height = pil.size
    if width * height > max_pixels:
        raise PreprocessingError(
            f"image {index}: {width}x{height} is {width * height} pixels, over the bound of "
            f"{max_pixels} (max_pixels)"
        )


def _to_rgb(pil: Any) -> Any:
    from PIL import Image

    if pil.mode == "RGB":
        return pil
    if pil.mode in ("RGBA", "LA", "PA") or (pil.mode == "P" and "transparency" in pil.info):
        rgba = pil.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return pil.convert("RGB")


def _array_to_uint8(array: Array, index: int) -> Array:
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = array.transpose(1, 2, 0)  # channels first -> last
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise PreprocessingError(
            f"image {index}: array of shape {array.shape} is not (H, W), (H, W, C) or (C, H, W) "
            "with C in 1, 3, 4"
        )
    if array.size == 0:
        raise PreprocessingError(f"image {index}: empty array of shape {array.shape}")
    if array.dtype == np.uint8:
        return np.ascontiguousarray(array)
    if array.dtype.kind == "f":
        if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
            raise PreprocessingError(
                f"image {index}: floating-point pixels must lie in [0, 1] (got "
                f"{float(np.nanmin(array))}..{float(np.nanmax(array))})"
            )
        return np.round(array * 255).astype(np.uint8)
    if array.dtype.kind in "iu":
        if array.min() < 0 or array.max() > 255:
            raise PreprocessingError(
                f"image {index}: integer pixels must lie in 0..255 (got "
                f"{array.min()}..{array.max()})"
            )
        return array.astype(np.uint8)
    raise PreprocessingError(f"image {index}: unsupported array dtype {array.dtype}")
