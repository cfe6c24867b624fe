"""Local text generation beside transformers, in one run: prefill and decode tokens/s.

    python benchmarks/generate.py [--rounds 2] [--only smollm2,qwen2.5] [--backends cpu,webnn]
        [--batches 1,8] [--dtypes float32,int8,int4] [--prompt 512] [--json FILE]

Checkpoints: SmolLM2-135M-shaped (Llama: hidden 576, 30 layers, 9 heads, 3 kv heads,
intermediate 1536, vocab 49152, tied) and Qwen2.5-0.5B-shaped (Qwen2: hidden 896, 24 layers,
14 heads, 2 kv heads, intermediate 4864, vocab 151936, q/k/v bias, tied), random weights
written by transformers (seeded) into a temporary directory with a small trained byte-level
BPE tokenizer; the prompts are seeded random token ids (512 per sequence), the same for
every contender.

Contenders: ``TextGenerator.from_pretrained(dir, device=..., dtype=...)`` on each backend
asked for (default cpu and webnn; webgpu only when named: lavapipe is very slow) in float32,
int8 and int4, driven through its engine (greedy, ``ignore_eos``); transformers (torch fp32,
``generate`` with its cache, greedy, ``min_new_tokens = max_new_tokens``). Prefill is the
time to the first new token; decode is the rest, tokens/s over every sequence of the batch
(batch 1 and 8). New tokens a sequence, chosen so that a run stays near ten minutes on a
2-core machine (every contender's decode is one sequential token loop): SmolLM2-shaped 128 at
batch 1 and 32 at batch 8; Qwen2.5-0.5B-shaped 32 and 8 (its fp32 contenders take ~0.2 s a
token here). Tokens/s over fewer steps reads a cache of nearly the prompt's length throughout,
as the first steps of a longer generation do. ``--batches 1`` and ``--only`` shorten a run.

Decode at batch 1 reads every weight once per token, so its ceiling is the memory bandwidth
(a numpy copy of a 512 MB array, bytes read + written per second) over the bytes of weights
one step reads in that dtype (everything but the token embedding, quantized scales
included); each contender's share of its dtype's ceiling is printed.

onnxruntime-genai (in the test extra with ``onnx_ir``, which its model builder imports):
``python -m onnxruntime_genai.models.builder`` turns the same checkpoint (offline) into its
ONNX model for the cpu execution provider, int4 (``-p int4``: MatMulNBits, blocks of 32) when
int4 is among --dtypes and float32 when float32 is; each races beside our rows of its dtype
(``og.Generator``: ``append_tokens`` is the prefill, then one ``generate_next_token`` a new
token; ``--no-genai`` leaves it out). Where it does not import or build, the row says why.

Contenders alternate in rounds (2 by default) and each figure is the contender's best round
(the machine may be shared); ours load one dtype at a time (every backend of it), racing a
transformers model that stays loaded, whose figure is its best round over all of them.
Targets (issue 17), printed met / NOT MET: decode at batch 1,
float32 >= 1.2x transformers and >= 70% of the bandwidth ceiling, int8 >= 2.5x and int4 >=
3.5x transformers fp32, int4 >= 1.0x onnxruntime-genai int4; prefill >= 1.2x transformers.
"""

from __future__ import annotations

import argparse
import gc
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _decoders import (  # beside this script
    SHAPES,
    DecoderShape,
    decode_weight_bytes,
    generation_targets,
    memory_bandwidth,
    write_decoder,
)
from _precision import cpu_info
from _results import Results, add_json_option

from ipfs_accelerate import hal
from ipfs_accelerate.errors import BackendFallbackWarning

#: what this run measured, written by --json
RESULTS = Results("generate")
PEER = "transformers float32"


@dataclass
class Timing:
    """The best prefill and decode seconds of one contender over the rounds."""

    prefill_s: float = float("inf")
    decode_s: float = float("inf")

    def add(self, prefill_s: float, decode_s: float) -> None:
        self.prefill_s = min(self.prefill_s, prefill_s)
        self.decode_s = min(self.decode_s, decode_s)


