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

from typing import TYPE_CHECKING

from ipfs_accelerate._lazy import lazy_exports

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

__all__, __getattr__, __dir__ = lazy_exports(__name__, _LAZY, submodules=["ray_serve"])

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from ._app import create_app as create_app
    from ._batching import EmbeddingBatcher as EmbeddingBatcher
    from ._config import DEFAULT_EMBEDDING_MODEL as DEFAULT_EMBEDDING_MODEL
    from ._config import KINDS as KINDS
    from ._config import ModelSpec as ModelSpec
    from ._config import ServerConfig as ServerConfig
    from ._errors import ServeError as ServeError
    from ._models import ModelRegistry as ModelRegistry
    from ._models import ServedModel as ServedModel
    from ._server import BackgroundServer as BackgroundServer
    from ._server import run_server as run_server
    from ._state import ServerState as ServerState
