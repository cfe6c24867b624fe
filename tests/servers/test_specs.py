"""The spec builders are data fed to one builder: their public signatures, the arguments they
refuse, and the Unified backends' managed-server settings that reach them."""

from __future__ import annotations

import inspect

import pytest

from ipfs_accelerate.api_backends import create_api_backend
from ipfs_accelerate.errors import ConfigurationError
from ipfs_accelerate.servers import (
    ovms_server_spec,
    tei_server_spec,
    tgi_server_spec,
    vllm_server_spec,
)
from ipfs_accelerate.servers.specs import OVMS, TEI, TGI, VLLM


def test_builders_keep_their_signatures() -> None:
    def described(builder: object) -> list[tuple[str, str, object]]:
        params = inspect.signature(builder).parameters.values()  # type: ignore[arg-type]
        return [(p.name, p.kind.name, p.default) for p in params]

    frame = [("runtime", "KEYWORD_ONLY", "docker")]
    vllm = described(vllm_server_spec)
    assert vllm[:2] == [("model", "POSITIONAL_OR_KEYWORD", inspect.Parameter.empty), *frame]
    assert [name for name, _, _ in vllm] == [
        "model", "runtime", "image", "port", "host_port", "network_mode", "tensor_parallel_size",
        "gpu_memory_utilization", "max_model_len", "quantization", "dtype", "served_model_name",
        "enable_lora", "lora_modules", "max_loras", "max_lora_rank", "allow_runtime_lora",
        "api_key", "hf_token", "gpus", "hf_cache", "extra_args", "env",
    ]  # fmt: skip
    assert ("gpus", "KEYWORD_ONLY", None) in described(tei_server_spec)
    assert ("shm_size", "KEYWORD_ONLY", "1g") in described(tgi_server_spec)
    ovms = described(ovms_server_spec)
    assert [name for name, _, _ in ovms[:2]] == ["model_name", "model_path"]
    assert ("rest_port", "KEYWORD_ONLY", 8000) in ovms
    assert inspect.signature(vllm_server_spec).return_annotation == "ServerSpec"
    assert vllm_server_spec.__name__ == "vllm_server_spec" and "VLLM_API_KEY" in (
        vllm_server_spec.__doc__ or ""
    )
    assert [kind.name for kind in (VLLM, TGI, TEI, OVMS)] == ["vllm", "tgi", "tei", "ovms"]


def test_builders_refuse_what_they_do_not_know() -> None:
    with pytest.raises(TypeError, match="tgi_server_spec.*colour"):
        tgi_server_spec("m", colour="red")
    with pytest.raises(TypeError, match="ovms_server_spec.*model_path"):
        ovms_server_spec("resnet")
    with pytest.raises(TypeError, match="vllm_server_spec"):
        vllm_server_spec("m", "extra positional")
    with pytest.raises(ConfigurationError, match="tei_server_spec: runtime must be"):
        tei_server_spec("m", runtime="podman")


def test_unified_managed_server_settings_reach_the_builder() -> None:
    tgi = create_api_backend(
        "hf_tgi_unified",
        metadata={
            "managed_server": {
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "runtime": "process",
                "num_shard": 2,
            }
        },
    )
    assert tgi.managed_server is not None
    assert (
        tgi.managed_server.spec.command
        == tgi_server_spec(
            "HuggingFaceTB/SmolLM2-135M-Instruct", runtime="process", num_shard=2
        ).command
    )
    tei = create_api_backend("hf_tei_unified", metadata={"managed_server": {"model_id": "m/e"}})
    assert tei.managed_server is not None and tei.managed_server.spec.image == TEI_CPU_IMAGE
    ovms = create_api_backend(
        "ovms_unified",
        metadata={
            "managed_server": {
                "model_name": "resnet",
                "model_path": "/srv/resnet",
                "target_device": "GPU",
            }
        },
    )
    assert ovms.managed_server is not None and ovms.managed_server.spec.devices == ("/dev/dri",)
    lora = create_api_backend(
        "vllm_unified",
        metadata={"managed_server": {"model": "m/m", "lora_modules": {"sql": "/a/sql"}}},
    )
    assert lora.managed_server is not None
    assert lora.managed_server.spec.env == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    with pytest.raises(
        ConfigurationError, match="hf_tgi_unified: managed_server needs a 'model_id'"
    ):
        create_api_backend("hf_tgi_unified", metadata={"managed_server": {"num_shard": 2}})
    with pytest.raises(ConfigurationError, match="needs 'model_name' and 'model_path'"):
        create_api_backend("ovms_unified", metadata={"managed_server": {"model_path": "/srv"}})


TEI_CPU_IMAGE = "ghcr.io/huggingface/text-embeddings-inference:cpu-1.5"


def test_host_networking_binds_loopback_and_describe_fills_the_port() -> None:
    from ipfs_accelerate.servers import DockerRuntime, ManagedServer, ServerSpec

    from .test_docker import RecordingDockerClient

    runtime = DockerRuntime(RecordingDockerClient())
    specs = {
        "vllm": lambda **kw: vllm_server_spec("m/m", **kw),
        "tgi": lambda **kw: tgi_server_spec("m/m", **kw),
        "tei": lambda **kw: tei_server_spec("m/e", **kw),
        "ovms": lambda **kw: ovms_server_spec("resnet", "/srv/resnet", **kw),
    }
    for name, build in specs.items():
        published = build()
        assert published.network_mode is None
        bridge = runtime.run_kwargs(published, 18000)
        # a published port is bound on loopback by the engine; inside, every address is fine
        assert "0.0.0.0" in bridge["command"], name
        assert bridge["ports"] == {f"{published.port}/tcp": ("127.0.0.1", 18000)}
        host = build(network_mode="host", host_port=18001)
        assert host.network_mode == "host"
        kwargs = runtime.run_kwargs(host, 18001)
        # on the host's network: never every interface, and the host port is the server's
        assert kwargs["network_mode"] == "host" and "ports" not in kwargs, name
        assert "0.0.0.0" not in kwargs["command"] and "127.0.0.1" in kwargs["command"], name
        assert "18001" in kwargs["command"] and str(host.port) not in kwargs["command"], name
        for spec, port in ((published, str(published.port)), (host, "18001")):
            text = ManagedServer(spec, runtime).describe()
            assert "{port}" not in text and port in text, (name, text)
        assert "(network host)" in host.describe()
        with pytest.raises(ConfigurationError, match=f"{name}_server_spec: network_mode"):
            build(runtime="process", network_mode="host")
    # a process listens on its host port; before one is chosen describe() says so plainly
    process = ServerSpec(name="p", command=("server", "--port", "{port}"))
    assert process.describe() == "command server --port '<port>'"
    assert process.describe(18002) == "command server --port 18002"
    managed = ManagedServer(process)
    assert managed.describe() == f"command server --port {managed.spec.host_port}"


def test_unified_managed_server_takes_network_mode() -> None:
    vllm = create_api_backend(
        "vllm_unified",
        metadata={"managed_server": {"model": "m/m", "network_mode": "host", "host_port": 18003}},
    )
    server = vllm.managed_server
    assert server is not None and server.spec.network_mode == "host"
    assert server.url == "http://127.0.0.1:18003"
    command = server.spec.args_for(18003)
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert command[command.index("--port") + 1] == "18003"
    assert "{port}" not in server.describe() and "18003" in server.describe()
    with pytest.raises(ConfigurationError, match="network_mode is a Docker setting"):
        create_api_backend(
            "hf_tei_unified",
            metadata={"managed_server": {"model": "m/e", "runtime": "process",
                                         "network_mode": "host"}},
        )  # fmt: skip
