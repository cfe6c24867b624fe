"""Intel oneMKL under the numpy backend: float32 matrix products and the normal CDF (GELU).

numpy's wheels multiply through OpenBLAS, torch's through MKL, and on the encoders' shapes
MKL's sgemm is the faster: one thread on the 2-core Xeon (Sapphire Rapids), (283 x 768) @
(768 x 3072) ran 170 GFLOP/s through MKL against OpenBLAS's 143, and a (32 x 384) @ (384 x
384) 165 against 107; an all-mpnet-base-v2-shaped encoder on the cpu backend went from 0.89x
to 1.02x torch with its Linear layers alone moved over (docs/tensors.md). numpy also has no
erf, so the exact GELU took 17 numpy passes; MKL's vector math computes Phi(x) in one.

When the ``mkl`` package (the ``mkl`` extra) is installed, its ``libmkl_rt`` is loaded with
ctypes on first use, on MKL's sequential threading layer: products run on the calling thread
(ctypes lets go of the GIL during the call), so the row shards of models/_parallel each
multiply on their own core with no second thread pool competing, and a big product outside
a sharded run is cut here into one part per core on a small pool of our own (MKL's OpenMP
pool would spin after each product on the cores a peer or the next op needs).

``$IPFS_ACCELERATE_CPU_BLAS`` picks: ``auto`` (the default: MKL where it loads and the CPU
is Intel's; elsewhere it is not measured, so numpy's BLAS stays), ``mkl`` (MKL wherever it
loads; ConfigurationError when it does not) or ``numpy`` (never MKL).

Integer products (:func:`int8_gemm`) go through ``cblas_gemm_s8u8s32``: uint8 rows times an
int8 matrix into int32, exact. In the row-major layout MKL reads the left operand ``a`` as
unsigned and the right one ``b`` as signed (its Fortran routine is column-major with the roles
swapped); the offsets stay 0 (``CblasFixOffset`` with a zero ``co``): the caller's per-row
zero points are one rank-1 correction no MKL offset can express. They are used only where
the CPU has 8-bit dot-product instructions (AVX512-VNNI, AVX-VNNI, AMX-INT8): without them
integer GEMMs multiply through 16-bit pair sums that can saturate on uint8 x int8 (which is
why onnxruntime keeps 7-bit activations there), and they are not measured here. On the
Sapphire Rapids Xeon a (270 x 384) @ (384 x 1536) product took 0.36 ms against sgemm's 1.87
ms, one thread.
"""

from __future__ import annotations

import ctypes
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final

import numpy as np

from ipfs_accelerate.errors import ConfigurationError
from ipfs_accelerate.hal._backend import cpu_info, host_cores
from ipfs_accelerate.hal.cpu import _blas as blas

__all__ = [
    "BLAS_VARIABLE",
    "MKL_ROWS",
    "SPLIT_MACS",
    "cdf_norm",
    "enabled",
    "gemm",
    "int8_enabled",
    "int8_gemm",
    "takes_product",
    "version",
]

BLAS_VARIABLE: Final = "IPFS_ACCELERATE_CPU_BLAS"
_CHOICES: Final = ("auto", "mkl", "numpy")

#: the fewest rows a backend product goes through MKL with: from 64 rows MKL's one-thread
#: sgemm beats OpenBLAS's; below, OpenBLAS's W @ X^T with a few rows (the cpu backend's
#: linear) is the faster (measured on the 2-core Xeon, 384-3072 wide)
MKL_ROWS: Final = 64

#: products with at least this many multiply-adds outside a sharded run are cut into one
#: part per core (below it handing a part to a thread costs more than the core gains)
SPLIT_MACS: Final = 1 << 23

#: the fewest output columns (or rows) a part gets: MKL's kernels work in panels of 16-64
_MIN_PART: Final = 64

#: elements the vector-math functions take per call (MKL_INT is 32 bits in the LP64 API)
_VML_CHUNK: Final = 1 << 30

_ROW_MAJOR, _NO_TRANS, _TRANS = 101, 111, 112
_INT_LIMIT = 1 << 31  # sizes and leading dimensions are 32-bit ints in MKL's LP64 API
_SEQUENTIAL = 1
_VML_HA = 0x2  # high accuracy (about 1 ulp)

_FIX_OFFSET = 173  # CblasFixOffset: one scalar added to every element of C

#: the /proc/cpuinfo flags of 8-bit dot-product instructions (one is enough)
_DOT_FLAGS: Final = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})

_F32 = np.dtype(np.float32)
_U8 = np.dtype(np.uint8)
_I8 = np.dtype(np.int8)
_I32 = np.dtype(np.int32)
_ZERO_OFFSET = np.zeros(1, dtype=np.int32)

