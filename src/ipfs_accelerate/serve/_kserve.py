"""KServe v2 (Open Inference Protocol) routes over HTTP/JSON.

``GET /v2``, ``/v2/health/live``, ``/v2/health/ready``, ``/v2/models/{m}``,
``/v2/models/{m}/ready`` and ``POST /v2/models/{m}/infer``. Tensors are JSON
``{"name", "shape", "datatype", "data"}`` with ``data`` flat or nested in row-major order;
errors are ``{"error": "..."}`` (400 bad request, 404 unknown model).

What each kind of model takes and returns (``parameters`` are request-level):

* embedding: ``text`` BYTES [N] (UTF-8 strings) -> ``embedding`` FP32 [N, D];
  parameters ``normalize`` (default true), ``truncate``.
* image classification: ``image`` BYTES [N] (base64 of encoded image files) or UINT8
  [N, H, W, 3] / [H, W, 3] pixels -> ``labels`` BYTES [N, k], ``scores`` FP32 [N, k];
  parameter ``top_k`` (default 5).
* zero-shot image classification: ``image`` as above and ``labels`` BYTES [L] ->
  ``labels`` BYTES [N, L], ``scores`` FP32 [N, L], best first; parameter
  ``hypothesis_template`` (default "This is a photo of {}.").
* speech recognition: ``audio`` BYTES [1] (base64 of an encoded audio file) or FP32 [S]
  samples with parameter ``sampling_rate`` -> ``text`` BYTES [1], ``language`` BYTES [1];
  parameters ``language``, ``task`` ("transcribe" or "translate").
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import math
from typing import TYPE_CHECKING, Any

import numpy as np

import ipfs_accelerate
from ipfs_accelerate.models.pipelines import TranscriptSegment

from ._config import ServerConfig
from ._decode import check_audio_samples, decode_audio, decode_image
from ._errors import ServeError, brief, describe
from ._models import l2_normalize
from ._requests import json_object, read_json
from ._state import INLINE_RESPONSE_VALUES, ServerState, state_of

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

__all__ = ["routes"]

_NUMERIC = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}


def _json(data: Any, status: int = 200) -> Response:
    from starlette.responses import Response

    return Response(
        json.dumps(data, separators=(",", ":"), allow_nan=False),
        status_code=status,
        media_type="application/json",
    )


async def server_metadata(request: Request) -> Response:
    return _json(
        {"name": "ipfs-accelerate", "version": ipfs_accelerate.__version__, "extensions": []}
    )


async def live(request: Request) -> Response:
    return _json({"live": True})


async def ready(request: Request) -> Response:
    state = state_of(request)
    if not state.ready or state.registry.closed:
        raise ServeError("unhealthy", "the server is not ready")
    return _json({"ready": True})


async def model_ready(request: Request) -> Response:
    state = state_of(request)
    model = state.model(request.path_params["model"])
    return _json({"name": model.name, "ready": not state.registry.closed})


def _signature(model: Any) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    def tensor(name: str, datatype: str, shape: list[int]) -> dict[str, Any]:
        return {"name": name, "datatype": datatype, "shape": shape}

    if model.kind == "embedding":
        return [tensor("text", "BYTES", [-1])], [
            tensor("embedding", "FP32", [-1, model.embedding.dimension])
        ]
    results = [tensor("labels", "BYTES", [-1, -1]), tensor("scores", "FP32", [-1, -1])]
    if model.kind == "image-classification":
        return [tensor("image", "BYTES", [-1])], results
    if model.kind == "zero-shot-image-classification":
        return [tensor("image", "BYTES", [-1]), tensor("labels", "BYTES", [-1])], results
    return [tensor("audio", "BYTES", [1])], [
        tensor("text", "BYTES", [1]),
        tensor("language", "BYTES", [1]),
    ]


def _served(state: ServerState, name: Any) -> Any:
    """The model ``name`` if the v2 protocol can drive it: a text-generation model streams
    tokens, which v2 tensors cannot (it is served by OpenAI's routes)."""
    model = state.model(name)
    if model.kind == "text-classification":
        raise ServeError(
            "wrong_model_kind",
            f"The model '{model.name}' is a text classifier; the KServe v2 routes do not serve "
            "it (use TEI's /predict)",
            param="model",
        )
    if model.kind == "rerank":
        raise ServeError(
            "wrong_model_kind",
            f"The model '{model.name}' is a rerank model; the KServe v2 routes do not serve it "
            "(use TEI's /rerank or /predict)",
            param="model",
        )
    if model.kind == "text-generation":
        raise ServeError(
            "wrong_model_kind",
            f"The model '{model.name}' is a text-generation model; the KServe v2 routes do not "
            "serve it (use /v1/chat/completions or /v1/completions)",
            param="model",
        )
    return model


async def model_metadata(request: Request) -> Response:
    state = state_of(request)
    model = _served(state, request.path_params["model"])
    inputs, outputs = _signature(model)
    return _json(
        {
            "name": model.name,
            "versions": ["1"],
            "platform": f"ipfs_accelerate/{model.device}",
            "inputs": inputs,
            "outputs": outputs,
        }
    )


class _Tensor:
    def __init__(self, name: str, datatype: str, shape: list[int], data: list[Any]) -> None:
        self.name, self.datatype, self.shape, self.data = name, datatype, shape, data
        # checked here, with the parsing (off the event loop for a large body)
        self.all_strings = datatype == "BYTES" and all(isinstance(v, str) for v in data)

    def strings(self) -> list[str]:
        if self.datatype != "BYTES":
            raise ServeError(
                "invalid_request", f"input '{self.name}' must be BYTES, got {self.datatype}"
            )
        if not self.all_strings:
            raise ServeError(
                "invalid_request", f"input '{self.name}': BYTES elements must be JSON strings"
            )
        return list(self.data)

    def array(self) -> np.ndarray[Any, Any]:
        dtype = _NUMERIC.get(self.datatype)
        if dtype is None:
            raise ServeError(
                "invalid_request", f"input '{self.name}' must be numeric here, got {self.datatype}"
            )
        try:
            return np.asarray(self.data, dtype=dtype).reshape(self.shape)
        except (TypeError, ValueError, OverflowError) as exc:
            raise ServeError(
                "invalid_request",
                f"input '{self.name}': data does not fit {self.datatype} ({describe(exc)})",
            ) from None


def _flatten(data: Any) -> list[Any]:
    if not isinstance(data, list):
        return [data]
    out: list[Any] = []
    stack = [iter(data)]
    while stack:
        for value in stack[-1]:
            if isinstance(value, list):
                stack.append(iter(value))
                break
            out.append(value)
        else:
            stack.pop()
    return out


#: numpy's own bound on an array's rank
_MAX_RANK = 32

#: the JSON types a datatype's elements may have
_BOOL_TYPES, _NUMBER_TYPES = (bool,), (int, float)


def _parse_inputs(body: dict[str, Any], config: ServerConfig) -> dict[str, _Tensor]:
    raw = body.get("inputs")
    if not isinstance(raw, list) or not raw:
        raise ServeError("invalid_request", "'inputs' must be a non-empty list of tensors")
    tensors: dict[str, _Tensor] = {}
    for position, item in enumerate(raw):
        if not isinstance(item, dict):
            raise ServeError(
                "invalid_request",
                f"inputs[{position}] must be an object with name, shape, datatype, data",
            )
        name, datatype, shape, data = (
            item.get("name"),
            item.get("datatype"),
            item.get("shape"),
            item.get("data"),
        )
        if not isinstance(name, str) or not name:
            raise ServeError("invalid_request", f"inputs[{position}] has no name")
        if datatype != "BYTES" and datatype not in _NUMERIC:
            raise ServeError(
                "invalid_request", f"input '{name}': unknown datatype {brief(datatype)}"
            )
        if not isinstance(shape, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
        ):
            raise ServeError(
                "invalid_request",
                f"input '{name}': shape must be a list of non-negative ints, got {brief(shape)}",
            )
        if data is None:
            raise ServeError("invalid_request", f"input '{name}' has no data")
        _check_size(name, shape, config)
        flat = _flatten(data)
        if len(flat) != math.prod(shape):
            raise ServeError(
                "invalid_request",
                f"input '{name}': shape {shape} needs {math.prod(shape)} elements, data has "
                f"{len(flat)}",
            )
        if name in tensors:
            raise ServeError("invalid_request", f"input '{name}' is given twice")
        _check_elements(name, datatype, flat)
        tensors[name] = _Tensor(name, datatype, shape, flat)
    return tensors


def _check_size(name: str, shape: list[int], config: ServerConfig) -> None:
    """The declared shape within the rank and element bounds, before the data is touched."""
    if len(shape) > _MAX_RANK:
        raise ServeError(
            "invalid_request", f"input '{name}': shape has {len(shape)} dimensions (at most 32)"
        )
    elements = math.prod(shape)
    if elements > config.max_tensor_elements:
        raise ServeError(
            "too_many_inputs",
            f"input '{name}': shape {shape} holds {elements} elements, over this server's bound "
            f"of {config.max_tensor_elements} per tensor",
        )


def _check_elements(name: str, datatype: str, flat: list[Any]) -> None:
    """Every element of the JSON type its datatype needs (strings for BYTES, booleans for
    BOOL, numbers otherwise)."""
    if datatype == "BYTES":
        wanted: tuple[type, ...] = (str,)
        what = "JSON strings"
    elif datatype == "BOOL":
        wanted, what = _BOOL_TYPES, "true or false"
    else:
        wanted, what = _NUMBER_TYPES, "JSON numbers"
    for index, value in enumerate(flat):
        if not isinstance(value, wanted) or (datatype != "BOOL" and isinstance(value, bool)):
            raise ServeError(
                "invalid_request",
                f"input '{name}': {datatype} elements must be {what}; element {index} is "
                f"{type(value).__name__}",
            )


def _pick(tensors: dict[str, _Tensor], name: str, model: Any) -> _Tensor:
    """The input called ``name``: the model's metadata names its inputs, and an input of
    another name is refused rather than guessed at."""
    tensor = tensors.get(name)
    if tensor is None:
        raise ServeError(
            "invalid_request",
            f"model '{model.name}' needs an input named '{name}'; got {', '.join(tensors)}",
        )
    return tensor


def _parameter(
    parameters: dict[str, Any], name: str, kind: type | tuple[type, ...], default: Any
) -> Any:
    value = parameters.get(name, default)
    if value is not default and (
        not isinstance(value, kind) or isinstance(value, bool) is not (kind is bool)
    ):
        raise ServeError(
            "invalid_request", f"parameter '{name}' has the wrong type: {brief(value)}"
        )
    return value


def _images(tensor: _Tensor, config: ServerConfig) -> list[Any]:
    """Encoded image files (bytes, decoded on the model's thread) or pixel arrays."""
    if tensor.datatype == "BYTES":
        _check_count(tensor, "images", len(tensor.data), config)
        images: list[Any] = []
        for index, text in enumerate(tensor.strings()):
            try:
                images.append(base64.b64decode(text, validate=True))
            except (binascii.Error, ValueError):
                raise ServeError(
                    "bad_media",
                    f"image {index} is not base64 (BYTES images are base64 of the file)",
                ) from None
        if not images:
            raise ServeError("empty_input", f"input '{tensor.name}' holds no images")
        return images
    if tensor.datatype != "UINT8":
        raise ServeError(
            "invalid_request",
            f"input '{tensor.name}' must be BYTES (encoded files) or UINT8 pixels",
        )
    shape = [1, *tensor.shape] if len(tensor.shape) == 3 else tensor.shape
    if len(shape) != 4 or shape[-1] != 3:
        raise ServeError(
            "invalid_request",
            f"input '{tensor.name}': UINT8 pixels must be [N, H, W, 3], got {tensor.shape}",
        )
    _check_count(tensor, "images", shape[0], config)
    if shape[1] * shape[2] > config.max_image_pixels:
        raise ServeError(
            "bad_media",
            f"input '{tensor.name}': {shape[2]}x{shape[1]} images are {shape[1] * shape[2]} "
            f"pixels, over this server's bound of {config.max_image_pixels}",
        )
    pixels = tensor.array().reshape(shape)
    return list(pixels)


def _check_count(tensor: _Tensor, what: str, count: int, config: ServerConfig) -> None:
    if count > config.max_client_batch_size:
        raise ServeError(
            "too_many_inputs",
            f"input '{tensor.name}' holds {count} {what}; this server takes at most "
            f"{config.max_client_batch_size} per request",
        )


def _template(parameters: dict[str, Any]) -> str:
    """``hypothesis_template`` with exactly one plain ``{}``: a format spec such as
    ``{:>999999999}`` would make each label a gigabyte, an attribute lookup reads internals."""
    import string

    template = _parameter(parameters, "hypothesis_template", str, "This is a photo of {}.")
    try:
        fields = [f[1:] for f in string.Formatter().parse(template) if f[1] is not None]
    except ValueError:
        fields = []
    if fields != [("", "", None)]:
        raise ServeError(
            "invalid_request",
            "parameter 'hypothesis_template' must hold exactly one '{}' (no format spec, "
            "field name or conversion) where the label goes",
        )
    return template


def _ranked(results: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    rows, k = len(results), len(results[0]) if results else 0
    return [
        {
            "name": "labels",
            "datatype": "BYTES",
            "shape": [rows, k],
            "data": [r["label"] for row in results for r in row],
        },
        {
            "name": "scores",
            "datatype": "FP32",
            "shape": [rows, k],
            "data": [r["score"] for row in results for r in row],
        },
    ]


async def infer(request: Request) -> Response:
    from starlette.responses import Response

    state = state_of(request)
    model = _served(state, request.path_params["model"])
    body, tensors, wanted = await read_json(
        request, functools.partial(_infer_request, config=state.config)
    )
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ServeError("invalid_request", "'parameters' must be an object")
    if model.kind == "embedding":
        outputs = await _embed(state, model, tensors, parameters)
    elif model.kind == "image-classification":
        images = await state.offload(_images, _pick(tensors, "image", model), state.config)
        top_k = _parameter(parameters, "top_k", int, 5)
        results = await state.run(
            model,
            "image-classification",
            _classify,
            model.pipeline.classify,
            state.config,
            images,
            top_k,
        )
        state.metrics.inputs.labels(model.name, "image-classification").inc(len(images))
        outputs = _ranked(results)
    elif model.kind == "zero-shot-image-classification":
        images = await state.offload(_images, _pick(tensors, "image", model), state.config)
        label_tensor = _pick(tensors, "labels", model)
        _check_count(label_tensor, "labels", len(label_tensor.data), state.config)
        labels = label_tensor.strings()
        template = _template(parameters)
        results = await state.run(
            model,
            "zero-shot-image-classification",
            _classify,
            model.pipeline.classify,
            state.config,
            images,
            labels,
            template,
        )
        state.metrics.inputs.labels(model.name, "zero-shot-image-classification").inc(len(images))
        outputs = _ranked(results)
    else:
        outputs = await _speech(state, model, _pick(tensors, "audio", model), parameters)
    if wanted is not None:
        names = wanted
        unknown = [n for n in names if n not in {o["name"] for o in outputs}]
        if unknown:
            raise ServeError(
                "invalid_request",
                f"unknown output(s) {', '.join(unknown)}; this model gives "
                f"{', '.join(o['name'] for o in outputs)}",
            )
        outputs = [o for o in outputs if o["name"] in names]
    response: dict[str, Any] = {"model_name": model.name, "model_version": "1", "outputs": outputs}
    if isinstance(body.get("id"), str):
        response["id"] = body["id"]
    values = sum(len(o["data"]) for o in outputs)
    payload = await state.offload(_encode, response, inline=values <= INLINE_RESPONSE_VALUES)
    return Response(payload, media_type="application/json")


def _infer_request(
    value: Any, *, config: ServerConfig
) -> tuple[dict[str, Any], dict[str, _Tensor], list[str] | None]:
    """The body, its input tensors and the output names it asks for (on the work pool when the
    body is large)."""
    body = json_object(value)
    tensors = _parse_inputs(body, config)
    wanted = body.get("outputs")
    if wanted is None:
        return body, tensors, None
    if not isinstance(wanted, list) or not all(
        isinstance(w, dict) and isinstance(w.get("name"), str) for w in wanted
    ):
        raise ServeError("invalid_request", "'outputs' must be a list of {\"name\": ...} objects")
    return body, tensors, [w["name"] for w in wanted]


def _encode(response: dict[str, Any]) -> bytes:
    for output in response["outputs"]:
        if isinstance(output["data"], np.ndarray):
            output["data"] = output["data"].tolist()
    return json.dumps(response, separators=(",", ":"), allow_nan=False).encode()


async def _embed(
    state: Any, model: Any, tensors: dict[str, _Tensor], parameters: dict[str, Any]
) -> list[dict[str, Any]]:
    texts = _pick(tensors, "text", model).strings()
    if not texts:
        raise ServeError("empty_input", "input 'text' holds no strings")
    normalize = _parameter(parameters, "normalize", bool, True)
    truncate = _parameter(parameters, "truncate", bool, state.config.auto_truncate)
    vectors, _, _ = await state.embed(model, ("text", texts), truncate=truncate, family="kserve")
    if normalize:
        vectors = l2_normalize(vectors)
    return [
        {
            "name": "embedding",
            "datatype": "FP32",
            "shape": list(vectors.shape),
            "data": vectors.ravel(),  # a list when the response is encoded
        }
    ]


async def _speech(
    state: Any, model: Any, tensor: _Tensor, parameters: dict[str, Any]
) -> list[dict[str, Any]]:
    language = _parameter(parameters, "language", str, None)
    task = _parameter(parameters, "task", str, "transcribe")
    if tensor.datatype == "BYTES":
        texts = tensor.strings()
        if len(texts) != 1:
            raise ServeError(
                "invalid_request",
                f"input '{tensor.name}' must hold one encoded audio file, got {len(texts)}",
            )
        audio: Any = await state.offload(_audio_file, texts[0])
    else:
        rate = _parameter(parameters, "sampling_rate", int, None)
        if rate is None:
            raise ServeError(
                "invalid_request", "FP32 audio samples need the parameter 'sampling_rate'"
            )
        check_audio_samples(len(tensor.data), rate, state.config)
        audio = (await state.offload(_samples, tensor), rate)
    segments = await state.run(
        model, task, _transcribe, model.pipeline, state.config, audio, language, task
    )
    state.metrics.inputs.labels(model.name, task).inc()
    text = TranscriptSegment.join(segments)
    language_code = segments[0].language if segments else (language or "")
    return [
        {"name": "text", "datatype": "BYTES", "shape": [1], "data": [text]},
        {"name": "language", "datatype": "BYTES", "shape": [1], "data": [language_code]},
    ]


def _audio_file(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ServeError(
            "bad_media", "the audio is not base64 (BYTES audio is base64 of the file)"
        ) from None


def _samples(tensor: _Tensor) -> np.ndarray[Any, Any]:
    return tensor.array().astype(np.float32).ravel()


def _classify(classify: Any, config: ServerConfig, images: list[Any], *args: Any) -> Any:
    decoded = [
        decode_image(image, i, config) if isinstance(image, bytes) else image
        for i, image in enumerate(images)
    ]
    return classify(decoded, *args)


def _transcribe(
    pipeline: Any, config: ServerConfig, audio: Any, language: str | None, task: str
) -> list[Any]:
    if isinstance(audio, bytes):
        audio = decode_audio(audio, config)
    return list(pipeline.transcribe_segments(audio, language, task))


def routes() -> list[Route]:
    from starlette.routing import Route

    return [
        Route("/v2", server_metadata, methods=["GET"]),
        Route("/v2/health/live", live, methods=["GET"]),
        Route("/v2/health/ready", ready, methods=["GET"]),
        Route("/v2/models/{model:path}/infer", infer, methods=["POST"]),
        Route("/v2/models/{model:path}/ready", model_ready, methods=["GET"]),
        Route("/v2/models/{model:path}", model_metadata, methods=["GET"]),
    ]
