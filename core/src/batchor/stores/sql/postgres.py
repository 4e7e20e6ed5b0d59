"""Postgres bulk paths on psycopg 3: new items are written with ``COPY`` straight into their
table, a collected chunk's completions with ``COPY`` into theirs, and its other lines with
``COPY`` into a temporary staging table merged into the items by one statement. Where several
workers contend, nobody waits for another's transaction: claims use ``FOR UPDATE SKIP
LOCKED``, and packing a run's pending items takes an advisory lock that a second worker
skips (the batches a worker cut while ingesting it seals without it: nobody else may).

Each function takes a SQLAlchemy ``Connection`` inside the store's transaction and writes
exactly what the ``executemany`` path writes (same rows, same values, same order of the
failure rows). Strings go through the connection's adapters (`batchor.stores.values`), so
NUL and lone surrogates are escaped here as everywhere else. The SQL store imports this
module only on Postgres; psycopg is imported inside the functions.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from batchor.states import BatchStatus, ItemStatus
from batchor.stores.sql.statements import AWAITING, count_completed

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from batchor.stores.base import ItemOutcome, NewItem
    from batchor.stores.sql.bulk import Placement

_PENDING = ItemStatus.PENDING.value
_COMPLETED = ItemStatus.COMPLETED.value
_FAILED = ItemStatus.FAILED.value
_AWAITING = "(" + ", ".join(f"'{s}'" for s in AWAITING) + ")"

# New items: status, attempts and batch first, so a row is one tuple concatenation of a
# NewItem.
_COPY_ITEMS = (
    "COPY batchor_items (run_pk, status, attempts, batch_pk, seq, item_id, req_slice,"
    " req_offset, req_length, req_hash, est_tokens, metadata) FROM STDIN"
)
_QUEUED = ItemStatus.QUEUED.value

_STAGE = "batchor_stage_outcomes"
# Column types as in batchor_items, so a value the items cannot hold fails the COPY the way
# it fails the executemany path (the store then finds the line at fault by halves).
# Only lines that are not completions are staged. ``applies``: the first of them for its
# item; a later one finds the item no longer waiting in the executemany path, so it changes
# nothing.
_CREATE_STAGE = f"""
CREATE TEMPORARY TABLE {_STAGE} (
    n integer NOT NULL,
    applies boolean NOT NULL,
    seq integer NOT NULL,
    kind varchar(16) NOT NULL,
    output_text text,
    error_class varchar(32),
    error_message text,
    error_retryable boolean,
    input_tokens integer,
    output_tokens integer
) ON COMMIT DROP
"""
_COPY_STAGE = (
    f"COPY {_STAGE} (n, applies, seq, kind, output_text, error_class, error_message,"
    " error_retryable, input_tokens, output_tokens) FROM STDIN"
)
# With it, every join order the planner may pick probes an index on either side.
_INDEX_STAGE = f"CREATE INDEX ON {_STAGE} (seq)"
# The items a chunk touches, and the guard of every write (still awaiting in this batch and
# not completed, so a line applies at most once). Written so that every plan reads only the
# chunk's items by the primary key, whatever the statistics say (a table filled since its
# last ANALYZE has none that fit): the chunk's seq range bounds the index scan, and the batch
# is compared with IS NOT DISTINCT FROM (the same test for a batch key, which is never NULL)
# because that cannot use ix_batchor_items_batch, through which the planner would otherwise
# read the whole batch for every chunk, believing it holds one row.
_WAITING = (
    "i.run_pk = %(run_pk)s AND i.seq BETWEEN %(first)s AND %(last)s"
    " AND i.seq = ANY(%(seqs)s::integer[])"
    f" AND i.batch_pk IS NOT DISTINCT FROM %(batch_pk)s AND i.status IN {_AWAITING}"
    " AND NOT EXISTS (SELECT 1 FROM batchor_completions AS c"
    " WHERE c.run_pk = i.run_pk AND c.seq = i.seq)"
)
# ... joined to the staged lines.
_ITEMS = _WAITING + " AND i.seq = s.seq"
# Failed attempts, recorded before the updates (they read the attempt the updates bump), in
# the order of the lines, as the executemany path inserts them.
_RECORD_FAILURES = f"""
INSERT INTO batchor_item_failures
    (run_pk, seq, attempt, batch_pk, error_class, message, retryable, created_at)
SELECT i.run_pk, i.seq, i.attempts + 1, i.batch_pk,
       COALESCE(NULLIF(s.error_class, ''), 'unknown'), COALESCE(s.error_message, ''),
       s.error_retryable, %(now)s
