"""A whole training step (forward, loss, backward, clipping, optimizer update) replayed as one
graph dispatch per step on a backend that captures functions (webnn).

Tracing a MiniLM training step on webnn builds some 3,600 graph nodes in Python every step,
although the graph is the same each time. :func:`compile_step` traces it once per signature
(the batch's shapes and dtypes and the optimizer's structure) with everything that changes
from step to step as an input of the graph: the batch, the parameters, the optimizer state,
the numbers that a learning-rate schedule or the step count change (learning rate, bias
corrections) and the uniform values of every dropout mask. Later steps feed the new values
and take back the loss, the new parameters and the new state: one dispatch, no op of the
model runs in Python.

Where the backend computes on the host CPU (webnn on ONNX Runtime's CPU provider) and the
optimizer has a host kernel (SGD, AdamW), the graph stops at the gradients and the update runs
on the host, in place: each parameter and its optimizer state are kept in writable host
arrays that the graph reads without a copy (``Backend.share_host_array``), and the cpu
backend's fused kernel updates them piece by piece in the cache. Composed from graph ops, an
AdamW update is a dozen passes over memory per parameter, each with its own output buffer;
the host kernel makes about one. An embedding table's gradient (its lookups' rows scattered
into zeros) leaves the graph as the rows and their indices, not as a dense table: the host
sums rows that share an index and updates only the rows whose gradient or moments can be
nonzero (hal/cpu/_rows.py), plus the weight decay of the others.

On backends without capture (cpu, webgpu) the same call runs the step eagerly.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ipfs_accelerate.errors import InvalidArgumentError, NonFiniteLossError
from ipfs_accelerate.hal._backend import Backend, CapturedFunction
from ipfs_accelerate.ops._nn import SeedSource, dropout_uniforms
from ipfs_accelerate.optim._clip import clip_grad_norm_
from ipfs_accelerate.optim._host import HostMirrors
from ipfs_accelerate.optim._optimizer import Optimizer
from ipfs_accelerate.tensor import Tensor, from_numpy
from ipfs_accelerate.tensor._autograd import bump_version
from ipfs_accelerate.tensor._creation import DEFAULT_FLOAT, uniform_array

__all__ = ["CompiledStep", "compile_step"]

Array = np.ndarray[Any, Any]
LossFn = Callable[..., Tensor]

#: captured signatures kept per compiled step (least recently used go first)
MAX_CAPTURED = 8

_UNDECLARED = (
    "compile_step: the training step reads a tensor that is not one of its inputs "
    "(a batch value made inside loss_fn with from_numpy/tensor, a value read back "
    "to the host, ...): every value that changes from step to step must be an "
    "argument of the step, so that a replay does not reuse the first step's"
)
_FEWER_MASKS = (
    "compile_step: the step draws fewer dropout masks than its first step did; "
    "call reset() after changing the model"
)


@dataclass
class _Mask:
    """One dropout mask of the step, in call order: its shape and where its seed comes from."""

    shape: tuple[int, ...]
    source: SeedSource
    seed: int | None  # the seed drawn while the step was traced


@dataclass
class _Signature:
    """What one signature's capture needs and gives."""

    masks: list[_Mask]
    captured: CapturedFunction | None = None
    #: per step-number class (see CompiledStep._partition): its group, dtype and the
    #: updated parameters in it (positions), which take one step at a time together
    classes: list[tuple[int, str, list[int]]] = field(default_factory=list)
    #: the parameters the step updates (positions), and the state keys it writes for each
    updated: list[int] = field(default_factory=list)
    state_keys: list[tuple[str, ...]] = field(default_factory=list)
    #: per parameter: the state tensors it had when the step was captured (graph inputs)
    state_found: tuple[tuple[str, ...], ...] = ()
    #: host update: the updated parameters whose gradient the graph gives as rows (indices,
    #: rows) instead of a dense table
    sparse: frozenset[int] = frozenset()


#: a step-number class: (group index, the step its parameters are about to take, dtype name)
_Class = tuple[int, int, str]


