"""A Gemini batch as the REST API returns it (an ``Operation``), read into a `ProviderBatch`."""

from __future__ import annotations

import calendar
import re
import time
from collections.abc import Callable
from typing import Any

from batchor.providers.base import ProviderBatch
from batchor.providers.gemini.codec import rpc_name

#: Batch states (the REST API's ``BATCH_STATE_*``, the SDK's ``JOB_STATE_*``) in the port's
#: vocabulary.
STATES: dict[str, str] = {}
for _prefix in ("BATCH_STATE_", "JOB_STATE_"):
    STATES.update(
        {
            _prefix + "PENDING": "validating",
            _prefix + "RUNNING": "in_progress",
            _prefix + "SUCCEEDED": "completed",
            _prefix + "FAILED": "failed",
            _prefix + "CANCELLED": "cancelled",
            _prefix + "EXPIRED": "expired",
        }
    )
_TIMESTAMP = re.compile(r"^(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})$")


def to_batch(
    operation: dict[str, Any], metadata: Callable[[Any, Any], dict[str, str]]
) -> ProviderBatch:
    """A batch's ``Operation`` JSON (its ``metadata`` is the ``GenerateContentBatch``) as a
    `ProviderBatch`; ``metadata`` reads its display name and input file into the batch's
    metadata."""
    meta = operation.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    state = str(meta.get("state") or "")
    error = operation.get("error")
    status = STATES.get(state)
    if status is None:  # an unknown or unspecified state: whether the operation is done
        done = bool(operation.get("done"))
        status = ("failed" if error else "completed") if done else "in_progress"
    output = meta.get("output") if isinstance(meta.get("output"), dict) else None
    response = operation.get("response")
    output_file = (output or {}).get("responsesFile") or (
        response.get("responsesFile") if isinstance(response, dict) else None
    )
    errors: tuple[tuple[str, str], ...] = ()
    if isinstance(error, dict):
        errors = ((rpc_name(error.get("code")), str(error.get("message") or "")),)
    stats = meta.get("batchStats")
    count = stats.get("requestCount") if isinstance(stats, dict) else None
    config = meta.get("inputConfig")
    input_file = config.get("fileName") if isinstance(config, dict) else None
    return ProviderBatch(
        id=str(operation.get("name") or meta.get("name") or ""),
        status=status,
        output_file_id=str(output_file) if output_file else None,
        errors=errors,
        metadata=metadata(meta.get("displayName"), input_file),
        created_at=created_at(operation),
        input_file_id=str(input_file) if input_file else None,
        request_count=int(count) if isinstance(count, int | str) and str(count).isdigit() else None,
    )


def created_at(operation: dict[str, Any]) -> int:
    """A batch's ``createTime`` (RFC 3339, up to nine fractional digits) in epoch seconds."""
    meta = operation.get("metadata")
    raw = meta.get("createTime") if isinstance(meta, dict) else None
    match = _TIMESTAMP.match(raw) if isinstance(raw, str) else None
    if match is None:
        return 0
    seconds = calendar.timegm(time.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S"))
    zone = match.group(3)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        seconds -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60)
    return seconds
