"""The Docker runtime's container specs and decisions, through a recording docker client.

The lifecycle on a real engine is in test_docker_engine.py. What stays here is what a real
engine on this machine cannot show: the exact arguments for the official images (GPU device
requests, published ports, images that are not on the machine and must not be pulled in
tests), and a pull that fails; plus a daemon that is not there."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import pytest

from ipfs_accelerate.errors import ConfigurationError, ContainerError, ServerStartError
from ipfs_accelerate.servers import (
    DockerRuntime,
    ManagedServer,
    ServerSpec,
    ServerState,
    ovms_server_spec,
    tei_server_spec,
    tgi_server_spec,
    vllm_server_spec,
)

from ..api_backends.conftest import run
from ..fakes.vllm_fake import VLLMFake

pytestmark = pytest.mark.timeout(90)


# ---------------------------------------------------------------- Docker: the exact container specs


class _Container:
    def __init__(self, client: RecordingDockerClient, kwargs: dict[str, Any]) -> None:
        self.client = client
        self.id = f"c{len(client.runs):063d}"
        self.name = kwargs["name"]
        self.status = "running"
        self.attrs: dict[str, Any] = {"State": {"ExitCode": 0}}

    def start(self) -> None:
        self.client.calls.append(("start", self.id))

    def reload(self) -> None:
        self.client.calls.append(("reload", self.id))

    def logs(self, tail: int = 20) -> bytes:
        return b"INFO: Started server process\nINFO: Uvicorn running on http://0.0.0.0:8000\n"

    def stop(self, timeout: int = 10) -> None:
        self.client.calls.append(("stop", self.id, timeout))
        self.status = "exited"

    def remove(self, force: bool = False) -> None:
        self.client.calls.append(("remove", self.id, force))


class RecordingDockerClient:
    """Stands in for ``docker.DockerClient`` where a real engine cannot show the point: it
    records the exact arguments of ``containers.create`` (the published-port form, GPU device
    requests and images that are not on this machine) and plays the container's status."""

    def __init__(self, fail_with: Exception | None = None) -> None:
        self.runs: list[dict[str, Any]] = []
        self.calls: list[tuple[Any, ...]] = []
        self.created: list[_Container] = []
        self.fail_with = fail_with
        self.containers = self
        self.images = self

    def pull(self, image: str) -> None:
        self.calls.append(("pull", image))
        if self.fail_with is not None:
            raise self.fail_with

    def create(self, **kwargs: Any) -> _Container:
        if self.fail_with is not None:
            raise self.fail_with
        self.runs.append({"detach": True, **kwargs})
        container = _Container(self, kwargs)
        self.created.append(container)
        return container


def _labels(name: str) -> dict[str, str]:
    return {"ipfs_accelerate.managed": "true", "ipfs_accelerate.server": name}


def test_docker_vllm_spec() -> None:
    from docker.types import DeviceRequest

    spec = vllm_server_spec(
        "meta-llama/Llama-3.1-8B-Instruct", tensor_parallel_size=2, gpu_memory_utilization=0.85,
        max_model_len=8192, quantization="awq", lora_modules={"sql": "/adapters/sql"},
        max_loras=2, max_lora_rank=16, allow_runtime_lora=True, api_key="sk-vllm-secret",
        hf_token="hf_secret_token", host_port=18000,
    )  # fmt: skip
    assert "sk-vllm-secret" not in repr(spec) and "hf_secret_token" not in repr(spec)
    assert "sk-vllm-secret" not in spec.describe()
    assert DockerRuntime(RecordingDockerClient()).run_kwargs(spec, 18000) == {
        "image": "vllm/vllm-openai:latest",
        "command": ["--model", "meta-llama/Llama-3.1-8B-Instruct", "--host", "0.0.0.0",
                    "--port", "8000", "--tensor-parallel-size", "2",
                    "--gpu-memory-utilization", "0.85", "--max-model-len", "8192",
                    "--quantization", "awq", "--enable-lora", "--lora-modules", "sql=/adapters/sql",
                    "--max-loras", "2", "--max-lora-rank", "16"],
        "detach": True,
        "name": "ipfs-accelerate-vllm-18000",
        "ports": {"8000/tcp": ("127.0.0.1", 18000)},
        "environment": {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True",
                        "VLLM_API_KEY": "sk-vllm-secret", "HF_TOKEN": "hf_secret_token"},
        "volumes": {os.path.expanduser("~/.cache/huggingface"):
                    {"bind": "/root/.cache/huggingface", "mode": "rw"}},
        "labels": _labels("vllm"),
        "auto_remove": False,
        "device_requests": [DeviceRequest(count=-1, capabilities=[["gpu"]])],
        "ipc_mode": "host",
    }  # fmt: skip
    process = vllm_server_spec("Qwen/Qwen2.5-0.5B-Instruct", runtime="process", max_model_len=4096)
    assert process.image is None and process.gpus is None
    assert process.args_for(9123) == [
        "vllm", "serve", "Qwen/Qwen2.5-0.5B-Instruct", "--host", "127.0.0.1", "--port", "9123",
        "--max-model-len", "4096",
    ]  # fmt: skip


