"""The Tensor type, dtypes, creation functions and promotion rules.

``ipfs_accelerate.tensor`` is both this module and the creation function: calling the
module, ``ipfs_accelerate.tensor([1.0, 2.0])``, is :func:`tensor` (as ``torch.tensor``), so the
package attribute means the same whichever way it was first imported.
"""

from __future__ import annotations

import sys
import types
from typing import Any

from ipfs_accelerate.tensor._autograd import enable_grad, is_grad_enabled, no_grad
from ipfs_accelerate.tensor._creation import (
    arange,
    checked_cast,
    from_numpy,
    full,
    full_like,
    ones,
    ones_like,
    rand,
    randn,
    tensor,
    zeros,
    zeros_like,
)
from ipfs_accelerate.tensor._dtype import (
    DTYPES,
    DType,
    as_dtype,
    bool_,
    float16,
    float32,
    float64,
    int8,
    int32,
    int64,
    result_type,
    uint8,
)
from ipfs_accelerate.tensor._tensor import Tensor

__all__ = [
    "DTYPES",
    "DType",
    "Tensor",
    "arange",
    "as_dtype",
    "bool_",
    "checked_cast",
    "enable_grad",
    "float16",
    "float32",
    "float64",
    "from_numpy",
    "full",
    "full_like",
    "int8",
    "int32",
    "int64",
    "is_grad_enabled",
    "no_grad",
    "ones",
    "ones_like",
    "rand",
    "randn",
    "result_type",
    "tensor",
    "uint8",
    "zeros",
    "zeros_like",
]


class _CallableModule(types.ModuleType):
    def __call__(
        self,
        data: Any,
        dtype: Any = None,
        device: str | None = None,
        *,
        requires_grad: bool = False,
    ) -> Tensor:
        return tensor(data, dtype=dtype, device=device, requires_grad=requires_grad)


sys.modules[__name__].__class__ = _CallableModule
