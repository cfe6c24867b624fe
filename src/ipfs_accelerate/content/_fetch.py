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
"""

from __future__ import annotations

import base64
import fcntl
import http.client
import json
import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ipfs_accelerate._paths import cache_dir as package_cache_dir
from ipfs_accelerate.content._blockstore import FilesystemBlockstore
from ipfs_accelerate.content._car import MAX_BLOCK_SIZE, CarReader
from ipfs_accelerate.content._cid import CID, DAG_PB, RAW, verify_block
from ipfs_accelerate.content._dagpb import (
    PBNode,
    UnixFSData,
    UnixFSType,
    decode_node,
    decode_unixfs,
)
from ipfs_accelerate.content._exporter import iter_directory, walk
from ipfs_accelerate.content._limits import DEFAULT_LIMITS, DirectoryLimits, LimitCounter
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
from ipfs_accelerate.resilience import (
    BreakerConfig,
    CircuitBreaker,
    ResilienceConfig,
    backoff_delay,
    redact_url,
)
from ipfs_accelerate.resilience.balancing import STRATEGIES, make_strategy

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

#: comma- or space-separated trustless gateway base URLs used when ``gateways=`` is not given
GATEWAYS_ENV: Final = "IPFS_ACCELERATE_GATEWAYS"
#: a kubo RPC API base URL (``http://127.0.0.1:5001``) used when ``rpc=`` is not given
KUBO_RPC_ENV: Final = "IPFS_ACCELERATE_KUBO_RPC"
CAR_MEDIA_TYPE: Final = "application/vnd.ipld.car"
RAW_MEDIA_TYPE: Final = "application/vnd.ipld.raw"
_CAR_ACCEPT: Final = "application/vnd.ipld.car; version=1; order=dfs; dups=n"
#: blocks a CAR may send before the parent that links them (an unordered CAR), in bytes
_MAX_PENDING_BYTES: Final = 64 * 1024 * 1024
#: what one waiting block costs beyond its bytes (its CID, the bytes and tuple objects, the
#: dict slot), counted against _MAX_PENDING_BYTES so a flood of tiny blocks is bounded too
_PENDING_OVERHEAD: Final = 512
_MAX_PATH_SEGMENTS: Final = 256
_COPY_FILE_RANGE: Final = hasattr(os, "copy_file_range")
_STAGING_PREFIX: Final = ".ipfs-fetch.partial-"
#: in each staging folder, locked by its fetch while it runs (see _sweep_dead_stagings)
_STAGING_LOCK: Final = ".owner.lock"
#: a staging folder without a lock file older than this is a fetch that died creating it
_UNLOCKED_STAGING_AGE: Final = 3600.0
#: answers to a CAR request that mean "no CARs here" (blocks-only gateways): blocks then
_CAR_REFUSED: Final = frozenset({400, 406, 415, 501})
ProgressCallback = Callable[[str, int, int], None]

#: how sources are ordered for a fetch: the package's balancing strategies, or "ordered"
#: (as configured: the kubo node, then the gateways in the order given)
SOURCE_STRATEGIES: Final = ("ordered", *STRATEGIES)
_EWMA_ALPHA: Final = 0.3  # the Router's default: a few requests move the average
_MIB: Final = 1024 * 1024
#: the slowest answer accepted, in bytes a second over a span of the fetch's timeout
_MIN_RATE: Final = 1024
_READ_STEP: Final = 1024 * 1024
#: pieces of a file laid out and written at a time (memory stays bounded whatever a DAG's
#: links multiply to)
_WRITE_BATCH: Final = 4096

_BREAKERS: dict[str, CircuitBreaker] = {}
_STATES: dict[str, _SourceState] = {}
_CHOOSERS: dict[str, Any] = {}
_BREAKERS_LOCK = threading.Lock()


def _breaker(name: str) -> CircuitBreaker:
    """One breaker per source for the whole process, so a lying or dead gateway is skipped
    by later fetches until its cooldown ends."""
    with _BREAKERS_LOCK:
        breaker = _BREAKERS.get(name)
        if breaker is None:
            breaker = CircuitBreaker(BreakerConfig(), provider="ipfs", name=name)
            _BREAKERS[name] = breaker
        return breaker


class _SourceState:
    """What the balancing strategies look at (``resilience.balancing.Candidate``), kept per
    source for the whole process: requests in flight, and averages of successful requests'
    time to the answer's headers (``ewma_ttfc``) and of their duration per MiB received
    (``ewma_latency``: a small request's latency, a large one's inverse throughput)."""

    def __init__(self) -> None:
        self.in_flight = 0
        self.weight = 1.0
        self.ewma_latency: float | None = None
        self.ewma_ttfc: float | None = None
        self.wrr_current = 0.0
        self.lock = threading.Lock()

    def measured(self, seconds: float, first_byte: float, received: int) -> None:
        cost = seconds / max(1.0, received / _MIB)
        with self.lock:
            if self.ewma_latency is None or self.ewma_ttfc is None:
                self.ewma_latency, self.ewma_ttfc = cost, first_byte
            else:
                self.ewma_latency += _EWMA_ALPHA * (cost - self.ewma_latency)
                self.ewma_ttfc += _EWMA_ALPHA * (first_byte - self.ewma_ttfc)


def _state(name: str) -> _SourceState:
    with _BREAKERS_LOCK:
        return _STATES.setdefault(name, _SourceState())


def _order_sources(sources: list[_Source], strategy: str) -> list[_Source]:
    """The order a fetch tries ``sources`` in: sources whose breaker is open last (they are
    refused without a request until their cooldown ends), the others as ``strategy`` picks
    them one after another (``lowest_latency``: unmeasured ones first, in configured order,
    so each gets measured, then the fastest measured)."""
    remaining = [s for s in sources if not s.breaker.is_open]
    opened = [s for s in sources if s.breaker.is_open]
    if strategy == "ordered":
        return remaining + opened
    with _BREAKERS_LOCK:
        chooser = _CHOOSERS.get(strategy)
        if chooser is None:
            chooser = _CHOOSERS[strategy] = make_strategy(strategy)
    pool = [s.state for s in sources]
    ordered: list[_Source] = []
    while remaining:
        with _BREAKERS_LOCK:  # strategies keep state (round robin's position, wrr weights)
            pick = chooser.choose([s.state for s in remaining], pool, False)
        chosen = next(s for s in remaining if s.state is pick)
        ordered.append(chosen)
        remaining.remove(chosen)
    return ordered + opened


class _CountingBody:
    """A response body that counts the bytes read from it, and gives up on a source that
    sends less than ``_MIN_RATE`` bytes a second over a span of ``timeout`` seconds (the
    socket's timeout only catches silence: a byte now and then keeps it waiting for ever)."""

    def __init__(self, body: BinaryIO, timeout: float, what: str, gateway: str) -> None:
        self._body = body
        self.received = 0
        self._span = timeout
        self._what = what
        self._gateway = gateway
        self._window_waited = 0.0
        self._window_bytes = 0
        # read1: at most one read from the socket per call, so the rate is checked between
        self._read1: Callable[[int], bytes] = getattr(body, "read1", body.read)

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size if size >= 0 else None
        got = 0
        while wanted is None or got < wanted:
            step = _READ_STEP if wanted is None else min(wanted - got, _READ_STEP)
            started = time.monotonic()
            part = self._read1(step)
            if not part:
                break
            parts.append(part)
            got += len(part)
            self._progress(len(part), time.monotonic() - started)
        self.received += got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _progress(self, count: int, waited: float) -> None:
        # only time spent waiting on the source counts: not this side's own pauses
        # (hashing, writing, a full queue) between reads
        self._window_bytes += count
        self._window_waited += waited
        if self._window_waited < self._span:
            return
        if self._window_bytes < _MIN_RATE * self._window_waited:
            raise GatewayError(
                f"{self._gateway}: {self._what}: too slow ({self._window_bytes} bytes in "
                f"{self._window_waited:.1f} s, under {_MIN_RATE} bytes/s)",
                gateway=self._gateway, retryable=True,
            )  # fmt: skip
        self._window_waited, self._window_bytes = 0.0, 0


# ------------------------------------------------------------------------------ addresses


def parse_ipfs_path(text: str | CID) -> tuple[CID, tuple[str, ...]]:
    """``(root CID, path segments)`` of ``ipfs://<cid>/a/b``, ``/ipfs/<cid>/a/b`` or
    ``<cid>/a/b`` (segments percent-decoded); InvalidCIDError or ContentPathError otherwise."""
    if isinstance(text, CID):
        return text, ()
    if not isinstance(text, str):
        raise InvalidArgumentError(
            f"ipfs path: expected a string or CID, got {type(text).__name__}"
        )
    rest = text
    if rest.startswith("ipfs://"):
        rest = rest[len("ipfs://") :]
    elif rest.startswith("/ipfs/"):
        rest = rest[len("/ipfs/") :]
    if "?" in rest or "#" in rest:
        raise ContentPathError(f"ipfs path {text!r}: a query or fragment is not part of a path")
    head, _, tail = rest.partition("/")
    root = CID.parse(head)
    segments = tuple(unquote(part) for part in tail.split("/") if part)
    if len(segments) > _MAX_PATH_SEGMENTS:
        raise ContentPathError(f"ipfs path {text!r}: more than {_MAX_PATH_SEGMENTS} segments")
    for segment in segments:
        if segment in (".", "..") or "/" in segment or "\0" in segment:
            raise ContentPathError(f"ipfs path {text!r}: segment {segment!r} is not allowed")
    return root, segments


def _check_base_url(url: str, what: str) -> str:
    if not isinstance(url, str):
        raise ConfigurationError(f"{what}: expected a URL string, got {type(url).__name__}")
    try:
        parts = urlsplit(url.strip())
        parts.port  # noqa: B018 (raises ValueError for a port that is not one)
    except ValueError as exc:
        raise ConfigurationError(
            f"{what} {redact_url(url)!r}: not a valid URL ({_without(str(exc), url)})"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigurationError(f"{what} {redact_url(url)!r}: expected an http(s):// base URL")
    if parts.query or parts.fragment:
        raise ConfigurationError(f"{what} {redact_url(url)!r}: a base URL has no query")
    return url.strip().rstrip("/")


def _without(message: str, url: str) -> str:
    """``message`` with any credentials of ``url`` cut out (urllib quotes the netloc)."""
    try:
        netloc = url.split("//", 1)[1].split("/", 1)[0]
    except IndexError:
        return message
    userinfo, at, _ = netloc.rpartition("@")
    return message.replace(userinfo, "***") if at and userinfo else message


def configured_gateways(gateways: Sequence[str] | str | None = None) -> list[str]:
    """The gateway base URLs: ``gateways`` when given, else ``$IPFS_ACCELERATE_GATEWAYS``,
    else none (no network by default)."""
    if gateways is None:
        gateways = os.environ.get(GATEWAYS_ENV, "")
    if isinstance(gateways, str):
        gateways = gateways.replace(",", " ").split()
    return [_check_base_url(url, "gateway") for url in gateways]


def _split_credentials(url: str) -> tuple[str, str | None]:
    """``url`` without its ``user:pass@`` and the basic Authorization header they make."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    netloc = parts.netloc.rpartition("@")[2]
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
    return urlunsplit((parts.scheme, netloc, parts.path, "", "")), f"Basic {token}"


# -------------------------------------------------------------------------------- sources


class _Source:
    """One place blocks can come from; subclasses say how to ask it."""

    def __init__(self, base: str, kind: str, timeout: float) -> None:
        self.name = f"{kind} {redact_url(base)}"
        # ``user:pass@`` is basic auth, sent in a header: left in the URL, urllib takes it for
        # part of the host (asking DNS for it, and quoting it in its errors)
        self.base, self._authorization = _split_credentials(base)
        self.timeout = timeout
        self.breaker = _breaker(self.name)
        self.state = _state(self.name)
        self.car_supported = True  # until it refuses one (a blocks-only trustless gateway)
        self.requests = 0
        self._lock = threading.Lock()

    def _request(self, cid: CID, car: bool) -> urllib.request.Request:
        raise NotImplementedError

    def _expected_type(self, car: bool) -> str | None:
        raise NotImplementedError

    @contextmanager
    def open(self, cid: CID, *, car: bool) -> Iterator[BinaryIO]:
        """The response body for ``cid`` (its block, or its DAG as a CAR). A request whose
        body was read to the caller's satisfaction is measured (see :class:`_SourceState`)."""
        with self.state.lock:
            self.state.in_flight += 1
        try:
            with self._open(cid, car=car) as body:
                yield body
        finally:
            with self.state.lock:
                self.state.in_flight -= 1

    @contextmanager
    def _open(self, cid: CID, *, car: bool) -> Iterator[BinaryIO]:
        request = self._request(cid, car)
        with self._lock:
            self.requests += 1
        if self._authorization is not None:
            # not carried over to wherever a redirect points
            request.add_unredirected_header("Authorization", self._authorization)
        what = "CAR" if car else "block"
        started = time.monotonic()
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            if car and exc.code in _CAR_REFUSED:
                self.car_supported = False
            retryable = exc.code in (408, 429) or exc.code >= 500
            raise GatewayError(
                f"{self.name}: {what} {cid}: HTTP {exc.code}", gateway=self.name,
                retryable=retryable,
            ) from None  # fmt: skip
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            reason = getattr(exc, "reason", exc)
            raise GatewayError(
                f"{self.name}: {what} {cid}: {type(reason).__name__}: {reason}",
                gateway=self.name, retryable=True,
            ) from None  # fmt: skip
        with response:
            expected = self._expected_type(car)
            got = (response.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if expected is not None and got != expected:
                raise GatewayError(
                    f"{self.name}: {what} {cid}: answered Content-Type {got or 'none'!r}, "
                    f"not {expected!r} (not a trustless gateway, or an error page)",
                    gateway=self.name,
                )
            first_byte = time.monotonic() - started
            counted = _CountingBody(response, self.timeout, f"{what} {cid}", self.name)
            yield counted  # type: ignore[misc]
        self.state.measured(time.monotonic() - started, first_byte, counted.received)


class _Gateway(_Source):
    def __init__(self, base: str, timeout: float) -> None:
        super().__init__(base, "gateway", timeout)

    def _request(self, cid: CID, car: bool) -> urllib.request.Request:
        fmt, accept = ("car", _CAR_ACCEPT) if car else ("raw", RAW_MEDIA_TYPE)
        url = f"{self.base}/ipfs/{cid}?format={fmt}"
        return urllib.request.Request(url, headers={"Accept": accept}, method="GET")

    def _expected_type(self, car: bool) -> str | None:
        return CAR_MEDIA_TYPE if car else RAW_MEDIA_TYPE


class _KuboRPC(_Source):
    def __init__(self, base: str, timeout: float) -> None:
        super().__init__(base, "kubo rpc", timeout)

    def _request(self, cid: CID, car: bool) -> urllib.request.Request:
        command = "dag/export" if car else "block/get"
        url = f"{self.base}/api/v0/{command}?arg={quote(str(cid))}"
        return urllib.request.Request(url, data=b"", method="POST")

    def _expected_type(self, car: bool) -> str | None:
        return None  # kubo labels both as octet streams; the hashes are what is checked


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



@dataclass(frozen=True, slots=True)
class _Place:
    """Where a block belongs in the output: the entry at ``path`` (relative to the target,
    ``""`` for the target itself) whose kind its own node will tell (``staged`` None), or
    ``size`` bytes at ``offset`` of the staged file ``staged``."""

    path: str
    staged: int | None = None
    offset: int = 0
    size: int | None = None


class _Sink:
    """Where the output is assembled, in a staging folder beside its destination: each file
    of the DAG is first a staged file that verified blocks are written into at their offsets
    as they arrive; the export moves it into the tree, writes what is still missing and
    renames the tree into place once the whole DAG has checked out. So a leaf's bytes are
    written once, not into the block cache and then copied out of it again.

    Leaves written here are not in the block cache: :meth:`read_back` reads one back
    (hashed again), :meth:`keep` puts them in the cache when the fetch fails (so a resumed
    fetch has them) and :meth:`copies` says where they are once the output is in place (the
    cache records those places, see :meth:`FilesystemBlockstore.record_copies`)."""

    def __init__(self, staging: Path) -> None:
        self.root = staging / "root"
        self._staged_dir = staging / "files"
        self.staged: dict[tuple[str, bytes], int] = {}  # (path, file digest) -> staged id
        self.locations: list[Path] = []  # staged id -> where that file is now
        self.relative: list[str | None] = []  # staged id -> its path, once moved into the tree
        self.written: dict[tuple[int, int], CID] = {}  # (staged id, offset) -> block there
        self.leaves: dict[bytes, tuple[CID, int, int, int]] = {}  # cid, staged, offset, size
        self._handles: dict[int, int] = {}
        self._lock = threading.Lock()

    def target(self, path: str) -> Path:
        return self.root / path if path else self.root

    def stage(self, path: str, owner: bytes) -> int:
        """The staged file of the file ``owner`` at ``path`` (created on first use)."""
        with self._lock:
            held = self.staged.get((path, owner))
            if held is not None:
                return held
            number = len(self.locations)
            self._staged_dir.mkdir(parents=True, exist_ok=True)
            location = self._staged_dir / str(number)
            self._handles[number] = os.open(location, os.O_WRONLY | os.O_CREAT, 0o644)
            self.locations.append(location)
            self.relative.append(None)
            self.staged[(path, owner)] = number
            return number

    def write(self, staged: int, offset: int, cid: CID, data: bytes) -> None:
        with self._lock:
            handle = self._handles[staged]
        os.pwrite(handle, data, offset)
        with self._lock:
            self.written[(staged, offset)] = cid
            if cid.codec == RAW:
                self.leaves.setdefault(cid.digest, (cid, staged, offset, len(data)))

    def holds(self, staged: int, offset: int, digest: bytes) -> bool:
        held = self.written.get((staged, offset))
        return held is not None and held.digest == digest

    def move(self, staged: int, relative: str) -> Path:
        """Move a staged file to its place in the tree."""
        target = self.target(relative)
        os.replace(self.locations[staged], target)
        self.locations[staged] = target
        self.relative[staged] = relative
        return target

    def read_back(self, cid: CID) -> bytes | None:
        """A leaf written here, hashed again (None when it is not, or no longer, here)."""
        held = self.leaves.get(cid.digest)
        if held is None:
            return None
        _, staged, offset, size = held
        try:
            with self.locations[staged].open("rb") as stream:
                stream.seek(offset)
                data = stream.read(size)
            verify_block(cid, data)
        except (OSError, BlockVerificationError):
            return None
        return data

    def keep(self, store: FilesystemBlockstore) -> None:
        """Put every leaf written here into the block cache (the fetch did not complete)."""
        self.close()
        for cid, *_ in list(self.leaves.values()):
            data = self.read_back(cid)
            if data is not None:
                store.put_hashed(cid, data)

    def copies(self, out: Path) -> list[tuple[CID, Path, int, int]]:
        """Where each leaf written here is once the tree is renamed to ``out``."""
        places = []
        for (staged, offset), cid in self.written.items():
            relative = self.relative[staged]
            if cid.codec == RAW and relative is not None:
                path = out / relative if relative else out
                places.append((cid, path, offset, self.leaves[cid.digest][3]))
        return places

    def close(self) -> None:
        with self._lock:
            for handle in self._handles.values():
                os.close(handle)
            self._handles.clear()


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
        self._in_flight = threading.BoundedSemaphore(4 * concurrency)

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

    def _accept(self, source: _Source, cid: CID, data: bytes) -> tuple[CID, ...]:
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

    def _spread(self, cid: CID, node: PBNode | None, data: bytes) -> bool:
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

    def _verify(self, source: _Source, cid: CID, data: bytes) -> None:
        try:
            verify_block(cid, data)
        except BlockVerificationError as exc:
            raise UntrustedBlockError(f"{source.name}: {exc}", gateway=source.name) from None

    def _verify_leaf(self, source: _Source, cid: CID, data: bytes) -> None:
        try:
            self._verify(source, cid, data)
            self._accept(source, cid, data)
        finally:
            self._in_flight.release()

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
                    for cid, data in reader:
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
                            pending[cid.digest] = (cid, data)
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
                                    self._verify_leaf, source, block_cid, block
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


def _wait_all(futures: list[Future[Any]]) -> None:
    """Wait for every future; the first failure (in order) is raised after the rest are
    cancelled or finished, so no request outlives the call."""
    error: BaseException | None = None
    for future in futures:
        if future.cancelled():
            continue
        try:
            future.result()
        except BaseException as exc:
            if error is None:
                error = exc
                for other in futures:
                    other.cancel()
    if error is not None:
        raise error


def _read_bounded(body: BinaryIO, source: _Source, cid: CID) -> bytes:
    try:
        data = body.read(MAX_BLOCK_SIZE + 1)
    except (OSError, http.client.HTTPException) as exc:
        raise GatewayError(
            f"{source.name}: block {cid}: {type(exc).__name__}: {exc}", gateway=source.name,
            retryable=True,
        ) from None  # fmt: skip
    if len(data) > MAX_BLOCK_SIZE:
        raise UntrustedBlockError(
            f"{source.name}: block {cid} is larger than {MAX_BLOCK_SIZE} bytes",
            gateway=source.name,
        )
    return data


@dataclass(frozen=True, slots=True)
class _Piece:
    """Bytes of a file at ``offset``: a raw leaf, or the data inlined in a dag-pb node."""

    cid: CID
    offset: int
    size: int
    inline: bool


class _Exporter:
    """Writes UnixFS content from the blockstore. A file is laid out first (its dag-pb nodes
    read, each child's bytes checked against its parent's ``blocksizes``, as
    :func:`iter_file` does), then its pieces are written at their offsets in parallel. A
    block this run hashed and wrote itself is not hashed again; any other is."""

    def __init__(
        self,
        store: FilesystemBlockstore,
        verified: set[bytes],
        pool: ThreadPoolExecutor,
        sink: _Sink,
        counter: LimitCounter,
    ) -> None:
        self.store = store
        self.verified = verified
        self.pool = pool
        self.sink = sink
        self.counter = counter

    def read(self, cid: CID) -> bytes:
        if cid.digest in self.sink.leaves:
            data = self.sink.read_back(cid)
            if data is not None:
                return data
        return self.store.get(cid, verify=cid.digest not in self.verified)

    def read_size(self, cid: CID) -> int:
        """The size of a raw block held (without reading a cached block file)."""
        if cid.digest not in self.sink.leaves:
            try:
                return self.store.path_of(cid).stat().st_size
            except OSError:
                pass
        return len(self.read(cid))

    def _node(self, cid: CID) -> tuple[PBNode, UnixFSData]:
        node = decode_node(self.read(cid), f"block {cid}")
        if node.data is None:
            raise DagFormatError(f"block {cid}: dag-pb node without UnixFS Data")
        unixfs = decode_unixfs(node.data, f"block {cid}, UnixFS Data")
        if unixfs.type not in (UnixFSType.FILE, UnixFSType.RAW):
            raise ContentError(f"block {cid}: UnixFS type {unixfs.type} is not a file")
        if len(unixfs.blocksizes) != len(node.links):
            raise DagFormatError(
                f"block {cid}: {len(node.links)} links but {len(unixfs.blocksizes)} blocksizes"
            )
        return node, unixfs

    def _layout(self, cid: CID, offset: int, depth: int) -> Generator[_Piece, None, int]:
        """The file's pieces, lazily (a DAG may link one block many times, so a few blocks
        can declare any number of pieces); returns the bytes they hold."""
        if depth > 64:
            raise DagFormatError(f"block {cid}: file DAG deeper than 64 levels")
        node, unixfs = self._node(cid)
        size = 0
        if unixfs.data:
            yield _Piece(cid, offset, len(unixfs.data), True)
            size = len(unixfs.data)
        for link, expected in zip(node.links, unixfs.blocksizes, strict=True):
            if link.cid.codec == RAW:
                yield _Piece(link.cid, offset + size, expected, False)  # length checked
                produced = expected                                     # when written
            else:
                produced = yield from self._layout(link.cid, offset + size, depth + 1)
            if produced != expected:
                raise DagFormatError(
                    f"block {cid}: child {link.cid} holds {produced} bytes, "
                    f"its parent's blocksize says {expected}"
                )
            size += produced
        return size

    def _write_piece(self, handle: int, piece: _Piece) -> None:
        if (
            not piece.inline
            and piece.cid.digest in self.verified
            and piece.cid.digest not in self.sink.leaves
            and _COPY_FILE_RANGE
        ):
            # hashed by this run moments ago: copied file to file in the kernel, not read back
            self._copy_block(handle, piece)
            return
        data = self.read(piece.cid)
        if piece.inline:
            node = decode_node(data, f"block {piece.cid}")
            data = decode_unixfs(node.data or b"", f"block {piece.cid}, UnixFS Data").data or b""
        if len(data) != piece.size:
            raise DagFormatError(
                f"block {piece.cid} holds {len(data)} bytes, its parent's blocksize says "
                f"{piece.size}"
            )
        os.pwrite(handle, data, piece.offset)

    def _copy_block(self, handle: int, piece: _Piece) -> None:
        source = os.open(self.store.path_of(piece.cid), os.O_RDONLY)
        try:
            held = os.fstat(source).st_size
            if held != piece.size:
                raise DagFormatError(
                    f"block {piece.cid} holds {held} bytes, its parent's blocksize says "
                    f"{piece.size}"
                )
            done = 0
            while done < held:
                step = os.copy_file_range(source, handle, held - done, done, piece.offset + done)
                if step <= 0:
                    raise ContentError(f"block {piece.cid}: copy stopped at byte {done}")
                done += step
        finally:
            os.close(source)

    def write_file(self, cid: CID, relative: str) -> None:
        """Write the file ``cid`` at ``relative`` in the staging tree: its staged file, when
        the fetch wrote one, is moved there and keeps the pieces written into it (verified,
        at the offsets this layout gives); the rest come from the block cache."""
        staged = self.sink.staged.get((relative, cid.digest))
        if staged is not None and self.sink.relative[staged] is not None:
            staged = None  # the same name twice in one directory: written again
        if cid.codec == RAW:
            self.counter.file_bytes(relative, self.read_size(cid))
            if staged is not None and self.sink.holds(staged, 0, cid.digest):
                self.sink.move(staged, relative)
            else:
                self.sink.target(relative).write_bytes(self.read(cid))
            return
        # the root's declared size is counted before anything under it is laid out; the
        # layout then checks every level's blocksizes against what its children hold, so
        # what is written adds up to exactly this
        _, unixfs = self._node(cid)
        size = len(unixfs.data or b"") + sum(unixfs.blocksizes)
        self.counter.file_bytes(relative, size)
        if staged is not None:
            handle = os.open(self.sink.move(staged, relative), os.O_WRONLY)
        else:
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
            handle = os.open(self.sink.target(relative), flags, 0o644)
        try:
            os.ftruncate(handle, size)
            batch: list[_Piece] = []
            layout = self._layout(cid, 0, 0)
            while True:
                piece = next(layout, None)
                if piece is None or len(batch) >= _WRITE_BATCH:
                    _wait_all([self.pool.submit(self._write_piece, handle, p) for p in batch])
                    batch.clear()
                if piece is None:
                    break
                if staged is None or not self.sink.holds(staged, piece.offset, piece.cid.digest):
                    batch.append(piece)
        finally:
            os.close(handle)

    def write_tree(self, cid: CID, dest: Path, *, shared: bool = False) -> bool:
        """Write ``cid`` (file or directory) at ``dest``: completed in the sink's staging
        folder (a sibling of ``dest``), renamed into place when every file is. True for a
        directory. ``shared``: ``dest`` is the cache's copy of ``cid``, which a concurrent
        fetch may have written meanwhile."""
        self.sink.close()
        is_directory = False
        for relative, entry, kind in walk(self.store, cid):
            if relative:
                self.counter.entry(relative, relative.count("/") + 1)
            target = self.sink.target(relative)
            if kind == "directory":
                if target.exists() and not target.is_dir():  # a name held by a file before
                    target.unlink()
                target.mkdir(parents=True, exist_ok=True)
                is_directory = is_directory or not relative
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                shutil.rmtree(target)
            self.write_file(entry, relative)
        if shared:
            # recorded before the tree is in place (a rename keeps every entry's size and
            # mtime), so a concurrent fetch never finds the new copy without its record and
            # takes it for a changed one
            _record_listing(dest, _listing(self.sink.root))
        if dest.exists() or dest.is_symlink():
            # fetch(overwrite=True), or a cached copy changed since it was written (shared)
            with suppress(FileNotFoundError):  # a concurrent fetch moved it first
                os.replace(dest, self.sink.root.with_name("replaced"))
        try:
            os.replace(self.sink.root, dest)
        except OSError:
            if not (shared and dest.exists()):
                raise
            # another process put the same content in the cache first: theirs serves
        return is_directory


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


def _claim_staging(staging: Path) -> int:
    """Hold a lock on ``staging`` for the fetch's lifetime: the kernel drops it when the
    process dies however it dies, which is how a later fetch tells the folder is orphaned."""
    owner = os.open(staging / _STAGING_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BaseException:
        os.close(owner)
        raise
    return owner


def _sweep_dead_stagings(parent: Path) -> None:
    """Remove the staging folders in ``parent`` that fetches killed mid-way left (a partial
    checkpoint can be gigabytes); a live fetch's lock keeps its own."""
    for staging in parent.glob(f"{_STAGING_PREFIX}*"):
        try:
            owner = os.open(staging / _STAGING_LOCK, os.O_RDWR)
        except FileNotFoundError:
            # just created and not locked yet, or its fetch died before locking: by age
            with suppress(OSError):
                if time.time() - staging.stat().st_mtime > _UNLOCKED_STAGING_AGE:
                    shutil.rmtree(staging, ignore_errors=True)
            continue
        except OSError:
            continue
        try:
            fcntl.flock(owner, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(owner)
            continue  # its fetch is running
        try:
            shutil.rmtree(staging, ignore_errors=True)
        finally:
            os.close(owner)


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


def _entry_of(error: OSError, staging_root: Path, out: Path) -> str:
    """The entry an OSError of the export is about, as a path in the output."""
    name = error.filename
    if not isinstance(name, str):
        return str(out)
    try:
        return str(out / Path(name).relative_to(staging_root))
    except ValueError:
        return name


def _listing(path: Path) -> list[list[object]] | None:
    """What a cached copy looks like on disk: every entry's relative path, kind, size and
    modification time (None when ``path`` is gone)."""
    if not path.exists() or path.is_symlink():
        return None
    if not path.is_dir():
        held = path.stat()
        return [["", "file", held.st_size, held.st_mtime_ns]]
    out: list[list[object]] = []
    for folder, folders, files in os.walk(path):
        for name in sorted(folders + files):
            entry = Path(folder) / name
            held = entry.lstat()
            kind = "link" if entry.is_symlink() else "dir" if entry.is_dir() else "file"
            size = held.st_size if kind == "file" else 0
            out.append([str(entry.relative_to(path)), kind, size, held.st_mtime_ns])
    out.sort()
    return out


def _listing_file(path: Path) -> Path:
    return path.with_name(f".{path.name}.listing.json")


def _record_listing(path: Path, listing: list[list[object]] | None) -> None:
    """Remember how the cache's copy of a CID at ``path`` looks as written from verified
    blocks (atomically: a concurrent reader sees the old record or the new one)."""
    record = _listing_file(path)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".listing-")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            json.dump(listing, stream)
        os.replace(temporary, record)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _unchanged(path: Path) -> bool:
    """Whether the cache's copy of a CID is as it was written: a copy edited, extended or
    truncated since (a model saved over the folder it was loaded from, say) is not served
    by CID again but rewritten from verified blocks. A copy without a record (written by a
    concurrent fetch a moment ago, or by an older version) is rewritten too."""
    try:
        recorded = json.loads(_listing_file(path).read_text(encoding="utf-8"))
        return recorded is not None and recorded == _listing(path)
    except (OSError, ValueError):
        return False


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
        ThreadPoolExecutor(fetcher.concurrency, thread_name_prefix="ipfs-verify") as hashers,
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
