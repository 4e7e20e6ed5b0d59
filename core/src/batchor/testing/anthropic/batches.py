"""Message Batch records, their API representation, and create-time checks of
``POST /v1/messages/batches``.

Only the batch envelope is checked at create (the body is an object, ``requests`` holds 1 to
100,000 items, each with a ``custom_id`` matching ``^[a-zA-Z0-9_-]{1,64}$``, unique in the
batch, and a ``params`` object): the Batch processing guide says "Validation of the
``params`` object for each message request is performed asynchronously, and validation
errors are returned when processing of the entire batch has ended", so a bad ``params``
comes back as an ``errored`` result, not as a refused batch.
"""

from __future__ import annotations

import itertools
import os
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from batchor.testing.anthropic.errors import invalid_request, not_found
from batchor.testing.anthropic.limits import AnthropicEmulatorLimits
from batchor.testing.anthropic.shapes import split_requests
from batchor.testing.anthropic.wire import encode, loads

CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
"""What a ``custom_id`` must match (API reference, "Create a Message Batch")."""
_DAY = 24 * 60 * 60
_BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
RESULT_TYPES = ("succeeded", "errored", "canceled", "expired")
"""The four result types, in the order `BatchRecord.counts` lists them."""


def base62(value: int, width: int) -> str:
    """``value`` in ``width`` base-62 digits (the low digits if it does not fit)."""
    digits = []
    for _ in range(width):
        value, digit = divmod(value, 62)
        digits.append(_BASE62[digit])
    return "".join(reversed(digits))


_LINE_BREAKS = (("\x85", "\\u0085"), ("\u2028", "\\u2028"), ("\u2029", "\\u2029"))
_PAIRS = [a + b for a in _BASE62 for b in _BASE62]  # base62(n, 2) for every n < 62**2
_PAIR_COUNT = len(_PAIRS)
_PAIRS_SQUARED = _PAIR_COUNT * _PAIR_COUNT
_SERIALS = _PAIRS_SQUARED * _PAIR_COUNT  # a serial is its low 6 base-62 digits


def new_id(prefix: str) -> str:
    """A fresh random id shaped like the API's (``msgbatch_01`` then 22 characters)."""
    return f"{prefix}_01" + base62(int.from_bytes(os.urandom(17), "big"), 22)


class SerialIds:
    """Unique ids shaped like the API's, cheaply: a random 16-character stem, then a
    6-character serial counting from a random start."""

    def __init__(self) -> None:
        """Draw the stem and the serial's start."""
        self._stem = base62(int.from_bytes(os.urandom(12), "big"), 16)
        self._serial = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def next(self, prefix: str) -> str:
        """The next id, e.g. ``msg_01`` then 22 characters."""
        high, low = divmod(next(self._serial) % _SERIALS, _PAIRS_SQUARED)
        middle, low = divmod(low, _PAIR_COUNT)
        pairs = _PAIRS
        return f"{prefix}_01{self._stem}{pairs[high]}{pairs[middle]}{pairs[low]}"


def rfc3339(timestamp: float | None) -> str | None:
    """``timestamp`` (seconds since the epoch) as the API writes it, e.g.
    ``"2024-08-20T18:37:24.100435Z"``."""
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class BatchRecord:
    """The server-side state of one Message Batch; mutate it only through `BatchStore`."""

    id: str
    total: int
    created_at: float
    spool: Path
    """The batch's requests, one ``{"custom_id", "params"}`` JSON object a line."""
    results: Path
    """Where the worker writes the results, one JSON line each."""
    expire: bool = False
    """Whether the batch was picked to expire part-way (`AnthropicEmulatorFaults.expire_count`)."""
    hold: bool = False
    """Whether the batch was picked to stay in progress until cancelled
    (`AnthropicEmulatorFaults.hold_count`)."""
    processing_status: str = "in_progress"
    ended_at: float | None = None
    cancel_initiated_at: float | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RESULT_TYPES, 0))

    def to_dict(self, base_url: str) -> dict[str, Any]:
        """The MessageBatch object as the API returns it."""
        ended = self.processing_status == "ended"
        return {
            "id": self.id,
            "type": "message_batch",
            "processing_status": self.processing_status,
            "request_counts": {
                "processing": 0 if ended else self.total,
                **(self.counts if ended else dict.fromkeys(RESULT_TYPES, 0)),
            },
            "ended_at": rfc3339(self.ended_at),
            "created_at": rfc3339(self.created_at),
            "expires_at": rfc3339(self.created_at + _DAY),
            "archived_at": None,
            "cancel_initiated_at": rfc3339(self.cancel_initiated_at),
            "results_url": f"{base_url}/v1/messages/batches/{self.id}/results" if ended else None,
        }


