"""Verified fetch of UnixFS content from trustless gateways and a kubo node's RPC API.

A fetch trusts nothing but the CID it was given. Blocks come from untrusted sources and are
accepted only when they hash to a CID that a verified parent links to (or to the root), so a
source that lies is caught at the block it lied about. Accepted blocks go into a
:class:`FilesystemBlockstore` under the cache directory, which makes every fetch resumable
(blocks verified before an interruption are never requested again) and shares blocks across
fetches (a file common to two checkpoints is fetched once). Files are written to ``dest``
only from verified blocks, into a temporary sibling renamed into place at the end.

Requests follow the trustless gateway specification: a block is
``GET /ipfs/<cid>?format=raw`` with ``Accept: application/vnd.ipld.raw``; a sub-DAG is
``GET /ipfs/<cid>?format=car`` with ``Accept: application/vnd.ipld.car`` (CAR v1, depth-first,
no duplicates asked for, any order accepted). A kubo RPC API serves the same through
``POST /api/v0/block/get`` and ``POST /api/v0/dag/export``.

The sources (gateways, a kubo node, their breakers and measurements) are in
:mod:`._sources`; the output side (staged files, the export into place, the cached copies'
listings, the staging folders) is in :mod:`._output`. This module fetches and verifies the
DAG and runs a fetch in its staging folder.
"""

from __future__ import annotations

import http.client
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ipfs_accelerate._paths import cache_dir as package_cache_dir
from ipfs_accelerate.content._blockstore import FilesystemBlockstore
from ipfs_accelerate.content._car import CarReader
from ipfs_accelerate.content._cid import CID, DAG_PB, RAW, verify_block
from ipfs_accelerate.content._dagpb import PBNode, UnixFSType, decode_node, decode_unixfs
from ipfs_accelerate.content._exporter import iter_directory
from ipfs_accelerate.content._limits import DEFAULT_LIMITS, DirectoryLimits, LimitCounter
from ipfs_accelerate.content._output import (
    _STAGING_PREFIX,
    _claim_staging,
    _entry_of,
    _Exporter,
    _Place,
    _Sink,
    _sweep_dead_stagings,
    _unchanged,
    _wait_all,
)
from ipfs_accelerate.content._sources import (
    CAR_MEDIA_TYPE,
    GATEWAYS_ENV,
    KUBO_RPC_ENV,
    RAW_MEDIA_TYPE,
    SOURCE_STRATEGIES,
    _check_base_url,
    _Gateway,
    _KuboRPC,
    _order_sources,
    _read_bounded,
    _Source,
    configured_gateways,
    parse_ipfs_path,
)
from ipfs_accelerate.errors import (
    BlockVerificationError,
    CarFormatError,
    CircuitOpenError,
    ConfigurationError,
    ContentError,
    ContentPathError,
    DagFormatError,
    FetchError,
    GatewayError,
    InvalidArgumentError,
    IpfsAccelerateError,
    UntrustedBlockError,
)
from ipfs_accelerate.resilience import ResilienceConfig, backoff_delay

__all__ = [
    "CAR_MEDIA_TYPE",
    "GATEWAYS_ENV",
    "KUBO_RPC_ENV",
    "RAW_MEDIA_TYPE",
    "FetchResult",
    "configured_gateways",
    "fetch",
    "parse_ipfs_path",
]

#: blocks a CAR may send before the parent that links them (an unordered CAR), in bytes
_MAX_PENDING_BYTES: Final = 64 * 1024 * 1024
#: what one waiting block costs beyond its bytes (its CID, the bytes and tuple objects, the
#: dict slot), counted against _MAX_PENDING_BYTES so a flood of tiny blocks is bounded too
_PENDING_OVERHEAD: Final = 512
ProgressCallback = Callable[[str, int, int], None]
#: threads hashing and writing the leaves of CARs as they arrive: one per core (hashlib
#: releases the GIL, so they hash in parallel with each other and with the receiving), at
#: most 8 (about 10 GB/s of SHA-256, more than a network delivers)
_HASHERS: Final = min(8, max(2, os.cpu_count() or 1))
#: leaves received and not yet hashed and written, across a fetch's CARs (each holds a
#: buffer of its size, so this bounds that memory too)
_LEAVES_IN_FLIGHT: Final = 4 * _HASHERS
_BUFFER_SIZE: Final = 1024 * 1024


