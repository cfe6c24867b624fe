"""The server as a Ray Serve deployment on a local single-node Ray cluster started here:
two replicas, requests spread over both, each replica holding its models once, a killed
replica replaced without failed requests beyond those in flight when it died, and a decoder's
chat and text completions (streamed and not) through the official openai SDK.

Ray is slow to start on two cores: one module-scoped cluster serves every test (its start
and stop are reported with ``--durations``)."""

from __future__ import annotations

import re
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest

ray = pytest.importorskip("ray")
serve = pytest.importorskip("ray.serve")

from ipfs_accelerate.serve import DEFAULT_EMBEDDING_MODEL  # noqa: E402
from tests.models._decoder_checkpoints import decoder_checkpoint  # noqa: E402

from .conftest import MINILM  # noqa: E402

pytestmark = pytest.mark.timeout(300)

CONCURRENCY = 4
LLAMA = "tiny-llama"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def ray_app() -> Iterator[str]:
    from ipfs_accelerate.serve import ModelSpec, ServerConfig
    from ipfs_accelerate.serve.ray_serve import build_app

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        port = _free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        app = build_app(
            ServerConfig(
                models=(
                    ModelSpec(DEFAULT_EMBEDDING_MODEL),
                    ModelSpec(str(decoder_checkpoint("llama")), name=LLAMA),
                ),
                device="cpu",
                max_wait_ms=2,
            ),
            num_replicas=2,
            num_cpus=0.5,
            health_check_period_s=1,
        )
        serve.run(app, name="ipfs-accelerate", route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def _embed(client: httpx.Client, text: str) -> tuple[str, list[float]]:
    reply = client.post(
        "/v1/embeddings", json={"model": MINILM, "input": text, "encoding_format": "float"}
    )
    reply.raise_for_status()
    return reply.headers["x-replica-id"], reply.json()["data"][0]["embedding"]


def _loads(text: str) -> dict[str, float]:
    return {
        m: float(v)
        for m, v in re.findall(
            r'ipfs_accelerate_serve_model_loads\{model="([^"]+)"\} ([0-9.]+)', text
        )
    }


def test_requests_spread_over_replicas_that_each_load_once(ray_app: str, registry: Any) -> None:
    texts = [f"request {i} about {'cats' if i % 2 else 'banks'}" for i in range(24)]
    expected = registry.get(MINILM).pipeline.embed(texts)
    results: dict[int, tuple[str, list[float]]] = {}

    def worker(indices: list[int]) -> None:
        with httpx.Client(base_url=ray_app, timeout=60) as client:
            for i in indices:
                results[i] = _embed(client, texts[i])

    threads = [
        threading.Thread(target=worker, args=(list(range(k, len(texts), CONCURRENCY)),))
        for k in range(CONCURRENCY)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(results) == len(texts)
    np.testing.assert_allclose([results[i][1] for i in range(len(texts))], expected, atol=2e-5)
    replicas = {replica for replica, _ in results.values()}
    assert len(replicas) == 2
    seen: dict[str, dict[str, float]] = {}
    with httpx.Client(base_url=ray_app, timeout=30) as client:
        for _ in range(40):
            reply = client.get("/metrics")
            seen[reply.headers["x-replica-id"]] = _loads(reply.text)
            if len(seen) == 2:
                break
    assert set(seen) == replicas
    assert all(
        loads == {MINILM: 1.0, LLAMA: 1.0} for loads in seen.values()
    )  # each replica loaded its model once


def test_chat_and_text_completions_streamed_and_not_on_every_replica(ray_app: str) -> None:
    """The decoder answers through the official SDK on Ray as on a plain server: the text of
    TextGenerator run here, whole and streamed (usage in the last chunk), from both replicas
    (each runs its own continuous batch)."""
    import openai

    from ipfs_accelerate.models import TextGenerator

    local = TextGenerator.from_pretrained(decoder_checkpoint("llama"), "cpu", sharing=False)
    hello: Any = [{"role": "user", "content": "Hello there"}]
    expected_chat = local.chat(hello, max_new_tokens=10, temperature=0)
    expected_text = local.generate("The story begins", max_new_tokens=10, temperature=0)
    client = openai.OpenAI(base_url=ray_app + "/v1", api_key="unused", max_retries=0)

    def chat(_: int) -> tuple[str, str | None]:
        raw = client.chat.completions.with_raw_response.create(
            model=LLAMA, messages=hello, max_tokens=10, temperature=0
        )
        return raw.headers["x-replica-id"], raw.parse().choices[0].message.content

    with ThreadPoolExecutor(CONCURRENCY) as pool:
        answers = list(pool.map(chat, range(12)))
    assert {text for _, text in answers} == {expected_chat}
    assert len({replica for replica, _ in answers}) == 2

    stream = client.chat.completions.create(
        model=LLAMA, messages=hello, max_tokens=10, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    deltas = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert deltas == expected_chat
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    usage = chunks[-1].usage
    assert usage is not None and usage.completion_tokens == 10

    whole = client.completions.create(
        model=LLAMA, prompt="The story begins", max_tokens=10, temperature=0
    )
    assert whole.choices[0].text == expected_text
    streamed = client.completions.create(
        model=LLAMA, prompt="The story begins", max_tokens=10, temperature=0, stream=True
    )
    assert "".join(c.choices[0].text for c in streamed) == expected_text


def test_a_killed_replica_is_replaced_without_losing_more_than_in_flight(ray_app: str) -> None:
    with httpx.Client(base_url=ray_app, timeout=60) as client:
        before = {_embed(client, f"warm {i}")[0] for i in range(12)}
    assert len(before) == 2
    victim = sorted(before)[0]
    (actor,) = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if a["name"].endswith(f"#{victim}")
    ]
    outcomes: list[tuple[float, str]] = []  # (time, replica id or "error: ...")
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=ray_app, timeout=60) as client:
            while not stop.is_set():
                try:
                    replica, vector = _embed(client, "load while a replica dies")
                    outcomes.append(
                        (time.monotonic(), replica if len(vector) == 384 else "error: bad vector")
                    )
                except Exception as exc:
                    outcomes.append((time.monotonic(), f"error: {type(exc).__name__}: {exc}"))

    workers = [threading.Thread(target=load) for _ in range(CONCURRENCY)]
    for worker in workers:
        worker.start()
    time.sleep(1.0)
    killed_at = time.monotonic()
    ray.kill(ray.get_actor(actor["name"], namespace=actor["namespace"]), no_restart=True)
    deadline = killed_at + 120
    replacement = None
    while time.monotonic() < deadline and replacement is None:
        time.sleep(0.2)
        replacement = next(
            (r for _, r in list(outcomes) if not r.startswith("error") and r not in before), None
        )
    time.sleep(1.0)  # the new replica serves a while alongside the survivor
    stop.set()
    for worker in workers:
        worker.join(60)
    assert replacement is not None, "no replacement replica answered within 120 s"
    failures = [r for _, r in outcomes if r.startswith("error")]
    assert len(failures) <= CONCURRENCY, failures  # at most the requests in flight when it died
    assert victim not in [
        r for t, r in outcomes if t > killed_at + 0.5
    ]  # the dead one answers no more
    served = {r for _, r in outcomes if not r.startswith("error")}
    assert replacement in served and (before - {victim}) <= served
    print(
        f"\nreplica killed: {len(outcomes)} requests, {len(failures)} failed, replacement answered "
        f"{next(t for t, r in outcomes if r == replacement) - killed_at:.1f} s after the kill"
    )


def test_the_cli_deploys_on_ray_and_cleans_up_on_ctrl_c(
    ray_app: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last in the module: ``serve --ray`` replaces the deployment of the same name, serves,
    and deletes it when interrupted (the cluster, not started by it, stays up)."""
    from typer.testing import CliRunner

    from ipfs_accelerate import cli
    from ipfs_accelerate.cli import _serve as serve_command

    seen: list[str] = []

    class Clock:
        @staticmethod
        def sleep(seconds: float) -> None:  # the command's idle loop: check the app, then "Ctrl-C"
            with httpx.Client(base_url=ray_app, timeout=30) as client:
                reply = client.get("/v1/models")
                seen.append(reply.headers["x-replica-id"])
                assert [m["id"] for m in reply.json()["data"]] == [MINILM]
            raise KeyboardInterrupt

        perf_counter = staticmethod(time.perf_counter)

    monkeypatch.setattr(serve_command, "time", Clock)
    port = ray_app.rsplit(":", 1)[1]
    result = CliRunner().invoke(
        cli.app,
        [
            "serve",
            "--ray",
            "--replicas",
            "1",
            "--num-cpus",
            "0.25",
            "--device",
            "cpu",
            "--port",
            port,
        ],
    )
    assert result.exit_code == cli.ExitCode.INTERRUPTED, result.output
    assert seen and "1 replica(s)" in result.stderr
    assert ray.is_initialized()  # it joined the running cluster, so it leaves it running
    assert "ipfs-accelerate" not in serve.status().applications
