"""Batch records and their REST shape: a long-running ``Operation`` whose ``metadata`` is the
``GenerateContentBatch`` (what ``client.batches.get`` parses into a ``BatchJob``)."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from batchor.testing.emulator.faults import BatchOutcome
from batchor.testing.gemini.errors import not_found
from batchor.testing.gemini.wire import new_id, now_ns, page, rfc3339

PENDING = "BATCH_STATE_PENDING"
RUNNING = "BATCH_STATE_RUNNING"
SUCCEEDED = "BATCH_STATE_SUCCEEDED"
FAILED = "BATCH_STATE_FAILED"
CANCELLED = "BATCH_STATE_CANCELLED"
EXPIRED = "BATCH_STATE_EXPIRED"
TERMINAL_STATES: frozenset[str] = frozenset({SUCCEEDED, FAILED, CANCELLED, EXPIRED})
"""States a batch never leaves (the operation is ``done``)."""

_TYPE_PREFIX = "type.googleapis.com/google.ai.generativelanguage.v1main."
"""The ``@type`` prefix the service puts on operation metadata and responses."""


@dataclass
class GeminiBatch:
    """The server-side state of one batch; change it only through `GeminiBatchStore.update`."""

    id: str
    model: str
    """``models/...``."""
    display_name: str | None
    input_file: str
    """``files/...``."""
    create_ns: int
    seq: int
    priority: int | None = None
    outcome: BatchOutcome | None = None
    state: str = PENDING
    update_ns: int = 0
    end_ns: int | None = None
    request_count: int | None = None
    succeeded: int = 0
    failed: int = 0
    output_file: str | None = None
    """``files/batch-...`` once the batch has results to download."""
    error: dict[str, Any] | None = None
    """The operation ``error`` (a ``google.rpc.Status``) of a batch that did not succeed."""

    @property
    def name(self) -> str:
        """The resource name, ``batches/{id}``."""
        return f"batches/{self.id}"

    def stats(self) -> dict[str, str]:
        """``batchStats``: int64 counts as strings, zero counts left out (proto3 JSON)."""
        if self.request_count is None:
            return {}
        pending = max(0, self.request_count - self.succeeded - self.failed)
        counts = {
            "requestCount": self.request_count,
            "successfulRequestCount": self.succeeded,
            "failedRequestCount": self.failed,
            "pendingRequestCount": pending,
        }
        return {key: str(value) for key, value in counts.items() if value}

    def to_operation(self) -> dict[str, Any]:
        """The batch as the REST API returns it (create, get and list alike)."""
        metadata: dict[str, Any] = {
            "@type": _TYPE_PREFIX + "GenerateContentBatch",
            "model": self.model,
        }
        if self.display_name:
            metadata["displayName"] = self.display_name
        metadata["inputConfig"] = {"fileName": self.input_file}
        if self.output_file is not None:
            metadata["output"] = {"responsesFile": self.output_file}
        metadata["createTime"] = rfc3339(self.create_ns)
        if self.end_ns is not None:
            metadata["endTime"] = rfc3339(self.end_ns)
        metadata["updateTime"] = rfc3339(self.update_ns or self.create_ns)
        metadata["batchStats"] = self.stats()
        metadata["state"] = self.state
        if self.priority:
            metadata["priority"] = str(self.priority)
        metadata["name"] = self.name
        operation: dict[str, Any] = {"name": self.name, "metadata": metadata}
        if self.state in TERMINAL_STATES:
            operation["done"] = True
            if self.state == SUCCEEDED:
                operation["response"] = {
                    "@type": _TYPE_PREFIX + "GenerateContentBatchOutput",
                    "responsesFile": self.output_file,
                }
            elif self.error is not None:
                operation["error"] = self.error
        return operation


class GeminiBatchStore:
    """Thread-safe registry of batches, in creation order."""

    def __init__(self) -> None:
        """Start empty."""
        self._lock = threading.Lock()
        self._batches: dict[str, GeminiBatch] = {}
        self._seq = itertools.count(1)

    def create(
        self,
        model: str,
        display_name: str | None,
        input_file: str,
        priority: int | None,
        outcome: BatchOutcome | None,
    ) -> GeminiBatch:
        """Record a new ``BATCH_STATE_PENDING`` batch."""
        created = now_ns()
        batch = GeminiBatch(
            id=new_id(36),
            model=model,
            display_name=display_name,
            input_file=input_file,
            create_ns=created,
            update_ns=created,
            seq=next(self._seq),
            priority=priority,
            outcome=outcome,
        )
        with self._lock:
            self._batches[batch.id] = batch
        return batch

    def get(self, batch_id: str) -> GeminiBatch:
        """The batch ``batch_id`` (without ``batches/``); 404 if unknown or deleted."""
        with self._lock:
            batch = self._batches.get(batch_id)
        if batch is None:
            raise not_found()
        return batch

    def operation(self, batch: GeminiBatch) -> dict[str, Any]:
        """A consistent snapshot of ``batch`` as its REST JSON."""
        with self._lock:
            return batch.to_operation()

    def update(self, batch: GeminiBatch, **changes: Any) -> bool:
        """Apply ``changes`` unless the batch already ended; return whether they applied.

        Moving to a terminal state sets ``endTime``.
        """
        with self._lock:
            if batch.state in TERMINAL_STATES:
                return False
            for key, value in changes.items():
                setattr(batch, key, value)
            batch.update_ns = now_ns()
            if batch.state in TERMINAL_STATES:
                batch.end_ns = batch.update_ns
            return True

    def add_counts(self, batch: GeminiBatch, *, succeeded: int, failed: int) -> None:
        """Count answered lines of a running batch."""
        with self._lock:
            batch.succeeded += succeeded
            batch.failed += failed
            batch.update_ns = now_ns()

    def delete(self, batch_id: str) -> GeminiBatch:
        """Forget a batch; 404 if unknown."""
        with self._lock:
            batch = self._batches.pop(batch_id, None)
        if batch is None:
            raise not_found()
        return batch

    def all(self) -> list[dict[str, Any]]:
        """Every batch as its REST JSON, oldest first."""
        with self._lock:
            return [batch.to_operation() for batch in self._batches.values()]

    def page(self, query: Mapping[str, list[str]]) -> tuple[list[dict[str, Any]], str | None]:
        """One page of batches, newest first, and the next page token."""
        with self._lock:
            items = [(b.seq, b) for b in reversed(self._batches.values())]
            batches, token = page(items, query, default=10, maximum=100)
            return [b.to_operation() for b in batches], token
