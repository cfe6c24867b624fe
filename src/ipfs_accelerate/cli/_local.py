"""Commands over local models: ``hardware``, ``embed`` (locally or through an API backend),
``classify-image``, ``zero-shot`` and ``transcribe``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ._app import app
from ._output import (
    DeviceOption,
    DtypeOption,
    JsonOption,
    command,
    human_bytes,
    load_pipeline,
    print_json,
    stderr,
    stdout,
    steps,
    usage_error,
)

if TYPE_CHECKING:
    import numpy as np


_WORKLOADS = {
    "tensor math": None,
    "text embedding (bert)": "bert",
    "image (vit)": "vit",
    "image-text (clip)": "clip",
    "speech (whisper)": "whisper",
}


@app.command()
@command
def hardware(
    details: Annotated[
        bool, typer.Option("--details", help="Also list each backend's limits and features.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """The hardware backends (adapters, limits) and what select_backend picks for each
    workload, and why."""
    from ipfs_accelerate import hal
    from ipfs_accelerate.hal._registry import device_override

    override = device_override()  # an unknown name is an error here too (exit 3)
    infos = hal.available_backends(include_unavailable=True)
    selections = {label: hal.select_backend(family) for label, family in _WORKLOADS.items()}
    if json_output:
        print_json(
            {
                "backends": [info.as_dict() for info in infos],
                "selection": {
                    label: {"model_type": _WORKLOADS[label], "backend": s.name, "reason": s.reason}
                    for label, s in selections.items()
                },
                "device_override": override,
            }
        )
        return
    table = Table(title="Hardware backends", title_justify="left")
    for column in ("backend", "status", "device", "adapter / API", "memory"):
        table.add_column(column)
    for info in infos:
        if info.available:
            memory = human_bytes(info.memory_bytes)
            if info.max_buffer_bytes is not None and info.max_buffer_bytes != info.memory_bytes:
                memory += f" (buffers <= {human_bytes(info.max_buffer_bytes)})"
            table.add_row(
                info.name,
                "[green]available[/]",
                info.device_name,
                f"{info.adapter_type} / {info.api}",
                memory,
            )
        else:
            table.add_row(info.name, "[yellow]unavailable[/]", info.reason or "", "", "")
    stdout.print(table)
    if details:
        for info in infos:
            if not info.available:
                continue
            limits = Table(
                title=f"{info.name}: dtypes, limits and features",
                title_justify="left",
                show_header=False,
            )
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
    if override is not None:
        stdout.print(
            f"$IPFS_ACCELERATE_DEVICE={override} overrides every choice above, and --device auto "
            "in every command (its fallback where it cannot start)"
        )


def _read_texts(texts: list[str] | None, file: Path | None) -> list[str]:
    items = list(texts or [])
    if file is not None:
        content = sys.stdin.read() if str(file) == "-" else file.read_text(encoding="utf-8")
        items += [line for line in content.splitlines() if line.strip()]
    if not items:
        raise usage_error("give texts as arguments or --file PATH (one text per line; - for stdin)")
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
        raise usage_error(f"--output {path}: use a .npy or .jsonl file")


@app.command()
@command
def embed(
    texts: Annotated[
        list[str] | None,
        typer.Argument(metavar="TEXT...", help="Texts to embed.", show_default=False),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Read texts from a file, one per line (- for stdin)."),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            "-m",
            help="Checkpoint (local: default the bundled all-MiniLM-L6-v2) or remote model name.",
        ),
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
    backend: Annotated[
        str | None,
        typer.Option(
            "--backend",
            "-b",
            help="Embed through this API backend (openai, hf_tei, ollama...) instead of locally.",
        ),
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url", help="The API backend's URL (else its metadata/environment default)."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Texts per forward pass (local).")
    ] = 32,
    normalize: Annotated[
        bool, typer.Option("--normalize/--no-normalize", help="L2-normalise the vectors.")
    ] = True,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Also write the vectors to a .npy or .jsonl file."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Sentence embeddings of texts, with a local model or through an API backend."""
    import numpy as np

    items = _read_texts(texts, file)
    if output is not None:
        _check_output(output, (".npy", ".jsonl"))
    usage: dict[str, Any] | None = None
    if backend is not None:
        from ipfs_accelerate.api_backends import create_api_backend

        options: dict[str, Any] = {}
        if not normalize:
            if backend not in ("hf_tei", "hf_tei_unified"):
                raise usage_error(
                    "--no-normalize works with local models and the TEI backends only"
                )
            options["normalize"] = False
        client = create_api_backend(backend, metadata={"base_url": base_url} if base_url else None)
        with (
            client.sync as sync,
            stderr.status(f"embedding {len(items)} text(s) through {backend}"),
        ):
            response = sync.embed(model, items, **options)
        vectors = np.asarray(response.embeddings, dtype=np.float32)
        model_name, where = (
            response.model or model or client.get_default_model(),
            f"backend {backend}",
        )
        if response.usage.total_tokens:
            usage = {
                "prompt_tokens": response.usage.input_tokens,
                "total_tokens": response.usage.total_tokens,
            }
    else:
        from ipfs_accelerate.models import TextEmbedder
        from ipfs_accelerate.models._defaults import DEFAULT_TEXT_MODEL
        from ipfs_accelerate.models.pipelines._classifier import (
            embedder_source,
            is_classifier_dir,
        )

        model_name = model or DEFAULT_TEXT_MODEL
        # a directory from train-classifier: the embeddings its head was trained on
        source = embedder_source(model_name) if is_classifier_dir(model_name) else model_name
        embedder = load_pipeline(
            TextEmbedder,
            source,
            device,
            inputs=len(items),
            model_type="text_embedding",
            dtype=dtype,
        )
        parts = []
        with steps("embedding", len(items)) as advance:
            for start in range(0, len(items), batch_size):
                chunk = items[start : start + batch_size]
                parts.append(
                    embedder.embed(
                        chunk,
                        batch_size=batch_size,
                        normalize=normalize,
                        normalize_module=normalize,
                    )
                )
                advance(len(chunk))
        vectors = np.concatenate(parts)
        where = f"device {embedder.device}"
    if output is not None:
        _write_embeddings(output, items, vectors)
    if json_output:
        data: dict[str, Any] = {
            "model": model_name,
            "source": where,
            "dimension": int(vectors.shape[1]),
            "count": len(items),
            "embeddings": vectors,
        }
        if usage:
            data["usage"] = usage
        print_json(data)
        return
    stdout.print(
        f"{len(items)} embedding(s) of dimension {vectors.shape[1]} from {model_name} ({where})"
    )
    table = Table(show_header=True)
    for column in ("#", "text", "norm", "first values"):
        table.add_column(column)
    for index, (text, vector) in enumerate(zip(items, vectors, strict=True)):
        preview = ", ".join(f"{v:+.4f}" for v in vector[:4])
        short = text if len(text) <= 48 else text[:45] + "..."
        table.add_row(
            str(index), short, f"{float(np.linalg.norm(vector)):.4f}", f"[{preview}, ...]"
        )
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


