"""The sync facade (plain code, worker threads, a thread while another loop runs), the
registry (names, creation, compatible-backend search, configuration sources) and the
package's import cost."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from typing import Any

import pytest

from ipfs_accelerate.api_backends import (
    ChatChunk,
    create_api_backend,
    find_compatible_backend,
    get_available_backends,
    get_backend_class,
    register_api_backend,
)
from ipfs_accelerate.api_backends._sync import run_sync
from ipfs_accelerate.errors import (
    ConfigurationError,
    NotFoundError,
    QueueFullError,
    UnknownBackendError,
)

from ..fakes.ollama_fake import OllamaFake
from ..fakes.openai_fake import OpenAIFake
from ..fakes.vllm_fake import VLLMFake
from .conftest import fast, run, server_thread

pytestmark = pytest.mark.timeout(60)

OFFERED = [
    "openai", "openai_mini", "claude", "gemini", "groq", "ollama", "ollama_clean", "vllm",
    "hf_tgi", "hf_tei", "ovms", "opea", "llvm",
]  # fmt: skip
NAMES = [*OFFERED, "sample_backend"]  # the teaching example is created by name too


# ---------------------------------------------------------------- sync facade


def test_sync_facade_from_plain_code() -> None:
    with server_thread(OpenAIFake()) as fake:
        b = create_api_backend(
            "openai",
            metadata={"api_key": "sk-test-123", "base_url": fake.url + "/v1", "resilience": fast()},
        )
        try:
            assert b.sync.chat("gpt-4o-mini", "sync hello").text == "Echo: sync hello"
            chunks = list(b.sync.stream_chat("gpt-4o-mini", "sync stream"))
            assert "".join(c.text for c in chunks) == "Echo: sync stream" and chunks[-1].done
            assert len(b.sync.embed("text-embedding-3-small", ["a", "b"]).embeddings) == 2
            assert b.sync.health().healthy
            assert next(m.id for m in b.sync.list_models()) == "gpt-4o-mini"
            assert b.sync.speech("hi") == b"ID3fake-mp3:hi"  # provider surfaces too
            with pytest.raises(NotFoundError):
                b.sync.chat("no-model", "x")
        finally:
            b.close()


def test_sync_provider_surfaces_and_iterators() -> None:
    with server_thread(VLLMFake()) as fake:
        b = create_api_backend("vllm", metadata={"vllm_api_url": fake.url})
        try:
            assert "added successfully" in b.sync.load_lora_adapter("a1", "/p/a1")
            assert [a.id for a in b.sync.list_lora_adapters()] == ["a1"]
        finally:
            b.close()
    with server_thread(OllamaFake()) as fake:
        b = create_api_backend("ollama", metadata={"base_url": fake.url})
        try:
            statuses = [p.status for p in b.sync.pull("tiny:latest")]
            assert statuses[0] == "pulling manifest" and statuses[-1] == "success"
        finally:
            b.close()


def test_sync_stream_closed_early_frees_its_slot() -> None:
    with server_thread(OpenAIFake()) as fake:
        b = create_api_backend(
            "openai",
            metadata={
                "api_key": "sk-test-123",
                "base_url": fake.url + "/v1",
                "resilience": fast(max_concurrency=1, max_queue=0),
            },
        )
        try:
            fake.inject(stall_after=3)
            stream = b.sync.stream_chat("gpt-4o-mini", "a b c d e")
            first: ChatChunk = next(stream)
            assert first.text
            with pytest.raises(QueueFullError):
                b.sync.chat("gpt-4o-mini", "blocked")
            stream.close()  # type: ignore[attr-defined]
            assert b.sync.chat("gpt-4o-mini", "free").text == "Echo: free"
        finally:
            b.close()


def test_sync_from_worker_threads_while_a_loop_runs_elsewhere() -> None:
    with server_thread(OpenAIFake()) as fake:
        b = create_api_backend(
            "openai",
            metadata={"api_key": "sk-test-123", "base_url": fake.url + "/v1", "resilience": fast()},
        )

        async def main_loop() -> list[str]:
            # this thread's loop is busy; sync calls made from worker threads still work,
            # and async calls on this loop share the backend (a session per loop)
            sync_results = asyncio.gather(
                *(
                    asyncio.to_thread(lambda i=i: b.sync.chat("gpt-4o-mini", f"t{i}").text)
                    for i in range(8)
                )
            )
            async_results = asyncio.gather(*(b.chat("gpt-4o-mini", f"a{i}") for i in range(8)))
            texts = await sync_results
            texts += [r.text for r in await async_results]
            await b.aclose()
            return texts

        try:
            texts = run(main_loop())
            assert sorted(texts) == sorted(
                [f"Echo: t{i}" for i in range(8)] + [f"Echo: a{i}" for i in range(8)]
            )
            errors: list[BaseException] = []

            def worker() -> None:
                try:
                    assert b.sync.chat("gpt-4o-mini", "from thread").text == "Echo: from thread"
                except BaseException as exc:  # pragma: no cover - reported below
                    errors.append(exc)

            threads = [threading.Thread(target=worker) for _ in range(4)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(10)
            assert not errors
            assert b.get_stats()["successes"] == 20
        finally:
            b.close()


def test_sync_facade_refuses_to_deadlock_its_own_loop() -> None:
    async def nested() -> None:
        run_sync(asyncio.sleep(0))

    with pytest.raises(RuntimeError, match="own event loop thread"):
        run_sync(nested())


def test_backend_survives_consecutive_event_loops() -> None:
    with server_thread(OpenAIFake()) as fake:
        b = create_api_backend(
            "openai", metadata={"api_key": "sk-test-123", "base_url": fake.url + "/v1"}
        )
        for i in range(3):  # each asyncio.run is a new loop; the old loop's session is dropped
            assert run(b.chat("gpt-4o-mini", f"loop {i}")).text == f"Echo: loop {i}"
        run(b.aclose())


# ---------------------------------------------------------------- registry


def test_available_backends_and_classes() -> None:
    assert get_available_backends() == [
        *OFFERED,
        "vllm_unified",
        "hf_tgi_unified",
        "hf_tei_unified",
        "ovms_unified",
        "s3_kit",
    ]
    with pytest.raises(UnknownBackendError, match="unknown API backend 'nope'"):
        create_api_backend("nope")


def test_every_backend_reads_base_url_and_api_key_from_metadata() -> None:
    for name in NAMES:
        b = create_api_backend(
            name, metadata={"base_url": "http://10.1.2.3:9000", "api_key": "k-123"}
        )
        assert b.base_url == "http://10.1.2.3:9000" and b.has_api_key, name
        assert "k-123" not in repr(b)
        assert b.provider == name


@pytest.mark.parametrize(
    ("name", "metadata", "env"),
    [
        ("openai", {"openai_api_key": "x"}, {}),
        ("openai", {}, {"OPENAI_API_KEY": "x"}),
        ("claude", {"claude_api_key": "x"}, {}),
        ("claude", {"anthropic_api_key": "x"}, {}),
        ("claude", {}, {"ANTHROPIC_API_KEY": "x"}),
        ("gemini", {"gemini_api_key": "x"}, {}),
        ("gemini", {}, {"GEMINI_API_KEY": "x"}),
        ("gemini", {}, {"GOOGLE_API_KEY": "x"}),
        ("groq", {"groq_api_key": "x"}, {}),
        ("groq", {}, {"GROQ_API_KEY": "x"}),
        ("hf_tgi", {"hf_tgi_api_url": "http://h:1", "hf_api_key": "x"}, {}),
        ("hf_tei", {"hf_tei_api_url": "http://h:1"}, {"HF_TOKEN": "x"}),
        ("vllm", {"vllm_api_url": "http://h:1", "api_key": "x"}, {}),
        ("ovms", {"ovms_api_url": "http://h:1", "api_key": "x"}, {}),
        ("opea", {"opea_api_url": "http://h:1", "api_key": "x"}, {}),
        ("llvm", {"llvm_api_url": "http://h:1", "api_key": "x"}, {}),
        ("ollama", {"ollama_api_url": "http://h:1", "api_key": "x"}, {}),
    ],
)
def test_provider_keys_and_environment(
    name: str, metadata: dict[str, Any], env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    assert create_api_backend(name, metadata=metadata).has_api_key


def test_metadata_beats_environment_and_resources_are_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    b = create_api_backend("openai", metadata={"api_key": "from-metadata"})
    assert b._auth_headers()["Authorization"] == "Bearer from-metadata"
    r = create_api_backend("vllm", resources={"vllm_api_url": "http://r:8000/v1"})
    assert r.base_url == "http://r:8000"


def test_find_compatible_backend() -> None:
    assert find_compatible_backend("gpt-4o") is None  # nothing configured: nothing contacted
    found = find_compatible_backend("claude-sonnet-4-6", metadata={"anthropic_api_key": "x"})
    assert found is not None and found.provider == "claude"
    found = find_compatible_backend(
        "gemini-2.5-pro", metadata={"gemini_api_key": "x", "openai_api_key": "y"}
    )
    assert found is not None and found.provider == "gemini"
    found = find_compatible_backend(
        "gpt-4o", metadata={"gemini_api_key": "x", "openai_api_key": "y"}
    )
    assert found is not None and found.provider == "openai"
    assert (
        find_compatible_backend("llama3.2:3b") is None
    )  # Ollama's default address is a guess, not configuration
    found = find_compatible_backend("llama3.2:3b", metadata={"ollama_api_url": "http://gpu:11434"})
    assert found is not None and found.provider == "ollama"
    found = find_compatible_backend(
        "meta-llama/Llama-3.1-8B-Instruct", metadata={"vllm_api_url": "http://h:1"}
    )
    assert found is not None and found.provider == "vllm"
    found = find_compatible_backend(
        "my-finetune", metadata={"hf_tgi_api_url": "http://h:1", "models": ["my-finetune"]}
    )
    assert found is not None and found.provider == "hf_tgi"


def test_catch_all_openai_compatible_server_comes_last(monkeypatch: pytest.MonkeyPatch) -> None:
    # a local OpenAI-compatible server claims every model name, but a backend whose own rules
    # recognise the model wins; the catch-all still serves what nobody else recognises
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1")
    meta = {"anthropic_api_key": "x"}
    found = find_compatible_backend("claude-sonnet-4-6", metadata=meta)
    assert found is not None and found.provider == "claude"
    found = find_compatible_backend("my-local-model", metadata=meta)
    assert found is not None and found.provider == "openai_mini" and found.accepts_any_model


def test_default_models() -> None:
    assert (
        create_api_backend("openai", metadata={"api_key": "k"}).get_default_model() == "gpt-4o-mini"
    )
    assert (
        create_api_backend(
            "claude", metadata={"api_key": "k", "model": "claude-opus-4-7"}
        ).get_default_model()
        == "claude-opus-4-7"
    )
    with pytest.raises(ConfigurationError, match="no default model"):
        create_api_backend("vllm", metadata={"base_url": "http://h:1"}).get_default_model()


def test_sample_backend_is_created_by_name_but_never_offered() -> None:
    meta = {"sample_api_url": "http://h:1", "sample_api_key": "k"}
    assert "sample_backend" not in get_available_backends()
    backend = create_api_backend("sample_backend", metadata=meta)
    assert backend.provider == "sample_backend" and backend.is_configured
    assert backend.is_compatible_model("sample-small")
    assert find_compatible_backend("sample-small", metadata=meta) is None
    with pytest.raises(ConfigurationError, match="already registered"):
        register_api_backend("sample_backend", type(backend))
    with pytest.raises(UnknownBackendError) as info:
        create_api_backend("nope")
    assert "sample_backend" not in str(info.value)  # the list of what is available


def test_openai_mini_is_the_openai_class_configured() -> None:
    from ipfs_accelerate.api_backends.openai import OpenAIBackend

    mini = get_backend_class("openai_mini")
    assert isinstance(mini, type) and mini.__bases__ == (OpenAIBackend,)
    own = [
        name for name, value in vars(mini).items() if callable(value) or isinstance(value, property)
    ]
    assert own == []  # class attributes only: the behaviour is OpenAIBackend's


def test_register_api_backend() -> None:
    from ipfs_accelerate.api_backends.vllm import VLLMBackend

    class MyVLLM(VLLMBackend):
        provider = "my_vllm"

    register_api_backend("my_vllm", MyVLLM)
    try:
        assert "my_vllm" in get_available_backends()
        assert (
            create_api_backend("my_vllm", metadata={"base_url": "http://h:1"}).provider == "my_vllm"
        )
        with pytest.raises(ConfigurationError, match="already registered"):
            register_api_backend("my_vllm", MyVLLM)
    finally:
        from ipfs_accelerate.api_backends import _registry

        _registry._extra.pop("my_vllm", None)


def test_import_is_lazy() -> None:
    code = (
        "import sys, ipfs_accelerate.api_backends as a; "
        "heavy = [m for m in ('aiohttp', 'ipfs_accelerate.api_backends.openai', "
        "'ipfs_accelerate.api_backends._base') if m in sys.modules]; "
        "b = a.create_api_backend('vllm', metadata={'base_url': 'http://h:1'}); "
        "print(heavy, 'aiohttp' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == "[] False"  # neither at import nor at construction
