"""A run's files after the fact: export them with a manifest for audit, prune them to
reclaim space. Results live in the store and stay readable either way."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from batchor.artifacts.base import ArtifactStore
from batchor.artifacts.fsspec import redact, url_is_file
from batchor.artifacts.local import LocalArtifactStore
from batchor.artifacts.open import is_url, open_artifacts
from batchor.engine.collect import RAW_OUTPUTS
from batchor.engine.context import RunContext
from batchor.errors import ConfigurationError, RunStateError
from batchor.states import BatchStatus

MANIFEST = "manifest.json"
_COPY_CHUNK = 1 << 20


@dataclass(frozen=True, slots=True)
class ArtifactExport:
    """What `Run.export_artifacts` copied.

    Attributes:
        manifest: Where the manifest (every file with its size and SHA-256) was written.
        files: Files copied.
        bytes: Bytes copied.
    """

    manifest: str
    files: int
    bytes: int


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What `Run.prune_artifacts` deleted.

    Attributes:
        files: Files deleted.
        bytes: Bytes reclaimed.
    """

    files: int
    bytes: int


def kind_of(key: str) -> str:
    """What an artifact of a run holds: ``requests``, ``batch_input``, ``raw_output``,
    ``raw_errors`` or ``other``."""
    name = key.rsplit("/", 1)[-1]
    if "/requests/" in key:
        return "requests"
    if "/batches/" in key:
        return {"input.jsonl": "batch_input", RAW_OUTPUTS[0]: "raw_output"}.get(
            name, "raw_errors" if name == RAW_OUTPUTS[1] else "other"
        )
    return "other"


def export_artifacts(
    ctx: RunContext, dest: str | os.PathLike[str] | ArtifactStore, *, force: bool = False
) -> ArtifactExport:
    """Copy the run's artifacts into ``dest`` (same relative layout) and write a manifest
    with each file's kind, size and SHA-256 beside them.

    ``dest`` must be new or empty; with ``force`` it may hold other files, but a file at a
    path the export writes is replaced only if batchor wrote it (see `check_destination`).
    """
    store = open_artifacts(dest)
    prefix = ctx.run_dir + "/"
    keys = list(ctx.artifacts.keys(ctx.run_dir))
    check_destination(ctx, dest, store, [k[len(prefix) :] for k in keys], force=force)
    entries = []
    total = 0
    for key in keys:
        relative = key[len(prefix) :]
        digest = hashlib.sha256()
        size = 0
        with ctx.artifacts.open_read(key) as src, store.open_write(relative) as out:
            while chunk := src.read(_COPY_CHUNK):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
        entries.append(
            {"path": relative, "kind": kind_of(key), "bytes": size, "sha256": digest.hexdigest()}
        )
        total += size
    now = time.time()
    manifest = {
        "run_id": ctx.run.run_id,
        "run_status": ctx.run.status.value,
        "exported_at": now,
        "batchor_version": _version(),
        "batches": [
            {
                "batch_key": b.batch_key,
                "status": b.status.value,
                "provider_batch_id": b.provider_batch_id,
                "provider_status": b.provider_status,
                "requests": b.request_count,
                "input_tokens": b.input_tokens,
                "output_tokens": b.output_tokens,
            }
            for b in ctx.store.batches(ctx.run.pk, list(BatchStatus))
        ],
        "files": entries,
    }
    with store.open_write(MANIFEST) as out:
        out.write(json.dumps(manifest, indent=2).encode())
    ctx.store.mark_exported(ctx.run.pk, now)
    return ArtifactExport(manifest=store.uri(MANIFEST), files=len(entries), bytes=total)


def check_destination(
    ctx: RunContext,
    dest: str | os.PathLike[str] | ArtifactStore,
    store: ArtifactStore,
    relatives: Sequence[str],
    *,
    force: bool,
) -> None:
    """Refuse an export that would lose a file it did not write, before writing anything.

    A destination that is a file is always refused. A non-empty one is refused unless
    ``force``; with ``force`` the export adds its files to it, and a file already at a path
    the export writes is replaced only when batchor wrote it: it is byte-identical to the
    run's file, or a previous export of the same run listed it in its ``manifest.json``
    with the SHA-256 it still has. ``manifest.json`` itself is replaced only when it is the
    manifest of a previous export of the same run.

    Raises:
        ConfigurationError: the destination is refused (the message names it and why).
    """
    where = _where(dest, store)
    if _is_file(dest, store):
        raise ConfigurationError(
            f"export destination {where!r} is a file; artifacts are exported to a directory: "
            "give a new or empty directory (--force never replaces a file)"
        )
    if not _is_empty(store):
        if not force:
            raise ConfigurationError(
                f"export destination {where!r} is not empty; give a new or empty directory, "
                "or pass force=True (--force on the CLI) to add the export to it (files "
                "batchor did not write are never replaced)"
            )
        conflicts = _foreign_files(ctx, store, relatives)
        if conflicts:
            shown = ", ".join(conflicts[:3]) + (", ..." if len(conflicts) > 3 else "")
            raise ConfigurationError(
                f"export destination {where!r} holds {len(conflicts)} file(s) that batchor "
                f"did not write where the export of run {ctx.run.run_id!r} goes ({shown}); "
                "nothing was written: move them away or export elsewhere"
            )


