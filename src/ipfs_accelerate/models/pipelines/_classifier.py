"""TextClassifier: a linear head trained with AdamW on the (frozen) sentence embeddings of a
:class:`~ipfs_accelerate.models.TextEmbedder`.

A saved classifier is a directory::

    classifier.json      {"format": 1, "labels": [...], "embedder": PATH, "embedder_name":
                          NAME, "dimension": D, "normalize": true}
    model.safetensors    "weight" (classes, D) and "bias" (classes,), float32
    embedder/            the embedder's own checkpoint, when saved with include_embedder=True

``TextClassifier.load(dir)`` (or ``from_pretrained(dir)``) reads it back: the embedder from
``embedder/`` when present, else from the recorded checkpoint path, else by its name.
"""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import CheckpointError, InvalidArgumentError, ModelError
from ipfs_accelerate.models._defaults import DEFAULT_TEXT_MODEL
from ipfs_accelerate.models.pipelines._base import Array, _check_batch_size, _text_list
from ipfs_accelerate.models.pipelines._text import TextEmbedder
from ipfs_accelerate.tensor import Tensor, from_numpy, no_grad

__all__ = [
    "CLASSIFIER_FILE",
    "EpochCallback",
    "Label",
    "TextClassifier",
    "embedder_source",
    "is_classifier_dir",
]

#: the file that marks a saved classifier directory
CLASSIFIER_FILE = "classifier.json"
_FORMAT = 1
#: a class label: a string or an int (JSON keeps both as they are)
Label = str | int
#: called after each epoch with (epoch, epochs, mean training loss)
EpochCallback = Callable[[int, int, float], None]


