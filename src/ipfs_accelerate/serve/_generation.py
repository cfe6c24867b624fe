"""Reading and running a text-generation request (``/v1/chat/completions``,
``/v1/completions``): OpenAI's fields checked and turned into
:class:`~ipfs_accelerate.models.generation.SamplingParams`, the prompts encoded, and the
request's sequences decoded in the model's running batch (continuous batching, see
:class:`_DecodeLoop`).

Every refusal is a :class:`ServeError` naming the field, worded as OpenAI words it. A
parameter this server cannot honour (``tools``, ``response_format`` ...) is refused by name,
never ignored; an unknown one is refused as OpenAI refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import numbers
import weakref
from collections.abc import AsyncGenerator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeAlias

from ipfs_accelerate.errors import CheckpointError, PreprocessingError

from ._errors import ServeError, brief, describe

if TYPE_CHECKING:
    from ipfs_accelerate.models.generation import GenerationEvent, SamplingParams

    from ._models import ServedModel
    from ._state import ServerState

__all__ = ["MAX_CHOICES", "GenerationRequest", "encode_prompts", "events", "parse_request"]

#: the most choices (``n``) one request may ask for
MAX_CHOICES = 8
#: the most prompts one completions request may hold
MAX_PROMPTS = 16
#: OpenAI's bounds on the alternatives per token: chat ``top_logprobs``, completions ``logprobs``
MAX_TOP_LOGPROBS = 20
MAX_COMPLETION_LOGPROBS = 5
#: the roles a chat message may have (``developer`` is rendered as ``system``, as OpenAI
#: treats it for models that predate it)
ROLES = ("system", "developer", "user", "assistant")

#: fields read by both endpoints
_COMMON = frozenset({
    "model", "stream", "stream_options", "max_tokens", "temperature", "top_p", "n", "stop",
    "seed", "presence_penalty", "frequency_penalty", "logprobs", "user", "metadata", "store",
    "service_tier", "logit_bias",
    # extensions other OpenAI-compatible servers (vLLM, llama.cpp) take too
    "top_k", "min_p", "repetition_penalty",
})  # fmt: skip
_CHAT = _COMMON | {"messages", "max_completion_tokens", "top_logprobs", "parallel_tool_calls",
                   "modalities", "tools", "tool_choice", "functions", "function_call",
                   "response_format", "audio", "prediction", "web_search_options",
                   "reasoning_effort"}  # fmt: skip
_COMPLETIONS = _COMMON | {"prompt", "echo", "best_of", "suffix"}
#: known OpenAI parameters this server cannot honour, with why
_UNSUPPORTED = {
    "tools": "this server does not call tools",
    "tool_choice": "this server does not call tools",
    "functions": "this server does not call functions",
    "function_call": "this server does not call functions",
    "audio": "this server generates text only",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "this server does not search the web",
    "reasoning_effort": "the served models do not take a reasoning effort",
    "suffix": "a suffix (insertion) is not supported",
}


@dataclass(frozen=True)
class GenerationRequest:
    """A checked request: its model, prompts (chat messages or completion prompts), the
    sampling parameters each of the ``n`` choices per prompt gets, and how to answer."""

    model: ServedModel
    chat: bool
    prompts: list[Any]
    n: int
    params: dict[str, Any]
    stream: bool
    include_usage: bool
    #: alternatives per token when logprobs are asked for (None: no logprobs)
    logprobs: int | None

    @property
    def prompt_field(self) -> str:
        return "messages" if self.chat else "prompt"

    def sampling(self, choice: int) -> SamplingParams:
        """The parameters of choice ``choice`` of a prompt: with a seed, choice i samples
        with ``seed + i`` (the first choice is what n=1 gives; the others differ)."""
        from ipfs_accelerate.models.generation import SamplingParams

        params = dict(self.params)
        if params.get("seed") is not None:
            params["seed"] += choice
        return SamplingParams(**params, logprobs=self.logprobs)


def parse_request(state: ServerState, body: Any, *, chat: bool) -> GenerationRequest:
    """``body`` (parsed JSON) checked field by field."""
    from ._requests import json_object

    body = {k: v for k, v in json_object(body).items() if v is not None}
    known = _CHAT if chat else _COMPLETIONS
    for name in body:
        if name not in known:
            raise ServeError(
                "invalid_request", f"Unrecognized request argument supplied: {name}", param=name
            )
        if name in _UNSUPPORTED:
            raise _unsupported(name, _UNSUPPORTED[name])
    _refuse_unhonoured(body, chat)
    if "model" not in body:
        raise ServeError("invalid_request", "you must provide a model parameter", param="model")
    model = state.model(body["model"], "text-generation")
    stream = _bool(body, "stream", False)
    options = body.get("stream_options")
    if options is not None and not stream:
        raise ServeError(
            "invalid_request",
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            param="stream_options",
        )
    include_usage = False
    if options is not None:
        if not isinstance(options, Mapping):
            raise _invalid_type("stream_options", options, "an object")
        include_usage = _bool(options, "include_usage", False, prefix="stream_options.")
    prompts: list[Any]
    if chat:
        prompts = [_messages(body.get("messages"))]
    else:
        prompts = _prompts(body.get("prompt"))
    limit = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
    params = {
        "max_new_tokens": _integer(body, limit, low=1),
        "temperature": _real(body, "temperature", 0.0, 2.0),
        "top_p": _real(body, "top_p", 0.0, 1.0, open_low=True),
        "presence_penalty": _real(body, "presence_penalty", -2.0, 2.0),
        "frequency_penalty": _real(body, "frequency_penalty", -2.0, 2.0),
        "seed": _integer(body, "seed", low=0),
        "stop": _stop(body.get("stop")),
        "top_k": _integer(body, "top_k", low=0),
        "min_p": _real(body, "min_p", 0.0, 1.0),
        "repetition_penalty": _real(body, "repetition_penalty", 0.0, None, open_low=True),
    }
    n = _integer(body, "n", low=1, high=MAX_CHOICES)
    return GenerationRequest(
        model=model,
        chat=chat,
        prompts=prompts,
        n=1 if n is None else n,
        params={k: v for k, v in params.items() if v is not None},
        stream=stream,
        include_usage=include_usage,
        logprobs=_logprobs(body, chat),
    )


def _refuse_unhonoured(body: Mapping[str, Any], chat: bool) -> None:
    """Parameters that are fine at their neutral value and refused at any other."""
    response_format = body.get("response_format")
    if response_format is not None and response_format != {"type": "text"}:
        raise _unsupported("response_format", "structured output is not supported")
    if body.get("logit_bias"):
        raise _unsupported("logit_bias", "logit biases are not supported")
    if body.get("echo") not in (None, False):
        raise _unsupported("echo", "echoing the prompt is not supported")
    if body.get("best_of") not in (None, 1):
        raise _unsupported("best_of", "best_of other than 1 is not supported")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise _unsupported("modalities", "this server generates text only")


def _unsupported(name: str, why: str) -> ServeError:
    return ServeError("unsupported", f"'{name}' is not supported: {why}.", param=name)


def _invalid(name: str, message: str, code: str | None = None) -> ServeError:
    return ServeError("invalid_request", message, param=name, code=code)


def _invalid_type(name: str, value: Any, expected: str) -> ServeError:
    message = f"Invalid type for '{name}': expected {expected}, but got {brief(value)} instead."
    return _invalid(name, message, "invalid_type")


def _too_many(name: str, count: int, limit: int) -> ServeError:
    message = (
        f"Invalid '{name}': array too long. Expected an array with maximum length {limit}, "
        f"but got an array with length {count} instead."
    )
    return _invalid(name, message, "array_above_max_length")


def _bool(body: Mapping[str, Any], name: str, default: bool, *, prefix: str = "") -> bool:
    value = body.get(name, default)
    if not isinstance(value, bool):
        raise _invalid_type(prefix + name, value, "a boolean")
    return value


def _number(body: Mapping[str, Any], name: str, kind: type, expected: str) -> Any:
    """``body[name]`` (None when absent), refused unless an instance of ``kind`` (never a
    bool: JSON's true is no number)."""
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, kind)):
        raise _invalid_type(name, value, expected)
    return value


