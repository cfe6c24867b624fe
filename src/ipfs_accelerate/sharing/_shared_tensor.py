"""SharedTensor and SharedTensorView: real data, held by models, counted per model.

A :class:`SharedTensor` owns one Tensor on one backend (``storage_type``). Models hold it with
``acquire(model)`` and let go with ``release(model)``; each model's holds are counted on their
own, so a model that acquires twice must release twice, and releasing a model that holds
nothing changes nothing and returns False. A tensor can be freed only when nobody holds it
(directly or through one of its views), it is not pinned and none of its views is pinned.

A :class:`SharedTensorView` is a window onto its parent's memory, never a copy (on backends
whose slicing shares memory, the CPU's; see :meth:`SharedTensor.create_view`). Holding a
view holds its parent: the parent's ``reference_count`` counts its views' holds.

Every method is thread-safe: a tensor and its views share one lock, so freeing a tensor and
acquiring it (or one of its views) from another thread never interleave.
"""

from __future__ import annotations

import itertools
import math
import numbers
import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from ipfs_accelerate.errors import (
    BackendError,
    DtypeError,
    InvalidArgumentError,
    ShapeError,
    SharingError,
    ViewBoundsError,
)
from ipfs_accelerate.tensor import DType, Tensor, as_dtype, from_numpy, zeros
from ipfs_accelerate.tensor._creation import normalize_shape

__all__ = ["SharedTensor", "SharedTensorView", "ViewSpec"]

#: offset/size of a view: ints (elements of the flattened parent) or one int per dimension
ViewSpec = int | Sequence[int]

# a global tick orders accesses for LRU eviction: time.time() can repeat within a tick
_CLOCK = itertools.count()


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(f"{what} must be a non-empty string, got {value!r}")
    return value


def check_storage(storage_type: Any, context: str) -> str:
    """``storage_type`` when it names a backend that really runs here.

    Unknown names raise UnknownBackendError; a backend that cannot start raises
    BackendUnavailableError instead of falling back, because data registered for "webgpu"
    must not silently live on the CPU.
    """
    from ipfs_accelerate.hal import get_backend

    if not isinstance(storage_type, str):
        raise InvalidArgumentError(
            f"{context}: storage_type must be a backend name, got {storage_type!r}"
        )
    get_backend(storage_type, fallback=False)
    return storage_type


def place_data(
    data: Tensor | np.ndarray[Any, Any],
    shape: tuple[int, ...],
    dtype: DType,
    storage_type: str,
    context: str,
) -> Tensor:
    """``data`` checked against ``shape``/``dtype`` and held on ``storage_type``, row-major.

    A contiguous tensor already on ``storage_type`` is returned as is (no copy); a numpy array
    is wrapped (no copy on CPU); data elsewhere is moved once through ``Tensor.to``; a strided
    CPU tensor is made contiguous once.
    """
    if isinstance(data, np.ndarray):
        data = from_numpy(data)
    if not isinstance(data, Tensor):
        raise InvalidArgumentError(
            f"{context}: data must be a Tensor or numpy array, got {type(data).__name__}"
        )
    if data.shape != shape:
        raise ShapeError(f"{context}: data has shape {data.shape} but shape {shape} was given")
    if data.dtype is not dtype:
        raise DtypeError(
            f"{context}: data has dtype {data.dtype.name} but dtype={dtype.name!r} was given "
            "(pass the data's dtype; data is never converted silently)"
        )
    if data.device != storage_type:
        data = data.to(storage_type)
    data = data.contiguous()
    if data.device != storage_type:  # a backend that answered from somewhere else
        raise BackendError(f"{context}: data landed on {data.device!r} instead of {storage_type!r}")
    return data


