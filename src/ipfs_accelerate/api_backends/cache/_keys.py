"""The canonical form of a request: its key, its namespace, whether it may be cached."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ipfs_accelerate.errors import ConfigurationError

if TYPE_CHECKING:  # pragma: no cover
    from ._cache import ResponseCache

__all__ = ["Plan", "is_deterministic", "make_plan", "namespace_of", "op_of"]

#: options that shape how a call is sent, not what it answers
_TRANSPORT_OPTIONS = frozenset(
    {"priority", "timeout", "connect_timeout", "max_retries", "deadline", "extra_headers"}
)
_NOT_IN_KEY = _TRANSPORT_OPTIONS | {"stream", "stream_options", "request_id", "idempotency_key"}
_NS_DIGEST = 16  # hex characters of the namespace digest that prefix every key


@dataclass(slots=True)
class Plan:
    """What one call will do with the cache, worked out before it is sent."""

    cache: ResponseCache
    mode: str
    op: str
    namespace: str
    key: str
    provider: str | None = None
    group: str | None = None  # semantic group (None: no semantic lookup for this call)
    prompt: str | None = None
    vector: Any = None


def namespace_of(source: Any) -> str:
    describe = getattr(source, "_cache_namespace", None)
    label = describe() if describe is not None else f"{type(source).__name__}"
    return hashlib.sha256(label.encode()).hexdigest()[:_NS_DIGEST]


def op_of(op: str) -> str:
    if op == "stream_chat":
        return "chat"
    if op not in ("chat", "complete", "embed"):
        raise ConfigurationError(
            f"cache: op must be chat, stream_chat, complete or embed, got {op!r}"
        )
    return op


class _Unkeyable(TypeError):
    pass


def _reject(value: Any) -> Any:
    # a set has no canonical order and an object no canonical form: such a request is not
    # cached rather than keyed on a repr that may differ between equal requests
    raise _Unkeyable(type(value).__name__)


_KEY_ENCODER = json.JSONEncoder(
    sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_reject
)


def _sampling_setting(options: Mapping[str, Any], name: str) -> Any:
    if options.get(name) is not None:
        return options[name]
    for nested in ("options", "generation_config", "generationConfig", "extra_body"):
        inner = options.get(nested)
        if isinstance(inner, Mapping) and inner.get(name) is not None:
            return inner[name]
    return None


def is_deterministic(options: Mapping[str, Any]) -> bool:
    """Whether a chat/completion request asks for one reproducible answer: ``temperature=0``
    or a ``seed`` (no temperature means the provider's default, which samples)."""
    if _sampling_setting(options, "seed") is not None:
        return True
    temperature = _sampling_setting(options, "temperature")
    return (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and (temperature == 0)
    )


def _canonical_messages(messages: Any) -> Any:
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return messages


def _last_prompt(messages: Any) -> tuple[Any, str] | None:
    """(earlier messages, the last user message's text) for semantic matching."""
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, Mapping) or last.get("role", "user") != "user":
        return None
    content = last.get("content")
    if isinstance(content, list):
        if not all(isinstance(p, Mapping) and p.get("type", "text") == "text" for p in content):
            return None  # images and audio are not compared by text
        content = "".join(str(p.get("text", "")) for p in content)
    if not isinstance(content, str) or not content.strip():
        return None
    return messages[:-1], content


def make_plan(
    source: Any,
    op: str,
    cache: ResponseCache,
    mode: str,
    nondeterministic: bool,
    model: str | None,
    payload: Any,
    options: Mapping[str, Any],
) -> Plan | None:
    """The key and semantic group of a call, or None when it cannot or must not be cached."""
    if model is None:
        default = getattr(
            source, "get_default_embedding_model" if op == "embed" else "get_default_model", None
        )
        if default is not None:
            try:
                model = default()
            except Exception:  # no default model: the call itself will say so
                return None
    if op != "embed" and not (nondeterministic or is_deterministic(options)):
        cache.skipped["nondeterministic"] += 1
        return None
    params = {k: v for k, v in options.items() if k not in _NOT_IN_KEY}
    if op == "embed":
        body: Any = [payload] if isinstance(payload, str) else payload
    elif op == "chat":
        body = _canonical_messages(payload)
    else:
        body = payload
    namespace = namespace_of(source)
    try:
        canonical = _KEY_ENCODER.encode({"op": op, "model": model, "in": body, "params": params})
    except (TypeError, ValueError) as exc:
        cache.skipped["unkeyable"] += 1
        cache.warn_once(
            "unkeyable", "response cache: a %s request has a value the cache cannot key (%s); "
            "not cached", op, exc if isinstance(exc, _Unkeyable) else type(exc).__name__,
        )  # fmt: skip
        return None
    key = namespace + ":" + hashlib.sha256(canonical.encode()).hexdigest()
    plan = Plan(cache, mode, op, namespace, key, getattr(source, "provider", None))
    if cache.semantic is not None and op in ("chat", "complete"):
        split = _last_prompt(body) if op == "chat" else (
            (None, body) if isinstance(body, str) and body.strip() else None
        )  # fmt: skip
        if split is not None:
            group_canonical = _KEY_ENCODER.encode(
                {"op": op, "model": model, "before": split[0], "params": params}
            )
            plan.group = hashlib.sha256(group_canonical.encode()).hexdigest()
            plan.prompt = split[1]
    return plan