FROM {_STAGE} AS s, batchor_items AS i
WHERE {_ITEMS}
ORDER BY s.n
"""
# Completed lines apply before the others, as in the executemany path: appended to
# batchor_completions with ``COPY``, the items' rows left as they are, for the items this
# statement finds still waiting in the batch and not completed. Only this module writes
# completions, and only while it holds the run's done tick (its row lock, to commit), so
# none can be added between this read and the ``COPY`` that follows it.
_COMPLETABLE = f"SELECT i.seq, i.attempts FROM batchor_items AS i WHERE {_WAITING}"
_COPY_COMPLETIONS = (
    "COPY batchor_completions (run_pk, seq, batch_pk, attempts, output_text, input_tokens,"
    " output_tokens, done_tick) FROM STDIN"
)
_RETRIED = "s.kind = 'retry' AND i.attempts + 1 < %(max_attempts)s"
_APPLY_OTHERS = f"""
UPDATE batchor_items AS i SET
    status = CASE WHEN {_RETRIED} THEN '{_PENDING}' ELSE '{_FAILED}' END,
    attempts = i.attempts + 1,
    output_text = s.output_text,
    error_class = s.error_class,
    error_message = s.error_message,
    error_retryable = s.error_retryable,
    error_attempt = i.attempts + 1,
    input_tokens = s.input_tokens,
    output_tokens = s.output_tokens,
    done_tick = CASE WHEN {_RETRIED} THEN NULL ELSE %(tick)s END
