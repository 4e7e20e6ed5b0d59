"""A run's files after the fact: export them with a manifest for audit, prune them to
reclaim space. Results live in the store and stay readable either way."""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from importlib.metadata import version

from batchor.artifacts.base import ArtifactStore
from batchor.engine.collect import RAW_OUTPUTS
from batchor.engine.context import RunContext
from batchor.errors import RunStateError
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


def export_artifacts(ctx: RunContext, dest: ArtifactStore) -> ArtifactExport:
    """Copy the run's artifacts into ``dest`` (same relative layout) and write a manifest
    with each file's kind, size and SHA-256 beside them."""
    prefix = ctx.run_dir + "/"
    entries = []
    total = 0
    for key in ctx.artifacts.keys(ctx.run_dir):
        relative = key[len(prefix) :]
        digest = hashlib.sha256()
        size = 0
        with ctx.artifacts.open_read(key) as src, dest.open_write(relative) as out:
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
        "batchor_version": version("batchor"),
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
    with dest.open_write(MANIFEST) as out:
        out.write(json.dumps(manifest, indent=2).encode())
    ctx.store.set_run_marks(ctx.run.pk, exported_at=now)
    return ArtifactExport(manifest=dest.uri(MANIFEST), files=len(entries), bytes=total)


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
    ctx.store.set_run_marks(run.pk, pruned_at=time.time())
    return PruneReport(files=len(doomed), bytes=reclaimed)


def _exported_since_collected(ctx: RunContext) -> bool:
    """Whether an export was made after the last batch was collected (so it holds every
    raw output)."""
    exported = ctx.run.exported_at
    if exported is None:
        return False
    collected = ctx.store.batches(ctx.run.pk, [BatchStatus.COLLECTED])
    return all((b.updated_at or 0.0) <= exported for b in collected)