class _Buffers:
    """Buffers that CAR leaves are received into, recycled once a leaf is hashed and
    written (fresh memory for every leaf costs a page fault per 4 KiB of it)."""

    def __init__(self) -> None:
        self._free: list[bytearray] = []
        self._lock = threading.Lock()

    def take(self, size: int) -> bytearray:
        with self._lock:
            for index, buffer in enumerate(self._free):
                if len(buffer) >= size:
                    return self._free.pop(index)
        return bytearray(max(size, _BUFFER_SIZE))

    def give(self, buffer: bytearray) -> None:
        with self._lock:
            self._free.append(buffer)
            if len(self._free) > _LEAVES_IN_FLIGHT:
                self._free.remove(min(self._free, key=len))


# ---------------------------------------------------------------------------------- fetch


@dataclass(frozen=True)
class FetchResult:
    """What :func:`fetch` did: the content's CID (the path's target), where it now is,
    whether it is a directory, the requests and verified bytes it took (0 and 0 when
    everything was cached), the sources asked, and the errors of sources that failed or
    lied before one delivered."""

    cid: CID
    path: Path
    is_directory: bool
    requests: int
    bytes_fetched: int
    sources: tuple[str, ...]
    errors: tuple[IpfsAccelerateError, ...] = ()


def _join(path: str, name: str) -> str:
    return f"{path}/{name}" if path else name


def _safe_name(name: str | None) -> bool:
    return name is not None and name not in ("", ".", "..") and "/" not in name and (
        "\0" not in name
    )


