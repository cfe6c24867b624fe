"""``serve``: the local models over HTTP (uvicorn), or as a Ray Serve deployment."""

from __future__ import annotations

import os
import time
from typing import Annotated, Any

import typer

from ._app import app
from ._output import DeviceOption, DtypeOption, command, loading, stderr


@app.command()
@command
def serve(
    model: Annotated[
        list[str] | None,
        typer.Option(
            "--model",
            "-m",
            metavar="[NAME=]SOURCE",
            help="A checkpoint to serve, as NAME (the id clients send) = SOURCE; repeat for "
            "several (default: the bundled all-MiniLM-L6-v2).",
            show_default=False,
        ),
    ] = None,
    device: DeviceOption = "auto",
    # -- model precision (issue 16) --
    dtype: DtypeOption = "float32",
    # -- end model precision --
    host: Annotated[str, typer.Option("--host", help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option("--port", "-p", min=0, max=65535, help="Port to listen on.")
    ] = 8000,
    max_batch_size: Annotated[
        int,
        typer.Option(
            "--max-batch-size",
            min=1,
            help="Embedding inputs per forward pass; sequences decoding together per generator.",
        ),
    ] = 32,
    max_wait_ms: Annotated[
        float,
        typer.Option(
            "--max-wait-ms", min=0.0, help="Longest an input waits for its batch to fill."
        ),
    ] = 5.0,
    max_body_mb: Annotated[
        float, typer.Option("--max-body-mb", min=0.001, help="Largest request body, in MiB.")
    ] = 32.0,
    max_client_batch_size: Annotated[
        int, typer.Option("--max-client-batch-size", min=1, help="Inputs per request.")
    ] = 2048,
    max_concurrent_requests: Annotated[
        int,
        typer.Option(
            "--max-concurrent-requests",
            min=1,
            help="Requests in progress per model before 429/503.",
        ),
    ] = 1024,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="IPFS_ACCELERATE_API_KEY",
            show_envvar=True,
            help="Require 'Authorization: Bearer KEY' (prefer the environment variable: "
            "a command line is visible to other users).",
        ),
    ] = None,
    auto_truncate: Annotated[
        bool,
        typer.Option(
            "--auto-truncate", help="Truncate long TEI inputs unless the request says otherwise."
        ),
    ] = False,
    ray: Annotated[
        bool,
        typer.Option(
            "--ray", help="Run as a Ray Serve deployment with replicas across a Ray cluster."
        ),
    ] = False,
    replicas: Annotated[
        int, typer.Option("--replicas", min=1, help="Ray Serve replicas (with --ray).")
    ] = 2,
    num_cpus: Annotated[
        float,
        typer.Option("--num-cpus", min=0.0, help="CPUs each Ray replica reserves (with --ray)."),
    ] = 1.0,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address", help="An existing Ray cluster (e.g. auto); default: start a local one."
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level", help="uvicorn's log level.")] = "info",
    # -- first five minutes (issue 15): browser clients
    cors_allow_origin: Annotated[
        list[str] | None,
        typer.Option(
            "--cors-allow-origin",
            metavar="ORIGIN",
            help="Let browser pages from ORIGIN call the server (CORS); repeat for several, "
            "* for any (default: none).",
            show_default=False,
        ),
    ] = None,
    # -- end first five minutes
    # --- input limits (issue 15): what one request may make the server allocate
    max_audio_seconds: Annotated[
        float,
        typer.Option("--max-audio-seconds", min=0.001, help="Longest audio upload, in seconds."),
    ] = 1800.0,
    min_sampling_rate: Annotated[
        int, typer.Option("--min-sampling-rate", min=1, help="Lowest audio sampling rate, Hz.")
    ] = 1,
    max_sampling_rate: Annotated[
        int,
        typer.Option(
            "--max-sampling-rate", min=1, max=384000, help="Highest audio sampling rate, Hz."
        ),
    ] = 384000,
    max_image_pixels: Annotated[
        int, typer.Option("--max-image-pixels", min=1, help="Most pixels of one image.")
    ] = 1 << 25,
    max_tensor_elements: Annotated[
        int,
        typer.Option(
            "--max-tensor-elements", min=1, help="Most elements of one KServe input tensor."
        ),
    ] = 1 << 24,
    max_json_depth: Annotated[
        int,
        typer.Option(
            "--max-json-depth", min=1, max=512, help="Deepest nesting of a JSON request body."
        ),
    ] = 64,
    # --- end of input limits
    # -- connection hygiene and graceful shutdown (issue 15: connections) --
    header_timeout: Annotated[
        float,
        typer.Option(
            "--header-timeout",
            min=0.001,
            help="Seconds a client has to send its request headers (408 and closed beyond).",
        ),
    ] = 10.0,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout",
            min=0.001,
            help="Seconds a client has to send its request body "
            "after the headers (408 and closed beyond).",
        ),
    ] = 60.0,
    keep_alive_timeout: Annotated[
        float,
        typer.Option(
            "--keep-alive-timeout",
            min=0.001,
            help="Seconds an idle keep-alive connection stays open.",
        ),
    ] = 5.0,
    max_connections: Annotated[
        int,
        typer.Option("--max-connections", min=1, help="Open connections (503 and closed beyond)."),
    ] = 512,
    graceful_timeout: Annotated[
        float,
        typer.Option(
            "--graceful-timeout",
            min=0.001,
            help="Seconds requests in progress get to finish "
            "at Ctrl-C/SIGTERM before their connections are closed.",
        ),
    ] = 10.0,
    # -- end connection hygiene --
) -> None:
    """Serve local models with the OpenAI, TEI and KServe v2 APIs' shapes (see docs/server.md)."""
    from ipfs_accelerate.serve import ModelSpec, ServerConfig

    specs = tuple(ModelSpec.parse(m) for m in model) if model else None
    fields: dict[str, Any] = {
        "device": device,
        "max_batch_size": max_batch_size,
        "max_wait_ms": max_wait_ms,
        "max_body_bytes": max(1, int(max_body_mb * 1024 * 1024)),
        "max_client_batch_size": max_client_batch_size,
        "max_concurrent_requests": max_concurrent_requests,
        "auto_truncate": auto_truncate,
        "cors_allow_origins": tuple(cors_allow_origin or ()),
        # input limits (issue 15)
        "max_audio_seconds": max_audio_seconds,
        "min_sampling_rate": min_sampling_rate,
        "max_sampling_rate": max_sampling_rate,
        "max_image_pixels": max_image_pixels,
        "max_tensor_elements": max_tensor_elements,
        "max_json_depth": max_json_depth,
        # connection hygiene (issue 15: connections)
        "header_timeout_s": header_timeout,
        "body_timeout_s": body_timeout,
        "keep_alive_timeout_s": keep_alive_timeout,
        "max_connections": max_connections,
        "graceful_timeout_s": graceful_timeout,
        # model precision (issue 16)
        "dtype": dtype,
    }
    if specs:
        fields["models"] = specs
    if ray:
        if api_key:  # replicas read it from the environment a local cluster inherits
            os.environ["IPFS_ACCELERATE_API_KEY"] = api_key
            fields["api_key_env"] = "IPFS_ACCELERATE_API_KEY"
        _serve_ray(ServerConfig(**fields), host, port, replicas, num_cpus, ray_address)
        return
    if api_key:
        fields["api_key"] = api_key
    config = ServerConfig(**fields)
    _serve_local(config, host, port, log_level)