def _integer(
    body: Mapping[str, Any], name: str, *, low: int, high: int | None = None
) -> int | None:
    value = _number(body, name, numbers.Integral, "an integer")
    if value is None:
        return None
    value = int(value)
    if value < low:
        raise _integer_bound(name, value, "below minimum", f">= {low}", "below_min")
    if high is not None and value > high:
        raise _integer_bound(name, value, "above maximum", f"<= {high}", "above_max")
    return value


def _integer_bound(name: str, value: int, side: str, bound: str, code: str) -> ServeError:
    message = (
        f"Invalid '{name}': integer {side} value. Expected a value {bound}, but got {value} "
        "instead."
    )
    return _invalid(name, message, f"integer_{code}_value")


def _real(
    body: Mapping[str, Any],
    name: str,
    low: float,
    high: float | None,
    *,
    open_low: bool = False,
) -> float | None:
    value = _number(body, name, numbers.Real, "a number")
    if value is None:
        return None
    number = float(value)
    below = number <= low if open_low else number < low
    if below or (high is not None and number > high):
        bracket = "(" if open_low else "["
        upper = f"{high:g}]" if high is not None else "inf)"
        message = f"Invalid '{name}': {brief(value)} is out of range. Expected a value in "
        raise _invalid(name, f"{message}{bracket}{low:g}, {upper}.", "invalid_value")
    return number


