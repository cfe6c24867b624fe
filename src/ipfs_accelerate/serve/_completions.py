"""OpenAI's text-generation routes: ``/v1/chat/completions`` and ``/v1/completions``,
answered whole or streamed as server-sent events (``data: [DONE]`` last).

A stream's first step (the prefill and first token) runs before the response starts, so that
every refusal, the engine's included, is an HTTP error rather than an event mid-stream; each
later step's deltas are sent as soon as it has run. A client that goes away closes the
request's generation (see :func:`~._generation.events`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ._generation import GenerationRequest, encode_prompts, events, parse_request
from ._requests import read_json
from ._state import ServerState, state_of

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from ipfs_accelerate.models.generation import GenerationEvent, TokenLogprob

__all__ = ["routes"]

#: OpenAI's floor for a log-probability (JSON has no -Infinity)
_LOGPROB_FLOOR = -9999.0


def _dumps(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)


@dataclass
class _Choice:
    """What one sequence has produced so far."""

    text: list[str] = field(default_factory=list)
    tokens: int = 0
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    #: characters before each token's text (completions' ``text_offset``)
    offset: int = 0


class _Answer:
    """The identity of one response (id, created, model) and its running usage."""

    def __init__(self, request: GenerationRequest, prompts: list[list[int]]) -> None:
        self.request = request
        prefix, self.kind = ("chatcmpl", "chat.completion") if request.chat else (
            "cmpl", "text_completion")  # fmt: skip
        self.id = f"{prefix}-{uuid.uuid4().hex}"
        self.created = int(time.time())
        self.prompt_tokens = sum(len(p) for p in prompts)
        self.choices = [_Choice() for _ in range(len(prompts) * request.n)]

    def record(self, event: GenerationEvent) -> None:
        choice = self.choices[event.index]
        choice.text.append(event.delta)
        choice.tokens += 1
        if event.logprob is not None:
            choice.logprobs.append(event.logprob)
        if event.finish_reason is not None:
            choice.finish_reason = event.finish_reason

    def usage(self) -> dict[str, int]:
        completion = sum(c.tokens for c in self.choices)
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": completion,
            "total_tokens": self.prompt_tokens + completion,
        }

    def envelope(self, chunk: bool) -> dict[str, Any]:
        kind = self.kind + (".chunk" if chunk and self.request.chat else "")
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.request.model.name,
            "system_fingerprint": None,
        }

    # ------------------------------------------------------------------ logprobs

    def logprobs(self, entries: list[TokenLogprob], offset: int) -> dict[str, Any] | None:
        if self.request.logprobs is None:
            return None
        if self.request.chat:
            return {"content": [_chat_logprob(e) for e in entries], "refusal": None}
        offsets = []
        for entry in entries:
            offsets.append(offset)
            offset += len(entry.token)
        return {
            "tokens": [e.token for e in entries],
            "token_logprobs": [_floor(e.logprob) for e in entries],
            "top_logprobs": [{t.token: _floor(t.logprob) for t in e.top} for e in entries],
            "text_offset": offsets,
        }

    # ------------------------------------------------------------------ whole answers

    def body(self) -> dict[str, Any]:
        choices = []
        for index, choice in enumerate(self.choices):
            text = "".join(choice.text)
            entry: dict[str, Any] = {"index": index}
            if self.request.chat:
                entry["message"] = {"role": "assistant", "content": text, "refusal": None}
            else:
                entry["text"] = text
            entry["logprobs"] = self.logprobs(choice.logprobs, 0)
            entry["finish_reason"] = choice.finish_reason or "length"
            choices.append(entry)
        return {**self.envelope(False), "choices": choices, "usage": self.usage()}

    # ------------------------------------------------------------------ stream chunks

    def chunk(self, choices: list[dict[str, Any]], usage: Any = None) -> bytes:
        body = {**self.envelope(True), "choices": choices}
        if self.request.include_usage:
            body["usage"] = usage
        return f"data: {_dumps(body)}\n\n".encode()

    def opening(self) -> list[bytes]:
        """Chat streams open each choice with the assistant's role, as OpenAI does."""
        if not self.request.chat:
            return []
        delta = {"role": "assistant", "content": "", "refusal": None}
        return [
            self.chunk([{"index": i, "delta": delta, "logprobs": None, "finish_reason": None}])
            for i in range(len(self.choices))
        ]

    def step(self, event: GenerationEvent) -> list[bytes]:
        """The chunks of one sequence's step: its text (when there is any, or a token's
        logprobs to report), then its finish reason."""
        choice = self.choices[event.index]
        self.record(event)
        logprobs = None
        if event.logprob is not None:
            logprobs = self.logprobs([event.logprob], choice.offset)
            choice.offset += len(event.logprob.token)
        out = []
        if event.delta or logprobs is not None:
            out.append(self.chunk([self._choice_chunk(event.index, event.delta, logprobs)]))
        if event.finish_reason is not None:
            done = self._choice_chunk(event.index, None, None)
            done["finish_reason"] = event.finish_reason
            out.append(self.chunk([done]))
        return out

    def _choice_chunk(self, index: int, text: str | None, logprobs: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {"index": index}
        if self.request.chat:
            entry["delta"] = {} if text is None else {"content": text}
        else:
            entry["text"] = text or ""
        entry["logprobs"] = logprobs
        entry["finish_reason"] = None
        return entry

    def closing(self) -> list[bytes]:
        out = []
        if self.request.include_usage:
            out.append(self.chunk([], self.usage()))
        out.append(b"data: [DONE]\n\n")
        return out


def _floor(value: float) -> float:
    return max(value, _LOGPROB_FLOOR)


def _chat_logprob(entry: TokenLogprob) -> dict[str, Any]:
    return {
        "token": entry.token,
        "logprob": _floor(entry.logprob),
        "bytes": list(entry.token.encode("utf-8")),
        "top_logprobs": [
            {"token": t.token, "logprob": _floor(t.logprob), "bytes": list(t.token.encode())}
            for t in entry.top
        ],
    }


# ----------------------------------------------------------------------------- handlers


async def chat_completions(request: Request) -> Response:
    return await _generate(request, chat=True)


async def completions(request: Request) -> Response:
    return await _generate(request, chat=False)


async def _generate(request: Request, *, chat: bool) -> Response:
    from starlette.responses import Response

    state = state_of(request)
    parsed: GenerationRequest = await read_json(
        request, lambda value: parse_request(state, value, chat=chat)
    )
    prompts = await state.offload(encode_prompts, parsed)
    answer = _Answer(parsed, prompts)
    steps = events(state, parsed, prompts)
    if not parsed.stream:
        async with contextlib.aclosing(steps):
            async for step in steps:
                for event in step:
                    answer.record(event)
        _count(state, answer)
        return Response(_dumps(answer.body()), media_type="application/json")
    try:
        first = await anext(steps)  # a refusal of the engine is still an HTTP error here
    except BaseException:
        await steps.aclose()
        raise
    return _EventStream(_sse(state, answer, first, steps))


async def _sse(
    state: ServerState,
    answer: _Answer,
    first: list[GenerationEvent],
    steps: AsyncGenerator[list[GenerationEvent], None],
) -> AsyncGenerator[bytes, None]:
    try:
        for chunk in answer.opening():
            yield chunk
        step: list[GenerationEvent] | None = first
        while step is not None:
            for event in step:
                for chunk in answer.step(event):
                    yield chunk
            step = await anext(steps, None)
        _count(state, answer)
        for chunk in answer.closing():
            yield chunk
    finally:
        await steps.aclose()


def _count(state: ServerState, answer: _Answer) -> None:
    name = answer.request.model.name
    state.metrics.inputs.labels(name, "generation").inc(len(answer.request.prompts))
    state.metrics.prompt_tokens.labels(name).inc(answer.prompt_tokens)


@functools.cache
def _event_stream_class() -> type[Any]:
    from starlette.responses import StreamingResponse

    class EventStream(StreamingResponse):
        """Server-sent events whose body iterator is closed however the response ends (a
        client that disconnects cancels the send; the generation must stop with it)."""

        def __init__(self, body: AsyncGenerator[bytes, None]) -> None:
            super().__init__(
                body,
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
            )
            self._body = body

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            try:
                await super().__call__(scope, receive, send)
            finally:
                await self._body.aclose()

    return EventStream


def _EventStream(body: AsyncGenerator[bytes, None]) -> Response:
    response: Response = _event_stream_class()(body)
    return response


def routes() -> list[Route]:
    from starlette.routing import Route

    return [
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/completions", completions, methods=["POST"]),
    ]
