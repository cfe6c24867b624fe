"""Running the app: in the foreground (:func:`run_server`, what ``ipfs-accelerate serve``
does) or on a background thread (:class:`BackgroundServer`, for tests, notebooks and the
docs' examples), both with uvicorn and the connection limits of ``_connections``: request
read deadlines, a bound on open connections and a graceful shutdown with a timeout."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from typing import Any

from ipfs_accelerate.errors import ServerStartError

__all__ = ["BackgroundServer", "run_server"]


def _server_for(
    app: Any, config: Any, host: str, port: int, log_level: str, uvicorn_options: dict[str, Any]
) -> Any:
    """A uvicorn server enforcing the connection settings of ``config`` (a ServerConfig;
    default: the one ``app`` was created with, else ServerConfig's defaults)."""
    import uvicorn

    from ._config import ServerConfig
    from ._connections import ConnectionLimits, DrainingServer, protocol_class

    state = getattr(getattr(app, "state", None), "server", None)
    if config is None:
        config = getattr(state, "config", None) or ServerConfig()
    limits = ConnectionLimits.of(config)
    http = protocol_class(limits, uvicorn_options.pop("http", "auto"))
    options = {"timeout_keep_alive": limits.keep_alive_timeout_s, **uvicorn_options}
    uvicorn_config = uvicorn.Config(
        app, host=host, port=port, log_level=log_level, http=http, **options
    )

    def on_drain() -> None:
        if state is not None:  # /health and /v2/health/ready answer 503 from now on
            state.ready = False

    return DrainingServer(uvicorn_config, limits, on_drain)


def run_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    config: Any = None,
    **uvicorn_options: Any,
) -> None:
    """Serve ``app`` with uvicorn until interrupted (Ctrl-C, SIGTERM), then drain: see
    docs/server.md, "Connections and shutdown". ``config`` (a ServerConfig) gives the
    connection settings; default: the app's own."""
    server = _server_for(app, config, host, port, log_level, uvicorn_options)
    _log_like_uvicorn(log_level)
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it drained for
        server.run()


def _log_like_uvicorn(log_level: str) -> None:
    """The server's own lines (a 408, a client that hung up, the drain) in uvicorn's format
    and at its level, when the process has not set up logging for this package itself."""
    package = logging.getLogger("ipfs_accelerate")
    if package.handlers or logging.getLogger().handlers:
        return
    package.handlers = list(logging.getLogger("uvicorn").handlers)
    package.setLevel(log_level.upper())
    package.propagate = False


class BackgroundServer:
    """``app`` served by uvicorn on a daemon thread; ``port=0`` takes a free port.

    >>> with BackgroundServer(create_app()) as server:   # doctest: +SKIP
    ...     print(server.url)                           # http://127.0.0.1:PORT

    Leaving the block (or :meth:`stop`) shuts the server down gracefully, as Ctrl-C does
    :func:`run_server` (requests in progress get ``graceful_timeout_s``), which runs the
    app's shutdown (batchers stop, models the app loaded are released). ``config`` (a
    ServerConfig) gives the connection settings; default: the app's own.
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        config: Any = None,
        **uvicorn_options: Any,
    ) -> None:
        self.app = app
        self.host = host
        uvicorn_options.setdefault("lifespan", "on")
        self._server = _server_for(app, config, host, port, log_level, uvicorn_options)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> BackgroundServer:
        def serve() -> None:
            try:
                self._server.run()
            except BaseException as exc:  # reported by start(); a thread cannot raise to its parent
                self._error = exc

        self._thread = threading.Thread(target=serve, name=f"uvicorn:{self.host}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                reason = (
                    f"{type(self._error).__name__}: {self._error}"
                    if self._error
                    else "it did not start in time"
                )
                raise ServerStartError(
                    f"uvicorn on {self.host}:{self.port} failed to start: {reason}"
                )
            time.sleep(0.01)
        sockets = [s for server in self._server.servers for s in server.sockets]
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self

    def stop(self, timeout: float | None = None) -> None:
        """Shut down and wait for the server's thread (default: the graceful timeout and a
        few seconds for the app's shutdown)."""
        self._server.should_exit = True
        if timeout is None:
            timeout = self._server.limits.graceful_timeout_s + 30.0
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
