"""``/v1/chat/completions`` and ``/v1/completions`` against a real uvicorn server on loopback,
with the official ``openai`` SDK and this package's ``openai`` backend as clients: the text
equals TextGenerator's for the same prompt and parameters, streamed or not."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from ipfs_accelerate.api_backends import create_api_backend
from tests.models._decoder_checkpoints import decoder_checkpoint

from .conftest import API_KEY, MINILM, Running, auth

pytestmark = pytest.mark.timeout(180)

LLAMA, GPT2 = "tiny-llama", "tiny-gpt2"
#: typed loosely: the SDK wants its TypedDicts, the pipeline takes plain dicts
HELLO: Any = [{"role": "user", "content": "Hello there"}]


@pytest.fixture(scope="module")
def generators(registry: Any) -> Iterator[Running]:
    """Two decoders (Llama with Llama 2's template, GPT-2 with ChatML) and the session's MiniLM
    behind one server."""
    from ipfs_accelerate.serve import (
        BackgroundServer,
        ModelRegistry,
        ModelSpec,
        ServerConfig,
        create_app,
    )

    specs = [
        ModelSpec(str(decoder_checkpoint("llama")), name=LLAMA),
        ModelSpec(str(decoder_checkpoint("gpt2")), name=GPT2),
    ]
    own = ModelRegistry.load(specs, device="cpu")
    combined = ModelRegistry([*own, registry.get(MINILM)])
    app = create_app(ServerConfig(device="cpu", api_key=API_KEY), registry=combined)
    with BackgroundServer(app) as running:
        yield Running(running.url, app, combined)
    own.close()


@pytest.fixture()
def client(generators: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=generators.url + "/v1", api_key=API_KEY, max_retries=0)


def _post(generators: Running, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(generators.url + path, json=body, headers=auth(), timeout=60)


# ----------------------------------------------------------------------------- chat


def test_chat_equals_the_pipeline_whole_and_streamed(
    generators: Running, client: openai.OpenAI
) -> None:
    pipeline = generators.pipeline(LLAMA)
    expected = pipeline.chat(HELLO, max_new_tokens=12, temperature=0)
    reply = client.chat.completions.create(
        model=LLAMA, messages=HELLO, max_tokens=12, temperature=0
    )
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and reply.model == LLAMA
    assert choice.message.role == "assistant" and choice.message.content == expected
    assert choice.finish_reason == "length" and choice.logprobs is None
    prompt_tokens = len(pipeline.encode_prompt(HELLO))
    assert reply.usage is not None
    assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (prompt_tokens, 12)
    assert reply.usage.total_tokens == prompt_tokens + 12

    chunks = list(
        client.chat.completions.create(
            model=LLAMA,
            messages=HELLO,
            max_completion_tokens=12,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    assert {c.object for c in chunks} == {"chat.completion.chunk"} and len({c.id for c in chunks})
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "length" and finishes.count("length") == 1
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12
    assert all(c.usage is None for c in chunks[:-1])


def test_sse_wire_format_ends_with_done(generators: Running) -> None:
    body = {"model": GPT2, "messages": HELLO, "max_tokens": 4, "stream": True}
    with httpx.stream(
        "POST", generators.url + "/v1/chat/completions", json=body, headers=auth()
    ) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in reply.iter_lines() if line]
    assert all(line.startswith("data: ") for line in lines)
    assert lines[-1] == "data: [DONE]" and lines.count("data: [DONE]") == 1
    assert '"usage"' not in "".join(lines)  # not asked for


def test_stop_strings_end_the_text_before_them(generators: Running, client: openai.OpenAI) -> None:
    pipeline = generators.pipeline(LLAMA)
    full = pipeline.chat(HELLO, max_new_tokens=16, temperature=0)
    # the first character that did not occur before it: the text stops right there
    cut = next(i for i in range(1, len(full)) if full.index(full[i]) == i)
    stop, expected = full[cut], full[:cut]
    for stops in (stop, [stop, "\x00never"]):
        reply = client.chat.completions.create(
            model=LLAMA, messages=HELLO, max_tokens=16, temperature=0, stop=stops
        )
        assert reply.choices[0].message.content == expected
        assert reply.choices[0].finish_reason == "stop"
    assert pipeline.chat(HELLO, max_new_tokens=16, temperature=0, stop=[stop]) == expected


def test_n_choices_and_seeds(generators: Running, client: openai.OpenAI) -> None:
    pipeline = generators.pipeline(LLAMA)
    greedy = client.chat.completions.create(model=LLAMA, messages=HELLO, max_tokens=8, n=2,
                                            temperature=0)  # fmt: skip
    assert [c.index for c in greedy.choices] == [0, 1]
    assert {c.message.content for c in greedy.choices} == {
        pipeline.chat(HELLO, max_new_tokens=8, temperature=0)
    }
    assert greedy.usage is not None and greedy.usage.completion_tokens == 16

    sampled: dict[str, Any] = dict(
        model=LLAMA, messages=HELLO, max_tokens=10, temperature=1.5, seed=7
    )
    one = client.chat.completions.create(**sampled).choices[0].message.content
    again = client.chat.completions.create(**sampled).choices[0].message.content
    two = client.chat.completions.create(n=2, **sampled)
    assert one == again == pipeline.chat(HELLO, max_new_tokens=10, temperature=1.5, seed=7)
    assert two.choices[0].message.content == one  # choice i samples with seed + i
    assert two.choices[1].message.content == pipeline.chat(
        HELLO, max_new_tokens=10, temperature=1.5, seed=8
    )


def test_chat_logprobs_are_the_engines(generators: Running, client: openai.OpenAI) -> None:
    pipeline = generators.pipeline(LLAMA)
    [result] = pipeline.generate_batch([HELLO], max_new_tokens=6, temperature=0, logprobs=3)
    reply = client.chat.completions.create(
        model=LLAMA, messages=HELLO, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None and logprobs.content is not None
    assert len(logprobs.content) == 6
    for got, want in zip(logprobs.content, result.logprobs, strict=True):
        assert got.token == want.token and got.bytes == list(want.token.encode())
        assert got.logprob == pytest.approx(want.logprob, abs=1e-9)
        assert [t.token for t in got.top_logprobs] == [t.token for t in want.top]
        values = [t.logprob for t in got.top_logprobs]
        assert values == sorted(values, reverse=True) and len(values) == 3
    plain = client.chat.completions.create(
        model=LLAMA, messages=HELLO, max_tokens=3, temperature=0, logprobs=True
    )
    assert plain.choices[0].logprobs is not None
    assert [e.top_logprobs for e in plain.choices[0].logprobs.content or []] == [[], [], []]
    streamed = client.chat.completions.create(
        model=LLAMA, messages=HELLO, max_tokens=6, temperature=0, logprobs=True,
        top_logprobs=3, stream=True,
    )  # fmt: skip
    tokens = [e.token for c in streamed if c.choices and c.choices[0].logprobs
              for e in c.choices[0].logprobs.content or []]  # fmt: skip
    assert tokens == [e.token for e in result.logprobs]


def test_content_parts_developer_role_and_penalties(
    generators: Running, client: openai.OpenAI
) -> None:
    pipeline = generators.pipeline(GPT2)
    parts: Any = [{"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
             {"role": "user", "content": [{"type": "text", "text": "Hello"},
                                          {"type": "text", "text": "there"}]}]  # fmt: skip
    plain = [{"role": "system", "content": "Be brief."},
             {"role": "user", "content": "Hello\nthere"}]  # fmt: skip
    reply = client.chat.completions.create(model=GPT2, messages=parts, max_tokens=8, temperature=0)
    assert reply.choices[0].message.content == pipeline.chat(plain, max_new_tokens=8, temperature=0)
    penalised = client.chat.completions.create(
        model=GPT2, messages=HELLO, max_tokens=16, temperature=0, presence_penalty=2.0,
        frequency_penalty=1.5,
    )  # fmt: skip
    assert penalised.choices[0].message.content == pipeline.chat(
        HELLO, max_new_tokens=16, temperature=0, presence_penalty=2.0, frequency_penalty=1.5
    )


# ----------------------------------------------------------------------------- completions


def test_completions_equal_the_pipeline(generators: Running, client: openai.OpenAI) -> None:
    pipeline = generators.pipeline(GPT2)
    prompts = ["The cat sat", "Interest rates"]
    expected = [pipeline.generate(p, max_new_tokens=10, temperature=0) for p in prompts]
    reply = client.completions.create(model=GPT2, prompt=prompts[0], max_tokens=10, temperature=0)
    assert reply.object == "text_completion" and reply.choices[0].text == expected[0]
    assert reply.choices[0].finish_reason == "length"
    assert reply.usage is not None
    assert reply.usage.prompt_tokens == len(pipeline.encode_prompt(prompts[0]))
    both = client.completions.create(model=GPT2, prompt=prompts, max_tokens=10, temperature=0)
    assert [c.text for c in both.choices] == expected and [c.index for c in both.choices] == [0, 1]
    ids = pipeline.encode_prompt(prompts[1])
    tokens = client.completions.create(model=GPT2, prompt=ids, max_tokens=10, temperature=0)
    assert tokens.choices[0].text == expected[1]
    stream = client.completions.create(
        model=GPT2, prompt=prompts[0], max_tokens=10, temperature=0, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == expected[0]
    assert chunks[-1].choices[0].finish_reason == "length"


def test_completions_logprobs(generators: Running, client: openai.OpenAI) -> None:
    pipeline = generators.pipeline(GPT2)
    [result] = pipeline.generate_batch(["The cat sat"], max_new_tokens=5, temperature=0,
                                       logprobs=2)  # fmt: skip
    reply = client.completions.create(
        model=GPT2, prompt="The cat sat", max_tokens=5, temperature=0, logprobs=2
    )
    logprobs = reply.choices[0].logprobs
    assert logprobs is not None
    assert logprobs.tokens == [e.token for e in result.logprobs]
    assert logprobs.token_logprobs == pytest.approx([e.logprob for e in result.logprobs])
    assert logprobs.text_offset is not None and logprobs.text_offset[0] == 0
    assert logprobs.top_logprobs is not None and len(logprobs.top_logprobs) == 5


def test_this_packages_openai_backend(generators: Running) -> None:
    backend = create_api_backend(
        "openai", metadata={"base_url": generators.url + "/v1", "api_key": API_KEY}
    )
    expected = generators.pipeline(LLAMA).chat(HELLO, max_new_tokens=8, temperature=0)
    with backend.sync as client:
        reply = client.chat(LLAMA, HELLO, max_tokens=8, temperature=0)
        assert reply.text == expected and reply.finish_reason == "length"
        chunks = list(client.stream_chat(LLAMA, HELLO, max_tokens=8, temperature=0))
        assert "".join(c.text or "" for c in chunks) == expected


# ----------------------------------------------------------------------------- concurrency


def test_concurrent_greedy_streams_equal_their_runs_alone(generators: Running) -> None:
    prompts: list[Any] = [[{"role": "user", "content": text}] for text in
               ("Hello there", "The cat sat", "Interest rates", "a b c")]  # fmt: skip
    pipeline = generators.pipeline(LLAMA)
    alone = [pipeline.chat(p, max_new_tokens=20, temperature=0) for p in prompts]
    texts: list[str | None] = [None] * len(prompts)
    errors: list[BaseException] = []
    start = threading.Barrier(len(prompts))

    def run(index: int) -> None:
        client = openai.OpenAI(base_url=generators.url + "/v1", api_key=API_KEY, max_retries=0)
        try:
            start.wait(timeout=30)
            stream = client.chat.completions.create(
                model=LLAMA, messages=prompts[index], max_tokens=20, temperature=0, stream=True
            )
            texts[index] = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(prompts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert texts == alone


class _SlowModel:
    """The served decoder with each forward pass slowed and counted, so that a stream is
    still generating when its client hangs up, whatever this machine's speed."""

    def __init__(self, model: Any) -> None:
        self._model = model
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, *args: Any) -> Any:
        self.calls += 1
        time.sleep(0.05)
        return self._model(*args)


