"""The `StateStore` port: narrow, transactional operations named after the engine's needs.

Every state change is conditional on the state it expects (compare-and-set), so a second
worker driving the same run can never submit or collect the same item twice.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping, Sequence
from typing import Any, Protocol

from batchor.states import BatchStatus, ItemStatus, RunStatus
from batchor.stores.finishing import FinishStore
from batchor.stores.packing import PackingStore
from batchor.stores.records import (
    BatchError,
    BatchRecord,
    FormingItems,
    ItemOutcome,
    ItemRow,
    NewItem,
    OutcomeKind,
    PendingItem,
    RunRecord,
    SourcePart,
)

__all__ = [
    "BATCH_TIMEOUT",
    "DEADLINE",
    "FINISH_MODE_CAPPED",
    "FINISH_MODE_SYNC",
    "FINISH_SYNC",
    "BatchError",
    "BatchRecord",
    "FormingItems",
    "ItemOutcome",
    "ItemRow",
    "NewItem",
    "OutcomeKind",
    "PendingItem",
    "RunRecord",
    "SourcePart",
    "StateStore",
]

DEADLINE = "deadline"
"""Why batchor stopped a batch at the run's deadline (`BatchRecord.stop_reason`), and the
error class of an item the deadline ended."""
BATCH_TIMEOUT = "batch_timeout"
"""Why batchor stopped a batch that ran past `BatchLimits.batch_timeout`."""
FINISH_SYNC = "finish_sync"
"""Why batchor stopped a batch to send its last items synchronously (`FinishSync`)."""
FINISH_MODE_SYNC = "sync"
"""`RunRecord.finish_mode` while a run's last items are sent synchronously."""
FINISH_MODE_CAPPED = "capped"
"""`RunRecord.finish_mode` once the synchronous cap ended that (the rest goes in batches)."""


