"""``ipfs-accelerate transcribe`` with --timestamps, --format srt|vtt|json|text, --stream and
--language auto, on the timestamped tiny Whisper of tests/models/test_whisper_longform.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from ipfs_accelerate.cli import app
from ipfs_accelerate.models.pipelines import SpeechRecognizer
from ipfs_accelerate.models.pipelines._speech import subtitles
from tests.models.test_whisper_longform import RATE, make_timestamped_whisper, speech_like

pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, SpeechRecognizer]:
    import soundfile

    root = tmp_path_factory.mktemp("cli_whisper")
    checkpoint = make_timestamped_whisper(root / "ckpt")
    audio = root / "speech.wav"
    soundfile.write(audio, speech_like(6.0), RATE, subtype="FLOAT")
    return checkpoint, audio, SpeechRecognizer.from_pretrained(checkpoint, device="cpu")


def run(*args: str) -> str:
    result = CliRunner().invoke(app, ["transcribe", *args, "--device", "cpu"])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_subtitles_json_and_text_formats(setup: tuple[Path, Path, SpeechRecognizer]) -> None:
    checkpoint, audio, whisper = setup
    segments = whisper.transcribe_segments(str(audio), "en", return_timestamps=True)
    assert len(segments) >= 2
    for fmt in ("srt", "vtt"):
        shown = run(str(audio), "-m", str(checkpoint), "--language", "en", "--format", fmt)
        assert shown == subtitles(segments, fmt)
    data = json.loads(
        run(str(audio), "-m", str(checkpoint), "--language", "en", "--timestamps", "--format",
            "json")
    )  # fmt: skip
    got = data["results"][0]["segments"]
    assert [(s["start"], s["end"], s["tokens"]) for s in got] == [
        (s.start, s.end, s.tokens) for s in segments
    ]
    text = run(str(audio), "-m", str(checkpoint), "--language", "auto", "--format", "text")
    assert text.strip() == whisper.transcribe(str(audio), None)


def test_stream_prints_the_committed_text(setup: tuple[Path, Path, SpeechRecognizer]) -> None:
    checkpoint, audio, whisper = setup
    shown = run(str(audio), "-m", str(checkpoint), "--language", "en", "--stream")
    events = list(
        whisper.transcribe_stream(
            (c for c in [speech_like(6.0)[i : i + RATE] for i in range(0, 6 * RATE, RATE)]),
            "en",
            min_chunk_s=1.0,  # the CLI decodes a file once per second of it
        )
    )
    committed = [e.text for e in events if e.type == "committed" and e.text]
    assert committed and shown == " ".join(committed) + "\n"


def test_bad_format_and_stream_combinations_are_usage_errors(
    setup: tuple[Path, Path, SpeechRecognizer],
) -> None:
    checkpoint, audio, _ = setup
    bad = CliRunner().invoke(
        app, ["transcribe", str(audio), "-m", str(checkpoint), "--format", "xml"]
    )
    assert bad.exit_code == 2 and "--format" in bad.output
    both = CliRunner().invoke(
        app, ["transcribe", str(audio), "-m", str(checkpoint), "--stream", "--format", "srt"]
    )
    assert both.exit_code == 2 and "--stream" in both.output