def test_a_client_that_hangs_up_stops_its_generation(
    generators: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    served = generators.registry.get(GPT2)
    engine = served.pipeline.engine
    slow = _SlowModel(engine.model)
    monkeypatch.setattr(engine, "model", slow)
    body = {"model": GPT2, "prompt": "The cat", "max_tokens": 50, "stream": True,
            "temperature": 0}  # fmt: skip
    with httpx.stream(
        "POST", generators.url + "/v1/completions", json=body, headers=auth(), timeout=30
    ) as reply:
        assert reply.status_code == 200
        lines = reply.iter_lines()
        received = [next(lines) for _ in range(3)]  # three events (blank lines between)
        assert all(line.startswith("data: ") or not line for line in received)
    # the stream is closed: the generation leaves its slot and runs no further step
    deadline = time.monotonic() + 20
    while generators.state.in_progress(served) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert generators.state.in_progress(served) == 0
    stopped_at = slow.calls
    time.sleep(0.3)
    assert slow.calls == stopped_at < 50  # 50: what an unstopped generation runs
    # the model serves the next request as before
    monkeypatch.undo()
    again = _post(generators, "/v1/completions", {"model": GPT2, "prompt": "x", "max_tokens": 2})
    assert again.status_code == 200


# ----------------------------------------------------------------------------- refusals


def test_index_and_openapi_describe_the_generation_routes(generators: Running) -> None:
    index = httpx.get(generators.url + "/", headers=auth()).json()
    routes = {r["path"] for r in index["routes"]}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/embeddings"} <= routes
    document = httpx.get(generators.url + "/openapi.json").json()
    chat = document["paths"]["/v1/chat/completions"]["post"]
    assert "application/json" in chat["requestBody"]["content"]
    assert "post" in document["paths"]["/v1/completions"]


def test_models_list_generators_with_their_context_length(client: openai.OpenAI) -> None:
    cards = {m.id: m for m in client.models.list()}
    assert cards[LLAMA].context_length == cards[GPT2].context_length == 64  # type: ignore[attr-defined]
    assert not hasattr(cards[MINILM], "context_length")


_CHAT_400S: list[tuple[dict[str, Any], str, str]] = [
    ({"max_tokens": 0}, "max_tokens", ">= 1"),
    ({"max_completion_tokens": -3}, "max_completion_tokens", ">= 1"),
    ({"max_tokens": 60}, "messages", "maximum context length is 64 tokens"),
    ({"messages": [{"role": "user", "content": "word " * 80}]}, "messages", "context length"),
    ({"temperature": -0.5}, "temperature", "[0, 2]"),
    ({"temperature": 2.5}, "temperature", "[0, 2]"),
    ({"top_p": 0}, "top_p", "(0, 1]"),
    ({"top_p": 1.5}, "top_p", "(0, 1]"),
    ({"n": 0}, "n", ">= 1"),
    ({"n": 9}, "n", "<= 8"),
    ({"stop": [f"s{i}" for i in range(50)]}, "stop", "maximum length 16"),
    ({"stop": 5}, "stop", "a string or an array of strings"),
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role", "'robot'"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "got 5"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
     "messages[0].content[0].type", "image_url"),
    ({"messages": []}, "messages", "empty array"),
    ({"tools": [{"type": "function"}]}, "tools", "'tools' is not supported"),
    ({"functions": [{"name": "f"}]}, "functions", "'functions' is not supported"),
    ({"response_format": {"type": "json_object"}}, "response_format", "'response_format'"),
    ({"logit_bias": {"5": 10}}, "logit_bias", "'logit_bias'"),
    ({"frobnicate": 1}, "frobnicate", "Unrecognized request argument supplied: frobnicate"),
    ({"top_logprobs": 2}, "top_logprobs", "'logprobs' must be true"),
    ({"top_logprobs": 21, "logprobs": True}, "top_logprobs", "<= 20"),
    ({"presence_penalty": 3}, "presence_penalty", "[-2, 2]"),
    ({"stream_options": {"include_usage": True}}, "stream_options", "only allowed when"),
    ({"seed": "x"}, "seed", "an integer"),
]  # fmt: skip