_lock = threading.Lock()
_state: dict[str, Any] = {}  # "lib", "sgemm", "cdfnorm", "s8u8", "version"; empty if unused
_loaded = False
_pool: ThreadPoolExecutor | None = None


def _choice() -> str:
    text = os.environ.get(BLAS_VARIABLE, "").strip().lower() or "auto"
    if text not in _CHOICES:
        raise ConfigurationError(f"{BLAS_VARIABLE}={text!r}: expected one of {', '.join(_CHOICES)}")
    return text


def _intel_cpu() -> bool:
    vendor = cpu_info("vendor_id")
    if vendor is not None:
        return vendor == "GenuineIntel"
    import platform

    return "intel" in platform.processor().lower()


def _dot_product_cpu() -> bool:
    return not _DOT_FLAGS.isdisjoint((cpu_info("flags") or "").split())


def _library_paths() -> list[Path]:
    """Where the ``mkl`` package put libmkl_rt (its wheel installs into the environment's
    lib/), newest ABI first."""
    found: list[Path] = []
    try:
        from importlib.metadata import PackageNotFoundError, distribution

        try:
            files = distribution("mkl").files or []
        except PackageNotFoundError:
            files = []
        for file in files:
            if Path(str(file)).name.startswith("libmkl_rt.so"):
                found.append(Path(str(file.locate())))
    except Exception:  # a broken installation only costs the faster products
        pass
    return sorted(found, key=lambda path: path.name, reverse=True)


def _load() -> None:
    """Load libmkl_rt (under the lock), when the setting and the machine ask for it; a
    ConfigurationError leaves nothing loaded, so the next call raises it again."""
    choice = _choice()
    if choice == "numpy" or (choice == "auto" and not _intel_cpu()):
        return
    library = None
    for path in _library_paths():
        try:
            library = ctypes.CDLL(str(path))
            break
        except OSError:
            continue
    if library is None:
        if choice == "mkl":
            raise ConfigurationError(
                f"{BLAS_VARIABLE}=mkl: Intel MKL's libmkl_rt was not found or did not load; "
                "install the 'mkl' extra (pip install 'ipfs-accelerate[mkl]')"
            )
        return
    set_layer = library.MKL_Set_Threading_Layer
    set_layer.argtypes = [ctypes.c_int]
    set_layer.restype = ctypes.c_int
    if set_layer(_SEQUENTIAL) != _SEQUENTIAL:
        # MKL was already started with threads by another library of this process: its
        # products would wake a second pool inside our shards, so numpy's BLAS stays
        if choice == "mkl":
            raise ConfigurationError(
                f"{BLAS_VARIABLE}=mkl: MKL was already loaded with a threading layer other "
                "than sequential by another library of this process"
            )
        return
    pointer, integer, single = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    sgemm = library.cblas_sgemm
    sgemm.restype = None
    sgemm.argtypes = [integer] * 6 + [single, pointer, integer, pointer, integer]
    sgemm.argtypes += [single, pointer, integer]
    cdfnorm = library.vmsCdfNorm
    cdfnorm.restype = None
    cdfnorm.argtypes = [integer, pointer, pointer, ctypes.c_longlong]
    s8u8 = getattr(library, "cblas_gemm_s8u8s32", None)  # MKL 2018 and later
    if s8u8 is not None:
        s8u8.restype = None
        s8u8.argtypes = [integer] * 7 + [single, pointer, integer, ctypes.c_int8]
        s8u8.argtypes += [pointer, integer, ctypes.c_int8, single, pointer, integer, pointer]
    buffer = ctypes.create_string_buffer(198)
    library.MKL_Get_Version_String.restype = None
    library.MKL_Get_Version_String(buffer, len(buffer))
    _state.update(
        lib=library,
        sgemm=sgemm,
        cdfnorm=cdfnorm,
        s8u8=s8u8 if s8u8 is not None and _dot_product_cpu() else None,
        version=buffer.value.decode("ascii", "replace").strip(),
    )


def enabled() -> bool:
    """Whether products and the normal CDF go through MKL (loads it on the first call)."""
    global _loaded
    if not _loaded:
        with _lock:
            if not _loaded:
                _load()
                _loaded = True
    return bool(_state)


def int8_enabled() -> bool:
    """Whether :func:`int8_gemm` multiplies (MKL in use, with its integer GEMM, on a CPU with
    8-bit dot-product instructions)."""
    return enabled() and _state.get("s8u8") is not None


