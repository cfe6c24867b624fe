"""The request pipeline of the base class, exercised end to end against the OpenAI fake:
retries and what is never retried, Retry-After, timeouts and deadlines, the circuit breaker,
the priority queue, streams that break, malformed responses, metrics and secrets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
import traceback
from typing import Any

import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.api_backends._base import APIBackend
from ipfs_accelerate.errors import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    AuthenticationError,
    BadRequestError,
    CircuitOpenError,
    ConfigurationError,
    IpfsAccelerateError,
    NotFoundError,
    PermissionDeniedError,
    ProtocolError,
    QueueFullError,
    RateLimitError,
    ServerError,
    StreamInterruptedError,
)

from ..fakes.openai_fake import OpenAIFake
from .conftest import fast, run

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test-123"
MODEL = "gpt-4o-mini"


def backend(fake: OpenAIFake, **resilience: Any) -> APIBackend:
    return create_api_backend(
        "openai",
        metadata={"api_key": KEY, "base_url": fake.url + "/v1", "resilience": fast(**resilience)},
    )


def scenario(test: Any, **fake_options: Any) -> Any:
    """Run ``test(fake, backend_factory)`` with a fresh fake (``fake_options`` for its
    constructor) and close everything after."""

    async def body() -> Any:
        async with OpenAIFake(api_key=KEY, **fake_options) as fake:
            made: list[APIBackend] = []

            def make(**resilience: Any) -> APIBackend:
                b = backend(fake, **resilience)
                made.append(b)
                return b

            try:
                return await test(fake, make)
            finally:
                for b in made:
                    await b.aclose()

    return run(body())


def chat_calls(fake: OpenAIFake) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/chat/completions"))


# ---------------------------------------------------------------- retry rules


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504, 529])
def test_retryable_statuses_are_retried(status: int) -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        fake.inject(status=status, times=2)
        reply = await b.chat(MODEL, "hi")
        assert reply.text == "Echo: hi"
        assert chat_calls(fake) == 3
        stats = b.get_stats()
        assert stats["retries"] == 2 and stats["successes"] == 1 and stats["failures"] == {}

    scenario(test)


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequestError),
        (401, AuthenticationError),
        (403, PermissionDeniedError),
        (404, NotFoundError),
        (422, BadRequestError),
    ],
)
def test_client_errors_are_never_retried(status: int, cls: type) -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=5)
        fake.inject(status=status, message="you did it wrong", times=5)
        with pytest.raises(cls) as info:
            await b.chat(MODEL, "hi")
        assert chat_calls(fake) == 1
        error = info.value
        assert error.status == status and error.provider == "openai"
        assert error.request_id and error.request_id.startswith("req_")
        assert "you did it wrong" in str(error)
        assert b.get_stats()["failures"] == {cls.__name__: 1}

    scenario(test)


def test_retries_exhausted_raise_the_last_error() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=2)
        fake.inject(status=503, times=10)
        with pytest.raises(ServerError) as info:
            await b.chat(MODEL, "hi")
        assert info.value.status == 503
        assert chat_calls(fake) == 3

    scenario(test)


def test_per_call_max_retries() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=5)
        fake.inject(status=500, times=10)
        with pytest.raises(ServerError):
            await b.chat(MODEL, "hi", max_retries=0)
        assert chat_calls(fake) == 1

    scenario(test)


def test_connection_reset_is_retried() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        fake.inject(reset=True)
        assert (await b.chat(MODEL, "hi")).text == "Echo: hi"
        assert chat_calls(fake) == 2

    scenario(test)


def test_connection_refused_is_a_typed_connection_error() -> None:
    async def body() -> None:
        b = create_api_backend(
            "openai",
            metadata={
                "api_key": KEY,
                "base_url": "http://127.0.0.1:9/v1",
                "resilience": fast(max_retries=1),
            },
        )
        try:
            with pytest.raises(APIConnectionError) as info:
                await b.chat(MODEL, "hi")
            assert info.value.provider == "openai" and "127.0.0.1:9" in str(info.value)
            assert b.get_stats()["retries"] == 1
        finally:
            await b.aclose()

    run(body())


def test_connect_timeout() -> None:
    # a listening socket whose accept backlog is full: the kernel drops further SYNs, so the
    # connection attempt hangs and only the connect timeout can end it
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))
        fillers.append(filler)

    async def body() -> None:
        b = create_api_backend(
            "openai",
            metadata={
                "api_key": KEY,
                "base_url": f"http://127.0.0.1:{port}/v1",
                "resilience": fast(connect_timeout=0.2, max_retries=1),
            },
        )
        try:
            start = time.monotonic()
            with pytest.raises(APITimeoutError) as info:
                await b.chat(MODEL, "hi")
            assert time.monotonic() - start < 2.0
            assert "connect timeout" in str(info.value)
            assert b.get_stats()["retries"] == 1  # a timeout is retryable
        finally:
            await b.aclose()

    try:
        run(body())
    finally:
        for sock in (*fillers, server):
            sock.close()


def test_retry_after_ms_and_retry_after_are_honoured() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        fake.inject(status=429, headers={"retry-after-ms": "150"})
        start = time.monotonic()
        await b.chat(MODEL, "hi")
        assert time.monotonic() - start >= 0.15
        fake.inject(status=503, headers={"retry-after": "0.2"})
        start = time.monotonic()
        await b.chat(MODEL, "hi")
        assert time.monotonic() - start >= 0.2

    scenario(test)


def test_retry_after_longer_than_allowed_raises_at_once_with_the_advice() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retry_after=1.0)
        fake.inject(status=429, headers={"retry-after": "30"})
        start = time.monotonic()
        with pytest.raises(RateLimitError) as info:
            await b.chat(MODEL, "hi")
        assert time.monotonic() - start < 1.0
        assert info.value.retry_after == 30.0
        assert chat_calls(fake) == 1

    scenario(test)


def test_x_should_retry_false_is_respected() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        fake.inject(status=500, headers={"x-should-retry": "false"})
        with pytest.raises(ServerError):
            await b.chat(MODEL, "hi")
        assert chat_calls(fake) == 1

    scenario(test)


# ---------------------------------------------------------------- timeouts and deadlines


def test_attempt_timeout_then_success() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(timeout=0.1)
        fake.inject(delay=1.0)
        start = time.monotonic()
        assert (await b.chat(MODEL, "hi")).text == "Echo: hi"
        assert time.monotonic() - start < 0.9
        assert b.get_stats()["retries"] == 1

    scenario(test)


def test_timeout_error_is_typed_and_per_call() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        fake.inject(delay=1.0, times=3)
        with pytest.raises(APITimeoutError) as info:
            await b.chat(MODEL, "hi", timeout=0.05, max_retries=0)
        assert info.value.provider == "openai"
        assert isinstance(info.value, builtins_timeout())

    scenario(test)


def builtins_timeout() -> type:
    import builtins

    return builtins.TimeoutError


def test_deadline_bounds_the_whole_call() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=10, initial_backoff=0.05, max_backoff=0.05)
        fake.inject(status=500, times=100)
        start = time.monotonic()
        with pytest.raises(IpfsAccelerateError):
            await b.chat(MODEL, "hi", deadline=0.3)
        assert time.monotonic() - start < 0.5
        fake.faults.clear()
        fake.inject(delay=2.0)
        start = time.monotonic()
        with pytest.raises(APITimeoutError):
            await b.chat(MODEL, "hi", deadline=0.2)
        assert time.monotonic() - start < 0.5

    scenario(test)


def test_every_request_ends_within_its_deadline_under_mixed_faults() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=3, max_concurrency=8, max_queue=200)
        for i in range(60):
            kind = i % 6
            if kind == 0:
                fake.inject(status=500)
            elif kind == 1:
                fake.inject(status=429, headers={"retry-after-ms": "5"})
            elif kind == 2:
                fake.inject(reset=True)
            elif kind == 3:
                fake.inject(delay=3.0)
            elif kind == 4:
                fake.inject(status=400)
        start = time.monotonic()
        results = await asyncio.gather(
            *(b.chat(MODEL, f"q{i}", timeout=0.2, deadline=1.5) for i in range(100)),
            return_exceptions=True,
        )
        assert time.monotonic() - start < 3.0
        for result in results:
            assert not isinstance(result, BaseException) or isinstance(
                result, IpfsAccelerateError
            ), repr(result)
        stats = b.get_stats()
        assert stats["requests"] == 100
        assert stats["successes"] + sum(stats["failures"].values()) == 100
        assert stats["in_flight"] == 0 and stats["queued"] == 0

    scenario(test)


# ---------------------------------------------------------------- circuit breaker


def test_circuit_opens_refuses_without_sending_then_half_open_probe_closes_it() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=0, breaker={"failure_threshold": 3, "cooldown": 0.1})
        fake.inject(status=500, times=3)
        for _ in range(3):
            with pytest.raises(ServerError):
                await b.chat(MODEL, "hi")
        assert b.get_stats()["circuit_state"] == "open"
        sent = chat_calls(fake)
        with pytest.raises(CircuitOpenError) as info:
            await b.chat(MODEL, "hi")
        assert chat_calls(fake) == sent  # refused without a request
        assert info.value.provider == "openai"
        await asyncio.sleep(0.12)
        assert b.get_stats()["circuit_state"] == "half_open"
        fake.inject(delay=0.1)
        probe = asyncio.create_task(b.chat(MODEL, "probe"))
        await asyncio.sleep(0.03)
        with pytest.raises(CircuitOpenError, match="probe"):
            await b.chat(MODEL, "second")  # only one probe in half-open
        assert (await probe).text == "Echo: probe"
        assert b.get_stats()["circuit_state"] == "closed"
        assert (await b.chat(MODEL, "after")).text == "Echo: after"

    scenario(test)


def test_client_errors_and_rate_limits_do_not_open_the_circuit() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=0, breaker={"failure_threshold": 2})
        fake.inject(status=400, times=3)
        fake.inject(status=429, times=3)
        for _ in range(6):
            with pytest.raises(APIStatusError):
                await b.chat(MODEL, "hi")
        assert b.get_stats()["circuit_state"] == "closed"

    scenario(test)


def test_retries_stop_when_the_circuit_opens() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=10, breaker={"failure_threshold": 2, "cooldown": 5})
        fake.inject(status=503, times=10)
        with pytest.raises(CircuitOpenError) as info:
            await b.chat(MODEL, "hi")
        assert chat_calls(fake) == 2
        assert isinstance(info.value.__cause__, ServerError)  # what tripped it

    scenario(test)


# ---------------------------------------------------------------- priority queue


def test_queue_full_and_priority_order_through_the_backend() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_concurrency=1, max_queue=3)
        fake.inject(delay=0.1)
        first = asyncio.create_task(b.chat(MODEL, "first"))
        await asyncio.sleep(0.02)
        tasks = [
            asyncio.create_task(b.chat(MODEL, name, priority=prio))
            for name, prio in (("low", "low"), ("normal", "normal"), ("high", "high"))
        ]
        await asyncio.sleep(0.02)
        with pytest.raises(QueueFullError):
            await b.chat(MODEL, "overflow")
        await asyncio.gather(first, *tasks)
        order = [
            r.json["messages"][-1]["content"]
            for r in fake.requests
            if r.path.endswith("/chat/completions")
        ]
        assert order == ["first", "high", "normal", "low"]
        stats = b.get_stats()
        assert stats["failures"] == {"QueueFullError": 1}
        assert stats["queue_wait_s"]["count"] == 4 and stats["queue_wait_s"]["max"] > 0.05

    scenario(test)


def test_cancelling_a_running_request_frees_its_slot() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_concurrency=1, max_queue=0)
        fake.inject(delay=5)
        stuck = asyncio.create_task(b.chat(MODEL, "stuck"))
        await asyncio.sleep(0.05)
        with pytest.raises(QueueFullError):
            await b.chat(MODEL, "no room")
        stuck.cancel()
        with pytest.raises(asyncio.CancelledError):
            await stuck
        assert (await b.chat(MODEL, "room again")).text == "Echo: room again"
        stats = b.get_stats()
        assert stats["cancelled"] == 1 and stats["in_flight"] == 0

    scenario(test)


def test_priority_must_be_known() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        with pytest.raises(IpfsAccelerateError, match="priority"):
            await make().chat(MODEL, "hi", priority="urgent")

    scenario(test)


# ---------------------------------------------------------------- streams


def test_stream_is_retried_before_its_first_chunk() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        fake.inject(status=503)
        fake.inject(reset=True)
        chunks = [c async for c in b.stream_chat(MODEL, "one two")]
        assert "".join(c.text for c in chunks) == "Echo: one two"
        assert (
            chunks[-1].done and chunks[-1].usage is not None and chunks[-1].usage.output_tokens == 3
        )
        assert chat_calls(fake) == 3 and b.get_stats()["retries"] == 2

    scenario(test)


@pytest.mark.parametrize(
    "fault",
    [
        {"truncate_after": 3},
        {"truncate_after": 3, "partial_tail": True},
        {"reset_after": 3},
        {"error_event_after": 3},
    ],
)
def test_stream_broken_after_chunks_raises_and_is_not_retried(fault: dict[str, Any]) -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=3)
        fake.inject(**fault)
        seen: list[str] = []
        with pytest.raises(StreamInterruptedError) as info:
            async for chunk in b.stream_chat(MODEL, "one two three four five"):
                assert not chunk.done
                seen.append(chunk.text)
        assert seen and "".join(seen) != "Echo: one two three four five"
        assert info.value.provider == "openai"
        assert chat_calls(fake) == 1
        stats = b.get_stats()
        assert stats["failures"] == {"StreamInterruptedError": 1} and stats["in_flight"] == 0

    scenario(test)


@pytest.mark.parametrize(
    "fault", [{"truncate_after": 3}, {"reset_after": 3}, {"error_event_after": 3}]
)
def test_stream_faults_apply_to_a_slow_stream(fault: dict[str, Any]) -> None:
    """The fake's slow streams (a pause after each event) go through the same emission, so an
    injected fault breaks them just as it breaks a fast one."""

    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=3)
        fake.inject(**fault)
        seen: list[str] = []
        with pytest.raises(StreamInterruptedError):
            async for chunk in b.stream_chat(MODEL, "one two three four five"):
                seen.append(chunk.text)
        assert seen and "".join(seen) != "Echo: one two three four five"
        assert chat_calls(fake) == 1
        slow = [c async for c in b.stream_chat(MODEL, "one two")]  # no fault left: completes
        assert "".join(c.text for c in slow) == "Echo: one two" and slow[-1].done

    scenario(test, chunk_delay=0.01)


def test_stream_without_done_is_interrupted_even_at_a_clean_eof() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        fake.inject(truncate_after=99)  # every chunk, the usage chunk too, but no [DONE]
        with pytest.raises(StreamInterruptedError, match=r"\[DONE\]"):
            _ = [c async for c in b.stream_chat(MODEL, "a b")]

    scenario(test)


def test_stalled_stream_raises_within_the_read_timeout() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(timeout=0.2)
        fake.inject(stall_after=2)
        start = time.monotonic()
        with pytest.raises(StreamInterruptedError):
            _ = [c async for c in b.stream_chat(MODEL, "a b c d")]
        assert time.monotonic() - start < 1.5

    scenario(test)


def test_silence_before_the_first_chunk_is_a_retryable_timeout() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(timeout=0.2)
        fake.inject(stall_after=0)  # headers sent, then nothing
        chunks = [c async for c in b.stream_chat(MODEL, "x")]
        assert chunks[-1].done and chat_calls(fake) == 2
        fake.inject(stall_after=0, times=5)
        with pytest.raises(APITimeoutError):
            _ = [c async for c in b.stream_chat(MODEL, "x", max_retries=1)]

    scenario(test)


def test_a_parser_bug_surfaces_as_a_protocol_error() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        from ipfs_accelerate.api_backends import _openai_compat

        b = make()
        original = _openai_compat.OpenAIChatStream._chunk

        def broken(self: Any, obj: Any, out: Any) -> None:
            raise KeyError("choices")

        _openai_compat.OpenAIChatStream._chunk = broken  # type: ignore[method-assign]
        try:
            with pytest.raises(ProtocolError, match="unexpected stream content"):
                _ = [c async for c in b.stream_chat(MODEL, "x")]
        finally:
            _openai_compat.OpenAIChatStream._chunk = original  # type: ignore[method-assign]

    scenario(test)


def test_error_event_before_first_chunk_is_retried() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        fake.inject(error_event_after=0)
        chunks = [c async for c in b.stream_chat(MODEL, "x")]
        assert "".join(c.text for c in chunks) == "Echo: x"
        assert chat_calls(fake) == 2

    scenario(test)


def test_closing_a_stream_early_frees_the_slot() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_concurrency=1, max_queue=0)
        fake.inject(stall_after=3)  # the stream cannot complete on its own
        stream = b.stream_chat(MODEL, "a b c d e f")
        first = await stream.__anext__()
        assert first.text
        with pytest.raises(QueueFullError):
            await b.chat(MODEL, "blocked")
        await stream.aclose()  # type: ignore[attr-defined]
        assert (await b.chat(MODEL, "free")).text == "Echo: free"
        assert b.get_stats()["cancelled"] == 1

    scenario(test)


def test_stream_deadline_bounds_time_to_first_chunk() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        fake.inject(delay=2.0)
        start = time.monotonic()
        with pytest.raises(APITimeoutError):
            _ = [c async for c in b.stream_chat(MODEL, "x", deadline=0.2)]
        assert time.monotonic() - start < 0.6

    scenario(test)


# ---------------------------------------------------------------- malformed responses


def test_malformed_json_is_a_protocol_error_not_a_key_error() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=3)
        fake.inject(malformed=True)
        with pytest.raises(ProtocolError) as info:
            await b.chat(MODEL, "hi")
        assert "malformed JSON" in str(info.value) and '{"id": "x"' in str(info.value)
        assert info.value.provider == "openai" and info.value.status == 200
        assert chat_calls(fake) == 1  # a malformed answer is not retried

    scenario(test)


def test_html_error_page_is_a_protocol_error_with_an_excerpt() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=0)
        fake.inject(html=True, status=502)
        with pytest.raises(ProtocolError) as info:
            await b.chat(MODEL, "hi")
        assert "HTML error page" in str(info.value) and "502 Bad Gateway" in str(info.value)
        assert info.value.status == 502 and info.value.provider == "openai"
        fake.inject(html=True, status=503)  # a gateway's transient failure is still retried
        assert (await b.chat(MODEL, "hi", max_retries=1)).text == "Echo: hi"
        fake.inject(html=True, status=403)
        with pytest.raises(ProtocolError):
            await b.chat(MODEL, "hi", max_retries=3)
        assert chat_calls(fake) == 4

    scenario(test)


def test_wrong_content_type_on_success_is_a_protocol_error() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        fake.inject(content_type="text/html")
        with pytest.raises(
            ProtocolError, match=r"expected a JSON response, got text/html.*Login required"
        ):
            await b.chat(MODEL, "hi")
        fake.inject(content_type="text/html")
        with pytest.raises(ProtocolError, match="expected a stream"):
            _ = [c async for c in b.stream_chat(MODEL, "hi")]

    scenario(test)


def test_oversized_body_is_refused() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_response_bytes=10_000)
        fake.inject(oversize=50_000)
        with pytest.raises(ProtocolError, match="exceeds the limit of 10000 bytes"):
            await b.chat(MODEL, "hi")

    scenario(test)


def test_valid_json_of_the_wrong_shape_is_a_protocol_error() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        fake.inject(status=200, body={"choices": [{"index": 0}]})
        with pytest.raises(ProtocolError, match="missing field 'message'"):
            await b.chat(MODEL, "hi")
        fake.inject(status=200, body={"object": "list"})
        with pytest.raises(ProtocolError, match="missing field 'data'"):
            await b.embed("text-embedding-3-small", ["a"])
        fake.inject(status=200, body={"data": [{"index": 0, "embedding": [0.1]}]})
        with pytest.raises(ProtocolError, match="1 embedding"):
            await b.embed("text-embedding-3-small", ["a", "b"])

    scenario(test)


# ---------------------------------------------------------------- configuration


def test_missing_key_is_a_configuration_error_before_any_request() -> None:
    with pytest.raises(ConfigurationError, match=r"openai: no API key configured.*OPENAI_API_KEY"):
        create_api_backend("openai")
    for name in ("claude", "gemini", "groq", "sample_backend"):
        with pytest.raises(ConfigurationError, match=r"no API key|no server URL"):
            create_api_backend(
                name,
                metadata={"base_url": "http://127.0.0.1:1"}
                if name != "sample_backend"
                else {"api_key": "k"},
            )


def test_missing_url_is_a_configuration_error() -> None:
    for name in ("vllm", "hf_tgi", "hf_tei", "ovms", "opea", "llvm"):
        with pytest.raises(ConfigurationError, match=f"{name}: no server URL configured"):
            create_api_backend(name)
    with pytest.raises(ConfigurationError, match="base URL must be"):
        create_api_backend("vllm", metadata={"base_url": "ftp://host"})


def test_invalid_per_call_options_are_rejected_before_sending() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        with pytest.raises(ConfigurationError, match="timeout"):
            await b.chat(MODEL, "hi", timeout=-1)
        with pytest.raises(ConfigurationError, match="max_retries"):
            await b.chat(MODEL, "hi", max_retries=1.5)
        assert fake.requests == []

    scenario(test)


# ---------------------------------------------------------------- metrics and secrets


def test_metrics_counts_latency_tokens_and_ttfc() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make()
        for i in range(5):
            await b.chat(MODEL, f"hello number {i}")
        _ = [c async for c in b.stream_chat(MODEL, "stream me")]
        fake.inject(status=404)
        with pytest.raises(NotFoundError):
            await b.chat(MODEL, "x")
        stats = b.get_stats()
        assert stats["requests"] == 7 and stats["successes"] == 6
        assert stats["failures"] == {"NotFoundError": 1}
        assert stats["tokens_in"] == 5 * 3 + 2 and stats["tokens_out"] == 5 * 4 + 3
        latency = stats["latency_s"]
        assert (
            latency["count"] == 6
            and 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
        )
        assert stats["time_to_first_chunk_s"]["count"] == 1
        assert stats["circuit_state"] == "closed"
        assert stats["endpoints"][0]["attempts"]["requests"] == 7

    scenario(test)


def test_secrets_never_leak(caplog: pytest.LogCaptureFixture) -> None:
    secret = "sk-very-secret-key-000111"

    async def body() -> None:
        async with OpenAIFake(api_key="something-else") as fake:
            b = create_api_backend(
                "openai",
                metadata={
                    "openai_api_key": secret,
                    "base_url": fake.url + "/v1",
                    "resilience": fast(),
                },
            )
            try:
                caplog.set_level(logging.DEBUG)
                fake.inject(status=500, times=1)
                with pytest.raises(AuthenticationError) as info:
                    await b.chat(MODEL, "hi")
                # the fake echoes part of the key like OpenAI does; a full echo must be scrubbed too
                fake.inject(
                    status=400, body={"error": {"message": f"bad key {secret}", "type": "x"}}
                )
                with pytest.raises(BadRequestError) as info2:
                    await b.chat(MODEL, "hi")
                texts = [
                    repr(b),
                    str(b.metadata),
                    repr(b.metadata),
                    str(b.get_stats()),
                    repr(b.endpoint),
                    str(info.value),
                    repr(info.value),
                    "".join(traceback.format_exception(info.value)),
                    str(info2.value),
                    repr(info2.value.body),
                    "".join(traceback.format_exception(info2.value)),
                    caplog.text,
                    repr(b.sync),
                ]
                for text in texts:
                    assert secret not in text
                assert "***" in str(info2.value)
                # the key did travel, in the header only
                sent = fake.last("/chat/completions")
                assert sent.headers["Authorization"] == f"Bearer {secret}"
                assert secret not in sent.path and secret not in str(sent.query)
            finally:
                await b.aclose()

    run(body())
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(create_api_backend("openai", metadata={"api_key": secret}).metadata["api_key"])
    from_resources = create_api_backend(
        "openai", resources={"openai_api_key": secret}, metadata={"max_tokens": "64"}
    )
    assert from_resources.has_api_key and secret not in repr(from_resources.resources) + repr(
        from_resources
    )
    assert from_resources.metadata["max_tokens"] == "64"  # not mistaken for a secret


def test_logs_record_retries_without_payloads(caplog: pytest.LogCaptureFixture) -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        caplog.set_level(logging.INFO, logger="ipfs_accelerate.api_backends")
        b = make()
        fake.inject(status=503)
        await b.chat(MODEL, "private prompt text")
        assert "retrying" in caplog.text and "ServerError" in caplog.text
        assert "private prompt text" not in caplog.text

    scenario(test)


# ------------------------------------------------------ the deadline watch (one timer per loop)


def test_a_short_timeout_added_after_a_long_one_still_fires_on_time() -> None:
    """The shared timer moves earlier when a shorter deadline arrives, and on to the later ones
    after firing: each attempt ends at its own timeout, whatever else is in flight."""

    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=0)
        fake.inject(delay=0.6)  # the first request: slow, but within its 5 s
        slow = asyncio.create_task(b.chat(MODEL, "slow", timeout=5.0))
        await asyncio.sleep(0.05)
        fake.inject(delay=3.0)  # the second: stuck beyond its 0.1 s
        start = time.monotonic()
        with pytest.raises(APITimeoutError, match=r"timed out \(0\.1 s\)"):
            await b.chat(MODEL, "stuck", timeout=0.1)
        assert time.monotonic() - start < 0.5
        assert (await slow).text == "Echo: slow"  # not cancelled by the other's deadline
        fake.inject(delay=0.3)
        start = time.monotonic()
        with pytest.raises(APITimeoutError):
            await b.chat(MODEL, "again", timeout=0.15)  # the timer moved on, and fires again
        assert time.monotonic() - start < 0.29

    scenario(test)


def test_cancelling_the_caller_is_a_cancellation_and_a_timeout_leaves_no_cancel_behind() -> None:
    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=0)
        fake.inject(delay=2.0)
        task = asyncio.create_task(b.chat(MODEL, "x", timeout=0.4))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # a timeout that nobody else cancels leaves the caller's task uncancelled
        fake.inject(delay=2.0)
        with pytest.raises(APITimeoutError):
            await b.chat(MODEL, "y", timeout=0.1)
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0
        await asyncio.sleep(0.01)  # no stray cancellation is delivered later either
        assert (await b.chat(MODEL, "z")).text == "Echo: z"

    scenario(test)


def test_deadline_watch_cancels_only_what_is_due() -> None:
    from ipfs_accelerate.api_backends._transport import _watch

    async def body() -> None:
        loop = asyncio.get_running_loop()
        watch = _watch(loop)
        assert _watch(loop) is watch
        started = asyncio.Event()

        async def sleeper() -> str:
            started.set()
            await asyncio.sleep(10)
            return "woke"

        long_task = asyncio.create_task(sleeper())
        short_task = asyncio.create_task(sleeper())
        done_task = asyncio.create_task(sleeper())
        await started.wait()
        long_entry = watch.add(long_task, 5.0)
        short_entry = watch.add(short_task, 0.05)
        finished = watch.add(done_task, 0.02)
        watch.remove(finished)  # removed before its deadline: never cancelled
        await asyncio.sleep(0.15)
        assert short_entry.expired and short_task.done() and short_task.cancelled()
        assert not long_entry.expired and not long_task.done()
        assert not done_task.done()
        watch.remove(long_entry)
        for task in (long_task, short_task, done_task):
            task.cancel()
        await asyncio.gather(long_task, short_task, done_task, return_exceptions=True)

    run(body())


def test_a_deadline_cancel_swallowed_below_leaves_no_cancel_behind(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """If the code under an attempt turns the deadline's cancellation into another error, the
    attempt fails with that (typed) error and the caller's task is not left cancelling."""
    from ipfs_accelerate.api_backends._transport import Endpoint

    async def stubborn_read(self: Any, resp: Any) -> bytes:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            raise OSError("read interrupted") from None
        return b""

    async def test(fake: OpenAIFake, make: Any) -> None:
        b = make(max_retries=0)
        monkeypatch.setattr(Endpoint, "read_body", stubborn_read)
        with pytest.raises(APIConnectionError, match="read interrupted"):
            await b.chat(MODEL, "x", timeout=0.1)
        current = asyncio.current_task()
        assert current is not None and current.cancelling() == 0
        monkeypatch.undo()
        assert (await b.chat(MODEL, "after")).text == "Echo: after"

    scenario(test)
