"""Result types shared by every API backend.

Every backend returns these plain dataclasses whatever its wire protocol, so callers can
switch providers without changing the code that reads results. ``raw`` always keeps the
provider's own decoded JSON for fields this interface does not normalise.

``finish_reason`` is normalised to the OpenAI vocabulary: ``"stop"``, ``"length"``,
``"tool_calls"``, ``"content_filter"`` (and ``"error"`` where a provider reports one); an
unknown provider value is passed through lower-cased, never dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# shared with S3 Kit; re-exported here because every backend returns or takes them
from ipfs_accelerate.resilience._types import HealthStatus, Priority

__all__ = [
    "CacheHit",
    "ChatChunk",
    "ChatResponse",
    "EmbeddingResponse",
    "FileObject",
    "GeneratedImage",
    "HealthStatus",
    "ImageResponse",
    "ModelInfo",
    "ModerationResponse",
    "ModerationResult",
    "Priority",
    "PullProgress",
    "RerankResult",
    "TEIPrediction",
    "TEIToken",
    "TGIDetails",
    "TGIGeneration",
    "TGIStreamToken",
    "TGIToken",
    "ToolCall",
    "ToolCallDelta",
    "TranscriptionResponse",
    "Usage",
]


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one request (``None`` where the provider did not report them)."""

    input_tokens: int | None = None
    output_tokens: int | None = None

    @property
    def total_tokens(self) -> int | None:
        if self.input_tokens is None and self.output_tokens is None:
            return None
        return (self.input_tokens or 0) + (self.output_tokens or 0)


@dataclass(frozen=True, slots=True)
class CacheHit:
    """Set on an answer that came from the response cache (``None`` on a fresh answer).

    ``kind``: ``"exact"`` (the same request) or ``"semantic"`` (a similar prompt, with its
    cosine ``similarity``); ``key``: the entry's key (for ``ResponseCache.invalidate``);
    ``age_s``: seconds since the answer was stored.
    """

    kind: str
    key: str
    age_s: float
    similarity: float | None = None


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A function call requested by the model.

    ``arguments`` is the decoded JSON object when the provider's arguments parse as JSON,
    else the raw string (models can emit invalid JSON; it is kept, not dropped).
    """

    id: str
    name: str
    arguments: dict[str, Any] | str
    type: str = "function"


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """A piece of a streamed tool call: ``index`` identifies the call within the message."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments_delta: str = ""


@dataclass(slots=True)
class ChatResponse:
    """A complete chat answer."""

    text: str
    role: str = "assistant"
    model: str | None = None
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    tool_calls: list[ToolCall] = field(default_factory=list)
    raw: Any = None
    provider: str | None = None
    request_id: str | None = None
    cache: CacheHit | None = None


@dataclass(slots=True)
class ChatChunk:
    """One piece of a streamed chat answer.

    ``text`` is the delta since the previous chunk. The last chunk of a stream has
    ``done=True`` and carries ``finish_reason``, ``usage`` and the complete ``tool_calls``
    assembled from the deltas. A stream that breaks before its last chunk raises
    :class:`~ipfs_accelerate.errors.StreamInterruptedError` instead.
    """

    text: str = ""
    done: bool = False
    finish_reason: str | None = None
    usage: Usage | None = None
    tool_calls: list[ToolCall] = field(default_factory=list)
    tool_call_deltas: list[ToolCallDelta] = field(default_factory=list)
    model: str | None = None
    raw: Any = None
    cache: CacheHit | None = None  # on every chunk replayed from the response cache


@dataclass(slots=True)
class EmbeddingResponse:
    """Embeddings, one vector per input, in input order."""

    embeddings: list[list[float]]
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    raw: Any = None
    provider: str | None = None
    request_id: str | None = None
    cache: CacheHit | None = None

    @property
    def dimensions(self) -> int:
        return len(self.embeddings[0]) if self.embeddings else 0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model the service offers. ``parent`` is set for adapters (vLLM LoRA)."""

    id: str
    owned_by: str | None = None
    created: int | None = None
    parent: str | None = None
    raw: Any = None


@dataclass(frozen=True, slots=True)
class GeneratedImage:
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: str | None = None


@dataclass(slots=True)
class ImageResponse:
    images: list[GeneratedImage]
    created: int | None = None
    raw: Any = None


@dataclass(slots=True)
class TranscriptionResponse:
    text: str
    language: str | None = None
    duration: float | None = None
    raw: Any = None


@dataclass(frozen=True, slots=True)
class ModerationResult:
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]


@dataclass(slots=True)
class ModerationResponse:
    id: str | None
    model: str | None
    results: list[ModerationResult]
    raw: Any = None


@dataclass(frozen=True, slots=True)
class FileObject:
    """An uploaded file (OpenAI Files API)."""

    id: str
    filename: str | None = None
    bytes: int | None = None
    purpose: str | None = None
    created_at: int | None = None
    status: str | None = None
    raw: Any = None


@dataclass(frozen=True, slots=True)
class TGIToken:
    id: int
    text: str
    logprob: float | None = None
    special: bool = False


@dataclass(slots=True)
class TGIDetails:
    """TGI ``details``: why generation stopped and, if asked, per-token information."""

    finish_reason: str | None
    generated_tokens: int | None
    seed: int | None = None
    input_length: int | None = None
    prefill: list[TGIToken] = field(default_factory=list)
    tokens: list[TGIToken] = field(default_factory=list)
    raw: Any = None


@dataclass(slots=True)
class TGIGeneration:
    """Result of TGI ``/generate``."""

    generated_text: str
    details: TGIDetails | None = None
    raw: Any = None


@dataclass(slots=True)
class TGIStreamToken:
    """One event of TGI ``/generate_stream``; the last has ``generated_text`` and ``details``."""

    index: int | None
    token: TGIToken
    generated_text: str | None = None
    details: TGIDetails | None = None
    raw: Any = None


@dataclass(frozen=True, slots=True)
class RerankResult:
    """One reranked text: ``index`` into the input texts, higher ``score`` is more relevant."""

    index: int
    score: float
    text: str | None = None


@dataclass(frozen=True, slots=True)
class TEIPrediction:
    """One label's score from TEI ``/predict`` (activated unless ``raw_scores`` was asked)."""

    label: str
    score: float


@dataclass(frozen=True, slots=True)
class TEIToken:
    """One token from TEI ``/tokenize``: ``start``/``stop`` are UTF-8 byte offsets into the
    input, None for special tokens the tokenizer added."""

    id: int
    text: str
    special: bool
    start: int | None = None
    stop: int | None = None


@dataclass(frozen=True, slots=True)
class PullProgress:
    """One progress line of Ollama ``/api/pull``."""

    status: str
    digest: str | None = None
    total: int | None = None
    completed: int | None = None

    @property
    def fraction(self) -> float | None:
        if self.total and self.completed is not None:
            return self.completed / self.total
        return None