class CompiledStep:
    """``step(*batch)``: one training step of ``loss_fn(*batch)`` with ``optimizer``; returns
    the loss (a 0-d tensor on the parameters' device). See :func:`compile_step`."""

    def __init__(
        self,
        loss_fn: LossFn,
        optimizer: Optimizer,
        *,
        max_grad_norm: float | None = None,
        check_finite: bool | None = None,
        host_update: bool | None = None,
    ) -> None:
        if not callable(loss_fn):
            raise InvalidArgumentError(f"compile_step: loss_fn must be callable, got {loss_fn!r}")
        if not isinstance(optimizer, Optimizer):
            raise InvalidArgumentError(
                f"compile_step: optimizer must be an ipfs_accelerate.optim optimizer, got "
                f"{type(optimizer).__name__}"
            )
        if max_grad_norm is not None and (
            isinstance(max_grad_norm, bool)
            or not isinstance(max_grad_norm, numbers.Real)
            or not math.isfinite(max_grad_norm)
            or max_grad_norm <= 0
        ):
            raise InvalidArgumentError(
                f"compile_step: max_grad_norm must be a finite number > 0, got {max_grad_norm!r}"
            )
        params = optimizer._parameters()
        devices = sorted({p.device for p in params})
        if len(devices) != 1:
            raise InvalidArgumentError(
                f"compile_step: the optimizer's parameters are on several devices {devices}"
            )
        from ipfs_accelerate import hal

        self.loss_fn = loss_fn
        self.optimizer = optimizer
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.check_finite = check_finite
        self.device = devices[0]
        self._backend: Backend = hal.get_backend(self.device)
        #: whether steps are captured and replayed (the backend offers capture)
        self.captures = type(self._backend).capture is not Backend.capture
        self._params = params
        self._signatures: dict[tuple[Any, ...], _Signature] = {}
        capable = self.captures and HostMirrors.capable(self._backend, optimizer, params)
        if host_update not in (None, True, False):
            raise InvalidArgumentError(
                f"compile_step: host_update must be None, True or False, got {host_update!r}"
            )
        if host_update and not capable:
            raise InvalidArgumentError(
                f"compile_step: host_update=True needs a capturing backend that computes on "
                f"the host ({self.device!r} does not) and an optimizer with a host kernel "
                f"(SGD, AdamW) over float32/float64 parameters ({type(optimizer).__name__})"
            )
        #: whether a replayed step's graph stops at the gradients and the update runs on
        #: the host (see the module's docstring)
        self.host_update = capable if host_update is None else host_update
        self._mirrors = HostMirrors(self._backend, optimizer) if self.host_update else None

    # ------------------------------------------------------------------ public

    def __call__(self, *batch: Tensor | Array) -> Tensor:
        """One step on ``batch`` (tensors on the parameters' device, or numpy arrays): the
        loss before the update."""
        if not self.captures:
            return self._eager(self._tensors(batch), None)
        key = self._key(batch)
        signature = self._signatures.get(key)
        if signature is None:
            # the first step of a signature runs traced: it creates the optimizer state and
            # shows which dropout masks the step draws
            masks: list[_Mask] = []
            loss = self._eager(self._tensors(batch), masks)
            self._remember(key, _Signature(masks))
            return loss
        self._signatures[key] = self._signatures.pop(key)  # most recently used last
        seeds = None
        if signature.captured is None or (
            self._mirrors is None
            and (not self._in_step(signature) or signature.state_found != self._state_keys())
        ):
            seeds = self._capture(signature, batch)
            if seeds is None:  # a parameter without optimizer state yet: once more traced
                return self._eager(self._tensors(batch), None)
        return self._replay(signature, batch, seeds)

    @property
    def captured(self) -> int:
        """How many signatures have a captured graph."""
        return sum(s.captured is not None for s in self._signatures.values())

    def reset(self) -> None:
        """Forget every captured step. Call it after changing something the step's Python
        reads that is not one of its inputs: ``train()``/``eval()``, a module of the model,
        a number ``loss_fn`` reads from elsewhere (a changed hyperparameter other than the
        learning rate makes a new signature by itself)."""
        self._signatures.clear()

    # ------------------------------------------------------------------ eager

    def _eager(self, batch: list[Tensor], masks: list[_Mask] | None) -> Tensor:
        optimizer = self.optimizer
        optimizer.zero_grad()
        token = None
        if masks is not None:

            def record(
                shape: tuple[int, ...], source: SeedSource, seed: int | None, device: str
            ) -> Tensor:
                masks.append(_Mask(tuple(shape), source, seed))
                return from_numpy(uniform_array(tuple(shape), seed, DEFAULT_FLOAT), device)

            token = dropout_uniforms.set(record)
        try:
            loss = self._loss(batch)
            loss.backward(check_finite=self.check_finite)
        finally:
            if token is not None:
                dropout_uniforms.reset(token)
        if self.max_grad_norm is not None:
            clip_grad_norm_(self._params, self.max_grad_norm)
        optimizer.step()
        return loss

    def _loss(self, batch: Sequence[Tensor]) -> Tensor:
        loss = self.loss_fn(*batch)
        if not isinstance(loss, Tensor) or loss.shape != ():
            raise InvalidArgumentError(
                "compile_step: loss_fn must return a 0-d tensor (the loss), got "
                + (f"a tensor of shape {loss.shape}" if isinstance(loss, Tensor) else repr(loss))
            )
        return loss

    # ------------------------------------------------------------------ capture

    def _capture(
        self, signature: _Signature, batch: Sequence[Tensor | Array]
    ) -> list[int | None] | None:
        """Trace and compile the step for ``signature``; the seeds of the masks the trace
        drew (the replay that follows uses them), or None where the step updates a
        parameter that has no optimizer state yet (its state would start inside the graph:
        the step runs traced once more and the next one captures)."""
        if self._mirrors is not None:
            return self._capture_gradients(signature, batch)
        optimizer, params = self.optimizer, self._params
        state_keys = list(self._state_keys())
        partition, classes = self._partition()
        numbers = self._number_arrays(classes)
        sizes = [len(self._numbers_of(entry)) for entry in classes]
        masks = signature.masks
        inputs: list[Tensor] = [*self._tensors(batch), *params]
        for p, keys in zip(params, state_keys, strict=True):
            inputs.extend(optimizer._state[id(p)][k] for k in keys)
        inputs.extend(from_numpy(a, self.device) for a in numbers)
        inputs.extend(
            from_numpy(uniform_array(m.shape, m.seed, DEFAULT_FLOAT), self.device) for m in masks
        )
        batch_count, count = len(batch), len(params)
        updated: list[int] = []
        written: list[tuple[str, ...]] = []
        seeds: list[int | None] = []

        def step(*arguments: Tensor) -> list[Tensor]:
            at = batch_count + count
            state_args: list[dict[str, Tensor]] = []
            for keys in state_keys:
                state_args.append(dict(zip(keys, arguments[at : at + len(keys)], strict=True)))
                at += len(keys)
            per_class: list[list[Tensor]] = []
            for size in sizes:
                per_class.append(list(arguments[at : at + size]))
                at += size
            per_param = [per_class[index] for index in partition]
            trace = _Trace(list(arguments[at:]), seeds, updated, written)
            return self._traced(
                arguments[:batch_count],
                arguments[batch_count : batch_count + count],
                state_args,
                per_param,
                trace,
            )

        captured = self._backend.capture(step, inputs)
        if captured is None:
            raise InvalidArgumentError(_UNDECLARED)
        if any(id(params[index]) not in optimizer._state for index in updated):
            return None
        signature.captured = captured
        signature.state_found = tuple(state_keys)
        signature.classes = [
            (group, dtype, [i for i in updated if partition[i] == k])
            for k, (group, _, dtype) in enumerate(classes)
        ]
        signature.updated = updated
        signature.state_keys = written
        return seeds

    def _capture_gradients(
        self, signature: _Signature, batch: Sequence[Tensor | Array]
    ) -> list[int | None]:
        """Host-update capture: the graph takes the batch, the parameters and the dropout
        masks and gives the loss and the (clipped) gradients; the seeds its trace drew."""
        params, masks = self._params, signature.masks
        inputs: list[Tensor] = [*self._tensors(batch), *params]
        inputs.extend(
            from_numpy(uniform_array(m.shape, m.seed, DEFAULT_FLOAT), self.device) for m in masks
        )
        batch_count, count = len(batch), len(params)
        updated: list[int] = []
        sparse: list[int] = []
        seeds: list[int | None] = []

        def step(*arguments: Tensor) -> list[Tensor]:
            trace = _Trace(list(arguments[batch_count + count :]), seeds, updated, [], sparse)
            return self._traced_gradients(
                arguments[:batch_count], arguments[batch_count : batch_count + count], trace
            )

        captured = self._backend.capture(step, inputs)
        if captured is None:
            raise InvalidArgumentError(_UNDECLARED)
        signature.captured = captured
        signature.updated = updated
        signature.sparse = frozenset(sparse)
        return seeds

    def _traced_gradients(
        self, batch: Sequence[Tensor], param_args: Sequence[Tensor], trace: _Trace
    ) -> list[Tensor]:
        params = self._params
        saved = [(p._data, p.grad) for p in params]
        token = dropout_uniforms.set(trace.uniforms)
        try:
            for p, value in zip(params, param_args, strict=True):
                p._data = value._data
                p.grad = None
            loss = self._loss(batch)
            loss.backward()
            if self.max_grad_norm is not None:
                clip_grad_norm_(params, self.max_grad_norm)
            if trace.masks:
                raise InvalidArgumentError(_FEWER_MASKS)
            outputs = [loss]
            for index, p in enumerate(params):
                if p.grad is None:
                    continue
                trace.updated.append(index)
                scattered = self._backend.scattered_rows(p.grad)
                if scattered is None:
                    outputs.append(p.grad)
                else:  # an embedding table's gradient: its rows, not the dense table
                    trace.sparse.append(index)
                    outputs.extend(_row_outputs(scattered, p))
            return outputs
        finally:
            dropout_uniforms.reset(token)
            for p, (data, grad) in zip(params, saved, strict=True):
                p._data, p.grad = data, grad

    def _traced(
        self,
        batch: Sequence[Tensor],
        param_args: Sequence[Tensor],
        state_args: list[dict[str, Tensor]],
        numbers: list[list[Tensor]],
        trace: _Trace,
    ) -> list[Tensor]:
        """The step traced over the capture's arguments: the parameters and the optimizer
        state take the arguments' values for the trace and get their own back after it."""
        optimizer, params = self.optimizer, self._params
        saved = [(p._data, p.grad) for p in params]
        saved_states = {
            id(p): dict(optimizer._state[id(p)]) for p in params if id(p) in optimizer._state
        }
        token = dropout_uniforms.set(trace.uniforms)
        try:
            for p, value, state in zip(params, param_args, state_args, strict=True):
                p._data = value._data
                p.grad = None
                if state:
                    optimizer._state[id(p)].update(state)
            optimizer._captured_numbers = {
                id(p): entry for p, entry in zip(params, numbers, strict=True)
            }
            loss = self._loss(batch)
            loss.backward()
            if self.max_grad_norm is not None:
                clip_grad_norm_(params, self.max_grad_norm)
            optimizer.step()
            if trace.masks:
                raise InvalidArgumentError(_FEWER_MASKS)
            outputs = [loss]
            for index, (p, value) in enumerate(zip(params, param_args, strict=True)):
                if p._data is value._data:
                    continue  # no gradient reached it: not updated
                state = optimizer._state[id(p)]
                keys = _tensor_keys(state)
                trace.updated.append(index)
                trace.written.append(keys)
                outputs.append(Tensor(p._data, p.shape, p.dtype, p._backend))
                outputs.extend(state[k] for k in keys)
            return outputs
        finally:
            dropout_uniforms.reset(token)
            optimizer._captured_numbers = None
            for p, (data, grad) in zip(params, saved, strict=True):
                p._data, p.grad = data, grad
                held = optimizer._state.get(id(p))
                if held is not None:
                    held.clear()
                    held.update(saved_states.get(id(p), {}))
                    if id(p) not in saved_states:
                        del optimizer._state[id(p)]

    # ------------------------------------------------------------------ replay

    def _replay(
        self,
        signature: _Signature,
        batch: Sequence[Tensor | Array],
        seeds: list[int | None] | None,
    ) -> Tensor:
        assert signature.captured is not None
        optimizer, params, mirrors = self.optimizer, self._params, self._mirrors
        if mirrors is not None:
            mirrors.adopt(params)  # the graph reads the arrays the host kernel writes
        inputs: list[Tensor | Array] = [*batch, *params]
        if mirrors is None:
            for p in params:
                state = optimizer._state.get(id(p), {})
                inputs.extend(state[k] for k in _tensor_keys(state))
            inputs.extend(self._number_arrays(self._current(signature)))
        for index, mask in enumerate(signature.masks):
            if seeds is not None:
                seed = seeds[index]  # drawn while the step was traced
            elif isinstance(mask.source, np.random.Generator):
                seed = int(mask.source.integers(0, 2**63 - 1))
            else:
                seed = mask.source
            inputs.append(uniform_array(mask.shape, seed, DEFAULT_FLOAT))
        results = signature.captured.replay(*inputs)
        if self.check_finite:
            # as backward(check_finite=True) would have, before anything changes
            value = results[0].numpy()
            if not np.isfinite(value).all():
                raise NonFiniteLossError(
                    f"compile_step: the loss (Tensor(shape=(), device={self.device!r})) holds "
                    f"{float(value)}; its gradients would be NaN/inf (the step was not applied)"
                )
        if mirrors is not None:
            at = 1
            for index in signature.updated:
                if index in signature.sparse:
                    mirrors.step_rows(params[index], results[at], results[at + 1])
                    at += 2
                else:
                    mirrors.step(params[index], results[at])
                    at += 1
            return results[0]
        at = 1
        for index, keys in zip(signature.updated, signature.state_keys, strict=True):
            p = params[index]
            p._data = results[at]._data
            p.grad = None
            bump_version(p)
            state = optimizer._state[id(p)]
            for offset, k in enumerate(keys, start=1):
                state[k] = results[at + offset]
            at += 1 + len(keys)
            if "step" in state:
                state["step"] += 1
        return results[0]

    # ------------------------------------------------------------------ helpers

    def _tensors(self, batch: Sequence[Tensor | Array]) -> list[Tensor]:
        out = []
        for index, value in enumerate(batch):
            if isinstance(value, Tensor):
                if value.device != self.device:
                    raise InvalidArgumentError(
                        f"compile_step: batch input {index} is on {value.device!r}, the "
                        f"parameters on {self.device!r}"
                    )
                out.append(value)
            elif isinstance(value, np.ndarray):
                out.append(from_numpy(np.ascontiguousarray(value), self.device))
            else:
                raise InvalidArgumentError(
                    f"compile_step: batch input {index} must be a Tensor or a numpy array, got "
                    f"{type(value).__name__}"
                )
        return out

    def _key(self, batch: Sequence[Tensor | Array]) -> tuple[Any, ...]:
        shapes = []
        for value in batch:
            if isinstance(value, Tensor | np.ndarray):
                shapes.append((value.shape, value.dtype.name))
            else:
                self._tensors([value])  # raises the typed error
        hyper = tuple(
            tuple(sorted((k, repr(v)) for k, v in g.items() if k not in ("params", "lr")))
            for g in self.optimizer.param_groups
        )
        return (tuple(shapes), hyper)

    def _remember(self, key: tuple[Any, ...], signature: _Signature) -> None:
        self._signatures[key] = signature
        while len(self._signatures) > MAX_CAPTURED:
            self._signatures.pop(next(iter(self._signatures)))

    def _partition(self) -> tuple[tuple[int, ...], list[_Class]]:
        """Per parameter the index of its class, and the classes: parameters of one group
        about to take the same step share the step's numbers (one graph input each)."""
        optimizer = self.optimizer
        classes: list[_Class] = []
        index_of: dict[_Class, int] = {}
        per_param = []
        for index, group in enumerate(optimizer.param_groups):
            for p in group["params"]:
                step = int(optimizer._state.get(id(p), {}).get("step", 0))
                entry = (index, step, p.dtype.name)
                if entry not in index_of:
                    index_of[entry] = len(classes)
                    classes.append(entry)
                per_param.append(index_of[entry])
        return tuple(per_param), classes

    def _state_keys(self) -> tuple[tuple[str, ...], ...]:
        """Per parameter: the names of its optimizer state tensors (none before its first
        update; SGD's momentum buffer after it)."""
        state = self.optimizer._state
        return tuple(_tensor_keys(state.get(id(p), {})) for p in self._params)

    def _numbers_of(self, entry: _Class) -> tuple[float, ...]:
        group = self.optimizer.param_groups[entry[0]]
        return self.optimizer._step_numbers(group, entry[1] + 1)

    def _step_of(self, index: int) -> int:
        state = self.optimizer._state.get(id(self._params[index]), {})
        return int(state.get("step", 0))

    def _in_step(self, signature: _Signature) -> bool:
        """Whether the parameters that share each of the captured step's number inputs are
        still about to take the same step (an eager step between replays may have moved
        some on alone)."""
        for _, _, members in signature.classes:
            if len({self._step_of(i) for i in members}) > 1:
                return False
        return True

    def _current(self, signature: _Signature) -> list[_Class]:
        """The captured classes at the steps their updated parameters take now (a class
        that the step does not update feeds inputs the graph does not read)."""
        return [
            (group, self._step_of(members[0]) if members else 0, dtype)
            for group, dtype, members in signature.classes
        ]

    def _number_arrays(self, classes: list[_Class]) -> list[Array]:
        return [
            np.array(value, dtype=np.dtype(entry[2]))
            for entry in classes
            for value in self._numbers_of(entry)
        ]


