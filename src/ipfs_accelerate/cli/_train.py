"""Commands over trained classifiers: ``train-classifier`` (a JSONL file of labelled texts in,
a saved TextClassifier directory out) and ``classify`` (labels for texts from one)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from ._app import app
from ._local import _read_texts
from ._output import DeviceOption, JsonOption, command, load_pipeline, print_json, stderr, stdout

if TYPE_CHECKING:
    from ipfs_accelerate.models.pipelines._classifier import Label

#: the longest JSONL line read (a text label pair; anything longer is refused, not read whole)
MAX_LINE_BYTES = 1 << 20


def read_labelled_jsonl(path: Path) -> tuple[list[str], list[Label]]:
    """The texts and labels of a JSONL file of ``{"text": str, "label": str | int}`` lines
    (blank lines skipped). A bad line raises InvalidArgumentError naming its number."""
    from ipfs_accelerate.errors import InvalidArgumentError

    if not path.is_file():
        raise InvalidArgumentError(f"{path}: no such file")
    texts: list[str] = []
    labels: list[Label] = []
    with path.open("rb") as handle:
        for number, raw in enumerate(iter(lambda: handle.readline(MAX_LINE_BYTES + 1), b""), 1):
            where = f"{path}:{number}"
            if len(raw) > MAX_LINE_BYTES:
                raise InvalidArgumentError(f"{where}: line longer than {MAX_LINE_BYTES} bytes")
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidArgumentError(f"{where}: not UTF-8") from None
            if not line.strip():
                continue
            try:
                item = json.loads(line)
            except ValueError as exc:
                raise InvalidArgumentError(f"{where}: not JSON ({exc})") from None
            if not isinstance(item, dict):
                raise InvalidArgumentError(
                    f'{where}: expected an object {{"text": ..., "label": ...}}, '
                    f"got {type(item).__name__}"
                )
            text, label = item.get("text"), item.get("label")
            if not isinstance(text, str) or not text.strip():
                raise InvalidArgumentError(f'{where}: "text" must be a non-empty string')
            if isinstance(label, bool) or not isinstance(label, str | int):
                raise InvalidArgumentError(
                    f'{where}: "label" must be a string or an integer, got {label!r}'
                )
            texts.append(text)
            labels.append(label)
    if not texts:
        raise InvalidArgumentError(f"{path}: no labelled lines")
    return texts, labels


@app.command("train-classifier")
@command
def train_classifier(
    data: Annotated[
        Path,
        typer.Argument(
            metavar="DATA.jsonl", help='Labelled texts: one {"text": ..., "label": ...} a line.'
        ),
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Directory to save the classifier in.")],
    model: Annotated[
        str | None,
        typer.Option("--model", "-m", help="Embedding checkpoint (default all-MiniLM-L6-v2)."),
    ] = None,
    device: DeviceOption = "auto",
    epochs: Annotated[int, typer.Option("--epochs", min=1, max=100_000)] = 50,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, max=1_000_000)] = 32,
    lr: Annotated[float, typer.Option("--lr", help="AdamW learning rate.")] = 1e-2,
    weight_decay: Annotated[float, typer.Option("--weight-decay")] = 0.01,
    seed: Annotated[int, typer.Option("--seed", help="Seeds the head and the shuffling.")] = 0,
    include_embedder: Annotated[
        bool,
        typer.Option(
            "--include-embedder",
            help="Copy the embedding checkpoint into the directory (self-contained).",
        ),
    ] = False,
    json_output: JsonOption = False,
) -> None:
    """Train a text classifier (a linear head over sentence embeddings) on a JSONL file."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from ipfs_accelerate.models import TextClassifier, TextEmbedder
    from ipfs_accelerate.models._defaults import DEFAULT_TEXT_MODEL

    if not math.isfinite(lr) or lr <= 0:
        raise typer.BadParameter(f"--lr must be a positive number, got {lr}")
    if not math.isfinite(weight_decay) or weight_decay < 0:
        raise typer.BadParameter(f"--weight-decay must be >= 0, got {weight_decay}")
    if out.exists() and not out.is_dir():
        raise typer.BadParameter(f"--out {out}: exists and is not a directory")
    texts, labels = read_labelled_jsonl(data)
    model_name = model or DEFAULT_TEXT_MODEL
    embedder = load_pipeline(
        TextEmbedder, model_name, device, inputs=len(texts), model_type="text_embedding"
    )
    name = None if Path(model_name).exists() else model_name
    classifier = TextClassifier(embedder, embedder_name=name)
    with Progress(
        TextColumn("training"), BarColumn(), MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"), console=stderr, transient=True,
    ) as progress:  # fmt: skip
        task = progress.add_task("training", total=epochs, loss="-")

        def report(epoch: int, total: int, loss: float) -> None:
            progress.update(task, completed=epoch, loss=f"{loss:.4f}")

        losses = classifier.fit(
            texts, labels, epochs=epochs, batch_size=batch_size, lr=lr,
            weight_decay=weight_decay, seed=seed, callback=report,
        )  # fmt: skip
    predicted = classifier.predict(texts)
    assert isinstance(predicted, list)
    accuracy = sum(p == t for p, t in zip(predicted, labels, strict=True)) / len(texts)
    classifier.save(out, include_embedder=include_embedder)
    if json_output:
        print_json(
            {
                "out": str(out), "embedder": model_name, "device": embedder.device,
                "examples": len(texts), "labels": classifier.labels, "epochs": epochs,
                "losses": losses, "final_loss": losses[-1], "train_accuracy": accuracy,
            }
        )  # fmt: skip
        return
    stdout.print(
        f"trained on {len(texts)} text(s), {len(classifier.labels)} label(s) "
        f"({', '.join(map(str, classifier.labels))}): final loss {losses[-1]:.4f}, "
        f"training accuracy {accuracy:.1%}"
    )
    stdout.print(f"classifier saved to {out}")


