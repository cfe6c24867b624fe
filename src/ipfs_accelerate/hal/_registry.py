"""Backend registry, discovery, selection and the fallback chain."""

from __future__ import annotations

import importlib
import os
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ipfs_accelerate.errors import (
    BackendFallbackWarning,
    BackendUnavailableError,
    UnknownBackendError,
)
from ipfs_accelerate.hal._backend import Backend, BackendInfo

__all__ = [
    "BackendSelection",
    "available_backends",
    "default_device",
    "get_backend",
    "register_backend",
    "registered_backends",
    "reset_backend",
    "select_backend",
    "set_default_device",
    "unregister_backend",
]

BackendFactory = Callable[[], Backend]


@dataclass
class _Entry:
    name: str
    #: a callable, or "module:attribute" resolved on first use so that registering is free
    factory: BackendFactory | str
    #: where a tensor goes when this backend cannot start (None: nowhere, raise)
    fallback: str | None
    instance: Backend | None = None
    failure: str | None = None


_LOCK = threading.RLock()
_ENTRIES: dict[str, _Entry] = {}
_DEFAULT_DEVICE: list[str] = []


def register_backend(
    name: str, factory: BackendFactory | str, *, fallback: str | None = "cpu"
) -> None:
    """Register a backend under ``name``. ``factory`` builds it (a callable, or "module:Class").

    ``fallback`` names the backend used, with a BackendFallbackWarning, when this one cannot
    start. Registering a name again replaces the entry.
    """
    with _LOCK:
        _ENTRIES[name] = _Entry(name, factory, None if name == fallback else fallback)


def unregister_backend(name: str) -> None:
    """Remove a registered backend (its tensors keep working; new lookups fail)."""
    with _LOCK:
        if _ENTRIES.pop(name, None) is None:
            raise UnknownBackendError(f"unknown backend {name!r}")
        if [name] == _DEFAULT_DEVICE:
            _DEFAULT_DEVICE.clear()


def registered_backends() -> list[str]:
    """Names of all registered backends, in registration order (available or not)."""
    return list(_ENTRIES)


def _create(entry: _Entry) -> Backend:
    if entry.instance is not None:
        return entry.instance
    if entry.failure is not None:
        raise BackendUnavailableError(entry.failure)
    try:
        factory = entry.factory
        if isinstance(factory, str):
            module_name, _, attr = factory.partition(":")
            factory = getattr(importlib.import_module(module_name), attr)
        entry.instance = factory()  # type: ignore[operator]
    except Exception as exc:
        reason = (
            exc.args[0]
            if isinstance(exc, BackendUnavailableError) and exc.args
            else f"{type(exc).__name__}: {exc}"
        )
        entry.failure = f"backend {entry.name!r} is unavailable: {reason}"
        raise BackendUnavailableError(entry.failure) from exc
    return entry.instance


def get_backend(name: str | None = None, *, fallback: bool = True) -> Backend:
    """The backend instance called ``name`` (default: :func:`default_device`), started on first use.

    When it cannot start and ``fallback`` is true, the registered fallback (normally "cpu") is
    returned with a BackendFallbackWarning saying why; with ``fallback=False`` the
    BackendUnavailableError is raised. Unknown names raise UnknownBackendError.
    """
    if name is None:
        name = default_device()
    entry = _ENTRIES.get(name)
    if entry is not None and entry.instance is not None:
        return entry.instance
    with _LOCK:
        entry = _ENTRIES.get(name)
        if entry is None:
            raise UnknownBackendError(
                f"unknown backend {name!r}; registered backends: {', '.join(_ENTRIES) or 'none'}"
            )
        try:
            return _create(entry)
        except BackendUnavailableError as exc:
            if not fallback or entry.fallback is None:
                raise
            warnings.warn(
                BackendFallbackWarning(f"{exc}; falling back to {entry.fallback!r}"), stacklevel=3
            )
            return get_backend(entry.fallback, fallback=True)


def reset_backend(name: str) -> None:
    """Forget the instance (and any start-up failure) of ``name`` so the next use starts it anew
    (after a lost device, or once a missing package was installed)."""
    with _LOCK:
        entry = _ENTRIES.get(name)
        if entry is None:
            raise UnknownBackendError(f"unknown backend {name!r}")
        entry.instance = None
        entry.failure = None


def forget_instance(backend: Backend) -> None:
    """Forget ``backend`` wherever the registry holds it (a backend whose device was lost):
    the next use of its name starts it anew, or falls back if it cannot start."""
    with _LOCK:
        for entry in _ENTRIES.values():
            if entry.instance is backend:
                entry.instance = None
                entry.failure = None


def set_default_device(name: str | None) -> None:
    """Set the device used when none is given.

    None restores the default: $IPFS_ACCELERATE_DEVICE, or cpu."""
    if name is not None and name not in _ENTRIES:
        raise UnknownBackendError(
            f"unknown backend {name!r}; registered backends: {', '.join(_ENTRIES)}"
        )
    _DEFAULT_DEVICE[:] = [] if name is None else [name]


def default_device() -> str:
    if _DEFAULT_DEVICE:
        return _DEFAULT_DEVICE[0]
    return device_override() or "cpu"


def device_override() -> str | None:
    """``$IPFS_ACCELERATE_DEVICE`` (None when unset or empty): the device every choice made
    for the caller takes, :func:`default_device` and :func:`select_backend` alike. A name
    that is not registered raises UnknownBackendError naming the variable."""
    name = os.environ.get("IPFS_ACCELERATE_DEVICE", "").strip()
    if not name:
        return None
    if name not in _ENTRIES:
        raise UnknownBackendError(
            f"$IPFS_ACCELERATE_DEVICE={name!r} is not a backend; registered backends: "
            f"{', '.join(_ENTRIES)}"
        )
    return name


