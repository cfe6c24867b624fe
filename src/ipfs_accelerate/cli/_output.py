"""What every command shares: the consoles, exit codes, error reports, JSON output and
progress bars. Importing it loads typer and rich only."""

from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import IntEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

__all__ = [
    "DEBUG",
    "ONE_SHOT_INPUTS",
    "DeviceOption",
    "ExitCode",
    "JsonOption",
    "command",
    "exit_code_for",
    "human_bytes",
    "load_pipeline",
    "loading",
    "print_json",
    "stderr",
    "stdout",
    "steps",
    "usage_error",
]

F = TypeVar("F", bound=Callable[..., Any])


class ExitCode(IntEnum):
    """What the process exit status means (see the docstring of :mod:`ipfs_accelerate.cli`)."""

    OK = 0
    FAILURE = 1
    USAGE = 2
    CONFIGURATION = 3
    REMOTE = 4
    INPUT = 5
    INTERRUPTED = 130


class _Console(Console):
    """A console that wraps long lines only on a terminal: a log file or a pipe gets each
    message on one line, whole, whatever its length."""

    def print(self, *objects: Any, soft_wrap: bool | None = None, **options: Any) -> None:
        super().print(
            *objects, soft_wrap=not self.is_terminal if soft_wrap is None else soft_wrap, **options
        )


stdout = Console(highlight=False, soft_wrap=True)
stderr = _Console(stderr=True, highlight=False)

#: a local command over at most this many inputs with ``--device auto`` is one-shot work:
#: ``select_backend(..., one_shot=True)`` starts no backend just to look at it
ONE_SHOT_INPUTS = 64

DEBUG = {"on": os.environ.get("IPFS_ACCELERATE_DEBUG", "") not in ("", "0")}

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print one JSON document on stdout (for scripts).")
]
DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        "-d",
        metavar="DEVICE",
        help="Backend to run on: cpu, webgpu, webnn, or auto (select_backend decides; "
        "$IPFS_ACCELERATE_DEVICE overrides its choice).",
    ),
]


# -- model precision (issue 16) --
def _valid_dtype(value: str) -> str:
    from ipfs_accelerate.models._defaults import MODEL_DTYPES

    if value not in MODEL_DTYPES:
        raise typer.BadParameter(f"must be one of {', '.join(MODEL_DTYPES)}, got {value!r}")
    return value


DtypeOption = Annotated[
    str,
    typer.Option(
        "--dtype",
        metavar="DTYPE",
        callback=_valid_dtype,
        help="Weights: float32, float16, int8 (per-channel), int4 (blocks of 32), or auto "
        "(a float16 checkpoint stays float16 where the backend holds it).",
    ),
]
# -- end model precision --


# ----------------------------------------------------------------------------- errors


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit status for an exception (see the module docstring)."""
    from ipfs_accelerate.errors import (
        APIError,
        BackendUnavailableError,
        CheckpointError,
        ConfigurationError,
        FetchError,
        GatewayError,
        InvalidArgumentError,
        PreprocessingError,
        UnknownBackendError,
        UnsupportedArchitectureError,
    )

    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, APIError | FetchError | GatewayError):
        return ExitCode.REMOTE
    config_errors = (
        ConfigurationError,
        UnknownBackendError,
        BackendUnavailableError,
        CheckpointError,
        UnsupportedArchitectureError,
        ImportError,
    )
    if isinstance(exc, config_errors):
        return ExitCode.CONFIGURATION
    if isinstance(
        exc,
        PreprocessingError
        | InvalidArgumentError
        | FileNotFoundError
        | IsADirectoryError
        | UnicodeDecodeError,
    ):
        return ExitCode.INPUT
    return ExitCode.FAILURE


_HINTS = {
    ExitCode.REMOTE: "the remote service answered with an error or could not be reached",
    ExitCode.INPUT: "check the input files and text",
}


def _hint(exc: BaseException, code: ExitCode) -> str | None:
    """What to check, for the cause at hand (exit 3 has several)."""
    from ipfs_accelerate.errors import (
        BackendError,
        CheckpointError,
        UnsupportedArchitectureError,
    )

    if code != ExitCode.CONFIGURATION:
        return _HINTS.get(code)
    if isinstance(exc, ImportError):
        return "install the package extra that provides it (pip install 'ipfs-accelerate[...]')"
    if isinstance(exc, BackendError):
        return (
            "check --device and $IPFS_ACCELERATE_DEVICE; 'ipfs-accelerate hardware' lists the "
            "backends that work here"
        )
    if isinstance(exc, CheckpointError | UnsupportedArchitectureError):
        return (
            "check the model name or path; 'ipfs-accelerate models list' shows the checkpoints "
            "available without a download"
        )
    return "check the options and environment variables named above (keys, URLs, names)"


def _report(exc: BaseException, code: ExitCode, as_json: bool) -> None:
    message = str(exc) or type(exc).__name__
    if isinstance(exc, ImportError) and exc.name:
        message = (
            f"{message} (the optional dependency {exc.name!r} is missing; see the package extras)"
        )
    if as_json:
        sys.stdout.write(
            json.dumps(
                {"error": {"type": type(exc).__name__, "message": message, "exit_code": int(code)}}
            )
            + "\n"
        )
    from rich.markup import escape

    # one unwrapped line, so that logs and scripts can search it; the message is not markup
    stderr.print(f"[bold red]error[/] ({type(exc).__name__}): {escape(message)}", soft_wrap=True)
    hint = _hint(exc, code)
    if hint:
        stderr.print(f"[dim]exit {int(code)}: {hint}[/]", soft_wrap=True)
    if DEBUG["on"]:
        stderr.print_exception()


def command(fn: F) -> F:
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


def usage_error(message: str) -> typer.BadParameter:
    return typer.BadParameter(message)


def print_json(data: Any) -> None:
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


@contextmanager
def loading(what: str) -> Iterator[Callable[[str, int, int], None]]:
    """A progress bar for a model load (stages resolve, read, load), on stderr."""
    from ipfs_accelerate._progress import load_progress

    with load_progress(stderr, what, transient=True) as report:
        yield report


@contextmanager
def steps(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar over ``total`` items (shown when there is more than one)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=stderr,
        transient=True,
        disable=total <= 1,
    ) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def load_pipeline(
    cls: Any,
    model: str,
    device: str,
    *,
    inputs: int,
    model_type: str | None = None,
    dtype: str = "float32",
) -> Any:
    """``cls.from_pretrained(model, dtype=dtype)`` with a progress bar; ``--device auto`` over
    at most :data:`ONE_SHOT_INPUTS` inputs asks ``select_backend`` for one-shot work."""
    reason = None
    if device == "auto" and inputs <= ONE_SHOT_INPUTS:
        from ipfs_accelerate import hal

        selection = hal.select_backend(model_type, one_shot=True)
        device, reason = selection.name, selection.reason
    with loading(model) as report:
        pipeline = cls.from_pretrained(model, device=device, progress=report, dtype=dtype)
    if reason is None or pipeline.device != device:
        reason = pipeline.device_reason
    precision = "" if pipeline.dtype == "float32" else f" in {pipeline.dtype}"
    stderr.print(f"[dim]{model} on {pipeline.device}{precision}: {reason}[/]")
    return pipeline


def human_bytes(value: int | None) -> str:
    if value is None:
        return "-"
    size = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return str(value)  # pragma: no cover
