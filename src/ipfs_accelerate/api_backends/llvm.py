"""An MLC-LLM server (models compiled with TVM/LLVM) through its OpenAI-compatible REST API.

``mlc_llm serve`` exposes ``/v1/chat/completions`` (with SSE streaming ending in
``[DONE]`` and ``stream_options.include_usage``), ``/v1/completions`` and ``/v1/models``.
It has no embeddings route: :meth:`embed` raises UnsupportedOpError before any request.

Management is what the server offers, no more: it serves the models it was started with
(``mlc_llm serve MODEL --additional-models ...``), so there is no load or unload call.
:meth:`list_models` lists them (``/v1/models``); :meth:`engine_metrics` reads the engine metrics in
Prometheus text (``GET /metrics``: prefill/decode time and token sums, tokens/s); and with
``mlc_llm serve --enable-debug`` the debug routes: :meth:`engine_stats`
(``/debug/dump_engine_stats``), :meth:`reset_engine` (``/debug/reset_engine``: clears running
requests and statistics) and :meth:`dump_event_trace` (``/debug/dump_event_trace``, Chrome
trace events; needs ``--enable-tracing`` too). Without ``--enable-debug`` those routes do not
exist and the calls raise UnsupportedOpError saying so.

Configuration: ``metadata["base_url"]`` / ``llvm_api_url`` (required; the server root,
a trailing ``/v1`` is accepted), optional ``api_key`` sent as a Bearer token.
"""

from __future__ import annotations

from typing import Any, ClassVar

from ipfs_accelerate.errors import NotFoundError, ProtocolError, UnsupportedOpError

from ._openai_compat import OpenAICompatibleBackend, parse_openai_usage
from ._parse import need, opt
from ._transport import HTTPRequest, RawResponse
from ._types import ChatResponse

__all__ = ["LLVMBackend"]


class LLVMBackend(OpenAICompatibleBackend):
    provider: ClassVar[str] = "llvm"
    summary: ClassVar[str] = "an MLC-LLM server (TVM/LLVM-compiled models)"
    routes: ClassVar[str] = (
        "`/v1/chat/completions` (SSE), `/v1/completions`, `/v1/models`, `/metrics`; with "
        "`--enable-debug`: `/debug/dump_engine_stats`, `/debug/reset_engine`, "
        "`/debug/dump_event_trace`"
    )
    base_url_keys: ClassVar[tuple[str, ...]] = ("llvm_api_url",)
    strip_url_suffixes: ClassVar[tuple[str, ...]] = ("/v1",)
    api_prefix: ClassVar[str] = "/v1"
    supports_embeddings: ClassVar[bool] = False
    model_patterns: ClassVar[tuple[str, ...]] = (
        r".*-MLC",
        r"HF://mlc-ai/.*",
        r"mlc-ai/.*",
        r".*q[0-9]f(16|32)_[0-9].*",
    )

    async def complete(self, model: str | None, prompt: str, **options: Any) -> ChatResponse:
        """``POST /v1/completions`` (plain text completion)."""
        opts = self._options(options)
        body = {"model": model or self.get_default_model(), "prompt": prompt, **options}
        body.pop("stream", None)
        request = HTTPRequest("POST", "/v1/completions", json=body)

        def parse(raw: RawResponse) -> ChatResponse:
            what, provider = "complete", self.provider
            data = self._json(raw, what)
            choice = need(need(data, "choices", list, provider, what), 0, dict, provider, what)
            return ChatResponse(
                text=need(choice, "text", str, provider, what),
                model=opt(data, "model", str, provider, what),
                finish_reason=opt(choice, "finish_reason", str, provider, what),
                usage=parse_openai_usage(data.get("usage")),
                raw=data, provider=provider, request_id=raw.request_id,
            )  # fmt: skip

        return await self._request(request, opts, parse, what="complete")

    async def engine_metrics(self, **options: Any) -> dict[str, float]:
        """``GET /metrics``: the engine's metrics (Prometheus text exposition) as sample name
        (with its labels, as written) -> value. A line that is not a sample raises
        ProtocolError quoting it."""
        opts = self._options(options)
        request = HTTPRequest("GET", "/metrics", expect="text")

        def parse(raw: RawResponse) -> dict[str, float]:
            return parse_prometheus_text(raw.body.decode("utf-8", "replace"), self.provider)

        return await self._request(request, opts, parse, what="engine_metrics")  # type: ignore[no-any-return]

    async def engine_stats(self, model: str | None = None, **options: Any) -> dict[str, Any]:
        """``POST /debug/dump_engine_stats``: the engine's statistics for ``model`` (default:
        the configured one) as JSON (``engine_prefill_time_sum``, ``prompt_tokens_sum``...)."""
        data = await self._debug("dump_engine_stats", model, options)
        if not isinstance(data, dict):
            raise ProtocolError(
                f"engine_stats: expected a JSON object, got {type(data).__name__}",
                provider=self.provider,
            )
        return data

    async def reset_engine(self, model: str | None = None, **options: Any) -> None:
        """``POST /debug/reset_engine``: abort the running requests of ``model`` and clear its
        statistics."""
        await self._debug("reset_engine", model, options)

    async def dump_event_trace(self, model: str | None = None, **options: Any) -> Any:
        """``POST /debug/dump_event_trace``: the events recorded for ``model`` in Chrome Trace
        Event Format (load them in chrome://tracing or Perfetto); the server needs
        ``--enable-tracing``, else it answers 400 (BadRequestError with its message)."""
        return await self._debug("dump_event_trace", model, options)

    async def _debug(self, route: str, model: str | None, options: dict[str, Any]) -> Any:
        opts = self._options(options)
        body = {"model": model or self.get_default_model()}
        request = HTTPRequest("POST", f"/debug/{route}", json=body)

        def parse(raw: RawResponse) -> Any:
            return self._json(raw, route) if raw.body.strip() else None

        try:
            return await self._request(request, opts, parse, what=route)
        except NotFoundError:
            raise UnsupportedOpError(
                f"{self.provider}: the server has no /debug/{route} route; start it with "
                "`mlc_llm serve ... --enable-debug`"
            ) from None


def parse_prometheus_text(text: str, provider: str = "llvm") -> dict[str, float]:
    """Samples of a Prometheus text exposition: ``name{labels} value [timestamp]`` lines
    (comments and blank lines skipped) as ``"name{labels}"`` -> float."""
    samples: dict[str, float] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        # labels may hold spaces: the value follows the closing brace, if any
        brace = line.rfind("}")
        if brace >= 0:
            head, fields = line[: brace + 1], line[brace + 1 :].split()
        else:
            head, *fields = line.split()
        try:
            value = float(fields[0])
        except (IndexError, ValueError):
            raise ProtocolError(
                f"metrics: line {number} is not a Prometheus sample: {line[:120]!r}",
                provider=provider,
            ) from None
        samples[head.strip()] = value
    return samples
