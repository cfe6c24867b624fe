"""``models list``, ``models pull`` and ``models publish``: the local checkpoint cache, and
checkpoints by content (``ipfs://``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from ._app import models_app
from ._output import JsonOption, command, human_bytes, print_json, stderr, stdout


def _checkpoint_summary(path: Path) -> tuple[str, str]:
    """(model_type, what serve would do with it) of a checkpoint directory."""
    from ipfs_accelerate.serve._config import checkpoint_kind

    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        model_type = str(config.get("model_type", "")) or "?"
    except (OSError, ValueError):
        return "?", ""
    weights = (path / "model.safetensors").exists() or (
        path / "model.safetensors.index.json"
    ).exists()
    servable = checkpoint_kind(config, path) or "not servable"
    kind = servable if weights else "no safetensors weights"
    return model_type, kind


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _cached_models(cache_dir: Path | None) -> list[dict[str, Any]]:
    import importlib.metadata

    from ipfs_accelerate.models.loading import BUNDLED_MODELS, resolve_checkpoint

    entries: list[dict[str, Any]] = []
    for hub_id, package in BUNDLED_MODELS.items():
        try:
            importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            continue
        path = resolve_checkpoint(package)
        model_type, kind = _checkpoint_summary(path)
        entries.append(
            {
                "id": hub_id,
                "source": f"package {package}",
                "path": str(path),
                "model_type": model_type,
                "kind": kind,
                "size_bytes": _dir_size(path),
            }
        )
    try:
        from huggingface_hub import scan_cache_dir
        from huggingface_hub.errors import CacheNotFound

        try:
            info: Any = scan_cache_dir(cache_dir)
        except CacheNotFound:
            info = None
    except ImportError:  # pragma: no cover - huggingface_hub is in the models extra
        info = None
    if info is not None:
        for repo in sorted(info.repos, key=lambda r: r.repo_id):
            if repo.repo_type != "model" or not repo.revisions:
                continue
            revision = max(repo.revisions, key=lambda r: r.last_modified)
            model_type, kind = _checkpoint_summary(Path(revision.snapshot_path))
            entries.append(
                {
                    "id": repo.repo_id,
                    "source": "hugging face cache",
                    "path": str(revision.snapshot_path),
                    "revision": revision.commit_hash,
                    "refs": sorted(revision.refs),
                    "model_type": model_type,
                    "kind": kind,
                    "size_bytes": repo.size_on_disk,
                }
            )
    from ipfs_accelerate.storage import default_cache_dir

    s3_root = default_cache_dir()
    if s3_root.is_dir():
        for config in sorted(s3_root.rglob("config.json")):
            directory = config.parent
            model_type, kind = _checkpoint_summary(directory)
            relative = directory.relative_to(s3_root).as_posix()
            entries.append(
                {
                    "id": f"s3://{relative}",
                    "source": "s3 cache",
                    "path": str(directory),
                    "model_type": model_type,
                    "kind": kind,
                    "size_bytes": _dir_size(directory),
                }
            )
    return entries


@models_app.command("list")
@command
def models_list(
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir",
            help="The Hugging Face hub cache (default: $HF_HUB_CACHE or ~/.cache/huggingface/hub).",
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Checkpoints available without a download: installed model packages, the Hugging Face \
cache, the s3:// cache."""
    entries = _cached_models(cache_dir)
    if json_output:
        print_json({"models": entries})
        return
    if not entries:
        stdout.print("no cached checkpoints (ipfs-accelerate models pull HUB_ID fetches one)")
        return
    table = Table(title="Local checkpoints (--json adds their paths)", title_justify="left")
    table.add_column("id", no_wrap=True)
    for column in ("source", "model_type", "serve as", "size"):
        table.add_column(column)
    for entry in entries:
        table.add_row(
            entry["id"],
            entry["source"],
            entry["model_type"],
            entry["kind"],
            human_bytes(entry["size_bytes"]),
        )
    stdout.print(table)


