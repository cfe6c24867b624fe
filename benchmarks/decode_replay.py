"""Decode steps on webnn: replayed from the captured graph vs traced through the model's ops.

The same pipeline (SmolLM2-135M-shaped by default, random weights written by transformers)
decodes the same prompts greedily twice per round, once with the decode steps replayed
(``engine.decode_graphs``) and once traced (capture turned off: every op goes through the op
layer and the trace is walked to find the compiled graph), rounds alternated, best of each.
Prints decode tokens/s of both and their ratio, per dtype and batch, and the Python time of
one step from a cProfile run (the time not spent in ONNX Runtime's ``run``): what replay
removes.

    python benchmarks/decode_replay.py --dtypes float32,int8,int4 --batches 1,8 --rounds 2
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from _decoders import SHAPES, write_decoder  # beside this script
from _results import Results, add_json_option

from ipfs_accelerate import hal
from ipfs_accelerate.models import TextGenerator
from ipfs_accelerate.models.generation import SamplingParams


def decode_seconds(pipeline: Any, prompts: np.ndarray, new_tokens: int) -> float:
    """Seconds for the steps after the first token (the prefill excluded)."""
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, ignore_eos=True)
    steps = pipeline.engine.run(prompts.tolist(), [params] * len(prompts))
    next(steps)
    start = time.perf_counter()
    count = 1 + sum(1 for _ in steps)
    assert count == new_tokens, f"{count} steps for {new_tokens} tokens"
    return time.perf_counter() - start


def python_per_step(pipeline: Any, prompts: np.ndarray, new_tokens: int) -> tuple[float, float]:
    """(total, ONNX Runtime run) milliseconds per decode step under cProfile."""
    profile = cProfile.Profile()
    params = SamplingParams(max_new_tokens=new_tokens, temperature=0, ignore_eos=True)
    steps = pipeline.engine.run(prompts.tolist(), [params] * len(prompts))
    next(steps)
    profile.enable()
    start = time.perf_counter()
    for _ in steps:
        pass
    total = time.perf_counter() - start
    profile.disable()
    stats = pstats.Stats(profile)
    run = sum(
        entry[3]  # cumulative time
        for (filename, _, name), entry in stats.stats.items()  # type: ignore[attr-defined]
        # the session's run: Python's, or the C++ one it is bound to
        if (name == "run" and "onnxruntime" in filename)
        or (filename == "~" and "onnxruntime" in name and name.endswith("run>"))
    )
    per_step = 1000 / (new_tokens - 1)
    return total * per_step, run * per_step


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="smollm2", choices=sorted(SHAPES))
    parser.add_argument("--dtypes", default="float32,int8,int4", type=lambda s: s.split(","))
    parser.add_argument("--batches", default="1,8", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--prompt", type=int, default=32, help="prompt tokens a sequence")
    parser.add_argument("--tokens", type=int, default=48, help="new tokens a sequence")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--cache-gb",
        type=float,
        default=8.0,
        help="webnn compiled-graph cache bound: both modes' graphs must fit, or the timed "
        "rounds recompile what the other mode evicted (float32 graphs hold ~0.6 GB each)",
    )
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("decode_replay")
    backend = hal.get_backend("webnn")
    backend.cache_bytes = int(args.cache_gb * (1 << 30))
    shape = SHAPES[args.model]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_decoder(Path(tmp) / args.model, shape)
        print(f"{shape.name}, webnn, prompt {args.prompt}, {args.tokens} new tokens")
        print(
            f"{'dtype':8} {'batch':>5} {'replayed tok/s':>15} {'traced tok/s':>13} "
            f"{'ratio':>6} {'ms/step replayed (ORT run)':>27} {'traced (ORT run)':>17}"
        )
        for dtype in args.dtypes:
            backend.clear_cache()  # the previous dtype's graphs
            pipeline = TextGenerator.from_pretrained(path, device="webnn", dtype=dtype)
            graphs = pipeline.engine.decode_graphs
            for batch in args.batches:
                vocab = shape.config["vocab_size"]
                prompts = rng.integers(1, vocab, (batch, args.prompt))
                best = {True: float("inf"), False: float("inf")}
                for replayed in (True, False):  # warm-up: compile every bucket's graphs
                    graphs.enabled = replayed
                    decode_seconds(pipeline, prompts, args.tokens)
                compilations = backend.stats.compilations
                for _ in range(args.rounds):
                    for replayed in (True, False):
                        graphs.enabled = replayed
                        seconds = decode_seconds(pipeline, prompts, args.tokens)
                        best[replayed] = min(best[replayed], seconds)
                profiles = {}
                for replayed in (True, False):
                    graphs.enabled = replayed
                    profiles[replayed] = python_per_step(pipeline, prompts, args.tokens)
                graphs.enabled = True
                if backend.stats.compilations != compilations:
                    extra = backend.stats.compilations - compilations
                    print(f"  ({extra} compilations in the timed rounds)")
                tokens = batch * (args.tokens - 1)
                rate = {k: tokens / v for k, v in best.items()}
                ratio = rate[True] / rate[False]
                (r_all, r_run), (t_all, t_run) = profiles[True], profiles[False]
                print(
                    f"{dtype:8} {batch:>5} {rate[True]:>15.1f} {rate[False]:>13.1f} "
                    f"{ratio:>5.2f}x {r_all:>16.1f} ({r_run:5.1f}) {t_all:>10.1f} ({t_run:5.1f})"
                )
                results.ratio(
                    f"{dtype} batch {batch}: replayed/traced decode tok/s",
                    ratio,
                    replayed_tok_s=rate[True],
                    traced_tok_s=rate[False],
                    replayed_step_ms=r_all,
                    replayed_ort_run_ms=r_run,
                    traced_step_ms=t_all,
                    traced_ort_run_ms=t_run,
                )
    results.write(args.json)


if __name__ == "__main__":
    main()
