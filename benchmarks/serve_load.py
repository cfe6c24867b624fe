"""Load test of ``ipfs-accelerate serve``: concurrent embedding requests from this project's
own client, with dynamic batching and, in the same run, with batch size 1.

For each configuration a server process is started (``python -m ipfs_accelerate.cli serve``
with the bundled all-MiniLM-L6-v2 on ``--device``, its in-progress limit raised above the
request count so that nothing is refused), warmed up, then sent ``--requests``
single-text embedding requests all at once by one ``ipfs_accelerate.api_backends`` client
(``openai`` backend on ``/v1/embeddings``, or ``hf_tei`` on ``/embed`` with ``--client
hf_tei``) whose concurrency limit is the request count, so every request is in flight at
once, and whose retries are off, so that every failure is counted. The texts are distinct
sentences of 6-40 words. A sample of the answers is checked against a local CPU embedding
of the same text (cosine > 0.999); a wrong vector counts as an error.

Printed, per configuration: errors, wall time, throughput, latency p50/p99/max, and the mean
batch the server ran (from its /metrics); then the gain of dynamic batching over batch size
1 (throughput ratio, and the latency ratios). The server and the client share the machine
(2 cores here); nothing is asserted.

    python benchmarks/serve_load.py [--requests 2000] [--device auto] [--client openai|hf_tei]
                                    [--max-batch-size 32] [--max-wait-ms 5] [--warmup 256]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from _results import Results, add_json_option  # beside this script

ROOT = Path(__file__).resolve().parents[1]
MODEL = "sentence-transformers/all-MiniLM-L6-v2"


def sentences(count: int, seed: int = 0) -> list[str]:
    """Distinct English-like sentences of 6-40 words."""
    rng = np.random.default_rng(seed)
    words = [
        "the",
        "a",
        "river",
        "city",
        "engineer",
        "quietly",
        "announced",
        "discovered",
        "bridge",
        "budget",
        "storm",
        "morning",
        "harbour",
        "library",
        "festival",
        "children",
        "garden",
        "letter",
        "experiment",
        "result",
        "winter",
        "summer",
        "song",
        "painted",
        "measured",
        "council",
        "team",
        "student",
        "bakery",
        "orchestra",
        "neighbour",
        "cat",
        "bird",
        "market",
        "rates",
        "bank",
        "planet",
        "telescope",
        "rocket",
        "satellite",
        "data",
    ]
    out = []
    for index in range(count):
        length = int(rng.integers(6, 41))
        out.append(f"{index}: " + " ".join(rng.choice(words, length)))
    return out


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Server:
    """``ipfs-accelerate serve`` in its own process."""

    def __init__(
        self, device: str, max_batch_size: int, max_wait_ms: float, max_requests: int
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
        )
        env.pop("IPFS_ACCELERATE_API_KEY", None)
        command = [
            sys.executable,
            "-m",
            "ipfs_accelerate.cli",
            "serve",
            "--port",
            str(self.port),
            "--device",
            device,
            "--max-batch-size",
            str(max_batch_size),
            "--max-wait-ms",
            str(max_wait_ms),
            "--max-concurrent-requests",
            str(max(4096, max_requests * 2)),
            "--log-level",
            "warning",
        ]
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}: "
                    f"{self.process.stderr.read()[-2000:]}"
                )  # type: ignore[union-attr]
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("the server did not become ready in time")

    def metrics(self) -> str:
        with urllib.request.urlopen(self.url + "/metrics", timeout=10) as reply:
            return reply.read().decode()  # type: ignore[no-any-return]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def batch_stats(metrics: str) -> tuple[float, float]:
    """(forward passes, inputs) from the server's embedding batch-size histogram."""
    count = re.search(
        r"ipfs_accelerate_serve_embedding_batch_size_count\{[^}]*\} ([0-9.e+]+)", metrics
    )
    total = re.search(
        r"ipfs_accelerate_serve_embedding_batch_size_sum\{[^}]*\} ([0-9.e+]+)", metrics
    )
    return (float(count.group(1)) if count else 0.0), (float(total.group(1)) if total else 0.0)


