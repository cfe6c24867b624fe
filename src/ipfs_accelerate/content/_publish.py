"""Publishing a checkpoint directory: its root CID, a CAR of its blocks, and an import into a
kubo node through ``POST /api/v0/dag/import``."""

from __future__ import annotations

import http.client
import json
import os
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from ipfs_accelerate.content._car import write_car_of_path
from ipfs_accelerate.content._cid import CID
from ipfs_accelerate.content._importer import DEFAULT_PROFILE, import_directory
from ipfs_accelerate.content._limits import DEFAULT_LIMITS, DirectoryLimits
from ipfs_accelerate.content._sources import KUBO_RPC_ENV, _check_base_url, _split_credentials
from ipfs_accelerate.errors import CheckpointError, GatewayError, InvalidCIDError
from ipfs_accelerate.resilience import redact_url

__all__ = ["PublishResult", "publish"]

_UPLOAD_CHUNK: Final = 1 << 20
_MAX_ANSWER_BYTES: Final = 1 << 20


@dataclass(frozen=True)
class PublishResult:
    """The checkpoint's root CID, the CAR written (None when none was kept) and whether a
    kubo node imported it (and pinned the root)."""

    cid: CID
    car: Path | None
    imported: bool


def _check_checkpoint(path: Path) -> None:
    if not path.is_dir():
        what = "does not exist" if not path.exists() else "is not a directory"
        raise CheckpointError(f"publish {str(path)!r}: {what}; give a checkpoint directory")
    if not (path / "config.json").is_file():
        raise CheckpointError(
            f"publish {str(path)!r}: not a checkpoint directory (no config.json)"
        )
    if not any((path / name).is_file() for name in ("model.safetensors",
                                                     "model.safetensors.index.json")):
        raise CheckpointError(
            f"publish {str(path)!r}: not a checkpoint directory (no model.safetensors or "
            "model.safetensors.index.json)"
        )


def publish(
    path: str | os.PathLike[str],
    *,
    profile: str = DEFAULT_PROFILE,
    car: str | os.PathLike[str] | None = None,
    rpc: str | None = None,
    timeout: float = 600.0,
    limits: DirectoryLimits = DEFAULT_LIMITS,
) -> PublishResult:
    """Import the checkpoint directory ``path`` under ``profile`` and return its root CID.

    With ``car`` the blocks are written there as a CAR v1; with ``rpc`` (else
    ``$IPFS_ACCELERATE_KUBO_RPC`` when set) that CAR is uploaded to the kubo node's
    ``/api/v0/dag/import``, which pins the root, and the root kubo reports must equal this
    one. A path that is not a checkpoint directory (config.json and safetensors weights)
    raises CheckpointError; one above ``limits`` ContentLimitError.
    """
    directory = Path(path).expanduser()
    _check_checkpoint(directory)
    rpc_url = rpc if rpc is not None else os.environ.get(KUBO_RPC_ENV) or None
    base = _check_base_url(rpc_url, "kubo rpc") if rpc_url else None
    if car is None and base is None:
        imported = import_directory(directory, profile=profile, limits=limits)
        return PublishResult(imported.root.cid, None, False)
    if car is not None:
        car_path = Path(car).expanduser()
        root = write_car_of_path(directory, car_path, profile=profile, limits=limits).cid
        if base is not None:
            _dag_import(base, car_path, root, timeout)
        return PublishResult(root, car_path, base is not None)
    assert base is not None
    handle, temporary = tempfile.mkstemp(suffix=".car")
    os.close(handle)
    try:
        root = write_car_of_path(directory, temporary, profile=profile, limits=limits).cid
        _dag_import(base, Path(temporary), root, timeout)
    finally:
        Path(temporary).unlink(missing_ok=True)
    return PublishResult(root, None, True)


def _multipart(car: Path, boundary: str) -> Iterator[bytes]:
    yield (
        f"--{boundary}\r\n"
        f'Content-Disposition: form-data; name="file"; filename="{car.name}"\r\n'
        "Content-Type: application/vnd.ipld.car\r\n\r\n"
    ).encode()
    with open(car, "rb") as stream:
        while chunk := stream.read(_UPLOAD_CHUNK):
            yield chunk
    yield f"\r\n--{boundary}--\r\n".encode()


def _dag_import(base: str, car: Path, root: CID, timeout: float) -> None:
    """Upload ``car`` as multipart/form-data; kubo answers one JSON object per line, a
    ``{"Root": {"Cid": {"/": ...}, "PinErrorMsg": ...}}`` per root it imported."""
    name = f"kubo rpc {redact_url(base)}"
    base, authorization = _split_credentials(base)  # user:pass@ as basic auth, as fetch does
    boundary = f"ipfs-accelerate-{uuid.uuid4().hex}"
    request = urllib.request.Request(
        f"{base}/api/v0/dag/import?pin-roots=true",
        data=_multipart(car, boundary),
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    if authorization is not None:
        request.add_unredirected_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = response.read(_MAX_ANSWER_BYTES + 1)
    except urllib.error.HTTPError as exc:
        exc.close()
        raise GatewayError(f"{name}: dag/import: HTTP {exc.code}", gateway=name) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        raise GatewayError(
            f"{name}: dag/import: {type(reason).__name__}: {reason}", gateway=name
        ) from None
    if len(answer) > _MAX_ANSWER_BYTES:
        raise GatewayError(f"{name}: dag/import answer exceeds {_MAX_ANSWER_BYTES} bytes",
                           gateway=name)
    imported: list[str] = []
    for line in answer.decode("utf-8", "replace").splitlines():
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            entry = item.get("Root") if isinstance(item, dict) else None
            if entry is None:
                continue
            cid_text = entry["Cid"]["/"]
            pin_error = entry.get("PinErrorMsg") or ""
        except (ValueError, KeyError, TypeError, AttributeError):
            raise GatewayError(f"{name}: dag/import answered a line that is not kubo's JSON: "
                               f"{line[:200]!r}", gateway=name) from None
        if pin_error:
            raise GatewayError(f"{name}: dag/import could not pin {cid_text}: {pin_error[:200]}",
                               gateway=name)
        imported.append(cid_text)
    try:
        roots = {CID.parse(text).to_v1() for text in imported}
    except InvalidCIDError as exc:
        raise GatewayError(f"{name}: dag/import reported a malformed root: {exc}",
                           gateway=name) from None
    if root.to_v1() not in roots:
        raise GatewayError(
            f"{name}: dag/import reported root(s) {imported or 'none'}, not {root}", gateway=name
        )
