"""Sampling, stops, streaming, chat templates and the TextGenerator pipeline (CPU).

Each logits processor is checked on fixed logits against transformers' processor of the same
name (presence/frequency penalties against OpenAI's formula); seeded sampling reproduces;
incremental detokenization concatenates to the full decode with no broken UTF-8; chat
templates render as ``apply_chat_template``; bad input raises typed errors naming the field.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.errors import (
    CheckpointError,
    InvalidArgumentError,
    PreprocessingError,
)
from ipfs_accelerate.models import ChatTemplate, TextGenerator
from ipfs_accelerate.models.generation import (
    ContinuousBatch,
    IncrementalDetokenizer,
    SamplingParams,
    apply_frequency_presence,
    apply_min_p,
    apply_repetition_penalty,
    apply_temperature,
    apply_top_k,
    apply_top_p,
)
from tests.models._decoder_checkpoints import CHATML, LLAMA2, decoder_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.timeout(120)

MESSAGES = [
    {"role": "system", "content": "be brief"},
    {"role": "user", "content": "hello world"},
    {"role": "assistant", "content": "a cat sat on the mat"},
    {"role": "user", "content": "and the dog?"},
]


@pytest.fixture(scope="module")
def generator() -> TextGenerator:
    return TextGenerator.from_pretrained(decoder_checkpoint("qwen2"), "cpu", sharing=False)


@pytest.fixture(scope="module")
def llama() -> TextGenerator:
    return TextGenerator.from_pretrained(decoder_checkpoint("llama"), "cpu", sharing=False)


# ----------------------------------------------------------------------------- processors


def _scores(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    scores = rng.normal(0, 2, size=64).astype(np.float32)
    scores[5] = scores[6]  # a tie, which top-k keeps both of
    return scores


def _hf(processor: Any, scores: np.ndarray, seen: list[int] | None = None) -> np.ndarray:
    ids = torch.tensor([seen or [0]])
    with torch.no_grad():
        return processor(ids, torch.from_numpy(scores[None].copy()))[0].numpy()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_processors_equal_transformers(seed: int) -> None:
    from transformers.generation import logits_process as lp

    scores = _scores(seed)
    cases = [
        (apply_temperature(scores, 0.7), lp.TemperatureLogitsWarper(0.7)),
        (apply_top_k(scores, 7), lp.TopKLogitsWarper(7)),
        (apply_top_p(scores, 0.8), lp.TopPLogitsWarper(0.8)),
        (apply_top_p(scores, 0.05), lp.TopPLogitsWarper(0.05)),
        (apply_min_p(scores, 0.2), lp.MinPLogitsWarper(0.2)),
    ]
    for ours, processor in cases:
        np.testing.assert_allclose(ours, _hf(processor, scores), rtol=1e-6, err_msg=str(processor))
    seen = [3, 5, 5, 40, 3]
    np.testing.assert_allclose(
        apply_repetition_penalty(scores, np.array(seen), 1.3),
        _hf(lp.RepetitionPenaltyLogitsProcessor(1.3), scores, seen),
        rtol=1e-6,
    )
    # each filter removes what its definition says, no more
    kept = np.isfinite(apply_top_k(scores, 7))
    assert kept.sum() >= 7 and scores[kept].min() >= np.sort(scores)[-7]


def test_presence_and_frequency_penalties_follow_openai() -> None:
    scores = _scores()
    generated = np.array([4, 4, 4, 9])
    out = apply_frequency_presence(scores, generated, 0.5, 1.25)
    expected = scores.copy()
    expected[4] -= 3 * 0.5 + 1.25
    expected[9] -= 0.5 + 1.25
    np.testing.assert_allclose(out, expected, rtol=1e-6)


def test_seeded_sampling_reproduces(generator: TextGenerator) -> None:
    params = {"temperature": 1.3, "top_k": 40, "top_p": 0.95, "max_new_tokens": 12}
    first = generator.generate_batch(["a cat"], seed=7, **params)[0].token_ids
    again = generator.generate_batch(["a cat"], seed=7, **params)[0].token_ids
    others = [generator.generate_batch(["a cat"], seed=s, **params)[0].token_ids for s in (8, 9)]
    assert first == again
    assert any(o != first for o in others)
    greedy = generator.generate_batch(["a cat"], max_new_tokens=12)[0].token_ids
    zero = generator.generate_batch(["a cat"], max_new_tokens=12, temperature=0, seed=3)
    assert zero[0].token_ids == greedy


def test_generation_config_defaults_apply_unless_overridden(tmp_path: Path) -> None:
    directory = tmp_path / "sampling"
    shutil.copytree(decoder_checkpoint("qwen2"), directory)
    config = json.loads((directory / "generation_config.json").read_text())
    config.update(do_sample=True, temperature=1.5, max_new_tokens=6)
    (directory / "generation_config.json").write_text(json.dumps(config))
    sampled = TextGenerator.from_pretrained(directory, "cpu", sharing=False)
    greedy = TextGenerator.from_pretrained(decoder_checkpoint("qwen2"), "cpu", sharing=False)
    runs = {tuple(sampled.generate_batch(["a cat"], seed=s)[0].token_ids) for s in range(4)}
    assert len(runs) > 1 and all(len(r) == 6 for r in runs), "do_sample and max_new_tokens"
    expected = greedy.generate_batch(["a cat"], max_new_tokens=6)[0].token_ids
    assert sampled.generate_batch(["a cat"], temperature=0)[0].token_ids == expected
    assert sampled.generate_batch(["a cat"], do_sample=False)[0].token_ids == expected


# ----------------------------------------------------------------------------- text


def _metaspace_tokenizer(directory: Path) -> Any:
    """A SentencePiece-style tokenizer (leading-space marker, byte fallback)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from tests.models._checkpoints import CORPUS

    tok = Tokenizer(models.BPE(byte_fallback=True))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    alphabet = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=alphabet, show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer)
    return tok


