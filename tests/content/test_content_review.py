"""Hostile DAGs (built block by block here) against the exporter and the fetcher: names that
could escape or collide, HAMTs that lie about their slots, files whose links repeat one
block into a bomb. Each is refused by name and writes nothing outside the destination."""

from __future__ import annotations

from pathlib import Path

import pytest

from ipfs_accelerate.content import (
    CID,
    DAG_PB,
    RAW,
    DirectoryLimits,
    FilesystemBlockstore,
    MemoryBlockstore,
    PBLink,
    UnixFSData,
    UnixFSType,
    encode_node,
    encode_unixfs,
    fetch,
    iter_directory,
    walk,
)
from ipfs_accelerate.content._hamt import MURMUR3_X64_64
from ipfs_accelerate.errors import ContentLimitError, DagFormatError


class _Blocks:
    """Blocks written both to a MemoryBlockstore and to a fetch cache (so an offline fetch
    exports them)."""

    def __init__(self, cache: Path) -> None:
        self.memory = MemoryBlockstore()
        self.cache = cache
        self.disk = FilesystemBlockstore(cache / "blocks")

    def put(self, data: bytes, codec: int) -> CID:
        cid = CID.for_block(data, codec)
        self.memory.put(cid, data)
        self.disk.put(cid, data)
        return cid

    def raw(self, data: bytes) -> CID:
        return self.put(data, RAW)

    def directory(self, links: list[tuple[str, CID]]) -> CID:
        pb = [PBLink(cid, name, 1) for name, cid in links]
        return self.put(encode_node(encode_unixfs(UnixFSData(UnixFSType.DIRECTORY)), pb), DAG_PB)

    def shard(self, bitfield: int, links: list[tuple[str, CID]], fanout: int = 256) -> CID:
        data = UnixFSData(
            UnixFSType.HAMT_SHARD,
            data=bitfield.to_bytes(max(1, (bitfield.bit_length() + 7) // 8), "big"),
            hash_type=MURMUR3_X64_64,
            fanout=fanout,
        )
        pb = [PBLink(cid, name, 1) for name, cid in links]
        return self.put(encode_node(encode_unixfs(data), pb), DAG_PB)

    def file(self, links: list[tuple[CID, int]]) -> CID:
        data = UnixFSData(
            UnixFSType.FILE, filesize=sum(s for _, s in links),
            blocksizes=tuple(s for _, s in links),
        )  # fmt: skip
        pb = [PBLink(cid, "", size) for cid, size in links]
        return self.put(encode_node(encode_unixfs(data), pb), DAG_PB)


def _fetch_offline(blocks: _Blocks, root: CID, dest: Path, **kwargs: object) -> object:
    return fetch(root, dest, cache_dir=blocks.cache, offline=True, **kwargs)  # type: ignore[arg-type]


def _nothing_outside(tmp_path: Path, dest: Path) -> None:
    """Only the cache and (possibly) ``dest`` exist under tmp_path: no staging folder left,
    nothing written beside them."""
    names = {p.name for p in tmp_path.iterdir()}
    assert names <= {"cache", dest.name}, names


@pytest.mark.parametrize("name", ["a\0b", "\0"])
def test_a_directory_entry_name_with_a_nul_byte_is_a_dag_format_error(
    tmp_path: Path, name: str
) -> None:
    blocks = _Blocks(tmp_path / "cache")
    root = blocks.directory([(name, blocks.raw(b"x"))])
    with pytest.raises(DagFormatError, match="unsafe"):
        list(walk(blocks.memory, root))
    with pytest.raises(DagFormatError, match="unsafe"):
        _fetch_offline(blocks, root, tmp_path / "out")
    _nothing_outside(tmp_path, tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("second", ["file", "directory"])
def test_a_directory_naming_one_entry_twice_is_refused(tmp_path: Path, second: str) -> None:
    blocks = _Blocks(tmp_path / "cache")
    first = blocks.raw(b"first")
    other = blocks.raw(b"second") if second == "file" else blocks.directory(
        [("inner", blocks.raw(b"inner"))]
    )
    root = blocks.directory([("model.bin", first), ("model.bin", other)])
    with pytest.raises(DagFormatError, match="model.bin"):
        list(walk(blocks.memory, root))
    with pytest.raises(DagFormatError, match="model.bin"):
        _fetch_offline(blocks, root, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    _nothing_outside(tmp_path, tmp_path / "out")
