"""A job: the items of a run, how to prompt for each, the provider and the policies."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from batchor.errors import ConfigurationError
from batchor.items import BatchItem, PromptParts
from batchor.structured import strict_json_schema

if TYPE_CHECKING:
    from pydantic import BaseModel

    from batchor.providers.registry import ProviderConfigs
    from batchor.sources.base import CheckpointedItemSource


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often an item is tried before it fails for good.

    Attributes:
        max_attempts: Attempts per item, the first included. A retryable failure (a 5xx or 429
            line, a reply that is not valid JSON or fails the schema) charges one attempt; an
            invalid request (4xx) fails at once.
    """

    max_attempts: int = 3

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy.max_attempts must be at least 1, got {self.max_attempts}"
            )


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """How full batchor packs each provider batch.

    Attributes:
        max_requests: Requests per batch; ``None`` (default): the provider's limit (OpenAI
            50,000, Azure OpenAI 100,000).
        max_bytes: Bytes per batch input file (OpenAI and Azure allow 200 MB; the default
            keeps a margin).
        batch_timeout: The longest one provider batch may run. A batch still running after
            it is cancelled at the provider: its answered lines are kept and its unanswered
            items go back to be sent again, without charging an attempt (or end ``failed``
            with class ``deadline`` once the run's deadline has passed). ``None`` (default):
            the provider's own window (OpenAI 24 h; Azure batches never expire).
    """

    max_requests: int | None = None
    max_bytes: int = 190_000_000
    batch_timeout: timedelta | None = None

    def __post_init__(self) -> None:
        if self.batch_timeout is not None and (
            not isinstance(self.batch_timeout, timedelta) or self.batch_timeout.total_seconds() <= 0
        ):
            raise ConfigurationError(
                "BatchLimits.batch_timeout must be a positive timedelta, got "
                f"{self.batch_timeout!r}"
            )
        if self.max_requests is not None and self.max_requests < 1:
            raise ConfigurationError(
                f"BatchLimits.max_requests must be at least 1, got {self.max_requests}"
            )
        if self.max_bytes < 1_000:
            raise ConfigurationError(
                f"BatchLimits.max_bytes must be at least 1000, got {self.max_bytes}"
            )

    def check(self, provider: str, max_requests: int, max_bytes: int) -> None:
        """Refuse limits above a provider's own.

        Raises:
            ConfigurationError: names the limit and the provider's.
        """
        if self.max_requests is not None and self.max_requests > max_requests:
            raise ConfigurationError(
                f"BatchLimits.max_requests must be between 1 and {max_requests} for "
                f"{provider}, got {self.max_requests}"
            )
        if self.max_bytes > max_bytes:
            raise ConfigurationError(
                f"BatchLimits.max_bytes must be between 1000 and {max_bytes} for {provider}, "
                f"got {self.max_bytes}"
            )


@dataclass(frozen=True, slots=True)
class ArtifactPolicy:
    """What batchor keeps of a run's files once they have served their purpose.

    Attributes:
        keep_raw_outputs: Keep each batch's raw output and error files (as downloaded from
            the provider) after their results are recorded in the store, for audit and
            `Run.export_artifacts`. With ``False`` they are deleted as soon as a batch
            is collected; the results themselves are in the store either way.
    """

    keep_raw_outputs: bool = True


