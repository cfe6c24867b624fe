"""OpenVINO Model Server (2024.x/2025.x) REST API.

OpenAI routes under ``/v3`` (chat, embeddings, models) with OVMS's ``{"error": "..."}`` body;
KServe v2: ``GET /v2/health/live|ready``, ``GET /v2/models/{m}[/versions/{v}]`` (metadata),
``GET /v2/models/{m}[/versions/{v}]/ready``, ``POST /v2/models/{m}[/versions/{v}]/infer``;
``GET /v1/config`` (model version status). The served KServe model ``adder`` takes FP32
inputs ``a`` and ``b`` of one shape and returns ``sum`` and ``product``; ``classifier``
takes INT64 ``ids`` and returns INT64 ``label`` of shape ``[n]``; version 2 of ``adder``
is not loaded (404). Validation errors are 400 ``{"error": "..."}``.
"""

from __future__ import annotations

import json
import math
from typing import Any

from aiohttp import web

from .openai_fake import OpenAIFake, add_openai_routes

__all__ = ["OVMSFake"]

LLM = "OpenVINO/Phi-3.5-mini-instruct-int4-ov"
EMBEDDER = "OpenVINO/bge-base-en-v1.5-fp16-ov"


class OVMSFake(OpenAIFake):
    provider = "ovms"

    def __init__(self, bad_shape: bool = False) -> None:
        self.bad_shape = bad_shape
        super().__init__(
            api_key=None,
            prefix="/v3",
            models=(LLM, EMBEDDER),
            error_style="ovms",
            surfaces=False,
            owned_by="OVMS",
        )

    def setup_routes(self, app: web.Application) -> None:
        add_openai_routes(self, app, "/v3")
        app.router.add_get("/v1/config", self.config)
        app.router.add_get("/v2/health/live", self.ok)
        app.router.add_get("/v2/health/ready", self.ok)
        for suffix in ("", "/versions/{version}"):
            app.router.add_get("/v2/models/{model}" + suffix, self.metadata)
            app.router.add_get("/v2/models/{model}" + suffix + "/ready", self.ready)
            app.router.add_post("/v2/models/{model}" + suffix + "/infer", self.infer)

    def error_body(self, status: int, message: str, kind: str | None = None) -> Any:
        return {"error": message}

    async def ok(self, request: web.Request) -> web.StreamResponse:
        return web.Response(status=200)

    async def config(self, request: web.Request) -> web.StreamResponse:
        status = {
            "model_version_status": [
                {
                    "version": "1",
                    "state": "AVAILABLE",
                    "status": {"error_code": "OK", "error_message": "OK"},
                }
            ]
        }
        return web.json_response({name: status for name in ("adder", "classifier", LLM, EMBEDDER)})

    def _lookup(self, request: web.Request) -> web.Response | None:
        model = request.match_info["model"]
        version = request.match_info.get("version")
        if model not in ("adder", "classifier"):
            return self.error_response(404, "Model with requested name is not found")
        if version not in (None, "1"):
            return self.error_response(404, "Model with requested version is not found")
        return None

    async def metadata(self, request: web.Request) -> web.StreamResponse:
        missing = self._lookup(request)
        if missing is not None:
            return missing
        if request.match_info["model"] == "adder":
            inputs = [
                {"name": "a", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "b", "datatype": "FP32", "shape": [-1, -1]},
            ]
            outputs = [
                {"name": "sum", "datatype": "FP32", "shape": [-1, -1]},
                {"name": "product", "datatype": "FP32", "shape": [-1, -1]},
            ]
        else:
            inputs = [{"name": "ids", "datatype": "INT64", "shape": [-1]}]
            outputs = [{"name": "label", "datatype": "INT64", "shape": [-1]}]
        return web.json_response(
            {
                "name": request.match_info["model"],
                "versions": ["1"],
                "platform": "OpenVINO",
                "inputs": inputs,
                "outputs": outputs,
            }
        )

    async def ready(self, request: web.Request) -> web.StreamResponse:
        missing = self._lookup(request)
        return missing if missing is not None else web.Response(status=200)

    async def infer(self, request: web.Request) -> web.StreamResponse:
        missing = self._lookup(request)
        if missing is not None:
            return missing
        try:
            body = json.loads(await request.read())
        except ValueError:
            return self.error_response(400, "Invalid JSON in request body")
        tensors = {t.get("name"): t for t in body.get("inputs") or []}
        for tensor in tensors.values():
            if math.prod(tensor["shape"]) != len(tensor["data"]):
                return self.error_response(
                    400, f"Invalid number of elements in tensor {tensor['name']}"
                )
        model = request.match_info["model"]
        if model == "adder":
            if set(tensors) != {"a", "b"}:
                return self.error_response(
                    400, "Invalid number of inputs - Expected: 2; Actual: " + str(len(tensors))
                )
            a, b = tensors["a"], tensors["b"]
            if a["datatype"] != "FP32" or b["datatype"] != "FP32":
                return self.error_response(400, "Invalid datatype - Expected: FP32")
            if a["shape"] != b["shape"]:
                return self.error_response(400, "Invalid input shape")
            outputs = [
                {
                    "name": "sum",
                    "shape": a["shape"],
                    "datatype": "FP32",
                    "data": [x + y for x, y in zip(a["data"], b["data"], strict=True)],
                },
                {
                    "name": "product",
                    "shape": a["shape"],
                    "datatype": "FP32",
                    "data": [x * y for x, y in zip(a["data"], b["data"], strict=True)],
                },
            ]
        else:
            ids = tensors.get("ids")
            if ids is None or ids["datatype"] != "INT64":
                return self.error_response(400, "Invalid input: expected INT64 ids")
            outputs = [
                {
                    "name": "label",
                    "shape": ids["shape"],
                    "datatype": "INT64",
                    "data": [x % 3 for x in ids["data"]],
                }
            ]
        wanted = [o["name"] for o in body.get("outputs") or []]
        if wanted:
            outputs = [o for o in outputs if o["name"] in wanted]
        if self.bad_shape:
            outputs[0]["shape"] = [o + 1 for o in outputs[0]["shape"]]
        response: dict[str, Any] = {"model_name": model, "model_version": "1", "outputs": outputs}
        if "id" in body:
            response["id"] = body["id"]
        return web.json_response(response)
