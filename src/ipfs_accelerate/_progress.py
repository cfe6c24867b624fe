"""A rich progress display for a model load, shared by the CLI and the demo."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

#: what each stage of ``from_pretrained(progress=...)`` does
STAGES = {
    "resolve": "finding the checkpoint",
    "fetch": "fetching and verifying blocks",
    "read": "mapping the weights",
    "load": "placing weights",
}


@contextmanager
def load_progress(
    console: Any, what: str | None = None, *, transient: bool = False
) -> Iterator[Callable[[str, int, int], None]]:
    """One bar per load stage on ``console`` (labelled "``what``: stage" when ``what`` is
    given); yields the ``progress`` callback for ``from_pretrained``."""
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description:<40}"), BarColumn(), TaskProgressColumn(),
        TimeElapsedColumn(), console=console, transient=transient,
    ) as progress:  # fmt: skip
        tasks: dict[str, Any] = {}

        def report(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                label = STAGES.get(stage, stage)
                tasks[stage] = progress.add_task(f"{what}: {label}" if what else label, total=total)
            progress.update(tasks[stage], completed=done, total=total)

        yield report
