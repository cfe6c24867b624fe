"""TensorSharingManager: one registry of shared tensors for every model in a process.

Names form one namespace: tensors, their aliases (other names registered for the same
content) and views. Memory is the sum of the distinct tensors' bytes, each counted once
however many names, views and models point at it. See :class:`TensorSharingManager`.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ipfs_accelerate.errors import (
    InvalidArgumentError,
    OutOfMemoryError,
    SharingError,
    TensorNotFoundError,
)
from ipfs_accelerate.sharing._cid import content_id, host_bytes
from ipfs_accelerate.sharing._compat import SHARING_PATTERNS, model_family
from ipfs_accelerate.sharing._shared_tensor import (
    SharedTensor,
    SharedTensorView,
    ViewSpec,
    check_name,
    check_storage,
    place_data,
)
from ipfs_accelerate.tensor import DType, Tensor, as_dtype, from_numpy
from ipfs_accelerate.tensor._creation import normalize_shape

__all__ = ["TensorSharingManager"]

logger = logging.getLogger("ipfs_accelerate.sharing")

_MB = 1024 * 1024
_COMPARE_CHUNK = 1 << 24  # bytes compared at a time: no full-size temporary for huge weights

ContentKey = tuple[str, str, tuple[int, ...], str]  # content id, dtype, shape, storage type


def _same_bytes(a: Tensor, b: Tensor) -> bool:
    x, y = host_bytes(a), host_bytes(b)
    if x.size != y.size:
        return False
    if x.size == 0 or x.__array_interface__["data"][0] == y.__array_interface__["data"][0]:
        return True
    return all(
        np.array_equal(x[i : i + _COMPARE_CHUNK], y[i : i + _COMPARE_CHUNK])
        for i in range(0, x.size, _COMPARE_CHUNK)
    )


def _mb(nbytes: int) -> float:
    return nbytes / _MB


def _list_names(names: list[str], limit: int = 10) -> str:
    if not names:
        return "none"
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


class TensorSharingManager:
    """Registers shared tensors, deduplicates them by content, tracks which models hold what,
    and keeps their total size under ``max_memory_mb`` (None: no limit).

    * ``register_shared_tensor(..., data=t)`` holds ``t`` itself when it already lives on
      ``storage_type`` (no copy; later writes through ``t`` are writes to the shared tensor),
      after hashing its bytes once to get its content id. Registering data whose content id,
      dtype, shape and storage type are already held returns the held tensor (the new name
      becomes an alias of it), so two models that load identical weights hold one copy.
    * ``max_memory_mb``: a registration that needs more room first evicts freeable tensors
      (not pinned, not held, no held or pinned views), least recently used first, and raises
      OutOfMemoryError, evicting nothing, when even that would not make room.
    * Every method is thread-safe.
    """

    def __init__(self, max_memory_mb: float | None = None) -> None:
        if max_memory_mb is not None and (
            isinstance(max_memory_mb, bool)
            or not isinstance(max_memory_mb, int | float)
            or not math.isfinite(max_memory_mb)
            or max_memory_mb < 0
        ):
            raise InvalidArgumentError(
                "TensorSharingManager: max_memory_mb must be a non-negative number or None, "
                f"got {max_memory_mb!r}"
            )
        self.max_memory_mb = max_memory_mb
        self.max_memory_bytes: int | None = (
            None if max_memory_mb is None else int(max_memory_mb * _MB)
        )
        self.sharing_patterns: dict[str, list[str]] = {
            k: list(v) for k, v in SHARING_PATTERNS.items()
        }
        self._lock = threading.RLock()
        self._tensors: dict[str, SharedTensor] = {}
        self._aliases: dict[str, str] = {}
        self._views: dict[str, SharedTensorView] = {}
        self._by_content: dict[ContentKey, str] = {}
        self._memory_bytes = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.dedup_hits = 0
        self.dedup_saved_bytes = 0
        self.evicted_tensors = 0
        self.evicted_bytes = 0

    # ------------------------------------------------------------------ lookup

    def __contains__(self, name: object) -> bool:
        with self._lock:
            return name in self._tensors or name in self._aliases or name in self._views

    def __len__(self) -> int:
        """Number of distinct tensors held (views and aliases not counted)."""
        return len(self._tensors)

    def _tensor(self, name: str) -> SharedTensor | None:
        tensor = self._tensors.get(name)
        if tensor is None and name in self._aliases:
            tensor = self._tensors[self._aliases[name]]
        return tensor

    def _not_found(self, name: str, wanted: str) -> TensorNotFoundError:
        if wanted == "tensor" and name in self._views:
            hint = f"; {name!r} is a view: use get_tensor_view()"
        elif wanted == "view" and self._tensor(name) is not None:
            hint = f"; {name!r} is a tensor: use get_shared_tensor()"
        else:
            known = sorted([*self._tensors, *self._aliases, *self._views])
            shown = ", ".join(repr(n) for n in known[:10]) + (", ..." if len(known) > 10 else "")
            hint = f"; registered names: {shown or 'none'}"
        return TensorNotFoundError(f"no shared {wanted} named {name!r}{hint}")

    def _check_free_name(self, name: str, context: str) -> None:
        if name in self._tensors or name in self._aliases or name in self._views:
            kind = "a view" if name in self._views else "a tensor"
            raise SharingError(f"{context}: the name {name!r} is already taken by {kind}")

    # ------------------------------------------------------------------ registration

    def register_shared_tensor(
        self,
        name: str,
        shape: Sequence[int] | int,
        storage_type: str = "cpu",
        producer_model: str | None = None,
        consumer_models: Iterable[str] | None = None,
        dtype: DType | str = "float32",
        data: Tensor | np.ndarray[Any, Any] | None = None,
    ) -> SharedTensor:
        """Register (or find) the shared tensor ``name`` and hold it for the models given.

        Without ``data`` the tensor is allocated as zeros on ``storage_type`` (never merged
        with another: it is meant to be written). With ``data`` (a Tensor or numpy array of
        exactly ``shape`` and ``dtype``; nothing is converted) the tensor holds that data and
        its content id; identical held content is returned instead (see the class docstring).
        ``producer_model`` and each of ``consumer_models`` acquire the tensor once.

        Registering a name again returns its tensor when shape, dtype, storage and (with
        data) content agree, and raises SharingError when they do not. Raises
        OutOfMemoryError past ``max_memory_mb`` (after evicting what can be evicted),
        UnknownBackendError for an unknown ``storage_type``, DtypeError/ShapeError for bad
        ``dtype``/``shape``/``data``.
        """
        check_name(name, "register_shared_tensor: name")
        context = f"register_shared_tensor({name!r})"
        dims = normalize_shape(shape, context=context)
        dt = as_dtype(dtype)
        check_storage(storage_type, context)
        models = self._models_to_hold(producer_model, consumer_models, context)
        host: Tensor | None = None
        cid: str | None = None
        if data is not None:
            host = self._prepare_data(data, dims, dt, storage_type, context)
            cid = content_id(host)  # hashed outside the lock: other threads keep going
        with self._lock:
            existing = self._tensor(name)
            if existing is not None:
                self._check_same(existing, dims, dt, storage_type, host, cid, context)
                return self._hold(existing, models)
            self._check_free_name(name, context)
            key: ContentKey | None = None
            if host is not None and cid is not None:
                key = (cid, dt.name, dims, storage_type)
                held = self._held_copy(key, host)
                if held is not None:
                    self._aliases[name] = held.name
                    self.dedup_hits += 1
                    self.dedup_saved_bytes += held.nbytes
                    logger.debug("%s: same content as %r (%s), sharing it", context, held.name, cid)
                    return self._hold(held, models)
            nbytes = math.prod(dims) * dt.itemsize
            self._make_room(nbytes, context)
            tensor = SharedTensor(name, dims, dt, storage_type, producer_model, data=host)
            tensor.content_id = cid
            self._tensors[name] = tensor
            self._memory_bytes += tensor.get_memory_usage()
            if key is not None:
                self._by_content[key] = name
            return self._hold(tensor, models)

    @staticmethod
    def _models_to_hold(
        producer: str | None, consumers: Iterable[str] | None, context: str
    ) -> list[str]:
        if isinstance(consumers, str):
            raise InvalidArgumentError(
                f"{context}: consumer_models must be a list of names, got the string {consumers!r}"
            )
        models: list[str] = []
        for model in ([] if producer is None else [producer]) + list(consumers or ()):
            check_name(model, f"{context}: model name")
            if model not in models:
                models.append(model)
        return models

    @staticmethod
    def _prepare_data(
        data: Tensor | np.ndarray[Any, Any],
        dims: tuple[int, ...],
        dtype: DType,
        storage_type: str,
        context: str,
    ) -> Tensor:
        """``data`` checked and laid out so that hashing reads it without another copy.

        Hashing needs host bytes: host data stays where it is (a strided tensor is made
        contiguous once, which serves hashing and storage alike), and device data bound for the
        host is moved there first, so that one read-back serves both.
        """
        if isinstance(data, np.ndarray):
            data = from_numpy(data)
        if not isinstance(data, Tensor):
            raise InvalidArgumentError(
                f"{context}: data must be a Tensor or numpy array, got {type(data).__name__}"
            )
        device = storage_type if storage_type == "cpu" else data.device
        return place_data(data, dims, dtype, device, context)

    def _check_same(
        self,
        tensor: SharedTensor,
        dims: tuple[int, ...],
        dtype: DType,
        storage_type: str,
        host: Tensor | None,
        cid: str | None,
        context: str,
    ) -> None:
        if (tensor.shape, tensor.dtype, tensor.storage_type) != (dims, dtype, storage_type):
            raise SharingError(
                f"{context}: {tensor.name!r} is already registered with shape {tensor.shape}, "
                f"dtype {tensor.dtype.name}, storage {tensor.storage_type!r}; "
                f"asked for shape {dims}, dtype {dtype.name}, storage {storage_type!r}"
            )
        if host is not None and not (tensor.content_id == cid and _same_bytes(tensor.data, host)):
            raise SharingError(
                f"{context}: {tensor.name!r} is already registered with different content "
                f"(held {tensor.content_id or 'unhashed data'}, given {cid}); "
                "register it under another name"
            )

    def _held_copy(self, key: ContentKey, host: Tensor) -> SharedTensor | None:
        name = self._by_content.get(key)
        if name is None:
            return None
        held = self._tensors[name]
        if _same_bytes(held.data, host):
            return held
        # the held tensor was written after registration: its id no longer describes it
        logger.info("shared tensor %r changed since it was registered as %s", name, key[0])
        del self._by_content[key]
        held.content_id = None
        return None

    def _hold(self, tensor: SharedTensor, models: list[str]) -> SharedTensor:
        for model in models:
            tensor.acquire(model)
        tensor._touch()
        return tensor

    # ------------------------------------------------------------------ memory limit

    def _make_room(self, nbytes: int, context: str) -> None:
        limit = self.max_memory_bytes
        if limit is None or self._memory_bytes + nbytes <= limit:
            return
        candidates = sorted(
            (t for t in self._tensors.values() if t.can_be_freed()), key=lambda t: t._tick
        )
        freeable = sum(t.get_memory_usage() for t in candidates)
        if self._memory_bytes - freeable + nbytes > limit:
            raise self._out_of_memory(nbytes, freeable, context)
        for tensor in candidates:
            if self._memory_bytes + nbytes <= limit:
                break
            size = tensor.get_memory_usage()
            if self._free(tensor, f"evicted (least recently used) to make room for {context}"):
                self.evicted_tensors += 1
                self.evicted_bytes += size
                logger.info("%s: evicted %r (%d bytes)", context, tensor.name, size)
        if self._memory_bytes + nbytes > limit:  # a candidate was acquired meanwhile
            raise self._out_of_memory(nbytes, 0, context)

    def _out_of_memory(self, nbytes: int, freeable: int, context: str) -> OutOfMemoryError:
        assert self.max_memory_bytes is not None
        pinned = sorted(t.name for t in self._tensors.values() if t.is_pinned)
        held = sorted(
            t.name for t in self._tensors.values() if not t.is_pinned and not t.can_be_freed()
        )
        return OutOfMemoryError(
            f"{context}: needs {nbytes} bytes ({_mb(nbytes):.2f} MB) "
            f"but max_memory_mb={self.max_memory_mb} "
            f"allows {self.max_memory_bytes} bytes; {self._memory_bytes} bytes are in use and only "
            f"{freeable} could be evicted (pinned: {_list_names(pinned)}; held or with held/pinned "
            f"views: {_list_names(held)}). Release tensors (release_model_tensors), unpin them, "
            "or raise max_memory_mb"
        )

    def _free(self, tensor: SharedTensor, reason: str) -> bool:
        """Free ``tensor`` if it still can be (atomically with respect to its holders)."""
        with tensor._lock:
            if not tensor._can_be_freed_locked():
                return False
            size = tensor.get_memory_usage()
            view_names = tensor._free_locked(reason)
        self._memory_bytes -= size
        del self._tensors[tensor.name]
        for view_name in view_names:
            self._views.pop(view_name, None)
        for alias in [a for a, target in self._aliases.items() if target == tensor.name]:
            del self._aliases[alias]
        for key in [k for k, target in self._by_content.items() if target == tensor.name]:
            del self._by_content[key]
        return True

    # ------------------------------------------------------------------ access, views, sharing

    def get_shared_tensor(self, name: str, model_name: str | None = None) -> SharedTensor:
        """The tensor registered as ``name`` (or an alias of it), acquired for ``model_name``
        when given. Raises TensorNotFoundError naming what is registered."""
        with self._lock:
            tensor = self._tensor(name)
            if tensor is None:
                self.cache_misses += 1
                raise self._not_found(name, "tensor")
            self.cache_hits += 1
            if model_name is not None:
                tensor.acquire(model_name)
            tensor._touch()
            return tensor

    def get_tensor_view(self, view_name: str, model_name: str | None = None) -> SharedTensorView:
        """The view ``view_name``, acquired for ``model_name`` when given."""
        with self._lock:
            view = self._views.get(view_name)
            if view is None:
                self.cache_misses += 1
                raise self._not_found(view_name, "view")
            self.cache_hits += 1
            if model_name is not None:
                view.acquire(model_name)
            return view

    def create_tensor_view(
        self,
        tensor_name: str,
        view_name: str,
        offset: ViewSpec,
        size: ViewSpec,
        model_name: str | None = None,
    ) -> SharedTensorView:
        """A zero-copy view of ``tensor_name`` (see :meth:`SharedTensor.create_view` for
        offset/size), registered as ``view_name`` and acquired for ``model_name`` if given."""
        check_name(view_name, "create_tensor_view: view name")
        with self._lock:
            parent = self._tensor(tensor_name)
            if parent is None:
                raise self._not_found(tensor_name, "tensor")
            self._check_free_name(view_name, f"create_tensor_view({tensor_name!r}, {view_name!r})")
            view = parent.create_view(view_name, offset, size)
            self._views[view_name] = view
            if model_name is not None:
                view.acquire(model_name)
            return view

    def share_tensor_between_models(
        self, tensor_name: str, from_model: str, to_models: Iterable[str]
    ) -> bool:
        """Let ``to_models`` hold the tensor (or view) that ``from_model`` holds or produced.

        Each model of ``to_models`` not holding it yet acquires it once (sharing again is a
        no-op). Returns True; raises TensorNotFoundError for an unknown name and SharingError
        when ``from_model`` neither holds nor produced it.
        """
        check_name(from_model, "share_tensor_between_models: from_model")
        targets = self._models_to_hold(
            None, to_models, f"share_tensor_between_models({tensor_name!r})"
        )
        with self._lock:
            entry: SharedTensor | SharedTensorView | None = self._tensor(tensor_name)
            if entry is None:
                entry = self._views.get(tensor_name)
            if entry is None:
                raise self._not_found(tensor_name, "tensor")
            producer = (
                entry.producer_model
                if isinstance(entry, SharedTensor)
                else entry.parent.producer_model
            )
            if from_model not in entry.consumer_models and from_model != producer:
                raise SharingError(
                    f"share_tensor_between_models: model {from_model!r} neither holds nor produced "
                    f"{tensor_name!r} "
                    f"(held by: {', '.join(sorted(entry.consumer_models)) or 'nobody'}; "
                    f"producer: {producer!r})"
                )
            for model in targets:
                if model not in entry.holders:
                    entry.acquire(model)
            return True

    def release_model_tensors(self, model_name: str) -> int:
        """Drop every hold ``model_name`` has on any tensor or view (a model unloading).
        Returns how many tensors and views it held; nothing is freed until
        :meth:`optimize_memory_usage` or an eviction."""
        check_name(model_name, "release_model_tensors: model name")
        released = 0
        with self._lock:
            for tensor in list(self._tensors.values()):
                with tensor._lock:
                    released += tensor._release_all_locked(model_name)
                    for view in tensor.views.values():
                        released += view._release_all_locked(model_name)
        return released

    # ------------------------------------------------------------------ optimisation

    def optimize_memory_usage(self) -> dict[str, Any]:
        """Free every tensor that can be freed (with its views and aliases).

        Returns initial_memory_bytes, current_memory_bytes, freed_memory_bytes,
        freed_tensors_count, freed_tensors (their names), memory_reduction_percent and
        remaining_tensor_count (tensors: views and aliases are not counted).
        """
        with self._lock:
            initial = self._memory_bytes
            freed: list[str] = []
            for tensor in sorted(self._tensors.values(), key=lambda t: t._tick):
                if self._free(tensor, "freed by optimize_memory_usage()"):
                    freed.append(tensor.name)
            freed_bytes = initial - self._memory_bytes
            if freed:
                logger.info(
                    "optimize_memory_usage: freed %d tensors, %d bytes: %s",
                    len(freed),
                    freed_bytes,
                    freed,
                )
            return {
                "initial_memory_bytes": initial,
                "current_memory_bytes": self._memory_bytes,
                "freed_memory_bytes": freed_bytes,
                "freed_tensors_count": len(freed),
                "freed_tensors": freed,
                "memory_reduction_percent": freed_bytes / initial * 100.0 if initial else 0.0,
                "remaining_tensor_count": len(self._tensors),
            }

    def _active_models(self) -> set[str]:
        models: set[str] = set()
        for tensor in self._tensors.values():
            models.update(tensor.consumer_models)
            if tensor.producer_model is not None:
                models.add(tensor.producer_model)
        return models

    def analyze_sharing_opportunities(self) -> dict[str, list[str]]:
        """Tensor types that two or more active models could share: {type: [model names]}.

        Active models hold a tensor (or a view) or produced one still registered; a model
        belongs to a family by :func:`model_family` ("bert-base-uncased" is a BERT).
        """
        with self._lock:
            models = self._active_models()
        families = {model: model_family(model) for model in models}
        opportunities: dict[str, list[str]] = {}
        for tensor_type, compatible in self.sharing_patterns.items():
            matching = sorted(m for m, family in families.items() if family in compatible)
            if len(matching) >= 2:
                opportunities[tensor_type] = matching
        return opportunities

    # ------------------------------------------------------------------ reports

    def get_tensor_memory_usage(self) -> dict[str, dict[str, Any]]:
        """Per tensor and per view: memory_bytes, memory_mb, shape, dtype, storage_type,
        reference_count, consumer_count, consumers, producer, pinned, content_id, aliases,
        views and view_of (the parent's name, None for tensors). Views show 0 bytes."""
        with self._lock:
            aliases: dict[str, list[str]] = {}
            for alias, target in self._aliases.items():
                aliases.setdefault(target, []).append(alias)
            usage: dict[str, dict[str, Any]] = {}
            for name, tensor in self._tensors.items():
                consumers = sorted(tensor.consumer_models)
                usage[name] = {
                    "memory_bytes": tensor.get_memory_usage(),
                    "memory_mb": _mb(tensor.get_memory_usage()),
                    "shape": list(tensor.shape),
                    "dtype": tensor.dtype.name,
                    "storage_type": tensor.storage_type,
                    "reference_count": tensor.reference_count,
                    "consumer_count": len(consumers),
                    "consumers": consumers,
                    "producer": tensor.producer_model,
                    "pinned": tensor.is_pinned,
                    "content_id": tensor.content_id,
                    "aliases": sorted(aliases.get(name, [])),
                    "views": sorted(tensor.views),
                    "view_of": None,
                }
                for view_name, view in list(
                    tensor.views.items()
                ):  # snapshot: views may be added directly
                    view_consumers = sorted(view.consumer_models)
                    usage[view_name] = {
                        "memory_bytes": 0,
                        "memory_mb": 0.0,
                        "shape": list(view.shape),
                        "dtype": view.dtype.name,
                        "storage_type": view.storage_type,
                        "reference_count": view.reference_count,
                        "consumer_count": len(view_consumers),
                        "consumers": view_consumers,
                        "producer": tensor.producer_model,
                        "pinned": view.is_pinned,
                        "content_id": None,
                        "aliases": [],
                        "views": [],
                        "view_of": name,
                    }
            return usage

    def get_model_memory_usage(self) -> dict[str, dict[str, Any]]:
        """Per model holding anything: total_memory_bytes/mb (each tensor it holds, directly or
        through views, counted once), exclusive_memory_bytes (tensors no other model holds),
        shared_memory_bytes, tensor_count, view_count, and per tensor its bytes, shape, the
        views it is held through and the other models sharing it."""
        with self._lock:
            report: dict[str, dict[str, Any]] = {}
            for name, tensor in self._tensors.items():
                via: dict[str, list[str]] = {}
                with tensor._lock:  # one consistent snapshot of the tensor's and its views' holds
                    direct = dict(tensor._holds)
                    for view_name, view in tensor.views.items():
                        for model in view._holds:
                            via.setdefault(model, []).append(view_name)
                holders = set(direct) | set(via)
                nbytes = tensor.get_memory_usage()
                for model in holders:
                    entry = report.setdefault(
                        model,
                        {
                            "total_memory_bytes": 0,
                            "total_memory_mb": 0.0,
                            "exclusive_memory_bytes": 0,
                            "shared_memory_bytes": 0,
                            "tensor_count": 0,
                            "view_count": 0,
                            "tensors": {},
                        },
                    )
                    others = sorted(holders - {model})
                    entry["total_memory_bytes"] += nbytes
                    entry["exclusive_memory_bytes" if not others else "shared_memory_bytes"] += (
                        nbytes
                    )
                    entry["tensor_count"] += 1
                    entry["view_count"] += len(via.get(model, []))
                    entry["tensors"][name] = {
                        "memory_bytes": nbytes,
                        "memory_mb": _mb(nbytes),
                        "shape": list(tensor.shape),
                        "holds": direct.get(model, 0),
                        "via_views": sorted(via.get(model, [])),
                        "shared_with": others,
                    }
            for entry in report.values():
                entry["total_memory_mb"] = _mb(entry["total_memory_bytes"])
            return report

    def get_optimization_recommendations(self) -> dict[str, Any]:
        """What could be done: largest_tensors (top 5), low_reference_tensors (unpinned, at
        most one hold), freeable_tensors and potential_savings_bytes/mb (what
        optimize_memory_usage() would free now), sharing_opportunities, total_memory_bytes/mb,
        cache_efficiency, and recommendations (sentences saying what to do)."""
        with self._lock:
            tensors = list(self._tensors.values())
            total = self._memory_bytes
            limit = self.max_memory_bytes
            hits, misses = self.cache_hits, self.cache_misses
        largest = sorted(tensors, key=lambda t: t.get_memory_usage(), reverse=True)[:5]
        low_ref = sorted(t.name for t in tensors if not t.is_pinned and t.reference_count <= 1)
        freeable = [t for t in tensors if t.can_be_freed()]
        savings = sum(t.get_memory_usage() for t in freeable)
        opportunities = self.analyze_sharing_opportunities()
        advice: list[str] = []
        if freeable:
            advice.append(
                f"call optimize_memory_usage() to free {len(freeable)} tensor(s) nobody holds "
                f"({_mb(savings):.2f} MB)"
            )
        for tensor_type, models in opportunities.items():
            advice.append(
                f"{', '.join(models)} can share {tensor_type} tensors: "
                "hand one model's to the others "
                "with share_tensor_between_models(), and register weights with data= so identical "
                "ones are stored once"
            )
        if limit is not None and total > 0.8 * limit:
            advice.append(
                f"memory use is {total / limit * 100 if limit else 100.0:.0f}% of max_memory_mb="
                f"{self.max_memory_mb}: release models' tensors or raise the limit"
            )
        pinned = [t for t in tensors if t.is_pinned]
        if pinned and limit is not None:
            advice.append(
                f"{len(pinned)} pinned tensor(s) "
                f"({_mb(sum(t.get_memory_usage() for t in pinned)):.2f} MB) can never be evicted"
            )
        return {
            "largest_tensors": [
                {
                    "name": t.name,
                    "memory_bytes": t.get_memory_usage(),
                    "memory_mb": _mb(t.get_memory_usage()),
                    "reference_count": t.reference_count,
                }
                for t in largest
            ],
            "low_reference_tensors": low_ref,
            "freeable_tensors": sorted(t.name for t in freeable),
            "potential_savings_bytes": savings,
            "potential_savings_mb": _mb(savings),
            "sharing_opportunities": opportunities,
            "total_memory_bytes": total,
            "total_memory_mb": _mb(total),
            "cache_efficiency": {
                "hits": hits,
                "misses": misses,
                "hit_rate": hits / (hits + misses) if hits + misses else 0.0,
            },
            "recommendations": advice,
        }

    def get_stats(self) -> dict[str, Any]:
        """Counts and totals: total_tensors, total_views, total_aliases, total_models, models,
        memory_usage_bytes/mb, max_memory_bytes, cache_hits, cache_misses, hit_rate,
        dedup_hits, dedup_saved_bytes, evicted_tensors, evicted_bytes, sharing_opportunities."""
        with self._lock:
            models = sorted(self._active_models())
            stats = {
                "total_tensors": len(self._tensors),
                "total_views": sum(len(t.views) for t in self._tensors.values()),
                "total_aliases": len(self._aliases),
                "total_models": len(models),
                "models": models,
                "memory_usage_bytes": self._memory_bytes,
                "memory_usage_mb": _mb(self._memory_bytes),
                "max_memory_bytes": self.max_memory_bytes,
                "cache_hits": self.cache_hits,
                "cache_misses": self.cache_misses,
                "hit_rate": self.cache_hits / (self.cache_hits + self.cache_misses)
                if self.cache_hits + self.cache_misses
                else 0.0,
                "dedup_hits": self.dedup_hits,
                "dedup_saved_bytes": self.dedup_saved_bytes,
                "evicted_tensors": self.evicted_tensors,
                "evicted_bytes": self.evicted_bytes,
            }
        stats["sharing_opportunities"] = self.analyze_sharing_opportunities()
        return stats

    def __repr__(self) -> str:
        return (
            f"TensorSharingManager(tensors={len(self._tensors)}, "
            f"memory_bytes={self._memory_bytes}, max_memory_mb={self.max_memory_mb})"
        )
