"""The MLC-LLM (``llvm``) backend's model listing and the management its server offers:
engine metrics (Prometheus text, parsed as prometheus_client parses it) and the
``--enable-debug`` routes, against the MLC fake."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.api_backends.llvm import parse_prometheus_text
from ipfs_accelerate.errors import BadRequestError, ProtocolError, UnsupportedOpError

from ..fakes.mlc_fake import MODEL, MLCFake
from .conftest import fast, run

pytestmark = pytest.mark.timeout(60)


def _with(fake: MLCFake, test: Any) -> None:
    async def body() -> None:
        async with fake:
            backend = create_api_backend(
                "llvm",
                metadata={"llvm_api_url": fake.url + "/v1", "model": MODEL,
                          "resilience": fast(max_retries=0)},
            )  # fmt: skip
            try:
                await test(fake, backend)
            finally:
                await backend.aclose()

    run(body())


def test_models_metrics_and_debug_routes() -> None:
    async def test(fake: MLCFake, b: Any) -> None:
        (listed,) = await b.list_models()
        assert (listed.id, listed.owned_by) == (MODEL, "MLC-LLM")
        await b.chat(None, "one two three")
        await b.complete(None, "four five")
        metrics = await b.engine_metrics()
        assert fake.requests[-1].path == "/metrics"
        # "one two three" and "four five"; answers "Echo: one two three", " continued: four five"
        assert metrics["prompt_tokens_sum"] == 5 and metrics["completion_tokens_sum"] == 7
        stats = await b.engine_stats()
        assert fake.requests[-1].json == {"model": MODEL}
        assert stats == metrics
        assert await b.reset_engine() is None
        assert (await b.engine_stats())["prompt_tokens_sum"] == 0
        assert (await b.engine_metrics())["completion_tokens_sum"] == 0
        with pytest.raises(BadRequestError, match="does not enable tracing"):
            await b.dump_event_trace()
        with pytest.raises(BadRequestError, match='"other-model" is not served'):
            await b.engine_stats("other-model")

    _with(MLCFake(enable_debug=True), test)


def test_event_trace_and_a_server_without_debug_routes() -> None:
    async def traced(fake: MLCFake, b: Any) -> None:
        await b.chat(None, "hello")
        events = await b.dump_event_trace()
        assert events == [{"name": "finish", "ph": "i", "ts": 0, "pid": 1}]

    _with(MLCFake(enable_debug=True, enable_tracing=True), traced)

    async def plain(fake: MLCFake, b: Any) -> None:
        assert (await b.engine_metrics())["prompt_tokens_sum"] == 0  # /metrics is always there
        for call in (b.engine_stats, b.reset_engine, b.dump_event_trace):
            with pytest.raises(UnsupportedOpError, match="--enable-debug"):
                await call()

    _with(MLCFake(), plain)


def test_prometheus_text_parses_as_prometheus_client_parses_it() -> None:
    text = (
        "# HELP engine_decode_time_sum seconds\n"
        "# TYPE engine_decode_time_sum gauge\n"
        "engine_decode_time_sum 1.5\n"
        'decode_time{batch_size="1",note="a b"} 0.25 1700000000000\n'
        "prefill_tokens_per_s +Inf\n"
        "\n"
    )
    ours = parse_prometheus_text(text)
    theirs = {
        sample.name + ("{" + ",".join(f'{k}="{v}"' for k, v in sample.labels.items()) + "}"
                       if sample.labels else ""): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }  # fmt: skip
    assert ours == theirs
    with pytest.raises(ProtocolError, match="line 2 is not a Prometheus sample"):
        parse_prometheus_text("ok 1\nbroken\n")