def takes_product(rows: int) -> bool:
    """Whether the cpu backend multiplies a float32 product of ``rows`` rows through MKL: from
    MKL_ROWS rows while BLAS is held to one thread (inside a sharded batch, models/_parallel:
    each shard's products on its own core, where MKL's one-thread sgemm is 15-35% faster than
    OpenBLAS's). Outside, numpy multiplies: OpenBLAS's pool keeps its threads spinning
    between products, and they then compete with a product that MKL cuts over the cores
    here. Measured on the 2-core Xeon: a MiniLM training step on 16 sentences took 322-333
    ms with every product of 64+ rows through MKL against 273-289 through OpenBLAS; an MLP
    step (256 x 1024 @ 1024 x 1024 products) 22-38 ms through MKL, 23-29 through OpenBLAS,
    from run to run; MKL for the big products only was slower than either (30-34 ms)."""
    return rows >= MKL_ROWS and blas._depth > 0 and enabled()


def version() -> str | None:
    """MKL's version string when it is in use, else None."""
    return str(_state["version"]) if enabled() else None


def _reset() -> None:
    """Forget the loaded state (tests; a changed setting is read again on the next call)."""
    global _loaded
    with _lock:
        _state.clear()
        _loaded = False


def _pool_for(workers: int) -> ThreadPoolExecutor:
    global _pool
    with _lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(workers, thread_name_prefix="ipfs-accelerate-mkl")
        return _pool