@dataclass(frozen=True, slots=True)
class FinishSync:
    """Finishing the stragglers: once a run has few items left in live batches for a while,
    they are taken out of their batches and sent through the provider's ordinary
    synchronous API instead (OpenAI and Azure OpenAI; not Anthropic or Gemini yet).

    When at most ``when_remaining_at_most`` items are left in live batches (and none waits
    to be packed) for longer than ``after``, every live batch is cancelled at the provider
    (the lines it answered are kept) and its unanswered items are sent synchronously, at
    most ``max_concurrency`` requests at once, honouring the provider's rate-limit headers,
    each item answered exactly once. A stopped batch the provider has not ended within
    ``cancel_grace`` has its unanswered items sent synchronously too; a line it answers
    later for one of them is a duplicate answer (billed, not applied, counted in
    `RunSummary.duplicate_answers`).

    Synchronous requests cost the provider's standard price, twice the Batch API's at
    OpenAI (`batchor.engine.sync_send.SYNC_PRICE_FACTOR`).

    Attributes:
        when_remaining_at_most: At most this many items left in live batches (at least 1).
        after: How long that must hold first (a positive ``timedelta``).
        max_cost_usd: The most the synchronous requests may cost in USD: before each, the
            synchronous cost so far plus its projected cost must fit; once one does not,
            synchronous sending stops for good and the rest goes in a normal batch.
            ``None``: no cap of its own. The model must be in the runner's price table.
        max_concurrency: Synchronous requests in flight at once (1 to 64).
        cancel_grace: How long a stopped batch may take to end before its unanswered
            items are sent synchronously anyway.
    """

    when_remaining_at_most: int
    after: timedelta
    max_cost_usd: float | None = None
    max_concurrency: int = 8
    cancel_grace: timedelta = timedelta(seconds=60)

    def __post_init__(self) -> None:
        n = self.when_remaining_at_most
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ConfigurationError(
                f"FinishSync.when_remaining_at_most must be a whole number of at least 1, got {n!r}"
            )
        for name in ("after", "cancel_grace"):
            value = getattr(self, name)
            if not isinstance(value, timedelta) or value.total_seconds() <= 0:
                raise ConfigurationError(
                    f"FinishSync.{name} must be a positive timedelta, got {value!r}"
                )
        check_cost_cap("FinishSync.max_cost_usd", self.max_cost_usd)
        c = self.max_concurrency
        if isinstance(c, bool) or not isinstance(c, int) or not 1 <= c <= 64:
            raise ConfigurationError(
                f"FinishSync.max_concurrency must be between 1 and 64, got {c!r}"
            )

    def record(self) -> dict[str, float | int | None]:
        """The settings as stored with a run (durations in seconds)."""
        return {
            "when_remaining_at_most": self.when_remaining_at_most,
            "after": self.after.total_seconds(),
            "max_cost_usd": self.max_cost_usd,
            "max_concurrency": self.max_concurrency,
            "cancel_grace": self.cancel_grace.total_seconds(),
        }

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> FinishSync:
        """The settings from what `record` stored."""
        cap = record.get("max_cost_usd")
        return cls(
            when_remaining_at_most=int(record["when_remaining_at_most"]),
            after=timedelta(seconds=float(record["after"])),
            max_cost_usd=None if cap is None else float(cap),
            max_concurrency=int(record.get("max_concurrency") or 8),
            cancel_grace=timedelta(seconds=float(record.get("cancel_grace") or 60.0)),
        )


