"""The emulator's HTTP layer: a threading HTTP/1.1 server, routing, auth and fault injection."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qs, unquote, urlsplit

from batchor.testing.emulator import routes
from batchor.testing.emulator.batches import BatchStore
from batchor.testing.emulator.bodies import BodyError, BodyReader
from batchor.testing.emulator.errors import ApiError, server_error
from batchor.testing.emulator.faults import EmulatorFaults
from batchor.testing.emulator.files import FileStore
from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.multipart import MultipartError
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.emulator.worker import BatchWorker

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
    """The only accepted key, or ``None`` to accept any bearer token."""


Handler = Callable[["RequestHandler", str, Mapping[str, list[str]]], None]
"""A route handler: called with the request handler, the path id and the query."""

_ROUTES: list[tuple[str, str, Handler]] = [
    ("POST", "/v1/files", routes.create_file),
    ("GET", "/v1/files", routes.list_files),
    ("GET", "/v1/files/{id}", routes.retrieve_file),
    ("DELETE", "/v1/files/{id}", routes.delete_file),
    ("GET", "/v1/files/{id}/content", routes.file_content),
    ("POST", "/v1/batches", routes.create_batch),
    ("GET", "/v1/batches", routes.list_batches),
    ("GET", "/v1/batches/{id}", routes.retrieve_batch),
    ("POST", "/v1/batches/{id}/cancel", routes.cancel_batch),
]
_PATTERNS = [
    (method, template, re.compile("^" + template.replace("{id}", "([^/]+)") + "$"), handler)
    for method, template, handler in _ROUTES
]


def match_route(method: str, path: str) -> tuple[str, Handler | None, str]:
    """``(route template or path, handler or None, path id)`` for a request."""
    template_for_path: str | None = None
    for route_method, template, pattern, handler in _PATTERNS:
        found = pattern.match(path)
        if found is None:
            continue
        object_id = unquote(found.group(1)) if found.groups() else ""
        if route_method == method:
            return template, handler, object_id
        template_for_path = template_for_path or template
    return template_for_path or path, None, ""


class EmulatorHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that can drop every open connection when it stops."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], state: ServerState) -> None:
        """Bind to ``address`` and serve the emulator described by ``state``."""
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.state = state
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, RequestHandler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Track the connection, then serve it on its own thread."""
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Forget the connection and close it."""
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down every open (e.g. idle keep-alive) connection."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class RequestHandler(BaseHTTPRequestHandler):
    """Serves one connection: routes each request and renders errors the OpenAI way."""

    protocol_version = "HTTP/1.1"
    server_version = "batchor-emulator"
    sys_version = ""
    server: EmulatorHTTPServer
    body: BodyReader

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
        route, handler, object_id = match_route(method, path)
        state.stats.record_call(method, route)
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
            if faults.take_http_server_error() or faults.take_route_server_error(method, route):
                raise server_error()
            self._authenticate()
            if handler is None:
                raise ApiError(404, f"Invalid URL ({method} {split.path})")
            handler(self, object_id, parse_qs(split.query))
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

    def send_file(self, path: os.PathLike[str]) -> None:
        """Answer with the bytes of the file at ``path``, streamed from disk (``sendfile``)."""
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self._start(200, "application/octet-stream", size, {})
            self.wfile.flush()
            self.connection.sendfile(handle, count=size)
