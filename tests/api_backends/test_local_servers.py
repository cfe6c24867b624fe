"""Self-hosted servers with their own protocols: Ollama native (NDJSON), TGI native,
TEI, OVMS KServe v2, OPEA ChatQnA, and the reference sample backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.api_backends import PullProgress, create_api_backend
from ipfs_accelerate.errors import (
    APIStatusError,
    AuthenticationError,
    BadRequestError,
    InvalidArgumentError,
    NotFoundError,
    ProtocolError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
    UnsupportedOpError,
)

from ..fakes._server import FakeServer
from ..fakes.ollama_fake import OllamaFake
from ..fakes.opea_fake import OPEAFake
from ..fakes.ovms_fake import OVMSFake
from ..fakes.sample_fake import SampleFake
from ..fakes.tei_fake import MODEL_ID as TEI_MODEL
from ..fakes.tei_fake import TEIFake
from ..fakes.tgi_fake import MODEL_ID as TGI_MODEL
from ..fakes.tgi_fake import TGIFake
from .conftest import fast, run

pytestmark = pytest.mark.timeout(60)


def serve(
    fake: FakeServer,
    name: str,
    metadata: Callable[[str], dict[str, Any]],
    test: Callable[[Any, Any], Any],
) -> Any:
    async def body() -> Any:
        async with fake:
            b = create_api_backend(name, metadata={**metadata(fake.url), "resilience": fast()})
            try:
                return await test(fake, b)
            finally:
                await b.aclose()

    return run(body())


# ---------------------------------------------------------------- Ollama (native)


def ollama(test: Callable[[OllamaFake, Any], Any]) -> Any:
    return serve(OllamaFake(), "ollama", lambda u: {"ollama_api_url": u}, test)


def test_ollama_chat_options_and_usage() -> None:
    async def test(fake: OllamaFake, b: Any) -> None:
        reply = await b.chat(
            "llama3.2", "hi there", temperature=0.3, max_tokens=100, keep_alive="5m"
        )
        assert reply.text == "Echo: hi there" and reply.finish_reason == "stop"
        assert reply.usage.input_tokens == 2 and reply.usage.output_tokens == 3
        body = fake.last("/api/chat").json
        assert body["stream"] is False and body["keep_alive"] == "5m"
        assert body["options"] == {"temperature": 0.3, "num_predict": 100}
        short = await b.chat("llama3.2", "a b c d", max_tokens=2)
        assert short.finish_reason == "length" and short.text == "Echo: a"

    ollama(test)


def test_ollama_ndjson_stream() -> None:
    async def test(fake: OllamaFake, b: Any) -> None:
        chunks = [c async for c in b.stream_chat("llama3.2", "one two")]
        assert "".join(c.text for c in chunks) == "Echo: one two"
        assert (
            chunks[-1].done and chunks[-1].usage is not None and chunks[-1].usage.output_tokens == 3
        )
        assert fake.last("/api/chat").json["stream"] is True
        fake.inject(truncate_after=2, partial_tail=True)
        with pytest.raises(StreamInterruptedError):
            _ = [c async for c in b.stream_chat("llama3.2", "one two three")]
        fake.inject(truncate_after=99)  # every line but the final done line
        with pytest.raises(StreamInterruptedError, match="done"):
            _ = [c async for c in b.stream_chat("llama3.2", "one two three")]
        fake.inject(error_event_after=2)
        with pytest.raises(StreamInterruptedError) as info:
            _ = [c async for c in b.stream_chat("llama3.2", "one two three")]
        assert "unexpected EOF" in str(info.value.__cause__)

    ollama(test)


def test_ollama_generate_embed_tags_and_errors() -> None:
    async def test(fake: OllamaFake, b: Any) -> None:
        generated = await b.generate("llama3.2", "complete me")
        assert generated.text == "Echo: complete me" and generated.raw["context"] == [1, 2, 3]
        streamed = [c async for c in b.generate_stream("llama3.2", "complete me")]
        assert "".join(c.text for c in streamed) == "Echo: complete me" and streamed[-1].done
        vectors = await b.embed("nomic-embed-text", ["x", "y"])
        assert len(vectors.embeddings) == 2 and vectors.usage.input_tokens == 2
        assert [m.id for m in await b.tags()] == fake.known_models
        with pytest.raises(NotFoundError, match="model 'nope' not found"):
            await b.chat("nope", "hi")
        assert (await b.health()).healthy

    ollama(test)


def test_ollama_tool_calls() -> None:
    async def test(fake: OllamaFake, b: Any) -> None:
        tools = [
            {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
        ]
        reply = await b.chat("llama3.2", "find it", tools=tools)
        assert reply.finish_reason == "tool_calls" and reply.tool_calls[0].arguments == {
            "query": "find it"
        }
        chunks = [c async for c in b.stream_chat("llama3.2", "find it", tools=tools)]
        assert (
            chunks[-1].tool_calls[0].name == "lookup" and chunks[-1].finish_reason == "tool_calls"
        )
        follow = [
            {"role": "user", "content": "find it"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "lookup", "arguments": '{"query": "find it"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "found"},
        ]
        assert (await b.chat("llama3.2", follow)).text == "Tool said: found"
        sent = fake.last("/api/chat").json["messages"]
        assert sent[1]["tool_calls"] == [
            {"function": {"name": "lookup", "arguments": {"query": "find it"}}}
        ]
        assert sent[2]["tool_name"] == "lookup"

    ollama(test)


def test_ollama_pull_with_progress() -> None:
    async def test(fake: OllamaFake, b: Any) -> None:
        seen: list[PullProgress] = []
        last = await b.pull_model("phi3:mini", on_progress=seen.append)
        assert last.status == "success" and seen[0].status == "pulling manifest"
        fractions = [p.fraction for p in seen if p.total]
        assert fractions == [0.0, 0.4, 1.0]
        assert fake.last("/api/pull").json == {
            "model": "phi3:mini",
            "insecure": False,
            "stream": True,
        }
        with pytest.raises(ServerError, match="file does not exist"):
            await b.pull_model("missing-model")
        fake.inject(truncate_after=3)
        with pytest.raises(StreamInterruptedError, match="success"):
            _ = [p async for p in b.pull("phi3:mini")]

    ollama(test)


def test_ollama_host_env_forms(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OLLAMA_HOST", "0.0.0.0")
    assert create_api_backend("ollama").base_url == "http://0.0.0.0:11434"
    monkeypatch.setenv("OLLAMA_HOST", "http://gpu-box:8080/")
    assert create_api_backend("ollama_clean").base_url == "http://gpu-box:8080"
    monkeypatch.delenv("OLLAMA_HOST")
    assert create_api_backend("ollama").base_url == "http://127.0.0.1:11434"


# ---------------------------------------------------------------- TGI native


def tgi(test: Callable[[TGIFake, Any], Any]) -> Any:
    return serve(TGIFake(), "hf_tgi", lambda u: {"hf_tgi_api_url": u}, test)


def test_tgi_generate_with_details() -> None:
    async def test(fake: TGIFake, b: Any) -> None:
        result = await b.generate(
            "hello world", max_new_tokens=20, seed=7, decoder_input_details=True
        )
        assert result.generated_text == "Echo: hello world"
        details = result.details
        assert (
            details.finish_reason == "eos_token"
            and details.generated_tokens == 3
            and details.seed == 7
        )
        assert [t.text for t in details.tokens] == [
            "Echo: ",
            "hello ",
            "world",
        ] and details.prefill[0].text == "<s>"
        assert fake.last("/generate").json == {
            "inputs": "hello world",
            "parameters": {
                "max_new_tokens": 20,
                "seed": 7,
                "decoder_input_details": True,
                "details": True,
            },
        }
        short = await b.generate("a b c d", max_tokens=2)
        assert short.details.finish_reason == "length"

    tgi(test)


def test_tgi_generate_stream_without_done() -> None:
    async def test(fake: TGIFake, b: Any) -> None:
        events = [e async for e in b.generate_stream("one two")]
        assert "".join(e.token.text for e in events) == "Echo: one two"
        assert (
            events[-1].generated_text == "Echo: one two"
            and events[-1].details.finish_reason == "eos_token"
        )
        assert all(e.generated_text is None for e in events[:-1])
        fake.inject(truncate_after=2)
        with pytest.raises(StreamInterruptedError, match="generated_text"):
            _ = [e async for e in b.generate_stream("one two three")]
        fake.inject(error_event_after=1)
        with pytest.raises(StreamInterruptedError) as info:
            _ = [e async for e in b.generate_stream("one two three")]
        assert "CUDA out of memory" in str(info.value.__cause__)

    tgi(test)


def test_tgi_errors_info_health() -> None:
    async def test(fake: TGIFake, b: Any) -> None:
        with pytest.raises(
            BadRequestError,
            match="validation: Input validation error: `temperature` must be strictly positive",
        ):
            await b.generate("x", temperature=0)
        fake.inject(
            status=429, body={"error": "Model is overloaded", "error_type": "overloaded"}, times=2
        )
        with pytest.raises(RateLimitError, match="overloaded: Model is overloaded"):
            await b.generate("x", max_retries=1)
        info = await b.info()
        assert info["model_id"] == TGI_MODEL
        assert [m.id for m in await b.list_models()] == [TGI_MODEL]
        assert (await b.health()).healthy
        with pytest.raises(InvalidArgumentError):
            await b.generate(["not", "a", "string"])

    tgi(test)


# ---------------------------------------------------------------- TEI


def tei(test: Callable[[TEIFake, Any], Any], **kwargs: Any) -> Any:
    return serve(TEIFake(**kwargs), "hf_tei", lambda u: {"hf_tei_api_url": u}, test)


def test_tei_embed_rerank_info() -> None:
    async def test(fake: TEIFake, b: Any) -> None:
        result = await b.embed(None, ["first", "second"])
        assert len(result.embeddings) == 2 and result.dimensions == 16
        assert fake.last("/embed").json == {"inputs": ["first", "second"], "normalize": True}
        ranked = await b.rerank(
            "red apples", ["green pears", "red apples are sweet", "apples"], return_text=True
        )
        assert [r.index for r in ranked] == [1, 2, 0] and ranked[0].text == "red apples are sweet"
        assert ranked[0].score >= ranked[1].score >= ranked[2].score
        assert (await b.info())["model_id"] == TEI_MODEL
        assert (await b.health()).healthy
        with pytest.raises(UnsupportedOpError):
            await b.chat(None, "hi")
        with pytest.raises(UnsupportedOpError):
            b.stream_chat(None, "hi")
        with pytest.raises(InvalidArgumentError):
            await b.rerank("q", "one string")

    tei(test)


def test_tei_batch_limit_error() -> None:
    async def test(fake: TEIFake, b: Any) -> None:
        with pytest.raises(Exception) as info:
            await b.embed(None, ["x"] * 5)
        assert info.value.status == 413 and "maximum allowed batch size 4" in str(info.value)  # type: ignore[attr-defined]

    tei(test, max_batch=4)


def test_tei_wrong_vector_count_is_caught() -> None:
    async def test(fake: TEIFake, b: Any) -> None:
        fake.inject(status=200, body=[[0.1, 0.2]])
        with pytest.raises(ProtocolError, match="expected 2 vector"):
            await b.embed(None, ["a", "b"])

    tei(test)


def test_tei_predict_tokenize_decode_embed_all_against_teis_shapes() -> None:
    async def test(fake: TEIFake, b: Any) -> None:
        scored = await b.predict([("red apples", "red apples"), "green pears", ("a", "b")])
        # the batch form always: a list of two texts must not become TEI's one pair
        assert fake.last("/predict").json == {
            "inputs": [["red apples", "red apples"], ["green pears"], ["a", "b"]],
            "raw_scores": False,
        }
        assert [[p.label for p in labels] for labels in scored] == [
            ["positive", "negative"], ["positive", "negative"], ["negative", "positive"],
        ]  # fmt: skip
        assert scored[0][0].score == 1.0 and scored[2][0].score == 1.0
        two = await b.predict(["red apples", "red apples"])
        assert len(two) == 2 and fake.last("/predict").json["inputs"] == [["red apples"]] * 2
        one = await b.predict(("x y", "y z"), raw_scores=True)
        assert fake.last("/predict").json == {"inputs": [["x y", "y z"]], "raw_scores": True}
        assert one[0][0].label == "negative"
        tokens = await b.tokenize(["héllo world", "a"], add_special_tokens=True)
        assert [(t.text, t.start, t.stop, t.special) for t in tokens[0]] == [
            ("[CLS]", None, None, True), ("héllo", 0, 6, False), ("world", 7, 12, False),
            ("[SEP]", None, None, True),
        ]  # fmt: skip
        bare = await b.tokenize("a", add_special_tokens=False, prompt_name="query")
        assert fake.last("/tokenize").json == {
            "inputs": ["a"], "add_special_tokens": False, "prompt_name": "query",
        }  # fmt: skip
        assert [t.text for t in bare[0]] == ["a"]
        ids = [t.id for t in tokens[0]]
        assert await b.decode(ids) == ["héllo world"]
        assert fake.last("/decode").json == {"ids": [ids], "skip_special_tokens": True}
        assert await b.decode([ids, ids[1:2]], skip_special_tokens=False) == [
            "[CLS] héllo world [SEP]", "héllo",
        ]  # fmt: skip
        states = await b.embed_all(["one two", "three"], truncate=True)
        assert [len(s) for s in states] == [4, 3] and len(states[0][0]) == 4
        assert fake.last("/embed_all").json == {"inputs": ["one two", "three"], "truncate": True}
        # answers that do not hold one entry per input, or the wrong fields
        fake.inject(status=200, body=[[{"score": 0.5, "label": "positive"}]])
        with pytest.raises(ProtocolError, match="expected 2 result"):
            await b.predict(["a", "b"])
        fake.inject(status=200, body=[[{"score": "high", "label": "positive"}]])
        with pytest.raises(ProtocolError, match="score"):
            await b.predict("a")
        fake.inject(status=200, body=[[{"id": 1, "text": "a", "start": 0, "stop": 1}]])
        with pytest.raises(ProtocolError, match="special"):
            await b.tokenize("a")
        fake.inject(status=200, body=[[[0.1, 0.2], [0.3]]])
        with pytest.raises(ProtocolError, match="differ in size"):
            await b.embed_all("a b")
        fake.inject(status=200, body=["a", 3])
        with pytest.raises(ProtocolError, match="strings"):
            await b.decode([[1], [2]])
        with pytest.raises(APIStatusError) as unknown:
            await b.decode([99999])
        assert unknown.value.status == 422
        with pytest.raises(InvalidArgumentError):
            await b.predict([])
        with pytest.raises(InvalidArgumentError):
            await b.decode([[1, None]])

    tei(test)


# ---------------------------------------------------------------- OVMS KServe v2


def ovms(test: Callable[[OVMSFake, Any], Any], **kwargs: Any) -> Any:
    return serve(OVMSFake(**kwargs), "ovms", lambda u: {"ovms_api_url": u + "/v3"}, test)


def test_ovms_kserve_infer_named_tensors() -> None:
    async def test(fake: OVMSFake, b: Any) -> None:
        a = np.arange(6, dtype=np.float32).reshape(2, 3)
        c = np.full((2, 3), 0.5, dtype=np.float32)
        out = await b.infer("adder", {"a": a, "b": c}, request_id="r-1")
        np.testing.assert_allclose(out["sum"], a + c)
        np.testing.assert_allclose(out["product"], a * c)
        assert out["sum"].dtype == np.float32 and out["sum"].shape == (2, 3)
        sent = fake.last("/infer").json
        assert sent["inputs"][0] == {
            "name": "a",
            "shape": [2, 3],
            "datatype": "FP32",
            "data": [0.0, 1.0, 2.0, 3.0, 4.0, 5.0],
        }
        assert sent["id"] == "r-1"
        only = await b.infer("adder", {"a": a, "b": c}, outputs=["product"], version=1)
        assert (
            list(only) == ["product"]
            and fake.last("/infer").path == "/v2/models/adder/versions/1/infer"
        )
        labels = await b.infer("classifier", {"ids": np.array([4, 5, 6], dtype=np.int64)})
        assert labels["label"].tolist() == [1, 2, 0] and labels["label"].dtype == np.int64

    ovms(test)


def test_ovms_kserve_errors_metadata_and_models() -> None:
    async def test(fake: OVMSFake, b: Any) -> None:
        with pytest.raises(NotFoundError, match="Model with requested name is not found"):
            await b.infer("nope", {"x": np.zeros(1, np.float32)})
        with pytest.raises(NotFoundError, match="version"):
            await b.infer(
                "adder", {"a": np.zeros(1, np.float32), "b": np.zeros(1, np.float32)}, version=2
            )
        with pytest.raises(BadRequestError, match="Invalid datatype"):
            await b.infer("adder", {"a": np.zeros(2, np.int32), "b": np.zeros(2, np.int32)})
        meta = await b.model_metadata("adder")
        assert [i["name"] for i in meta["inputs"]] == ["a", "b"]
        assert await b.model_ready("adder") and not await b.model_ready("nope")
        assert await b.server_ready() and (await b.health()).healthy
        assert {m.id for m in await b.list_models()} >= {"adder", "classifier"}

    ovms(test)


def test_ovms_inconsistent_output_shape_is_a_protocol_error() -> None:
    async def test(fake: OVMSFake, b: Any) -> None:
        with pytest.raises(ProtocolError, match="has 2 element"):
            await b.infer("adder", {"a": np.zeros(2, np.float32), "b": np.zeros(2, np.float32)})

    ovms(test, bad_shape=True)


# ---------------------------------------------------------------- OPEA


def test_opea_chatqna_non_stream_and_bytes_stream() -> None:
    async def test(fake: OPEAFake, b: Any) -> None:
        reply = await b.chat(None, "What is OPEA?", max_tokens=64, k=4)
        assert reply.text == "Based on the documents: What is OPEA?" and reply.model == "chatqna"
        sent = fake.last("/v1/chatqna").json
        assert sent == {"messages": "What is OPEA?", "max_tokens": 64, "k": 4, "stream": False}
        chunks = [c async for c in b.stream_chat(None, [{"role": "user", "content": "Why?"}])]
        assert "".join(c.text for c in chunks) == "Based on the documents: Why?" and chunks[-1].done
        fake.inject(truncate_after=2)
        with pytest.raises(StreamInterruptedError, match=r"\[DONE\]"):
            _ = [c async for c in b.stream_chat(None, "x y z")]
        vectors = await b.embed(None, ["doc one", "doc two"])
        assert len(vectors.embeddings) == 2
        llm = await b.llm_chat("Intel/neural-chat-7b-v3-3", "direct")
        assert llm.text == "Echo: direct"
        assert (await b.health()).healthy

    serve(OPEAFake(), "opea", lambda u: {"opea_api_url": u}, test)


def test_opea_openai_chunk_stream_and_separate_microservice_urls() -> None:
    async def body() -> None:
        async with OPEAFake(chunk_style="openai") as gateway, OPEAFake() as embedder:
            b = create_api_backend(
                "opea",
                metadata={
                    "opea_api_url": gateway.url,
                    "opea_embedding_url": embedder.url + "/v1",
                    "resilience": fast(),
                },
            )
            try:
                chunks = [c async for c in b.stream_chat(None, "q")]
                assert "".join(c.text for c in chunks) == "Based on the documents: q"
                await b.embed(None, "text")
                assert embedder.last("/v1/embeddings") and not any(
                    r.path == "/v1/embeddings" for r in gateway.requests
                )
                assert len(b.get_stats()["endpoints"]) == 2
            finally:
                await b.aclose()

    run(body())


def test_opea_validation_error_detail() -> None:
    async def test(fake: OPEAFake, b: Any) -> None:
        fake.inject(
            status=422,
            body={
                "detail": [
                    {"type": "missing", "loc": ["body", "messages"], "msg": "Field required"}
                ]
            },
        )
        with pytest.raises(BadRequestError, match="Field required"):
            await b.chat(None, "x")

    serve(OPEAFake(), "opea", lambda u: {"opea_api_url": u}, test)


# ---------------------------------------------------------------- sample backend


def test_sample_backend_reference() -> None:
    async def test(fake: SampleFake, b: Any) -> None:
        reply = await b.chat("sample-small", "hello")
        assert reply.text == "Echo: hello" and reply.usage.output_tokens == 2
        chunks = [c async for c in b.stream_chat(None, "hello you")]
        assert "".join(c.text for c in chunks) == "Echo: hello you" and chunks[-1].done
        assert len((await b.embed(None, ["a", "b"])).embeddings) == 2
        assert [m.id for m in await b.list_models()] == ["sample-small", "sample-large"]
        assert (await b.health()).healthy
        fake.inject(truncate_after=1)
        with pytest.raises(StreamInterruptedError):
            _ = [c async for c in b.stream_chat(None, "a b c")]
        assert b.is_compatible_model("sample-x") and not b.is_compatible_model("gpt-4o")

    serve(
        SampleFake(),
        "sample_backend",
        lambda u: {"sample_api_url": u, "sample_api_key": "sample-key-123"},
        test,
    )


def test_sample_backend_bad_key() -> None:
    async def test(fake: SampleFake, b: Any) -> None:
        with pytest.raises(AuthenticationError, match="bad credentials"):
            await b.chat(None, "x")

    serve(SampleFake(), "sample_backend", lambda u: {"sample_api_url": u, "api_key": "wrong"}, test)
