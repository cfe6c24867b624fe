"""Fetching from gateways that lie, stall or die, and from kubo's RPC API (a fake: no kubo
binary here; see tests/content/fake_gateways.py), and publishing to it."""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from ipfs_accelerate.content import (
    CID,
    DAG_PB,
    CarReader,
    DirectoryLimits,
    FilesystemBlockstore,
    MemoryBlockstore,
    PBLink,
    decode_node,
    decode_unixfs,
    encode_node,
    fetch,
    import_directory,
    publish,
)
from ipfs_accelerate.content import _sources as _sources_module
from ipfs_accelerate.errors import (
    BlockVerificationError,
    CheckpointError,
    ConfigurationError,
    ContentError,
    ContentLimitError,
    ContentPathError,
    FetchError,
    GatewayError,
    InvalidArgumentError,
    InvalidCIDError,
    UntrustedBlockError,
)
from tests.content.fake_gateways import LIES, FakeGateway, FakeKubo, dfs_blocks

CHUNK = 1024


def _tree(root: Path, seed: int) -> None:
    root.mkdir()
    rng = random.Random(seed)
    (root / "big.bin").write_bytes(rng.randbytes(20 * CHUNK + 5))
    (root / "small.txt").write_text(f"small file {seed}\n")
    (root / "sub").mkdir()
    (root / "sub" / "nested.bin").write_bytes(rng.randbytes(3 * CHUNK))



class Dag:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.blocks = MemoryBlockstore()
        self.result = import_directory(directory, chunk_size=CHUNK, blockstore=self.blocks.put)
        self.root = self.result.root.cid


@pytest.fixture(scope="module")
def dags(tmp_path_factory: pytest.TempPathFactory) -> tuple[Dag, Dag]:
    base = tmp_path_factory.mktemp("fetch-dags")
    _tree(base / "honest", 1)
    _tree(base / "other", 2)
    return Dag(base / "honest"), Dag(base / "other")


@pytest.fixture
def gateways() -> Iterator[list[FakeGateway]]:
    started: list[FakeGateway] = []
    yield started
    for gateway in started:
        gateway.close()


def _same_tree(a: Path, b: Path) -> None:
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert files_a == files_b
    for relative in files_a:
        assert (a / relative).read_bytes() == (b / relative).read_bytes()


def _only_dag_blocks(cache: Path, dag: Dag) -> int:
    """Every block in the cache verifies and belongs to the honest DAG: nothing unverified
    or foreign was kept."""
    store = FilesystemBlockstore(cache / "blocks")
    held = list(store)
    for cid in held:
        assert dag.blocks.has(cid), f"{cid} is not a block of the DAG"
        store.get(cid)  # re-verifies
    return len(held)


@pytest.mark.parametrize("lie", LIES)
def test_a_lying_gateway_is_detected_and_the_next_one_used(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path, lie: str
) -> None:
    honest, other = dags
    liar = FakeGateway(honest.blocks, lie=lie, other=other.blocks, other_root=other.root,
                       stall_seconds=1.5)  # fmt: skip
    good = FakeGateway(honest.blocks)
    gateways += [liar, good]
    result = fetch(honest.root, tmp_path / "out", gateways=[liar.url, good.url],
                   cache_dir=tmp_path / "cache", timeout=0.5, retries=0)  # fmt: skip
    _same_tree(honest.directory, tmp_path / "out")
    assert sum(liar.requests.values()) >= 1
    # the extra block is refused, but the DAG's own blocks in that CAR verified and were kept,
    # so nothing was left for the next gateway; every other lie leaves something to fetch
    assert sum(good.requests.values()) >= (0 if lie == "car-extra" else 1)
    assert len(result.errors) == 1
    error = result.errors[0]
    assert isinstance(error, GatewayError) and error.gateway == f"gateway {liar.url}"
    assert liar.url in str(error)
    if lie in ("flipped-block", "other-dag-block", "car-flipped", "car-other-dag", "car-extra",
               "car-wrong-root"):  # fmt: skip
        assert isinstance(error, UntrustedBlockError) and isinstance(error, BlockVerificationError)
        assert "bafy" in str(error) or "bafk" in str(error)  # the block (or root) named
    if lie == "html":
        assert "text/html" in str(error)
    if lie == "stall":
        assert "timed out" in str(error).lower() or "timeout" in str(error).lower()
    _only_dag_blocks(tmp_path / "cache", honest)


