"""aiohttp session hygiene shared by the HTTP transport and S3 Kit (aiobotocore runs on aiohttp)."""

from __future__ import annotations

from typing import Any

__all__ = ["drop_session_of_closed_loop"]


def drop_session_of_closed_loop(session: Any) -> None:
    """Release a session whose event loop is closed (``asyncio.run`` called again and again).

    Its pooled sockets can no longer be closed through the loop, so they are closed directly
    (best effort, through the selector transports' socket), then the session and connector
    are marked closed so that nothing is leaked and nothing warns at garbage collection.
    """
    connector = session.connector
    session.detach()
    if connector is None:
        return
    for entries in list(getattr(connector, "_conns", {}).values()):
        for entry in list(entries):
            transport = getattr(entry[0], "transport", None)
            sock = getattr(transport, "_sock", None)
            if sock is not None:
                try:
                    sock.close()
                    transport._sock = None  # type: ignore[union-attr]
                except (AttributeError, OSError):  # pragma: no cover - other transport kinds
                    pass
    connector._close()
