"""ipfs_accelerate: hardware-accelerated AI inference.

Importing the package loads numpy and nothing else; the tensor library, the hardware
backends, the models and the API clients load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ipfs_accelerate._lazy import lazy_exports

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
    "int8": "ipfs_accelerate.tensor",
    "uint8": "ipfs_accelerate.tensor",
    "bool_": "ipfs_accelerate.tensor",
    "no_grad": "ipfs_accelerate.tensor",
    "enable_grad": "ipfs_accelerate.tensor",
    "is_grad_enabled": "ipfs_accelerate.tensor",
    # hardware abstraction layer
    "available_backends": "ipfs_accelerate.hal",
    "select_backend": "ipfs_accelerate.hal",
    "get_backend": "ipfs_accelerate.hal",
}

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    _LAZY,
    eager=["__version__"],
    submodules=[
        "api_backends",
        "errors",
        "hal",
        "models",
        "ops",
        "optim",
        "quantization",
        "resilience",
        "serve",
        "servers",
        "sharing",
        "storage",
        "tensor",
        "webnn",
    ],
    export_submodules=True,
)

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ipfs_accelerate import api_backends as api_backends
    from ipfs_accelerate import errors as errors
    from ipfs_accelerate import hal as hal
    from ipfs_accelerate import ops as ops
    from ipfs_accelerate import optim as optim
    from ipfs_accelerate import quantization as quantization
    from ipfs_accelerate import resilience as resilience
    from ipfs_accelerate import servers as servers
    from ipfs_accelerate import sharing as sharing
    from ipfs_accelerate import storage as storage
    from ipfs_accelerate import tensor as tensor
    from ipfs_accelerate import webnn as webnn
    from ipfs_accelerate.hal import available_backends as available_backends
    from ipfs_accelerate.hal import get_backend as get_backend
    from ipfs_accelerate.hal import select_backend as select_backend
    from ipfs_accelerate.tensor import DType as DType
    from ipfs_accelerate.tensor import Tensor as Tensor
    from ipfs_accelerate.tensor import arange as arange
    from ipfs_accelerate.tensor import bool_ as bool_
    from ipfs_accelerate.tensor import enable_grad as enable_grad
    from ipfs_accelerate.tensor import float16 as float16
    from ipfs_accelerate.tensor import float32 as float32
    from ipfs_accelerate.tensor import float64 as float64
    from ipfs_accelerate.tensor import from_numpy as from_numpy
    from ipfs_accelerate.tensor import full as full
    from ipfs_accelerate.tensor import full_like as full_like
    from ipfs_accelerate.tensor import int8 as int8
    from ipfs_accelerate.tensor import int32 as int32
    from ipfs_accelerate.tensor import int64 as int64
    from ipfs_accelerate.tensor import is_grad_enabled as is_grad_enabled
    from ipfs_accelerate.tensor import no_grad as no_grad
    from ipfs_accelerate.tensor import ones as ones
    from ipfs_accelerate.tensor import ones_like as ones_like
    from ipfs_accelerate.tensor import rand as rand
    from ipfs_accelerate.tensor import randn as randn
    from ipfs_accelerate.tensor import uint8 as uint8
    from ipfs_accelerate.tensor import zeros as zeros
    from ipfs_accelerate.tensor import zeros_like as zeros_like
