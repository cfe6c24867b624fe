"""One typed exception tree for the whole package.

Every failure raised by ipfs_accelerate derives from :class:`IpfsAccelerateError`, so a
caller can catch the package's errors in one place; each class also derives from the
closest built-in exception (``ValueError``, ``TypeError``, ``KeyError``, ...) so code written
against the built-ins keeps working. Messages name the op/backend/provider and the offending
value, and never contain secrets.

Areas:

* tensors and ops: :class:`ShapeError`, :class:`DtypeError`, :class:`AxisError`, ...
* autograd: :class:`AutogradError`, :class:`NonFiniteLossError`
* hardware backends: :class:`BackendError` and subclasses, :class:`BackendFallbackWarning`
* tensor sharing: :class:`SharingError` and subclasses
* WebNN: :class:`WebNNError` and subclasses
* models: :class:`ModelError` and subclasses
* remote APIs: :class:`APIError` and subclasses (the names follow openai-python)
* object storage and managed servers: :class:`StorageError`, :class:`ContainerError`
* IPFS content (CIDs, UnixFS DAGs, CAR files): :class:`ContentError` and subclasses
"""

from __future__ import annotations

import builtins
from typing import Any

__all__ = [
    "APIConnectionError",
    "APIError",
    "APIStatusError",
    "APITimeoutError",
    "AuthenticationError",
    "AutogradError",
    "AxisError",
    "BackendError",
    "BackendFallbackWarning",
    "BackendLimitError",
    "BackendUnavailableError",
    "BadRequestError",
    "BlockNotFoundError",
    "BlockVerificationError",
    "CarFormatError",
    "CheckpointError",
    "CircuitOpenError",
    "ConfigurationError",
    "ConflictError",
    "ContainerError",
    "ContentError",
    "ContentLimitError",
    "ContentPathError",
    "DagFormatError",
    "DeviceLostError",
    "DeviceMismatchError",
    "DtypeError",
    "FetchError",
    "GatewayError",
    "IndexOutOfRangeError",
    "InvalidArgumentError",
    "InvalidCIDError",
    "IpfsAccelerateError",
    "ModelError",
    "NonFiniteLossError",
    "NotFoundError",
    "ObjectNotFoundError",
    "OutOfMemoryError",
    "PermissionDeniedError",
    "PreprocessingError",
    "ProtocolError",
    "QueueFullError",
    "RateLimitError",
    "ServerError",
    "ServerStartError",
    "ShapeError",
    "SharingError",
    "StorageAuthError",
    "StorageError",
    "StorageUnavailableError",
    "StreamInterruptedError",
    "TensorNotFoundError",
    "TensorOverflowError",
    "TensorTooLargeError",
    "TruncationWarning",
    "UnknownBackendError",
    "UnknownTensorTypeError",
    "UnsupportedArchitectureError",
    "UnsupportedCIDError",
    "UnsupportedDtypeError",
    "UnsupportedOpError",
    "UntrustedBlockError",
    "ViewBoundsError",
    "WebNNError",
    "WebNNInvalidStateError",
    "WebNNOperationError",
    "WebNNValidationError",
]


class IpfsAccelerateError(Exception):
    """Base class of every error raised by ipfs_accelerate."""


# --------------------------------------------------------------------------- tensors, ops


class InvalidArgumentError(IpfsAccelerateError, ValueError):
    """An argument has a value the operation cannot accept."""


class ShapeError(InvalidArgumentError):
    """Shapes are incompatible (broadcasting, matmul inner dimensions, reshape sizes...)."""


class DtypeError(InvalidArgumentError, TypeError):
    """A dtype is unknown, or not accepted by the operation."""


class AxisError(InvalidArgumentError, builtins.IndexError):
    """An axis is out of range for the tensor's rank, or repeated."""


class IndexOutOfRangeError(InvalidArgumentError, builtins.IndexError):
    """An index (item access, gather, embedding lookup) lies outside the indexed dimension."""


class TensorOverflowError(InvalidArgumentError, builtins.OverflowError):
    """A value does not fit the target dtype (creation, casting or integer arithmetic)."""


class TensorTooLargeError(InvalidArgumentError, builtins.MemoryError):
    """A tensor would exceed the size limit (``hal.max_tensor_bytes()``); refused before any
    memory is allocated. The message names the op, the shape, the dtype and both sizes."""


class DeviceMismatchError(InvalidArgumentError):
    """Tensors on different backends were mixed without an explicit ``.to(device)``."""


# --------------------------------------------------------------------------- hardware backends