async def fire(
    url: str, client_kind: str, texts: list[str]
) -> tuple[list[float], list[str], dict[int, list[float]], float]:
    """Send one request per text, all at once; (latencies, errors, vectors by index, wall s)."""
    from ipfs_accelerate.api_backends import create_api_backend

    resilience = {
        "max_concurrency": len(texts),
        "max_queue": 0,
        "max_retries": 0,
        "timeout": 300.0,
        "connect_timeout": 60.0,
        "breaker": {"enabled": False},
    }
    if client_kind == "openai":
        backend = create_api_backend(
            "openai",
            metadata={"base_url": url + "/v1", "api_key": "sk-local", "resilience": resilience},
        )
        model: str | None = MODEL
    else:
        backend = create_api_backend("hf_tei", metadata={"base_url": url, "resilience": resilience})
        model = None
    latencies: list[float] = []
    errors: list[str] = []
    vectors: dict[int, list[float]] = {}

    async def one(index: int, text: str) -> None:
        start = time.perf_counter()
        try:
            response = await backend.embed(model, [text])
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
            return
        latencies.append(time.perf_counter() - start)
        vectors[index] = response.embeddings[0]

    async with backend:
        start = time.perf_counter()
        await asyncio.gather(*(one(i, t) for i, t in enumerate(texts)))
        wall = time.perf_counter() - start
    return latencies, errors, vectors, wall


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def run_config(
    name: str,
    args: argparse.Namespace,
    batch: int,
    texts: list[str],
    warmup: list[str],
    reference: Any,
) -> dict[str, Any]:
    server = Server(args.device, batch, args.max_wait_ms, args.requests)
    try:
        server.wait_ready()
        asyncio.run(fire(server.url, args.client, warmup))
        before = batch_stats(server.metrics())
        latencies, errors, vectors, wall = asyncio.run(fire(server.url, args.client, texts))
        after = batch_stats(server.metrics())
    finally:
        server.stop()
    rng = np.random.default_rng(1)
    sample = [
        i
        for i in rng.choice(len(texts), min(args.check, len(texts)), replace=False)
        if i in vectors
    ]
    expected = reference.embed([texts[i] for i in sample])
    for row, index in enumerate(sample):
        got = np.asarray(vectors[index], dtype=np.float32)
        cosine = float(
            got @ expected[row] / max(np.linalg.norm(got) * np.linalg.norm(expected[row]), 1e-12)
        )
        if cosine < 0.999:
            errors.append(
                f"request {index}: wrong vector (cosine {cosine:.4f} to the local embedding)"
            )
    passes, inputs = after[0] - before[0], after[1] - before[1]
    return {
        "name": name,
        "batch": batch,
        "requests": len(texts),
        "ok": len(latencies),
        "errors": errors,
        "wall": wall,
        "throughput": len(latencies) / wall,
        "p50": percentile(latencies, 50),
        "p99": percentile(latencies, 99),
        "max": max(latencies, default=float("nan")),
        "mean_batch": inputs / passes if passes else float("nan"),
        "checked": len(sample),
    }


def _finite(result: dict[str, Any]) -> dict[str, Any]:
    """A configuration's numbers for JSON (which has no NaN: none becomes null)."""
    return {
        key: None if isinstance(value, float) and not np.isfinite(value) else value
        for key, value in result.items()
        if key != "errors"
    } | {"errors": len(result["errors"])}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--client", choices=("openai", "hf_tei"), default="openai")
    parser.add_argument("--max-batch-size", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--warmup", type=int, default=256)
    parser.add_argument(
        "--check", type=int, default=200, help="answers compared with a local embedding"
    )
    add_json_option(parser)
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT / "src"))
    from ipfs_accelerate import hal
    from ipfs_accelerate.models import TextEmbedder

    device = hal.select_backend("bert").name if args.device == "auto" else args.device
    reference = TextEmbedder.from_pretrained(device="cpu")
    texts = sentences(args.requests, seed=0)
    warmup = sentences(args.warmup, seed=99)
    print(
        f"serve load test: {args.requests} concurrent single-text requests, client "
        f"{args.client!r}, "
        f"model {MODEL} on {device!r}, {os.cpu_count()} cores shared by server and client"
    )
    configs = [
        (
            f"dynamic batching (max {args.max_batch_size}, {args.max_wait_ms:g} ms)",
            args.max_batch_size,
        ),
        ("batch size 1", 1),
    ]
    results = [run_config(name, args, batch, texts, warmup, reference) for name, batch in configs]
    print(
        f"\n{'configuration':38s} {'ok':>5s} {'errors':>6s} {'wall s':>7s} {'req/s':>8s} "
        f"{'p50 ms':>8s} "
        f"{'p99 ms':>8s} {'max ms':>8s} {'batch':>6s}"
    )
    for r in results:
        print(
            f"{r['name']:38s} {r['ok']:5d} {len(r['errors']):6d} {r['wall']:7.2f} "
            f"{r['throughput']:8.1f} "
            f"{r['p50'] * 1e3:8.1f} {r['p99'] * 1e3:8.1f} {r['max'] * 1e3:8.1f} "
            f"{r['mean_batch']:6.1f}"
        )
    batched, single = results
    print(
        "\ndynamic batching vs batch size 1: throughput "
        f"{batched['throughput'] / single['throughput']:.2f}x, "
        f"p50 latency {single['p50'] / batched['p50']:.2f}x lower, p99 latency "
        f"{single['p99'] / batched['p99']:.2f}x lower"
    )
    recorded = Results("serve_load")
    measured = {"batched": _finite(batched), "batch_1": _finite(single)}
    recorded.ratio(
        "dynamic batching / batch size 1: throughput",
        batched["throughput"] / single["throughput"],
        **measured,
    )
    recorded.ratio(
        "batch size 1 / dynamic batching: p50 latency", single["p50"] / batched["p50"], **measured
    )
    recorded.ratio(
        "batch size 1 / dynamic batching: p99 latency", single["p99"] / batched["p99"], **measured
    )
    recorded.write(args.json)
    for r in results:
        print(f"checked {r['checked']} answers of {r['name']!r} against a local CPU embedding")
        for error in r["errors"][:5]:
            print(f"  error: {error}")
    return 1 if any(r["errors"] for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
