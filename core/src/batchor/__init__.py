"""batchor: durable, exactly-once runs of large workloads through the OpenAI Batch API.

The public API is what this module exports; everything else is internal.
"""

from batchor.errors import (
    BatchorError,
    ConfigurationError,
    DuplicateItemError,
    JobMismatchError,
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    RunNotFoundError,
    RunStateError,
    SourceError,
    WaitTimeout,
)
from batchor.items import BatchItem, PromptParts
from batchor.jobs import BatchJob, BatchLimits, RetryPolicy
from batchor.providers.openai_config import OpenAIProviderConfig
from batchor.results import ItemFailure, ItemResult, RunSummary, Usage
from batchor.run import Run
from batchor.runner import BatchRunner
from batchor.sources.base import CheckpointedItemSource
from batchor.sources.composite import CompositeItemSource
from batchor.sources.csv import CsvItemSource
from batchor.sources.jsonl import JsonlItemSource
from batchor.sources.parquet import ParquetItemSource
from batchor.states import BatchStatus, ItemStatus, RunStatus

__version__ = "0.1.0"

__all__ = [
    "BatchItem",
    "BatchJob",
    "BatchLimits",
    "BatchRunner",
    "BatchStatus",
    "BatchorError",
    "CheckpointedItemSource",
    "CompositeItemSource",
    "ConfigurationError",
    "CsvItemSource",
    "DuplicateItemError",
    "ItemFailure",
    "ItemResult",
    "ItemStatus",
    "JobMismatchError",
    "JsonlItemSource",
    "OpenAIProviderConfig",
    "ParquetItemSource",
    "PromptParts",
    "ProviderAuthError",
    "ProviderError",
    "ProviderQuotaError",
    "RetryPolicy",
    "Run",
    "RunNotFoundError",
    "RunStateError",
    "RunStatus",
    "RunSummary",
    "SourceError",
    "Usage",
    "WaitTimeout",
    "__version__",
]