def _serve_local(config: Any, host: str, port: int, log_level: str) -> None:
    from ipfs_accelerate.serve import create_app, run_server

    with loading("loading models") as report:
        app_ = create_app(
            config, progress=lambda name, stage, done, total: report(stage, done, total)
        )
    _print_served(app_, f"http://{host}:{port}")
    run_server(app_, host, port, log_level=log_level)


def _print_served(app_: Any, url: str) -> None:
    """The model ids clients send and the routes serving them, one unwrapped line each (ids
    are copied from here: a table would cut them at the terminal's width)."""
    from rich.markup import escape

    from ipfs_accelerate.serve._index import served_routes

    state = app_.state.server
    stderr.print(f"[bold]Serving on {url}[/] (index: {url}/, OpenAPI: {url}/openapi.json)")
    stderr.print("models (the id to send, its kind and device):")
    for served in state.registry:
        stderr.print(
            f"  [bold]{escape(served.name)}[/]  {served.kind} on {served.device} "
            f"in {served.dtype}: "
            f"{escape(served.pipeline.device_reason)}",
            soft_wrap=True,
        )
    stderr.print("routes:")
    kinds = [served.kind for served in state.registry]
    for route, doc in served_routes(app_.routes, kinds):
        # a WebSocket route has no HTTP methods
        methods = ",".join(sorted(m for m in getattr(route, "methods", None) or ("WS",)))
        methods = ",".join(m for m in methods.split(",") if m != "HEAD")
        stderr.print(
            f"  {methods:<4} {escape(route.path_format):<32} {doc.api}: {doc.summary}",
            soft_wrap=True,
        )
    if state.api_key is not None:
        stderr.print(
            "API key required (Authorization: Bearer KEY), except on the health probes, "
            "/metrics and /openapi.json"
        )


def _serve_ray(
    config: Any, host: str, port: int, replicas: int, num_cpus: float, address: str | None
) -> None:
    import ray as ray_module
    from ray import serve as ray_serve

    from ipfs_accelerate.serve.ray_serve import build_app

    started_here = not ray_module.is_initialized()
    if started_here:
        ray_module.init(address=address, include_dashboard=False)
    try:
        ray_serve.start(http_options={"host": host, "port": port})
        with stderr.status(f"starting {replicas} replica(s)"):
            ray_serve.run(
                build_app(config, num_replicas=replicas, num_cpus=num_cpus),
                name="ipfs-accelerate",
                route_prefix="/",
            )
        stderr.print(f"Ray Serve: {replicas} replica(s) on http://{host}:{port} (Ctrl-C stops)")
        while True:
            time.sleep(1.0)
    finally:
        try:
            ray_serve.delete("ipfs-accelerate")
        finally:
            if started_here:
                ray_module.shutdown()