@dataclass
class _Trace:
    """What the capture's trace takes (the masks' inputs, in draw order) and records (the
    seeds drawn, the parameters updated and the state keys written)."""

    masks: list[Tensor]
    seeds: list[int | None]
    updated: list[int]
    written: list[tuple[str, ...]]
    sparse: list[int] = field(default_factory=list)

    def uniforms(
        self, shape: tuple[int, ...], source: SeedSource, seed: int | None, device: str
    ) -> Tensor:
        if not self.masks or self.masks[0].shape != tuple(shape):
            raise InvalidArgumentError(
                "compile_step: the step draws other dropout masks than its first step did "
                f"(one of shape {tuple(shape)}); call reset() after changing the model"
            )
        self.seeds.append(seed)
        return self.masks.pop(0)


def _row_outputs(scattered: list[tuple[Tensor, Tensor]], param: Tensor) -> list[Tensor]:
    """A gradient scattered into zeros as two graph outputs: every lookup's row indices
    (int64, flat) and their rows (one per index, ``param.shape[1:]`` each)."""
    from ipfs_accelerate import ops

    indices = [ops.reshape(i.astype("int64"), (i.size,)) for i, _ in scattered]
    rows = [ops.reshape(r, (i.size, *param.shape[1:])) for i, r in scattered]
    if len(scattered) == 1:
        return [indices[0], rows[0]]
    return [ops.concat(indices, 0), ops.concat(rows, 0)]