def test_docker_tgi_tei_ovms_specs() -> None:
    from docker.types import DeviceRequest

    runtime = DockerRuntime(RecordingDockerClient())
    tgi = tgi_server_spec(
        "HuggingFaceTB/SmolLM2-135M-Instruct", num_shard=2, quantize="bitsandbytes-nf4",
        max_input_tokens=4095, max_total_tokens=4096, gpus=("0", "1"), hf_token="hf_tok",
    )  # fmt: skip
    assert runtime.run_kwargs(tgi, 18080) == {
        "image": "ghcr.io/huggingface/text-generation-inference:latest",
        "command": ["--model-id", "HuggingFaceTB/SmolLM2-135M-Instruct", "--hostname", "0.0.0.0",
                    "--port", "80", "--num-shard", "2", "--quantize", "bitsandbytes-nf4",
                    "--max-input-tokens", "4095", "--max-total-tokens", "4096"],
        "detach": True,
        "name": "ipfs-accelerate-tgi-18080",
        "ports": {"80/tcp": ("127.0.0.1", 18080)},
        "environment": {"HF_TOKEN": "hf_tok"},
        "volumes": {os.path.expanduser("~/.cache/huggingface/tgi"):
                    {"bind": "/data", "mode": "rw"}},
        "labels": _labels("tgi"),
        "auto_remove": False,
        "device_requests": [DeviceRequest(device_ids=["0", "1"], capabilities=[["gpu"]])],
        "shm_size": "1g",
    }  # fmt: skip
    tei = tei_server_spec("BAAI/bge-small-en-v1.5", max_client_batch_size=64)
    assert runtime.run_kwargs(tei, 18081) == {
        "image": "ghcr.io/huggingface/text-embeddings-inference:cpu-1.5",
        "command": ["--model-id", "BAAI/bge-small-en-v1.5", "--hostname", "0.0.0.0", "--port", "80",
                    "--max-client-batch-size", "64"],
        "detach": True,
        "name": "ipfs-accelerate-tei-18081",
        "ports": {"80/tcp": ("127.0.0.1", 18081)},
        "environment": {},
        "volumes": {os.path.expanduser("~/.cache/huggingface/tei"):
                    {"bind": "/data", "mode": "rw"}},
        "labels": _labels("tei"),
        "auto_remove": False,
    }  # fmt: skip
    gpu_tei = runtime.run_kwargs(tei_server_spec("BAAI/bge-small-en-v1.5", gpus=1), 1)
    assert gpu_tei["device_requests"] == [DeviceRequest(count=1, capabilities=[["gpu"]])]
    cuda_image = "ghcr.io/huggingface/text-embeddings-inference:1.5"
    assert tei_server_spec("x/y", gpus="all").image == cuda_image
    ovms = ovms_server_spec("resnet", "/srv/models/resnet", target_device="GPU")
    assert ovms.health_path == "/v2/health/ready"
    assert runtime.run_kwargs(ovms, 18082) == {
        "image": "openvino/model_server:latest",
        "command": ["--model_name", "resnet", "--model_path", "/models/resnet",
                    "--rest_port", "8000", "--rest_bind_address", "0.0.0.0",
                    "--target_device", "GPU"],
        "detach": True,
        "name": "ipfs-accelerate-ovms-18082",
        "ports": {"8000/tcp": ("127.0.0.1", 18082)},
        "environment": {},
        "volumes": {"/srv/models/resnet": {"bind": "/models/resnet", "mode": "ro"}},
        "labels": _labels("ovms"),
        "auto_remove": False,
        "devices": ["/dev/dri:/dev/dri:rwm"],
    }  # fmt: skip
    assert ovms_server_spec("resnet", "/srv/models/resnet", runtime="process").args_for(9) == [
        "ovms", "--model_name", "resnet", "--model_path", "/srv/models/resnet", "--rest_port", "9",
        "--rest_bind_address", "127.0.0.1",
    ]  # fmt: skip


