"""Decode steps replayed from a captured graph, without running the model's Python.

A decode step (one new column) on a backend that can capture functions
(:meth:`~ipfs_accelerate.hal.Backend.capture`, webnn) is traced once per signature (batch,
attended window, cache capacity, the mask kinds of the sliding-window configuration) with
every per-step value as a declared input: the input ids, positions, attention masks, the
one-hot column the step writes and the cache tensors. Later steps of that signature feed the
new values to the compiled graph and take back the logits and the new cache tensors: no op
of the model runs in Python, no trace is walked. Prefill, the steps of backends without
capture and those of an in-place cache (cpu) run the model as before.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ipfs_accelerate.hal._backend import Backend, CapturedFunction
from ipfs_accelerate.models.generation._cache import CausalLM, DecodeStep, KVCache
from ipfs_accelerate.tensor import Tensor, from_numpy

__all__ = ["DecodeGraphs"]

Array = np.ndarray[Any, Any]

#: captured decode steps kept per model (least recently used go first): a generation sees a
#: few windows and capacities, continuous batching a few row counts as well
MAX_CAPTURED = 24

_Key = tuple[int, int, int, int | None, tuple[str, ...]]


class DecodeGraphs:
    """The captured decode steps of one model, by signature; :meth:`forward` runs a step."""

    def __init__(self, model: CausalLM) -> None:
        from ipfs_accelerate import hal

        self.model = model
        backend = hal.get_backend(model.device)
        # a backend offers capture by overriding the contract's default (which declines)
        self.enabled = type(backend).capture is not Backend.capture
        self._backend = backend
        self._captured: OrderedDict[_Key, CapturedFunction | None] = OrderedDict()

    def forward(self, cache: KVCache, ids: Array, valid: Array) -> Tensor:
        """The logits (B, vocab) of the columns ``ids`` (B, L) whose padding is ``valid``
        False, written into ``cache`` (a replayed step replaces its tensors)."""
        step = cache.begin(valid)
        if not self.enabled or cache.in_place or step.length != 1:
            return self.model(from_numpy(ids, cache.device), step)
        allowed = step.allowed()
        kinds = tuple(sorted(allowed))
        key: _Key = (
            cache.batch,
            step.window,
            cache.capacity,
            cache.shape.sliding_window,
            kinds,
        )
        onehot = np.zeros((1, 1, cache.capacity, 1), dtype=bool)
        onehot[0, 0, step.start, 0] = True
        arrays = [
            np.ascontiguousarray(ids, dtype=np.int64),
            np.ascontiguousarray(step.positions),
            *(np.ascontiguousarray(allowed[kind]) for kind in kinds),
            onehot,
        ]
        if key in self._captured:
            self._captured.move_to_end(key)
            captured = self._captured[key]
        else:
            captured = self._capture(cache, step, kinds, arrays)
            self._captured[key] = captured
            while len(self._captured) > MAX_CAPTURED:
                self._captured.popitem(last=False)
        if captured is None:  # the model reads a per-step value it does not declare
            return self.model(from_numpy(ids, cache.device), step)
        layers = len(cache.keys)
        results = captured.replay(*arrays, *cache.keys, *cache.values)
        cache.keys = list(results[1 : 1 + layers])
        cache.values = list(results[1 + layers :])
        return results[0]

    @property
    def captured(self) -> int:
        """How many decode signatures have a captured graph."""
        return sum(found is not None for found in self._captured.values())

    def _capture(
        self, cache: KVCache, step: DecodeStep, kinds: tuple[str, ...], arrays: Sequence[Array]
    ) -> CapturedFunction | None:
        model, layers = self.model, len(cache.keys)

        def decode(*inputs: Tensor) -> list[Tensor]:
            ids, positions = inputs[0], inputs[1]
            masks = dict(zip(kinds, inputs[2 : 2 + len(kinds)], strict=True))
            write = inputs[2 + len(kinds)]
            tensors = inputs[3 + len(kinds) :]
            # the step writes into a stand-in whose tensors are the captured inputs
            shadow = copy.copy(cache)
            shadow.keys = list(tensors[:layers])
            shadow.values = list(tensors[layers:])
            traced = DecodeStep(
                shadow,
                step.start,
                step.length,
                step.window,
                step.positions,
                step.allowed(),
                _write=write,
                _position_ids=positions,
                _given_masks=masks,
            )
            logits = model(ids, traced)
            return [logits, *shadow.keys, *shadow.values]

        inputs = [from_numpy(array, cache.device) for array in arrays]
        return self._backend.capture(decode, [*inputs, *cache.keys, *cache.values])