def _forget_pool() -> None:  # a forked child has the pool object but none of its threads
    global _pool
    _pool = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def _layout(a: np.ndarray[Any, Any]) -> tuple[int, int] | None:
    """(transpose flag, leading dimension) of a 2-D array BLAS can read in place."""
    rows, cols = a.shape
    s0, s1 = a.strides
    size = a.itemsize
    if s1 == size and (rows == 1 or (s0 % size == 0 and size * cols <= s0 < _INT_LIMIT)):
        return _NO_TRANS, max(1, cols if rows == 1 else s0 // size)
    if s0 == size and (cols == 1 or (s1 % size == 0 and size * rows <= s1 < _INT_LIMIT)):
        return _TRANS, max(1, rows if cols == 1 else s1 // size)
    return None


def _writable_rows(out: np.ndarray[Any, Any]) -> bool:
    """Whether ``out`` (2-D, 4-byte elements) is row-major with a leading dimension BLAS
    takes, and writable."""
    rows, cols = out.shape
    if not out.flags.writeable or out.strides[1] != 4:
        return False
    ldc = out.strides[0]
    return rows == 1 or (ldc % 4 == 0 and 4 * cols <= ldc < _INT_LIMIT)


def _operands(a: Any, b: Any, out: Any) -> tuple[int, ...]:
    """(transa, transb, m, n, k, lda, ldb, ldc) of a checked product, as BLAS takes them."""
    ta, lda = _layout(a)  # type: ignore[misc]
    tb, ldb = _layout(b)  # type: ignore[misc]
    (rows, inner), cols = a.shape, b.shape[1]
    ldc = max(1, out.strides[0] // 4 if rows > 1 else cols)
    return ta, tb, rows, cols, inner, lda, ldb, ldc


def _product(a: Any, b: Any, out: Any, beta: float) -> None:
    ta, tb, m, n, k, lda, ldb, ldc = _operands(a, b, out)
    _state["sgemm"](
        _ROW_MAJOR, ta, tb, m, n, k, 1.0, a.ctypes.data, lda, b.ctypes.data, ldb, beta,
        out.ctypes.data, ldc,
    )  # fmt: skip


def gemm(
    a: np.ndarray[Any, Any],
    b: np.ndarray[Any, Any],
    out: np.ndarray[Any, Any],
    *,
    accumulate: bool = False,
) -> bool:
    """``out = a @ b`` (``out += a @ b`` with ``accumulate``) for 2-D float32 arrays through
    MKL, reading transposed views in place; False (nothing written) where MKL is not in use
    or an operand's layout is not one BLAS reads (the caller multiplies with numpy)."""
    if not enabled():
        return False
    return _multiply(a, b, out, accumulate, (_F32, _F32, _F32), _product, _INT_LIMIT)


def _multiply(
    a: Any,
    b: Any,
    out: Any,
    accumulate: bool,
    dtypes: tuple[np.dtype[Any], ...],
    product: Any,
    max_inner: int,
) -> bool:
    """The checks :func:`gemm` and :func:`int8_gemm` share, then ``product`` over the cores
    (:func:`_run`); False where they fail (nothing written)."""
    if (a.dtype, b.dtype, out.dtype) != dtypes or a.ndim != 2 or b.ndim != 2 or out.ndim != 2:
        return False
    rows, inner = a.shape
    cols = b.shape[1]
    if b.shape[0] != inner or out.shape != (rows, cols) or inner > max_inner:
        return False
    if rows == 0 or cols == 0:
        return True
    if inner == 0:
        if not accumulate:
            out.fill(0)
        return True
    if not _checked(a, b, out):
        return False
    _run(product, a, b, out, 1.0 if accumulate else 0.0)
    return True


def _checked(a: Any, b: Any, out: Any) -> bool:
    """Whether BLAS reads ``a`` and ``b`` in place and writes ``out`` apart from them."""
    if max(*a.shape, b.shape[1]) >= _INT_LIMIT or not _writable_rows(out):
        return False
    if _layout(a) is None or _layout(b) is None:
        return False
    return not (np.may_share_memory(out, a) or np.may_share_memory(out, b))


def _run(product: Any, a: Any, b: Any, out: Any, beta: float) -> None:
    """``product(a, b, out, beta)`` in one part, or in one part per core outside a sharded
    run when the product is big enough to pay for handing parts to threads."""
    if a.shape[0] * a.shape[1] * b.shape[1] < SPLIT_MACS or blas._depth > 0:
        # one part: small, or inside a sharded run whose shards already fill the cores
        product(a, b, out, beta)
        return
    cores = host_cores()
    if cores < 2 or blas.oversubscribed():
        product(a, b, out, beta)
        return
    _split(product, a, b, out, beta, cores)


def _split(product: Any, a: Any, b: Any, out: Any, beta: float, cores: int) -> None:
    """One part of the product per core, cut along the output's longer side."""
    rows, cols = out.shape
    along_cols = cols >= rows
    extent = cols if along_cols else rows
    parts = max(1, min(cores, extent // _MIN_PART))
    if parts == 1:
        product(a, b, out, beta)
        return
    step = -(-extent // parts)
    step = -(-step // 16) * 16  # whole 16-float panels per part
    bounds = [(start, min(extent, start + step)) for start in range(0, extent, step)]

    def part(start: int, stop: int) -> None:
        if along_cols:
            product(a, b[:, start:stop], out[:, start:stop], beta)
        else:
            product(a[start:stop], b, out[start:stop], beta)

    pool = _pool_for(cores - 1)
    futures: list[Future[None]] = [pool.submit(part, *bound) for bound in bounds[1:]]
    try:
        part(*bounds[0])
    finally:
        for future in futures:
            future.result()


def _integer_product(a: Any, b: Any, out: Any, beta: float) -> None:
    ta, tb, m, n, k, lda, ldb, ldc = _operands(a, b, out)
    _state["s8u8"](
        _ROW_MAJOR, ta, tb, _FIX_OFFSET, m, n, k, 1.0, a.ctypes.data, lda, 0, b.ctypes.data,
        ldb, 0, beta, out.ctypes.data, ldc, _ZERO_OFFSET.ctypes.data,
    )  # fmt: skip


def int8_gemm(
    a: np.ndarray[Any, Any],
    b: np.ndarray[Any, Any],
    out: np.ndarray[Any, Any],
    *,
    accumulate: bool = False,
) -> bool:
    """``out = a @ b`` (``out += a @ b`` with ``accumulate``) exactly in integers for a 2-D
    uint8 ``a``, int8 ``b`` and int32 ``out`` through MKL's integer GEMM, reading transposed
    views in place and cut over the cores as :func:`gemm`; False (nothing written) where it
    is not in use (:func:`int8_enabled`), for other dtypes or shapes, or a layout BLAS does
    not read. ``inner`` is at most 2^16 (longer sums of 255 x -128 could pass int32)."""
    if not int8_enabled():
        return False
    return _multiply(a, b, out, accumulate, (_U8, _I8, _I32), _integer_product, 1 << 16)


def cdf_norm(x: np.ndarray[Any, Any], out: np.ndarray[Any, Any]) -> bool:
    """``out = Phi(x)``, the standard normal CDF, element-wise for contiguous float32 arrays
    (``out`` may be ``x``); False (nothing written) where MKL is not in use."""
    if not enabled() or x.dtype != _F32 or out.dtype != _F32 or x.shape != out.shape:
        return False
    if not (x.flags.c_contiguous and out.flags.c_contiguous and out.flags.writeable):
        return False
    flat_in, flat_out = x.reshape(-1), out.reshape(-1)
    function = _state["cdfnorm"]
    for start in range(0, flat_in.size, _VML_CHUNK):
        count = min(_VML_CHUNK, flat_in.size - start)
        function(count, flat_in[start:].ctypes.data, flat_out[start:].ctypes.data, _VML_HA)
    return True
