"""Gradient clipping by the total norm over many parameters."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable

from ipfs_accelerate import ops
from ipfs_accelerate.errors import AutogradError, InvalidArgumentError
from ipfs_accelerate.tensor import Tensor, no_grad

__all__ = ["clip_grad_norm_"]


def clip_grad_norm_(
    parameters: Tensor | Iterable[Tensor],
    max_norm: float,
    norm_type: float = 2.0,
    error_if_nonfinite: bool = False,
) -> Tensor:
    """Scale the ``.grad`` of ``parameters`` in place so that their joint ``norm_type`` norm
    (the norm of the per-tensor norms; ``float("inf")``: the largest magnitude) is at most
    ``max_norm``, as ``torch.nn.utils.clip_grad_norm_``: the factor is
    ``min(1, max_norm / (total + 1e-6))``. Returns the total norm before clipping (a 0-d
    tensor on the gradients' device; 0 when no parameter has a gradient).

    A NaN or infinite total norm raises AutogradError with ``error_if_nonfinite`` (reading
    the norm back from the device); without it the gradients become NaN, as torch's do.
    """
    params = [parameters] if isinstance(parameters, Tensor) else list(parameters)
    for name, value in (("max_norm", max_norm), ("norm_type", norm_type)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or value <= 0:
            raise InvalidArgumentError(f"clip_grad_norm_: {name} must be > 0, got {value!r}")
    if math.isnan(max_norm) or math.isnan(norm_type):
        raise InvalidArgumentError("clip_grad_norm_: max_norm and norm_type must not be NaN")
    for index, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise InvalidArgumentError(
                f"clip_grad_norm_: parameter {index} is a {type(p).__name__}, not a Tensor"
            )
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        from ipfs_accelerate.tensor import tensor

        return tensor(0.0)
    devices = {g.device for g in grads}
    if len(devices) > 1:
        raise InvalidArgumentError(
            f"clip_grad_norm_: the gradients are on several devices {sorted(devices)}"
        )
    with no_grad():
        if math.isinf(norm_type):
            norms = [ops.max(ops.abs(g)) for g in grads]
            total = ops.max(ops.stack(norms))
        else:
            norms = [_norm(g, float(norm_type)) for g in grads]
            total = _norm(ops.stack(norms), float(norm_type))
        if error_if_nonfinite:
            value = float(total.item())
            if not math.isfinite(value):
                raise AutogradError(
                    f"clip_grad_norm_: the total {norm_type}-norm of the gradients of "
                    f"{len(grads)} parameter(s) is {value}; a gradient holds NaN or infinity"
                )
        factor = ops.minimum(float(max_norm) / (total + 1e-6), 1.0)
        for g in grads:
            g.copy_(g * factor)
    return total


def _norm(x: Tensor, p: float) -> Tensor:
    if p == 2.0:
        return ops.sqrt(ops.sum(x * x))
    if p == 1.0:
        return ops.sum(ops.abs(x))
    return ops.sum(ops.abs(x) ** p) ** (1.0 / p)
