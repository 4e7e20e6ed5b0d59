"""The emulated endpoints and how a request path resolves to one.

Each route template below is also its key in `EmulatorStats.calls` and in the route fault
knobs of `GeminiFaults`, with the API version written ``{version}`` (``v1``, ``v1beta`` and
``v1alpha`` are served alike: google-genai 1.x called ``v1beta``, newer releases call ``v1``).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from batchor.testing.gemini import batch_routes, file_routes, sync

if TYPE_CHECKING:
    from batchor.testing.gemini.server import GeminiRequestHandler

UPLOAD: Final = "/upload/{version}/files"
"""``POST``: start a resumable upload (``X-Goog-Upload-Command: start``)."""
UPLOAD_BYTES: Final = "/upload/{version}/files?upload_id"
"""``POST`` to the upload URL a start answered with: the file's bytes (``upload, finalize``)."""
FILES: Final = "/{version}/files"
"""``GET``: list files."""
FILE: Final = "/{version}/files/{name}"
"""``GET``/``DELETE`` one file."""
DOWNLOAD: Final = "/{version}/files/{name}:download"
"""``GET ...?alt=media``: a generated file's bytes (what google-genai 2+ calls)."""
DOWNLOAD_LEGACY: Final = "/download/{version}/files/{name}:download"
"""``GET ...?alt=media``: the same, at the path the REST docs and older SDKs use."""
CREATE: Final = "/{version}/models/{model}:batchGenerateContent"
"""``POST``: create a batch."""
GENERATE: Final = sync.GENERATE
"""``POST``: answer one ``GenerateContentRequest`` synchronously."""
BATCHES: Final = "/{version}/batches"
"""``GET``: list batches."""
BATCH: Final = "/{version}/batches/{name}"
"""``GET``/``DELETE`` one batch."""
CANCEL: Final = "/{version}/batches/{name}:cancel"
"""``POST``: cancel a batch."""

Handler = Callable[["GeminiRequestHandler", str, Mapping[str, list[str]]], None]
"""A route handler: called with the request handler, the path parameter and the query."""

_ENDPOINTS: list[tuple[str, str, Handler]] = [
    ("POST", UPLOAD, file_routes.start_upload),
    ("GET", FILES, file_routes.list_files),
    ("GET", FILE, file_routes.get_file),
    ("DELETE", FILE, file_routes.delete_file),
    ("GET", DOWNLOAD, file_routes.download_file),
    ("GET", DOWNLOAD_LEGACY, file_routes.download_file),
    ("POST", CREATE, batch_routes.create_batch),
    ("POST", GENERATE, sync.generate_content),
    ("GET", BATCHES, batch_routes.list_batches),
    ("GET", BATCH, batch_routes.get_batch),
    ("DELETE", BATCH, batch_routes.delete_batch),
    ("POST", CANCEL, batch_routes.cancel_batch),
]


def _pattern(template: str) -> re.Pattern[str]:
    body = re.escape(template)
    body = body.replace(r"\{version\}", "(?:v1|v1beta|v1alpha)")
    body = body.replace(r"\{name\}", "([^/:]+)").replace(r"\{model\}", "([^/:]+)")
    return re.compile("^" + body + "$")


_TABLE = [
    (method, template, _pattern(template), handler) for method, template, handler in _ENDPOINTS
]


@dataclass(frozen=True)
class RouteMatch:
    """What a request resolved to."""

    template: str
    """The route template, or the literal path if no route serves it."""
    handler: Handler | None
    """``None`` if no route serves this method and path."""
    param: str
    """The ``{name}`` or ``{model}`` in the path, or ``""``."""
    keyless: bool = False
    """Whether the request authenticates by its upload id instead of an API key."""


def resolve(method: str, path: str, query: Mapping[str, list[str]]) -> RouteMatch:
    """Resolve a request to its route (or to none)."""
    known_path: str | None = None
    for route_method, template, pattern, handler in _TABLE:
        found = pattern.match(path)
        if found is None:
            continue
        param = found.group(1) if found.groups() else ""
        if route_method == method:
            if template == UPLOAD and query.get("upload_id"):
                return RouteMatch(UPLOAD_BYTES, file_routes.upload_bytes, "", keyless=True)
            return RouteMatch(template, handler, param)
        known_path = known_path or template
    return RouteMatch(known_path or path, None, "")
