"""Hugging Face Text Embeddings Inference: the CPU image by default, the CUDA image when
``gpus`` is set; or ``text-embeddings-router``."""

from __future__ import annotations

from ._builder import GPUS, HF_LAUNCHER_ARGS, Option, ServerKind, Values, flag, mount, secret

__all__ = ["TEI", "tei_server_spec"]

_IMAGE = "ghcr.io/huggingface/text-embeddings-inference"


def _image_for_device(values: Values, docker: bool) -> None:
    if values["image"] is None:
        values["image"] = f"{_IMAGE}:1.5" if values["gpus"] is not None else f"{_IMAGE}:cpu-1.5"


# fmt: off
# a table: flags that belong together share a row
TEI = ServerKind(
    name="tei",
    image=None,
    port=80,
    docker_command=HF_LAUNCHER_ARGS,
    process_command=("text-embeddings-router", *HF_LAUNCHER_ARGS),
    options=(
        flag("--max-client-batch-size", "int"), flag("--max-batch-tokens", "int"),
        flag("--pooling", "str"),
        secret("hf_token", "HF_TOKEN"),
        Option("gpus", GPUS),
        mount("data_dir", "~/.cache/huggingface/tei", "/data"),
    ),
    prepare=_image_for_device,
)
# fmt: on

tei_server_spec = TEI.builder(
    __name__,
    """Hugging Face Text Embeddings Inference (``--model-id``): the CPU image by default, the
    CUDA image when ``gpus`` is set; ``text-embeddings-router`` as a process.""",
)