@pytest.mark.parametrize(("change", "param", "words"), _CHAT_400S)
def test_chat_refusals_name_the_field(
    generators: Running, change: dict[str, Any], param: str, words: str
) -> None:
    body = {"model": LLAMA, "messages": HELLO, "max_tokens": 4, **change}
    reply = _post(generators, "/v1/chat/completions", body)
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert words in error["message"]


def test_openai_sdk_sees_the_400s(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=LLAMA, messages=HELLO, max_tokens=100)
    assert info.value.code == "context_length_exceeded"
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=GPT2, prompt="x", max_tokens=2, echo=True)
    assert info.value.body["param"] == "echo"  # type: ignore[index]


def test_template_errors_and_model_kinds(generators: Running) -> None:
    # Llama 2's template raises unless user and assistant turns alternate
    twice = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]
    reply = _post(generators, "/v1/chat/completions",
                  {"model": LLAMA, "messages": twice, "max_tokens": 2})  # fmt: skip
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "messages"
    assert "alternate" in reply.json()["error"]["message"]
    reply = _post(generators, "/v1/chat/completions",
                  {"model": MINILM, "messages": HELLO, "max_tokens": 2})  # fmt: skip
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "model_not_supported"
    assert "text-generation" in reply.json()["error"]["message"]
    reply = _post(generators, "/v1/embeddings", {"model": GPT2, "input": "hello"})
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "model_not_supported"
    infer = {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1], "data": ["hi"]}]}
    for path in (f"/v2/models/{GPT2}/infer", f"/v2/models/{GPT2}"):
        reply = (_post(generators, path, infer) if path.endswith("infer")
                 else httpx.get(generators.url + path, headers=auth()))  # fmt: skip
        assert reply.status_code == 400 and "/v1/chat/completions" in reply.json()["error"]
    reply = _post(generators, "/v1/completions", {"model": GPT2, "prompt": [5, 10**7]})
    assert reply.status_code == 400 and "vocabulary" in reply.json()["error"]["message"]
    reply = _post(generators, "/v1/completions", {"model": GPT2})
    assert reply.status_code == 400 and reply.json()["error"]["param"] == "prompt"
