"""Managed inference servers: where they run and how they are kept alive.

* :class:`ServerSpec`: what to run (an image and its arguments, or a command) and how to reach
  it; the spec builders :func:`vllm_server_spec`, :func:`tgi_server_spec`,
  :func:`tei_server_spec` and :func:`ovms_server_spec` produce those of the official servers
  (in :mod:`ipfs_accelerate.servers.specs`, one module of data each).
* Runtimes (:class:`ContainerRuntime`): :class:`DockerRuntime` runs the official images through
  the ``docker`` SDK (imported on first use); :class:`LocalProcessRuntime` runs the same kind
  of server as a subprocess in its own process group.
* :class:`ManagedServer`: the lifecycle (start, wait until ready, monitor, restart with
  bounded backoff, stop), in the states of :class:`ServerState`.

The Unified API backends (``vllm_unified``...) run a managed server as one of their
endpoints; these names are also importable from :mod:`ipfs_accelerate.api_backends`.
See docs/router.md, "Managed servers".
"""

from ._docker import DockerRuntime
from ._managed import ManagedServer, ServerEvent, ServerState, probe_http
from ._process import LocalProcessRuntime
from ._runtime import ContainerRuntime, ServerHandle
from ._spec import ServerSpec, free_port
from .specs import ovms_server_spec, tei_server_spec, tgi_server_spec, vllm_server_spec

__all__ = [
    "ContainerRuntime",
    "DockerRuntime",
    "LocalProcessRuntime",
    "ManagedServer",
    "ServerEvent",
    "ServerHandle",
    "ServerSpec",
    "ServerState",
    "free_port",
    "ovms_server_spec",
    "probe_http",
    "tei_server_spec",
    "tgi_server_spec",
    "vllm_server_spec",
]
