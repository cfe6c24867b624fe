"""The ``ipfs-accelerate`` command line: local models, remote APIs, the server, benchmarks.

Commands: ``hardware``, ``embed``, ``classify-image``, ``zero-shot``, ``transcribe``,
``chat``, ``serve``, ``bench``, ``models list`` and ``models pull``. Every command that
produces data takes ``--json`` (one JSON document on stdout; progress and messages go to
stderr). Exit codes:

==  ==============================================================================
0   success
1   runtime failure (inference failed, a benchmark failed, an unexpected error)
2   usage error (unknown option, missing argument, bad value)
3   configuration error (missing key or URL, unknown backend or model, a checkpoint
    that cannot be found or loaded, a missing optional dependency, offline mode)
4   remote API error (HTTP error status, timeout, connection failure, broken stream)
5   bad input data (a file that does not exist or cannot be decoded, bad text input)
130 interrupted (Ctrl-C)
==  ==============================================================================

Importing this module loads typer and rich only; models, backends and the server load
when a command needs them.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shlex
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

import ipfs_accelerate

if TYPE_CHECKING:
    import numpy as np

__all__ = ["ExitCode", "app", "exit_code_for", "main"]

F = TypeVar("F", bound=Callable[..., Any])


class ExitCode(IntEnum):
    """What the process exit status means (see the module docstring)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIGURATION = 3
    REMOTE = 4
    INPUT = 5
    INTERRUPTED = 130


stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False)

app = typer.Typer(
    name="ipfs-accelerate",
    help="Hardware-accelerated AI inference: local models on CPU/WebGPU/WebNN, remote inference APIs, "
    "and a server with the OpenAI, TEI and KServe APIs' shapes.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode="rich",
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(help="The local checkpoint cache: list what is cached, pull from the Hub.", no_args_is_help=True)
app.add_typer(models_app, name="models")

_DEBUG = {"on": os.environ.get("IPFS_ACCELERATE_DEBUG", "") not in ("", "0")}

JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (for scripts).")]
DeviceOption = Annotated[
    str, typer.Option("--device", "-d", help="Backend to run on: cpu, webgpu, webnn, or auto (select_backend decides).")
]


# ----------------------------------------------------------------------------- errors


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit status for an exception (see the module docstring)."""
    from ipfs_accelerate.errors import (
        APIError,
        BackendUnavailableError,
        CheckpointError,
        ConfigurationError,
        InvalidArgumentError,
        PreprocessingError,
        UnknownBackendError,
        UnsupportedArchitectureError,
    )

    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, APIError):
        return ExitCode.REMOTE
    config_errors = (
        ConfigurationError, UnknownBackendError, BackendUnavailableError, CheckpointError,
        UnsupportedArchitectureError, ImportError,
    )  # fmt: skip
    if isinstance(exc, config_errors):
        return ExitCode.CONFIGURATION
    if isinstance(exc, PreprocessingError | InvalidArgumentError | FileNotFoundError | IsADirectoryError | UnicodeDecodeError):
        return ExitCode.INPUT
    return ExitCode.FAILURE


_HINTS = {
    ExitCode.CONFIGURATION: "check the model name or path, the backend's key and URL, and the installed extras",
    ExitCode.REMOTE: "the remote service answered with an error or could not be reached",
    ExitCode.INPUT: "check the input files and text",
}


def _report(exc: BaseException, code: ExitCode, as_json: bool) -> None:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, ImportError) and exc.name:
        message = f"{message} (the optional dependency {exc.name!r} is missing; see the package extras)"
    if as_json:
        sys.stdout.write(json.dumps({"error": {"type": type(exc).__name__, "message": message, "exit_code": int(code)}}) + "\n")
    from rich.markup import escape

    # one unwrapped line, so that logs and scripts can search it; the message is not markup
    stderr.print(f"[bold red]error[/] ({type(exc).__name__}): {escape(message)}", soft_wrap=True)
    hint = _HINTS.get(code)
    if hint:
        stderr.print(f"[dim]exit {int(code)}: {hint}[/]", soft_wrap=True)
    if _DEBUG["on"]:
        stderr.print_exception()


def _command(fn: F) -> F:
    """Run a command body, turning exceptions into a message and a meaningful exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except typer.BadParameter:
            raise
        except KeyboardInterrupt:
            stderr.print("[yellow]interrupted[/]")
            raise typer.Exit(ExitCode.INTERRUPTED) from None
        except Exception as exc:
            import click

            if isinstance(exc, click.ClickException):
                raise
            code = exit_code_for(exc)
            _report(exc, code, bool(kwargs.get("json_output")))
            raise typer.Exit(code) from None

    return wrapper  # type: ignore[return-value]


def _usage(message: str) -> typer.BadParameter:
    return typer.BadParameter(message)


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False, default=_json_default) + "\n")
    sys.stdout.flush()


def _json_default(value: Any) -> Any:
    try:
        import numpy as np

        if isinstance(value, np.ndarray):
            return value.tolist()
        if isinstance(value, np.generic):
            return value.item()
    except ImportError:  # pragma: no cover - numpy is a hard dependency
        pass
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# ----------------------------------------------------------------------------- progress


