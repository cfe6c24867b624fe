"""A real Docker engine for the container tests, and the image they run.

The engine is one already reachable (``DOCKER_HOST`` or ``/var/run/docker.sock``), or else a
``dockerd`` (Debian's ``docker.io``) that the test session starts as root with everything it
keeps in a temporary folder: its own socket, data root (the ``vfs`` storage driver, which
works on any file system and costs nothing for an image this small), exec root and pid file;
no bridge, no iptables rules, so containers use the host's network and traffic stays on
loopback. It is stopped, and its folder removed, when the session ends.

The image is built on the spot with ``docker import`` of a root file system holding only
empty mount points and the top-level links of a merged-/usr system; the interpreter, its
packages and this repository (the protocol fakes) are bind-mounted into each container
read-only at their own paths. Nothing is pulled from a registry.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ipfs_accelerate.servers import ServerSpec

from .conftest import REPO

SESSION_LABEL = "ipfs_accelerate.test-session"
IMAGE_REPOSITORY = "ipfs-accelerate-test/rootfs"
REQUIRE_ENV = "IPFS_ACCELERATE_REQUIRE_DOCKER"


class EngineUnavailable(Exception):
    """No Docker engine is reachable and none could be started here; the message says why."""


@dataclass
class DockerEngine:
    client: Any
    url: str
    image: str
    session: str
    mounts: dict[str, str] = field(default_factory=dict)  # host path -> "path:ro"
    process: subprocess.Popen[bytes] | None = None  # the dockerd we started, if any
    root: Path | None = None

    @property
    def labels(self) -> dict[str, str]:
        return {SESSION_LABEL: self.session}

    def fake_spec(self, kind: str = "vllm", *extra: str, name: str = "docker-vllm",
                  host_port: int | None = None,
                  command: tuple[str, ...] | None = None, **fields: Any) -> ServerSpec:  # fmt: skip
        """A protocol fake (``python -m tests.fakes.serve``) as a container on the host's
        network, listening on loopback."""
        if command is None:
            command = (sys.executable, "-m", "tests.fakes.serve", kind, "--port", "{port}", *extra)
        env = {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]),
               "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1", "HOME": "/tmp"}  # fmt: skip
        return ServerSpec(
            name=name, image=self.image, command=command, network_mode="host",
            host_port=host_port, volumes=self.mounts, env=env, labels=self.labels, **fields,
        )  # fmt: skip

    def containers(self) -> list[Any]:
        """Every container this session created that still exists, running or not."""
        found: list[Any] = self.client.containers.list(
            all=True, filters={"label": f"{SESSION_LABEL}={self.session}"}
        )
        return found

    def remove_containers(self) -> list[str]:
        """Force-remove every container of this session; the names of those removed."""
        removed = []
        for container in self.containers():
            with contextlib.suppress(Exception):
                container.remove(force=True)
                removed.append(str(container.name))
        return removed


def _ping(url: str | None) -> Any:
    import docker

    client = docker.DockerClient(base_url=url, timeout=30) if url else docker.from_env(timeout=30)
    client.ping()
    return client


def _reachable_engine() -> tuple[Any, str] | None:
    url = os.environ.get("DOCKER_HOST")
    if not url and not Path("/var/run/docker.sock").exists():
        return None
    try:
        return _ping(url), url or "unix:///var/run/docker.sock"
    except Exception:
        return None


def _start_dockerd() -> tuple[subprocess.Popen[bytes], Path, Any, str]:
    exe = shutil.which("dockerd") or next(
        (p for p in ("/usr/sbin/dockerd", "/usr/bin/dockerd") if os.path.exists(p)), None
    )
    if exe is None:
        raise EngineUnavailable(
            "no Docker engine reachable and dockerd is not installed "
            "(Debian's docker.io; scripts/ensure_system_deps.sh installs it)"
        )
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine reachable and dockerd needs root to start")
    # short: containerd's socket lives under the exec root and unix socket paths are short
    root = Path(tempfile.mkdtemp(prefix="ia-dockerd-", dir="/tmp"))
    url = f"unix://{root}/docker.sock"
    log = open(root / "dockerd.log", "wb")  # noqa: SIM115 - dockerd keeps writing to it
    argv = [exe, "--host", url, "--data-root", str(root / "data"),
            "--exec-root", str(root / "x"), "--pidfile", str(root / "dockerd.pid"),
            "--storage-driver", "vfs", "--bridge", "none", "--iptables=false",
            "--ip-masq=false", "--log-level", "warn"]  # fmt: skip
    with log:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                start_new_session=True)  # fmt: skip
    deadline = time.monotonic() + 60
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        if (root / "docker.sock").exists():
            try:
                return proc, root, _ping(url), url
            except Exception as exc:
                last = exc
        time.sleep(0.2)
    tail = _log_tail(root)
    _stop_dockerd(proc, root)
    status = f"exited with status {proc.returncode}" if proc.returncode is not None else (
        f"did not answer within 60 s ({type(last).__name__}: {last})")  # fmt: skip
    raise EngineUnavailable(f"dockerd {status}; its log ends:\n{tail}")


def _log_tail(root: Path, lines: int = 15) -> str:
    try:
        text = (root / "dockerd.log").read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _stop_dockerd(proc: subprocess.Popen[bytes], root: Path) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)  # dockerd stops its containers and containerd
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    # never delete through something still mounted under the folder
    mounted = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
               if line.split()[1].startswith(str(root) + "/")]  # fmt: skip
    for point in sorted(mounted, reverse=True):
        subprocess.run(["umount", "-l", point], check=False, capture_output=True)
    still = [line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
             if line.split()[1].startswith(str(root) + "/")]  # fmt: skip
    if not still:
        shutil.rmtree(root, ignore_errors=True)


def _mounts() -> tuple[dict[str, str], list[str]]:
    """Host paths to bind read-only (the interpreter, its packages, the repository), and the
    top-level names the image carries as links (a merged-/usr system's /bin -> usr/bin)."""
    links = []
    wanted = []
    for top in ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        path = Path(top)
        if path.is_symlink():
            links.append(top)
        elif path.is_dir():
            wanted.append(top)
    for path in (sys.base_prefix, sys.prefix, str(REPO)):
        wanted.append(os.path.realpath(path))
    chosen: list[str] = []
    for path in sorted(set(wanted), key=len):
        if not any(path == c or path.startswith(c.rstrip("/") + "/") for c in chosen):
            chosen.append(path)
    return {p: f"{p}:ro" for p in chosen}, links


def _rootfs_tar(links: list[str]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, mode in (("tmp", 0o1777), ("etc", 0o755), ("proc", 0o555), ("sys", 0o555),
                           ("dev", 0o755), ("run", 0o755), ("usr", 0o755)):  # fmt: skip
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        for top in links:
            info = tarfile.TarInfo(top.lstrip("/"))
            info.type, info.linkname = tarfile.SYMTYPE, os.readlink(top)
            tar.addfile(info)
    return buffer.getvalue()


@contextlib.contextmanager
def docker_engine() -> Iterator[DockerEngine]:
    """A reachable engine (or one started here) with this session's image imported; on exit
    every container of the session is removed, then the image, then the dockerd we started."""
    process: subprocess.Popen[bytes] | None = None
    root: Path | None = None
    reachable = _reachable_engine()
    if reachable is not None:
        client, url = reachable
    else:
        process, root, client, url = _start_dockerd()
    session = uuid.uuid4().hex[:12]
    image = f"{IMAGE_REPOSITORY}:{session}"
    try:
        mounts, links = _mounts()
        client.api.import_image_from_data(_rootfs_tar(links), repository=IMAGE_REPOSITORY,
                                          tag=session)  # fmt: skip
        engine = DockerEngine(client, url, image, session, mounts, process, root)
        try:
            yield engine
        finally:
            engine.remove_containers()
            with contextlib.suppress(Exception):
                client.images.remove(image, force=True)
    finally:
        with contextlib.suppress(Exception):
            client.close()
        if process is not None and root is not None:
            _stop_dockerd(process, root)
