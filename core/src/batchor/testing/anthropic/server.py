"""The Anthropic emulator's HTTP layer: routing, authentication, fault injection and the
handlers of the Message Batches endpoints (the synchronous ``POST /v1/messages`` is
`sync`'s).

Errors are answered in Anthropic's shape (`errors`). A request is authenticated by an
``x-api-key`` header or an ``Authorization: Bearer`` token (the ``anthropic`` SDK sends its
``api_key`` either way, depending on its version), and must carry a dated
``anthropic-version`` header.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any, BinaryIO, cast
from urllib.parse import parse_qs, unquote, urlsplit

from batchor.testing.anthropic.batches import BatchStore, base62, read_create
from batchor.testing.anthropic.errors import (
    AnthropicApiError,
    api_error,
    authentication,
    invalid_request,
    not_found,
    request_too_large,
)
from batchor.testing.anthropic.faults import AnthropicEmulatorFaults
from batchor.testing.anthropic.limits import AnthropicEmulatorLimits
from batchor.testing.anthropic.sync import MESSAGES, AnthropicSyncService, create_message
from batchor.testing.anthropic.worker import AnthropicBatchWorker
from batchor.testing.emulator.bodies import BodyError, BodyReader
from batchor.testing.emulator.stats import EmulatorStats
from batchor.testing.loopback import LoopbackHTTPServer

_log = logging.getLogger(__name__)
_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
Query = Mapping[str, list[str]]


@dataclass
class AnthropicState:
    """Everything request handlers need, shared by all connections."""

    batches: BatchStore
    worker: AnthropicBatchWorker
    stats: EmulatorStats
    limits: AnthropicEmulatorLimits
    faults: Callable[[], AnthropicEmulatorFaults]
    api_key: str | None
    """The only accepted key, or ``None`` to accept any."""
    sync: AnthropicSyncService
    """Answers the synchronous ``POST /v1/messages``."""


class AnthropicHTTPServer(LoopbackHTTPServer):
    """The Anthropic emulator's server: its handlers share ``state``."""

    def __init__(self, address: tuple[str, int], state: AnthropicState) -> None:
        """Bind to ``address`` and serve the emulator described by ``state``."""
        self.state = state
        super().__init__(address, AnthropicRequestHandler)


def _param(query: Query, name: str) -> str | None:
    values = query.get(name)
    return values[-1] if values else None


# -- route handlers -----------------------------------------------------------------------------


def create_batch(handler: AnthropicRequestHandler, _: str, __: Query) -> None:
    """``POST /v1/messages/batches``: record the batch, hand it to the worker, answer it
    ``in_progress``."""
    state = handler.state
    limit = state.limits.max_batch_bytes
    length = handler.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > limit:
        handler.close_connection = True
        raise request_too_large(limit)
    try:
        raw = handler.body.read_all(limit)
    except BodyError as exc:
        handler.close_connection = True
        raise request_too_large(limit) from exc
    lines = read_create(raw, state.limits)
    del raw
    faults = state.faults()
    expire = faults.take_expire()
    record = state.batches.create(lines, expire=expire, hold=not expire and faults.take_hold())
    del lines
    state.stats.record_batch(None)
    answer = state.batches.snapshot(record)
    state.worker.submit(record)
    if faults.take_create_drop():
        handler.drop_connection()
        return
    if faults.create_response_delay > 0:
        time.sleep(faults.create_response_delay)
    handler.send_json(200, answer)


def list_batches(handler: AnthropicRequestHandler, _: str, query: Query) -> None:
    """``GET /v1/messages/batches``: one page of batches, newest first."""
    maximum = handler.state.limits.max_list_limit
    raw = _param(query, "limit")
    limit = 20
    if raw is not None:
        try:
            limit = int(raw)
        except ValueError:
            raise invalid_request(
                "limit: Input should be a valid integer, unable to parse string as an integer"
            ) from None
        if limit < 1:
            raise invalid_request("limit: Input should be greater than or equal to 1")
        if limit > maximum:
            raise invalid_request(f"limit: Input should be less than or equal to {maximum}")
    after_id, before_id = _param(query, "after_id"), _param(query, "before_id")
    if after_id is not None and before_id is not None:
        raise invalid_request("Cannot specify both before_id and after_id.")
    data, has_more = handler.state.batches.page(after_id=after_id, before_id=before_id, limit=limit)
    handler.send_json(
        200,
        {
            "data": data,
            "has_more": has_more,
            "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None,
        },
    )


def retrieve_batch(handler: AnthropicRequestHandler, batch_id: str, _: Query) -> None:
    """``GET /v1/messages/batches/{id}``."""
    batches = handler.state.batches
    handler.send_json(200, batches.snapshot(batches.get(batch_id)))


def cancel_batch(handler: AnthropicRequestHandler, batch_id: str, _: Query) -> None:
    """``POST /v1/messages/batches/{id}/cancel``: move the batch to ``canceling``."""
    state = handler.state
    record, newly = state.batches.request_cancel(batch_id)
    if newly:
        state.worker.cancel(batch_id)
    handler.send_json(200, state.batches.snapshot(record))


def delete_batch(handler: AnthropicRequestHandler, batch_id: str, _: Query) -> None:
    """``DELETE /v1/messages/batches/{id}``: only a batch that has ended."""
    handler.state.batches.delete(batch_id)
    handler.send_json(200, {"id": batch_id, "type": "message_batch_deleted"})


