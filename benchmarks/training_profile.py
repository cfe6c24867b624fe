"""Where a training step's time goes: ONNX Runtime's profile of the graph that
``optim.compile_step`` replays on webnn for benchmarks/training.py's MiniLM step (forward,
MultipleNegativesRankingLoss, backward, AdamW: one graph), beside torch.profiler's split of
torch's same step.

    python benchmarks/training_profile.py [--runs 3] [--keep DIR] [--json FILE]

Ours: the step's graph as compiled (the largest one the first steps build, constants
embedded) and the values of its last replay, run by ONNX Runtime on one thread with its
profiler: the kernel time per op type (each node's smallest over the runs after a first),
the nodes after ONNX Runtime's optimizer, the costliest nodes, and the share of the sweeps
over parameter-sized tensors (the optimizer's update, and the dense gradients it reads:
Mul/Add/Sub/Div/Sqrt/Max/ScatterND nodes whose result has a parameter's shape). Torch: the
self CPU time per aten op over two steps, and the optimizer's share. Both are splits, not
timings to compare: one thread against torch's pool, and on a shared machine the smallest
node time is the least disturbed. The printed ratio is torch's optimizer share over ours.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _results import Results, add_json_option  # beside this script

Array = np.ndarray[Any, Any]

#: element-wise ops whose results, where parameter-shaped, are the optimizer's sweeps
_SWEEPS = frozenset({"Mul", "Add", "Sub", "Div", "Sqrt", "Max", "ScatterND"})


def our_step_graph(folder: Path) -> tuple[Path, dict[str, Array]]:
    """The compiled MiniLM training step written to ``folder`` and the feeds of its last
    replay (by ONNX input name)."""
    import onnx

    from ipfs_accelerate.webnn import _context
    from ipfs_accelerate.webnn._onnx._model import embed_constants
    from training import ours_minilm  # beside this script

    compiled: list[Any] = []
    fed: dict[int, dict[str, Array]] = {}
    real_compile = _context.MLGraph._compile.__func__  # type: ignore[attr-defined]
    real_compute = _context.MLContext.compute

    def spy_compile(cls: Any, context: Any, outputs: Any, nodes: Any) -> Any:
        graph = real_compile(cls, context, outputs, nodes)
        compiled.append(graph)
        return graph

    def spy_compute(self: Any, graph: Any, inputs: Any) -> Any:
        fed[id(graph)] = {graph._onnx_inputs[k]: np.array(v) for k, v in inputs.items()}
        return real_compute(self, graph, inputs)

    _context.MLGraph._compile = classmethod(spy_compile)  # type: ignore[method-assign,assignment]
    _context.MLContext.compute = spy_compute  # type: ignore[method-assign]
    try:
        step = ours_minilm("webnn")
        for _ in range(3):  # traced, captured, replayed
            step()
    finally:
        _context.MLGraph._compile = classmethod(real_compile)  # type: ignore[method-assign,assignment]
        _context.MLContext.compute = real_compute  # type: ignore[method-assign]
    biggest = max(compiled, key=lambda g: len(g._lowered.model.graph.node))
    target = folder / "minilm-step.onnx"
    onnx.save(
        embed_constants(biggest._lowered), str(target),
        save_as_external_data=True, location="minilm-step.data",
    )  # fmt: skip
    feeds = {
        name: value.view(np.uint8) if value.dtype == np.bool_ else value
        for name, value in fed[id(biggest)].items()
    }
    return target, feeds


def profile(model: Path, feeds: dict[str, Array], runs: int) -> dict[str, Any]:
    """ONNX Runtime's profile of ``model`` on one thread: per op type, per node, and the
    parameter-sized sweeps' share."""
    import onnx
    import onnxruntime as ort
    from onnx import shape_inference

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    optimized_path = model.with_suffix(".optimized.onnx")
    options.optimized_model_filepath = str(optimized_path)
    options.enable_profiling = True
    options.profile_file_prefix = str(model.with_suffix(""))
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    for _ in range(runs + 1):
        session.run(None, feeds)
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
    node_time = {name: min(times[1:] or times) for name, times in per_node.items()}
    by_op: dict[str, float] = collections.defaultdict(float)
    for name, micros in node_time.items():
        by_op[op_of[name]] += micros
    # parameter shapes: each updated parameter is a graph output beside its two moments
    graph = shape_inference.infer_shapes(onnx.load(str(model))).graph
    shapes = {
        info.name: tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
        for info in [*graph.value_info, *graph.input, *graph.output]
    }
    counts = collections.Counter(shapes[o.name] for o in graph.output)
    parameter_shapes = {s for s, n in counts.items() if n >= 3 and int(np.prod(s)) > 1}
    # our nodes are unnamed: ONNX Runtime names them by type and position as it loads them
    # (the nodes its fusions make have names of their own, and are no sweeps)
    output_of = {f"{node.op_type}_{index}": node.output[0] for index, node in enumerate(graph.node)}
    optimized = onnx.load(str(optimized_path), load_external_data=False).graph
    sweeps = sum(
        micros
        for name, micros in node_time.items()
        if op_of[name] in _SWEEPS and shapes.get(output_of.get(name, ""), ()) in parameter_shapes
    )
    return {
        "nodes": collections.Counter(node.op_type for node in optimized.node),
        "by_op": dict(by_op),
        "top": sorted(node_time.items(), key=lambda kv: -kv[1])[:12],
        "op_of": op_of,
        "sweeps": sweeps,
        "total": sum(node_time.values()),
    }