@models_app.command("pull")
@command
def models_pull(
    model_id: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help="A Hub id (org/name), an s3://bucket/prefix URI or ipfs://CID[/path].",
            show_default=False,
        ),
    ],
    revision: Annotated[
        str | None, typer.Option("--revision", help="Branch, tag or commit (Hub).")
    ] = None,
    cache_dir: Annotated[
        Path | None,
        typer.Option(
            "--cache-dir", help="Where to store it (default: the Hugging Face / S3 cache)."
        ),
    ] = None,
    gateways: Annotated[
        list[str] | None,
        typer.Option(
            "--gateway",
            help="A trustless gateway base URL for ipfs:// (repeatable; default: "
            "$IPFS_ACCELERATE_GATEWAYS, else none).",
        ),
    ] = None,
    rpc: Annotated[
        str | None,
        typer.Option(
            "--rpc", help="A kubo RPC API URL for ipfs:// (default: $IPFS_ACCELERATE_KUBO_RPC)."
        ),
    ] = None,
    strategy: Annotated[
        str,
        typer.Option(
            "--strategy",
            help="The order ipfs:// sources are tried in: lowest_latency (measured), "
            "least_in_flight, round_robin, weighted, or ordered (as given).",
        ),
    ] = "lowest_latency",
    json_output: JsonOption = False,
) -> None:
    """Fetch a checkpoint into the local cache (the files the models need: config, tokenizer, \
safetensors); ipfs:// content is verified block by block."""
    from ipfs_accelerate.errors import ConfigurationError
    from ipfs_accelerate.models.loading import hub_offline, locate_checkpoint

    if model_id.startswith("ipfs://"):
        path, source = _pull_ipfs(model_id, gateways, rpc, cache_dir, json_output, strategy)
    elif model_id.startswith("s3://"):
        # a pull always mirrors, whatever $HF_HUB_OFFLINE says, and the storage service's own
        # errors reach the user unwrapped (resolving for a model load wraps them)
        from ipfs_accelerate.api_backends import fetch_s3_prefix_sync

        with stderr.status(f"mirroring {model_id}"):
            path = fetch_s3_prefix_sync(model_id, cache_dir)
        source = "s3 cache"
    else:
        offline = hub_offline()
        try:
            with stderr.status(f"pulling {model_id}"):
                located = locate_checkpoint(
                    model_id, revision=revision, cache_dir=cache_dir, local_files_only=offline
                )
        except Exception as exc:
            if offline:
                raise ConfigurationError(
                    f"{model_id}: offline mode is on ($HF_HUB_OFFLINE) and it is not cached, so "
                    "it cannot be pulled"
                ) from exc
            raise
        path, source = located.path, located.source
    model_type, kind = _checkpoint_summary(Path(path))
    if json_output:
        print_json(
            {
                "id": model_id,
                "path": str(path),
                "source": source,
                "model_type": model_type,
                "kind": kind,
            }
        )
        return
    stdout.print(f"{model_id}: {path} ({source}; model_type {model_type}, serve as {kind})")


def _pull_ipfs(
    uri: str,
    gateways: list[str] | None,
    rpc: str | None,
    cache_dir: Path | None,
    quiet: bool,
    strategy: str,
) -> tuple[Path, str]:
    from ipfs_accelerate._progress import load_progress
    from ipfs_accelerate.content import fetch
    from ipfs_accelerate.errors import CheckpointError

    with load_progress(stderr, uri, transient=True) as progress:
        result = fetch(
            uri,
            gateways=gateways or None,
            rpc=rpc,
            cache_dir=cache_dir / "ipfs" if cache_dir is not None else None,
            strategy=strategy,
            progress=None if quiet else progress,
        )
    if not result.is_directory:
        raise CheckpointError(f"{uri} is a file ({result.cid}), not a checkpoint directory")
    for error in result.errors:
        stderr.print(f"[yellow]skipped[/] {type(error).__name__}: {error}", soft_wrap=True)
    source = "ipfs cache" if not result.requests else f"ipfs ({', '.join(result.sources)})"
    return result.path, source


@models_app.command("publish")
@command
def models_publish(
    directory: Annotated[
        Path,
        typer.Argument(metavar="DIR", help="A checkpoint directory (config.json + safetensors).",
                       show_default=False),
    ],
    profile: Annotated[
        str,
        typer.Option("--profile", help="unixfs-v1-2025 (CIDv1) or unixfs-v0-2015 (kubo's CIDv0)."),
    ] = "unixfs-v1-2025",
    car: Annotated[
        Path | None, typer.Option("--car", help="Write the blocks as a CAR v1 file here.")
    ] = None,
    rpc: Annotated[
        str | None,
        typer.Option("--rpc", help="Import the CAR into this kubo node (its RPC API URL)."),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Print the root CID of a checkpoint directory; optionally write a CAR and import it into \
a kubo node (which pins it)."""
    from ipfs_accelerate.content import publish

    with stderr.status(f"importing {directory}"):
        result = publish(directory, profile=profile, car=car, rpc=rpc or "")
    if json_output:
        print_json(
            {
                "cid": str(result.cid),
                "profile": profile,
                "car": str(result.car) if result.car is not None else None,
                "imported": result.imported,
            }
        )
        return
    stdout.print(str(result.cid), soft_wrap=True)
    if result.car is not None:
        stderr.print(f"wrote {result.car}")
    if result.imported:
        from ipfs_accelerate.resilience import redact_url

        stderr.print(f"imported into {redact_url(rpc or '')} (root pinned)")