def available_backends(include_unavailable: bool = False) -> list[BackendInfo]:
    """Describe each registered backend that really works here (starting it to find out).

    With ``include_unavailable``, backends that cannot start are listed too, with the reason.
    """
    infos = []
    for name in list(_ENTRIES):
        try:
            with _LOCK:
                backend = _create(_ENTRIES[name])
            infos.append(backend.info())
        except BackendUnavailableError as exc:
            if include_unavailable:
                infos.append(BackendInfo(name=name, available=False, reason=str(exc)))
    return infos


@dataclass(frozen=True)
class BackendSelection:
    """The backend :func:`select_backend` chose, why, and what else was considered."""

    name: str
    reason: str
    info: BackendInfo
    candidates: tuple[str, ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        return f"{self.name}: {self.reason}"


#: model families that run best as one compiled graph (WebNN -> ONNX Runtime) when no GPU exists
_GRAPH_FRIENDLY = {
    "bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "modernbert", "minilm",
    "text_embedding", "vit", "clip", "whisper",
    "vision_embedding", "audio_embedding", "vision_text_joint", "transformer",
    # decoders: each decode step is one compiled graph per KV-cache bucket
    "llama", "mistral", "qwen2", "qwen3", "gpt2", "text_generation",
}  # fmt: skip


def select_backend(
    model_type: str | None = None,
    prefer: str | Sequence[str] | None = None,
    *,
    one_shot: bool = False,
) -> BackendSelection:
    """Choose the backend for ``model_type`` (e.g. "bert", "vit", "whisper"; None for plain tensor
    math) and say why.

    Order of precedence: ``prefer`` (a name or list of names, first available wins), then
    $IPFS_ACCELERATE_DEVICE (:func:`device_override`; when that backend cannot start, its
    fallback, with a BackendFallbackWarning, as :func:`get_backend` does), then a hardware GPU
    adapter through WebGPU (discrete before integrated), then WebNN/ONNX Runtime for
    transformer-style models, then the CPU backend. A software GPU adapter (e.g. lavapipe) is
    never chosen automatically: on a CPU it is slower than the CPU backend.

    ``one_shot``: the work is short (a command run over a few inputs), so start-up costs
    weigh more than speed per input: no backend is started just to look at it (WebGPU's
    adapter start, WebNN's graph compile per input shape), and the choice is the CPU unless
    a hardware GPU adapter is already running in this process. See docs/tensors.md.
    """
    wanted: list[str] = []
    if prefer is not None:
        wanted = [prefer] if isinstance(prefer, str) else list(prefer)
        for name in wanted:
            if name not in _ENTRIES:
                raise UnknownBackendError(f"select_backend(prefer=...): unknown backend {name!r}")
        for name in wanted:
            info = _started_info(name)
            if info is not None:
                return BackendSelection(
                    name, f"preferred by the caller ({', '.join(wanted)})", info, (name,)
                )
    override = device_override()
    if override is not None:
        backend = get_backend(override)  # its fallback, with a warning, if it cannot start
        reason = "set by $IPFS_ACCELERATE_DEVICE"
        if backend.name != override:
            reason += f" ({override} is unavailable; its fallback)"
        return BackendSelection(backend.name, reason, backend.info(), (override,))
    skipped = f"; preferred {', '.join(wanted)} unavailable" if wanted else ""
    if one_shot:
        return _select_one_shot(skipped)
    infos = {info.name: info for info in available_backends()}
    candidates = tuple(infos)
    gpu = infos.get("webgpu")
    if gpu is not None and gpu.adapter_type in _HARDWARE_ADAPTERS:
        return BackendSelection("webgpu", _gpu_reason(gpu) + skipped, gpu, candidates)
    family = (model_type or "").lower()
    if "webnn" in infos and family in _GRAPH_FRIENDLY:
        return BackendSelection(
            "webnn",
            f"no hardware GPU adapter; {family} runs as one compiled ONNX Runtime graph{skipped}",
            infos["webnn"],
            candidates,
        )
    reason = "no hardware GPU adapter"
    if gpu is not None:
        reason = f"the only WebGPU adapter is a software one ({gpu.device_name})"
    if model_type is None:
        reason += "; plain tensor math runs eagerly on numpy"
    return BackendSelection("cpu", reason + skipped, infos["cpu"], candidates)


_HARDWARE_ADAPTERS = ("discrete", "integrated")


def _gpu_reason(gpu: BackendInfo) -> str:
    return f"{gpu.adapter_type} GPU adapter {gpu.device_name!r} through {gpu.api or 'WebGPU'}"


def _started_info(name: str) -> BackendInfo | None:
    """``name``'s info, starting it if needed; None when it cannot start."""
    try:
        with _LOCK:
            return _create(_ENTRIES[name]).info()
    except BackendUnavailableError:
        return None


def _select_one_shot(skipped: str) -> BackendSelection:
    with _LOCK:
        running = {name: e.instance for name, e in _ENTRIES.items() if e.instance is not None}
    gpu = running.get("webgpu")
    if gpu is not None:
        info = gpu.info()
        if info.adapter_type in _HARDWARE_ADAPTERS:
            reason = f"one-shot work; {_gpu_reason(info)} is already running"
            return BackendSelection("webgpu", reason + skipped, info, tuple(running))
    cpu = get_backend("cpu")
    return BackendSelection(
        "cpu",
        "one-shot work: the CPU starts at once, where WebGPU's adapter start and WebNN's graph "
        "compiles cost more than a few inputs take" + skipped,
        cpu.info(),
        tuple(running) or ("cpu",),
    )