@app.command()
@command
def classify(
    classifier_dir: Annotated[
        Path, typer.Argument(metavar="DIR", help="A directory written by train-classifier.")
    ],
    texts: Annotated[
        list[str] | None,
        typer.Argument(metavar="TEXT...", help="Texts to classify.", show_default=False),
    ] = None,
    file: Annotated[
        Path | None,
        typer.Option("--file", "-f", help="Read texts from a file, one per line (- for stdin)."),
    ] = None,
    device: DeviceOption = "auto",
    json_output: JsonOption = False,
) -> None:
    """Labels for texts from a classifier trained by train-classifier."""
    from ipfs_accelerate.errors import CheckpointError
    from ipfs_accelerate.models import TextClassifier
    from ipfs_accelerate.models.pipelines._classifier import is_classifier_dir

    items = _read_texts(texts, file)
    if not is_classifier_dir(classifier_dir):
        raise CheckpointError(f"{classifier_dir}: not a classifier directory (no classifier.json)")
    classifier = load_pipeline(
        TextClassifier, str(classifier_dir), device, inputs=len(items),
        model_type="text_embedding",
    )  # fmt: skip
    probs = classifier.predict_proba(items)
    rows: list[dict[str, Any]] = []
    for text, row in zip(items, probs, strict=True):
        best = int(row.argmax())
        rows.append(
            {
                "text": text,
                "label": classifier.labels[best],
                "score": float(row[best]),
                "scores": {str(k): float(v) for k, v in zip(classifier.labels, row, strict=True)},
            }
        )
    if json_output:
        print_json({"model": str(classifier_dir), "labels": classifier.labels, "results": rows})
        return
    table = Table(show_header=True)
    for column in ("#", "text", "label", "score"):
        table.add_column(column)
    for index, row_data in enumerate(rows):
        text = row_data["text"]
        short = text if len(text) <= 48 else text[:45] + "..."
        table.add_row(str(index), short, str(row_data["label"]), f"{row_data['score']:.3f}")
    stdout.print(table)
