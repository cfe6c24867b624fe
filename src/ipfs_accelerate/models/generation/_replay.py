"""Decode steps replayed from a captured graph, without running the model's Python.

A decode step (one new column) on a backend that can capture functions
(:meth:`~ipfs_accelerate.hal.Backend.capture`, webnn) is traced once per signature (batch,
cache capacity, the mask kinds of the sliding-window configuration) with every per-step value
as a declared input: the input ids, positions, the additive masks of the cached columns and
the cache itself, one tensor per layer and kind. The cache is in its host form
(:meth:`KVCache.to_host`): its per-layer arrays are fed to the graph as they are (no copy), the
graph attends to the new token's key/value beside the cached ones
(:class:`~ipfs_accelerate.models.generation._cache.Appending`) and returns the logits and only
the new column of every layer, which is written into the host arrays in place. So a step
neither rewrites nor allocates anything of the cache's size. Later steps of a signature feed
the new values to the compiled graph: no op of the model runs in Python, no trace is walked.
Prefill, the steps of backends without capture and those of an in-place cache (cpu) run the
model as before.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import numpy as np

from ipfs_accelerate import ops
from ipfs_accelerate.hal._backend import Backend, CapturedFunction
from ipfs_accelerate.models.generation._cache import Appending, CausalLM, DecodeStep, KVCache
from ipfs_accelerate.tensor import Tensor, from_numpy

__all__ = ["DecodeGraphs"]

Array = np.ndarray[Any, Any]

#: captured decode steps kept per model (least recently used go first): a generation sees a
#: few capacities, continuous batching a few row counts as well
MAX_CAPTURED = 24

_Key = tuple[int, int, int | None, tuple[str, ...]]


class DecodeGraphs:
    """The captured decode steps of one model, by signature; :meth:`forward` runs a step."""

    def __init__(self, model: CausalLM) -> None:
        from ipfs_accelerate import hal

        self.model = model
        backend = hal.get_backend(model.device)
        # a backend offers capture by overriding the contract's default (which declines)
        self.enabled = type(backend).capture is not Backend.capture
        self._in_place = "item-assignment" in backend.info().features
        self._backend = backend
        self._captured: OrderedDict[_Key, CapturedFunction | None] = OrderedDict()

    def forward(self, cache: KVCache, ids: Array, valid: Array) -> Tensor:
        """The logits (B, vocab) of the columns ``ids`` (B, L) whose padding is ``valid``
        False, written into ``cache`` (a replayed step writes its host form in place)."""
        step = cache.begin(valid)
        if not self.enabled or cache.in_place or step.length != 1:
            return self.model(from_numpy(ids, cache.device), step)
        biases = cache.cached_biases(step)
        kinds = tuple(sorted(biases))
        key: _Key = (cache.batch, cache.capacity, cache.shape.sliding_window, kinds)
        arrays = [
            np.ascontiguousarray(ids, dtype=np.int64),
            np.ascontiguousarray(step.positions),
            *(biases[kind] for kind in kinds),
        ]
        if key in self._captured:
            self._captured.move_to_end(key)
            captured = self._captured[key]
        else:
            captured = self._capture(cache, step, kinds, arrays)
            self._captured[key] = captured
            while len(self._captured) > MAX_CAPTURED:
                self._captured.popitem(last=False)
        if captured is None:  # a per-step value not declared, or no step.attend: traced
            return self.model(from_numpy(ids, cache.device), step)
        host_keys, host_values = cache.to_host()
        # per-layer views of the host arrays: contiguous, fed without a copy
        logits, new_keys, new_values = captured.replay(*arrays, *host_keys, *host_values)
        cache.append(step.start, new_keys.numpy(), new_values.numpy())
        return logits

    @property
    def host_cache(self) -> bool:
        """Whether decode steps keep their cache on the host (replayed steps write it there):
        a cache that only ever decodes may start there, its rearrangements numpy copies."""
        return self.enabled and not self._in_place

    @property
    def captured(self) -> int:
        """How many decode signatures have a captured graph."""
        return sum(found is not None for found in self._captured.values())

    def _capture(
        self, cache: KVCache, step: DecodeStep, kinds: tuple[str, ...], arrays: Sequence[Array]
    ) -> CapturedFunction | None:
        model, layers = self.model, cache.shape.layers

        def decode(*inputs: Tensor) -> list[Tensor]:
            ids, positions = inputs[0], inputs[1]
            biases = dict(zip(kinds, inputs[2 : 2 + len(kinds)], strict=True))
            tensors = inputs[2 + len(kinds) :]
            appending = Appending(tensors[:layers], tensors[layers:], biases)
            traced = DecodeStep(
                _stand_in(cache),
                step.start,
                step.length,
                step.window,
                step.positions,
                step.allowed(),
                _position_ids=positions,
                _appending=appending,
            )
            logits = model(ids, traced)
            if len(appending.new_keys) != layers or len(appending.new_values) != layers:
                raise _NotAttended
            return [logits, _columns(appending.new_keys), _columns(appending.new_values)]

        device = cache.device
        inputs = [from_numpy(array, device) for array in arrays]
        if cache.host_keys is not None and cache.host_values is not None:
            cached = [from_numpy(layer, device) for layer in (*cache.host_keys, *cache.host_values)]
        else:
            cached = [*cache.keys, *cache.values]
        try:
            return self._backend.capture(decode, [*inputs, *cached])
        except _NotAttended:  # a model that writes its cache itself runs traced
            return None


class _NotAttended(Exception):
    """The model did not attend every layer through :meth:`DecodeStep.attend`."""


def _stand_in(cache: KVCache) -> KVCache:
    """A copy of ``cache`` that a traced model may write without changing ``cache`` (a model
    that writes its cache instead of attending through the step, which is then not captured)."""
    shadow = copy.copy(cache)
    if cache._keys is not None and cache._values is not None:
        shadow._keys, shadow._values = list(cache._keys), list(cache._values)
    return shadow


def _columns(new: dict[int, Tensor]) -> Tensor:
    """Each layer's new column (B, H, 1, D) stacked: (layers, B, H, D)."""
    parts = []
    for layer in range(len(new)):
        batch, heads, _, dim = new[layer].shape
        parts.append(new[layer].reshape(1, batch, heads, dim))
    return ops.concat(parts, axis=0)
