"""Accuracy gates of int8/int4 decoders (issue 17) on the tiny seeded Llama, Qwen2 and GPT-2.

Teacher-forced on fp32's own greedy continuation of several prompts, the int8/int4 logits
stay within LOGIT_TOLERANCE (a fraction of the largest fp32 logit) of fp32's, and the RMS of
the difference within RMS_TOLERANCE (a fraction of the logits' RMS); the quantized model's
free-running greedy tokens (KV cache, incremental decode) equal fp32's up to each row's
first position where fp32's top two logits are closer than twice the largest logit error
measured at that position (a near-tie the quantization may break either way). The
tolerances come from the measurement written beside each, with headroom; docs/models.md
("Precision") has the table.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate import hal
from ipfs_accelerate.models.generation import (
    GenerationDefaults,
    GenerationEngine,
    KVCache,
    SamplingParams,
)
from ipfs_accelerate.models.loading import load_model, read_json
from ipfs_accelerate.tensor import from_numpy
from tests.models._decoder_checkpoints import decoder_checkpoint

pytestmark = pytest.mark.timeout(300)

NEW_TOKENS = 24
PROMPTS = [[3, 17, 40, 22, 5], [9, 100, 120, 33, 7, 8, 9, 60], [44, 45, 46], [70, 12, 99, 5]]
# Measured on these checkpoints (max error / rms error / teacher-forced top-1 agreement /
# free-running tokens before the first near-tie, over 4 prompts x 24 tokens):
#   int8: llama 2.4% / 1.8% / 97% / 20, qwen2 3.5% / 2.2% / 96% / 3, gpt2 1.3% / 1.0% / 99% / 7
#   int4: llama 63% / 36% / 54% / 0,    qwen2 51% / 33% / 49% / 0,   gpt2 24% / 19% / 77% / 0
# int4 (symmetric, 15 levels, blocks of 32) adds about 9% rms noise to every product of these
# random Gaussian weights, and two layers of seven products compound it; its greedy tokens
# fall on a near-tie at once, so int4 is gated by its logit errors and top-1 agreement.
#: max |quantized - fp32| / max |fp32| over every teacher-forced position
LOGIT_TOLERANCE = {
    ("llama", "int8"): 0.04, ("qwen2", "int8"): 0.05, ("gpt2", "int8"): 0.025,
    ("llama", "int4"): 0.80, ("qwen2", "int4"): 0.70, ("gpt2", "int4"): 0.32,
}  # fmt: skip
#: rms(quantized - fp32) / rms(fp32)
RMS_TOLERANCE = {
    ("llama", "int8"): 0.03, ("qwen2", "int8"): 0.035, ("gpt2", "int8"): 0.02,
    ("llama", "int4"): 0.45, ("qwen2", "int4"): 0.45, ("gpt2", "int4"): 0.25,
}  # fmt: skip
#: the least teacher-forced top-1 agreement with fp32
MIN_AGREEMENT = {
    ("llama", "int8"): 0.93, ("qwen2", "int8"): 0.92, ("gpt2", "int8"): 0.96,
    ("llama", "int4"): 0.40, ("qwen2", "int4"): 0.35, ("gpt2", "int4"): 0.65,
}  # fmt: skip
#: the least free-running tokens compared before the rows' first near-ties
MIN_COMPARED = {
    ("llama", "int8"): 10, ("qwen2", "int8"): 2, ("gpt2", "int8"): 3,
    ("llama", "int4"): 0, ("qwen2", "int4"): 0, ("gpt2", "int4"): 0,
}  # fmt: skip


class _Ids:
    """The engine's detokenizer, unused here: the gates compare token ids."""

    def decode(self, ids: Any, *, skip_special_tokens: bool = True) -> str:
        return " ".join(str(i) for i in ids)


def _engine(directory: Path, dtype: str, device: str = "cpu") -> GenerationEngine:
    model, checkpoint, _ = load_model(directory, device, sharing=False, dtype=dtype)
    defaults = GenerationDefaults.from_configs(
        read_json(directory / "generation_config.json"), checkpoint.config
    )
    return GenerationEngine(model, _Ids(), defaults)