class _Fetcher:
    def __init__(
        self,
        store: FilesystemBlockstore,
        concurrency: int,
        config: ResilienceConfig,
        progress: ProgressCallback | None,
        max_bytes: int | None = None,
        sink: _Sink | None = None,
        counter: LimitCounter | None = None,
    ) -> None:
        self.store = store
        self.sink = sink
        self.counter = counter
        self.places: dict[bytes, set[_Place]] = {}  # where blocks not written yet belong
        self.max_bytes = max_bytes
        self.concurrency = concurrency
        self.config = config
        self.progress = progress
        self.links: dict[bytes, tuple[CID, ...]] = {}  # links of dag-pb nodes read this run
        self.verified_now: set[bytes] = set()  # digests of blocks this run hashed and wrote
        self.held: set[bytes] = set()  # leaves the cache was found to hold
        self.declared: dict[bytes, int] = {}  # Tsize its parent's link gives a block
        self.seeded = False
        self.bytes_fetched = 0
        self.total = 0
        self._lock = threading.Lock()
        # leaves arriving in a CAR are hashed and written here while the stream is read on
        # (set for the duration of _fetch_from; its tasks never wait on others)
        self.hashers: ThreadPoolExecutor | None = None
        self._in_flight = threading.BoundedSemaphore(_LEAVES_IN_FLIGHT)
        self._buffers = _Buffers()

    # -- blocks held -------------------------------------------------------------------

    def _links_of(self, cid: CID) -> tuple[CID, ...]:
        if cid.codec == RAW:
            return ()
        held = self.links.get(cid.digest)
        if held is None:
            node = decode_node(self.store.get(cid), f"block {cid}")
            held = tuple(link.cid for link in node.links)
            self.links[cid.digest] = held
        return held

    def missing(self, root: CID) -> list[CID]:
        """The CIDs reachable from ``root`` through held blocks that are not held."""
        out: list[CID] = []
        seen: set[bytes] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid.digest in seen:
                continue
            seen.add(cid.digest)
            if cid.codec == RAW and (cid.digest in self.verified_now or cid.digest in self.held):
                continue  # written into the output by this run, or known to be held
            if cid.digest in self.links or self.store.has(cid):
                if cid.codec == RAW:
                    # a leaf held as a copy in an earlier output is hashed by has(); this
                    # is asked again after every CAR, and the export hashes it once more
                    self.held.add(cid.digest)
                stack.extend(reversed(self._links_of(cid)))
            else:
                out.append(cid)
        return out

    def _accept(self, source: _Source, cid: CID, data: bytes | memoryview) -> tuple[CID, ...]:
        """Store a block just checked to hash to ``cid``; its links become acceptable."""
        links: tuple[CID, ...] = ()
        node: PBNode | None = None
        if cid.codec == DAG_PB:
            try:
                node = decode_node(data, f"block {cid}")
            except DagFormatError as exc:
                # it hashes to a CID its parent names, so the DAG itself is malformed
                raise ContentError(f"{exc} (served by {source.name})") from None
            links = tuple(link.cid for link in node.links)
        # a leaf written into the output is not cached as a block as well (see _Sink)
        if not (self.sink is not None and self._spread(cid, node, data)) or cid.codec == DAG_PB:
            self.store.put_hashed(cid, data)
        with self._lock:
            if node is not None:
                self.links[cid.digest] = links
                for link in node.links:
                    self.declared[link.cid.digest] = link.tsize or 0
            self.verified_now.add(cid.digest)
            self.bytes_fetched += len(data)
            done = self.bytes_fetched
        if self.max_bytes is not None and done > self.max_bytes:
            raise ContentError(
                f"fetch: more than max_bytes={self.max_bytes} bytes of blocks (at block {cid})"
            )
        if self.progress is not None:
            self.progress("fetch", done, max(self.total, done))
        return links

    # -- verified bytes straight into the output ---------------------------------------

    def _place(self, cid: CID, place: _Place) -> None:
        with self._lock:
            self.places.setdefault(cid.digest, set()).add(place)

    def _spread(self, cid: CID, node: PBNode | None, data: bytes | memoryview) -> bool:
        """Write a just-verified block's bytes where its parents put them in the output, and
        place its children; True when a leaf was written somewhere. Only an optimisation:
        the export lays every file out again from the verified DAG (checking every size) and
        writes whatever is not already there, so a node this skips (malformed, say) is
        handled, and reported, there."""
        sink = self.sink
        assert sink is not None
        with self._lock:
            places = self.places.pop(cid.digest, ())
        wrote = False
        for place in places:
            if node is None:  # a raw leaf: a whole file, or bytes of one
                if place.staged is None:
                    if self.counter is not None:
                        self.counter.file_bytes(place.path, len(data))
                    sink.write(sink.stage(place.path, cid.digest), 0, cid, data)
                    wrote = True
                elif place.size == len(data):
                    sink.write(place.staged, place.offset, cid, data)
                    wrote = True
                continue
            try:
                unixfs = decode_unixfs(node.data or b"", f"block {cid}, UnixFS Data")
            except DagFormatError:
                break
            if unixfs.type == UnixFSType.DIRECTORY and place.staged is None:
                for link in node.links:
                    if _safe_name(link.name):
                        self._place_entry(link.cid, _join(place.path, link.name or ""))
            elif unixfs.type == UnixFSType.HAMT_SHARD and place.staged is None:
                width = len(f"{max((unixfs.fanout or 2) - 1, 1):X}")
                for link in node.links:
                    name = link.name or ""
                    if len(name) == width:  # a sub-shard: more entries of the same folder
                        self._place(link.cid, _Place(place.path))
                    elif len(name) > width and _safe_name(name[width:]):
                        self._place_entry(link.cid, _join(place.path, name[width:]))
            elif unixfs.type in (UnixFSType.FILE, UnixFSType.RAW):
                if len(unixfs.blocksizes) != len(node.links):
                    continue
                staged, offset = place.staged, place.offset
                if staged is None:
                    if self.counter is not None:
                        declared = len(unixfs.data or b"") + sum(unixfs.blocksizes)
                        self.counter.file_bytes(place.path, declared)
                    staged, offset = sink.stage(place.path, cid.digest), 0
                if unixfs.data:
                    sink.write(staged, offset, cid, unixfs.data)
                    offset += len(unixfs.data)
                for link, size in zip(node.links, unixfs.blocksizes, strict=True):
                    self._place(link.cid, _Place(place.path, staged, offset, size))
                    offset += size
        return wrote

    def _place_entry(self, cid: CID, path: str) -> None:
        """A directory entry met in a verified directory node: counted against the limits
        before anything under it is fetched."""
        if self.counter is not None:
            self.counter.entry(path, path.count("/") + 1)
        self._place(cid, _Place(path))

    def _seed(self, target: CID) -> None:
        """Place ``target`` at the output's root and spread through its nodes already held
        (a resumed fetch), so the blocks still to come know where they go."""
        self._place(target, _Place(""))
        stack, seen = [target], set()
        while stack:
            cid = stack.pop()
            if cid.digest in seen or cid.codec != DAG_PB or not self.store.has(cid):
                continue
            seen.add(cid.digest)
            data = self.store.get(cid)
            try:
                node = decode_node(data, f"block {cid}")
            except DagFormatError:
                continue
            self._spread(cid, node, data)
            stack.extend(link.cid for link in node.links)

    # -- one request, with retries and the source's breaker ------------------------------

    def _attempt(self, source: _Source, call: Callable[[], None]) -> None:
        attempt = 0
        while True:
            permit = source.breaker.acquire()
            try:
                call()
            except GatewayError as exc:
                source.breaker.record_failure(permit)
                if not exc.retryable or attempt >= self.config.max_retries:
                    raise
                delay = backoff_delay(attempt, self.config, None)
                attempt += 1
                time.sleep(delay or 0.0)
                continue
            except BaseException:
                source.breaker.release(permit)
                raise
            source.breaker.record_success(permit)
            return

    def fetch_block(self, source: _Source, cid: CID) -> bytes:
        box: list[bytes] = []

        def call() -> None:
            with source.open(cid, car=False) as body:
                data = _read_bounded(body, source, cid)
            self._verify(source, cid, data)
            box.append(data)

        self._attempt(source, call)
        self._accept(source, cid, box[0])
        return box[0]

    def fetch_car(self, source: _Source, root: CID) -> None:
        if source.car_supported:
            try:
                self._attempt(source, lambda: self._read_car(source, root))
                return
            except GatewayError:
                if source.car_supported:
                    raise
        self.fetch_block(source, root)  # its children follow in the next wave

    def _verify(self, source: _Source, cid: CID, data: bytes | memoryview) -> None:
        try:
            verify_block(cid, data)
        except BlockVerificationError as exc:
            raise UntrustedBlockError(f"{source.name}: {exc}", gateway=source.name) from None

    def _verify_leaf(
        self, source: _Source, cid: CID, data: bytes | memoryview, buffer: bytearray | None
    ) -> None:
        try:
            self._verify(source, cid, data)
            self._accept(source, cid, data)
        finally:
            del data  # a view of ``buffer``: nothing may hold it once the buffer is reused
            if buffer is not None:
                self._buffers.give(buffer)
            self._in_flight.release()

    def _receive_into(
        self, cid: CID, size: int, wanted: Callable[[bytes], bool], box: list[bytearray]
    ) -> memoryview | None:
        """A recycled buffer for a raw leaf of a CAR that a verified node asked for: the
        leaf is received straight into it and handed to a hasher (one slot of
        ``_in_flight`` taken here, given back by the hasher with the buffer). ``box`` holds
        it until then, so a CAR cut off mid-leaf gives it back too."""
        if cid.codec != RAW or not wanted(cid.digest):
            return None
        self._in_flight.acquire()
        buffer = self._buffers.take(size)
        box.append(buffer)
        return memoryview(buffer)[:size]

    def _read_car(self, source: _Source, root: CID) -> None:
        """Read a CAR of ``root``'s DAG. A block is taken only when a verified block links to
        it (the root: the request); dag-pb nodes are checked as they arrive (their links
        decide what else is taken), raw leaves are hashed and written by the ``hashers``
        while the stream goes on. Blocks arriving before their parent wait in memory
        (bounded), unverified and unstored, and are refused if no parent claims them."""
        allowed: set[bytes] = {root.digest}
        taken: set[bytes] = set()
        pending: dict[bytes, tuple[CID, bytes]] = {}
        pending_bytes = repeated = 0
        leaves: list[Future[None]] = []
        receiving: list[bytearray] = []  # the buffer of the leaf being received, if any

        def wanted(digest: bytes) -> bool:
            return digest in allowed and digest not in taken

        try:
            with source.open(root, car=True) as body:
                try:
                    reader = CarReader(body, verify=False)
                    if tuple(r.to_v1() for r in reader.roots) != (root.to_v1(),):
                        roots = ", ".join(str(r) for r in reader.roots) or "none"
                        raise UntrustedBlockError(
                            f"{source.name}: CAR for {root} has root(s) {roots}",
                            gateway=source.name,
                        )
                    blocks = reader.blocks(
                        lambda cid, size: self._receive_into(cid, size, wanted, receiving)
                    )
                    for cid, data in blocks:
                        buffer = receiving.pop() if receiving else None
                        if buffer is not None:  # a leaf a verified node asked for
                            taken.add(cid.digest)
                            assert self.hashers is not None
                            leaves.append(self.hashers.submit(
                                self._verify_leaf, source, cid, data, buffer
                            ))  # fmt: skip
                            continue
                        if cid.digest in taken:
                            # a duplicate (a CAR may repeat blocks): checked once, but its
                            # bytes are counted, or a CAR repeating one block never ends
                            repeated += len(data) + _PENDING_OVERHEAD
                            if repeated > _MAX_PENDING_BYTES:
                                raise UntrustedBlockError(
                                    f"{source.name}: CAR for {root} repeated more than "
                                    f"{_MAX_PENDING_BYTES} bytes of blocks already sent "
                                    f"(block {cid})", gateway=source.name,
                                )  # fmt: skip
                            continue
                        if cid.digest not in allowed:
                            if cid.digest not in pending:
                                pending_bytes += len(data) + _PENDING_OVERHEAD
                            pending[cid.digest] = (cid, bytes(data))
                            if pending_bytes > _MAX_PENDING_BYTES:
                                raise UntrustedBlockError(
                                    f"{source.name}: CAR for {root} sent more than "
                                    f"{_MAX_PENDING_BYTES} bytes of blocks no verified block "
                                    f"links to (block {cid})", gateway=source.name,
                                )  # fmt: skip
                            continue
                        ready = [(cid, data)]
                        while ready:
                            block_cid, block = ready.pop()
                            taken.add(block_cid.digest)
                            if block_cid.codec == RAW:
                                self._in_flight.acquire()
                                assert self.hashers is not None
                                leaves.append(self.hashers.submit(
                                    self._verify_leaf, source, block_cid, block, None
                                ))  # fmt: skip
                                continue
                            self._verify(source, block_cid, block)
                            for link in self._accept(source, block_cid, block):
                                allowed.add(link.digest)
                                waiting = pending.pop(link.digest, None)
                                if waiting is not None:
                                    pending_bytes -= len(waiting[1]) + _PENDING_OVERHEAD
                                    ready.append(waiting)
                except CarFormatError as exc:
                    raise GatewayError(
                        f"{source.name}: CAR for {root} is malformed or truncated: {exc}",
                        gateway=source.name,
                    ) from None
                except (OSError, http.client.HTTPException) as exc:
                    raise GatewayError(
                        f"{source.name}: CAR for {root} interrupted: {type(exc).__name__}: "
                        f"{exc}", gateway=source.name, retryable=True,
                    ) from None  # fmt: skip
        finally:
            for buffer in receiving:  # a leaf cut off mid-way: its buffer is free again
                self._buffers.give(buffer)
                self._in_flight.release()
            receiving.clear()
            # every leaf task runs to the end (each releases its in-flight slot); their own
            # failures (a leaf that does not hash to its CID) surface here
            failures = [f.exception() for f in leaves]
        failure = next((f for f in failures if f is not None), None)
        if failure is not None:
            raise failure
        if pending:
            cid = next(iter(pending.values()))[0]
            raise UntrustedBlockError(
                f"{source.name}: CAR for {root} holds {len(pending)} block(s) that no block of "
                f"the DAG links to (first: {cid})", gateway=source.name,
            )  # fmt: skip
        absent = self.missing(root)
        if absent:
            raise GatewayError(
                f"{source.name}: CAR for {root} ended without {len(absent)} block(s) of the "
                f"DAG (first: {absent[0]})", gateway=source.name,
            )  # fmt: skip

    # -- a whole DAG from one source -----------------------------------------------------

    def resolve(self, source: _Source, root: CID, segments: tuple[str, ...], text: str) -> CID:
        """The CID at ``root/segments``, fetching the directory blocks on the way."""
        fetcher = self

        class _Fetching:
            def get(self, cid: CID) -> bytes:
                if fetcher.store.has(cid):
                    return fetcher.store.get(cid)
                return fetcher.fetch_block(source, cid)

            def has(self, cid: CID) -> bool:
                return fetcher.store.has(cid)

            def put(self, cid: CID, data: bytes) -> None:
                fetcher.store.put(cid, data)

            def __iter__(self) -> Iterator[CID]:
                return iter(fetcher.store)

        blocks = _Fetching()
        current = root
        for depth, segment in enumerate(segments):
            if current.codec != DAG_PB:
                raise ContentPathError(
                    f"ipfs path {text!r}: {'/'.join(segments[:depth]) or current} is a file"
                )
            blocks.get(current)
            try:
                entries = dict(iter_directory(blocks, current))
            except ContentError as exc:
                # only "not a directory" is about the path; a source's failure, a malformed
                # or damaged block is reported as it is
                if type(exc) is not ContentError:
                    raise
                raise ContentPathError(
                    f"ipfs path {text!r}: {'/'.join(segments[:depth]) or current} is not a "
                    "directory"
                ) from None
            if segment not in entries:
                raise ContentPathError(
                    f"ipfs path {text!r}: no entry {segment!r} in "
                    f"{'/'.join(segments[:depth]) or str(root)}"
                )
            current = entries[segment]
        return current

    def fill(self, source: _Source, target: CID, pool: ThreadPoolExecutor) -> None:
        """Fetch every block of ``target``'s DAG not held yet: the root as a block, then each
        missing dag-pb node as a CAR of its sub-DAG, each missing raw leaf as a block, in
        parallel (at most ``concurrency`` requests in flight)."""
        if self.sink is not None and not self.seeded:  # once: the next source continues
            self.seeded = True
            self._seed(target)
        if not (target.digest in self.links or self.store.has(target)):
            data = self.fetch_block(source, target)
            self.total = max(self.total, len(data) + _tsize(data, target))
            if self.max_bytes is not None and self.total > self.max_bytes:
                raise ContentError(
                    f"fetch: {target} declares {self.total} bytes, more than "
                    f"max_bytes={self.max_bytes}"
                )
        while True:
            wave = self.missing(target)
            if not wave:
                return
            # the largest sub-DAGs first (their parents' declared sizes): the longest
            # transfer starts at once instead of behind a queue of small files
            wave.sort(key=lambda cid: -self.declared.get(cid.digest, 0))
            futures: list[Future[Any]] = [
                pool.submit(self.fetch_car if cid.codec == DAG_PB else self.fetch_block,
                            source, cid)
                for cid in wave
            ]  # fmt: skip
            _wait_all(futures)


