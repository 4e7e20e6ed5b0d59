"""The emulator's HTTP layer: a threading HTTP/1.1 server, routing, auth and fault injection.

Every endpoint is served in three URL shapes at once: OpenAI's ``/v1/...``, Azure OpenAI's
classic ``/openai/...?api-version=...`` and Azure OpenAI's v1 ``/openai/v1/...``.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qs, unquote, urlsplit

from batchor.testing.emulator import routes
from batchor.testing.emulator.batches import BatchStore
from batchor.testing.emulator.bodies import BodyError, BodyReader
from batchor.testing.emulator.errors import (
    ApiError,
    azure_invalid_key,
    azure_invalid_token,
    azure_missing_key,
    azure_resource_not_found,
    azure_unsupported_api_version,
    server_error,
)
from batchor.testing.emulator.faults import EmulatorFaults
from batchor.testing.emulator.files import FileStore
from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.multipart import MultipartError
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.emulator.sync import (
    SyncService,
    create_chat_completion,
    create_embeddings,
    create_response,
)
from batchor.testing.emulator.worker import BatchWorker
from batchor.testing.loopback import LoopbackHTTPServer

_log = logging.getLogger(__name__)


@dataclass
class ServerState:
    """Everything request handlers need, shared by all connections."""

    files: FileStore
    batches: BatchStore
    worker: BatchWorker
    stats: EmulatorStats
    limits: EmulatorLimits
    faults: Callable[[], EmulatorFaults]
    api_key: str | None
    """The only accepted key, or ``None`` to accept any (bearer token or Azure ``api-key``)."""
    sync: SyncService | None = None
    """Answers the synchronous endpoints (404 without one)."""


Handler = Callable[["RequestHandler", str, Mapping[str, list[str]]], None]
"""A route handler: called with the request handler, the path id and the query."""

OPENAI = "openai"
"""The OpenAI URL shape: ``/v1/...``, ``Authorization: Bearer KEY``."""
AZURE = "azure"
"""The Azure OpenAI URL shape: ``/openai/...?api-version=...``, an ``api-key`` header (or an
Entra ID ``Authorization: Bearer`` token)."""
AZURE_V1 = "azure-v1"
"""Azure OpenAI's v1 API: ``/openai/v1/...`` with Azure's auth, ``api-version`` optional."""

_ENDPOINTS: list[tuple[str, str, Handler]] = [
    ("POST", "/files", routes.create_file),
    ("GET", "/files", routes.list_files),
    ("GET", "/files/{id}", routes.retrieve_file),
    ("DELETE", "/files/{id}", routes.delete_file),
    ("GET", "/files/{id}/content", routes.file_content),
    ("POST", "/batches", routes.create_batch),
    ("GET", "/batches", routes.list_batches),
    ("GET", "/batches/{id}", routes.retrieve_batch),
    ("POST", "/batches/{id}/cancel", routes.cancel_batch),
]
_PREFIXES = [("/v1", OPENAI), ("/openai", AZURE), ("/openai/v1", AZURE_V1)]
_SYNC_ENDPOINTS: list[tuple[str, str, Handler]] = [
    ("POST", "/responses", create_response),
    ("POST", "/chat/completions", create_chat_completion),
    ("POST", "/embeddings", create_embeddings),
]
"""Served in OpenAI's and Azure's v1 URL shapes (classic Azure names a deployment instead)."""
_SYNC_PREFIXES = [("/v1", OPENAI), ("/openai/v1", AZURE_V1)]


@dataclass(frozen=True)
class Route:
    """One served endpoint in one URL shape."""

    method: str
    template: str
    pattern: re.Pattern[str]
    handler: Handler
    dialect: str


@dataclass(frozen=True)
class RouteMatch:
    """What a request path resolved to."""

    template: str
    """The route template (e.g. ``/openai/batches/{id}``), or the literal path if unknown."""
    handler: Handler | None
    """``None`` if no route serves this method and path."""
    object_id: str
    """The ``{id}`` in the path, or ``""``."""
    dialect: str
    """`OPENAI`, `AZURE` or `AZURE_V1`: how to authenticate and render gateway errors."""


_ROUTE_TABLE = [
    Route(
        method,
        prefix + suffix,
        re.compile("^" + re.escape(prefix + suffix).replace(r"\{id\}", "([^/]+)") + "$"),
        handler,
        dialect,
    )
    for prefixes, endpoints in ((_PREFIXES, _ENDPOINTS), (_SYNC_PREFIXES, _SYNC_ENDPOINTS))
    for prefix, dialect in prefixes
    for method, suffix, handler in endpoints
]


def dialect_of(path: str) -> str:
    """The URL shape a path is in, judged by its prefix (for paths no route matches)."""
    if path == "/openai/v1" or path.startswith("/openai/v1/"):
        return AZURE_V1
    if path == "/openai" or path.startswith("/openai/"):
        return AZURE
    return OPENAI


def match_route(method: str, path: str) -> RouteMatch:
    """Resolve a request to its route (or to none, keeping the path's dialect)."""
    template_for_path: str | None = None
    for route in _ROUTE_TABLE:
        found = route.pattern.match(path)
        if found is None:
            continue
        object_id = unquote(found.group(1)) if found.groups() else ""
        if route.method == method:
            return RouteMatch(route.template, route.handler, object_id, route.dialect)
        template_for_path = template_for_path or route.template
    return RouteMatch(template_for_path or path, None, "", dialect_of(path))


_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")


def check_api_version(dialect: str, query: Mapping[str, list[str]]) -> None:
    """Azure's ``api-version`` rule: required, and dated, on the classic ``/openai/...`` shape.

    A missing one gets Azure's 404 ``Resource not found``; a malformed one its 400
    ``API version not supported``. The v1 shape (``/openai/v1/...``) needs none.
    """
    if dialect != AZURE:
        return
    values = query.get("api-version")
    if not values:
        raise azure_resource_not_found()
    if _API_VERSION.match(values[-1]) is None:
        raise azure_unsupported_api_version()


class EmulatorHTTPServer(LoopbackHTTPServer):
    """The OpenAI emulator's server: its handlers share ``state``."""

    def __init__(self, address: tuple[str, int], state: ServerState) -> None:
        """Bind to ``address`` and serve the emulator described by ``state``."""
        self.state = state
        super().__init__(address, RequestHandler)


class RequestHandler(BaseHTTPRequestHandler):
    """Serves one connection: routes each request, authenticates it and renders its errors."""

    protocol_version = "HTTP/1.1"
    # Replies go out at once: with Nagle's algorithm on, a keep-alive client waits ~40 ms for
    # the delayed ACK of every reply written in two parts (headers, then body).
    disable_nagle_algorithm = True
    server_version = "batchor-emulator"
    sys_version = ""
    server: EmulatorHTTPServer
    body: BodyReader
    dialect: str = OPENAI
    """The URL shape of the request being served (`OPENAI`, `AZURE` or `AZURE_V1`)."""

    def log_message(self, format: str, *args: Any) -> None:
        """Keep the console quiet; log at debug level instead."""
        _log.debug("%s " + format, self.address_string(), *args)

    def do_GET(self) -> None:
        """Serve a GET request."""
        self._handle("GET")

    def do_POST(self) -> None:
        """Serve a POST request."""
        self._handle("POST")

    def do_DELETE(self) -> None:
        """Serve a DELETE request."""
        self._handle("DELETE")

    @property
    def state(self) -> ServerState:
        """The emulator state behind the server."""
        return self.server.state

    def _handle(self, method: str) -> None:
        state = self.state
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        match = match_route(method, path)
        self.dialect = match.dialect
        state.stats.record_call(method, match.template)
        try:
            self.body = self._body_reader()
        except BodyError as exc:
            self.body = BodyReader(cast(BinaryIO, self.rfile), None, chunked=False)
            self.close_connection = True
            self.send_json(400, ApiError(400, str(exc)).body())
            return
        try:
            faults = state.faults()
            if faults.latency > 0:
                time.sleep(faults.latency)
            if faults.take_http_server_error() or faults.take_route_server_error(
                method, match.template
            ):
                raise server_error()
            query = parse_qs(split.query)
            self._authenticate()
            check_api_version(match.dialect, query)
            if match.handler is None:
                if match.dialect != OPENAI:
                    raise azure_resource_not_found()
                raise ApiError(404, f"Invalid URL ({method} {split.path})")
            match.handler(self, match.object_id, query)
        except ApiError as exc:
            self.send_json(exc.status, exc.body(), exc.headers)
        except (BodyError, MultipartError) as exc:
            self.close_connection = True
            self.send_json(400, ApiError(400, f"Malformed request body: {exc}").body())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            _log.exception("emulator failed to serve %s %s", method, self.path)
            self.close_connection = True
            self.send_json(500, server_error().body())

    def _body_reader(self) -> BodyReader:
        chunked = "chunked" in self.headers.get("Transfer-Encoding", "").lower()
        length_header = self.headers.get("Content-Length")
        length: int | None = None
        if length_header is not None and not chunked:
            try:
                length = int(length_header)
            except ValueError as exc:
                raise BodyError("invalid Content-Length") from exc
        return BodyReader(cast(BinaryIO, self.rfile), length, chunked)

    def _authenticate(self) -> None:
        if self.dialect == OPENAI:
            self._authenticate_openai()
        else:
            self._authenticate_azure()

    def _authenticate_openai(self) -> None:
        header = self.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401,
                "You didn't provide an API key. You need to provide your API key in an "
                "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
            )
        expected = self.state.api_key
        if expected is not None and token != expected:
            raise ApiError(
                401,
                f"Incorrect API key provided: {token[:3]}***{token[-4:]}.",
                code="invalid_api_key",
            )

    def _authenticate_azure(self) -> None:
        """An ``api-key`` header, else an ``Authorization: Bearer`` (Entra ID) token.

        Without an emulator `api_key` any non-empty credential passes; with one, the key (or
        the bearer token) must equal it.
        """
        expected = self.state.api_key
        key = self.headers.get("api-key")
        if key is not None:
            if not key.strip() or (expected is not None and key.strip() != expected):
                raise azure_invalid_key()
            return
        scheme, _, token = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer":
            raise azure_missing_key()
        token = token.strip()
        if not token or (expected is not None and token != expected):
            raise azure_invalid_token()

    def read_json(self) -> Any:
        """The request body parsed as JSON (400 if it is not)."""
        raw = self.body.read_all(self.state.limits.max_json_body_bytes)
        try:
            return json.loads(raw) if raw.strip() else {}
        except ValueError as exc:
            raise ApiError(400, "We could not parse the JSON body of your request.") from exc

    def _finish_body(self) -> None:
        try:
            self.body.drain()
        except (BodyError, OSError):
            self.close_connection = True

    def _start(
        self, status: int, content_type: str, length: int, headers: Mapping[str, str]
    ) -> None:
        self._finish_body()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("x-request-id", "req_" + os.urandom(16).hex())
        if self.dialect != OPENAI:
            self.send_header("apim-request-id", str(uuid.uuid4()))
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer with a JSON body."""
        data = json.dumps(payload).encode("utf-8")
        try:
            self._start(status, "application/json", len(data), headers or {})
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def send_file(self, path: os.PathLike[str], *, cut: bool = False) -> None:
        """Answer with the bytes of the file at ``path``, streamed from disk (``sendfile``);
        with ``cut``, only the first half of them, then the connection is closed."""
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self._start(200, "application/octet-stream", size, {})
            self.wfile.flush()
            self.connection.sendfile(handle, count=size // 2 if cut else size)
        if cut:
            self.close_connection = True
