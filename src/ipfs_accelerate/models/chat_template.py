"""Chat templates: a checkpoint's Jinja template rendered as transformers renders it.

The template comes from ``chat_template.jinja`` (transformers 5) or the ``chat_template`` of
``tokenizer_config.json`` (a string, or a list of named templates: "default" is used). It is
rendered in jinja2's immutable sandbox with transformers' settings (``trim_blocks``,
``lstrip_blocks``, loop controls, a ``tojson`` that keeps non-ASCII text, ``raise_exception``,
``strftime_now``, the ``{% generation %}`` tag) and sees ``messages``,
``add_generation_prompt`` and the tokenizer's special tokens (``bos_token``, ``eos_token``,
...), so the output equals ``tokenizer.apply_chat_template(..., tokenize=False)``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

from ipfs_accelerate.errors import CheckpointError, InvalidArgumentError, PreprocessingError

__all__ = ["ROLES", "ChatTemplate", "check_messages"]

#: the roles a message may have
ROLES = ("system", "developer", "user", "assistant", "tool")
_SPECIAL_TOKENS = (
    "bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token",
)  # fmt: skip


def check_messages(messages: Any) -> list[dict[str, Any]]:
    """``messages`` as plain dicts, or InvalidArgumentError naming the bad field."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence):
        raise InvalidArgumentError(
            f"messages must be a list of {{'role', 'content'}} dicts, got {type(messages).__name__}"
        )
    if not messages:
        raise InvalidArgumentError("messages is empty")
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise InvalidArgumentError(
                f"messages[{i}] must be a dict, got {type(message).__name__}"
            )
        role = message.get("role")
        if role not in ROLES:
            raise InvalidArgumentError(
                f"messages[{i}].role {role!r} is not one of {', '.join(ROLES)}"
            )
        content = message.get("content")
        if not isinstance(content, str):
            raise InvalidArgumentError(
                f"messages[{i}].content must be a string, got {type(content).__name__}"
            )
        out.append(dict(message))
    return out


class ChatTemplate:
    """A compiled chat template and the special tokens it may refer to."""

    def __init__(
        self, source: str, special_tokens: Mapping[str, str] | None = None, *, name: str = ""
    ) -> None:
        self.source = source
        self.special_tokens = dict(special_tokens or {})
        self.name = name or "chat template"
        self._template = _compile(source, self.name)

    @classmethod
    def from_checkpoint(cls, directory: Path) -> ChatTemplate | None:
        """The template of a checkpoint directory, or None when it has none."""
        from ipfs_accelerate.models.loading import read_json

        settings = read_json(directory / "tokenizer_config.json")
        special = read_json(directory / "special_tokens_map.json")
        tokens = {}
        for key in _SPECIAL_TOKENS:
            value = _token_text(settings.get(key)) or _token_text(special.get(key))
            if value is not None:
                tokens[key] = value
        jinja_file = directory / "chat_template.jinja"
        if jinja_file.exists():
            return cls(jinja_file.read_text(encoding="utf-8"), tokens, name=str(jinja_file))
        source = settings.get("chat_template")
        name = f"{directory / 'tokenizer_config.json'}: chat_template"
        if isinstance(source, list):
            named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
            source = named.get("default")
        if source is None:
            return None
        if not isinstance(source, str):
            raise CheckpointError(f"{name} is not a string")
        return cls(source, tokens, name=name)

    def render(self, messages: Any, *, add_generation_prompt: bool = True, **variables: Any) -> str:
        """The prompt text of ``messages``; ``variables`` reach the template too (they
        override the special tokens). A template that raises gives PreprocessingError."""
        import jinja2

        chat = check_messages(messages)
        context = {**self.special_tokens, **variables}
        try:
            return str(
                self._template.render(
                    messages=chat, add_generation_prompt=add_generation_prompt, **context
                )
            )
        except jinja2.TemplateError as exc:
            raise PreprocessingError(f"{self.name}: the template raised: {exc}") from None


def _token_text(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def _compile(source: str, name: str) -> Any:
    try:
        import jinja2
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment
    except ImportError as exc:  # pragma: no cover - jinja2 comes with the models extra
        raise CheckpointError(f"{name}: rendering chat templates needs jinja2") from exc

    class GenerationTag(jinja2.ext.Extension):
        """transformers' ``{% generation %}`` marks assistant text; it renders its body."""

        tags = {"generation"}  # noqa: RUF012 - jinja2's own attribute

        def parse(self, parser: Any) -> Any:
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            call = self.call_method("_render")
            return jinja2.nodes.CallBlock(call, [], [], body).set_lineno(lineno)

        def _render(self, caller: Any) -> str:
            return str(caller())

    def raise_exception(message: str) -> None:
        raise jinja2.exceptions.TemplateError(message)

    def tojson(
        value: Any,
        ensure_ascii: bool = False,
        indent: int | None = None,
        separators: Any = None,
        sort_keys: bool = False,
    ) -> str:
        return json.dumps(
            value,
            ensure_ascii=ensure_ascii,
            indent=indent,
            separators=separators,
            sort_keys=sort_keys,
        )

    env = ImmutableSandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[GenerationTag, jinja2.ext.loopcontrols],
    )
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    try:
        return env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise CheckpointError(f"{name}: not a valid Jinja template ({exc})") from None
