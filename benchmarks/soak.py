"""Soak: many requests through the Router over three local endpoints that misbehave.

Three vLLM protocol fakes run as their own processes (``tests/fakes/serve.py``); each
answers a share of requests (20% by default) with an injected fault drawn evenly from:
HTTP 500, HTTP 429 with ``Retry-After: 1``, a connection reset before any response, and a
3 s stall (longer than the 0.5 s attempt timeout). The client sends 5,000 requests (70%
chat, 20% streamed chat, 10% embeddings) at concurrency 64 through one Router
(least-in-flight, 4 attempts, a 5 s deadline per request, default cooldowns) over three
``vllm`` backends.

It checks, and prints:

* every request ends in a result (checked for content) or a typed error
  (``ipfs_accelerate.errors``) within its deadline (plus 0.25 s of scheduling slack); any
  other exception, a late answer or a request still running 2 s past its deadline counts
  as a violation;
* no task is left running at the end;
* no file descriptor and no socket is leaked: ``/proc/self/fd`` is counted before the
  client starts and after it closed, and must match;
* the counts (results, errors by type, faults injected by the servers), throughput and
  latency percentiles.

Peer, in the same run: the same load against a *single* misbehaving endpoint through one
plain ``vllm`` backend relying on its own retries (issue 6's pipeline, 3 retries), to show
what routing over three endpoints buys. Nothing here is asserted; the exit status is 1 when
a property above was violated.

With ``--cache exact`` the router (and the peer) get an in-process response cache, every
request asks for ``temperature=0`` (cacheable) and ``--repeat-rate`` of them (30% by default)
repeat an earlier request's prompt; the report adds the cache's hits, misses and stores, and
the same properties must hold (0 lost, 0 hung, 0 leaked descriptors).

    python benchmarks/soak.py [--requests 5000] [--concurrency 64] [--fault-rate 0.2]
                              [--deadline 5] [--seed 7] [--no-peer]
                              [--cache exact] [--repeat-rate 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _results import Results, add_json_option  # beside this script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

MODEL = "meta-llama/Llama-3.1-8B-Instruct"
EMBEDDER = "BAAI/bge-small-en-v1.5"
SLACK = 0.25  # scheduling slack on a loaded 2-core machine
HUNG_AFTER = 2.0  # a request still running this long past its deadline is hung


# --------------------------------------------------------------------------- servers


@dataclass
class Server:
    proc: subprocess.Popen[str]
    url: str
    chaos: dict[str, Any] = field(default_factory=dict)


def start_servers(count: int, rate: float, seed: int) -> list[Server]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "PYTHONUNBUFFERED": "1",
    }
    servers = []
    for i in range(count):
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.fakes.serve",
                "vllm",
                "--port",
                "0",
                "--chaos",
                str(rate),
                "--seed",
                str(seed + i),
                "--stall",
                "3",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("LISTENING"):
                servers.append(Server(proc, f"http://127.0.0.1:{int(line.split()[1])}"))
                break
        else:
            raise SystemExit(f"fake server {i} did not start")
    return servers


def stop_servers(servers: list[Server]) -> None:
    for server in servers:
        server.proc.terminate()
    for server in servers:
        out, _ = server.proc.communicate(timeout=15)
        for line in out.splitlines():
            if line.startswith("CHAOS "):
                server.chaos = json.loads(line[6:])


# --------------------------------------------------------------------------- the load


@dataclass
class Outcome:
    results: int = 0
    typed_errors: Counter[str] = field(default_factory=Counter)
    untyped_errors: Counter[str] = field(default_factory=Counter)
    wrong_results: int = 0
    late: int = 0
    hung: int = 0
    latencies: list[float] = field(default_factory=list)
    worst: float = 0.0
    why: Counter[str] = field(default_factory=Counter)

    @property
    def violations(self) -> int:
        return sum(self.untyped_errors.values()) + self.wrong_results + self.late + self.hung


def fd_counts() -> tuple[int, int]:
    fds = os.listdir("/proc/self/fd")
    sockets = 0
    for fd in fds:
        try:
            if os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                sockets += 1
        except OSError:
            pass
    return len(fds), sockets


def prompt_of(i: int, seed: int, repeat_rate: float) -> int:
    """Which request's prompt request ``i`` sends: its own, or (a ``repeat_rate`` share of
    them, spread by a multiplicative hash) an earlier one's."""
    if i and (i * 2654435761 + seed) % 1000 < repeat_rate * 1000:
        return (i * 40503 + seed) % i
    return i


