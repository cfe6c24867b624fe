"""Helpers for the managed-server tests: a protocol fake run as a real server process, and
what is left of a process group or a port after a server stopped (read from /proc, no
psutil)."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from ipfs_accelerate.servers import ServerSpec

REPO = Path(__file__).resolve().parents[2]
ENV = {"PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO)]), "PYTHONUNBUFFERED": "1"}


def fake_server_spec(kind: str = "vllm", *extra: str, name: str = "fake-vllm") -> ServerSpec:
    """A protocol fake as a real server process (``python -m tests.fakes.serve``)."""
    return ServerSpec(
        name=name,
        command=(sys.executable, "-m", "tests.fakes.serve", kind, "--port", "{port}", *extra),
        cwd=str(REPO),
        env=ENV,
        health_path="/health",
    )


def group_members(pgid: int) -> list[int]:
    """Processes whose process group is ``pgid`` (read from /proc, no psutil)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def processes_with(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                cmdline = (
                    (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                )
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except OSError:
                continue
            if marker in cmdline and state != "Z":
                found.append(int(entry.name))
    return found


def port_closed(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) != 0