#: one generation: (seconds to the first new token, seconds for the rest)
Run = Callable[[np.ndarray, int], tuple[float, float]]


def ours(pipeline: Any) -> Run:
    """Our engine over token prompts: the first step's events mark the end of the prefill."""
    from ipfs_accelerate.models.generation import SamplingParams

    def run(prompts: np.ndarray, new_tokens: int) -> tuple[float, float]:
        params = SamplingParams(max_new_tokens=new_tokens, temperature=0, ignore_eos=True)
        start = time.perf_counter()
        steps = pipeline.engine.run(prompts.tolist(), [params] * len(prompts))
        next(steps)
        first = time.perf_counter()
        count = 1 + sum(1 for _ in steps)
        assert count == new_tokens, f"{count} steps for {new_tokens} tokens"
        return first - start, time.perf_counter() - first

    return run


def transformers_run(model: Any) -> Run:
    """transformers' ``generate``; a logits processor notes when the first token's logits
    arrive (after the prefill forward), as our engine's first step does."""
    import torch
    from transformers import LogitsProcessor, LogitsProcessorList

    class FirstLogits(LogitsProcessor):
        at: float | None = None

        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if self.at is None:
                self.at = time.perf_counter()
            return scores

    def run(prompts: np.ndarray, new_tokens: int) -> tuple[float, float]:
        ids = torch.from_numpy(prompts)
        mark = FirstLogits()
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=False,
                max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0,
                logits_processor=LogitsProcessorList([mark]),
            )  # fmt: skip
        end = time.perf_counter()
        assert out.shape[1] == prompts.shape[1] + new_tokens and mark.at is not None
        return mark.at - start, end - mark.at

    return run


def load_peer(path: Path) -> tuple[Run, int]:
    """transformers' model of the checkpoint, and the fp32 weight bytes one decode step reads
    (the tied output projection counted once, the embedding not)."""
    import torch
    import transformers

    peer = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    size = sum(p.numel() * 4 for n, p in peer.named_parameters() if "embed_tokens" not in n)
    if peer.config.tie_word_embeddings:
        size += peer.lm_head.weight.numel() * 4
    return transformers_run(peer), int(size)


#: our dtype -> the onnxruntime-genai model builder's precision
GENAI_PRECISIONS = {"float32": "fp32", "int4": "int4"}


def genai_run(model: Any) -> Run:
    """onnxruntime-genai's generator: ``append_tokens`` runs the prefill; each
    ``generate_next_token`` picks a token and runs its step (new_tokens - 1 steps after the
    prefill, as ours and transformers' do)."""
    import onnxruntime_genai as og

    def run(prompts: np.ndarray, new_tokens: int) -> tuple[float, float]:
        total = prompts.shape[1] + new_tokens
        params = og.GeneratorParams(model)
        params.set_search_options(
            max_length=total, min_length=total, do_sample=False, batch_size=len(prompts)
        )
        generator = og.Generator(model, params)
        start = time.perf_counter()
        generator.append_tokens(prompts.astype(np.int32))
        first = time.perf_counter()
        for _ in range(new_tokens - 1):
            generator.generate_next_token()
        end = time.perf_counter()
        assert len(generator.get_sequence(0)) == total - 1
        return first - start, end - first

    return run


