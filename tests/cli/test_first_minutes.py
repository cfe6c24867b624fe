"""A newcomer's first commands: whole names in --help, what `serve` prints, one-shot device
choice, $IPFS_ACCELERATE_DEVICE everywhere, usage errors before any work, hints that fit."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from ipfs_accelerate import hal
from ipfs_accelerate.cli import ExitCode, app
from ipfs_accelerate.errors import BackendFallbackWarning, UnknownBackendError
from tests.serve.conftest import MINILM, Running

pytestmark = pytest.mark.timeout(120)

runner = CliRunner()

COMMANDS = (
    [], ["hardware"], ["embed"], ["classify-image"], ["zero-shot"], ["transcribe"], ["chat"],
    ["serve"], ["bench"], ["models"], ["models", "list"], ["models", "pull"],
)  # fmt: skip


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(app, list(args), env=env)


@pytest.mark.parametrize("columns", ["60", "80"])
def test_help_shows_whole_names_and_no_type_placeholders(columns: str) -> None:
    for command in COMMANDS:
        result = invoke(*command, "--help", env={"COLUMNS": columns})
        assert result.exit_code == 0, result.output
        text = result.stdout
        assert "…" not in text and "<bool>" not in text, command
        # an option's value is named plainly (TEXT, INTEGER, PATH...), not by typer's
        # <str>/<int range> type labels; arguments keep typer's label after their name
        options = text[text.index("Options:") :]
        assert not re.search(r"<(str|int|float|path)[^>]*>", options), (command, options)
    serve = invoke("serve", "--help", env={"COLUMNS": columns}).stdout
    words = set(re.findall(r"[\w$=\[\]-]+", serve))
    for name in (
        "--max-concurrent-requests", "--max-client-batch-size", "--cors-allow-origin",
        "IPFS_ACCELERATE_API_KEY]", "$IPFS_ACCELERATE_DEVICE", "[NAME=]SOURCE",
    ):  # fmt: skip
        assert name in words, name


def test_serve_prints_whole_model_ids_and_only_the_routes_they_serve(
    registry: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from ipfs_accelerate.cli._serve import _print_served
    from ipfs_accelerate.serve import ModelRegistry, ServedModel, ServerConfig, create_app

    long_id = "an-organisation-with-a-long-name/" + "-".join(["sentence-embedding"] * 5)
    minilm = registry.get(MINILM).pipeline
    served = ServedModel(name=long_id, kind="embedding", source=MINILM, pipeline=minilm)
    try:
        app_ = create_app(ServerConfig(device="cpu"), registry=ModelRegistry([served]))
        _print_served(app_, "http://127.0.0.1:8000")
    finally:
        served.executor.shutdown()
    err = capsys.readouterr().err
    assert len(long_id) > 100 and long_id in err.splitlines()[2]  # one line, whole
    assert "/v1/embeddings" in err and "/v2/models/{model}/infer" in err and "/embed" in err
    assert "/v1/audio/transcriptions" not in err  # no speech model loaded


@pytest.fixture
def probe_backend() -> Iterator[list[int]]:
    """A registered backend that counts its starts."""
    starts: list[int] = []

    def factory() -> Any:
        starts.append(1)
        from ipfs_accelerate.hal.cpu import CPUBackend

        return CPUBackend()

    hal.register_backend("probe", factory)
    try:
        yield starts
    finally:
        hal.unregister_backend("probe")


def test_one_shot_selection_starts_no_backend_to_look_at_it(probe_backend: list[int]) -> None:
    choice = hal.select_backend("bert", one_shot=True)
    assert choice.name == "cpu" and "one-shot" in choice.reason and probe_backend == []
    hal.select_backend("bert")  # a long job compares every backend: it starts them
    assert probe_backend == [1]


def test_embed_of_a_few_texts_with_auto_runs_one_shot_on_the_cpu(server: Running) -> None:
    result = invoke("embed", "the cat sleeps", "markets fell")
    assert result.exit_code == 0, result.output
    # the device line is longer than 80 columns and stays one line off a terminal
    line = next(x for x in result.stderr.splitlines() if x.startswith(MINILM))
    assert line.startswith(f"{MINILM} on cpu: one-shot work") and line.endswith("inputs take")


def test_the_device_variable_means_the_same_everywhere(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = {"IPFS_ACCELERATE_DEVICE": "tpu"}
    for args in (["hardware"], ["embed", "x"], ["embed", "--device", "auto", "x"]):
        result = invoke(*args, env=unknown)
        assert result.exit_code == ExitCode.CONFIGURATION, (args, result.output)
        assert "$IPFS_ACCELERATE_DEVICE='tpu'" in result.stderr
        assert "ipfs-accelerate hardware" in result.stderr  # the hint fits the cause
    monkeypatch.setenv("IPFS_ACCELERATE_DEVICE", "tpu")
    with pytest.raises(UnknownBackendError, match="IPFS_ACCELERATE_DEVICE"):
        hal.select_backend("bert")
    with pytest.raises(UnknownBackendError, match="IPFS_ACCELERATE_DEVICE"):
        hal.default_device()
    monkeypatch.setenv("IPFS_ACCELERATE_DEVICE", "cpu")
    for one_shot in (False, True):
        choice = hal.select_backend("bert", one_shot=one_shot)
        assert choice.name == "cpu" and choice.reason == "set by $IPFS_ACCELERATE_DEVICE"
    data = invoke("hardware", "--json", env={"IPFS_ACCELERATE_DEVICE": "cpu"})
    assert '"device_override": "cpu"' in data.stdout
    embedded = invoke("embed", "x", env={"IPFS_ACCELERATE_DEVICE": "cpu"})
    assert f"{MINILM} on cpu: set by $IPFS_ACCELERATE_DEVICE" in embedded.stderr


def test_an_unstartable_override_gives_way_to_its_fallback(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken() -> Any:
        raise RuntimeError("no such device")

    hal.register_backend("broken-here", broken)
    try:
        monkeypatch.setenv("IPFS_ACCELERATE_DEVICE", "broken-here")
        with pytest.warns(BackendFallbackWarning, match="broken-here"):
            choice = hal.select_backend("bert")
        assert choice.name == "cpu" and "broken-here is unavailable" in choice.reason
    finally:
        hal.unregister_backend("broken-here")


def test_bad_output_and_language_fail_before_any_work(tmp_path: Path) -> None:
    nowhere = str(tmp_path / "no-model")  # loading it would be exit 3: these come first
    (tmp_path / "dir.npy").mkdir()
    for output in (tmp_path / "missing" / "v.npy", tmp_path / "dir.npy", tmp_path / "v.txt"):
        result = invoke("embed", "--model", nowhere, "--output", str(output), "x")
        assert result.exit_code == ExitCode.USAGE, result.output
    audio = tmp_path / "a.wav"
    audio.write_bytes(b"")
    result = invoke("transcribe", str(audio), "--model", nowhere, "--language", "klingon")
    assert result.exit_code == ExitCode.USAGE and "klingon" in result.output


def test_exit_three_hints_fit_the_cause(tmp_path: Path) -> None:
    missing = invoke("embed", "--model", str(tmp_path / "nowhere"), "x")
    assert missing.exit_code == ExitCode.CONFIGURATION
    assert "models list" in missing.stderr and "hardware" not in missing.stderr
    unknown = invoke("embed", "--device", "tpu", "x")
    assert unknown.exit_code == ExitCode.CONFIGURATION and "ipfs-accelerate hardware" in (
        unknown.stderr
    )