class StateStore(FinishStore, PackingStore, Protocol):
    """The control plane batchor keeps runs, items and batches in."""

    thread_safe: bool
    """Whether two threads may use the store at once (each with its own connection)."""

    # runs
    def create_run(
        self, run_id: str, config: Mapping[str, Any], fingerprint: str
    ) -> tuple[RunRecord, bool]:
        """Create a run, or return the existing one with that id; True if this call created
        it."""
        ...

    def get_run(self, run_id: str) -> RunRecord | None:
        """The run with that id, if any."""
        ...

    def delete_run(self, run_pk: int) -> None:
        """Remove a run and everything it holds."""
        ...

    def set_run_status(
        self,
        run_pk: int,
        status: RunStatus,
        *,
        expected: Collection[RunStatus] | None = None,
        pause_reason: str | None = None,
        pause_code: str | None = None,
    ) -> bool:
        """Move the run to ``status`` if it is in one of ``expected``; True if it moved.
        ``pause_reason`` says why in words, ``pause_code`` as a code (``budget``...)."""
        ...

    def set_run_limits(
        self, run_pk: int, *, deadline_at: float | None, max_cost_usd: float | None
    ) -> None:
        """Record the run's deadline (epoch seconds) and spending cap (USD)."""
        ...

    def note_webhook(self, run_pk: int, at: float) -> None:
        """Record that a provider webhook drove the run ``at`` (polling backs off)."""
        ...

    def request_cancel(self, run_pk: int, *, remote: bool) -> bool:
        """Move a running or paused run to ``cancelling``; True if it moved."""
        ...

    def set_backoff(self, run_pk: int, until: float | None, count: int) -> None:
        """Record when packing may resume after a capacity refusal, and how many in a row."""
        ...

    def mark_exported(self, run_pk: int, at: float) -> None:
        """Record when the run's artifacts were last exported."""
        ...

    def mark_pruned(self, run_pk: int, at: float) -> None:
        """Record when the run's artifacts were pruned."""
        ...

    def record_collected(self, run_pk: int, result: Mapping[str, Any]) -> None:
        """Remember what `batchor.steps.collect` wrote for the run (JSON-serialisable)."""
        ...

    def cancel_items(self, run_pk: int, batch_pk: int | None = None) -> int:
        """Cancel the run's items that were never sent: pending ones and those queued in a
        batch not yet created, or only the unsent queued items of ``batch_pk``. Returns how
        many."""
        ...

    # ingestion
    def set_prompt_fingerprint(self, run_pk: int, fingerprint: str) -> None:
        """Record the hash of the run's first request bodies."""
        ...

    def add_items(
        self,
        run_pk: int,
        items: Sequence[NewItem],
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
        or with ``forming`` ``queued`` in the batches being cut (see `FormingItems`).
        False, and nothing recorded, if another worker ingested past this slice's start
        first.

        Raises:
            DuplicateItemError: an item_id is already in the run.
        """
        ...

    # batches
    def batches(self, run_pk: int, statuses: Collection[BatchStatus]) -> list[BatchRecord]:
        """The run's batches in those statuses, oldest first."""
        ...

    def get_batch(self, batch_pk: int) -> BatchRecord | None:
        """The batch with that primary key, or ``None``."""
        ...

    # submission: each a compare-and-set on the batch's status, True if it won
    def record_upload(self, batch_pk: int, file_id: str) -> bool:
        """Record the uploaded input file: ``prepared`` -> ``uploaded``; its packer's hold
        (`PackingStore.record_batch`) ends."""
        ...

    def claim_create(self, batch_pk: int, owner: str, *, seen: float | None, at: float) -> bool:
        """Claim the create of an ``uploaded`` batch for ``owner``, starting ``at`` (the
        engine's clock, which judges the claim's age), if its create claim is still the one
        seen (``None``: no create started)."""
        ...

    def claim_adoption(
        self, batch_pk: int, expected: BatchStatus, owner: str, file_id: str | None, *, at: float
    ) -> bool:
        """Claim a batch found at the provider for ``owner``, as a create would: a batch in
        ``expected`` with no create started becomes ``uploaded`` with the provider batch's
        input file and a create claim started ``at``."""
        ...

    def postpone(
        self, batch_pk: int, expected: BatchStatus, *, failures: int, not_before: float
    ) -> bool:
        """Leave a batch in ``expected`` after a transient failure: ``failures`` in a row,
        not to be tried again before ``not_before``."""
        ...

    def reject(self, batch_pk: int, expected: BatchStatus, error: BatchError) -> bool:
        """End a batch whose file or create the provider refused (``expected`` -> ``ended``,
        provider status ``rejected``), so its items are charged and retried or failed."""
        ...

    def claim_batch(
        self,
        batch_pk: int,
        expected: BatchStatus,
        owner: str,
        lease_seconds: float,
        *,
        steal_from: str | None = None,
    ) -> bool:
        """Claim (or renew) the batch for ``owner`` until ``lease_seconds`` from now, if it
        is in ``expected`` and unclaimed, expired, already ``owner``'s or ``steal_from``'s."""
        ...

    def reserve_tokens(self, batch_pk: int, limit: int) -> bool:
        """Reserve the batch's estimated tokens in its quota scope's budget if they fit under
        ``limit`` (a batch reserves at most once); True if the batch holds a reservation."""
        ...

    def drop_batch(
        self, batch_pk: int, expected: BatchStatus, create_started_at: float | None
    ) -> bool:
        """End a batch that was never created at the provider: collected, its queued items
        cancelled, its reservation released, in one transaction; False if it is no longer
        ``expected`` or its create claim changed from ``create_started_at`` meanwhile."""
        ...

    def mark_submitted(self, batch_pk: int, provider_batch_id: str, provider_status: str) -> bool:
        """Record the provider batch id: a ``prepared`` or ``uploaded`` batch becomes
        ``submitted``, and its queued items read as ``submitted`` from then on."""
        ...

    # polling
    def record_provider_status(self, batch_pk: int, provider_status: str) -> bool:
        """Record a ``submitted`` batch's provider status (still running)."""
        ...

    def mark_ended(
        self,
        batch_pk: int,
        provider_status: str,
        *,
        output_file_id: str | None,
        error_file_id: str | None,
        errors: Sequence[BatchError] = (),
    ) -> bool:
        """Record that the provider ended a ``submitted`` batch (-> ``ended``), with the files
        to collect and its batch-level errors."""
        ...

    # collection
    def apply_outcomes(
        self, run_pk: int, batch_pk: int, outcomes: Sequence[ItemOutcome], max_attempts: int
    ) -> int:
        """Apply answered lines to items still submitted in the batch, in one transaction;
        a ``retry`` on an item's last attempt fails it. Returns how many items it changed
        (lines applied by an earlier, interrupted collection change none)."""
        ...

    def finish_batch(
        self,
        run_pk: int,
        batch_pk: int,
        input_tokens: int,
        output_tokens: int,
        *,
        cost_usd: float | None = None,
    ) -> bool:
        """Mark an ended batch collected and add the tokens it billed to the run (recording
        its cost, when priced), in one transaction; False if it was not ended (another worker
        finished it)."""
        ...

    def requeue_unanswered(
        self,
        run_pk: int,
        batch_pk: int,
        *,
        charge: tuple[str, str] | None,
        max_attempts: int,
    ) -> int:
        """Return the batch's unanswered items (``submitted``, or still ``queued`` in a batch
        the provider refused to create) to ``pending``.

        With ``charge=(error_class, message)`` an attempt is charged (and items out of
        attempts fail); without it, the items go back untouched. Returns how many moved.
        """
        ...

    def fail_pending(
        self, run_pk: int, seqs: Sequence[int], error_class: str, message: str
    ) -> None:
        """Fail pending items that can never be sent (e.g. a request over the size limit)."""
        ...

    # time and money controls
    def reserve_cost(self, run_pk: int, batch_pk: int, est_cost_usd: float, cap: float) -> bool:
        """Reserve a batch's projected cost under the run's spending cap before its create:
        True if the batch holds a reservation (it did already, or the run's other batches'
        cost (billed once collected, else reserved) plus ``est_cost_usd`` fits under
        ``cap``). Serialised per run, so two workers never both pass the cap."""
        ...

    def claim_stop(self, batch_pk: int, reason: str, at: float) -> bool:
        """Claim the cancel of a ``submitted`` batch batchor stops (``reason``:
        ``batch_timeout`` or ``deadline``) for exactly one caller: True if this call
        recorded the stop."""
        ...

    def retry_stop(self, batch_pk: int, seen: float, at: float) -> bool:
        """Claim sending a stopped batch's cancel again, for exactly one caller: True if the
        batch is still ``submitted`` and its stop was last claimed at ``seen``."""
        ...

    def fail_open(self, run_pk: int, message: str, *, batch_pk: int | None = None) -> int:
        """End items the run's deadline leaves unsent (``failed``, class ``deadline``, no
        attempt charged): the run's pending items, or ``batch_pk``'s unanswered ones.
        Returns how many."""
        ...

    def drop_unsent(
        self,
        batch_pk: int,
        expected: BatchStatus,
        create_started_at: float | None,
        message: str,
    ) -> bool:
        """As `drop_batch`, once the run's deadline has passed: its queued items end
        ``failed``, class ``deadline``, instead of cancelled."""
        ...

    def stop_counts(self, run_pk: int, *, deadline_items: bool) -> tuple[int, int, int]:
        """``(deadline_failed, timed_out_batches, timeout_requeued)`` in one query (items
        failed ``deadline`` counted only with ``deadline_items``)."""
        ...

    # reading
    def item_counts(self, run_pk: int) -> dict[ItemStatus, int]:
        """Items by status."""
        ...

    def batch_counts(self, run_pk: int) -> dict[str, int]:
        """Batches by status."""
        ...

    def item_rows(
        self,
        run_pk: int,
        after_seq: int,
        limit: int,
        statuses: Collection[ItemStatus] | None = None,
    ) -> list[ItemRow]:
        """Items in seq order after ``after_seq``, optionally only in ``statuses``."""
        ...

    def terminal_rows(self, run_pk: int, after: tuple[int, int], limit: int) -> list[ItemRow]:
        """Terminal items in the order they ended, ``(done_tick, seq)`` after ``after``."""
        ...

    def stream_terminal_rows(self, run_pk: int, page: int) -> Iterator[list[ItemRow]]:
        """Every terminal item in seq order, in pages, read from one snapshot (for exports:
        one query, no per-page round trip)."""
        ...

    def run_of_provider_batch(self, provider_batch_id: str) -> str | None:
        """The id of the run that holds the provider batch ``provider_batch_id``, if any."""
        ...

    def list_runs(self, limit: int | None = None) -> list[RunRecord]:
        """Every run (or the newest ``limit``), newest first, in one query."""
        ...

    def close(self) -> None:
        """Release connections."""
        ...
