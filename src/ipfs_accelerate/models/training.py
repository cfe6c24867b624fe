"""Fine-tuning a sentence-embedding model with in-batch negatives (docs/training.md).

:func:`fine_tune` trains every parameter of a :class:`~ipfs_accelerate.models.TextEmbedder`'s
model on (anchor, positive[, negative]) texts with sentence-transformers'
MultipleNegativesRankingLoss (:func:`~ipfs_accelerate.ops.multiple_negatives_ranking_loss`)
and AdamW; :func:`contrastive_loss` is one batch's loss, for custom loops.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import InvalidArgumentError, ModelError
from ipfs_accelerate.tensor import Tensor

if TYPE_CHECKING:
    from ipfs_accelerate.models.pipelines import TextEmbedder

__all__ = [
    "StepCallback",
    "contrastive_inputs",
    "contrastive_loss",
    "contrastive_step_loss",
    "fine_tune",
    "pad_tokens",
]

#: called after each step with (step, total steps, loss)
StepCallback = Callable[[int, int, float], None]


def contrastive_loss(
    embedder: TextEmbedder,
    anchors: Sequence[str],
    candidates: Sequence[str],
    scale: float = 20.0,
) -> Tensor:
    """MultipleNegativesRankingLoss of one batch: anchor ``i``'s positive is
    ``candidates[i]``, the other candidates (and hard negatives after the first
    ``len(anchors)``) are its negatives. Differentiable through the embedder's model."""
    a = embedder.embed_tensor(list(anchors))
    b = embedder.embed_tensor(list(candidates))
    return ops.multiple_negatives_ranking_loss(a, b, scale=scale)


#: on a backend that replays compiled steps, batches are padded to a multiple of this many
#: tokens, so that batches of similar lengths share one captured step
_LENGTH_BUCKET = 16


def contrastive_inputs(
    embedder: TextEmbedder, anchors: Sequence[str], candidates: Sequence[str]
) -> list[np.ndarray[Any, Any]]:
    """The host arrays of one batch for :func:`contrastive_step_loss` (the anchors'
    ``embedding_inputs``, then the candidates')."""
    return [*embedder.embedding_inputs(list(anchors)), *embedder.embedding_inputs(list(candidates))]


def contrastive_step_loss(embedder: TextEmbedder, scale: float = 20.0) -> Callable[..., Tensor]:
    """:func:`contrastive_loss` as a function of :func:`contrastive_inputs` (as tensors): the
    ``loss_fn`` of ``optim.compile_step`` for fine-tuning."""
    width = 3 + len(embedder.modules.pooling)

    def loss_fn(*inputs: Tensor) -> Tensor:
        a = embedder.embed_inputs(*inputs[:width])
        b = embedder.embed_inputs(*inputs[width:])
        return ops.multiple_negatives_ranking_loss(a, b, scale=scale)

    return loss_fn


def pad_tokens(inputs: list[np.ndarray[Any, Any]], multiple: int) -> list[np.ndarray[Any, Any]]:
    """:func:`contrastive_inputs` with the token axis padded to a multiple of ``multiple``:
    padding ids, mask, token types and pooling weights are 0 (the positions added are masked
    out of attention and pooling, so the loss is the same)."""
    out = []
    for array in inputs:
        length = array.shape[1]
        extra = -length % multiple
        if extra:
            widths = [(0, 0)] * array.ndim
            widths[1] = (0, extra)
            array = np.pad(array, widths)
        out.append(array)
    return out


def _check_examples(examples: Sequence[Sequence[str]]) -> tuple[list[tuple[str, ...]], int]:
    rows = list(examples)
    if not rows:
        raise InvalidArgumentError("fine_tune: no training examples")
    width = None
    out = []
    for index, row in enumerate(rows):
        if isinstance(row, str) or not isinstance(row, Sequence) or len(row) not in (2, 3):
            raise InvalidArgumentError(
                f"fine_tune: example {index} must be (anchor, positive) or (anchor, positive, "
                f"negative), got {type(row).__name__}"
                + (f" of length {len(row)}" if isinstance(row, Sequence) else "")
            )
        if width is None:
            width = len(row)
        elif len(row) != width:
            raise InvalidArgumentError(
                f"fine_tune: example {index} has {len(row)} texts, the first has {width}"
            )
        for text in row:
            if not isinstance(text, str) or not text.strip():
                raise InvalidArgumentError(
                    f"fine_tune: example {index} holds {text!r}, not a non-empty string"
                )
        out.append(tuple(row))
    return out, int(width or 2)


