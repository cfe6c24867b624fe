"""vLLM's OpenAI-compatible server: the ``vllm/vllm-openai`` image, or ``vllm serve``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ._builder import GPUS, Option, ServerKind, Values, arg, flag, mount, secret

__all__ = ["VLLM", "vllm_server_spec"]


def _lora_args(values: Mapping[str, Any]) -> list[str]:
    modules: Mapping[str, str] | None = values["lora_modules"]
    wanted = values["enable_lora"] or modules or values["allow_runtime_lora"]
    args = ["--enable-lora"] if wanted else []
    if modules:
        args += ["--lora-modules", *(f"{name}={path}" for name, path in modules.items())]
    return args


def _runtime_lora(values: Values, docker: bool) -> None:
    # load_lora_adapter() on a running server needs this switch in its environment
    if values["allow_runtime_lora"]:
        values["env"] = {**(values["env"] or {}), "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


# fmt: off
# a table: flags that belong together share a row
VLLM = ServerKind(
    name="vllm",
    image="vllm/vllm-openai:latest",
    port=8000,
    required=(arg("model"),),
    docker_command=("--model", "{model}", "--host", "{bind}", "--port", "{port}"),
    process_command=("vllm", "serve", "{model}", "--host", "{bind}", "--port", "{port}"),
    options=(
        flag("--tensor-parallel-size", "int"), flag("--gpu-memory-utilization", "float"),
        flag("--max-model-len", "int"), flag("--quantization", "str"), flag("--dtype", "str"),
        flag("--served-model-name", "str"),
        Option("enable_lora", "bool", False, render=_lora_args),  # with the two below
        Option("lora_modules", "Mapping[str, str] | None"),
        flag("--max-loras", "int"), flag("--max-lora-rank", "int"),
        Option("allow_runtime_lora", "bool", False),
        secret("api_key", "VLLM_API_KEY"), secret("hf_token", "HF_TOKEN"),
        Option("gpus", GPUS, "all"),
        mount("hf_cache", "~/.cache/huggingface", "/root/.cache/huggingface"),
    ),
    container={"ipc_mode": "host"},
    prepare=_runtime_lora,
)
# fmt: on

vllm_server_spec = VLLM.builder(
    __name__,
    """vLLM's OpenAI-compatible server: ``vllm/vllm-openai`` (its entrypoint takes the serve
    arguments) or ``vllm serve`` as a process. The API key goes in ``VLLM_API_KEY`` (not on the
    command line, where ``docker inspect``/``ps`` would show it).""",
)
