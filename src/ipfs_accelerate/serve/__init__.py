"""Serve the local models over HTTP with the real APIs' shapes.

One ASGI app (Starlette, run by uvicorn) answers as OpenAI (``/v1/embeddings``,
``/v1/audio/transcriptions``, ``/v1/audio/translations``, ``/v1/models``), as Hugging Face
TEI (``/embed``, ``/info``, ``/health``) and as KServe v2 (``/v2/models/{m}/infer``...), with
dynamic batching of concurrent embedding requests, Prometheus ``/metrics``, optional API-key
auth and request size limits. Errors come back in the imitated API's shape.

>>> from ipfs_accelerate.serve import BackgroundServer, ServerConfig, create_app  # doctest: +SKIP
>>> app = create_app(ServerConfig(device="cpu"))            # the bundled all-MiniLM-L6-v2
>>> with BackgroundServer(app) as server:
...     print(server.url)

Scale-out across a Ray cluster: :mod:`ipfs_accelerate.serve.ray_serve`. The command line:
``ipfs-accelerate serve``. Needs the ``serve`` extra (starlette, uvicorn, python-multipart,
prometheus-client); importing this package loads none of them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_LAZY = {
    "create_app": "_app",
    "ServerState": "_state",
    "ServerConfig": "_config",
    "ModelSpec": "_config",
    "DEFAULT_EMBEDDING_MODEL": "_config",
    "KINDS": "_config",
    "ModelRegistry": "_models",
    "ServedModel": "_models",
    "EmbeddingBatcher": "_batching",
    "BackgroundServer": "_server",
    "run_server": "_server",
    "ServeError": "_errors",
}

__all__ = [
    "DEFAULT_EMBEDDING_MODEL",
    "KINDS",
    "BackgroundServer",
    "EmbeddingBatcher",
    "ModelRegistry",
    "ModelSpec",
    "ServeError",
    "ServedModel",
    "ServerConfig",
    "ServerState",
    "create_app",
    "run_server",
]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ipfs_accelerate.serve' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"ipfs_accelerate.serve.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return [*__all__, "ray_serve"]


if TYPE_CHECKING:  # pragma: no cover
    from ._app import create_app
    from ._batching import EmbeddingBatcher
    from ._config import DEFAULT_EMBEDDING_MODEL, KINDS, ModelSpec, ServerConfig
    from ._errors import ServeError
    from ._models import ModelRegistry, ServedModel
    from ._server import BackgroundServer, run_server
    from ._state import ServerState