def read_create(raw: bytes, limits: AnthropicEmulatorLimits) -> list[str]:
    """Check a ``POST /v1/messages/batches`` body as the real API does (raising a 400
    `AnthropicApiError`); return its requests as spool lines, in order.

    The body is split into its requests through their shapes (`shapes.split_requests`) when
    it can be; otherwise, or if that finds a problem, it is parsed and checked in full
    (`parse_create`), so its error is the one a full check gives.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    requests = split_requests(text, limits.max_batch_requests) if text is not None else None
    if requests is not None:
        # A well-formed envelope of requests, each an object with a string custom_id and an
        # object params: only the custom_ids are left to check.
        seen: set[str] = set()
        for index, (custom_id, _) in enumerate(requests):
            check_custom_id(f"requests.{index}", custom_id, seen)
        assert text is not None
        if text.isascii():
            return [line for _, line in requests]
        return [_one_line(line) for _, line in requests]
    try:
        payload = loads(raw)
    except ValueError as exc:
        raise invalid_request(f"There was an issue with the JSON body: {exc}") from exc
    return [
        encode({"custom_id": custom_id, "params": params})
        for custom_id, params in parse_create(payload, limits)
    ]


def _one_line(line: str) -> str:
    """``line``, a request as sent, with the characters `str.splitlines` breaks lines at
    (raw in a JSON string) escaped, so it is one line to any reader."""
    if not line.isascii():
        for char, escaped in _LINE_BREAKS:
            if char in line:
                line = line.replace(char, escaped)
    return line


def check_custom_id(where: str, custom_id: str, seen: set[str]) -> None:
    """Check the ``custom_id`` (a string) of the request at ``where``; add it to ``seen``."""
    if len(custom_id) > 64:
        raise invalid_request(f"{where}.custom_id: String should have at most 64 characters")
    if CUSTOM_ID.match(custom_id) is None:
        raise invalid_request(
            f"{where}.custom_id: String should match pattern '{CUSTOM_ID.pattern}'"
        )
    if custom_id in seen:
        raise invalid_request(
            f"{where}.custom_id: Duplicate custom_id '{custom_id}'. Each request in a "
            "Message Batch must have a unique custom_id."
        )
    seen.add(custom_id)


def parse_create(payload: Any, limits: AnthropicEmulatorLimits) -> list[tuple[str, Any]]:
    """Check a parsed ``POST /v1/messages/batches`` body as the real API does (raising a 400
    `AnthropicApiError`); return its ``(custom_id, params)`` pairs in order.

    Messages follow the API's validation wording (``requests.0.custom_id: String should have
    at most 64 characters``).
    """
    if not isinstance(payload, dict):
        raise invalid_request("Input should be a valid dictionary")
    requests = payload.get("requests")
    if requests is None:
        raise invalid_request("requests: Field required")
    if not isinstance(requests, list):
        raise invalid_request("requests: Input should be a valid list")
    if not requests:
        raise invalid_request("requests: List should have at least 1 item after validation, not 0")
    if len(requests) > limits.max_batch_requests:
        raise invalid_request(
            f"requests: List should have at most {limits.max_batch_requests} items after "
            f"validation, not {len(requests)}"
        )
    pairs: list[tuple[str, Any]] = []
    seen: set[str] = set()
    for index, request in enumerate(requests):
        where = f"requests.{index}"
        if not isinstance(request, dict):
            raise invalid_request(f"{where}: Input should be a valid dictionary")
        custom_id = request.get("custom_id")
        if custom_id is None:
            raise invalid_request(f"{where}.custom_id: Field required")
        if not isinstance(custom_id, str):
            raise invalid_request(f"{where}.custom_id: Input should be a valid string")
        check_custom_id(where, custom_id, seen)
        if "params" not in request:
            raise invalid_request(f"{where}.params: Field required")
        params = request["params"]
        if not isinstance(params, dict):
            raise invalid_request(f"{where}.params: Input should be a valid dictionary")
        pairs.append((custom_id, params))
    return pairs


def write_spool(path: Path, lines: list[str]) -> None:
    """Write the request ``lines`` to ``path``, each ending in a newline."""
    with path.open("w", encoding="utf-8", newline="\n") as out:
        out.write("\n".join(lines))
        out.write("\n")


class BatchStore:
    """Thread-safe registry of Message Batches, oldest first."""

    def __init__(self, root: Path) -> None:
        """Keep each batch's files under ``root``."""
        self._root = root
        self.base_url = ""
        """The server's origin, which prefixes each batch's ``results_url`` (set once the
        server is bound)."""
        self._lock = threading.Lock()
        self._records: dict[str, BatchRecord] = {}

    def create(self, lines: list[str], *, expire: bool, hold: bool = False) -> BatchRecord:
        """Record a new ``in_progress`` batch holding the requests ``lines`` (spooled to disk);
        ``expire`` and ``hold`` are its forced outcome (see `BatchRecord`)."""
        batch_id = new_id("msgbatch")
        record = BatchRecord(
            id=batch_id,
            total=len(lines),
            created_at=time.time(),
            spool=self._root / f"{batch_id}.requests.jsonl",
            results=self._root / f"{batch_id}.results.jsonl",
            expire=expire,
            hold=hold,
        )
        write_spool(record.spool, lines)
        with self._lock:
            self._records[batch_id] = record
        return record

    def get(self, batch_id: str) -> BatchRecord:
        """The batch ``batch_id``; raise a 404 `AnthropicApiError` if unknown."""
        with self._lock:
            record = self._records.get(batch_id)
        if record is None:
            raise not_found(f"Message Batch {batch_id} not found.")
        return record

    def snapshot(self, record: BatchRecord) -> dict[str, Any]:
        """The API representation of ``record``, read consistently."""
        with self._lock:
            return record.to_dict(self.base_url)

    def all(self) -> list[dict[str, Any]]:
        """Every batch as an API dict, oldest first."""
        with self._lock:
            return [r.to_dict(self.base_url) for r in self._records.values()]

    def page(
        self, *, after_id: str | None, before_id: str | None, limit: int
    ) -> tuple[list[dict[str, Any]], bool]:
        """One page of batches, newest first, and whether more follow in that direction.

        After ``after_id`` (older batches) the page holds the ``limit`` batches next to the
        cursor, as it does before ``before_id`` (newer batches); an unknown cursor gives an
        empty page.
        """
        with self._lock:
            records = list(reversed(self._records.values()))
            ids = [r.id for r in records]
            cursor = after_id if after_id is not None else before_id
            if cursor is not None and cursor not in ids:
                return [], False
            if before_id is not None:
                candidates = records[: ids.index(before_id)]
                chosen = candidates[-limit:]
            else:
                candidates = records[ids.index(after_id) + 1 :] if after_id else records
                chosen = candidates[:limit]
            return [r.to_dict(self.base_url) for r in chosen], len(candidates) > limit

    def request_cancel(self, batch_id: str) -> tuple[BatchRecord, bool]:
        """Move a batch to ``canceling``; return it and whether it was newly canceled.

        Canceling a batch that is already canceling changes nothing; an ended batch cannot
        be canceled (400).
        """
        record = self.get(batch_id)
        with self._lock:
            if record.processing_status == "ended":
                raise invalid_request(
                    f"Message Batch {batch_id} has already ended and cannot be canceled."
                )
            if record.processing_status == "canceling":
                return record, False
            record.processing_status = "canceling"
            record.cancel_initiated_at = time.time()
            return record, True

    def end(self, record: BatchRecord, counts: Mapping[str, int]) -> None:
        """Mark ``record`` ended with its final result ``counts``."""
        with self._lock:
            record.counts = {kind: int(counts.get(kind, 0)) for kind in RESULT_TYPES}
            record.ended_at = time.time()
            record.processing_status = "ended"

    def delete(self, batch_id: str) -> None:
        """Forget an ended batch and remove its files; 400 if it has not ended."""
        record = self.get(batch_id)
        with self._lock:
            if record.processing_status != "ended":
                raise invalid_request(
                    f"Message Batch {batch_id} cannot be deleted while it is still "
                    "processing; cancel it and wait for it to end first."
                )
            self._records.pop(batch_id, None)
        record.spool.unlink(missing_ok=True)
        record.results.unlink(missing_ok=True)
