"""Cross-model tensor sharing: several models in one process hold one copy of what they share.

* :class:`SharedTensor`: a Tensor on a backend, held by models (``acquire``/``release``
  counted per model), pinnable, with zero-copy views (:class:`SharedTensorView`) and
  ``copy_to(storage_type)`` to move a copy to another backend.
* :class:`TensorSharingManager`: the registry; deduplicates tensors by content id, enforces
  ``max_memory_mb`` by evicting unheld tensors least recently used first, and reports who
  holds what.
* :func:`content_id`: the IPFS CIDv1 (raw codec, sha2-256, base32) of a tensor's bytes.
* :func:`get_compatible_models_for_tensor`: which model families can share a tensor type.
* :func:`create_tensor_sharing_demo`: two pipelines of one checkpoint run with one manager;
  its statistics show what they hold in common (docs/sharing.md).
"""

from __future__ import annotations

from ipfs_accelerate.sharing._cid import cid_from_digest, content_id, digest_from_cid
from ipfs_accelerate.sharing._compat import (
    SHARING_PATTERNS,
    get_compatible_models_for_tensor,
    model_family,
)
from ipfs_accelerate.sharing._demo import create_tensor_sharing_demo
from ipfs_accelerate.sharing._manager import TensorSharingManager
from ipfs_accelerate.sharing._shared_tensor import SharedTensor, SharedTensorView

__all__ = [
    "SHARING_PATTERNS",
    "SharedTensor",
    "SharedTensorView",
    "TensorSharingManager",
    "cid_from_digest",
    "content_id",
    "create_tensor_sharing_demo",
    "digest_from_cid",
    "get_compatible_models_for_tensor",
    "model_family",
]
