"""Batch records, their API representation and create-time validation of ``POST /v1/batches``."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from batchor.testing.emulator.errors import ApiError, bad_request, not_found
from batchor.testing.emulator.faults import BatchOutcome
from batchor.testing.emulator.files import FileStore

BATCH_ENDPOINTS: frozenset[str] = frozenset(
    {"/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions"}
)
"""Endpoints a batch may target, as OpenAI spells them."""

AZURE_ENDPOINTS: dict[str, str] = {
    "/chat/completions": "/v1/chat/completions",
    "/embeddings": "/v1/embeddings",
}
"""Azure OpenAI's spellings of batch endpoints (no ``/v1``), each with its OpenAI spelling.

A batch keeps the spelling it was created with, and its request lines must use that same
spelling in their ``url``.
"""


def canonical_endpoint(endpoint: str) -> str:
    """The OpenAI spelling of a batch endpoint given in either spelling."""
    return AZURE_ENDPOINTS.get(endpoint, endpoint)


TERMINAL_STATUSES: frozenset[str] = frozenset({"completed", "failed", "expired", "cancelled"})
"""Statuses a batch never leaves."""

_DAY = 24 * 60 * 60


@dataclass
class BatchRecord:
    """The server-side state of one batch; mutate it only through `BatchStore.update`."""

    id: str
    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None
    created_at: int
    outcome: BatchOutcome | None = None
    status: str = "validating"
    model: str | None = None
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        """The Batch object as the API returns it."""
        return {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": "24h",
            "status": self.status,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "in_progress_at": self.in_progress_at,
            "expires_at": self.created_at + _DAY,
            "finalizing_at": self.finalizing_at,
            "completed_at": self.completed_at,
            "failed_at": self.failed_at,
            "expired_at": self.expired_at,
            "cancelling_at": self.cancelling_at,
            "cancelled_at": self.cancelled_at,
            "request_counts": {
                "total": self.total,
                "completed": self.completed,
                "failed": self.failed,
            },
            "usage": {
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            },
            "metadata": self.metadata,
        }


@dataclass(frozen=True)
class BatchRequest:
    """A validated ``POST /v1/batches`` body."""

    input_file_id: str
    endpoint: str
    metadata: dict[str, str] | None


def _check_metadata(metadata: Any) -> dict[str, str] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise bad_request(
            "Invalid type for 'metadata': expected an object.",
            param="metadata",
            code="invalid_type",
        )
    if len(metadata) > 16:
        raise bad_request(
            "Invalid 'metadata': too many properties. Expected an object with at most 16 "
            f"properties, but got an object with {len(metadata)} properties instead.",
            param="metadata",
            code="object_above_max_properties",
        )
    for key, value in metadata.items():
        if len(key) > 64:
            raise bad_request(
                f"Invalid 'metadata': string too long. Expected a key with maximum length 64, but "
                f"got a key with length {len(key)} instead.",
                param="metadata",
                code="string_above_max_length",
            )
        if not isinstance(value, str):
            raise bad_request(
                f"Invalid type for 'metadata.{key}': expected a string.",
                param=f"metadata.{key}",
                code="invalid_type",
            )
        if len(value) > 512:
            raise bad_request(
                f"Invalid 'metadata.{key}': string too long. Expected a string with maximum length "
                f"512, but got a string with length {len(value)} instead.",
                param=f"metadata.{key}",
                code="string_above_max_length",
            )
    return dict(metadata)


def parse_batch_request(payload: Any, files: FileStore) -> BatchRequest:
    """Validate a ``POST /v1/batches`` body as the real API does, raising `ApiError`."""
    if not isinstance(payload, Mapping):
        raise bad_request("The request body must be a JSON object.")
    for name in ("input_file_id", "endpoint", "completion_window"):
        if payload.get(name) is None:
            raise bad_request(
                f"Missing required parameter: '{name}'.",
                param=name,
                code="missing_required_parameter",
            )
    endpoint = payload["endpoint"]
    if not isinstance(endpoint, str) or canonical_endpoint(endpoint) not in BATCH_ENDPOINTS:
        raise bad_request(
            f"Invalid value: '{endpoint}'. Supported values are: "
            + ", ".join(f"'{e}'" for e in sorted(BATCH_ENDPOINTS))
            + ".",
            param="endpoint",
            code="invalid_value",
        )
    if payload["completion_window"] != "24h":
        raise bad_request(
            f"Invalid value: '{payload['completion_window']}'. Supported values are: '24h'.",
            param="completion_window",
            code="invalid_value",
        )
    metadata = _check_metadata(payload.get("metadata"))
    input_file_id = str(payload["input_file_id"])
    stored = files.get(input_file_id)
    if stored is None:
        raise not_found(f"No such File object: {input_file_id}", param="input_file_id")
    if stored.purpose != "batch":
        raise bad_request(
            f"The input file {input_file_id} must be uploaded with purpose 'batch', "
            f"not '{stored.purpose}'.",
            param="input_file_id",
            code="invalid_file_purpose",
        )
    return BatchRequest(input_file_id=input_file_id, endpoint=endpoint, metadata=metadata)


class BatchStore:
    """Thread-safe registry of batches, oldest first."""

    def __init__(self, on_end: Callable[[dict[str, Any]], None] | None = None) -> None:
        """Start with no batches; ``on_end`` is called with a batch's API dict each time one
        reaches a terminal status (outside the lock)."""
        self._lock = threading.Lock()
        self._records: dict[str, BatchRecord] = {}
        self._on_end = on_end

    def create(self, request: BatchRequest, outcome: BatchOutcome | None) -> BatchRecord:
        """Record a new batch in status ``validating``."""
        record = BatchRecord(
            id="batch_" + os.urandom(12).hex(),
            input_file_id=request.input_file_id,
            endpoint=request.endpoint,
            metadata=request.metadata,
            created_at=int(time.time()),
            outcome=outcome,
        )
        with self._lock:
            self._records[record.id] = record
        return record

    def get(self, batch_id: str) -> BatchRecord:
        """The batch ``batch_id``; raise a 404 `ApiError` if unknown."""
        with self._lock:
            record = self._records.get(batch_id)
        if record is None:
            raise not_found(f"No batch found with id '{batch_id}'.")
        return record

    def snapshot(self, record: BatchRecord) -> dict[str, Any]:
        """The API representation of ``record``, read consistently."""
        with self._lock:
            return record.to_dict()

    def all(self) -> list[dict[str, Any]]:
        """Every batch as an API dict, oldest first."""
        with self._lock:
            return [r.to_dict() for r in self._records.values()]

    def page(self, *, after: str | None, limit: int) -> tuple[list[dict[str, Any]], bool]:
        """One page of batches, newest first, and whether more follow it."""
        with self._lock:
            records = list(reversed(self._records.values()))
            if after is not None:
                ids = [r.id for r in records]
                records = records[ids.index(after) + 1 :] if after in ids else []
            return [r.to_dict() for r in records[:limit]], len(records) > limit

    def update(self, record: BatchRecord, **changes: Any) -> bool:
        """Apply ``changes`` atomically.

        Return ``False`` (changing nothing) if that would move a ``cancelling`` batch to any
        status other than ``cancelled``.
        """
        ended = None
        with self._lock:
            new_status = changes.get("status")
            if (
                new_status is not None
                and record.status == "cancelling"
                and new_status not in ("cancelling", "cancelled")
            ):
                return False
            was = record.status
            for name, value in changes.items():
                setattr(record, name, value)
            if record.status != was and record.status in TERMINAL_STATUSES:
                ended = record.to_dict()
        if ended is not None and self._on_end is not None:
            self._on_end(ended)
        return True

    def add_counts(self, record: BatchRecord, **deltas: int) -> None:
        """Add ``deltas`` to integer counters of ``record`` atomically."""
        with self._lock:
            for name, delta in deltas.items():
                setattr(record, name, getattr(record, name) + delta)

    def request_cancel(self, batch_id: str) -> tuple[BatchRecord, bool]:
        """Move a batch to ``cancelling``; return it and whether it was newly cancelled."""
        record = self.get(batch_id)
        with self._lock:
            if record.status in TERMINAL_STATUSES:
                raise ApiError(
                    409,
                    f"Cannot cancel a batch with status '{record.status}'.",
                    param=None,
                    code="batch_not_cancellable",
                )
            if record.status == "cancelling":
                return record, False
            record.status = "cancelling"
            record.cancelling_at = int(time.time())
            return record, True
