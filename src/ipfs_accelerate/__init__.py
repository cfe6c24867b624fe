"""ipfs_accelerate: hardware-accelerated AI inference.

Importing the package loads numpy and nothing else; the tensor library, the hardware
backends, the models and the API clients load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> module that defines it; resolved on first attribute access (PEP 562)
_LAZY: dict[str, str] = {
    # tensor library
    "Tensor": "ipfs_accelerate.tensor",
    "DType": "ipfs_accelerate.tensor",
    "from_numpy": "ipfs_accelerate.tensor",
    "zeros": "ipfs_accelerate.tensor",
    "ones": "ipfs_accelerate.tensor",
    "full": "ipfs_accelerate.tensor",
    "zeros_like": "ipfs_accelerate.tensor",
    "ones_like": "ipfs_accelerate.tensor",
    "full_like": "ipfs_accelerate.tensor",
    "arange": "ipfs_accelerate.tensor",
    "rand": "ipfs_accelerate.tensor",
    "randn": "ipfs_accelerate.tensor",
    "float16": "ipfs_accelerate.tensor",
    "float32": "ipfs_accelerate.tensor",
    "float64": "ipfs_accelerate.tensor",
    "int32": "ipfs_accelerate.tensor",
    "int64": "ipfs_accelerate.tensor",
    "uint8": "ipfs_accelerate.tensor",
    "bool_": "ipfs_accelerate.tensor",
    # hardware abstraction layer
    "available_backends": "ipfs_accelerate.hal",
    "select_backend": "ipfs_accelerate.hal",
    "get_backend": "ipfs_accelerate.hal",
}

_SUBMODULES = {
    "api_backends",
    "errors",
    "hal",
    "models",
    "ops",
    "serve",
    "sharing",
    "tensor",
    "webnn",
}

__all__ = [*sorted(_LAZY), *sorted(_SUBMODULES), "__version__"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    if name in _SUBMODULES:
        module = importlib.import_module(f"ipfs_accelerate.{name}")
        globals()[name] = module
        return module
    raise AttributeError(f"module 'ipfs_accelerate' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ipfs_accelerate import errors, hal, ops
    from ipfs_accelerate.hal import available_backends, get_backend, select_backend
    from ipfs_accelerate.tensor import (
        DType,
        Tensor,
        arange,
        bool_,
        float16,
        float32,
        float64,
        from_numpy,
        full,
        full_like,
        int32,
        int64,
        ones,
        ones_like,
        rand,
        randn,
        tensor,
        uint8,
        zeros,
        zeros_like,
    )
