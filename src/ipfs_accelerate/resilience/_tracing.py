"""OpenTelemetry spans: :func:`start_span` returns a span of the ``opentelemetry-api``
tracer ``ipfs_accelerate`` when that package is installed, a no-op object otherwise."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["Span", "start_span"]

_tracer: Any = None
_tracer_checked = False
_tracer_lock = threading.Lock()


def _get_tracer() -> Any:
    global _tracer, _tracer_checked
    if not _tracer_checked:
        with _tracer_lock:
            if not _tracer_checked:
                try:
                    from opentelemetry import trace
                except ImportError:
                    _tracer = None
                else:
                    _tracer = trace
                _tracer_checked = True
    if _tracer is None:
        return None
    # resolved per span: the application may install its provider after our first span
    return _tracer.get_tracer("ipfs_accelerate")


class Span:
    """A started span (or nothing, without opentelemetry-api); end it exactly once."""

    __slots__ = ("_ended", "_span")

    def __init__(self, span: Any) -> None:
        self._span = span
        self._ended = False

    @property
    def recording(self) -> bool:
        return self._span is not None and bool(self._span.is_recording())

    def set(self, key: str, value: Any) -> None:
        if self._span is not None and value is not None:
            self._span.set_attribute(
                key, value if isinstance(value, bool | int | float | str) else str(value)
            )

    def event(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        if self._span is not None:
            self._span.add_event(name, dict(attributes or {}))

    def error(self, exc: BaseException) -> None:
        if self._span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self._span.set_attribute("error.type", type(exc).__name__)
        self._span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {str(exc)[:200]}"))

    def end(self, exc: BaseException | None = None) -> None:
        if self._ended:
            return
        self._ended = True
        if self._span is None:
            return
        if exc is not None and isinstance(exc, Exception):
            self.error(exc)
        self._span.end()

    def __enter__(self) -> Span:
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self.end(exc)


def start_span(name: str, attributes: Mapping[str, Any] | None = None) -> Span:
    """Start a span named ``name`` (child of the current span, if any)."""
    tracer = _get_tracer()
    if tracer is None:
        return Span(None)
    attrs = {
        k: (v if isinstance(v, bool | int | float | str) else str(v))
        for k, v in (attributes or {}).items()
        if v is not None
    }
    return Span(tracer.start_span(name, attributes=attrs))
