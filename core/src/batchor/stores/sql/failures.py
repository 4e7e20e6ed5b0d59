"""The one way a failed attempt is recorded for audit: an insert-from-select over the items
a statement is about to charge, so the row is written under the same guard as the charge."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from batchor.stores.schema import item_failures, items

_COLUMNS = [
    "run_pk",
    "seq",
    "attempt",
    "batch_pk",
    "error_class",
    "message",
    "retryable",
    "created_at",
]


def failures_from(
    where: Sequence[sa.ColumnElement[bool]],
    *,
    error_class: Any,
    message: Any,
    retryable: Any,
    created_at: Any,
    with_batch: bool = True,
) -> sa.Insert:
    """INSERT one failure row (the attempt about to be charged) per item matching ``where``.

    Values are SQL expressions (bind parameters of a bulk statement) or plain values.
    ``with_batch=False`` records no batch (an item failed before it was packed).
    """
    return item_failures.insert().from_select(
        _COLUMNS,
        sa.select(
            items.c.run_pk,
            items.c.seq,
            items.c.attempts + 1,
            items.c.batch_pk if with_batch else sa.null(),
            _expr(error_class, sa.String),
            _expr(message, sa.Text),
            _expr(retryable, sa.Boolean),
            _expr(created_at, sa.Float),
        ).where(*where),
    )


def record_failures(
    conn: Connection,
    where: Sequence[sa.ColumnElement[bool]],
    *,
    error_class: str,
    message: str,
    retryable: bool,
    created_at: float,
    with_batch: bool = True,
) -> None:
    """Record the attempt about to be charged to every item matching ``where``: run it
    before the statement that charges them (it reads the attempt number that one bumps)."""
    conn.execute(
        failures_from(
            where,
            error_class=error_class,
            message=message,
            retryable=retryable,
            created_at=created_at,
            with_batch=with_batch,
        )
    )


def _expr(value: Any, type_: Any) -> Any:
    return value if isinstance(value, sa.ColumnElement) else sa.literal(value, type_)