def torch_profile() -> dict[str, Any]:
    """torch.profiler's self CPU time per op over two of torch's steps (after two)."""
    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profiler

    from training import torch_minilm  # beside this script

    step = torch_minilm()
    step()
    step()
    with torch_profiler(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(2):
            step()
    events = prof.key_averages()
    by_op = {e.key: float(e.self_cpu_time_total) for e in events}
    total = sum(v for k, v in by_op.items() if k.startswith("aten::"))
    optimizer = sum(float(e.cpu_time_total) for e in events if e.key.startswith("Optimizer.step"))
    return {
        "by_op": by_op,
        "total": total,
        "optimizer": optimizer,
        "threads": torch.get_num_threads(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keep", type=Path, default=None, help="write the step's graph here")
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("training_profile")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model, feeds = our_step_graph(folder)
        ours = profile(model, feeds, args.runs)
    total = ours["total"]
    print(f"\nours (webnn, MiniLM step graph, one thread): kernel time {total / 1e3:.1f} ms")
    nodes = ours["nodes"]
    print(f"  {sum(nodes.values())} nodes after ONNX Runtime's optimizer: "
          + ", ".join(f"{k} {v}" for k, v in nodes.most_common(12)))  # fmt: skip
    for op, micros in sorted(ours["by_op"].items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {op:<24} {micros / 1e3:8.2f} ms {100 * micros / total:5.1f}%")
    print("  costliest nodes: " + ", ".join(
        f"{ours['op_of'][name]} {micros / 1e3:.1f}" for name, micros in ours["top"]
    ))  # fmt: skip
    our_share = ours["sweeps"] / total
    print(f"  parameter-sized sweeps (optimizer update, dense gradients): {100 * our_share:.0f}%")
    theirs = torch_profile()
    print(f"\ntorch ({theirs['threads']} threads), self CPU time over two steps:")
    for op, micros in sorted(theirs["by_op"].items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {op:<40} {micros / 1e3:8.2f} ms {100 * micros / theirs['total']:5.1f}%")
    their_share = min(theirs["optimizer"] / theirs["total"], 1.0)
    print(f"  Optimizer.step: {100 * their_share:.0f}%")
    print(f"\noptimizer share, torch / ours: {their_share / our_share:.2f}")
    results.ratio(
        "MiniLM step: optimizer share torch/ours",
        their_share / our_share,
        ours_kernel_s=total / 1e6,
        ours_sweeps_s=ours["sweeps"] / 1e6,
        torch_optimizer_share=their_share,
    )
    results.write(args.json)


if __name__ == "__main__":
    sys.exit(main())