@contextmanager
def _loading(what: str) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar for a model load (stages resolve, read, load), on stderr."""
    from ipfs_accelerate._progress import load_progress

    with load_progress(stderr, what, transient=True) as report:
        yield report


@contextmanager
def _steps(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` items (shown when there is more than one)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=stderr, transient=True, disable=total <= 1,
    ) as progress:  # fmt: skip
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def _load_pipeline(cls: Any, model: str, device: str) -> Any:
    with _loading(model) as report:
        pipeline = cls.from_pretrained(model, device=device, progress=report)
    stderr.print(f"[dim]{model} on {pipeline.device}: {pipeline.device_reason}[/]")
    return pipeline


# ----------------------------------------------------------------------------- root


def _version(value: bool) -> None:
    if value:
        stdout.print(f"ipfs-accelerate {ipfs_accelerate.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks of errors ($IPFS_ACCELERATE_DEBUG=1).")] = False,
) -> None:
    """Hardware-accelerated AI inference from the command line."""
    if debug:
        _DEBUG["on"] = True


# ----------------------------------------------------------------------------- hardware

_WORKLOADS = {"tensor math": None, "text embedding (bert)": "bert", "image (vit)": "vit", "image-text (clip)": "clip", "speech (whisper)": "whisper"}


def _bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)  # pragma: no cover


@app.command()
@_command
def hardware(
    details: Annotated[bool, typer.Option("--details", help="Also list each backend's limits and features.")] = False,
    json_output: JsonOption = False,
) -> None:
    """The hardware backends (adapters, limits) and what [bold]select_backend[/] picks for each workload, and why."""
    from ipfs_accelerate import hal

    infos = hal.available_backends(include_unavailable=True)
    selections = {label: hal.select_backend(family) for label, family in _WORKLOADS.items()}
    if json_output:
        _print_json({
            "backends": [info.as_dict() for info in infos],
            "selection": {
                label: {"model_type": _WORKLOADS[label], "backend": s.name, "reason": s.reason}
                for label, s in selections.items()
            },
            "device_override": os.environ.get("IPFS_ACCELERATE_DEVICE"),
        })  # fmt: skip
        return
    table = Table(title="Hardware backends", title_justify="left")
    for column in ("backend", "status", "device", "adapter / API", "memory"):
        table.add_column(column)
    for info in infos:
        if info.available:
            memory = _bytes(info.memory_bytes)
            if info.max_buffer_bytes is not None and info.max_buffer_bytes != info.memory_bytes:
                memory += f" (buffers <= {_bytes(info.max_buffer_bytes)})"
            table.add_row(info.name, "[green]available[/]", info.device_name, f"{info.adapter_type} / {info.api}", memory)
        else:
            table.add_row(info.name, "[yellow]unavailable[/]", info.reason or "", "", "")
    stdout.print(table)
    if details:
        for info in infos:
            if not info.available:
                continue
            limits = Table(title=f"{info.name}: dtypes, limits and features", title_justify="left", show_header=False)
            limits.add_column("key")
            limits.add_column("value")
            limits.add_row("dtypes", " ".join(info.dtypes))
            for key, value in sorted(info.limits.items()):
                limits.add_row(key, str(value))
            if info.features:
                limits.add_row("features", ", ".join(info.features))
            for key, value in sorted(info.details.items()):
                limits.add_row(key, json.dumps(value) if not isinstance(value, str) else value)
            stdout.print(limits)
    picks = Table(title="What select_backend picks", title_justify="left")
    for column in ("workload", "backend", "why"):
        picks.add_column(column)
    for label, selection in selections.items():
        picks.add_row(label, f"[bold]{selection.name}[/]", selection.reason)
    stdout.print(picks)
    if os.environ.get("IPFS_ACCELERATE_DEVICE"):
        stdout.print(f"$IPFS_ACCELERATE_DEVICE={os.environ['IPFS_ACCELERATE_DEVICE']} overrides the choice where available")


# ----------------------------------------------------------------------------- embed


def _read_texts(texts: list[str] | None, file: Path | None) -> list[str]:
    items = list(texts or [])
    if file is not None:
        content = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        items += [line for line in content.splitlines() if line.strip()]
    if not items:
        raise _usage("give texts as arguments or --file PATH (one text per line; - for stdin)")
    return items


def _write_embeddings(path: Path, texts: list[str], vectors: np.ndarray[Any, Any]) -> None:
    import numpy as np

    if path.suffix == ".npy":
        np.save(path, vectors)
    elif path.suffix == ".jsonl":
        with path.open("w", encoding="utf-8") as handle:
            for text, vector in zip(texts, vectors, strict=True):
                handle.write(json.dumps({"text": text, "embedding": vector.tolist()}) + "\n")
    else:  # checked before any work
        raise _usage(f"--output {path}: use a .npy or .jsonl file")


@app.command()
@_command
def embed(
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to embed.", show_default=False)] = None,
    file: Annotated[Path | None, typer.Option("--file", "-f", help="Read texts from a file, one per line (- for stdin).")] = None,
    model: Annotated[str | None, typer.Option("--model", "-m", help="Checkpoint (local: default the bundled all-MiniLM-L6-v2) or remote model name.")] = None,
    device: DeviceOption = "auto",
    backend: Annotated[str | None, typer.Option("--backend", "-b", help="Embed through this API backend (openai, hf_tei, ollama...) instead of locally.")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="The API backend's URL (else its metadata/environment default).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Texts per forward pass (local).")] = 32,
    normalize: Annotated[bool, typer.Option("--normalize/--no-normalize", help="L2-normalise the vectors.")] = True,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Also write the vectors to a .npy or .jsonl file.")] = None,
    json_output: JsonOption = False,
) -> None:
    """Sentence embeddings of texts, with a local model or through an API backend."""
    import numpy as np

    items = _read_texts(texts, file)
    if output is not None and output.suffix not in (".npy", ".jsonl"):
        raise _usage(f"--output {output}: use a .npy or .jsonl file")
    usage: dict[str, Any] | None = None
    if backend is not None:
        from ipfs_accelerate.api_backends import create_api_backend

        options: dict[str, Any] = {}
        if not normalize:
            if backend not in ("hf_tei", "hf_tei_unified"):
                raise _usage("--no-normalize works with local models and the TEI backends only")
            options["normalize"] = False
        client = create_api_backend(backend, metadata={"base_url": base_url} if base_url else None)
        with client.sync as sync, stderr.status(f"embedding {len(items)} text(s) through {backend}"):
            response = sync.embed(model, items, **options)
        vectors = np.asarray(response.embeddings, dtype=np.float32)
        model_name, where = response.model or model or client.get_default_model(), f"backend {backend}"
        if response.usage.total_tokens:
            usage = {"prompt_tokens": response.usage.input_tokens, "total_tokens": response.usage.total_tokens}
    else:
        from ipfs_accelerate.models import TextEmbedder
        from ipfs_accelerate.models._defaults import DEFAULT_TEXT_MODEL

        model_name = model or DEFAULT_TEXT_MODEL
        embedder = _load_pipeline(TextEmbedder, model_name, device)
        parts = []
        with _steps("embedding", len(items)) as advance:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                parts.append(embedder.embed(chunk, batch_size=batch_size, normalize=normalize))
                advance(len(chunk))
        vectors = np.concatenate(parts)
        where = f"device {embedder.device}"
    if output is not None:
        _write_embeddings(output, items, vectors)
    if json_output:
        data: dict[str, Any] = {
            "model": model_name, "source": where, "dimension": int(vectors.shape[1]), "count": len(items),
            "embeddings": vectors,
        }  # fmt: skip
        if usage:
            data["usage"] = usage
        _print_json(data)
        return
    stdout.print(f"{len(items)} embedding(s) of dimension {vectors.shape[1]} from {model_name} ({where})")
    table = Table(show_header=True)
    for column in ("#", "text", "norm", "first values"):
        table.add_column(column)
    for index, (text, vector) in enumerate(zip(items, vectors, strict=True)):
        preview = ", ".join(f"{v:+.4f}" for v in vector[:4])
        short = text if len(text) <= 48 else text[:45] + "..."
        table.add_row(str(index), short, f"{float(np.linalg.norm(vector)):.4f}", f"[{preview}, ...]")
    stdout.print(table)
    if 2 <= len(items) <= 8:
        unit = vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
        similarity = unit @ unit.T
        grid = Table(title="cosine similarity", title_justify="left")
        grid.add_column("")
        for index in range(len(items)):
            grid.add_column(str(index), justify="right")
        for index, row in enumerate(similarity):
            grid.add_row(str(index), *(f"{v:.3f}" for v in row))
        stdout.print(grid)
    if output is not None:
        stdout.print(f"vectors written to {output}")


# ----------------------------------------------------------------------------- images


def _check_files(paths: list[Path]) -> None:
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"{path}: no such file")
        if path.is_dir():
            raise IsADirectoryError(f"{path}: is a directory, not a file")


def _ranked_table(title: str, results: list[tuple[str, list[dict[str, Any]]]]) -> Table:
    table = Table(title=title, title_justify="left")
    for column in ("file", "label", "score"):
        table.add_column(column, justify="right" if column == "score" else "left")
    for name, predictions in results:
        for rank, prediction in enumerate(predictions):
            table.add_row(name if rank == 0 else "", str(prediction["label"]), f"{prediction['score']:.4f}")
        table.add_section()
    return table


@app.command("classify-image")
@_command
def classify_image(
    images: Annotated[list[Path], typer.Argument(help="Image files (PNG, JPEG, ...).", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="A ViT image-classification checkpoint (directory, Hub id, s3://).")],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels per image.")] = 5,
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Classify images with a ViT checkpoint (labels from its id2label)."""
    from ipfs_accelerate.models import ImageClassifier

    _check_files(images)
    classifier = _load_pipeline(ImageClassifier, model, device)
    results = []
    with _steps("classifying", len(images)) as advance:
        for path in images:
            results.append((str(path), classifier.classify(str(path), top_k=top_k)))
            advance(1)
    if json_output:
        _print_json({"model": model, "device": classifier.device, "results": [{"file": f, "predictions": p} for f, p in results]})
        return
    stdout.print(_ranked_table(f"{model} on {classifier.device}", results))