def _tsize(data: bytes, cid: CID) -> int:
    if cid.codec != DAG_PB:
        return 0
    try:
        return sum(link.tsize or 0 for link in decode_node(data).links)
    except DagFormatError:
        return 0


def fetch(
    cid: str | CID,
    dest: str | os.PathLike[str] | None = None,
    *,
    gateways: Sequence[str] | str | None = None,
    rpc: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    concurrency: int = 8,
    timeout: float = 30.0,
    retries: int = 2,
    overwrite: bool = False,
    offline: bool = False,
    max_bytes: int | None = None,
    limits: DirectoryLimits = DEFAULT_LIMITS,
    strategy: str = "lowest_latency",
    progress: ProgressCallback | None = None,
) -> FetchResult:
    """Fetch the UnixFS file or directory ``cid`` (a CID, ``ipfs://<cid>[/path]`` or
    ``/ipfs/<cid>[/path]``), verified block by block, and write it at ``dest``.

    Sources: the kubo RPC API ``rpc`` (else ``$IPFS_ACCELERATE_KUBO_RPC``), then ``gateways``
    (else ``$IPFS_ACCELERATE_GATEWAYS``); none by default, so only cached content is
    available until one is configured. They are tried in the order ``strategy`` gives (one
    of the package's balancing strategies over what this process measured of each source,
    or ``"ordered"``: as configured); a source whose circuit breaker is open comes last and
    is refused without a request. A source that fails or lies is recorded against its
    breaker and the next one continues from the blocks verified so far; retryable failures
    (connection, timeout, 429/5xx) are retried ``retries`` times with backoff.

    Without ``dest`` the content is kept in the cache (``<cache>/ipfs/content/<cid>``) and a
    later call returns it without any request. ``dest`` must not exist unless ``overwrite``.
    ``max_bytes`` bounds what one fetch may download (ContentError beyond it, and at once
    when the root's links already declare more). A tree above ``limits`` (entries, total
    file bytes, depth below the target) raises ContentLimitError as soon as a verified
    directory or file node declares it, before what lies under it is fetched.
    Raises FetchError (each source's error attached) when no source delivered,
    ContentPathError for a path the verified DAG does not hold, ConfigurationError when the
    content is not cached and no source is configured.
    """
    text = str(cid)
    root, segments = parse_ipfs_path(cid)
    if not isinstance(concurrency, int) or not 1 <= concurrency <= 256:
        raise InvalidArgumentError(
            f"fetch: concurrency must be an int in [1, 256], got {concurrency!r}"
        )
    if not isinstance(timeout, int | float) or not 0 < timeout <= 3600:
        raise InvalidArgumentError(f"fetch: timeout must be in (0, 3600] seconds, got {timeout!r}")
    if max_bytes is not None and (not isinstance(max_bytes, int) or max_bytes < 1):
        raise InvalidArgumentError(f"fetch: max_bytes must be a positive int, got {max_bytes!r}")
    if not isinstance(retries, int) or not 0 <= retries <= 20:
        raise InvalidArgumentError(f"fetch: retries must be an int in [0, 20], got {retries!r}")
    counter = LimitCounter(limits, f"fetch {text!r}")
    if strategy not in SOURCE_STRATEGIES:
        raise InvalidArgumentError(
            f"fetch: strategy must be one of {', '.join(SOURCE_STRATEGIES)}, got {strategy!r}"
        )
    base = Path(cache_dir).expanduser() if cache_dir is not None else package_cache_dir() / "ipfs"
    store = FilesystemBlockstore(base / "blocks")

    sources: list[_Source] = []
    if not offline:
        rpc_url = rpc if rpc is not None else os.environ.get(KUBO_RPC_ENV) or None
        if rpc_url:
            sources.append(_KuboRPC(_check_base_url(rpc_url, "kubo rpc"), timeout))
        sources.extend(_Gateway(url, timeout) for url in configured_gateways(gateways))
    chosen = Path(dest).expanduser() if dest is not None else None
    if chosen is not None and (chosen.exists() or chosen.is_symlink()) and not overwrite:
        raise ContentError(f"fetch {text!r}: destination {str(chosen)!r} already exists")
    parent = chosen.parent if chosen is not None else base / "content"
    try:
        parent.mkdir(parents=True, exist_ok=True)
        _sweep_dead_stagings(parent)
        staging = Path(tempfile.mkdtemp(dir=parent, prefix=_STAGING_PREFIX))
        owner = _claim_staging(staging)
    except OSError as exc:
        raise ContentError(
            f"fetch {text!r}: cannot write in {str(parent)!r} ({exc.strerror or exc})"
        ) from None
    try:
        return _fetch_staged(
            text, root, segments, store, sources, strategy, concurrency, retries, progress,
            max_bytes, counter, base, chosen, overwrite, staging,
        )  # fmt: skip
    finally:
        os.close(owner)  # after the staging folder is gone: no sweep races its removal


