"""CIDs: versions 0 and 1, multibase base32 / base58btc, sha2-256 multihashes.

A CIDv0 is a bare sha2-256 multihash (``0x12 0x20 <digest>``) of a dag-pb block, written in
base58btc (``Qm...``). A CIDv1 is ``varint(1) varint(codec) multihash``, written in multibase:
base32 lower case (``b...``) by default. Only the codecs and the hash that UnixFS uses are
handled (dag-pb 0x70, raw 0x55, sha2-256 0x12); anything else is refused by name, so a CID that
this package cannot verify is never taken on trust.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from typing import Final

from ipfs_accelerate.errors import (
    BlockVerificationError,
    InvalidCIDError,
    UnsupportedCIDError,
)

__all__ = [
    "CID",
    "DAG_PB",
    "RAW",
    "SHA2_256",
    "decode_varint",
    "encode_varint",
    "verify_block",
]

DAG_PB: Final = 0x70
RAW: Final = 0x55
SHA2_256: Final = 0x12
_DIGEST_SIZE: Final = 32
_CODEC_NAMES: Final = {DAG_PB: "dag-pb", RAW: "raw"}
_BASE58_ALPHABET: Final = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_BASE58_INDEX: Final = {char: index for index, char in enumerate(_BASE58_ALPHABET)}
_MAX_CID_TEXT: Final = 256  # the longest CID handled here is 59 characters


def encode_varint(value: int) -> bytes:
    """Unsigned LEB128 (multiformats' unsigned-varint, also protobuf's varint)."""
    if value < 0:
        raise ValueError(f"varint of a negative number {value}")
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(
    data: bytes | memoryview, pos: int, max_bytes: int = 9
) -> tuple[int, int] | None:
    """``(value, next_pos)`` of the varint at ``pos``; None when it is truncated or longer
    than ``max_bytes`` (9: multiformats' unsigned-varint limit; protobuf's is 10)."""
    value = shift = 0
    end = min(len(data), pos + max_bytes)
    while pos < end:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    return None


def _base58_encode(raw: bytes) -> str:
    number = int.from_bytes(raw, "big")
    chars: list[str] = []
    while number:
        number, remainder = divmod(number, 58)
        chars.append(_BASE58_ALPHABET[remainder])
    zeros = len(raw) - len(raw.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(chars))


def _base58_decode(text: str, original: str) -> bytes:
    number = 0
    for char in text:
        digit = _BASE58_INDEX.get(char)
        if digit is None:
            raise InvalidCIDError(f"CID {original!r}: {char!r} is not a base58btc character")
        number = number * 58 + digit
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


def _base32_decode(text: str, original: str) -> bytes:
    if not text.isascii():
        raise InvalidCIDError(f"CID {original!r}: not valid base32")
    try:
        return base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except ValueError:  # binascii.Error is a ValueError
        raise InvalidCIDError(f"CID {original!r}: not valid base32") from None


@dataclass(frozen=True, slots=True)
class CID:
    """A content identifier: version, codec (multicodec) and the sha2-256 digest.

    ``str(cid)`` is the canonical text (base58btc for v0, base32 for v1); ``cid.binary`` the
    binary form that dag-pb links and CAR files carry. Build one with :meth:`parse`,
    :meth:`decode` or :meth:`for_block`.
    """

    version: int
    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise UnsupportedCIDError(f"CID version {self.version} is not 0 or 1")
        if self.codec not in _CODEC_NAMES:
            raise UnsupportedCIDError(
                f"CID codec 0x{self.codec:x} is not supported (dag-pb 0x70 or raw 0x55)"
            )
        if self.version == 0 and self.codec != DAG_PB:
            raise UnsupportedCIDError(
                f"a CIDv0 is always dag-pb, got codec 0x{self.codec:x} ({self.codec_name})"
            )
        if len(self.digest) != _DIGEST_SIZE:
            raise InvalidCIDError(
                f"a sha2-256 digest has {_DIGEST_SIZE} bytes, got {len(self.digest)}"
            )

    # --------------------------------------------------------------- building

    @classmethod
    def for_block(
        cls, data: bytes | bytearray | memoryview, codec: int, version: int = 1
    ) -> CID:
        """The CID of ``data`` (sha2-256) as a block of ``codec``."""
        return cls(version, codec, hashlib.sha256(data).digest())

    @classmethod
    def parse(cls, text: str) -> CID:
        """A CID from its text: ``Qm...`` (v0), or multibase ``b``/``B`` (base32) or ``z``
        (base58btc). Raises InvalidCIDError / UnsupportedCIDError naming ``text``."""
        if not isinstance(text, str):
            raise InvalidCIDError(f"a CID is text, got {type(text).__name__}")
        if not text or len(text) > _MAX_CID_TEXT:
            shown = text if len(text) <= 64 else text[:64] + "..."
            raise InvalidCIDError(f"CID {shown!r}: length {len(text)} is not a CID's")
        if len(text) == 46 and text.startswith("Qm"):
            return cls._from_bytes_whole(_base58_decode(text, text), text)
        prefix, body = text[0], text[1:]
        if (prefix == "b" and body == body.lower()) or (prefix == "B" and body == body.upper()):
            raw = _base32_decode(body, text)
        elif prefix == "z":
            raw = _base58_decode(body, text)
        else:
            raise InvalidCIDError(
                f"CID {text!r}: unsupported multibase prefix {prefix!r} "
                "(expected 'b' base32, 'z' base58btc, or a CIDv0 'Qm...')"
            )
        cid = cls._from_bytes_whole(raw, text)
        if cid.version == 0:
            raise InvalidCIDError(f"CID {text!r}: a CIDv0 is never multibase-prefixed")
        return cid

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> CID:
        """A CID from its binary form (all of ``data``)."""
        return cls._from_bytes_whole(bytes(data), None)

    @classmethod
    def read(cls, data: bytes | memoryview, pos: int = 0) -> tuple[CID, int]:
        """The binary CID starting at ``data[pos]`` and the position after it (CAR sections
        hold a CID followed by the block)."""
        name = f"binary CID at offset {pos}"
        if len(data) >= pos + 2 and data[pos] == SHA2_256 and data[pos + 1] == _DIGEST_SIZE:
            end = pos + 2 + _DIGEST_SIZE
            if len(data) < end:
                raise InvalidCIDError(f"{name}: truncated CIDv0 multihash")
            return cls(0, DAG_PB, bytes(data[pos + 2 : end])), end
        fields: list[int] = []
        cursor = pos
        for label in ("version", "codec", "multihash code", "digest length"):
            decoded = decode_varint(data, cursor)
            if decoded is None:
                raise InvalidCIDError(f"{name}: malformed or truncated {label} varint")
            value, cursor = decoded
            fields.append(value)
        version, codec, hash_code, size = fields
        if version != 1:
            raise UnsupportedCIDError(f"{name}: CID version {version} (only 0 and 1 exist)")
        if hash_code != SHA2_256:
            raise UnsupportedCIDError(
                f"{name}: multihash 0x{hash_code:x} is not supported (only sha2-256 0x12)"
            )
        if size != _DIGEST_SIZE:
            raise InvalidCIDError(f"{name}: sha2-256 digest length {size}, expected 32")
        end = cursor + size
        if len(data) < end:
            raise InvalidCIDError(f"{name}: digest truncated ({len(data) - cursor} of {size})")
        if codec not in _CODEC_NAMES:
            raise UnsupportedCIDError(
                f"{name}: codec 0x{codec:x} is not supported (dag-pb 0x70 or raw 0x55)"
            )
        return cls(1, codec, bytes(data[cursor:end])), end

    @classmethod
    def _from_bytes_whole(cls, raw: bytes, text: str | None) -> CID:
        shown = repr(text) if text is not None else f"0x{raw[:48].hex()}"
        try:
            cid, end = cls.read(raw, 0)
        except InvalidCIDError as exc:
            detail = str(exc).split(": ", 1)[-1]
            raise type(exc)(f"CID {shown}: {detail}") from None
        if end != len(raw):
            raise InvalidCIDError(f"CID {shown}: {len(raw) - end} bytes after the digest")
        return cid

    # --------------------------------------------------------------- rendering

    @property
    def binary(self) -> bytes:
        """The binary CID (what dag-pb links and CAR sections hold)."""
        multihash = bytes((SHA2_256, _DIGEST_SIZE)) + self.digest
        if self.version == 0:
            return multihash
        return bytes((1,)) + encode_varint(self.codec) + multihash

    @property
    def multihash(self) -> bytes:
        return bytes((SHA2_256, _DIGEST_SIZE)) + self.digest

    @property
    def codec_name(self) -> str:
        return _CODEC_NAMES[self.codec]

    def encode(self, base: str = "base32") -> str:
        """The text form: ``base32`` (``b...``) or ``base58btc`` (``z...``); a CIDv0 is always
        its bare base58btc (``Qm...``)."""
        if self.version == 0:
            if base not in ("base58btc", "base32"):
                raise InvalidCIDError(f"unknown multibase {base!r} (base32 or base58btc)")
            return _base58_encode(self.binary)
        if base == "base32":
            return "b" + base64.b32encode(self.binary).decode("ascii").lower().rstrip("=")
        if base == "base58btc":
            return "z" + _base58_encode(self.binary)
        raise InvalidCIDError(f"unknown multibase {base!r} (base32 or base58btc)")

    def to_v1(self) -> CID:
        return CID(1, self.codec, self.digest)

    def __str__(self) -> str:
        return self.encode()

    def __repr__(self) -> str:
        return f"CID({self.encode()!r})"


def verify_block(cid: CID, data: bytes | bytearray | memoryview) -> None:
    """Raise BlockVerificationError unless ``data`` hashes to ``cid``'s digest."""
    if hashlib.sha256(data).digest() != cid.digest:
        raise BlockVerificationError(
            f"block {cid}: its {len(data)} bytes do not hash to the CID's sha2-256 digest"
        )
