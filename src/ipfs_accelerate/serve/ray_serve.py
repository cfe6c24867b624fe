"""The server as a Ray Serve deployment: replicas across a Ray cluster, each loading its
models once and answering with the same app (the ``x-replica-id`` header says which one).

Entry points: :func:`build_app` (for ``serve.run``), :func:`app_builder` (for Ray's
``serve run ipfs_accelerate.serve.ray_serve:app_builder``) and ``ipfs-accelerate serve
--ray``; docs/server.md, "Scale-out with Ray Serve", shows each. An API key never travels in
the deployment's arguments (Ray stores them): use ``ServerConfig(api_key_env="NAME")``.
"""

from __future__ import annotations

import logging
from typing import Any

from ray import serve

from ipfs_accelerate.errors import ConfigurationError

from ._app import create_app
from ._config import ModelSpec, ServerConfig
from ._models import ModelRegistry

__all__ = ["DEPLOYMENT_NAME", "IpfsAccelerateReplica", "app_builder", "build_app"]

logger = logging.getLogger(__name__)

DEPLOYMENT_NAME = "IpfsAccelerateServer"


@serve.ingress()
class IpfsAccelerateReplica:
    """One replica: loads the models in its constructor (once per replica process) and
    builds the ASGI app around them."""

    def __init__(self, config: ServerConfig) -> None:
        context = serve.get_replica_context()
        replica = getattr(context.replica_id, "unique_id", None) or str(context.replica_id)
        self.config = config.replace(replica_id=replica)
        self.registry = ModelRegistry.load(
            config.models,
            config.device,
            shape_buckets=config.shape_buckets,
            local_files_only=config.local_files_only,
            dtype=config.dtype,
        )
        logger.info("replica %s loaded %s", replica, ", ".join(m.name for m in self.registry))

    def __serve_build_asgi_app__(self) -> Any:
        return create_app(self.config, registry=self.registry)

    def check_health(self) -> None:
        """Ray calls this periodically; raising marks the replica unhealthy (it is replaced)."""
        if self.registry.closed:
            raise RuntimeError("the replica's models were released")

    def __del__(self) -> None:
        registry = getattr(self, "registry", None)
        if registry is not None:
            registry.close()


def build_app(
    config: ServerConfig | None = None,
    *,
    num_replicas: int = 2,
    num_cpus: float = 1.0,
    ray_actor_options: dict[str, Any] | None = None,
    name: str = DEPLOYMENT_NAME,
    **deployment_options: Any,
) -> Any:
    """A bound Ray Serve application of ``config`` with ``num_replicas`` replicas, each
    reserving ``num_cpus`` (or ``ray_actor_options``); pass it to ``serve.run``. Other
    keyword arguments go to ``serve.deployment`` (``max_ongoing_requests``,
    ``autoscaling_config``...)."""
    config = config or ServerConfig()
    if config.api_key is not None:
        raise ConfigurationError(
            "build_app: an API key in ServerConfig.api_key would be stored by Ray with the "
            "deployment; "
            "use ServerConfig(api_key_env=NAME) and set that variable on the cluster's nodes"
        )
    if isinstance(num_replicas, bool) or not isinstance(num_replicas, int) or num_replicas < 1:
        raise ConfigurationError(
            f"build_app: num_replicas must be a positive int, got {num_replicas!r}"
        )
    options = dict(ray_actor_options) if ray_actor_options is not None else {"num_cpus": num_cpus}
    deployment: Any = serve.deployment(
        IpfsAccelerateReplica,
        name=name,
        num_replicas=num_replicas,
        ray_actor_options=options,
        **deployment_options,
    )
    return deployment.bind(config)


def app_builder(args: dict[str, Any]) -> Any:
    """For ``serve run ipfs_accelerate.serve.ray_serve:app_builder key=value ...``: ``model``
    (comma-separated ``[NAME=]SOURCE``), ``device``, ``replicas``, ``num_cpus``,
    ``max_batch_size``, ``max_wait_ms``, ``api_key_env``."""
    models = tuple(ModelSpec.parse(m) for m in str(args.get("model", "")).split(",") if m.strip())
    fields: dict[str, Any] = {"device": str(args.get("device", "auto"))}
    if models:
        fields["models"] = models
    for key, cast in (("max_batch_size", int), ("max_wait_ms", float)):
        if key in args:
            fields[key] = cast(args[key])
    if args.get("api_key_env"):
        fields["api_key_env"] = str(args["api_key_env"])
    return build_app(
        ServerConfig(**fields),
        num_replicas=int(args.get("replicas", 2)),
        num_cpus=float(args.get("num_cpus", 1.0)),
    )
