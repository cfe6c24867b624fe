"""The official ``openai`` and ``anthropic`` SDKs run against the same fakes and must see
what our backends see: this guards the fakes' fidelity to the real wire protocols."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.errors import APIStatusError, StreamInterruptedError

from ..fakes.anthropic_fake import AnthropicFake
from ..fakes.groq_fake import GroqFake
from ..fakes.ollama_fake import OllamaFake
from ..fakes.openai_fake import OpenAIFake
from ..fakes.vllm_fake import BASE_MODEL, VLLMFake
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

OPENAI_SERVERS = [
    ("openai", lambda: OpenAIFake(), "/v1", "sk-test-123", "gpt-4o-mini", "text-embedding-3-small"),
    ("groq", lambda: GroqFake(), "/openai/v1", "gsk_test_123", "llama-3.1-8b-instant", None),
    ("vllm", lambda: VLLMFake(), "/v1", "unused", BASE_MODEL, "BAAI/bge-small-en-v1.5"),
    ("ollama_clean", lambda: OllamaFake(), "/v1", "ollama", "llama3.2", "nomic-embed-text"),
]


def _ours(name: str, url: str, prefix: str, key: str) -> Any:
    if name in ("vllm", "ollama_clean"):
        return create_api_backend(
            name, metadata={"base_url": url, "resilience": fast(max_retries=0)}
        )
    return create_api_backend(
        name, metadata={"api_key": key, "base_url": url + prefix, "resilience": fast(max_retries=0)}
    )


@pytest.mark.parametrize("server", OPENAI_SERVERS, ids=lambda s: s[0])
def test_openai_sdk_sees_what_we_see(server: tuple[Any, ...]) -> None:
    name, make, prefix, key, model, embed_model = server

    async def body() -> None:
        async with make() as fake:
            sdk = openai.AsyncOpenAI(api_key=key, base_url=fake.url + prefix, max_retries=0)
            ours = _ours(name, fake.url, prefix, key)
            try:
                messages = [{"role": "user", "content": "same answer please"}]
                theirs = await sdk.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
                mine = await ours.chat(model, messages)
                assert theirs.choices[0].message.content == mine.text
                assert theirs.choices[0].finish_reason == mine.finish_reason
                assert theirs.usage is not None
                assert (theirs.usage.prompt_tokens, theirs.usage.completion_tokens) == (
                    mine.usage.input_tokens,
                    mine.usage.output_tokens,
                )
                # each reply carries the fake's own request id; both clients surface it
                assert theirs._request_id is not None and theirs._request_id.startswith("req_")
                assert mine.request_id is not None and mine.request_id.startswith("req_")
                assert theirs._request_id != mine.request_id

                stream = await sdk.chat.completions.create(
                    model=model,
                    messages=messages,
                    stream=True,
                    stream_options={"include_usage": True},
                )  # type: ignore[arg-type]
                sdk_chunks = [c async for c in stream]
                sdk_text = "".join(
                    c.choices[0].delta.content or "" for c in sdk_chunks if c.choices
                )
                usage = (
                    next(c.usage for c in reversed(sdk_chunks) if c.usage)
                    if name != "groq"
                    else None
                )
                my_chunks = [c async for c in ours.stream_chat(model, messages)]
                assert sdk_text == "".join(c.text for c in my_chunks)
                if usage is not None:
                    assert my_chunks[-1].usage is not None
                    assert (usage.prompt_tokens, usage.completion_tokens) == (
                        my_chunks[-1].usage.input_tokens,
                        my_chunks[-1].usage.output_tokens,
                    )

                theirs = await sdk.chat.completions.create(
                    model=model, messages=messages, tools=TOOLS
                )  # type: ignore[arg-type]
                mine = await ours.chat(model, messages, tools=TOOLS)
                call = theirs.choices[0].message.tool_calls[0]  # type: ignore[index]
                assert call.function.name == mine.tool_calls[0].name  # type: ignore[union-attr]
                assert json.loads(call.function.arguments) == mine.tool_calls[0].arguments  # type: ignore[union-attr]

                stream = await sdk.chat.completions.create(
                    model=model, messages=messages, tools=TOOLS, stream=True
                )  # type: ignore[arg-type]
                pieces = [
                    d.function.arguments
                    for c in [x async for x in stream]
                    if c.choices
                    for d in (c.choices[0].delta.tool_calls or [])
                    if d.function and d.function.arguments
                ]
                my_final = [c async for c in ours.stream_chat(model, messages, tools=TOOLS)][-1]
                assert json.loads("".join(pieces)) == my_final.tool_calls[0].arguments

                if embed_model:
                    theirs_e = await sdk.embeddings.create(model=embed_model, input=["x", "y z"])
                    mine_e = await ours.embed(embed_model, ["x", "y z"])
                    assert [d.embedding for d in theirs_e.data] == mine_e.embeddings

                assert [m.id async for m in sdk.models.list()] == [
                    m.id for m in await ours.list_models()
                ]

                for status, sdk_cls in (
                    (400, openai.BadRequestError),
                    (401, openai.AuthenticationError),
                    (404, openai.NotFoundError),
                    (409, openai.ConflictError),
                    (422, openai.UnprocessableEntityError),
                    (429, openai.RateLimitError),
                    (500, openai.InternalServerError),
                ):
                    fake.inject(status=status, message=f"failure {status}")
                    with pytest.raises(sdk_cls) as sdk_error:
                        await sdk.chat.completions.create(model=model, messages=messages)  # type: ignore[arg-type]
                    fake.inject(status=status, message=f"failure {status}")
                    with pytest.raises(APIStatusError) as my_error:
                        await ours.chat(model, messages)
                    assert sdk_error.value.status_code == my_error.value.status == status
                    assert f"failure {status}" in str(
                        sdk_error.value
                    ) and f"failure {status}" in str(my_error.value)
                    expected = {422: "BadRequestError", 500: "ServerError"}.get(
                        status, sdk_cls.__name__
                    )
                    assert type(my_error.value).__name__ == expected

                fake.inject(error_event_after=3)
                with pytest.raises(openai.APIError):
                    _ = [
                        c
                        async for c in await sdk.chat.completions.create(
                            model=model,
                            messages=[{"role": "user", "content": "a b c d"}],
                            stream=True,
                        )
                    ]  # type: ignore[arg-type]
                fake.inject(error_event_after=3)
                with pytest.raises(StreamInterruptedError):
                    _ = [
                        c
                        async for c in ours.stream_chat(
                            model, [{"role": "user", "content": "a b c d"}]
                        )
                    ]
            finally:
                await sdk.close()
                await ours.aclose()

    run(body())


def test_anthropic_sdk_sees_what_we_see() -> None:
    async def body() -> None:
        async with AnthropicFake() as fake:
            sdk = anthropic.AsyncAnthropic(
                api_key="sk-ant-test-123", base_url=fake.url, max_retries=0
            )
            ours = create_api_backend(
                "claude",
                metadata={
                    "api_key": "sk-ant-test-123",
                    "base_url": fake.url,
                    "resilience": fast(max_retries=0),
                },
            )
            model = "claude-haiku-4-5"
            try:
                messages = [{"role": "user", "content": "tell me the same"}]
                theirs = await sdk.messages.create(
                    model=model, max_tokens=100, messages=messages, system="terse"
                )  # type: ignore[arg-type]
                mine = await ours.chat(
                    model, [{"role": "system", "content": "terse"}, *messages], max_tokens=100
                )
                assert theirs.content[0].text == mine.text  # type: ignore[union-attr]
                assert (theirs.usage.input_tokens, theirs.usage.output_tokens) == (
                    mine.usage.input_tokens,
                    mine.usage.output_tokens,
                )
                assert theirs.stop_reason == "end_turn" and mine.finish_reason == "stop"
                assert theirs._request_id is not None

                sdk_text = ""
                async with sdk.messages.stream(
                    model=model, max_tokens=100, messages=messages
                ) as stream:  # type: ignore[arg-type]
                    async for text in stream.text_stream:
                        sdk_text += text
                    final = await stream.get_final_message()
                my_chunks = [c async for c in ours.stream_chat(model, messages, max_tokens=100)]
                assert sdk_text == "".join(c.text for c in my_chunks)
                assert (
                    my_chunks[-1].usage is not None
                    and final.usage.output_tokens == my_chunks[-1].usage.output_tokens
                )

                tools = [
                    {
                        "name": "lookup",
                        "description": "find",
                        "input_schema": TOOLS[0]["function"]["parameters"],
                    }
                ]
                async with sdk.messages.stream(
                    model=model, max_tokens=100, messages=messages, tools=tools
                ) as stream:  # type: ignore[arg-type]
                    tool_final = await stream.get_final_message()
                tool_use = next(b for b in tool_final.content if b.type == "tool_use")
                my_final = [c async for c in ours.stream_chat(model, messages, tools=TOOLS)][-1]
                assert (
                    tool_use.input == my_final.tool_calls[0].arguments
                    and tool_use.name == my_final.tool_calls[0].name
                )  # type: ignore[union-attr]

                assert [m.id async for m in sdk.models.list()] == [
                    m.id for m in await ours.list_models()
                ]

                for status, sdk_cls in (
                    (400, anthropic.BadRequestError),
                    (401, anthropic.AuthenticationError),
                    (404, anthropic.NotFoundError),
                    (429, anthropic.RateLimitError),
                    (529, anthropic.APIStatusError),
                ):
                    fake.inject(status=status, message=f"failure {status}")
                    with pytest.raises(sdk_cls) as sdk_error:
                        await sdk.messages.create(model=model, max_tokens=10, messages=messages)  # type: ignore[arg-type]
                    fake.inject(status=status, message=f"failure {status}")
                    with pytest.raises(APIStatusError) as my_error:
                        await ours.chat(model, messages)
                    assert sdk_error.value.status_code == my_error.value.status == status
                    assert f"failure {status}" in str(
                        sdk_error.value
                    ) and f"failure {status}" in str(my_error.value)

                fake.inject(error_event_after=5)  # after two text deltas
                with pytest.raises(anthropic.APIStatusError, match="Overloaded"):
                    async with sdk.messages.stream(
                        model=model, max_tokens=100, messages=[{"role": "user", "content": "a b c"}]
                    ) as stream:
                        _ = [t async for t in stream.text_stream]
                fake.inject(error_event_after=5)
                with pytest.raises(StreamInterruptedError, match="Overloaded"):
                    _ = [
                        c
                        async for c in ours.stream_chat(
                            model, [{"role": "user", "content": "a b c"}]
                        )
                    ]
            finally:
                await sdk.close()
                await ours.aclose()

    run(body())
