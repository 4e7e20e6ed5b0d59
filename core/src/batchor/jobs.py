"""A job: the items of a run, how to prompt for each, the provider and the policies."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
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
    """

    max_requests: int | None = None
    max_bytes: int = 190_000_000

    def __post_init__(self) -> None:
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
        limits: How full each provider batch is packed.
        artifact_policy: What is kept of the run's files.
    """

    items: CheckpointedItemSource | Iterable[BatchItem]
    build_prompt: Callable[[BatchItem], PromptParts]
    provider_config: ProviderConfigs
    structured_output: type[BaseModel] | None = None
    retry_policy: RetryPolicy = field(default_factory=RetryPolicy)
    limits: BatchLimits = field(default_factory=BatchLimits)
    artifact_policy: ArtifactPolicy = field(default_factory=ArtifactPolicy)

    def __post_init__(self) -> None:
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
