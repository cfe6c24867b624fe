"""ONNX Runtime plumbing: execution provider choice, session creation, tensor memory.

Everything here imports onnxruntime lazily, on the first context's first use.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, Final

import numpy as np

from ipfs_accelerate.errors import BackendUnavailableError, WebNNOperationError

__all__ = ["PROVIDER_PREFERENCES", "choose_providers", "create_session", "ort"]

#: Accelerated execution providers tried in order, per power preference. The CPU provider is
#: always appended last: ONNX Runtime places every node an accelerator cannot run on it.
_FASTEST_FIRST: Final = (
    "CUDAExecutionProvider",
    "ROCMExecutionProvider",
    "DmlExecutionProvider",
    "CoreMLExecutionProvider",
    "OpenVINOExecutionProvider",
)
PROVIDER_PREFERENCES: Final[dict[str, tuple[str, ...]]] = {
    "high-performance": _FASTEST_FIRST,
    "default": _FASTEST_FIRST,
    # NPUs and integrated accelerators first when power matters more than speed
    "low-power": (
        "QNNExecutionProvider",
        "CoreMLExecutionProvider",
        "OpenVINOExecutionProvider",
        "DmlExecutionProvider",
    ),
}
CPU: Final[str] = "CPUExecutionProvider"
# where tensors of a context live: ONNX Runtime device names for providers with device memory
DEVICE_OF_PROVIDER: Final[dict[str, str]] = {
    "CUDAExecutionProvider": "cuda",
    "ROCMExecutionProvider": "cuda",  # ROCm builds expose their device memory as "cuda"
}


@functools.cache
def ort() -> Any:
    """The onnxruntime module, imported on first use."""
    try:
        import onnxruntime
    except ImportError as error:  # pragma: no cover - exercised only without the extra
        raise BackendUnavailableError(
            "WebNN needs onnxruntime: install the 'webnn' extra "
            "(pip install 'ipfs-accelerate[webnn]')"
        ) from error
    onnxruntime.set_default_logger_severity(3)
    return onnxruntime


def choose_providers(
    power_preference: str, accelerated: bool, requested: Sequence[str] | None = None
) -> list[str]:
    """The execution providers of a context, best first, always ending with the CPU provider.

    ``requested`` (an explicit list) wins over the preference; a requested provider that this
    onnxruntime build lacks raises BackendUnavailableError naming what is installed.
    """
    available = list(ort().get_available_providers())
    if requested is not None:
        missing = [p for p in requested if p not in available]
        if missing:
            raise BackendUnavailableError(
                f"WebNN: execution provider(s) {', '.join(missing)} are not in this onnxruntime "
                f"build (available: {', '.join(available)})"
            )
        chosen = list(dict.fromkeys(requested))
    elif accelerated:
        chosen = [p for p in PROVIDER_PREFERENCES[power_preference] if p in available]
    else:
        chosen = []
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


#: graphs estimated below this many multiply-adds run on one thread: for them a thread pool
#: costs more than it saves, and every live session's pool competes for the cores
SINGLE_THREAD_WORK: Final[int] = 1 << 20


def create_session(
    model_bytes: bytes,
    external: dict[str, np.ndarray[Any, Any]],
    providers: Sequence[str],
    what: str,
    work: int = SINGLE_THREAD_WORK,
) -> tuple[Any, list[Any]]:
    """An InferenceSession for the model; external constants are passed as OrtValues that
    share the numpy buffers (kept alive by the returned list). ORT errors become
    WebNNOperationError naming ``what`` and the providers. ``work`` (estimated
    multiply-adds per run) below SINGLE_THREAD_WORK gives a single-threaded session.

    Thread pools do not spin waiting for work: every session owns its pool, a context holds
    many graphs, and pools spinning after their own run steal the cores from the session
    that runs next."""
    runtime = ort()
    options = runtime.SessionOptions()
    options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if work < SINGLE_THREAD_WORK:
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
    else:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    keep_alive: list[Any] = []
    if external:
        names = list(external)
        values = [runtime.OrtValue.ortvalue_from_numpy(external[name]) for name in names]
        # add_external_initializers alone copies each value into the session; also sharing it
        # (add_initializer) makes the session use the caller's buffer in place, so graphs over
        # the same weights hold one copy of them (matrix weights still get a prepacked copy)
        options.add_external_initializers(names, values)
        for name, value in zip(names, values, strict=True):
            options.add_initializer(name, value)
        keep_alive = values
    try:
        session = runtime.InferenceSession(model_bytes, options, providers=list(providers))
    except Exception as error:
        raise WebNNOperationError(
            f"{what}: onnxruntime could not compile the graph with {', '.join(providers)}: "
            f"{_short(error)}"
        ) from error
    return session, keep_alive


def _short(error: BaseException) -> str:
    text = str(error).strip()
    return text if len(text) <= 2000 else text[:2000] + " ..."
