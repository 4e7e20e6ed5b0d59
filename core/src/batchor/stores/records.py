"""The records the `StateStore` port reads and writes: typed values, decoded once by the
store (no JSON text for the engine to parse), and free of any database library."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from batchor.states import BatchStatus, ItemStatus, RunStatus


class SourcePart(NamedTuple):
    """Where one part of a run's source starts: its identity and the seq of its first item."""

    name: str
    first_seq: int


class BatchError(NamedTuple):
    """One error the provider reported for a whole batch (or the refusal of its file or
    create): a code and a message."""

    code: str
    message: str


@dataclass(frozen=True, slots=True)
class RunRecord:
    """A run's row."""

    pk: int
    run_id: str
    status: RunStatus
    config: Mapping[str, Any]
    """The job definition, decoded."""
    fingerprint: str
    prompt_fingerprint: str | None
    ingest_complete: bool
    ingested_count: int
    source_checkpoint: str | None
    """The source's own checkpoint text (opaque to the store and the engine)."""
    next_slice: int
    pause_reason: str | None
    input_tokens: int
    output_tokens: int
    created_at: float
    backoff_until: float | None = None
    backoff_count: int = 0
    cancel_remote: bool = False
    source_parts: tuple[SourcePart, ...] = ()
    """Where each part of the source starts, in seq order (lineage)."""
    exported_at: float | None = None
    pruned_at: float | None = None
    collected: Mapping[str, Any] | None = None
    """What `batchor.steps.collect` last wrote for the run, decoded."""
    deadline_at: float | None = None
    """When the run must end (epoch seconds), if it has a deadline."""
    max_cost_usd: float | None = None
    """The run's spending cap in USD, if it has one."""
    pause_code: str | None = None
    """Why the run is paused, as a code (``budget``, ``deadline``...); ``pause_reason`` says
    it in words."""
    webhook_at: float | None = None
    """When a provider webhook last drove the run."""
    finish_since: float | None = None
    """Since when few enough items were left in live batches to finish synchronously."""
    finish_mode: str | None = None
    """``sync`` once the stragglers are sent synchronously, ``capped`` once the synchronous
    cap stopped that (see `batchor.engine.finish`)."""
    sync_owner: str | None = None
    """The worker sending the run's items synchronously, while one is."""
    sync_lease_until: float | None = None
    """Until when that worker's claim holds unless renewed."""
    sync_answered: int = 0
    """Items answered synchronously."""
    sync_input_tokens: int = 0
    """Input tokens the synchronous requests billed."""
    sync_output_tokens: int = 0
    """Output tokens the synchronous requests billed."""
    done_tick: int = 0
    """How many times items of the run have ended (one tick per transaction that ends some):
    a change says items ended, without counting them."""


@dataclass(frozen=True, slots=True)
class BatchRecord:
    """A provider batch's row."""

    pk: int
    run_pk: int
    batch_key: str
    status: BatchStatus
    input_artifact: str
    request_count: int
    input_bytes: int
    file_id: str | None
    create_started_at: float | None
    provider_batch_id: str | None
    provider_status: str | None
    output_file_id: str | None
    error_file_id: str | None
    errors: tuple[BatchError, ...]
    """The provider's batch-level errors (or the refusal that ended the batch)."""
    created_at: float
    not_before: float | None = None
    failures: int = 0
    est_tokens: int | None = None
    reserved: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None
    updated_at: float | None = None
    claimed_by: str | None = None
    lease_until: float | None = None
    submitted_at: float | None = None
    """When the provider batch was created (recorded)."""
    est_cost_usd: float | None = None
    """The projected cost reserved under the run's spending cap before the create."""
    cost_usd: float | None = None
    """The cost the batch billed, once collected (``None`` for a model without a price)."""
    stop_reason: str | None = None
    """Why batchor cancelled the provider batch: ``batch_timeout`` or ``deadline``."""
    stop_requested_at: float | None = None
    """When that cancel was claimed."""
    requeued: int | None = None
    """Unanswered items its collection returned to pending."""
    duplicates: int | None = None
    """Lines it answered for items answered synchronously meanwhile (billed, not applied)."""


class NewItem(NamedTuple):
    """An item accepted at ingestion, with the pointer to its request body (fields in the
    order of the table's columns, so a row reaches the driver as it is)."""

    seq: int
    item_id: str
    req_slice: int
    req_offset: int
    req_length: int
    req_hash: str
    est_tokens: int | None = None
    metadata: str | None = None
    """The item's metadata as compact JSON text: a payload the store keeps and results hand
    back, never read by the engine."""


class FormingItems(NamedTuple):
    """Where a slice's items go when they are born in batches cut while ingesting
    (`BatchStatus.FORMING`): ``segments`` are ``(batch_pk, first seq, last seq)``, each
    a run of the slice's items that goes ``queued`` in that batch, if it is still forming
    under ``owner`` (else they go in ``pending``). ``lease_until`` renews every batch the
    owner is forming in the run."""

    owner: str
    lease_until: float
    segments: Sequence[tuple[int, int, int]]


class PendingItem(NamedTuple):
    """An item waiting to be packed, with where its request body lives."""

    seq: int
    attempts: int
    req_slice: int
    req_offset: int
    req_length: int
    est_tokens: int | None = None


OutcomeKind = Literal["completed", "retry", "failed"]


class ItemOutcome(NamedTuple):
    """What one answered line means for its item (attempt charged in every case)."""

    seq: int
    kind: OutcomeKind
    output_text: str | None = None
    error_class: str | None = None
    message: str | None = None
    retryable: bool = False
    input_tokens: int | None = None
    output_tokens: int | None = None


class ItemRow(NamedTuple):
    """An item as results read it (a tuple: results are read by the hundred thousand).

    ``metadata`` and ``output_text`` are payloads (JSON text written by the user's source
    and the provider), handed back as stored so exports can copy them without re-encoding.
    """

    seq: int
    item_id: str
    status: ItemStatus
    attempts: int
    metadata: str | None
    output_text: str | None
    error_class: str | None
    error_message: str | None
    error_retryable: bool | None
    error_attempt: int | None
    input_tokens: int | None
    output_tokens: int | None
    done_tick: int | None = None