def _greedy(engine: GenerationEngine) -> list[list[int]]:
    params = [SamplingParams(max_new_tokens=NEW_TOKENS, ignore_eos=True)] * len(PROMPTS)
    return [p + r.token_ids for p, r in zip(PROMPTS, engine.generate(PROMPTS, params), strict=True)]


def _teacher_forced(engine: GenerationEngine, sequences: list[list[int]]) -> list[np.ndarray]:
    """Logits at every position of each sequence, one sequence at a time (no padding)."""
    model = engine.model
    device = model.device
    out = []
    for ids in sequences:
        cache = KVCache(model.cache_shape(), 1, len(ids), device)
        step = cache.begin(np.ones((1, len(ids)), dtype=bool))
        logits = model(from_numpy(np.array([ids]), device), step, last_only=False)
        out.append(np.asarray(logits.numpy())[0])
    return out


@pytest.fixture(scope="module")
def fp32_runs() -> dict[str, tuple[list[list[int]], list[np.ndarray]]]:
    """Per family: fp32's greedy sequences and its logits along them."""
    runs = {}
    for family in ("llama", "qwen2", "gpt2"):
        engine = _engine(decoder_checkpoint(family), "float32")
        sequences = _greedy(engine)
        runs[family] = (sequences, _teacher_forced(engine, sequences))
    return runs


@pytest.mark.parametrize(
    ("device", "dtype"), [("cpu", "int8"), ("cpu", "int4"), ("webnn", "int8"), ("webnn", "int4")]
)
@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_quantized_decoder_logits_and_greedy_tokens(
    family: str,
    device: str,
    dtype: str,
    fp32_runs: dict[str, tuple[list[list[int]], list[np.ndarray]]],
) -> None:
    """On cpu the int8 error is the weights' rounding alone; on webnn every block projection
    (attention and MLP, GPT-2's Conv1D too) also rounds its input per token (int8_row: the
    integer kernels read the int8 weights) and the vocabulary projection, in 8-bit blocks of
    32, rounds its input per block (int8_block), measured there: llama 3.7% / 2.5% / 97%,
    qwen2 4.9% / 2.8% / 96%, gpt2 1.6% / 1.4% / 97% -- inside the same gates. int4 on webnn
    rounds each input to int8 per weight block (int8_block: MatMulNBits at accuracy level 4),
    the head's too: llama 63% / 36% / 54%, qwen2 48% / 33% / 50%, gpt2 24% / 19% / 77%, as
    the weights alone."""
    sequences, references = fp32_runs[family]
    engine = _engine(decoder_checkpoint(family), dtype, device)
    # webnn, and cpu where MKL multiplies int8_row in integers, take the int8 input policy
    integer = hal.get_backend(device).integer_kernel("row_quantized_linear")
    if device == "webnn":
        modes = {
            path: module.activations
            for path, module in engine.model.named_modules()
            if hasattr(module, "activations") and re.search(r"(layers|\bh)\.0\.", path)
        }
        # every projection of a block: llama 7 (q, k, v, o, gate, up, down), GPT-2 4
        assert len(modes) == (4 if family == "gpt2" else 7), modes
        assert set(modes.values()) == {"int8_row" if dtype == "int8" else "int8_block"}, modes
    quantized = _teacher_forced(engine, sequences)
    reference, ours = np.concatenate(references), np.concatenate(quantized)
    diff = ours - reference
    peak = float(np.abs(diff).max()) / float(np.abs(reference).max())
    rms = float(np.sqrt(np.mean(diff**2) / np.mean(reference**2)))
    ordered = np.sort(reference, axis=-1)
    margin = ordered[:, -1] - ordered[:, -2]
    # where fp32's top two are further apart than twice this position's largest error, the
    # quantized model must choose fp32's token (teacher-forced, prefill path)
    decided = margin > 2 * np.abs(diff).max(axis=-1)
    agree = float((ours.argmax(-1) == reference.argmax(-1)).mean())
    print(
        f"{family} {dtype}: max logit error {peak:.2%} of the largest logit, rms {rms:.2%}, "
        f"top-1 agreement {agree:.0%}, {decided.mean():.0%} of positions decided"
    )
    assert peak <= LOGIT_TOLERANCE[family, dtype], f"{family} {dtype}: {peak:.2%}"
    assert rms <= RMS_TOLERANCE[family, dtype], f"{family} {dtype}: rms {rms:.2%}"
    assert agree >= MIN_AGREEMENT[family, dtype], f"{family} {dtype}: top-1 {agree:.0%}"
    np.testing.assert_array_equal(ours.argmax(-1)[decided], reference.argmax(-1)[decided])
    # free-running through the KV cache: the same tokens up to each row's first near-tie
    compared = 0
    for row, (expected, got) in enumerate(zip(sequences, _greedy(engine), strict=True)):
        start = len(PROMPTS[row])
        row_diff = np.abs(quantized[row] - references[row]).max(axis=-1)
        row_order = np.sort(references[row], axis=-1)
        row_decided = (row_order[:, -1] - row_order[:, -2]) > 2 * row_diff
        # logits at position p choose token p + 1
        ties = np.flatnonzero(~row_decided[start - 1 : -1])
        cut = start + (int(ties[0]) if ties.size else NEW_TOKENS)
        assert got[:cut] == expected[:cut], f"{family} {dtype} row {row}"
        compared += cut - start
    print(f"{family} {dtype}: {compared} generated tokens before the first near-tie, all equal")
    # rounded int8 inputs' larger error makes more positions near-ties: llama 7, qwen2 3,
    # gpt2 7 on webnn; llama 7 on cpu with MKL
    rounded_inputs = device == "webnn" or (integer and dtype == "int8")
    least = min(5, MIN_COMPARED[family, dtype]) if rounded_inputs else MIN_COMPARED[family, dtype]
    assert compared >= least