def _stop(value: Any) -> list[str] | None:
    from ipfs_accelerate.models.generation import MAX_STOP_STRINGS

    if value is None:
        return None
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise _invalid_type("stop", value, "a string or an array of strings")
    if len(items) > MAX_STOP_STRINGS:
        raise _too_many("stop", len(items), MAX_STOP_STRINGS)
    for i, item in enumerate(items):
        if not isinstance(item, str) or not item:
            raise _invalid_type(f"stop[{i}]", item, "a non-empty string")
    return items or None


def _logprobs(body: Mapping[str, Any], chat: bool) -> int | None:
    if not chat:
        return _integer(body, "logprobs", low=0, high=MAX_COMPLETION_LOGPROBS)
    wanted = _bool(body, "logprobs", False)
    top = _integer(body, "top_logprobs", low=0, high=MAX_TOP_LOGPROBS)
    if top is not None and not wanted:
        raise ServeError(
            "invalid_request",
            "Invalid value for 'top_logprobs': 'logprobs' must be true to use it.",
            param="top_logprobs",
        )
    return (top or 0) if wanted else None


def _messages(value: Any) -> list[dict[str, str]]:
    if value is None:
        raise ServeError("invalid_request", "'messages' is a required property", param="messages")
    if not isinstance(value, list):
        raise _invalid_type("messages", value, "an array of messages")
    if not value:
        raise ServeError(
            "invalid_request",
            "Invalid 'messages': empty array. Expected an array with minimum length 1.",
            param="messages",
        )
    out = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, Mapping):
            raise _invalid_type(where, message, "an object")
        role = message.get("role")
        if role == "tool":
            raise _unsupported(f"{where}.role", "tool messages need tool calling")
        if role not in ROLES:
            supported = ", ".join(f"'{r}'" for r in ROLES)
            raise ServeError(
                "invalid_request",
                f"Invalid value for '{where}.role': {brief(role)}. Supported values are: "
                f"{supported}.",
                param=f"{where}.role",
                code="invalid_value",
            )
        if message.get("tool_calls"):
            raise _unsupported(f"{where}.tool_calls", "this server does not call tools")
        content = _content(message.get("content"), f"{where}.content")
        out.append({"role": "system" if role == "developer" else role, "content": content})
    return out


