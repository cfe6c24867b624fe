"""Text generation: a decoder checkpoint, its tokenizer and chat template, and the engine."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, cast

from ipfs_accelerate.errors import CheckpointError, InvalidArgumentError
from ipfs_accelerate.models.loading import Checkpoint, LoadReport, read_json
from ipfs_accelerate.models.pipelines._base import _Pipeline

if TYPE_CHECKING:
    from pathlib import Path

    from ipfs_accelerate.models._module import Module
    from ipfs_accelerate.models.chat_template import ChatTemplate
    from ipfs_accelerate.models.generation import (
        GenerationEngine,
        GenerationEvent,
        GenerationResult,
        SamplingParams,
    )

__all__ = ["DecoderTokenizer", "TextGenerator"]

Prompt = str | Sequence[Mapping[str, Any]]


class DecoderTokenizer:
    """A checkpoint's ``tokenizer.json`` without padding or truncation (a prompt is never
    cut: one longer than the context raises instead)."""

    def __init__(self, tokenizer: Any, name: str) -> None:
        self._tokenizer = tokenizer
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.name = name

    @classmethod
    def from_checkpoint(cls, directory: Path) -> DecoderTokenizer:
        path = directory / "tokenizer.json"
        if not path.exists():
            raise CheckpointError(f"{path}: missing; text generation needs the tokenizer")
        try:
            from tokenizers import Tokenizer
        except ImportError as exc:  # pragma: no cover - in the models extra
            raise CheckpointError(
                "the tokenizers package is needed to read tokenizer.json"
            ) from exc
        try:
            return cls(Tokenizer.from_file(str(path)), str(path))
        except Exception as exc:  # the Rust side raises plain Exceptions on bad files
            raise CheckpointError(f"{path}: not a valid tokenizers file ({exc})") from None

    def encode(self, text: str, *, add_special_tokens: bool = True) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens).ids)

    def decode(self, ids: Sequence[int], *, skip_special_tokens: bool = True) -> str:
        return str(
            self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)
        )

    def token_to_id(self, token: str) -> int | None:
        value = self._tokenizer.token_to_id(token)
        return None if value is None else int(value)


class TextGenerator(_Pipeline):
    """Text generation with a decoder checkpoint (Llama, Mistral, Qwen2/3, SmolLM, GPT-2).

    Generation parameters (keyword arguments of every method) are the fields of
    :class:`~ipfs_accelerate.models.generation.SamplingParams`: ``max_new_tokens``,
    ``temperature`` (0: greedy), ``top_k``, ``top_p``, ``min_p``, ``repetition_penalty``,
    ``presence_penalty``, ``frequency_penalty``, ``seed``, ``do_sample``, ``stop``,
    ``stop_token_ids``, ``logprobs``; what a call leaves out comes from the checkpoint's
    ``generation_config.json``. A prompt string is encoded with the tokenizer's special tokens
    (a BOS where the tokenizer adds one); chat messages are rendered with the checkpoint's
    chat template (generation prompt on) and encoded as they are.
    """

    model: Any
    tokenizer: DecoderTokenizer
    chat_template: ChatTemplate | None
    engine: GenerationEngine

    @classmethod
    def _model_class(cls) -> type[Module]:
        # None: the family module picks the class from config.json's model_type
        return cast("type[Module]", None)

    @classmethod
    def _from_loaded(cls, model: Any, checkpoint: Checkpoint, report: LoadReport) -> Self:
        from ipfs_accelerate.models.chat_template import ChatTemplate
        from ipfs_accelerate.models.generation import GenerationDefaults, GenerationEngine

        if not callable(getattr(model, "cache_shape", None)):
            raise CheckpointError(
                f"{checkpoint.path}: {type(model).__name__} is not a text-generation model"
                " (TextGenerator needs a decoder: llama, mistral, qwen2, qwen3, gpt2)"
            )
        pipeline = cls(model, checkpoint, report)
        pipeline.tokenizer = DecoderTokenizer.from_checkpoint(checkpoint.path)
        pipeline.chat_template = ChatTemplate.from_checkpoint(checkpoint.path)
        defaults = GenerationDefaults.from_configs(
            read_json(checkpoint.path / "generation_config.json"), checkpoint.config
        )
        pipeline.engine = GenerationEngine(model, pipeline.tokenizer, defaults)
        return pipeline

    @property
    def context_length(self) -> int:
        """The most tokens (prompt and generated) one sequence may have."""
        return int(self.model.context_length)

    # ------------------------------------------------------------------ prompts

    def encode_prompt(self, prompt: Prompt) -> list[int]:
        """The token ids of a prompt string or of chat messages (rendered by the template)."""
        if isinstance(prompt, str):
            return self.tokenizer.encode(prompt)
        if isinstance(prompt, Sequence) and not isinstance(prompt, bytes):
            return self.tokenizer.encode(self.render_chat(prompt), add_special_tokens=False)
        raise InvalidArgumentError(
            f"prompt must be a string or a list of chat messages, got {type(prompt).__name__}"
        )

    def render_chat(self, messages: Any, *, add_generation_prompt: bool = True) -> str:
        """The prompt text the chat template makes of ``messages``."""
        if self.chat_template is None:
            raise CheckpointError(
                f"{self.checkpoint.path}: the checkpoint has no chat template"
                " (chat_template.jinja or tokenizer_config.json's chat_template)"
            )
        return self.chat_template.render(messages, add_generation_prompt=add_generation_prompt)

    # ------------------------------------------------------------------ generation

    def generate(self, prompt: str, **params: Any) -> str:
        """The completion of ``prompt`` (without the prompt)."""
        return self.generate_batch([_text_prompt(prompt)], **params)[0].text

    def chat(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> str:
        """The assistant's reply to ``messages``."""
        return self.generate_batch([_chat_prompt(messages)], **params)[0].text

    def stream(self, prompt: str, **params: Any) -> Iterator[str]:
        """The completion of ``prompt`` as text deltas (together: :meth:`generate`'s text).
        Arguments are checked when called, before the first delta."""
        return _deltas(self._run([_text_prompt(prompt)], [_params(params)]))

    def stream_chat(self, messages: Sequence[Mapping[str, Any]], **params: Any) -> Iterator[str]:
        """The assistant's reply to ``messages`` as text deltas."""
        return _deltas(self._run([_chat_prompt(messages)], [_params(params)]))

    def generate_batch(
        self,
        prompts: Sequence[Prompt],
        params: Sequence[SamplingParams | Mapping[str, Any]] | None = None,
        **shared: Any,
    ) -> list[GenerationResult]:
        """Several prompts (strings or chat message lists) decoded together, each with its
        own parameters (``params``, one per prompt, over the ``shared`` keyword ones) and
        stop conditions; results (text, token ids, finish_reason, logprobs) in order."""
        if isinstance(prompts, str) or not isinstance(prompts, Sequence):
            raise InvalidArgumentError("prompts must be a list of prompts")
        per = list(params) if params is not None else [{}] * len(prompts)
        if len(per) != len(prompts):
            raise InvalidArgumentError(
                f"{len(prompts)} prompts but {len(per)} parameter sets; give one per prompt"
            )
        settings = [_params({**shared, **_as_mapping(p)}) for p in per]
        ids = [self.encode_prompt(p) for p in prompts]
        return self.engine.generate(ids, settings)

    def _run(
        self, prompts: Sequence[Prompt], params: Sequence[SamplingParams]
    ) -> Iterator[list[GenerationEvent]]:
        return self.engine.run([self.encode_prompt(p) for p in prompts], params)


def _text_prompt(prompt: Any) -> str:
    if not isinstance(prompt, str):
        raise InvalidArgumentError(f"prompt must be a string, got {type(prompt).__name__}")
    return prompt


def _chat_prompt(messages: Any) -> Sequence[Mapping[str, Any]]:
    from ipfs_accelerate.models.chat_template import check_messages

    return check_messages(messages)


def _as_mapping(params: Any) -> Mapping[str, Any]:
    from dataclasses import asdict

    from ipfs_accelerate.models.generation import SamplingParams

    if isinstance(params, SamplingParams):
        return {k: v for k, v in asdict(params).items() if v is not None}
    if isinstance(params, Mapping):
        return params
    raise InvalidArgumentError(
        f"params entries must be SamplingParams or dicts, got {type(params).__name__}"
    )


def _params(params: Mapping[str, Any]) -> SamplingParams:
    from ipfs_accelerate.models.generation import SamplingParams

    return SamplingParams.from_kwargs(params)


def _deltas(steps: Iterator[list[GenerationEvent]]) -> Iterator[str]:
    for events in steps:
        for event in events:
            if event.delta:
                yield event.delta
