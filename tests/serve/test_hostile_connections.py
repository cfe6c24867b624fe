"""Connection hygiene against hostile and stalled clients, on real servers over loopback:
slowloris headers and bodies get 408 and are closed after the configured deadline without
delaying other clients, open connections are bounded, idle keep-alive connections time
out, and a shutdown drains (``/health`` 503, requests in progress finish) and then closes
stalled connections within the graceful timeout, from ``BackgroundServer`` and from Ctrl-C
to a real ``ipfs-accelerate serve``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest

from ipfs_accelerate.errors import ConfigurationError
from ipfs_accelerate.serve import BackgroundServer, ServerConfig, create_app

SLOWLORIS = 200  # the count


@contextmanager
def serving(registry: Any, http: str = "auto", **settings: Any) -> Iterator[BackgroundServer]:
    config = ServerConfig(device="cpu", **settings)
    with BackgroundServer(create_app(config, registry=registry), http=http) as server:
        yield server


def connect(server: BackgroundServer) -> socket.socket:
    return socket.create_connection((server.host, server.port), timeout=10)


def read_response(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything the server sends until it closes the connection, which it must do within
    ``timeout``."""
    sock.settimeout(timeout)
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except ConnectionResetError:
        pass
    except TimeoutError:
        raise AssertionError(f"still open after {timeout} s: {b''.join(chunks)!r}") from None
    return b"".join(chunks)


def read_one_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    """One response with a Content-Length from a keep-alive connection."""
    sock.settimeout(10)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {data!r}"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in lines[1:])
    while len(body) < int(headers.get("content-length", 0)):
        chunk = sock.recv(65536)
        assert chunk, "connection closed mid-body"
        body += chunk
    return int(lines[0].split()[1]), headers, body


def embed_request(body: bytes, *, complete: bool = True) -> bytes:
    head = (
        "POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return head + (body if complete else body[: len(body) // 2])


BODY = json.dumps({"inputs": ["a request in progress while the server drains"]}).encode()


# ----------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "field, value",
    [
        ("header_timeout_s", 0),
        ("body_timeout_s", -1.0),
        ("keep_alive_timeout_s", float("inf")),
        ("graceful_timeout_s", True),
        ("max_connections", 0),
    ],
)
def test_connection_settings_are_validated(field: str, value: Any) -> None:
    with pytest.raises(ConfigurationError, match=field):
        ServerConfig(**{field: value})


# ----------------------------------------------------------------------------- deadlines


def test_slowloris_connections_do_not_delay_traffic_and_are_closed_with_408(
    registry: Any,
) -> None:
    header_timeout = 5.0  # generous: a loaded machine must still answer the others first
    with serving(registry, header_timeout_s=header_timeout) as server:
        clients = [connect(server) for _ in range(SLOWLORIS)]
        opened = time.monotonic()
        for sock in clients:
            sock.sendall(b"POST /embed HTTP/1.1\r\nHost: test\r\n")
        # other clients are answered while all of them trickle, before any is dropped
        with httpx.Client(base_url=server.url, timeout=header_timeout) as client:
            assert client.get("/health").status_code == 200
            reply = client.post("/embed", json={"inputs": "normal traffic"})
            assert reply.status_code == 200, reply.text
            assert len(reply.json()[0]) == 384
        assert time.monotonic() - opened < header_timeout
        answers: dict[int, bytes] = {}
        for line in range(int(header_timeout / 0.25) + 12):  # bounded: past the deadline
            for i, sock in enumerate(clients):
                if i in answers:
                    continue
                try:
                    sock.sendall(f"X-Trickle-{line}: 1\r\n".encode())
                except OSError:  # closed by the server: read what it said
                    answers[i] = read_response(sock, timeout=2)
            if len(answers) == len(clients):
                break
            time.sleep(0.25)
        closed_after = time.monotonic() - opened
        for sock in clients:
            sock.close()
        assert len(answers) == SLOWLORIS, f"{SLOWLORIS - len(answers)} still open"
        assert closed_after >= header_timeout
        timed_out = [a for a in answers.values() if a.startswith(b"HTTP/1.1 408 ")]
        assert all(a in (b"", *timed_out) for a in answers.values())
        assert timed_out, "no trickling client was told 408"
        assert b"request headers did not arrive within 5 s" in timed_out[0]
        # and the server still serves
        assert httpx.get(server.url + "/health", timeout=10).status_code == 200


def test_a_trickled_body_is_answered_408_after_the_body_timeout(registry: Any) -> None:
    with serving(registry, body_timeout_s=1.0) as server, connect(server) as sock:
        started = time.monotonic()
        sock.sendall(embed_request(BODY, complete=False))
        for _ in range(20):  # a byte every 0.1 s: still short of Content-Length at the end
            try:
                sock.sendall(b" ")
            except OSError:
                break
            time.sleep(0.1)
        answer = read_response(sock)
        assert time.monotonic() - started >= 1.0
        assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer
        assert b"connection: close" in answer
        assert b"request body did not arrive within 1 s" in answer


