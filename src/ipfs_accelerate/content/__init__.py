"""IPFS content: CIDs, UnixFS DAGs and CAR files identical to the reference implementations.

* :class:`CID`: parse, encode (base32 / base58btc), CIDv0 and v1, dag-pb and raw, sha2-256.
* :func:`import_file`, :func:`import_bytes`, :func:`import_directory`: UnixFS import with
  IPIP-499's profiles (``unixfs-v0-2015``, ``unixfs-v1-2025``) and explicit overrides; the CIDs
  equal those of the JS reference importer (``ipfs-unixfs-importer``) for the same profile.
* :class:`CarReader`, :class:`CarWriter`, :func:`write_car`, :func:`write_car_of_path`: CAR v1
  write, CAR v1/v2 read, streaming and verified block by block.
* :class:`Blockstore` (protocol), :class:`MemoryBlockstore`, :class:`FilesystemBlockstore`.
* :func:`iter_file`, :func:`iter_directory`, :func:`walk`: UnixFS read back from a blockstore.
* :func:`fetch`: verified fetch from trustless gateways / a kubo RPC API, resumable, cached
  by CID; :func:`publish`: a checkpoint directory's root CID, CAR and kubo import.
* :func:`verify_block`, :func:`decode_node`, :func:`decode_unixfs`: checking a block against its
  CID and reading dag-pb / UnixFS nodes.

See docs/ipfs.md.
"""

from __future__ import annotations

from ipfs_accelerate.content._blockstore import Blockstore, FilesystemBlockstore, MemoryBlockstore
from ipfs_accelerate.content._car import (
    MAX_BLOCK_SIZE,
    CarReader,
    CarWriter,
    write_car,
    write_car_of_path,
)
from ipfs_accelerate.content._cid import CID, DAG_PB, RAW, SHA2_256, verify_block
from ipfs_accelerate.content._dagpb import (
    PBLink,
    PBNode,
    UnixFSData,
    UnixFSType,
    decode_node,
    decode_unixfs,
    encode_node,
    encode_unixfs,
)
from ipfs_accelerate.content._exporter import iter_directory, iter_file, walk
from ipfs_accelerate.content._fetch import (
    CAR_MEDIA_TYPE,
    GATEWAYS_ENV,
    KUBO_RPC_ENV,
    RAW_MEDIA_TYPE,
    FetchResult,
    configured_gateways,
    fetch,
    parse_ipfs_path,
)
from ipfs_accelerate.content._importer import (
    DEFAULT_PROFILE,
    PROFILES,
    DirectoryImport,
    ImportedEntry,
    Profile,
    import_bytes,
    import_directory,
    import_file,
    resolve_profile,
)
from ipfs_accelerate.content._limits import DEFAULT_LIMITS, DirectoryLimits
from ipfs_accelerate.content._publish import PublishResult, publish

__all__ = [
    "CAR_MEDIA_TYPE",
    "CID",
    "DAG_PB",
    "DEFAULT_LIMITS",
    "DEFAULT_PROFILE",
    "GATEWAYS_ENV",
    "KUBO_RPC_ENV",
    "MAX_BLOCK_SIZE",
    "PROFILES",
    "RAW",
    "RAW_MEDIA_TYPE",
    "SHA2_256",
    "Blockstore",
    "CarReader",
    "CarWriter",
    "DirectoryImport",
    "DirectoryLimits",
    "FetchResult",
    "FilesystemBlockstore",
    "ImportedEntry",
    "MemoryBlockstore",
    "PBLink",
    "PBNode",
    "Profile",
    "PublishResult",
    "UnixFSData",
    "UnixFSType",
    "configured_gateways",
    "decode_node",
    "decode_unixfs",
    "encode_node",
    "encode_unixfs",
    "fetch",
    "import_bytes",
    "import_directory",
    "import_file",
    "iter_directory",
    "iter_file",
    "parse_ipfs_path",
    "publish",
    "resolve_profile",
    "verify_block",
    "walk",
    "write_car",
    "write_car_of_path",
]