@app.command("zero-shot")
@_command
def zero_shot(
    images: Annotated[list[Path], typer.Argument(help="Image files.", show_default=False)],
    labels: Annotated[str, typer.Option("--labels", "-l", help="Candidate labels, comma-separated.")],
    model: Annotated[str, typer.Option("--model", "-m", help="A CLIP checkpoint (directory, Hub id, s3://).")],
    template: Annotated[str, typer.Option("--template", help="How a label becomes a sentence; {} is the label.")] = "This is a photo of {}.",
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Zero-shot image classification with CLIP: which of the labels fits each image best."""
    from ipfs_accelerate.models import ZeroShotImageClassifier

    candidates = [label.strip() for label in labels.split(",") if label.strip()]
    if not candidates:
        raise _usage("--labels: give at least one label, e.g. --labels 'a cat,a dog'")
    _check_files(images)
    classifier = _load_pipeline(ZeroShotImageClassifier, model, device)
    results = []
    with _steps("classifying", len(images)) as advance:
        for path in images:
            results.append((str(path), classifier.classify(str(path), candidates, hypothesis_template=template)))
            advance(1)
    if json_output:
        _print_json({"model": model, "device": classifier.device, "labels": candidates,
                     "results": [{"file": f, "predictions": p} for f, p in results]})  # fmt: skip
        return
    stdout.print(_ranked_table(f"{model} on {classifier.device}", results))


# ----------------------------------------------------------------------------- speech


@app.command()
@_command
def transcribe(
    audio: Annotated[list[Path], typer.Argument(help="Audio files (WAV, FLAC, OGG, MP3).", show_default=False)],
    model: Annotated[str, typer.Option("--model", "-m", help="A Whisper checkpoint (directory, Hub id, s3://).")],
    language: Annotated[str | None, typer.Option("--language", help="Spoken language (en, french...); default: detected.")] = None,
    task: Annotated[str, typer.Option("--task", help="transcribe, or translate (into English).")] = "transcribe",
    device: DeviceOption = "auto",
    segments: Annotated[bool, typer.Option("--segments", help="Also show each 30 s window with its times.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Transcribe (or translate into English) speech with a Whisper checkpoint."""
    from ipfs_accelerate.models import SpeechRecognizer
    from ipfs_accelerate.models.pipelines import TranscriptSegment
    from ipfs_accelerate.models.preprocessing.audio import SAMPLING_RATE, load_audio

    if task not in ("transcribe", "translate"):
        raise _usage(f"--task must be transcribe or translate, got {task!r}")
    _check_files(audio)
    recognizer = _load_pipeline(SpeechRecognizer, model, device)
    results: list[dict[str, Any]] = []
    with _steps("transcribing", len(audio)) as advance:
        for path in audio:
            samples = load_audio(str(path))  # resampled to SAMPLING_RATE
            parts = recognizer.transcribe_segments((samples, SAMPLING_RATE), language, task)
            text = TranscriptSegment.join(parts)
            results.append({
                "file": str(path), "text": text, "language": parts[0].language if parts else language,
                "duration": len(samples) / SAMPLING_RATE,
                "segments": [{"start": p.start, "end": p.end, "text": p.text, "language": p.language} for p in parts],
            })  # fmt: skip
            advance(1)
    if json_output:
        _print_json({"model": model, "device": recognizer.device, "task": task, "results": results})
        return
    for result in results:
        if len(results) > 1:
            stdout.print(f"[bold]{result['file']}[/] ({result['language']}, {result['duration']:.1f} s)")
        stdout.print(result["text"])
        if segments:
            windows = Table(show_header=True)
            for column in ("start", "end", "lang", "text"):
                windows.add_column(column)
            for part in result["segments"]:
                windows.add_row(f"{part['start']:.2f}", f"{part['end']:.2f}", part["language"], part["text"].strip())
            stdout.print(windows)


# ----------------------------------------------------------------------------- chat


@app.command()
@_command
def chat(
    prompt: Annotated[list[str] | None, typer.Argument(help="The message (words are joined; - reads stdin).", show_default=False)] = None,
    backend: Annotated[str, typer.Option("--backend", "-b", help="API backend: openai, claude, gemini, groq, ollama, vllm...")] = "openai",
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model name (default: the backend's).")] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="A system message.")] = None,
    max_tokens: Annotated[int | None, typer.Option("--max-tokens", min=1, help="Upper bound on the reply's tokens.")] = None,
    temperature: Annotated[float | None, typer.Option("--temperature", min=0.0, help="Sampling temperature.")] = None,
    base_url: Annotated[str | None, typer.Option("--base-url", help="The backend's URL (else its metadata/environment default).")] = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print the reply as it is generated.")] = True,
    json_output: JsonOption = False,
) -> None:
    """Chat with a remote model through an API backend; the reply streams to the terminal.

    Keys come from the provider's environment variable ($OPENAI_API_KEY, $ANTHROPIC_API_KEY...)."""
    from ipfs_accelerate.api_backends import create_api_backend

    words = list(prompt or [])
    text = sys.stdin.read().strip() if words == ["-"] else " ".join(words)
    if not text.strip():
        raise _usage("give a message, e.g. ipfs-accelerate chat 'Hello' (or - to read stdin)")
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    options: dict[str, Any] = {}
    if max_tokens is not None:
        options["max_tokens"] = max_tokens
    if temperature is not None:
        options["temperature"] = temperature
    client = create_api_backend(backend, metadata={"base_url": base_url} if base_url else None)
    name = model or client.get_default_model()
    with client.sync as sync:
        if json_output or not stream:
            reply = sync.chat(name, messages, **options)
            if json_output:
                _print_json({
                    "backend": backend, "model": reply.model or name, "text": reply.text,
                    "finish_reason": reply.finish_reason, "usage": _usage_dict(reply.usage),
                    "tool_calls": [{"id": c.id, "name": c.name, "arguments": c.arguments} for c in reply.tool_calls],
                })  # fmt: skip
                return
            stdout.print(reply.text, markup=False)
            _chat_footer(backend, reply.model or name, reply.finish_reason, reply.usage)
            return
        final = None
        try:
            for chunk in sync.stream_chat(name, messages, **options):
                if chunk.text:
                    sys.stdout.write(chunk.text)
                    sys.stdout.flush()
                if chunk.done:
                    final = chunk
        finally:
            sys.stdout.write("\n")
            sys.stdout.flush()
        if final is not None:
            _chat_footer(backend, final.model or name, final.finish_reason, final.usage)


def _usage_dict(usage: Any) -> dict[str, Any] | None:
    if usage is None:
        return None
    return {"input_tokens": usage.input_tokens, "output_tokens": usage.output_tokens, "total_tokens": usage.total_tokens}


def _chat_footer(backend: str, model: str, finish_reason: str | None, usage: Any) -> None:
    parts = [backend, model]
    if finish_reason:
        parts.append(f"finish: {finish_reason}")
    if usage is not None and usage.total_tokens:
        parts.append(f"{usage.input_tokens or 0} in + {usage.output_tokens or 0} out tokens")
    stderr.print(f"[dim]{' · '.join(parts)}[/]")


# ----------------------------------------------------------------------------- serve


@app.command()
@_command
def serve(
    model: Annotated[list[str] | None, typer.Option("--model", "-m", help="[NAME=]SOURCE to serve; repeat for several (default: the bundled all-MiniLM-L6-v2).", show_default=False)] = None,
    device: DeviceOption = "auto",
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on.")] = 8000,
    max_batch_size: Annotated[int, typer.Option("--max-batch-size", min=1, help="Embedding inputs per forward pass.")] = 32,
    max_wait_ms: Annotated[float, typer.Option("--max-wait-ms", min=0.0, help="Longest an input waits for its batch to fill.")] = 5.0,
    max_body_mb: Annotated[float, typer.Option("--max-body-mb", min=0.001, help="Largest request body, in MiB.")] = 32.0,
    max_client_batch_size: Annotated[int, typer.Option("--max-client-batch-size", min=1, help="Inputs per request.")] = 2048,
    max_concurrent_requests: Annotated[int, typer.Option("--max-concurrent-requests", min=1, help="Requests in progress per model before 429/503.")] = 1024,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar="IPFS_ACCELERATE_API_KEY", show_envvar=True, help="Require 'Authorization: Bearer KEY' (prefer the environment variable: a command line is visible to other users).")] = None,
    auto_truncate: Annotated[bool, typer.Option("--auto-truncate", help="Truncate long TEI inputs unless the request says otherwise.")] = False,
    ray: Annotated[bool, typer.Option("--ray", help="Run as a Ray Serve deployment with replicas across a Ray cluster.")] = False,
    replicas: Annotated[int, typer.Option("--replicas", min=1, help="Ray Serve replicas (with --ray).")] = 2,
    num_cpus: Annotated[float, typer.Option("--num-cpus", min=0.0, help="CPUs each Ray replica reserves (with --ray).")] = 1.0,
    ray_address: Annotated[str | None, typer.Option("--ray-address", help="An existing Ray cluster (e.g. auto); default: start a local one.")] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
) -> None:
    """Serve local models with the OpenAI, TEI and KServe v2 APIs' shapes (see docs/server.md)."""
    from ipfs_accelerate.serve import ModelSpec, ServerConfig

    specs = tuple(ModelSpec.parse(m) for m in model) if model else None
    fields: dict[str, Any] = {
        "device": device, "max_batch_size": max_batch_size, "max_wait_ms": max_wait_ms,
        "max_body_bytes": max(1, int(max_body_mb * 1024 * 1024)), "max_client_batch_size": max_client_batch_size,
        "max_concurrent_requests": max_concurrent_requests, "auto_truncate": auto_truncate,
    }  # fmt: skip
    if specs:
        fields["models"] = specs
    if ray:
        if api_key:  # replicas read it from the environment a local cluster inherits
            os.environ["IPFS_ACCELERATE_API_KEY"] = api_key
            fields["api_key_env"] = "IPFS_ACCELERATE_API_KEY"
        _serve_ray(ServerConfig(**fields), host, port, replicas, num_cpus, ray_address)
        return
    if api_key:
        fields["api_key"] = api_key
    config = ServerConfig(**fields)
    _serve_local(config, host, port, log_level)


