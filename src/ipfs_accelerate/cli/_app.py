"""The ``ipfs-accelerate`` Typer app and its root options; the command modules register
their commands on it."""

from __future__ import annotations

import pathlib
import typing
from typing import Annotated, Any

import typer

import ipfs_accelerate

from ._output import DEBUG, stdout

__all__ = ["app", "models_app", "name_placeholders"]

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


#: what --help shows for a value of each type (typer's own placeholders read ``<str>``,
#: ``<int range>``, ``<list[Path]>``)
_PLACEHOLDERS: dict[Any, str] = {
    str: "TEXT",
    int: "INTEGER",
    float: "NUMBER",
    pathlib.Path: "PATH",
}


def name_placeholders(typer_app: typer.Typer) -> None:
    """Give every option and argument of ``typer_app``'s commands (and its groups') a plain
    placeholder in --help where its declaration names none."""
    commands = [c.callback for c in typer_app.registered_commands]
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            name_placeholders(group.typer_instance)
    for callback in commands:
        if callback is None:
            continue
        # the modules' annotations are strings (PEP 563) that typer evaluates anew each time:
        # keep the evaluated ones, whose option declarations then carry the placeholders
        hints = typing.get_type_hints(callback, include_extras=True)
        for annotation in hints.values():
            _name_placeholder(annotation)
        callback.__annotations__.update(hints)


def _name_placeholder(annotation: Any) -> None:
    if typing.get_origin(annotation) is not Annotated:
        return
    declared, *extras = typing.get_args(annotation)
    info = next((e for e in extras if isinstance(e, typer.models.ParameterInfo)), None)
    if info is None or info.metavar is not None:
        return
    kind = declared
    many = False
    if typing.get_origin(kind) in (typing.Union, __import__("types").UnionType):
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    if typing.get_origin(kind) is list:
        (kind,) = typing.get_args(kind)
        many = True
    name = _PLACEHOLDERS.get(kind)
    if name is not None:
        info.metavar = f"{name}..." if many else name
