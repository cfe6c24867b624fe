"""Ready-to-use pipelines (moved into a package; split along its seams in the next commit)."""

from ipfs_accelerate.models.pipelines._speech import (
    ImageClassifier,
    SpeechRecognizer,
    TextEmbedder,
    TranscriptSegment,
    ZeroShotImageClassifier,
)

__all__ = [
    "ImageClassifier",
    "SpeechRecognizer",
    "TextEmbedder",
    "TranscriptSegment",
    "ZeroShotImageClassifier",
]
