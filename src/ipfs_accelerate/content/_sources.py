"""The sources a fetch asks for blocks, and what is known about them across fetches.

:class:`_Source` and its two kinds, :class:`_Gateway` (a trustless gateway: ``GET
/ipfs/<cid>?format=raw|car``) and :class:`_KuboRPC` (``POST /api/v0/block/get`` and
``/api/v0/dag/export``), with the process-wide state each source keeps (its circuit breaker
and the measurements the balancing strategies order sources by), the response body that
counts bytes and gives up on a source too slow to wait for, the bounded read of one block,
and the checks on what a caller configures (base URLs and their credentials, ``ipfs://``
paths, ``$IPFS_ACCELERATE_GATEWAYS``).
Split out of :mod:`._fetch` (the fetch itself) so that the network side, which knows nothing
of DAGs or output folders, reads on its own and stays within the house's module length; the
publish side (:mod:`._publish`) shares its URL checks.
"""

from __future__ import annotations

import base64
import http.client
import io
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, BinaryIO, Final
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from ipfs_accelerate.content._car import MAX_BLOCK_SIZE
from ipfs_accelerate.content._cid import CID
from ipfs_accelerate.errors import (
    ConfigurationError,
    ContentPathError,
    GatewayError,
    InvalidArgumentError,
    UntrustedBlockError,
)
from ipfs_accelerate.resilience import BreakerConfig, CircuitBreaker, redact_url
from ipfs_accelerate.resilience.balancing import STRATEGIES, make_strategy

#: comma- or space-separated trustless gateway base URLs used when ``gateways=`` is not given
GATEWAYS_ENV: Final = "IPFS_ACCELERATE_GATEWAYS"
#: a kubo RPC API base URL (``http://127.0.0.1:5001``) used when ``rpc=`` is not given
KUBO_RPC_ENV: Final = "IPFS_ACCELERATE_KUBO_RPC"
CAR_MEDIA_TYPE: Final = "application/vnd.ipld.car"
RAW_MEDIA_TYPE: Final = "application/vnd.ipld.raw"
_CAR_ACCEPT: Final = "application/vnd.ipld.car; version=1; order=dfs; dups=n"
_MAX_PATH_SEGMENTS: Final = 256
#: answers to a CAR request that mean "no CARs here" (blocks-only gateways): blocks then
_CAR_REFUSED: Final = frozenset({400, 406, 415, 501})

#: how sources are ordered for a fetch: the package's balancing strategies, or "ordered"
#: (as configured: the kubo node, then the gateways in the order given)
SOURCE_STRATEGIES: Final = ("ordered", *STRATEGIES)
_EWMA_ALPHA: Final = 0.3  # the Router's default: a few requests move the average
_MIB: Final = 1024 * 1024
#: the slowest answer accepted, in bytes a second over a span of the fetch's timeout
_MIN_RATE: Final = 1024
_READ_STEP: Final = 1024 * 1024
#: the longest chunk-size or trailer line of a chunked body read (real ones are a few bytes)
_MAX_LINE: Final = 4096
_MAX_TRAILERS: Final = 64

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