@pytest.mark.parametrize("lie", ["flipped-block", "car-other-dag", "car-truncated", "html"])
def test_a_lying_gateway_alone_fails_and_nothing_unverified_is_kept(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path, lie: str
) -> None:
    honest, other = dags
    liar = FakeGateway(honest.blocks, lie=lie, other=other.blocks, other_root=other.root)
    gateways.append(liar)
    with pytest.raises(FetchError) as caught:
        fetch(f"ipfs://{honest.root}", tmp_path / "out", gateways=liar.url,
              cache_dir=tmp_path / "cache", retries=0)  # fmt: skip
    assert len(caught.value.errors) == 1 and isinstance(caught.value.errors[0], GatewayError)
    assert liar.url in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]
    _only_dag_blocks(tmp_path / "cache", honest)


def test_resume_after_an_interruption_requests_no_verified_block_again(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path
) -> None:
    honest, _ = dags
    dying = FakeGateway(honest.blocks, die_after=9)
    gateways.append(dying)
    with pytest.raises(FetchError):
        fetch(honest.root, tmp_path / "out", gateways=[dying.url], cache_dir=tmp_path / "cache",
              retries=0, concurrency=1)  # fmt: skip
    verified = {str(cid.to_v1()) for cid in FilesystemBlockstore(tmp_path / "cache" / "blocks")}
    assert 5 <= len(verified) < len(list(dfs_blocks(honest.blocks, honest.root)))
    fresh = FakeGateway(honest.blocks)
    gateways.append(fresh)
    result = fetch(honest.root, tmp_path / "out", gateways=[fresh.url],
                   cache_dir=tmp_path / "cache", retries=0)  # fmt: skip
    _same_tree(honest.directory, tmp_path / "out")
    # what was sent again: a raw block, or every block under a CAR's root
    sent: set[str] = set()
    for key in fresh.requests:
        kind, text = key.split(" ", 1)
        cid = CID.parse(text)
        under = dfs_blocks(honest.blocks, cid) if kind == "car" else [(cid, b"")]
        sent |= {str(c.to_v1()) for c, _ in under}
    assert sent and not sent & verified
    everything = {str(c.to_v1()) for c, _ in dfs_blocks(honest.blocks, honest.root)}
    assert sent | verified == everything
    assert result.bytes_fetched < sum(len(d) for _, d in dfs_blocks(honest.blocks, honest.root))


def test_a_retryable_failure_is_retried_on_the_same_gateway(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path
) -> None:
    honest, _ = dags
    flaky = FakeGateway(honest.blocks, die_after=0)
    gateways.append(flaky)
    with pytest.raises(FetchError) as caught:
        fetch(honest.root, tmp_path / "out", gateways=[flaky.url], cache_dir=tmp_path / "c",
              retries=2)  # fmt: skip
    assert flaky.requests[f"raw {honest.root}"] == 3  # the first try and two retries
    assert caught.value.errors[0].retryable  # type: ignore[attr-defined]


def test_a_second_fetch_and_a_shared_file_cost_no_request(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path
) -> None:
    honest, _ = dags
    gateway = FakeGateway(honest.blocks)
    gateways.append(gateway)
    first = fetch(f"ipfs://{honest.root}/sub", gateways=[gateway.url], cache_dir=tmp_path / "c")
    assert first.requests > 0 and first.is_directory
    again = fetch(f"ipfs://{honest.root}/sub", gateways=[gateway.url], cache_dir=tmp_path / "c")
    assert (again.requests, again.bytes_fetched, again.path) == (0, 0, first.path)
    # the whole tree now: none of the sub-directory's blocks is asked for again
    before = gateway.requests.copy()
    whole = fetch(honest.root, tmp_path / "whole", gateways=[gateway.url],
                  cache_dir=tmp_path / "c")  # fmt: skip
    _same_tree(honest.directory, tmp_path / "whole")
    later = gateway.requests - before
    assert whole.requests == sum(later.values()) > 0
    sub_blocks = {str(cid) for cid, _ in dfs_blocks(honest.blocks, honest.result.cid_of("sub"))}
    assert not {key.split(" ", 1)[1] for key in later} & sub_blocks
    # a path in the cached DAG resolves without the network at all
    cached = fetch(f"ipfs://{honest.root}/sub/nested.bin", cache_dir=tmp_path / "c")
    assert cached.requests == 0
    assert cached.path.read_bytes() == (honest.directory / "sub" / "nested.bin").read_bytes()


