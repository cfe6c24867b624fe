"""Losses with PyTorch's semantics: mse_loss and cross_entropy; sentence-transformers'
MultipleNegativesRankingLoss."""

from __future__ import annotations

from typing import Any

import numpy as np

from ipfs_accelerate.errors import (
    DtypeError,
    IndexOutOfRangeError,
    InvalidArgumentError,
    ShapeError,
)
from ipfs_accelerate.ops import _elementwise as ew
from ipfs_accelerate.ops import _reduce as red
from ipfs_accelerate.ops import _shape as shp
from ipfs_accelerate.ops._core import as_tensor, describe, run, same_backend
from ipfs_accelerate.ops._nn import _floating, log_softmax, matmul
from ipfs_accelerate.tensor._tensor import Tensor

__all__ = ["cross_entropy", "mse_loss", "multiple_negatives_ranking_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return red.mean(loss)
    if reduction == "sum":
        return red.sum(loss)
    return loss


def _check_reduction(op: str, reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise InvalidArgumentError(
            f"{op}: reduction must be one of {_REDUCTIONS}, got {reduction!r}"
        )


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Mean squared error. ``input`` and ``target`` must have the same shape: a mismatch is an
    error, never a silent broadcast."""
    _check_reduction("mse_loss", reduction)
    x = as_tensor(input, op="mse_loss")
    y = as_tensor(target, op="mse_loss", like=x)
    same_backend("mse_loss", (x, y))
    if x.shape != y.shape:
        raise ShapeError(
            f"mse_loss: input {describe(x)} and target {describe(y)} must have the same shape"
        )
    _, (x, y) = _floating("mse_loss", x, y)
    diff = ew.sub(x, y)
    return _reduce(ew.mul(diff, diff), reduction)


def cross_entropy(
    input: Any,
    target: Any,
    reduction: str = "mean",
    ignore_index: int = -100,
    label_smoothing: float = 0.0,
) -> Tensor:
    """Cross entropy of unnormalised logits, as PyTorch's ``cross_entropy``.

    ``input`` is (C,), (N, C) or (N, C, d1, ...); ``target`` holds class indices (integers, shape
    of ``input`` without the class axis; ``ignore_index`` entries are skipped, and an index
    outside [0, C) raises) or class probabilities (floats, same shape as ``input``).
    ``reduction="mean"`` averages over the non-ignored targets.
    """
    return _cross_entropy(input, target, reduction, ignore_index, label_smoothing, True)


def _cross_entropy(
    input: Any,
    target: Any,
    reduction: str,
    ignore_index: int,
    label_smoothing: float,
    check_range: bool,
) -> Tensor:
    """:func:`cross_entropy`; ``check_range=False`` for class indices valid by construction
    (the range check reads the targets back: on a graph backend, a run mid-step)."""
    _check_reduction("cross_entropy", reduction)
    if not 0.0 <= label_smoothing <= 1.0:
        raise InvalidArgumentError(
            f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing}"
        )
    logits = as_tensor(input, op="cross_entropy")
    tgt = as_tensor(target, op="cross_entropy", like=logits)
    same_backend("cross_entropy", (logits, tgt))
    if logits.ndim == 0:
        raise ShapeError("cross_entropy: input must have a class axis, got a 0-d tensor")
    class_axis = 0 if logits.ndim == 1 else 1
    n_classes = logits.shape[class_axis]
    _, (logits,) = _floating("cross_entropy", logits)
    if (
        "cross_entropy" in logits._backend.fused
        and logits.ndim == 2
        and not label_smoothing
        and tgt.dtype.is_integer
        and tgt.shape == logits.shape[:1]
    ):
        shape = logits.shape[:1] if reduction == "none" else ()
        args = (logits, tgt, ignore_index, reduction, check_range)
        return run(logits._backend, "cross_entropy", args, shape, logits.dtype)
    logp = log_softmax(logits, class_axis)

    if tgt.dtype.is_floating:
        if tgt.shape != logits.shape:
            raise ShapeError(
                f"cross_entropy: probability target {describe(tgt)} "
                f"must match input {describe(logits)}"
            )
        _, (tgt,) = _floating("cross_entropy", tgt.astype(logits.dtype))
        if label_smoothing:
            tgt = ew.add(ew.mul(tgt, 1.0 - label_smoothing), label_smoothing / n_classes)
        loss = ew.neg(red.sum(ew.mul(tgt, logp), class_axis))
        return _reduce(loss, reduction)

    if not tgt.dtype.is_integer:
        raise DtypeError(
            "cross_entropy: target must hold class indices (integers) or probabilities (floats), "
            f"got {describe(tgt)}"
        )
    expected = logits.shape[:class_axis] + logits.shape[class_axis + 1 :]
    if tgt.shape != expected:
        raise ShapeError(
            f"cross_entropy: class-index target must have shape {expected}, got {describe(tgt)}"
        )
    if check_range and tgt.size:
        _check_classes(tgt, n_classes, ignore_index)
    classes = from_classes(n_classes, logits.ndim, class_axis, logits.device)
    onehot = ew.equal(shp.unsqueeze(tgt, class_axis), classes)
    loss = ew.neg(red.sum(ew.where(onehot, logp, 0.0), class_axis))
    if label_smoothing:
        smooth = ew.neg(red.mean(logp, class_axis))
        loss = ew.add(ew.mul(loss, 1.0 - label_smoothing), ew.mul(smooth, label_smoothing))
    valid = ew.not_equal(tgt, ignore_index)
    loss = ew.where(valid, loss, 0.0)
    if reduction == "mean":
        return ew.div(red.sum(loss), red.sum(valid).astype(loss.dtype))
    return _reduce(loss, reduction)


def _check_classes(tgt: Tensor, n_classes: int, ignore_index: int) -> None:
    invalid = ew.logical_and(
        ew.logical_or(ew.less(tgt, 0), ew.greater_equal(tgt, n_classes)),
        ew.not_equal(tgt, ignore_index),
    )
    if bool(red.any(invalid).item()):
        bad = tgt.numpy()[np.asarray(invalid.numpy())].ravel()[0]
        raise IndexOutOfRangeError(
            f"cross_entropy: target class {int(bad)} is out of range for {n_classes} classes"
        )


def from_classes(n_classes: int, ndim: int, class_axis: int, device: str) -> Tensor:
    """0..C-1 shaped to broadcast along ``class_axis`` of an ``ndim``-D tensor."""
    from ipfs_accelerate.tensor._creation import arange

    shape = [1] * ndim
    shape[class_axis] = n_classes
    return shp.reshape(arange(n_classes, device=device), tuple(shape))


def multiple_negatives_ranking_loss(
    anchors: Any, candidates: Any, scale: float = 20.0, reduction: str = "mean"
) -> Tensor:
    """The in-batch-negatives contrastive loss of sentence-transformers'
    MultipleNegativesRankingLoss (InfoNCE): anchor ``i``'s positive is candidate ``i``; every
    other candidate (the other anchors' positives, then any hard negatives appended after
    them) is a negative. Cross-entropy of ``scale * cos(anchor_i, candidate_j)`` against the
    diagonal.

    ``anchors`` (N, D) and ``candidates`` (M, D) with M >= N, floating, one device. Rows are
    normalised as ``torch.nn.functional.normalize`` (divided by max(norm, 1e-12)).
    """
    op = "multiple_negatives_ranking_loss"
    _check_reduction(op, reduction)
    like = anchors if isinstance(anchors, Tensor) else None
    a = as_tensor(anchors, op=op, like=like)
    b = as_tensor(candidates, op=op, like=a)
    same_backend(op, (a, b))
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ShapeError(
            f"{op}: anchors (N, D) and candidates (M, D) must be 2-D with one D, got "
            f"{describe(a)} and {describe(b)}"
        )
    if a.shape[0] == 0 or b.shape[0] < a.shape[0]:
        raise ShapeError(
            f"{op}: needs at least one anchor and a positive for each (M >= N), got "
            f"{a.shape[0]} anchor(s) and {b.shape[0]} candidate(s)"
        )
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not scale > 0:
        raise InvalidArgumentError(f"{op}: scale must be a number > 0, got {scale!r}")
    _, (a, b) = _floating(op, a, b)
    scores = ew.mul(matmul(_unit_rows(a), shp.matrix_transpose(_unit_rows(b))), float(scale))
    from ipfs_accelerate.tensor._creation import arange

    labels = arange(a.shape[0], dtype="int64", device=a.device)
    # labels 0..N-1 of M >= N classes: in range by construction, no readback to check them
    return _cross_entropy(scores, labels, reduction, -100, 0.0, check_range=False)


def _unit_rows(x: Tensor) -> Tensor:
    norm = ew.sqrt(red.sum(ew.mul(x, x), -1, keepdims=True))
    return ew.div(x, ew.maximum(norm, 1e-12))
