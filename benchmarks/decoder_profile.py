"""Where a webnn decoder's time goes: ONNX Runtime's profile of our prefill graph and of a
replayed decode step, per op type, beside torch.profiler on transformers' prefill of the same
prompt (issue 17).

    python benchmarks/decoder_profile.py [--dtype float32|int8|int4] [--layers 4]
                                         [--prompt 512] [--runs 3] [--keep DIR] [--json FILE]

The checkpoint is SmolLM2-135M-shaped (benchmarks/_decoders.py) with ``--layers`` decoder
layers (4 by default: the splits per layer are those of the 30-layer model, the fixed cost of
the tied head aside), seeded random weights written by transformers. Ours: the graphs a
greedy generation of a few tokens from a seeded ``--prompt``-token prompt computes, recorded
at dispatch: the prefill (the first) and a replayed decode step (the last), each written
self-contained and run under ONNX Runtime's profiler on one thread (each node's smallest
time over ``--runs`` runs after a first; benchmarks/webnn_profile.py ``node_times``).
transformers (torch fp32, one thread): the prefill forward (``logits_to_keep=1``, as our
graph computes only the last position's logits) under torch.profiler, self CPU time per
aten op, the smallest of ``--runs`` forwards' totals. One thread on both sides measures work
rather than how well a pool was scheduled; on a shared machine the splits are meaningful, the
totals less so. The ratio written is transformers' prefill time over our prefill kernel time.
"""

from __future__ import annotations

import argparse
import collections
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _decoders import SHAPES, DecoderShape, write_decoder  # beside this script
from _results import Results, add_json_option
from webnn_profile import node_times

Array = np.ndarray[Any, Any]
#: op types counted as the matrix products (weights and attention's own)
PRODUCTS = frozenset({"Gemm", "MatMul", "FusedMatMul", "MatMulNBits", "MatMulIntegerToFloat"})


def our_graphs(
    path: Path, dtype: str, prompt: Array, folder: Path
) -> dict[str, tuple[Path, dict[str, Array], bool]]:
    """The prefill graph and the last decode step's, each written to ``folder`` with the
    values it was run with and whether it runs with denormals flushed."""
    import onnx

    from ipfs_accelerate.models import TextGenerator
    from ipfs_accelerate.models.generation import SamplingParams
    from ipfs_accelerate.webnn import _context
    from ipfs_accelerate.webnn._onnx._model import embed_constants

    pipeline = TextGenerator.from_pretrained(path, device="webnn", dtype=dtype)
    computed: list[tuple[Any, dict[str, Array]]] = []
    real = _context.MLContext.compute

    def spy(context: Any, graph: Any, inputs: Any) -> Any:
        computed.append((graph, dict(inputs)))
        return real(context, graph, inputs)

    params = SamplingParams(max_new_tokens=4, temperature=0, ignore_eos=True)
    _context.MLContext.compute = spy  # type: ignore[method-assign]
    try:
        for _ in pipeline.engine.run(prompt.tolist(), [params]):
            pass
    finally:
        _context.MLContext.compute = real  # type: ignore[method-assign]
    found = {}
    for label, (graph, inputs) in (("prefill", computed[0]), ("decode step", computed[-1])):
        target = folder / f"{label.replace(' ', '-')}-{dtype}.onnx"
        onnx.save(embed_constants(graph._lowered), str(target))
        feeds = {graph._onnx_inputs[name]: value for name, value in inputs.items()}
        found[label] = (target, feeds, graph._flushing)
    return found


def split_of(model: Path, feeds: dict[str, Array], runs: int, flush: bool) -> dict[str, float]:
    """Kernel microseconds per op type (and node counts under ``"#" + op``)."""
    times, op_of, _ = node_times(model, feeds, runs, flush)
    split: dict[str, float] = collections.defaultdict(float)
    for name, micros in times.items():
        split[op_of[name]] += micros
        split["#" + op_of[name]] += 1
    return dict(split)


def torch_prefill(path: Path, prompt: Array, runs: int) -> dict[str, float]:
    """Self CPU microseconds per aten op of transformers' prefill forward (one thread), the
    forward with the smallest total of ``runs``."""
    import torch
    import transformers
    from torch.profiler import ProfilerActivity, profile

    torch.set_num_threads(1)
    model = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = torch.tensor(prompt)
    best: dict[str, float] = {}
    with torch.no_grad():
        model(ids, logits_to_keep=1)
        for _ in range(runs):
            with profile(activities=[ProfilerActivity.CPU]) as profiled:
                model(ids, logits_to_keep=1)
            split = {
                event.key: float(event.self_cpu_time_total)
                for event in profiled.key_averages()
                if event.self_cpu_time_total > 0
            }
            if not best or sum(split.values()) < sum(best.values()):
                best = split
    return best


def show(title: str, split: dict[str, float], rows: int = 12) -> float:
    """Print the split; returns its total milliseconds."""
    times = {op: us for op, us in split.items() if not op.startswith("#")}
    total = sum(times.values())
    products = sum(us for op, us in times.items() if op in PRODUCTS)
    nodes = sum(int(v) for op, v in split.items() if op.startswith("#"))
    print(f"\n{title}: {total / 1e3:.2f} ms" + (f", {nodes} nodes" if nodes else ""))
    if nodes:
        print(f"  products {products / 1e3:.2f} ms, the rest {(total - products) / 1e3:.2f} ms")
    for op, micros in sorted(times.items(), key=lambda kv: -kv[1])[:rows]:
        count = int(split.get("#" + op, 0))
        shown = f"{count:5d}" if count else "     "
        print(f"  {op:<44} {shown} {micros / 1e3:8.2f} ms {100 * micros / total:5.1f}%")
    return total / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dtype", default="float32", choices=("float32", "int8", "int4"))
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--prompt", type=int, default=512, help="prompt tokens")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write the models here")
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("decoder_profile")
    base = SHAPES["smollm2"]
    config = {**base.config, "num_hidden_layers": args.layers}
    shape = DecoderShape(base.name, base.config_class, config, 4, 4)
    vocab = int(config["vocab_size"])
    prompt = np.random.default_rng(17).integers(1, vocab, size=(1, args.prompt), dtype=np.int64)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = write_decoder(folder / "model", shape)
        graphs = our_graphs(path, args.dtype, prompt, folder)
        label = f"{args.layers} layers, {args.prompt}-token prompt"
        ours_ms = {}
        for what, (model, feeds, flush) in graphs.items():
            title = f"ours ({label}, webnn {args.dtype}): {what} kernel time"
            ours_ms[what] = show(title, split_of(model, feeds, args.runs, flush))
        theirs_ms = show(
            f"transformers ({label}, torch fp32): prefill self CPU time",
            torch_prefill(path, prompt, args.runs),
        )
    ratio = theirs_ms / ours_ms["prefill"]
    print(f"\nprefill, one thread: transformers / ours = {ratio:.2f}x")
    results.ratio(
        f"SmolLM2-shaped {args.layers}-layer {args.dtype} prefill kernel time: "
        "transformers / our graph",
        ratio, ours_ms=ours_ms["prefill"], theirs_ms=theirs_ms,
        step_ms=ours_ms["decode step"],
    )  # fmt: skip
    results.write(args.json)


if __name__ == "__main__":
    main()