def _fetch_staged(
    text: str,
    root: CID,
    segments: tuple[str, ...],
    store: FilesystemBlockstore,
    sources: list[_Source],
    strategy: str,
    concurrency: int,
    retries: int,
    progress: ProgressCallback | None,
    max_bytes: int | None,
    counter: LimitCounter,
    base: Path,
    chosen: Path | None,
    overwrite: bool,
    staging: Path,
) -> FetchResult:
    sink = _Sink(staging)
    try:
        result = _fetch_into(
            _Fetcher(store, concurrency, ResilienceConfig(max_retries=retries), progress,
                     max_bytes, sink, counter),
            _order_sources(sources, strategy), root, segments, text, base, chosen, overwrite,
        )  # fmt: skip
    except BaseException:
        sink.keep(store)  # the verified leaves, for a fetch that resumes
        raise
    finally:
        sink.close()
        shutil.rmtree(staging, ignore_errors=True)
    store.record_copies(sink.copies(result.path))
    return result


def _fetch_into(
    fetcher: _Fetcher,
    sources: list[_Source],
    root: CID,
    segments: tuple[str, ...],
    text: str,
    base: Path,
    dest: Path | None,
    overwrite: bool,
) -> FetchResult:
    assert fetcher.sink is not None and fetcher.counter is not None
    store, progress = fetcher.store, fetcher.progress
    target: CID | None = _resolve_cached(fetcher, root, segments, text)
    if target is not None and dest is None:
        cached = base / "content" / str(target.to_v1())
        if _unchanged(cached):
            return FetchResult(target, cached, cached.is_dir(), 0, 0, ())
    errors: list[IpfsAccelerateError] = []
    if target is None or fetcher.missing(target):
        if not sources:
            raise ConfigurationError(
                f"fetch {text!r}: not in the cache and no source configured (pass gateways= or "
                f"rpc=, or set ${GATEWAYS_ENV} / ${KUBO_RPC_ENV}); nothing is fetched from the "
                "network by default"
            )
        target = _fetch_from(fetcher, sources, root, segments, text, errors)
    out = dest if dest is not None else base / "content" / str(target.to_v1())
    if out.exists() or out.is_symlink():
        if dest is None and _unchanged(out):
            return FetchResult(target, out, out.is_dir(), *_stats(fetcher, sources), tuple(errors))
        if dest is not None and not overwrite:
            raise ContentError(f"fetch {text!r}: destination {str(out)!r} already exists")
        # replaced only once the new copy is complete (it may be read from the old one)
    with ThreadPoolExecutor(fetcher.concurrency, thread_name_prefix="ipfs-export") as pool:
        counter = LimitCounter(fetcher.counter.limits, fetcher.counter.what)
        exporter = _Exporter(store, fetcher.verified_now, pool, fetcher.sink, counter)
        try:
            is_directory = exporter.write_tree(target, out, shared=dest is None)
        except OSError as exc:
            raise ContentError(
                f"fetch {text!r}: cannot write {_entry_of(exc, fetcher.sink.root, out)!r} "
                f"({exc.strerror or exc})"
            ) from None
    if progress is not None:
        progress("fetch", fetcher.bytes_fetched, max(fetcher.total, fetcher.bytes_fetched))
    return FetchResult(target, out, is_directory, *_stats(fetcher, sources), tuple(errors))


