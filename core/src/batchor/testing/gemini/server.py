"""The Gemini emulator's HTTP layer: a threading HTTP/1.1 server, auth and fault injection.

Requests are authenticated as the Gemini API does: an ``x-goog-api-key`` header or a ``key``
query parameter; the byte transfers of a resumable upload carry neither (the ``upload_id`` in
their URL is their credential).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qs, urlsplit

from batchor.testing.emulator.bodies import BodyError, BodyReader
from batchor.testing.emulator.limits import EmulatorLimits
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.gemini import routes
from batchor.testing.gemini.batches import GeminiBatchStore
from batchor.testing.gemini.errors import (
    DropConnection,
    GoogleApiError,
    api_key_invalid,
    api_key_missing,
    internal_error,
    invalid_argument,
    not_found,
    rate_limited,
    unavailable,
)
from batchor.testing.gemini.faults import GeminiFaults
from batchor.testing.gemini.files import GeminiFileStore
from batchor.testing.gemini.sync import GeminiSyncService
from batchor.testing.gemini.worker import GeminiWorker
from batchor.testing.loopback import LoopbackHTTPServer

_log = logging.getLogger(__name__)
_JSON = "application/json; charset=UTF-8"


@dataclass
class GeminiState:
    """Everything request handlers need, shared by all connections."""

    files: GeminiFileStore
    batches: GeminiBatchStore
    worker: GeminiWorker
    stats: EmulatorStats
    limits: EmulatorLimits
    faults: Callable[[], GeminiFaults]
    api_key: str | None
    """The only accepted key, or ``None`` to accept any non-empty key."""
    model_prefixes: tuple[str, ...]
    """Model ids (without ``models/``) start with one of these, or the create is a 404."""
    sync: GeminiSyncService
    """Answers the synchronous ``generateContent`` endpoint."""


class GeminiHTTPServer(LoopbackHTTPServer):
    """The Gemini emulator's server: its handlers share ``state``."""

    def __init__(self, address: tuple[str, int], state: GeminiState) -> None:
        """Bind to ``address`` and serve the emulator described by ``state``."""
        self.gemini = state
        super().__init__(address, GeminiRequestHandler)


def _route_error(fault: str) -> GoogleApiError:
    if fault == "rate_limit":
        return rate_limited()
    if fault == "unavailable":
        return unavailable()
    return internal_error()


class GeminiRequestHandler(BaseHTTPRequestHandler):
    """Serves one connection: routes each request, authenticates it, renders its errors."""

    protocol_version = "HTTP/1.1"
    # Replies go out at once: with Nagle's algorithm on, a keep-alive client waits ~40 ms for
    # the delayed ACK of every reply written in two parts (headers, then body).
    disable_nagle_algorithm = True
    server_version = "batchor-emulator"
    sys_version = ""
    server: GeminiHTTPServer
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
    def state(self) -> GeminiState:
        """The emulator state behind the server."""
        return self.server.gemini

    @property
    def origin(self) -> str:
        """The scheme and authority the client reached us at (for URLs in responses)."""
        host = self.headers.get("Host")
        if not host:
            address, port = str(self.server.server_address[0]), self.server.server_address[1]
            host = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
        return f"http://{host}"

    def _handle(self, method: str) -> None:
        state = self.state
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        match = routes.resolve(method, split.path.rstrip("/") or "/", query)
        state.stats.record_call(method, match.template)
        try:
            self.body = self._body_reader()
        except BodyError as exc:
            self.body = BodyReader(cast(BinaryIO, self.rfile), None, chunked=False)
            self.close_connection = True
            self.send_json(400, invalid_argument(str(exc)).body())
            return
        try:
            faults = state.faults()
            if faults.latency > 0:
                time.sleep(faults.latency)
            if faults.take_http_server_error():
                raise internal_error()
            fault = faults.take_route_fault(method, match.template)
            if fault is not None:
                raise _route_error(fault)
            if not match.keyless:
                self._authenticate(query)
            if match.handler is None:
                raise not_found(f"The requested URL {split.path} was not found on this server.")
            match.handler(self, match.param, query)
        except GoogleApiError as exc:
            self.send_json(exc.http_status, exc.body(), exc.headers)
        except DropConnection:
            self._finish_body()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
        except BodyError as exc:
            self.close_connection = True
            self.send_json(400, invalid_argument(f"Malformed request body: {exc}").body())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            _log.exception("gemini emulator failed to serve %s %s", method, self.path)
            self.close_connection = True
            self.send_json(500, internal_error().body())

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

    def _authenticate(self, query: Mapping[str, list[str]]) -> None:
        key = self.headers.get("x-goog-api-key")
        if key is None and query.get("key"):
            key = query["key"][-1]
        if key is None or not key.strip():
            raise api_key_missing()
        expected = self.state.api_key
        if expected is not None and key.strip() != expected:
            raise api_key_invalid()

    def read_json(self) -> Any:
        """The request body parsed as JSON (400 if it is not)."""
        raw = self.body.read_all(self.state.limits.max_json_body_bytes)
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise invalid_argument(f"Invalid JSON payload received. {exc}.") from exc

    def _finish_body(self) -> None:
        try:
            self.body.drain()
        except (BodyError, OSError):
            self.close_connection = True

    def _start(
        self, status: int, content_type: str | None, length: int, headers: Mapping[str, str]
    ) -> None:
        self._finish_body()
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("X-Request-Id", os.urandom(8).hex())
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def send_json(
        self, status: int, payload: Any, headers: Mapping[str, str] | None = None
    ) -> None:
        """Answer with a JSON body (indented, as Google's front end does)."""
        data = json.dumps(payload, indent=2).encode("utf-8")
        try:
            self._start(status, _JSON, len(data), headers or {})
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def send_empty(self, status: int, headers: Mapping[str, str]) -> None:
        """Answer with headers only."""
        try:
            self._start(status, None, 0, headers)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def send_file(self, path: os.PathLike[str], content_type: str) -> None:
        """Answer with the bytes of the file at ``path``, streamed from disk (``sendfile``)."""
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self._start(200, content_type, size, {})
            self.wfile.flush()
            self.connection.sendfile(handle, count=size)
