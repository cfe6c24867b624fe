"""Forwards captured once per batch shape and replayed, and batches run side by side: how
``TextEmbedder`` runs on a backend that captures (webnn).

A captured forward (``Backend.capture``) runs no op in Python: only its graph runs. It bakes
the model in, so it is keyed by the identity of every weight, quantized weight, int8 mode and
input scale (:func:`capture_state`), the batch shape, the call's options and the threads its
graph may use. Several batches of one call run at once, ``min(cores, batches)`` of them, each
graph on its share of the cores (docs/webnn.md, "Batches side by side").

``Reranker`` keeps its traced forward: its padded forward captured and run side by side was
measured slower than its packed, traced one (1 query x 100 documents, MiniLM-L6 shape, webnn:
0.85x in float32, 1.05x in int8); a captured packed classifier forward would be the next step.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import wait
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from ipfs_accelerate._pools import LazyPool
from ipfs_accelerate.hal._backend import host_cores
from ipfs_accelerate.tensor import Tensor, from_numpy

if TYPE_CHECKING:
    from ipfs_accelerate.models._module import Module

__all__ = ["ForwardCache", "capture_state", "captures_here", "run_batches", "side_by_side"]

Array = np.ndarray[Any, Any]
Job = TypeVar("Job")

#: captured forwards a pipeline keeps (one per batch shape and option set)
MAX_CAPTURES = 64

#: the threads batches run side by side on (one per core, shared by every pipeline)
_BATCHES = LazyPool(host_cores, "ia-batches")


def captures_here(device: str, model: Any) -> bool:
    """Whether ``model``'s forward can be captured and replayed on ``device``: a backend that
    captures (webnn) and a model whose state can be walked (:func:`capture_state`)."""
    from ipfs_accelerate import hal
    from ipfs_accelerate.hal._backend import Backend

    backend = hal.get_backend(device)
    return type(backend).capture is not Backend.capture and hasattr(model, "all_modules")


def capture_state(model: Module) -> list[Any] | None:
    """The objects a captured forward of ``model`` bakes in (each weight tensor's data, each
    quantized weight, each Linear's int8 mode and input scale), or None where the forward
    must be traced each time (training mode, an input observer, a parameter that requires
    grad)."""
    from ipfs_accelerate.models._module import Linear

    # read for every call (a query embedded alone included), so the attributes are read
    # from each module's __dict__ over the kept module list: 143 -> 22 us on MiniLM
    state: list[Any] = []
    append = state.append
    for module in model.all_modules():
        attributes = module.__dict__
        if attributes["training"] or attributes.get("input_observer") is not None:
            return None
        for name in attributes["_shapes"]:
            value = attributes.get(name)
            if isinstance(value, Tensor):
                if value.requires_grad:
                    return None
                append(value._data)
            append(value)
        if isinstance(module, Linear):
            state += [module.activations, module.input_scale]
    return state


class ForwardCache:
    """A pipeline's captured forwards, most recently used last (at most MAX_CAPTURES). A
    forward that cannot be captured (it reads a per-call value) is remembered as such, so
    that it is traced without trying again. Safe to use from several threads."""

    def __init__(self) -> None:
        #: key -> (the captured function or None, the model objects its key names by id,
        #: kept alive so that no id is reused)
        self.entries: OrderedDict[tuple[Any, ...], tuple[Any, list[Any]]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        return iter(list(self.entries))

    def replay(
        self,
        device: str,
        key: tuple[Any, ...],
        state: list[Any],
        forward: Callable[..., list[Tensor]],
        arrays: Sequence[Array],
        threads: int | None,
    ) -> Array | None:
        """The one result of ``forward`` on ``arrays``, replayed from its capture under
        ``(ids of state, *key, threads)`` (captured on the first call), or None where it
        cannot be captured (the caller runs the forward)."""
        from ipfs_accelerate import hal

        full = (tuple(id(item) for item in state), *key, threads)
        with self._lock:
            found = self.entries.get(full)
            if found is not None:
                self.entries.move_to_end(full)
        if found is None:
            tensors = [from_numpy(array, device) for array in arrays]
            captured = hal.get_backend(device).capture(forward, tensors, threads=threads)
            found = (captured, state)
            with self._lock:
                self.entries[full] = found
                while len(self.entries) > MAX_CAPTURES:
                    self.entries.popitem(last=False)
        if found[0] is None:
            return None
        (result,) = found[0].replay(*arrays)
        value: Array = result.numpy()
        return value


def side_by_side(batches: int, state: Any) -> tuple[int, int | None]:
    """(how many batches run at once, the threads each graph may use): one batch per core,
    at most the batches, each on its share of the cores, where the forward replays a
    capture (``state`` a list); else (1, None), one batch at a time on the default graphs."""
    cores = host_cores()
    workers = min(cores, batches) if isinstance(state, list) else 1
    return workers, (cores // workers if workers > 1 else None)


def run_batches(
    batches: Sequence[Job],
    prepare: Callable[[Job], Any],
    run: Callable[[Job, Any], None],
    workers: int,
) -> None:
    """``run(batch, prepare(batch))`` for every batch: with several ``workers``, ``prepare``
    on the calling thread (the next batch's tokens while the first ones run) and ``run`` on
    the shared pool; the first batch's error is raised once every submitted batch is done,
    so that nothing runs after this returns or raises."""
    if workers <= 1:
        for batch in batches:
            run(batch, prepare(batch))
        return
    pool = _BATCHES.get()
    futures = []
    try:
        for batch in batches:
            futures.append(pool.submit(run, batch, prepare(batch)))
    finally:
        wait(futures)
    for future in futures:
        future.result()