def test_bad_input_is_refused_by_name(dags: tuple[Dag, Dag], gateways: list[FakeGateway],
                                      tmp_path: Path) -> None:  # fmt: skip
    honest, _ = dags
    gateway = FakeGateway(honest.blocks)
    gateways.append(gateway)
    with pytest.raises(InvalidCIDError, match="not-a-cid"):
        fetch("ipfs://not-a-cid", gateways=[gateway.url], cache_dir=tmp_path)
    with pytest.raises(ContentPathError, match="missing.bin"):
        fetch(f"ipfs://{honest.root}/sub/missing.bin", gateways=[gateway.url], cache_dir=tmp_path)
    with pytest.raises(ContentPathError, match="small.txt"):
        fetch(f"ipfs://{honest.root}/small.txt/x", gateways=[gateway.url], cache_dir=tmp_path)
    with pytest.raises(ContentPathError, match=r"'\.\.'"):
        fetch(f"ipfs://{honest.root}/../x", gateways=[gateway.url], cache_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="ftp://"):
        fetch(honest.root, gateways=["ftp://127.0.0.1/"], cache_dir=tmp_path)
    with pytest.raises(ConfigurationError, match="no source configured"):
        fetch(honest.root, gateways=[], cache_dir=tmp_path / "empty")
    fetch(honest.root, tmp_path / "out", gateways=[gateway.url], cache_dir=tmp_path)
    with pytest.raises(Exception, match="already exists"):
        fetch(honest.root, tmp_path / "out", gateways=[gateway.url], cache_dir=tmp_path)
    fetch(honest.root, tmp_path / "out", gateways=[gateway.url], cache_dir=tmp_path,
          overwrite=True)  # fmt: skip
    with pytest.raises(ContentError, match=r"declares \d+ bytes, more than max_bytes=1000"):
        fetch(honest.root, gateways=[gateway.url], cache_dir=tmp_path / "small", max_bytes=1000)
    # a file node whose links understate their sizes (Tsize 0) is stopped as it arrives
    node = decode_node(honest.blocks.get(honest.result.cid_of("big.bin")))
    understated = encode_node(node.data, [PBLink(link.cid, link.name, 0) for link in node.links])
    sly = CID.for_block(understated, DAG_PB, 1)
    honest.blocks.put(sly, understated)
    with pytest.raises(ContentError, match="more than max_bytes=5000 bytes of blocks"):
        fetch(f"ipfs://{sly}", gateways=[gateway.url], cache_dir=tmp_path / "s2", max_bytes=5000,
              concurrency=1)  # fmt: skip
    with pytest.raises(InvalidArgumentError, match="concurrency"):
        fetch(honest.root, gateways=[gateway.url], cache_dir=tmp_path, concurrency=0)


