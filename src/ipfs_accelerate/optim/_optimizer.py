"""What SGD and AdamW share: parameter groups, per-parameter state, ``zero_grad``,
``state_dict`` / ``load_state_dict`` in torch.optim's layout."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from ipfs_accelerate.errors import InvalidArgumentError, ShapeError
from ipfs_accelerate.tensor import Tensor, from_numpy, no_grad

__all__ = ["Optimizer", "ParamsArg"]

#: a list of tensors, of ``(name, tensor)`` pairs (``model.named_parameters()``: errors then
#: name the parameter), or of dicts ``{"params": [...], "lr": ...}`` (parameter groups)
ParamsArg = Iterable[Tensor] | Iterable[tuple[str, Tensor]] | Iterable[dict[str, Any]]

# torch.optim's group keys for features this package does not have: accepted from a torch
# state_dict while they hold their off value, refused otherwise (never silently ignored)
_TORCH_OFF_KEYS = {
    "foreach": (None, False),
    "capturable": (False,),
    "differentiable": (False,),
    "fused": (None, False),
    "maximize": (False,),
    "decoupled_weight_decay": (True,),  # torch's AdamW records that it is AdamW
}


class Optimizer:
    """The base of :class:`~ipfs_accelerate.optim.SGD` and :class:`~ipfs_accelerate.optim.AdamW`.

    ``param_groups`` is a list of dicts: ``"params"`` (the tensors) and the hyperparameters,
    which may be changed between steps (learning-rate schedules). ``state`` maps each
    parameter's position (in group order) to its per-parameter state.
    """

    def __init__(self, params: ParamsArg, defaults: Mapping[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.param_groups: list[dict[str, Any]] = []
        self._names: dict[int, str] = {}
        self._state: dict[int, dict[str, Any]] = {}
        self._step_scalars: dict[tuple[float, str, str], Tensor] = {}
        #: while a compiled step is captured: each parameter's step numbers as graph inputs
        self._captured_numbers: dict[int, list[Tensor]] | None = None
        items = list(params)
        if not items:
            raise InvalidArgumentError(f"{type(self).__name__}: got an empty parameter list")
        groups = items if all(isinstance(i, dict) for i in items) else [{"params": items}]
        for group in groups:
            if not isinstance(group, dict):
                raise InvalidArgumentError(
                    f"{type(self).__name__}: mix of parameter-group dicts and tensors"
                )
            self.add_param_group(group)

    # ------------------------------------------------------------------ groups, checks

    def add_param_group(self, group: Mapping[str, Any]) -> None:
        """Add a group: ``{"params": tensors, **hyperparameters}`` (missing ones from the
        optimizer's defaults)."""
        raw = group.get("params")
        if raw is None:
            raise InvalidArgumentError(f"{type(self).__name__}: a parameter group has no 'params'")
        entries = [raw] if isinstance(raw, Tensor) else list(raw)
        unknown = sorted(set(group) - set(self.defaults) - {"params"})
        if unknown:
            raise InvalidArgumentError(
                f"{type(self).__name__}: unknown hyperparameter(s) {unknown} in a parameter group"
                f" (known: {sorted(self.defaults)})"
            )
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        tensors: list[Tensor] = []
        for index, entry in enumerate(entries):
            name, tensor = entry if isinstance(entry, tuple) else (None, entry)
            label = repr(name) if name else f"parameter {index} of group {len(self.param_groups)}"
            self._check_parameter(label, tensor)
            if id(tensor) in seen:
                raise InvalidArgumentError(
                    f"{type(self).__name__}: {label} appears in more than one parameter group"
                )
            seen.add(id(tensor))
            if name is not None:
                self._names[id(tensor)] = name
            tensors.append(tensor)
        full = {**self.defaults, **{k: v for k, v in group.items() if k != "params"}}
        self._check_hyperparameters(full)
        full["params"] = tensors
        self.param_groups.append(full)

    def _check_parameter(self, label: str, tensor: Any) -> None:
        cls = type(self).__name__
        if not isinstance(tensor, Tensor):
            raise InvalidArgumentError(f"{cls}: {label} is a {type(tensor).__name__}, not a Tensor")
        described = f"{label} (Tensor(shape={tensor.shape}, dtype={tensor.dtype.name}))"
        if not tensor.requires_grad:
            raise InvalidArgumentError(
                f"{cls}: {described} does not require grad; call requires_grad_() on it (or on "
                "the model) before building the optimizer"
            )
        if not tensor.is_leaf:
            raise InvalidArgumentError(
                f"{cls}: {described} is the result of {tensor.grad_fn!r}, not a leaf; only "
                "leaves can be optimized"
            )

    def _check_hyperparameters(self, group: Mapping[str, Any]) -> None:
        """Subclasses check their hyperparameters' ranges (InvalidArgumentError)."""

    def _bad(self, name: str, value: Any, need: str) -> InvalidArgumentError:
        return InvalidArgumentError(f"{type(self).__name__}: {name} must be {need}, got {value!r}")

    def _non_negative(self, group: Mapping[str, Any], *names: str) -> None:
        for name in names:
            value = group[name]
            if (
                isinstance(value, bool)
                or not isinstance(value, numbers.Real)
                or not math.isfinite(value)
                or value < 0
            ):
                raise self._bad(name, value, "a finite number >= 0")

    def describe(self, tensor: Tensor) -> str:
        """The parameter's name when it was given one, else its shape."""
        return self._names.get(id(tensor), f"Tensor(shape={tensor.shape})")

    # ------------------------------------------------------------------ the step

    @property
    def state(self) -> dict[int, dict[str, Any]]:
        """Per-parameter state keyed by position (as ``state_dict()["state"]``)."""
        return {
            i: self._state[id(p)] for i, p in enumerate(self._parameters()) if id(p) in self._state
        }

    def _parameters(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear the ``.grad`` of every parameter (``set_to_none=False``: zeros in place)."""
        for p in self._parameters():
            if p.grad is None:
                continue
            if set_to_none:
                p.grad = None
            else:
                with no_grad():
                    p.grad.copy_(0.0)

    def step(self) -> None:
        """One update of every parameter that has a gradient, in place (``Tensor.copy_``
        under ``no_grad``, on the parameter's own backend)."""
        self._step_scalars.clear()
        with no_grad():
            for group in self.param_groups:
                for p in group["params"]:
                    grad = p.grad
                    if grad is None:
                        continue
                    if grad.shape != p.shape or grad.device != p.device:
                        raise ShapeError(
                            f"{type(self).__name__}: the gradient of {self.describe(p)} is "
                            f"{grad.shape} on {grad.device!r}; the parameter is {p.shape} on "
                            f"{p.device!r}"
                        )
                    state = self._state.setdefault(id(p), {})
                    if not self._update_in_place(p, grad, state, group):
                        p.copy_(self._update(p, grad, state, group))

    def _step_scalar(self, value: float, like: Tensor) -> Tensor | float:
        """``value`` for an update of ``like`` where it changes from step to step (bias
        corrections, a scheduled learning rate). A graph-compiling backend would bake a
        Python number into its graph as a constant and compile a new graph every step: there
        it is a 0-d tensor, an input of one graph that every step reuses (one per value and
        step, shared by the parameters). Host backends take the number."""
        if like._backend.shares_host_memory:
            return value
        key = (value, like.device, like.dtype.name)
        found = self._step_scalars.get(key)
        if found is None:
            array = np.array(value, dtype=like.dtype.numpy)
            found = self._step_scalars[key] = from_numpy(array, like.device)
        return found

    def _step_numbers(self, group: Mapping[str, Any], step: int) -> tuple[float, ...]:
        """The numbers of step ``step`` (counted from 1) of a parameter of ``group`` that
        change from step to step (a scheduled learning rate, bias corrections), in the order
        :meth:`_update` uses them; written by each optimizer."""
        raise NotImplementedError

    def _numbers(self, param: Tensor, group: Mapping[str, Any], step: int) -> list[Tensor | float]:
        """:meth:`_step_numbers` for an update of ``param``: 0-d tensors on a graph backend
        (see :meth:`_step_scalar`), the captured graph's inputs while a compiled step is
        captured (optim/_compiled.py), plain numbers on the host."""
        if self._captured_numbers is not None:
            return list(self._captured_numbers[id(param)])
        return [self._step_scalar(v, param) for v in self._step_numbers(group, step)]

    def _update_in_place(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: Mapping[str, Any]
    ) -> bool:
        """Update ``param`` and ``state`` in place with the backend's fused kernel when it has
        one for this optimizer and these tensors (True), else leave both untouched (False):
        :meth:`_update` then composes the new value from ops."""
        return False

    def _update(
        self, param: Tensor, grad: Tensor, state: dict[str, Any], group: Mapping[str, Any]
    ) -> Tensor:
        """The new value of ``param`` (``state`` updated); written by each optimizer."""
        raise NotImplementedError

    # ------------------------------------------------------------------ saving

    def state_dict(self) -> dict[str, Any]:
        """``{"state": {position: {...}}, "param_groups": [{hyperparameters, "params":
        [positions]}]}``, torch.optim's layout (tensors are this package's; the step count is
        an int). The state tensors are snapshots: later steps do not change them."""
        positions = {id(p): i for i, p in enumerate(self._parameters())}
        groups = []
        for group in self.param_groups:
            saved = {k: v for k, v in group.items() if k != "params"}
            saved["params"] = [positions[id(p)] for p in group["params"]]
            groups.append(saved)
        # fused steps write the state tensors in place, so the snapshot takes copies
        state = {
            i: {k: v.clone() if isinstance(v, Tensor) else v for k, v in s.items()}
            for i, s in self.state.items()
        }
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` gave, for the same parameters in the same order
        (tensors move to each parameter's device). A ``torch.optim`` state dict of the same
        optimizer loads too (its tensors are read as arrays)."""
        cls = type(self).__name__
        groups = state_dict.get("param_groups")
        saved_state = state_dict.get("state")
        if not isinstance(groups, list) or not isinstance(saved_state, Mapping):
            raise InvalidArgumentError(f"{cls}.load_state_dict: needs 'state' and 'param_groups'")
        if len(groups) != len(self.param_groups):
            raise InvalidArgumentError(
                f"{cls}.load_state_dict: {len(groups)} parameter group(s) saved, the optimizer "
                f"has {len(self.param_groups)}"
            )
        updates = []
        for index, (saved, group) in enumerate(zip(groups, self.param_groups, strict=True)):
            if len(saved.get("params", ())) != len(group["params"]):
                raise InvalidArgumentError(
                    f"{cls}.load_state_dict: group {index} saved {len(saved.get('params', ()))} "
                    f"parameter(s), the optimizer's has {len(group['params'])}"
                )
            hyper = {k: v for k, v in saved.items() if k != "params"}
            for key in sorted(set(hyper) - set(self.defaults)):
                if key in _TORCH_OFF_KEYS and hyper[key] in _TORCH_OFF_KEYS[key]:
                    del hyper[key]
                elif key != "initial_lr":
                    raise InvalidArgumentError(
                        f"{cls}.load_state_dict: group {index} has {key}={hyper[key]!r}, which "
                        "this optimizer does not implement"
                    )
            hyper.pop("initial_lr", None)
            merged = {**group, **hyper}
            self._check_hyperparameters(merged)
            updates.append((group, hyper, saved["params"]))
        new_state: dict[int, dict[str, Any]] = {}
        for group, _, positions in updates:
            for position, p in zip(positions, group["params"], strict=True):
                entry = saved_state.get(position)
                if entry is not None:
                    new_state[id(p)] = self._load_entry(p, entry)
        for group, hyper, _ in updates:
            group.update(hyper)
        self._state = new_state

    def _load_entry(self, param: Tensor, entry: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in entry.items():
            if key == "step":
                out[key] = int(float(np.asarray(value)))
                continue
            array = (
                value
                if isinstance(value, Tensor)
                else from_numpy(
                    np.ascontiguousarray(np.asarray(value, dtype=np.float32)), param.device
                )
            )
            if array.shape != param.shape:
                raise ShapeError(
                    f"{type(self).__name__}.load_state_dict: state {key!r} of "
                    f"{self.describe(param)} has shape {array.shape}, the parameter {param.shape}"
                )
            # a copy: fused steps write the state in place, the caller's dict stays as it was
            out[key] = array.to(param.device, param.dtype).detach().clone()
        return out