def _check_output(path: Path, suffixes: tuple[str, ...]) -> None:
    """A usage error (exit 2) now, not a failure after the work: the file's type, and a
    writable directory to put it in."""
    if path.suffix not in suffixes:
        raise usage_error(f"--output {path}: use a {' or '.join(suffixes)} file")
    if path.is_dir():
        raise usage_error(f"--output {path}: is a directory; name a file in it")
    parent = path.parent
    if not parent.is_dir():
        raise usage_error(f"--output {path}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise usage_error(f"--output {path}: not writable")


def _check_language(language: str | None) -> None:
    from ipfs_accelerate.models._languages import LANGUAGES, language_token

    if language is not None and language_token(language).strip("<|>") not in LANGUAGES:
        raise usage_error(
            f"--language {language!r} is not a Whisper language; use a code or an English "
            "name, e.g. en, fr, french"
        )


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
            table.add_row(
                name if rank == 0 else "", str(prediction["label"]), f"{prediction['score']:.4f}"
            )
        table.add_section()
    return table


@app.command("classify-image")
@command
def classify_image(
    images: Annotated[
        list[Path],
        typer.Argument(
            metavar="IMAGE...", help="Image files (PNG, JPEG, ...).", show_default=False
        ),
    ],
    model: Annotated[
        str,
        typer.Option(
            "--model",
            "-m",
            help="A ViT image-classification checkpoint (directory, Hub id, s3://).",
        ),
    ],
    top_k: Annotated[int, typer.Option("--top-k", "-k", min=1, help="Labels per image.")] = 5,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
    json_output: JsonOption = False,
) -> None:
    """Classify images with a ViT checkpoint (labels from its id2label)."""
    from ipfs_accelerate.models import ImageClassifier

    _check_files(images)
    classifier = load_pipeline(
        ImageClassifier, model, device, inputs=len(images), model_type="vit", dtype=dtype
    )
    results = []
    with steps("classifying", len(images)) as advance:
        for path in images:
            results.append((str(path), classifier.classify(str(path), top_k=top_k)))
            advance(1)
    if json_output:
        print_json(
            {
                "model": model,
                "device": classifier.device,
                "results": [{"file": f, "predictions": p} for f, p in results],
            }
        )
        return
    stdout.print(_ranked_table(f"{model} on {classifier.device}", results))


@app.command("zero-shot")
@command
def zero_shot(
    images: Annotated[
        list[Path], typer.Argument(metavar="IMAGE...", help="Image files.", show_default=False)
    ],
    labels: Annotated[
        str, typer.Option("--labels", "-l", help="Candidate labels, comma-separated.")
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="A CLIP checkpoint (directory, Hub id, s3://).")
    ],
    template: Annotated[
        str, typer.Option("--template", help="How a label becomes a sentence; {} is the label.")
    ] = "This is a photo of {}.",
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
    json_output: JsonOption = False,
) -> None:
    """Zero-shot image classification with CLIP: which of the labels fits each image best."""
    from ipfs_accelerate.models import ZeroShotImageClassifier

    candidates = [label.strip() for label in labels.split(",") if label.strip()]
    if not candidates:
        raise usage_error("--labels: give at least one label, e.g. --labels 'a cat,a dog'")
    _check_files(images)
    classifier = load_pipeline(
        ZeroShotImageClassifier,
        model,
        device,
        inputs=len(images),
        model_type="clip",
        dtype=dtype,
    )
    results = []
    with steps("classifying", len(images)) as advance:
        for path in images:
            results.append(
                (
                    str(path),
                    classifier.classify(str(path), candidates, hypothesis_template=template),
                )
            )
            advance(1)
    if json_output:
        print_json(
            {
                "model": model,
                "device": classifier.device,
                "labels": candidates,
                "results": [{"file": f, "predictions": p} for f, p in results],
            }
        )
        return
    stdout.print(_ranked_table(f"{model} on {classifier.device}", results))