class SharedTensor:
    """A tensor several models share: real data in ``data``, holds counted per model.

    ``SharedTensor(name, shape, dtype="float32", storage_type="cpu", producer_model=None)``
    allocates zeros on the backend ``storage_type``; pass ``data=`` (a Tensor or numpy array
    of that shape and dtype) to hold existing data instead, without a copy when it already
    lives on that backend. The constructor does not acquire anything, not even for the
    producer (the manager does that when it registers a tensor).
    """

    def __init__(
        self,
        name: str,
        shape: Sequence[int] | int,
        dtype: DType | str = "float32",
        storage_type: str = "cpu",
        producer_model: str | None = None,
        *,
        data: Tensor | np.ndarray[Any, Any] | None = None,
    ) -> None:
        self.name: str = check_name(name, "SharedTensor: name")
        context = f"SharedTensor {name!r}"
        self.shape: tuple[int, ...] = normalize_shape(shape, context=context)
        self.dtype: DType = as_dtype(dtype)
        self.storage_type: str = check_storage(storage_type, context)
        if producer_model is not None:
            check_name(producer_model, f"{context}: producer_model")
        self.producer_model: str | None = producer_model
        if data is None:
            self._data: Tensor | None = zeros(self.shape, dtype=self.dtype, device=storage_type)
        else:
            self._data = place_data(data, self.shape, self.dtype, storage_type, context)
        #: CIDv1 of the bytes the tensor was registered with (None when registered without data);
        #: it describes those bytes, not later writes
        self.content_id: str | None = None
        self.metadata: dict[str, Any] = {}
        self.views: dict[str, SharedTensorView] = {}
        self.last_accessed: float = time.time()
        self._tick = next(_CLOCK)
        self._holds: dict[str, int] = {}
        self._pinned = False
        self._freed_reason: str | None = None
        # shared with the views: a tensor and its views change state under one lock
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ data

    @property
    def data(self) -> Tensor:
        """The tensor's data (raises SharingError once the tensor was freed)."""
        data = self._data
        if data is None:
            raise SharingError(f"shared tensor {self.name!r} was freed ({self._freed_reason})")
        self._touch()
        return data

    @property
    def is_freed(self) -> bool:
        return self._data is None

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    def get_memory_usage(self) -> int:
        """Bytes of data this tensor holds (0 once freed)."""
        return 0 if self._data is None else self.nbytes

    def _touch(self) -> None:
        self.last_accessed = time.time()
        self._tick = next(_CLOCK)

    # ------------------------------------------------------------------ holds

    def acquire(self, model_name: str) -> bool:
        """Hold the tensor for ``model_name`` (one more hold for that model). Returns True.

        Raises SharingError when the tensor was freed.
        """
        check_name(model_name, f"acquire({self.name!r}): model name")
        with self._lock:
            self._check_live("acquire")
            self._holds[model_name] = self._holds.get(model_name, 0) + 1
        self._touch()
        return True

    def release(self, model_name: str) -> bool:
        """Undo one of ``model_name``'s holds; False (and no change) when it holds none.

        Holds taken through a view are released through that view.
        """
        check_name(model_name, f"release({self.name!r}): model name")
        with self._lock:
            return _drop_hold(self._holds, model_name)

    def _release_all_locked(self, model_name: str) -> bool:
        return self._holds.pop(model_name, 0) > 0

    @property
    def reference_count(self) -> int:
        """Holds on this tensor: its own plus those taken through its views."""
        with self._lock:
            return self._reference_count_locked()

    def _reference_count_locked(self) -> int:
        return sum(self._holds.values()) + sum(
            sum(view._holds.values()) for view in self.views.values()
        )

    @property
    def holders(self) -> dict[str, int]:
        """Models holding this tensor directly, with their number of holds (a copy)."""
        with self._lock:
            return dict(self._holds)

    @property
    def consumer_models(self) -> frozenset[str]:
        """Models holding this tensor, directly or through a view."""
        with self._lock:
            models = set(self._holds)
            for view in self.views.values():
                models.update(view._holds)
            return frozenset(models)

    # ------------------------------------------------------------------ pinning, freeing

    def pin(self) -> None:
        """Keep the tensor in memory whatever its holds (eviction and optimisation skip it)."""
        with self._lock:
            self._check_live("pin")
            self._pinned = True

    def unpin(self) -> None:
        with self._lock:
            self._pinned = False

    @property
    def is_pinned(self) -> bool:
        return self._pinned

    def can_be_freed(self) -> bool:
        """True when nothing keeps the tensor: not freed already, not pinned, no holds (its own
        or its views'), no pinned view."""
        with self._lock:
            return self._can_be_freed_locked()

    def _can_be_freed_locked(self) -> bool:
        return (
            self._data is not None
            and not self._pinned
            and not self._holds
            and all(not view._holds and not view._pinned for view in self.views.values())
        )

    def _free_locked(self, reason: str) -> list[str]:
        """Drop the data and the views (caller holds the lock and checked can_be_freed).
        Returns the names of the views freed with it."""
        self._data = None
        self._freed_reason = reason
        names = list(self.views)
        for view in self.views.values():
            view._freed_reason = f"its parent {self.name!r} was {reason}"
        self.views.clear()
        return names

    def _check_live(self, action: str) -> None:
        if self._data is None:
            raise SharingError(
                f"{action}: shared tensor {self.name!r} was freed ({self._freed_reason})"
            )

    # ------------------------------------------------------------------ views, copies

    def create_view(self, name: str, offset: ViewSpec, size: ViewSpec) -> SharedTensorView:
        """A zero-copy view of part of this tensor, called ``name`` (unique among its views).

        Two forms:

        * ``offset`` and ``size`` ints: ``size`` consecutive elements of the flattened tensor
          (row-major) starting at element ``offset``; the view is 1-D. This is the natural
          unit for a sub-range of one buffer (a packed parameter block, a token range of a
          flattened embedding): elements rather than bytes because the dtype is fixed.
        * ``offset`` and ``size`` sequences with one int per dimension: the box
          ``data[o0:o0+s0, o1:o1+s1, ...]`` with the parent's rank (the seed API's form, and
          WebNN's ``slice(input, starts, sizes)``).

        Every size must be >= 1 and the view must lie inside the parent, else ViewBoundsError
        names the bounds. The view reads the parent's memory: a write through either is seen
        by the other (on backends whose slicing shares memory, as the CPU's does; elsewhere
        each access of ``view.data`` slices the parent's current data).
        """
        check_name(name, f"create_view on {self.name!r}: view name")
        spec = _normalize_view(self.name, self.shape, name, offset, size)
        with self._lock:
            self._check_live(f"create_view({name!r})")
            if name in self.views:
                raise SharingError(
                    f"create_view: tensor {self.name!r} already has a view named {name!r}"
                )
            view = SharedTensorView(self, name, *spec)
            self.views[name] = view
        return view

    def copy_to(self, storage_type: str, *, name: str | None = None) -> SharedTensor:
        """A new SharedTensor (``name`` default ``"<name>_<storage_type>"``) holding a copy of
        the data on the backend ``storage_type``, moved there through ``Tensor.to`` (so through
        that backend's own transfer). A copy to the same backend is an independent clone.

        Holds, pins and views are not copied; the content id is (the bytes are the same).
        Unknown backends raise UnknownBackendError, unavailable ones BackendUnavailableError.
        """
        check_storage(storage_type, f"copy_to({self.name!r})")
        source = self.data
        moved = source.to(storage_type) if source.device != storage_type else source.clone()
        copy = SharedTensor(
            name if name is not None else f"{self.name}_{storage_type}",
            self.shape,
            self.dtype,
            storage_type,
            self.producer_model,
            data=moved,
        )
        copy.content_id = self.content_id
        copy.metadata = dict(self.metadata)
        return copy

    def __repr__(self) -> str:
        state = "freed" if self._data is None else f"refs={self.reference_count}"
        pinned = ", pinned" if self._pinned else ""
        return (
            f"SharedTensor(name={self.name!r}, shape={self.shape}, dtype={self.dtype.name}, "
            f"storage={self.storage_type!r}, {state}{pinned}, producer={self.producer_model!r})"
        )


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _normalize_view(
    parent: str, shape: tuple[int, ...], view: str, offset: Any, size: Any
) -> tuple[int | tuple[int, ...], int | tuple[int, ...], tuple[int, ...]]:
    """Validate a view's offset/size against the parent's shape; returns (offset, size, shape)."""
    where = f"view {view!r} of tensor {parent!r} (shape {shape})"
    if _is_int(offset) and _is_int(size):
        start, count, total = int(offset), int(size), math.prod(shape)
        if start < 0 or count < 1 or start + count > total:
            raise ViewBoundsError(
                f"{where}: elements [{start}, {start + count}) lie outside the parent's "
                f"{total} elements (need 0 <= offset, 1 <= size, offset + size <= {total})"
            )
        return start, count, (count,)
    if (
        isinstance(offset, Sequence)
        and isinstance(size, Sequence)
        and not isinstance(offset, str)
        and not isinstance(size, str)
    ):
        starts, sizes = tuple(offset), tuple(size)
        if not all(_is_int(v) for v in starts + sizes):
            raise InvalidArgumentError(
                f"{where}: offset {offset!r} and size {size!r} must hold ints"
            )
        if len(starts) != len(shape) or len(sizes) != len(shape):
            raise InvalidArgumentError(
                f"{where}: offset {list(starts)} and size {list(sizes)} need one entry per "
                f"dimension of the parent ({len(shape)})"
            )
        for axis, (start, count, dim) in enumerate(zip(starts, sizes, shape, strict=True)):
            if start < 0 or count < 1 or start + count > dim:
                raise ViewBoundsError(
                    f"{where}: along axis {axis} the range [{start}, {start + count}) lies outside "
                    f"[0, {dim}) (offset {list(starts)}, size {list(sizes)})"
                )
        return (
            tuple(int(v) for v in starts),
            tuple(int(v) for v in sizes),
            tuple(int(v) for v in sizes),
        )
    raise InvalidArgumentError(
        f"{where}: offset and size must both be ints (elements of the flattened parent) or both "
        f"sequences with one int per dimension; got offset={offset!r}, size={size!r}"
    )