TEXTS = ["héllo wörld, a cat 🐱 sat on the mat", "  two  spaces and ünïcödé ✓ 日本語", "a"]


@pytest.mark.parametrize("kind", ["byte-level", "metaspace"])
def test_incremental_detokenization_concatenates_to_the_full_decode(
    tmp_path: Path, kind: str
) -> None:
    from tokenizers import Tokenizer

    from ipfs_accelerate.models.pipelines._generate import DecoderTokenizer

    if kind == "metaspace":
        raw = _metaspace_tokenizer(tmp_path)
    else:
        raw = Tokenizer.from_file(str(decoder_checkpoint("gpt2") / "tokenizer.json"))
    tokenizer = DecoderTokenizer(raw, kind)
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        detok = IncrementalDetokenizer(tokenizer)
        deltas = [detok.push(i) for i in ids]
        deltas.append(detok.finish())
        assert "".join(deltas) == tokenizer.decode(ids), (kind, text)
        assert all("\ufffd" not in d for d in deltas), (kind, text, deltas)
        if "🐱" in text:  # its four bytes span tokens: some token completes no character
            assert len(ids) > len([d for d in deltas if d])


def test_stream_concatenates_to_generate(generator: TextGenerator) -> None:
    for params in ({"max_new_tokens": 20}, {"max_new_tokens": 20, "temperature": 0.9, "seed": 4}):
        assert "".join(generator.stream("the quick brown fox", **params)) == generator.generate(
            "the quick brown fox", **params
        )
    chat = generator.chat(MESSAGES[:2], max_new_tokens=10)
    assert "".join(generator.stream_chat(MESSAGES[:2], max_new_tokens=10)) == chat


def test_stop_strings_and_stop_tokens(generator: TextGenerator) -> None:
    full = generator.generate_batch(["a photo of"], max_new_tokens=24)[0]
    assert full.finish_reason == "length" and len(full.text) > 6
    stop = full.text[4:6]
    cut = full.text[: full.text.index(stop)]
    stopped = generator.generate_batch(["a photo of"], max_new_tokens=24, stop=[stop, "zzz"])[0]
    assert (stopped.text, stopped.finish_reason) == (cut, "stop")
    assert "".join(generator.stream("a photo of", max_new_tokens=24, stop=stop)) == cut
    token = full.token_ids[5]
    if token in full.token_ids[:5]:
        pytest.skip("the stop token appears earlier")
    by_token = generator.generate_batch(["a photo of"], max_new_tokens=24, stop_token_ids=[token])
    assert by_token[0].token_ids == full.token_ids[:6]
    assert by_token[0].finish_reason == "stop"


