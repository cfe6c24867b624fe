"""The ``ipfs-accelerate`` command line: local models, remote APIs, the server, benchmarks.

Commands: ``hardware``, ``embed``, ``train-classifier``, ``classify``, ``classify-image``,
``zero-shot``, ``transcribe``, ``generate``, ``chat``, ``serve``, ``bench``, ``models list``
and ``models pull``. Every command that produces data takes ``--json`` (one JSON document
on stdout; progress and messages go to stderr). Exit codes:

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

Importing this package loads typer and rich only; models, backends and the server load
when a command needs them. Layout: ``_output`` (consoles, exit codes, error reports),
``_app`` (the Typer app), then one module per command group: ``_local`` (hardware, embed,
classify-image, zero-shot, transcribe), ``_train`` (train-classifier, classify),
``_generate`` (generate, chat --local), ``_chat``, ``_serve``, ``_bench``, ``_models``.
"""

from __future__ import annotations

# the command modules register their commands on ``app`` as they are imported, so this order
# is the order of --help
# isort: off
from . import _local, _train, _generate, _chat, _serve, _bench, _models  # noqa: F401

# isort: on
from ._app import app, name_placeholders
from ._output import ExitCode, exit_code_for

name_placeholders(app)

__all__ = ["ExitCode", "app", "exit_code_for", "main"]


def main() -> None:
    """The console script ``ipfs-accelerate``."""
    app(prog_name="ipfs-accelerate")
