"""Hugging Face Text Generation Inference: the image's launcher, or
``text-generation-launcher``. Weights are cached in ``/data``."""

from __future__ import annotations

from ._builder import GPUS, HF_LAUNCHER_ARGS, Option, ServerKind, flag, mount, secret

__all__ = ["TGI", "tgi_server_spec"]

# fmt: off
# a table: flags that belong together share a row
TGI = ServerKind(
    name="tgi",
    image="ghcr.io/huggingface/text-generation-inference:latest",
    port=80,
    docker_command=HF_LAUNCHER_ARGS,
    process_command=("text-generation-launcher", *HF_LAUNCHER_ARGS),
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
# fmt: on

tgi_server_spec = TGI.builder(
    __name__,
    """Hugging Face Text Generation Inference: the image's launcher (``--model-id``), or
    ``text-generation-launcher`` as a process. Weights are cached in ``/data``.""",
)