class SharedTensorView:
    """A named window onto a :class:`SharedTensor`'s memory (see ``create_view``).

    It holds no memory of its own (``get_memory_usage()`` is 0). Acquiring it holds the
    parent; it is freed together with its parent, which cannot be freed while the view is held
    or pinned.
    """

    def __init__(
        self,
        parent: SharedTensor,
        name: str,
        offset: int | tuple[int, ...],
        size: int | tuple[int, ...],
        shape: tuple[int, ...],
    ) -> None:
        self.parent = parent
        self.name = name
        #: as given: an int (flattened elements) or one int per dimension
        self.offset = offset
        self.size = size
        self.shape = shape
        self.dtype: DType = parent.dtype
        self._holds: dict[str, int] = {}
        self._pinned = False
        self._freed_reason: str | None = None
        self.last_accessed = time.time()

    @property
    def storage_type(self) -> str:
        return self.parent.storage_type

    @property
    def is_freed(self) -> bool:
        return self._freed_reason is not None

    @property
    def data(self) -> Tensor:
        """The parent's data seen through this view (on CPU a numpy view: no copy)."""
        if self._freed_reason is not None:
            raise SharingError(f"view {self.name!r} was freed ({self._freed_reason})")
        source = self.parent.data
        self.last_accessed = time.time()
        if isinstance(self.offset, int):
            assert isinstance(self.size, int)
            return source.reshape(-1)[self.offset : self.offset + self.size]
        assert isinstance(self.size, tuple)
        return source[tuple(slice(o, o + s) for o, s in zip(self.offset, self.size, strict=True))]

    def get_memory_usage(self) -> int:
        """0: a view's bytes are its parent's, counted once there."""
        return 0

    def acquire(self, model_name: str) -> bool:
        """Hold the view (and so its parent) for ``model_name``. Returns True."""
        check_name(model_name, f"acquire({self.name!r}): model name")
        with self.parent._lock:
            if self._freed_reason is not None:
                raise SharingError(f"acquire: view {self.name!r} was freed ({self._freed_reason})")
            self._holds[model_name] = self._holds.get(model_name, 0) + 1
        self.last_accessed = time.time()
        self.parent._touch()
        return True

    def release(self, model_name: str) -> bool:
        """Undo one of ``model_name``'s holds on the view; False when it holds none."""
        check_name(model_name, f"release({self.name!r}): model name")
        with self.parent._lock:
            return _drop_hold(self._holds, model_name)

    def _release_all_locked(self, model_name: str) -> bool:
        return self._holds.pop(model_name, 0) > 0

    @property
    def reference_count(self) -> int:
        with self.parent._lock:
            return sum(self._holds.values())

    @property
    def holders(self) -> dict[str, int]:
        with self.parent._lock:
            return dict(self._holds)

    @property
    def consumer_models(self) -> frozenset[str]:
        with self.parent._lock:
            return frozenset(self._holds)

    def pin(self) -> None:
        """Keep the view, and so its parent, in memory whatever the holds."""
        with self.parent._lock:
            if self._freed_reason is not None:
                raise SharingError(f"pin: view {self.name!r} was freed ({self._freed_reason})")
            self._pinned = True

    def unpin(self) -> None:
        with self.parent._lock:
            self._pinned = False

    @property
    def is_pinned(self) -> bool:
        return self._pinned

    def can_be_freed(self) -> bool:
        """True when neither held nor pinned (it is then freed with its parent)."""
        with self.parent._lock:
            return self._freed_reason is None and not self._holds and not self._pinned

    def __repr__(self) -> str:
        return (
            f"SharedTensorView(name={self.name!r}, parent={self.parent.name!r}, "
            f"offset={self.offset!r}, size={self.size!r}, shape={self.shape}, "
            f"refs={self.reference_count})"
        )


def _drop_hold(holds: dict[str, int], model_name: str) -> bool:
    """One hold of ``model_name`` fewer in ``holds`` (the caller holds the lock); False when
    it has none."""
    count = holds.get(model_name, 0)
    if count == 0:
        return False
    if count == 1:
        del holds[model_name]
    else:
        holds[model_name] = count - 1
    return True
