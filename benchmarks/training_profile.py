"""Where a training step's time goes: ONNX Runtime's profile of the graph that
``optim.compile_step`` replays on webnn for benchmarks/training.py's MiniLM step (forward,
MultipleNegativesRankingLoss, backward, AdamW: one graph), beside torch.profiler's split of
torch's same step.

    python benchmarks/training_profile.py [--runs 3] [--keep DIR] [--graph-update] [--json FILE]

By default the replayed graph stops at the gradients and AdamW updates the parameters on the
host (``compile_step``'s host update): its time is measured after the replay and counted
with the sweeps; ``--graph-update`` profiles the graph with the update inside it.

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
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from _results import Results, add_json_option  # beside this script

Array = np.ndarray[Any, Any]

#: element-wise ops whose results, where parameter-shaped, are the optimizer's sweeps
_SWEEPS = frozenset({"Mul", "Add", "Sub", "Div", "Sqrt", "Max", "ScatterND"})


def our_step_graph(folder: Path, host_update: bool) -> tuple[Path, dict[str, Array], float]:
    """The replayed MiniLM training step's graph written to ``folder``, the feeds of its
    last replay (by ONNX input name), and the seconds the host update took after it (0 when
    the update is in the graph)."""
    import time

    import onnx

    from ipfs_accelerate.optim import _host
    from ipfs_accelerate.webnn import _context
    from ipfs_accelerate.webnn._onnx._model import embed_constants
    from training import ours_minilm  # beside this script

    ran: list[Any] = []
    fed: dict[int, dict[str, Array]] = {}
    host_seconds: list[float] = []
    real_compute = _context.MLContext.compute
    real_step = _host.HostMirrors.step
    real_step_rows = _host.HostMirrors.step_rows

    def spy_compute(self: Any, graph: Any, inputs: Any) -> Any:
        fed[id(graph)] = {graph._onnx_inputs[k]: np.array(v) for k, v in inputs.items()}
        ran.append(graph)
        host_seconds.clear()
        return real_compute(self, graph, inputs)

    def spy_step(self: Any, param: Any, grad: Any) -> None:
        start = time.perf_counter()
        real_step(self, param, grad)
        host_seconds.append(time.perf_counter() - start)

    def spy_step_rows(self: Any, param: Any, indices: Any, rows: Any) -> None:
        start = time.perf_counter()
        real_step_rows(self, param, indices, rows)
        host_seconds.append(time.perf_counter() - start)

    _context.MLContext.compute = spy_compute  # type: ignore[method-assign]
    _host.HostMirrors.step = spy_step  # type: ignore[method-assign]
    _host.HostMirrors.step_rows = spy_step_rows  # type: ignore[method-assign]
    try:
        step = ours_minilm("webnn", host_update)
        for _ in range(3):  # traced, captured, replayed
            step()
    finally:
        _context.MLContext.compute = real_compute  # type: ignore[method-assign]
        _host.HostMirrors.step = real_step  # type: ignore[method-assign]
        _host.HostMirrors.step_rows = real_step_rows  # type: ignore[method-assign]
    # the last graph run is the replayed step (a parameter read back after it runs none)
    replayed = ran[-1]
    target = folder / "minilm-step.onnx"
    onnx.save(
        embed_constants(replayed._lowered), str(target),
        save_as_external_data=True, location="minilm-step.data",
    )  # fmt: skip
    feeds = {
        name: value.view(np.uint8) if value.dtype == np.bool_ else value
        for name, value in fed[id(replayed)].items()
    }
    return target, feeds, sum(host_seconds)


def profile(model: Path, feeds: dict[str, Array], runs: int) -> dict[str, Any]:
    """ONNX Runtime's profile of ``model`` on one thread: per op type, per node, and the
    parameter-sized sweeps' share."""
    import onnx
    from onnx import shape_inference
    from webnn_profile import node_times  # beside this script

    node_time, op_of, optimized_path = node_times(model, feeds, runs)
    by_op: dict[str, float] = collections.defaultdict(float)
    for name, micros in node_time.items():
        by_op[op_of[name]] += micros
    # parameter shapes: the step's outputs beside the loss are parameter-shaped (the new
    # parameters and moments, or with the host update the gradients)
    graph = shape_inference.infer_shapes(onnx.load(str(model))).graph
    shapes = {
        info.name: tuple(d.dim_value for d in info.type.tensor_type.shape.dim)
        for info in [*graph.value_info, *graph.input, *graph.output]
    }
    parameter_shapes = {shapes[o.name] for o in graph.output if int(np.prod(shapes[o.name])) > 1}
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
    parser.add_argument(
        "--graph-update",
        action="store_true",
        help="profile the step with AdamW inside the graph (compile_step(host_update=False)); "
        "by default the graph stops at the gradients and AdamW runs on the host",
    )
    add_json_option(parser)
    args = parser.parse_args()
    results = Results("training_profile")
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        model, feeds, host_s = our_step_graph(folder, not args.graph_update)
        ours = profile(model, feeds, args.runs)
    total = ours["total"] + host_s * 1e6
    print(f"\nours (webnn, MiniLM step graph, one thread): kernel time "
          f"{ours['total'] / 1e3:.1f} ms")  # fmt: skip
    nodes = ours["nodes"]
    print(f"  {sum(nodes.values())} nodes after ONNX Runtime's optimizer: "
          + ", ".join(f"{k} {v}" for k, v in nodes.most_common(12)))  # fmt: skip
    for op, micros in sorted(ours["by_op"].items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {op:<24} {micros / 1e3:8.2f} ms {100 * micros / total:5.1f}%")
    print("  costliest nodes: " + ", ".join(
        f"{ours['op_of'][name]} {micros / 1e3:.1f}" for name, micros in ours["top"]
    ))  # fmt: skip
    if host_s:
        print(f"  AdamW on the host after the graph (all parameters): {host_s * 1e3:.1f} ms")
    our_share = (ours["sweeps"] + host_s * 1e6) / total
    print(
        "  parameter-sized sweeps (optimizer update, dense gradients"
        + (", the host update" if host_s else "")
        + f"): {100 * our_share:.0f}%"
    )
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
        ours_kernel_s=ours["total"] / 1e6,
        ours_host_update_s=host_s,
        ours_sweeps_s=ours["sweeps"] / 1e6,
        torch_optimizer_share=their_share,
    )
    results.write(args.json)


if __name__ == "__main__":
    sys.exit(main())
