"""``chat``: a conversation turn with a remote model through an API backend, or a
conversation with a local checkpoint (``--local``, in :mod:`._generate`)."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from ._app import app
from ._generate import chat_locally
from ._output import (
    DeviceOption,
    DtypeOption,
    JsonOption,
    command,
    print_json,
    stderr,
    stdout,
    usage_error,
)


@app.command()
@command
def chat(
    prompt: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="WORD...",
            help="The message (words are joined; - reads stdin).",
            show_default=False,
        ),
    ] = None,
    backend: Annotated[
        str,
        typer.Option(
            "--backend", "-b", help="API backend: openai, claude, gemini, groq, ollama, vllm..."
        ),
    ] = "openai",
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="Model name (default: the backend's).")
    ] = None,
    system: Annotated[str | None, typer.Option("--system", "-s", help="A system message.")] = None,
    max_tokens: Annotated[
        int | None, typer.Option("--max-tokens", min=1, help="Upper bound on the reply's tokens.")
    ] = None,
    temperature: Annotated[
        float | None, typer.Option("--temperature", min=0.0, help="Sampling temperature.")
    ] = None,
    base_url: Annotated[
        str | None,
        typer.Option(
            "--base-url", help="The backend's URL (else its metadata/environment default)."
        ),
    ] = None,
    stream: Annotated[
        bool, typer.Option("--stream/--no-stream", help="Print the reply as it is generated.")
    ] = True,
    json_output: JsonOption = False,
    # -- local chat (issue 17): a conversation with a local decoder checkpoint
    local: Annotated[
        str | None,
        typer.Option(
            "--local",
            metavar="MODEL",
            help="Chat with this local decoder checkpoint instead: interactive (one line per "
            "turn, /exit leaves), streamed, the conversation kept.",
        ),
    ] = None,
    device: DeviceOption = "auto",
    dtype: DtypeOption = "float32",
    # -- end local chat
) -> None:
    """Chat with a remote model through an API backend; the reply streams to the terminal.
    With --local MODEL, hold a conversation with a local checkpoint (--device/--dtype apply).

    Keys come from the provider's environment variable ($OPENAI_API_KEY, $ANTHROPIC_API_KEY...)."""
    from ipfs_accelerate.api_backends import create_api_backend

    words = list(prompt or [])
    if local is not None:
        if json_output or base_url or model:
            raise usage_error("--local takes none of --json, --base-url, --model")
        settings = {"max_new_tokens": max_tokens, "temperature": temperature}
        chat_locally(
            local,
            " ".join(words) or None,
            system=system,
            params={k: v for k, v in settings.items() if v is not None},
            device=device,
            dtype=dtype,
        )
        return
    text = sys.stdin.read().strip() if words == ["-"] else " ".join(words)
    if not text.strip():
        raise usage_error("give a message, e.g. ipfs-accelerate chat 'Hello' (or - to read stdin)")
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
                print_json(
                    {
                        "backend": backend,
                        "model": reply.model or name,
                        "text": reply.text,
                        "finish_reason": reply.finish_reason,
                        "usage": _usage_dict(reply.usage),
                        "tool_calls": [
                            {"id": c.id, "name": c.name, "arguments": c.arguments}
                            for c in reply.tool_calls
                        ],
                    }
                )
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
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
    }


def _chat_footer(backend: str, model: str, finish_reason: str | None, usage: Any) -> None:
    parts = [backend, model]
    if finish_reason:
        parts.append(f"finish: {finish_reason}")
    if usage is not None and usage.total_tokens:
        parts.append(f"{usage.input_tokens or 0} in + {usage.output_tokens or 0} out tokens")
    stderr.print(f"[dim]{' · '.join(parts)}[/]")