def test_batch_with_per_sequence_parameters_equals_single_runs(generator: TextGenerator) -> None:
    prompts = ["a cat", "the quick brown fox jumps over", MESSAGES[:2]]
    params: list[dict[str, Any]] = [
        {"max_new_tokens": 5},
        {"max_new_tokens": 14, "temperature": 0.8, "seed": 2},
        {"max_new_tokens": 9, "repetition_penalty": 1.5, "logprobs": 3},
    ]
    together = generator.generate_batch(prompts, params)
    for prompt, p, result in zip(prompts, params, together, strict=True):
        alone = generator.generate_batch([prompt], **p)[0]
        assert (result.token_ids, result.text) == (alone.token_ids, alone.text)
        assert len(result.token_ids) == p["max_new_tokens"]
    logprobs = together[2].logprobs
    assert logprobs is not None and len(logprobs) == 9
    for entry in logprobs:
        assert len(entry.top) == 3
        assert [t.logprob for t in entry.top] == sorted(
            (t.logprob for t in entry.top), reverse=True
        )
        assert entry.logprob <= entry.top[0].logprob + 1e-9


def test_logprobs_are_the_models_log_softmax(generator: TextGenerator) -> None:
    prompt = generator.encode_prompt("a cat")
    result = generator.generate_batch(["a cat"], max_new_tokens=1, logprobs=2)[0]
    hf = transformers.AutoModelForCausalLM.from_pretrained(decoder_checkpoint("qwen2")).eval()
    with torch.no_grad():
        reference = torch.log_softmax(hf(torch.tensor([prompt])).logits[0, -1], -1).numpy()
    assert result.logprobs is not None
    entry = result.logprobs[0]
    assert abs(entry.logprob - reference[entry.token_id]) < 1e-4
    assert [t.token_id for t in entry.top] == list(np.argsort(-reference)[:2])


# ----------------------------------------------------------------------------- chat templates


ZEPHYR_LIKE = (
    "{% for message in messages %}{% if loop.index0 > 5 %}{% break %}{% endif %}"
    "{{ '<|' + message['role'] + '|>\n' }}{% generation %}{{ message['content'] }}"
    "{% endgeneration %}{{ eos_token + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
    "{{ {'n': messages | length, 'ü': 'ö'} | tojson }}"
)


@pytest.mark.parametrize("template", [CHATML, LLAMA2, ZEPHYR_LIKE], ids=["chatml", "llama2", "z"])
@pytest.mark.parametrize("generation_prompt", [True, False])
def test_chat_templates_render_as_apply_chat_template(
    tmp_path: Path, template: str, generation_prompt: bool
) -> None:
    from transformers import PreTrainedTokenizerFast

    hf = PreTrainedTokenizerFast(
        tokenizer_file=str(decoder_checkpoint("llama") / "tokenizer.json"),
        bos_token="<s>",
        eos_token="</s>",
    )
    hf.chat_template = template
    ours = ChatTemplate(template, {"bos_token": "<s>", "eos_token": "</s>"})
    for messages in (MESSAGES, MESSAGES[1:2], MESSAGES[1:3]):
        expected = hf.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=generation_prompt
        )
        assert ours.render(messages, add_generation_prompt=generation_prompt) == expected
    # the checkpoint layouts: chat_template.jinja (transformers 5), tokenizer_config.json (4)
    hf.save_pretrained(tmp_path)
    loaded = ChatTemplate.from_checkpoint(tmp_path)
    assert loaded is not None and loaded.render(MESSAGES) == hf.apply_chat_template(
        MESSAGES, tokenize=False, add_generation_prompt=True
    )
    (tmp_path / "chat_template.jinja").unlink(missing_ok=True)
    settings = json.loads((tmp_path / "tokenizer_config.json").read_text())
    settings["chat_template"] = template
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(settings))
    legacy = ChatTemplate.from_checkpoint(tmp_path)
    assert legacy is not None and legacy.render(MESSAGES) == loaded.render(MESSAGES)


def test_chat_greedy_tokens_match_transformers(llama: TextGenerator) -> None:
    from transformers import PreTrainedTokenizerFast

    directory = decoder_checkpoint("llama")
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_file=str(directory / "tokenizer.json"), bos_token="<s>", eos_token="</s>"
    )
    hf_tok.chat_template = LLAMA2
    ids = hf_tok.apply_chat_template(MESSAGES[:2], add_generation_prompt=True, tokenize=True)
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert llama.encode_prompt(MESSAGES[:2]) == list(ids)
    hf = transformers.AutoModelForCausalLM.from_pretrained(directory).eval()
    expected = hf.generate(torch.tensor([list(ids)]), do_sample=False, max_new_tokens=12)
    result = llama.generate_batch([MESSAGES[:2]], max_new_tokens=12)[0]
    assert result.token_ids == expected[0, len(ids) :].tolist()


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("params", "named"),
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"max_new_tokens": -3}, "max_new_tokens"),
        ({"max_new_tokens": 1000}, "max_new_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": -1}, "top_k"),
        ({"min_p": 2}, "min_p"),
        ({"repetition_penalty": 0}, "repetition_penalty"),
        ({"presence_penalty": 3}, "presence_penalty"),
        ({"stop": [f"s{i}" for i in range(50)]}, "stop"),
        ({"stop": [""]}, r"stop\[0\]"),
        ({"stop_token_ids": [-1]}, "stop_token_ids"),
        ({"logprobs": 99}, "logprobs"),
        ({"seed": "x"}, "seed"),
        ({"temprature": 1.0}, "temprature"),
    ],
)
def test_bad_parameters_raise_naming_the_field(
    generator: TextGenerator, params: dict[str, Any], named: str
) -> None:
    with pytest.raises(InvalidArgumentError, match=named):
        generator.generate("a cat", **params)
    with pytest.raises(InvalidArgumentError, match=named):
        generator.stream("a cat", **params)  # before the first delta, not mid-stream