def _tensor_keys(state: Mapping[str, Any]) -> tuple[str, ...]:
    return tuple(sorted(k for k, v in state.items() if isinstance(v, Tensor)))


def compile_step(
    loss_fn: LossFn,
    optimizer: Optimizer,
    *,
    max_grad_norm: float | None = None,
    check_finite: bool | None = None,
    host_update: bool | None = None,
) -> CompiledStep:
    """A training step to call once per batch: ``step = compile_step(loss_fn, optimizer)``,
    then ``loss = step(*batch)`` runs ``optimizer.zero_grad()``, ``loss_fn(*batch)``,
    ``backward()``, gradient clipping to ``max_grad_norm`` (None: none) and
    ``optimizer.step()``, and returns the loss.

    On a backend that captures functions (webnn) the step's Python runs only for the first
    two steps of each signature (the batch's shapes and dtypes, the optimizer's
    hyperparameters other than the learning rate); later steps replay one compiled graph
    with the batch, the parameters, the optimizer state, the learning rate and bias
    corrections and the dropout masks as its inputs. ``loss_fn`` must take every value that
    changes between steps as an argument: one it makes itself (``from_numpy`` of the batch,
    a value read back to the host) raises InvalidArgumentError when the step is captured.
    After a replayed step the parameters' ``.grad`` is None (the gradients stay inside the
    graph). Elsewhere (cpu, webgpu) the step runs eagerly, the same as the loop written out.

    ``check_finite`` is ``backward``'s: True reads the loss back and raises
    NonFiniteLossError on NaN or infinity before the update is applied (a replayed step's
    results are then dropped), None checks only where the loss lives on the host.

    ``host_update``: whether a replayed step's graph stops at the gradients and the
    optimizer's update runs on the host, in place (see the module's docstring). None (the
    default) does it where it can: a backend that computes on the host CPU (webnn on ONNX
    Runtime's CPU provider) and SGD or AdamW over float32/float64 parameters; True requires
    it (InvalidArgumentError where it cannot); False keeps the update in the graph.
    """
    return CompiledStep(
        loss_fn,
        optimizer,
        max_grad_norm=max_grad_norm,
        check_finite=check_finite,
        host_update=host_update,
    )
