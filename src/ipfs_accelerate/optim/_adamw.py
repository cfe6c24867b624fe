"""Adam with decoupled weight decay (Loshchilov & Hutter), optionally AMSGrad."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

from ipfs_accelerate import ops
from ipfs_accelerate.hal._backend import AdamWHyper
from ipfs_accelerate.optim._optimizer import Optimizer, ParamsArg
from ipfs_accelerate.tensor import Tensor, zeros_like
from ipfs_accelerate.tensor._autograd import bump_version

__all__ = ["AdamW"]


class AdamW(Optimizer):
    """torch.optim.AdamW's update, step for step (step ``t`` counts from 1):

    ``p = p * (1 - lr * weight_decay)``; ``m = m + (1 - beta1) * (g - m)``;
    ``v = beta2 * v + (1 - beta2) * g * g`` (with ``amsgrad``, the running maximum of ``v`` is
    used below); ``p = p - lr / (1 - beta1^t) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)``.
    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (and ``max_exp_avg_sq``).
    The cpu kernel rounds as torch does, op for op; composed from ops (graph backends), the
    last step is the same number arranged as ``m / (sqrt(v) + eps * c) * (lr * c / (1 -
    beta1^t))`` with ``c = sqrt(1 - beta2^t)``: one pass over the parameter fewer, the
    result a rounding apart.
    """

    def __init__(
        self,
        params: ParamsArg,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
            "amsgrad": amsgrad,
        }
        super().__init__(params, defaults)

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        self._non_negative(group, "lr", "eps", "weight_decay")
        betas = group["betas"]
        if (
            not isinstance(betas, tuple | list)
            or len(betas) != 2
            or not all(
                isinstance(b, numbers.Real) and not isinstance(b, bool) and 0.0 <= float(b) < 1.0
                for b in betas
            )
        ):
            raise self._bad("betas", betas, "two numbers in [0, 1)")
        if not isinstance(group["amsgrad"], bool):
            raise self._bad("amsgrad", group["amsgrad"], "a bool")

    @staticmethod
    def _init_state(param: Tensor, state: dict[str, Any], group: Mapping[str, Any]) -> None:
        if not state:
            state["step"] = 0
            state["exp_avg"] = zeros_like(param)
            state["exp_avg_sq"] = zeros_like(param)
        if group["amsgrad"] and "max_exp_avg_sq" not in state:  # also: switched on later
            state["max_exp_avg_sq"] = zeros_like(param)

    def _update_in_place(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: Mapping[str, Any]
    ) -> bool:
        backend = param._backend
        if "adamw_step" not in backend.fused:
            return False
        self._init_state(param, state, group)
        beta1, beta2 = (float(b) for b in group["betas"])
        hyper = AdamWHyper(
            lr=float(group["lr"]),
            beta1=beta1,
            beta2=beta2,
            eps=float(group["eps"]),
            weight_decay=float(group["weight_decay"]),
            step=state["step"] + 1,
        )
        second_max = state["max_exp_avg_sq"] if group["amsgrad"] else None
        if not backend.adamw_step(
            param, grad, state["exp_avg"], state["exp_avg_sq"], second_max, hyper
        ):
            return False
        state["step"] += 1
        bump_version(param)
        return True

    def _step_numbers(self, group: Mapping[str, Any], step: int) -> tuple[float, ...]:
        beta1, beta2 = (float(b) for b in group["betas"])
        lr, decay = float(group["lr"]), float(group["weight_decay"])
        # the decay factor, eps and the step size both times the second moment's bias
        # correction c = sqrt(1 - beta2^t): m / (sqrt(v) / c + eps) * lr / (1 - beta1^t) is
        # m / (sqrt(v) + eps * c) * (lr * c / (1 - beta1^t)) (Kingma & Ba's own arrangement),
        # one pass over the parameter fewer where every op is a pass (a graph backend)
        correction = math.sqrt(1.0 - beta2**step)
        eps = float(group["eps"])
        return (1.0 - lr * decay, eps * correction, lr * correction / (1.0 - beta1**step))

    def _update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: Mapping[str, Any]
    ) -> Tensor:
        beta1, beta2 = (float(b) for b in group["betas"])
        self._init_state(param, state, group)
        state["step"] += 1
        decay_factor, eps, step_size = self._numbers(param, group, state["step"])
        if float(group["weight_decay"]):
            param = param * decay_factor
        exp_avg = state["exp_avg"] + (grad - state["exp_avg"]) * (1.0 - beta1)
        exp_avg_sq = state["exp_avg_sq"] * beta2 + (grad * grad) * (1.0 - beta2)
        state["exp_avg"], state["exp_avg_sq"] = exp_avg, exp_avg_sq
        second = exp_avg_sq
        if group["amsgrad"]:
            second = ops.maximum(state["max_exp_avg_sq"], exp_avg_sq)
            state["max_exp_avg_sq"] = second
        return param - (exp_avg / (ops.sqrt(second) + eps)) * step_size
