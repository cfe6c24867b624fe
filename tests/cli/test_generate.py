"""``generate`` and ``chat --local`` through typer's CliRunner: their text equals
TextGenerator's for the same checkpoint and parameters; chat keeps the conversation."""

from __future__ import annotations

import json
from typing import Any

import pytest
from typer.testing import CliRunner

from ipfs_accelerate.cli import ExitCode, app
from tests.models._decoder_checkpoints import decoder_checkpoint

pytestmark = pytest.mark.timeout(180)

runner = CliRunner()
CPU = ("--device", "cpu")


@pytest.fixture(scope="module")
def llama() -> tuple[str, Any]:
    from ipfs_accelerate.models import TextGenerator

    path = str(decoder_checkpoint("llama"))
    return path, TextGenerator.from_pretrained(path, device="cpu")


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(app, list(args), input=input)


def test_generate_streams_the_pipelines_text(llama: tuple[str, Any]) -> None:
    path, generator = llama
    expected = generator.generate("The cat sat", max_new_tokens=10, temperature=0)
    result = invoke("generate", path, "The cat sat", "--max-tokens", "10", "--temperature", "0",
                    *CPU)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == expected + "\n"
    sampled = generator.generate(
        "The cat sat", max_new_tokens=10, temperature=1.2, top_p=0.9, seed=3
    )
    result = invoke("generate", path, "The cat sat", "--max-tokens", "10", "--temperature",
                    "1.2", "--top-p", "0.9", "--seed", "3", *CPU)  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == sampled + "\n"


def test_generate_json_and_stdin(llama: tuple[str, Any]) -> None:
    path, generator = llama
    [expected] = generator.generate_batch(["Interest rates"], max_new_tokens=6, temperature=0)
    result = invoke("generate", path, "-", "--max-tokens", "6", "--temperature", "0", "--json",
                    *CPU, input="Interest rates")  # fmt: skip
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["text"] == expected.text and data["finish_reason"] == "length"
    assert data["usage"] == {"prompt_tokens": expected.prompt_tokens, "completion_tokens": 6}


def test_generate_refuses_bad_input(llama: tuple[str, Any]) -> None:
    path, _ = llama
    assert invoke("generate", path, "x", "--max-tokens", "0", *CPU).exit_code == ExitCode.USAGE
    assert invoke("generate", path, "x", "--top-p", "1.5", *CPU).exit_code == ExitCode.USAGE
    # more new tokens than the 64-position context leaves: the engine's typed error
    result = invoke("generate", path, "x", "--max-tokens", "500", *CPU)
    assert result.exit_code == ExitCode.INPUT
    assert "max_new_tokens" in result.output


def test_chat_local_keeps_the_conversation(llama: tuple[str, Any]) -> None:
    path, generator = llama
    first = [{"role": "user", "content": "Hi"}]
    reply1 = generator.chat(first, max_new_tokens=4, temperature=0)
    # the second turn's prompt holds the first turn and its reply (the context is 64 tokens)
    second = [*first, {"role": "assistant", "content": reply1}, {"role": "user", "content": "Ok"}]
    reply2 = generator.chat(second, max_new_tokens=4, temperature=0)
    assert reply2 != generator.chat([second[-1]], max_new_tokens=4, temperature=0)
    result = invoke("chat", "--local", path, "--max-tokens", "4", "--temperature", "0", *CPU,
                    input="Hi\n\nOk\n/exit\nnever read\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout == f"{reply1}\n{reply2}\n"


def test_chat_local_reports_a_turn_it_cannot_take_and_goes_on(llama: tuple[str, Any]) -> None:
    path, generator = llama
    reply = generator.chat([{"role": "user", "content": "hi"}], max_new_tokens=4, temperature=0)
    too_long = "word " * 80  # more than the 64-position context
    result = invoke(
        "chat",
        "--local",
        path,
        "--max-tokens",
        "4",
        "--temperature",
        "0",
        *CPU,
        input=f"{too_long}\nhi\n",
    )  # fmt: skip (ends at the end of input)
    assert result.exit_code == 0, result.output
    assert "not sent" in result.stderr and "context" in result.stderr
    # the refused turn was dropped: "hi" is answered as the conversation's first turn
    assert result.stdout == f"\n{reply}\n"


def test_chat_local_takes_no_remote_options(llama: tuple[str, Any]) -> None:
    path, _ = llama
    result = invoke("chat", "--local", path, "--json", *CPU, input="/exit\n")
    assert result.exit_code == ExitCode.USAGE
