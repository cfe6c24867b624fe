"""The JavaScript reference for the content tests (and benchmarks/content.py): installed
once, run once per test module.

The npm packages of tests/content/js/package.json (pinned by its package-lock.json) are
installed with ``npm ci`` into ~/.cache/ipfs-accelerate/npm/<hash of both files>, the way
``make test`` installs system packages: a fresh machine gets them on its first run, later runs
reuse the folder. Node.js itself comes from scripts/ensure_system_deps.sh. Without Node.js or
npm the reference tests fail with the reason (they are the point of the suite, not optional).
This module holds no fixtures so that the benchmark can import it.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

JS_DIR = Path(__file__).parent / "js"
RunReference = Callable[[list[dict[str, Any]]], list[dict[str, Any]]]


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ipfs-accelerate" / "npm"


def install_reference() -> Path:
    """The folder holding node_modules and reference.mjs; installs on first use."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        raise RuntimeError(
            "the content tests need Node.js and npm (scripts/ensure_system_deps.sh installs "
            "them: run `make system-deps`)"
        )
    manifest = (JS_DIR / "package.json").read_bytes()
    lock = (JS_DIR / "package-lock.json").read_bytes()
    key = hashlib.sha256(manifest + b"\0" + lock).hexdigest()[:16]
    folder = _cache_root() / key
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".install-lock").open("w") as guard:
        fcntl.flock(guard, fcntl.LOCK_EX)  # parallel workers install once
        if not (folder / ".installed").exists():
            (folder / "package.json").write_bytes(manifest)
            (folder / "package-lock.json").write_bytes(lock)
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
                cwd=folder, capture_output=True, text=True, timeout=600, check=False,
            )
            if result.returncode != 0:
                raise RuntimeError(
                    f"npm ci of the reference packages failed:\n{result.stderr[-3000:]}"
                )
            (folder / ".installed").touch()
        # the scripts are copied beside node_modules so their imports resolve there
        for script in ("reference.mjs", "gateway.mjs"):
            shutil.copyfile(JS_DIR / script, folder / script)
    return folder


def run_reference_jobs(jobs: list[dict[str, Any]], workdir: Path) -> list[dict[str, Any]]:
    """Run ``jobs`` in one Node.js process; returns one result per job."""
    folder = install_reference()
    jobs_file = workdir / "reference-jobs.json"
    jobs_file.write_text(json.dumps(jobs))
    node = shutil.which("node")
    assert node is not None
    result = subprocess.run(
        [node, str(folder / "reference.mjs"), str(jobs_file)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"the JS reference failed:\n{result.stderr[-3000:]}")
    results: list[dict[str, Any]] = json.loads(result.stdout)
    assert len(results) == len(jobs)
    return results


class ReferenceGateway:
    """tests/content/js/gateway.mjs on 127.0.0.1: the reference importer's blockstore of
    ``directory`` (imported under ``profile``) served as a trustless gateway. ``root`` and
    ``entries`` are the CIDs the reference computed; :meth:`requests` counts what was asked."""

    def __init__(self, directory: Path, profile: str) -> None:
        folder = install_reference()
        node = shutil.which("node")
        assert node is not None
        self._process = subprocess.Popen(
            [node, str(folder / "gateway.mjs"), str(directory), profile],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("the reference gateway did not start")
        ready = json.loads(line)
        self.url = f"http://127.0.0.1:{ready['port']}"
        self.root: str = ready["root"]
        self.entries: dict[str, str] = ready["entries"]

    @property
    def pid(self) -> int:
        """The Node.js process serving (benchmarks/content.py reads its CPU time)."""
        return self._process.pid

    def requests(self) -> dict[str, int]:
        import urllib.request

        with urllib.request.urlopen(f"{self.url}/requests", timeout=10) as response:
            counts: dict[str, int] = json.loads(response.read())
        return counts

    def close(self) -> None:
        if self._process.poll() is None:
            assert self._process.stdin is not None
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        for stream in (self._process.stdout, self._process.stderr):
            if stream is not None:
                stream.close()
