"""API backend registry: name -> class, imported on first use.

Adding a provider is one module (its class carries its ``summary`` and ``routes``, which the
docs' tables read) and one line in ``_BUILTIN``. :func:`register_api_backend` adds one at
run time (a class or a factory).

``sample_backend``, the teaching example, is created by name like the others but is not
offered: :func:`get_available_backends` does not list it and :func:`find_compatible_backend`
never picks it, since it speaks a protocol no real service does.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ipfs_accelerate.errors import ConfigurationError, UnknownBackendError

if TYPE_CHECKING:  # pragma: no cover
    from ._base import APIBackend

__all__ = [
    "create_api_backend",
    "find_compatible_backend",
    "get_available_backends",
    "get_backend_class",
    "register_api_backend",
]

# registry order is the search order of find_compatible_backend
_BUILTIN: dict[str, tuple[str, str]] = {
    "openai": ("openai", "OpenAIBackend"),
    "openai_mini": ("openai", "OpenAIMiniBackend"),
    "claude": ("claude", "ClaudeBackend"),
    "gemini": ("gemini", "GeminiBackend"),
    "groq": ("groq", "GroqBackend"),
    "ollama": ("ollama", "OllamaBackend"),
    "ollama_clean": ("ollama_clean", "OllamaCleanBackend"),
    "vllm": ("vllm", "VLLMBackend"),
    "hf_tgi": ("hf_tgi", "HFTGIBackend"),
    "hf_tei": ("hf_tei", "HFTEIBackend"),
    "ovms": ("ovms", "OVMSBackend"),
    "opea": ("opea", "OPEABackend"),
    "llvm": ("llvm", "LLVMBackend"),
    "vllm_unified": ("vllm_unified", "VLLMUnifiedBackend"),
    "hf_tgi_unified": ("hf_tgi_unified", "HFTGIUnifiedBackend"),
    "hf_tei_unified": ("hf_tei_unified", "HFTEIUnifiedBackend"),
    "ovms_unified": ("ovms_unified", "OVMSUnifiedBackend"),
    "s3_kit": ("ipfs_accelerate.storage", "S3Kit"),
}

Factory = Callable[..., "APIBackend"]
_extra: dict[str, Factory] = {}
_lock = threading.Lock()

# created by name, never listed or searched (see the module docstring)
_UNOFFERED: dict[str, tuple[str, str]] = {
    "sample_backend": ("sample_backend", "SampleBackend"),
}


def register_api_backend(name: str, factory: Factory, *, replace: bool = False) -> None:
    """Register ``factory(resources=None, metadata=None, **kwargs) -> APIBackend`` under
    ``name``, offered after the built-in backends."""
    if not isinstance(name, str) or not name:
        raise ConfigurationError(f"backend name must be a non-empty string, got {name!r}")
    with _lock:
        if not replace and (name in _BUILTIN or name in _UNOFFERED or name in _extra):
            raise ConfigurationError(f"an API backend named {name!r} is already registered")
        _extra[name] = factory


def get_available_backends() -> list[str]:
    """Names of the backends offered, in search order (``sample_backend`` is not one)."""
    return [*_BUILTIN, *(n for n in _extra if n not in _BUILTIN)]


def get_backend_class(name: str) -> Factory:
    if name in _extra:
        return _extra[name]
    entry = _BUILTIN.get(name) or _UNOFFERED.get(name)
    if entry is None:
        raise UnknownBackendError(
            f"unknown API backend {name!r}; available: {', '.join(get_available_backends())}"
        )
    path = entry[0] if "." in entry[0] else f"ipfs_accelerate.api_backends.{entry[0]}"
    module = importlib.import_module(path)
    factory: Factory = getattr(module, entry[1])
    return factory


def create_api_backend(
    name: str,
    resources: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
    **kwargs: Any,
) -> APIBackend:
    """Create the backend ``name``; raises ConfigurationError when its key/URL is missing."""
    return get_backend_class(name)(resources, metadata, **kwargs)


def find_compatible_backend(
    model: str,
    resources: Mapping[str, Any] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> APIBackend | None:
    """The first backend, in registry order, that is configured (its key, or for keyless
    servers an explicit URL, comes from ``metadata``/``resources``/environment) and whose
    model rules accept ``model``. Catch-alls (a generic OpenAI-compatible server that
    claims every model name) come after every backend whose own rules recognise the model,
    so ``claude-...`` goes to Claude even when a local OpenAI-compatible URL is configured.

    Backends whose configuration is missing are skipped, never contacted. Returns None
    when no backend fits.
    """
    catch_all: APIBackend | None = None
    for name in get_available_backends():
        try:
            backend = create_api_backend(name, resources, metadata)
        except ConfigurationError:
            continue
        if backend.is_configured and backend.is_compatible_model(model):
            if not backend.accepts_any_model:
                return backend
            catch_all = catch_all or backend
    return catch_all