def _serve_local(config: Any, host: str, port: int, log_level: str) -> None:
    from ipfs_accelerate.serve import create_app, run_server

    with _loading("loading models") as report:
        app_ = create_app(config, progress=lambda name, stage, done, total: report(stage, done, total))
    state = app_.state.server
    table = Table(title=f"Serving on http://{host}:{port}", title_justify="left")
    for column in ("model", "kind", "device", "why"):
        table.add_column(column)
    for served in state.registry:
        table.add_row(served.name, served.kind, served.device, served.pipeline.device_reason)
    stderr.print(table)
    stderr.print(
        "[dim]OpenAI /v1/embeddings /v1/audio/transcriptions /v1/models · TEI /embed /info /health · "
        "KServe /v2/models/{model}/infer · /metrics"
        + (" · API key required" if state.api_key is not None else "")
        + "[/]"
    )
    run_server(app_, host, port, log_level=log_level)


def _serve_ray(config: Any, host: str, port: int, replicas: int, num_cpus: float, address: str | None) -> None:
    import ray as ray_module
    from ray import serve as ray_serve

    from ipfs_accelerate.serve.ray_serve import build_app

    started_here = not ray_module.is_initialized()
    if started_here:
        ray_module.init(address=address, include_dashboard=False)
    try:
        ray_serve.start(http_options={"host": host, "port": port})
        with stderr.status(f"starting {replicas} replica(s)"):
            ray_serve.run(build_app(config, num_replicas=replicas, num_cpus=num_cpus), name="ipfs-accelerate", route_prefix="/")
        stderr.print(f"Ray Serve: {replicas} replica(s) on http://{host}:{port} (Ctrl-C stops)")
        while True:
            time.sleep(1.0)
    finally:
        try:
            ray_serve.delete("ipfs-accelerate")
        finally:
            if started_here:
                ray_module.shutdown()