FROM {_STAGE} AS s
WHERE {_ITEMS} AND s.applies
"""

# A claim that skips a batch row another worker's transaction holds, instead of waiting for
# it: that worker is claiming, renewing or finishing the batch, so this one has lost.
_CLAIM_BATCH = """
UPDATE batchor_batches SET claimed_by = %(owner)s, lease_until = %(until)s
WHERE pk = (
    SELECT pk FROM batchor_batches
    WHERE pk = %(batch_pk)s AND status = %(expected)s
      AND (lease_until IS NULL OR lease_until < %(now)s OR claimed_by = ANY(%(holders)s))
    FOR UPDATE SKIP LOCKED
)
"""
# The next batch to collect, claimed in one statement: workers take different batches.
_CLAIM_NEXT_ENDED = f"""
UPDATE batchor_batches SET claimed_by = %(owner)s, lease_until = %(until)s
WHERE pk = (
    SELECT pk FROM batchor_batches
    WHERE run_pk = %(run_pk)s AND status = '{BatchStatus.ENDED.value}'
      AND (not_before IS NULL OR not_before <= %(now)s)
      AND (lease_until IS NULL OR lease_until < %(now)s OR claimed_by = %(owner)s)
    ORDER BY pk
    LIMIT 1
    FOR UPDATE SKIP LOCKED
)
RETURNING pk
"""


def _driver(conn: Connection) -> Any:
    """The psycopg connection under ``conn`` (in the store's open transaction)."""
    driver = conn.connection.driver_connection
    if driver is None:  # pragma: no cover - a checked-out connection always has one
        raise RuntimeError("the connection has no driver connection")
    return driver


@contextmanager
def _as_sqlalchemy_errors(statement: str) -> Iterator[None]:
    """Raise psycopg's errors as SQLAlchemy's (``IntegrityError``, ``DataError``...), as the
    store's other statements raise them, so its handling stays the same."""
    import psycopg
    from sqlalchemy.exc import DBAPIError

    try:
        yield
    except psycopg.Error as exc:
        raise DBAPIError.instance(statement, None, exc, psycopg.Error) from exc


def copy_items(
    conn: Connection, run_pk: int, new_items: Sequence[NewItem], placed: Sequence[Placement]
) -> int:
    """Insert new items with ``COPY``: each run of ``placed`` ``queued`` in its batch, or
    ``pending`` where it names none; returns how many.

    Raises:
        sqlalchemy.exc.IntegrityError: an item id is already in the run (the rows written
            before it stay in the failed transaction, which the store rolls back).
    """
    with (
        _as_sqlalchemy_errors(_COPY_ITEMS),
        _driver(conn).cursor() as cur,
        cur.copy(_COPY_ITEMS) as copy,
    ):
        write = copy.write_row
        for batch_pk, start, end in placed:
            head = (run_pk, _PENDING if batch_pk is None else _QUEUED, 0, batch_pk)
            for item in new_items[start:end]:
                write(head + item)
    return len(new_items)


def apply_outcomes(
    conn: Connection,
    run_pk: int,
    batch_pk: int,
    outcomes: Sequence[ItemOutcome],
    *,
    max_attempts: int,
    take_tick: Callable[[], int],
    now: float,
) -> int:
    """Apply answered lines to the items still waiting in the batch: the lines that are not
    completions go by ``COPY`` into a temporary table, then one INSERT records their failed
    attempts; the completions are appended by ``COPY`` for the items found waiting; one
    UPDATE then retries or fails the items of the other lines.

    ``take_tick`` bumps and returns the run's done tick; it is called once the lines are
    staged, so the run row it locks is held only while the items change (workers collecting
    other batches of the run wait on it in turn). ``now`` is the failures' time. Returns how
    many items changed.

    Raises:
        sqlalchemy.exc.DataError: a value the items cannot hold (a token count out of range,
            an error class too long); nothing of the chunk is applied.
    """
    if not outcomes:
        return 0
    completed: dict[int, ItemOutcome] = {}  # the first completed line of each item
    other: set[int] = set()
    staged: list[tuple[Any, ...]] = []
    for n, o in enumerate(outcomes):
        if o.kind == _COMPLETED:
            completed.setdefault(o.seq, o)
        else:
            staged.append((n, o.seq not in other, *o))
            other.add(o.seq)
    changed = added = 0
    with _as_sqlalchemy_errors(_COPY_STAGE), _driver(conn).cursor() as cur:
        if staged:
            cur.execute(_CREATE_STAGE)
            with cur.copy(_COPY_STAGE) as copy:
                for row in staged:
                    copy.write_row(row)
            cur.execute(_INDEX_STAGE)
        tick = take_tick()
        if staged:  # before the updates: it reads the attempt number they bump
            others = _params(run_pk, batch_pk, other, tick=tick, now=now, max_attempts=max_attempts)
            cur.execute(_RECORD_FAILURES, others)
        if completed:
            waiting = _waiting(cur, _params(run_pk, batch_pk, completed))
            if waiting:
                with cur.copy(_COPY_COMPLETIONS) as copy:
                    write = copy.write_row
                    for seq, attempts in waiting:
                        o = completed[seq]
                        text, used_in, used_out = o.output_text, o.input_tokens, o.output_tokens
                        write((run_pk, seq, batch_pk, attempts + 1, text, used_in, used_out, tick))
            added = len(waiting)
            changed += added
        if staged:
            cur.execute(_APPLY_OTHERS, others)
            changed += cur.rowcount
            cur.execute(f"DROP TABLE {_STAGE}")
    if added:
        count_completed(conn, batch_pk, added)
    return changed


def _waiting(cur: Any, params: dict[str, Any]) -> list[tuple[int, int]]:
    """``(seq, attempts)`` of the chunk's items still waiting in the batch, not completed."""
    cur.execute(_COMPLETABLE, params)
    rows: list[tuple[int, int]] = cur.fetchall()
    return rows


def _params(run_pk: int, batch_pk: int, seqs: Collection[int], **more: Any) -> dict[str, Any]:
    """The parameters of `_WAITING` for a chunk's items ``seqs``, with ``more``."""
    ordered = sorted(seqs)
    return {
        "run_pk": run_pk,
        "batch_pk": batch_pk,
        "seqs": ordered,
        "first": ordered[0],
        "last": ordered[-1],
        **more,
    }


def claim_batch(
    conn: Connection,
    batch_pk: int,
    expected: BatchStatus,
    owner: str,
    *,
    until: float,
    now: float,
    holders: Collection[str],
) -> bool:
    """Claim (or renew) a batch for ``owner`` until ``until`` if it is in ``expected`` and
    unclaimed, expired or held by one of ``holders``; False at once, without waiting, while
    another transaction holds the batch row."""
    params = {
        "batch_pk": batch_pk,
        "expected": expected.value,
        "owner": owner,
        "until": until,
        "now": now,
        "holders": list(holders),
    }
    with _as_sqlalchemy_errors(_CLAIM_BATCH), _driver(conn).cursor() as cur:
        cur.execute(_CLAIM_BATCH, params)
        return bool(cur.rowcount == 1)


def claim_next_ended(
    conn: Connection, run_pk: int, owner: str, *, until: float, now: float
) -> int | None:
    """Claim the run's oldest ended batch that is due and not held by a live lease of
    another worker (nor locked by another transaction); its primary key, or None."""
    params = {"run_pk": run_pk, "owner": owner, "until": until, "now": now}
    with _as_sqlalchemy_errors(_CLAIM_NEXT_ENDED), _driver(conn).cursor() as cur:
        cur.execute(_CLAIM_NEXT_ENDED, params)
        row = cur.fetchone()
    return None if row is None else int(row[0])


# Session-level advisory locks, one per (schema, run): held across transactions, and released
# by the server when the session ends, so a worker that dies frees it at once. Advisory locks
# are shared by the whole database, so the key names the schema the store's tables are in (two
# stores in two schemas of one database have their own run pk 1).
_PACK_LOCK_KEY = "hashtextextended(current_schema() || ':batchor-pack:' || %s::text, 0)"


def try_lock_packing(conn: Connection, run_pk: int) -> bool:
    """Take the run's packing lock for this connection's session if no other session holds
    it, without waiting: of several workers, one packs and the others skip packing (they
    would read the same pending items and all but one would throw their batch away).

    The lock outlives the transaction it is taken in; `unlock_packing` (or the end of the
    session) releases it.
    """
    with _as_sqlalchemy_errors("pg_try_advisory_lock"), _driver(conn).cursor() as cur:
        cur.execute(f"SELECT pg_try_advisory_lock({_PACK_LOCK_KEY})", (run_pk,))
        row = cur.fetchone()
    return bool(row and row[0])


def unlock_packing(conn: Connection, run_pk: int) -> None:
    """Release the run's packing lock held by this connection's session."""
    with _as_sqlalchemy_errors("pg_advisory_unlock"), _driver(conn).cursor() as cur:
        cur.execute(f"SELECT pg_advisory_unlock({_PACK_LOCK_KEY})", (run_pk,))
