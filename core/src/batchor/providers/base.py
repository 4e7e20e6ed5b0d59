"""The `BatchProvider` port: a provider's files and batches, as the engine uses them."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import BinaryIO, Protocol

from batchor.errors import ProviderError

#: Provider batch statuses after which nothing changes.
TERMINAL_PROVIDER_STATUSES = frozenset({"completed", "failed", "expired", "cancelled"})


class TransientProviderError(ProviderError):
    """A provider call failed in a way that may succeed later (timeout, 5xx, 429, network)."""


@dataclass(frozen=True, slots=True)
class ProviderBatch:
    """A provider batch as the engine needs it.

    Attributes:
        id: The provider's batch id.
        status: The provider's status (validating, in_progress, finalizing, completed,
            failed, expired, cancelling, cancelled).
        output_file_id: File of answered lines (2xx), if any.
        error_file_id: File of failed or unanswered lines, if any.
        errors: Batch-level errors as ``(code, message)`` pairs.
        metadata: The batch's metadata.
        created_at: Creation time (epoch seconds).
        input_file_id: The file of requests the batch was created from.
    """

    id: str
    status: str
    output_file_id: str | None = None
    error_file_id: str | None = None
    errors: tuple[tuple[str, str], ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    created_at: int = 0
    input_file_id: str | None = None

    @property
    def is_terminal(self) -> bool:
        """Whether the provider is done with the batch."""
        return self.status in TERMINAL_PROVIDER_STATUSES


class BatchProvider(Protocol):
    """A batch API: upload an input file, create and watch batches, download results."""

    def upload_file(self, content: BinaryIO, filename: str) -> str:
        """Upload a batch input file; returns its file id."""
        ...

    def find_uploads(self, filename: str, created_after: float) -> list[str]:
        """Ids of batch input files uploaded under ``filename`` since ``created_after``,
        newest first (to adopt an upload whose id was never recorded)."""
        ...

    def create_batch(
        self, input_file_id: str, endpoint: str, metadata: Mapping[str, str]
    ) -> ProviderBatch:
        """Create a batch. Never retried by the transport: a retry could buy it twice."""
        ...

    def retrieve_batch(self, batch_id: str) -> ProviderBatch:
        """The batch's current state."""
        ...

    def list_batches(self, created_after: float) -> Iterator[ProviderBatch]:
        """Batches newest first, stopping at the first created before ``created_after``."""
        ...

    def cancel_batch(self, batch_id: str) -> ProviderBatch:
        """Ask the provider to cancel the batch."""
        ...

    def download_file(self, file_id: str, dest: BinaryIO) -> int:
        """Stream a file's content into ``dest``; returns the bytes written."""
        ...

    def delete_file(self, file_id: str) -> None:
        """Delete an uploaded file (missing files are ignored)."""
        ...
