"""Row mapping: database rows -> the port's typed records, and typed values -> column text.
The JSON the tables hold (run configuration, source parts, collect results, batch errors) is
encoded and decoded here and nowhere else."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from batchor.states import BatchStatus, ItemStatus, RunStatus
from batchor.stores.records import BatchError, BatchRecord, ItemRow, RunRecord, SourcePart
from batchor.stores.schema import items

ITEM_ROW = (
    items.c.seq,
    items.c.item_id,
    items.c.status,
    items.c.attempts,
    items.c.metadata,
    items.c.output_text,
    items.c.error_class,
    items.c.error_message,
    items.c.error_retryable,
    items.c.error_attempt,
    items.c.input_tokens,
    items.c.output_tokens,
    items.c.done_tick,
)
"""The columns an `ItemRow` is read from, in its fields' order."""

_ITEM_STATUS = {s.value: s for s in ItemStatus}


def item_row(r: Any) -> ItemRow:
    """An item row from a result row or a driver tuple (SQLite's booleans are 0 and 1)."""
    retryable = r[8] if r[8] is None else bool(r[8])
    return ItemRow(
        r[0], r[1], _ITEM_STATUS[r[2]], r[3], r[4], r[5], r[6], r[7], retryable, r[9], r[10],
        r[11], r[12],
    )  # fmt: skip


def run_record(row: Any) -> RunRecord:
    """A run's row as a `RunRecord`, its JSON columns decoded."""
    return RunRecord(
        pk=row.pk,
        run_id=row.run_id,
        status=RunStatus(row.status),
        config=json.loads(row.config),
        fingerprint=row.fingerprint,
        prompt_fingerprint=row.prompt_fingerprint,
        ingest_complete=bool(row.ingest_complete),
        ingested_count=row.ingested_count,
        source_checkpoint=row.source_checkpoint,
        next_slice=row.next_slice,
        pause_reason=row.pause_reason,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        created_at=row.created_at,
        backoff_until=row.backoff_until,
        backoff_count=row.backoff_count,
        cancel_remote=bool(row.cancel_remote),
        source_parts=tuple(SourcePart(str(n), int(s)) for n, s in _loads(row.source_parts, [])),
        exported_at=row.exported_at,
        pruned_at=row.pruned_at,
        collected=_loads(row.collected, None),
        deadline_at=row.deadline_at,
        max_cost_usd=row.max_cost_usd,
        pause_code=row.pause_code,
        webhook_at=row.webhook_at,
        finish_since=row.finish_since,
        finish_mode=row.finish_mode,
        sync_owner=row.sync_owner,
        sync_lease_until=row.sync_lease_until,
        sync_answered=row.sync_answered or 0,
        sync_input_tokens=row.sync_input_tokens or 0,
        sync_output_tokens=row.sync_output_tokens or 0,
        done_tick=row.done_tick or 0,
    )


def batch_record(row: Any) -> BatchRecord:
    """A batch's row as a `BatchRecord`, its errors decoded."""
    return BatchRecord(
        pk=row.pk,
        run_pk=row.run_pk,
        batch_key=row.batch_key,
        status=BatchStatus(row.status),
        input_artifact=row.input_artifact,
        request_count=row.request_count,
        input_bytes=row.input_bytes,
        file_id=row.file_id,
        create_started_at=row.create_started_at,
        provider_batch_id=row.provider_batch_id,
        provider_status=row.provider_status,
        output_file_id=row.output_file_id,
        error_file_id=row.error_file_id,
        errors=tuple(BatchError(str(c), str(m)) for c, m in _loads(row.errors, [])),
        created_at=row.created_at,
        not_before=row.not_before,
        failures=row.failures,
        est_tokens=row.est_tokens,
        reserved=bool(row.reserved),
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        updated_at=row.updated_at,
        claimed_by=row.claimed_by,
        lease_until=row.lease_until,
        submitted_at=row.submitted_at,
        est_cost_usd=row.est_cost_usd,
        cost_usd=row.cost_usd,
        stop_reason=row.stop_reason,
        stop_requested_at=row.stop_requested_at,
        requeued=row.requeued,
        duplicates=row.duplicates,
    )


def config_text(config: Mapping[str, Any]) -> str:
    """A run's configuration as stored (keys sorted, so equal configurations match)."""
    return json.dumps(config, sort_keys=True)


def parts_text(parts: Sequence[SourcePart]) -> str:
    """Source parts as stored: ``[[name, first seq], ...]``."""
    return json.dumps([[name, first] for name, first in parts])


def errors_text(errors: Sequence[BatchError]) -> str | None:
    """Batch errors as stored: ``[[code, message], ...]``, or NULL for none."""
    return json.dumps([[code, message] for code, message in errors]) if errors else None


def collected_text(result: Mapping[str, Any]) -> str:
    """A collect result as stored."""
    return json.dumps(dict(result))


def _loads(text: str | None, default: Any) -> Any:
    return json.loads(text) if text else default
