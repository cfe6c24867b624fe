"""``bench providers``: the same chat request sent to several configured API backends side by
side, for choosing one: latency percentiles, throughput and error rate of each.

Fairness: the requests are split into rounds and every round visits each backend in turn,
starting with a different one each round, so that a slow spell of this machine or network
falls on all of them alike. Each backend's figures include its own client's retries, as a
caller would see them."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ProviderRun", "ProviderSpec", "bench_providers", "parse_spec", "percentile"]

#: how many rounds the requests are split into (fewer when there are fewer requests)
ROUNDS = 5


@dataclass(frozen=True)
class ProviderSpec:
    """One ``--backend NAME[:MODEL][=BASE_URL]``."""

    name: str
    model: str | None
    base_url: str | None


def parse_spec(text: str) -> ProviderSpec:
    """``openai``, ``openai=http://127.0.0.1:8000/v1``, ``ollama:llama3:8b=http://host:11434``:
    the URL follows the first ``=``; the model follows the first ``:`` of what precedes it
    (backend names hold no ``:``, model names may). Raises InvalidArgumentError naming the
    spec when the backend name is empty or unknown."""
    from ipfs_accelerate.api_backends import get_available_backends
    from ipfs_accelerate.errors import InvalidArgumentError

    head, has_url, url = text.partition("=")
    name, has_model, model = head.partition(":")
    name = name.strip()
    if not name:
        raise InvalidArgumentError(f"--backend {text!r}: no backend name (NAME[:MODEL][=URL])")
    available = get_available_backends()
    if name not in available:
        raise InvalidArgumentError(
            f"--backend {text!r}: unknown backend {name!r}; available: {', '.join(available)}"
        )
    if has_model and not model.strip():
        raise InvalidArgumentError(f"--backend {text!r}: empty model after ':'")
    if has_url and not url.strip():
        raise InvalidArgumentError(f"--backend {text!r}: empty URL after '='")
    return ProviderSpec(name, model.strip() or None, url.strip() or None)


def percentile(sorted_values: list[float], fraction: float) -> float | None:
    """The nearest-rank percentile of already sorted values (None when there are none)."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(fraction * len(sorted_values)))
    return sorted_values[rank - 1]


@dataclass
class ProviderRun:
    label: str
    backend: str
    model: str
    base_url: str
    latencies: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    wall: float = 0.0

    @property
    def requests(self) -> int:
        return len(self.latencies) + sum(self.errors.values())

    def summary(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        requests = self.requests
        return {
            "label": self.label,
            "backend": self.backend,
            "model": self.model,
            "base_url": self.base_url,
            "requests": requests,
            "ok": len(ordered),
            "errors": dict(self.errors),
            "error_rate": (requests - len(ordered)) / requests if requests else 0.0,
            "p50_ms": _ms(percentile(ordered, 0.50)),
            "p95_ms": _ms(percentile(ordered, 0.95)),
            "p99_ms": _ms(percentile(ordered, 0.99)),
            "throughput_rps": len(ordered) / self.wall if self.wall > 0 else 0.0,
            "wall_s": self.wall,
        }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e3


async def _one(
    client: Any, model: str, messages: Any, options: dict[str, Any], run: ProviderRun
) -> None:
    from ipfs_accelerate.errors import APIError

    start = time.perf_counter()
    try:
        await client.chat(model, messages, **options)
    except APIError as exc:
        # the type names the failure class; messages may quote the server and stay out
        run.errors[type(exc).__name__] += 1
    except Exception as exc:  # a client bug still counts against that client, by its type
        run.errors[f"untyped {type(exc).__name__}"] += 1
    else:
        run.latencies.append(time.perf_counter() - start)


async def _burst(
    client: Any,
    model: str,
    messages: Any,
    options: dict[str, Any],
    count: int,
    concurrency: int,
    run: ProviderRun,
) -> None:
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            await _one(client, model, messages, options, run)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(min(concurrency, count))))
    run.wall += time.perf_counter() - start


def _labels(specs: list[ProviderSpec]) -> list[str]:
    names = Counter(spec.name for spec in specs)
    seen: Counter[str] = Counter()
    labels = []
    for spec in specs:
        seen[spec.name] += 1
        labels.append(spec.name if names[spec.name] == 1 else f"{spec.name} #{seen[spec.name]}")
    return labels


async def _bench(
    specs: list[ProviderSpec],
    *,
    model: str | None,
    prompt: str,
    max_tokens: int,
    requests: int,
    concurrency: int,
) -> list[ProviderRun]:
    from ipfs_accelerate.api_backends import create_api_backend
    from ipfs_accelerate.resilience._config import redact_url

    clients: list[Any] = []
    runs: list[ProviderRun] = []
    try:
        for spec, label in zip(specs, _labels(specs), strict=True):
            metadata = {"base_url": spec.base_url} if spec.base_url else None
            client = create_api_backend(spec.name, metadata=metadata)
            clients.append(client)
            chosen = spec.model or model or client.get_default_model()
            runs.append(ProviderRun(label, spec.name, chosen, redact_url(client.base_url)))
        messages = [{"role": "user", "content": prompt}]
        # each backend keeps its own timeouts and retries: they are part of what it offers
        options = {"max_tokens": max_tokens}
        rounds = min(ROUNDS, requests)
        for index in range(rounds):
            share = requests // rounds + (1 if index < requests % rounds else 0)
            order = list(range(len(runs)))
            order = order[index % len(order) :] + order[: index % len(order)]
            for which in order:
                await _burst(
                    clients[which], runs[which].model, messages, options, share, concurrency,
                    runs[which],
                )  # fmt: skip
    finally:
        for client in clients:
            await client.aclose()
    return runs


def bench_providers(
    specs: list[ProviderSpec],
    *,
    model: str | None = None,
    prompt: str = "Say hello.",
    max_tokens: int = 16,
    requests: int = 50,
    concurrency: int = 4,
) -> list[dict[str, Any]]:
    """Send ``requests`` chat requests to each backend of ``specs`` (``concurrency`` at a
    time), interleaved in rounds, and return each one's :meth:`ProviderRun.summary` with
    ``throughput_vs_best`` (its throughput over the best one's) added."""
    from ipfs_accelerate.errors import InvalidArgumentError

    if not specs:
        raise InvalidArgumentError("bench providers: give at least one --backend NAME[=URL]")
    for what, value in (("requests", requests), ("concurrency", concurrency)):
        if value < 1:
            raise InvalidArgumentError(f"bench providers: --{what} must be >= 1, got {value}")
    runs = asyncio.run(
        _bench(
            specs,
            model=model,
            prompt=prompt,
            max_tokens=max_tokens,
            requests=requests,
            concurrency=concurrency,
        )
    )
    summaries = [run.summary() for run in runs]
    best = max(s["throughput_rps"] for s in summaries)
    for summary in summaries:
        summary["throughput_vs_best"] = summary["throughput_rps"] / best if best > 0 else None
    return summaries