def is_classifier_dir(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a directory written by :meth:`TextClassifier.save`."""
    return (Path(path) / CLASSIFIER_FILE).is_file()


class TextClassifier:
    """Labels for texts from a linear head over sentence embeddings.

    ``fit(texts, labels)`` embeds the texts once (the embedder stays frozen) and trains
    ``softmax(embedding @ weight.T + bias)`` with AdamW and cross-entropy; ``predict`` and
    ``predict_proba`` embed new texts and apply the head on the embedder's device.
    """

    def __init__(
        self, embedder: TextEmbedder, *, normalize: bool = True, embedder_name: str | None = None
    ) -> None:
        self.embedder = embedder
        #: how the embedder was named when loaded (a Hub id or package), saved beside its
        #: path so that a saved classifier still loads where the path does not exist
        self.embedder_name = embedder_name
        self.normalize = bool(normalize)
        self.labels: list[Label] = []
        self.weight: Tensor | None = None
        self.bias: Tensor | None = None

    @classmethod
    def from_pretrained(
        cls, path_or_id: str | os.PathLike[str] = DEFAULT_TEXT_MODEL, device: str = "auto",
        **kwargs: Any,
    ) -> Self:  # fmt: skip
        """A saved classifier directory (see :meth:`load`), or a new, untrained classifier
        over the embedder checkpoint ``path_or_id`` (``kwargs`` go to
        :meth:`TextEmbedder.from_pretrained`)."""
        if is_classifier_dir(path_or_id):
            return cls.load(path_or_id, device, **kwargs)
        name = None if Path(path_or_id).exists() else str(path_or_id)
        return cls(TextEmbedder.from_pretrained(path_or_id, device, **kwargs), embedder_name=name)

    @property
    def device(self) -> str:
        return self.embedder.device

    @property
    def device_reason(self) -> str:
        return self.embedder.device_reason

    @property
    def dtype(self) -> str:
        """The embedder's dtype (the head is float32)."""
        return self.embedder.dtype

    @property
    def is_fitted(self) -> bool:
        return self.weight is not None

    def close(self) -> None:
        """Release the embedder's hold on its shared weights."""
        self.embedder.close()

    def __repr__(self) -> str:
        return (
            f"TextClassifier(labels={self.labels!r}, embedder="
            f"{str(self.embedder.checkpoint.path)!r}, device={self.device!r})"
        )

    # ------------------------------------------------------------------ training

    def fit(
        self,
        texts: Sequence[str],
        labels: Sequence[Label],
        *,
        epochs: int = 50,
        batch_size: int = 32,
        lr: float = 1e-2,
        weight_decay: float = 0.01,
        seed: int = 0,
        callback: EpochCallback | None = None,
    ) -> list[float]:
        """Train a new head on ``texts`` and their ``labels`` (str or int; the classes are
        the distinct labels, sorted); returns the mean loss of every epoch. Mini-batches of
        ``batch_size`` are shuffled each epoch with ``seed``, which also seeds the head's
        initial values (as ``torch.nn.Linear``'s: uniform in +-1/sqrt(dimension))."""
        from ipfs_accelerate.optim import AdamW, compile_step

        items = _text_list(texts)
        targets = _check_labels(labels, len(items))
        _check_batch_size(batch_size)
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
            raise InvalidArgumentError(
                f"TextClassifier.fit: epochs must be a positive int, got {epochs!r}"
            )
        for name, value in (("lr", lr), ("weight_decay", weight_decay)):
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(float(value))
                or value < 0
                or (name == "lr" and value == 0)
            ):
                raise InvalidArgumentError(f"TextClassifier.fit: {name} got {value!r}")
        classes = sorted(set(targets), key=lambda v: (isinstance(v, str), v))
        index = {label: i for i, label in enumerate(classes)}
        y = np.array([index[label] for label in targets], dtype=np.int64)
        features = self.embedder.embed(items, normalize=self.normalize)

        device, dim = self.device, features.shape[1]
        rng = np.random.default_rng(seed)
        bound = 1.0 / math.sqrt(dim)
        weight = from_numpy(
            rng.uniform(-bound, bound, (len(classes), dim)).astype(np.float32), device
        ).requires_grad_()
        bias = from_numpy(
            rng.uniform(-bound, bound, (len(classes),)).astype(np.float32), device
        ).requires_grad_()
        optimizer = AdamW([("weight", weight), ("bias", bias)], lr=lr, weight_decay=weight_decay)
        features = np.ascontiguousarray(features, dtype=np.float32)

        def loss_fn(x: Tensor, targets: Tensor) -> Tensor:
            return ops.cross_entropy(ops.linear(x, weight, bias), targets)

        # the batch is gathered on the host and is the step's input: on webnn one replayed
        # graph per batch size
        step = compile_step(loss_fn, optimizer, check_finite=True)
        losses: list[float] = []
        for epoch in range(epochs):
            order = rng.permutation(len(items))
            total = 0.0
            for start in range(0, len(items), batch_size):
                rows = order[start : start + batch_size].astype(np.int64)
                total += float(step(features[rows], y[rows]).item()) * len(rows)
            losses.append(total / len(items))
            if callback is not None:
                callback(epoch + 1, epochs, losses[-1])
        self.labels = list(classes)
        self.weight, self.bias = weight.detach(), bias.detach()
        return losses

    # ------------------------------------------------------------------ inference

    def _head(self) -> tuple[Tensor, Tensor]:
        if self.weight is None or self.bias is None:
            raise ModelError("TextClassifier: not trained yet; call fit() or load a saved one")
        return self.weight, self.bias

    def logits(self, texts: str | Sequence[str], batch_size: int = 32) -> Array:
        """The head's scores (N, classes) float32, before the softmax."""
        weight, bias = self._head()
        batch = [texts] if isinstance(texts, str) else _text_list(texts)
        features = self.embedder.embed(batch, batch_size=batch_size, normalize=self.normalize)
        with no_grad():
            out = ops.linear(from_numpy(features, self.device), weight, bias)
            return out.numpy()

    def predict_proba(self, texts: str | Sequence[str], batch_size: int = 32) -> Array:
        """Class probabilities (N, classes) float32 in the order of :attr:`labels`
        ((classes,) for one string)."""
        scores = self.logits(texts, batch_size)
        shifted = np.exp(scores - scores.max(axis=1, keepdims=True))
        probs = (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float32)
        return probs[0] if isinstance(texts, str) else probs

    def predict(self, texts: str | Sequence[str], batch_size: int = 32) -> list[Label] | Label:
        """The most probable label of each text (one label for one string)."""
        scores = self.logits(texts, batch_size)
        best = [self.labels[int(i)] for i in scores.argmax(axis=1)]
        return best[0] if isinstance(texts, str) else best

    # ------------------------------------------------------------------ saving

    def save(self, directory: str | os.PathLike[str], *, include_embedder: bool = False) -> Path:
        """Write the head (and with ``include_embedder``, the embedder's checkpoint, needed
        after fine-tuning it) into ``directory``; returns it."""
        from ipfs_accelerate.models.saving import write_safetensors

        weight, bias = self._head()
        target = Path(directory)
        target.mkdir(parents=True, exist_ok=True)
        if include_embedder:
            self.embedder.save_pretrained(target / "embedder")
        write_safetensors(
            target / "model.safetensors",
            {"weight": weight.numpy().astype(np.float32), "bias": bias.numpy().astype(np.float32)},
            {"format": "pt", "ipfs_accelerate.kind": "text-classifier"},
        )
        meta = {
            "format": _FORMAT,
            "labels": self.labels,
            "embedder": str(self.embedder.checkpoint.path.resolve()),
            "embedder_name": self.embedder_name,
            "dimension": int(weight.shape[1]),
            "normalize": self.normalize,
        }
        (target / CLASSIFIER_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
        return target

    @classmethod
    def load(cls, directory: str | os.PathLike[str], device: str = "auto", **kwargs: Any) -> Self:
        """A classifier written by :meth:`save`; ``kwargs`` go to the embedder's
        ``from_pretrained``. A missing or malformed file raises CheckpointError naming it."""
        from ipfs_accelerate.models.loading import read_safetensors

        root = Path(directory)
        meta = _read_meta(root / CLASSIFIER_FILE)
        source = embedder_source(root)
        embedder = TextEmbedder.from_pretrained(source, device, **kwargs)
        weights = read_safetensors(root / "model.safetensors")
        weight, bias = weights.get("weight"), weights.get("bias")
        classes, dim = len(meta["labels"]), int(meta["dimension"])
        if weight is None or bias is None:
            raise CheckpointError(f"{root / 'model.safetensors'}: needs 'weight' and 'bias'")
        weight, bias = np.asarray(weight), np.asarray(bias)
        if weight.shape != (classes, dim) or bias.shape != (classes,):
            raise CheckpointError(
                f"{root / 'model.safetensors'}: weight {weight.shape} and bias {bias.shape} do "
                f"not fit {classes} labels of dimension {dim}"
            )
        if embedder.dimension != dim:
            raise CheckpointError(
                f"{root}: the head takes {dim}-dimensional embeddings, the embedder {source} "
                f"gives {embedder.dimension}"
            )
        out = cls(
            embedder,
            normalize=bool(meta.get("normalize", True)),
            embedder_name=meta.get("embedder_name"),
        )
        out.labels = list(meta["labels"])
        out.weight = from_numpy(np.ascontiguousarray(weight, dtype=np.float32), embedder.device)
        out.bias = from_numpy(np.ascontiguousarray(bias, dtype=np.float32), embedder.device)
        return out


def embedder_source(directory: str | os.PathLike[str]) -> str:
    """The embedder checkpoint a saved classifier loads: its ``embedder/`` copy when saved
    with one, else the recorded checkpoint path when it exists, else the recorded name."""
    root = Path(directory)
    meta = _read_meta(root / CLASSIFIER_FILE)
    if (root / "embedder").is_dir():
        return str(root / "embedder")
    if Path(meta["embedder"]).is_dir():
        return str(meta["embedder"])
    return str(meta["embedder_name"] or meta["embedder"])


def _check_labels(labels: Sequence[Label], count: int) -> list[Label]:
    if isinstance(labels, str) or not isinstance(labels, Sequence):
        raise InvalidArgumentError(
            f"TextClassifier.fit: labels must be a sequence, got {type(labels).__name__}"
        )
    items = list(labels)
    if len(items) != count:
        raise InvalidArgumentError(f"TextClassifier.fit: {count} text(s) but {len(items)} label(s)")
    for i, label in enumerate(items):
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise InvalidArgumentError(
                f"TextClassifier.fit: label {i} is {label!r}; labels are strings or ints"
            )
    if len({(type(v), v) for v in items}) < 2:
        raise InvalidArgumentError(
            f"TextClassifier.fit: needs at least 2 distinct labels, got {sorted(set(items))!r}"
        )
    return items


def _read_meta(path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path}: not found (not a saved TextClassifier)") from None
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != _FORMAT:
        raise CheckpointError(f"{path}: not a format-{_FORMAT} TextClassifier file")
    labels = meta.get("labels")
    if (
        not isinstance(labels, list)
        or len(labels) < 2
        or not all(isinstance(v, str | int) and not isinstance(v, bool) for v in labels)
    ):
        raise CheckpointError(f"{path}: 'labels' must be a list of 2+ strings or ints")
    dim = meta.get("dimension")
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise CheckpointError(f"{path}: 'dimension' must be a positive int, got {dim!r}")
    if not isinstance(meta.get("embedder"), str):
        raise CheckpointError(f"{path}: 'embedder' must be a string")
    if meta.get("embedder_name") is not None and not isinstance(meta["embedder_name"], str):
        raise CheckpointError(f"{path}: 'embedder_name' must be a string or null")
    return meta
