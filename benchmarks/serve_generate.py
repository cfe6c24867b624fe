"""``ipfs-accelerate serve`` generating for concurrent streams: aggregate decode tokens/s of N
concurrent streams (8 by default) against one stream, in the same run.

    python benchmarks/serve_generate.py [--shape smollm2] [--device cpu] [--dtype float32]
        [--streams 8] [--new-tokens 64] [--prompt-words 24] [--rounds 2] [--json FILE]

The checkpoint is benchmarks/_decoders.py's SmolLM2-135M-shaped (or Qwen2.5-0.5B-shaped)
decoder with seeded random weights, written by transformers into a temporary directory. A
server process (``python -m ipfs_accelerate.cli serve --model gen=DIR``, continuous batching
with ``--max-batch-size`` = streams) answers on loopback; the client streams
``/v1/completions`` (greedy, ``max_tokens`` = --new-tokens, ``logprobs: 0`` so that every
token is one SSE chunk even when its text is empty: the benchmark tokenizer decodes most ids
of the random model to nothing) with one httpx connection per stream, all started at once.

Decode tokens/s of a run: the tokens after each stream's first, summed over the streams,
over the time from the earliest first token to the latest last token (prefill and the
requests' queueing before their first token are left out; with one stream it is that
stream's decode rate). The server and the client share the machine. Rounds alternate
(1 stream, then N) and each figure is its best round. Target (issue 17): N = 8 streams
>= 4x the aggregate tokens/s of one, printed met / NOT MET.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _decoders import SHAPES, write_decoder  # beside this script
from _results import Results, add_json_option  # beside this script
from serve_load import ROOT, free_port

MODEL = "gen"
TARGET = 4.0
_WORDS = ("river", "city", "engineer", "quietly", "bridge", "storm", "morning", "harbour",
          "library", "garden", "letter", "winter", "summer", "song", "market")  # fmt: skip


@dataclass
class Stream:
    """One stream's token arrival times (monotonic seconds)."""

    times: list[float]


class GeneratorServer:
    """``ipfs-accelerate serve`` holding one decoder, in its own process."""

    def __init__(self, directory: Path, device: str, dtype: str, streams: int) -> None:
        import subprocess

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT / "src"), *filter(None, [env.get("PYTHONPATH")])]
        )
        env.pop("IPFS_ACCELERATE_API_KEY", None)
        command = [
            sys.executable, "-m", "ipfs_accelerate.cli", "serve",
            "--model", f"{MODEL}={directory}", "--port", str(self.port), "--device", device,
            "--dtype", dtype, "--max-batch-size", str(streams), "--log-level", "warning",
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )

    def wait_ready(self, timeout: float = 300.0) -> None:
        import urllib.request

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                assert self.process.stderr is not None
                raise RuntimeError(
                    f"the server exited with {self.process.returncode}: "
                    f"{self.process.stderr.read()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                time.sleep(0.5)
        raise RuntimeError("the server did not become ready in time")

    def stop(self) -> None:
        import subprocess

        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)


def prompts(count: int, words: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(_WORDS, words)) for _ in range(count)]


async def _stream(client: Any, prompt: str, new_tokens: int) -> Stream:
    body = {
        "model": MODEL, "prompt": prompt, "max_tokens": new_tokens, "temperature": 0,
        "logprobs": 0, "stream": True,
    }  # fmt: skip
    times: list[float] = []
    async with client.stream("POST", "/v1/completions", json=body) as reply:
        reply.raise_for_status()
        async for line in reply.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            chunk = json.loads(line[len("data: ") :])
            for choice in chunk.get("choices", []):
                if choice.get("logprobs") is not None:
                    times.append(time.monotonic())
    return Stream(times)


async def run_streams(url: str, texts: list[str], new_tokens: int) -> float:
    """Aggregate decode tokens/s of ``texts`` streamed at once."""
    import httpx

    limits = httpx.Limits(max_connections=len(texts) + 1)
    async with httpx.AsyncClient(base_url=url, timeout=600, limits=limits) as client:
        streams = await asyncio.gather(*(_stream(client, t, new_tokens) for t in texts))
    if any(len(s.times) < 2 for s in streams):
        raise RuntimeError("a stream ended before its second token (EOS): use another --seed")
    tokens = sum(len(s.times) - 1 for s in streams)
    start = min(s.times[0] for s in streams)
    end = max(s.times[-1] for s in streams)
    return tokens / (end - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="smollm2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--prompt-words", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    add_json_option(parser)
    args = parser.parse_args()
    if args.streams < 2 or args.rounds < 1 or args.new_tokens < 2:
        parser.error("--streams must be >= 2, --rounds >= 1 and --new-tokens >= 2")

    shape = SHAPES[args.shape]
    texts = prompts(args.streams, args.prompt_words, args.seed)
    print(
        f"serve generation: {shape.name} on {args.device!r} in {args.dtype}, "
        f"{args.new_tokens} new tokens per stream, 1 vs {args.streams} concurrent streams, "
        f"{os.cpu_count()} cores shared by server and client"
    )
    best = {1: 0.0, args.streams: 0.0}
    with tempfile.TemporaryDirectory(prefix="serve-generate-") as root:
        directory = write_decoder(Path(root) / "decoder", shape, seed=args.seed)
        server = GeneratorServer(directory, args.device, args.dtype, args.streams)
        try:
            server.wait_ready()
            # warm-up: the first steps of each batch size build caches (and graphs on webnn)
            for count in best:
                asyncio.run(run_streams(server.url, texts[:count], 8))
            for round_index in range(args.rounds):
                for count in best:
                    rate = asyncio.run(run_streams(server.url, texts[:count], args.new_tokens))
                    best[count] = max(best[count], rate)
                    print(f"  round {round_index + 1}: {count} stream(s): {rate:8.1f} tok/s")
        finally:
            server.stop()
    single, many = best[1], best[args.streams]
    ratio = many / single
    verdict = "met" if args.streams != 8 or ratio >= TARGET else "NOT MET"
    print(f"\n{'streams':>8s} {'decode tok/s (aggregate, best)':>32s}")
    print(f"{1:8d} {single:32.1f}")
    print(f"{args.streams:8d} {many:32.1f}")
    target = f" (target >= {TARGET:g}x: {verdict})" if args.streams == 8 else ""
    print(f"\n{args.streams} streams / 1 stream: {ratio:.2f}x{target}")
    recorded = Results("serve_generate")
    recorded.ratio(
        f"serve {shape.name} {args.dtype} on {args.device}: {args.streams} streams / 1 stream",
        ratio,
        single_tok_s=single,
        streams_tok_s=many,
        streams=args.streams,
    )
    recorded.write(args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
