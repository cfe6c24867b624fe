"""Local services for the documentation's examples (tests/test_docs.py).

A page names what its examples talk to in a comment, ``<!-- docs-test: services=openai,s3 -->``;
before its blocks run, each service is started once per session on 127.0.0.1 (the protocol
fakes of tests/fakes on a background event loop, moto's S3 server) and published through the
environment variables the page's text explains (OPENAI_BASE_URL, TEI_URL, AWS_ENDPOINT_URL_S3...).

Services:

* ``openai``: OpenAI's REST API -> ``OPENAI_BASE_URL`` (with ``/v1``), ``OPENAI_API_KEY``
* ``claude``: Anthropic's Messages API -> ``ANTHROPIC_BASE_URL``, ``ANTHROPIC_API_KEY``
* ``ollama``: Ollama -> ``OLLAMA_HOST``
* ``vllm``, ``tgi``, ``ovms``: -> ``VLLM_URL``, ``TGI_URL``, ``OVMS_URL``
* ``tei``: two TEI servers -> ``TEI_URL``, ``TEI_URL_2``
* ``sample``: the reference backend's protocol -> ``SAMPLE_API_URL``, ``SAMPLE_API_KEY``
* ``s3``: two moto servers sharing one store -> ``AWS_ENDPOINT_URL_S3``, ``S3_REPLICA_URL``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``
* ``tei-router``: a ``text-embeddings-router`` on ``PATH`` (TEI's launcher command line,
  served by the TEI fake as a real process), for the managed-server examples
* ``serve``: ``ipfs-accelerate serve`` as a real process with an API key, serving the bundled
  all-MiniLM-L6-v2 and a tiny random Whisper checkpoint (tests/models/_checkpoints) named
  ``whisper-tiny`` -> ``IPFS_ACCELERATE_SERVER``, ``IPFS_ACCELERATE_API_KEY``
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import stat
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MARKER = re.compile(r"<!--\s*docs-test:\s*(.*?)\s*-->", re.S)

# every variable a page may read or a backend may pick up: cleared before each page, so a
# developer's real keys and hosts never reach an example
PROVIDER_ENV = (
    "OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID", "ANTHROPIC_API_KEY",
    "ANTHROPIC_BASE_URL", "GEMINI_API_KEY", "GOOGLE_API_KEY", "GROQ_API_KEY", "HF_TOKEN",
    "OLLAMA_HOST", "SAMPLE_API_URL", "SAMPLE_API_KEY", "VLLM_URL", "TGI_URL", "OVMS_URL", "TEI_URL",
    "TEI_URL_2", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION",
    "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE",
    "S3_REPLICA_URL", "MLC_URL",
    "IPFS_ACCELERATE_SERVER", "IPFS_ACCELERATE_API_KEY",
)  # fmt: skip

_ROUTER_SHIM = """#!{python}
# Stand-in for TEI's launcher: the TEI protocol fake as a real server process.
import os, sys
args = sys.argv[1:]
port = args[args.index("--port") + 1]
os.chdir({root!r})
os.execv(sys.executable, [sys.executable, "-m", "tests.fakes.serve", "tei", "--port", port])
"""


def page_options(text: str) -> dict[str, list[str]]:
    """``{"services": [...], "requires": [...]}`` from the page's docs-test comments."""
    options: dict[str, list[str]] = {}
    for body in MARKER.findall(text):
        for item in body.split():
            key, _, value = item.partition("=")
            options.setdefault(key, []).extend(v for v in value.split(",") if v)
    return options


