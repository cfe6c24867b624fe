"""``/v1/audio/transcriptions`` with timestamps, words, prompt, temperature and streaming,
through the official ``openai`` SDK against a loopback server holding the timestamped tiny
Whisper of tests/models/test_whisper_longform.py (timestamp tokens and alignment heads)."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import openai
import pytest

from tests.models.test_whisper_longform import RATE, make_timestamped_whisper, speech_like

pytest.importorskip("transformers")

NAME = "stamped-whisper"
KEY = "sk-speech-formats-0123456789"


class _Served:
    def __init__(self, url: str, pipeline: Any) -> None:
        self.url, self.pipeline = url, pipeline


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Served]:
    from ipfs_accelerate.serve import (
        BackgroundServer,
        ModelRegistry,
        ModelSpec,
        ServerConfig,
        create_app,
    )

    directory = make_timestamped_whisper(tmp_path_factory.mktemp("served_whisper"))
    registry = ModelRegistry.load([ModelSpec(str(directory), name=NAME)], device="cpu")
    app = create_app(ServerConfig(device="cpu", api_key=KEY), registry=registry)
    try:
        with BackgroundServer(app) as running:
            yield _Served(running.url, registry.get(NAME).pipeline)
    finally:
        registry.close()


@pytest.fixture(scope="module")
def client(served: _Served) -> openai.OpenAI:
    return openai.OpenAI(base_url=served.url + "/v1", api_key=KEY, max_retries=0)


@pytest.fixture(scope="module")
def audio() -> tuple[bytes, np.ndarray]:
    import soundfile

    samples = speech_like(8.0)
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, RATE, format="WAV", subtype="FLOAT")
    return buffer.getvalue(), samples


@pytest.fixture(scope="module")
def segments(served: _Served, audio: tuple[bytes, np.ndarray]) -> list[Any]:
    result: list[Any] = served.pipeline.transcribe_segments(
        (audio[1], RATE), "en", return_timestamps=True, word_timestamps=True
    )
    assert len(result) >= 2
    return result


def _stamp(seconds: float, separator: str) -> str:
    millis = round(seconds * 1000)
    return (
        f"{millis // 3_600_000:02d}:{millis // 60_000 % 60:02d}:{millis // 1000 % 60:02d}"
        f"{separator}{millis % 1000:03d}"
    )


def test_verbose_json_has_timestamped_segments_and_words(
    client: openai.OpenAI, audio: tuple[bytes, np.ndarray], segments: list[Any]
) -> None:
    from ipfs_accelerate.models.pipelines import TranscriptSegment

    verbose = client.audio.transcriptions.create(
        model=NAME, file=("a.wav", audio[0]), response_format="verbose_json", language="en",
        timestamp_granularities=["word", "segment"],
    )  # fmt: skip
    assert verbose.text == TranscriptSegment.join(segments)
    assert verbose.segments is not None and verbose.words is not None
    assert [(s.start, s.end, s.tokens) for s in verbose.segments] == [
        (round(s.start, 3), round(s.end, 3), s.tokens) for s in segments
    ]
    assert verbose.segments[0].avg_logprob == pytest.approx(segments[0].avg_logprob)
    expected = [(w.word.strip(), round(w.start, 3)) for s in segments for w in s.words]
    assert [(w.word, w.start) for w in verbose.words] == expected
    assert len(verbose.words) >= 5


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_carry_the_segment_timestamps(
    client: openai.OpenAI, audio: tuple[bytes, np.ndarray], segments: list[Any], fmt: str
) -> None:
    from ipfs_accelerate.models.pipelines import TranscriptSegment

    got = client.audio.transcriptions.create(
        model=NAME, file=("a.wav", audio[0]), response_format=fmt, language="en"
    )
    separator = "," if fmt == "srt" else "."
    lines = [f"{_stamp(s.start, separator)} --> {_stamp(s.end, separator)}" for s in segments]
    assert [line for line in got.splitlines() if "-->" in line] == lines
    assert got.startswith("1\n" if fmt == "srt" else "WEBVTT\n")
    text = client.audio.transcriptions.create(
        model=NAME, file=("a.wav", audio[0]), response_format="text", language="en"
    )
    # the same decode without word timings says the same text
    assert text.strip() == TranscriptSegment.join(segments)


def test_prompt_and_temperature_reach_the_decoder(
    served: _Served, client: openai.OpenAI, audio: tuple[bytes, np.ndarray]
) -> None:
    from ipfs_accelerate.models.pipelines import TranscriptSegment

    def offline(**options: Any) -> str:
        return TranscriptSegment.join(
            served.pipeline.transcribe_segments(
                (audio[1], RATE), "en", return_timestamps=True, **options
            )
        )

    prompted = client.audio.transcriptions.create(
        model=NAME, file=("a.wav", audio[0]), language="en", prompt="the quick brown fox"
    )
    assert prompted.text == offline(initial_prompt="the quick brown fox") != offline()
    hot = client.audio.transcriptions.create(
        model=NAME, file=("a.wav", audio[0]), language="en", temperature=0.9
    )
    assert hot.text == offline(temperature=0.9) != offline()


def test_stream_sends_openai_delta_and_done_events(
    client: openai.OpenAI, audio: tuple[bytes, np.ndarray], segments: list[Any]
) -> None:
    from ipfs_accelerate.models.pipelines import TranscriptSegment

    long = np.concatenate([audio[1]] * 5)  # 40 s: two windows, two rounds of deltas
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, long, RATE, format="WAV", subtype="FLOAT")
    stream = client.audio.transcriptions.create(
        model=NAME, file=("a.wav", buffer.getvalue()), language="en", stream=True
    )
    events = list(stream)
    types = [e.type for e in events]
    assert types[-1] == "transcript.text.done" and types.count("transcript.text.done") == 1
    deltas = [e.delta for e in events if e.type == "transcript.text.delta"]
    assert len(deltas) >= 2
    assert "".join(deltas) == events[-1].text
    assert (
        events[-1].text
        == client.audio.transcriptions.create(
            model=NAME, file=("a.wav", buffer.getvalue()), language="en"
        ).text
    )
    assert TranscriptSegment.join(segments)  # the short clip's segments say something too


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"temperature": 1.5}, "temperature"),
        ({"timestamp_granularities": ["word"]}, "timestamp_granularities"),
        (
            {"timestamp_granularities": ["letter"], "response_format": "verbose_json"},
            "timestamp_granularities",
        ),
        ({"stream": True, "response_format": "srt"}, "stream"),
        ({"response_format": "xml"}, "response_format"),
    ],
)
def test_bad_values_are_openai_errors(
    client: openai.OpenAI, audio: tuple[bytes, np.ndarray], kwargs: dict[str, Any], param: str
) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model=NAME, file=("a.wav", audio[0]), **kwargs)
    assert info.value.body["param"] == param


def test_stream_with_bad_audio_is_an_http_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(
            model=NAME, file=("a.wav", b"RIFF not a wav"), stream=True
        )
    assert info.value.body["param"] == "file"


# ----------------------------------------------------------------------------- WebSocket


def _ws_url(served: _Served, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"model": NAME, **params}.items())
    return served.url.replace("http://", "ws://") + "/v1/audio/stream?" + query


def _receive_all(connection: Any) -> list[dict[str, Any]]:
    import json

    from websockets.exceptions import ConnectionClosed

    events = []
    try:
        while True:
            events.append(json.loads(connection.recv(timeout=60)))
    except ConnectionClosed:
        return events


def test_websocket_streams_committed_text_paced_like_a_microphone(served: _Served) -> None:
    import time

    from websockets.sync.client import connect

    pcm = np.round(speech_like(3.0, seed=2) * 32767).astype("<i2")
    frames = [pcm[i : i + RATE // 2] for i in range(0, len(pcm), RATE // 2)]
    with connect(_ws_url(served, language="en"), additional_headers=_auth()) as ws:
        for frame in frames:
            ws.send(frame.tobytes())
            time.sleep(0.05)  # paced; what is asserted is the content
        ws.send('{"type": "end"}')
        events = _receive_all(ws)
        assert ws.close_code == 1000
    local = list(served.pipeline.transcribe_stream(iter(frames), "en"))
    expected = [(e.type, e.text) for e in local if e.type != "done"]
    assert [(e["type"].removeprefix("transcript."), e["text"]) for e in events[:-1]] == expected
    assert events[-1] == {"type": "transcript.done", "text": local[-1].text}
    assert any(e["type"] == "transcript.committed" for e in events)


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def test_websocket_text_where_audio_belongs_is_an_error_and_a_close(served: _Served) -> None:
    from websockets.sync.client import connect

    with connect(_ws_url(served), additional_headers=_auth()) as ws:
        ws.send(np.zeros(800, dtype="<i2").tobytes())
        ws.send("hello")
        events = _receive_all(ws)
        assert ws.close_code == 1008
    assert events[-1]["type"] == "error" and events[-1]["error"]["param"] == "frame"
    with connect(_ws_url(served, format="f32le"), additional_headers=_auth()) as ws:
        ws.send(b"\x00" * 6)  # not a whole float32 sample
        events = _receive_all(ws)
        assert ws.close_code == 1008 and "6 bytes" in events[-1]["error"]["message"]
    with connect(_ws_url(served, sample_rate="0"), additional_headers=_auth()) as ws:
        events = _receive_all(ws)
        assert ws.close_code == 1008 and events[-1]["error"]["param"] == "sample_rate"


def test_websocket_key_and_a_client_that_stops_midway(served: _Served) -> None:
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with pytest.raises(InvalidStatus):
        connect(_ws_url(served), additional_headers={"Authorization": "Bearer sk-wrong"})
    with connect(_ws_url(served, language="en"), additional_headers=_auth()) as ws:
        ws.send(np.zeros(RATE, dtype="<i2").tobytes())  # one decode's worth, then gone
    # the server is not stuck on the abandoned stream: a new one runs to its end
    with connect(_ws_url(served, language="en"), additional_headers=_auth()) as ws:
        ws.send(np.zeros(RATE // 4, dtype="<i2").tobytes())
        ws.send('{"type": "end"}')
        events = _receive_all(ws)
    assert events[-1]["type"] == "transcript.done"