@dataclass(frozen=True, slots=True)
class BatchJob:
    """Everything a run needs to turn items into provider requests.

    Attributes:
        items: An `CheckpointedItemSource` (``JsonlItemSource``,
            ``CsvItemSource``) or any iterable of `BatchItem`. A file source can be
            resumed mid-ingest; a plain iterable only once it has been fully ingested.
        build_prompt: Called once per item at ingestion; returns the `PromptParts`.
        provider_config: The provider's settings (`OpenAIProviderConfig`,
            `AzureOpenAIProviderConfig`): its type chooses the provider; model, endpoint and
            request parameters.
        structured_output: A Pydantic model class; replies are validated into it and
            ``ItemResult.output`` is an instance. ``None`` for plain text. Its schema must
            be one the provider's strict mode accepts (see `batchor.schema_check`), or
            construction raises `ConfigurationError` naming the field.
        retry_policy: Attempts per item.
        limits: How full each provider batch is packed, and how long one may run.
        artifact_policy: What is kept of the run's files.
        deadline: When the whole run must end: a ``timedelta`` from the run's creation, or
            a timezone-aware ``datetime``. Past it nothing more is sent, live batches are
            cancelled at the provider (their answered lines kept) and every item still open
            ends ``failed`` with class ``deadline``.
        max_cost_usd: The most the run may cost. Before each provider batch is created, its
            projected cost (the price table's price of its estimated input tokens plus
            expected output tokens) and the cost of the run's other batches must fit;
            otherwise nothing more is sent and the run pauses with reason ``budget``, to be
            resumed with a higher cap (``Run.resume(max_cost_usd=...)``). The model must be
            in the runner's price table.
        finish_sync: Finish the stragglers synchronously (`FinishSync`); ``None`` (default):
            every item is answered by a batch.
    """

    items: CheckpointedItemSource | Iterable[BatchItem]
    build_prompt: Callable[[BatchItem], PromptParts]
    provider_config: ProviderConfigs
    structured_output: type[BaseModel] | None = None
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    limits: BatchLimits = field(default_factory=BatchLimits)
    artifact_policy: ArtifactPolicy = field(default_factory=ArtifactPolicy)
    deadline: timedelta | datetime | None = None
    max_cost_usd: float | None = None
    finish_sync: FinishSync | None = None

    def __post_init__(self) -> None:
        check_deadline("BatchJob.deadline", self.deadline)
        check_cost_cap("BatchJob.max_cost_usd", self.max_cost_usd)
        if self.finish_sync is not None and not isinstance(self.finish_sync, FinishSync):
            raise ConfigurationError(
                f"BatchJob.finish_sync must be a FinishSync, got {self.finish_sync!r}"
            )
        if not callable(self.build_prompt):
            raise ConfigurationError("BatchJob.build_prompt must be callable")
        from batchor.providers.registry import check_config

        check_config("BatchJob.provider_config", self.provider_config)
        limits = self.provider_config.limits
        self.limits.check(self.provider_config.provider_name, limits.max_requests, limits.max_bytes)
        model = self.structured_output
        if model is not None:
            from pydantic import BaseModel  # only a job with a model needs Pydantic

            if not (isinstance(model, type) and issubclass(model, BaseModel)):
                raise ConfigurationError(
                    f"BatchJob.structured_output must be a Pydantic model class, got {model!r}"
                )
            # Refuse at once what the provider's strict mode would refuse or answer empty,
            # and structured output on an endpoint that has none (embeddings).
            self.provider_config.codec(strict_json_schema(model), "output")


def check_deadline(name: str, deadline: object) -> None:
    """Refuse a deadline that is not a positive ``timedelta`` or an aware ``datetime``.

    Raises:
        ConfigurationError: names the setting and the value.
    """
    if deadline is None:
        return
    if isinstance(deadline, datetime):
        if deadline.tzinfo is None or deadline.utcoffset() is None:
            raise ConfigurationError(
                f"{name} must be timezone-aware (e.g. datetime(..., tzinfo=timezone.utc)), "
                f"got {deadline!r}"
            )
    elif not isinstance(deadline, timedelta) or deadline.total_seconds() <= 0:
        raise ConfigurationError(
            f"{name} must be a positive timedelta or an aware datetime, got {deadline!r}"
        )


def check_cost_cap(name: str, cap: object) -> None:
    """Refuse a spending cap that is not a positive, finite number of USD.

    Raises:
        ConfigurationError: names the setting and the value.
    """
    if cap is None:
        return
    if isinstance(cap, bool) or not isinstance(cap, int | float) or not math.isfinite(cap):
        raise ConfigurationError(f"{name} must be a number of USD, got {cap!r}")
    if cap <= 0:
        raise ConfigurationError(f"{name} must be more than 0, got {cap!r}")


def deadline_at(deadline: timedelta | datetime | None, created_at: float) -> float | None:
    """A deadline as epoch seconds: a ``timedelta`` counts from ``created_at``."""
    if deadline is None:
        return None
    if isinstance(deadline, timedelta):
        return created_at + deadline.total_seconds()
    return deadline.timestamp()
