"""Saving loaded models as checkpoints, quantized weights included, and reading them back.

``model.save_pretrained(directory)`` (and a pipeline's ``save_pretrained``) writes
``config.json`` and ``model.safetensors``; a pipeline also copies the tokenizer/processor
files it was loaded with. A float weight ``K`` is stored as it is held (F32 or F16). A
quantized weight ``K`` is stored as three tensors:

* ``K``: the integers, ``I8`` in the weight's shape for int8 (``U8`` when asymmetric), or for
  int4 the bytes holding two values each (low nibble first), ``U8`` of shape ``(ceil(n/2),)``;
* ``K.scale``: the scales (``F32`` or ``F16``) in the weight's rank, size 1 where they do not
  vary (per output channel: ``(out, 1)``; int4 blocks of 32 along in_features:
  ``(out, in / 32)``);
* ``K.zero_point``: ``U8`` zero points in the scales' shape, only when asymmetric.

The safetensors ``__metadata__`` (strings only) holds ``"ipfs_accelerate.dtype"`` (the model
dtype) and ``"ipfs_accelerate.quantization"``: JSON mapping each quantized ``K`` to
``{"bits", "axis", "block_size", "shape", "dtype", "symmetric", "max_abs_error",
"rms_error"}``. Loading such a directory rebuilds the QuantizedTensors from these arrays (no
re-quantization); docs/models.md ("Saving") shows an example.

A model migrated by ``smooth_int8`` (SmoothQuant: Linear layers that multiply their input by
``input_scale`` before the product with a weight that was multiplied by its inverse) also
stores each such layer's ``P.input_scale`` (``F32``, ``(in_features,)``; layers that shared
one scale store one copy each and share one again when loaded) and, in
``"ipfs_accelerate.smoothing"``, JSON ``{"scales": [P, ...], "activations": {P: mode}}``: the
migrated layers and every Linear layer's int8 activation mode. Loading restores both, so the
model needs no new calibration, and a migrated model loaded in float32 still multiplies its
inputs back (its weights are the migrated ones).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ipfs_accelerate.errors import CheckpointError, ModelError
from ipfs_accelerate.quantization import ErrorStats, QuantizedTensor
from ipfs_accelerate.tensor import Tensor

if TYPE_CHECKING:
    from ipfs_accelerate.models._module import Module

__all__ = [
    "DTYPE_KEY",
    "QUANTIZATION_KEY",
    "SIDE_FILES",
    "SMOOTHING_KEY",
    "Smoothing",
    "quantized_from_checkpoint",
    "save_model",
    "smoothing_from_checkpoint",
    "write_safetensors",
]

#: ``__metadata__`` keys written by :func:`save_model`
DTYPE_KEY = "ipfs_accelerate.dtype"
QUANTIZATION_KEY = "ipfs_accelerate.quantization"
SMOOTHING_KEY = "ipfs_accelerate.smoothing"

#: files besides the weights that pipelines read; copied by a pipeline's save_pretrained
SIDE_FILES = (
    "generation_config.json", "preprocessor_config.json", "tokenizer.json",
    "tokenizer_config.json", "special_tokens_map.json", "vocab.txt", "vocab.json",
    "merges.txt", "added_tokens.json", "modules.json", "sentence_bert_config.json",
    "config_sentence_transformers.json", "1_Pooling/config.json",
)  # fmt: skip

_CODES = {"float32": "F32", "float16": "F16", "int8": "I8", "uint8": "U8", "int64": "I64"}
_SCALE_DTYPES = ("float32", "float16")


def write_safetensors(
    path: Path, tensors: Mapping[str, np.ndarray[Any, Any]], metadata: Mapping[str, str]
) -> None:
    """``tensors`` (little-endian, C order) and string ``metadata`` as a safetensors file."""
    header: dict[str, Any] = {"__metadata__": dict(metadata)}
    offset = 0
    arrays = []
    for name, array in tensors.items():
        code = _CODES.get(array.dtype.name)
        if code is None:
            raise CheckpointError(f"save: tensor {name!r} has dtype {array.dtype}, not storable")
        data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
        header[name] = {
            "dtype": code,
            "shape": list(array.shape),
            "data_offsets": [offset, offset + data.nbytes],
        }
        offset += data.nbytes
        arrays.append(data)
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    # written beside it, then put in its place: a model loaded from this very file holds its
    # weights as views of it (memory-mapped), and truncating the file under them would end
    # the process (SIGBUS) or change them; the replaced file lives on while they are mapped
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with temporary.open("wb") as handle:
            handle.write(len(raw).to_bytes(8, "little"))
            handle.write(raw)
            for data in arrays:
                handle.write(data.tobytes())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _layout(q: QuantizedTensor) -> dict[str, Any]:
    return {
        "bits": q.bits, "axis": q.axis, "block_size": q.block_size, "shape": list(q.shape),
        "dtype": q.dtype, "symmetric": q.symmetric,
        "max_abs_error": q.error.max_abs, "rms_error": q.error.rms,
    }  # fmt: skip


def save_model(
    model: Module,
    config: Mapping[str, Any],
    directory: str | os.PathLike[str],
    *,
    files_from: Path | None = None,
) -> Path:
    """Write ``config`` as config.json and the model's weights as model.safetensors in
    ``directory`` (created if needed); with ``files_from``, copy the :data:`SIDE_FILES` that
    directory has. A tied weight that is the very object of its source is left out (the
    loader ties it again). Returns the directory."""
    from ipfs_accelerate.models._module import Linear
    from ipfs_accelerate.models._precision import model_dtype

    linears = [(path, m) for path, m in model.named_modules() if isinstance(m, Linear)]
    migrated = {path: m.input_scale for path, m in linears if m.input_scale is not None}
    target = Path(directory)
    target.mkdir(parents=True, exist_ok=True)
    held = dict(model.named_weights())
    tensors: dict[str, np.ndarray[Any, Any]] = {}
    layouts: dict[str, dict[str, Any]] = {}
    for key, value in held.items():
        origin = model.tied_weights.get(key)
        if origin is not None and held.get(origin) is value:
            continue
        if isinstance(value, Tensor):
            tensors[key] = value.numpy()
            continue
        tensors[key] = np.asarray(value.data)
        tensors[f"{key}.scale"] = np.asarray(value.scales)
        if value.zero_points is not None:
            tensors[f"{key}.zero_point"] = np.asarray(value.zero_points)
        layouts[key] = _layout(value)
    metadata = {"format": "pt", DTYPE_KEY: model_dtype(model)}
    if layouts:
        metadata[QUANTIZATION_KEY] = json.dumps(layouts, sort_keys=True)
    if migrated:
        for path, scale in migrated.items():
            key = f"{path}.input_scale"
            if key in tensors:
                raise ModelError(f"save_model: {key!r} is already a weight of the model")
            tensors[key] = np.asarray(scale.numpy(), dtype=np.float32)
        record = {"scales": sorted(migrated), "activations": {p: m.activations for p, m in linears}}
        metadata[SMOOTHING_KEY] = json.dumps(record, sort_keys=True)
    write_safetensors(target / "model.safetensors", tensors, metadata)
    (target / "config.json").write_text(json.dumps(dict(config), indent=2), encoding="utf-8")
    if files_from is not None and files_from.resolve() != target.resolve():
        for name in SIDE_FILES:
            source = files_from / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, target / name)
        for folder in _module_folders(files_from):
            shutil.copytree(files_from / folder, target / folder, dirs_exist_ok=True)
    return target


def _module_folders(directory: Path) -> list[str]:
    """The sentence-transformers module folders ``modules.json`` names (2_Dense...): a
    pipeline reads them, so a saved copy needs them."""
    path = directory / "modules.json"
    if not path.is_file():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return []  # the pipeline that loaded it would have refused it; nothing to copy
    folders = []
    for entry in entries if isinstance(entries, list) else []:
        folder = str(entry.get("path") or "") if isinstance(entry, dict) else ""
        inside = folder and not Path(folder).is_absolute() and ".." not in Path(folder).parts
        if inside and (directory / folder).is_dir():  # never a path leading out of it
            folders.append(folder)
    return folders


def _expected_scale_shape(layout: Mapping[str, Any]) -> tuple[int, ...]:
    shape, axis, block = layout["shape"], layout["axis"], layout["block_size"]
    if axis is None:
        return (1,) * len(shape)
    if block is None:
        return tuple(n if i == axis else 1 for i, n in enumerate(shape))
    return tuple(n // block if i == axis else n for i, n in enumerate(shape))


def _checked_layout(name: str, raw: Any, source: str) -> dict[str, Any]:
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{source}: quantized tensor {name!r}: {what}")

    if not isinstance(raw, dict):
        raise bad("its layout is not a JSON object")
    layout = dict(raw)
    if layout.get("bits") not in (4, 8):
        raise bad(f"bits {layout.get('bits')!r} is not 4 or 8")
    shape = layout.get("shape")
    if not isinstance(shape, list) or not all(isinstance(n, int) and n > 0 for n in shape):
        raise bad(f"shape {shape!r} is not a list of positive ints")
    axis, block = layout.get("axis"), layout.get("block_size")
    if axis is not None and (not isinstance(axis, int) or not 0 <= axis < len(shape)):
        raise bad(f"axis {axis!r} is out of range for shape {shape}")
    if block is not None and (axis is None or block not in (32, 64, 128) or shape[axis] % block):
        raise bad(f"block_size {block!r} does not fit axis {axis!r} of shape {shape}")
    if layout.get("dtype") not in _SCALE_DTYPES:
        raise bad(f"dtype {layout.get('dtype')!r} is not float32 or float16")
    return layout


def _metadata_json(metadata: Mapping[str, str], key: str, source: str) -> Any:
    """The JSON value of the ``__metadata__`` string ``key``; None when it is absent."""
    text = metadata.get(key)
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{source}: {key} metadata is not JSON ({exc})") from None


def quantized_from_checkpoint(
    weights: dict[str, Any], metadata: Mapping[str, str], source: str
) -> str | None:
    """Replace each quantized weight of a saved checkpoint in ``weights`` (in place) by its
    QuantizedTensor built from the saved arrays (``K.scale`` and ``K.zero_point`` removed);
    return the model dtype it was saved in, or None when nothing in it is quantized."""
    layouts = _metadata_json(metadata, QUANTIZATION_KEY, source)
    if layouts is None:
        return None
    if not isinstance(layouts, dict):
        raise CheckpointError(f"{source}: {QUANTIZATION_KEY} metadata is not a JSON object")
    for name, raw in layouts.items():
        layout = _checked_layout(name, raw, source)
        weights[name] = _rebuild(name, layout, weights, source)
    saved = metadata.get(DTYPE_KEY, "int8")
    return saved if saved in ("int8", "int4") else "int8"


class Smoothing:
    """A migrated model's saved smoothing (see the module docstring): ``scales`` (layer path
    -> the (in_features,) float32 input scale) and ``activations`` (layer path -> mode)."""

    __slots__ = ("activations", "scales")

    def __init__(
        self, scales: dict[str, np.ndarray[Any, Any]], activations: dict[str, str]
    ) -> None:
        self.scales = scales
        self.activations = activations


def smoothing_from_checkpoint(
    weights: dict[str, Any], metadata: Mapping[str, str], source: str
) -> Smoothing | None:
    """Take a migrated model's ``P.input_scale`` arrays out of ``weights`` (in place) with the
    record in :data:`SMOOTHING_KEY`; None when the checkpoint holds none. The arrays' shapes
    are checked against the model when they are restored (``_smoothing.restore_smoothing``)."""
    record = _metadata_json(metadata, SMOOTHING_KEY, source)
    if record is None:
        return None
    paths = record.get("scales") if isinstance(record, dict) else None
    modes = record.get("activations") if isinstance(record, dict) else None
    if (
        not isinstance(paths, list)
        or not all(isinstance(p, str) for p in paths)
        or not isinstance(modes, dict)
        or not all(isinstance(k, str) and isinstance(v, str) for k, v in modes.items())
    ):
        raise CheckpointError(
            f"{source}: {SMOOTHING_KEY} metadata must be {{'scales': [layer, ...],"
            " 'activations': {layer: mode}}"
        )
    scales: dict[str, np.ndarray[Any, Any]] = {}
    for path in paths:
        array = weights.pop(f"{path}.input_scale", None)
        if array is None:
            raise CheckpointError(f"{source}: {path + '.input_scale'!r} is not stored")
        values = np.asarray(array)
        if values.dtype != np.float32 or values.ndim != 1:
            raise CheckpointError(
                f"{source}: {path + '.input_scale'!r} must be 1-D float32, got"
                f" {values.dtype} {values.shape}"
            )
        if not (np.isfinite(values).all() and (values > 0).all()):
            raise CheckpointError(
                f"{source}: {path + '.input_scale'!r} holds a value that is not finite and positive"
            )
        scales[path] = values
    return Smoothing(scales, dict(modes))


def _rebuild(
    name: str, layout: dict[str, Any], weights: dict[str, Any], source: str
) -> QuantizedTensor:
    def bad(what: str) -> CheckpointError:
        return CheckpointError(f"{source}: quantized tensor {name!r}: {what}")

    data = weights.get(name)
    scales = weights.pop(f"{name}.scale", None)
    zero = weights.pop(f"{name}.zero_point", None)
    if data is None or scales is None:
        raise bad(f"{name!r} and {name + '.scale'!r} must both be stored")
    shape, bits = tuple(layout["shape"]), layout["bits"]
    symmetric = zero is None
    if bool(layout.get("symmetric", True)) != symmetric:
        raise bad("the layout's 'symmetric' disagrees with the presence of a zero point")
    count = math.prod(shape)
    want = (
        count if bits == 8 else (count + 1) // 2,
        "int8" if bits == 8 and symmetric else "uint8",
    )
    if data.size != want[0] or data.dtype.name != want[1]:
        raise bad(
            f"data is {data.dtype} of {data.size} values; {bits}-bit needs {want[1]} x {want[0]}"
        )
    scale_shape = _expected_scale_shape(layout)
    if tuple(scales.shape) != scale_shape or scales.dtype.name not in _SCALE_DTYPES:
        raise bad(f"scales are {scales.dtype} {tuple(scales.shape)}, expected {scale_shape}")
    if not np.all(np.isfinite(scales)) or np.any(scales <= 0):
        raise bad("scales must be finite and positive")
    if zero is not None and (tuple(zero.shape) != scale_shape or zero.dtype != np.uint8):
        raise bad(f"zero points are {zero.dtype} {tuple(zero.shape)}, expected uint8 {scale_shape}")
    error = ErrorStats(
        float(layout.get("max_abs_error", float("nan"))),
        float(layout.get("rms_error", float("nan"))),
    )
    return QuantizedTensor(
        data.reshape(shape) if bits == 8 else data.reshape(-1),
        scales,
        zero,
        shape=shape,
        bits=bits,
        axis=layout["axis"],
        block_size=layout["block_size"],
        dtype=str(layout["dtype"]),
        device="cpu",
        error=error,
    )
