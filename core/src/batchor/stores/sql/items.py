"""The store's ingestion and packing: items accepted slice by slice with the source position,
pending items read for packing, a packed batch recorded with its items queued, items that can
never be sent failed."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from batchor.errors import DuplicateItemError
from batchor.states import BatchStatus, ItemStatus
from batchor.stores.records import BatchRecord, FormingItems, NewItem, PendingItem, SourcePart
from batchor.stores.schema import batches, items, runs
from batchor.stores.sql import postgres
from batchor.stores.sql.bulk import (
    Placement,
    bulk,
    driver_cursor,
    is_postgres,
    runs_of,
)
from batchor.stores.sql.connector import SqlConnector, now
from batchor.stores.sql.failures import record_failures
from batchor.stores.sql.forming import place_items
from batchor.stores.sql.rows import batch_record, parts_text
from batchor.stores.sql.statements import (
    CHUNK,
    ITEM_INSERT_KEYS,
    QUEUE_RANGE,
    QUEUE_RANGE_KEYS,
    insert_items,
    insert_items_json,
    next_tick,
)


class _Conflict(Exception):
    """Raised inside a transaction to roll it back when a compare-and-set lost."""


# SQLite from 3.38 has the JSON functions built in (earlier builds may leave them out).
_JSON_FUNCTIONS = (3, 38, 0)
# A slice bigger than this (large metadata) goes row by row: one parameter must stay well
# under SQLite's length limit (1e9 bytes by default).
_JSON_MAX_BYTES = 64 << 20


def _insert(
    conn: sa.Connection, run_pk: int, batch_pk: int | None, rows: Sequence[NewItem]
) -> None:
    """SQLite: insert new items, as one JSON array (bound as text) where SQLite can read
    one; row by row otherwise, and for a slice with a NUL character in an item id (which
    SQLite's JSON functions would cut short) or too big for one parameter. The version is
    the one the engine's driver links (``pysqlite3`` or ``sqlcipher`` as well as the
    standard ``sqlite3``), which the dialect read when it first connected."""
    if (conn.dialect.server_version_info or ()) >= _JSON_FUNCTIONS:
        payload = orjson.dumps(rows, default=tuple)
        if b"\\u0000" not in payload and len(payload) <= _JSON_MAX_BYTES:
            conn.exec_driver_sql(insert_items_json(run_pk, batch_pk), (payload.decode(),))
            return
    bulk(conn, insert_items(run_pk, batch_pk), ITEM_INSERT_KEYS, rows)


class ItemOperations(SqlConnector):
    """Ingestion and packing."""

    def add_items(
        self,
        run_pk: int,
        new_items: Sequence[NewItem],
        *,
        next_slice: int,
        ingested_count: int,
        checkpoint: str | None,
        complete: bool,
        source_parts: Sequence[SourcePart] | None = None,
        forming: FormingItems | None = None,
    ) -> bool:
        """Accept a slice of items and the source position after it, in one transaction
        (with where each source part starts, when that changed). Items go in ``pending``,
        or with ``forming`` ``queued`` in the batches being cut that its owner still forms
        (each batch's request count grows with them).

        Returns False, and records nothing, if the run's position is no longer the one this
        slice follows (another worker ingested it first).

        Raises:
            DuplicateItemError: an item_id is already in the run.
        """
        previous = ingested_count - len(new_items)
        parts = {} if source_parts is None else {"source_parts": parts_text(source_parts)}
        try:
            with self._write() as conn:
                # First the position (a compare-and-set that also locks the run row), so a
                # second worker ingesting the same slice stops here instead of colliding.
                moved = conn.execute(
                    runs.update()
                    .where(
                        runs.c.pk == run_pk,
                        runs.c.ingested_count == previous,
                        runs.c.ingest_complete == sa.false(),
                    )
                    .values(
                        next_slice=next_slice,
                        ingested_count=ingested_count,
                        source_checkpoint=checkpoint,
                        ingest_complete=complete,
                        updated_at=now(),
                        **parts,
                    )
                ).rowcount
                if moved != 1:
                    return False
                placed: list[Placement] = [(None, 0, len(new_items))] if new_items else []
                if forming is not None:
                    placed = place_items(conn, run_pk, new_items, forming)
                if is_postgres(conn):
                    postgres.copy_items(conn, run_pk, new_items, placed)
                    return True
                for batch_pk, start, end in placed:
                    _insert(conn, run_pk, batch_pk, new_items[start:end])
        except IntegrityError as exc:
            raise self._duplicate_error(run_pk, new_items) from exc
        return True

    def _duplicate_error(self, run_pk: int, new_items: Sequence[NewItem]) -> DuplicateItemError:
        ids = [it.item_id for it in new_items]
        with self._read() as conn:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start : start + CHUNK]
                found = conn.execute(
                    sa.select(items.c.item_id).where(
                        items.c.run_pk == run_pk, items.c.item_id.in_(chunk)
                    )
                ).first()
                if found is not None:
                    return DuplicateItemError(
                        f"duplicate item_id {found.item_id!r}", item_id=found.item_id
                    )
        return DuplicateItemError("duplicate item_id in the source")

    def pending_items(self, run_pk: int, after_seq: int, limit: int) -> list[PendingItem]:
        """Pending items in seq order after ``after_seq``."""
        stmt = (
            sa.select(
                items.c.seq,
                items.c.attempts,
                items.c.req_slice,
                items.c.req_offset,
                items.c.req_length,
                items.c.est_tokens,
            )
            .where(
                items.c.run_pk == run_pk,
                items.c.status == ItemStatus.PENDING.value,
                items.c.seq > after_seq,
            )
            .order_by(items.c.seq)
            .limit(limit)
        )
        with self._read() as conn:
            cursor = driver_cursor(conn, stmt)  # plain tuples: read by the million
            try:
                return list(map(PendingItem._make, cursor.fetchall()))
            finally:
                cursor.close()

    def allocate_batch_number(self, run_pk: int) -> int:
        """Reserve the run's next batch number (gaps after a crash are harmless)."""
        with self._write() as conn:
            # One atomic increment: two workers packing at once get different numbers.
            after = conn.execute(
                runs.update()
                .where(runs.c.pk == run_pk)
                .values(next_batch=runs.c.next_batch + 1)
                .returning(runs.c.next_batch)
            ).scalar_one()
        return int(after) - 1

    def record_batch(
        self,
        run_pk: int,
        batch_key: str,
        input_artifact: str,
        seqs: Sequence[int],
        input_bytes: int,
        est_tokens: int | None = None,
        quota_scope: str | None = None,
        *,
        owner: str | None = None,
        lease_until: float | None = None,
    ) -> BatchRecord | None:
        """Record a packed batch (``prepared``, held by ``owner`` until ``lease_until``) and
        move its items pending -> queued, all or nothing: ``None`` (and nothing changed) if
        any item was no longer pending."""
        at = now()
        try:
            with self._write() as conn:
                row = conn.execute(
                    batches.insert()
                    .values(
                        run_pk=run_pk,
                        batch_key=batch_key,
                        status=BatchStatus.PREPARED.value,
                        input_artifact=input_artifact,
                        request_count=len(seqs),
                        input_bytes=input_bytes,
                        est_tokens=est_tokens,
                        quota_scope=quota_scope,
                        claimed_by=owner,
                        lease_until=lease_until,
                        created_at=at,
                        updated_at=at,
                    )
                    .returning(*batches.c)
                ).one()
                # One statement per run of consecutive seqs: a run holds no rows but these
                # items, so the status guard and the count make it an exact compare-and-set.
                # (A plain UPDATE: on Postgres, locking the rows first with FOR UPDATE SKIP
                # LOCKED wrote every row twice, and packers do not contend: see `packing`.)
                ranges = [(run_pk, row.pk, first, last) for first, last in runs_of(seqs)]
                moved = bulk(conn, QUEUE_RANGE, QUEUE_RANGE_KEYS, ranges)
                if moved != len(seqs):
                    raise _Conflict  # another worker packed some of these items: roll back
        except _Conflict:
            return None
        return batch_record(row)

    def fail_pending(
        self, run_pk: int, seqs: Sequence[int], error_class: str, message: str
    ) -> None:
        """Fail pending items that can never be sent, charging the attempt."""
        at = now()
        with self._write() as conn:
            tick = next_tick(conn, run_pk)
            for start in range(0, len(seqs), CHUNK):
                where = (
                    items.c.run_pk == run_pk,
                    items.c.seq.in_(list(seqs[start : start + CHUNK])),
                    items.c.status == ItemStatus.PENDING.value,
                )
                record_failures(
                    conn,
                    where,
                    error_class=error_class,
                    message=message,
                    retryable=False,
                    created_at=at,
                    with_batch=False,
                )
                conn.execute(
                    items.update()
                    .where(*where)
                    .values(
                        status=ItemStatus.FAILED.value,
                        done_tick=tick,
                        attempts=items.c.attempts + 1,
                        error_class=error_class,
                        error_message=message,
                        error_retryable=False,
                        error_attempt=items.c.attempts + 1,
                    )
                )