class AutogradError(IpfsAccelerateError, RuntimeError):
    """A backward pass cannot run: the graph was already freed, a saved tensor was modified in
    place, an implicit gradient for a non-scalar output, a leaf changed in place..."""


class NonFiniteLossError(AutogradError, builtins.ArithmeticError):
    """backward() was asked of a NaN or infinite loss (the message names the tensor)."""


class BackendError(IpfsAccelerateError, RuntimeError):
    """A hardware backend failed."""


class UnknownBackendError(BackendError, builtins.KeyError):
    """No backend of that name is registered."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class BackendUnavailableError(BackendError):
    """The backend is registered but cannot start on this machine (missing package, no adapter)."""


class UnsupportedOpError(BackendError, NotImplementedError):
    """The backend does not implement this op (or this op with these arguments)."""


class UnsupportedDtypeError(DtypeError):
    """The backend (or its adapter) cannot hold or compute this dtype."""


class BackendLimitError(BackendError):
    """A request exceeds a limit of the device (buffer binding size, workgroup counts...)."""


class DeviceLostError(BackendError):
    """The device was lost; tensors that lived on it are gone."""


class BackendFallbackWarning(UserWarning):
    """A backend could not serve a request and another one did (the message says which and why)."""


# --------------------------------------------------------------------------- sharing


class SharingError(IpfsAccelerateError):
    """Cross-model tensor sharing failed."""


class TensorNotFoundError(SharingError, builtins.KeyError):
    """No shared tensor (or view) of that name is registered."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class ViewBoundsError(SharingError, InvalidArgumentError):
    """A view's offset/size lie outside its parent tensor."""


class OutOfMemoryError(SharingError, builtins.MemoryError):
    """Registering a tensor would exceed the memory limit even after evicting what can be freed."""


class UnknownTensorTypeError(SharingError, InvalidArgumentError):
    """A tensor type (text_embedding, vision_embedding, ...) has no known sharing pattern."""


# --------------------------------------------------------------------------- WebNN


class WebNNError(IpfsAccelerateError):
    """Base of the WebNN API's errors."""


class WebNNValidationError(WebNNError, builtins.TypeError):
    """A graph-building call is invalid per the WebNN spec (the spec throws TypeError there)."""


class WebNNOperationError(WebNNError, builtins.RuntimeError):
    """Building, compiling or dispatching a graph failed at run time (the spec's OperationError)."""


class WebNNInvalidStateError(WebNNError, builtins.RuntimeError):
    """The object's state forbids the call (the spec's InvalidStateError): a builder that has
    already built, or a context, graph or tensor that was destroyed."""


# --------------------------------------------------------------------------- models


class ModelError(IpfsAccelerateError):
    """A model could not be loaded or run."""


class CheckpointError(ModelError, InvalidArgumentError):
    """A checkpoint is missing, corrupt, truncated, or its tensors do not match the architecture."""


class UnsupportedArchitectureError(ModelError, InvalidArgumentError):
    """The checkpoint's config describes an architecture this package does not implement."""


class PreprocessingError(ModelError, InvalidArgumentError):
    """Input could not be preprocessed (undecodable image/audio, bad text input...)."""


class TruncationWarning(UserWarning):
    """Input longer than a model accepts was truncated (the message says which and by how much)."""


# --------------------------------------------------------------------------- remote APIs


class ConfigurationError(InvalidArgumentError):
    """A backend lacks configuration it needs (API key, base URL...), found before any request."""


