"""The work-saving paths of Whisper decoding: a forced token prefix (a stream's committed text,
decoded in blocks instead of chosen token by token) and the word-timestamp alignment pass in a
bucketed length on a backend that compiles a graph per shape. Each must give what the plain
path gives."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate import hal
from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.models.pipelines import SpeechRecognizer
from ipfs_accelerate.tensor import from_numpy
from tests.models.test_whisper_longform import RATE, make_timestamped_whisper, speech_like

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

#: enough tokens for a 19-token prefix (blocks of 8, 8, 2, then one) and a tail after it
OPTIONS: dict[str, Any] = {"return_timestamps": True, "word_timestamps": True, "max_new_tokens": 40}


@pytest.fixture(scope="module")
def stamped_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_timestamped_whisper(tmp_path_factory.mktemp("whisper_speed"))


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return speech_like(9.0, seed=7)


def _recognizer(stamped_dir: Path, device: str) -> SpeechRecognizer:
    return SpeechRecognizer.from_pretrained(stamped_dir, device=device, sharing=False)


def _summary(segments: list[Any]) -> list[tuple[Any, ...]]:
    return [
        (
            s.tokens,
            round(s.start, 6),
            round(s.end, 6),
            round(s.avg_logprob, 4),
            [(w.word, round(w.start, 6), round(w.end, 6)) for w in s.words],
        )
        for s in segments
    ]


def test_forcing_the_decodes_own_prefix_changes_nothing(
    device: str, stamped_dir: Path, audio: np.ndarray
) -> None:
    recognizer = _recognizer(stamped_dir, device)
    plain = recognizer.transcribe_segments((audio, RATE), "en", **OPTIONS)
    tokens = [t for s in plain for t in s.tokens]
    assert len(tokens) >= 24, "the random checkpoint must write enough tokens to force 19"
    assert tokens[0] >= (recognizer.generation.no_timestamps or 0) + 1  # a timestamp first
    # webnn counts its replays (the replayed steps are what forcing saves)
    stats = hal.get_backend(device).stats if device == "webnn" else None  # type: ignore[attr-defined]

    def replays() -> int:
        return int(stats.replays) if stats is not None else 0

    before = replays()
    recognizer.transcribe_segments((audio, RATE), "en", **OPTIONS)
    plain_replays, before = replays() - before, replays()
    forced = recognizer.transcribe_segments(
        (audio, RATE), "en", prefix_tokens=tokens[:19], **OPTIONS
    )
    # same tokens, times, log-probabilities (the forced tokens' are read, not chosen) and
    # word timings
    assert _summary(forced) == _summary(plain)
    if stats is not None:
        # the 19 forced tokens went through 3 replayed blocks (8, 8, 2) and one step
        assert plain_replays >= 19
        assert replays() - before == plain_replays - 19 + 4


def test_a_prefix_the_model_would_not_write_is_kept_and_continued(
    stamped_dir: Path, audio: np.ndarray
) -> None:
    recognizer = _recognizer(stamped_dir, "cpu")
    plain = recognizer.transcribe_segments((audio, RATE), "en", **OPTIONS)
    tokens = [t for s in plain for t in s.tokens]
    stamps = (recognizer.generation.no_timestamps or 0) + 1
    # the plain decode's first segment with its text tokens swapped for others
    prefix = [tokens[0]] + [200 + n for n in range(5)]
    assert prefix != tokens[:6]
    forced = recognizer.transcribe_segments((audio, RATE), "en", prefix_tokens=prefix, **OPTIONS)
    written = [t for s in forced for t in s.tokens]
    assert written[:6] == prefix
    assert any(t < stamps for t in written[6:])  # decoding went on after the prefix


def test_bad_prefix_tokens_raise_typed(stamped_dir: Path, audio: np.ndarray) -> None:
    recognizer = _recognizer(stamped_dir, "cpu")
    gen = recognizer.generation
    for bad in ([gen.eos], [gen.no_timestamps], [-1], [gen.vocab_size], [1.5], [True]):
        with pytest.raises(InvalidArgumentError, match="prefix_tokens"):
            recognizer.transcribe_segments((audio, RATE), "en", prefix_tokens=bad, **OPTIONS)
    with pytest.raises(InvalidArgumentError, match="num_beams"):
        recognizer.transcribe_segments(
            (audio, RATE), "en", prefix_tokens=[10], num_beams=2, return_timestamps=True
        )
    with pytest.raises(InvalidArgumentError, match="return_timestamps"):
        recognizer.transcribe_segments((audio, RATE), "en", prefix_tokens=[10])


def test_alignment_pass_in_a_bucket_equals_the_exact_length_and_reuses_its_graph(
    stamped_dir: Path,
) -> None:
    from tests.conftest import start_backend

    start_backend("webnn")  # skips where webnn cannot start
    cpu = _recognizer(stamped_dir, "cpu").model
    webnn = _recognizer(stamped_dir, "webnn").model
    features = np.random.default_rng(2).standard_normal((1, 80, 3000)).astype(np.float32)
    heads = [(0, 1), (1, 2), (1, 3)]
    stats = hal.get_backend("webnn").stats
    got = []
    for length in (11, 23, 17):
        ids = np.random.default_rng(length).integers(0, 300, (1, length))
        reference = cpu.start_decoding(cpu.encode(from_numpy(features, "cpu")))
        expected = cpu.cross_attention_weights(from_numpy(ids, "cpu"), reference, heads)
        encoded = webnn.encode(from_numpy(features, "webnn"))
        cache = webnn.start_decoding(encoded)
        compiled = stats.compilations
        weights = webnn.cross_attention_weights(from_numpy(ids, "webnn"), cache, heads)
        got.append(stats.compilations - compiled)
        assert weights.shape == expected.shape == (3, length, 1500)
        np.testing.assert_allclose(weights, expected, atol=2e-5)
    # three lengths in one bucket of 32: the later two reuse the first one's graph
    assert got[1:] == [0, 0]


def test_webnn_step_graphs_share_one_vocabulary_projection(
    stamped_dir: Path, audio: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ONNX Runtime prepacks a matrix weight once per session: the replayed decode steps (one
    graph per batch, block length and cache capacity) leave the projection to the head graphs
    of its input's row shapes, which hold the only prepacked copies. The projection of the
    tiny checkpoint is below the backend's default bound, so the test lowers the bound to it."""
    from tests.conftest import start_backend

    backend = start_backend("webnn")  # skips where webnn cannot start
    decoded = {}
    for label, bound in (("inside", None), ("shared", 0)):
        recognizer = _recognizer(stamped_dir, "webnn")
        model = recognizer.model
        weight = model.proj_out.weight
        size = weight.size * 4
        monkeypatch.setattr(backend, "shared_head_bytes", size if bound == 0 else size + 1)
        backend.clear_cache()
        plain = recognizer.transcribe_segments((audio, RATE), "en", **OPTIONS)
        prefix = [t for s in plain for t in s.tokens][:19]  # blocks of 8, 8 and 2
        forced = recognizer.transcribe_segments(
            (audio, RATE), "en", prefix_tokens=prefix, **OPTIONS
        )
        decoded[label] = (_summary(plain), _summary(forced))
        multiplying = [
            c for c in backend._cache.values() if any(p is weight._data for p in c.packed)
        ]
        steps = model.decode_graphs.captured
        assert steps >= 4, "one-token steps at two capacities and forced blocks of 8 and 2"
        if label == "inside":  # what the test would see if the steps held the projection
            assert len(multiplying) >= steps
        else:
            # no step graph multiplies by it (each multiplies by every decoder layer's weights
            # too); two head graphs do: one-token steps and prompts' last tokens (1 row), and
            # blocks of 8 and of 2 and the prefix's prompt with every position's logits (8)
            assert all(len(c.packed) == 1 and len(c.inputs) == 1 for c in multiplying)
            shapes = sorted(
                tuple(d.shape) for c in multiplying for d in c.graph.input_descriptors.values()
            )
            assert shapes == [(1, 32), (8, 32)]
    # the same products: bit-identical segments, log-probabilities and word times
    assert decoded["shared"] == decoded["inside"]


