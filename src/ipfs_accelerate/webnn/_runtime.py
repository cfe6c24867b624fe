"""ONNX Runtime plumbing: execution provider choice, session creation, tensor memory.

Everything here imports onnxruntime lazily, on the first context's first use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import platform
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

import numpy as np

from ipfs_accelerate.errors import (
    BackendUnavailableError,
    ConfigurationError,
    WebNNOperationError,
)

__all__ = [
    "FLUSHING_KERNELS",
    "PROVIDER_PREFERENCES",
    "can_flush_denormals",
    "choose_providers",
    "create_session",
    "flushing_call",
    "ort",
    "pool_spin_us",
]

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

#: the most threads a caller may ask a graph's runs to use (MLGraphBuilder.build's ``threads``)
MAX_THREADS: Final[int] = 1024


#: the environment variable that makes a multi-threaded session's pool spin during a run
SPIN_VARIABLE: Final = "IPFS_ACCELERATE_WEBNN_SPIN_US"
#: the longest spin it may ask for (microseconds)
MAX_SPIN_US: Final = 1_000_000
#: the spin without it: long enough to bridge the serial nodes between two parallel ones of a
#: graph, short enough to cost little where the cores are oversubscribed (docs/webnn.md,
#: "Threads")
DEFAULT_SPIN_US: Final = 100


def pool_spin_us() -> int:
    """How long (microseconds) an idle thread of a multi-threaded session's pool spins for
    more work before it sleeps, during a run: ``$IPFS_ACCELERATE_WEBNN_SPIN_US`` (0: the
    threads sleep between nodes), else DEFAULT_SPIN_US. Read when a session is created; a
    value that is not an integer in [0, MAX_SPIN_US] raises ConfigurationError naming it."""
    text = os.environ.get(SPIN_VARIABLE, "").strip()
    if not text:
        return DEFAULT_SPIN_US
    try:
        value = int(text)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_SPIN_US:
        raise ConfigurationError(
            f"{SPIN_VARIABLE}={text!r}: expected an integer number of microseconds "
            f"from 0 to {MAX_SPIN_US}"
        )
    return value


#: ONNX kernels whose graphs (the large ones) run with denormal floats flushed to zero: the
#: attention softmax of trained encoders gives probabilities below float32's normal range,
#: which the CPU computes (and multiplies into the values) many times slower
FLUSHING_KERNELS: Final = frozenset({"MultiHeadAttention"})


#: MXCSR's flush-to-zero and denormals-are-zero bits
_FTZ_DAZ: Final = 0x8000 | 0x0040
#: where glibc's x86-64 ``fenv_t`` (32 bytes: the x87 environment, then MXCSR) holds MXCSR
_MXCSR_OFFSET: Final = 28


def _denormals_flushed() -> bool:
    return bool(np.float32(1e-20) * np.float32(1e-22) == 0)


def _flush_this_thread() -> None:
    """Sets this thread's flush-to-zero and denormals-are-zero flags (MXCSR, through glibc's
    fegetenv/fesetenv on x86-64). ONNX Runtime's own ``session.set_denormal_as_zero`` sets
    them on its pool's threads, but on the thread that creates a session only for the first
    session of the process (once), and that thread runs part of every op too."""
    global _FLUSH_WORKS
    if platform.machine() not in ("x86_64", "AMD64") or not sys.platform.startswith("linux"):
        _FLUSH_WORKS = False
        return
    try:
        libm = ctypes.CDLL(ctypes.util.find_library("m") or "libm.so.6")
        environment = (ctypes.c_uint8 * 32)()
        if libm.fegetenv(environment) != 0:
            raise OSError("fegetenv failed")
        mxcsr = ctypes.c_uint32.from_buffer(environment, _MXCSR_OFFSET)
        mxcsr.value |= _FTZ_DAZ
        if libm.fesetenv(environment) != 0:
            raise OSError("fesetenv failed")
    except OSError:
        _FLUSH_WORKS = False
        return
    _FLUSH_WORKS = _denormals_flushed()


#: whether the flushing threads really flush (None: not tried yet)
_FLUSH_WORKS: bool | None = None


class _FlushingThreads:
    """Threads with denormals flushed that create and run the flushing sessions, so that the
    flags stay on them: the caller's thread (numpy, the cpu backend, other sessions) keeps
    IEEE denormals. A run waits on its thread; several callers run side by side."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def call(self, function: Callable[..., Any], *args: Any) -> Any:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=max(2, os.cpu_count() or 2),
                    thread_name_prefix="webnn-flush",
                    initializer=_flush_this_thread,
                )
            executor = self._executor
        return executor.submit(function, *args).result()

    def forget(self) -> None:
        """After a fork: the child has none of the parent's threads (a pool that thinks it
        has would never run the work), so the next call starts new ones."""
        self._executor = None
        self._lock = threading.Lock()


