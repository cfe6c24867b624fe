"""The size bound on every tensor an op or a creation function makes.

A shape such as ``(10**6, 10**6)`` would otherwise reach numpy (``MemoryError``, or the
kernel killing the process after overcommit) or ONNX Runtime (an allocation failure printed to
stderr); checking the size from the shape and dtype first turns it into a
:class:`~ipfs_accelerate.errors.TensorTooLargeError` before anything is allocated.

The bound is ``$IPFS_ACCELERATE_MAX_TENSOR_BYTES`` when set, else half of the machine's
physical memory; :func:`set_max_tensor_bytes` changes it for the process.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence

from ipfs_accelerate.errors import ConfigurationError, TensorTooLargeError

__all__ = ["check_tensor_size", "max_tensor_bytes", "set_max_tensor_bytes"]

ENV_VAR = "IPFS_ACCELERATE_MAX_TENSOR_BYTES"

#: where the physical memory cannot be read (no sysconf): 16 GiB
_FALLBACK_BYTES = 16 << 30

_limit: int | None = None


def _default_limit() -> int:
    text = os.environ.get(ENV_VAR, "").strip()
    if text:
        try:
            value = int(text)
        except ValueError:
            value = 0
        if value < 1:
            raise ConfigurationError(f"${ENV_VAR} must be a positive number of bytes, got {text!r}")
        return value
    try:
        physical = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):  # not a POSIX system
        return _FALLBACK_BYTES
    # half: an op's inputs, its result and the process itself must fit together
    return physical // 2 if physical > 0 else _FALLBACK_BYTES


def max_tensor_bytes() -> int:
    """The largest tensor, in bytes, that ops and creation functions make."""
    global _limit
    if _limit is None:
        _limit = _default_limit()
    return _limit


def set_max_tensor_bytes(limit: int | None) -> None:
    """Set the bound (bytes) for this process; ``None`` goes back to the default
    (``$IPFS_ACCELERATE_MAX_TENSOR_BYTES``, else half the physical memory)."""
    global _limit
    if limit is None:
        _limit = None
        return
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ConfigurationError(f"max tensor bytes must be a positive int, got {limit!r}")
    _limit = limit


def check_tensor_size(
    shape: Sequence[int], itemsize: int, *, op: str, dtype: str, device: str
) -> None:
    """Raise TensorTooLargeError when a ``dtype`` tensor of ``shape`` would exceed the bound."""
    limit = _limit if _limit is not None else max_tensor_bytes()
    size = math.prod(shape) * itemsize
    if size > limit:
        raise TensorTooLargeError(
            f"{op}: a tensor of shape {tuple(shape)} and dtype {dtype} on {device!r} needs "
            f"{_human(size)} ({size} bytes), over the limit of {_human(limit)} ({limit} bytes); "
            f"raise it with ipfs_accelerate.hal.set_max_tensor_bytes() or ${ENV_VAR}"
        )


def _human(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if value < 1024 or unit == "PiB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} bytes"  # pragma: no cover - the loop returns
