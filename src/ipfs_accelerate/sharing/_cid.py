"""Content identifiers: the IPFS CID of a tensor's bytes.

A content id is exactly what ``ipfs add`` gives a file holding the tensor's bytes, under a
UnixFS profile of IPIP-499 (default ``unixfs-v1-2025``; see ipfs_accelerate.content and
docs/ipfs.md). Under the default profile a tensor of at most 1 MiB is one raw block: CIDv1,
the ``raw`` codec (0x55), a sha2-256 multihash, base32 (``bafkrei...``, binary
``0x01 0x55 0x12 0x20 <sha256 digest>``); a larger one is the dag-pb root of its 1 MiB chunks
(``bafybei...``). :func:`cid_from_digest` / :func:`digest_from_cid` convert between a digest
and the raw-block form only.

A tensor's bytes are its elements in row-major (C) order, little-endian, each of its dtype's
size (bool: one byte, 0 or 1), which is also how safetensors stores a tensor: the content id
of a weight is the CID ``ipfs add`` gives its byte range of the checkpoint file (not the
file's CID, which covers the header and every tensor).
"""

from __future__ import annotations

import base64
import sys
from typing import Any

import numpy as np

from ipfs_accelerate.content import DEFAULT_PROFILE, Profile, import_bytes
from ipfs_accelerate.content._cid import decode_varint, encode_varint
from ipfs_accelerate.errors import InvalidArgumentError
from ipfs_accelerate.tensor import Tensor

__all__ = [
    "CID_VERSION",
    "RAW_CODEC",
    "SHA2_256",
    "cid_from_digest",
    "content_id",
    "digest_from_cid",
    "host_bytes",
]

CID_VERSION = 1
RAW_CODEC = 0x55
SHA2_256 = 0x12
_DIGEST_SIZE = 32
_MULTIBASE_BASE32 = "b"


def _read_varint(data: bytes, pos: int, cid: str) -> tuple[int, int]:
    found = decode_varint(data, pos)
    if found is None:
        raise InvalidArgumentError(f"content id {cid!r}: malformed varint in the binary CID")
    return found


_PREFIX = b"".join(map(encode_varint, (CID_VERSION, RAW_CODEC, SHA2_256, _DIGEST_SIZE)))


def cid_from_digest(digest: bytes) -> str:
    """The CIDv1 (raw codec, sha2-256, base32 ``b...``) of the block whose sha256 is ``digest``."""
    if len(digest) != _DIGEST_SIZE:
        raise InvalidArgumentError(
            f"cid_from_digest: a sha2-256 digest has {_DIGEST_SIZE} bytes, got {len(digest)}"
        )
    encoded = base64.b32encode(_PREFIX + bytes(digest)).decode("ascii").lower().rstrip("=")
    return _MULTIBASE_BASE32 + encoded


def digest_from_cid(cid: str) -> bytes:
    """The sha256 digest inside a content id made by :func:`content_id`.

    Raises InvalidArgumentError naming the id when it is not a base32 CIDv1 of a raw block
    with a sha2-256 multihash (other codecs, hashes and bases are not content ids here).
    """
    if not isinstance(cid, str) or not cid.startswith(_MULTIBASE_BASE32):
        raise InvalidArgumentError(
            f"content id {cid!r}: expected a multibase base32 string starting with 'b'"
        )
    body = cid[1:].upper()
    try:
        raw = base64.b32decode(body + "=" * (-len(body) % 8))
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        raise InvalidArgumentError(f"content id {cid!r}: not valid base32") from None
    version, pos = _read_varint(raw, 0, cid)
    codec, pos = _read_varint(raw, pos, cid)
    hash_code, pos = _read_varint(raw, pos, cid)
    size, pos = _read_varint(raw, pos, cid)
    if (version, codec, hash_code, size) != (CID_VERSION, RAW_CODEC, SHA2_256, _DIGEST_SIZE):
        raise InvalidArgumentError(
            f"content id {cid!r}: CIDv{version} codec 0x{codec:x} multihash 0x{hash_code:x} "
            f"({size} bytes); expected CIDv1, raw (0x55), sha2-256 (0x12, 32 bytes)"
        )
    digest = raw[pos:]
    if len(digest) != _DIGEST_SIZE:
        raise InvalidArgumentError(
            f"content id {cid!r}: digest has {len(digest)} bytes, expected {_DIGEST_SIZE}"
        )
    if cid_from_digest(digest) != cid:  # catches upper case and non-canonical padding bits
        raise InvalidArgumentError(f"content id {cid!r}: not in canonical lower-case base32")
    return digest


def host_bytes(data: Tensor | np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """The canonical bytes of ``data`` as a flat uint8 array: row-major, little-endian.

    On CPU this is a view of the tensor's memory when it is contiguous (no copy); a strided
    tensor is made contiguous once, a big-endian host swaps bytes once, and a tensor on a
    device is read back to the host (its only copy).
    """
    array = data.numpy() if isinstance(data, Tensor) else data
    array = np.ascontiguousarray(array)
    if array.dtype.byteorder == ">" or (array.dtype.byteorder == "=" and sys.byteorder == "big"):
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.reshape(-1).view(np.uint8)


def content_id(
    data: Tensor | np.ndarray[Any, Any] | bytes | bytearray | memoryview,
    *,
    profile: str | Profile = DEFAULT_PROFILE,
) -> str:
    """The CID ``ipfs add`` gives ``data``'s bytes under ``profile`` (see the module
    docstring for the byte layout).

    ``data`` is a Tensor (any backend), a numpy array, or raw bytes. The bytes are hashed once
    and, on CPU, without copying them; dtype and shape are not part of the id (equal bytes give
    equal ids), so compare those separately when they matter.
    """
    if isinstance(data, bytes | bytearray | memoryview):
        view = memoryview(data)
    elif isinstance(data, Tensor | np.ndarray):
        if isinstance(data, np.ndarray) and data.dtype.kind not in "biuf":
            raise InvalidArgumentError(
                f"content_id: numpy dtype {data.dtype} has no defined byte layout; "
                "pass a numeric array"
            )
        view = host_bytes(data).data
    else:
        raise InvalidArgumentError(
            f"content_id: expected a Tensor, numpy array or bytes, got {type(data).__name__}"
        )
    return str(import_bytes(view, profile=profile).cid)