def _stats(fetcher: _Fetcher, sources: list[_Source]) -> tuple[int, int, tuple[str, ...]]:
    used = tuple(source.name for source in sources if source.requests)
    return sum(s.requests for s in sources), fetcher.bytes_fetched, used


def _resolve_cached(
    fetcher: _Fetcher, root: CID, segments: tuple[str, ...], text: str
) -> CID | None:
    """The path's target from held blocks alone; None when a block on the way is missing."""
    current = root
    for depth, segment in enumerate(segments):
        if current.codec != DAG_PB:
            raise ContentPathError(
                f"ipfs path {text!r}: {'/'.join(segments[:depth]) or current} is a file"
            )
        if not fetcher.store.has(current):
            return None
        try:
            entries = dict(iter_directory(fetcher.store, current))
        except KeyError:  # BlockNotFoundError: a HAMT shard not held yet
            return None
        except ContentError as exc:
            if type(exc) is not ContentError:  # a malformed or damaged block: as it is
                raise
            raise ContentPathError(
                f"ipfs path {text!r}: {'/'.join(segments[:depth]) or current} is not a directory"
            ) from None
        if segment not in entries:
            raise ContentPathError(
                f"ipfs path {text!r}: no entry {segment!r} in "
                f"{'/'.join(segments[:depth]) or str(root)}"
            )
        current = entries[segment]
    return current


def _fetch_from(
    fetcher: _Fetcher,
    sources: list[_Source],
    root: CID,
    segments: tuple[str, ...],
    text: str,
    errors: list[IpfsAccelerateError],
) -> CID:
    with (
        ThreadPoolExecutor(fetcher.concurrency, thread_name_prefix="ipfs-fetch") as pool,
        ThreadPoolExecutor(_HASHERS, thread_name_prefix="ipfs-verify") as hashers,
    ):
        fetcher.hashers = hashers
        for source in sources:
            try:
                target = fetcher.resolve(source, root, segments, text)
                fetcher.fill(source, target, pool)
                return target
            except (GatewayError, CircuitOpenError) as exc:
                errors.append(exc)
    listing = "; ".join(str(error) for error in errors)
    raise FetchError(f"fetch {text!r}: no source delivered it ({listing})", errors) from (
        errors[-1] if errors else None
    )
