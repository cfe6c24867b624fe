"""Running the app: in the foreground (:func:`run_server`, what ``ipfs-accelerate serve``
does) or on a background thread (:class:`BackgroundServer`, for tests, notebooks and the
docs' examples), both with uvicorn."""

from __future__ import annotations

import threading
import time
from typing import Any

from ipfs_accelerate.errors import ServerStartError

__all__ = ["BackgroundServer", "run_server"]


def run_server(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
    **uvicorn_options: Any,
) -> None:
    """Serve ``app`` with uvicorn until interrupted (Ctrl-C, SIGTERM)."""
    import uvicorn

    uvicorn.run(app, host=host, port=port, log_level=log_level, **uvicorn_options)


class BackgroundServer:
    """``app`` served by uvicorn on a daemon thread; ``port=0`` takes a free port.

    >>> with BackgroundServer(create_app()) as server:   # doctest: +SKIP
    ...     print(server.url)                           # http://127.0.0.1:PORT

    Leaving the block (or :meth:`stop`) shuts the server down gracefully, which runs the
    app's shutdown (batchers stop, models the app loaded are released).
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        log_level: str = "warning",
        **uvicorn_options: Any,
    ) -> None:
        import uvicorn

        self.app = app
        self.host = host
        config = uvicorn.Config(
            app, host=host, port=port, log_level=log_level, lifespan="on", **uvicorn_options
        )
        self._server = uvicorn.Server(config)
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

    def stop(self, timeout: float = 30.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> BackgroundServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