def _positive_number(name: str, value: object, *, allow_zero: bool = False) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not math.isfinite(float(value))
        or float(value) < 0
        or (float(value) == 0 and not allow_zero)
    ):
        need = ">= 0" if allow_zero else "> 0"
        raise InvalidArgumentError(
            f"fine_tune: {name} must be a finite number {need}, got {value!r}"
        )
    return float(value)


def fine_tune(
    embedder: TextEmbedder,
    examples: Sequence[Sequence[str]],
    *,
    epochs: int = 1,
    batch_size: int = 16,
    lr: float = 2e-5,
    weight_decay: float = 0.01,
    scale: float = 20.0,
    max_grad_norm: float | None = 1.0,
    dropout: bool = True,
    shuffle: bool = True,
    seed: int = 0,
    callback: StepCallback | None = None,
) -> list[float]:
    """Train all of ``embedder``'s model in place on ``examples`` ((anchor, positive) or
    (anchor, positive, negative) texts) with MultipleNegativesRankingLoss and AdamW; returns
    the loss of every step.

    Each step embeds ``batch_size`` anchors and their candidates, clips the gradients to
    ``max_grad_norm`` (None: no clipping) and updates every parameter. ``dropout`` trains
    with the model's dropout (seeded by ``seed``, as the shuffling is); afterwards the model
    is back in eval mode with parameters that do not require grad, so ``embed`` is as fast as
    before, and ``embedder.save_pretrained(dir)`` writes the result.

    The embedder must own its weights: load it with ``sharing=False`` (a shared checkpoint's
    tensors are the very tensors of every other pipeline of it), and in float32.
    """
    from ipfs_accelerate.models.pipelines._base import _check_batch_size
    from ipfs_accelerate.optim import AdamW, compile_step

    if embedder.load_report.sharing is not None:
        raise ModelError(
            "fine_tune: the embedder shares its weights with every other pipeline of this "
            "checkpoint; load it with from_pretrained(..., sharing=False) to train it"
        )
    rows, width = _check_examples(examples)
    _check_batch_size(batch_size)
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise InvalidArgumentError(f"fine_tune: epochs must be a positive int, got {epochs!r}")
    lr = _positive_number("lr", lr)
    scale = _positive_number("scale", scale)
    weight_decay = _positive_number("weight_decay", weight_decay, allow_zero=True)
    clip = None if max_grad_norm is None else _positive_number("max_grad_norm", max_grad_norm)

    model = embedder.model
    model.requires_grad_(True)
    optimizer = AdamW(list(model.named_parameters()), lr=lr, weight_decay=weight_decay)
    step = compile_step(
        contrastive_step_loss(embedder, scale), optimizer, max_grad_norm=clip, check_finite=True
    )
    if dropout:
        model.train(seed=seed)
    rng = np.random.default_rng(seed)
    batches_per_epoch = math.ceil(len(rows) / batch_size)
    total = epochs * batches_per_epoch
    losses: list[float] = []
    try:
        for _ in range(epochs):
            order = rng.permutation(len(rows)) if shuffle else np.arange(len(rows))
            for start in range(0, len(rows), batch_size):
                batch = [rows[i] for i in order[start : start + batch_size]]
                anchors = [r[0] for r in batch]
                candidates = [r[1] for r in batch]
                if width == 3:
                    candidates += [r[2] for r in batch]
                inputs = contrastive_inputs(embedder, anchors, candidates)
                if step.captures:  # fewer signatures, more replays
                    inputs = pad_tokens(inputs, _LENGTH_BUCKET)
                losses.append(float(step(*inputs).item()))
                if callback is not None:
                    callback(len(losses), total, losses[-1])
    finally:
        model.eval()
        model.zero_grad()
        model.requires_grad_(False)
    return losses