# ----------------------------------------------------------------------------- bench

_RATIO = re.compile(r"(?<![\w.])(\d+(?:\.\d+)?)x(?![\w])")


def _benchmark_dir(directory: Path | None) -> Path:
    candidates = [directory] if directory is not None else []
    if directory is None:
        env = os.environ.get("IPFS_ACCELERATE_BENCHMARKS")
        if env:
            candidates.append(Path(env))
        candidates.append(Path(ipfs_accelerate.__file__).resolve().parents[2] / "benchmarks")
        candidates.append(Path.cwd() / "benchmarks")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    from ipfs_accelerate.errors import ConfigurationError

    raise ConfigurationError(
        f"no benchmarks directory (looked in {', '.join(str(c) for c in candidates)}); give --dir or "
        "$IPFS_ACCELERATE_BENCHMARKS (the benchmarks live in the source checkout, not in the wheel)"
    )


def _discover(directory: Path) -> dict[str, tuple[Path, str]]:
    import ast

    found = {}
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        try:
            doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        except SyntaxError:
            doc = ""
        found[path.stem] = (path, doc.strip().splitlines()[0] if doc.strip() else "")
    return found


def _ratios(output: str) -> list[dict[str, Any]]:
    """Every ``N.NNx`` figure a benchmark printed, labelled with its line (numbers dropped)."""
    found = []
    for line in output.splitlines():
        values = [float(v) for v in _RATIO.findall(line)]
        if not values:
            continue
        label = re.sub(r"\s+", " ", _RATIO.sub("", line)).strip(" :|-")[:60] or "ratio"
        for index, value in enumerate(values):
            found.append({"label": label if len(values) == 1 else f"{label} #{index + 1}", "value": value})
    return found


