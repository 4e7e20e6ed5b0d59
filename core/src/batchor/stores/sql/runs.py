"""The store's run operations: create, read, list and delete runs; their status, backoff
and marks; cancelling a run's unsent items."""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError, IntegrityError

from batchor.states import ItemStatus, RunStatus
from batchor.stores.records import RunRecord
from batchor.stores.schema import batches, completions, item_failures, items, runs
from batchor.stores.sql import postgres
from batchor.stores.sql.connector import SqlConnector, now
from batchor.stores.sql.rows import collected_text, config_text, run_record
from batchor.stores.sql.statements import answered, held, lock_run, next_tick


class RunOperations(SqlConnector):
    """Runs: each change one statement, conditional where two workers may race."""

    def create_run(
        self, run_id: str, config: Mapping[str, Any], fingerprint: str
    ) -> tuple[RunRecord, bool]:
        """Create a run, or return the existing one with that id; True if created."""
        at = now()
        select = sa.select(runs).where(runs.c.run_id == run_id)
        try:
            with self._write() as conn:
                conn.execute(
                    runs.insert().values(
                        run_id=run_id,
                        status=RunStatus.RUNNING.value,
                        config=config_text(config),
                        fingerprint=fingerprint,
                        ingest_complete=False,
                        ingested_count=0,
                        next_slice=0,
                        next_batch=0,
                        input_tokens=0,
                        output_tokens=0,
                        created_at=at,
                        updated_at=at,
                    )
                )
                return run_record(conn.execute(select).one()), True
        except IntegrityError:
            pass  # it exists (perhaps created concurrently): that row is the run
        with self._read() as conn:
            return run_record(conn.execute(select).one()), False

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with that id, if any."""
        with self._read() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.run_id == run_id)).first()
        return None if row is None else run_record(row)

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """Every run (or the newest ``limit``), newest first, in one query."""
        stmt = sa.select(runs).order_by(runs.c.pk.desc()).limit(limit)
        with self._read() as conn:
            return [run_record(row) for row in conn.execute(stmt)]

    def delete_run(self, run_pk: int) -> None:
        """Remove a run and everything it holds."""
        with self._write() as conn:
            # The run's row first: a slice being ingested holds it until its items commit
            # (they are then seen, and deleted, here), and one that comes after finds the run
            # gone. Nothing else ties the items to their run.
            lock_run(conn, run_pk)
            conn.execute(item_failures.delete().where(item_failures.c.run_pk == run_pk))
            conn.execute(completions.delete().where(completions.c.run_pk == run_pk))
            conn.execute(items.delete().where(items.c.run_pk == run_pk))
            conn.execute(batches.delete().where(batches.c.run_pk == run_pk))
            conn.execute(runs.delete().where(runs.c.pk == run_pk))

    def set_run_status(
        self,
        run_pk: int,
        status: RunStatus,
        *,
        expected: Collection[RunStatus] | None = None,
        pause_reason: str | None = None,
        pause_code: str | None = None,
    ) -> bool:
        """Move the run to ``status`` if it is in one of ``expected``; True if it moved."""
        stmt = runs.update().where(runs.c.pk == run_pk)
        if expected is not None:
            stmt = stmt.where(runs.c.status.in_([s.value for s in expected]))
        return self._update_run(
            stmt.values(
                status=status.value,
                pause_reason=pause_reason,
                pause_code=pause_code,
                updated_at=now(),
            )
        )

    def set_run_limits(
        self, run_pk: int, *, deadline_at: float | None, max_cost_usd: float | None
    ) -> None:
        """Record the run's deadline (epoch seconds) and spending cap (USD)."""
        self._set_run(run_pk, deadline_at=deadline_at, max_cost_usd=max_cost_usd)

    def note_webhook(self, run_pk: int, at: float) -> None:
        """Record that a provider webhook drove the run ``at``."""
        self._set_run(run_pk, webhook_at=at)

    def request_cancel(self, run_pk: int, *, remote: bool) -> bool:
        """Move a running or paused run to ``cancelling``; True if it moved."""
        return self._update_run(
            runs.update()
            .where(
                runs.c.pk == run_pk,
                runs.c.status.in_([RunStatus.RUNNING.value, RunStatus.PAUSED.value]),
            )
            .values(
                status=RunStatus.CANCELLING.value,
                cancel_remote=remote,
                pause_reason=None,
                pause_code=None,
                updated_at=now(),
            )
        )

    def set_backoff(self, run_pk: int, until: float | None, count: int) -> None:
        """Record when packing may resume after a capacity refusal."""
        self._set_run(run_pk, backoff_until=until, backoff_count=count)

    def set_prompt_fingerprint(self, run_pk: int, fingerprint: str) -> None:
        """Record the hash of the run's first request bodies."""
        self._set_run(run_pk, prompt_fingerprint=fingerprint)

    def mark_exported(self, run_pk: int, at: float) -> None:
        """Record when the run's artifacts were last exported."""
        self._set_run(run_pk, exported_at=at)

    def mark_pruned(self, run_pk: int, at: float) -> None:
        """Record when the run's artifacts were pruned."""
        self._set_run(run_pk, pruned_at=at)

    def record_collected(self, run_pk: int, result: Mapping[str, Any]) -> None:
        """Remember what `batchor.steps.collect` wrote for the run."""
        self._set_run(run_pk, collected=collected_text(result))

    def cancel_items(self, run_pk: int, batch_pk: int | None = None) -> int:
        """Cancel items that were never sent (pending and queued, or a batch's queued; not
        those queued in a batch the provider holds)."""
        unsent = sa.and_(items.c.status == ItemStatus.QUEUED.value, ~held(), ~answered())
        where: tuple[sa.ColumnElement[bool], ...]
        if batch_pk is None:
            where = (
                items.c.run_pk == run_pk,
                sa.or_(items.c.status == ItemStatus.PENDING.value, unsent),
            )
        else:
            where = (items.c.batch_pk == batch_pk, unsent)
        with self._write() as conn:
            tick = next_tick(conn, run_pk)
            return int(
                conn.execute(
                    items.update()
                    .where(*where)
                    .values(status=ItemStatus.CANCELLED.value, done_tick=tick)
                ).rowcount
            )

    @contextmanager
    def packing(self, run_pk: int) -> Iterator[bool]:
        """Whether this worker may pack the run now; it keeps that right until the block ends.

        On Postgres, a session-level advisory lock on a connection of its own (the server
        frees it if the worker dies); a worker that does not get it skips packing, so several
        workers never pack the same pending items. On SQLite the write lock already
        serialises packers: always True.
        """
        if self.engine.dialect.name != "postgresql":
            yield True
            return
        with self.engine.connect() as conn:
            mine = postgres.try_lock_packing(conn, run_pk)
            conn.commit()
            try:
                yield mine
            finally:
                if mine:
                    try:
                        postgres.unlock_packing(conn, run_pk)
                        conn.commit()
                    except DBAPIError:
                        conn.invalidate()  # the session is gone, and the lock with it

    def _update_run(self, stmt: sa.Update) -> bool:
        with self._write() as conn:
            return conn.execute(stmt).rowcount == 1

    def _set_run(self, run_pk: int, **values: Any) -> None:
        """Set columns of the run (private: each caller above names what it records)."""
        with self._write() as conn:
            conn.execute(runs.update().where(runs.c.pk == run_pk).values(**values))
