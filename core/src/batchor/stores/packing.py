"""The `StateStore` port's packing operations: pending items packed into batches, and
batches cut while their items are ingested (see `batchor.engine.plan`). A ``forming``
batch gets its items as their slices are recorded, then is sealed ``prepared`` by the
worker cutting it once its input file is written, or dissolved, its items back to
``pending``, when that worker is gone. Sealing and dissolving are compare-and-sets on the
``forming`` status: of the two, exactly one wins."""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from batchor.stores.records import BatchRecord, PendingItem


class PackingStore(Protocol):
    """Packing, and batches formed at ingestion: part of `StateStore`."""

    def packing(self, run_pk: int) -> AbstractContextManager[bool]:
        """Whether this worker may pack the run's pending items now, held until the block
        ends: of several workers driving one run, at most one packs them at a time (the
        others skip packing this step instead of packing the same pending items; the
        batches a worker cut while ingesting, it seals without asking). On Postgres a
        session-level lock the server frees if the worker dies; on SQLite always True (its
        write lock already serialises packers)."""
        ...

    def pending_items(self, run_pk: int, after_seq: int, limit: int) -> list[PendingItem]:
        """Pending items in seq order after ``after_seq``."""
        ...

    def allocate_batch_number(self, run_pk: int) -> int:
        """Reserve the run's next batch number."""
        ...

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
        """Record a packed batch (``prepared``) and move its items pending -> queued. The
        batch is held by ``owner`` until ``lease_until`` (its packer uploads it); recording
        its upload, or ending it, lets go.

        Returns ``None`` (and changes nothing) if any item was no longer pending.
        """
        ...

    def open_batch(self, run_pk: int, placeholder: str, owner: str, lease_until: float) -> int:
        """Record a new ``forming`` batch (no items, no input file yet) held by ``owner``
        until ``lease_until``, its key for now the unique ``placeholder``; returns its
        primary key. Its items come with `add_items`."""
        ...

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
        """Make a ``forming`` batch ``prepared`` under its key and written input file, if
        ``owner`` forms it and it holds exactly ``request_count`` items; it (for its upload,
        as `record_batch`) and the owner's other forming batches of the run are held until
        ``lease_until``. ``None`` (and nothing changed) if it was dissolved or differs."""
        ...

    def dissolve_batch(self, batch_pk: int, lease_until: float | None = None) -> int | None:
        """Delete a ``forming`` batch and return its queued items to ``pending``, in one
        transaction; with ``lease_until``, only while its lease is still the one seen (an
        owner renewing it meanwhile keeps it). Returns how many items went back, or
        ``None`` if it was no longer forming (sealed or dissolved by another worker)."""
        ...
