"""Continuous batching in ``serve``: concurrent generation requests decode in one running
batch per model (a real uvicorn server on loopback, the official ``openai`` SDK and httpx as
clients). Requests join at the next step and leave when done; beyond ``max_batch_size``
sequences they wait in order; a client that hangs up frees its row at the next step."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from tests.models._decoder_checkpoints import decoder_checkpoint

from .conftest import API_KEY, Running, auth

pytestmark = pytest.mark.timeout(180)

LLAMA = "tiny-llama"
#: sequences decoding at once: below the 16 concurrent requests, so that some wait
MAX_BATCH = 4


@pytest.fixture(scope="module")
def batching() -> Iterator[Running]:
    from ipfs_accelerate.serve import (
        BackgroundServer,
        ModelRegistry,
        ModelSpec,
        ServerConfig,
        create_app,
    )

    models = ModelRegistry.load([ModelSpec(str(decoder_checkpoint("llama")), name=LLAMA)], "cpu")
    config = ServerConfig(device="cpu", api_key=API_KEY, max_batch_size=MAX_BATCH)
    app = create_app(config, registry=models)
    with BackgroundServer(app) as running:
        yield Running(running.url, app, models)
    models.close()


class _CountingModel:
    """The served decoder with each forward pass recorded (its batch rows) and, when ``delay``
    is set, slowed, so that a request is still generating when the next one arrives."""

    def __init__(self, model: Any, delay: float = 0.0) -> None:
        self._model = model
        self.delay = delay
        self.rows: list[int] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def record(self, rows: int) -> None:
        self.rows.append(rows)
        time.sleep(self.delay)

    def __call__(self, input_ids: Any, *args: Any, **kwargs: Any) -> Any:
        self.record(input_ids.shape[0])
        return self._model(input_ids, *args, **kwargs)


@pytest.fixture()
def counting(batching: Running, monkeypatch: pytest.MonkeyPatch) -> _CountingModel:
    engine = batching.pipeline(LLAMA).engine
    model = _CountingModel(engine.model)
    monkeypatch.setattr(engine, "model", model)
    # decode steps go through the engine's decode graphs, which hold the model itself (on
    # webnn a step replays its captured graph without calling the model): counted there
    forward = engine.decode_graphs.forward

    def counted(cache: Any, ids: Any, valid: Any) -> Any:
        model.record(ids.shape[0])
        return forward(cache, ids, valid)

    monkeypatch.setattr(engine.decode_graphs, "forward", counted)
    return model


def _client(running: Running) -> openai.OpenAI:
    return openai.OpenAI(base_url=running.url + "/v1", api_key=API_KEY, max_retries=0)


def _in_threads(count: int, work: Any) -> list[Any]:
    """``work(i)`` for i < count, started together in threads; their results in order."""
    results: list[Any] = [None] * count
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            start.wait(timeout=30)
            results[index] = work(index)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=150)
    assert not errors, errors
    return results


def test_16_concurrent_greedy_streams_equal_their_runs_alone(
    batching: Running, counting: _CountingModel
) -> None:
    words = ["Hello there", "The cat sat", "Interest rates", "a b c", "once upon", "x y"]
    prompts: list[Any] = [
        [{"role": "user", "content": f"{words[i % len(words)]} {i}"}] for i in range(16)
    ]
    lengths = [4 + (i * 7) % 23 for i in range(16)]
    pipeline = batching.pipeline(LLAMA)
    alone = [
        pipeline.chat(p, max_new_tokens=n, temperature=0)
        for p, n in zip(prompts, lengths, strict=True)
    ]
    counting.rows.clear()

    def stream(index: int) -> str:
        chunks: Any = _client(batching).chat.completions.create(
            model=LLAMA,
            messages=prompts[index],
            max_tokens=lengths[index],
            temperature=0,
            stream=True,
        )
        return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    assert _in_threads(16, stream) == alone
    # they decoded together, never more than max_batch_size rows at once
    assert max(counting.rows) == MAX_BATCH


def test_a_short_request_started_after_a_long_one_finishes_first(
    batching: Running, counting: _CountingModel
) -> None:
    counting.delay = 0.03
    alone = batching.pipeline(LLAMA).generate_batch(["The cat"], max_new_tokens=40)[0]
    assert alone.finish_reason == "length"  # the long one runs all of its 40 steps
    long_body = {"model": LLAMA, "prompt": "The cat", "max_tokens": 40, "temperature": 0,
                 "stream": True}  # fmt: skip
    with httpx.stream(
        "POST", batching.url + "/v1/completions", json=long_body, headers=auth(), timeout=60
    ) as reply:
        lines = reply.iter_lines()
        assert next(lines).startswith("data: ")  # the long one is generating
        short = _client(batching).completions.create(
            model=LLAMA, prompt="Hello", max_tokens=3, temperature=0
        )
        steps_when_short_finished = len(counting.rows)
        rest = list(lines)
    assert short.choices[0].finish_reason in ("stop", "length")
    assert "data: [DONE]" in rest
    # the long one went on decoding after the short one had finished, in one batch with it
    assert len(counting.rows) > steps_when_short_finished
    assert 2 in counting.rows


def test_a_disconnect_frees_its_row_at_the_next_step(
    batching: Running, counting: _CountingModel
) -> None:
    counting.delay = 0.05
    served = batching.registry.get(LLAMA)
    expected = batching.pipeline(LLAMA).generate("Interest rates", max_new_tokens=40, temperature=0)
    body = {"model": LLAMA, "prompt": "The cat", "max_tokens": 50, "temperature": 0,
            "stream": True}  # fmt: skip
    remaining: list[Any] = []

    def other() -> None:
        remaining.append(
            _client(batching).completions.create(
                model=LLAMA, prompt="Interest rates", max_tokens=40, temperature=0
            )
        )

    worker = threading.Thread(target=other)
    with httpx.stream(
        "POST", batching.url + "/v1/completions", json=body, headers=auth(), timeout=60
    ) as hung_up:
        lines = hung_up.iter_lines()  # kept: a dropped iterator closes the connection
        assert next(lines).startswith("data: ")
        worker.start()
        deadline = time.monotonic() + 20
        while 2 not in counting.rows and time.monotonic() < deadline:
            time.sleep(0.01)
        assert 2 in counting.rows  # both decode together
    # the first client went away: once its request has ended, the batch has one row
    deadline = time.monotonic() + 20
    while batching.state.in_progress(served) > 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    hung_at = len(counting.rows)
    worker.join(timeout=60)
    assert remaining and remaining[0].choices[0].text == expected
    after = counting.rows[hung_at + 1 :]  # + 1: the step running when it ended
    assert after and set(after) == {1}


def test_seeded_sampling_reproduces_and_keeps_its_draws_in_a_batch(batching: Running) -> None:
    """A seeded request alone gives the same text each time; in a batch its random stream is
    its own, so it samples the same while the batched logits equal its own (the CPU here)."""

    def sampled(index: int) -> str:
        reply = _client(batching).completions.create(
            model=LLAMA, prompt=f"The cat {index % 2}", max_tokens=16, temperature=1.3,
            seed=5 + index % 2,
        )  # fmt: skip
        return reply.choices[0].text

    alone = [sampled(0), sampled(1)]
    assert [sampled(0), sampled(1)] == alone
    assert _in_threads(6, sampled) == alone * 3
