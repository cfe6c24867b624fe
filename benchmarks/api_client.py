"""Side-by-side client benchmark against one fast local OpenAI-compatible server.

Clients: raw aiohttp (as documented: ``json=`` and ``resp.json()``; the reference of every
ratio), raw aiohttp hand-tuned (pre-serialised bytes, no checks), raw httpx, the official
``openai`` SDK, litellm (when installed), and
``ipfs_accelerate.api_backends`` (openai backend with retries, circuit breaker, priority
queue and metrics all on, as they always are). The server runs in its own process (one core
for it, one for the clients on a 2-core machine) and answers from pre-built bodies, so the
numbers measure client overhead.

Prints, in one run: throughput at concurrency 32 and its ratio to raw aiohttp; streaming
time-to-first-chunk (median, p95) and its overhead over raw aiohttp; the import time of
``ipfs_accelerate.api_backends``. Targets (issue 6): >= 0.8x raw aiohttp throughput,
< 1 ms TTFC overhead, < 0.3 s import. Nothing here is asserted.

    python benchmarks/api_client.py [--requests 3000] [--concurrency 32] [--streams 300]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from _results import Results, add_json_option  # beside this script

MODEL = "gpt-4o-mini"
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark"}]

_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello benchmark, nice to meet you."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
    }
).encode()


def _chunk(
    delta: dict[str, Any], reason: str | None = None, usage: dict[str, int] | None = None
) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": [] if usage else [{"index": 0, "delta": delta, "finish_reason": reason}],
    }
    if usage:
        body["usage"] = usage
    return b"data: " + json.dumps(body).encode() + b"\n\n"


_FIRST = _chunk({"role": "assistant", "content": "Hello"})
_REST = (
    b"".join(_chunk({"content": f" word{i}"}) for i in range(8))
    + _chunk({}, "stop")
    + _chunk({}, usage={"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14})
    + b"data: [DONE]\n\n"
)


def serve(port_queue: Any) -> None:
    """The server process: chat completions (plain and SSE) and /models, nothing else."""
    from aiohttp import web

    async def chat(request: web.Request) -> web.StreamResponse:
        body = await request.read()
        if b'"stream":true' in body.replace(b" ", b""):
            response = web.StreamResponse(headers={"x-request-id": "req_bench"})
            response.content_type = "text/event-stream"
            await response.prepare(request)
            await response.write(_FIRST)
            await response.write(_REST)
            await response.write_eof()
            return response
        return web.Response(
            body=_COMPLETION, content_type="application/json", headers={"x-request-id": "req_bench"}
        )

    async def models(request: web.Request) -> web.Response:
        return web.json_response(
            {
                "object": "list",
                "data": [{"id": MODEL, "object": "model", "created": 0, "owned_by": "bench"}],
            }
        )

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", chat)
        app.router.add_get("/v1/models", models)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port_queue.put(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
        await asyncio.Event().wait()

    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {0})
    asyncio.run(main())


# ---------------------------------------------------------------------- clients


class Client:
    name = ""

    async def setup(self, base: str) -> None: ...

    async def chat(self) -> str:
        raise NotImplementedError

    async def ttfc(self) -> float:
        """Seconds from the call to the first content chunk; the stream is then read to its end."""
        raise NotImplementedError

    async def close(self) -> None: ...


class RawAiohttp(Client):
    name = "raw aiohttp (base)"

    async def setup(self, base: str) -> None:
        import aiohttp

        self.url = base + "/v1/chat/completions"
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100))
        self.headers = {"Authorization": "Bearer sk-bench", "Content-Type": "application/json"}

    async def chat(self) -> str:
        body = json.dumps({"model": MODEL, "messages": MESSAGES}).encode()
        async with self.session.post(self.url, data=body, headers=self.headers) as resp:
            data = json.loads(await resp.read())
            return str(data["choices"][0]["message"]["content"])

    async def ttfc(self) -> float:
        body = json.dumps(
            {
                "model": MODEL,
                "messages": MESSAGES,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
        ).encode()
        start = time.perf_counter()
        first = None
        async with self.session.post(self.url, data=body, headers=self.headers) as resp:
            buffer = b""
            async for data in resp.content.iter_any():
                buffer += data
                while b"\n\n" in buffer:
                    event, buffer = buffer.split(b"\n\n", 1)
                    payload = event[6:]
                    if payload == b"[DONE]":
                        continue
                    obj = json.loads(payload)
                    if (
                        first is None
                        and obj["choices"]
                        and obj["choices"][0]["delta"].get("content")
                    ):
                        first = time.perf_counter() - start
        assert first is not None
        return first

    async def close(self) -> None:
        await self.session.close()


class RawAiohttpBytes(RawAiohttp):
    """Hand-tuned: pre-serialised body and ``json.loads(await resp.read())``, no checks at all."""

    name = "raw aiohttp, hand-tuned bytes"


class RawAiohttpIdiomatic(RawAiohttp):
    """aiohttp as its documentation shows it: ``json=`` and ``await resp.json()``."""

    name = "raw aiohttp"

    async def chat(self) -> str:
        async with self.session.post(
            self.url, json={"model": MODEL, "messages": MESSAGES}, headers=self.auth
        ) as resp:
            data = await resp.json()
            return str(data["choices"][0]["message"]["content"])

    async def setup(self, base: str) -> None:
        await super().setup(base)
        self.auth = {"Authorization": "Bearer sk-bench"}


class RawHttpx(Client):
    name = "raw httpx"

    async def setup(self, base: str) -> None:
        import httpx

        self.url = base + "/v1/chat/completions"
        self.client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=100, max_keepalive_connections=100), timeout=60
        )
        self.headers = {"Authorization": "Bearer sk-bench"}

    async def chat(self) -> str:
        resp = await self.client.post(
            self.url, json={"model": MODEL, "messages": MESSAGES}, headers=self.headers
        )
        return str(resp.json()["choices"][0]["message"]["content"])

    async def ttfc(self) -> float:
        start = time.perf_counter()
        first = None
        body = {
            "model": MODEL,
            "messages": MESSAGES,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        async with self.client.stream("POST", self.url, json=body, headers=self.headers) as resp:
            async for line in resp.aiter_lines():
                if line.startswith("data: ") and line != "data: [DONE]":
                    obj = json.loads(line[6:])
                    if (
                        first is None
                        and obj["choices"]
                        and obj["choices"][0]["delta"].get("content")
                    ):
                        first = time.perf_counter() - start
        assert first is not None
        return first

    async def close(self) -> None:
        await self.client.aclose()


class OpenAISDK(Client):
    name = "openai SDK"

    async def setup(self, base: str) -> None:
        import openai

        self.client = openai.AsyncOpenAI(api_key="sk-bench", base_url=base + "/v1", max_retries=2)

    async def chat(self) -> str:
        resp = await self.client.chat.completions.create(model=MODEL, messages=MESSAGES)  # type: ignore[arg-type]
        return str(resp.choices[0].message.content)

    async def ttfc(self) -> float:
        start = time.perf_counter()
        first = None
        stream = await self.client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )  # type: ignore[arg-type]
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        assert first is not None
        return first

    async def close(self) -> None:
        await self.client.close()


class LiteLLM(Client):
    name = "litellm"

    async def setup(self, base: str) -> None:
        import litellm

        self.litellm = litellm
        self.base = base + "/v1"

    async def chat(self) -> str:
        resp = await self.litellm.acompletion(
            model=f"openai/{MODEL}", messages=MESSAGES, api_base=self.base, api_key="sk-bench"
        )
        return str(resp.choices[0].message.content)

    async def ttfc(self) -> float:
        start = time.perf_counter()
        first = None
        stream = await self.litellm.acompletion(
            model=f"openai/{MODEL}",
            messages=MESSAGES,
            api_base=self.base,
            api_key="sk-bench",
            stream=True,
        )
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter() - start
        assert first is not None
        return first


class ThisClient(Client):
    name = "ipfs_accelerate (retries+breaker+queue+metrics)"

    async def setup(self, base: str) -> None:
        from ipfs_accelerate.api_backends import create_api_backend

        self.backend = create_api_backend(
            "openai", metadata={"api_key": "sk-bench", "base_url": base + "/v1"}
        )

    async def chat(self) -> str:
        return (await self.backend.chat(MODEL, MESSAGES)).text

    async def ttfc(self) -> float:
        start = time.perf_counter()
        first = None
        async for chunk in self.backend.stream_chat(MODEL, MESSAGES):
            if first is None and chunk.text:
                first = time.perf_counter() - start
        assert first is not None
        return first

    async def close(self) -> None:
        stats = self.backend.get_stats()
        assert stats["failures"] == {}, stats["failures"]
        await self.backend.aclose()


# ---------------------------------------------------------------------- measurement


async def throughput(call: Callable[[], Awaitable[str]], total: int, concurrency: int) -> float:
    remaining = total

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await call()

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return total / (time.perf_counter() - start)


async def run_all(
    clients: list[Client], base: str, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Many short rounds interleave the clients (a, b, c, then b, c, a...) so that a load
    change on the machine hits every client alike; throughput is the median over rounds, and the
    client's CPU time per request (process time, unaffected by waiting) is reported too."""
    for client in clients:
        await client.setup(base)
    rates: dict[str, list[float]] = {c.name: [] for c in clients}
    cpu: dict[str, float] = {c.name: 0.0 for c in clients}
    ttfcs: dict[str, list[float]] = {c.name: [] for c in clients}
    per_round = max(1, args.requests // args.rounds)
    try:
        for client in clients:  # warm-up: connections, caches, lazy imports
            await throughput(client.chat, min(300, args.requests), args.concurrency)
            for _ in range(20):
                await client.ttfc()
        for round_index in range(args.rounds):
            # rotate the order each round: no client always follows the same neighbour
            shift = round_index % len(clients)
            order = clients[shift:] + clients[:shift]
            for client in order:
                started = time.process_time()
                rates[client.name].append(
                    await throughput(client.chat, per_round, args.concurrency)
                )
                cpu[client.name] += time.process_time() - started
            for client in order:
                ttfcs[client.name] += [
                    await client.ttfc() for _ in range(max(1, args.streams // args.rounds))
                ]
    finally:
        for client in clients:
            await client.close()
    results = {}
    for client in clients:
        samples = sorted(ttfcs[client.name])
        results[client.name] = {
            "rps": statistics.median(rates[client.name]),
            "cpu_us": cpu[client.name] / (per_round * args.rounds) * 1e6,
            "ttfc_p50": samples[len(samples) // 2],
            "ttfc_p95": samples[int(len(samples) * 0.95)],
        }
    return results


def import_time(module: str, repeats: int = 5) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    env = {
        **os.environ,
        "PYTHONPATH": os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src"
        ),
    }
    runs = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
            ).stdout
        )
        for _ in range(repeats)
    ]
    return statistics.median(runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--requests", type=int, default=7500, help="total per client, split over the rounds"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--streams", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=15)
    add_json_option(parser)
    args = parser.parse_args()
    recorded = Results("api_client")

    ctx = multiprocessing.get_context("spawn")
    ports = ctx.Queue()
    server = ctx.Process(target=serve, args=(ports,), daemon=True)
    server.start()
    base = f"http://127.0.0.1:{ports.get(timeout=30)}"
    if hasattr(os, "sched_setaffinity") and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, {1})

    clients: list[Client] = [RawAiohttpIdiomatic(), RawAiohttpBytes(), RawHttpx(), OpenAISDK()]
    try:
        import litellm  # noqa: F401

        clients.append(LiteLLM())
    except ImportError:
        print("litellm: not installed, skipped")
    clients.append(ThisClient())

    try:
        results = asyncio.run(run_all(clients, base, args))
    finally:
        server.terminate()
        server.join(5)

    base = results["raw aiohttp"]
    print(
        f"\nthroughput: {args.requests} chat completions per client in {args.rounds} interleaved "
        "rounds at concurrency "
        f"{args.concurrency} (median round); streaming: {args.streams} sequential streams; python "
        f"{sys.version.split()[0]}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}"
    )
    print(
        f"{'client':<48} {'req/s':>7} {'vs aiohttp':>10} {'CPU us/req':>10} {'vs aiohttp':>10} "
        f"{'TTFC p50 ms':>11} {'p95 ms':>7} {'TTFC overhead ms':>16}"
    )
    for name, r in results.items():
        print(
            f"{name:<48} {r['rps']:>7.0f} {r['rps'] / base['rps']:>9.2f}x {r['cpu_us']:>10.0f} "
            f"{base['cpu_us'] / r['cpu_us']:>9.2f}x {r['ttfc_p50'] * 1e3:>11.3f} "
            f"{r['ttfc_p95'] * 1e3:>7.3f} "
            f"{(r['ttfc_p50'] - base['ttfc_p50']) * 1e3:>+16.3f}"
        )
        if name != "raw aiohttp":
            recorded.ratio(f"{name}: req/s vs raw aiohttp", r["rps"] / base["rps"], **r)
            recorded.ratio(
                f"{name}: CPU per request, raw aiohttp / it", base["cpu_us"] / r["cpu_us"], **r
            )
    print(
        "(CPU us/req: the client process's CPU time per request; its ratio is the throughput "
        "ratio a client-bound "
        "run converges to, whatever else loads the machine)"
    )
    print(
        "\nimport ipfs_accelerate.api_backends: "
        f"{import_time('ipfs_accelerate.api_backends') * 1e3:.1f} ms "
        f"(import ipfs_accelerate alone: {import_time('ipfs_accelerate') * 1e3:.1f} ms; import "
        f"aiohttp: {import_time('aiohttp') * 1e3:.1f} ms)"
    )
    recorded.write(args.json)


if __name__ == "__main__":
    main()