def _content(value: Any, where: str) -> str:
    """A message's text: a string, or an array of ``{"type": "text", "text": ...}`` parts
    (joined with newlines, as other OpenAI-compatible servers join them)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list):
        raise _invalid_type(where, value, "a string or an array of text parts")
    texts = []
    for j, part in enumerate(value):
        if not isinstance(part, Mapping):
            raise _invalid_type(f"{where}[{j}]", part, "an object")
        if part.get("type") != "text":
            raise _unsupported(
                f"{where}[{j}].type", f"content parts of type {brief(part.get('type'))}"
            )
        text = part.get("text")
        if not isinstance(text, str):
            raise _invalid_type(f"{where}[{j}].text", text, "a string")
        texts.append(text)
    return "\n".join(texts)


def _prompts(value: Any) -> list[str | list[int]]:
    """A completions ``prompt``: a string, a token array, or an array of either."""
    if value is None:
        raise ServeError("invalid_request", "'prompt' is a required property", param="prompt")
    if isinstance(value, str) or _is_token_array(value):
        return [value]
    if not isinstance(value, list) or not value:
        raise _invalid_type("prompt", value, "a string, a token array or a non-empty array")
    if len(value) > MAX_PROMPTS:
        raise _too_many("prompt", len(value), MAX_PROMPTS)
    for i, item in enumerate(value):
        if not (isinstance(item, str) or _is_token_array(item)):
            raise _invalid_type(f"prompt[{i}]", item, "a string or a token array")
    return list(value)


def _is_token_array(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(t, int) and not isinstance(t, bool) for t in value)
    )


# ----------------------------------------------------------------------------- running


def encode_prompts(request: GenerationRequest) -> list[list[int]]:
    """Each prompt's token ids (chat messages rendered by the template), checked against the
    context: the prompt and ``max_tokens`` must fit, and the prompt must leave room for one
    token (runs on the work pool: rendering and tokenizing grow with the prompt)."""
    pipeline = request.model.pipeline
    field = request.prompt_field
    encoded = []
    for prompt in request.prompts:
        try:
            token_array = not request.chat and isinstance(prompt, list)
            ids = prompt if token_array else pipeline.encode_prompt(prompt)
        except PreprocessingError as exc:  # the chat template raised
            raise ServeError("invalid_request", describe(exc), param=field) from None
        except CheckpointError:
            raise ServeError(
                "invalid_request",
                f"The model '{request.model.name}' has no chat template; use /v1/completions",
                param="model",
                code="model_not_supported",
            ) from None
        _check_context(request, len(ids))
        encoded.append(list(ids))
    return encoded


def _check_context(request: GenerationRequest, prompt_tokens: int) -> None:
    context = request.model.pipeline.context_length
    completion = request.params.get("max_new_tokens", 1)
    if prompt_tokens + completion <= context:
        return
    where = "messages" if request.chat else "prompt"
    raise ServeError(
        "input_too_long",
        f"This model's maximum context length is {context} tokens. However, you requested "
        f"{prompt_tokens + completion} tokens ({prompt_tokens} in the {where}, {completion} in "
        f"the completion). Please reduce the length of the {where} or completion.",
        param=where,
    )


async def events(
    state: ServerState, request: GenerationRequest, prompts: Sequence[Sequence[int]]
) -> AsyncGenerator[list[GenerationEvent], None]:
    """The events of each step of the request's sequences (prompt i's choice j is sequence
    ``i * n + j``), decoded in the model's running batch (see :class:`_DecodeLoop`). Closing
    this iterator (a client that went away) takes the request out of the batch: its rows are
    freed before the next step."""
    model = request.model
    ids = [list(p) for p in prompts for _ in range(request.n)]
    params = [request.sampling(j) for _ in prompts for j in range(request.n)]
    loop = _decode_loop(state, model)
    with state.admit(model, "generation"):
        ticket = await loop.submit(ids, params)
        try:
            while True:
                step = await ticket.get()
                if step is None:
                    return
                yield step
        finally:
            loop.cancel(ticket)


#: what a request's queue carries: a step's events, the error that ended it, or None (done)
_Item: TypeAlias = "list[GenerationEvent] | BaseException | None"


class _Ticket:
    """One request in the running batch: the queue its steps' events arrive on."""

    def __init__(self, sequences: int) -> None:
        self.queue: asyncio.Queue[_Item] = asyncio.Queue()
        self.unfinished = sequences

    async def get(self) -> list[GenerationEvent] | None:
        item = await self.queue.get()
        if isinstance(item, BaseException):
            raise item
        return item