_FLUSHING = _FlushingThreads()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_FLUSHING.forget)


def flushing_call(function: Callable[..., Any], *args: Any) -> Any:
    """``function(*args)`` on a thread whose floating-point unit flushes denormals to zero
    (the thread a flushing session must be created and run on)."""
    return _FLUSHING.call(function, *args)


def can_flush_denormals() -> bool:
    """Whether this platform's flushing threads flush (x86-64 Linux): elsewhere no session
    flushes, as one flushing only on ONNX Runtime's pool threads would give results that
    depend on which thread computed them."""
    if _FLUSH_WORKS is None:
        _FLUSHING.call(lambda: None)  # starts a thread: its initializer finds out
    return bool(_FLUSH_WORKS)


def create_session(
    model_bytes: bytes,
    external: dict[str, np.ndarray[Any, Any]],
    providers: Sequence[str],
    what: str,
    work: int = SINGLE_THREAD_WORK,
    flush_denormals: bool = False,
    threads: int | None = None,
) -> tuple[Any, list[Any]]:
    """An InferenceSession for the model; external constants are passed as OrtValues that
    share the numpy buffers (kept alive by the returned list). ORT errors become
    WebNNOperationError naming ``what`` and the providers. ``work`` (estimated
    multiply-adds per run) below SINGLE_THREAD_WORK gives a single-threaded session.
    ``flush_denormals``: the session flushes denormal floats to zero; it is created on (and
    must run through) :func:`flushing_call`. ``threads``: at most that many threads (1: the
    session runs on its caller's thread), whatever ``work`` says.

    Every session owns its pool: in Python, ONNX Runtime's process-wide pools
    (``set_global_thread_pool_sizes``) make every session of the process use them, so no
    session could flush denormals on its threads or stay single-threaded, and other libraries'
    onnxruntime sessions in the process would fail. A pool's idle threads spin for more work
    for :func:`pool_spin_us` during a run (each of a graph's hundreds of small parallel nodes
    would otherwise wake a sleeping thread) and stop when the session's last concurrent run
    returns (``session.force_spinning_stop``): a context holds many graphs, and a pool still
    spinning after its run would steal the cores from the session that runs next.
    docs/webnn.md ("Threads") has the measurements."""
    runtime = ort()
    options = runtime.SessionOptions()
    options.graph_optimization_level = runtime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    if threads == 1 or work < SINGLE_THREAD_WORK:
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
    else:
        if threads is not None:
            options.intra_op_num_threads = threads
        spin = pool_spin_us()
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        if spin:
            options.add_session_config_entry("session.intra_op.spin_duration_us", str(spin))
            # the pool stops spinning when the session's last concurrent run returns
            options.add_session_config_entry("session.force_spinning_stop", "1")
    if flush_denormals:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
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
        if flush_denormals:
            session = flushing_call(runtime.InferenceSession, model_bytes, options, list(providers))
        else:
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
