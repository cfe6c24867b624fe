"""Optimizer updates on the host for a compiled step whose backend computes on the host CPU.

A parameter and its optimizer state tensors are each kept in one writable host array (a
*mirror*); the backend's tensors read those arrays without a copy
(``Backend.share_host_array``), the step's graph reads them as inputs, and the optimizer's
fused cpu kernel (hal/cpu/_optim.py) updates them in place from the gradients the graph gave.
So a step allocates nothing parameter-sized beyond the gradients, and the update makes one
pass over memory instead of the dozen a composed update makes.

A mirror stays valid while the parameter's tensor and its state tensors are the ones it
handed out; anything that replaced one (an eager step, ``copy_``, ``load_state_dict``) is
noticed at the next step and the mirror is rebuilt from the current values.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ipfs_accelerate.errors import IndexOutOfRangeError
from ipfs_accelerate.hal._backend import Backend
from ipfs_accelerate.hal.cpu._rows import mark_rows
from ipfs_accelerate.optim._optimizer import Optimizer
from ipfs_accelerate.tensor import Tensor
from ipfs_accelerate.tensor._autograd import bump_version

__all__ = ["HostMirrors"]

Array = np.ndarray[Any, Any]

#: the parameter's own entry in a mirror (state tensors are keyed by their state names)
_PARAM = ""
_HOST_FLOATS = frozenset({"float32", "float64"})


@dataclass
class _Mirror:
    """The writable arrays of one parameter and its state, and the handles given out."""

    arrays: dict[str, Array] = field(default_factory=dict)
    handles: dict[str, Any] = field(default_factory=dict)


class HostMirrors:
    """The host arrays behind a compiled step's parameters and optimizer state."""

    def __init__(self, backend: Backend, optimizer: Optimizer) -> None:
        from ipfs_accelerate import hal

        self._backend = backend
        self._cpu = hal.get_backend("cpu")
        self._optimizer = optimizer
        self._mirrors: dict[int, _Mirror] = {}
        self._groups: dict[int, dict[str, Any]] = {}

    @staticmethod
    def capable(backend: Backend, optimizer: Optimizer, params: Sequence[Tensor]) -> bool:
        """Whether ``optimizer`` can update ``params`` on the host for ``backend``."""
        if type(optimizer)._update_in_place is Optimizer._update_in_place:
            return False  # no fused host kernel
        if not all(p.dtype.name in _HOST_FLOATS for p in params):
            return False
        return backend.share_host_array(np.zeros(1, np.float32)) is not None

    def adopt(self, params: Sequence[Tensor]) -> None:
        """Make every parameter's tensor (and its state's) read its mirror, building the
        mirrors that are missing or no longer current."""
        self._groups = {
            id(p): group for group in self._optimizer.param_groups for p in group["params"]
        }
        for p in params:
            state = self._optimizer._state.get(id(p), {})
            mirror = self._mirrors.get(id(p))
            if mirror is None or not self._current(mirror, p, state):
                self._mirrors[id(p)] = self._build(p, state)

    def step(self, param: Tensor, grad: Tensor) -> None:
        """One update of ``param`` (adopted) from ``grad`` (a tensor of the backend), in
        place in its mirror."""
        gradient = self._backend.read_host(grad)
        if gradient is None:  # pragma: no cover - capable() checked the backend
            gradient = grad.numpy()
        self._update(param, self._host(gradient, grad))

    def step_rows(self, param: Tensor, indices: Tensor, rows: Tensor) -> None:
        """One update of ``param`` (adopted) whose gradient is ``rows`` (k, *param.shape[1:])
        added at ``indices`` (k,) along axis 0 of a zero table (an embedding's lookups)."""
        ids = self._read(indices).astype(np.int64, copy=False).reshape(-1)
        values = self._read(rows)
        n = param.shape[0]
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n):
            bad = ids[(ids < 0) | (ids >= n)][0]
            raise IndexOutOfRangeError(
                f"embedding gradient: index {int(bad)} is out of range for axis 0 of size {n}"
            )
        # a zero table written only where rows land (calloc'd: untouched pages cost nothing)
        gradient = np.zeros(param.shape, dtype=values.dtype)
        if ids.size:
            order = np.argsort(ids, kind="stable")
            ordered = ids[order]
            starts = np.flatnonzero(np.concatenate(([True], ordered[1:] != ordered[:-1])))
            unique = ordered[starts]
            gradient[unique] = np.add.reduceat(values[order], starts, axis=0)
        else:
            unique = ids
        mark_rows(gradient, unique)
        self._update(param, Tensor(gradient, param.shape, param.dtype, self._cpu))

    def _read(self, x: Tensor) -> Array:
        found = self._backend.read_host(x)
        return x.numpy() if found is None else found

    def _update(self, param: Tensor, host_grad: Tensor) -> None:
        optimizer = self._optimizer
        mirror = self._mirrors[id(param)]
        state = optimizer._state.setdefault(id(param), {})
        self._private(mirror, _PARAM, param)
        for key in list(mirror.handles):
            if key != _PARAM:
                self._private(mirror, key, state[key])
        host_state = {
            key: self._host(mirror.arrays[key], value) if key in mirror.arrays else value
            for key, value in state.items()
        }
        host_param = self._host(mirror.arrays[_PARAM], param)
        group = self._groups[id(param)]
        if not optimizer._update_in_place(host_param, host_grad, host_state, group):
            # a kernel that refuses these arrays: the composed update, on the host
            updated = optimizer._update(host_param, host_grad, host_state, group)
            np.copyto(mirror.arrays[_PARAM], updated._data)
        for key, value in host_state.items():
            if not isinstance(value, Tensor):
                state[key] = value  # the step count
            elif key not in mirror.arrays or value._data is not mirror.arrays[key]:
                # new state (the first update), or a kernel that gave a new array
                array = np.require(value._data, requirements=("C", "W", "O"))
                mirror.arrays[key] = array
                state[key] = self._shared(mirror, key, array, value)
        param.grad = None
        bump_version(param)

    # ------------------------------------------------------------------ helpers

    def _private(self, mirror: _Mirror, key: str, owner: Tensor) -> None:
        """Copy the values ``owner`` (the parameter or a state tensor) reads into a new
        array when anything else reads them too: a computation not run yet that takes
        them as input, another tensor over the same values (``detach``). Those keep the
        values they were given; the in-place update then writes only what is ours."""
        handle = mirror.handles[key]
        # references: mirror.handles, owner._data, ``handle`` and getrefcount's argument
        if sys.getrefcount(handle) <= 4:
            return
        del handle
        array = mirror.arrays[key].copy()
        mirror.arrays[key] = array
        owner._data = self._shared(mirror, key, array, owner)._data

    def _host(self, array: Array, like: Tensor) -> Tensor:
        return Tensor(array, like.shape, like.dtype, self._cpu)

    def _shared(self, mirror: _Mirror, key: str, array: Array, like: Tensor) -> Tensor:
        handle = self._backend.share_host_array(array)
        if handle is None:  # pragma: no cover - capable() checked the backend
            raise RuntimeError("the backend stopped sharing host memory")
        mirror.handles[key] = handle
        return Tensor(handle, like.shape, like.dtype, self._backend)

    def _current(self, mirror: _Mirror, param: Tensor, state: dict[str, Any]) -> bool:
        if param._data is not mirror.handles.get(_PARAM):
            return False
        keys = {k for k, v in state.items() if isinstance(v, Tensor)}
        if keys != set(mirror.handles) - {_PARAM}:
            return False
        return all(state[k]._data is mirror.handles[k] for k in keys)

    def _build(self, param: Tensor, state: dict[str, Any]) -> _Mirror:
        mirror = _Mirror()
        array = np.require(param.numpy(), requirements=("C", "W", "O"))
        mirror.arrays[_PARAM] = array
        param._data = self._shared(mirror, _PARAM, array, param)._data
        for key, value in list(state.items()):
            if isinstance(value, Tensor):
                array = np.require(value.numpy(), requirements=("C", "W", "O"))
                mirror.arrays[key] = array
                state[key] = self._shared(mirror, key, array, value)
        return mirror