def test_uvicorns_h11_protocol_gets_the_same_deadlines(registry: Any) -> None:
    with serving(registry, "h11", header_timeout_s=0.5, body_timeout_s=0.5) as server:
        with connect(server) as sock:
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
            assert read_one_response(sock)[0] == 200  # the deadline ended with the headers
            time.sleep(0.7)
            sock.sendall(b"GET /health HTTP/1.1\r\n")
            answer = read_response(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"request headers did not arrive within 0.5 s" in answer
        with connect(server) as sock:
            sock.sendall(embed_request(BODY, complete=False))
            answer = read_response(sock)
            assert answer.startswith(b"HTTP/1.1 408 "), answer
            assert b"request body did not arrive within 0.5 s" in answer


def test_an_unknown_http_protocol_is_refused(registry: Any) -> None:
    with pytest.raises(ConfigurationError, match="http='wsproto'"):
        BackgroundServer(create_app(ServerConfig(device="cpu"), registry=registry), http="wsproto")


def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    registry: Any,
) -> None:
    with serving(registry, header_timeout_s=0.5) as server, connect(server) as sock:
        assert read_response(sock, timeout=10) == b""  # closed, with nothing to answer


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_timeout(
    registry: Any,
) -> None:
    with serving(registry, keep_alive_timeout_s=0.5) as server, connect(server) as sock:
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
        status, headers, _ = read_one_response(sock)
        assert status == 200 and headers.get("connection") != "close"
        assert read_response(sock, timeout=10) == b""


def test_open_connections_are_bounded(registry: Any) -> None:
    with serving(registry, max_connections=4) as server:
        held = [connect(server) for _ in range(4)]
        with connect(server) as refused:
            answer = read_response(refused)
        assert answer.startswith(b"HTTP/1.1 503 Service Unavailable\r\n"), answer
        assert b"too many open connections" in answer
        held.pop().close()
        deadline = time.monotonic() + 10
        while True:  # the server notices the close on its next loop turn
            reply = httpx.get(server.url + "/health", timeout=10)
            if reply.status_code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert reply.status_code == 200
        for sock in held:
            sock.close()


# ----------------------------------------------------------------------------- shutdown


def test_draining_answers_health_503_and_lets_a_request_in_progress_finish(
    registry: Any,
) -> None:
    server = BackgroundServer(
        create_app(ServerConfig(device="cpu", graceful_timeout_s=20.0), registry=registry)
    ).start()
    state = server.app.state.server
    in_progress, idle = connect(server), connect(server)
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    assert read_one_response(idle)[0] == 200
    in_progress.sendall(embed_request(BODY, complete=False))
    time.sleep(0.2)  # the headers are in: the request is in progress

    stopping = threading.Thread(target=server.stop)
    started = time.monotonic()
    stopping.start()
    deadline = time.monotonic() + 10
    while state.ready and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not state.ready
    with pytest.raises(OSError):  # no longer accepting
        for _ in range(100):
            socket.create_connection((server.host, server.port), timeout=1).close()
            time.sleep(0.05)
    # a pooled connection asking /health is told 503 and closed
    idle.sendall(b"GET /health HTTP/1.1\r\nHost: test\r\n\r\n")
    status, headers, _ = read_one_response(idle)
    assert status == 503 and headers["connection"] == "close"
    # the request in progress finishes
    in_progress.sendall(BODY[len(BODY) // 2 :])
    status, headers, body = read_one_response(in_progress)
    assert status == 200, body
    assert headers["connection"] == "close"
    assert len(json.loads(body)[0]) == 384
    stopping.join(30)
    assert not stopping.is_alive()
    assert time.monotonic() - started < 20.0  # done when the drain is, not at the timeout
    in_progress.close()
    idle.close()


def test_a_stalled_client_is_closed_at_the_graceful_timeout(registry: Any) -> None:
    graceful = 1.5
    server = BackgroundServer(
        create_app(
            ServerConfig(device="cpu", graceful_timeout_s=graceful, body_timeout_s=120.0),
            registry=registry,
        )
    ).start()
    with connect(server) as stalled:
        stalled.sendall(embed_request(BODY, complete=False))
        time.sleep(0.2)
        started = time.monotonic()
        server.stop()
        stopped_after = time.monotonic() - started
        assert read_response(stalled, timeout=5) == b""  # dropped, not answered
    assert stopped_after >= graceful
    assert stopped_after < graceful + 5.0  # the app's own shutdown after the timeout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a child is POSIX")
def test_ctrl_c_on_serve_with_a_stalled_client_exits_within_the_graceful_timeout() -> None:
    graceful = 2.0
    port = _free_port()
    command = [
        sys.executable, "-m", "ipfs_accelerate.cli", "serve", "--device", "cpu",
        "--port", str(port), "--graceful-timeout", str(graceful), "--body-timeout", "120",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}  # the bundled MiniLM: no network
    child = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert child.poll() is None, child.communicate()[0]
            assert time.monotonic() < deadline, "serve did not start"
            time.sleep(0.2)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as stalled:
            stalled.sendall(embed_request(BODY, complete=False))
            time.sleep(0.3)
            started = time.monotonic()
            child.send_signal(signal.SIGINT)
            output, _ = child.communicate(timeout=graceful + 30)
            exited_after = time.monotonic() - started
            assert read_response(stalled, timeout=5) == b""
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, output
    assert exited_after < graceful + 5.0, output  # the app's own shutdown after the timeout
    assert "still busy after the 2 s graceful timeout" in output
    # the dropped request is one line in uvicorn's format, not a cancellation traceback
    assert "POST /embed dropped at shutdown, after the graceful timeout" in output, output
    assert "Traceback" not in output and "CancelledError" not in output, output
