"""content_id: the CIDv1 IPFS gives a raw block, checked against published vectors."""

from __future__ import annotations

import base64
import hashlib

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.sharing import cid_from_digest, content_id, digest_from_cid

# `ipfs add --raw-leaves` / multiformats' CID.create(1, raw, sha256(bytes)) of these bytes, as
# published in go-ipfs, ipfs-http-client and multiformats test suites
EMPTY_RAW_CID = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
HELLO_WORLD_RAW_CID = "bafkreifzjut3te2nhyekklss27nh3k72ysco7y32koao5eei66wof36n5e"


def test_published_vectors_for_raw_bytes() -> None:
    assert content_id(b"") == EMPTY_RAW_CID
    assert content_id(b"hello world") == HELLO_WORLD_RAW_CID
    assert content_id(bytearray(b"hello world")) == HELLO_WORLD_RAW_CID
    assert content_id(memoryview(b"hello world")) == HELLO_WORLD_RAW_CID


def test_uint8_tensor_has_the_cid_of_its_bytes() -> None:
    array = np.frombuffer(b"hello world", dtype=np.uint8)
    assert content_id(array) == HELLO_WORLD_RAW_CID
    assert content_id(ia.tensor(array)) == HELLO_WORLD_RAW_CID
    assert content_id(ia.zeros((0,), dtype="uint8")) == EMPTY_RAW_CID


def test_binary_layout_is_cidv1_raw_sha256() -> None:
    cid = content_id(b"hello world")
    assert cid.startswith("bafkrei")
    body = cid[1:].upper()
    raw = base64.b32decode(body + "=" * (-len(body) % 8))
    assert raw[:4] == bytes([0x01, 0x55, 0x12, 0x20])  # version 1, raw, sha2-256, 32 bytes
    assert raw[4:] == hashlib.sha256(b"hello world").digest()
    assert len(raw) == 36
    assert cid == cid.lower() and "=" not in cid


@pytest.mark.parametrize(
    "dtype", ["float16", "float32", "float64", "int32", "int64", "uint8", "bool"]
)
def test_tensor_bytes_are_row_major_little_endian(dtype: str) -> None:
    rng = np.random.default_rng(7)
    values = (
        rng.integers(0, 2, size=(3, 5)) if dtype == "bool" else rng.integers(-50, 50, size=(3, 5))
    )
    array = values.astype(np.dtype(dtype).newbyteorder("<") if dtype != "bool" else bool)
    expected = cid_from_digest(hashlib.sha256(array.tobytes(order="C")).digest())
    assert content_id(ia.tensor(array.astype(np.dtype(dtype)))) == expected


def test_strided_tensor_hashes_its_logical_row_major_bytes() -> None:
    t = ia.tensor(np.arange(12, dtype=np.float32).reshape(3, 4))
    transposed = t.T  # a strided view on CPU
    expected = hashlib.sha256(
        np.ascontiguousarray(np.arange(12, dtype=np.float32).reshape(3, 4).T).tobytes()
    )
    assert content_id(transposed) == cid_from_digest(expected.digest())
    assert content_id(transposed) != content_id(t)


def test_big_endian_arrays_hash_like_their_little_endian_values() -> None:
    values = np.arange(6, dtype="<i4")
    assert content_id(values.astype(">i4")) == content_id(values)


def test_equal_bytes_different_dtype_share_an_id_but_different_values_do_not() -> None:
    a = np.arange(4, dtype=np.float32)
    assert content_id(a) == content_id(a.view(np.int32))  # the id names bytes, not dtypes
    b = a.copy()
    b[3] = 3.5
    assert content_id(a) != content_id(b)


def test_digest_round_trip() -> None:
    digest = hashlib.sha256(b"weights").digest()
    assert digest_from_cid(cid_from_digest(digest)) == digest
    assert digest_from_cid(HELLO_WORLD_RAW_CID).hex() == hashlib.sha256(b"hello world").hexdigest()


def _encode(prefix: bytes, digest: bytes) -> str:
    return "b" + base64.b32encode(prefix + digest).decode().lower().rstrip("=")


@pytest.mark.parametrize(
    ("cid", "fragment"),
    [
        ("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH", "starting with 'b'"),  # CIDv0
        (HELLO_WORLD_RAW_CID.upper(), "starting with 'b'"),
        ("b" + HELLO_WORLD_RAW_CID[1:].upper(), "canonical"),
        ("bafkrei!!", "base32"),
        (HELLO_WORLD_RAW_CID[:-8], "digest has"),
        # dag-pb (0x70): a UnixFS file, not a raw block
        (_encode(bytes([0x01, 0x70, 0x12, 0x20]), bytes(32)), "codec 0x70"),
        # dag-json (0x0129, a two-byte varint)
        (_encode(bytes([0x01, 0xA9, 0x02, 0x12, 0x20]), bytes(32)), "codec 0x129"),
        # sha2-512 multihash
        (_encode(bytes([0x01, 0x55, 0x13, 0x40]), bytes(64)), "multihash 0x13"),
        (_encode(bytes([0x01, 0x55, 0x12]), b""), "varint"),
    ],
)
def test_digest_from_cid_rejects_other_cids(cid: str, fragment: str) -> None:
    with pytest.raises(InvalidArgumentError, match="content id") as info:
        digest_from_cid(cid)
    assert fragment in str(info.value)


def test_bad_inputs_raise_typed_errors() -> None:
    with pytest.raises(
        InvalidArgumentError, match="expected a Tensor, numpy array or bytes, got str"
    ):
        content_id("hello")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="numpy dtype <U1"):
        content_id(np.array(["a"]))
    with pytest.raises(InvalidArgumentError, match="32 bytes, got 5"):
        cid_from_digest(b"short")


def test_a_tensor_above_one_chunk_has_the_cid_of_its_unixfs_dag() -> None:
    """Above 1 MiB the id is the dag-pb root of `ipfs add` (unixfs-v1-2025), not one raw
    block's CID: what any IPFS node computes for the same bytes (the JS reference agrees, see
    tests/content/test_content_reference.py)."""
    from ipfs_accelerate.content import CID, import_bytes

    values = np.arange(300_000, dtype=np.float32)  # 1.2 MB: two chunks
    cid = content_id(ia.tensor(values))
    assert cid == str(import_bytes(values.tobytes()).cid)
    assert cid.startswith("bafybei") and CID.parse(cid).codec_name == "dag-pb"
    assert cid != cid_from_digest(hashlib.sha256(values.tobytes()).digest())
    v0 = content_id(values, profile="unixfs-v0-2015")
    assert v0.startswith("Qm")
    assert v0 == str(import_bytes(values.tobytes(), profile="unixfs-v0-2015").cid)
    with pytest.raises(InvalidArgumentError, match="content id"):
        digest_from_cid(cid)  # the digest form names raw blocks only
