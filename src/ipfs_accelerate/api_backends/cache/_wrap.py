"""The cache in front of chat, stream_chat, complete and embed (a decorator) and the replay of
a cached answer as a stream."""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, Literal, TypeVar, cast

from ipfs_accelerate.errors import ConfigurationError

from .._types import ChatChunk, ChatResponse, Usage
from ._cache import ResponseCache, default_cache
from ._keys import Plan, make_plan

__all__ = ["cached_operation", "replay"]

logger = logging.getLogger("ipfs_accelerate.api_backends.cache")

CacheMode = Literal["use", "refresh", "bypass"]
_MODES: frozenset[str] = frozenset({"use", "refresh", "bypass"})

#: the object whose cache layer is serving the current call: an override that calls
#: ``super().chat`` reaches a second wrapper of the same object, which must pass through
_serving: contextvars.ContextVar[Any] = contextvars.ContextVar("ipfs_accelerate_cache_serving",
                                                               default=None)  # fmt: skip

_PAYLOAD = {"chat": "messages", "stream_chat": "messages", "complete": "prompt", "embed": "inputs"}

F = TypeVar("F", bound=Callable[..., Any])


def _resolve(source: Any, options: dict[str, Any]) -> tuple[ResponseCache, str, bool] | None:
    """Pop the cache options of a call; (cache, mode, nondeterministic) or None for none."""
    requested = options.pop("cache", None)
    nondet = options.pop("cache_nondeterministic", None)
    configured: ResponseCache | None = getattr(source, "response_cache", None)
    if requested is None and configured is None:
        return None
    if _serving.get() is source:
        return None
    if nondet is not None and not isinstance(nondet, bool):
        raise ConfigurationError(f"cache_nondeterministic must be a bool, got {nondet!r}")
    if isinstance(requested, ResponseCache):
        cache, mode = requested, "use"
    elif requested is None or requested is True:
        cache, mode = configured or default_cache(), "use"
    elif requested is False or requested == "bypass":
        return None
    elif isinstance(requested, str) and requested in _MODES:
        cache, mode = configured or default_cache(), requested
    else:
        raise ConfigurationError(
            f"cache must be 'use', 'refresh', 'bypass' or a ResponseCache, got {requested!r}"
        )
    return cache, mode, cache.cache_nondeterministic if nondet is None else nondet


def _split_args(op: str, args: tuple[Any, ...], options: dict[str, Any]) -> tuple[Any, Any]:
    model = args[0] if args else options.pop("model", None)
    payload = args[1] if len(args) > 1 else options.pop(_PAYLOAD[op], None)
    return model, payload


def cached_operation(op: str) -> Callable[[F], F]:
    """Put the response cache in front of ``chat``, ``stream_chat``, ``complete`` or ``embed``."""

    def wrap(fn: F) -> F:
        if getattr(fn, "__response_cache__", False):
            return fn
        if op == "stream_chat":
            wrapper: Any = _stream_wrapper(fn)
        else:
            wrapper = _call_wrapper(fn, op)
        wrapper.__response_cache__ = True
        return cast(F, wrapper)

    return wrap


def _call_wrapper(fn: Callable[..., Any], op: str) -> Callable[..., Any]:
    @functools.wraps(fn)
    async def call(self: Any, *args: Any, **options: Any) -> Any:
        resolved = _resolve(self, options)
        if resolved is None:
            return await fn(self, *args, **options)
        cache, mode, nondet = resolved
        model, payload = _split_args(op, args, options)
        plan = make_plan(self, op, cache, mode, nondet, model, payload, options)
        if plan is not None and mode == "use":
            found = await cache.lookup(plan)
            if found is not None:
                return found if op == "embed" else found[0]
        token = _serving.set(self)
        try:
            result = await fn(self, model, payload, **options)
        finally:
            _serving.reset(token)
        if plan is not None:
            await cache.save(plan, result)
        return result

    return call


def _stream_wrapper(fn: Callable[..., AsyncIterator[ChatChunk]]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def stream_chat(self: Any, *args: Any, **options: Any) -> AsyncIterator[ChatChunk]:
        resolved = _resolve(self, options)
        if resolved is None:
            return fn(self, *args, **options)
        cache, mode, nondet = resolved
        model, payload = _split_args("stream_chat", args, options)
        plan = make_plan(self, "chat", cache, mode, nondet, model, payload, options)
        token = _serving.set(self)
        try:  # built now so that bad arguments raise here, as without a cache; sends nothing yet
            live = fn(self, model, payload, **options)
        finally:
            _serving.reset(token)
        if plan is None:
            return live
        return _cached_stream(plan, live)

    return stream_chat


async def _cached_stream(plan: Plan, live: AsyncIterator[ChatChunk]) -> AsyncIterator[ChatChunk]:
    cache = plan.cache
    if plan.mode == "use":
        try:
            found = await cache.lookup(plan)
        except BaseException:
            await _aclose(live)
            raise
        if found is not None:
            await _aclose(live)
            for chunk in replay(*found):
                yield chunk
            return
    texts: list[str] = []
    last: ChatChunk | None = None
    try:
        async for chunk in live:
            if chunk.done:
                last = chunk
            texts.append(chunk.text)
            yield chunk
    except GeneratorExit:
        # closed by the consumer: a complete answer (its last chunk seen) is still worth keeping
        await _aclose(live)
        if last is not None:
            await _save_stream(plan, texts, last)
        raise
    except BaseException:
        await _aclose(live)
        raise
    if last is not None:
        await _save_stream(plan, texts, last)


async def _save_stream(plan: Plan, texts: list[str], last: ChatChunk) -> None:
    answer = ChatResponse(
        text="".join(texts),
        model=last.model,
        finish_reason=last.finish_reason,
        usage=last.usage or Usage(),
        tool_calls=list(last.tool_calls),
        provider=plan.provider,
    )
    await plan.cache.save(plan, answer, texts)


def replay(answer: ChatResponse, chunks: Sequence[str] | None) -> list[ChatChunk]:
    """The chunks a cached answer streams as: the stored chunks' text when it was streamed
    (else the whole text in one chunk), the last one ``done`` with finish reason, usage and
    tool calls."""
    texts = list(chunks) if chunks else [answer.text, ""]
    out = [ChatChunk(text=t, model=answer.model, cache=answer.cache) for t in texts[:-1]]
    done = ChatChunk(
        text=texts[-1], done=True, finish_reason=answer.finish_reason, usage=answer.usage,
        tool_calls=list(answer.tool_calls), model=answer.model, cache=answer.cache,
    )  # fmt: skip
    out.append(done)
    return out


async def _aclose(iterator: Any) -> None:
    close = getattr(iterator, "aclose", None)
    if close is not None:
        try:
            await close()
        except Exception:  # closing an unstarted or broken stream must not mask the real outcome
            logger.debug("response cache: closing a stream failed", exc_info=True)