def test_docker_spec_errors() -> None:
    runtime = DockerRuntime(RecordingDockerClient())
    with pytest.raises(ConfigurationError, match="needs an image"):
        runtime.run_kwargs(ServerSpec(name="x", command=("serve",)), 1)
    with pytest.raises(ConfigurationError, match="gpus"):
        runtime.run_kwargs(ServerSpec(name="x", command=(), image="i", gpus=0), 1)
    with pytest.raises(ConfigurationError, match="sequence of arguments"):
        ServerSpec(name="x", command="vllm serve model")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="runtime must be"):
        vllm_server_spec("m", runtime="podman")


def test_docker_lifecycle_with_recorded_client() -> None:
    """The lifecycle decisions of the Docker runtime: readiness, crash detection, restart,
    stop + remove. A local fake vLLM server stands in for the container's published port."""

    async def body() -> None:
        async with VLLMFake() as fake:
            assert fake.port is not None
            client = RecordingDockerClient()
            spec = vllm_server_spec("m/m", host_port=fake.port, hf_token="hf_x")
            server = ManagedServer(spec, DockerRuntime(client), ready_timeout=5,
                                   probe_interval=0.05, health_interval=0.1,
                                   restart_backoff=0.05)  # fmt: skip
            await server.start()
            assert server.is_ready and len(client.runs) == 1
            assert client.runs[0]["ports"] == {"8000/tcp": ("127.0.0.1", fake.port)}
            first = client.created[0]
            first.status, first.attrs = "exited", {"State": {"ExitCode": 137}}  # the container died
            deadline = time.monotonic() + 10
            while server.restarts < 1:
                assert time.monotonic() < deadline, list(server.events)
                await asyncio.sleep(0.02)
            assert ("stop", first.id, 10) in client.calls and (
                "remove",
                first.id,
                True,
            ) in client.calls
            assert len(client.runs) == 2 and server.is_ready
            assert "exited with status 137" in " ".join(e.detail for e in server.events)
            await server.stop()
            second = client.created[1]
            assert (
                "remove",
                second.id,
                True,
            ) in client.calls and server.state == ServerState.STOPPED

    run(body(), 30)


def test_docker_start_failure_is_typed() -> None:
    class ImageNotFound(Exception):
        explanation = "pull access denied for vllm/vllm-openai, repository does not exist"

    async def body() -> None:
        server = ManagedServer(
            vllm_server_spec("m/m"), DockerRuntime(RecordingDockerClient(fail_with=ImageNotFound()))
        )
        with pytest.raises(
            ServerStartError,
            match="image vllm/vllm-openai:latest.*ImageNotFound: pull access denied",
        ):
            await server.start()
        assert server.state == ServerState.FAILED
        # the image was missing, so the runtime tried to pull it once (pull="missing")
        assert server.runtime.client().calls == [("pull", "vllm/vllm-openai:latest")]

    run(body(), 10)


def test_missing_docker_daemon_is_typed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("docker")
    socket_path = tmp_path / "absent" / "docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket_path}")

    async def body() -> None:
        server = ManagedServer(vllm_server_spec("m/m"), DockerRuntime())
        with pytest.raises(ContainerError, match="cannot reach the Docker Engine"):
            await server.start()
        assert server.state == ServerState.FAILED and server.handle is None

    run(body(), 30)
