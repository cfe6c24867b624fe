"""OpenVINO Model Server serving one model: the ``openvino/model_server`` image, or ``ovms``."""

from __future__ import annotations

from ._builder import Option, ServerKind, Values, arg, flag

__all__ = ["OVMS", "ovms_server_spec"]

_ARGS = ("--model_name", "{model_name}", "--model_path", "{served_path}", "--rest_port", "{port}")


def _served_path(values: Values, docker: bool) -> None:
    # in a container the host directory is mounted under container_models_dir
    models_dir = values["container_models_dir"].rstrip("/")
    name, target = values["model_name"], values["target_device"]
    values["served_path"] = f"{models_dir}/{name}" if docker else values["model_path"]
    # Intel GPUs are device nodes, not NVIDIA device requests
    values["devices"] = ("/dev/dri",) if target and target.upper().startswith("GPU") else ()


OVMS = ServerKind(
    name="ovms",
    image="openvino/model_server:latest",
    port=8000,
    port_option="rest_port",
    required=(arg("model_name"), arg("model_path", mount="{served_path}:ro")),
    health_path="/v2/health/ready",
    docker_command=(*_ARGS, "--rest_bind_address", "{bind}"),
    process_command=("ovms", *_ARGS, "--rest_bind_address", "{bind}"),
    options=(
        flag("--target_device", "str"),
        Option("container_models_dir", "str", "/models"),
    ),
    prepare=_served_path,
)

ovms_server_spec = OVMS.builder(
    __name__,
    """OpenVINO Model Server serving one model (``--model_name --model_path --rest_port``).

    With Docker, the host directory ``model_path`` is mounted read-only at
    ``{container_models_dir}/{model_name}``; ``target_device="GPU"`` passes ``/dev/dri``
    through (Intel GPUs are device nodes, not NVIDIA device requests).""",
)
