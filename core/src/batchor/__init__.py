"""batchor: durable, exactly-once runs of large workloads through provider batch APIs
(OpenAI, Azure OpenAI).

The public API is what this module exports; everything else is internal.
"""

from batchor.errors import (
    PERMANENT_ERRORS,
    BatchorError,
    ConfigurationError,
    DuplicateItemError,
    JobMismatchError,
    ProviderAuthError,
    ProviderError,
    ProviderQuotaError,
    RunNotFoundError,
    RunNotReady,
    RunStateError,
    SourceError,
    StoreUnavailableError,
    TransientProviderError,
    WaitTimeout,
    is_permanent,
)
from batchor.estimate import JobEstimate, estimate_job
from batchor.handles import CollectResult, RunHandle, StartedRun
from batchor.items import BatchItem, PromptParts
from batchor.jobs import ArtifactPolicy, BatchJob, BatchLimits, FinishSync, RetryPolicy
from batchor.pricing import ModelPrice, PriceTable
from batchor.providers.anthropic.config import AnthropicProviderConfig
from batchor.providers.azure.config import AzureOpenAIProviderConfig
from batchor.providers.base import ProviderCredentials
from batchor.providers.gemini.config import GeminiProviderConfig
from batchor.providers.openai.config import OpenAIProviderConfig
from batchor.results import BatchInfo, ItemFailure, ItemResult, ResultPage, RunSummary, Usage
from batchor.retention import ArtifactExport, PruneReport
from batchor.run import Run
from batchor.runner import BatchRunner
from batchor.sources.base import CheckpointedItemSource
from batchor.sources.composite import CompositeItemSource
from batchor.sources.csv import CsvItemSource
from batchor.sources.jsonl import JsonlItemSource
from batchor.sources.parquet import ParquetItemSource
from batchor.states import BatchStatus, ItemStatus, PauseCode, RunStatus
from batchor.steps import run_id_from

__version__ = "0.1.0"

__all__ = [
    "PERMANENT_ERRORS",
    "AnthropicProviderConfig",
    "ArtifactExport",
    "ArtifactPolicy",
    "AzureOpenAIProviderConfig",
    "BatchInfo",
    "BatchItem",
    "BatchJob",
    "BatchLimits",
    "BatchRunner",
    "BatchStatus",
    "BatchorError",
    "CheckpointedItemSource",
    "CollectResult",
    "CompositeItemSource",
    "ConfigurationError",
    "CsvItemSource",
    "DuplicateItemError",
    "FinishSync",
    "GeminiProviderConfig",
    "ItemFailure",
    "ItemResult",
    "ItemStatus",
    "JobEstimate",
    "JobMismatchError",
    "JsonlItemSource",
    "ModelPrice",
    "OpenAIProviderConfig",
    "ParquetItemSource",
    "PauseCode",
    "PriceTable",
    "PromptParts",
    "ProviderAuthError",
    "ProviderCredentials",
    "ProviderError",
    "ProviderQuotaError",
    "PruneReport",
    "ResultPage",
    "RetryPolicy",
    "Run",
    "RunHandle",
    "RunNotFoundError",
    "RunNotReady",
    "RunStateError",
    "RunStatus",
    "RunSummary",
    "SourceError",
    "StartedRun",
    "StoreUnavailableError",
    "TransientProviderError",
    "Usage",
    "WaitTimeout",
    "__version__",
    "estimate_job",
    "is_permanent",
    "run_id_from",
]
