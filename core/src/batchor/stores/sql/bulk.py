"""Driver-level paths for the statements run by the hundred thousand: executemany with the
statement compiled once and rows handed to the driver as tuples, and SELECTs read from the
driver's own cursor (server-side on Postgres). Everything else goes through SQLAlchemy."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from operator import itemgetter
from typing import Any, cast

from sqlalchemy.engine import Connection

Placement = tuple[int | None, int, int]
"""A run of a slice's new items: their batch (``None``: pending) and their indexes
``[start, end)`` in the slice."""


def placements(
    first_seq: int, count: int, segments: Sequence[tuple[int, int, int]]
) -> list[Placement]:
    """Where the ``count`` new items from seq ``first_seq`` on go: each ``(batch_pk,
    first seq, last seq)`` segment in its batch, the rest pending, as runs in seq order."""
    placed: list[Placement] = []
    at = 0
    for batch_pk, first, last in sorted(segments, key=itemgetter(1)):
        start, end = max(first - first_seq, at), min(last - first_seq + 1, count)
        if start >= end:
            continue
        if start > at:
            placed.append((None, at, start))
        placed.append((batch_pk, start, end))
        at = end
    if at < count:
        placed.append((None, at, count))
    return placed


def is_postgres(conn: Connection) -> bool:
    """Whether ``conn`` is on Postgres (whose bulk writes go through `postgres`'s COPY and
    SKIP LOCKED paths instead)."""
    return bool(conn.dialect.name == "postgresql")


def bulk(conn: Connection, stmt: Any, keys: Sequence[str], rows: Sequence[tuple[Any, ...]]) -> int:
    """``executemany`` straight on the driver, the statement compiled once.

    ``rows`` are tuples of the values named by ``keys`` (columns or bind parameter names).
    SQLAlchemy's own executemany processes every row's parameters in Python, which costs
    more than the database work for large sets; here each row reaches the driver after one
    C-level reordering. Returns the number of rows affected.
    """
    compiled = stmt.compile(dialect=conn.dialect, column_keys=list(keys))
    position = {k: i for i, k in enumerate(keys)}
    if compiled.positiontup is not None:
        names = compiled.positiontup
        constants = tuple(compiled.params[n] for n in names if n not in position)
        indexes, extra = [], len(keys)
        for name in names:
            if name in position:
                indexes.append(position[name])
            else:
                indexes.append(extra)
                extra += 1
        if indexes == list(range(len(keys))) and not constants:
            params: list[Any] = list(rows)
        else:
            pick = itemgetter(*indexes)
            padded = [row + constants for row in rows] if constants else rows
            params = list(map(pick, padded))
            if len(indexes) == 1:
                params = [(p,) for p in params]
    else:
        defaults = {k: v for k, v in compiled.params.items() if k not in position}
        params = [dict(zip(keys, row, strict=True), **defaults) for row in rows]
    result = conn.exec_driver_sql(compiled.string, params)
    return int(result.rowcount)


def driver_cursor(conn: Connection, stmt: Any) -> Any:
    """Execute a SELECT on the driver's own cursor (named, so server-side, on Postgres):
    rows arrive as plain tuples, without SQLAlchemy's per-row processing."""
    compiled = stmt.compile(dialect=conn.dialect)
    # A connection checked out of the pool always holds its driver connection.
    driver = cast(Any, conn.connection.dbapi_connection)
    if conn.dialect.name == "postgresql":
        cursor = driver.cursor(name=f"batchor_{uuid.uuid4().hex}")
    else:
        cursor = driver.cursor()
    if compiled.positiontup is not None:
        cursor.execute(str(compiled), tuple(compiled.params[n] for n in compiled.positiontup))
    else:
        cursor.execute(str(compiled), compiled.params)
    return cursor


def runs_of(seqs: Sequence[int]) -> list[tuple[int, int]]:
    """Runs of consecutive numbers as (first, last) pairs: [1, 2, 3, 7] -> [(1, 3), (7, 7)]."""
    found: list[tuple[int, int]] = []
    first = last = None
    for seq in sorted(seqs):
        if last is not None and seq == last + 1:
            last = seq
            continue
        if first is not None and last is not None:
            found.append((first, last))
        first = last = seq
    if first is not None and last is not None:
        found.append((first, last))
    return found