async def drive(
    client: Any,
    requests: int,
    concurrency: int,
    deadline: float,
    seed: int,
    repeat_rate: float = 0.0,
    cached: bool = False,
) -> tuple[Outcome, float]:
    from ipfs_accelerate.errors import IpfsAccelerateError

    outcome = Outcome()
    counter = iter(range(requests))
    # a cached request must be deterministic to be cached at all
    sampling: dict[str, Any] = {"temperature": 0} if cached else {}

    def make(i: int) -> Callable[[], Awaitable[bool]]:
        kind = (i * 7919 + seed) % 10
        text = f"soak {prompt_of(i, seed, repeat_rate)} words here"
        if kind < 7:

            async def chat() -> bool:
                reply = await client.chat(MODEL, text, deadline=deadline, **sampling)
                return bool(reply.text == f"Echo: {text}")

            return chat
        if kind < 9:

            async def stream() -> bool:
                chunks = [
                    c async for c in client.stream_chat(MODEL, text, deadline=deadline, **sampling)
                ]
                return "".join(c.text for c in chunks) == f"Echo: {text}" and chunks[-1].done

            return stream

        async def embed() -> bool:
            vectors = await client.embed(EMBEDDER, [text, "second"], deadline=deadline)
            return len(vectors.embeddings) == 2

        return embed

    async def worker() -> None:
        for i in counter:
            op = make(i)
            started = time.monotonic()
            try:
                ok = await asyncio.wait_for(op(), deadline + HUNG_AFTER)
            except IpfsAccelerateError as exc:  # typed errors first: our TimeoutError is one too
                outcome.typed_errors[type(exc).__name__] += 1
                for note in getattr(exc, "__notes__", ()):
                    outcome.why[note.split(": ", 1)[-1].split(" after ")[-1][:60]] += 1
            except TimeoutError:
                outcome.hung += 1  # wait_for gave up: still running 2 s past its deadline
            except Exception as exc:
                outcome.untyped_errors[f"{type(exc).__name__}: {str(exc)[:80]}"] += 1
            else:
                if ok:
                    outcome.results += 1
                    outcome.latencies.append(time.monotonic() - started)
                else:
                    outcome.wrong_results += 1
            elapsed = time.monotonic() - started
            outcome.worst = max(outcome.worst, elapsed)
            if elapsed > deadline + SLACK:
                outcome.late += 1

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return outcome, time.monotonic() - started


def resilience(retries: int) -> dict[str, Any]:
    return {
        "max_retries": retries,
        "initial_backoff": 0.05,
        "max_backoff": 1.0,
        "timeout": 0.5,
        "connect_timeout": 1.0,
        "max_concurrency": 64,
        "max_queue": 4096,
        "breaker": {
            "failure_threshold": 8,
            "failure_rate_threshold": 0.6,
            "window_size": 50,
            "min_calls": 20,
            "cooldown": 1.0,
        },
    }