class LoopThread:
    """An event loop on a daemon thread, hosting the aiohttp fakes for the whole session."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(self.loop)
            self.loop.call_soon(ready.set)
            self.loop.run_forever()

        self.thread = threading.Thread(target=run, name="docs-services", daemon=True)
        self.thread.start()
        ready.wait(10)

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


class Services:
    """Starts each service on first request and keeps it for the session."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._loop: LoopThread | None = None
        self._fakes: list[Any] = []
        self._moto: list[Any] = []
        self._processes: list[Any] = []
        self._env: dict[str, dict[str, str]] = {}
        self._starters: dict[str, Callable[[], dict[str, str]]] = {
            "openai": self._openai,
            "claude": self._claude,
            "ollama": self._ollama,
            "vllm": lambda: {"VLLM_URL": self._fake("vllm_fake", "VLLMFake").url},
            "mlc": lambda: {"MLC_URL": self._fake("mlc_fake", "MLCFake", enable_debug=True).url},
            "tgi": lambda: {"TGI_URL": self._fake("tgi_fake", "TGIFake").url},
            "ovms": lambda: {"OVMS_URL": self._fake("ovms_fake", "OVMSFake").url},
            "tei": self._tei,
            "sample": self._sample,
            "s3": self._s3,
            "tei-router": self._tei_router,
            "serve": self._serve,
        }

    def env(self, name: str) -> dict[str, str]:
        if name not in self._starters:
            raise KeyError(f"unknown docs service {name!r}; known: {', '.join(self._starters)}")
        if name not in self._env:
            self._env[name] = self._starters[name]()
        return self._env[name]

    # ------------------------------------------------------------------ protocol fakes

    def _fake(self, module: str, cls: str, **kwargs: Any) -> Any:
        import importlib

        if self._loop is None:
            self._loop = LoopThread()
        fake = getattr(importlib.import_module(f"tests.fakes.{module}"), cls)(**kwargs)
        self._loop.run(fake.start())
        self._fakes.append(fake)
        return fake

    def _openai(self) -> dict[str, str]:
        fake = self._fake("openai_fake", "OpenAIFake", api_key="sk-docs-example-key")
        return {"OPENAI_BASE_URL": fake.url + "/v1", "OPENAI_API_KEY": "sk-docs-example-key"}

    def _claude(self) -> dict[str, str]:
        fake = self._fake("anthropic_fake", "AnthropicFake", api_key="sk-ant-docs-example-key")
        return {"ANTHROPIC_BASE_URL": fake.url, "ANTHROPIC_API_KEY": "sk-ant-docs-example-key"}

    def _ollama(self) -> dict[str, str]:
        return {"OLLAMA_HOST": self._fake("ollama_fake", "OllamaFake").url}

    def _tei(self) -> dict[str, str]:
        first, second = self._fake("tei_fake", "TEIFake"), self._fake("tei_fake", "TEIFake")
        return {"TEI_URL": first.url, "TEI_URL_2": second.url}

    def _sample(self) -> dict[str, str]:
        fake = self._fake("sample_fake", "SampleFake", api_key="sample-docs-key")
        return {"SAMPLE_API_URL": fake.url, "SAMPLE_API_KEY": "sample-docs-key"}

    # ------------------------------------------------------------------ S3 and processes

    def _s3(self) -> dict[str, str]:
        from moto.server import ThreadedMotoServer

        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        # two servers in one process share moto's store: two gateways to the same data
        for _ in range(2):
            server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
            server.start()
            self._moto.append(server)
        first, second = (f"http://127.0.0.1:{s._server.port}" for s in self._moto)
        return {
            "AWS_ENDPOINT_URL_S3": first,
            "S3_REPLICA_URL": second,
            "AWS_ACCESS_KEY_ID": "AKIADOCSEXAMPLE00001",
            "AWS_SECRET_ACCESS_KEY": "docs-example-secret-key",
            "AWS_REGION": "us-east-1",
        }

    def _tei_router(self) -> dict[str, str]:
        bin_dir = self._tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        shim = bin_dir / "text-embeddings-router"
        shim.write_text(_ROUTER_SHIM.format(python=sys.executable, root=str(ROOT)))
        shim.chmod(shim.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        return {"PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

    def _serve(self) -> dict[str, str]:
        import socket
        import subprocess
        import time
        import urllib.request

        from tests.models._checkpoints import make_whisper

        whisper = make_whisper(self._tmp / "whisper-tiny")
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        key = "sk-docs-local-server-key"
        env = {**os.environ, "IPFS_ACCELERATE_API_KEY": key}
        command = [
            sys.executable, "-m", "ipfs_accelerate.cli", "serve",
            "--device", "cpu", "--port", str(port),
            "--model", "sentence-transformers/all-MiniLM-L6-v2",
            "--model", f"whisper-tiny={whisper}",
            "--log-level", "warning",
        ]  # fmt: skip
        log = (self._tmp / "serve.log").open("w")
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
        self._processes.append(process)
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    "ipfs-accelerate serve did not start: "
                    f"{(self._tmp / 'serve.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(url + "/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.2)
        return {"IPFS_ACCELERATE_SERVER": url, "IPFS_ACCELERATE_API_KEY": key}

    def close(self) -> None:
        for process in self._processes:
            process.terminate()
            process.wait(20)
        if self._loop is not None:
            for fake in self._fakes:
                self._loop.run(fake.close())
            self._loop.close()
        for server in self._moto:
            server.stop()


def services_for(services: Services, names: list[str]) -> Iterator[tuple[str, str]]:
    for name in names:
        yield from services.env(name).items()
