"""Handlers of the emulated Files API: resumable uploads, get, list, delete and download."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from batchor.testing.gemini.errors import (
    GoogleApiError,
    file_not_found,
    invalid_argument,
    not_found,
)
from batchor.testing.gemini.files import GeminiFile, UploadSession
from batchor.testing.gemini.wire import field, page

if TYPE_CHECKING:
    from batchor.testing.gemini.server import GeminiRequestHandler

Query = Mapping[str, list[str]]
"""Parsed query-string parameters."""
CHUNK_GRANULARITY = 8 * 1024 * 1024
"""What ``X-Goog-Upload-Chunk-Granularity`` advertises (google-genai sends 8 MiB chunks)."""
_READ = 1 << 20
_MAX_DISPLAY_NAME = 512


def _stored(handler: GeminiRequestHandler, file_id: str) -> GeminiFile:
    """The file to serve: 403 if unknown or not available yet (a batch's fresh output)."""
    stored = handler.state.files.get(file_id)
    if stored is None or not stored.available():
        raise file_not_found(file_id)
    return stored


def _int_header(handler: GeminiRequestHandler, name: str) -> int | None:
    raw = handler.headers.get(name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError as exc:
        raise invalid_argument(f"Invalid {name} header: {raw!r}.") from exc


# -- uploads ------------------------------------------------------------------------------------


def start_upload(handler: GeminiRequestHandler, _: str, __: Query) -> None:
    """``POST /upload/{version}/files`` with ``X-Goog-Upload-Command: start``: open a session
    and answer its upload URL in ``X-Goog-Upload-URL``."""
    state = handler.state
    if handler.headers.get("X-Goog-Upload-Protocol", "").lower() != "resumable":
        raise invalid_argument(
            "The emulator serves resumable uploads only (X-Goog-Upload-Protocol: resumable)."
        )
    if handler.headers.get("X-Goog-Upload-Command", "").strip().lower() != "start":
        raise invalid_argument("A resumable upload starts with X-Goog-Upload-Command: start.")
    payload = handler.read_json()
    meta: Any = payload.get("file") if isinstance(payload, dict) else None
    meta = meta if isinstance(meta, dict) else {}
    declared = _int_header(handler, "X-Goog-Upload-Header-Content-Length")
    if declared is None:
        size = field(meta, "sizeBytes", "size_bytes")
        declared = int(size) if isinstance(size, int | str) and str(size).isdigit() else None
    limit = state.limits.max_upload_bytes
    if declared is not None and declared > limit:
        raise invalid_argument(f"Request file size exceeds the {limit} byte limit.")
    display_name = field(meta, "displayName", "display_name")
    if display_name is not None and len(str(display_name)) > _MAX_DISPLAY_NAME:
        raise invalid_argument("display_name must be at most 512 characters.")
    mime = (
        handler.headers.get("X-Goog-Upload-Header-Content-Type")
        or field(meta, "mimeType", "mime_type")
        or "application/octet-stream"
    )
    name = meta.get("name")
    session = state.files.start_upload(
        str(name) if name else None,
        str(display_name) if display_name is not None else None,
        str(mime),
        declared,
    )
    path = urlsplit(handler.path).path
    url = f"{handler.origin}{path}?upload_id={session.id}&upload_protocol=resumable"
    handler.send_empty(
        200,
        {
            "X-Goog-Upload-Status": "active",
            "X-Goog-Upload-URL": url,
            "X-Goog-Upload-Control-URL": url,
            "X-Goog-Upload-Chunk-Granularity": str(CHUNK_GRANULARITY),
        },
    )


def _final_error(error: GoogleApiError) -> GoogleApiError:
    error.headers["X-Goog-Upload-Status"] = "final"
    return error


def upload_bytes(handler: GeminiRequestHandler, _: str, query: Query) -> None:
    """``POST`` to an upload URL: ``upload`` appends the body at ``X-Goog-Upload-Offset``,
    ``finalize`` then creates the file (``{"file": File}``); also ``query`` and ``cancel``."""
    files = handler.state.files
    session = files.upload(query["upload_id"][-1])
    if session is None:
        raise not_found("No upload session with this upload_id.")
    command = handler.headers.get("X-Goog-Upload-Command", "")
    commands = {part.strip().lower() for part in command.split(",") if part.strip()}
    with session.lock:
        if "cancel" in commands:
            files.end_upload(session, keep=False)
            handler.send_empty(200, {"X-Goog-Upload-Status": "cancelled"})
            return
        if "query" in commands:
            handler.send_empty(
                200,
                {
                    "X-Goog-Upload-Status": "active",
                    "X-Goog-Upload-Size-Received": str(session.received),
                },
            )
            return
        if "upload" not in commands and "finalize" not in commands:
            raise invalid_argument(f"Unsupported X-Goog-Upload-Command: {command!r}.")
        offset = _int_header(handler, "X-Goog-Upload-Offset")
        if offset is not None and offset != session.received:
            raise GoogleApiError(
                400,
                "INVALID_ARGUMENT",
                f"Upload offset {offset} does not match the {session.received} bytes received.",
                headers={
                    "X-Goog-Upload-Status": "active",
                    "X-Goog-Upload-Size-Received": str(session.received),
                },
            )
        _append(handler, session)
        if "finalize" not in commands:
            handler.send_empty(
                200,
                {
                    "X-Goog-Upload-Status": "active",
                    "X-Goog-Upload-Size-Received": str(session.received),
                },
            )
            return
        if session.declared_size is not None and session.received != session.declared_size:
            files.end_upload(session, keep=False)
            raise _final_error(
                invalid_argument(
                    f"Upload finalized with {session.received} bytes, but "
                    f"{session.declared_size} were declared."
                )
            )
        stored = files.end_upload(session, keep=True)
    assert stored is not None
    handler.send_json(
        200, {"file": stored.to_dict(handler.origin)}, {"X-Goog-Upload-Status": "final"}
    )


def _append(handler: GeminiRequestHandler, session: UploadSession) -> None:
    """Stream the request body onto the end of the session's file."""
    limit = handler.state.limits.max_upload_bytes
    with session.path.open("ab") as out:
        while chunk := handler.body.read(_READ):
            session.received += len(chunk)
            if session.received > limit:
                handler.state.files.end_upload(session, keep=False)
                raise _final_error(
                    invalid_argument(f"Request file size exceeds the {limit} byte limit.")
                )
            session.hasher.update(chunk)
            out.write(chunk)


# -- files --------------------------------------------------------------------------------------


def list_files(handler: GeminiRequestHandler, _: str, query: Query) -> None:
    """``GET /{version}/files``: ``{"files": [...], "nextPageToken": ...}``, newest first."""
    files = [f for f in reversed(handler.state.files.all()) if f.available()]
    chunk, token = page([(f.seq, f) for f in files], query, default=10, maximum=100)
    body: dict[str, Any] = {}
    if chunk:
        body["files"] = [f.to_dict(handler.origin) for f in chunk]
    if token:
        body["nextPageToken"] = token
    handler.send_json(200, body)


def get_file(handler: GeminiRequestHandler, file_id: str, _: Query) -> None:
    """``GET /{version}/files/{name}``."""
    handler.send_json(200, _stored(handler, file_id).to_dict(handler.origin))


def delete_file(handler: GeminiRequestHandler, file_id: str, _: Query) -> None:
    """``DELETE /{version}/files/{name}``: answers ``{}``."""
    if not handler.state.files.delete(file_id):
        raise file_not_found(file_id)
    handler.send_json(200, {})


def download_file(handler: GeminiRequestHandler, file_id: str, query: Query) -> None:
    """``GET /{version}/files/{name}:download?alt=media``: stream a generated file's bytes."""
    if (query.get("alt") or [""])[-1] != "media":
        raise invalid_argument("Downloading a file needs the alt=media query parameter.")
    stored = _stored(handler, file_id)
    if stored.source != "GENERATED":
        raise invalid_argument(
            f"File files/{file_id} was uploaded; only generated files can be downloaded."
        )
    content_type = stored.mime_type if "/" in stored.mime_type else "application/octet-stream"
    try:
        handler.send_file(stored.path, content_type)
    except FileNotFoundError as exc:  # deleted while we were looking
        raise file_not_found(file_id) from exc