def test_bad_prompts_and_messages_raise(generator: TextGenerator, llama: TextGenerator) -> None:
    too_long = " ".join(["the quick brown fox jumps over the lazy dog"] * 20)
    with pytest.raises(InvalidArgumentError, match="prompt 0 has .* tokens; .* context is 64"):
        generator.generate(too_long)
    with pytest.raises(InvalidArgumentError, match="prompt must be a string"):
        generator.generate(["not", "a", "string"])  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match=r"messages\[1\].role 'wizard'"):
        generator.chat([{"role": "user", "content": "hi"}, {"role": "wizard", "content": "x"}])
    with pytest.raises(InvalidArgumentError, match=r"messages\[0\].content must be a string"):
        generator.chat([{"role": "user", "content": 42}])
    with pytest.raises(InvalidArgumentError, match="messages is empty"):
        generator.chat([])
    # the Llama 2 template raises on turns that do not alternate
    with pytest.raises(PreprocessingError, match="roles must alternate"):
        llama.chat([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])


def test_checkpoint_problems_raise(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not a valid Jinja template"):
        ChatTemplate("{% for %}")
    directory = tmp_path / "ckpt"
    shutil.copytree(decoder_checkpoint("gpt2"), directory)
    (directory / "chat_template.jinja").unlink()
    plain = TextGenerator.from_pretrained(directory, "cpu", sharing=False)
    with pytest.raises(CheckpointError, match="no chat template"):
        plain.chat(MESSAGES[:2])
    config = json.loads((directory / "generation_config.json").read_text())
    config["top_p"] = 3.0
    (directory / "generation_config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match="generation_config.json: top_p"):
        TextGenerator.from_pretrained(directory, "cpu", sharing=False)


# ----------------------------------------------------------------------------- continuous batching

#: (prompt, max_new_tokens, step at which it joins): prompts of different lengths joining a
#: running batch, a longer prompt than the batch's columns among them
SCHEDULE = [
    ([3, 17, 40, 22, 5], 30, 0),
    ([9, 100, 120, 33, 7, 8, 9, 60, 61], 8, 2),
    ([5, 6], 20, 3),
    (list(range(7, 40)), 12, 5),
    ([11, 12, 13], 6, 5),
]


def _drive(batch: ContinuousBatch, schedule: list[Any], params: Any) -> dict[int, list[Any]]:
    """Run ``schedule`` through ``batch``: each owner's events, with the step of each."""
    got: dict[int, list[Any]] = {owner: [] for owner in range(len(schedule))}
    step = 0
    while step <= max(s[2] for s in schedule) or batch.active or batch.waiting:
        for owner, (prompt, count, joins) in enumerate(schedule):
            if joins == step:
                batch.add(owner, [prompt], [params(owner, count)])
        for owner_of, event in batch.step():
            assert isinstance(owner_of, int)
            got[owner_of].append((step, event))
        step += 1
    return got


def _greedy(owner: int, count: int) -> SamplingParams:
    return SamplingParams(max_new_tokens=count, ignore_eos=True)


def test_sequences_join_and_leave_a_running_batch_with_the_tokens_of_runs_alone(
    generator: TextGenerator,
) -> None:
    engine = generator.engine
    alone = [
        engine.generate([prompt], [_greedy(0, count)])[0].token_ids for prompt, count, _ in SCHEDULE
    ]
    batch = ContinuousBatch(engine, max_rows=8)
    got = _drive(batch, SCHEDULE, _greedy)
    assert [[e.token_id for _, e in got[o]] for o in range(len(SCHEDULE))] == alone
    # each joined at its step, and the short ones finished before the first (30 tokens)
    assert [got[o][0][0] for o in range(len(SCHEDULE))] == [s[2] for s in SCHEDULE]
    assert got[0][-1][0] > max(got[o][-1][0] for o in range(1, len(SCHEDULE)))
    assert batch.rows == 0  # every row left: the cache is gone


def test_beyond_max_rows_sequences_wait_in_order(generator: TextGenerator) -> None:
    batch = ContinuousBatch(generator.engine, max_rows=2)
    schedule = [(p, n, 0) for p, n, _ in SCHEDULE]
    got = _drive(batch, schedule, _greedy)
    first = [got[o][0][0] for o in range(len(schedule))]
    last = [got[o][-1][0] for o in range(len(schedule))]
    assert first[:2] == [0, 0]
    # the third starts when the first row frees (the 8-token one), the others in turn
    assert first[2] == last[1] + 1
    assert first == sorted(first)
    for owner in range(2, len(schedule)):
        running = sum(got[o][0][0] < first[owner] <= got[o][-1][0] for o in range(owner))
        assert running < 2


def test_a_cancelled_sequence_frees_its_row_at_the_next_step(generator: TextGenerator) -> None:
    batch = ContinuousBatch(generator.engine, max_rows=4)
    batch.add("long", [[3, 17, 40]], [_greedy(0, 40)])
    batch.add("other", [[5, 6, 7, 8]], [_greedy(0, 40)])
    batch.step()
    assert (batch.active, batch.rows) == (2, 2)
    batch.cancel("long")
    assert (batch.active, batch.rows) == (1, 1)
    assert {owner for owner, _ in batch.step()} == {"other"}
    batch.add("waiting", [[1, 2]], [_greedy(0, 4)])
    batch.cancel("waiting")
    assert batch.waiting == 0


def test_seeded_sampling_in_a_running_batch(generator: TextGenerator) -> None:
    """A seeded sequence samples from its own generator: it reproduces alone, and in a batch
    it draws the same numbers (its tokens equal its run alone while the batched logits do,
    as on the CPU here)."""

    def sampled(owner: int, count: int) -> SamplingParams:
        return SamplingParams(max_new_tokens=count, temperature=1.2, seed=owner, ignore_eos=True)

    engine = generator.engine
    alone = [engine.generate([p], [sampled(o, n)])[0].token_ids
             for o, (p, n, _) in enumerate(SCHEDULE)]  # fmt: skip
    again = [engine.generate([p], [sampled(o, n)])[0].token_ids
             for o, (p, n, _) in enumerate(SCHEDULE)]  # fmt: skip
    assert alone == again
    got = _drive(ContinuousBatch(engine, max_rows=8), SCHEDULE, sampled)
    assert [[e.token_id for _, e in got[o]] for o in range(len(SCHEDULE))] == alone


def test_bad_continuous_batch_arguments_raise(generator: TextGenerator) -> None:
    with pytest.raises(InvalidArgumentError, match="max_rows"):
        ContinuousBatch(generator.engine, max_rows=0)
    batch = ContinuousBatch(generator.engine, max_rows=2)
    with pytest.raises(InvalidArgumentError, match="prompt 0 is empty"):
        batch.add("x", [[]], [SamplingParams()])
    assert batch.waiting == 0


def test_webnn_step_graphs_stay_bucketed_while_sequences_join_and_leave() -> None:
    """Rows in powers of two and windows in buckets: graphs are compiled when the batch's
    shape changes (a join, a leave, a new window bucket), never per token, and a second run
    of the same joins and leaves compiles nothing."""
    from tests.conftest import start_backend

    backend = start_backend("webnn")
    webnn = TextGenerator.from_pretrained(decoder_checkpoint("qwen2"), "webnn", sharing=False)
    # the first sequence runs on alone for 20 steps after the others have left
    schedule = [(SCHEDULE[0][0], 55, 0), *SCHEDULE[1:]]
    batch = ContinuousBatch(webnn.engine, max_rows=4)
    compiled: list[int] = []
    step = batch.step

    def counted() -> Any:
        before = backend.stats.compilations
        events = step()
        compiled.append(backend.stats.compilations - before)
        return events

    batch.step = counted  # type: ignore[method-assign]
    got = _drive(batch, schedule, _greedy)
    assert len(compiled) > 50
    assert sum(compiled[-20:]) == 0
    before = backend.stats.compilations
    assert _drive(ContinuousBatch(webnn.engine, max_rows=4), schedule, _greedy) == got
    assert backend.stats.compilations == before
