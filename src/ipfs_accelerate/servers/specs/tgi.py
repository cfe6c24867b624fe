"""Hugging Face Text Generation Inference: the image's launcher, or
``text-generation-launcher``. Weights are cached in ``/data``."""

from __future__ import annotations

from ._builder import GPUS, Option, ServerKind, flag, mount, secret

__all__ = ["TGI", "tgi_server_spec"]

TGI = ServerKind(
    name="tgi",
    image="ghcr.io/huggingface/text-generation-inference:latest",
    port=80,
    docker_command=("--model-id", "{model_id}", "--hostname", "0.0.0.0", "--port", "{port}"),
    process_command=(
        "text-generation-launcher",
        *("--model-id", "{model_id}", "--hostname", "127.0.0.1", "--port", "{port}"),
    ),
    options=(
        flag("--num-shard", "int"), flag("--quantize", "str"),
        flag("--max-input-tokens", "int"), flag("--max-total-tokens", "int"),
        flag("--max-concurrent-requests", "int"),
        secret("hf_token", "HF_TOKEN"),
        Option("gpus", GPUS, "all"),
        mount("data_dir", "~/.cache/huggingface/tgi", "/data"),
        Option("shm_size", "str", "1g"),
    ),
)

tgi_server_spec = TGI.builder(
    __name__,
    """Hugging Face Text Generation Inference: the image's launcher (``--model-id``), or
    ``text-generation-launcher`` as a process. Weights are cached in ``/data``.""",
)