def load_genai(path: Path, dtype: str, workdir: Path) -> dict[str, Run]:
    """onnxruntime-genai's model of the checkpoint in ``dtype`` (built once), or nothing with
    the reason printed."""
    precision = GENAI_PRECISIONS.get(dtype)
    key = f"onnxruntime-genai {dtype}"
    if precision is None:
        return {}
    try:
        import onnxruntime_genai as og
    except ImportError as exc:
        print(f"  {key}: not run ({exc})")
        return {}
    out = workdir / f"genai-{precision}"
    command = [
        sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(path), "-m",
        str(path), "-o", str(out), "-p", precision, "-e", "cpu", "-c", str(workdir / "cache"),
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    print(f"  {key}: building with its model builder ...", flush=True)
    built = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if built.returncode != 0:
        print(f"  {key}: not run (the builder failed: {built.stderr.strip()[-500:]})")
        return {}
    return {key: genai_run(og.Model(str(out)))}


def load_ours(path: Path, backends: list[str], dtype: str) -> tuple[dict[str, Run], dict[str, int]]:
    """Our pipeline on every backend that loads ``dtype`` (one that cannot is reported and left
    out), and the weight bytes one decode step of each reads."""
    from ipfs_accelerate.models import TextGenerator

    runs: dict[str, Run] = {}
    weight_bytes: dict[str, int] = {}
    for backend in backends:
        key = f"ipfs_accelerate[{backend}] {dtype}"
        try:
            pipeline = TextGenerator.from_pretrained(path, device=backend, dtype=dtype)
        except Exception as exc:  # reported: the table shows what did not run and why
            print(f"  {key}: not run ({type(exc).__name__}: {exc})")
            continue
        runs[key] = ours(pipeline)
        weight_bytes[key] = decode_weight_bytes(pipeline.model)
    return runs, weight_bytes


def race(
    runs: dict[str, Run], prompts: np.ndarray, new_tokens: int, rounds: int, pause: float = 0.2
) -> dict[str, Timing]:
    """Best prefill and decode time of each contender over alternating rounds, after a
    warm-up generation of a few tokens (graphs compiled, caches allocated)."""
    for run in runs.values():
        run(prompts, min(new_tokens, 4))
    best = {name: Timing() for name in runs}
    for index in range(rounds):
        start = time.perf_counter()
        for name, run in runs.items():
            time.sleep(pause)
            best[name].add(*run(prompts, new_tokens))
        print(f"  round {index + 1}/{rounds}: {time.perf_counter() - start:.0f} s", flush=True)
    return best


def report(
    shape: DecoderShape,
    batch: int,
    prompt_length: int,
    times: dict[str, Timing],
    ceilings: dict[str, float],
) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
    """Print one (model, batch) table; returns prefill and decode tokens/s and the share of
    the ceiling (batch 1) per contender."""
    new = shape.new_tokens(batch)
    prefill = {k: batch * prompt_length / t.prefill_s for k, t in times.items()}
    decode = {k: batch * (new - 1) / t.decode_s for k, t in times.items()}
    print(
        f"\n{shape.name}, batch {batch}: prefill {prompt_length} tokens, decode {new} new tokens"
        " a sequence (greedy)"
    )
    head = f"  {'contender':32} {'prefill tok/s':>13} {'vs peer':>8} {'decode tok/s':>12}"
    print(head + f" {'vs peer':>8}" + ("  share of ceiling" if batch == 1 else ""))
    shares: dict[str, float] = {}
    for key in times:
        p_ratio, d_ratio = prefill[key] / prefill[PEER], decode[key] / decode[PEER]
        line = (
            f"  {key:32} {prefill[key]:13.1f} {p_ratio:7.2f}x {decode[key]:12.2f} {d_ratio:7.2f}x"
        )
        if batch == 1 and key in ceilings:
            shares[key] = decode[key] / ceilings[key]
            line += f"  {shares[key]:6.1%} of {ceilings[key]:.1f} tok/s"
        print(line)
        if key == PEER:
            continue
        label = f"{shape.name} b{batch}: {key} vs {PEER}"
        RESULTS.ratio(f"{label} (prefill)", p_ratio, tokens_per_s=prefill[key],
                      peer_tokens_per_s=prefill[PEER])  # fmt: skip
        RESULTS.ratio(f"{label} (decode)", d_ratio, tokens_per_s=decode[key],
                      peer_tokens_per_s=decode[PEER], ceiling_share=shares.get(key))  # fmt: skip
    return prefill, decode, shares


def bench(
    shape: DecoderShape, args: argparse.Namespace, backends: list[str], bandwidth: float
) -> None:
    """One model: transformers stays loaded, our contenders one dtype at a time (all of a
    0.5B model's at once do not fit in memory here), each dtype's rounds alternating with
    transformers'; transformers' figure is its best round over all of them."""
    rng = np.random.default_rng(17)
    vocab = int(shape.config["vocab_size"])
    # ids 1.. : 0 is the end-of-sequence token, which nobody should be handed mid-prompt
    prompts = {
        b: rng.integers(1, vocab, size=(b, args.prompt), dtype=np.int64) for b in args.batches
    }
    times: dict[int, dict[str, Timing]] = {b: {} for b in args.batches}
    with tempfile.TemporaryDirectory() as tmp:
        print(f"\n== {shape.name}: writing the checkpoint ...", flush=True)
        path = write_decoder(Path(tmp) / "model", shape)
        peer, peer_bytes = load_peer(path)
        weight_bytes = {PEER: peer_bytes}
        for dtype in args.dtypes:
            runs, sizes = load_ours(path, backends, dtype)
            if args.genai:
                runs.update(load_genai(path, dtype, Path(tmp)))
            weight_bytes.update(sizes)
            print(f"  {dtype}: racing {', '.join(runs)} beside {PEER}", flush=True)
            for batch in args.batches:
                got = race(
                    {PEER: peer, **runs}, prompts[batch], shape.new_tokens(batch), args.rounds
                )
                peer_got = got.pop(PEER)
                times[batch].setdefault(PEER, Timing()).add(peer_got.prefill_s, peer_got.decode_s)
                times[batch].update(got)
            del runs
            gc.collect()
    ceilings = {k: bandwidth * 1e9 / b for k, b in weight_bytes.items()}
    for key, size in weight_bytes.items():
        print(f"  {key}: {size / 1e6:.1f} MB of weights a decode step, ceiling "
              f"{ceilings[key]:.1f} tok/s")  # fmt: skip
    for batch in args.batches:
        ordered = {PEER: times[batch].pop(PEER), **times[batch]}
        prefill, decode, shares = report(shape, batch, args.prompt, ordered, ceilings)
        if batch == 1:
            print(f"  targets ({shape.name}, batch 1):")
            for verdict in generation_targets(decode, prefill, shares):
                print("   ", verdict.describe())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default=",".join(SHAPES), help="models: smollm2,qwen2.5")
    parser.add_argument("--backends", default="cpu,webnn", help="comma-separated")
    parser.add_argument("--dtypes", default="float32,int8,int4", type=lambda s: s.split(","))
    parser.add_argument("--batches", default="1,8", type=lambda s: [int(b) for b in s.split(",")])
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens a sequence")
    parser.add_argument(
        "--no-genai", dest="genai", action="store_false", help="leave onnxruntime-genai out"
    )
    add_json_option(parser)
    args = parser.parse_args()
    import torch

    unknown = sorted(set(args.only.split(",")) - set(SHAPES))
    if unknown:
        parser.error(f"unknown model(s) {', '.join(unknown)}; known: {', '.join(SHAPES)}")
    available = [info.name for info in hal.available_backends()]
    backends = [b for b in args.backends.split(",") if b in available]
    print(
        f"machine: {os.cpu_count()} cores; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads"
    )
    print(cpu_info().describe())
    print(f"backends: {', '.join(backends)} (available: {', '.join(available)})")
    bandwidth = memory_bandwidth()
    print(f"memory bandwidth (numpy copy of 512 MB, read + write): {bandwidth:.1f} GB/s")
    warnings.simplefilter("always", BackendFallbackWarning)
    if "webnn" in backends:
        # three dtypes of a decoder hold a prefill graph and a step graph per window bucket
        # each; the default graph cache would evict them between the alternating rounds
        webnn = hal.get_backend("webnn")
        webnn.cache_size, webnn.cache_bytes = 256, 16 << 30  # type: ignore[attr-defined]
    for name in args.only.split(","):
        bench(SHAPES[name], args, backends, bandwidth)
    RESULTS.write(args.json)


if __name__ == "__main__":
    main()
