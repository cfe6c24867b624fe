"""Every backend that speaks the OpenAI protocol, against its own server dialect:
openai, openai_mini, groq, vllm, ollama_clean, llvm (MLC-LLM), ovms (/v3), hf_tgi (Messages API)."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.api_backends._base import APIBackend
from ipfs_accelerate.errors import BadRequestError, NotFoundError, ServerError, UnsupportedOpError

from ..fakes.groq_fake import GroqFake
from ..fakes.mlc_fake import MODEL as MLC_MODEL
from ..fakes.mlc_fake import MLCFake
from ..fakes.ollama_fake import OllamaFake
from ..fakes.openai_fake import OpenAIFake
from ..fakes.ovms_fake import EMBEDDER, LLM, OVMSFake
from ..fakes.tgi_fake import TGIFake
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


@dataclass
class Case:
    name: str
    make_fake: Callable[[], OpenAIFake]
    metadata: Callable[[str], dict[str, Any]]
    model: str
    embed_model: str | None
    tools: bool = True


CASES = [
    Case(
        "openai",
        lambda: OpenAIFake(),
        lambda u: {"api_key": "sk-test-123", "base_url": u + "/v1"},
        "gpt-4o-mini",
        "text-embedding-3-small",
    ),
    Case(
        "openai_mini",
        lambda: OpenAIFake(api_key=None, models=("*",)),
        lambda u: {"base_url": u + "/v1"},
        "local-model",
        "local-embedder",
    ),
    Case(
        "groq",
        lambda: GroqFake(),
        lambda u: {"groq_api_key": "gsk_test_123", "base_url": u + "/openai/v1"},
        "llama-3.1-8b-instant",
        None,
    ),
    Case(
        "vllm",
        lambda: VLLMFake(),
        lambda u: {"vllm_api_url": u},
        BASE_MODEL,
        "BAAI/bge-small-en-v1.5",
    ),
    Case(
        "ollama_clean",
        lambda: OllamaFake(),
        lambda u: {"ollama_api_url": u},
        "llama3.2",
        "nomic-embed-text",
    ),
    Case("llvm", lambda: MLCFake(), lambda u: {"llvm_api_url": u + "/v1"}, MLC_MODEL, None),
    Case("ovms", lambda: OVMSFake(), lambda u: {"ovms_api_url": u}, LLM, EMBEDDER),
    Case("hf_tgi", lambda: TGIFake(), lambda u: {"hf_tgi_api_url": u}, "tgi", None),
]


def with_backend(case: Case, test: Callable[[OpenAIFake, APIBackend], Any]) -> Any:
    async def body() -> Any:
        async with case.make_fake() as fake:
            backend = create_api_backend(
                case.name, metadata={**case.metadata(fake.url), "resilience": fast()}
            )
            try:
                return await test(fake, backend)
            finally:
                await backend.aclose()

    return run(body())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_chat_stream_and_usage(case: Case) -> None:
    async def test(fake: OpenAIFake, b: APIBackend) -> None:
        reply = await b.chat(
            case.model,
            [{"role": "system", "content": "be brief"}, {"role": "user", "content": "ping pong"}],
            temperature=0.1,
        )
        assert (
            reply.text == "Echo: ping pong"
            and reply.finish_reason == "stop"
            and reply.role == "assistant"
        )
        assert (
            reply.usage.input_tokens == 4
            and reply.usage.output_tokens == 3
            and reply.usage.total_tokens == 7
        )
        assert reply.provider == case.name and reply.request_id
        sent = fake.last("/chat/completions").json
        assert sent["temperature"] == 0.1 and sent["model"] == case.model and "stream" not in sent
        chunks = [c async for c in b.stream_chat(case.model, "ping pong")]
        assert "".join(c.text for c in chunks) == "Echo: ping pong"
        assert [c.done for c in chunks].count(True) == 1 and chunks[-1].done
        assert (
            chunks[-1].finish_reason == "stop"
            and chunks[-1].usage is not None
            and chunks[-1].usage.output_tokens == 3
        )
        sent = fake.last("/chat/completions").json
        assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}
        assert b.get_stats()["tokens_out"] == 6

    with_backend(case, test)


@pytest.mark.parametrize("case", [c for c in CASES if c.tools], ids=lambda c: c.name)
def test_tool_calls_round_trip(case: Case) -> None:
    async def test(fake: OpenAIFake, b: APIBackend) -> None:
        reply = await b.chat(case.model, "weather in Paris", tools=TOOLS, tool_choice="auto")
        assert reply.finish_reason == "tool_calls" and reply.text == ""
        (call,) = reply.tool_calls
        assert call.name == "lookup" and call.arguments == {"query": "weather in Paris"}
        chunks = [c async for c in b.stream_chat(case.model, "weather in Paris", tools=TOOLS)]
        assert chunks[-1].tool_calls[0].arguments == {"query": "weather in Paris"}
        assert chunks[-1].finish_reason == "tool_calls"
        assert sum(len(c.tool_call_deltas) for c in chunks) >= 2  # arguments arrive in pieces
        follow_up = [
            {"role": "user", "content": "weather in Paris"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": call.id,
                        "type": "function",
                        "function": {
                            "name": "lookup",
                            "arguments": '{"query": "weather in Paris"}',
                        },
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call.id, "content": "sunny"},
        ]
        assert (await b.chat(case.model, follow_up)).text == "Tool said: sunny"

    with_backend(case, test)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_embeddings(case: Case) -> None:
    async def test(fake: OpenAIFake, b: APIBackend) -> None:
        if case.embed_model is None:
            before = len(fake.requests)
            with pytest.raises(UnsupportedOpError, match=case.name):
                await b.embed("any", ["a"])
            assert len(fake.requests) == before
            return
        result = await b.embed(case.embed_model, ["alpha", "beta gamma", "alpha"])
        assert len(result.embeddings) == 3 and result.dimensions == 8
        assert result.embeddings[0] == result.embeddings[2] != result.embeddings[1]
        single = await b.embed(case.embed_model, "alpha")
        assert single.embeddings == [result.embeddings[0]]

    with_backend(case, test)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_models_health_and_unknown_model(case: Case) -> None:
    async def test(fake: OpenAIFake, b: APIBackend) -> None:
        health = await b.health()
        assert health.healthy and health.status == 200
        if case.name != "ovms":
            ids = [m.id for m in await b.list_models()]
            assert ids and (case.model in ids or case.name in ("openai_mini", "hf_tgi"))
        if case.name not in ("openai_mini", "hf_tgi", "opea"):
            with pytest.raises(NotFoundError) as info:
                await b.chat("no-such-model", "hi")
            assert "no-such-model" in str(info.value) and info.value.status == 404

    with_backend(case, test)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_dialect_error_bodies_are_read(case: Case) -> None:
    async def test(fake: OpenAIFake, b: APIBackend) -> None:
        fake.inject(status=400, message="temperature out of range")
        with pytest.raises(BadRequestError, match="temperature out of range"):
            await b.chat(case.model, "hi", max_retries=0)
        fake.inject(status=500, message="engine crashed", times=3)
        with pytest.raises(ServerError, match="engine crashed"):
            await b.chat(case.model, "hi", max_retries=0)

    with_backend(case, test)


def test_n_greater_than_one_is_refused_not_truncated() -> None:
    b = create_api_backend("openai", metadata={"api_key": "k"})
    with pytest.raises(Exception, match="one choice"):
        run(b.chat("gpt-4o-mini", "hi", n=2))


def test_openai_surfaces() -> None:
    async def test(fake: OpenAIFake, b: Any) -> None:
        images = await b.generate_image("a red fox", n=2, size="256x256")
        assert [i.url for i in images.images] == [
            "https://images.example/0.png",
            "https://images.example/1.png",
        ]
        assert images.images[0].revised_prompt == "a red fox (revised)"
        b64 = await b.generate_image("x", response_format="b64_json")
        assert b64.images[0].b64_json == "aW1hZ2U="
        audio = await b.speech("hello world", voice="nova")
        assert audio == b"ID3fake-mp3:hello world"
        transcript = await b.transcribe(b"RIFF....WAVEfmt ", filename="clip.wav", language="en")
        assert (
            transcript.text == "transcribed 16 bytes from clip.wav" and transcript.language == "en"
        )
        plain = await b.transcribe(b"abc", response_format="text")
        assert plain.text == "transcribed 3 bytes from audio.wav"
        moderation = await b.moderate(["I will kill the process", "hello"])
        assert [r.flagged for r in moderation.results] == [True, False]
        assert moderation.results[0].category_scores["violence"] > 0.9
        uploaded = await b.upload_file(b'{"prompt": "x"}\n', "batch", filename="data.jsonl")
        assert (
            uploaded.filename == "data.jsonl"
            and uploaded.bytes == 16
            and uploaded.purpose == "batch"
        )
        assert [f.id for f in await b.list_files()] == [uploaded.id]
        assert [f.id for f in await b.list_files(purpose="fine-tune")] == []
        assert (await b.retrieve_file(uploaded.id)).id == uploaded.id
        assert await b.file_content(uploaded.id) == b'{"prompt": "x"}\n'
        assert await b.delete_file(uploaded.id) is True
        with pytest.raises(NotFoundError):
            await b.retrieve_file(uploaded.id)
        # multipart bodies are rebuilt for each attempt: a retried upload still carries the file
        fake.inject(status=503, path="/files")
        again = await b.upload_file(b"abc", "assistants", filename="a.txt")
        # the file's part once (a random multipart boundary may itself contain "abc")
        assert again.bytes == 3 and fake.last("/files").body.count(b"\r\n\r\nabc\r\n") == 1

    for name in ("openai", "openai_mini"):
        with_backend(
            Case(
                name,
                lambda: OpenAIFake(),
                lambda u: {"api_key": "sk-test-123", "base_url": u + "/v1"},
                "gpt-4o-mini",
                None,
            ),
            test,
        )


def test_openai_file_from_path(tmp_path: Any) -> None:
    path = os.path.join(tmp_path, "speech.mp3")
    with open(path, "wb") as handle:
        handle.write(b"12345")

    async def test(fake: OpenAIFake, b: Any) -> None:
        result = await b.transcribe(path)
        assert result.text == "transcribed 5 bytes from speech.mp3"

    with_backend(CASES[0], test)


def test_openai_organization_and_project_headers() -> None:
    async def test(fake: OpenAIFake, b: APIBackend) -> None:
        await b.chat("gpt-4o-mini", "hi")
        sent = fake.last("/chat/completions").headers
        assert sent["OpenAI-Organization"] == "org-1" and sent["OpenAI-Project"] == "proj-2"

    case = Case(
        "openai",
        lambda: OpenAIFake(),
        lambda u: {
            "api_key": "sk-test-123",
            "base_url": u + "/v1",
            "organization": "org-1",
            "project": "proj-2",
        },
        "gpt-4o-mini",
        None,
    )
    with_backend(case, test)


def test_openai_mini_key_rules() -> None:
    from ipfs_accelerate.errors import ConfigurationError

    with pytest.raises(ConfigurationError):
        create_api_backend("openai_mini")  # the default base URL is api.openai.com: key needed
    local = create_api_backend("openai_mini", metadata={"base_url": "http://127.0.0.1:8000/v1"})
    assert not local.has_api_key and local.is_compatible_model("whatever-model")


def test_vllm_lora_adapters() -> None:
    async def test(fake: VLLMFake, b: Any) -> None:
        message = await b.load_lora_adapter("sql", "/adapters/sql-lora")
        assert message == "Success: LoRA adapter 'sql' added successfully."
        adapters = await b.list_lora_adapters()
        assert [(a.id, a.parent) for a in adapters] == [("sql", BASE_MODEL)]
        assert (await b.chat("sql", "select")).text == "Echo: select"
        with pytest.raises(BadRequestError, match="already been loaded"):
            await b.load_lora_adapter("sql", "/adapters/sql-lora")
        with pytest.raises(NotFoundError, match="No adapter found"):
            await b.load_lora_adapter("other", "/adapters/missing")
        assert (
            await b.unload_lora_adapter("sql")
            == "Success: LoRA adapter 'sql' removed successfully."
        )
        with pytest.raises(NotFoundError, match="cannot be found"):
            await b.unload_lora_adapter("sql")
        assert await b.list_lora_adapters() == []

    with_backend(CASES[3], test)


def test_llvm_completions() -> None:
    async def test(fake: MLCFake, b: Any) -> None:
        reply = await b.complete(MLC_MODEL, "once upon")
        assert reply.text == " continued: once upon" and reply.finish_reason == "stop"

    with_backend(CASES[5], test)


def test_groq_usage_from_x_groq_and_key_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GROQ_API_KEY", "gsk_test_123")

    async def test(fake: GroqFake, b: APIBackend) -> None:
        chunks = [c async for c in b.stream_chat("llama-3.1-8b-instant", "count the words")]
        assert chunks[-1].usage is not None and chunks[-1].usage.input_tokens == 3
        assert fake.last("/chat/completions").headers["Authorization"] == "Bearer gsk_test_123"

    with_backend(
        Case("groq", lambda: GroqFake(), lambda u: {"base_url": u + "/openai/v1"}, "", None), test
    )