def test_the_timestamp_rules_hand_back_the_log_softmax_of_what_they_leave() -> None:
    """The decode loop takes the chosen token's log-probability from the rules' own
    log-softmax when their last rule leaves the scores as they are: it must be the log-softmax
    of the masked scores, bit for bit; and None when the rule masks the text tokens."""
    from ipfs_accelerate.models.pipelines._speech_decoding import (
        SpecialTokens,
        _log_softmax,
        apply_timestamp_rules,
    )

    special = SpecialTokens(
        eos=10, pad=10, no_timestamps=13, prev_sot=None, suppress=[], begin_suppress=[]
    )
    rng = np.random.default_rng(0)
    handed = masked = 0
    for trial in range(40):
        scores = rng.standard_normal(30).astype(np.float32) * 3
        scores[special.timestamp_begin :] -= 4 if trial % 2 else -4  # either side may win
        generated = [int(t) for t in rng.choice([3, 5, 15, 20], size=trial % 4)]
        if generated and generated[-1] >= special.timestamp_begin:
            generated = sorted(generated)
        logprobs = apply_timestamp_rules(scores, generated, special)
        if logprobs is None:
            masked += 1
            assert np.all(scores[: special.timestamp_begin] == -np.inf)
        else:
            handed += 1
            np.testing.assert_array_equal(logprobs, _log_softmax(scores.copy()))
    assert handed and masked
    # the shift by the largest score equals the shift by the largest finite one
    scores = np.array([1.0, -np.inf, 3.0, 0.5], dtype=np.float32)
    shifted = scores - 3.0
    np.testing.assert_array_equal(_log_softmax(scores), shifted - np.log(np.exp(shifted).sum()))
    assert np.isnan(_log_softmax(np.full(3, -np.inf, dtype=np.float32))).all()