class APIError(IpfsAccelerateError):
    """A remote API call failed; carries the provider, HTTP status and request id if known."""

    def __init__(
        self,
        message: str,
        *,
        provider: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        body: Any = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.provider = provider
        self.status = status
        self.request_id = request_id
        self.body = body

    def __str__(self) -> str:
        parts = []
        if self.provider:
            parts.append(self.provider)
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        prefix = f"[{' '.join(parts)}] " if parts else ""
        suffix = f" (request id {self.request_id})" if self.request_id else ""
        return f"{prefix}{self.message}{suffix}"

    def __reduce__(self) -> tuple[Any, ...]:
        # keyword-only arguments: rebuild through __dict__ so errors pickle across processes
        return (_rebuild_api_error, (type(self), self.message, self.__dict__))


def _rebuild_api_error(cls: type[APIError], message: str, state: dict[str, Any]) -> APIError:
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.__dict__.update(state)
    return error


class APIStatusError(APIError):
    """The API answered with an error status."""


class BadRequestError(APIStatusError):
    """HTTP 400 or 422: the request is invalid; never retried."""


class AuthenticationError(APIStatusError):
    """HTTP 401: missing or wrong credentials; never retried."""


class PermissionDeniedError(APIStatusError):
    """HTTP 403: the credentials lack permission; never retried."""


class NotFoundError(APIStatusError):
    """HTTP 404: unknown route, model or resource; never retried."""


class ConflictError(APIStatusError):
    """HTTP 409: a conflicting request (retryable)."""


class RateLimitError(APIStatusError):
    """HTTP 429: rate limited. ``retry_after`` is the server's advice in seconds, if it gave one."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(APIStatusError):
    """HTTP 5xx (and Anthropic's 529 overloaded): retryable."""


class APITimeoutError(APIError, builtins.TimeoutError):
    """The request did not complete within its connect or total timeout."""


class APIConnectionError(APIError, builtins.ConnectionError):
    """The connection could not be made, or broke before a response arrived."""


class CircuitOpenError(APIError):
    """The circuit breaker is open: the request was refused without being sent."""


class QueueFullError(APIError):
    """The request queue is at its bound: the request was refused without being queued."""


class ProtocolError(APIError):
    """The response (or stream) broke the provider's protocol: malformed, truncated, HTML..."""


class StreamInterruptedError(ProtocolError):
    """A stream ended or broke before its terminal event: the output is incomplete."""


# --------------------------------------------------------------------------- storage, servers


class StorageError(IpfsAccelerateError):
    """Object storage (S3 Kit) failed."""


class ObjectNotFoundError(StorageError, builtins.KeyError):
    """The bucket or object does not exist."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class StorageAuthError(StorageError, builtins.PermissionError):
    """The storage service rejected the credentials (unknown key, bad signature, expired
    token) or denied access; never retried or failed over."""


class StorageUnavailableError(StorageError, builtins.ConnectionError):
    """No endpoint could serve the request: connection failures, timeouts, 5xx or throttling
    on every attempt, or every circuit open. The last underlying error is chained."""


class ContainerError(IpfsAccelerateError, RuntimeError):
    """A managed inference server (container or local process) failed."""


class ServerStartError(ContainerError):
    """A managed server was not ready in time; the message names it and its last log lines."""


# --------------------------------------------------------------------------- IPFS content


class ContentError(IpfsAccelerateError):
    """IPFS content (CIDs, UnixFS DAGs, CAR files, blockstores) failed."""


class InvalidCIDError(ContentError, InvalidArgumentError):
    """A CID string or binary CID is malformed (bad multibase, varint, multihash length...);
    the message names the input."""


class UnsupportedCIDError(InvalidCIDError):
    """A well-formed CID uses a version, codec or hash function this package does not
    handle (only CIDv0/v1, dag-pb 0x70 or raw 0x55, sha2-256 0x12)."""


class DagFormatError(ContentError, InvalidArgumentError):
    """A dag-pb node or its UnixFS Data is not valid protobuf for its schema, or breaks the
    dag-pb canonical form; the message names the block (when known) and the fault."""


class CarFormatError(ContentError, InvalidArgumentError):
    """A CAR file is malformed or truncated; the message names the file and the offset."""


class BlockVerificationError(ContentError):
    """A block's bytes do not hash to its CID (or a link does not match its parent):
    the block was not what was asked for and must not be used."""


class ContentPathError(ContentError, InvalidArgumentError):
    """A path below a root CID (``ipfs://<cid>/a/b``) is malformed or names no entry of the
    verified DAG; the message names the root and the path."""


class ContentLimitError(ContentError, InvalidArgumentError):
    """A directory (imported, published or fetched) is above a limit of its
    :class:`~ipfs_accelerate.content.DirectoryLimits` (entries, total bytes, depth); the
    message names the input, the limit and how to raise it."""


class GatewayError(ContentError):
    """A content source (trustless gateway or kubo RPC API) failed to serve what was asked:
    an HTTP error, a timeout, a wrong media type, a truncated or incomplete answer. The
    message and ``gateway`` name the source (credentials and query removed)."""

    def __init__(self, message: str, *, gateway: str = "", retryable: bool = False) -> None:
        super().__init__(message)
        self.gateway = gateway
        self.retryable = retryable


class UntrustedBlockError(GatewayError, BlockVerificationError):
    """A source served bytes that fail verification: a block not hashing to its CID, a
    block no verified parent links to, or a CAR with another root. Names the source and
    the block; nothing it sent past the last verified block is kept."""


class FetchError(ContentError):
    """No configured source delivered the content; ``errors`` holds each source's error
    (the message lists them)."""

    def __init__(self, message: str, errors: list[IpfsAccelerateError] | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors or [])


class BlockNotFoundError(ContentError, builtins.KeyError):
    """A blockstore does not hold the requested CID."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""
