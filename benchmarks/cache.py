"""Response cache: how long a cache hit takes beside the uncached call it saves.

One OpenAI protocol fake runs as its own process (``tests/fakes/serve.py``) on loopback, and
a ``redis-server`` in a temporary directory on a free loopback port (left out when it is not
installed). Contenders, each the same ``chat(model, prompt, temperature=0)`` on its own
backend:

* uncached: the request goes to the fake (the peer every hit is compared with);
* memory hit: the in-process LRU (:class:`MemoryStore`);
* sqlite hit: a sqlite file in the temporary directory (:class:`SqliteStore`);
* redis hit: the Redis server on loopback (:class:`RedisStore`).

Each round times ``--calls`` calls of every contender in turn (the order alternates between
rounds) after one warm-up call that stores the answer; the figure of a contender is its best
p50 over the rounds. Printed: p50 and p95 per contender, the ratio uncached / hit, and the
issue's targets (memory hit <= 50 us p50, Redis hit <= 1 ms p50) as met or not. Nothing is
asserted.

    python benchmarks/cache.py [--rounds 5] [--calls 300] [--json FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from _results import Results, add_json_option  # beside this script

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

MODEL = "gpt-4o-mini"
PROMPT = "How long does a cached answer take?"
TARGETS_US = {"memory hit": 50.0, "redis hit": 1000.0}


@contextmanager
def fake_server() -> Iterator[str]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
        "PYTHONUNBUFFERED": "1",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.serve", "openai", "--port", "0"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("LISTENING"):
                yield f"http://127.0.0.1:{int(line.split()[1])}/v1"
                break
        else:
            raise SystemExit("the fake server did not start")
    finally:
        proc.terminate()
        proc.wait(15)


@contextmanager
def redis_server(workdir: str) -> Iterator[str | None]:
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    try:
        import redis  # noqa: F401
    except ImportError:
        exe = ""
    if not os.path.exists(exe):
        print("redis-server or redis-py missing: no Redis figure (ensure_system_deps.sh)")
        yield None
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", workdir, "--save", "",
         "--appendonly", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(15)


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def measure(args: argparse.Namespace, url: str, redis_url: str | None, workdir: str) -> Any:
    from ipfs_accelerate.api_backends import create_api_backend
    from ipfs_accelerate.api_backends.cache import RedisStore, ResponseCache, SqliteStore

    caches: dict[str, ResponseCache | None] = {
        "uncached": None,
        "memory hit": ResponseCache(),
        "sqlite hit": ResponseCache(SqliteStore(os.path.join(workdir, "bench.db"))),
    }
    if redis_url is not None:
        caches["redis hit"] = ResponseCache(RedisStore(redis_url, timeout=1.0))
    backends = {
        name: create_api_backend(
            "openai", metadata={"api_key": "sk-bench", "base_url": url, "cache": cache}
        )
        for name, cache in caches.items()
    }
    p50: dict[str, list[float]] = {name: [] for name in backends}
    p95: dict[str, list[float]] = {name: [] for name in backends}
    try:
        for backend in backends.values():  # warm-up: opens connections, stores the answer
            answer = await backend.chat(MODEL, PROMPT, temperature=0)
            assert answer.text == f"Echo: {PROMPT}"
        for name, backend in backends.items():
            answer = await backend.chat(MODEL, PROMPT, temperature=0)
            if (answer.cache is None) != (name == "uncached"):
                raise SystemExit(f"{name}: expected {'a miss' if name == 'uncached' else 'a hit'}")
        names = list(backends)
        for round_ in range(args.rounds):
            order = names if round_ % 2 == 0 else names[::-1]
            for name in order:
                backend = backends[name]
                samples = []
                for _ in range(args.calls):
                    start = time.perf_counter()
                    await backend.chat(MODEL, PROMPT, temperature=0)
                    samples.append(time.perf_counter() - start)
                p50[name].append(percentile(samples, 0.5))
                p95[name].append(percentile(samples, 0.95))
    finally:
        for backend in backends.values():
            await backend.aclose()
        for cache in caches.values():
            if cache is not None:
                await cache.aclose()
    return {name: (min(p50[name]), min(p95[name])) for name in backends}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=300)
    add_json_option(parser)
    args = parser.parse_args()
    if args.rounds < 1 or args.calls < 1:
        parser.error("--rounds and --calls must be >= 1")

    with (
        tempfile.TemporaryDirectory() as workdir,
        fake_server() as url,
        redis_server(workdir) as redis_url,
    ):
        figures = asyncio.run(measure(args, url, redis_url, workdir))

    recorded = Results("cache")
    base50 = figures["uncached"][0]
    print(f"cache: chat(temperature=0), best p50 of {args.rounds} rounds x {args.calls} calls")
    print(f"{'contender':<12} {'p50':>10} {'p95':>10} {'uncached/hit':>13}  target")
    for name, (f50, f95) in figures.items():
        ratio = base50 / f50
        target = TARGETS_US.get(name)
        verdict = ""
        if target is not None:
            verdict = f"<= {target:g} us: {'met' if f50 * 1e6 <= target else 'NOT met'}"
        shown = "-" if name == "uncached" else f"x{ratio:.1f}"
        print(f"{name:<12} {f50 * 1e6:>8.1f}us {f95 * 1e6:>8.1f}us {shown:>13}  {verdict}")
        if name != "uncached":
            recorded.ratio(
                f"uncached / {name}: p50", ratio, uncached_p50_s=base50, hit_p50_s=f50,
                hit_p95_s=f95,
            )  # fmt: skip
    recorded.write(args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