def _run_benchmark(path: Path, args: list[str], timeout: float, echo: bool) -> dict[str, Any]:
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    env = dict(os.environ)
    src = str(Path(ipfs_accelerate.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, *filter(None, [env.get("PYTHONPATH")])])
    command = [sys.executable, str(path), *args]
    lines: list[str] = []
    started = time.perf_counter()
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(), console=stderr, transient=True) as progress:
        task = progress.add_task(path.stem, total=None)
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
        )
        timer = threading.Timer(timeout, process.kill)
        timer.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:
                lines.append(line.rstrip("\n"))
                if echo:
                    progress.console.print(line.rstrip("\n"), markup=False, highlight=False)
                progress.update(task, description=f"{path.stem}: {line.strip()[:70]}")
            returncode = process.wait()
        finally:
            timer.cancel()
            if process.poll() is None:
                process.kill()
                process.wait()
    seconds = time.perf_counter() - started
    output = "\n".join(lines)
    if returncode < 0 or (seconds >= timeout and returncode != 0):
        output += f"\n[killed after {timeout:g} s]"
    return {
        "name": path.stem, "path": str(path), "args": args, "returncode": returncode, "seconds": round(seconds, 2),
        "output": output, "ratios": _ratios(output),
    }  # fmt: skip


def _plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_ratios = [r for r in results if r["ratios"]]
    if not with_ratios:
        from ipfs_accelerate.errors import InvalidArgumentError

        raise InvalidArgumentError("--plot: the benchmarks printed no ratios (N.NNx figures) to plot")
    heights = [max(1.5, 0.35 * len(r["ratios"]) + 0.8) for r in with_ratios]
    figure, axes = plt.subplots(len(with_ratios), 1, figsize=(10, sum(heights)), squeeze=False,
                                gridspec_kw={"height_ratios": heights})  # fmt: skip
    for axis, result in zip(axes[:, 0], with_ratios, strict=True):
        labels = [r["label"] for r in result["ratios"]]
        values = [r["value"] for r in result["ratios"]]
        axis.barh(range(len(values)), values, color="#4c72b0")
        axis.set_yticks(range(len(values)), labels, fontsize=7)
        axis.invert_yaxis()
        axis.axvline(1.0, color="black", linewidth=0.8)
        axis.set_title(f"{result['name']} (ratios as the benchmark defines them)", fontsize=9, loc="left")
        for index, value in enumerate(values):
            axis.text(value, index, f" {value:.2f}x", va="center", fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


@app.command()
@_command
def bench(
    names: Annotated[list[str] | None, typer.Argument(help="Benchmarks to run (default: all); see --list.", show_default=False)] = None,
    list_only: Annotated[bool, typer.Option("--list", help="List the benchmarks and exit.")] = False,
    directory: Annotated[Path | None, typer.Option("--dir", help="The benchmarks directory (default: the checkout's benchmarks/).")] = None,
    args: Annotated[str, typer.Option("--args", help="Arguments for each benchmark, e.g. --args '--repeat 3'.")] = "",
    plot: Annotated[Path | None, typer.Option("--plot", help="Write a PNG of the ratios each benchmark printed (needs matplotlib).")] = None,
    timeout: Annotated[float, typer.Option("--timeout", min=1.0, help="Seconds before a benchmark is stopped.")] = 1800.0,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not echo the benchmarks' output while they run.")] = False,
    json_output: JsonOption = False,
) -> None:
    """Run the benchmarks in benchmarks/ (each beside its peer), print their tables and a summary of the ratios."""
    root = _benchmark_dir(directory)
    available = _discover(root)
    if list_only:
        if json_output:
            _print_json({"directory": str(root), "benchmarks": [{"name": n, "path": str(p), "summary": d} for n, (p, d) in available.items()]})
            return
        listing = Table(title=f"Benchmarks in {root}", title_justify="left")
        listing.add_column("name")
        listing.add_column("what it measures")
        for name, (_, description) in available.items():
            listing.add_row(name, description)
        stdout.print(listing)
        return
    chosen = list(names or available)
    unknown = [n for n in chosen if n not in available]
    if unknown:
        raise _usage(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}")
    if plot is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            from ipfs_accelerate.errors import ConfigurationError

            raise ConfigurationError("--plot needs matplotlib, which is not installed: pip install matplotlib") from None
    extra = shlex.split(args)
    results = []
    for name in chosen:
        if not json_output:
            stdout.rule(f"[bold]{name}[/]")
        result = _run_benchmark(available[name][0], extra, timeout, echo=not json_output and not quiet)
        if quiet and not json_output:
            stdout.print(result["output"], markup=False)
        results.append(result)
    if plot is not None:
        _plot(results, plot)
    failed = [r["name"] for r in results if r["returncode"] != 0]
    if json_output:
        _print_json({"directory": str(root), "benchmarks": results, "plot": str(plot) if plot else None})
    else:
        summary = Table(title="Summary", title_justify="left")
        for column in ("benchmark", "status", "seconds", "ratios printed"):
            summary.add_column(column)
        for result in results:
            status = "[green]ok[/]" if result["returncode"] == 0 else f"[red]exit {result['returncode']}[/]"
            ratios = ", ".join(f"{r['value']:g}x" for r in result["ratios"][:8])
            more = len(result["ratios"]) - 8
            summary.add_row(result["name"], status, f"{result['seconds']:.1f}", ratios + (f" (+{more})" if more > 0 else ""))
        stdout.print(summary)
        if plot is not None:
            stdout.print(f"plot written to {plot}")
    if failed:
        stderr.print(f"[red]failed:[/] {', '.join(failed)}")
        raise typer.Exit(ExitCode.FAILURE)


# ----------------------------------------------------------------------------- models


def _checkpoint_summary(path: Path) -> tuple[str, str]:
    """(model_type, what serve would do with it) of a checkpoint directory."""
    from ipfs_accelerate.serve._config import KINDS

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        model_type = str(config.get("model_type", "")) or "?"
    except (OSError, ValueError):
        return "?", ""
    weights = (path / "model.safetensors").exists() or (path / "model.safetensors.index.json").exists()
    kind = KINDS.get(model_type.lower(), "not servable") if weights else "no safetensors weights"
    return model_type, kind


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _cached_models(cache_dir: Path | None) -> list[dict[str, Any]]:
    import importlib.metadata

    from ipfs_accelerate.models.loading import BUNDLED_MODELS, resolve_checkpoint

    entries: list[dict[str, Any]] = []
    for hub_id, package in BUNDLED_MODELS.items():
        try:
            importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            continue
        path = resolve_checkpoint(package)
        model_type, kind = _checkpoint_summary(path)
        entries.append({"id": hub_id, "source": f"package {package}", "path": str(path), "model_type": model_type,
                        "kind": kind, "size_bytes": _dir_size(path)})  # fmt: skip
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        try:
            info: Any = scan_cache_dir(cache_dir)
        except CacheNotFound:
            info = None
    except ImportError:  # pragma: no cover - huggingface_hub is in the models extra
        info = None
    if info is not None:
        for repo in sorted(info.repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model" or not repo.revisions:
                continue
            revision = max(repo.revisions, key=lambda r: r.last_modified)
            model_type, kind = _checkpoint_summary(Path(revision.snapshot_path))
            entries.append({
                "id": repo.repo_id, "source": "hugging face cache", "path": str(revision.snapshot_path),
                "revision": revision.commit_hash, "refs": sorted(revision.refs), "model_type": model_type, "kind": kind,
                "size_bytes": repo.size_on_disk,
            })  # fmt: skip
    from ipfs_accelerate.api_backends.s3_kit import default_cache_dir

    s3_root = default_cache_dir()
    if s3_root.is_dir():
        for config in sorted(s3_root.rglob("config.json")):
            directory = config.parent
            model_type, kind = _checkpoint_summary(directory)
            relative = directory.relative_to(s3_root).as_posix()
            entries.append({"id": f"s3://{relative}", "source": "s3 cache", "path": str(directory),
                            "model_type": model_type, "kind": kind, "size_bytes": _dir_size(directory)})  # fmt: skip
    return entries


@models_app.command("list")
@_command
def models_list(
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="The Hugging Face hub cache (default: $HF_HUB_CACHE or ~/.cache/huggingface/hub).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Checkpoints available without a download: installed model packages, the Hugging Face cache, the s3:// cache."""
    entries = _cached_models(cache_dir)
    if json_output:
        _print_json({"models": entries})
        return
    if not entries:
        stdout.print("no cached checkpoints (ipfs-accelerate models pull HUB_ID fetches one)")
        return
    table = Table(title="Local checkpoints (--json adds their paths)", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("source", "model_type", "serve as", "size"):
        table.add_column(column)
    for entry in entries:
        table.add_row(entry["id"], entry["source"], entry["model_type"], entry["kind"], _bytes(entry["size_bytes"]))
    stdout.print(table)


@models_app.command("pull")
@_command
def models_pull(
    model_id: Annotated[str, typer.Argument(help="A Hub id (org/name) or an s3://bucket/prefix URI.", show_default=False)],
    revision: Annotated[str | None, typer.Option("--revision", help="Branch, tag or commit (Hub).")] = None,
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Where to store it (default: the Hugging Face / S3 cache).")] = None,
    json_output: JsonOption = False,
) -> None:
    """Fetch a checkpoint into the local cache (the files the models need: config, tokenizer, safetensors)."""
    from ipfs_accelerate.errors import ConfigurationError
    from ipfs_accelerate.models.loading import hub_offline, locate_checkpoint

    if model_id.startswith("s3://"):
        # a pull always mirrors, whatever $HF_HUB_OFFLINE says, and the storage service's own
        # errors reach the user unwrapped (resolving for a model load wraps them)
        from ipfs_accelerate.api_backends import fetch_s3_prefix_sync

        with stderr.status(f"mirroring {model_id}"):
            path = fetch_s3_prefix_sync(model_id, cache_dir)
        source = "s3 cache"
    else:
        offline = hub_offline()
        try:
            with stderr.status(f"pulling {model_id}"):
                located = locate_checkpoint(model_id, revision=revision, cache_dir=cache_dir, local_files_only=offline)
        except Exception as exc:
            if offline:
                raise ConfigurationError(
                    f"{model_id}: offline mode is on ($HF_HUB_OFFLINE) and it is not cached, so it cannot be pulled"
                ) from exc
            raise
        path, source = located.path, located.source
    model_type, kind = _checkpoint_summary(Path(path))
    if json_output:
        _print_json({"id": model_id, "path": str(path), "source": source, "model_type": model_type, "kind": kind})
        return
    stdout.print(f"{model_id}: {path} ({source}; model_type {model_type}, serve as {kind})")


def main() -> None:
    """The console script ``ipfs-accelerate``."""
    app(prog_name="ipfs-accelerate")


if __name__ == "__main__":
    main()
