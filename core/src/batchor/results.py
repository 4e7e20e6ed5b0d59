"""What a run hands back: per-item results and failures, token usage, run summaries."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from batchor.states import ItemStatus, RunStatus


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens the provider billed.

    Attributes:
        input_tokens: Prompt tokens.
        output_tokens: Completion tokens.
    """

    input_tokens: int = 0
    output_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True, slots=True)
class ItemFailure:
    """Why an attempt at an item failed.

    Attributes:
        error_class: A short stable class: ``server_error``, ``rate_limited``,
            ``invalid_request``, ``invalid_json``, ``schema_validation``, ``refusal``,
            ``incomplete``, ``missing_output``, ``request_too_large``, ``batch_failed``,
            ``provider_error``, ``invalid_response``, ``unstorable`` (a reply the store could
            not hold; not retried), ``deadline`` (the run's deadline passed before the item
            was answered; no attempt charged).
        message: The provider's or validator's message.
        retryable: Whether the failure is of a kind that is retried.
        attempt: Which attempt (1-based) it ended.
    """

    error_class: str
    message: str
    retryable: bool
    attempt: int


@dataclass(frozen=True, slots=True)
class ItemResult:
    """One item's outcome.

    Attributes:
        item_id: The item's id.
        status: ``completed``, ``failed`` or ``cancelled`` (or a non-terminal status while
            the run goes on).
        output: The validated Pydantic instance for structured jobs, the vector
            (``list[float]``) for embeddings jobs, the text otherwise; ``None`` unless
            completed.
        output_text: The raw reply text (for embeddings, the vector as a JSON array).
        error: The failure that ended the item; ``None`` when it completed (every failed
            attempt is kept in the store's audit table).
        attempts: Attempts charged so far.
        usage: Tokens billed for the reply that completed or failed the item.
        metadata: The item's own lineage metadata.
        source: The identity of the input the item came from (for a file source, its
            absolute path; for a composite, the part's); ``None`` for a plain iterable.
        row: The item's 0-based position in that input (the n-th item it yielded); for a
            plain iterable, its position in the iterable.
    """

    item_id: str
    status: ItemStatus
    output: Any
    output_text: str | None
    error: ItemFailure | None
    attempts: int
    usage: Usage | None
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None
    row: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (one line of a JSONL export)."""
        output = self.output
        if hasattr(output, "model_dump"):
            output = output.model_dump(mode="json")
        return {
            "item_id": self.item_id,
            "status": self.status.value,
            "output": output,
            "output_text": self.output_text,
            "error": None
            if self.error is None
            else {
                "class": self.error.error_class,
                "message": self.error.message,
                "retryable": self.error.retryable,
                "attempt": self.error.attempt,
            },
            "attempts": self.attempts,
            "usage": None
            if self.usage is None
            else {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "metadata": dict(self.metadata),
            "source": self.source,
            "row": self.row,
        }


@dataclass(frozen=True, slots=True)
class ResultPage:
    """One page of terminal results, in the order the items ended.

    Attributes:
        results: The page's results (at most the ``limit`` asked for).
        next_cursor: Pass as ``after=`` to read the next page. Cursors only grow: an item
            that ends later always sorts after every cursor handed out before it ended, so
            paging while the run is going returns each terminal item exactly once.
        complete: True when the run is terminal and no result follows this page.
    """

    results: list[ItemResult]
    next_cursor: int
    complete: bool


@dataclass(frozen=True, slots=True)
class RunSummary:
    """A run's state at one moment.

    Attributes:
        run_id: The run's id.
        status: The run's status.
        items: Item counts by status (every status present, zero included).
        batches: Provider batches by batchor batch status.
        ingest_complete: Whether every item of the source has been accepted.
        usage: Tokens billed so far by the run's batches (synchronous requests are in
            ``sync_usage``).
        pause_reason: Why the run is paused, when it is.
        cost_usd: The estimated cost of ``usage`` (the batches) in USD from the runner's
            price table; ``None`` when the table does not know the model. Synchronous
            requests are in ``sync_cost_usd``: the run's whole cost is the sum of the two.
        pause_code: Why the run is paused, as a code: ``budget`` (its spending cap),
            ``quota``, ``refused``, ``request`` (paused by a user) ...; ``None`` when it is
            not paused.
        deadline_at: When the run must end (epoch seconds), if it has a deadline.
        max_cost_usd: The run's spending cap in USD, if it has one.
        committed_cost_usd: With a spending cap, what counts against it in USD: the cost
            its collected batches billed plus the projected cost reserved by batches not
            collected yet (``None`` without a cap).
        deadline_failed: Items the run's deadline ended (``failed``, class ``deadline``).
        timed_out_batches: Provider batches cancelled for running past
            ``BatchLimits.batch_timeout``.
        timeout_requeued: Unanswered items of those batches sent again (no attempt
            charged).
        sync_answered: Items completed by a synchronous request (`FinishSync`).
        sync_usage: Tokens the synchronous requests billed.
        sync_cost_usd: Their cost in USD at the provider's standard price (twice the
            table's Batch API price); ``None`` when the table does not know the model.
        duplicate_answers: Lines a stopped batch answered for items answered
            synchronously meanwhile: billed (in ``usage``), not applied.
    """

    run_id: str
    status: RunStatus
    items: Mapping[ItemStatus, int]
    batches: Mapping[str, int]
    ingest_complete: bool
    usage: Usage
    pause_reason: str | None = None
    cost_usd: float | None = None
    pause_code: str | None = None
    deadline_at: float | None = None
    max_cost_usd: float | None = None
    committed_cost_usd: float | None = None
    deadline_failed: int = 0
    timed_out_batches: int = 0
    timeout_requeued: int = 0
    sync_answered: int = 0
    sync_usage: Usage = field(default_factory=Usage)
    sync_cost_usd: float | None = 0.0
    duplicate_answers: int = 0

    @property
    def total(self) -> int:
        """Items accepted so far."""
        return sum(self.items.values())

    @property
    def completed(self) -> int:
        """Items completed."""
        return self.items.get(ItemStatus.COMPLETED, 0)

    @property
    def failed(self) -> int:
        """Items failed for good."""
        return self.items.get(ItemStatus.FAILED, 0)

    @property
    def terminal_items(self) -> int:
        """Items with their final outcome."""
        return sum(n for s, n in self.items.items() if s.is_terminal)

    @property
    def is_terminal(self) -> bool:
        """Whether the run has ended."""
        return self.status.is_terminal

    @property
    def in_flight(self) -> int:
        """Batches the provider holds: running, or ended and not collected yet."""
        return in_flight(self.batches)

    @property
    def is_stalled(self) -> bool:
        """Whether the run is paused with nothing in flight: waiting cannot end it, only
        `Run.resume` (``batchor resume RUN_ID``) can."""
        return self.status is RunStatus.PAUSED and not self.in_flight

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "run_id": self.run_id,
            "status": self.status.value,
            "items": {s.value: n for s, n in self.items.items()},
            "total": self.total,
            "batches": dict(self.batches),
            "ingest_complete": self.ingest_complete,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "pause_reason": self.pause_reason,
            "cost_usd": self.cost_usd,
            "pause_code": self.pause_code,
            "deadline_at": self.deadline_at,
            "max_cost_usd": self.max_cost_usd,
            "committed_cost_usd": self.committed_cost_usd,
            "deadline_failed": self.deadline_failed,
            "timed_out_batches": self.timed_out_batches,
            "timeout_requeued": self.timeout_requeued,
            "sync_answered": self.sync_answered,
            "sync_usage": {
                "input_tokens": self.sync_usage.input_tokens,
                "output_tokens": self.sync_usage.output_tokens,
            },
            "sync_cost_usd": self.sync_cost_usd,
            "duplicate_answers": self.duplicate_answers,
        }


def in_flight(batches: Mapping[str, int]) -> int:
    """Of a run's batches by status, those the provider holds: running, or ended and not
    collected yet."""
    return batches.get("submitted", 0) + batches.get("ended", 0)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """One provider batch of a run.

    Attributes:
        batch_key: batchor's key for it (``<run_id>/<n>``), also in the provider metadata.
        status: batchor's status of the batch.
        provider_batch_id: The provider's id, once created.
        provider_status: The provider's last reported status.
        requests: Requests in its input file.
        usage: Tokens it billed (known once collected).
        cost_usd: The estimated cost of ``usage`` (``None`` for an unknown model).
    """

    batch_key: str
    status: str
    provider_batch_id: str | None
    provider_status: str | None
    requests: int
    usage: Usage
    cost_usd: float | None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return {
            "batch_key": self.batch_key,
            "status": self.status,
            "provider_batch_id": self.provider_batch_id,
            "provider_status": self.provider_status,
            "requests": self.requests,
            "usage": {
                "input_tokens": self.usage.input_tokens,
                "output_tokens": self.usage.output_tokens,
            },
            "cost_usd": self.cost_usd,
        }
