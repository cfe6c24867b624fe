"""Stochastic gradient descent with momentum, dampening, Nesterov and weight decay."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ipfs_accelerate.hal._backend import SGDHyper
from ipfs_accelerate.optim._optimizer import Optimizer, ParamsArg
from ipfs_accelerate.tensor import Tensor, zeros_like
from ipfs_accelerate.tensor._autograd import bump_version

__all__ = ["SGD"]


class SGD(Optimizer):
    """torch.optim.SGD's update, step for step:

    ``g = grad + weight_decay * p``; with momentum, ``b = g`` on the first step and
    ``b = momentum * b + (1 - dampening) * g`` after, then ``g = g + momentum * b`` (Nesterov)
    or ``g = b``; finally ``p = p - lr * g``. Nesterov needs momentum > 0 and no dampening.
    """

    def __init__(
        self,
        params: ParamsArg,
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "momentum": momentum,
            "dampening": dampening,
            "weight_decay": weight_decay,
            "nesterov": nesterov,
        }
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        self._non_negative(group, "lr", "momentum", "dampening", "weight_decay")
        if not isinstance(group["nesterov"], bool):
            raise self._bad("nesterov", group["nesterov"], "a bool")
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise self._bad(
                "nesterov",
                True,
                "used with momentum > 0 and dampening 0 (got momentum "
                f"{group['momentum']!r}, dampening {group['dampening']!r}); nesterov=True",
            )

    def _update_in_place(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: Mapping[str, Any]
    ) -> bool:
        backend = param._backend
        if "sgd_step" not in backend.fused:
            return False
        momentum = float(group["momentum"])
        buffer = state.get("momentum_buffer") if momentum else None
        first = bool(momentum) and buffer is None
        if first:
            buffer = zeros_like(param)
        hyper = SGDHyper(
            lr=float(group["lr"]),
            momentum=momentum,
            dampening=float(group["dampening"]),
            weight_decay=float(group["weight_decay"]),
            nesterov=bool(group["nesterov"]),
            first_step=first,
        )
        if not backend.sgd_step(param, grad, buffer, hyper):
            return False
        if first:
            state["momentum_buffer"] = buffer
        bump_version(param)
        return True

    def _update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: Mapping[str, Any]
    ) -> Tensor:
        if group["weight_decay"]:
            grad = grad + param * float(group["weight_decay"])
        momentum = float(group["momentum"])
        if momentum:
            buffer = state.get("momentum_buffer")
            if buffer is None:
                buffer = grad.detach().clone()
            else:
                buffer = buffer * momentum + grad * (1.0 - float(group["dampening"]))
            state["momentum_buffer"] = buffer
            grad = grad + buffer * momentum if group["nesterov"] else buffer
        (lr,) = self._numbers(param, group, 0)
        return param - grad * lr

    def _step_numbers(self, group: Mapping[str, Any], step: int) -> tuple[float, ...]:
        return (float(group["lr"]),)
