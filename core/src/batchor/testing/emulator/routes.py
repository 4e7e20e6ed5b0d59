"""Handlers of the emulated Files and Batches endpoints, one function per route."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchor.testing.emulator.batches import parse_batch_request
from batchor.testing.emulator.errors import ApiError, bad_request, not_found
from batchor.testing.emulator.files import FILE_PURPOSES, StoredFile
from batchor.testing.emulator.multipart import MultipartReader, boundary_from_content_type

if TYPE_CHECKING:
    from batchor.testing.emulator.server import RequestHandler

Query = Mapping[str, list[str]]
"""Parsed query-string parameters."""
_MAX_FIELD_BYTES = 4096


def _param(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


def _limit(query: Query, default: int, maximum: int) -> int:
    raw = _param(query, "limit")
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= maximum:
        raise bad_request(
            f"Invalid 'limit': expected an integer between 1 and {maximum}.",
            param="limit",
            code="invalid_value",
        )
    return value


def _listing(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": has_more,
    }


def _stored(handler: RequestHandler, file_id: str) -> StoredFile:
    """The file to retrieve or read: 404 if unknown or not available yet (a batch's output)."""
    stored = handler.state.files.get(file_id)
    if stored is None or not stored.available():
        raise not_found(f"No such File object: {file_id}")
    return stored


# -- files --------------------------------------------------------------------------------------


def _receive_upload(handler: RequestHandler) -> tuple[Path | None, str, str | None, int]:
    """Stream the multipart body: the ``file`` part to disk, small fields to memory."""
    boundary = boundary_from_content_type(handler.headers.get("Content-Type", ""))
    reader = MultipartReader(handler.body.read, boundary)
    limit = handler.state.limits.max_upload_bytes
    path: Path | None = None
    filename = "file"
    purpose: str | None = None
    size = 0
    try:
        while (part := reader.next_part()) is not None:
            if part.name == "file" and path is None:
                path = handler.state.files.scratch_path("upload")
                filename = part.filename or filename
                with path.open("wb") as out:
                    for chunk in reader.iter_body():
                        size += len(chunk)
                        if size <= limit:
                            out.write(chunk)
            elif part.name == "purpose":
                value = b""
                for chunk in reader.iter_body():
                    value = (value + chunk)[:_MAX_FIELD_BYTES]
                purpose = value.decode("utf-8", "replace").strip()
    except BaseException:
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    return path, filename, purpose, size


def create_file(handler: RequestHandler, _: str, __: Query) -> None:
    """``POST /v1/files``: store an uploaded file on disk."""
    path, filename, purpose, size = _receive_upload(handler)
    limit = handler.state.limits.max_upload_bytes
    try:
        if path is None:
            raise bad_request(
                "Missing required parameter: 'file'.",
                param="file",
                code="missing_required_parameter",
            )
        if purpose is None:
            raise bad_request(
                "Missing required parameter: 'purpose'.",
                param="purpose",
                code="missing_required_parameter",
            )
        if purpose not in FILE_PURPOSES:
            raise bad_request(
                f"Invalid value for 'purpose': '{purpose}'. Supported values are: "
                + ", ".join(f"'{p}'" for p in sorted(FILE_PURPOSES))
                + ".",
                param="purpose",
                code="invalid_value",
            )
        if size > limit:
            raise bad_request(
                f"File is too large: {size} bytes. The maximum file size is {limit} bytes.",
                param="file",
                code="file_too_large",
            )
    except ApiError:
        if path is not None:
            path.unlink(missing_ok=True)
        raise
    assert path is not None
    stored = handler.state.files.add(path, filename, purpose)
    handler.send_json(200, stored.to_dict())


def list_files(handler: RequestHandler, _: str, query: Query) -> None:
    """``GET /v1/files``: page through files, newest first by default."""
    order = _param(query, "order") or "desc"
    if order not in ("asc", "desc"):
        raise bad_request(
            "Invalid 'order': expected 'asc' or 'desc'.", param="order", code="invalid_value"
        )
    files, has_more = handler.state.files.page(
        purpose=_param(query, "purpose"),
        limit=_limit(query, 10_000, 10_000),
        after=_param(query, "after"),
        order=order,
    )
    handler.send_json(200, _listing([f.to_dict() for f in files], has_more))


def retrieve_file(handler: RequestHandler, file_id: str, _: Query) -> None:
    """``GET /v1/files/{id}``."""
    handler.send_json(200, _stored(handler, file_id).to_dict())


def delete_file(handler: RequestHandler, file_id: str, _: Query) -> None:
    """``DELETE /v1/files/{id}``."""
    if not handler.state.files.delete(file_id):
        raise not_found(f"No such File object: {file_id}")
    handler.send_json(200, {"id": file_id, "object": "file", "deleted": True})


def file_content(handler: RequestHandler, file_id: str, _: Query) -> None:
    """``GET /v1/files/{id}/content``: stream the file's bytes from disk."""
    stored = _stored(handler, file_id)
    try:
        handler.send_file(stored.path, cut=handler.state.faults().take_content_cut())
    except FileNotFoundError as exc:  # deleted while we were looking
        raise not_found(f"No such File object: {file_id}") from exc


# -- batches ------------------------------------------------------------------------------------


def create_batch(handler: RequestHandler, _: str, __: Query) -> None:
    """``POST /v1/batches``: record the batch, hand it to the worker, answer ``validating``."""
    state = handler.state
    payload = handler.read_json()
    faults = state.faults()
    if faults.take_create_insufficient_quota():
        raise ApiError(
            429,
            "You exceeded your current quota, please check your plan and billing details.",
            type="insufficient_quota",
            code="insufficient_quota",
        )
    if faults.take_create_rate_limit():
        raise ApiError(
            429,
            "Rate limit reached for batch creation. Please try again later.",
            type="rate_limit_error",
            code="rate_limit_exceeded",
            headers={"retry-after": "0"},
        )
    if faults.take_create_reject():
        raise bad_request(
            "The batch was refused: its input file is not a valid batch input.",
            param="input_file_id",
            code="invalid_batch_input",
        )
    request = parse_batch_request(payload, state.files)
    record = state.batches.create(request, faults.take_batch_outcome())
    state.stats.record_batch(request.metadata)
    answer = state.batches.snapshot(record)
    state.worker.submit(record)
    delay = faults.create_response_delay
    if delay > 0:
        time.sleep(delay)
    handler.send_json(200, answer)


def list_batches(handler: RequestHandler, _: str, query: Query) -> None:
    """``GET /v1/batches``: page through batches, newest first."""
    data, has_more = handler.state.batches.page(
        after=_param(query, "after"), limit=_limit(query, 20, 100)
    )
    handler.send_json(200, _listing(data, has_more))


def retrieve_batch(handler: RequestHandler, batch_id: str, _: Query) -> None:
    """``GET /v1/batches/{id}``."""
    batches = handler.state.batches
    handler.send_json(200, batches.snapshot(batches.get(batch_id)))


def cancel_batch(handler: RequestHandler, batch_id: str, _: Query) -> None:
    """``POST /v1/batches/{id}/cancel``: move the batch to ``cancelling``."""
    state = handler.state
    record, newly = state.batches.request_cancel(batch_id)
    if newly:
        state.worker.cancel(batch_id)
    handler.send_json(200, state.batches.snapshot(record))