def _where(dest: str | os.PathLike[str] | ArtifactStore, store: ArtifactStore) -> str:
    """The destination as the user gave it, for messages (a URL without credentials)."""
    if isinstance(dest, str | os.PathLike):
        text = os.fspath(dest)
        return redact(text) if is_url(text) else text
    if isinstance(store, LocalArtifactStore):
        return str(store.root)
    return str(getattr(store, "url", store))


def _is_file(dest: str | os.PathLike[str] | ArtifactStore, store: ArtifactStore) -> bool:
    """Whether the destination (or, locally, a folder above it) is a file."""
    if isinstance(store, LocalArtifactStore):
        return any(p.exists() and not p.is_dir() for p in (store.root, *store.root.parents))
    if isinstance(dest, str) and is_url(dest):
        return url_is_file(dest)
    return False


def _is_empty(store: ArtifactStore) -> bool:
    if isinstance(store, LocalArtifactStore):
        return not store.root.is_dir() or next(store.root.iterdir(), None) is None
    return next(store.keys(""), None) is None


def _foreign_files(ctx: RunContext, store: ArtifactStore, relatives: Sequence[str]) -> list[str]:
    """The paths the export would write that hold something batchor did not write."""
    found = set(store.keys(""))
    conflicts: list[str] = []
    previous = _read_manifest(store) if MANIFEST in found else None
    if isinstance(store, LocalArtifactStore) and _blocked(store.root, MANIFEST):
        conflicts.append(MANIFEST)
    elif MANIFEST in found and previous is None:
        conflicts.append(f"{MANIFEST} (not a batchor manifest)")
    elif previous is not None and previous["run_id"] != ctx.run.run_id:
        conflicts.append(f"{MANIFEST} (the export of run {previous['run_id']!r})")
    listed = _listed_hashes(previous)
    for relative in relatives:
        if isinstance(store, LocalArtifactStore) and _blocked(store.root, relative):
            conflicts.append(relative)
        elif relative in found:
            existing = _sha256(store, relative)
            source = f"{ctx.run_dir}/{relative}"
            if listed.get(relative) != existing and _sha256(ctx.artifacts, source) != existing:
                conflicts.append(relative)
    return conflicts


def _blocked(root: Path, relative: str) -> bool:
    """Whether a folder sits where the file goes, or a file where one of its folders goes."""
    path = root / relative
    if path.is_dir():
        return True
    return any(p.exists() and not p.is_dir() for p in path.parents if p.is_relative_to(root))


def _read_manifest(store: ArtifactStore) -> dict[str, Any] | None:
    """A previous export's manifest, or None when the file is not one."""
    try:
        with store.open_read(MANIFEST) as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or not {"run_id", "batchor_version", "files"} <= data.keys():
        return None
    return data


def _listed_hashes(manifest: dict[str, Any] | None) -> dict[str, str]:
    files = manifest.get("files") if manifest else None
    if not isinstance(files, list):
        return {}
    return {
        str(f["path"]): str(f["sha256"])
        for f in files
        if isinstance(f, dict) and "path" in f and "sha256" in f
    }


def _sha256(store: ArtifactStore, key: str) -> str:
    digest = hashlib.sha256()
    with store.open_read(key) as fh:
        while chunk := fh.read(_COPY_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def prune_artifacts(ctx: RunContext, *, include_raw_outputs: bool, force: bool) -> PruneReport:
    """Delete a terminal run's request files (and its raw outputs when asked)."""
    run = ctx.run
    if not run.status.is_terminal:
        raise RunStateError(
            f"cannot prune the artifacts of run {run.run_id!r}: it is {run.status.value}; "
            "pruning is for terminal runs only (their files are needed to resume)"
        )
    keys = list(ctx.artifacts.keys(ctx.run_dir))
    raw = [k for k in keys if kind_of(k) in ("raw_output", "raw_errors")]
    if include_raw_outputs and raw and not force and not _exported_since_collected(ctx):
        raise RunStateError(
            f"run {run.run_id!r} has {len(raw)} raw output files that were never exported; "
            "export the artifacts first, or force it (force=True; --force on the CLI)"
        )
    doomed = [k for k in keys if include_raw_outputs or k not in raw]
    reclaimed = 0
    for key in doomed:
        reclaimed += ctx.artifacts.size(key)
        ctx.artifacts.delete(key)
    ctx.store.mark_pruned(run.pk, time.time())
    return PruneReport(files=len(doomed), bytes=reclaimed)


def _exported_since_collected(ctx: RunContext) -> bool:
    """Whether an export was made after the last batch was collected (so it holds every
    raw output)."""
    exported = ctx.run.exported_at
    if exported is None:
        return False
    collected = ctx.store.batches(ctx.run.pk, [BatchStatus.COLLECTED])
    return all((b.updated_at or 0.0) <= exported for b in collected)


def _version() -> str:
    """The installed batchor's version (its metadata is read only when an export asks)."""
    from importlib.metadata import version

    return version("batchor")
