"""A job: the items of a run, how to prompt for each, the provider and the policies."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

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

    def __post_init__(self) -> None:
        check_deadline("BatchJob.deadline", self.deadline)
        check_cost_cap("BatchJob.max_cost_usd", self.max_cost_usd)
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