def test_gateways_come_from_the_environment(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    honest, _ = dags
    gateway = FakeGateway(honest.blocks)
    gateways.append(gateway)
    monkeypatch.setenv("IPFS_ACCELERATE_GATEWAYS", f"http://127.0.0.1:9, {gateway.url}")
    result = fetch(honest.root, tmp_path / "out", cache_dir=tmp_path / "c", retries=0)
    assert result.requests > 0 and len(result.errors) == 1  # port 9: refused, then the next
    _same_tree(honest.directory, tmp_path / "out")


def test_fetch_through_kubo_rpc(dags: tuple[Dag, Dag], tmp_path: Path) -> None:
    honest, _ = dags
    kubo = FakeKubo(honest.blocks)
    try:
        result = fetch(honest.root, tmp_path / "out", rpc=kubo.url, cache_dir=tmp_path / "c")
        _same_tree(honest.directory, tmp_path / "out")
        assert result.sources == (f"kubo rpc {kubo.url}",)
        commands = {command for command, _ in kubo.calls}
        assert commands == {"block/get", "dag/export"}
    finally:
        kubo.close()


def _checkpoint(tmp_path: Path) -> Path:
    directory = tmp_path / "ckpt"
    directory.mkdir()
    (directory / "config.json").write_text('{"model_type": "bert"}')
    (directory / "model.safetensors").write_bytes(bytes(range(256)) * 9000)
    return directory


def test_publish_writes_a_car_and_imports_it_into_kubo(tmp_path: Path) -> None:
    directory = _checkpoint(tmp_path)
    kubo = FakeKubo(MemoryBlockstore())
    try:
        result = publish(directory, car=tmp_path / "out.car", rpc=kubo.url)
        assert result.cid == import_directory(directory).root.cid and result.imported
        with CarReader(tmp_path / "out.car") as car:
            assert car.roots == (result.cid,)
        assert kubo.pinned == [result.cid]
        # kubo now serves it: a fetch through its RPC gives the files back
        fetched = fetch(result.cid, tmp_path / "back", rpc=kubo.url, cache_dir=tmp_path / "c")
        _same_tree(directory, fetched.path)
        v0 = publish(directory, profile="unixfs-v0-2015", rpc=kubo.url)
        assert str(v0.cid).startswith("Qm") and v0.car is None and kubo.pinned[-1] == v0.cid
    finally:
        kubo.close()


def test_publish_refuses_what_is_not_a_checkpoint(tmp_path: Path) -> None:
    (tmp_path / "plain").mkdir()
    (tmp_path / "plain" / "notes.txt").write_text("x")
    with pytest.raises(CheckpointError, match="plain"):
        publish(tmp_path / "plain")
    with pytest.raises(CheckpointError, match="nowhere"):
        publish(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="notes.txt"):
        publish(tmp_path / "plain" / "notes.txt")
    directory = _checkpoint(tmp_path)
    with pytest.raises(GatewayError, match="127.0.0.1:9"):
        publish(directory, rpc="http://127.0.0.1:9")
    assert publish(directory).cid == import_directory(directory).root.cid


def test_a_blocks_only_gateway_serves_everything_as_blocks(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path
) -> None:
    honest, _ = dags
    gateway = FakeGateway(honest.blocks, serves_cars=False)
    gateways.append(gateway)
    fetch(honest.root, tmp_path / "out", gateways=[gateway.url], cache_dir=tmp_path / "c")
    _same_tree(honest.directory, tmp_path / "out")
    raw = {key for key in gateway.requests if key.startswith("raw ")}
    assert len(raw) == len(list(dfs_blocks(honest.blocks, honest.root)))
    # only the first wave's CARs, in flight together before the first refusal came back
    cars = {key.split(" ", 1)[1] for key in gateway.requests if key.startswith("car ")}
    assert cars and cars <= {str(honest.result.cid_of(n)) for n in ("big.bin", "sub")}


def test_a_block_changed_in_the_cache_is_reported_not_served(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path
) -> None:
    honest, _ = dags
    gateway = FakeGateway(honest.blocks)
    gateways.append(gateway)
    fetch(honest.root, tmp_path / "first", gateways=[gateway.url], cache_dir=tmp_path / "c")
    store = FilesystemBlockstore(tmp_path / "c" / "blocks")
    node = honest.result.cid_of("big.bin")  # a dag-pb node, kept in the block cache
    path = store.path_of(node)
    path.write_bytes(path.read_bytes()[:-1] + b"\0")
    with pytest.raises(BlockVerificationError, match=str(node)):
        fetch(honest.root, tmp_path / "second", gateways=[gateway.url], cache_dir=tmp_path / "c")
    assert not (tmp_path / "second").exists()


def test_leaves_are_written_once_and_a_changed_output_is_not_served_as_cache(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path
) -> None:
    honest, _ = dags
    gateway = FakeGateway(honest.blocks)
    gateways.append(gateway)
    fetch(honest.root, tmp_path / "first", gateways=[gateway.url], cache_dir=tmp_path / "c")
    store = FilesystemBlockstore(tmp_path / "c" / "blocks")
    # raw leaves went straight into the output: the block cache holds only dag-pb nodes,
    # yet holds every leaf (as a verified range of the output)
    assert {cid.codec for cid in store} == {0x70}
    leaves = [c for c, _ in dfs_blocks(honest.blocks, honest.root) if c.codec == 0x55]
    assert leaves and all(store.has(leaf) for leaf in leaves)
    big = tmp_path / "first" / "big.bin"
    first_leaf = decode_node(honest.blocks.get(honest.result.cid_of("big.bin"))).links[0].cid
    assert store.get(first_leaf) == big.read_bytes()[:CHUNK]
    # the user changes their copy: that leaf is no longer held, so it is fetched again
    with big.open("r+b") as stream:
        stream.write(bytes(CHUNK))
    assert not store.has(first_leaf)
    before = gateway.requests.copy()
    second = fetch(honest.root, tmp_path / "second", gateways=[gateway.url],
                   cache_dir=tmp_path / "c")  # fmt: skip
    _same_tree(honest.directory, tmp_path / "second")
    asked = gateway.requests - before
    assert second.bytes_fetched == CHUNK and sum(asked.values()) == second.requests > 0
    assert big.read_bytes()[:CHUNK] == bytes(CHUNK)  # the user's copy is theirs


def test_a_path_through_a_hamt_directory_and_progress(
    gateways: list[FakeGateway], tmp_path: Path
) -> None:
    source = tmp_path / "many"
    source.mkdir()
    for index in range(60):
        (source / f"file-{index:02d}.txt").write_text(f"entry {index}\n" * (index + 1))
    blocks = MemoryBlockstore()
    result = import_directory(source, shard_threshold=200, blockstore=blocks.put)
    root_node = decode_node(blocks.get(result.root.cid))
    assert root_node.data is not None and decode_unixfs(root_node.data).type == 5  # a HAMT
    gateway = FakeGateway(blocks)
    gateways.append(gateway)
    one = fetch(f"ipfs://{result.root.cid}/file-17.txt", gateways=[gateway.url],
                cache_dir=tmp_path / "c")  # fmt: skip
    assert one.path.read_text() == (source / "file-17.txt").read_text()
    with pytest.raises(ContentPathError, match="file-99.txt"):
        fetch(f"ipfs://{result.root.cid}/file-99.txt", gateways=[gateway.url],
              cache_dir=tmp_path / "c")  # fmt: skip
    reports: list[tuple[str, int, int]] = []
    whole = fetch(result.root.cid, tmp_path / "out", gateways=[gateway.url],
                  cache_dir=tmp_path / "c2", progress=lambda *r: reports.append(r))  # fmt: skip
    _same_tree(source, whole.path)
    done = [r[1] for r in reports]
    assert {r[0] for r in reports} == {"fetch"} and done == sorted(done)
    assert reports[-1][1] == reports[-1][2] == whole.bytes_fetched


# the honest tree: big.bin, small.txt, sub, sub/nested.bin: 4 entries, 2 deep, 23,570 bytes
EXACT = DirectoryLimits(max_entries=4, max_bytes=20 * CHUNK + 5 + 13 + 3 * CHUNK, max_depth=2)
TOO_SMALL = [
    (DirectoryLimits(max_entries=3), "max_entries=3"),
    (DirectoryLimits(max_depth=1), r"'sub/nested.bin' is 2 levels deep.*max_depth=1"),
    (DirectoryLimits(max_bytes=20_000), r"'big.bin'.*max_bytes=20000"),
]


@pytest.mark.parametrize(("limits", "message"), TOO_SMALL)
def test_a_directory_above_the_limits_is_refused_on_import_and_publish(
    dags: tuple[Dag, Dag], tmp_path: Path, limits: DirectoryLimits, message: str
) -> None:
    honest, _ = dags
    assert import_directory(honest.directory, chunk_size=CHUNK, limits=EXACT).root.cid == (
        honest.root
    )  # a tree exactly at every limit is taken
    with pytest.raises(ContentLimitError, match=message) as caught:
        import_directory(honest.directory, chunk_size=CHUNK, limits=limits)
    assert str(honest.directory) in str(caught.value)
    assert "limits=DirectoryLimits(" in str(caught.value)  # says how to raise it
    checkpoint = _checkpoint(tmp_path)
    (checkpoint / "sub").mkdir()
    (checkpoint / "sub" / "deeper").mkdir()
    with pytest.raises(ContentLimitError, match=str(checkpoint)):
        publish(checkpoint, car=tmp_path / "x.car", limits=DirectoryLimits(max_depth=1))


@pytest.mark.parametrize(("limits", "message"), TOO_SMALL)
def test_a_fetched_directory_above_the_limits_is_refused(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path,
    limits: DirectoryLimits, message: str,
) -> None:  # fmt: skip
    honest, _ = dags
    gateway = FakeGateway(honest.blocks)
    gateways.append(gateway)
    with pytest.raises(ContentLimitError, match=message) as caught:
        fetch(honest.root, tmp_path / "out", gateways=[gateway.url], cache_dir=tmp_path / "c",
              limits=limits)  # fmt: skip
    assert str(honest.root) in str(caught.value)
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left
    # with the whole DAG cached (nothing left to fetch) the limits still hold
    fetch(honest.root, tmp_path / "full", gateways=[gateway.url], cache_dir=tmp_path / "c",
          limits=EXACT)  # fmt: skip
    _same_tree(honest.directory, tmp_path / "full")
    with pytest.raises(ContentLimitError, match=message):
        fetch(honest.root, tmp_path / "again", cache_dir=tmp_path / "c", offline=True,
              limits=limits)  # fmt: skip
    assert not (tmp_path / "again").exists()


def test_limits_themselves_are_checked(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgumentError, match="max_entries must be a positive int, got 0"):
        DirectoryLimits(max_entries=0)
    with pytest.raises(InvalidArgumentError, match="max_depth.*True"):
        DirectoryLimits(max_depth=True)
    with pytest.raises(InvalidArgumentError, match="expected a DirectoryLimits, got dict"):
        fetch(CID.for_block(b"x", 0x55, 1), cache_dir=tmp_path,
              limits={"max_entries": 1})  # type: ignore[arg-type]  # fmt: skip


def test_a_slow_gateway_is_demoted_once_measured_and_a_broken_one_skipped(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path
) -> None:
    honest, _ = dags
    slow = FakeGateway(honest.blocks, delay=0.5)  # honest, but every answer takes 0.5 s
    fast = FakeGateway(honest.blocks)
    gateways.extend([slow, fast])
    names = {slow.url: f"gateway {slow.url}", fast.url: f"gateway {fast.url}"}

    def used(number: int, **options: object) -> tuple[str, ...]:
        result = fetch(honest.root, gateways=[slow.url, fast.url],
                       cache_dir=tmp_path / f"c{number}", **options)  # type: ignore[arg-type]
        _same_tree(honest.directory, result.path)
        return result.sources

    # neither measured: configured order, so the slow one serves (and is measured)
    assert used(1) == (names[slow.url],)
    # the fast one is not measured yet: it is tried next, and measured
    assert used(2) == (names[fast.url],)
    # both measured: the fast one from now on, whatever the configured order says
    assert used(3) == (names[fast.url],) == used(4)
    assert used(5, strategy="ordered") == (names[slow.url],)  # as configured, on request

    # a gateway that keeps failing opens its breaker and is then skipped without a request
    broken = FakeGateway(honest.blocks, lie="html")
    gateways.append(broken)
    try:
        _a_broken_gateway_is_skipped(honest, broken, fast, names[fast.url], tmp_path)
    finally:  # the breaker is process-wide: a later test's gateway may get this port
        _sources_module._BREAKERS.pop(f"gateway {broken.url}", None)
    with pytest.raises(InvalidArgumentError, match="strategy must be one of .*'fastest'"):
        fetch(honest.root, gateways=[fast.url], cache_dir=tmp_path / "x", strategy="fastest")


def _a_broken_gateway_is_skipped(
    honest: Dag, broken: FakeGateway, fast: FakeGateway, fast_name: str, tmp_path: Path
) -> None:
    for attempt in range(5):  # BreakerConfig's failure_threshold
        result = fetch(honest.root, gateways=[broken.url, fast.url],
                       cache_dir=tmp_path / f"b{attempt}", strategy="ordered")  # fmt: skip
        assert isinstance(result.errors[0], GatewayError)
    asked = sum(broken.requests.values())
    result = fetch(honest.root, gateways=[broken.url, fast.url], cache_dir=tmp_path / "b5",
                   strategy="ordered")  # fmt: skip
    assert result.sources == (fast_name,) and not result.errors
    assert sum(broken.requests.values()) == asked
    with pytest.raises(FetchError, match=f"circuit breaker open for gateway {broken.url}"):
        fetch(honest.root, gateways=[broken.url], cache_dir=tmp_path / "b6")
    assert sum(broken.requests.values()) == asked


def test_limits_count_each_entry_once_across_a_failover(
    dags: tuple[Dag, Dag], gateways: list[FakeGateway], tmp_path: Path
) -> None:
    honest, other = dags
    liar = FakeGateway(honest.blocks, lie="car-truncated", other=other.blocks,
                       other_root=other.root)  # fmt: skip
    good = FakeGateway(honest.blocks)
    gateways.extend([liar, good])
    result = fetch(honest.root, tmp_path / "out", gateways=[liar.url, good.url],
                   cache_dir=tmp_path / "c", limits=EXACT, strategy="ordered")  # fmt: skip
    assert result.errors and result.sources == (f"gateway {liar.url}", f"gateway {good.url}")
    _same_tree(honest.directory, tmp_path / "out")
