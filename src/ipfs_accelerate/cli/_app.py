"""The ``ipfs-accelerate`` Typer app and its root options; the command modules register
their commands on it."""

from __future__ import annotations

from typing import Annotated

import typer

import ipfs_accelerate

from ._output import DEBUG, stdout

__all__ = ["app", "models_app"]

app = typer.Typer(
    name="ipfs-accelerate",
    help="Hardware-accelerated AI inference: local models on CPU/WebGPU/WebNN, "
    "remote inference APIs, "
    "and a server with the OpenAI, TEI and KServe APIs' shapes.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,  # plain help: rich's panels cut option and variable names
    pretty_exceptions_enable=False,
)
models_app = typer.Typer(
    help="The local checkpoint cache: list what is cached, pull from the Hub.", no_args_is_help=True
)
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        stdout.print(f"ipfs-accelerate {ipfs_accelerate.__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: Annotated[
        bool, typer.Option("--debug", help="Show tracebacks of errors ($IPFS_ACCELERATE_DEBUG=1).")
    ] = False,
) -> None:
    """Hardware-accelerated AI inference from the command line."""
    if debug:
        DEBUG["on"] = True