async def run_router(urls: list[str], args: argparse.Namespace) -> dict[str, Any]:
    from ipfs_accelerate.api_backends import Router, create_api_backend

    backends = [
        create_api_backend("vllm", metadata={"base_url": u, "resilience": resilience(0)})
        for u in urls
    ]
    router = Router(
        backends,
        strategy="least_in_flight",
        max_attempts=4,
        cooldown=0.5,
        max_cooldown=5.0,
        backoff=0.05,
        max_backoff=0.5,
        name="soak",
        cache=args.cache == "exact",
    )
    try:
        outcome, wall = await drive(
            router, args.requests, args.concurrency, args.deadline, args.seed,
            args.repeat_rate, args.cache == "exact",
        )  # fmt: skip
        stats = router.get_stats()
    finally:
        for backend in backends:
            await backend.aclose()
    return {
        "outcome": outcome,
        "wall": wall,
        "stats": stats,
        "breakers": [b.endpoint.breaker.times_opened for b in backends],
    }


async def run_peer(url: str, args: argparse.Namespace) -> dict[str, Any]:
    from ipfs_accelerate.api_backends import create_api_backend

    backend = create_api_backend(
        "vllm",
        metadata={"base_url": url, "resilience": resilience(3), "cache": args.cache == "exact"},
    )
    try:
        outcome, wall = await drive(
            backend, args.requests, args.concurrency, args.deadline, args.seed,
            args.repeat_rate, args.cache == "exact",
        )  # fmt: skip
        stats = backend.get_stats()
    finally:
        await backend.aclose()
    return {
        "outcome": outcome,
        "wall": wall,
        "stats": stats,
        "breakers": [backend.endpoint.breaker.times_opened],
    }


async def leftover_tasks() -> list[str]:
    await asyncio.sleep(0.05)  # let closing transports finish their callbacks
    current = asyncio.current_task()
    return [repr(t) for t in asyncio.all_tasks() if t is not current and not t.done()]


def phase(
    name: str, runner: Callable[[], Awaitable[dict[str, Any]]]
) -> tuple[dict[str, Any], dict[str, Any]]:
    async def body() -> tuple[dict[str, Any], list[str]]:
        result = await runner()
        return result, await leftover_tasks()

    fds_before, sockets_before = fd_counts()
    result, tasks = asyncio.run(body())
    fds_after, sockets_after = fd_counts()
    checks = {
        "fds": (fds_before, fds_after),
        "sockets": (sockets_before, sockets_after),
        "tasks": tasks,
    }
    return result, checks