@pytest.mark.parametrize("dtype", ["int8", "int4"])
@pytest.mark.parametrize(("family", "layers"), [("llama", 2 * 7 + 1), ("gpt2", 2 * 4 + 1)])
def test_quantized_decoder_equals_its_dequantized_weights(
    family: str, layers: int, dtype: str
) -> None:
    """The whole error above is the weights' rounding: the same model with every quantized
    weight expanded back to float32 gives the quantized model's logits."""
    from ipfs_accelerate.quantization import QuantizedTensor

    engine = _engine(decoder_checkpoint(family), dtype)
    engine.model.set_int8_activations("none")  # the weights alone (cpu with MKL rounds inputs)
    sequences = [[*p, 11, 12, 13] for p in PROMPTS]
    quantized = np.concatenate(_teacher_forced(engine, sequences))
    expanded = 0
    for _, module in engine.model.named_modules():
        if isinstance(getattr(module, "weight", None), QuantizedTensor):
            module.weight = from_numpy(module.weight.dequantize_numpy(), "cpu")
            expanded += 1
    assert expanded == layers  # every projection (GPT-2's Conv1D too) and the head
    floats = np.concatenate(_teacher_forced(engine, sequences))
    np.testing.assert_allclose(quantized, floats, rtol=0, atol=1e-5 * np.abs(floats).max())


def test_int4_block_activations_are_for_decoders_only(tmp_path: Path) -> None:
    """An encoder multiplies many rows at once, where MatMulNBits' integer path is slower
    than its float one: its int4 layers keep float inputs on webnn; a decoder's take
    int8_block there, and keep float on cpu (no such kernel)."""
    from tests.models._checkpoints import make_bert

    encoder, _, _ = load_model(make_bert(tmp_path / "bert"), "webnn", sharing=False, dtype="int4")
    modes = {getattr(m, "activations", "float") for _, m in encoder.named_modules()}
    assert modes == {"float"}
    decoder, _, _ = load_model(decoder_checkpoint("llama"), "cpu", sharing=False, dtype="int4")
    assert {getattr(m, "activations", "float") for _, m in decoder.named_modules()} == {"float"}
