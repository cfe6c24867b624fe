"""What benchmarks/generate.py runs on and judges by: decoder checkpoints of real models'
shapes with seeded random weights (written by transformers), a byte-level BPE tokenizer,
this machine's memory bandwidth, the weight bytes one decode step reads, and issue 17's
targets."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from _precision import Verdict  # beside this script

__all__ = [
    "SHAPES",
    "DecoderShape",
    "decode_weight_bytes",
    "generation_targets",
    "memory_bandwidth",
    "write_decoder",
]


@dataclass(frozen=True)
class DecoderShape:
    name: str
    #: transformers config class name ("LlamaConfig", "Qwen2Config")
    config_class: str
    config: Mapping[str, Any]
    #: new tokens decoded per sequence at batch 1 (fewer where 128 would stretch the run)
    decode_tokens: int
    #: new tokens per sequence at a larger batch (each step there does batch tokens)
    batch_decode_tokens: int

    def new_tokens(self, batch: int) -> int:
        return self.decode_tokens if batch == 1 else self.batch_decode_tokens


SHAPES = {
    "smollm2": DecoderShape(
        "SmolLM2-135M-shaped",
        "LlamaConfig",
        {
            "hidden_size": 576,
            "num_hidden_layers": 30,
            "num_attention_heads": 9,
            "num_key_value_heads": 3,
            "intermediate_size": 1536,
            "vocab_size": 49152,
            "tie_word_embeddings": True,
            "max_position_embeddings": 2048,
            "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5,
        },
        128,
        32,
    ),
    "qwen2.5": DecoderShape(
        "Qwen2.5-0.5B-shaped",
        "Qwen2Config",
        {
            "hidden_size": 896,
            "num_hidden_layers": 24,
            "num_attention_heads": 14,
            "num_key_value_heads": 2,
            "intermediate_size": 4864,
            "vocab_size": 151936,
            "tie_word_embeddings": True,
            "max_position_embeddings": 4096,
            "rope_theta": 1000000.0,
            "rms_norm_eps": 1e-6,
        },
        32,
        8,
    ),
}

_WORDS = (
    "the",
    "a",
    "model",
    "token",
    "cache",
    "layer",
    "weight",
    "decode",
    "prefill",
    "memory",
    "bandwidth",
    "attention",
    "query",
    "key",
    "value",
    "head",
    "batch",
    "stream",
    "server",
    "request",
    "reply",
    "local",
    "remote",
    "router",
    "failover",
    "greedy",
    "sample",
)


def _tokenizer(directory: Path, seed: int) -> None:
    """A byte-level BPE trained on seeded word soup: the benchmark feeds token ids, so the
    tokenizer only has to load and decode (ids past its vocabulary decode to nothing)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(_WORDS, size=24)) + "." for _ in range(400)]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    tok.add_special_tokens(["<|endoftext|>"])
    tok.save(str(directory / "tokenizer.json"))
    (directory / "tokenizer_config.json").write_text(
        '{"eos_token": "<|endoftext|>", "bos_token": "<|endoftext|>"}', encoding="utf-8"
    )


def write_decoder(directory: Path, shape: DecoderShape, seed: int = 0) -> Path:
    """The checkpoint of ``shape`` (transformers' own random init, seeded) in ``directory``."""
    import torch
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    _tokenizer(directory, seed)
    torch.manual_seed(seed)
    extra = {"eos_token_id": 0, "bos_token_id": 0, "pad_token_id": 0}
    config = getattr(transformers, shape.config_class)(**shape.config, **extra)
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = transformers.GenerationConfig(
        eos_token_id=0, bos_token_id=0, pad_token_id=0, do_sample=False
    )
    model.save_pretrained(directory, safe_serialization=True)
    return directory


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> float:
    """This machine's memory bandwidth in GB/s: bytes read plus bytes written by the best of
    ``repeats`` numpy copies of a ``megabytes`` array (far larger than any cache)."""
    source = np.ones(megabytes << 18, dtype=np.float32)
    target = np.empty_like(source)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(target, source)
        best = min(best, time.perf_counter() - start)
    return 2 * source.nbytes / best / 1e9


def decode_weight_bytes(model: Any) -> int:
    """Bytes of weights one decode step reads: every weight in the form the model holds it
    (quantized data, scales and zero points included), except the token embedding, of which
    a step reads one row per sequence."""
    return sum(
        int(weight.nbytes)
        for name, weight in model.named_weights()
        if not name.endswith("embed_tokens.weight")
    )


def generation_targets(
    decode: Mapping[str, float], prefill: Mapping[str, float], ceiling_share: Mapping[str, float]
) -> list[Verdict]:
    """Issue 17's targets from batch-1 decode and prefill tokens/s, keyed "contender dtype"
    (ours: "ipfs_accelerate[cpu] float32" ...; the peer: "transformers float32"), judged by
    each dtype's best backend. Ratios are our tokens/s / transformers' (= its time / ours)."""
    peer = "transformers float32"

    def best(rates: Mapping[str, float], dtype: str) -> tuple[str | None, float | None]:
        ours = {k: v for k, v in rates.items() if k.startswith("ipfs") and k.endswith(dtype)}
        if not ours:
            return None, None
        key = max(ours, key=lambda k: ours[k])
        return key, ours[key]

    def ratio(rates: Mapping[str, float], dtype: str) -> float | None:
        _, ours = best(rates, dtype)
        if ours is None or not rates.get(peer):
            return None
        return ours / rates[peer]

    _, int4 = best(decode, "int4")
    genai = decode.get("onnxruntime-genai int4")
    genai_ratio = None if int4 is None or not genai else int4 / genai
    fp32_key, _ = best(decode, "float32")
    share = None if fp32_key is None else ceiling_share.get(fp32_key)
    return [
        Verdict("decode b1 float32 >= 1.2x transformers fp32", ratio(decode, "float32"), 1.2),
        Verdict("decode b1 float32 >= 0.70 of the bandwidth ceiling", share, 0.70),
        Verdict("decode b1 int8 >= 2.5x transformers fp32", ratio(decode, "int8"), 2.5),
        Verdict("decode b1 int4 >= 3.5x transformers fp32", ratio(decode, "int4"), 3.5),
        Verdict("decode b1 int4 >= 1.0x onnxruntime-genai int4", genai_ratio, 1.0),
        Verdict("prefill b1 float32 >= 1.2x transformers fp32", ratio(prefill, "float32"), 1.2),
    ]
