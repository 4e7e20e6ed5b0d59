"""Handlers of the emulated batch endpoints: create, get, list, cancel and delete."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from batchor.testing.gemini.batches import TERMINAL_STATES
from batchor.testing.gemini.errors import (
    QUOTA_MESSAGE,
    DropConnection,
    failed_precondition,
    file_not_found,
    invalid_argument,
    not_found,
    rate_limited,
    unknown_field,
)
from batchor.testing.gemini.wire import both_spellings, field

if TYPE_CHECKING:
    from batchor.testing.gemini.server import GeminiRequestHandler

Query = Mapping[str, list[str]]
"""Parsed query-string parameters."""


BATCH_FIELDS = both_spellings(
    "model",
    "name",
    "displayName",
    "inputConfig",
    "output",
    "createTime",
    "endTime",
    "updateTime",
    "batchStats",
    "state",
    "priority",
    "webhookConfig",
)
"""The fields of a ``GenerateContentBatch``."""
INPUT_CONFIG_FIELDS = both_spellings("fileName", "requests")


def _check_fields(body: Mapping[str, Any], known: frozenset[str], where: str) -> None:
    for name in body:
        if name not in known:
            raise unknown_field(name, where)


def _version(handler: GeminiRequestHandler) -> str:
    return handler.path.lstrip("/").split("/", 1)[0]


def _input_file(batch: Mapping[str, Any]) -> str:
    """The ``files/...`` name the batch reads its requests from."""
    config = field(batch, "inputConfig", "input_config")
    if not isinstance(config, Mapping):
        raise invalid_argument("* GenerateContentBatch.input_config: input_config is required\n")
    _check_fields(config, INPUT_CONFIG_FIELDS, "batch.input_config")
    if config.get("requests") is not None:
        raise invalid_argument(
            "The emulator serves file input only (batch.input_config.file_name); inline "
            "requests are not emulated."
        )
    name = field(config, "fileName", "file_name")
    if not isinstance(name, str) or not name.startswith("files/"):
        raise invalid_argument(
            "* GenerateContentBatch.input_config.file_name: a file name such as files/abc123 "
            "is required\n"
        )
    return name


def create_batch(handler: GeminiRequestHandler, model_id: str, _: Query) -> None:
    """``POST /{version}/models/{model}:batchGenerateContent``: record the batch, start it
    and answer its operation (``BATCH_STATE_PENDING``)."""
    state = handler.state
    payload = handler.read_json()
    if not isinstance(payload, dict):
        raise invalid_argument("Invalid JSON payload received. Expected an object.")
    _check_fields(payload, frozenset({"batch"}), "")
    batch = payload.get("batch")
    if not isinstance(batch, dict):
        raise invalid_argument("* BatchGenerateContentRequest.batch: batch is required\n")
    _check_fields(batch, BATCH_FIELDS, "batch")
    if not model_id.startswith(state.model_prefixes):
        raise not_found(
            f"models/{model_id} is not found for API version {_version(handler)}, or is not "
            "supported for batchGenerateContent. Call ListModels to see the list of available "
            "models and their supported methods."
        )
    input_file = _input_file(batch)
    stored = state.files.get(input_file.removeprefix("files/"))
    if stored is None or not stored.available():
        raise file_not_found(input_file.removeprefix("files/"))
    display_name = field(batch, "displayName", "display_name")
    priority = batch.get("priority")
    faults = state.faults()
    if faults.take_create_insufficient_quota():
        raise rate_limited(QUOTA_MESSAGE)
    if faults.take_create_rate_limit():
        raise rate_limited()
    if faults.take_create_reject():
        raise invalid_argument("Request contains an invalid argument.")
    record = state.batches.create(
        model=f"models/{model_id}",
        display_name=str(display_name) if display_name is not None else None,
        input_file=input_file,
        priority=int(priority) if isinstance(priority, int | str) and priority else None,
        outcome=faults.take_batch_outcome(),
    )
    state.stats.record_batch({"display_name": record.display_name or "", "model": record.model})
    answer = state.batches.operation(record)
    state.worker.submit(record)
    if faults.take_create_drop_connection():
        raise DropConnection
    if faults.create_response_delay > 0:
        time.sleep(faults.create_response_delay)
    handler.send_json(200, answer)


def get_batch(handler: GeminiRequestHandler, batch_id: str, _: Query) -> None:
    """``GET /{version}/batches/{name}``: the batch's operation."""
    batches = handler.state.batches
    handler.send_json(200, batches.operation(batches.get(batch_id)))


def list_batches(handler: GeminiRequestHandler, _: str, query: Query) -> None:
    """``GET /{version}/batches``: ``{"operations": [...], "nextPageToken": ...}``, newest
    first (``pageSize`` defaults to 10, at most 100)."""
    operations, token = handler.state.batches.page(query)
    body: dict[str, Any] = {}
    if operations:
        body["operations"] = operations
    if token:
        body["nextPageToken"] = token
    handler.send_json(200, body)


def cancel_batch(handler: GeminiRequestHandler, batch_id: str, _: Query) -> None:
    """``POST /{version}/batches/{name}:cancel``: stop the batch; answers ``{}``. It ends
    ``BATCH_STATE_CANCELLED`` (after ``phase_seconds``) with the lines answered so far."""
    state = handler.state
    batch = state.batches.get(batch_id)
    if batch.state in TERMINAL_STATES:
        raise failed_precondition(f"Batch {batch.name} has already finished ({batch.state}).")
    state.worker.cancel(batch_id)
    handler.send_json(200, {})


def delete_batch(handler: GeminiRequestHandler, batch_id: str, _: Query) -> None:
    """``DELETE /{version}/batches/{name}``: stop the batch and forget it; answers ``{}``."""
    state = handler.state
    state.batches.delete(batch_id)
    state.worker.forget(batch_id)
    handler.send_json(200, {})
