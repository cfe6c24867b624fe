"""S3 Kit against a real S3-protocol server on loopback: two moto server-mode instances
(ThreadedMotoServer) in this process, which share one store (two gateways to the same
data, as the kit's multiplexing assumes), started once for the module. Faults are injected
by a proxy in front of one of them (tests/fakes/s3_proxy.py)."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ipfs_accelerate.api_backends import APIBackend, create_api_backend, find_compatible_backend
from ipfs_accelerate.errors import (
    ConfigurationError,
    InvalidArgumentError,
    ObjectNotFoundError,
    StorageAuthError,
    StorageError,
    StorageUnavailableError,
    UnsupportedOpError,
)
from ipfs_accelerate.storage import (
    S3Kit,
    fetch_s3_prefix,
    fetch_s3_prefix_sync,
    parse_s3_uri,
)

from ..api_backends.conftest import run
from ..fakes.s3_proxy import S3FaultProxy

pytestmark = pytest.mark.timeout(60)

MiB = 1024 * 1024
KEYS = {
    "accessKey": "AKIATESTKEY000000001",
    "secretKey": "test-secret-key-do-not-print",
    "region": "us-east-1",
}
RESILIENCE = {
    "initial_backoff": 0.001,
    "max_backoff": 0.004,
    "jitter": 0.0,
    "connect_timeout": 2.0,
    "timeout": 10.0,
    "breaker": {"failure_threshold": 3, "min_calls": 50, "window_size": 50, "cooldown": 30.0},
}
SMALL_PARTS = {
    "multipart_threshold": 5 * MiB,
    "part_size": 5 * MiB,
    "multipart_copy_threshold": 6 * MiB,
    "copy_part_size": 5 * MiB,
}


@pytest.fixture(scope="module")
def moto() -> Iterator[tuple[str, str]]:
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    servers = [ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False) for _ in range(2)]
    for server in servers:
        server.start()
    urls = [f"http://127.0.0.1:{s._server.port}" for s in servers]  # type: ignore[union-attr]
    try:
        yield urls[0], urls[1]
    finally:
        for server in servers:
            server.stop()


def make_kit(*endpoints: Any, **cfg: Any) -> S3Kit:
    transfer = cfg.pop("transfer", SMALL_PARTS)
    resilience = {**RESILIENCE, **cfg.pop("resilience", {})}
    return S3Kit(
        metadata={"s3cfg": {**KEYS, "endpoints": list(endpoints), **cfg}, "resilience": resilience},
        transfer=transfer,
    )


def with_kit(
    endpoints: list[Any],
    test: Callable[[S3Kit], Awaitable[None]],
    bucket: str | None = None,
    **cfg: Any,
) -> None:
    async def body() -> None:
        kit = make_kit(*endpoints, **cfg)
        try:
            if bucket:
                await kit.create_bucket(bucket)
            await test(kit)
        finally:
            await kit.aclose()

    run(body(), 50)


def blob(size: int, seed: int = 0) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest() * 64
        counter += 1
    return bytes(out[:size])


def attempts(kit: S3Kit) -> list[int]:
    return [e.metrics.requests for e in kit.s3_endpoints]


# ---------------------------------------------------------------- operations


def test_roundtrip_small_and_multipart(moto: tuple[str, str], tmp_path: Path) -> None:
    async def test(kit: S3Kit) -> None:
        info = await kit.upload_bytes(
            "roundtrip",
            "small.txt",
            b"hello s3",
            content_type="text/plain",
            metadata={"owner": "me"},
        )
        assert info.size == 8
        head = await kit.head("roundtrip", "small.txt")
        assert (head.size, head.content_type, head.metadata) == (8, "text/plain", {"owner": "me"})
        assert await kit.download_bytes("roundtrip", "small.txt") == b"hello s3"

        data = blob(11 * MiB + 123)
        source = tmp_path / "weights.bin"
        source.write_bytes(data)
        seen: list[tuple[int, int | None]] = []
        info = await kit.upload_file(
            "roundtrip",
            "big/weights.bin",
            source,
            progress=lambda done, total: seen.append((done, total)),
        )
        assert (
            info.size == len(data) and info.etag is not None and info.etag.strip('"').endswith("-3")
        )  # three parts
        assert (
            [d for d, _ in seen] == sorted(d for d, _ in seen)
            and seen[-1] == (len(data), len(data))
            and len(seen) == 3
        )
        target = tmp_path / "out" / "weights.bin"
        got: list[int] = []
        downloaded = await kit.download_file(
            "roundtrip", "big/weights.bin", target, progress=lambda done, total: got.append(done)
        )
        assert target.read_bytes() == data and downloaded.size == len(data) and got[-1] == len(data)
        assert sorted(p.name for p in target.parent.iterdir()) == [
            "weights.bin"
        ]  # no temporary file left
        # unknown-size stream: multipart starts once the threshold is passed
        stream_info = await kit.upload_fileobj(
            "roundtrip", "big/stream.bin", io.BytesIO(data[: 6 * MiB])
        )
        assert (
            stream_info.size == 6 * MiB
            and await kit.download_bytes("roundtrip", "big/stream.bin") == data[: 6 * MiB]
        )
        assert await kit.incomplete_uploads("roundtrip") == []

    with_kit([moto[0]], test, bucket="roundtrip")


def test_list_pagination_copy_delete(moto: tuple[str, str]) -> None:
    async def test(kit: S3Kit) -> None:
        for i in range(5):
            await kit.upload_bytes("listing", f"dir/{i}.txt", f"file {i}".encode())
        await kit.upload_bytes("listing", "dir/sub/x.txt", b"x")
        await kit.upload_bytes("listing", "other.txt", b"o")
        before = kit.metrics.requests
        keys = [o.key async for o in kit.list_objects("listing", "dir/", page_size=2)]
        assert keys == [f"dir/{i}.txt" for i in range(5)] + ["dir/sub/x.txt"]
        assert kit.metrics.requests - before == 3  # three pages of two
        shallow = await kit.list_all("listing", "dir/", delimiter="/")
        assert [o.key for o in shallow if o.is_prefix] == ["dir/sub/"] and len(
            [o for o in shallow if not o.is_prefix]
        ) == 5
        await kit.copy("listing", "dir/1.txt", "listing", "copied/1.txt")
        assert await kit.download_bytes("listing", "copied/1.txt") == b"file 1"
        await kit.delete("listing", "dir/1.txt")
        assert not await kit.exists("listing", "dir/1.txt")
        await kit.delete("listing", "dir/1.txt")  # deleting what is gone is not an error in S3
        # a large object is copied part by part on the server
        data = blob(11 * MiB, seed=3)
        await kit.upload_bytes("listing", "big.bin", data)
        copied = await kit.copy("listing", "big.bin", "listing", "big-copy.bin")
        assert copied.etag is not None and copied.etag.strip('"').endswith("-3")
        assert (
            hashlib.sha256(await kit.download_bytes("listing", "big-copy.bin")).digest()
            == hashlib.sha256(data).digest()
        )

    with_kit([moto[0]], test, bucket="listing")


def test_presigned_urls(moto: tuple[str, str]) -> None:
    async def test(kit: S3Kit) -> None:
        import aiohttp

        await kit.upload_bytes("presign", "a.txt", b"signed content")
        get_url = await kit.presigned_url("presign", "a.txt", expires_in=60)
        put_url = await kit.presigned_url("presign", "b.txt", method="put", expires_in=60)
        assert "X-Amz-Signature=" in get_url and "test-secret-key" not in get_url
        async with aiohttp.ClientSession() as session:
            async with session.get(get_url) as resp:
                assert resp.status == 200 and await resp.read() == b"signed content"
            async with session.put(put_url, data=b"uploaded by url") as resp:
                assert resp.status == 200
        assert await kit.download_bytes("presign", "b.txt") == b"uploaded by url"
        with pytest.raises(InvalidArgumentError):
            await kit.presigned_url("presign", "a.txt", method="post")

    with_kit([moto[0]], test, bucket="presign")


# ---------------------------------------------------------------- failures midway


class BrokenReader(io.RawIOBase):
    """A source that dies after ``limit`` bytes (a disk error, a dropped pipe)."""

    def __init__(self, data: bytes, limit: int) -> None:
        self.data, self.limit, self.pos = data, limit, 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        if self.pos >= self.limit:
            raise OSError("source device went away")
        chunk = self.data[self.pos : min(self.pos + n, self.limit)]
        self.pos += len(chunk)
        return chunk


def test_upload_failing_midway_leaves_no_object(moto: tuple[str, str]) -> None:
    async def body() -> None:
        async with S3FaultProxy(moto[0]) as proxy:
            kit = make_kit(proxy.url)
            try:
                await kit.create_bucket("midway")
                data = blob(16 * MiB, seed=1)
                # 1. the source breaks after two parts
                with pytest.raises(OSError, match="went away"):
                    await kit.upload_fileobj(
                        "midway", "model.bin", BrokenReader(data, 11 * MiB), size=len(data)
                    )
                assert not await kit.exists("midway", "model.bin")
                assert await kit.incomplete_uploads("midway") == []
                # 2. the server keeps failing part 2: retried, then the whole upload is aborted
                proxy.inject(status=500, path="partNumber=2", times=100)
                with pytest.raises(StorageUnavailableError, match="upload_part"):
                    await kit.upload_bytes("midway", "model.bin", data)
                assert (
                    len([r for r in proxy.requests if r.query.get("partNumber") == "2"]) == 3
                )  # 1 + 2 retries
                assert any(
                    r.method == "DELETE" and "uploadId" in r.query for r in proxy.requests
                )  # aborted
                proxy.faults.clear()
                kit.s3_endpoints[0].breaker.reset()  # three failures in a row may have opened it
                assert not await kit.exists("midway", "model.bin")
                assert await kit.incomplete_uploads("midway") == []

                # 3. a progress callback that raises stops the upload the same way
                def stop_after_first(done: int, total: int | None) -> None:
                    raise RuntimeError("user cancelled")

                with pytest.raises(RuntimeError, match="user cancelled"):
                    await kit.upload_bytes("midway", "model.bin", data, progress=stop_after_first)
                assert (
                    not await kit.exists("midway", "model.bin")
                    and await kit.incomplete_uploads("midway") == []
                )
                # and a clean retry succeeds
                await kit.upload_bytes("midway", "model.bin", data)
                assert (await kit.head("midway", "model.bin")).size == len(data)
            finally:
                await kit.aclose()

    run(body(), 50)


def test_abort_is_sent_through_an_open_circuit(moto: tuple[str, str]) -> None:
    async def body() -> None:
        async with S3FaultProxy(moto[0]) as proxy:
            kit = make_kit(
                proxy.url, resilience={"breaker": {**RESILIENCE["breaker"], "failure_threshold": 1}}
            )
            try:
                await kit.create_bucket("opencircuit")
                proxy.inject(status=500, path="partNumber=2", times=100)
                with pytest.raises(StorageUnavailableError):
                    await kit.upload_bytes("opencircuit", "model.bin", blob(16 * MiB, seed=4))
                assert kit.s3_endpoints[0].breaker.state == "open"  # the first failure opened it
                assert any(r.method == "DELETE" and "uploadId" in r.query for r in proxy.requests)
                kit.s3_endpoints[0].breaker.reset()
                assert await kit.incomplete_uploads("opencircuit") == []
                assert not await kit.exists("opencircuit", "model.bin")
            finally:
                await kit.aclose()

    run(body(), 30)


def test_download_failing_midway_resumes_or_leaves_nothing(
    moto: tuple[str, str], tmp_path: Path
) -> None:
    async def body() -> None:
        async with S3FaultProxy(moto[0]) as proxy:
            kit = make_kit(proxy.url)
            try:
                await kit.create_bucket("dlfail")
                data = blob(3 * MiB, seed=2)
                await kit.upload_bytes("dlfail", "w.bin", data)
                proxy.inject(reset=True, path="/dlfail/w.bin", times=1)
                assert await kit.download_bytes("dlfail", "w.bin") == data  # retried
                proxy.inject(status=503, path="/dlfail/w.bin", times=100)
                target = tmp_path / "w.bin"
                with pytest.raises(StorageUnavailableError):
                    await kit.download_file("dlfail", "w.bin", target)
                assert list(tmp_path.iterdir()) == []  # neither the file nor a temporary one
            finally:
                await kit.aclose()

    run(body(), 30)


# ---------------------------------------------------------------- typed errors


def test_missing_bucket_object_and_bad_credentials(moto: tuple[str, str], tmp_path: Path) -> None:
    async def test(kit: S3Kit) -> None:
        with pytest.raises(ObjectNotFoundError, match="bucket 'no-such-bucket' does not exist"):
            await kit.download_bytes("no-such-bucket", "x")
        assert not await kit.bucket_exists("no-such-bucket")
        with pytest.raises(ObjectNotFoundError, match="s3://errors/missing.bin does not exist"):
            await kit.head("errors", "missing.bin")
        with pytest.raises(ObjectNotFoundError, match="missing.bin"):
            await kit.download_file("errors", "missing.bin", tmp_path / "missing.bin")
        assert list(tmp_path.iterdir()) == []
        with pytest.raises(KeyError):  # ObjectNotFoundError is also a KeyError
            await kit.download_bytes("errors", "missing.bin")
        assert kit.s3_endpoints[0].breaker.state == "closed"  # a 404 is an answer, not an outage

        from moto.core.authorization import enable_iam_authentication

        with enable_iam_authentication():  # moto now checks keys: ours exist nowhere
            with pytest.raises(StorageAuthError, match="InvalidAccessKeyId") as info:
                await kit.upload_bytes("errors", "k", b"v")
        assert "test-secret-key" not in str(info.value)
        assert (
            kit.s3_endpoints[0].metrics.requests >= 1
            and kit.get_stats()["failures"].get("StorageAuthError") == 1
        )

    with_kit([moto[0]], test, bucket="errors")


def test_unreachable_endpoint_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def test(kit: S3Kit) -> None:
        with pytest.raises(StorageUnavailableError, match="failed on every attempt") as info:
            await kit.head("b", "k")
        assert info.value.__cause__ is not None and "test-secret-key" not in str(info.value)

    with_kit([dead], test)


def test_object_vanishing_between_listing_and_download(
    moto: tuple[str, str], tmp_path: Path
) -> None:
    async def test(kit: S3Kit) -> None:
        for name in ("a.bin", "b.bin", "c.bin"):
            await kit.upload_bytes("vanish", f"ckpt/{name}", name.encode() * 10)
        deleted = False

        async def delete_after_first(done: int, total: int | None) -> None:
            nonlocal deleted
            if not deleted:
                deleted = True
                await kit.delete("vanish", "ckpt/c.bin")

        with pytest.raises(ObjectNotFoundError, match="ckpt/c.bin"):
            await kit.download_prefix(
                "vanish", "ckpt", tmp_path / "out", progress=delete_after_first
            )
        leftovers = [p.name for p in (tmp_path / "out").iterdir()]
        assert "c.bin" not in leftovers and not [n for n in leftovers if n.endswith(".part")]

    with_kit([moto[0]], test, bucket="vanish", transfer={**SMALL_PARTS, "download_concurrency": 1})


# ---------------------------------------------------------------- several endpoints


def test_round_robin_and_least_in_flight_multiplexing(moto: tuple[str, str]) -> None:
    async def test(kit: S3Kit) -> None:
        await kit.upload_bytes("mux", "k", b"v")
        base = attempts(kit)
        for _ in range(10):
            assert await kit.download_bytes("mux", "k") == b"v"
        assert [a - b for a, b in zip(attempts(kit), base, strict=True)] == [5, 5]
        stats = kit.get_stats()
        assert [e["circuit_state"] for e in stats["endpoints"]] == ["closed", "closed"]

    with_kit(
        [{"endpoint": moto[0], "name": "a"}, {"endpoint": moto[1], "name": "b"}], test, bucket="mux"
    )

    async def busy(kit: S3Kit) -> None:
        await kit.upload_bytes("mux2", "k", b"v")
        assert kit.s3_endpoints[0].limiter.try_acquire()  # endpoint a is busy
        try:
            base = attempts(kit)
            for _ in range(4):
                await kit.head("mux2", "k")
            assert [a - b for a, b in zip(attempts(kit), base, strict=True)] == [0, 4]
        finally:
            kit.s3_endpoints[0].limiter.release()

    with_kit(
        [{"endpoint": moto[0], "name": "a"}, {"endpoint": moto[1], "name": "b"}],
        busy,
        bucket="mux2",
        strategy="least_in_flight",
    )


def test_reads_fail_over_writes_do_not(moto: tuple[str, str]) -> None:
    async def body() -> None:
        async with S3FaultProxy(moto[0]) as proxy:
            kit = make_kit(
                {"endpoint": proxy.url, "name": "flaky"}, {"endpoint": moto[1], "name": "steady"}
            )
            try:
                await kit.create_bucket("failover")
                await kit.upload_bytes("failover", "k", b"payload")
                proxy.inject(status=503, times=1000)
                for _ in range(6):
                    assert await kit.download_bytes("failover", "k") == b"payload"
                    assert (await kit.head("failover", "k")).size == 7
                flaky, steady = kit.s3_endpoints
                assert flaky.breaker.state == "open"  # three failures in a row
                assert steady.metrics.successes >= 12
                # a write picked for the flaky endpoint is retried there, never moved
                flaky.breaker.reset()
                kit._strategy._next = 0
                steady_before = steady.metrics.requests
                with pytest.raises(StorageUnavailableError, match="put_object"):
                    await kit.upload_bytes("failover", "w", b"data")
                assert steady.metrics.requests == steady_before
                assert (
                    len([r for r in proxy.requests if r.method == "PUT" and r.path.endswith("/w")])
                    == 3
                )
            finally:
                await kit.aclose()

    run(body(), 30)


# ---------------------------------------------------------------- checkpoints from s3://


def test_fetch_s3_prefix_caches_and_refreshes(moto: tuple[str, str], tmp_path: Path) -> None:
    async def test(kit: S3Kit) -> None:
        files = {
            "config.json": b'{"model_type": "bert"}',
            "model.safetensors": blob(6 * MiB, seed=5),
            "tokenizer/vocab.txt": b"[PAD]\n[UNK]\n",
        }
        for name, data in files.items():
            await kit.upload_bytes("ckpts", f"models/bert/{name}", data)
        await kit.upload_bytes(
            "ckpts", "models/bert-large/config.json", b"{}"
        )  # a sibling prefix, not included
        path = await fetch_s3_prefix("s3://ckpts/models/bert", cache_dir=tmp_path, kit=kit)
        assert path == tmp_path / "ckpts" / "models" / "bert"
        assert {
            str(p.relative_to(path)): p.read_bytes()
            for p in path.rglob("*")
            if p.is_file() and p.name != ".s3-manifest.json"
        } == files
        gets = kit.get_stats()["requests"]
        await fetch_s3_prefix("s3://ckpts/models/bert/", cache_dir=tmp_path, kit=kit)
        assert kit.get_stats()["requests"] - gets == 1  # only the listing: nothing downloaded again
        await kit.upload_bytes(
            "ckpts", "models/bert/config.json", b'{"model_type": "bert", "v": 2}'
        )
        await fetch_s3_prefix("s3://ckpts/models/bert", cache_dir=tmp_path, kit=kit)
        assert (path / "config.json").read_bytes() == b'{"model_type": "bert", "v": 2}'
        unreachable = {
            "s3cfg": {**KEYS, "endpoint": "http://127.0.0.1:9"}
        }  # any request would fail
        offline = await fetch_s3_prefix(
            "s3://ckpts/models/bert",
            cache_dir=tmp_path,
            metadata=unreachable,
            local_files_only=True,
        )
        assert offline == path
        with pytest.raises(ObjectNotFoundError, match="not .*in the cache"):
            await fetch_s3_prefix(
                "s3://ckpts/models/other", cache_dir=tmp_path, local_files_only=True
            )
        single = await kit.download_prefix("ckpts", "models/bert/config.json", tmp_path / "single")
        assert (single / "config.json").exists()
        with pytest.raises(ObjectNotFoundError, match="no objects under"):
            await fetch_s3_prefix("s3://ckpts/models/nothing", cache_dir=tmp_path, kit=kit)
        await kit.upload_bytes("ckpts", "evil/../../../escape.txt", b"x")
        with pytest.raises(StorageError, match="outside"):
            await kit.download_prefix("ckpts", "evil", tmp_path / "evil")

    with_kit([moto[0]], test, bucket="ckpts")


def test_sync_facade_and_environment_configuration(
    moto: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAENVKEY0000000001")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "env-secret-value")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", moto[1])
    kit = create_api_backend("s3_kit", metadata={"resilience": RESILIENCE})
    assert isinstance(kit, S3Kit) and kit.s3_endpoints[0].url == moto[1]
    try:
        kit.sync.create_bucket("syncbucket")
        kit.sync.upload_bytes("syncbucket", "m/a.txt", b"sync bytes")
        assert kit.sync.download_bytes("syncbucket", "m/a.txt") == b"sync bytes"
        assert [o.key for o in kit.sync.list_objects("syncbucket", "m/")] == ["m/a.txt"]
        assert kit.sync.health().healthy
        path = fetch_s3_prefix_sync(
            "s3://syncbucket/m", cache_dir=tmp_path
        )  # a kit from the environment
        assert (path / "a.txt").read_bytes() == b"sync bytes"
    finally:
        kit.close()
    assert "env-secret-value" not in repr(kit) and "env-secret-value" not in str(kit.get_stats())


def test_configuration_errors_and_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConfigurationError, match="no credentials"):
        S3Kit(metadata={"s3cfg": {"endpoint": "http://127.0.0.1:9"}})
    kit = S3Kit(
        metadata={
            "s3cfg": {
                **KEYS,
                "endpoint": ["http://a:9000", "http://b:9000"],
                "strategy": "least_in_flight",
            }
        }
    )
    assert [e.url for e in kit.s3_endpoints] == [
        "http://a:9000",
        "http://b:9000",
    ] and kit.strategy == "least_in_flight"
    assert "test-secret-key" not in repr(kit) and "test-secret-key" not in repr(kit.metadata)
    assert not kit.is_compatible_model("gpt-4o")
    assert find_compatible_backend("gpt-4o", metadata={"s3cfg": KEYS}) is None
    # storage, not a chat/embedding backend: it composes the resilience pieces instead
    assert not isinstance(kit, APIBackend) and not hasattr(kit, "chat")
    anonymous = S3Kit(metadata={"s3cfg": {"endpoint": "http://a:9000", "anonymous": True}})
    with pytest.raises(UnsupportedOpError, match="anonymous"):
        run(anonymous.presigned_url("b", "k"))
    aws = S3Kit(metadata={"s3cfg": {**KEYS, "region": "eu-west-1"}})
    assert aws.s3_endpoints[0].url is None and aws.s3_endpoints[0].name == "aws:eu-west-1"
    with pytest.raises(ConfigurationError, match="strategy"):
        S3Kit(metadata={"s3cfg": {**KEYS, "strategy": "random"}})
    with pytest.raises(ConfigurationError, match="part_size"):
        S3Kit(metadata={"s3cfg": KEYS}, transfer={"part_size": 1024})
    assert parse_s3_uri("s3://bucket/a/b") == ("bucket", "a/b")
    with pytest.raises(InvalidArgumentError):
        parse_s3_uri("https://bucket/a")
    assert os.environ.get("AWS_ACCESS_KEY_ID") is None