class _DecodeLoop:
    """Continuous batching for one generator model: one loop steps every running sequence
    together on the model's thread; a request joins at the next step and leaves when its
    sequences finish or it is cancelled, and at most ``max_batch`` sequences decode at once
    (the others wait, in order). The loop runs while a request is in it."""

    def __init__(self, state: ServerState, model: ServedModel, max_batch: int) -> None:
        from ipfs_accelerate.models.generation import ContinuousBatch

        self.state = state
        self.model = model
        self.batch = ContinuousBatch(model.pipeline.engine, max_batch)
        self.tickets: set[_Ticket] = set()
        self._task: asyncio.Task[None] | None = None

    async def submit(self, prompts: list[list[int]], params: list[SamplingParams]) -> _Ticket:
        """A ticket for the sequences, queued in the batch (their arguments checked: a bad one
        raises here)."""
        ticket = _Ticket(len(prompts))
        # known before its first step can run, so that no event of it is taken for a
        # cancelled request's
        self.tickets.add(ticket)
        try:
            # the batch belongs to the model's thread: it is changed there, between steps
            await self.state.call(self.model, self.batch.add, ticket, prompts, params)
        except BaseException:
            self.tickets.discard(ticket)
            raise
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run())
        return ticket

    def cancel(self, ticket: _Ticket) -> None:
        if ticket not in self.tickets:
            return
        self.tickets.discard(ticket)
        with contextlib.suppress(RuntimeError):  # the executor is shut down: nothing runs
            self.model.executor.submit(self.batch.cancel, ticket)

    async def _run(self) -> None:
        while self.tickets:
            try:
                events = await self.state.call(self.model, self.batch.step)
            except BaseException as exc:
                self._fail(exc)
                if not isinstance(exc, Exception):
                    raise
                return
            by_ticket: dict[_Ticket, list[GenerationEvent]] = {}
            for owner, event in events:
                assert isinstance(owner, _Ticket)
                by_ticket.setdefault(owner, []).append(event)
            for ticket, step in by_ticket.items():
                if ticket not in self.tickets:  # cancelled while this step ran
                    continue
                ticket.queue.put_nowait(step)
                ticket.unfinished -= sum(e.finish_reason is not None for e in step)
                if not ticket.unfinished:
                    ticket.queue.put_nowait(None)
                    self.tickets.discard(ticket)

    def _fail(self, exc: BaseException) -> None:
        """A step failed: every request in the batch gets the error, and the batch is
        emptied (its cache may be half written)."""
        for ticket in self.tickets:
            ticket.queue.put_nowait(exc)
        self.tickets.clear()
        with contextlib.suppress(RuntimeError):
            self.model.executor.submit(self.batch.clear)


#: the decode loops of each server's generator models
_LOOPS: weakref.WeakKeyDictionary[ServerState, dict[str, _DecodeLoop]]
_LOOPS = weakref.WeakKeyDictionary()


def _decode_loop(state: ServerState, model: ServedModel) -> _DecodeLoop:
    loops = _LOOPS.setdefault(state, {})
    found = loops.get(model.name)
    if found is None or found.model is not model:
        found = loops[model.name] = _DecodeLoop(state, model, state.config.max_batch_size)
    return found