def report(name: str, result: dict[str, Any], checks: dict[str, Any], requests: int) -> int:
    o: Outcome = result["outcome"]
    ended = (
        o.results
        + sum(o.typed_errors.values())
        + sum(o.untyped_errors.values())
        + o.wrong_results
        + o.hung
    )
    lat = sorted(o.latencies)

    def pct(q: float) -> str:
        return f"{lat[max(0, int(q * len(lat)) - 1)] * 1000:.1f} ms" if lat else "-"

    print(f"\n== {name}")
    print(f"requests                 {requests} (ended: {ended})")
    print(f"results (content checked) {o.results}  ({o.results / requests:.2%})")
    print(
        f"typed errors             {sum(o.typed_errors.values())}  "
        f"{dict(o.typed_errors.most_common())}"
    )
    if o.why:
        print(f"  why they ended         {dict(o.why.most_common(6))}")
    print(f"untyped errors           {sum(o.untyped_errors.values())}  {dict(o.untyped_errors)}")
    print(f"wrong results            {o.wrong_results}")
    print(f"past deadline (+{SLACK:g} s)    {o.late}   worst request {o.worst:.2f} s")
    print(f"hung (>{HUNG_AFTER:g} s past)       {o.hung}")
    print(f"tasks left running       {len(checks['tasks'])}")
    fds, sockets = checks["fds"], checks["sockets"]
    print(
        f"file descriptors         {fds[0]} before, {fds[1]} after ({fds[1] - fds[0]:+d}); "
        f"sockets {sockets[0]} -> {sockets[1]} ({sockets[1] - sockets[0]:+d})"
    )
    print(
        f"throughput               {requests / result['wall']:.0f} requests/s over "
        f"{result['wall']:.2f} s"
    )
    print(f"latency of results       p50 {pct(0.50)}  p95 {pct(0.95)}  p99 {pct(0.99)}")
    stats = result["stats"]
    print(
        f"retries/failovers        {stats.get('retries', 0)}   circuit openings "
        f"{result['breakers']}"
    )
    cache = stats.get("cache")
    if cache:
        print(
            f"response cache           hits {cache['hits']}  misses {cache['misses']}  stores "
            f"{cache['stores']}  skipped {cache['skipped']}  errors {cache['errors']}"
        )
    if "waits" in stats:
        print(
            f"router waits             {stats['waits']} totalling {stats['waited_s']} s; panic "
            f"picks {stats['panic_picks']}"
        )
    if "targets" in stats:
        for t in stats["targets"]:
            print(
                f"  target {t['endpoint']:<24} picks {t['picks']:>5}  ok {t['successes']:>5}  "
                f"cooldowns {t['cooldowns']:>3}  failures {t['failures']}"
            )
    violations = (
        o.violations + len(checks["tasks"]) + abs(fds[1] - fds[0]) + abs(sockets[1] - sockets[0])
    )
    if ended != requests:
        violations += 1
    print(f"violations               {violations}")
    return violations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--fault-rate", type=float, default=0.2)
    parser.add_argument("--deadline", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument(
        "--cache", choices=("off", "exact"), default="off",
        help="an in-process exact response cache on the router and the peer",
    )  # fmt: skip
    parser.add_argument(
        "--repeat-rate", type=float, default=None,
        help="share of requests repeating an earlier prompt (default 0.3 with --cache, else 0)",
    )  # fmt: skip
    add_json_option(parser)
    args = parser.parse_args()
    if args.repeat_rate is None:
        args.repeat_rate = 0.3 if args.cache != "off" else 0.0
    if not 0.0 <= args.repeat_rate < 1.0:
        parser.error(f"--repeat-rate must be in [0, 1), got {args.repeat_rate}")

    servers = start_servers(3, args.fault_rate, args.seed)
    try:
        urls = [s.url for s in servers]
        result, checks = phase("router", lambda: run_router(urls, args))
        peer = phase("peer", lambda: run_peer(urls[0], args)) if not args.no_peer else None
    finally:
        stop_servers(servers)
    print(
        f"soak: {args.requests} requests, concurrency {args.concurrency}, {args.fault_rate:.0%} "
        "injected faults "
        f"(500 / 429 Retry-After 1 / reset / 3 s stall), deadline {args.deadline:g} s, attempt "
        "timeout 0.5 s"
        + (f", exact cache with {args.repeat_rate:.0%} repeated prompts" if args.cache != "off"
           else "")
    )  # fmt: skip
    for i, server in enumerate(servers):
        print(
            f"server {i}: served {server.chaos.get('served')} requests, injected "
            f"{server.chaos.get('injected')}"
        )
    recorded = Results("soak")
    violations = report(
        "Router over 3 endpoints (least-in-flight, 4 attempts)", result, checks, args.requests
    )
    if peer is not None:
        violations += report(
            "peer: one plain vllm backend, 1 endpoint, its own 3 retries",
            peer[0],
            peer[1],
            args.requests,
        )
        ratio = (args.requests / result["wall"]) / (args.requests / peer[0]["wall"])
        success = result["outcome"].results / max(1, peer[0]["outcome"].results)
        print(f"\nrouter / peer: throughput x{ratio:.2f}, results x{success:.2f}")
        walls = {
            "router_wall_s": result["wall"],
            "peer_wall_s": peer[0]["wall"],
            "violations": violations,
        }
        recorded.ratio("router / peer: throughput", ratio, **walls)
        recorded.ratio("router / peer: results", success, **walls)
    cache = result["stats"].get("cache")
    if cache:
        recorded.ratio(
            "router: cache hits / requests", cache["hits"] / args.requests,
            hits=cache["hits"], misses=cache["misses"], stores=cache["stores"],
            violations=violations,
        )  # fmt: skip
    recorded.write(args.json)
    return 1 if violations else 0


if __name__ == "__main__":
    raise SystemExit(main())