@app.command()
@command
def transcribe(
    audio: Annotated[
        list[Path],
        typer.Argument(
            metavar="AUDIO...",
            help="Audio files (WAV, FLAC, OGG, MP3).",
            show_default=False,
        ),
    ],
    model: Annotated[
        str, typer.Option("--model", "-m", help="A Whisper checkpoint (directory, Hub id, s3://).")
    ],
    language: Annotated[
        str | None,
        typer.Option(
            "--language", help="Spoken language (en, french...); auto (the default): detected."
        ),
    ] = None,
    task: Annotated[
        str, typer.Option("--task", help="transcribe, or translate (into English).")
    ] = "transcribe",
    timestamps: Annotated[
        bool,
        typer.Option(
            "--timestamps",
            help="Segments at Whisper's timestamp tokens (needs a checkpoint that has them).",
        ),
    ] = False,
    output_format: Annotated[
        str | None,
        typer.Option("--format", help="text, srt, vtt or json (srt/vtt imply --timestamps)."),
    ] = None,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream", help="Feed the file in 1 s chunks and print text as it is committed."
        ),
    ] = False,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
    segments: Annotated[
        bool, typer.Option("--segments", help="Also show each 30 s window with its times.")
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Transcribe (or translate into English) speech with a Whisper checkpoint."""
    from ipfs_accelerate.models import SpeechRecognizer
    from ipfs_accelerate.models.pipelines import TranscriptSegment
    from ipfs_accelerate.models.preprocessing.audio import SAMPLING_RATE, load_audio

    if task not in ("transcribe", "translate"):
        raise usage_error(f"--task must be transcribe or translate, got {task!r}")
    from ipfs_accelerate.errors import InvalidArgumentError

    if output_format is not None and output_format not in ("text", "srt", "vtt", "json"):
        raise usage_error(f"--format must be text, srt, vtt or json, got {output_format!r}")
    if output_format == "json":
        json_output = True
    if language is not None and language.lower() == "auto":
        language = None
    if stream and (output_format not in (None, "text") or json_output):
        raise usage_error("--stream prints text as it is committed: it takes no --format/--json")
    timestamps = timestamps or output_format in ("srt", "vtt")

    _check_language(language)
    _check_files(audio)
    recognizer = load_pipeline(
        SpeechRecognizer, model, device, inputs=len(audio), model_type="whisper", dtype=dtype
    )
    if language is not None:
        try:  # this checkpoint's languages (an English-only one takes en alone)
            recognizer._language_id(language)
        except InvalidArgumentError as exc:
            raise usage_error(f"--language {language}: {exc}") from None
    if stream:
        for path in audio:
            _print_stream(recognizer, load_audio(str(path)), language, task)
        return
    options: dict[str, Any] = {"return_timestamps": True} if timestamps else {}
    results: list[dict[str, Any]] = []
    with steps("transcribing", len(audio)) as advance:
        for path in audio:
            samples = load_audio(str(path))  # resampled to SAMPLING_RATE
            try:
                parts = recognizer.transcribe_segments(
                    (samples, SAMPLING_RATE), language, task, **options
                )
            except InvalidArgumentError as exc:
                raise usage_error(f"--timestamps: {exc}") from None
            if output_format in ("srt", "vtt"):
                from ipfs_accelerate.models.pipelines._speech import subtitles

                print(subtitles(parts, output_format), end="")
                advance(1)
                continue
            text = TranscriptSegment.join(parts)
            results.append(
                {
                    "file": str(path),
                    "text": text,
                    "language": parts[0].language if parts else language,
                    "duration": len(samples) / SAMPLING_RATE,
                    "segments": [
                        {
                            "start": p.start,
                            "end": p.end,
                            "text": p.text,
                            "language": p.language,
                            "tokens": p.tokens,
                        }
                        for p in parts
                    ],
                }
            )
            advance(1)
    if output_format in ("srt", "vtt"):
        return
    if json_output:
        print_json({"model": model, "device": recognizer.device, "task": task, "results": results})
        return
    for result in results:
        if len(results) > 1:
            stdout.print(
                f"[bold]{result['file']}[/] ({result['language']}, {result['duration']:.1f} s)"
            )
        stdout.print(result["text"])
        if segments:
            windows = Table(show_header=True)
            for column in ("start", "end", "lang", "text"):
                windows.add_column(column)
            for part in result["segments"]:
                windows.add_row(
                    f"{part['start']:.2f}",
                    f"{part['end']:.2f}",
                    part["language"],
                    part["text"].strip(),
                )
            stdout.print(windows)


def _print_stream(recognizer: Any, samples: Any, language: str | None, task: str) -> None:
    """The file as if it arrived live, 1 s at a time: committed text printed as it is."""
    from ipfs_accelerate.errors import InvalidArgumentError
    from ipfs_accelerate.models.preprocessing.audio import SAMPLING_RATE

    chunks = (samples[i : i + SAMPLING_RATE] for i in range(0, len(samples), SAMPLING_RATE))
    try:
        # a file is not live: a decode per second of it, not per half second, keeps the work
        # down where no listener waits on the lag
        events = recognizer.transcribe_stream(chunks, language, task, min_chunk_s=1.0)
        printed = False
        for event in events:
            if event.type == "committed" and event.text:
                sys.stdout.write((" " if printed else "") + event.text)
                sys.stdout.flush()
                printed = True
    except InvalidArgumentError as exc:
        raise usage_error(f"--stream: {exc}") from None
    sys.stdout.write("\n")
