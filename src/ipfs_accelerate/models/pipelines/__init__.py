"""Ready-to-use pipelines: checkpoint + preprocessing + model + postprocessing.

Each pipeline is built with ``from_pretrained(path_or_id, device="auto")`` (a local directory,
an installed model package or a Hub id; see :mod:`ipfs_accelerate.models.loading`).
``device="auto"`` lets :func:`ipfs_accelerate.hal.select_backend` choose; ``device_reason``
says why. The weights are registered with the process-wide tensor sharing manager, so two
pipelines of one checkpoint hold one copy; :meth:`close` (or garbage collection) releases
this pipeline's hold on them.

The pipelines live one family a module: :mod:`._text` (TextEmbedder, running the
sentence-transformers module pipeline of :mod:`._st`), :mod:`._rerank` (Reranker),
:mod:`._classifier` (TextClassifier, a trained head over TextEmbedder), :mod:`._vision`
(ImageClassifier, ZeroShotImageClassifier), :mod:`._speech` (SpeechRecognizer,
TranscriptSegment; long-form decoding and WordTiming in :mod:`._speech_decoding`),
:mod:`._generate` (TextGenerator), on what :mod:`._base` gives them all.
"""

from ipfs_accelerate.models.pipelines._classifier import TextClassifier
from ipfs_accelerate.models.pipelines._generate import TextGenerator
from ipfs_accelerate.models.pipelines._rerank import Ranked, Reranker
from ipfs_accelerate.models.pipelines._speech import SpeechRecognizer, TranscriptSegment
from ipfs_accelerate.models.pipelines._speech_decoding import WordTiming
from ipfs_accelerate.models.pipelines._speech_stream import StreamEvent, StreamWord
from ipfs_accelerate.models.pipelines._text import TextEmbedder
from ipfs_accelerate.models.pipelines._vision import ImageClassifier, ZeroShotImageClassifier

__all__ = [
    "ImageClassifier",
    "Ranked",
    "Reranker",
    "SpeechRecognizer",
    "StreamEvent",
    "StreamWord",
    "TextClassifier",
    "TextEmbedder",
    "TextGenerator",
    "TranscriptSegment",
    "WordTiming",
    "ZeroShotImageClassifier",
]
