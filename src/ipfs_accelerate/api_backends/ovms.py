"""OpenVINO Model Server (OVMS).

Generative models through OVMS's OpenAI-compatible routes under ``/v3``
(``/v3/chat/completions`` with SSE streaming and ``[DONE]``, ``/v3/completions``,
``/v3/embeddings``), and any model through the KServe v2 REST protocol:
``POST /v2/models/{model}[/versions/{v}]/infer`` with named tensors
(``{"inputs": [{"name", "shape", "datatype", "data"}], "outputs": [{"name"}]}``),
``GET /v2/models/{model}`` (metadata), ``GET /v2/models/{model}/ready``,
``GET /v2/health/ready``. Models are listed from ``GET /v1/config``.

Tensors are numpy arrays; ``data`` travels flattened row-major as the protocol says, and
an output whose element count disagrees with its ``shape`` raises ProtocolError.

Configuration: ``metadata["base_url"]`` / ``ovms_api_url`` (required; the server root, a
trailing ``/v3`` is accepted), optional ``api_key`` as a Bearer token.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from ipfs_accelerate.errors import InvalidArgumentError, ProtocolError

from ._openai_compat import OpenAICompatibleBackend
from ._parse import need, opt
from ._transport import HTTPRequest, RawResponse
from ._types import ModelInfo

if TYPE_CHECKING:  # pragma: no cover
    import numpy as np

__all__ = ["OVMSBackend", "kserve_datatype"]

# KServe v2 datatypes <-> numpy dtype names
_TO_NUMPY = {
    "BOOL": "bool", "UINT8": "uint8", "UINT16": "uint16", "UINT32": "uint32", "UINT64": "uint64",
    "INT8": "int8", "INT16": "int16", "INT32": "int32", "INT64": "int64",
    "FP16": "float16", "FP32": "float32", "FP64": "float64", "BYTES": "object",
}  # fmt: skip
_FROM_NUMPY = {v: k for k, v in _TO_NUMPY.items() if k != "BYTES"}


def kserve_datatype(array: np.ndarray) -> str:
    """The KServe datatype of a numpy array (strings and bytes are BYTES)."""
    kind = array.dtype.kind
    if kind in ("U", "S", "O"):
        return "BYTES"
    name = array.dtype.name
    if name not in _FROM_NUMPY:
        raise InvalidArgumentError(f"ovms: dtype {name} has no KServe v2 datatype")
    return _FROM_NUMPY[name]


def _seg(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidArgumentError(
            f"ovms: model name/version must be a non-empty string, got {value!r}"
        )
    return quote(value, safe="")


class OVMSBackend(OpenAICompatibleBackend):
    provider: ClassVar[str] = "ovms"
    summary: ClassVar[str] = "OpenVINO Model Server"
    routes: ClassVar[str] = (
        "OpenAI routes `/v3/chat/completions` (SSE), `/v3/embeddings`; KServe v2 "
        "`/v2/models/{m}/infer`, `/v2/models/{m}/ready`, `/v2/health/ready`; models from "
        "`/v1/config`"
    )
    base_url_keys: ClassVar[tuple[str, ...]] = ("ovms_api_url",)
    strip_url_suffixes: ClassVar[tuple[str, ...]] = ("/v3", "/v2", "/v1")
    api_prefix: ClassVar[str] = "/v3"
    model_patterns: ClassVar[tuple[str, ...]] = (
        r"[\w.-]+/[\w.-]+",
        r"OpenVINO/.*",
        r".*-ov",
        r".*-int[48]-ov",
    )

    def _health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", "/v2/health/ready", expect="text")

    def _model_path(self, model: str, version: str | int | None) -> str:
        path = f"/v2/models/{_seg(model)}"
        if version is not None:
            path += f"/versions/{_seg(str(version))}"
        return path

    async def infer(
        self,
        model: str,
        inputs: Mapping[str, Any],
        *,
        outputs: Sequence[str] | None = None,
        version: str | int | None = None,
        request_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> dict[str, np.ndarray]:
        """KServe v2 inference: named input tensors in, named output tensors out (numpy)."""
        import numpy as np

        if not isinstance(inputs, Mapping) or not inputs:
            raise InvalidArgumentError(
                "ovms: inputs must be a non-empty mapping of tensor name -> array"
            )
        opts = self._options(options)
        tensors = []
        for name, value in inputs.items():
            array = np.asarray(value)
            datatype = kserve_datatype(array)
            if datatype == "BYTES":
                data: list[Any] = [
                    x.decode() if isinstance(x, bytes) else str(x)
                    for x in array.reshape(-1).tolist()
                ]
            else:
                data = array.reshape(-1).tolist()
            tensors.append(
                {"name": str(name), "shape": list(array.shape), "datatype": datatype, "data": data}
            )
        body: dict[str, Any] = {"inputs": tensors}
        if outputs:
            body["outputs"] = [{"name": str(n)} for n in outputs]
        if request_id:
            body["id"] = request_id
        if parameters:
            body["parameters"] = dict(parameters)
        request = HTTPRequest("POST", self._model_path(model, version) + "/infer", json=body)
        wanted = list(outputs) if outputs else None

        def parse(raw: RawResponse) -> dict[str, np.ndarray]:
            what, provider = "infer", self.provider
            data = self._json(raw, what)
            result: dict[str, np.ndarray] = {}
            for tensor in need(data, "outputs", list, provider, what):
                name = need(tensor, "name", str, provider, what)
                shape = need(tensor, "shape", list, provider, what)
                datatype = need(tensor, "datatype", str, provider, what)
                values = need(tensor, "data", list, provider, what)
                if datatype not in _TO_NUMPY:
                    raise ProtocolError(
                        f"{what}: output {name!r} has unknown datatype {datatype!r}",
                        provider=provider,
                    )
                if not all(
                    isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape
                ):
                    raise ProtocolError(
                        f"{what}: output {name!r} has a bad shape {shape!r}", provider=provider
                    )
                flat = (
                    np.array(values, dtype=_TO_NUMPY[datatype]).reshape(-1)
                    if values
                    else np.array([], dtype=_TO_NUMPY[datatype])
                )
                expected = math.prod(shape)
                if flat.size != expected:
                    raise ProtocolError(
                        f"{what}: output {name!r} has {flat.size} element(s) but shape {shape} "
                        f"needs {expected}",
                        provider=provider,
                    )
                result[name] = flat.reshape(shape)
            if wanted:
                missing = [n for n in wanted if n not in result]
                if missing:
                    raise ProtocolError(
                        f"{what}: requested output(s) {missing} missing from the response",
                        provider=provider,
                    )
            return result

        return await self._request(request, opts, parse, what="infer")

    async def model_metadata(
        self, model: str, version: str | int | None = None, **options: Any
    ) -> dict[str, Any]:
        """``GET /v2/models/{model}``: name, versions, platform, inputs and outputs (name,
        datatype, shape)."""
        opts = self._options(options)
        request = HTTPRequest("GET", self._model_path(model, version))
        return await self._request(
            request,
            opts,
            lambda raw: self._json_object(raw, "model_metadata"),
            what="model_metadata",
        )

    async def model_ready(self, model: str, version: str | int | None = None) -> bool:
        """``GET /v2/models/{model}/ready`` once (no retry): True on HTTP 200."""
        status = await self._probe(self._model_path(model, version) + "/ready")
        return status == 200

    async def server_ready(self) -> bool:
        return await self._probe("/v2/health/ready") == 200

    async def _probe(self, path: str) -> int | None:
        from ipfs_accelerate.errors import APIError

        try:
            raw = await self.endpoint.send(
                HTTPRequest("GET", path, expect="text"),
                {**self.endpoint.headers, **self._auth_headers()},
                total=self.config.connect_timeout, connect=self.config.connect_timeout,
            )  # fmt: skip
        except APIError:
            return None
        return raw.status

    async def list_models(self, **options: Any) -> list[ModelInfo]:
        """Models from ``GET /v1/config`` (servable and LLM graphs alike)."""
        opts = self._options(options)

        def parse(raw: RawResponse) -> list[ModelInfo]:
            what, provider = "list_models", self.provider
            data = self._json_object(raw, what)
            models = []
            for name, status in data.items():
                versions = (
                    opt(status, "model_version_status", list, provider, what, [])
                    if isinstance(status, Mapping)
                    else []
                )
                models.append(ModelInfo(id=str(name), raw={"model_version_status": versions}))
            return models

        return await self._request(
            HTTPRequest("GET", "/v1/config"), opts, parse, what="list_models"
        )