class _RawBody:
    """An HTTP response's body read straight from its connection's buffered socket: each call
    does at most one receive (so a caller can check the rate between calls) and
    :meth:`readinto1` lands the bytes in the caller's buffer without another copy.
    ``http.client`` offers neither for a chunked body (its ``readinto`` waits until the
    buffer is full, however slowly the bytes come), so the chunked encoding is decoded here.
    The connection is not reused afterwards (urllib closes it), so its state is not kept.
    ``waited(count, seconds)`` hears of every receive the chunked framing itself takes (a
    size line sent a byte at a time is as slow as a body sent so)."""

    def __init__(
        self, response: http.client.HTTPResponse, waited: Callable[[int, float], None]
    ) -> None:
        self._fp: io.BufferedReader | None = response.fp
        self._waited = waited
        self._chunked = bool(response.chunked)
        self._left: int | None = response.length  # None: until the connection closes
        self._chunk_left = 0
        self._started = False  # a chunk was read: its CRLF comes before the next size
        self._done = response.fp is None or response.length == 0

    def _readline(self) -> bytes:
        """A line of the framing (at most ``_MAX_LINE`` + 1 bytes), one receive at a time."""
        assert self._fp is not None
        line = bytearray()
        while len(line) <= _MAX_LINE:
            started = time.monotonic()
            ahead = self._fp.peek(1)  # what is buffered, or one receive when nothing is
            waited = time.monotonic() - started
            if not ahead:
                break
            room = _MAX_LINE + 1 - len(line)
            end = ahead.find(b"\n", 0, room)
            part = self._fp.read(min(len(ahead), room) if end < 0 else end + 1)  # buffered
            line += part
            self._waited(len(part), waited)
            if end >= 0:
                break
        return bytes(line)

    def _next_chunk(self) -> None:
        if self._started and self._readline() not in (b"\r\n", b"\n"):
            raise http.client.HTTPException("chunked body: no line end after a chunk")
        self._started = True
        line = self._readline()
        if not line:
            raise http.client.IncompleteRead(b"")
        try:
            size = int(line.split(b";", 1)[0], 16)
        except ValueError:
            raise http.client.HTTPException("chunked body: malformed chunk size") from None
        if size < 0:
            raise http.client.HTTPException("chunked body: malformed chunk size")
        if size == 0:
            for _ in range(_MAX_TRAILERS):  # trailers end at an empty line (or the close)
                if self._readline() in (b"\r\n", b"\n", b""):
                    break
            self._done = True
        self._chunk_left = size

    def _allowance(self, wanted: int) -> int:
        """How many of ``wanted`` bytes the next receive may take (0: the body ended)."""
        if self._done or wanted <= 0:
            return 0
        if self._chunked:
            if self._chunk_left == 0:
                self._next_chunk()
                if self._done:
                    return 0
            return min(wanted, self._chunk_left)
        return wanted if self._left is None else min(wanted, self._left)

    def _took(self, count: int) -> None:
        if count == 0:
            if self._chunked or self._left:
                raise http.client.IncompleteRead(b"", self._chunk_left or self._left)
            self._done = True
            return
        if self._chunked:
            self._chunk_left -= count
        elif self._left is not None:
            self._left -= count
            self._done = self._left == 0

    def read1(self, size: int) -> bytes:
        allowed = self._allowance(size)
        if not allowed:
            return b""
        assert self._fp is not None
        data = self._fp.read1(allowed)
        self._took(len(data))
        return data

    def readinto1(self, view: memoryview) -> int:
        allowed = self._allowance(len(view))
        if not allowed:
            return 0
        assert self._fp is not None
        count = self._fp.readinto1(view[:allowed])
        self._took(count)
        return int(count)


class _CountingBody:
    """A response body that counts the bytes read from it, and gives up on a source that
    sends less than ``_MIN_RATE`` bytes a second over a span of ``timeout`` seconds (the
    socket's timeout only catches silence: a byte now and then keeps it waiting for ever).
    :meth:`readinto` fills a caller's buffer straight from the socket (a CAR's blocks are
    received into reusable buffers, not into new bytes objects joined and sliced)."""

    def __init__(
        self, body: http.client.HTTPResponse, timeout: float, what: str, gateway: str
    ) -> None:
        self._body = _RawBody(body, self._progress)
        self.received = 0
        self._span = timeout
        self._what = what
        self._gateway = gateway
        self._window_waited = 0.0
        self._window_bytes = 0

    def read(self, size: int = -1) -> bytes:
        parts: list[bytes] = []
        wanted = size if size >= 0 else None
        got = 0
        while wanted is None or got < wanted:
            step = _READ_STEP if wanted is None else min(wanted - got, _READ_STEP)
            started = time.monotonic()
            part = self._body.read1(step)
            if not part:
                break
            parts.append(part)
            got += len(part)
            self._progress(len(part), time.monotonic() - started)
        self.received += got
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def readinto(self, buffer: memoryview | bytearray) -> int:
        """Fill ``buffer`` (fewer bytes only where the body ends); the count read."""
        view = memoryview(buffer).cast("B")
        got = 0
        while got < len(view):
            started = time.monotonic()
            count = self._body.readinto1(view[got:])
            if not count:
                break
            got += count
            self._progress(count, time.monotonic() - started)
        self.received += got
        return got

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
