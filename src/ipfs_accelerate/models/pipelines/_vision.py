"""ViT image classification and CLIP zero-shot classification and embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Self

import numpy as np

from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.models.loading import Checkpoint, LoadReport
from ipfs_accelerate.models.pipelines._base import (
    Array,
    _check_batch_size,
    _l2_normalize,
    _Pipeline,
    _text_list,
)
from ipfs_accelerate.models.preprocessing.image import ImageProcessor
from ipfs_accelerate.models.preprocessing.text import TextTokenizer
from ipfs_accelerate.tensor import Tensor, from_numpy

if TYPE_CHECKING:
    from ipfs_accelerate.models.clip import CLIPModel
    from ipfs_accelerate.models.vit import ViTForImageClassification


def _image_list(images: Any) -> tuple[list[Any], bool]:
    if isinstance(images, list | tuple):
        if not images:
            raise InvalidArgumentError("no images given")
        return list(images), False
    return [images], True


class ImageClassifier(_Pipeline):
    """ViT image classification with the checkpoint's ``id2label`` names."""

    model: ViTForImageClassification

    def __init__(
        self,
        model: ViTForImageClassification,
        processor: ImageProcessor,
        checkpoint: Checkpoint,
        report: LoadReport,
    ) -> None:
        super().__init__(model, checkpoint, report)
        self.processor = processor
        self.labels = model.config.labels

    @classmethod
    def _model_class(cls) -> type[ViTForImageClassification]:
        from ipfs_accelerate.models.vit import ViTForImageClassification

        return ViTForImageClassification

    @classmethod
    def _from_loaded(
        cls, model: ViTForImageClassification, checkpoint: Checkpoint, report: LoadReport
    ) -> Self:
        return cls(model, ImageProcessor.from_checkpoint(checkpoint.path), checkpoint, report)

    def logits(self, images: Any, batch_size: int = 16) -> Array:
        """Raw class logits (N, num_labels) of the images."""
        _check_batch_size(batch_size)
        batch, _ = _image_list(images)
        parts = []
        for start in range(0, len(batch), batch_size):
            pixels = from_numpy(self.processor(batch[start : start + batch_size]), self.device)
            parts.append(self.model(pixels).numpy())
        return np.concatenate(parts)

    def classify(self, images: Any, top_k: int = 5, batch_size: int = 16) -> list[Any]:
        """The ``top_k`` most probable labels of each image as ``{"label", "score"}`` dicts,
        best first (scores are softmax probabilities over all labels). One image gives one
        list; a list of images gives a list of lists. ``top_k`` above the number of labels
        returns every label."""
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
            raise InvalidArgumentError(f"classify: top_k must be a positive int, got {top_k!r}")
        _, single = _image_list(images)
        logits = self.logits(images, batch_size)
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        k = min(top_k, probs.shape[1])
        results = []
        for row in probs:
            best = np.argsort(-row, kind="stable")[:k]
            results.append([{"label": self.labels[i], "score": float(row[i])} for i in best])
        return results[0] if single else results


class ZeroShotImageClassifier(_Pipeline):
    """CLIP: images against free-text labels, and the embeddings of both."""

    model: CLIPModel

    def __init__(
        self,
        model: CLIPModel,
        tokenizer: TextTokenizer,
        processor: ImageProcessor,
        checkpoint: Checkpoint,
        report: LoadReport,
    ) -> None:
        super().__init__(model, checkpoint, report)
        self.tokenizer = tokenizer
        self.processor = processor

    @classmethod
    def _model_class(cls) -> type[CLIPModel]:
        from ipfs_accelerate.models.clip import CLIPModel

        return CLIPModel

    @classmethod
    def _from_loaded(cls, model: CLIPModel, checkpoint: Checkpoint, report: LoadReport) -> Self:
        tokenizer = TextTokenizer.from_checkpoint(
            checkpoint.path, positions=model.config.text_config.max_position_embeddings
        )
        return cls(
            model, tokenizer, ImageProcessor.from_checkpoint(checkpoint.path), checkpoint, report
        )

    def _text_features(self, texts: list[str]) -> Tensor:
        encoded = self.tokenizer(texts)
        ids = from_numpy(encoded.input_ids, self.device)
        mask = from_numpy(encoded.attention_mask, self.device)
        return self.model.get_text_features(ids, mask)

    def _image_features(self, images: list[Any]) -> Tensor:
        return self.model.get_image_features(from_numpy(self.processor(images), self.device))

    def embed_texts(
        self, texts: str | Sequence[str], batch_size: int = 32, normalize: bool = True
    ) -> Array:
        """Projected text embeddings (N, projection_dim), L2-normalised unless
        ``normalize=False``."""
        _check_batch_size(batch_size)
        batch = [texts] if isinstance(texts, str) else _text_list(texts)
        parts = []
        for start in range(0, len(batch), batch_size):
            features = self._text_features(batch[start : start + batch_size])
            parts.append((_l2_normalize(features) if normalize else features).numpy())
        out = (
            np.concatenate(parts)
            if parts
            else np.empty((0, self.model.config.projection_dim), np.float32)
        )
        return out[0] if isinstance(texts, str) else out

    def embed_images(self, images: Any, batch_size: int = 16, normalize: bool = True) -> Array:
        """Projected image embeddings (N, projection_dim), L2-normalised unless
        ``normalize=False``."""
        _check_batch_size(batch_size)
        batch, single = _image_list(images)
        parts = []
        for start in range(0, len(batch), batch_size):
            features = self._image_features(batch[start : start + batch_size])
            parts.append((_l2_normalize(features) if normalize else features).numpy())
        out = np.concatenate(parts)
        return out[0] if single else out

    def classify(
        self,
        images: Any,
        labels: Sequence[str],
        hypothesis_template: str = "This is a photo of {}.",
        batch_size: int = 16,
    ) -> list[Any]:
        """Each image's labels as ``{"label", "score"}`` dicts, best first; scores are the
        softmax over the labels of CLIP's scaled cosine similarities between the image and
        ``hypothesis_template.format(label)``. One image gives one list, a list gives lists."""
        label_list = _text_list(labels)
        if not label_list:
            raise InvalidArgumentError("classify: give at least one label")
        if "{}" not in hypothesis_template:
            raise InvalidArgumentError(
                f"classify: hypothesis_template {hypothesis_template!r} has no '{{}}' for the label"
            )
        _, single = _image_list(images)
        text = self.embed_texts([hypothesis_template.format(label) for label in label_list])
        image = self.embed_images(images, batch_size)
        image = image[None, :] if single else image
        scale = float(np.exp(self.model.logit_scale.numpy()))
        logits = scale * image @ text.T
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probs = shifted / shifted.sum(axis=1, keepdims=True)
        results = []
        for row in probs:
            best = np.argsort(-row, kind="stable")
            results.append([{"label": label_list[i], "score": float(row[i])} for i in best])
        return results[0] if single else results
