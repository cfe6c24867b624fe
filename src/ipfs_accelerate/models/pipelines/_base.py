"""What every pipeline shares: the model, its device and the reason for it, its checkpoint,
its hold on the shared weights; the loading call and the argument checks."""

from __future__ import annotations

import os
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self, TypeVar

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.models.loading import (
    Checkpoint,
    ClassChooser,
    LoadReport,
    ProgressCallback,
    load_model,
)
from ipfs_accelerate.tensor import Tensor

if TYPE_CHECKING:
    from ipfs_accelerate.models._module import Module
    from ipfs_accelerate.sharing import TensorSharingManager

Array = np.ndarray[Any, Any]
P = TypeVar("P", bound="_Pipeline")


class _Pipeline:
    """What every pipeline has: the model, where it runs and why, its checkpoint, its hold on
    the shared weights."""

    model: Any

    def __init__(self, model: Module, checkpoint: Checkpoint, report: LoadReport) -> None:
        self.model = model
        self.checkpoint = checkpoint
        self.device = report.device
        self.device_reason = report.device_reason
        self.model_name = report.model_name
        self.load_report = report
        self._release = None
        if report.sharing is not None and report.model_name is not None:
            self._release = weakref.finalize(
                self, report.sharing.release_model_tensors, report.model_name
            )

    @classmethod
    def from_pretrained(
        cls,
        path_or_id: str | os.PathLike[str],
        device: str = "auto",
        *,
        sharing: TensorSharingManager | bool | None = True,
        progress: ProgressCallback | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool | None = None,
        dtype: str = "float32",
    ) -> Self:
        """The pipeline of ``path_or_id`` (a local directory, an installed model package or a
        Hub id; see :func:`~ipfs_accelerate.models.loading.load_model` for the arguments,
        ``dtype`` included: "float32", "float16", "int8", "int4" or "auto")."""
        model, checkpoint, report = cls._load(
            path_or_id, device, sharing, progress, revision, cache_dir, local_files_only, dtype
        )
        return cls._from_loaded(model, checkpoint, report)

    @classmethod
    def _model_class(cls) -> type[Module] | ClassChooser:
        """The model this pipeline runs (imported here, on first load), or the function that
        chooses it from the checkpoint."""
        raise NotImplementedError

    @classmethod
    def _from_loaded(cls, model: Any, checkpoint: Checkpoint, report: LoadReport) -> Self:
        """The pipeline around a loaded model, its preprocessing read from the checkpoint."""
        raise NotImplementedError

    @classmethod
    def _load(
        cls,
        path_or_id: str | os.PathLike[str],
        device: str,
        sharing: TensorSharingManager | bool | None,
        progress: ProgressCallback | None,
        revision: str | None,
        cache_dir: str | os.PathLike[str] | None,
        local_files_only: bool | None,
        dtype: str = "float32",
    ) -> tuple[Any, Checkpoint, LoadReport]:
        return load_model(
            path_or_id,
            device,
            model_class=cls._model_class(),
            sharing=sharing,
            progress=progress,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            dtype=dtype,
        )

    @property
    def dtype(self) -> str:
        """The dtype the model was loaded in: "float32", "float16", "int8" or "int4"."""
        return self.load_report.dtype

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write the model (quantized weights included, see
        :mod:`~ipfs_accelerate.models.saving`) with config.json and the tokenizer/processor
        files it was loaded with into ``directory``; ``from_pretrained(directory)`` loads it."""
        from ipfs_accelerate.models.saving import save_model

        return save_model(
            self.model, self.checkpoint.config, directory, files_from=self.checkpoint.path
        )

    def close(self) -> None:
        """Release this pipeline's hold on its shared weights (usable while referenced)."""
        if self._release is not None:
            self._release()

    def __enter__(self: P) -> P:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({str(self.checkpoint.path)!r}, device={self.device!r}, "
            f"dtype={self.dtype!r})"
        )


def _check_batch_size(batch_size: int) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be a positive int, got {batch_size!r}")
    return batch_size


def _l2_normalize(x: Tensor) -> Tensor:
    """Rows divided by max(norm, 1e-12), as torch.nn.functional.normalize."""
    norm = ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True))
    return x / ops.maximum(norm, 1e-12)


def _text_list(texts: Any) -> list[str]:
    from ipfs_accelerate.models.preprocessing.text import _check_texts

    return _check_texts(texts)