def batch_results(handler: AnthropicRequestHandler, batch_id: str, _: Query) -> None:
    """``GET /v1/messages/batches/{id}/results``: the results file, streamed from disk."""
    batches = handler.state.batches
    record = batches.get(batch_id)
    if batches.snapshot(record)["processing_status"] != "ended":
        raise invalid_request(
            f"Message Batch {batch_id} has not finished processing: its results are not "
            "available yet."
        )
    try:
        handler.send_file(record.results, "application/binary")
    except FileNotFoundError as exc:  # deleted while we were looking
        raise not_found(f"Message Batch {batch_id} not found.") from exc


Handler = Callable[["AnthropicRequestHandler", str, Query], None]
"""A route handler: called with the request handler, the path id and the query."""

_PREFIX = "/v1/messages/batches"
_ENDPOINTS: list[tuple[str, str, Handler]] = [
    ("POST", MESSAGES, create_message),
    ("POST", _PREFIX, create_batch),
    ("GET", _PREFIX, list_batches),
    ("GET", _PREFIX + "/{id}", retrieve_batch),
    ("DELETE", _PREFIX + "/{id}", delete_batch),
    ("POST", _PREFIX + "/{id}/cancel", cancel_batch),
    ("GET", _PREFIX + "/{id}/results", batch_results),
]
_ROUTES = [
    (
        method,
        template,
        re.compile("^" + re.escape(template).replace(r"\{id\}", "([^/]+)") + "$"),
        handler,
    )
    for method, template, handler in _ENDPOINTS
]


def match_route(method: str, path: str) -> tuple[str, Handler | None, str]:
    """The route template a request path resolves to (the literal path if none), its
    handler (``None`` if no route serves this method and path) and the ``{id}`` in it."""
    template: str | None = None
    for route_method, route_template, pattern, handler in _ROUTES:
        found = pattern.match(path)
        if found is None:
            continue
        object_id = unquote(found.group(1)) if found.groups() else ""
        if route_method == method:
            return route_template, handler, object_id
        template = template or route_template
    return template or path, None, ""


# -- the request handler ------------------------------------------------------------------------


class AnthropicRequestHandler(BaseHTTPRequestHandler):
    """Serves one connection: routes each request, authenticates it and renders its errors."""

    protocol_version = "HTTP/1.1"
    # Replies go out at once: with Nagle's algorithm on, a keep-alive client waits ~40 ms for
    # the delayed ACK of every reply written in two parts (headers, then body).
    disable_nagle_algorithm = True
    server_version = "batchor-anthropic-emulator"
    sys_version = ""
    server: AnthropicHTTPServer
    body: BodyReader
    request_id: str = ""

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
    def state(self) -> AnthropicState:
        """The emulator state behind the server."""
        return self.server.state

    def _handle(self, method: str) -> None:
        state = self.state
        self.request_id = "req_01" + base62(int.from_bytes(os.urandom(17), "big"), 22)
        split = urlsplit(self.path)
        path = split.path.rstrip("/") or "/"
        template, route, object_id = match_route(method, path)
        state.stats.record_call(method, template)
        try:
            self.body = self._body_reader()
        except BodyError as exc:
            self.body = BodyReader(cast(BinaryIO, self.rfile), None, chunked=False)
            self.close_connection = True
            self._send_error(invalid_request(f"Malformed request: {exc}"))
            return
        try:
            faults = state.faults()
            if faults.latency > 0:
                time.sleep(faults.latency)
            injected = faults.take_http_error(method, template)
            if injected is not None:
                raise injected
            self._authenticate()
            if route is None:
                raise not_found()
            route(self, object_id, parse_qs(split.query))
        except AnthropicApiError as exc:
            self._send_error(exc)
        except BodyError as exc:
            self.close_connection = True
            self._send_error(invalid_request(f"Malformed request body: {exc}"))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception:
            _log.exception("Anthropic emulator failed to serve %s %s", method, self.path)
            self.close_connection = True
            self._send_error(api_error())

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
        """An ``x-api-key`` header or a bearer token, then a dated ``anthropic-version``."""
        key = self.headers.get("x-api-key")
        if key is None:
            scheme, _, token = self.headers.get("Authorization", "").partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                key = token.strip()
        if not key:
            raise authentication("x-api-key header is required")
        expected = self.state.api_key
        if expected is not None and key.strip() != expected:
            raise authentication("invalid x-api-key")
        version = self.headers.get("anthropic-version")
        if version is None:
            raise invalid_request("anthropic-version: header is required")
        if _VERSION.match(version.strip()) is None:
            raise invalid_request(f'anthropic-version: "{version}" is not a valid version')

    def drop_connection(self) -> None:
        """Close the connection without answering (the client sees it drop)."""
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _start(
        self, status: int, content_type: str, length: int, headers: Mapping[str, str]
    ) -> None:
        try:
            self.body.drain()
        except (BodyError, OSError):
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        self.send_header("request-id", self.request_id)
        for name, value in headers.items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()

    def _send_error(self, error: AnthropicApiError) -> None:
        self.send_json(error.status, error.body(self.request_id), error.headers)

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

    def send_file(self, path: os.PathLike[str], content_type: str) -> None:
        """Answer with the bytes of the file at ``path``, streamed from disk (``sendfile``)."""
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            self._start(200, content_type, size, {})
            self.wfile.flush()
            self.connection.sendfile(handle, count=size)
