"""The store's batches formed at ingestion: opened empty, filled as slices are recorded
(`ItemOperations.add_items`), then sealed ``prepared`` by their owner or dissolved, their
items back to pending. Sealing and dissolving are compare-and-sets on ``forming``."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.engine import Connection
from sqlalchemy.sql.elements import ColumnElement

from batchor.states import BatchStatus, ItemStatus
from batchor.stores.records import BatchRecord, FormingItems, NewItem
from batchor.stores.schema import batches, items
from batchor.stores.sql.bulk import Placement, placements
from batchor.stores.sql.connector import SqlConnector, now
from batchor.stores.sql.rows import batch_record

_FORMING = BatchStatus.FORMING.value


def _formed_by(owner: str) -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    """The batch is still forming, held by ``owner``."""
    return batches.c.status == _FORMING, batches.c.claimed_by == owner


def renew(conn: Connection, run_pk: int, owner: str, lease_until: float) -> None:
    """Hold every batch ``owner`` is forming in the run until ``lease_until``."""
    conn.execute(
        batches.update()
        .where(batches.c.run_pk == run_pk, *_formed_by(owner))
        .values(lease_until=lease_until)
    )


def place_items(
    conn: Connection, run_pk: int, new_items: Sequence[NewItem], forming: FormingItems
) -> list[Placement]:
    """Renew the owner's forming batches of the run, and place a slice's new items: each
    segment in its batch if the owner still forms it (its request count grows), else
    pending (dissolved meanwhile: the run was cancelled, say)."""
    renew(conn, run_pk, forming.owner, forming.lease_until)
    if not new_items:
        return []
    placed = placements(new_items[0].seq, len(new_items), forming.segments)
    at = now()
    for index, (batch_pk, start, end) in enumerate(placed):
        if batch_pk is None:
            continue
        held = conn.execute(
            batches.update()
            .where(batches.c.pk == batch_pk, *_formed_by(forming.owner))
            .values(request_count=batches.c.request_count + (end - start), updated_at=at)
        ).rowcount
        if held != 1:
            placed[index] = (None, start, end)
    return placed


class FormingOperations(SqlConnector):
    """Batches cut while their items are ingested."""

    def open_batch(self, run_pk: int, placeholder: str, owner: str, lease_until: float) -> int:
        """Record a new ``forming`` batch (no items, no input file yet) held by ``owner``
        until ``lease_until``, keyed ``placeholder`` for now; returns its primary key."""
        at = now()
        with self._write() as conn:
            return int(
                conn.execute(
                    batches.insert()
                    .values(
                        run_pk=run_pk,
                        batch_key=placeholder,
                        status=_FORMING,
                        input_artifact="",
                        request_count=0,
                        input_bytes=0,
                        claimed_by=owner,
                        lease_until=lease_until,
                        created_at=at,
                        updated_at=at,
                    )
                    .returning(batches.c.pk)
                ).scalar_one()
            )

    def seal_batch(
        self,
        batch_pk: int,
        owner: str,
        *,
        batch_key: str,
        input_artifact: str,
        request_count: int,
        input_bytes: int,
        est_tokens: int | None,
        quota_scope: str | None,
        lease_until: float,
    ) -> BatchRecord | None:
        """``forming`` -> ``prepared``, under ``batch_key`` with its input file, if
        ``owner`` forms it with exactly ``request_count`` items; it and the owner's other
        forming batches of the run are held by ``owner`` until ``lease_until``."""
        with self._write() as conn:
            row = conn.execute(
                batches.update()
                .where(
                    batches.c.pk == batch_pk,
                    *_formed_by(owner),
                    batches.c.request_count == request_count,
                )
                .values(
                    status=BatchStatus.PREPARED.value,
                    batch_key=batch_key,
                    input_artifact=input_artifact,
                    input_bytes=input_bytes,
                    est_tokens=est_tokens,
                    quota_scope=quota_scope,
                    lease_until=lease_until,  # its sealer uploads it: claims.held_elsewhere
                    updated_at=now(),
                )
                .returning(*batches.c)
            ).first()
            if row is None:
                return None
            renew(conn, row.run_pk, owner, lease_until)
        return batch_record(row)

    def dissolve_batch(self, batch_pk: int, lease_until: float | None = None) -> int | None:
        """Delete a ``forming`` batch (while its lease is ``lease_until``, if given) and
        return its queued items to ``pending``; how many, or ``None`` if it was no longer
        forming."""
        guard = [batches.c.pk == batch_pk, batches.c.status == _FORMING]
        if lease_until is not None:
            guard.append(batches.c.lease_until == lease_until)
        with self._write() as conn:
            if conn.execute(batches.delete().where(*guard)).rowcount != 1:
                return None
            return int(
                conn.execute(
                    items.update()
                    .where(items.c.batch_pk == batch_pk, items.c.status == ItemStatus.QUEUED.value)
                    .values(status=ItemStatus.PENDING.value, batch_pk=None)
                ).rowcount
            )
