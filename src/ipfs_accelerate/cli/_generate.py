"""``generate``: text from a local decoder checkpoint, streamed to stdout; and the local
conversation behind ``chat --local`` (:func:`chat_locally`)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from ._app import app
from ._output import (
    DeviceOption,
    DtypeOption,
    JsonOption,
    command,
    load_pipeline,
    print_json,
    stderr,
    usage_error,
)

__all__ = ["chat_locally", "generate"]

#: what ``chat --local`` reads as the end of the conversation
EXIT_COMMANDS = ("/exit", "/quit")


def _load_generator(model: str, device: str, dtype: str) -> Any:
    from ipfs_accelerate.models import TextGenerator

    return load_pipeline(
        TextGenerator, model, device, inputs=1, model_type="text_generation", dtype=dtype
    )


def _params(
    max_tokens: int | None, temperature: float | None, top_p: float | None, seed: int | None
) -> dict[str, Any]:
    values = {
        "max_new_tokens": max_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
    }
    return {k: v for k, v in values.items() if v is not None}


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


@app.command()
@command
def generate(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="A decoder checkpoint (Llama, Mistral, Qwen2/3, SmolLM, GPT-2): a directory, "
            "Hub id or s3:// URI.",
            show_default=False,
        ),
    ],
    prompt: Annotated[
        str,
        typer.Argument(
            metavar="PROMPT", help="The text to continue (- reads stdin).", show_default=False
        ),
    ],
    max_tokens: Annotated[
        int | None,
        typer.Option("--max-tokens", min=1, help="Most new tokens (default: the checkpoint's)."),
    ] = None,
    temperature: Annotated[
        float | None,
        typer.Option("--temperature", min=0.0, help="Sampling temperature (0: greedy)."),
    ] = None,
    top_p: Annotated[
        float | None,
        typer.Option("--top-p", min=0.0, max=1.0, help="Nucleus sampling: probability mass kept."),
    ] = None,
    seed: Annotated[
        int | None, typer.Option("--seed", min=0, help="Seed of the sampling (reproducible).")
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
    json_output: JsonOption = False,
) -> None:
    """Continue a prompt with a local decoder checkpoint; the text streams to stdout."""
    text = sys.stdin.read() if prompt == "-" else prompt
    if not text:
        raise usage_error("give a prompt, e.g. ipfs-accelerate generate MODEL 'Once upon'")
    params = _params(max_tokens, temperature, top_p, seed)
    generator = _load_generator(model, device, dtype)
    if json_output:
        [result] = generator.generate_batch([text], **params)
        print_json(
            {
                "model": model,
                "text": result.text,
                "finish_reason": result.finish_reason,
                "usage": {
                    "prompt_tokens": result.prompt_tokens,
                    "completion_tokens": result.completion_tokens,
                },
            }
        )
        return
    try:
        for delta in generator.stream(text, **params):
            _write(delta)
    finally:
        _write("\n")


def chat_locally(
    model: str,
    first: str | None,
    *,
    system: str | None,
    params: dict[str, Any],
    device: str,
    dtype: str,
) -> None:
    """A conversation on stdin/stdout with a local checkpoint: each line is a user turn, the
    reply streams back, and the conversation is kept until ``/exit`` or the end of input. A
    turn the model refuses (a conversation longer than its context) is reported and dropped."""
    from rich.markup import escape

    from ipfs_accelerate.errors import InvalidArgumentError, PreprocessingError

    generator = _load_generator(model, device, dtype)
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    stderr.print(f"[dim]chatting with {model}; {EXIT_COMMANDS[0]} or end of input leaves[/]")
    pending = first
    while True:
        if pending is None:
            stderr.print("[bold]>[/] ", end="")
            line = sys.stdin.readline()
            if not line:
                return
            pending = line.strip()
        text, pending = pending, None
        if text in EXIT_COMMANDS:
            return
        if not text:
            continue
        messages.append({"role": "user", "content": text})
        reply: list[str] = []
        try:
            for delta in generator.stream_chat(messages, **params):
                reply.append(delta)
                _write(delta)
        except (InvalidArgumentError, PreprocessingError) as exc:
            messages.pop()
            stderr.print(f"[red]not sent:[/] {escape(str(exc))}", highlight=False)
            continue
        finally:
            _write("\n")
        messages.append({"role": "assistant", "content": "".join(reply)})
