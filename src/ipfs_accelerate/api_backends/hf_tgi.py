"""Hugging Face Text Generation Inference (TGI).

Native routes: ``POST /generate`` (``{"inputs", "parameters"}`` -> ``{"generated_text",
"details"}``), ``POST /generate_stream`` (SSE, one token per event; the last event carries
``generated_text`` and ``details``; there is no ``[DONE]``: a stream that ends before the
event with ``generated_text`` raises StreamInterruptedError), ``GET /info``, ``GET /health``.
Errors are ``{"error", "error_type"}`` (422 validation, 424 generation, 429 overloaded), also
as an event inside a stream. Chat goes through TGI's OpenAI-compatible Messages API
(``/v1/chat/completions``), which has tool calling. TGI serves no embeddings (use hf_tei).

Configuration: ``metadata["base_url"]`` / ``hf_tgi_api_url`` (required), optional key
(``api_key`` / ``hf_api_key`` / ``$HF_TOKEN``, for Inference Endpoints) as a Bearer token.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, ClassVar

from ipfs_accelerate.errors import ProtocolError, StreamInterruptedError

from ._errors import _message_from_json, status_error_class
from ._hf_info import HFInfoBackend
from ._openai_compat import OpenAICompatibleBackend
from ._parse import as_int, need, opt
from ._streams import SSEDecoder, excerpt
from ._transport import HTTPRequest, RawResponse
from ._types import TGIDetails, TGIGeneration, TGIStreamToken, TGIToken

__all__ = ["HFTGIBackend"]

# TGI error_type of in-stream error events -> HTTP status it uses for the same error
_ERROR_STATUS = {
    "validation": 422,
    "generation": 424,
    "overloaded": 429,
    "incomplete_generation": 500,
    "tokenizer": 422,
}


def _token(obj: Any, provider: str, what: str) -> TGIToken:
    return TGIToken(
        id=need(obj, "id", int, provider, what),
        text=need(obj, "text", str, provider, what),
        logprob=opt(obj, "logprob", (int, float), provider, what),
        special=bool(opt(obj, "special", bool, provider, what, False)),
    )


def _details(obj: Any, provider: str, what: str) -> TGIDetails | None:
    if obj is None:
        return None
    if not isinstance(obj, Mapping):
        raise ProtocolError(
            f"{what}: details is not an object: {excerpt(str(obj))!r}", provider=provider
        )
    return TGIDetails(
        finish_reason=opt(obj, "finish_reason", str, provider, what),
        generated_tokens=as_int(obj.get("generated_tokens")),
        seed=as_int(obj.get("seed")),
        input_length=as_int(obj.get("input_length")),
        prefill=[_token(t, provider, what) for t in opt(obj, "prefill", list, provider, what, [])],
        tokens=[_token(t, provider, what) for t in opt(obj, "tokens", list, provider, what, [])],
        raw=obj,
    )


class HFTGIBackend(HFInfoBackend, OpenAICompatibleBackend):
    provider: ClassVar[str] = "hf_tgi"
    summary: ClassVar[str] = "Hugging Face Text Generation Inference"
    routes: ClassVar[str] = (
        "`/generate`, `/generate_stream` (SSE, no `[DONE]`), `/info`, `/health`; chat on "
        "`/v1/chat/completions`"
    )
    base_url_keys: ClassVar[tuple[str, ...]] = ("hf_tgi_api_url",)
    api_key_keys: ClassVar[tuple[str, ...]] = ("hf_api_key",)
    api_key_env: ClassVar[tuple[str, ...]] = ("HF_TOKEN",)
    strip_url_suffixes: ClassVar[tuple[str, ...]] = ("/v1",)
    api_prefix: ClassVar[str] = "/v1"
    supports_embeddings: ClassVar[bool] = False
    default_model: ClassVar[str | None] = (
        "tgi"  # TGI serves one model; its Messages API accepts "tgi"
    )
    model_patterns: ClassVar[tuple[str, ...]] = (r"tgi", r"[\w.-]+/[\w.-]+")

    def _health_request(self) -> HTTPRequest:
        return HTTPRequest("GET", "/health", expect="text")

    def _generate_body(self, inputs: str, options: dict[str, Any], stream: bool) -> dict[str, Any]:
        if not isinstance(inputs, str):
            from ipfs_accelerate.errors import InvalidArgumentError

            raise InvalidArgumentError(
                f"{self.provider}: inputs must be a string, got {type(inputs).__name__}"
            )
        parameters = dict(options.pop("parameters", None) or {})
        if "max_tokens" in options:
            parameters["max_new_tokens"] = options.pop("max_tokens")
        if "stop" in options:
            stop = options.pop("stop")
            parameters["stop"] = [stop] if isinstance(stop, str) else list(stop)
        parameters.update(options)
        parameters.setdefault("details", True)
        return {"inputs": inputs, "parameters": parameters}

    async def generate(self, inputs: str, **options: Any) -> TGIGeneration:
        """``POST /generate``. Options are TGI parameters (``max_new_tokens``, ``temperature``,
        ``top_p``, ``seed``, ``stop``, ``decoder_input_details``...); ``details`` defaults to
        True."""
        opts = self._options(options)
        request = HTTPRequest("POST", "/generate", json=self._generate_body(inputs, options, False))

        def parse(raw: RawResponse) -> TGIGeneration:
            what, provider = "generate", self.provider
            data = self._json(raw, what)
            if isinstance(data, list):  # some deployments answer a one-element list
                data = need(data, 0, dict, provider, what)
            return TGIGeneration(
                generated_text=need(data, "generated_text", str, provider, what),
                details=_details(data.get("details"), provider, what),
                raw=data,
            )

        return await self._request(request, opts, parse, what="generate")

    def generate_stream(self, inputs: str, **options: Any) -> AsyncIterator[TGIStreamToken]:
        """``POST /generate_stream``: one item per token; the last has ``generated_text`` and
        ``details``."""
        opts = self._options(options)
        request = HTTPRequest(
            "POST",
            "/generate_stream",
            json=self._generate_body(inputs, options, True),
            expect="sse",
        )
        limit = self.config.max_response_bytes
        return self._stream(
            request, opts, lambda: _TGIStream(self.provider, limit), what="generate_stream"
        )


class _TGIStream:
    __slots__ = ("_sse", "complete", "provider")

    def __init__(self, provider: str, limit: int) -> None:
        self.provider = provider
        self._sse = SSEDecoder(provider, limit)
        self.complete = False

    def feed(self, data: bytes) -> list[TGIStreamToken]:
        out = []
        provider, what = self.provider, "generate_stream event"
        for event in self._sse.feed(data):
            obj = event.json(provider)
            if not isinstance(obj, Mapping):
                raise ProtocolError(
                    f"{what} is not an object: {excerpt(event.data)!r}", provider=provider
                )
            if obj.get("error") is not None:
                status = _ERROR_STATUS.get(str(obj.get("error_type")), 500)
                message = _message_from_json(obj) or excerpt(event.data)
                raise status_error_class(status)(
                    f"error event in stream: {message}", provider=provider, status=status, body=obj
                )
            if self.complete:
                continue
            generated = opt(obj, "generated_text", str, provider, what)
            item = TGIStreamToken(
                index=as_int(obj.get("index")),
                token=_token(need(obj, "token", dict, provider, what), provider, what),
                generated_text=generated,
                details=_details(obj.get("details"), provider, what),
                raw=obj,
            )
            if generated is not None:
                self.complete = True
            out.append(item)
        return out

    def finish(self) -> list[TGIStreamToken]:
        self._sse.finish()
        if not self.complete:
            raise StreamInterruptedError(
                "generate_stream ended before the event carrying generated_text",
                provider=self.provider,
            )
        return []
