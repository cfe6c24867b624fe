"""Claude (Anthropic Messages) and Gemini (generateContent): translation, streams, errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.api_backends._base import APIBackend
from ipfs_accelerate.errors import (
    AuthenticationError,
    BadRequestError,
    NotFoundError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    UnsupportedOpError,
)

from ..fakes.anthropic_fake import AnthropicFake
from ..fakes.gemini_fake import GeminiFake
from .conftest import fast, run

pytestmark = pytest.mark.timeout(60)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup",
            "description": "find",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    }
]
CLAUDE = "claude-haiku-4-5"
GEMINI = "gemini-2.0-flash"


def claude(test: Callable[[AnthropicFake, APIBackend], Any], **metadata: Any) -> Any:
    async def body() -> Any:
        async with AnthropicFake() as fake:
            b = create_api_backend(
                "claude",
                metadata={
                    "anthropic_api_key": "sk-ant-test-123",
                    "base_url": fake.url,
                    "resilience": fast(),
                    **metadata,
                },
            )
            try:
                return await test(fake, b)
            finally:
                await b.aclose()

    return run(body())


def gemini(test: Callable[[GeminiFake, APIBackend], Any]) -> Any:
    async def body() -> Any:
        async with GeminiFake() as fake:
            b = create_api_backend(
                "gemini",
                metadata={
                    "gemini_api_key": "AIza-test-123",
                    "base_url": fake.url + "/v1beta",
                    "resilience": fast(),
                },
            )
            try:
                return await test(fake, b)
            finally:
                await b.aclose()

    return run(body())


# ---------------------------------------------------------------- Claude


def test_claude_chat_wire_format() -> None:
    async def test(fake: AnthropicFake, b: APIBackend) -> None:
        reply = await b.chat(
            CLAUDE,
            [
                {"role": "system", "content": "be terse"},
                {"role": "user", "content": "hello claude"},
            ],
            stop="END",
            temperature=0,
        )
        assert reply.text == "Echo: hello claude" and reply.finish_reason == "stop"
        assert reply.usage.output_tokens == 3 and reply.usage.input_tokens and reply.request_id
        sent = fake.last("/v1/messages")
        assert (
            sent.headers["x-api-key"] == "sk-ant-test-123"
            and sent.headers["anthropic-version"] == "2023-06-01"
        )
        assert "Authorization" not in sent.headers
        body = sent.json
        assert (
            body["system"] == "be terse"
            and body["max_tokens"] == 1024
            and body["stop_sequences"] == ["END"]
        )
        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "hello claude"}]}
        ]

    claude(test)


def test_claude_stream_events_and_usage() -> None:
    async def test(fake: AnthropicFake, b: APIBackend) -> None:
        chunks = [c async for c in b.stream_chat(CLAUDE, "one two three", max_tokens=50)]
        assert fake.last("/v1/messages").json["stream"] is True
        assert "".join(c.text for c in chunks) == "Echo: one two three"
        final = chunks[-1]
        assert final.done and final.finish_reason == "stop" and final.usage is not None
        plain = await b.chat(CLAUDE, "one two three", max_tokens=50)
        assert final.usage == plain.usage and final.usage.output_tokens == 4

    claude(test)


def test_claude_max_tokens_maps_to_length() -> None:
    async def test(fake: AnthropicFake, b: APIBackend) -> None:
        reply = await b.chat(CLAUDE, "a b c d e", max_tokens=2)
        assert reply.finish_reason == "length" and reply.text == "Echo: a"

    claude(test)


def test_claude_tools_and_tool_results() -> None:
    async def test(fake: AnthropicFake, b: APIBackend) -> None:
        reply = await b.chat(CLAUDE, "find cats", tools=TOOLS, tool_choice="required")
        sent = fake.last("/v1/messages").json
        assert sent["tools"] == [
            {
                "name": "lookup",
                "input_schema": TOOLS[0]["function"]["parameters"],
                "description": "find",
            }
        ]
        assert sent["tool_choice"] == {"type": "any"}
        (call,) = reply.tool_calls
        assert (
            call.name == "lookup"
            and call.arguments == {"query": "find cats"}
            and reply.finish_reason == "tool_calls"
        )
        chunks = [c async for c in b.stream_chat(CLAUDE, "find cats", tools=TOOLS)]
        assert chunks[-1].tool_calls[0].arguments == {"query": "find cats"} and chunks[
            -1
        ].tool_calls[0].id.startswith("toolu_")
        assert (
            len([d for c in chunks for d in c.tool_call_deltas if d.arguments_delta]) >= 2
        )  # input_json_delta pieces
        follow = [
            {"role": "user", "content": "find cats"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "lookup", "arguments": json.dumps(call.arguments)},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "3 cats"},
        ]
        assert (await b.chat(CLAUDE, follow)).text == "Tool said: 3 cats"
        turns = fake.last("/v1/messages").json["messages"]
        assert turns[1]["content"][0] == {
            "type": "tool_use",
            "id": call.id,
            "name": "lookup",
            "input": {"query": "find cats"},
        }
        assert turns[2] == {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": call.id, "content": "3 cats"}],
        }

    claude(test)


def test_claude_merges_consecutive_turns_of_one_role() -> None:
    async def test(fake: AnthropicFake, b: APIBackend) -> None:
        await b.chat(
            CLAUDE, [{"role": "user", "content": "first"}, {"role": "user", "content": "second"}]
        )
        (turn,) = fake.last("/v1/messages").json["messages"]
        assert [block["text"] for block in turn["content"]] == ["first", "second"]

    claude(test)


def test_claude_error_event_after_200() -> None:
    async def test(fake: AnthropicFake, b: APIBackend) -> None:
        fake.inject(error_event_after=4)  # after some text deltas: the stream is cut
        with pytest.raises(StreamInterruptedError) as info:
            _ = [c async for c in b.stream_chat(CLAUDE, "a b c d e f")]
        assert isinstance(info.value.__cause__, ServerError) and info.value.__cause__.status == 529
        fake.inject(error_event_after=1)  # before any text: overloaded (529) is retried
        chunks = [c async for c in b.stream_chat(CLAUDE, "x")]
        assert chunks[-1].done
        fake.inject(error_event_after=1, times=5)
        with pytest.raises(ServerError, match="overloaded_error: Overloaded") as info2:
            _ = [c async for c in b.stream_chat(CLAUDE, "x", max_retries=1)]
        assert info2.value.status == 529

    claude(test)


def test_claude_stream_without_message_stop_is_interrupted() -> None:
    async def test(fake: AnthropicFake, b: APIBackend) -> None:
        fake.inject(truncate_after=99)
        with pytest.raises(StreamInterruptedError, match="message_stop"):
            _ = [c async for c in b.stream_chat(CLAUDE, "a b")]

    claude(test)


def test_claude_error_bodies_and_models() -> None:
    async def test(fake: AnthropicFake, b: APIBackend) -> None:
        with pytest.raises(NotFoundError, match="not_found_error: model: claude-x"):
            await b.chat("claude-x", "hi")
        fake.inject(status=529, times=2)
        with pytest.raises(ServerError, match="overloaded_error") as info:
            await b.chat(CLAUDE, "hi", max_retries=1)
        assert info.value.status == 529 and info.value.request_id
        assert (
            fake.requests[-1].path == "/v1/messages"
            and len([r for r in fake.requests if r.path == "/v1/messages"]) == 3
        )
        models = await b.list_models()
        assert [m.id for m in models] == fake.known_models
        with pytest.raises(UnsupportedOpError):
            await b.embed(None, "x")

    claude(test)


def test_claude_models_paginate() -> None:
    async def body() -> None:
        async with AnthropicFake(models=tuple(f"claude-m{i}" for i in range(2500))) as fake:
            b = create_api_backend(
                "claude", metadata={"api_key": "sk-ant-test-123", "base_url": fake.url}
            )
            try:
                models = await b.list_models()
                assert (
                    len(models) == 2500
                    and len([r for r in fake.requests if r.path == "/v1/models"]) == 3
                )
            finally:
                await b.aclose()

    run(body())


def test_claude_wrong_key() -> None:
    async def test(fake: AnthropicFake, b: APIBackend) -> None:
        with pytest.raises(AuthenticationError, match="authentication_error: invalid x-api-key"):
            await b.chat(CLAUDE, "hi")

    claude(test, anthropic_api_key="wrong", api_key="wrong")


# ---------------------------------------------------------------- Gemini


def test_gemini_chat_wire_format_and_key_header() -> None:
    async def test(fake: GeminiFake, b: APIBackend) -> None:
        reply = await b.chat(
            GEMINI,
            [
                {"role": "system", "content": "short"},
                {"role": "user", "content": "hi gemini"},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "again please"},
            ],
            temperature=0.2,
            max_tokens=64,
            stop=["X"],
        )
        assert reply.text == "Echo: again please" and reply.finish_reason == "stop"
        assert (
            reply.usage.input_tokens == 5
            and reply.usage.output_tokens == 3
            and reply.model == GEMINI
        )
        sent = fake.last(":generateContent")
        assert sent.headers["x-goog-api-key"] == "AIza-test-123" and "key" not in sent.query
        assert fake.keys_in_url == []
        assert sent.path == f"/v1beta/models/{GEMINI}:generateContent"
        body = sent.json
        assert body["systemInstruction"] == {"parts": [{"text": "short"}]}
        assert [c["role"] for c in body["contents"]] == ["user", "model", "user"]
        assert body["generationConfig"] == {
            "temperature": 0.2,
            "maxOutputTokens": 64,
            "stopSequences": ["X"],
        }

    gemini(test)


def test_gemini_stream_sse_without_terminator() -> None:
    async def test(fake: GeminiFake, b: APIBackend) -> None:
        chunks = [c async for c in b.stream_chat(f"models/{GEMINI}", "one two")]
        assert "".join(c.text for c in chunks) == "Echo: one two"
        assert (
            chunks[-1].done and chunks[-1].finish_reason == "stop" and chunks[-1].usage is not None
        )
        sent = fake.last(":streamGenerateContent")
        assert sent.query == {"alt": "sse"} and "key" not in sent.query
        fake.inject(truncate_after=2)  # the chunk with finishReason never arrives
        with pytest.raises(StreamInterruptedError, match="finishReason"):
            _ = [c async for c in b.stream_chat(GEMINI, "one two three")]

    gemini(test)


def test_gemini_tools_and_function_responses() -> None:
    async def test(fake: GeminiFake, b: APIBackend) -> None:
        reply = await b.chat(
            GEMINI,
            "weather?",
            tools=TOOLS,
            tool_choice={"type": "function", "function": {"name": "lookup"}},
        )
        sent = fake.last(":generateContent").json
        assert sent["tools"] == [
            {
                "functionDeclarations": [
                    {
                        "name": "lookup",
                        "description": "find",
                        "parameters": TOOLS[0]["function"]["parameters"],
                    }
                ]
            }
        ]
        assert sent["toolConfig"] == {
            "functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["lookup"]}
        }
        (call,) = reply.tool_calls
        assert (
            call.name == "lookup"
            and call.arguments == {"query": "weather?"}
            and reply.finish_reason == "tool_calls"
        )
        chunks = [c async for c in b.stream_chat(GEMINI, "weather?", tools=TOOLS)]
        assert (
            chunks[-1].tool_calls[0].name == "lookup" and chunks[-1].finish_reason == "tool_calls"
        )
        follow = [
            {"role": "user", "content": "weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"query": "weather?"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": '{"forecast": "rain"}'},
        ]
        assert (await b.chat(GEMINI, follow)).text == 'Tool said: {"forecast": "rain"}'
        contents = fake.last(":generateContent").json["contents"]
        assert contents[1] == {
            "role": "model",
            "parts": [{"functionCall": {"name": "lookup", "args": {"query": "weather?"}}}],
        }
        assert contents[2] == {
            "role": "user",
            "parts": [{"functionResponse": {"name": "lookup", "response": {"forecast": "rain"}}}],
        }

    gemini(test)


def test_gemini_embeddings_and_models() -> None:
    async def test(fake: GeminiFake, b: APIBackend) -> None:
        result = await b.embed("text-embedding-004", ["a", "b"], task_type="RETRIEVAL_DOCUMENT")
        assert len(result.embeddings) == 2 and result.dimensions == 8
        requests = fake.last(":batchEmbedContents").json["requests"]
        assert requests[0] == {
            "model": "models/text-embedding-004",
            "content": {"parts": [{"text": "a"}]},
            "taskType": "RETRIEVAL_DOCUMENT",
        }
        assert [m.id for m in await b.list_models()] == fake.known_models

    gemini(test)


def test_gemini_errors_and_retry_info() -> None:
    async def test(fake: GeminiFake, b: APIBackend) -> None:
        with pytest.raises(NotFoundError, match="NOT_FOUND: models/gemini-9 is not found"):
            await b.chat("gemini-9", "hi")
        retry_info = {
            "error": {
                "code": 429,
                "message": "Resource has been exhausted",
                "status": "RESOURCE_EXHAUSTED",
                "details": [
                    {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0.15s"}
                ],
            }
        }
        fake.inject(status=429, body=retry_info)
        import time

        start = time.monotonic()
        assert (await b.chat(GEMINI, "hi")).text == "Echo: hi"
        assert time.monotonic() - start >= 0.15
        fake.inject(
            status=429,
            body={
                **retry_info,
                "error": {
                    **retry_info["error"],
                    "details": [
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "120s"}
                    ],
                },
            },
        )
        with pytest.raises(RateLimitError) as info:
            await b.chat(GEMINI, "hi")
        assert info.value.retry_after == 120.0
        fake.inject(error_event_after=1)
        with pytest.raises(StreamInterruptedError) as info2:
            _ = [c async for c in b.stream_chat(GEMINI, "a b c")]
        assert isinstance(info2.value.__cause__, ServerError)

    gemini(test)


def test_gemini_bad_key_and_roles() -> None:
    async def body() -> None:
        async with GeminiFake() as fake:
            b = create_api_backend(
                "gemini", metadata={"api_key": "wrong", "base_url": fake.url + "/v1beta"}
            )
            try:
                with pytest.raises(BadRequestError, match="API key not valid"):
                    await b.chat(GEMINI, "hi")
                with pytest.raises(Exception, match="tool message needs"):
                    await b.chat(
                        GEMINI,
                        [{"role": "user", "content": "x"}, {"role": "tool", "content": "orphan"}],
                    )
            finally:
                await b.aclose()

    run(body())
